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
struct FamilyState {
    last_updated: Option<SystemTime>,
    oldest_queued: Option<SystemTime>,
}

#[derive(Default)]
struct State {
    /// By family ("IPv4", "IPv6"): a dual-stack proxy has a proxier of each.
    families: std::collections::BTreeMap<&'static str, FamilyState>,
    node_eligible: bool,
}

#[derive(Clone)]
pub struct ProxyHealth {
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

impl FamilyState {
    /// A change waited longer than `timeout` for a sync. A proxier that
    /// never synced is starting up, and healthy, as upstream's.
    fn stale(&self, now: SystemTime, timeout: Duration) -> bool {
        self.last_updated.is_some()
            && self
                .oldest_queued
                .is_some_and(|q| now.duration_since(q).unwrap_or_default() >= timeout)
    }
}

impl ProxyHealth {
    /// `timeout`: upstream passes twice the sync period.
    pub fn new(timeout: Duration) -> Self {
        ProxyHealth {
            timeout,
            state: Arc::default(),
        }
    }

    /// A change is waiting for the sync of `family` ("IPv4", "IPv6").
    pub fn queued(&self, family: &'static str, at: SystemTime) {
        let mut state = self.state.lock().unwrap();
        let family = state.families.entry(family).or_default();
        family.oldest_queued.get_or_insert(at);
    }

    /// The rules of `family` were written.
    pub fn updated(&self, family: &'static str, at: SystemTime) {
        let mut state = self.state.lock().unwrap();
        let family = state.families.entry(family).or_default();
        family.oldest_queued = None;
        family.last_updated = Some(at);
    }

    pub fn set_node_eligible(&self, eligible: bool) {
        self.state.lock().unwrap().node_eligible = eligible;
    }

    /// Whether syncs keep up (upstream's Health().Healthy, without the node).
    pub fn healthy(&self, now: SystemTime) -> bool {
        self.answer(false, now).status == 200
    }

    /// The answer on `/healthz` (`with_node` true) or `/livez`, at `now`:
    /// unhealthy when any family's proxier falls behind, as upstream's.
    pub fn answer(&self, with_node: bool, now: SystemTime) -> EndpointResponse {
        let state = self.state.lock().unwrap();
        let mut status = std::collections::BTreeMap::new();
        // The newest update of all families; the stale family's own when
        // one is stale (upstream reports the one that failed).
        let mut last_updated = None;
        let mut stale_since = None;
        for (&family, s) in &state.families {
            let Some(updated) = s.last_updated else {
                continue;
            };
            last_updated = last_updated.max(Some(updated));
            let stale = s.stale(now, self.timeout);
            if stale && stale_since.is_none() {
                stale_since = Some(updated);
            }
            status.insert(
                family,
                FamilyHealth {
                    last_updated: go_time(Some(updated)),
                    healthy: !stale,
                },
            );
        }
        let stale = stale_since.is_some();
        let node_eligible = with_node.then_some(state.node_eligible);
        let healthy = !stale && node_eligible.unwrap_or(true);
        let document = Document {
            // As upstream: a healthy answer reports now as the last update.
            last_updated: go_time(if healthy {
                Some(now)
            } else {
                stale_since.or(last_updated)
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
        let health = ProxyHealth::new(Duration::from_secs(60));
        health.set_node_eligible(true);
        health.updated("IPv4", at(100));
        health.queued("IPv4", at(110));
        health.queued("IPv4", at(150));
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

        health.updated("IPv4", at(171));
        assert_eq!(health.answer(true, at(300)).status, 200);
    }

    #[test]
    fn dual_stack_is_unhealthy_when_either_family_falls_behind() {
        let health = ProxyHealth::new(Duration::from_secs(60));
        health.set_node_eligible(true);
        health.updated("IPv4", at(100));
        health.updated("IPv6", at(120));
        let doc = body(&health.answer(true, at(130)));
        assert_eq!(doc["status"]["IPv4"]["lastUpdated"], "1970-01-01T00:01:40Z");
        assert_eq!(doc["status"]["IPv6"]["lastUpdated"], "1970-01-01T00:02:00Z");

        // IPv6's proxier keeps up; IPv4's has had a change waiting since 130.
        health.queued("IPv4", at(130));
        health.queued("IPv6", at(131));
        health.updated("IPv6", at(140));
        assert_eq!(health.answer(true, at(189)).status, 200);
        let stale = health.answer(true, at(190));
        assert_eq!(stale.status, 503);
        let doc = body(&stale);
        assert_eq!(doc["status"]["IPv4"]["healthy"], false);
        assert_eq!(doc["status"]["IPv6"]["healthy"], true);
        assert_eq!(
            doc["lastUpdated"], "1970-01-01T00:01:40Z",
            "the stale family's last update, not the newest"
        );

        // A family that never synced yet (starting up) does not count.
        let starting = ProxyHealth::new(Duration::from_secs(60));
        starting.set_node_eligible(true);
        starting.updated("IPv4", at(100));
        starting.queued("IPv6", at(100));
        assert_eq!(starting.answer(true, at(500)).status, 200);
        assert!(
            body(&starting.answer(true, at(500)))["status"]
                .get("IPv6")
                .is_none()
        );
    }

    #[test]
    fn healthz_fails_for_a_node_going_away_livez_does_not() {
        let health = ProxyHealth::new(Duration::from_secs(60));
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
