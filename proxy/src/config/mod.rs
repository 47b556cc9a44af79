//! The `KubeProxyConfiguration` file (`kubeproxy.config.k8s.io/v1alpha1`), as
//! kube-proxy's `--config` reads it: upstream's field names and defaults, its
//! validation, and every field we do not implement refused by name (see
//! [`unsupported`]) instead of being silently ignored.
//!
//! Top-level `syncPeriod`/`minSyncPeriod` (the internal and v1alpha2
//! spelling) are unknown fields of v1alpha1 and refused, as upstream refuses
//! them: the periods live in the mode's own section.
//!
//! Departure from upstream, on purpose: `healthzBindAddress`/
//! `metricsBindAddress` default to nothing: without them the component's one
//! metrics-and-health server is used.

mod duration;
mod raw;
mod unsupported;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use duration::{format_go_duration, parse_go_duration};
use raw::RawConfig;
pub use unsupported::UNSUPPORTED_FIELDS;

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

/// kube-proxy's proxy modes (`mode: ""` means iptables, as upstream on Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Iptables,
    Nftables,
    Ipvs,
}

/// How traffic from this cluster's pods is told apart from the rest
/// (`detectLocalMode` + `detectLocal`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectLocalMode {
    /// Source in `clusterCIDR` (upstream's default).
    ClusterCidr,
    /// Source in the Node's `spec.podCIDRs`.
    NodeCidr,
    /// Arriving on this bridge.
    BridgeInterface(String),
    /// Arriving on an interface whose name starts with this.
    InterfaceNamePrefix(String),
}

/// One `nodePortAddresses` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePortAddress {
    /// The Node object's primary address(es).
    Primary,
    /// Loopback (127.0.0.0/8, ::1/128).
    Localhost,
    /// Every address (0.0.0.0/0, ::/0).
    All,
    Cidr(IpNet),
}

