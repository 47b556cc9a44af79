//! HTTP extenders this scheduler calls, from the configuration's `extenders:`
//! (upstream's HTTPExtender): after the Filter plugins each interested
//! extender narrows the feasible nodes in turn, their prioritize scores are
//! added to the plugins' (score × weight × MaxNodeScore / MaxExtenderPriority),
//! preempting extenders narrow the preemption candidates, and a binding
//! extender binds instead of `pods/binding`.
//!
//! The wire types are the extender API's own ([`crate::extender::types`]),
//! so what we send is what our extender server reads and vice versa.
//!
//! - [`config`]: the configuration entries and their validation.
//! - [`tls`]: client-go's reading of `tlsConfig`.

pub mod config;
pub mod tls;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use serde::Serialize;

use crate::extender::types::{
    self, ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, ExtenderPreemptionResult, FailedNodesMap, HostPriority,
    HostPriorityList, MAX_EXTENDER_PRIORITY, MetaPod, MetaVictims, NodeList, Victims, Wire,
};
use crate::framework::{NodeInfo, PodInfo};
pub use config::ExtenderConfig;

/// Upstream's MaxNodeScore: extender scores (0..=10) are scaled to it.
const MAX_NODE_SCORE: i64 = 100;

/// Why a call to an extender failed; the message is upstream's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum ExtenderError {
    #[error("failed {action} with extender at URL {url}, code {code}")]
    Status {
        action: String,
        url: String,
        code: u16,
    },
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Reply(String),
}

/// One configured extender.
pub struct HttpExtender {
    url_prefix: String,
    filter_verb: String,
    prioritize_verb: String,
    preempt_verb: String,
    bind_verb: String,
    weight: i64,
    node_cache_capable: bool,
    managed: HashSet<String>,
    ignorable: bool,
    http: reqwest::Client,
}

/// What an extender's filter left: the nodes that pass and why others failed.
#[derive(Debug, Default)]
pub struct Filtered {
    pub nodes: Vec<Arc<NodeInfo>>,
    pub failed: FailedNodesMap,
    pub failed_and_unresolvable: FailedNodesMap,
}

