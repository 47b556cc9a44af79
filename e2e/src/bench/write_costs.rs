//! What one write costs the control plane: a pod create, a bind and a
//! `Scheduled` Event, each phase run alone on a quiet lab, in CPU
//! milliseconds of kube-apiserver, etcd and the rest of the control plane
//! per request.
//!
//! SchedulingBasic's two ceilings differ only by the Event every scheduler
//! records for each pod it binds; this measures what that Event costs the
//! control plane directly, instead of inferring it from the two paces. On a
//! machine where the control plane is the bottleneck, a scheduler that binds
//! and records Events cannot go faster than `bind / (bind + event)` of the
//! binds-only pace, whatever its own cost.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use understudy_component_base::client::ClientOptions;

use super::null_scheduler::{bind, scheduled_event};
use super::procstat;
use crate::kwok_stages::NO_KUBELET_LABEL;
use crate::state::ClusterState;
use crate::wait;

/// The control-plane processes whose CPU is counted, as the lab names them.
const COMPONENTS: [&str; 4] = ["kube-apiserver", "etcd", "kube-controller-manager", "kwok"];

#[derive(Clone, Debug)]
pub struct Options {
    /// Requests per phase and round.
    pub requests: usize,
    pub rounds: usize,
    /// Requests in flight (the null scheduler binds 128 at a time).
    pub in_flight: usize,
    pub qps: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    CreatePod,
    Bind,
    ScheduledEvent,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::CreatePod => "create pod",
            Self::Bind => "bind (pods/binding)",
            Self::ScheduledEvent => "create Scheduled Event",
        }
    }
}

/// One phase of one round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub requests: usize,
    pub failed: usize,
    pub wall_seconds: f64,
    /// CPU seconds spent by each component during the phase.
    pub cpu_seconds: BTreeMap<&'static str, f64>,
}

impl Sample {
    fn ms_per_request(&self, component: &str) -> f64 {
        self.cpu_seconds.get(component).copied().unwrap_or(0.0) * 1000.0
            / self.requests.max(1) as f64
    }

    fn control_plane_ms_per_request(&self) -> f64 {
        COMPONENTS
            .iter()
            .map(|c| self.ms_per_request(c))
            .sum::<f64>()
    }
}

fn cpu_now(state: &ClusterState) -> BTreeMap<&'static str, f64> {
    COMPONENTS
        .iter()
        .filter_map(|name| {
            let record = state.processes.iter().find(|p| p.name == *name)?;
            Some((*name, procstat::usage(record.pid)?.cpu_seconds))
        })
        .collect()
}

/// Runs `count` requests made by `request(i)`, `in_flight` at a time, and
/// measures the control plane meanwhile.
async fn measure<F, Fut, T>(
    state: &ClusterState,
    count: usize,
    in_flight: usize,
    request: F,
) -> Sample
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    let before = cpu_now(state);
    let started = Instant::now();
    let failed = futures::stream::iter(0..count)
        .map(request)
        .buffer_unordered(in_flight)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    let wall_seconds = started.elapsed().as_secs_f64();
    let after = cpu_now(state);
    Sample {
        requests: count,
        failed,
        wall_seconds,
        cpu_seconds: after
            .iter()
            .map(|(name, cpu)| (*name, cpu - before.get(name).copied().unwrap_or(0.0)))
            .collect(),
    }
}

fn pending_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "write-costs", NO_KUBELET_LABEL: "none"}},
        "spec": {
            // No scheduler runs under this name: the bench binds them itself.
            "schedulerName": "bench-write-costs",
            "containers": [{
                "name": "pause",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}},
            }],
        },
    }))
    .expect("static pod")
}