#[derive(Clone, Debug, PartialEq)]
pub struct IptablesConfig {
    pub masquerade_bit: u8,
    pub masquerade_all: bool,
    pub localhost_node_ports: bool,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NftablesConfig {
    pub masquerade_bit: u8,
    pub masquerade_all: bool,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IpvsConfig {
    /// "" means round robin, as upstream.
    pub scheduler: String,
    pub strict_arp: bool,
    /// Zero leaves the kernel's value, as upstream.
    pub tcp_timeout: Duration,
    pub tcp_fin_timeout: Duration,
    pub udp_timeout: Duration,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    pub exclude_cidrs: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConntrackConfig {
    /// Zero leaves nf_conntrack_max alone (and ignores `min`).
    pub max_per_core: u32,
    pub min: u32,
    /// Zero leaves the kernel's value.
    pub tcp_established_timeout: Duration,
    pub tcp_close_wait_timeout: Duration,
    pub udp_timeout: Duration,
    pub udp_stream_timeout: Duration,
    /// Sets nf_conntrack_tcp_be_liberal to 1 (never back to 0, as upstream).
    pub tcp_be_liberal: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KubeProxyConfiguration {
    pub mode: ProxyMode,
    /// `clusterCIDR`, split on commas (at most one per family).
    pub cluster_cidrs: Vec<IpNet>,
    pub iptables: IptablesConfig,
    pub nftables: NftablesConfig,
    pub ipvs: IpvsConfig,
    /// Empty means upstream's per-mode default ("all" for iptables and ipvs,
    /// "primary" for nftables).
    pub node_port_addresses: Vec<NodePortAddress>,
    pub conntrack: ConntrackConfig,
    pub detect_local: DetectLocalMode,
    pub hostname_override: Option<String>,
    /// The node's primary IP as upstream's `bindAddress` (nothing binds to it).
    pub bind_address: IpAddr,
    pub healthz_bind_address: Option<SocketAddr>,
    pub metrics_bind_address: Option<SocketAddr>,
    pub kubeconfig: Option<PathBuf>,
    pub client_qps: Option<f32>,
    pub client_burst: Option<i32>,
}

/// Upstream's health port (10256) + 100, where a bare healthz address listens.
pub const DEFAULT_HEALTHZ_PORT: u16 = 10356;
/// Upstream's metrics port (10249) + 100, where a bare metrics address listens.
pub const DEFAULT_METRICS_PORT: u16 = 10349;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing the KubeProxyConfiguration: {0}")]
    Parse(String),
    #[error("{field}: not supported by understudy-proxy ({reason}); found {value}")]
    Unsupported {
        field: String,
        reason: &'static str,
        value: String,
    },
    #[error("invalid KubeProxyConfiguration: {}", join(.0))]
    Invalid(Vec<FieldError>),
}

/// One validation failure, named by its field path as upstream's field errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Default for KubeProxyConfiguration {
    /// Upstream's defaults (pkg/proxy/apis/config/v1alpha1/defaults.go).
    fn default() -> Self {
        let thirty_seconds = Duration::from_secs(30);
        let one_second = Duration::from_secs(1);
        KubeProxyConfiguration {
            mode: ProxyMode::Iptables,
            cluster_cidrs: Vec::new(),
            iptables: IptablesConfig {
                masquerade_bit: 14,
                masquerade_all: false,
                localhost_node_ports: true,
                sync_period: thirty_seconds,
                min_sync_period: one_second,
            },
            nftables: NftablesConfig {
                masquerade_bit: 14,
                masquerade_all: false,
                sync_period: thirty_seconds,
                min_sync_period: one_second,
            },
            ipvs: IpvsConfig {
                scheduler: String::new(),
                strict_arp: false,
                tcp_timeout: Duration::ZERO,
                tcp_fin_timeout: Duration::ZERO,
                udp_timeout: Duration::ZERO,
                sync_period: thirty_seconds,
                min_sync_period: Duration::ZERO,
                exclude_cidrs: Vec::new(),
            },
            node_port_addresses: Vec::new(),
            conntrack: ConntrackConfig {
                max_per_core: 32 * 1024,
                min: 128 * 1024,
                tcp_established_timeout: Duration::from_secs(24 * 3600),
                tcp_close_wait_timeout: Duration::from_secs(3600),
                udp_timeout: Duration::ZERO,
                udp_stream_timeout: Duration::ZERO,
                tcp_be_liberal: false,
            },
            detect_local: DetectLocalMode::ClusterCidr,
            hostname_override: None,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            healthz_bind_address: None,
            metrics_bind_address: None,
            kubeconfig: None,
            client_qps: None,
            client_burst: None,
        }
    }
}

impl KubeProxyConfiguration {
    /// Reads and checks a `--config` file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses, defaults and validates a file's text (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?
        };
        check_type(&raw)?;
        refuse_unsupported(&raw)?;
        let mut errors = Errors::default();
        let config = resolve(raw, &mut errors);
        validate(&config, &mut errors);
        if errors.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(errors.0))
        }
    }

    /// The sync period of the mode in use.
    pub fn sync_period(&self) -> Duration {
        match self.mode {
            ProxyMode::Iptables => self.iptables.sync_period,
            ProxyMode::Nftables => self.nftables.sync_period,
            ProxyMode::Ipvs => self.ipvs.sync_period,
        }
    }

    /// The minimum sync period of the mode in use.
    pub fn min_sync_period(&self) -> Duration {
        match self.mode {
            ProxyMode::Iptables => self.iptables.min_sync_period,
            ProxyMode::Nftables => self.nftables.min_sync_period,
            ProxyMode::Ipvs => self.ipvs.min_sync_period,
        }
    }

    /// The masquerade bit of the mode in use (ipvs uses iptables' as upstream).
    pub fn masquerade_bit(&self) -> u8 {
        match self.mode {
            ProxyMode::Nftables => self.nftables.masquerade_bit,
            ProxyMode::Iptables | ProxyMode::Ipvs => self.iptables.masquerade_bit,
        }
    }

    /// masqueradeAll of the mode in use (ipvs uses iptables' as upstream).
    pub fn masquerade_all(&self) -> bool {
        match self.mode {
            ProxyMode::Nftables => self.nftables.masquerade_all,
            ProxyMode::Iptables | ProxyMode::Ipvs => self.iptables.masquerade_all,
        }
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: &str, problem: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            problem: problem.into(),
        });
    }

    fn duration(&mut self, field: &str, text: Option<&String>, default: Duration) -> Duration {
        match text.map(|t| parse_go_duration(t)) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(problem)) => {
                self.push(field, problem);
                default
            }
        }
    }

    /// A zero duration in the file means "use the default", as upstream's
    /// defaulting treats `0s` like an unset field.
    fn duration_or_default(
        &mut self,
        field: &str,
        text: Option<&String>,
        default: Duration,
    ) -> Duration {
        match self.duration(field, text, default) {
            Duration::ZERO => default,
            d => d,
        }
    }

    fn cidr(&mut self, field: &str, text: &str) -> Option<IpNet> {
        match text.trim().parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(_) => {
                self.push(field, format!("{text:?} is not a valid CIDR"));
                None
            }
        }
    }
}