impl HttpExtender {
    pub fn new(config: &ExtenderConfig) -> Result<Self, String> {
        let timeout = config.http_timeout()?;
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(tls) = tls::client_config(config)? {
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            url_prefix: config.url_prefix.clone(),
            filter_verb: config.filter_verb.clone(),
            prioritize_verb: config.prioritize_verb.clone(),
            preempt_verb: config.preempt_verb.clone(),
            bind_verb: config.bind_verb.clone(),
            weight: config.weight,
            node_cache_capable: config.node_cache_capable,
            managed: config
                .managed_resources
                .iter()
                .map(|r| r.name.clone())
                .collect(),
            ignorable: config.ignorable,
            http,
        })
    }

    /// The extender's name in logs and messages: its URL prefix, as upstream.
    pub fn name(&self) -> &str {
        &self.url_prefix
    }

    pub fn is_ignorable(&self) -> bool {
        self.ignorable
    }

    pub fn is_filter(&self) -> bool {
        !self.filter_verb.is_empty()
    }

    pub fn is_prioritizer(&self) -> bool {
        !self.prioritize_verb.is_empty()
    }

    pub fn supports_preemption(&self) -> bool {
        !self.preempt_verb.is_empty()
    }

    pub fn is_binder(&self) -> bool {
        !self.bind_verb.is_empty()
    }

    /// Whether `pod` asks (request or limit, in a container or an init
    /// container) for a resource this extender manages; an extender that
    /// manages none is interested in every pod.
    pub fn is_interested(&self, pod: &Pod) -> bool {
        if self.managed.is_empty() {
            return true;
        }
        let Some(spec) = &pod.spec else { return false };
        let asks = |containers: &[Container]| {
            containers.iter().any(|c| {
                c.resources.as_ref().is_some_and(|r| {
                    [&r.requests, &r.limits]
                        .into_iter()
                        .flatten()
                        .any(|m| m.keys().any(|k| self.managed.contains(k)))
                })
            })
        };
        asks(&spec.containers) || spec.init_containers.as_deref().is_some_and(asks)
    }

    fn args(&self, pod: &Pod, nodes: &[Arc<NodeInfo>]) -> ExtenderArgs {
        if self.node_cache_capable {
            ExtenderArgs {
                pod: Some(pod.clone()),
                nodes: None,
                node_names: Some(nodes.iter().map(|n| n.name.clone()).collect()),
            }
        } else {
            ExtenderArgs {
                pod: Some(pod.clone()),
                nodes: Some(NodeList {
                    items: nodes.iter().map(|n| Node::clone(&n.node)).collect(),
                    ..Default::default()
                }),
                node_names: None,
            }
        }
    }

    pub async fn filter(
        &self,
        pod: &Pod,
        nodes: &[Arc<NodeInfo>],
    ) -> Result<Filtered, ExtenderError> {
        if !self.is_filter() {
            return Ok(Filtered {
                nodes: nodes.to_vec(),
                ..Default::default()
            });
        }
        let result: ExtenderFilterResult =
            self.send(&self.filter_verb, &self.args(pod, nodes)).await?;
        if !result.error.is_empty() {
            return Err(ExtenderError::Reply(result.error));
        }
        let by_name: BTreeMap<&str, &Arc<NodeInfo>> =
            nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let names: Vec<String> = match (self.node_cache_capable, result.node_names, result.nodes) {
            (true, Some(names), _) => names,
            (_, _, Some(list)) => list
                .items
                .into_iter()
                .map(|n| n.metadata.name.unwrap_or_default())
                .collect(),
            _ => vec![],
        };
        let mut passed = Vec::with_capacity(names.len());
        for name in names {
            // Upstream takes the Node objects a non-cache-capable extender
            // returns as they are; we keep our own NodeInfo (with its pods),
            // so a name we did not send is refused in both modes.
            match by_name.get(name.as_str()) {
                Some(n) => passed.push((*n).clone()),
                None => {
                    return Err(ExtenderError::Reply(format!(
                        "extender {:?} claims a filtered node {name:?} which is not found in the input node list",
                        self.url_prefix
                    )));
                }
            }
        }
        Ok(Filtered {
            nodes: passed,
            failed: result.failed_nodes,
            failed_and_unresolvable: result.failed_and_unresolvable_nodes,
        })
    }

    /// The extender's scores and its weight; an extender without a
    /// prioritize verb scores every node 0 with weight 0.
    pub async fn prioritize(
        &self,
        pod: &Pod,
        nodes: &[Arc<NodeInfo>],
    ) -> Result<(HostPriorityList, i64), ExtenderError> {
        if !self.is_prioritizer() {
            let zeros = nodes
                .iter()
                .map(|n| HostPriority {
                    host: n.name.clone(),
                    score: 0,
                })
                .collect();
            return Ok((zeros, 0));
        }
        let scores: HostPriorityList = self
            .send(&self.prioritize_verb, &self.args(pod, nodes))
            .await?;
        Ok((scores, self.weight))
    }

    /// Narrows preemption candidates (node → victims) to those the extender
    /// accepts, with the victims it names (by UID, among that node's pods).
    pub async fn process_preemption(
        &self,
        pod: &Pod,
        candidates: &BTreeMap<String, VictimSet>,
        nodes: &dyn Fn(&str) -> Option<Arc<NodeInfo>>,
    ) -> Result<BTreeMap<String, VictimSet>, ExtenderError> {
        let mut args = ExtenderPreemptionArgs {
            pod: Some(pod.clone()),
            ..Default::default()
        };
        for (node, set) in candidates {
            if self.node_cache_capable {
                let meta = MetaVictims {
                    pods: set
                        .pods
                        .iter()
                        .map(|p| MetaPod { uid: p.uid.clone() })
                        .collect(),
                    num_pdb_violations: set.num_pdb_violations as i64,
                };
                args.node_name_to_meta_victims
                    .insert(node.clone(), Some(meta));
            } else {
                let full = Victims {
                    pods: set.pods.iter().map(|p| Pod::clone(&p.pod)).collect(),
                    num_pdb_violations: set.num_pdb_violations as i64,
                };
                args.node_name_to_victims.insert(node.clone(), Some(full));
            }
        }
        let result: ExtenderPreemptionResult = self.send(&self.preempt_verb, &args).await?;
        let mut out = BTreeMap::new();
        for (node_name, meta) in result.node_name_to_meta_victims {
            let Some(node) = nodes(&node_name) else {
                return Err(ExtenderError::Reply(format!(
                    "nodeinfo not found for node name {node_name:?}"
                )));
            };
            let mut pods = Vec::with_capacity(meta.pods.len());
            for m in meta.pods {
                match node.pods.iter().find(|p| p.uid == m.uid) {
                    Some(p) => pods.push(p.clone()),
                    None => {
                        return Err(ExtenderError::Reply(format!(
                            "extender: {} claims to preempt pod (UID: {}) on node: {node_name}, but the pod is not found on that node",
                            self.url_prefix, m.uid
                        )));
                    }
                }
            }
            out.insert(
                node_name,
                VictimSet {
                    pods,
                    num_pdb_violations: meta.num_pdb_violations.max(0) as usize,
                },
            );
        }
        Ok(out)
    }

    pub async fn bind(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        node: &str,
    ) -> Result<(), ExtenderError> {
        let args = ExtenderBindingArgs {
            pod_name: name.into(),
            pod_namespace: namespace.into(),
            pod_uid: uid.into(),
            node: node.into(),
        };
        let result: ExtenderBindingResult = self.send(&self.bind_verb, &args).await?;
        if result.error.is_empty() {
            Ok(())
        } else {
            Err(ExtenderError::Reply(result.error))
        }
    }

    /// POSTs `args` as JSON to `<urlPrefix>/<action>`; anything but 200 is
    /// upstream's "failed <action> with extender at URL …, code …".
    async fn send<A: Serialize, R: Wire>(
        &self,
        action: &str,
        args: &A,
    ) -> Result<R, ExtenderError> {
        let url = format!("{}/{action}", self.url_prefix.trim_end_matches('/'));
        let body = serde_json::to_vec(args).map_err(|e| ExtenderError::Transport(e.to_string()))?;
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                ExtenderError::Transport(format!(
                    "{action} with extender at URL {url}: {}",
                    error_chain(&e)
                ))
            })?;
        let code = response.status().as_u16();
        if code != 200 {
            return Err(ExtenderError::Status {
                action: action.into(),
                url,
                code,
            });
        }
        let bytes = response.bytes().await.map_err(|e| {
            ExtenderError::Transport(format!(
                "{action} with extender at URL {url}: {}",
                error_chain(&e)
            ))
        })?;
        types::decode::<R>(&bytes)
            .map_err(|e| ExtenderError::Reply(format!("{action} with extender at URL {url}: {e}")))
    }
}

