//! The understudies of a chaos run with `--backend chart`: the chart's two
//! pods of each on the real nodes, as a cluster runs them. Their faults act
//! on what a node runs: a container's processes are found by their cgroup
//! (the container's ID is a component of its path under any cgroup driver)
//! and signalled from this host; the kubelet restarts what died.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::chart::{self, NAMESPACE};
use crate::understudies::Understudy;

/// One pod of an understudy, as last listed.
#[derive(Clone, Debug)]
pub struct PodReplica {
    pub understudy: Understudy,
    pub name: String,
    pub uid: String,
    /// The ServiceAccount user its writes are audited as.
    pub user: String,
    /// The container's ID without its runtime prefix, once it has one.
    pub container_id: Option<String>,
    /// When the running container started (none while it does not run).
    pub started: Option<Timestamp>,
    pub ready: bool,
    pub restarts: i32,
    /// Being deleted: on its way out, whatever its containers say.
    pub deleting: bool,
}

impl PodReplica {
    /// Whether a Lease holder is a process of this pod: our components'
    /// identity is the hostname (the pod's name) and `_<random>`.
    pub fn holds(&self, holder: &str) -> bool {
        holder
            .strip_prefix(&self.name)
            .is_some_and(|rest| rest.starts_with('_'))
    }
}

/// Every pod of the run's understudies, and what the run did to them.
pub struct PodReplicas {
    client: Client,
    understudies: Vec<Understudy>,
    per_component: usize,
    pub list: Vec<PodReplica>,
    /// Pods whose container is SIGSTOPped.
    frozen: HashSet<String>,
    /// Pods whose container was killed, with its restart count then: it
    /// runs again once the kubelet restarted it (the count went up).
    killed: HashMap<String, i32>,
    /// The highest restart count seen of each pod (by UID), and the count
    /// each pod there at the start already had.
    seen: HashMap<String, i32>,
    initial: HashMap<String, i32>,
    /// Pods that left and were replaced during the run.
    replaced: u32,
}

fn container_id(raw: &str) -> String {
    raw.rsplit_once("://").map_or(raw, |(_, id)| id).to_string()
}

fn from_pod(pod: &Pod, understudy: Understudy) -> PodReplica {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let container = status.container_statuses.iter().flatten().next();
    let sa = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    PodReplica {
        understudy,
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        user: format!("system:serviceaccount:{NAMESPACE}:{sa}"),
        container_id: container
            .and_then(|c| c.container_id.as_deref())
            .map(container_id),
        started: container
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .map(|t| t.0),
        ready: container.is_some_and(|c| c.ready),
        restarts: container.map_or(0, |c| c.restart_count),
        deleting: pod.metadata.deletion_timestamp.is_some(),
    }
}

impl PodReplicas {
    /// The chart's pods of `understudies` as they are now.
    pub async fn new(
        client: Client,
        understudies: &[Understudy],
        per_component: usize,
    ) -> Result<Self, kube::Error> {
        let mut pods = Self {
            client,
            understudies: understudies.to_vec(),
            per_component,
            list: vec![],
            frozen: HashSet::new(),
            killed: HashMap::new(),
            seen: HashMap::new(),
            initial: HashMap::new(),
            replaced: 0,
        };
        pods.refresh().await?;
        pods.initial = pods.seen.clone();
        Ok(pods)
    }