fn check_type(raw: &RawConfig) -> Result<(), ConfigError> {
    match raw.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(ConfigError::Parse(format!(
                "apiVersion {other:?} is not supported; use {API_VERSION:?}"
            )));
        }
        None => {
            return Err(ConfigError::Parse(format!(
                "apiVersion is missing; use {API_VERSION:?}"
            )));
        }
    }
    match raw.kind.as_deref() {
        Some(KIND) => Ok(()),
        Some(other) => Err(ConfigError::Parse(format!(
            "kind {other:?} is not {KIND:?}"
        ))),
        None => Err(ConfigError::Parse(format!("kind is missing; use {KIND:?}"))),
    }
}

fn refuse_unsupported(raw: &RawConfig) -> Result<(), ConfigError> {
    let client = raw.client_connection.as_ref();
    let fields = [
        ("featureGates", raw.feature_gates.as_ref()),
        ("logging", raw.logging.as_ref()),
        (
            "clientConnection.acceptContentTypes",
            client.and_then(|c| c.accept_content_types.as_ref()),
        ),
        (
            "clientConnection.contentType",
            client.and_then(|c| c.content_type.as_ref()),
        ),
        ("bindAddressHardFail", raw.bind_address_hard_fail.as_ref()),
        ("enableProfiling", raw.enable_profiling.as_ref()),
        (
            "showHiddenMetricsForVersion",
            raw.show_hidden_metrics_for_version.as_ref(),
        ),
        (
            "iptables.snatNodeInternalIP",
            raw.iptables
                .as_ref()
                .and_then(|i| i.snat_node_internal_ip.as_ref()),
        ),
        ("winkernel", raw.winkernel.as_ref()),
        ("oomScoreAdj", raw.oom_score_adj.as_ref()),
        ("configSyncPeriod", raw.config_sync_period.as_ref()),
        ("portRange", raw.port_range.as_ref()),
        ("windowsRunAsService", raw.windows_run_as_service.as_ref()),
    ];
    for (field, value) in fields {
        let Some(value) = value else { continue };
        if let Some(reason) = unsupported::refusal(field, value) {
            return Err(ConfigError::Unsupported {
                field: field.to_string(),
                reason,
                value: unsupported::describe(value),
            });
        }
    }
    match raw.mode.as_deref() {
        Some("kernelspace") => Err(ConfigError::Unsupported {
            field: "mode".to_string(),
            reason: "kernelspace is Windows' mode; Windows is not supported",
            value: "kernelspace".to_string(),
        }),
        _ => Ok(()),
    }
}

