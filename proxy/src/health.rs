//! kube-proxy's `/healthz` and `/livez` (pkg/proxy/healthcheck's
//! ProxyHealthServer): a JSON document of when the rules were last written;
//! unhealthy (503) once a queued change has waited longer than twice the
//! sync period. `/healthz` also fails while the node is going away (deleted,
//! or tainted ToBeDeletedByClusterAutoscaler), so load balancers drain it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use understudy_component_base::health::EndpointResponse;

/// The cluster autoscaler's taint on nodes it is about to remove.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

#[derive(Default)]
struct State {
    last_updated: Option<SystemTime>,
    oldest_queued: Option<SystemTime>,
    node_eligible: bool,
}

#[derive(Clone)]
pub struct ProxyHealth {
    family: &'static str,
    timeout: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FamilyHealth {
    last_updated: String,
    healthy: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    last_updated: String,
    current_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_eligible: Option<bool>,
    healthy: bool,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    status: std::collections::BTreeMap<&'static str, FamilyHealth>,
}

/// Go's time.Time in JSON (RFC 3339 with nanoseconds, trailing zeros cut);
/// never set is Go's zero time.
fn go_time(at: Option<SystemTime>) -> String {
    match at.and_then(|t| jiff::Timestamp::try_from(t).ok()) {
        Some(ts) => ts.to_string(),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

impl ProxyHealth {
    /// `timeout`: upstream passes twice the sync period.
    pub fn new(family: &'static str, timeout: Duration) -> Self {
        ProxyHealth {
            family,
            timeout,
            state: Arc::default(),
        }
    }

    /// A change is waiting for a sync.
    pub fn queued(&self, at: SystemTime) {
        self.state.lock().unwrap().oldest_queued.get_or_insert(at);
    }

    /// The rules were written.
    pub fn updated(&self, at: SystemTime) {
        let mut state = self.state.lock().unwrap();
        state.oldest_queued = None;
        state.last_updated = Some(at);
    }

    pub fn set_node_eligible(&self, eligible: bool) {
        self.state.lock().unwrap().node_eligible = eligible;
    }

    /// Whether syncs keep up (upstream's Health().Healthy, without the node).
    pub fn healthy(&self, now: SystemTime) -> bool {
        self.answer(false, now).status == 200
    }

    /// The answer on `/healthz` (`with_node` true) or `/livez`, at `now`.
    pub fn answer(&self, with_node: bool, now: SystemTime) -> EndpointResponse {
        let state = self.state.lock().unwrap();
        let stale = state.last_updated.is_some()
            && state
                .oldest_queued
                .is_some_and(|q| now.duration_since(q).unwrap_or_default() >= self.timeout);
        let node_eligible = with_node.then_some(state.node_eligible);
        let healthy = !stale && node_eligible.unwrap_or(true);
        let mut status = std::collections::BTreeMap::new();
        if state.last_updated.is_some() {
            status.insert(
                self.family,
                FamilyHealth {
                    last_updated: go_time(state.last_updated),
                    healthy: !stale,
                },
            );
        }
        let document = Document {
            // As upstream: a healthy answer reports now as the last update.
            last_updated: go_time(if healthy {
                Some(now)
            } else {
                state.last_updated
            }),
            current_time: go_time(Some(now)),
            node_eligible,
            healthy: !stale,
            status,
        };
        EndpointResponse {
            status: if healthy { 200 } else { 503 },
            content_type: "application/json",
            body: serde_json::to_string(&document).expect("static JSON"),
        }
    }
}

/// Whether the node may get traffic (upstream's NodeEligible).
pub fn node_eligible(node: Option<&k8s_openapi::api::core::v1::Node>) -> bool {
    let Some(node) = node else { return false };
    node.metadata.deletion_timestamp.is_none()
        && !(node.spec.as_ref())
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn body(answer: &EndpointResponse) -> serde_json::Value {
        serde_json::from_str(&answer.body).unwrap()
    }

    #[test]
    fn stale_when_a_queued_change_waits_past_the_timeout() {
        let health = ProxyHealth::new("IPv4", Duration::from_secs(60));
        health.set_node_eligible(true);
        health.updated(at(100));
        health.queued(at(110));
        health.queued(at(150));
        let fresh = health.answer(true, at(169));
        assert_eq!(fresh.status, 200);
        let doc = body(&fresh);
        assert_eq!(doc["currentTime"], "1970-01-01T00:02:49Z");
        assert_eq!(doc["lastUpdated"], doc["currentTime"]);
        assert_eq!(doc["nodeEligible"], true);
        assert_eq!(doc["status"]["IPv4"]["lastUpdated"], "1970-01-01T00:01:40Z");

        let stale = health.answer(true, at(170));
        assert_eq!(stale.status, 503, "the oldest queued change counts");
        let doc = body(&stale);
        assert_eq!(doc["healthy"], false);
        assert_eq!(doc["lastUpdated"], "1970-01-01T00:01:40Z");
        assert_eq!(health.answer(false, at(170)).status, 503, "livez too");
        assert!(
            body(&health.answer(false, at(170)))
                .get("nodeEligible")
                .is_none()
        );

        health.updated(at(171));
        assert_eq!(health.answer(true, at(300)).status, 200);
    }

    #[test]
    fn healthz_fails_for_a_node_going_away_livez_does_not() {
        let health = ProxyHealth::new("IPv4", Duration::from_secs(60));
        assert_eq!(health.answer(true, at(1)).status, 503, "no Node seen yet");
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": TO_BE_DELETED_TAINT, "effect": "NoSchedule"}]}
        }))
        .unwrap();
        health.set_node_eligible(node_eligible(Some(&node)));
        assert_eq!(health.answer(true, at(1)).status, 503);
        assert_eq!(health.answer(false, at(1)).status, 200);
        assert_eq!(
            body(&health.answer(true, at(1)))["lastUpdated"],
            "0001-01-01T00:00:00Z"
        );
    }
}
