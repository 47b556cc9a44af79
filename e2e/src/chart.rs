//! The Helm chart as the way the lab runs the understudies: `helm upgrade
//! --install` of `charts/understudy` with the image imported into the real
//! nodes, then a wait until every enabled component's pods are Ready. The
//! pods run with the chart's ServiceAccounts and RBAC, and the scheduler and
//! controllers replicas elect their leaders as they would on any cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, LogParams};
use serde_json::{Value, json};

use crate::images;
use crate::realnode::REAL_NODE_LABEL;
use crate::understudies::Understudy;

pub const RELEASE: &str = "understudy";
/// The namespace the chart's README installs into.
pub const NAMESPACE: &str = "understudy-system";
/// Env var naming the chart directory when the lab runs outside the repo.
pub const CHART_DIR_ENV: &str = "UNDERSTUDY_CHART_DIR";

/// How the lab runs the understudies it starts.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Local processes with the lab's admin credentials.
    #[default]
    Processes,
    /// Pods on the real nodes, installed by `helm upgrade --install` of the chart.
    Chart,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Processes => "processes",
            Self::Chart => "chart",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "processes" => Ok(Self::Processes),
            "chart" => Ok(Self::Chart),
            other => Err(format!(
                "unknown backend {other:?}: expected processes or chart"
            )),
        }
    }
}

/// The mode every proxy of a lab runs in — understudy-proxy from the chart
/// and upstream kube-proxy alike, so the two can be compared.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    #[default]
    Iptables,
    Nftables,
    /// Needs a kernel with IPVS; without it both proxies refuse to start.
    Ipvs,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iptables => "iptables",
            Self::Nftables => "nftables",
            Self::Ipvs => "ipvs",
        }
    }

    /// Whether this machine's kernel can run the mode. Only IPVS can be
    /// missing: `/proc/net/ip_vs` exists once IPVS is built in or loaded,
    /// the check understudy-proxy starts with (proxy/src/ipvs/system.rs).
    /// A module not loaded yet is loaded here first, as the proxy's
    /// preflight does: the chart's pods get no /lib/modules in the lab.
    /// Asked once per process (every data-path test asks).
    pub fn runs_on_this_kernel(self) -> bool {
        static HAS_IPVS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        self != Self::Ipvs
            || *HAS_IPVS.get_or_init(|| {
                let ip_vs = Path::new("/proc/net/ip_vs");
                if !ip_vs.exists() {
                    let _ = Command::new("modprobe")
                        .args(["-q", "ip_vs"])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
                ip_vs.exists()
            })
    }
}

impl std::fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("running helm: {0}")]
    Spawn(std::io::Error),
    #[error("helm {args} failed ({status}):\n{output}")]
    Failed {
        args: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("{0}")]
    NotReady(String),
    #[error("writing the chart values: {0}")]
    Values(std::io::Error),
}