pub async fn run(
    state: &ClusterState,
    opts: &Options,
) -> anyhow::Result<BTreeMap<Phase, Vec<Sample>>> {
    let admin = wait::client_for(&state.kubeconfig).await?;
    // Binds and Events as the null scheduler makes them: as
    // system:kube-scheduler, over the components' HTTP/2 client.
    let scheduler: Client = ClientOptions {
        kubeconfig: Some(state.state_dir.join("kubeconfigs/scheduler.yaml")),
        qps: opts.qps as f32,
        burst: opts.qps,
        user_agent: "bench-write-costs".into(),
    }
    .client()
    .await?;
    let nodes = super::node_names(&admin).await?;
    anyhow::ensure!(!nodes.is_empty(), "the lab has no nodes");

    let mut samples: BTreeMap<Phase, Vec<Sample>> = BTreeMap::new();
    for round in 0..opts.rounds {
        let ns = format!("bench-write-costs-{round}");
        super::create_namespace(&admin, &ns).await?;
        let created: Api<Pod> = Api::namespaced(admin.clone(), &ns);
        let bound: Api<Pod> = Api::namespaced(scheduler.clone(), &ns);
        let events: Api<Event> = Api::namespaced(scheduler.clone(), &ns);
        let name = |i: usize| format!("pod-{i}");

        eprintln!("bench: write costs, round {}: pods", round + 1);
        let sample = measure(state, opts.requests, opts.in_flight, |i| {
            let created = created.clone();
            async move {
                created
                    .create(&PostParams::default(), &pending_pod(&name(i)))
                    .await
            }
        })
        .await;
        samples.entry(Phase::CreatePod).or_default().push(sample);

        let uids: BTreeMap<String, String> = created
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
            .collect();

        eprintln!("bench: write costs, round {}: binds", round + 1);
        let sample = measure(state, opts.requests, opts.in_flight, |i| {
            let (bound, ns, node) = (bound.clone(), ns.clone(), nodes[i % nodes.len()].clone());
            async move { bind(&bound, &ns, &name(i), &node).await }
        })
        .await;
        samples.entry(Phase::Bind).or_default().push(sample);

        eprintln!("bench: write costs, round {}: Events", round + 1);
        let sample = measure(state, opts.requests, opts.in_flight, |i| {
            let events = events.clone();
            let uid = uids.get(&name(i)).cloned().unwrap_or_default();
            let event = scheduled_event(&ns, &name(i), &uid, &nodes[i % nodes.len()]);
            async move { events.create(&PostParams::default(), &event).await }
        })
        .await;
        samples
            .entry(Phase::ScheduledEvent)
            .or_default()
            .push(sample);

        super::delete_namespace(&admin, &ns).await?;
    }
    Ok(samples)
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The table (medians over rounds) and the pace it implies.
pub fn report(samples: &BTreeMap<Phase, Vec<Sample>>, opts: &Options) -> String {
    let mut out = format!(
        "Write costs: {} requests per phase, {} in flight, median of {} rounds\n\n",
        opts.requests, opts.in_flight, opts.rounds
    );
    out.push_str(
        "| request | per s | failed | kube-apiserver ms | etcd ms | kube-controller-manager ms | kwok ms | control plane ms |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    let mut control_plane = BTreeMap::new();
    for (phase, rounds) in samples {
        let m = |f: &dyn Fn(&Sample) -> f64| median(rounds.iter().map(f).collect());
        let total = m(&|s| s.control_plane_ms_per_request());
        control_plane.insert(*phase, total);
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            phase.label(),
            m(&|s| s.requests as f64 / s.wall_seconds.max(1e-3)),
            rounds.iter().map(|s| s.failed).sum::<usize>(),
            m(&|s| s.ms_per_request("kube-apiserver")),
            m(&|s| s.ms_per_request("etcd")),
            m(&|s| s.ms_per_request("kube-controller-manager")),
            m(&|s| s.ms_per_request("kwok")),
            total,
        ));
    }
    out.push_str("\n(CPU milliseconds per request.)\n");
    if let (Some(bind), Some(event)) = (
        control_plane.get(&Phase::Bind),
        control_plane.get(&Phase::ScheduledEvent),
    ) {
        out.push_str(&format!(
            "A Scheduled Event costs the control plane {:.0} % of a bind: where the control plane \
             is the bottleneck, binding and recording Events goes at most {:.0} % of the \
             binds-only pace.\n",
            100.0 * event / bind,
            100.0 * bind / (bind + event),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(apiserver: f64, etcd: f64) -> Sample {
        Sample {
            requests: 1000,
            failed: 0,
            wall_seconds: 2.0,
            cpu_seconds: [("kube-apiserver", apiserver), ("etcd", etcd)].into(),
        }
    }

    #[test]
    fn per_request_costs_are_per_component_and_summed() {
        let s = sample(0.8, 0.2);
        assert!((s.ms_per_request("kube-apiserver") - 0.8).abs() < 1e-9);
        assert!((s.ms_per_request("kwok") - 0.0).abs() < 1e-9);
        assert!((s.control_plane_ms_per_request() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn report_gives_the_pace_binds_and_events_allow() {
        let samples: BTreeMap<Phase, Vec<Sample>> = [
            (Phase::Bind, vec![sample(0.6, 0.2)]),
            (Phase::ScheduledEvent, vec![sample(0.3, 0.1)]),
        ]
        .into();
        let opts = Options {
            requests: 1000,
            rounds: 1,
            in_flight: 128,
            qps: 5000,
        };
        let text = report(&samples, &opts);
        assert!(
            text.contains("| bind (pods/binding) | 500 | 0 | 0.600 | 0.200 |"),
            "{text}"
        );
        assert!(text.contains("50 % of a bind"), "{text}");
        assert!(
            text.contains("at most 67 % of the binds-only pace"),
            "{text}"
        );
    }
}