    /// Lists the pods again; returns what changed since the last listing
    /// (containers restarted, pods replaced), for the run's log.
    pub async fn refresh(&mut self) -> Result<Vec<String>, kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let mut list = vec![];
        for &understudy in &self.understudies {
            let selector = format!(
                "app.kubernetes.io/component={}",
                chart::component_label(understudy)
            );
            let pods = api.list(&ListParams::default().labels(&selector)).await?;
            list.extend(pods.items.iter().map(|p| from_pod(p, understudy)));
        }
        let mut changes = vec![];
        let before: HashSet<String> = self.list.iter().map(|r| r.uid.clone()).collect();
        for replica in &list {
            match self.seen.get(&replica.uid) {
                Some(&n) if replica.restarts > n => changes.push(format!(
                    "container of {} restarted by the kubelet ({} restarts)",
                    replica.name, replica.restarts
                )),
                None if !before.is_empty() => {
                    self.replaced += 1;
                    changes.push(format!("pod {} created", replica.name));
                }
                _ => {}
            }
            let max = self.seen.entry(replica.uid.clone()).or_default();
            *max = (*max).max(replica.restarts);
        }
        let names: HashSet<&str> = list.iter().map(|r| r.name.as_str()).collect();
        self.killed.retain(|name, _| names.contains(name.as_str()));
        self.frozen.retain(|name| names.contains(name.as_str()));
        self.list = list;
        Ok(changes)
    }

    pub fn of(&self, understudy: Understudy) -> impl Iterator<Item = &PodReplica> {
        self.list
            .iter()
            .filter(move |r| r.understudy == understudy && !r.deleting)
    }

    pub fn by_identity(&self, holder: &str) -> Option<&PodReplica> {
        self.list.iter().find(|r| r.holds(holder))
    }

    pub fn by_name(&self, name: &str) -> Option<&PodReplica> {
        self.list.iter().find(|r| r.name == name)
    }

    /// Its container runs, is Ready, is not frozen, and is not the one
    /// killed last (the kubelet restarted it since).
    pub fn running(&self, replica: &PodReplica) -> bool {
        let restarted = self
            .killed
            .get(&replica.name)
            .is_none_or(|&at| replica.restarts > at);
        !replica.deleting
            && replica.ready
            && replica.started.is_some()
            && restarted
            && !self.frozen.contains(&replica.name)
    }

    /// Whether `holder`, who renewed its Lease at `renewed`, is the
    /// current container of a running pod (a Lease renewed before that
    /// container started names one that died).
    pub fn holder_live(&self, holder: &str, renewed: Timestamp) -> bool {
        self.by_identity(holder)
            .is_some_and(|r| self.running(r) && r.started.is_some_and(|started| renewed >= started))
    }

    /// Every understudy at its pod count, each pod running.
    pub fn all_running(&self) -> bool {
        self.understudies.iter().all(|&u| {
            let pods: Vec<&PodReplica> = self.of(u).collect();
            pods.len() == self.per_component && pods.iter().all(|r| self.running(r))
        })
    }

    /// `kill -9` of every process of a pod's container; returns how many
    /// there were, once all are gone.
    pub fn kill9(&mut self, name: &str) -> Result<usize, String> {
        let replica = self.by_name(name).ok_or_else(|| format!("no pod {name}"))?;
        let id = replica
            .container_id
            .clone()
            .ok_or_else(|| format!("{name} has no container"))?;
        let restarts = replica.restarts;
        let pids = container_pids(&id);
        if pids.is_empty() {
            return Err(format!("no process of container {id} of {name}"));
        }
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.killed.insert(name.to_string(), restarts);
        self.frozen.remove(name);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !container_pids(&id).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pids.len())
    }

    /// SIGSTOP (`pause`) or SIGCONT of every process of a pod's container.
    pub fn freeze(&mut self, name: &str, pause: bool) -> Result<usize, String> {
        let id = self
            .by_name(name)
            .and_then(|r| r.container_id.clone())
            .ok_or_else(|| format!("{name} has no container"))?;
        let pids = container_pids(&id);
        let signal = if pause {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        if pause {
            self.frozen.insert(name.to_string());
        } else {
            self.frozen.remove(name);
        }
        Ok(pids.len())
    }

    /// Resumes every frozen container (the end of a run).
    pub fn thaw_all(&mut self) {
        for name in self.frozen.clone() {
            let _ = self.freeze(&name, false);
        }
    }

    /// Deletes a pod with grace period 0: gone from the API at once, its
    /// containers killed by the kubelet, a new pod made by the ReplicaSet
    /// controller (ours: the other replica's).
    pub async fn delete_now(&self, name: &str) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        api.delete(name, &params).await.map(drop)
    }

    /// Container restarts since the run began, and pods replaced.
    pub fn restarts(&self) -> u32 {
        let containers: i32 = self
            .seen
            .iter()
            .map(|(uid, n)| n - self.initial.get(uid).copied().unwrap_or(0))
            .sum();
        containers.max(0) as u32 + self.replaced
    }

    /// The users the pods of `understudy` write as.
    pub fn users(&self, understudy: Understudy) -> HashSet<String> {
        self.list
            .iter()
            .filter(|r| r.understudy == understudy)
            .map(|r| r.user.clone())
            .collect()
    }
}

