//! understudy-testserver: the lab's workload image. `serve` answers HTTP, TCP
//! and UDP with the pod's name and the caller's address, so a data-path test
//! learns which backend answered and what source address it saw (SNAT or
//! not); `pause` is the pod sandbox's process (the lab's pause image);
//! `note` writes and reads back a file on a volume (what a storage test
//! checks survives the pod).

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
        /// TCP that stays open: every line is answered "<name> <line>".
        #[arg(long, default_value_t = 9001)]
        echo_port: u16,
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
    /// Until stdin closes: one TCP connection to `echo` held open and
    /// answering a line every interval, and a new connection to `address`
    /// every interval; prints "holding <backend>" once the held connection
    /// answered, and at the end a JSON summary of what failed and when —
    /// what a hand-over between proxies must not break.
    Hold {
        /// host:port of a Service in front of `serve`'s TCP port.
        address: String,
        /// host:port of a Service in front of `serve`'s echo port.
        echo: String,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Stop anyway after this long.
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
    /// Write `text` to `file` when given, then print "note <contents>" of
    /// `file` and exit 0 — or "error <reason>" and exit 1: a pod that leaves
    /// a file on its volume, or reports what an earlier pod left there.
    Note {
        file: std::path::PathBuf,
        #[arg(long)]
        write: Option<String>,
    },
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
        Command::Note { file, write } => note(&file, write.as_deref()),
        Command::Hold {
            address,
            echo,
            interval_ms,
            max_seconds,
        } => hold::run(
            &address,
            &echo,
            std::time::Duration::from_millis(interval_ms),
            std::time::Duration::from_secs(max_seconds),
        ),
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
            echo_port,
        } => {
            let name = name
                .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
                .unwrap_or_else(|| "unknown".into());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let ports = Ports {
                http: http_port,
                tcp: tcp_port,
                udp: udp_port,
                echo: echo_port,
            };
            match runtime.block_on(serve(Arc::from(name), ports)) {
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

mod hold {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    const WAIT: Duration = Duration::from_secs(2);

    pub fn run(address: &str, echo: &str, interval: Duration, max: Duration) -> ExitCode {
        let resolve = |a: &str| a.to_socket_addrs().ok().and_then(|mut a| a.next());
        let (Some(to), Some(echo_to)) = (resolve(address), resolve(echo)) else {
            eprintln!("hold: {address:?} and {echo:?} must be host:port");
            return ExitCode::from(2);
        };
        let held = match TcpStream::connect_timeout(&echo_to, WAIT) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hold: connecting to {echo_to}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let _ = held.set_read_timeout(Some(WAIT));
        let mut reader = BufReader::new(held.try_clone().expect("socket clone"));
        let mut writer = held;
        let stop = Arc::new(AtomicBool::new(false));
        let stdin_closed = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            stdin_closed.store(true, Ordering::SeqCst);
        });
        let start = Instant::now();
        let (mut held_ok, mut held_failed_at) = (0u64, None::<u128>);
        let (mut new_ok, mut new_failed) = (0u64, Vec::<u128>::new());
        let mut held_by = String::new();
        while !stop.load(Ordering::SeqCst) && start.elapsed() < max {
            let round = Instant::now();
            let at = start.elapsed().as_millis();
            if held_failed_at.is_none() {
                let mut line = String::new();
                let ok = writeln!(writer, "ping {held_ok}").is_ok()
                    && reader.read_line(&mut line).is_ok_and(|n| n > 0)
                    && line.ends_with(&format!(" ping {held_ok}\n"));
                if ok {
                    held_ok += 1;
                    if held_by.is_empty() {
                        held_by = line.split_whitespace().next().unwrap_or_default().into();
                        // The caller waits for this before it changes anything.
                        println!("holding {held_by}");
                        let _ = std::io::stdout().flush();
                    }
                } else {
                    held_failed_at = Some(at);
                }
            }
            let answered = TcpStream::connect_timeout(&to, WAIT).and_then(|mut s| {
                s.set_read_timeout(Some(WAIT))?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(!text.is_empty())
            });
            match answered {
                Ok(true) => new_ok += 1,
                _ => new_failed.push(at),
            }
            std::thread::sleep(interval.saturating_sub(round.elapsed()));
        }
        println!(
            "{{\"heldBy\": {held_by:?}, \"heldOk\": {held_ok}, \"heldFailedAtMs\": {}, \"newOk\": {new_ok}, \"newFailedAtMs\": {new_failed:?}}}",
            held_failed_at.map_or("null".to_string(), |t| t.to_string())
        );
        ExitCode::SUCCESS
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

fn note(file: &std::path::Path, write: Option<&str>) -> ExitCode {
    if let Some(text) = write
        && let Err(e) = std::fs::write(file, text)
    {
        println!("error writing {}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    match std::fs::read_to_string(file) {
        Ok(text) => {
            println!("note {text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error reading {}: {e}", file.display());
            ExitCode::FAILURE
        }
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

struct Ports {
    http: u16,
    tcp: u16,
    udp: u16,
    echo: u16,
}

async fn serve(name: Arc<str>, ports: Ports) -> std::io::Result<()> {
    let http = TcpListener::bind(("0.0.0.0", ports.http)).await?;
    let tcp = TcpListener::bind(("0.0.0.0", ports.tcp)).await?;
    let udp = UdpSocket::bind(("0.0.0.0", ports.udp)).await?;
    let echo = TcpListener::bind(("0.0.0.0", ports.echo)).await?;
    eprintln!(
        "understudy-testserver {name}: http {}, tcp {}, udp {}",
        http.local_addr()?,
        tcp.local_addr()?,
        udp.local_addr()?
    );
    let http_task = tokio::spawn(serve_http(http, name.clone()));
    let tcp_task = tokio::spawn(serve_tcp(tcp, name.clone()));
    let udp_task = tokio::spawn(serve_udp(udp, name.clone()));
    let echo_task = tokio::spawn(serve_echo(echo, name));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        r = http_task => r.map_err(std::io::Error::other)?,
        r = tcp_task => r.map_err(std::io::Error::other)?,
        r = udp_task => r.map_err(std::io::Error::other)?,
        r = echo_task => r.map_err(std::io::Error::other)?,
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

async fn serve_echo(listener: TcpListener, name: Arc<str>) -> std::io::Result<()> {
    use tokio::io::AsyncBufReadExt;
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write
                    .write_all(format!("{name} {line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
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