/// The chart in this checkout (or where `UNDERSTUDY_CHART_DIR` says).
pub fn chart_dir() -> PathBuf {
    std::env::var_os(CHART_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/understudy"))
}

/// The lab's values: the locally imported image (never pulled), the enabled
/// components pinned to the real nodes (kwok nodes cannot run a container),
/// tolerating the taint that keeps other pods off those nodes.
///
/// The proxy replaces kube-proxy there, so nothing else programs the
/// `kubernetes` Service: it reaches the apiserver through the node's relay on
/// the node's loopback (the apiserver's certificate names 127.0.0.1).
pub fn lab_values(
    state: &crate::state::ClusterState,
    enabled: &BTreeSet<Understudy>,
    extra_args: &[String],
) -> Value {
    let apiserver_port = state.ports.get("apiserver").copied().unwrap_or_default();
    let cluster_cidr = (state.real_nodes.as_ref())
        .map(|r| r.network.cluster_cidr())
        .unwrap_or_default();
    let on_real_nodes = json!({ REAL_NODE_LABEL: "true" });
    let tolerate_real_node = json!([{
        "key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule",
    }]);
    let replaced: Vec<&str> = Understudy::Controllers.replaced_controllers().to_vec();
    let (scheduler_args, scheduler_lease) = scheduler_args(extra_args);
    let mut values = json!({
        "image": {
            "repository": images::UNDERSTUDY_REPOSITORY,
            "tag": images::TAG,
            "pullPolicy": "Never",
        },
        "scheduler": {
            "enabled": enabled.contains(&Understudy::Scheduler),
            "nodeSelector": on_real_nodes,
            "tolerations": tolerate_real_node,
            "extraArgs": scheduler_args,
        },
        "controllers": {
            "enabled": enabled.contains(&Understudy::Controllers),
            "controllers": replaced,
            "nodeSelector": on_real_nodes,
            "tolerations": tolerate_real_node,
            "extraArgs": extra_args,
        },
        "proxy": {
            "enabled": enabled.contains(&Understudy::Proxy),
            "mode": state.proxy_mode.as_str(),
            // As the lab's kube-proxy: nf_conntrack_max is the machine's, read-only in a node's namespace.
            "config": {"conntrack": {
                "maxPerCore": 0,
                "udpStreamTimeout": crate::realnode::config::LAB_UDP_STREAM_TIMEOUT,
            }},
            "nodeSelector": on_real_nodes,
            // The lab's host has no /lib/modules; a hostPath without it would
            // make containerd create the directory on the host.
            "mountLibModules": false,
            "clusterCIDR": cluster_cidr,
            "k8sServiceHost": "127.0.0.1",
            "k8sServicePort": apiserver_port.to_string(),
            "extraArgs": extra_args,
        },
    });
    if !scheduler_lease.is_empty() {
        values["scheduler"]["leaderElection"] = Value::Object(scheduler_lease);
    }
    values
}

/// The scheduler's extra arguments without the lease timing flags, and
/// those timings as its configuration's `leaderElection` fields: the
/// scheduler takes them from its configuration file, which the chart
/// always gives it, as kube-scheduler does.
fn scheduler_args(extra_args: &[String]) -> (Vec<String>, serde_json::Map<String, Value>) {
    const TIMINGS: [(&str, &str); 3] = [
        ("--leader-elect-lease-duration=", "leaseDuration"),
        ("--leader-elect-renew-deadline=", "renewDeadline"),
        ("--leader-elect-retry-period=", "retryPeriod"),
    ];
    let mut args = vec![];
    let mut lease = serde_json::Map::new();
    for arg in extra_args {
        match TIMINGS
            .iter()
            .find_map(|(flag, field)| Some((*field, arg.strip_prefix(flag)?)))
        {
            Some((field, value)) => {
                lease.insert(field.into(), value.into());
            }
            None => args.push(arg.clone()),
        }
    }
    (args, lease)
}

/// `helm` against one cluster.
pub struct Helm {
    pub program: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Helm {
    /// The toolchain's helm against a lab cluster.
    pub fn for_lab(state: &crate::state::ClusterState) -> Self {
        Self {
            program: state.toolchain_dir.join("helm"),
            kubeconfig: state.kubeconfig.clone(),
        }
    }

    /// The toolchain's helm against the cluster of `kubeconfig`.
    pub fn for_kubeconfig(kubeconfig: &Path) -> Result<Self, crate::toolchain::ToolchainError> {
        let toolchain = crate::toolchain::Toolchain::locate()?;
        toolchain.check(&["helm"])?;
        Ok(Self {
            program: toolchain.bin("helm"),
            kubeconfig: kubeconfig.to_path_buf(),
        })
    }

    pub fn run(&self, args: &[&str]) -> Result<String, ChartError> {
        let output = Command::new(&self.program)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .map_err(ChartError::Spawn)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(ChartError::Failed {
                args: args.join(" "),
                status: output.status,
                output: text,
            })
        }
    }

    /// Installs or upgrades the release with `values` (written next to the
    /// lab's state so a user can see what was installed).
    pub fn upgrade_install(&self, values: &Value, values_file: &Path) -> Result<(), ChartError> {
        self.upgrade_install_with(values, values_file, &[])
    }

    /// As [`Self::upgrade_install`], then the user's own values files on top
    /// (later files win, as with helm's repeated `--values`).
    pub fn upgrade_install_with(
        &self,
        values: &Value,
        values_file: &Path,
        user_values: &[PathBuf],
    ) -> Result<(), ChartError> {
        let text = serde_json::to_string_pretty(values).expect("values serialize");
        std::fs::write(values_file, text).map_err(ChartError::Values)?;
        let chart = chart_dir().display().to_string();
        let mut args = vec![
            "upgrade".to_string(),
            "--install".into(),
            RELEASE.into(),
            chart,
            "--namespace".into(),
            NAMESPACE.into(),
            "--create-namespace".into(),
            "--values".into(),
            values_file.display().to_string(),
        ];
        for file in user_values {
            args.extend(["--values".into(), file.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).map(drop)
    }

    pub fn uninstall(&self) -> Result<(), ChartError> {
        self.run(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"])
            .map(drop)
    }
}

/// The workload the chart runs a component as.
pub fn workload_name(understudy: Understudy) -> &'static str {
    understudy.binary()
}

/// Until every enabled component's pods are all Ready at the desired count of
/// their current revision. On timeout, the error says what each pod waits on.
pub async fn wait_ready(
    client: &Client,
    enabled: &BTreeSet<Understudy>,
    timeout: Duration,
) -> Result<(), ChartError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    let result = crate::wait::until("the chart's components to be Ready", timeout, || {
        let (deployments, daemonsets) = (deployments.clone(), daemonsets.clone());
        async move {
            for understudy in enabled {
                let name = workload_name(*understudy);
                let ready = if *understudy == Understudy::Proxy {
                    daemonsets
                        .get_opt(name)
                        .await
                        .map_err(|e| e.to_string())?
                        .is_some_and(|ds| daemonset_rolled_out(&ds))
                } else {
                    deployments
                        .get_opt(name)
                        .await
                        .map_err(|e| e.to_string())?
                        .is_some_and(|d| deployment_rolled_out(&d))
                };
                if !ready {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(ChartError::NotReady(format!(
            "{e}\n{}",
            describe_pods(client).await
        ))),
    }
}

/// Until no pod of `understudy` is left (after `helm upgrade` switched it
/// off): only then may its upstream counterpart take over.
pub async fn wait_gone(
    client: &Client,
    understudy: Understudy,
    timeout: Duration,
) -> Result<(), ChartError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = format!(
        "app.kubernetes.io/component={}",
        component_label(understudy)
    );
    crate::wait::until(
        &format!("the chart's {understudy} pods to be gone"),
        timeout,
        || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move {
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(list.items.is_empty().then_some(()))
            }
        },
    )
    .await
    .map_err(|e| ChartError::NotReady(e.to_string()))
}

/// The chart's `app.kubernetes.io/component` label of a component's objects.
pub fn component_label(understudy: Understudy) -> String {
    understudy.to_string()
}

fn deployment_rolled_out(d: &Deployment) -> bool {
    let Some(status) = &d.status else {
        return false;
    };
    let want = d.spec.replicas.unwrap_or(1);
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.ready_replicas.unwrap_or(0) == want
}

fn daemonset_rolled_out(ds: &DaemonSet) -> bool {
    let Some(status) = &ds.status else {
        return false;
    };
    status.observed_generation >= ds.metadata.generation
        && status.desired_number_scheduled > 0
        && status.updated_number_scheduled.unwrap_or(0) == status.desired_number_scheduled
        && status.number_ready == status.desired_number_scheduled
}

/// One line per pod of the release: phase, node, and why a container is not
/// ready, with the last log lines of such a container — what a user would
/// look up with `kubectl describe` and `kubectl logs` first.
pub async fn describe_pods(client: &Client) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let list = match pods.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) => return format!("listing the chart's pods: {e}"),
    };
    if list.items.is_empty() {
        return format!("no pods in {NAMESPACE}");
    }
    let mut lines = vec![];
    for p in &list.items {
        let name = p.metadata.name.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let unscheduled = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| format!(" unschedulable: {}", c.message.clone().unwrap_or_default()))
            .unwrap_or_default();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        lines.push(format!(
            "  pod {name} {} on {}{unscheduled}",
            status.phase.clone().unwrap_or_default(),
            node.as_deref().unwrap_or("-"),
        ));
        for c in status
            .container_statuses
            .iter()
            .flatten()
            .filter(|c| !c.ready)
        {
            let waiting = c
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .map(|w| {
                    format!(
                        "waiting: {} {}",
                        w.reason.clone().unwrap_or_default(),
                        w.message.clone().unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "not ready".into());
            lines.push(format!(
                "    container {} {waiting} ({} restarts)",
                c.name, c.restart_count
            ));
            let params = LogParams {
                container: Some(c.name.clone()),
                previous: c.restart_count > 0,
                tail_lines: Some(10),
                ..Default::default()
            };
            if let Ok(logs) = pods.logs(&name, &params).await {
                lines.extend(logs.lines().map(|l| format!("      | {l}")));
            }
        }
    }
    lines.join("\n")
}

/// Every kind the chart renders, namespaced or not.
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("apps", "v1", "Deployment", true),
    ("apps", "v1", "DaemonSet", true),
    ("apps", "v1", "ReplicaSet", true),
    ("", "v1", "Pod", true),
    ("", "v1", "ConfigMap", true),
    ("", "v1", "Service", true),
    ("", "v1", "ServiceAccount", true),
    ("rbac.authorization.k8s.io", "v1", "Role", true),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", true),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", false),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        false,
    ),
    ("scheduling.k8s.io", "v1", "PriorityClass", false),
];