fn resolve(raw: RawConfig, errors: &mut Errors) -> KubeProxyConfiguration {
    let defaults = KubeProxyConfiguration::default();
    let mode = match raw.mode.as_deref().unwrap_or("") {
        "" | "iptables" => ProxyMode::Iptables,
        "nftables" => ProxyMode::Nftables,
        "ipvs" => ProxyMode::Ipvs,
        other => {
            errors.push(
                "mode",
                format!("{other:?} is not one of \"iptables\", \"nftables\", \"ipvs\""),
            );
            ProxyMode::Iptables
        }
    };

    let ipt = raw.iptables.unwrap_or_default();
    let nft = raw.nftables.unwrap_or_default();
    let ipvs = raw.ipvs.unwrap_or_default();
    let ct = raw.conntrack.unwrap_or_default();
    let d = &defaults;
    // Upstream validates a mode's own section only when that mode is on:
    // problems in the others are dropped here.
    let mut ignored = Errors::default();

    let iptables = IptablesConfig {
        masquerade_bit: masquerade_bit(errors, "iptables.masqueradeBit", ipt.masquerade_bit),
        masquerade_all: ipt.masquerade_all.unwrap_or(false),
        localhost_node_ports: ipt.localhost_node_ports.unwrap_or(true),
        sync_period: errors.duration_or_default(
            "iptables.syncPeriod",
            ipt.sync_period.as_ref(),
            d.iptables.sync_period,
        ),
        min_sync_period: errors.duration_or_default(
            "iptables.minSyncPeriod",
            ipt.min_sync_period.as_ref(),
            d.iptables.min_sync_period,
        ),
    };
    let nftables = NftablesConfig {
        masquerade_bit: masquerade_bit(
            if mode == ProxyMode::Nftables {
                errors
            } else {
                &mut ignored
            },
            "nftables.masqueradeBit",
            nft.masquerade_bit,
        ),
        masquerade_all: nft.masquerade_all.unwrap_or(false),
        sync_period: errors.duration_or_default(
            "nftables.syncPeriod",
            nft.sync_period.as_ref(),
            d.nftables.sync_period,
        ),
        min_sync_period: errors.duration_or_default(
            "nftables.minSyncPeriod",
            nft.min_sync_period.as_ref(),
            d.nftables.min_sync_period,
        ),
    };
    let ipvs = IpvsConfig {
        scheduler: ipvs.scheduler.unwrap_or_default(),
        strict_arp: ipvs.strict_arp.unwrap_or(false),
        tcp_timeout: errors.duration("ipvs.tcpTimeout", ipvs.tcp_timeout.as_ref(), Duration::ZERO),
        tcp_fin_timeout: errors.duration(
            "ipvs.tcpFinTimeout",
            ipvs.tcp_fin_timeout.as_ref(),
            Duration::ZERO,
        ),
        udp_timeout: errors.duration("ipvs.udpTimeout", ipvs.udp_timeout.as_ref(), Duration::ZERO),
        sync_period: errors.duration_or_default(
            "ipvs.syncPeriod",
            ipvs.sync_period.as_ref(),
            d.ipvs.sync_period,
        ),
        min_sync_period: errors.duration(
            "ipvs.minSyncPeriod",
            ipvs.min_sync_period.as_ref(),
            Duration::ZERO,
        ),
        exclude_cidrs: (ipvs.exclude_cidrs.unwrap_or_default().iter())
            .filter_map(|c| {
                if mode == ProxyMode::Ipvs {
                    errors.cidr("ipvs.excludeCIDRs", c)
                } else {
                    ignored.cidr("ipvs.excludeCIDRs", c)
                }
            })
            .collect(),
    };

    let conntrack = ConntrackConfig {
        max_per_core: non_negative(
            errors,
            "conntrack.maxPerCore",
            ct.max_per_core,
            d.conntrack.max_per_core,
        ),
        min: non_negative(errors, "conntrack.min", ct.min, d.conntrack.min),
        tcp_established_timeout: errors.duration(
            "conntrack.tcpEstablishedTimeout",
            ct.tcp_established_timeout.as_ref(),
            d.conntrack.tcp_established_timeout,
        ),
        tcp_close_wait_timeout: errors.duration(
            "conntrack.tcpCloseWaitTimeout",
            ct.tcp_close_wait_timeout.as_ref(),
            d.conntrack.tcp_close_wait_timeout,
        ),
        udp_timeout: errors.duration(
            "conntrack.udpTimeout",
            ct.udp_timeout.as_ref(),
            Duration::ZERO,
        ),
        udp_stream_timeout: errors.duration(
            "conntrack.udpStreamTimeout",
            ct.udp_stream_timeout.as_ref(),
            Duration::ZERO,
        ),
        tcp_be_liberal: match ct.tcp_be_liberal.as_ref() {
            None | Some(serde_yaml::Value::Null) => false,
            Some(serde_yaml::Value::Bool(b)) => *b,
            Some(other) => {
                errors.push(
                    "conntrack.tcpBeLiberal",
                    format!("{} is not a boolean", unsupported::describe(other)),
                );
                false
            }
        },
    };

    let mut node_port_addresses: Vec<NodePortAddress> = Vec::new();
    for entry in raw.node_port_addresses.unwrap_or_default() {
        let address = match entry.as_str() {
            "primary" => NodePortAddress::Primary,
            "localhost" => NodePortAddress::Localhost,
            "all" => NodePortAddress::All,
            cidr => match errors.cidr("nodePortAddresses", cidr) {
                Some(net) => NodePortAddress::Cidr(net),
                None => continue,
            },
        };
        // A keyword may be given once (upstream); a CIDR may repeat.
        if !matches!(address, NodePortAddress::Cidr(_)) && node_port_addresses.contains(&address) {
            errors.push("nodePortAddresses", format!("Duplicate value: {entry:?}"));
            continue;
        }
        node_port_addresses.push(address);
    }

    let detect = raw.detect_local.unwrap_or_default();
    let detect_local = match raw.detect_local_mode.as_deref().unwrap_or("") {
        "" | "ClusterCIDR" => DetectLocalMode::ClusterCidr,
        "NodeCIDR" => DetectLocalMode::NodeCidr,
        "BridgeInterface" => {
            let name = detect.bridge_interface.unwrap_or_default();
            check_interface_name(errors, "detectLocal.bridgeInterface", &name);
            DetectLocalMode::BridgeInterface(name)
        }
        "InterfaceNamePrefix" => {
            let prefix = detect.interface_name_prefix.unwrap_or_default();
            check_interface_name(errors, "detectLocal.interfaceNamePrefix", &prefix);
            DetectLocalMode::InterfaceNamePrefix(prefix)
        }
        other => {
            errors.push(
                "detectLocalMode",
                format!("{other:?} is not one of \"ClusterCIDR\", \"NodeCIDR\", \"BridgeInterface\", \"InterfaceNamePrefix\""),
            );
            DetectLocalMode::ClusterCidr
        }
    };

    // clusterCIDR is checked only for detectLocalMode ClusterCIDR, the one
    // mode that uses it (upstream's DetectLocal.ClusterCIDRs).
    let check_cluster_cidrs = detect_local == DetectLocalMode::ClusterCidr;
    let cluster_cidrs: Vec<IpNet> = (raw.cluster_cidr.as_deref().unwrap_or("").split(','))
        .filter(|c| !c.trim().is_empty())
        .filter_map(|c| {
            if check_cluster_cidrs {
                errors.cidr("clusterCIDR", c)
            } else {
                ignored.cidr("clusterCIDR", c)
            }
        })
        .collect();

    let bind_address = match raw.bind_address.as_deref().unwrap_or("") {
        "" => defaults.bind_address,
        text => text.parse().unwrap_or_else(|_| {
            errors.push("bindAddress", format!("{text:?} is not a valid IP address"));
            defaults.bind_address
        }),
    };

    let client = raw.client_connection.unwrap_or_default();
    KubeProxyConfiguration {
        mode,
        cluster_cidrs,
        iptables,
        nftables,
        ipvs,
        node_port_addresses,
        conntrack,
        detect_local,
        hostname_override: raw
            .hostname_override
            .filter(|h| !h.trim().is_empty())
            .map(|h| h.trim().to_string()),
        bind_address,
        healthz_bind_address: bind_socket(
            errors,
            "healthzBindAddress",
            raw.healthz_bind_address,
            DEFAULT_HEALTHZ_PORT,
        ),
        metrics_bind_address: bind_socket(
            errors,
            "metricsBindAddress",
            raw.metrics_bind_address,
            DEFAULT_METRICS_PORT,
        ),
        kubeconfig: client
            .kubeconfig
            .filter(|k| !k.is_empty())
            .map(PathBuf::from),
        client_qps: client.qps.filter(|q| *q != 0.0),
        client_burst: client.burst.filter(|b| *b != 0),
    }
}

