//! The faults a chaos run injects, the seeded order they come in, and the
//! ones that act on the control plane itself (the apiserver, etcd).

use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::invariants::Snapshot;
use crate::controlplane::wait_healthy;
use crate::process;
use crate::state::ClusterState;
use crate::understudies::Understudy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` of one replica of an understudy.
    Kill9,
    /// `kill -9` of every replica of an understudy at once.
    KillAll,
    /// One pod of an understudy deleted with grace period 0 (chart
    /// backend): its ReplicaSet makes another.
    DeletePod,
    /// The leader SIGSTOPped until the other replica holds its Lease, then SIGCONT.
    PauseLeader,
    /// kube-apiserver stopped and started again.
    ApiserverRestart,
    /// etcd compacted to its current revision, then the apiserver restarted,
    /// so every watch resumes from a compacted resourceVersion: 410 Gone, relist.
    EtcdCompaction,
    /// understudy-controllers' replicas stopped and kube-controller-manager
    /// restarted with the controllers they replace enabled: upstream's
    /// controllers take over the objects ours made.
    KcmTakeOver,
    /// kube-controller-manager restarted with those controllers disabled
    /// again and our replicas started: ours take back what upstream's made.
    KcmHandBack,
    /// A real node's link into the lab's switch down and its apiserver
    /// relay frozen for some seconds of churn, then both restored.
    NodeNetworkCut,
    /// `kill -9` of a real node's proxy (understudy-proxy, or kube-proxy
    /// with `--upstream`), left dead for some seconds — its rules must keep
    /// routing meanwhile — then started again to resync.
    KillProxy,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill9 => "kill-9",
            Self::KillAll => "kill-9-all-replicas",
            Self::DeletePod => "delete-pod",
            Self::PauseLeader => "pause-leader",
            Self::ApiserverRestart => "apiserver-restart",
            Self::EtcdCompaction => "etcd-compaction",
            Self::KcmTakeOver => "kcm-takes-over",
            Self::KcmHandBack => "kcm-hands-back",
            Self::NodeNetworkCut => "node-network-cut",
            Self::KillProxy => "kill-9-proxy",
        }
    }
}

/// One fault, and the understudy it hits (none for control-plane faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: Option<Understudy>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            Some(target) => write!(f, "{} {}", self.kind.name(), target.binary()),
            None => f.write_str(self.kind.name()),
        }
    }
}

/// One round: every kind of fault once per understudy it applies to, and
/// once for the control plane, in an order drawn from `rng`. With
/// `switch_kcm` (and understudy-controllers among `understudies`),
/// kube-controller-manager takes the controllers over at a drawn place and
/// hands them back right after (the churn between the two runs on
/// upstream's controllers), so no fault aimed at our controllers' replicas
/// falls while they are stopped. With `cut_node`, a real node's network is
/// cut once too. With `delete_pods` (the understudies run as pods), one
/// pod of each is deleted at once too. With `kill_proxy`, a real node's
/// proxy is killed once.
pub fn round(
    rng: &mut fastrand::Rng,
    understudies: &[Understudy],
    switch_kcm: bool,
    cut_node: bool,
    delete_pods: bool,
    kill_proxy: bool,
) -> Vec<Fault> {
    let mut faults = vec![];
    for &target in understudies {
        let mut kinds = vec![FaultKind::Kill9, FaultKind::KillAll, FaultKind::PauseLeader];
        if delete_pods {
            kinds.push(FaultKind::DeletePod);
        }
        for kind in kinds {
            faults.push(Fault {
                kind,
                target: Some(target),
            });
        }
    }
    for kind in [FaultKind::ApiserverRestart, FaultKind::EtcdCompaction] {
        faults.push(Fault { kind, target: None });
    }
    if cut_node {
        faults.push(Fault {
            kind: FaultKind::NodeNetworkCut,
            target: None,
        });
    }
    if kill_proxy {
        faults.push(Fault {
            kind: FaultKind::KillProxy,
            target: None,
        });
    }
    rng.shuffle(&mut faults);
    if switch_kcm && understudies.contains(&Understudy::Controllers) {
        let at = rng.usize(..=faults.len());
        for (offset, kind) in [FaultKind::KcmTakeOver, FaultKind::KcmHandBack]
            .into_iter()
            .enumerate()
        {
            faults.insert(at + offset, Fault { kind, target: None });
        }
    }
    faults
}

/// The field manager of kube-controller-manager's writes (client-go's
/// default: the program's name).
pub const KCM_MANAGER: &str = "kube-controller-manager";

/// How many of the listed objects `manager` wrote at or after `since`, by
/// their managed fields: what shows upstream's controllers did the work
/// while they had it (the audit log records only the chaos replicas).
pub fn written_by_since(snapshot: &Snapshot, manager: &str, since: Timestamp) -> usize {
    let wrote = |meta: &ObjectMeta| {
        meta.managed_fields.iter().flatten().any(|entry| {
            entry.manager.as_deref() == Some(manager)
                && entry.time.as_ref().is_some_and(|t| t.0 >= since)
        })
    };
    let metas = snapshot
        .pods
        .iter()
        .map(|o| &o.metadata)
        .chain(snapshot.replica_sets.iter().map(|o| &o.metadata))
        .chain(snapshot.deployments.iter().map(|o| &o.metadata))
        .chain(snapshot.endpoints.iter().map(|o| &o.metadata))
        .chain(snapshot.slices.iter().map(|o| &o.metadata))
        .chain(snapshot.volumes.iter().map(|o| &o.metadata))
        .chain(snapshot.claims.iter().map(|o| &o.metadata));
    metas.filter(|m| wrote(m)).count()
}

const APISERVER: &str = "kube-apiserver";

/// Stops kube-apiserver (SIGTERM, SIGKILL after 15s) and starts it again
/// with the same arguments; returns once it is ready.
pub async fn restart_apiserver(state: &mut ClusterState) -> Result<(), String> {
    let old = state
        .process(APISERVER)
        .cloned()
        .ok_or("the lab has no kube-apiserver process")?;
    let stopping = old.clone();
    tokio::task::spawn_blocking(move || stopping.stop(Duration::from_secs(15)))
        .await
        .map_err(|e| e.to_string())?;
    let program = state.toolchain_dir.join(APISERVER);
    respawn(state, &old, &program).await
}

/// Starts `old` (stopped) again: `program` with its arguments and log, in
/// its place in the lab's state; returns once its health probe answers.
async fn respawn(
    state: &mut ClusterState,
    old: &process::ProcessRecord,
    program: &std::path::Path,
) -> Result<(), String> {
    let record =
        process::spawn(&old.name, program, &old.args, &old.log).map_err(|e| e.to_string())?;
    for p in state.processes.iter_mut().filter(|p| p.name == old.name) {
        *p = record.clone();
    }
    state.save().map_err(|e| e.to_string())?;
    let url = state
        .probes
        .iter()
        .find(|p| p.process == old.name)
        .map(|p| p.url.clone())
        .ok_or_else(|| format!("no health probe for {}", old.name))?;
    wait_healthy(&record, &url, Duration::from_secs(120))
        .await
        .map_err(|e| e.to_string())
}

/// SIGKILL of the lab's process `name` (its process group: nsenter execs
/// the node's proxy, so that is the proxy itself); returns its record once
/// it is gone.
pub async fn kill9(state: &ClusterState, name: &str) -> Result<process::ProcessRecord, String> {
    let old = state
        .process(name)
        .cloned()
        .ok_or_else(|| format!("the lab has no process {name}"))?;
    // Its pid may be another process's by now.
    if !old.is_alive() {
        return Err(format!("{name} (pid {}) had already exited", old.pid));
    }
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(old.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| format!("SIGKILL to {name}: {e}"))?;
    let dead = old.clone();
    crate::wait::until(&format!("{name} to die"), Duration::from_secs(10), || {
        let dead = dead.clone();
        async move { Ok((!dead.is_alive()).then_some(())) }
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(old)
}

/// Starts a node's proxy killed by [`kill9`] again, as the lab started it
/// (nsenter into the node's namespaces, the same arguments).
pub async fn restart_node_proxy(
    state: &mut ClusterState,
    old: &process::ProcessRecord,
) -> Result<(), String> {
    respawn(state, old, std::path::Path::new(crate::realnode::NSENTER)).await
}

/// Compacts etcd to its current revision through its JSON gateway; returns
/// the revision.
pub async fn compact_etcd(state: &ClusterState) -> Result<i64, String> {
    let port = state.ports.get("etcd").ok_or("the lab has no etcd port")?;
    let base = format!("http://127.0.0.1:{port}/v3/kv");
    let http = reqwest::Client::new();
    // A one-key range answers with the store's current revision in its header.
    let body = http
        .post(format!("{base}/range"))
        .body(serde_json::json!({"key": "AA==", "limit": 1}).to_string())
        .send()
        .await
        .map_err(|e| format!("etcd range: {e}"))?
        .text()
        .await
        .map_err(|e| format!("etcd range: {e}"))?;
    let range: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("etcd range: {e}: {body}"))?;
    let revision: i64 = range["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("etcd range answered no revision: {range}"))?;
    let answer = http
        .post(format!("{base}/compaction"))
        .body(serde_json::json!({"revision": revision.to_string(), "physical": true}).to_string())
        .send()
        .await
        .map_err(|e| format!("etcd compaction: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!(
            "etcd compaction: {} {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        ));
    }
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_has_each_fault_once_per_target_in_a_seeded_order() {
        let both = [Understudy::Scheduler, Understudy::Controllers];
        let one = round(
            &mut fastrand::Rng::with_seed(1),
            &both,
            false,
            false,
            false,
            false,
        );
        assert_eq!(one.len(), 8);
        for kind in [FaultKind::Kill9, FaultKind::KillAll, FaultKind::PauseLeader] {
            for target in both {
                assert_eq!(
                    one.iter()
                        .filter(|f| f.kind == kind && f.target == Some(target))
                        .count(),
                    1
                );
            }
        }
        assert_eq!(
            one.iter().filter(|f| f.target.is_none()).count(),
            2,
            "the apiserver restart and the compaction"
        );
        assert_eq!(
            one,
            round(
                &mut fastrand::Rng::with_seed(1),
                &both,
                false,
                false,
                false,
                false
            )
        );
        let orders: std::collections::BTreeSet<String> = (0..10)
            .map(|seed| {
                format!(
                    "{:?}",
                    round(
                        &mut fastrand::Rng::with_seed(seed),
                        &both,
                        false,
                        false,
                        false,
                        false
                    )
                )
            })
            .collect();
        assert!(orders.len() > 1, "the seed decides the order");
    }

    #[test]
    fn kcm_takes_over_and_hands_back_next_to_each_other_anywhere_in_a_round() {
        let both = [Understudy::Scheduler, Understudy::Controllers];
        let mut places = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let faults = round(
                &mut fastrand::Rng::with_seed(seed),
                &both,
                true,
                false,
                false,
                false,
            );
            assert_eq!(faults.len(), 10);
            let at = |kind| faults.iter().position(|f: &Fault| f.kind == kind);
            let over = at(FaultKind::KcmTakeOver).expect("take-over");
            assert_eq!(at(FaultKind::KcmHandBack), Some(over + 1), "{faults:?}");
            assert_eq!(
                faults
                    .iter()
                    .filter(|f| matches!(f.kind, FaultKind::KcmTakeOver | FaultKind::KcmHandBack))
                    .count(),
                2
            );
            places.insert(over);
        }
        assert!(places.contains(&0) && places.contains(&8), "{places:?}");
    }

    #[test]
    fn a_node_network_cut_once_a_round_with_real_nodes() {
        let both = [Understudy::Scheduler, Understudy::Controllers];
        let faults = round(
            &mut fastrand::Rng::with_seed(5),
            &both,
            true,
            true,
            false,
            false,
        );
        assert_eq!(faults.len(), 11);
        assert_eq!(
            faults
                .iter()
                .filter(|f| f.kind == FaultKind::NodeNetworkCut)
                .count(),
            1
        );
    }

    #[test]
    fn a_node_proxy_killed_once_a_round_when_asked() {
        let both = [Understudy::Scheduler, Understudy::Controllers];
        let faults = round(
            &mut fastrand::Rng::with_seed(5),
            &both,
            false,
            true,
            false,
            true,
        );
        assert_eq!(faults.len(), 10);
        assert_eq!(
            faults
                .iter()
                .filter(|f| f.kind == FaultKind::KillProxy && f.target.is_none())
                .count(),
            1
        );
        let without = round(
            &mut fastrand::Rng::with_seed(5),
            &both,
            false,
            true,
            false,
            false,
        );
        assert!(without.iter().all(|f| f.kind != FaultKind::KillProxy));
    }

    #[test]
    fn objects_written_by_a_manager_since_a_time_are_counted_once() {
        use k8s_openapi::api::apps::v1::ReplicaSet;
        use k8s_openapi::api::core::v1::Pod;
        let at = |secs: i64| Timestamp::from_second(1_700_000_000 + secs).unwrap();
        let meta = |entries: &[(&str, i64)]| -> ObjectMeta {
            serde_json::from_value(serde_json::json!({
                "name": "x",
                "managedFields": entries.iter().map(|(m, t)| serde_json::json!({
                    "manager": m, "operation": "Update",
                    "time": at(*t).to_string(),
                })).collect::<Vec<_>>(),
            }))
            .unwrap()
        };
        let pod = |entries: &[(&str, i64)]| Pod {
            metadata: meta(entries),
            ..Default::default()
        };
        let snapshot = Snapshot {
            pods: vec![
                pod(&[(KCM_MANAGER, 10), (KCM_MANAGER, 12)]),
                pod(&[(KCM_MANAGER, 5)]),
                pod(&[("understudy-controllers", 20)]),
                pod(&[]),
            ],
            replica_sets: vec![ReplicaSet {
                metadata: meta(&[("understudy-controllers", 1), (KCM_MANAGER, 11)]),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(written_by_since(&snapshot, KCM_MANAGER, at(10)), 2);
        assert_eq!(written_by_since(&snapshot, KCM_MANAGER, at(0)), 3);
        assert_eq!(written_by_since(&snapshot, KCM_MANAGER, at(13)), 0);
    }

    #[test]
    fn a_pod_of_each_understudy_deleted_once_a_round_with_the_chart() {
        let both = [Understudy::Scheduler, Understudy::Controllers];
        let faults = round(
            &mut fastrand::Rng::with_seed(7),
            &both,
            false,
            true,
            true,
            false,
        );
        assert_eq!(faults.len(), 11);
        for target in both {
            assert_eq!(
                faults
                    .iter()
                    .filter(|f| f.kind == FaultKind::DeletePod && f.target == Some(target))
                    .count(),
                1
            );
        }
    }

    #[test]
    fn no_kcm_switch_without_our_controllers() {
        let faults = round(
            &mut fastrand::Rng::with_seed(3),
            &[Understudy::Scheduler],
            true,
            false,
            false,
            false,
        );
        assert_eq!(faults.len(), 5);
        assert!(faults.iter().all(|f| f.kind != FaultKind::KcmTakeOver));
    }
}
