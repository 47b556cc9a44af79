//! `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1): the file
//! users already write for kube-scheduler. Every field we read is named as
//! upstream; unknown fields, and known fields we do not support yet, are
//! rejected by name at start-up rather than silently ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::extender_client::config::{self as extender_config, ExtenderConfig};

pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
pub const KIND: &str = "KubeSchedulerConfiguration";
pub const DEFAULT_SCHEDULER_NAME: &str = "understudy-scheduler";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid scheduler configuration: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a KubeSchedulerConfiguration (a mapping of its fields)"
)]
struct RawConfig {
    api_version: Option<String>,
    kind: Option<String>,
    parallelism: Option<i32>,
    percentage_of_nodes_to_score: Option<i32>,
    pod_initial_backoff_seconds: Option<i64>,
    pod_max_backoff_seconds: Option<i64>,
    leader_election: Option<RawLeaderElection>,
    client_connection: Option<RawClientConnection>,
    profiles: Option<Vec<RawProfile>>,
    extenders: Option<Vec<ExtenderConfig>>,
    delay_cache_until_active: Option<bool>,
    enable_profiling: Option<bool>,
    enable_contention_profiling: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of leaderElection fields"
)]
struct RawLeaderElection {
    leader_elect: Option<bool>,
    lease_duration: Option<String>,
    renew_deadline: Option<String>,
    retry_period: Option<String>,
    resource_lock: Option<String>,
    resource_name: Option<String>,
    resource_namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of clientConnection fields"
)]
struct RawClientConnection {
    kubeconfig: Option<String>,
    accept_content_types: Option<String>,
    content_type: Option<String>,
    qps: Option<f32>,
    burst: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a profile (a mapping of its fields)"
)]
struct RawProfile {
    scheduler_name: Option<String>,
    percentage_of_nodes_to_score: Option<i32>,
    plugins: Option<RawPlugins>,
    plugin_config: Option<Vec<RawPluginConfig>>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of extension points to plugin sets"
)]
pub struct RawPlugins {
    pub pre_enqueue: Option<PluginSet>,
    pub queue_sort: Option<PluginSet>,
    pub pre_filter: Option<PluginSet>,
    pub filter: Option<PluginSet>,
    pub post_filter: Option<PluginSet>,
    pub pre_score: Option<PluginSet>,
    pub score: Option<PluginSet>,
    pub reserve: Option<PluginSet>,
    pub permit: Option<PluginSet>,
    pub pre_bind: Option<PluginSet>,
    pub bind: Option<PluginSet>,
    pub post_bind: Option<PluginSet>,
    pub multi_point: Option<PluginSet>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a plugin set ({enabled, disabled})"
)]
pub struct PluginSet {
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq, Eq)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a plugin ({name, weight})"
)]
pub struct PluginRef {
    pub name: String,
    pub weight: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a pluginConfig entry ({name, args})"
)]
struct RawPluginConfig {
    name: String,
    args: Option<Value>,
}

/// Leader election settings in upstream's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderElection {
    pub leader_elect: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub resource_name: String,
    pub resource_namespace: String,
}

/// One scheduling profile: a schedulerName and its plugin configuration.
#[derive(Clone, Debug)]
pub struct ProfileConfig {
    pub scheduler_name: String,
    pub percentage_of_nodes_to_score: Option<u32>,
    pub plugins: RawPlugins,
    /// Plugin name → args object.
    pub plugin_config: BTreeMap<String, Value>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub parallelism: usize,
    /// `None`: upstream's adaptive default.
    pub percentage_of_nodes_to_score: Option<u32>,
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
    pub leader_election: Option<LeaderElection>,
    pub kubeconfig: Option<String>,
    pub qps: Option<f32>,
    pub burst: Option<u32>,
    pub profiles: Vec<ProfileConfig>,
    /// HTTP extenders called by every profile, in configuration order.
    pub extenders: Vec<ExtenderConfig>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self::parse("{}").expect("the empty configuration is valid")
    }
}

fn parse_duration(field: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v).map_err(|e| invalid(format!("{field}: {v:?}: {e}")))
}