/// `Kind/name` of every object of the release, optionally of one component
/// (ReplicaSets and Pods carry the labels their templates give them).
pub async fn release_objects(
    client: &Client,
    component: Option<Understudy>,
) -> Result<BTreeSet<String>, String> {
    use kube::ResourceExt;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let mut selector = format!("app.kubernetes.io/instance={RELEASE}");
    if let Some(c) = component {
        selector.push_str(&format!(
            ",app.kubernetes.io/component={}",
            component_label(c)
        ));
    }
    let mut found = BTreeSet::new();
    for (group, version, kind, namespaced) in KINDS {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = if *namespaced {
            Api::namespaced_with(client.clone(), NAMESPACE, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("listing {kind}: {e}"))?;
        found.extend(
            list.items
                .iter()
                .map(|o| format!("{kind}/{}", o.name_any())),
        );
    }
    Ok(found)
}

/// Values for a cluster that is not the lab (`make e2e`): the image as named
/// (loaded into the nodes beforehand, e.g. by `kind load`), pods wherever the
/// cluster puts them.
pub fn cluster_values(enabled: &BTreeSet<Understudy>, image: &str, pull_policy: &str) -> Value {
    let (repository, tag) = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    };
    let replaced: Vec<&str> = Understudy::Controllers.replaced_controllers().to_vec();
    json!({
        "image": {"repository": repository, "tag": tag, "pullPolicy": pull_policy},
        "scheduler": {"enabled": enabled.contains(&Understudy::Scheduler)},
        "controllers": {
            "enabled": enabled.contains(&Understudy::Controllers),
            "controllers": replaced,
        },
        "proxy": {"enabled": enabled.contains(&Understudy::Proxy)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::understudies::parse_set;

    #[test]
    fn cluster_values_name_the_image_and_pin_nothing() {
        let values = cluster_values(
            &parse_set("scheduler,controllers").unwrap(),
            "localhost:5000/understudy:dev",
            "IfNotPresent",
        );
        assert_eq!(values["image"]["repository"], "localhost:5000/understudy");
        assert_eq!(values["image"]["tag"], "dev");
        assert_eq!(values["proxy"]["enabled"], false);
        assert!(values["scheduler"].get("nodeSelector").is_none());
        let untagged = cluster_values(&parse_set("all").unwrap(), "localhost:5000/u", "Never");
        assert_eq!(untagged["image"]["repository"], "localhost:5000/u");
        assert_eq!(untagged["image"]["tag"], "latest");
    }

    #[test]
    fn lab_values_enable_what_is_replaced_and_pin_to_real_nodes() {
        let mut state = crate::state::ClusterState::default();
        state.ports.insert("apiserver".into(), 41234);
        state.real_nodes = Some(crate::realnode::RealNodes {
            network: crate::realnode::LabNetwork { slot: 2 },
            count: 1,
        });
        let values = lab_values(&state, &parse_set("scheduler").unwrap(), &["--v=4".into()]);
        assert_eq!(values["scheduler"]["enabled"], true);
        assert_eq!(values["proxy"]["k8sServiceHost"], "127.0.0.1");
        assert_eq!(values["proxy"]["k8sServicePort"], "41234");
        assert_eq!(values["proxy"]["clusterCIDR"], "10.202.0.0/16");
        assert_eq!(values["controllers"]["enabled"], false);
        assert_eq!(values["proxy"]["enabled"], false);
        assert_eq!(values["image"]["pullPolicy"], "Never");
        assert_eq!(values["scheduler"]["nodeSelector"][REAL_NODE_LABEL], "true");
        assert_eq!(
            values["scheduler"]["tolerations"][0]["key"],
            REAL_NODE_LABEL
        );
        assert_eq!(values["scheduler"]["extraArgs"][0], "--v=4");
        assert!(
            values["scheduler"].get("leaderElection").is_none(),
            "the chart's default timings"
        );
        assert_eq!(
            values["controllers"]["controllers"]
                .as_array()
                .unwrap()
                .len(),
            Understudy::Controllers.replaced_controllers().len()
        );
    }

    #[test]
    fn the_schedulers_lease_timings_go_to_its_configuration() {
        let state = crate::state::ClusterState::default();
        let args: Vec<String> = [
            "--leader-elect-lease-duration=6000ms",
            "--v=4",
            "--leader-elect-retry-period=1000ms",
        ]
        .map(String::from)
        .to_vec();
        let values = lab_values(&state, &parse_set("scheduler,controllers").unwrap(), &args);
        assert_eq!(values["scheduler"]["extraArgs"], json!(["--v=4"]));
        assert_eq!(
            values["scheduler"]["leaderElection"],
            json!({"leaseDuration": "6000ms", "retryPeriod": "1000ms"})
        );
        assert_eq!(
            values["controllers"]["extraArgs"],
            json!(args),
            "the controllers take the flags"
        );
    }

    #[test]
    fn backend_parses_its_names() {
        assert_eq!("chart".parse::<Backend>().unwrap(), Backend::Chart);
        assert_eq!(
            Backend::Processes.to_string().parse::<Backend>().unwrap(),
            Backend::Processes
        );
        assert!(
            "pods"
                .parse::<Backend>()
                .unwrap_err()
                .contains("processes or chart")
        );
    }

    /// Every key of values.yaml is described by values.schema.json with a type
    /// its default has, and the schema describes no key values.yaml lacks:
    /// the schema is hand-written, this keeps it in step with the defaults.
    #[test]
    fn values_schema_and_values_yaml_describe_the_same_keys() {
        let dir = chart_dir();
        let values: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap())
                .unwrap();
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("values.schema.json")).unwrap())
                .unwrap();
        let mut problems = vec![];
        compare(&values, &schema, "", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    fn json_type(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    fn compare(value: &Value, schema: &Value, at: &str, problems: &mut Vec<String>) {
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.contains(&json_type(value)) {
            problems.push(format!(
                "{at}: default is {}, schema says {types:?}",
                json_type(value)
            ));
        }
        if schema.get("description").is_none() && !matches!(value, Value::Object(_)) {
            problems.push(format!("{at}: no description in the schema"));
        }
        let (Value::Object(fields), Some(Value::Object(props))) = (value, schema.get("properties"))
        else {
            return;
        };
        for (key, v) in fields {
            match props.get(key) {
                Some(s) => compare(v, s, &format!("{at}.{key}"), problems),
                None => problems.push(format!("{at}.{key}: in values.yaml, not in the schema")),
            }
        }
        for key in props.keys().filter(|k| !fields.contains_key(*k)) {
            problems.push(format!("{at}.{key}: in the schema, not in values.yaml"));
        }
    }

    #[test]
    fn the_chart_is_found_in_the_checkout() {
        assert!(chart_dir().join("Chart.yaml").is_file());
    }
}
