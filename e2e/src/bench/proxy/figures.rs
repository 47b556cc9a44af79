//! What the proxy benchmark measures of each proxy, read from its /metrics
//! (kube-proxy's metric names, which ours serves too) and from the rules it
//! wrote, and the report that puts ours next to upstream's.

use super::super::procstat::ProcUsage;
use super::super::promtext;

pub const SYNC: &str = "kubeproxy_sync_proxy_rules_duration_seconds";
pub const FULL_SYNC: &str = "kubeproxy_sync_full_proxy_rules_duration_seconds";
pub const PARTIAL_SYNC: &str = "kubeproxy_sync_partial_proxy_rules_duration_seconds";
pub const PROGRAMMING: &str = "kubeproxy_network_programming_duration_seconds";
pub const LAST_SYNC: &str = "kubeproxy_sync_proxy_rules_last_timestamp_seconds";

/// The series of the IPv4 proxier: upstream runs an IPv6 one beside it
/// wherever ip6tables works (dual-stack, its default), ours is IPv4 only,
/// and the bench's Services are IPv4.
const IPV4: &str = "ip_family=\"IPv4\"";

/// One histogram of a scrape, the IPv4 proxier's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub count: f64,
    pub sum: f64,
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    pub fn read(text: &str, name: &str) -> Self {
        Self {
            count: promtext::sum(text, &format!("{name}_count"), &[IPV4]),
            sum: promtext::sum(text, &format!("{name}_sum"), &[IPV4]),
            buckets: promtext::buckets(text, name, &[IPV4]),
        }
    }

    /// What was observed after `before`.
    pub fn since(&self, before: &Histogram) -> Histogram {
        Histogram {
            count: self.count - before.count,
            sum: self.sum - before.sum,
            buckets: promtext::bucket_delta(&self.buckets, &before.buckets),
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    pub fn quantile(&self, q: f64) -> Option<f64> {
        promtext::quantile(q, &self.buckets)
    }
}

/// The histograms the bench reads, from one scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub sync: Histogram,
    pub full: Histogram,
    pub partial: Histogram,
    pub programming: Histogram,
    /// When the last sync finished (Unix seconds).
    pub last_sync: f64,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        Self {
            sync: Histogram::read(text, SYNC),
            full: Histogram::read(text, FULL_SYNC),
            partial: Histogram::read(text, PARTIAL_SYNC),
            programming: Histogram::read(text, PROGRAMMING),
            last_sync: promtext::sum(text, LAST_SYNC, &[IPV4]),
        }
    }
}

/// Size of a ruleset dump (`iptables-save`, `nft list ruleset`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RulesSize {
    pub lines: usize,
    pub bytes: usize,
    /// Per-service chains in it: every Service with endpoints has one, so
    /// this says the dump holds the whole workload.
    pub service_chains: usize,
}

impl RulesSize {
    /// `is_service_chain` tells the line declaring a per-service chain.
    pub fn of(dump: &str, is_service_chain: fn(&str) -> bool) -> Self {
        Self {
            lines: dump.lines().count(),
            bytes: dump.len(),
            service_chains: dump.lines().filter(|l| is_service_chain(l)).count(),
        }
    }
}

/// A per-service chain in iptables-save: `:KUBE-SVC-…` upstream, `:US-SVC-…` ours.
pub fn iptables_service_chain(line: &str) -> bool {
    line.starts_with(':') && line.contains("-SVC-")
}

/// A per-service chain in `nft list ruleset` (upstream's `service-…` chains).
pub fn nft_service_chain(line: &str) -> bool {
    line.trim_start().starts_with("chain service-")
}

/// Everything measured of one proxy.
#[derive(Clone, Debug, Default)]
pub struct ProxyFigures {
    /// From the process's start until its first sync was done (listing every
    /// object included).
    pub to_first_sync: f64,
    /// Duration of that first (full) sync, from the proxy's own histogram.
    pub first_full_sync: f64,
    /// A full sync again, with everything already programmed: the one the
    /// proxy does when its canary chains vanish (tables flushed), as both
    /// proxies' periodic full sync comes only hourly, and never upstream
    /// past 1000 endpoints. iptables mode only.
    pub resync: Option<f64>,
    /// Syncs during the change series: partial ones.
    pub partial: Histogram,
    /// Network programming latency during the change series, as the proxy's
    /// histogram observed it (its buckets are coarse: 0.25 s, 0.5 s, 1 s…).
    pub programming: Histogram,
    /// The same latency per change, exact: from the trigger time the bench
    /// wrote to the end of the sync that programmed it (the proxy's
    /// `sync_proxy_rules_last_timestamp_seconds`), seconds, sorted.
    pub programming_samples: Vec<f64>,
    /// Changes whose programming the proxy never reported in time.
    pub changes_missed: usize,
    pub rules: RulesSize,
    /// Connect times to ClusterIPs spread over all Services, seconds, sorted.
    pub first_packet: Vec<f64>,
    /// Probes that did not connect.
    pub packets_failed: usize,
    pub usage: Option<ProcUsage>,
}