/// `Some(0)` means "adaptive" explicitly: a profile's 0 overrides the global value.
fn percentage(field: &str, v: Option<i32>) -> Result<Option<u32>, ConfigError> {
    match v {
        None => Ok(None),
        Some(p) if (0..=100).contains(&p) => Ok(Some(p as u32)),
        Some(p) => Err(invalid(format!("{field}: {p} is not in 0..=100"))),
    }
}

impl SchedulerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses YAML (or JSON) text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?
        };
        if let Some(v) = raw.api_version.as_deref()
            && v != API_VERSION
        {
            return Err(invalid(format!(
                "apiVersion {v:?} is not supported; use {API_VERSION}"
            )));
        }
        if let Some(k) = raw.kind.as_deref()
            && k != KIND
        {
            return Err(invalid(format!("kind {k:?} is not {KIND}")));
        }
        let extenders = raw.extenders.unwrap_or_default();
        extender_config::validate(&extenders).map_err(invalid)?;
        if raw.enable_contention_profiling == Some(true) || raw.enable_profiling == Some(true) {
            return Err(invalid(
                "enableProfiling/enableContentionProfiling: not supported (no pprof in a Rust binary)",
            ));
        }
        let _ = raw.delay_cache_until_active;
        let parallelism = match raw.parallelism {
            None => 16,
            Some(p) if p > 0 => p as usize,
            Some(p) => Err(invalid(format!("parallelism: {p} must be greater than 0")))?,
        };
        let initial = raw.pod_initial_backoff_seconds.unwrap_or(1);
        let max = raw.pod_max_backoff_seconds.unwrap_or(10);
        if initial <= 0 {
            return Err(invalid("podInitialBackoffSeconds: must be greater than 0"));
        }
        if max < initial {
            return Err(invalid(
                "podMaxBackoffSeconds: must be at least podInitialBackoffSeconds",
            ));
        }
        let leader_election = match raw.leader_election {
            None => None,
            Some(le) => {
                if let Some(lock) = le.resource_lock.as_deref()
                    && lock != "leases"
                {
                    return Err(invalid(format!(
                        "leaderElection.resourceLock: {lock:?} is not supported; only \"leases\""
                    )));
                }
                Some(LeaderElection {
                    leader_elect: le.leader_elect.unwrap_or(true),
                    lease_duration: parse_duration(
                        "leaderElection.leaseDuration",
                        le.lease_duration.as_deref().unwrap_or("15s"),
                    )?,
                    renew_deadline: parse_duration(
                        "leaderElection.renewDeadline",
                        le.renew_deadline.as_deref().unwrap_or("10s"),
                    )?,
                    retry_period: parse_duration(
                        "leaderElection.retryPeriod",
                        le.retry_period.as_deref().unwrap_or("2s"),
                    )?,
                    resource_name: le
                        .resource_name
                        .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.into()),
                    resource_namespace: le
                        .resource_namespace
                        .unwrap_or_else(|| "kube-system".into()),
                })
            }
        };
        let cc = raw.client_connection.unwrap_or_default();
        if cc.burst.is_some_and(|b| b < 0) {
            return Err(invalid("clientConnection.burst: must not be negative"));
        }
        let _ = (cc.accept_content_types, cc.content_type);
        let raw_profiles = raw.profiles.unwrap_or_default();
        let raw_profiles = if raw_profiles.is_empty() {
            vec![RawProfile::default()]
        } else {
            raw_profiles
        };
        let mut profiles = vec![];
        for (i, p) in raw_profiles.into_iter().enumerate() {
            let scheduler_name = p
                .scheduler_name
                .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.into());
            if scheduler_name.is_empty() {
                return Err(invalid(format!(
                    "profiles[{i}].schedulerName: must not be empty"
                )));
            }
            if profiles
                .iter()
                .any(|q: &ProfileConfig| q.scheduler_name == scheduler_name)
            {
                return Err(invalid(format!(
                    "profiles[{i}].schedulerName: duplicate {scheduler_name:?}"
                )));
            }
            let mut plugin_config = BTreeMap::new();
            for pc in p.plugin_config.unwrap_or_default() {
                if plugin_config
                    .insert(pc.name.clone(), pc.args.unwrap_or(Value::Null))
                    .is_some()
                {
                    return Err(invalid(format!(
                        "profiles[{i}].pluginConfig: duplicate entry for {}",
                        pc.name
                    )));
                }
            }
            ignore_extender_resources(&mut plugin_config, &extenders);
            profiles.push(ProfileConfig {
                scheduler_name,
                percentage_of_nodes_to_score: percentage(
                    &format!("profiles[{i}].percentageOfNodesToScore"),
                    p.percentage_of_nodes_to_score,
                )?,
                plugins: p.plugins.unwrap_or_default(),
                plugin_config,
            });
        }
        Ok(Self {
            parallelism,
            percentage_of_nodes_to_score: percentage(
                "percentageOfNodesToScore",
                raw.percentage_of_nodes_to_score,
            )?,
            pod_initial_backoff: Duration::from_secs(initial as u64),
            pod_max_backoff: Duration::from_secs(max as u64),
            leader_election,
            kubeconfig: cc.kubeconfig.filter(|k| !k.is_empty()),
            qps: cc.qps,
            burst: cc.burst.map(|b| b as u32),
            profiles,
            extenders,
        })
    }
}

