//! Graceful shutdown: SIGTERM or SIGINT cancels one token that every task watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT. A second signal exits at once,
/// as an operator pressing Ctrl-C twice expects.
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = token.cancelled() => return,
        };
        tracing::info!(signal = name, "shutting down gracefully");
        token.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(1);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = CancellationToken::new();
        cancel_on_signals(token.clone()).unwrap();
        nix_kill_self();
        tokio::time::timeout(Duration::from_secs(10), token.cancelled())
            .await
            .expect("token cancelled after SIGTERM");
    }

    fn nix_kill_self() {
        // The handler above is installed first, so the signal reaches it instead
        // of terminating the test process.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}