fn masquerade_bit(errors: &mut Errors, field: &str, value: Option<i32>) -> u8 {
    match value {
        None => 14,
        Some(bit @ 0..=31) => bit as u8,
        Some(bit) => {
            errors.push(field, format!("{bit} must be within the range [0, 31]"));
            14
        }
    }
}

fn non_negative(errors: &mut Errors, field: &str, value: Option<i32>, default: u32) -> u32 {
    match value {
        None => default,
        Some(v) if v >= 0 => v as u32,
        Some(v) => {
            errors.push(field, format!("{v} must be greater than or equal to 0"));
            default
        }
    }
}

fn check_interface_name(errors: &mut Errors, field: &str, name: &str) {
    // Upstream checks only that it is there.
    if name.is_empty() {
        errors.push(field, "must not be empty for this detectLocalMode");
    }
}

/// `ip:port`, or a bare IP to which the default port is added (upstream's
/// AppendPortIfNeeded).
fn bind_socket(
    errors: &mut Errors,
    field: &str,
    text: Option<String>,
    default_port: u16,
) -> Option<SocketAddr> {
    let text = text.filter(|t| !t.is_empty())?;
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Some(SocketAddr::new(ip, default_port)),
        Err(_) => {
            errors.push(field, format!("{text:?} must be IP:port"));
            None
        }
    }
}

