//! A Service keeps routing: requests sent to its ClusterIP from a real node
//! throughout the run succeed whenever the Service is *stable* — its ready
//! endpoints are exactly its serving pods (Ready, not terminating), not
//! empty, unchanged across the listings around the request and for a settle
//! window before it. Failures are allowed only while the Service is not
//! stable (a backend deleted and not yet out of the slices, a new one ready
//! and not yet in them) and for the settle window after it became stable
//! again: the proxy's time to program the change. A fault is no excuse: the
//! apiserver down, etcd compacted, the proxy killed, the node's link cut —
//! the node's rules stay and keep routing (upstream's promise). Only a
//! change the proxy could not see when it happened (made while it was dead
//! or its node cut off: a *blind* window) gets its settle window from the
//! moment the proxy could see again.
//!
//! Pure: the probe log and the listings' observations of the Service in,
//! the unexcused failures out.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use super::{Invariant, Violation};

/// One request of the prober.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// Since the run started.
    pub at: Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The traffic Service as one listing saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSeen {
    /// Since the run started: when the listing began.
    pub at: Duration,
    /// When it ended: a change it saw may have happened as late as this.
    pub until: Duration,
    /// Ready endpoint addresses in its EndpointSlices.
    pub published: BTreeSet<String>,
    /// Addresses of its pods that are Ready and not terminating.
    pub serving: BTreeSet<String>,
}

impl ServiceSeen {
    /// Reads the Service `name`'s slices and the pods labelled `app=<app>`
    /// from a listing.
    pub fn from_listing(
        (at, until): (Duration, Duration),
        name: &str,
        app: &str,
        slices: &[EndpointSlice],
        pods: &[Pod],
    ) -> Self {
        let published = slices
            .iter()
            .filter(|s| {
                s.labels()
                    .get(super::endpoints::SERVICE_NAME_LABEL)
                    .map(String::as_str)
                    == Some(name)
            })
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .flat_map(|s| s.endpoints.iter().flatten())
            // The API: an unset `ready` is to be read as ready.
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        let serving = pods
            .iter()
            .filter(|p| p.labels().get("app").map(String::as_str) == Some(app))
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none() && crate::workloads::pod_is_ready(p)
            })
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect();
        Self {
            at,
            until,
            published,
            serving,
        }
    }

    /// Its endpoints are its serving pods, and there are some.
    fn settled(&self) -> bool {
        !self.published.is_empty() && self.published == self.serving
    }
}

/// A run of consecutive failed requests: from the first failure to the next
/// success (or the last failure, if none followed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outage {
    pub start: Duration,
    pub end: Duration,
    pub failures: usize,
    /// The first failure's reason.
    pub error: String,
    /// Why the first failure was allowed, once judged (`None`: it was not,
    /// or not judged).
    pub excuse: Option<String>,
}

impl Outage {
    pub fn length(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
}

/// The probe log's outages, in order.
pub fn outages(probes: &[ProbeResult]) -> Vec<Outage> {
    let mut found: Vec<Outage> = vec![];
    let mut open: Option<Outage> = None;
    for probe in probes {
        match (&probe.error, open.as_mut()) {
            (Some(_), Some(outage)) => {
                outage.failures += 1;
                outage.end = probe.at;
            }
            (Some(error), None) => {
                open = Some(Outage {
                    start: probe.at,
                    end: probe.at,
                    failures: 1,
                    error: error.clone(),
                    excuse: None,
                })
            }
            (None, Some(_)) => {
                let mut outage = open.take().expect("open");
                outage.end = probe.at;
                found.push(outage);
            }
            (None, None) => {}
        }
    }
    found.extend(open);
    found
}

/// Why a request failing at `t` is allowed, if it is: the Service was not
/// stable around it. `seen` is in time order.
pub fn excuse(
    t: Duration,
    seen: &[ServiceSeen],
    blind: &[Blind],
    settle: Duration,
) -> Option<String> {
    if blind
        .iter()
        .any(|b| b.partition && b.from <= t && t < b.to + settle)
    {
        return Some("while a node was cut off from the others".into());
    }
    // The last listing at or before `t`; before the first, nothing is known.
    let Some(i) = seen.iter().rposition(|s| s.at <= t) else {
        return Some("before the first listing".into());
    };
    let same =
        |a: &ServiceSeen, b: &ServiceSeen| a.settled() && b.settled() && a.published == b.published;
    // The listing after `t` must agree too: what changed between the two
    // changed at an unknown moment, possibly before `t`.
    let next = seen.get(i + 1);
    if next.is_some_and(|next| !same(&seen[i], next)) || !seen[i].settled() {
        let empty = seen[i].published.is_empty() || next.is_some_and(|n| n.published.is_empty());
        return Some(
            if empty {
                "no ready endpoints"
            } else {
                "endpoints changing"
            }
            .into(),
        );
    }
    // Stable since the first listing of this unbroken stretch: the change
    // before it happened at the latest by that listing's end, and the
    // proxy had `settle` from there to program it.
    let mut since = i;
    while since > 0 && same(&seen[since - 1], &seen[i]) {
        since -= 1;
    }
    // The change happened after the listing before `since` began; a proxy
    // blind at any moment from then until the settle window after it ran
    // out may not have programmed it, and learnt it when it could see
    // again.
    let changed_after = since.checked_sub(1).map_or(Duration::ZERO, |j| seen[j].at);
    let changed_by = seen[since].until;
    let learnt = blind
        .iter()
        .filter(|b| b.from < changed_by + settle && b.to > changed_after)
        .map(|b| b.to)
        .fold(changed_by, Duration::max);
    (t < learnt + settle).then(|| {
        let after = t.saturating_sub(changed_by).as_secs_f64();
        if learnt > changed_by {
            format!("{after:.1}s after an endpoint change made while the proxy was blind")
        } else {
            format!("{after:.1}s after an endpoint change")
        }
    })
}

/// A stretch of the run in which the proxy on the prober's node could not
/// learn of changes (dead: killed, not yet healthy again; or cut off), or
/// some node was cut off (its endpoints stay published, for the node
/// grace period, but no proxy can reach them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blind {
    pub from: Duration,
    pub to: Duration,
    /// A node was cut off from the others: requests crossing the cut fail
    /// whatever the proxy does, so any failure in it (and the settle window
    /// after) is allowed. A lab of one node has nothing to cross.
    pub partition: bool,
}