/// The `q` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// How a figure is printed.
#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
    Micros,
    Count,
    MiB,
}

fn show(value: Option<f64>, unit: Unit) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return "–".into();
    };
    match unit {
        Unit::Seconds => format!("{v:.2} s"),
        Unit::Millis => format!("{:.1} ms", v * 1e3),
        Unit::Micros => format!("{:.0} µs", v * 1e6),
        Unit::Count => format!("{v:.0}"),
        Unit::MiB => format!("{:.0} MiB", v / (1024.0 * 1024.0)),
    }
}

/// ours / upstream, when both exist and upstream's is not zero.
pub fn ratio(ours: Option<f64>, upstream: Option<f64>) -> String {
    match (ours, upstream) {
        (Some(o), Some(u)) if u > 0.0 && o.is_finite() && u.is_finite() => {
            format!("{:.2}×", o / u)
        }
        _ => "–".into(),
    }
}

type Pick = fn(&ProxyFigures) -> Option<f64>;

fn rows() -> Vec<(&'static str, Unit, Pick)> {
    vec![
        ("start → first sync done", Unit::Seconds, |f| {
            Some(f.to_first_sync)
        }),
        ("first sync (full, all objects)", Unit::Seconds, |f| {
            Some(f.first_full_sync)
        }),
        ("full resync after a flush", Unit::Seconds, |f| f.resync),
        (
            "one-endpoint-change sync (partial, mean)",
            Unit::Millis,
            |f| f.partial.mean(),
        ),
        ("network programming p50", Unit::Millis, |f| {
            percentile(&f.programming_samples, 0.5)
        }),
        ("network programming p99", Unit::Millis, |f| {
            percentile(&f.programming_samples, 0.99)
        }),
        (
            "network programming mean (proxy's histogram)",
            Unit::Millis,
            |f| f.programming.mean(),
        ),
        ("rules: lines", Unit::Count, |f| Some(f.rules.lines as f64)),
        ("rules: bytes", Unit::Count, |f| Some(f.rules.bytes as f64)),
        ("per-service chains", Unit::Count, |f| {
            Some(f.rules.service_chains as f64)
        }),
        ("first packet to a ClusterIP p50", Unit::Micros, |f| {
            percentile(&f.first_packet, 0.5)
        }),
        ("first packet to a ClusterIP p99", Unit::Micros, |f| {
            percentile(&f.first_packet, 0.99)
        }),
        ("CPU seconds (the proxy)", Unit::Seconds, |f| {
            f.usage.map(|u| u.cpu_seconds)
        }),
        ("CPU seconds (its iptables/nft runs)", Unit::Seconds, |f| {
            f.usage.map(|u| u.children_cpu_seconds)
        }),
        ("peak RSS", Unit::MiB, |f| {
            f.usage.map(|u| u.peak_rss_bytes as f64)
        }),
    ]
}

/// What the report says about the run.
pub struct Heading<'a> {
    pub services: usize,
    pub mode: &'a str,
    pub changes: usize,
    pub probes: usize,
}

