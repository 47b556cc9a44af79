//! Resource amounts as the scheduler counts them: a pod's effective requests
//! (init containers, sidecars and overhead included, as upstream's
//! `resource.PodRequests`) and a node's allocatable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// Requests assumed for a container that sets none, for scoring only, so pods
/// without requests still spread (upstream's DefaultMilliCPURequest/DefaultMemoryRequest).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of every resource the scheduler tracks. Scalar resources are
/// extended resources (`example.com/gpu`), hugepages and attachable volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pod_number: i64,
    pub scalar: BTreeMap<String, i64>,
}

/// Whether a resource name is counted as a scalar (not cpu/memory/storage/pods).
pub fn is_scalar(name: &str) -> bool {
    !matches!(name, CPU | MEMORY | EPHEMERAL_STORAGE | PODS)
}

impl Resource {
    /// From a ResourceList; unparsable quantities count as zero (the apiserver
    /// validates quantities, so this only guards against the impossible).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Resource::default();
        for (name, q) in list {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        self.set_amount(name, amount(name, q));
    }

    fn set_amount(&mut self, name: &str, v: i64) {
        match name {
            CPU => self.milli_cpu = v,
            MEMORY => self.memory = v,
            EPHEMERAL_STORAGE => self.ephemeral_storage = v,
            PODS => self.allowed_pod_number = v,
            other => {
                self.scalar.insert(other.to_string(), v);
            }
        }
    }

    /// The amount of one named resource.
    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pod_number,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    /// Saturating: a pod may ask for "8Ei" in two containers (the apiserver
    /// accepts it), and a sum that wrapped to a negative amount would fit
    /// every node.
    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        self.allowed_pod_number = self
            .allowed_pod_number
            .saturating_add(other.allowed_pod_number);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    /// Saturating, as [`Resource::add`].
    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_sub(other.ephemeral_storage);
        self.allowed_pod_number = self
            .allowed_pod_number
            .saturating_sub(other.allowed_pod_number);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_sub(*v);
        }
    }

    /// Element-wise maximum.
    pub fn max_with(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.max(other.allowed_pod_number);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// Whether `self` holds more than `other` of any resource.
    pub fn exceeds_in_any(&self, other: &Resource) -> bool {
        self.milli_cpu > other.milli_cpu
            || self.memory > other.memory
            || self.ephemeral_storage > other.ephemeral_storage
            || self.allowed_pod_number > other.allowed_pod_number
            || self
                .scalar
                .iter()
                .any(|(k, v)| *v > other.scalar.get(k).copied().unwrap_or(0))
    }

    /// Names of resources with a non-zero amount (cpu, memory, … then scalars).
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![];
        for (name, v) in [
            (CPU, self.milli_cpu),
            (MEMORY, self.memory),
            (EPHEMERAL_STORAGE, self.ephemeral_storage),
        ] {
            if v != 0 {
                names.push(name.to_string());
            }
        }
        names.extend(
            self.scalar
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, _)| k.clone()),
        );
        names
    }
}

type ResourceList = BTreeMap<String, Quantity>;

/// A quantity in the unit the scheduler counts `name` in (millicores for cpu).
fn amount(name: &str, q: &str) -> i64 {
    let parsed = if name == CPU {
        quantity::milli_value(q)
    } else {
        quantity::value(q)
    };
    parsed.unwrap_or(0)
}

/// A container's requests from one list; with `non_zero`, a missing cpu or
/// memory request counts the scoring default instead.
fn list_requests(list: Option<&ResourceList>, non_zero: bool) -> Resource {
    let mut r = list.map(Resource::from_list).unwrap_or_default();
    if non_zero {
        if !list.is_some_and(|q| q.contains_key(CPU)) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !list.is_some_and(|q| q.contains_key(MEMORY)) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Which requests of a container count: its spec, what the kubelet
/// allocated to it, or what it runs with — during an in-place resize the
/// three differ, and upstream counts the largest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Spec,
    Allocated,
    Actuated,
}

fn container_list<'a>(
    c: &'a Container,
    status: Option<&'a ContainerStatus>,
    source: Source,
    resize_infeasible: bool,
) -> Option<&'a ResourceList> {
    let spec = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let allocated = status.and_then(|s| s.allocated_resources.as_ref());
    let actuated = status
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref());
    // An infeasible resize is never applied: the spec does not count.
    let fallback = if resize_infeasible { None } else { spec };
    match source {
        Source::Spec => spec,
        Source::Allocated => allocated.or(fallback),
        Source::Actuated => actuated.or(allocated).or(fallback),
    }
}

fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .chain(status.init_container_statuses.iter())
        .flatten()
        .find(|s| s.name == name)
}

/// Whether the `PodResizePending` condition says `Infeasible`.
fn resize_infeasible(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodResizePending"))
        .is_some_and(|c| c.reason.as_deref() == Some("Infeasible"))
}

