//! The extender verbs answered from the running scheduler: the same cache,
//! profiles, nominations and PodDisruptionBudgets its own cycles use.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use crate::framework::PodInfo;
use crate::profile::Profile;
use crate::scheduler::{Scheduler, binding_body};

use super::decide::{filter_nodes, preempt_nodes, prioritize};
use super::server::{Backend, Failure};
use super::types::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, ExtenderPreemptionResult, HostPriorityList, NodeList,
};

/// [`Backend`] over a running [`Scheduler`].
pub struct SchedulerBackend {
    scheduler: Arc<Scheduler>,
    /// Binds are made for the calling kube-scheduler, whichever replica it
    /// reaches: a standby's leader-fenced client would refuse them.
    bind_client: kube::Client,
}

impl SchedulerBackend {
    pub fn new(scheduler: Arc<Scheduler>) -> Self {
        let bind_client = scheduler.client.clone();
        Self {
            scheduler,
            bind_client,
        }
    }

    /// Binds with `client` instead of the scheduler's own (fenced) one.
    pub fn with_bind_client(mut self, client: kube::Client) -> Self {
        self.bind_client = client;
        self
    }

    /// The profile named by the pod's schedulerName; a pod of another
    /// scheduler (kube-scheduler's `default-scheduler` calling us) is judged
    /// by our first profile.
    fn profile_for(&self, pod: &Pod) -> Result<Arc<Profile>, Failure> {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        let s = &self.scheduler;
        s.profiles
            .get(name)
            .or_else(|| {
                s.config
                    .profiles
                    .first()
                    .and_then(|p| s.profiles.get(&p.scheduler_name))
            })
            .map(|(profile, _)| profile.clone())
            .ok_or_else(|| Failure::Internal("no scheduling profile is configured".into()))
    }
}

fn pod_of(pod: Option<Pod>) -> Result<PodInfo, Failure> {
    let pod = pod.ok_or_else(|| Failure::BadRequest("Pod is required".into()))?;
    Ok(PodInfo::new(Arc::new(pod)))
}

/// The candidate node names: from `Nodes` when the caller is not
/// nodeCacheCapable, else `NodeNames`. The Node objects themselves are not
/// used: our cache holds the same nodes together with their pods.
fn candidate_names(args: &ExtenderArgs) -> Vec<String> {
    match (&args.nodes, &args.node_names) {
        (Some(list), _) => list
            .items
            .iter()
            .map(|n| n.metadata.name.clone().unwrap_or_default())
            .collect(),
        (None, Some(names)) => names.clone(),
        (None, None) => vec![],
    }
}

impl Backend for SchedulerBackend {
    fn filter(&self, args: ExtenderArgs) -> Result<ExtenderFilterResult, Failure> {
        self.scheduler.metrics.extender_request("filter");
        let names = candidate_names(&args);
        let pod = pod_of(args.pod)?;
        let profile = self.profile_for(&pod.pod)?;
        let snapshot = self.scheduler.snapshot();
        let nominated = self.scheduler.nominated_except(&pod.uid);
        let outcome = filter_nodes(&profile, &snapshot, &nominated, &pod, &names);
        let feasible: HashSet<&str> = outcome.feasible.iter().map(String::as_str).collect();
        // Answer in the form asked: kube-scheduler reads NodeNames from a
        // nodeCacheCapable extender and Nodes from any other.
        let nodes = args.nodes.map(|list| NodeList {
            metadata: list.metadata,
            items: list
                .items
                .into_iter()
                .filter(|n| {
                    n.metadata
                        .name
                        .as_deref()
                        .is_some_and(|name| feasible.contains(name))
                })
                .collect(),
        });
        let node_names = match (&nodes, args.node_names) {
            (None, None) => Some(vec![]),
            (_, Some(_)) => Some(outcome.feasible.clone()),
            (Some(_), None) => None,
        };
        Ok(ExtenderFilterResult {
            nodes,
            node_names,
            failed_nodes: outcome.failed,
            failed_and_unresolvable_nodes: outcome.unresolvable,
            error: outcome.error.unwrap_or_default(),
        })
    }

    fn prioritize(&self, args: ExtenderArgs) -> Result<HostPriorityList, Failure> {
        self.scheduler.metrics.extender_request("prioritize");
        let names = candidate_names(&args);
        let pod = pod_of(args.pod)?;
        let profile = self.profile_for(&pod.pod)?;
        let snapshot = self.scheduler.snapshot();
        prioritize(&profile, &snapshot, &pod, &names).map_err(Failure::Internal)
    }

    fn preempt(&self, args: ExtenderPreemptionArgs) -> Result<ExtenderPreemptionResult, Failure> {
        self.scheduler.metrics.extender_request("preempt");
        // Whichever form the caller used, the victims are chosen afresh on
        // our cache: only the node set matters.
        let names: BTreeSet<String> = args
            .node_name_to_victims
            .keys()
            .chain(args.node_name_to_meta_victims.keys())
            .cloned()
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        let pod = pod_of(args.pod)?;
        let profile = self.profile_for(&pod.pod)?;
        let snapshot = self.scheduler.snapshot();
        let nominated = self.scheduler.nominated_except(&pod.uid);
        let pdbs = self.scheduler.pdb_list();
        let victims = preempt_nodes(&profile, &snapshot, &nominated, &pdbs, &pod, &names)
            .map_err(Failure::Internal)?;
        Ok(ExtenderPreemptionResult {
            node_name_to_meta_victims: victims,
        })
    }

    fn node_count(&self) -> usize {
        self.scheduler
            .cache
            .lock()
            .expect("cache lock")
            .node_count()
    }

    async fn bind(&self, args: ExtenderBindingArgs) -> ExtenderBindingResult {
        self.scheduler.metrics.extender_request("bind");
        if args.pod_name.is_empty() || args.pod_namespace.is_empty() || args.node.is_empty() {
            return ExtenderBindingResult {
                error: "PodName, PodNamespace and Node are required".into(),
            };
        }
        let pods: Api<Pod> = Api::namespaced(self.bind_client.clone(), &args.pod_namespace);
        let body = binding_body(
            &args.pod_namespace,
            &args.pod_name,
            &args.pod_uid,
            &args.node,
        );
        let result = pods
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &args.pod_name,
                &PostParams::default(),
                &body,
            )
            .await;
        match result {
            Ok(_) => {
                tracing::debug!(pod = %format!("{}/{}", args.pod_namespace, args.pod_name), node = %args.node, "bound for an extender caller");
                ExtenderBindingResult::default()
            }
            Err(e) => {
                tracing::info!(pod = %format!("{}/{}", args.pod_namespace, args.pod_name), node = %args.node, error = %e, "extender bind failed");
                ExtenderBindingResult {
                    error: e.to_string(),
                }
            }
        }
    }
}
