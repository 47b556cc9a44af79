//! Liveness and readiness as shared flags with named checks, so `/readyz` can say
//! which check fails, as upstream's verbose health output does.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A component's own answer on a health path (kube-proxy's `/healthz` is a
/// JSON document of its sync state, not the generic `ok`).
pub type EndpointHandler = Arc<dyn Fn() -> EndpointResponse + Send + Sync>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Named readiness checks; the component is ready when every check passes.
/// Liveness only fails when the process asked to be restarted.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<RwLock<HealthState>>,
}

#[derive(Default)]
struct HealthState {
    checks: BTreeMap<String, bool>,
    shutting_down: bool,
    dead: Option<String>,
    overrides: BTreeMap<&'static str, EndpointHandler>,
}

/// One check's line in a health report, in upstream's `[+]name ok` shape.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub healthy: bool,
    pub body: String,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a readiness check that starts failing until [`Health::set`] says otherwise.
    pub fn register(&self, name: &str) {
        self.inner
            .write()
            .expect("health lock")
            .checks
            .entry(name.to_string())
            .or_insert(false);
    }

    pub fn set(&self, name: &str, ok: bool) {
        self.inner
            .write()
            .expect("health lock")
            .checks
            .insert(name.to_string(), ok);
    }

    /// Marks the component as draining: readiness fails so traffic moves away,
    /// liveness stays good so nothing kills it mid-drain.
    pub fn set_shutting_down(&self) {
        self.inner.write().expect("health lock").shutting_down = true;
    }

    /// Marks the process as unable to continue; `/livez` fails with the reason.
    pub fn set_dead(&self, reason: impl Into<String>) {
        self.inner.write().expect("health lock").dead = Some(reason.into());
    }

    /// Answers `path` (`/healthz` or `/livez`) with `handler` instead of the
    /// generic liveness report.
    pub fn override_endpoint(&self, path: &'static str, handler: EndpointHandler) {
        (self.inner.write().expect("health lock").overrides).insert(path, handler);
    }

    pub fn endpoint_override(&self, path: &str) -> Option<EndpointHandler> {
        (self.inner.read().expect("health lock").overrides)
            .get(path)
            .cloned()
    }

    pub fn readiness(&self) -> Report {
        let state = self.inner.read().expect("health lock");
        let mut body = String::new();
        let mut healthy = true;
        for (name, ok) in &state.checks {
            healthy &= ok;
            body.push_str(&if *ok {
                format!("[+]{name} ok\n")
            } else {
                format!("[-]{name} failed\n")
            });
        }
        if state.shutting_down {
            healthy = false;
            body.push_str("[-]shutdown failed: the process is shutting down\n");
        }
        body.push_str(if healthy {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        Report { healthy, body }
    }

    pub fn liveness(&self) -> Report {
        let state = self.inner.read().expect("health lock");
        match &state.dead {
            None => Report {
                healthy: true,
                body: "ok".into(),
            },
            Some(reason) => Report {
                healthy: false,
                body: format!("[-]process failed: {reason}\nlivez check failed\n"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes() {
        let health = Health::new();
        assert!(health.readiness().healthy, "no checks means ready");
        health.register("informers-synced");
        health.register("leader-election");
        let report = health.readiness();
        assert!(!report.healthy);
        assert!(report.body.contains("[-]informers-synced failed"));
        health.set("informers-synced", true);
        health.set("leader-election", true);
        let report = health.readiness();
        assert!(report.healthy);
        assert!(report.body.contains("[+]leader-election ok"));
    }

    #[test]
    fn shutting_down_fails_readiness_but_not_liveness() {
        let health = Health::new();
        health.set_shutting_down();
        assert!(!health.readiness().healthy);
        assert!(health.liveness().healthy);
    }

    #[test]
    fn dead_fails_liveness_with_reason() {
        let health = Health::new();
        health.set_dead("lost leader lease");
        let report = health.liveness();
        assert!(!report.healthy);
        assert!(report.body.contains("lost leader lease"));
    }
}