/// Whether the kubelet reported any allocated or running resources.
fn has_status_resources(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.allocated_resources.is_some()
            || s.resources.is_some()
            || s.container_statuses
                .iter()
                .chain(s.init_container_statuses.iter())
                .flatten()
                .any(|c| c.allocated_resources.is_some() || c.resources.is_some())
    })
}

/// Regular containers and sidecars (restartable init containers) run
/// together; each classic init container runs alone beside the sidecars
/// started before it; the pod needs the larger of the two phases.
fn aggregate(pod: &Pod, source: Source, resize_infeasible: bool, non_zero: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let requests = |c: &Container| {
        let status = match source {
            Source::Spec => None,
            _ => container_status(pod, &c.name),
        };
        list_requests(
            container_list(c, status, source, resize_infeasible),
            non_zero,
        )
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&requests(c));
    }
    let mut sidecars = Resource::default();
    let mut init_peak = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let own = requests(c);
        let during_init = if is_sidecar(c) {
            reqs.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut with_sidecars = own;
            with_sidecars.add(&sidecars);
            with_sidecars
        };
        init_peak.max_with(&during_init);
    }
    reqs.max_with(&init_peak);
    reqs
}

/// The pod's effective requests, as upstream's `resource.PodRequests` with
/// the status resources of in-place resize: the containers' requests (see
/// [`aggregate`]) — for a pod the kubelet has reported on, the largest of
/// spec, allocated and actuated (only the last two while a resize is
/// infeasible) —, then pod-level `spec.resources.requests`, which replace
/// the container sum for the resources they name (cpu, memory, hugepages),
/// plus the overhead.
///
/// With `non_zero`, containers missing a cpu or memory request count the
/// scoring defaults instead (upstream's non-missing container requests).
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let status = pod.status.as_ref();
    let infeasible = resize_infeasible(pod);
    let mut reqs = aggregate(pod, Source::Spec, infeasible, non_zero);
    if has_status_resources(pod) {
        let pod_level = status.and_then(|s| {
            let allocated = s.allocated_resources.as_ref()?;
            let actuated = s.resources.as_ref()?.requests.as_ref()?;
            Some((
                Resource::from_list(allocated),
                Resource::from_list(actuated),
            ))
        });
        // Pod-level status holds the aggregate already; without it, per
        // container.
        let (allocated, actuated) = pod_level.unwrap_or_else(|| {
            (
                aggregate(pod, Source::Allocated, infeasible, non_zero),
                aggregate(pod, Source::Actuated, infeasible, non_zero),
            )
        });
        if infeasible {
            reqs = allocated.clone();
        }
        reqs.max_with(&allocated);
        reqs.max_with(&actuated);
    }
    if let Some(spec_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let mut effective: BTreeMap<String, i64> = BTreeMap::new();
        let mut take = |list: Option<&ResourceList>| {
            for (name, q) in list.into_iter().flatten() {
                // Upstream's IsSupportedPodLevelResource.
                if name == CPU || name == MEMORY || name.starts_with("hugepages-") {
                    let v = amount(name, &q.0);
                    let e = effective.entry(name.clone()).or_insert(v);
                    *e = (*e).max(v);
                }
            }
        };
        if !(infeasible && status.is_some_and(|s| s.resources.is_some())) {
            take(Some(spec_level));
        }
        if let Some(s) = status.filter(|s| s.resources.is_some()) {
            take(s.resources.as_ref().and_then(|r| r.requests.as_ref()));
            take(s.allocated_resources.as_ref());
        }
        for (name, v) in effective {
            reqs.set_amount(&name, v);
        }
    }
    if let Some(overhead) = &spec.overhead {
        reqs.add(&Resource::from_list(overhead));
    }
    reqs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn c(name: &str, cpu: &str, mem: &str) -> serde_json::Value {
        json!({"name": name, "resources": {"requests": {"cpu": cpu, "memory": mem}}})
    }

    #[test]
    fn sums_regular_containers() {
        let p = pod(json!({"containers": [c("a", "100m", "1Gi"), c("b", "200m", "1Gi")]}));
        let r = pod_requests(&p, false);
        assert_eq!((r.milli_cpu, r.memory), (300, 2 << 30));
    }

    #[test]
    fn init_containers_take_the_max_phase() {
        let p = pod(json!({
            "initContainers": [c("init", "2", "1Gi")],
            "containers": [c("a", "500m", "3Gi")],
        }));
        let r = pod_requests(&p, false);
        assert_eq!((r.milli_cpu, r.memory), (2000, 3 << 30));
    }

    #[test]
    fn sidecars_add_to_the_run_phase_and_to_later_init_containers() {
        let mut sidecar = c("log", "100m", "100Mi");
        sidecar["restartPolicy"] = json!("Always");
        let p = pod(json!({
            "initContainers": [sidecar, c("migrate", "1", "1Gi")],
            "containers": [c("app", "200m", "200Mi")],
        }));
        let r = pod_requests(&p, false);
        // init phase: migrate 1000m + sidecar 100m = 1100m; run: 200m + 100m.
        assert_eq!(r.milli_cpu, 1100);
        assert_eq!(r.memory, (1 << 30) + (100 << 20));
    }

    #[test]
    fn overhead_and_extended_resources() {
        let mut p = pod(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "example.com/gpu": "2"}}}],
            "overhead": {"cpu": "250m", "memory": "120Mi"},
        }));
        let r = pod_requests(&p, false);
        assert_eq!(r.milli_cpu, 1250);
        assert_eq!(r.memory, 120 << 20);
        assert_eq!(r.get("example.com/gpu"), 2);
        p.spec.as_mut().unwrap().overhead = None;
        assert_eq!(pod_requests(&p, false).memory, 0);
    }

    #[test]
    fn non_zero_fills_missing_cpu_and_memory_per_container() {
        let p = pod(json!({"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"cpu": "1"}}},
        ]}));
        let r = pod_requests(&p, true);
        assert_eq!(r.milli_cpu, DEFAULT_MILLI_CPU_REQUEST + 1000);
        assert_eq!(r.memory, 2 * DEFAULT_MEMORY_REQUEST);
        assert_eq!(pod_requests(&p, false).memory, 0);
    }

    fn with_status(spec: serde_json::Value, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec, "status": status}))
            .unwrap()
    }

    #[test]
    fn in_place_resize_counts_the_largest_of_spec_allocated_and_actuated() {
        let one_cpu = json!({"containers": [c("a", "1", "1Gi")]});
        // A scale-down not applied yet: the kubelet still allocates 3.
        let p = with_status(
            one_cpu.clone(),
            json!({"containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "allocatedResources": {"cpu": "3"}}]}),
        );
        assert_eq!(pod_requests(&p, false).milli_cpu, 3000);
        // A scale-up being applied: the spec is the largest.
        let p = with_status(
            json!({"containers": [c("a", "4", "1Gi")]}),
            json!({"containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "allocatedResources": {"cpu": "1"},
                "resources": {"requests": {"cpu": "2"}}}]}),
        );
        assert_eq!(pod_requests(&p, false).milli_cpu, 4000);
        // An infeasible resize never happens: spec 8 does not count.
        let p = with_status(
            json!({"containers": [c("a", "8", "1Gi")]}),
            json!({
                "conditions": [{"type": "PodResizePending", "status": "True", "reason": "Infeasible"}],
                "containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": true,
                    "restartCount": 0, "allocatedResources": {"cpu": "1", "memory": "1Gi"},
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
            }),
        );
        let r = pod_requests(&p, false);
        assert_eq!((r.milli_cpu, r.memory), (1000, 1 << 30));
        // No status yet (a pending pod): the spec.
        let p = with_status(one_cpu, json!({"phase": "Pending"}));
        assert_eq!(pod_requests(&p, false).milli_cpu, 1000);
    }

    #[test]
    fn in_place_resize_of_pod_level_resources() {
        let p = with_status(
            json!({"resources": {"requests": {"cpu": "2"}}, "containers": [c("a", "1", "1Gi")]}),
            json!({"allocatedResources": {"cpu": "2"}, "resources": {"requests": {"cpu": "3"}}}),
        );
        assert_eq!(pod_requests(&p, false).milli_cpu, 3000);
        let p = with_status(
            json!({"resources": {"requests": {"cpu": "6"}}, "containers": [c("a", "1", "1Gi")]}),
            json!({
                "conditions": [{"type": "PodResizePending", "status": "True", "reason": "Infeasible"}],
                "allocatedResources": {"cpu": "2"}, "resources": {"requests": {"cpu": "2"}},
            }),
        );
        assert_eq!(pod_requests(&p, false).milli_cpu, 2000);
    }

    #[test]
    fn pod_level_requests_override_containers() {
        let p = pod(json!({
            "resources": {"requests": {"cpu": "3"}},
            "containers": [c("a", "1", "1Gi")],
        }));
        let r = pod_requests(&p, false);
        assert_eq!((r.milli_cpu, r.memory), (3000, 1 << 30));
        let p = pod(json!({
            "resources": {"requests": {"hugepages-2Mi": "100Mi", "example.com/gpu": "1"}},
            "containers": [c("a", "1", "1Gi")],
        }));
        let r = pod_requests(&p, false);
        assert_eq!(r.get("hugepages-2Mi"), 100 << 20);
        // Only cpu, memory and hugepages are pod-level resources.
        assert_eq!(r.get("example.com/gpu"), 0);
    }

    #[test]
    fn huge_requests_saturate_instead_of_wrapping() {
        // Valid quantities the apiserver accepts; summed in i64 they would
        // wrap to a negative request that fits every node.
        let p = pod(
            json!({"containers": [c("a", "1", "8Ei"), c("b", "1", "8Ei")],
            "overhead": {"memory": "8Ei"}}),
        );
        assert_eq!(pod_requests(&p, false).memory, i64::MAX);
        let mut r = Resource::default();
        r.sub(&pod_requests(&p, false));
        r.sub(&pod_requests(&p, false));
        assert_eq!(r.memory, i64::MIN);
    }
}