/// reqwest's top-level message hides the cause ("error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Victims on one candidate node.
#[derive(Clone, Debug, Default)]
pub struct VictimSet {
    pub pods: Vec<Arc<PodInfo>>,
    pub num_pdb_violations: usize,
}

/// The configured extenders in calling order: upstream puts ignorable ones last.
#[derive(Default)]
pub struct Extenders {
    list: Vec<HttpExtender>,
}

/// What the extenders' filters did to a cycle's feasible nodes.
#[derive(Debug, Default)]
pub struct ExtenderFilterOutcome {
    pub nodes: Vec<Arc<NodeInfo>>,
    /// (node, message, unresolvable): the statuses to record for rejected nodes.
    pub rejected: Vec<(String, String, bool)>,
}

impl Extenders {
    pub fn new(configs: &[ExtenderConfig]) -> Result<Self, String> {
        let mut list = vec![];
        let mut ignorable = vec![];
        for (i, c) in configs.iter().enumerate() {
            let e = HttpExtender::new(c).map_err(|e| format!("extenders[{i}]: {e}"))?;
            if e.is_ignorable() {
                ignorable.push(e);
            } else {
                list.push(e);
            }
        }
        list.extend(ignorable);
        Ok(Self { list })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &HttpExtender> {
        self.list.iter()
    }

    /// Upstream's findNodesThatPassExtenders: each interested extender in
    /// turn narrows the nodes; an unresolvable rejection wins over a plain
    /// one for the same node; an error fails the cycle unless the extender
    /// is ignorable.
    pub async fn filter(
        &self,
        pod: &Pod,
        mut nodes: Vec<Arc<NodeInfo>>,
    ) -> Result<ExtenderFilterOutcome, ExtenderError> {
        let mut rejected = vec![];
        for e in &self.list {
            if nodes.is_empty() {
                break;
            }
            if !e.is_interested(pod) {
                continue;
            }
            let filtered = match e.filter(pod, &nodes).await {
                Ok(f) => f,
                Err(err) if e.is_ignorable() => {
                    tracing::info!(extender = e.name(), error = %err, "skipping extender as it returned error and has ignorable flag set");
                    continue;
                }
                Err(err) => return Err(err),
            };
            for (node, msg) in &filtered.failed_and_unresolvable {
                rejected.push((node.clone(), msg.clone(), true));
            }
            for (node, msg) in &filtered.failed {
                if !filtered.failed_and_unresolvable.contains_key(node) {
                    rejected.push((node.clone(), msg.clone(), false));
                }
            }
            nodes = filtered.nodes;
        }
        Ok(ExtenderFilterOutcome { nodes, rejected })
    }

    /// Upstream's extender part of prioritizeNodes: the interested
    /// extenders are asked at once; a failing one gives no score (errors are
    /// ignored whether or not it is ignorable, as upstream). Returns node →
    /// points to add to the plugins' total.
    pub async fn prioritize(&self, pod: &Pod, nodes: &[Arc<NodeInfo>]) -> BTreeMap<String, i64> {
        let calls = self
            .list
            .iter()
            .filter(|e| e.is_interested(pod))
            .map(|e| async move { (e, e.prioritize(pod, nodes).await) });
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        for (e, result) in futures::future::join_all(calls).await {
            match result {
                Ok((scores, weight)) => {
                    for s in scores {
                        *totals.entry(s.host).or_default() +=
                            s.score * weight * (MAX_NODE_SCORE / MAX_EXTENDER_PRIORITY);
                    }
                }
                Err(err) => {
                    tracing::debug!(extender = e.name(), error = %err, "failed to run extender's priority function; no score given by this extender")
                }
            }
        }
        totals
    }

    /// Upstream's callExtenders in preemption: each interested preempting
    /// extender narrows the candidates; a node left without victims is an
    /// error (dropped for an ignorable extender).
    pub async fn process_preemption(
        &self,
        pod: &Pod,
        mut candidates: BTreeMap<String, VictimSet>,
        nodes: &dyn Fn(&str) -> Option<Arc<NodeInfo>>,
    ) -> Result<BTreeMap<String, VictimSet>, ExtenderError> {
        if candidates.is_empty() {
            return Ok(candidates);
        }
        for e in &self.list {
            if !e.supports_preemption() || !e.is_interested(pod) {
                continue;
            }
            let mut result = match e.process_preemption(pod, &candidates, nodes).await {
                Ok(r) => r,
                Err(err) if e.is_ignorable() => {
                    tracing::info!(extender = e.name(), error = %err, "skipped extender as it returned error and has ignorable flag set");
                    continue;
                }
                Err(err) => return Err(err),
            };
            let empty: Vec<String> = result
                .iter()
                .filter(|(_, v)| v.pods.is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            for node in empty {
                if e.is_ignorable() {
                    result.remove(&node);
                } else {
                    return Err(ExtenderError::Reply(format!(
                        "expected at least one victim pod on node {node:?}"
                    )));
                }
            }
            candidates = result;
            if candidates.is_empty() {
                break;
            }
        }
        Ok(candidates)
    }

    /// The binding extender interested in `pod`, if any, binds it (upstream's
    /// extendersBinding): `None` when none took the pod, so the default
    /// binding applies; an ignorable extender's failure falls through too.
    pub async fn bind(&self, pod: &PodInfo, node: &str) -> Option<Result<(), ExtenderError>> {
        for e in &self.list {
            if !e.is_binder() || !e.is_interested(&pod.pod) {
                continue;
            }
            match e.bind(&pod.namespace, &pod.name, &pod.uid, node).await {
                Err(err) if e.is_ignorable() => {
                    tracing::info!(extender = e.name(), error = %err, "skipping extender in bind as it returned error and has ignorable flag set");
                    continue;
                }
                result => return Some(result),
            }
        }
        None
    }
}