/// The processes of a container: those whose cgroup path names its ID.
pub fn container_pids(id: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|cgroups| in_container(&cgroups, id))
        })
        .collect()
}

/// Whether a `/proc/<pid>/cgroup` names the container `id` as a whole
/// path component (cgroupfs: `.../pod<uid>/<id>`; systemd:
/// `cri-containerd-<id>.scope`).
fn in_container(cgroups: &str, id: &str) -> bool {
    !id.is_empty()
        && cgroups.lines().any(|line| {
            let path = line.splitn(3, ':').nth(2).unwrap_or_default();
            path.split('/').any(|part| {
                part == id
                    || part
                        .strip_suffix(".scope")
                        .and_then(|p| p.rsplit_once('-'))
                        .is_some_and(|(_, tail)| tail == id)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c0e1e3d0b4c5e9a341b2b3c4d5e6f3f1c0e1e3d0b4c5e9a341b2b3c4d5e6f";

    #[test]
    fn a_container_is_found_by_its_cgroup_path() {
        let cgroupfs = format!(
            "12:pids:/understudy-lab-s1-n0/kubepods/besteffort/pod1234/{ID}\n11:memory:/understudy-lab-s1-n0/kubepods/besteffort/pod1234/{ID}\n"
        );
        assert!(in_container(&cgroupfs, ID));
        let systemd =
            format!("0::/kubepods.slice/kubepods-pod1234.slice/cri-containerd-{ID}.scope\n");
        assert!(in_container(&systemd, ID));
        let sandbox = "12:pids:/understudy-lab-s1-n0/kubepods/besteffort/pod1234/feedbeef\n";
        assert!(!in_container(sandbox, ID), "the pod's other container");
        assert!(
            !in_container(&format!("12:pids:/x/{ID}0\n"), ID),
            "a longer ID is another container"
        );
        assert!(!in_container("12:pids:/\n", ""), "no ID matches nothing");
    }

    #[test]
    fn the_runtime_prefix_is_dropped_from_a_container_id() {
        assert_eq!(container_id(&format!("containerd://{ID}")), ID);
        assert_eq!(container_id(ID), ID);
    }

    #[test]
    fn a_pod_holds_a_lease_by_its_name_and_a_suffix() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "understudy-scheduler-7d9-abcde", "uid": "u1"},
            "spec": {"serviceAccountName": "understudy-scheduler", "containers": []},
            "status": {"containerStatuses": [{
                "name": "scheduler", "image": "i", "imageID": "", "ready": true,
                "restartCount": 2, "containerID": format!("containerd://{ID}"),
                "state": {"running": {"startedAt": "2026-12-07T00:00:00Z"}},
            }]},
        }))
        .unwrap();
        let r = from_pod(&pod, Understudy::Scheduler);
        assert!(r.holds("understudy-scheduler-7d9-abcde_00ff00ff00ff00ff"));
        assert!(!r.holds("understudy-scheduler-7d9-abcdef_00ff"));
        assert!(!r.holds("understudy-scheduler-7d9-abcde"));
        assert_eq!(r.container_id.as_deref(), Some(ID));
        assert_eq!(r.restarts, 2);
        assert!(r.ready && r.started.is_some() && !r.deleting);
        assert_eq!(
            r.user,
            "system:serviceaccount:understudy-system:understudy-scheduler"
        );
    }
}