fn validate(config: &KubeProxyConfiguration, errors: &mut Errors) {
    // Only the active mode's periods are the proxy's (upstream's v1alpha1
    // conversion copies them to the top level, which is what it checks).
    let (section, sync, min_sync) = match config.mode {
        ProxyMode::Iptables => (
            "iptables",
            config.iptables.sync_period,
            config.iptables.min_sync_period,
        ),
        ProxyMode::Nftables => (
            "nftables",
            config.nftables.sync_period,
            config.nftables.min_sync_period,
        ),
        ProxyMode::Ipvs => ("ipvs", config.ipvs.sync_period, config.ipvs.min_sync_period),
    };
    if min_sync > sync {
        errors.push(
            &format!("{section}.syncPeriod"),
            format!(
                "{} must be greater than or equal to {section}.minSyncPeriod ({})",
                format_go_duration(sync),
                format_go_duration(min_sync)
            ),
        );
    }

    if config.detect_local != DetectLocalMode::ClusterCidr {
        return;
    }
    match config.cluster_cidrs.as_slice() {
        [] | [_] => {}
        [a, b] if matches!(a, IpNet::V4(_)) != matches!(b, IpNet::V4(_)) => {}
        [_, _] => errors.push(
            "clusterCIDR",
            "a pair of CIDRs must be one IPv4 and one IPv6",
        ),
        _ => errors.push("clusterCIDR", "at most one CIDR per IP family may be given"),
    }
}

#[cfg(test)]
mod tests;
