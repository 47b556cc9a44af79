//! kube-proxy's metrics (pkg/proxy/metrics), by its names, labels and
//! buckets, so dashboards and alerts written for kube-proxy read ours.
//! Counters are registered without `_total`: the encoder appends it.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::ProxyMode;
use crate::proxier::{SyncReport, Written};
use crate::tracker::IpFamily;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabel {
    pub ip_family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
    pub ip_family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

#[derive(Clone)]
pub struct Metrics {
    family: FamilyLabel,
    pub sync_duration: Family<FamilyLabel, Histogram>,
    pub full_sync_duration: Family<FamilyLabel, Histogram>,
    pub partial_sync_duration: Family<FamilyLabel, Histogram>,
    pub last_sync_timestamp: Family<FamilyLabel, F64Gauge>,
    pub last_queued_timestamp: Family<FamilyLabel, F64Gauge>,
    pub network_programming: Family<FamilyLabel, Histogram>,
    pub endpoint_changes_pending: Gauge,
    pub endpoint_changes_total: Counter,
    pub service_changes_pending: Gauge,
    pub service_changes_total: Counter,
    pub restore_failures: Family<FamilyLabel, Counter>,
    pub partial_restore_failures: Family<FamilyLabel, Counter>,
    pub rules_total: Family<TableLabel, Gauge>,
    pub rules_last: Family<TableLabel, Gauge>,
    pub nftables_sync_failures: Family<FamilyLabel, Counter>,
    pub nftables_cleanup_failures: Family<FamilyLabel, Counter>,
    pub healthz: Family<CodeLabel, Counter>,
    pub livez: Family<CodeLabel, Counter>,
    pub conntrack_reconcile_duration: Family<FamilyLabel, Histogram>,
    pub conntrack_deleted_entries: Family<FamilyLabel, Counter>,
}

fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// 0.25 s and 0.5 s, each second to 59 s, every 5 s to 115 s, every 30 s to 5 min.
fn network_programming_histogram() -> Histogram {
    let buckets = [0.25, 0.5]
        .into_iter()
        .chain((1..=59).map(f64::from))
        .chain((0..12).map(|i| 60.0 + 5.0 * f64::from(i)))
        .chain((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    Histogram::new(buckets)
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Metrics {
    /// The common metrics and the mode's own (upstream registers only the
    /// running mode's: iptables rule counts, nftables failure counters, or
    /// for IPVS just the iptables-restore failures — nor does its IPVS mode
    /// have the full/partial sync durations).
    pub fn register(registry: &mut Registry, family: IpFamily, mode: ProxyMode) -> Self {
        let m = Metrics {
            family: FamilyLabel {
                ip_family: family.address_type().to_string(),
            },
            sync_duration: Family::new_with_constructor(sync_histogram),
            full_sync_duration: Family::new_with_constructor(sync_histogram),
            partial_sync_duration: Family::new_with_constructor(sync_histogram),
            last_sync_timestamp: Family::default(),
            last_queued_timestamp: Family::default(),
            network_programming: Family::new_with_constructor(network_programming_histogram),
            endpoint_changes_pending: Gauge::default(),
            endpoint_changes_total: Counter::default(),
            service_changes_pending: Gauge::default(),
            service_changes_total: Counter::default(),
            restore_failures: Family::default(),
            partial_restore_failures: Family::default(),
            rules_total: Family::default(),
            rules_last: Family::default(),
            nftables_sync_failures: Family::default(),
            nftables_cleanup_failures: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
            conntrack_reconcile_duration: Family::new_with_constructor(sync_histogram),
            conntrack_deleted_entries: Family::default(),
        };
        macro_rules! reg {
            ($name:literal, $help:literal, $metric:expr) => {
                registry.register(concat!("kubeproxy_", $name), $help, $metric.clone())
            };
        }
        reg!(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration
        );
        if mode != ProxyMode::Ipvs {
            reg!(
                "sync_full_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for full resyncs",
                m.full_sync_duration
            );
            reg!(
                "sync_partial_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for partial resyncs",
                m.partial_sync_duration
            );
        }
        reg!(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync_timestamp
        );
        reg!(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued_timestamp
        );
        reg!(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming
        );
        reg!(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending
        );
        reg!(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes_total
        );
        reg!(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending
        );
        reg!(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes_total
        );
        if mode == ProxyMode::Nftables {
            reg!(
                "sync_proxy_rules_nftables_sync_failures",
                "Cumulative proxy nftables sync failures",
                m.nftables_sync_failures
            );
            reg!(
                "sync_proxy_rules_nftables_cleanup_failures",
                "Cumulative proxy nftables cleanup failures",
                m.nftables_cleanup_failures
            );
        } else {
            reg!(
                "sync_proxy_rules_iptables_restore_failures",
                "Cumulative proxy iptables restore failures",
                m.restore_failures
            );
        }
        if mode == ProxyMode::Iptables {
            reg!(
                "sync_proxy_rules_iptables_partial_restore_failures",
                "Cumulative proxy iptables partial restore failures",
                m.partial_restore_failures
            );
            reg!(
                "sync_proxy_rules_iptables_total",
                "Total number of iptables rules owned by kube-proxy",
                m.rules_total
            );
            reg!(
                "sync_proxy_rules_iptables_last",
                "Number of iptables rules written by kube-proxy in last sync",
                m.rules_last
            );
        }
        reg!(
            "proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz
        );
        reg!("proxy_livez", "Cumulative proxy livez HTTP status", m.livez);
        // Upstream registers the reconciler's metrics in the iptables (and
        // ipvs) mode only; the nftables mode cleans the same flows unmeasured.
        if mode != ProxyMode::Nftables {
            reg!(
                "conntrack_reconciler_sync_duration_seconds",
                "ReconcileConntrackFlowsLatency latency in seconds",
                m.conntrack_reconcile_duration
            );
            reg!(
                "conntrack_reconciler_deleted_entries",
                "Cumulative conntrack flows deleted by conntrack reconciler",
                m.conntrack_deleted_entries
            );
        }
        m
    }

    /// The same metrics, labelled for `family`'s proxier (a dual-stack
    /// proxy has one of each, as upstream's metaproxier).
    pub fn for_family(&self, family: IpFamily) -> Metrics {
        Metrics {
            family: FamilyLabel {
                ip_family: family.address_type().to_string(),
            },
            ..self.clone()
        }
    }

    pub fn pending(&self, services: usize, endpoints: usize) {
        self.service_changes_pending.set(services as i64);
        self.endpoint_changes_pending.set(endpoints as i64);
    }

    pub fn queued(&self, at: SystemTime) {
        self.last_queued_timestamp
            .get_or_create(&self.family)
            .set(unix_seconds(at));
    }

    fn table(&self, table: &str) -> TableLabel {
        TableLabel {
            table: table.into(),
            ip_family: self.family.ip_family.clone(),
        }
    }

    pub fn synced(&self, report: &SyncReport, at: SystemTime) {
        self.observe_duration(report.full, report.duration);
        self.last_sync_timestamp
            .get_or_create(&self.family)
            .set(unix_seconds(at));
        match report.written {
            Written::Iptables {
                filter_rules,
                nat_rules,
                deleted_chains,
            } => {
                let filter = filter_rules as i64;
                let nat = nat_rules as i64 - deleted_chains as i64;
                self.rules_last
                    .get_or_create(&self.table("filter"))
                    .set(filter);
                self.rules_last.get_or_create(&self.table("nat")).set(nat);
                self.rules_total
                    .get_or_create(&self.table("filter"))
                    .set(filter);
                if report.full {
                    // A partial sync writes only part of nat: the total stays
                    // as the last full sync counted it.
                    self.rules_total.get_or_create(&self.table("nat")).set(nat);
                }
            }
            Written::Nftables { cleanup_failed, .. } => {
                if cleanup_failed {
                    self.nftables_cleanup_failures
                        .get_or_create(&self.family)
                        .inc();
                }
            }
            // Upstream's IPVS mode counts nothing more on success (a failed
            // IPVS operation is only logged).
            Written::Ipvs { .. } => {}
        }
    }

    /// `restore`: the mode's rule write failed (see [`crate::proxier::SyncOutcome`]).
    pub fn failed(&self, full: bool, restore: bool, duration: Duration) {
        self.observe_duration(full, duration);
        if !restore {
            return;
        }
        // Only the running mode's counters are registered: counting in
        // all keeps this free of the mode.
        self.nftables_sync_failures
            .get_or_create(&self.family)
            .inc();
        self.restore_failures.get_or_create(&self.family).inc();
        if !full {
            self.partial_restore_failures
                .get_or_create(&self.family)
                .inc();
        }
    }

    fn observe_duration(&self, full: bool, duration: Duration) {
        let seconds = duration.as_secs_f64();
        self.sync_duration
            .get_or_create(&self.family)
            .observe(seconds);
        let by_kind = if full {
            &self.full_sync_duration
        } else {
            &self.partial_sync_duration
        };
        by_kind.get_or_create(&self.family).observe(seconds);
    }

    /// From an EndpointSlice's last-change-trigger-time to its rules in place.
    pub fn programmed(&self, trigger: SystemTime, at: SystemTime) {
        let latency = at.duration_since(trigger).unwrap_or_default();
        self.network_programming
            .get_or_create(&self.family)
            .observe(latency.as_secs_f64());
    }

    /// One round of the conntrack cleanup (upstream observes both only when
    /// the table could be listed).
    pub fn conntrack_reconciled(&self, deleted: usize, duration: Duration) {
        self.conntrack_reconcile_duration
            .get_or_create(&self.family)
            .observe(duration.as_secs_f64());
        self.conntrack_deleted_entries
            .get_or_create(&self.family)
            .inc_by(deleted as u64);
    }

    pub fn health_answered(&self, path: &str, code: u16) {
        let family = if path == "/livez" {
            &self.livez
        } else {
            &self.healthz
        };
        family
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_kube_proxys() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry, IpFamily::V4, ProxyMode::Iptables);
        let report = SyncReport {
            full: false,
            duration: Duration::from_millis(3),
            changed: Default::default(),
            written: Written::Iptables {
                filter_rules: 4,
                nat_rules: 9,
                deleted_chains: 1,
            },
        };
        m.synced(&report, UNIX_EPOCH + Duration::from_secs(1000));
        m.failed(false, true, Duration::from_millis(2));
        m.programmed(UNIX_EPOCH, UNIX_EPOCH + Duration::from_millis(700));
        m.pending(2, 3);
        m.health_answered("/healthz", 503);
        m.conntrack_reconciled(3, Duration::from_millis(5));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 2",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_bucket{le=\"0.004\",ip_family=\"IPv4\"} 2",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 1000.0",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\",ip_family=\"IPv4\"} 0",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\",ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_iptables_last{table=\"nat\",ip_family=\"IPv4\"} 8",
            "kubeproxy_sync_proxy_rules_service_changes_pending 2",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 3",
            "kubeproxy_proxy_healthz_total{code=\"503\"} 1",
            "kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family=\"IPv4\"} 3",
            "kubeproxy_conntrack_reconciler_sync_duration_seconds_bucket{le=\"0.008\",ip_family=\"IPv4\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_nftables_mode_has_its_own_failure_counters() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry, IpFamily::V4, ProxyMode::Nftables);
        let report = SyncReport {
            full: true,
            duration: Duration::from_millis(3),
            changed: Default::default(),
            written: Written::Nftables {
                rewritten_services: 2,
                elements: 7,
                stale_chains: 0,
                cleanup_failed: true,
            },
        };
        m.synced(&report, UNIX_EPOCH + Duration::from_secs(1000));
        m.failed(true, true, Duration::from_millis(2));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("iptables"), "{text}");
    }

    #[test]
    fn the_ipvs_mode_has_upstreams_ipvs_metrics_only() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry, IpFamily::V4, ProxyMode::Ipvs);
        let report = SyncReport {
            full: true,
            duration: Duration::from_millis(3),
            changed: Default::default(),
            written: Written::Ipvs {
                virtual_servers: 2,
                applied: 5,
                draining: 1,
                failed: 1,
            },
        };
        m.synced(&report, UNIX_EPOCH + Duration::from_secs(1000));
        m.failed(true, true, Duration::from_millis(2));
        m.failed(true, false, Duration::from_millis(2));
        m.conntrack_reconciled(1, Duration::from_millis(5));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 3",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 1000.0",
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 1",
            "kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family=\"IPv4\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        for absent in [
            "full_proxy_rules",
            "partial",
            "iptables_total",
            "iptables_last",
            "nftables",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }
}