/// Resources an extender manages with `ignoredByScheduler` are left out of
/// NodeResourcesFit in every profile, replacing its `ignoredResources` as
/// upstream's buildExtenders does (the extenders' list takes precedence).
fn ignore_extender_resources(
    plugin_config: &mut BTreeMap<String, Value>,
    extenders: &[ExtenderConfig],
) {
    let ignored: Vec<Value> = extenders
        .iter()
        .flat_map(|e| &e.managed_resources)
        .filter(|r| r.ignored_by_scheduler)
        .map(|r| Value::String(r.name.clone()))
        .collect();
    if ignored.is_empty() {
        return;
    }
    let args = plugin_config
        .entry("NodeResourcesFit".into())
        .or_insert(Value::Null);
    if !args.is_object() {
        *args = Value::Object(Default::default());
    }
    args["ignoredResources"] = Value::Array(ignored);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_one_default_profile() {
        let c = SchedulerConfig::parse("").unwrap();
        assert_eq!(c.profiles.len(), 1);
        assert_eq!(c.profiles[0].scheduler_name, "understudy-scheduler");
        assert_eq!(c.parallelism, 16);
        assert_eq!(c.pod_initial_backoff, Duration::from_secs(1));
        assert_eq!(c.pod_max_backoff, Duration::from_secs(10));
        assert_eq!(c.percentage_of_nodes_to_score, None);
    }

    #[test]
    fn reads_upstream_fields() {
        let c = SchedulerConfig::parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
parallelism: 4
percentageOfNodesToScore: 30
clientConnection: {qps: 500, burst: 1000}
leaderElection: {leaderElect: true, resourceNamespace: understudy, leaseDuration: 4s}
profiles:
- schedulerName: understudy-scheduler
  plugins:
    score:
      disabled: [{name: ImageLocality}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
- schedulerName: understudy-packer
"#,
        )
        .unwrap();
        assert_eq!(c.parallelism, 4);
        assert_eq!(c.percentage_of_nodes_to_score, Some(30));
        assert_eq!((c.qps, c.burst), (Some(500.0), Some(1000)));
        let le = c.leader_election.unwrap();
        assert_eq!(le.resource_namespace, "understudy");
        assert_eq!(le.resource_name, "understudy-scheduler");
        assert_eq!(le.lease_duration, Duration::from_secs(4));
        assert_eq!(c.profiles.len(), 2);
        assert!(c.profiles[0].plugin_config.contains_key("NodeResourcesFit"));
        let score = c.profiles[0].plugins.score.as_ref().unwrap();
        assert_eq!(score.enabled[0].weight, Some(5));
    }

    #[test]
    fn rejects_unknown_and_unsupported_fields_by_name() {
        for (text, needle) in [
            ("percentageOfNodez: 5", "percentageOfNodez"),
            ("profiles: [{schedulerName: a, plugin: {}}]", "plugin"),
            ("extenders: [{urlPrefix: http://x, weigth: 1}]", "weigth"),
            (
                "extenders: [{urlPrefix: http://x, prioritizeVerb: p}]",
                "extenders[0].weight",
            ),
            ("percentageOfNodesToScore: -1", "percentageOfNodesToScore"),
            ("leaderElection: {resourceLock: endpoints}", "resourceLock"),
            (
                "apiVersion: kubescheduler.config.k8s.io/v1beta3",
                "apiVersion",
            ),
            ("parallelism: 0", "parallelism"),
            ("percentageOfNodesToScore: 101", "percentageOfNodesToScore"),
            (
                "profiles: [{schedulerName: a}, {schedulerName: a}]",
                "duplicate",
            ),
            (
                "podInitialBackoffSeconds: 5\npodMaxBackoffSeconds: 2",
                "podMaxBackoffSeconds",
            ),
        ] {
            let err = SchedulerConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn extenders_are_read_and_their_ignored_resources_reach_node_resources_fit() {
        let c = SchedulerConfig::parse(
            r#"
extenders:
- urlPrefix: http://127.0.0.1:1/ext
  filterVerb: filter
  managedResources: [{name: example.com/gpu, ignoredByScheduler: true}, {name: example.com/fpga}]
profiles:
- schedulerName: a
- schedulerName: b
  pluginConfig:
  - name: NodeResourcesFit
    args: {ignoredResources: [example.com/other], scoringStrategy: {type: MostAllocated}}
"#,
        )
        .unwrap();
        assert_eq!(c.extenders.len(), 1);
        assert_eq!(c.extenders[0].filter_verb, "filter");
        for p in &c.profiles {
            assert_eq!(
                p.plugin_config["NodeResourcesFit"]["ignoredResources"],
                serde_json::json!(["example.com/gpu"]),
                "{}",
                p.scheduler_name
            );
        }
        assert_eq!(
            c.profiles[1].plugin_config["NodeResourcesFit"]["scoringStrategy"]["type"],
            "MostAllocated"
        );
    }

    /// Upstream decodes the file strictly: an unknown or wrongly typed field
    /// is one error naming it by its path. Ours name the path the same way,
    /// inside plugin args too.
    #[test]
    fn unknown_and_wrongly_typed_fields_are_named_by_path() {
        for (text, want) in [
            (
                "profiles: [{schedulerName: a, plugins: {score: {enabled: [{name: X, weigth: 3}]}}}]",
                "profiles[0].plugins.score.enabled[0]: unknown field `weigth`",
            ),
            (
                "parallelism: abc",
                "parallelism: invalid type: string \"abc\", expected i32",
            ),
            (
                "leaderElection: {leaderElect: sometimes}",
                "leaderElection.leaderElect: invalid type: string \"sometimes\", expected a boolean",
            ),
            (
                "clientConnection: {qps: fast}",
                "clientConnection.qps: invalid type",
            ),
            (
                "profiles: [{schedulerName: a}, {schedulerName: b, percentageOfNodesToScore: [1]}]",
                "profiles[1].percentageOfNodesToScore: invalid type: sequence",
            ),
            (
                "percentageOfNodesToScore: 1e99",
                "percentageOfNodesToScore: invalid type: floating point",
            ),
            (
                "- a\n- b",
                "expected a KubeSchedulerConfiguration (a mapping of its fields)",
            ),
            (
                "leaderElection: 5",
                "leaderElection: invalid type: integer `5`, expected a mapping of leaderElection fields",
            ),
            ("Parallelism: 4", "unknown field `Parallelism`"),
            ("parallelism: 4\nparallelism: 5", "duplicate"),
        ] {
            let err = SchedulerConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}:\n{err}\nwants: {want}");
        }
    }

    #[test]
    fn plugin_args_errors_name_the_field_inside_args() {
        for (text, want) in [
            (
                "profiles: [{schedulerName: b, pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: MostAllocated, bogus: 1}}}]}]",
                "profile \"b\": pluginConfig[NodeResourcesFit].args.scoringStrategy.bogus: unknown field `bogus`",
            ),
            (
                "profiles: [{pluginConfig: [{name: PodTopologySpread, args: {defaultConstraints: [{maxSkew: x}]}}]}]",
                "pluginConfig[PodTopologySpread].args.defaultConstraints[0].maxSkew: invalid type: string \"x\"",
            ),
            (
                "profiles: [{pluginConfig: [{name: InterPodAffinity, args: 5}]}]",
                "pluginConfig[InterPodAffinity].args: invalid type: integer `5`",
            ),
        ] {
            let config = SchedulerConfig::parse(text).unwrap();
            let err = crate::profile::Profile::from_config(&config.profiles[0])
                .err()
                .unwrap_or_else(|| panic!("{text} was accepted"));
            assert!(err.contains(want), "{text}:\n{err}\nwants: {want}");
        }
    }

    /// Fuzzing: whatever the text — random, a random YAML tree of the
    /// configuration's own field names, or a damaged valid file — parsing
    /// and building the profiles end in Ok or an error, never a panic.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        const VALID: &str = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
parallelism: 4
percentageOfNodesToScore: 30
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 10
clientConnection: {qps: 500, burst: 1000}
leaderElection: {leaderElect: true, resourceNamespace: understudy, leaseDuration: 4s}
profiles:
- schedulerName: understudy-scheduler
  plugins:
    multiPoint: {enabled: [{name: NodeResourcesFit, weight: 2}]}
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 5}, {name: ImageLocality}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: RequestedToCapacityRatio, resources: [{name: cpu, weight: 1}],
      requestedToCapacityRatio: {shape: [{utilization: 0, score: 0}, {utilization: 100, score: 10}]}}}
  - name: PodTopologySpread
    args: {defaultingType: List, defaultConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}]}
  - name: InterPodAffinity
    args: {hardPodAffinityWeight: 1}
  - name: DefaultPreemption
    args: {minCandidateNodesPercentage: 10, minCandidateNodesAbsolute: 100}
