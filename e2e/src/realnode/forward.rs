//! The way into the host's loopback from a node's network namespace: the lab's
//! apiserver listens on 127.0.0.1 only, and a namespace has its own loopback.
//! One process per node opens its listening sockets inside the node's
//! namespace (a socket keeps the namespace it was made in) and connects out
//! from the host's, copying bytes both ways: a plain TCP relay, which tokio
//! gives us, rather than socat and a Unix socket per direction.
//!
//! The other way round (the host reaching a listener inside a namespace, as
//! the proxy benchmark reads the proxies' /metrics) connects from a thread
//! that entered the namespace: [`connect_in_netns`] and [`relay_into_netns`].

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;

use tokio::net::{TcpListener, TcpStream};

/// Binds `addrs` inside the network namespace at `netns` (a file under
/// /run/netns) from a thread that enters it, leaving the calling thread
/// (and so the runtime) in the host's namespace.
pub fn bind_in_netns(
    netns: &Path,
    addrs: &[SocketAddr],
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let addrs = addrs.to_vec();
    in_netns(netns, move || {
        addrs
            .iter()
            .map(|addr| {
                let listener = std::net::TcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .collect()
    })
}

/// Runs `work` on a thread that entered the network namespace at `netns`, so
/// every socket it makes belongs to that namespace; the caller's thread (and
/// so the runtime) stays where it is.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let file = std::fs::File::open(netns)?;
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        work()
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// A TCP connection to `to` made inside the network namespace at `netns`.
pub fn connect_in_netns(netns: &Path, to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    in_netns(netns, move || {
        let stream = std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5))?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
}

/// Accepts on `listener` (the host's) and relays each connection to `to`
/// inside the namespace at `netns`, until the task is dropped.
pub async fn relay_into_netns(
    listener: TcpListener,
    netns: std::path::PathBuf,
    to: SocketAddr,
) -> std::io::Result<()> {
    loop {
        let (mut inbound, _) = listener.accept().await?;
        let netns = netns.clone();
        tokio::spawn(async move {
            let connected = tokio::task::spawn_blocking(move || connect_in_netns(&netns, to)).await;
            match connected {
                Ok(Ok(stream)) => match TcpStream::from_std(stream) {
                    Ok(mut outbound) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => tracing::warn!(%to, error = %e, "relay into netns"),
                },
                Ok(Err(e)) => tracing::warn!(%to, error = %e, "relay into netns: connecting"),
                Err(e) => tracing::warn!(%to, error = %e, "relay into netns"),
            }
        });
    }
}

/// Accepts on every listener and relays each connection to `to` until the
/// process is told to stop.
pub async fn relay(listeners: Vec<std::net::TcpListener>, to: SocketAddr) -> std::io::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let listener = TcpListener::from_std(listener)?;
        tasks.spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await?;
                tokio::spawn(async move {
                    match TcpStream::connect(to).await {
                        Ok(mut outbound) => {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(e) => tracing::warn!(%to, error = %e, "relay: connecting"),
                    }
                });
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        });
    }
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(std::io::Error::other(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways() {
        // Our own namespace stands in for a node's: the relay logic is the same.
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = target.local_addr().unwrap();
        let listeners = bind_in_netns(
            Path::new("/proc/self/ns/net"),
            &["127.0.0.1:0".parse().unwrap()],
        )
        .unwrap();
        let from = listeners[0].local_addr().unwrap();
        tokio::spawn(relay(listeners, to));
        let server = tokio::spawn(async move {
            let (mut s, _) = target.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"pong").await.unwrap();
            buf
        });
        let mut client = TcpStream::connect(from).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"pong");
        assert_eq!(&server.await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn relays_into_a_namespace() {
        // As above, our own namespace stands in for the target's.
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = target.local_addr().unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let from = front.local_addr().unwrap();
        tokio::spawn(relay_into_netns(front, "/proc/self/ns/net".into(), to));
        let server = tokio::spawn(async move {
            let (mut s, _) = target.accept().await.unwrap();
            s.write_all(b"hello").await.unwrap();
        });
        let mut client = TcpStream::connect(from).await.unwrap();
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"hello");
        server.await.unwrap();
    }
}
