//! Scheduler metrics under upstream's names, so dashboards built for
//! kube-scheduler read ours unchanged.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncomingLabels {
    pub queue: String,
    pub event: String,
}

/// `scheduler_queueing_hint_execution_duration_seconds`' labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HintLabels {
    pub plugin: String,
    pub event: String,
    /// `Queue` or `QueueSkip` (upstream's third, `Error`, needs a hint that
    /// can fail; ours cannot).
    pub hint: String,
}

/// Upstream's buckets for a queueing hint: from 0.01 ms by 1.5×, 20 of them.
pub fn hint_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 1.5, 20))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptsLabels {
    pub attempts: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub extension_point: String,
}

pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn attempt_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn sli_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

#[derive(Clone)]
pub struct Metrics {
    pub schedule_attempts: Family<ResultLabels, Counter>,
    pub attempt_duration: HistogramFamily<ResultLabels>,
    pub algorithm_duration: Histogram,
    pub pending_pods: Family<QueueLabels, Gauge<i64, AtomicI64>>,
    pub pod_scheduling_sli_duration: HistogramFamily<AttemptsLabels>,
    pub binding_duration: Histogram,
    pub unschedulable_pods: Family<PluginLabels, Gauge<i64, AtomicI64>>,
    pub preemption_attempts: Counter,
    pub extender_requests: Family<VerbLabels, Counter>,
    pub preemption_victims: Histogram,
    pub queue_incoming_pods: Family<IncomingLabels, Counter>,
    pub queueing_hint_duration: HistogramFamily<HintLabels>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            schedule_attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(attempt_buckets as fn() -> Histogram),
            algorithm_duration: attempt_buckets(),
            pending_pods: Family::default(),
            pod_scheduling_sli_duration: Family::new_with_constructor(
                sli_buckets as fn() -> Histogram,
            ),
            binding_duration: attempt_buckets(),
            unschedulable_pods: Family::default(),
            preemption_attempts: Counter::default(),
            extender_requests: Family::default(),
            preemption_victims: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
            queue_incoming_pods: Family::default(),
            queueing_hint_duration: Family::new_with_constructor(hint_buckets as fn() -> Histogram),
        };
        registry.register(
            "scheduler_queueing_hint_execution_duration_seconds",
            "Duration for running a queueing hint function of a plugin",
            m.queueing_hint_duration.clone(),
        );
        registry.register(
            "scheduler_queue_incoming_pods",
            "Number of pods added to scheduling queues by event and queue type.",
            m.queue_incoming_pods.clone(),
        );
        registry.register(
            "scheduler_preemption_attempts",
            "Total preemption attempts in the cluster till now",
            m.preemption_attempts.clone(),
        );
        registry.register(
            "understudy_scheduler_extender_requests",
            "Requests served by the scheduler-extender API, by verb.",
            m.extender_requests.clone(),
        );
        registry.register(
            "scheduler_preemption_victims",
            "Number of selected preemption victims",
            m.preemption_victims.clone(),
        );
        registry.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            m.schedule_attempts.clone(),
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            m.attempt_duration.clone(),
        );
        registry.register(
            "scheduler_scheduling_algorithm_duration_seconds",
            "Scheduling algorithm latency in seconds",
            m.algorithm_duration.clone(),
        );
        registry.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods; 'gated' is the number of pods with scheduling gates.",
            m.pending_pods.clone(),
        );
        registry.register(
            "scheduler_pod_scheduling_sli_duration_seconds",
            "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue and might involve multiple scheduling attempts.",
            m.pod_scheduling_sli_duration.clone(),
        );
        registry.register(
            "scheduler_binding_duration_seconds",
            "Binding latency in seconds",
            m.binding_duration.clone(),
        );
        registry.register(
            "scheduler_unschedulable_pods",
            "The number of unschedulable pods broken down by plugin name. A pod will increment the gauge for all plugins that caused it to not schedule.",
            m.unschedulable_pods.clone(),
        );
        m
    }

    pub fn extender_request(&self, verb: &str) {
        self.extender_requests
            .get_or_create(&VerbLabels { verb: verb.into() })
            .inc();
    }

    pub fn attempt(&self, result: &str, profile: &str, seconds: f64) {
        let labels = ResultLabels {
            result: result.into(),
            profile: profile.into(),
        };
        self.schedule_attempts.get_or_create(&labels).inc();
        self.attempt_duration
            .get_or_create(&labels)
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_upstream_names() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.attempt("scheduled", "understudy-scheduler", 0.002);
        m.pending_pods
            .get_or_create(&QueueLabels {
                queue: "active".into(),
            })
            .set(3);
        m.queueing_hint_duration
            .get_or_create(&HintLabels {
                plugin: "TaintToleration".into(),
                event: "NodeUpdateNodeTaint".into(),
                hint: "Queue".into(),
            })
            .observe(0.00002);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("scheduler_queueing_hint_execution_duration_seconds_bucket{le=\"0.0000225\",plugin=\"TaintToleration\",event=\"NodeUpdateNodeTaint\",hint=\"Queue\"} 1"),
            "{text}"
        );
        assert!(text.contains("scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"understudy-scheduler\"} 1"), "{text}");
        assert!(
            text.contains("scheduler_pending_pods{queue=\"active\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("scheduler_scheduling_attempt_duration_seconds_bucket"),
            "{text}"
        );
    }
}