- schedulerName: packer
  percentageOfNodesToScore: 0
"#;

        const KEYS: &[&str] = &[
            "apiVersion",
            "kind",
            "parallelism",
            "percentageOfNodesToScore",
            "podInitialBackoffSeconds",
            "podMaxBackoffSeconds",
            "leaderElection",
            "leaderElect",
            "leaseDuration",
            "resourceLock",
            "clientConnection",
            "qps",
            "burst",
            "profiles",
            "schedulerName",
            "plugins",
            "score",
            "filter",
            "multiPoint",
            "enabled",
            "disabled",
            "name",
            "weight",
            "pluginConfig",
            "args",
            "scoringStrategy",
            "type",
            "resources",
            "shape",
            "utilization",
            "defaultConstraints",
            "maxSkew",
            "topologyKey",
            "hardPodAffinityWeight",
            "minCandidateNodesPercentage",
            "extenders",
        ];

        fn yaml_tree() -> impl Strategy<Value = serde_json::Value> {
            use serde_json::{Value, json};
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                prop::sample::select(
                    &[
                        "NodeResourcesFit",
                        "PodTopologySpread",
                        "*",
                        "MostAllocated",
                        "15s",
                        "-1",
                        "",
                        "kubescheduler.config.k8s.io/v1",
                        "KubeSchedulerConfiguration"
                    ][..]
                )
                .prop_map(|s| json!(s)),
                any::<String>().prop_map(Value::String),
            ];
            leaf.prop_recursive(5, 48, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop::sample::select(KEYS).prop_map(str::to_string),
                        inner,
                        0..5
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn damaged(text: &'static str) -> impl Strategy<Value = String> {
            let len = text.len();
            prop::collection::vec((0..4u8, 0..len, any::<char>()), 1..5).prop_map(move |edits| {
                let mut t: Vec<char> = text.chars().collect();
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
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            let mut config = Config::with_cases(cases);
            config.failure_persistence = None;
            config.max_shrink_iters = 2000;
            let texts = prop_oneof![
                2 => damaged(VALID),
                2 => yaml_tree().prop_map(|v| serde_yaml::to_string(&v).unwrap()),
                1 => any::<String>(),
            ];
            let (ok, err) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
            TestRunner::new(config)
                .run(&texts, |text| {
                    match SchedulerConfig::parse(&text) {
                        Ok(c) => {
                            ok.set(ok.get() + 1);
                            for p in &c.profiles {
                                let _ = crate::profile::Profile::from_config(p);
                            }
                        }
                        Err(e) => {
                            err.set(err.get() + 1);
                            prop_assert!(!e.to_string().is_empty());
                        }
                    }
                    Ok(())
                })
                .unwrap();
            // The valid file parses, and both outcomes occur.
            assert!(SchedulerConfig::parse(VALID).is_ok());
            assert!(ok.get() > 0 && err.get() > 0, "ok {ok:?}, err {err:?}");
        }
    }
}