/// `outages` with why each one's first failure was allowed.
pub fn judged_outages(
    probes: &[ProbeResult],
    seen: &[ServiceSeen],
    blind: &[Blind],
    settle: Duration,
) -> Vec<Outage> {
    let mut found = outages(probes);
    for outage in &mut found {
        outage.excuse = excuse(outage.start, seen, blind, settle);
    }
    found
}

/// The invariant: every failed request excused, else one violation naming
/// the Service with its unexcused outages (how many requests, when).
pub fn service_keeps_routing(
    service: &str,
    probes: &[ProbeResult],
    seen: &[ServiceSeen],
    blind: &[Blind],
    settle: Duration,
) -> Vec<Violation> {
    let bad: Vec<(Duration, &str)> = probes
        .iter()
        .filter_map(|p| Some((p.at, p.error.as_deref()?)))
        .filter(|(at, _)| excuse(*at, seen, blind, settle).is_none())
        .collect();
    if seen.is_empty() {
        return vec![nothing_probed(
            service,
            "no listing of the Service to judge requests by",
        )];
    }
    let Some((first_at, first_error)) = bad.first() else {
        return vec![];
    };
    let last_at = bad.last().map(|b| b.0).unwrap_or(*first_at);
    vec![Violation::new(
        Invariant::ServiceRoutes,
        vec![service.to_string()],
        format!(
            "{} requests failed while its ready endpoints were its serving pods, unchanged for {}s: \
             from {:.1}s to {:.1}s of the run, the first with {first_error:?}",
            bad.len(),
            settle.as_secs(),
            first_at.as_secs_f64(),
            last_at.as_secs_f64()
        ),
    )]
}