/// A markdown table: one row per figure, upstream's and ours side by side
/// with the ratio ours / upstream (lower is better for every figure but
/// "per-service chains", which only checks that all Services were written).
pub fn report(
    heading: &Heading<'_>,
    upstream: Option<&ProxyFigures>,
    ours: Option<&ProxyFigures>,
) -> String {
    let mut out = format!(
        "Proxy ({} mode): {} Services × {} endpoints; {} one-endpoint changes; first packet over {} ClusterIPs\n\n\
         | figure | kube-proxy | understudy-proxy | understudy / kube-proxy |\n|---|---|---|---|\n",
        heading.mode,
        heading.services,
        super::objects::ENDPOINTS_PER_SERVICE,
        heading.changes,
        heading.probes,
    );
    for (label, unit, pick) in rows() {
        let u = upstream.and_then(pick);
        let o = ours.and_then(pick);
        out.push_str(&format!(
            "| {label} | {} | {} | {} |\n",
            show(u, unit),
            show(o, unit),
            ratio(o, u)
        ));
    }
    let notes: Vec<String> = [("kube-proxy", upstream), ("understudy-proxy", ours)]
        .iter()
        .filter_map(|(name, f)| {
            let f = (*f)?;
            let mut n = vec![];
            if f.changes_missed > 0 {
                n.push(format!(
                    "{} changes with no programming latency reported",
                    f.changes_missed
                ));
            }
            if f.packets_failed > 0 {
                n.push(format!("{} probes did not connect", f.packets_failed));
            }
            n.push(format!(
                "{:.0} partial syncs, {:.0} programming observations",
                f.partial.count, f.programming.count
            ));
            Some(format!("{name}: {}", n.join(", ")))
        })
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family=\"IPv4\",le=\"0.5\"} 0
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family=\"IPv4\",le=\"1\"} 1
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family=\"IPv4\",le=\"+Inf\"} 1
kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family=\"IPv4\"} 0.75
kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family=\"IPv6\",le=\"0.5\"} 1
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family=\"IPv6\",le=\"+Inf\"} 1
kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family=\"IPv6\"} 0.01
kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv6\"} 1
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 1.7965e+09
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv6\"} 1.7965e+09
kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"0.25\"} 3
kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"0.5\"} 4
kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"+Inf\"} 4
kubeproxy_network_programming_duration_seconds_sum{ip_family=\"IPv4\"} 0.8
kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"} 4
";

    #[test]
    fn reads_the_ipv4_proxiers_series() {
        let s = Scrape::parse(METRICS);
        assert_eq!(s.last_sync, 1.7965e9);
        assert_eq!(s.full.count, 1.0);
        assert_eq!(s.full.mean(), Some(0.75));
        assert_eq!(s.programming.count, 4.0);
        assert_eq!(s.programming.quantile(0.5), Some(0.25 * 2.0 / 3.0));
        assert_eq!(s.partial.mean(), None);
        let before = Histogram {
            count: 2.0,
            sum: 0.2,
            buckets: vec![(0.25, 2.0), (0.5, 2.0), (f64::INFINITY, 2.0)],
        };
        let during = s.programming.since(&before);
        assert_eq!(during.count, 2.0);
        assert_eq!(during.buckets[0], (0.25, 1.0));
    }

    #[test]
    fn rules_size_counts_service_chains() {
        let dump = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AAA - [0:0]\n:KUBE-SVC-BBB - [0:0]\n-A KUBE-SVC-AAA -j KUBE-SEP-X\nCOMMIT\n";
        let r = RulesSize::of(dump, iptables_service_chain);
        assert_eq!((r.lines, r.bytes, r.service_chains), (6, dump.len(), 2));
        let ours = ":US-SERVICES - [0:0]\n:US-SVC-AAA - [0:0]\n-A US-SERVICES -j US-SVC-AAA\n";
        assert_eq!(
            RulesSize::of(ours, iptables_service_chain).service_chains,
            1
        );
        let nft = "table ip kube-proxy {\n\tchain service-ULMVA6XW-ns/svc-0/tcp/ {\n\t}\n}\n";
        assert_eq!(RulesSize::of(nft, nft_service_chain).service_chains, 1);
    }

    #[test]
    fn percentiles_and_ratios() {
        let samples = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(percentile(&samples, 0.5), Some(3.0));
        assert_eq!(percentile(&samples, 0.99), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25×");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "–");
        assert_eq!(ratio(None, Some(1.0)), "–");
    }

    #[test]
    fn report_prints_each_figure_with_its_ratio() {
        let upstream = ProxyFigures {
            to_first_sync: 4.0,
            first_full_sync: 2.0,
            first_packet: vec![0.0001, 0.0002],
            usage: Some(ProcUsage {
                cpu_seconds: 10.0,
                peak_rss_bytes: 100 << 20,
                children_cpu_seconds: 4.0,
            }),
            ..Default::default()
        };
        let ours = ProxyFigures {
            to_first_sync: 2.0,
            first_full_sync: 0.5,
            first_packet: vec![0.0001, 0.0002],
            usage: Some(ProcUsage {
                cpu_seconds: 5.0,
                peak_rss_bytes: 50 << 20,
                children_cpu_seconds: 1.0,
            }),
            ..Default::default()
        };
        let heading = Heading {
            services: 1000,
            mode: "iptables",
            changes: 30,
            probes: 200,
        };
        let text = report(&heading, Some(&upstream), Some(&ours));
        assert!(
            text.contains("| first sync (full, all objects) | 2.00 s | 0.50 s | 0.25× |"),
            "{text}"
        );
        assert!(
            text.contains("| peak RSS | 100 MiB | 50 MiB | 0.50× |"),
            "{text}"
        );
        assert!(
            text.contains("| full resync after a flush | – | – | – |"),
            "{text}"
        );
        assert!(text.starts_with("Proxy (iptables mode): 1000 Services × 5 endpoints"));
        let only_ours = report(&heading, None, Some(&ours));
        assert!(
            only_ours.contains("| start → first sync done | – | 2.00 s | – |"),
            "{only_ours}"
        );
    }
}
