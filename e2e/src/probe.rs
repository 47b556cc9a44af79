//! Health probes and deadline-bounded waits for the lab's processes.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::process::ProcessRecord;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{what} did not happen within {timeout:?}{detail}")]
    Timeout {
        what: String,
        timeout: Duration,
        detail: String,
    },
    #[error("{name} exited while waiting for {what}; last log lines ({log}):\n{tail}")]
    Exited {
        name: String,
        what: String,
        log: String,
        tail: String,
    },
}

/// An HTTP client for loopback health endpoints. Certificates are not verified:
/// the endpoints are our own child processes on 127.0.0.1, several of which
/// (kube-controller-manager, kube-scheduler) serve self-signed certificates.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .expect("building an HTTP client with static settings")
}

/// Whether `url` answers 200.
pub async fn healthy(client: &reqwest::Client, url: &str) -> bool {
    matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
}

/// Polls `check` until it returns true or the deadline passes. When `process`
/// is given, its exit ends the wait at once with its log tail.
pub async fn wait_for<F, Fut>(
    what: &str,
    timeout: Duration,
    process: Option<&ProcessRecord>,
    mut check: F,
) -> Result<(), WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = String::new();
    let mut interval = Duration::from_millis(50);
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = e,
        }
        if let Some(p) = process
            && !p.is_alive()
        {
            return Err(WaitError::Exited {
                name: p.name.clone(),
                what: what.into(),
                log: p.log.display().to_string(),
                tail: p.log_tail(20),
            });
        }
        if Instant::now() >= deadline {
            return Err(WaitError::Timeout {
                what: what.into(),
                timeout,
                detail: if last_error.is_empty() {
                    String::new()
                } else {
                    format!(" (last error: {last_error})")
                },
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        wait_for("third call", Duration::from_secs(5), None, || async {
            Ok(calls.fetch_add(1, Ordering::SeqCst) >= 2)
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_error() {
        let err = wait_for("never", Duration::from_millis(200), None, || async {
            Err::<bool, _>("connection refused".to_string())
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("never") && err.contains("connection refused"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_dead_process_ends_the_wait_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p.log");
        let record = crate::process::spawn(
            "short",
            std::path::Path::new("/bin/sh"),
            &["-c".into(), "echo boom; exit 3".into()],
            &log,
        )
        .unwrap();
        let err = wait_for("ready", Duration::from_secs(30), Some(&record), || async {
            Ok(false)
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("short exited") && err.contains("boom"),
            "{err}"
        );
    }
}
