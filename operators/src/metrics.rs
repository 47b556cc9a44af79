//! Controller metrics. Work queues use client-go's workqueue metric names
//! (`workqueue_depth{name=…}`, …) so kube-controller-manager dashboards read
//! ours; reconcile counts and durations are ours, labelled by controller.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 4.0, 12))
}

/// All controller metrics, registered once per process.
#[derive(Clone)]
pub struct Metrics {
    depth: Family<NameLabel, Gauge<i64, AtomicI64>>,
    adds: Family<NameLabel, Counter>,
    retries: Family<NameLabel, Counter>,
    queue_duration: HistogramFamily<NameLabel>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: HistogramFamily<ControllerLabel>,
    /// The PV binder's default-class assignments to existing claims
    /// (upstream's `retroactive_storageclass_total` / `_errors_total`).
    pub retroactive_storageclass: Counter,
    pub retroactive_storageclass_errors: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        registry.register(
            "workqueue_depth",
            "Current depth of the work queue",
            m.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Adds handled by the work queue",
            m.adds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Retries handled by the work queue",
            m.retries.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long an item stays in the work queue before being requested",
            m.queue_duration.clone(),
        );
        registry.register(
            "understudy_controller_reconciles",
            "Reconciles by controller and result (success, error)",
            m.reconciles.clone(),
        );
        registry.register(
            "understudy_controller_reconcile_duration_seconds",
            "How long one reconcile took",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "retroactive_storageclass",
            "Total number of retroactive StorageClass assignments to persistent volume claim",
            m.retroactive_storageclass.clone(),
        );
        registry.register(
            "retroactive_storageclass_errors",
            "Total number of failed retroactive StorageClass assignments to persistent volume claim",
            m.retroactive_storageclass_errors.clone(),
        );
        m
    }

    pub fn unregistered() -> Self {
        Self {
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            queue_duration: Family::new_with_constructor(duration_buckets),
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_buckets),
            retroactive_storageclass: Counter::default(),
            retroactive_storageclass_errors: Counter::default(),
        }
    }

    pub fn queue(&self, name: &str) -> QueueMetrics {
        let label = NameLabel { name: name.into() };
        QueueMetrics {
            depth: self.depth.get_or_create(&label).clone(),
            adds: self.adds.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
            queue_duration: self.queue_duration.get_or_create(&label).clone(),
        }
    }
}

/// One queue's handles.
#[derive(Clone)]
pub struct QueueMetrics {
    pub depth: Gauge<i64, AtomicI64>,
    pub adds: Counter,
    pub retries: Counter,
    pub queue_duration: Histogram,
}

impl QueueMetrics {
    /// Handles counted nowhere, for tests.
    pub fn detached() -> Self {
        Metrics::unregistered().queue("test")
    }
}
