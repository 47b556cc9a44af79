//! Resource amounts as the scheduler counts them: a pod's effective requests
//! (init containers, sidecars and overhead included, as upstream's
//! `resource.PodRequests`) and a node's allocatable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
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
        match name {
            CPU => self.milli_cpu = quantity::milli_value(q).unwrap_or(0),
            MEMORY => self.memory = quantity::value(q).unwrap_or(0),
            EPHEMERAL_STORAGE => self.ephemeral_storage = quantity::value(q).unwrap_or(0),
            PODS => self.allowed_pod_number = quantity::value(q).unwrap_or(0),
            other => {
                self.scalar
                    .insert(other.to_string(), quantity::value(q).unwrap_or(0));
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

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
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

fn container_requests(c: &Container, non_zero: bool) -> Resource {
    let mut r = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resource::from_list)
        .unwrap_or_default();
    if non_zero {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        if !requests.is_some_and(|q| q.contains_key(CPU)) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !requests.is_some_and(|q| q.contains_key(MEMORY)) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective requests: regular containers and sidecars (restartable
/// init containers) run together; each classic init container runs alone
/// beside the sidecars started before it; the pod needs the larger of the two
/// phases, plus its overhead. Pod-level `spec.resources.requests`, when set,
/// replace the container sum for the resources they name (cpu, memory,
/// hugepages).
///
/// With `non_zero`, containers missing a cpu or memory request count the
/// scoring defaults instead (upstream's non-missing container requests).
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resource::default();
    let mut init_peak = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let own = container_requests(c, non_zero);
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
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        for (name, q) in pod_level {
            // Upstream's IsSupportedPodLevelResource.
            if name == CPU || name == MEMORY || name.starts_with("hugepages-") {
                reqs.set(name, &q.0);
            }
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
}
