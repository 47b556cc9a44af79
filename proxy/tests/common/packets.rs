//! Real packets in a namespace: a node's addresses, listeners that answer
//! with their name, and connections made from threads that entered the
//! namespace (a socket keeps the namespace it was made in, so the test
//! process itself stays in the host's).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use super::Netns;

/// The node's address inside the namespace (on an interface that is
/// also the default route, so service IPs have a route before DNAT).
pub const NODE_IP: &str = "10.250.0.10";
pub const NODE_IP6: &str = "fd00:250::10";

impl Netns {
    /// A namespace with only loopback up.
    pub fn bare_in(prefix: &str, tag: &str) -> Self {
        let ns = Netns::add(prefix, tag);
        ns.ip("link set lo up");
        ns
    }

    /// A node alone: its addresses on an interface that is the default route.
    pub fn node_in(prefix: &str, tag: &str) -> Self {
        let ns = Netns::bare_in(prefix, tag);
        for args in [
            // No dummy interfaces in every kernel: a veth pair, both ends here.
            "link add node0 type veth peer name node1",
            &format!("addr add {NODE_IP}/24 dev node0"),
            // nodad: usable at once, no duplicate address detection to wait for.
            &format!("-6 addr add {NODE_IP6}/64 dev node0 nodad"),
            "link set node0 up",
            "link set node1 up",
            "route add default dev node0",
            "-6 route add default dev node0",
        ] {
            ns.ip(args);
        }
        ns
    }

    pub fn ip(&self, args: &str) {
        let status = Command::new("ip")
            .args(["-n", &self.0])
            .args(args.split_whitespace())
            .status()
            .unwrap();
        assert!(status.success(), "ip -n {} {args}", self.0);
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// Connects to `addr` and reads what the server says, or the error.
    pub fn fetch(&self, addr: &str) -> std::io::Result<String> {
        let addr: SocketAddr = addr.parse().unwrap();
        self.within(move || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
    }

    /// A connection refused at once (an ICMP reject), not one timing out.
    pub fn assert_refused(&self, addr: &str) {
        let start = Instant::now();
        let result = self.fetch(addr);
        assert!(
            matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{addr}: {result:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{addr}: slow refusal"
        );
    }

    /// A server in the namespace that answers every connection with `name`.
    pub fn serve(&self, port: u16, name: &'static str) -> Server {
        self.serve_on(NODE_IP, port, name)
    }

    pub fn serve_on(&self, ip: &'static str, port: u16, name: &'static str) -> Server {
        self.serve_with(ip, port, move |_| name.to_string())
    }

    /// A server that answers with the address the connection came from.
    pub fn serve_peer(&self, ip: &'static str, port: u16) -> Server {
        self.serve_with(ip, port, |conn| conn.peer_addr().unwrap().ip().to_string())
    }

    pub fn serve_with(
        &self,
        ip: &'static str,
        port: u16,
        answer: impl Fn(&TcpStream) -> String + Send + 'static,
    ) -> Server {
        let listener = self.within(move || TcpListener::bind((ip, port)).unwrap());
        let handle = listener.try_clone().unwrap();
        let thread = std::thread::spawn(move || {
            // Ends when the listener is shut down (accept fails).
            for mut conn in listener.incoming().map_while(Result::ok) {
                let _ = conn.write_all(answer(&conn).as_bytes());
            }
        });
        Server {
            listener: handle,
            thread: Some(thread),
        }
    }
}

pub struct Server {
    listener: TcpListener,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Wakes the blocked accept with an error.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.listener),
            nix::sys::socket::Shutdown::Both,
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
