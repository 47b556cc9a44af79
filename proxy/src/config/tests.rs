use super::*;

fn header() -> String {
    format!("apiVersion: {API_VERSION}\nkind: {KIND}\n")
}

fn parse(body: &str) -> Result<KubeProxyConfiguration, ConfigError> {
    KubeProxyConfiguration::parse(&format!("{}{body}", header()))
}

fn error_text(body: &str) -> String {
    parse(body).expect_err("should be refused").to_string()
}

#[test]
fn defaults_are_upstreams() {
    let config = parse("").unwrap();
    assert_eq!(config, KubeProxyConfiguration::default());
    assert_eq!(config.mode, ProxyMode::Iptables);
    assert_eq!(config.masquerade_bit(), 14);
    assert!(!config.masquerade_all());
    assert!(config.iptables.localhost_node_ports);
    assert_eq!(config.sync_period(), Duration::from_secs(30));
    assert_eq!(config.min_sync_period(), Duration::from_secs(1));
    assert_eq!(config.ipvs.min_sync_period, Duration::ZERO);
    assert_eq!(config.conntrack.max_per_core, 32768);
    assert_eq!(config.conntrack.min, 131072);
    assert_eq!(
        config.conntrack.tcp_established_timeout,
        Duration::from_secs(86400)
    );
    assert_eq!(
        config.conntrack.tcp_close_wait_timeout,
        Duration::from_secs(3600)
    );
    assert_eq!(config.detect_local, DetectLocalMode::ClusterCidr);
    assert_eq!(config.bind_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
}

#[test]
fn type_meta_is_required() {
    let err = KubeProxyConfiguration::parse("mode: iptables\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("apiVersion is missing"), "{err}");
    let err = KubeProxyConfiguration::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("\"kubeproxy.config.k8s.io/v1alpha2\" is not supported"),
        "{err}"
    );
    let err = KubeProxyConfiguration::parse(&format!("apiVersion: {API_VERSION}\nkind: Other\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("kind \"Other\""), "{err}");
}

#[test]
fn a_full_file() {
    let config = parse(
        r#"
mode: nftables
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
hostnameOverride: node-a
bindAddress: 192.168.1.10
healthzBindAddress: 0.0.0.0:10356
metricsBindAddress: 127.0.0.1
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 20
  burst: 40
iptables:
  masqueradeBit: 15
  masqueradeAll: true
  localhostNodePorts: false
  syncPeriod: 1m0s
  minSyncPeriod: 2s
nftables:
  masqueradeBit: 13
  masqueradeAll: true
  syncPeriod: 45s
  minSyncPeriod: 1.5s
ipvs:
  scheduler: wrr
  strictARP: true
  tcpTimeout: 900s
  tcpFinTimeout: 120s
  udpTimeout: 300s
  syncPeriod: 30s
  minSyncPeriod: 5s
  excludeCIDRs: [10.0.0.0/8]
nodePortAddresses: [primary, 192.168.0.0/16]
conntrack:
  maxPerCore: 0
  min: 65536
  tcpEstablishedTimeout: 12h0m0s
  tcpCloseWaitTimeout: 30m
  udpTimeout: 30s
  udpStreamTimeout: 2m
  tcpBeLiberal: true
detectLocalMode: BridgeInterface
detectLocal:
  bridgeInterface: cbr0
"#,
    )
    .unwrap();
    assert_eq!(config.mode, ProxyMode::Nftables);
    assert_eq!(
        config.cluster_cidrs,
        vec![
            "10.244.0.0/16".parse::<IpNet>().unwrap(),
            "fd00:10:244::/56".parse().unwrap()
        ]
    );
    assert_eq!(config.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(
        config.bind_address,
        "192.168.1.10".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        config.healthz_bind_address,
        Some("0.0.0.0:10356".parse().unwrap())
    );
    assert_eq!(
        config.metrics_bind_address,
        Some("127.0.0.1:10349".parse().unwrap())
    );
    assert_eq!(
        config.kubeconfig,
        Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf"))
    );
    assert_eq!(
        (config.client_qps, config.client_burst),
        (Some(20.0), Some(40))
    );
    assert_eq!(
        config.iptables,
        IptablesConfig {
            masquerade_bit: 15,
            masquerade_all: true,
            localhost_node_ports: false,
            sync_period: Duration::from_secs(60),
            min_sync_period: Duration::from_secs(2),
        }
    );
    assert_eq!(config.masquerade_bit(), 13);
    assert!(config.masquerade_all());
    assert_eq!(config.sync_period(), Duration::from_secs(45));
    assert_eq!(config.min_sync_period(), Duration::from_millis(1500));
    assert_eq!(config.ipvs.scheduler, "wrr");
    assert!(config.ipvs.strict_arp);
    assert_eq!(config.ipvs.tcp_timeout, Duration::from_secs(900));
    assert_eq!(
        config.ipvs.exclude_cidrs,
        vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        config.node_port_addresses,
        vec![
            NodePortAddress::Primary,
            NodePortAddress::Cidr("192.168.0.0/16".parse().unwrap())
        ]
    );
    assert_eq!(
        config.conntrack,
        ConntrackConfig {
            max_per_core: 0,
            min: 65536,
            tcp_established_timeout: Duration::from_secs(12 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(1800),
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_secs(120),
            tcp_be_liberal: true,
        }
    );
    assert_eq!(
        config.detect_local,
        DetectLocalMode::BridgeInterface("cbr0".into())
    );
}

#[test]
fn json_is_yaml() {
    let config = KubeProxyConfiguration::parse(&format!(
        r#"{{"apiVersion":"{API_VERSION}","kind":"{KIND}","mode":"ipvs","ipvs":{{"scheduler":"lc"}}}}"#
    ))
    .unwrap();
    assert_eq!(config.mode, ProxyMode::Ipvs);
    assert_eq!(config.ipvs.scheduler, "lc");
}

/// The file kubeadm writes spells out every field at its zero value; it must load.
#[test]
fn a_kubeadm_file_with_zero_values_loads() {
    let config = parse(
        r#"
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#,
    )
    .unwrap();
    let expected = KubeProxyConfiguration {
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        kubeconfig: Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf")),
        ..KubeProxyConfiguration::default()
    };
    assert_eq!(config, expected);
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let err = error_text("udpIdleTimeout: 250ms\n");
    assert!(err.contains("unknown field `udpIdleTimeout`"), "{err}");
    let err = error_text("iptables:\n  masqueradeBits: 3\n");
    assert!(err.contains("unknown field `masqueradeBits`"), "{err}");
}

#[test]
fn each_unsupported_field_is_refused_by_name() {
    let cases = [
        ("featureGates:\n  SomeGate: true\n", "featureGates"),
        ("logging:\n  verbosity: 4\n", "logging"),
        (
            "clientConnection:\n  contentType: application/vnd.kubernetes.protobuf\n",
            "clientConnection.contentType",
        ),
        (
            "clientConnection:\n  acceptContentTypes: application/json\n",
            "clientConnection.acceptContentTypes",
        ),
        ("bindAddressHardFail: true\n", "bindAddressHardFail"),
        ("enableProfiling: true\n", "enableProfiling"),
        (
            "showHiddenMetricsForVersion: \"1.36\"\n",
            "showHiddenMetricsForVersion",
        ),
        (
            "iptables:\n  snatNodeInternalIP: true\n",
            "iptables.snatNodeInternalIP",
        ),
        ("winkernel:\n  networkName: l2bridge\n", "winkernel"),
        ("oomScoreAdj: -999\n", "oomScoreAdj"),
        ("configSyncPeriod: 15m0s\n", "configSyncPeriod"),
        ("portRange: 30000-32767\n", "portRange"),
        ("windowsRunAsService: true\n", "windowsRunAsService"),
        ("mode: kernelspace\n", "mode"),
    ];
    assert_eq!(
        cases.len(),
        UNSUPPORTED_FIELDS.len() + 1,
        "every refusal has a case"
    );
    for (body, field) in cases {
        let err = error_text(body);
        assert!(
            err.starts_with(&format!("{field}: not supported by understudy-proxy (")),
            "{body:?} gave {err}"
        );
    }
    assert_eq!(
        error_text("oomScoreAdj: -999\n"),
        "oomScoreAdj: not supported by understudy-proxy (understudy-proxy does not set its OOM score; \
         set it in the pod spec); found -999"
    );
}

#[test]
fn validation_as_upstream() {
    let cases = [
        (
            "iptables:\n  masqueradeBit: 32\n",
            "iptables.masqueradeBit: 32 must be within the range [0, 31]",
        ),
        (
            "mode: nftables\nnftables:\n  masqueradeBit: -1\n",
            "nftables.masqueradeBit: -1 must be within the range [0, 31]",
        ),
        (
            "iptables:\n  syncPeriod: 1s\n  minSyncPeriod: 1m0s\n",
            "iptables.syncPeriod: 1s must be greater than or equal to iptables.minSyncPeriod (1m0s)",
        ),
        (
            "iptables:\n  syncPeriod: 30\n",
            "iptables.syncPeriod: invalid duration \"30\"",
        ),
        (
            "clusterCIDR: 10.0.0.0/33\n",
            "clusterCIDR: \"10.0.0.0/33\" is not a valid CIDR",
        ),
        (
            "clusterCIDR: 10.0.0.0/8,11.0.0.0/8\n",
            "clusterCIDR: a pair of CIDRs must be one IPv4 and one IPv6",
        ),
        (
            "nodePortAddresses: [somewhere]\n",
            "nodePortAddresses: \"somewhere\" is not a valid CIDR",
        ),
        (
            "mode: ipvs\nipvs:\n  excludeCIDRs: [x]\n",
            "ipvs.excludeCIDRs: \"x\" is not a valid CIDR",
        ),
        (
            "mode: ipvs\nipvs:\n  syncPeriod: 1s\n  minSyncPeriod: 1m0s\n",
            "ipvs.syncPeriod: 1s must be greater than or equal to ipvs.minSyncPeriod (1m0s)",
        ),
        (
            "nodePortAddresses: [localhost, 10.0.0.0/8, localhost]\n",
            "nodePortAddresses: Duplicate value: \"localhost\"",
        ),
        ("mode: userspace\n", "mode: \"userspace\" is not one of"),
        (
            "detectLocalMode: Magic\n",
            "detectLocalMode: \"Magic\" is not one of",
        ),
        (
            "detectLocalMode: BridgeInterface\n",
            "detectLocal.bridgeInterface: must not be empty",
        ),
        (
            "detectLocalMode: InterfaceNamePrefix\n",
            "detectLocal.interfaceNamePrefix: must not be empty",
        ),
        (
            "conntrack:\n  min: -1\n",
            "conntrack.min: -1 must be greater than or equal to 0",
        ),
        (
            "bindAddress: nowhere\n",
            "bindAddress: \"nowhere\" is not a valid IP address",
        ),
        (
            "metricsBindAddress: nowhere:1\n",
            "metricsBindAddress: \"nowhere:1\" must be IP:port",
        ),
    ];
    for (body, want) in cases {
        let err = error_text(body);
        assert!(err.contains(want), "{body:?}: {err}");
    }
    let err = error_text("iptables:\n  masqueradeBit: 40\nbindAddress: x\n");
    assert!(
        err.contains("masqueradeBit") && err.contains("bindAddress"),
        "all problems reported: {err}"
    );
}

#[test]
fn top_level_periods_are_refused_as_upstream_v1alpha1_does() {
    for field in ["syncPeriod", "minSyncPeriod"] {
        let err = error_text(&format!("{field}: 10s\n"));
        assert!(err.contains(&format!("unknown field `{field}`")), "{err}");
    }
}

#[test]
fn only_what_upstream_checks_is_checked() {
    // Other modes' sections, clusterCIDR outside detectLocalMode ClusterCIDR,
    // interface names beyond being non-empty, IPVS schedulers and repeated
    // CIDRs are upstream's to accept.
    for body in [
        "nftables:\n  syncPeriod: 1s\n  minSyncPeriod: 1m0s\n  masqueradeBit: 40\n",
        "ipvs:\n  syncPeriod: 1s\n  minSyncPeriod: 1m0s\n  excludeCIDRs: [x]\n",
        "mode: nftables\niptables:\n  syncPeriod: 1s\n  minSyncPeriod: 1m0s\n",
        "detectLocalMode: NodeCIDR\nclusterCIDR: nonsense\n",
        "detectLocalMode: NodeCIDR\nclusterCIDR: 10.0.0.0/8,11.0.0.0/8\n",
        "detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: a/b-with-a-long-name\n",
        "mode: ipvs\nipvs:\n  scheduler: fastest\n",
        "nodePortAddresses: [10.0.0.0/8, 10.0.0.0/8, primary, localhost, all]\n",
    ] {
        if let Err(e) = parse(body) {
            panic!("{body:?}: {e}");
        }
    }
}

/// Upstream decodes the file strictly: an unknown or wrongly typed field is
/// one error naming it by its path. Ours name the path the same way.
#[test]
fn wrongly_typed_fields_are_named_by_path() {
    for (body, want) in [
        (
            "iptables: {masqueradeBit: abc}",
            "iptables.masqueradeBit: invalid type: string \"abc\", expected i32",
        ),
        (
            "conntrack: {maxPerCore: 99999999999}",
            "conntrack.maxPerCore: invalid value: integer `99999999999`, expected i32",
        ),
        (
            "ipvs: {scheduler: [rr]}",
            "ipvs.scheduler: invalid type: sequence, expected a string",
        ),
        (
            "nodePortAddresses: 10.0.0.0/8",
            "nodePortAddresses: invalid type: string \"10.0.0.0/8\", expected a sequence",
        ),
        (
            "clientConnection: {burst: 1.5}",
            "clientConnection.burst: invalid type: floating point `1.5`, expected i32",
        ),
        (
            "iptables: 5",
            "iptables: invalid type: integer `5`, expected a mapping of iptables fields",
        ),
        (
            "detectLocal: {bridgeInterface: br0, interfaceNamePrefx: veth}",
            "detectLocal: unknown field `interfaceNamePrefx`",
        ),
        (
            "conntrack: {tcpBeLiberal: maybe}",
            "conntrack.tcpBeLiberal: maybe is not a boolean",
        ),
        (
            "iptables: {syncPeriod: 10}",
            "iptables.syncPeriod: invalid duration \"10\"",
        ),
        ("Mode: ipvs", "unknown field `Mode`"),
        ("mode: ipvs\nmode: nftables", "duplicate"),
    ] {
        let err = error_text(body);
        assert!(err.contains(want), "{body}:\n{err}\nwants: {want}");
    }
    let err = KubeProxyConfiguration::parse("- a\n- b")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected a KubeProxyConfiguration (a mapping of its fields)"),
        "{err}"
    );
}

/// Fuzzing: whatever the text — random, a random YAML tree of the
/// configuration's own field names, or a damaged valid file — parsing ends in
/// Ok or an error, never a panic.
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::Cell;

    const VALID: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
clusterCIDR: 10.244.0.0/16,fd00::/48
bindAddress: 0.0.0.0
healthzBindAddress: 0.0.0.0:10356
metricsBindAddress: 127.0.0.1:10349
hostnameOverride: node-1
clientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 50, burst: 100}
iptables: {masqueradeBit: 14, masqueradeAll: false, localhostNodePorts: true, syncPeriod: 30s, minSyncPeriod: 1s}
nftables: {masqueradeBit: 14, syncPeriod: 30s, minSyncPeriod: 1s}
ipvs: {scheduler: rr, strictARP: true, syncPeriod: 30s, minSyncPeriod: 0s, excludeCIDRs: [10.0.0.0/8], tcpTimeout: 900s}
conntrack: {maxPerCore: 32768, min: 131072, tcpEstablishedTimeout: 24h0m0s, tcpCloseWaitTimeout: 1h0m0s, tcpBeLiberal: true}
detectLocalMode: InterfaceNamePrefix
detectLocal: {interfaceNamePrefix: veth}
nodePortAddresses: [primary, 127.0.0.0/8]
"#;

    const KEYS: &[&str] = &[
        "apiVersion",
        "kind",
        "mode",
        "clusterCIDR",
        "bindAddress",
        "healthzBindAddress",
        "metricsBindAddress",
        "hostnameOverride",
        "clientConnection",
        "kubeconfig",
        "qps",
        "burst",
        "iptables",
        "nftables",
        "ipvs",
        "conntrack",
        "masqueradeBit",
        "masqueradeAll",
        "syncPeriod",
        "minSyncPeriod",
        "scheduler",
        "strictARP",
        "excludeCIDRs",
        "maxPerCore",
        "min",
        "tcpBeLiberal",
        "detectLocalMode",
        "detectLocal",
        "bridgeInterface",
        "nodePortAddresses",
        "featureGates",
        "logging",
        "winkernel",
        "oomScoreAdj",
    ];

    fn yaml_tree() -> impl Strategy<Value = serde_yaml::Value> {
        use serde_yaml::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>().prop_map(|f| Value::Number(f.into())),
            prop::sample::select(
                &[
                    API_VERSION,
                    KIND,
                    "ipvs",
                    "nftables",
                    "0s",
                    "1m0s",
                    "-1s",
                    "10.0.0.0/8",
                    "::/0",
                    "primary",
                    "0.0.0.0:0",
                    "BridgeInterface",
                    ""
                ][..]
            )
            .prop_map(|s| Value::String(s.into())),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
                prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..6).prop_map(
                    |m| {
                        Value::Mapping(
                            m.into_iter()
                                .map(|(k, v)| (Value::String(k.into()), v))
                                .collect(),
                        )
                    }
                ),
            ]
        })
    }

    fn damaged() -> impl Strategy<Value = String> {
        let len = VALID.len();
        prop::collection::vec((0..4u8, 0..len, any::<char>()), 1..5).prop_map(|edits| {
            let mut t: Vec<char> = VALID.chars().collect();
            for (op, i, ch) in edits {
                if t.is_empty() {
                    break;
                }
                let i = i % t.len();
                match op {
                    0 => t.truncate(i),
                    1 => t[i] = ch,
                    2 => t.insert(i, ch),
                    _ => {
                        t.remove(i);
                    }
                }
            }
            t.into_iter().collect()
        })
    }

    #[test]
    fn any_text_gives_ok_or_an_error_never_a_panic() {
        assert!(KubeProxyConfiguration::parse(VALID).is_ok());
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let mut config = Config::with_cases(cases);
        config.failure_persistence = None;
        config.max_shrink_iters = 2000;
        let texts = prop_oneof![
            2 => damaged(),
            2 => yaml_tree().prop_map(|mut v| {
                // A header, most of the time, so the body is judged too.
                if let serde_yaml::Value::Mapping(m) = &mut v {
                    m.insert("apiVersion".into(), API_VERSION.into());
                    m.insert("kind".into(), KIND.into());
                }
                serde_yaml::to_string(&v).unwrap()
            }),
            1 => any::<String>(),
        ];
        let (ok, err) = (Cell::new(0), Cell::new(0));
        TestRunner::new(config)
            .run(&texts, |text| {
                match KubeProxyConfiguration::parse(&text) {
                    Ok(_) => ok.set(ok.get() + 1),
                    Err(e) => {
                        err.set(err.get() + 1);
                        prop_assert!(!e.to_string().is_empty());
                    }
                }
                Ok(())
            })
            .unwrap();
        assert!(ok.get() > 0 && err.get() > 0, "ok {ok:?}, err {err:?}");
    }
}
