//! The file as written: kube-proxy's `kubeproxy.config.k8s.io/v1alpha1` field
//! names, every field optional, unknown fields refused by serde.

use serde::Deserialize;
use serde_yaml::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a KubeProxyConfiguration (a mapping of its fields)"
)]
pub struct RawConfig {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub feature_gates: Option<Value>,
    pub client_connection: Option<RawClientConnection>,
    pub logging: Option<Value>,
    pub hostname_override: Option<String>,
    pub bind_address: Option<String>,
    pub healthz_bind_address: Option<String>,
    pub metrics_bind_address: Option<String>,
    pub bind_address_hard_fail: Option<Value>,
    pub enable_profiling: Option<Value>,
    pub show_hidden_metrics_for_version: Option<Value>,
    pub mode: Option<String>,
    pub iptables: Option<RawIptables>,
    pub ipvs: Option<RawIpvs>,
    pub nftables: Option<RawNftables>,
    pub winkernel: Option<Value>,
    pub detect_local_mode: Option<String>,
    pub detect_local: Option<RawDetectLocal>,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    pub node_port_addresses: Option<Vec<String>>,
    pub oom_score_adj: Option<Value>,
    pub conntrack: Option<RawConntrack>,
    pub config_sync_period: Option<Value>,
    pub port_range: Option<Value>,
    pub windows_run_as_service: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of clientConnection fields"
)]
pub struct RawClientConnection {
    pub kubeconfig: Option<String>,
    pub accept_content_types: Option<Value>,
    pub content_type: Option<Value>,
    pub qps: Option<f32>,
    pub burst: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of iptables fields"
)]
pub struct RawIptables {
    pub masquerade_bit: Option<i32>,
    pub masquerade_all: Option<bool>,
    pub localhost_node_ports: Option<bool>,
    #[serde(rename = "snatNodeInternalIP")]
    pub snat_node_internal_ip: Option<Value>,
    pub sync_period: Option<String>,
    pub min_sync_period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of nftables fields"
)]
pub struct RawNftables {
    pub masquerade_bit: Option<i32>,
    pub masquerade_all: Option<bool>,
    pub sync_period: Option<String>,
    pub min_sync_period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of ipvs fields"
)]
pub struct RawIpvs {
    pub sync_period: Option<String>,
    pub min_sync_period: Option<String>,
    pub scheduler: Option<String>,
    #[serde(rename = "excludeCIDRs")]
    pub exclude_cidrs: Option<Vec<String>>,
    #[serde(rename = "strictARP")]
    pub strict_arp: Option<bool>,
    pub tcp_timeout: Option<String>,
    pub tcp_fin_timeout: Option<String>,
    pub udp_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of conntrack fields"
)]
pub struct RawConntrack {
    pub max_per_core: Option<i32>,
    pub min: Option<i32>,
    pub tcp_established_timeout: Option<String>,
    pub tcp_close_wait_timeout: Option<String>,
    pub tcp_be_liberal: Option<Value>,
    pub udp_timeout: Option<String>,
    pub udp_stream_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of detectLocal fields"
)]
pub struct RawDetectLocal {
    pub bridge_interface: Option<String>,
    pub interface_name_prefix: Option<String>,
}
