//! understudy-testserver: the lab's workload image. `serve` answers HTTP, TCP
//! and UDP with the pod's name and the caller's address, so a data-path test
//! learns which backend answered and what source address it saw (SNAT or
//! not); `pause` is the pod sandbox's process (the lab's pause image).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Parser)]
#[command(name = "understudy-testserver", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer "<name> <client address>" on HTTP, TCP and UDP.
    Serve {
        /// Name to answer with (the pod's name through the downward API).
        #[arg(long, env = "POD_NAME")]
        name: Option<String>,
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        #[arg(long, default_value_t = 9000)]
        tcp_port: u16,
        #[arg(long, default_value_t = 9000)]
        udp_port: u16,
    },
    /// Sleep until SIGTERM or SIGINT, reaping orphans (a pod sandbox's process).
    Pause,
    /// Connect over TCP, print what the other side sends within a few
    /// seconds, exit 0 once connected (a client pod's check of a path).
    Connect {
        /// host:port
        address: String,
    },
    /// Reach a service `count` times and print one line per attempt: the
    /// answer ("<name> <address the server saw>") or "error <reason>" — what
    /// a data-path test tallies for spread, affinity and source addresses.
    Probe {
        /// host:port
        address: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// UDP datagrams instead of TCP connections.
        #[arg(long)]
        udp: bool,
        /// The local port to send from (0: any). A fixed UDP source port
        /// keeps every datagram in one conntrack flow.
        #[arg(long, default_value_t = 0)]
        source_port: u16,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Pause => pause(),
        Command::Connect { address } => connect(&address),
        Command::Probe {
            address,
            count,
            udp,
            source_port,
        } => probe::run(&address, count, udp, source_port),
        Command::Serve {
            name,
            http_port,
            tcp_port,
            udp_port,
        } => {
            let name = name
                .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
                .unwrap_or_else(|| "unknown".into());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(serve(Arc::from(name), http_port, tcp_port, udp_port)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("understudy-testserver: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn pause() -> ExitCode {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("pause: blocking signals: {e}");
        return ExitCode::FAILURE;
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pause: waiting for signals: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

mod probe {
    use std::io::Read;
    use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
    use std::process::ExitCode;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(2);

    pub fn run(address: &str, count: u32, udp: bool, source_port: u16) -> ExitCode {
        let Some(to) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
            eprintln!("probe: {address:?} is not host:port");
            return ExitCode::from(2);
        };
        if source_port != 0 && !udp {
            // std cannot bind a TCP socket before connecting, and no test
            // needs a fixed TCP source port.
            eprintln!("probe: --source-port is for --udp");
            return ExitCode::from(2);
        }
        let from = SocketAddr::from((Ipv4Addr::UNSPECIFIED, source_port));
        for _ in 0..count {
            let answer = if udp {
                datagram(from, to)
            } else {
                connection(to)
            };
            match answer {
                Ok(line) => println!("{}", line.trim_end()),
                Err(e) => println!("error {e}"),
            }
        }
        ExitCode::SUCCESS
    }

    fn datagram(from: SocketAddr, to: SocketAddr) -> std::io::Result<String> {
        let socket = UdpSocket::bind(from)?;
        socket.set_read_timeout(Some(WAIT))?;
        socket.send_to(b"probe", to)?;
        let mut buf = [0u8; 1500];
        let (n, _) = socket.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn connection(to: SocketAddr) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&to, WAIT)?;
        stream.set_read_timeout(Some(WAIT))?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        if text.is_empty() {
            return Err(std::io::Error::other("closed without an answer"));
        }
        Ok(text)
    }
}

fn connect(address: &str) -> ExitCode {
    use std::io::Read;
    use std::net::ToSocketAddrs;
    use std::time::Duration;
    let Some(addr) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("connect: {address:?} is not host:port");
        return ExitCode::from(2);
    };
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(mut stream) => {
            println!(
                "connected to {addr} from {}",
                stream
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("connect {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn answer(name: &str, peer: SocketAddr) -> String {
    format!("{name} {peer}\n")
}

async fn serve(name: Arc<str>, http: u16, tcp: u16, udp: u16) -> std::io::Result<()> {
    let http = TcpListener::bind(("0.0.0.0", http)).await?;
    let tcp = TcpListener::bind(("0.0.0.0", tcp)).await?;
    let udp = UdpSocket::bind(("0.0.0.0", udp)).await?;
    eprintln!(
        "understudy-testserver {name}: http {}, tcp {}, udp {}",
        http.local_addr()?,
        tcp.local_addr()?,
        udp.local_addr()?
    );
    let http_task = tokio::spawn(serve_http(http, name.clone()));
    let tcp_task = tokio::spawn(serve_tcp(tcp, name.clone()));
    let udp_task = tokio::spawn(serve_udp(udp, name));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        r = http_task => r.map_err(std::io::Error::other)?,
        r = tcp_task => r.map_err(std::io::Error::other)?,
        r = udp_task => r.map_err(std::io::Error::other)?,
    }
}

/// HTTP/1.0-style: read the request head, answer, close. A hand-written
/// responder because the image must stay one small binary and the tests only
/// ever send `GET /`; a request whose head never ends is dropped after 4 KiB.
async fn serve_http(listener: TcpListener, name: Arc<str>) -> std::io::Result<()> {
    loop {
        let (mut stream, peer) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 4096 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = answer(&name, peer);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn serve_tcp(listener: TcpListener, name: Arc<str>) -> std::io::Result<()> {
    loop {
        let (mut stream, peer) = listener.accept().await?;
        let line = answer(&name, peer);
        tokio::spawn(async move {
            let _ = stream.write_all(line.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn serve_udp(socket: UdpSocket, name: Arc<str>) -> std::io::Result<()> {
    let mut buf = [0u8; 1500];
    loop {
        let (_, peer) = socket.recv_from(&mut buf).await?;
        socket.send_to(answer(&name, peer).as_bytes(), peer).await?;
    }
}