/// The violation of a run whose prober could not probe at all.
pub fn nothing_probed(service: &str, why: &str) -> Violation {
    Violation::new(
        Invariant::ServiceRoutes,
        vec![service.to_string()],
        format!("the prober sent no request: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::invariants::fixtures::from;
    use serde_json::json;

    const SETTLE: Duration = Duration::from_secs(5);

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn ok(at: f64) -> ProbeResult {
        ProbeResult {
            at: s(at),
            error: None,
        }
    }

    fn failed(at: f64) -> ProbeResult {
        ProbeResult {
            at: s(at),
            error: Some("connection refused".into()),
        }
    }

    fn set(addresses: &[&str]) -> BTreeSet<String> {
        addresses.iter().map(|a| a.to_string()).collect()
    }

    /// A listing every 2 s from 0 to `until`, the Service stable on `a`,`b`.
    fn stable(until: u32) -> Vec<ServiceSeen> {
        (0..=until / 2)
            .map(|i| ServiceSeen {
                at: Duration::from_secs(2 * i as u64),
                until: Duration::from_secs(2 * i as u64),
                published: set(&["10.0.0.1", "10.0.0.2"]),
                serving: set(&["10.0.0.1", "10.0.0.2"]),
            })
            .collect()
    }

    /// [`stable`] listings in which 10.0.0.2 leaves between the listings
    /// at 10 s and 12 s.
    fn one_endpoint_leaves_at_12s(until: u32) -> Vec<ServiceSeen> {
        let mut seen = stable(until);
        for later in &mut seen[6..] {
            later.published = set(&["10.0.0.1"]);
            later.serving = set(&["10.0.0.1"]);
        }
        seen
    }

    #[test]
    fn a_failure_while_the_service_is_stable_is_a_violation() {
        let seen = stable(40);
        let probes = vec![ok(19.0), failed(20.1), failed(20.3), ok(20.5)];
        let found = service_keeps_routing("Service/ns/web", &probes, &seen, &[], SETTLE);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].invariant, Invariant::ServiceRoutes);
        assert_eq!(found[0].objects, ["Service/ns/web"]);
        assert!(
            found[0].detail.starts_with("2 requests failed"),
            "{found:?}"
        );
        assert!(
            service_keeps_routing("Service/ns/web", &[ok(19.0), ok(20.1)], &seen, &[], SETTLE)
                .is_empty()
        );
    }

    #[test]
    fn failures_while_a_backend_leaves_and_for_the_settle_window_after_are_allowed() {
        // At 10 s the pod 10.0.0.2 is terminating but still in the slices;
        // at 12 s it is out of them; stable again from then.
        let mut seen = one_endpoint_leaves_at_12s(40);
        seen[5].serving = set(&["10.0.0.1"]);
        // Failed between the last stable listing (8 s) and the change, and
        // up to 5 s after the first listing of the new stable stretch (12 s).
        let probes = vec![failed(8.5), failed(11.0), failed(16.9), ok(17.0)];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &probes, &seen, &[], SETTLE),
            vec![]
        );
        let judged = judged_outages(&probes, &seen, &[], SETTLE);
        assert_eq!(judged[0].excuse.as_deref(), Some("endpoints changing"));
        assert_eq!(judged[0].failures, 3);
        assert_eq!(
            excuse(s(16.9), &seen, &[], SETTLE).as_deref(),
            Some("4.9s after an endpoint change")
        );
        assert_eq!(excuse(s(17.1), &seen, &[], SETTLE), None);
        // Past the settle window, it counts.
        let late = vec![failed(17.1)];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &late, &seen, &[], SETTLE).len(),
            1
        );
    }

    #[test]
    fn a_change_the_proxy_could_not_see_settles_from_when_it_sees_again() {
        // The proxy is dead from 9 s to 20 s.
        let seen = one_endpoint_leaves_at_12s(60);
        let blind = [Blind {
            from: s(9.0),
            to: s(20.0),
            partition: false,
        }];
        let probes = vec![failed(18.0), failed(24.9)];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &probes, &seen, &blind, SETTLE),
            vec![]
        );
        // Without it, 18 s is past the settle window of the 12 s listing.
        assert_eq!(
            service_keeps_routing("Service/ns/web", &probes, &seen, &[], SETTLE).len(),
            1
        );
        // A blind window is no excuse for a Service that did not change:
        // the rules the proxy left must route.
        let unchanged = stable(60);
        assert_eq!(
            service_keeps_routing(
                "Service/ns/web",
                &[failed(15.0)],
                &unchanged,
                &blind,
                SETTLE
            )
            .len(),
            1
        );
        // Nor is one that ended before the change.
        let early = [Blind {
            from: s(2.0),
            to: s(9.0),
            partition: false,
        }];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &[failed(18.0)], &seen, &early, SETTLE).len(),
            1
        );
    }

    #[test]
    fn a_proxy_killed_just_after_a_change_it_had_not_programmed_learns_it_on_restart() {
        // The proxy dies at 13 s, before programming the change, and is
        // back at 20 s.
        let seen = one_endpoint_leaves_at_12s(60);
        let blind = [Blind {
            from: s(13.0),
            to: s(20.0),
            partition: false,
        }];
        let probes = vec![failed(21.0), failed(24.9)];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &probes, &seen, &blind, SETTLE),
            vec![]
        );
        assert_eq!(
            service_keeps_routing("Service/ns/web", &probes, &seen, &[], SETTLE).len(),
            1
        );
        // Dead only once the change's settle window was over: the proxy
        // had programmed it, so its rules must route.
        let later = [Blind {
            from: s(18.0),
            to: s(25.0),
            partition: false,
        }];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &[failed(21.0)], &seen, &later, SETTLE).len(),
            1
        );
    }

    #[test]
    fn a_change_seen_late_in_a_listing_settles_from_the_listings_end() {
        let mut seen = one_endpoint_leaves_at_12s(60);
        // The listing that first shows the change began at 12 s and read
        // the slices at 14 s.
        seen[6].until = s(14.0);
        let probes = vec![failed(18.5)];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &probes, &seen, &[], SETTLE),
            vec![]
        );
        assert_eq!(
            service_keeps_routing("Service/ns/web", &[failed(19.1)], &seen, &[], SETTLE).len(),
            1
        );
    }

    #[test]
    fn failures_across_a_cut_between_nodes_are_allowed_until_it_settles() {
        let seen = stable(60);
        let cut = [Blind {
            from: s(10.0),
            to: s(30.0),
            partition: true,
        }];
        let during = vec![failed(12.0), failed(29.0), failed(34.9)];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &during, &seen, &cut, SETTLE),
            vec![]
        );
        assert_eq!(
            service_keeps_routing("Service/ns/web", &[failed(35.1)], &seen, &cut, SETTLE).len(),
            1
        );
        assert_eq!(
            service_keeps_routing("Service/ns/web", &[failed(9.9)], &seen, &cut, SETTLE).len(),
            1
        );
    }

    #[test]
    fn no_listing_at_all_is_a_violation() {
        let found = service_keeps_routing("Service/ns/web", &[ok(1.0)], &[], &[], SETTLE);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].detail.contains("no listing"), "{found:?}");
    }

    #[test]
    fn a_gap_in_the_listings_is_no_excuse_when_the_service_is_the_same_on_both_sides() {
        // The apiserver down from 10 s to 30 s: no listing, rules unchanged.
        let seen: Vec<ServiceSeen> = stable(40)
            .into_iter()
            .filter(|s| s.at <= s_(10) || s.at >= s_(30))
            .collect();
        let probes = vec![failed(20.0)];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &probes, &seen, &[], SETTLE).len(),
            1
        );
    }

    fn s_(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn no_ready_endpoints_excuses_failures_and_before_the_first_listing_nothing_is_known() {
        let mut seen = stable(40);
        for later in &mut seen[5..10] {
            later.published.clear();
            later.serving.clear();
        }
        let probes = vec![failed(12.0), failed(17.0)];
        assert_eq!(
            service_keeps_routing("Service/ns/web", &probes, &seen, &[], SETTLE),
            vec![]
        );
        let seen = stable(40)
            .into_iter()
            .filter(|s| s.at >= s_(4))
            .collect::<Vec<_>>();
        assert_eq!(
            service_keeps_routing("Service/ns/web", &[failed(1.0)], &seen, &[], SETTLE),
            vec![]
        );
    }

    #[test]
    fn outages_are_runs_of_failures_ended_by_a_success() {
        let probes = vec![
            ok(0.0),
            failed(1.0),
            failed(1.2),
            ok(1.5),
            failed(3.0),
            ok(3.2),
            failed(9.0),
        ];
        let found = outages(&probes);
        assert_eq!(found.len(), 3);
        assert_eq!((found[0].start, found[0].end), (s(1.0), s(1.5)));
        assert_eq!(found[0].failures, 2);
        assert_eq!(found[0].error, "connection refused");
        assert_eq!(found[1].length(), s(3.2) - s(3.0));
        assert_eq!(
            (found[2].start, found[2].end, found[2].failures),
            (s(9.0), s(9.0), 1)
        );
        assert!(outages(&[ok(0.0), ok(1.0)]).is_empty());
    }

    #[test]
    fn the_service_is_read_from_its_slices_ready_endpoints_and_its_serving_pods() {
        let slice: EndpointSlice = from(json!({
            "metadata": {"name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"]},
            ],
        }));
        let other: EndpointSlice = from(json!({
            "metadata": {"name": "db-x", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.9"]}],
        }));
        let pod = |ip: &str, ready: &str, deleting: bool| -> Pod {
            let mut pod = json!({
                "metadata": {"name": format!("p-{ip}"), "labels": {"app": "web"}},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]},
            });
            if deleting {
                pod["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
            }
            from(pod)
        };
        let pods = vec![
            pod("10.0.0.1", "True", false),
            pod("10.0.0.2", "False", false),
            pod("10.0.0.3", "True", true),
        ];
        let seen =
            ServiceSeen::from_listing((s(4.0), s(4.5)), "web", "web", &[slice, other], &pods);
        assert_eq!(seen.published, set(&["10.0.0.1", "10.0.0.3"]));
        assert_eq!(seen.serving, set(&["10.0.0.1"]));
        assert!(!seen.settled());
    }
}
