//! A PersistentVolume binder as a process against a lab — upstream's
//! (kube-controller-manager running only `persistentvolume-binder-controller`)
//! or ours (`understudy-controllers --controllers=persistentvolume-binder-controller`)
//! — and the volumes, claims and checks the binder race test and benchmark
//! share.
//!
//! Volumes are static `hostPath` ones, which need no node, of a storage class
//! of the caller's (one per test or run), so binders and runs that share a
//! cluster never match each other's volumes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;

use crate::controlplane::free_port;
use crate::process::{self, ProcessError, ProcessRecord};

/// Label on every volume of a class, so a run finds (and removes) its own.
pub const CLASS_LABEL: &str = "understudy.dev/binder-class";

/// The controller both binders run, by its upstream name.
pub const CONTROLLER: &str = "persistentvolume-binder-controller";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binder {
    Upstream,
    Ours,
}

impl Binder {
    pub fn label(self) -> &'static str {
        match self {
            Self::Upstream => "kube-controller-manager (PV binder)",
            Self::Ours => "understudy-controllers (PV binder)",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Self::Upstream => "kube",
            Self::Ours => "understudy",
        }
    }
}

/// A Lease the binder takes before acting, short so that a binder killed
/// with SIGKILL (which never gives its lease up) is replaced within seconds.
#[derive(Clone, Debug)]
pub struct Lease {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct BinderOptions {
    /// Admin kubeconfig of the lab.
    pub kubeconfig: PathBuf,
    /// Where upstream's binaries are (`ClusterState::toolchain_dir`).
    pub toolchain_dir: PathBuf,
    /// Where ours are (`target/<profile>`).
    pub components_dir: PathBuf,
    /// Directory of the logs (and of kube-controller-manager's serving certs).
    pub work_dir: PathBuf,
    /// `None`: no leader election.
    pub lease: Option<Lease>,
    /// Client QPS and burst.
    pub qps: u32,
    /// Our log filter.
    pub log_level: String,
}

/// Lease timing of both binders: a hand-over after SIGKILL takes about
/// the lease duration.
const LEASE_DURATION: &str = "4s";
const RENEW_DEADLINE: &str = "3s";
const RETRY_PERIOD: &str = "500ms";

fn leader_args(lease: &Option<Lease>) -> Vec<String> {
    match lease {
        None => vec!["--leader-elect=false".into()],
        Some(lease) => vec![
            "--leader-elect=true".into(),
            format!("--leader-elect-lease-duration={LEASE_DURATION}"),
            format!("--leader-elect-renew-deadline={RENEW_DEADLINE}"),
            format!("--leader-elect-retry-period={RETRY_PERIOD}"),
            format!("--leader-elect-resource-name={}", lease.name),
            format!("--leader-elect-resource-namespace={}", lease.namespace),
        ],
    }
}

/// The program and arguments that run `binder` alone.
pub fn command(
    binder: Binder,
    opts: &BinderOptions,
    port: u16,
    instance: &str,
) -> (PathBuf, Vec<String>) {
    let kubeconfig = opts.kubeconfig.display().to_string();
    let qps = opts.qps;
    let mut args = match binder {
        Binder::Upstream => vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!(
                "--cert-dir={}",
                opts.work_dir.join(format!("{instance}-certs")).display()
            ),
            format!("--controllers={CONTROLLER}"),
            format!("--kube-api-qps={qps}"),
            format!("--kube-api-burst={qps}"),
            "--v=0".into(),
        ],
        Binder::Ours => vec![
            format!("--kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--port={port}"),
            format!("--controllers={CONTROLLER}"),
            format!("--kube-api-qps={qps}"),
            format!("--kube-api-burst={qps}"),
            format!("--log-level={}", opts.log_level),
        ],
    };
    args.extend(leader_args(&opts.lease));
    let program = match binder {
        Binder::Upstream => opts.toolchain_dir.join("kube-controller-manager"),
        Binder::Ours => opts.components_dir.join("understudy-controllers"),
    };
    (program, args)
}

/// A binder process; killed (the whole process group) when dropped, so a
/// failing test or bench leaves none behind.
pub struct RunningBinder {
    pub binder: Binder,
    pub record: ProcessRecord,
}

impl RunningBinder {
    /// Starts `binder`; `instance` names its log (`<instance>.log` in the
    /// work directory).
    pub fn start(
        binder: Binder,
        opts: &BinderOptions,
        instance: &str,
    ) -> Result<Self, ProcessError> {
        let port = free_port().map_err(|source| ProcessError::Spawn {
            name: instance.into(),
            program: PathBuf::from("(a free port)"),
            source,
        })?;
        let (program, args) = command(binder, opts, port, instance);
        let record = process::spawn(
            instance,
            &program,
            &args,
            &opts.work_dir.join(format!("{instance}.log")),
        )?;
        Ok(Self { binder, record })
    }

    /// SIGKILL, as a crash or an OOM kill would: no lease given up, writes in
    /// flight cut off. Waits until the process is gone.
    pub fn kill9(self) {
        kill_group(&self.record);
        // Drop kills again: harmless, the record no longer matches a live process.
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(self, grace: Duration) {
        self.record.stop(grace);
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.record.log_tail(lines)
    }
}

impl Drop for RunningBinder {
    fn drop(&mut self) {
        kill_group(&self.record);
    }
}

fn kill_group(record: &ProcessRecord) {
    if !record.is_alive() {
        return;
    }
    let _ = killpg(Pid::from_raw(record.pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while record.is_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A static volume of `class` that any node could mount (hostPath) and
/// the binder may give to any claim of the class.
pub fn volume(name: &str, class: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {CLASS_LABEL: class}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "hostPath": {"path": format!("/tmp/understudy-binder/{name}")},
        },
    }))
    .expect("static volume")
}

/// A claim any volume of `class` satisfies.
pub fn claim(name: &str, class: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }))
    .expect("static claim")
}

pub fn volume_name(class: &str, i: usize) -> String {
    format!("{class}-pv-{i}")
}

pub fn claim_name(i: usize) -> String {
    format!("claim-{i}")
}

/// Creates volumes `first..first+count` of `class`, `in_flight` at a time.
pub async fn create_volumes(
    client: &Client,
    class: &str,
    first: usize,
    count: usize,
    in_flight: usize,
) -> Result<(), kube::Error> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let results: Vec<_> = futures::stream::iter(first..first + count)
        .map(|i| {
            let api = api.clone();
            let pv = volume(&volume_name(class, i), class);
            async move { api.create(&PostParams::default(), &pv).await }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r.map(drop))
}

/// Creates claims `first..first+count` in `ns`, `in_flight` at a time, and
/// returns when each create returned (the claim existed from then on).
pub async fn create_claims(
    client: &Client,
    ns: &str,
    class: &str,
    first: usize,
    count: usize,
    in_flight: usize,
) -> Result<HashMap<String, Instant>, kube::Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let results: Vec<_> = futures::stream::iter(first..first + count)
        .map(|i| {
            let api = api.clone();
            let name = claim_name(i);
            let pvc = claim(&name, class);
            async move {
                api.create(&PostParams::default(), &pvc).await?;
                Ok::<_, kube::Error>((name, Instant::now()))
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Marks the volumes of `class` Available, as a binder that saw them
/// created would have: both binders give a claim only an Available volume
/// (a Pending one waits for the volume's own sync, or the periodic resync).
pub async fn mark_available(
    client: &Client,
    class: &str,
    in_flight: usize,
) -> Result<(), kube::Error> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let pending: Vec<PersistentVolume> = volumes_of(client, class)
        .await?
        .into_iter()
        .filter(|v| phase_of_volume(v) != "Available")
        .collect();
    let results: Vec<_> = futures::stream::iter(pending)
        .map(|mut v| {
            let api = api.clone();
            v.status = Some(serde_json::from_value(json!({"phase": "Available"})).expect("status"));
            async move {
                api.replace_status(&v.name_any(), &PostParams::default(), &v)
                    .await
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r.map(drop))
}

/// The volumes of `class`.
pub async fn volumes_of(
    client: &Client,
    class: &str,
) -> Result<Vec<PersistentVolume>, kube::Error> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default().labels(&format!("{CLASS_LABEL}={class}")))
        .await?
        .items)
}

/// Deletes the volumes of `class` and waits (up to `timeout`) until they
/// are gone. Their `kubernetes.io/pv-protection` finalizer is dropped: the
/// protection controller keeps it on a volume still Bound, and with the
/// binder stopped no one would move the volume on once its claim is gone.
pub async fn delete_volumes(
    client: &Client,
    class: &str,
    timeout: Duration,
) -> Result<(), crate::wait::WaitError> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let selector = ListParams::default().labels(&format!("{CLASS_LABEL}={class}"));
    let failed = |e: kube::Error| crate::wait::WaitError::Timeout {
        what: format!("deleting the volumes of {class}"),
        timeout,
        last: format!(" ({e})"),
    };
    api.delete_collection(&DeleteParams::background(), &selector)
        .await
        .map_err(failed)?;
    let unprotect = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    for v in api.list(&selector).await.map_err(failed)?.items {
        match api
            .patch(&v.name_any(), &PatchParams::default(), &unprotect)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(failed(e)),
        }
    }
    crate::wait::until("volumes deleted", timeout, || {
        let (api, selector) = (api.clone(), selector.clone());
        async move {
            let left = api.list(&selector).await.map_err(|e| e.to_string())?;
            Ok(left.items.is_empty().then_some(()))
        }
    })
    .await
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// What a set of volumes and the claims of one namespace add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub claims_bound: usize,
    pub claims_pending: usize,
    pub volumes_bound: usize,
    pub volumes_available: usize,
    /// Every way the two sides disagree: a volume claimed twice, a claim
    /// whose volume does not point back, a Lost claim, …
    pub problems: Vec<String>,
}

impl Tally {
    /// `pairs` volumes and claims Bound to each other, and nothing amiss.
    pub fn settled_at(&self, pairs: usize) -> bool {
        self.claims_bound == pairs && self.volumes_bound == pairs && self.problems.is_empty()
    }
}

/// Checks the binding both ways: each volume's claimRef names a distinct
/// claim of `ns` (by name and UID) that is Bound to that volume, and each
/// claim's volumeName names a volume whose claimRef is that claim.
pub fn tally(ns: &str, volumes: &[PersistentVolume], claims: &[PersistentVolumeClaim]) -> Tally {
    let mut t = Tally::default();
    let claims_by_name: BTreeMap<String, &PersistentVolumeClaim> =
        claims.iter().map(|c| (c.name_any(), c)).collect();
    let volumes_by_name: BTreeMap<String, &PersistentVolume> =
        volumes.iter().map(|v| (v.name_any(), v)).collect();

    let mut claimed_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in volumes {
        let name = v.name_any();
        match phase_of_volume(v) {
            "Bound" => t.volumes_bound += 1,
            "Available" => t.volumes_available += 1,
            _ => {}
        }
        let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            if phase_of_volume(v) == "Bound" {
                t.problems
                    .push(format!("volume {name} is Bound without a claimRef"));
            }
            continue;
        };
        if r.namespace.as_deref() != Some(ns) {
            t.problems.push(format!(
                "volume {name} is claimed from namespace {:?}",
                r.namespace
            ));
            continue;
        }
        let claim = r.name.clone().unwrap_or_default();
        claimed_by
            .entry(claim.clone())
            .or_default()
            .push(name.clone());
        match claims_by_name.get(&claim) {
            None => t.problems.push(format!(
                "volume {name} is claimed by {claim}, which does not exist"
            )),
            Some(c) => {
                if r.uid.is_some() && r.uid != c.metadata.uid {
                    t.problems.push(format!(
                        "volume {name}'s claimRef has another UID than claim {claim}"
                    ));
                }
                let back = c.spec.as_ref().and_then(|s| s.volume_name.as_deref());
                if back != Some(name.as_str()) {
                    t.problems.push(format!(
                        "volume {name} is claimed by {claim}, whose volumeName is {back:?}"
                    ));
                } else if phase_of_claim(c) != "Bound" {
                    t.problems.push(format!(
                        "volume {name} and claim {claim} point at each other, the claim is {:?}",
                        phase_of_claim(c)
                    ));
                }
            }
        }
        if phase_of_volume(v) != "Bound" {
            t.problems.push(format!(
                "volume {name} has a claimRef but is {:?}",
                phase_of_volume(v)
            ));
        }
    }
    for (claim, vols) in &claimed_by {
        if vols.len() > 1 {
            t.problems.push(format!(
                "claim {claim} is the claimRef of {}",
                vols.join(", ")
            ));
        }
    }

    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in claims {
        let name = c.name_any();
        match phase_of_claim(c) {
            "Bound" => t.claims_bound += 1,
            "Pending" => t.claims_pending += 1,
            "Lost" => t.problems.push(format!("claim {name} is Lost")),
            _ => {}
        }
        let Some(vol) = c.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
            if phase_of_claim(c) == "Bound" {
                t.problems
                    .push(format!("claim {name} is Bound without a volumeName"));
            }
            continue;
        };
        holders.entry(vol.clone()).or_default().push(name.clone());
        let points_back = volumes_by_name
            .get(&vol)
            .and_then(|v| v.spec.as_ref()?.claim_ref.as_ref())
            .is_some_and(|r| {
                r.name.as_deref() == Some(name.as_str())
                    && r.namespace.as_deref() == Some(ns)
                    && (r.uid.is_none() || r.uid == c.metadata.uid)
            });
        if !points_back {
            t.problems.push(format!(
                "claim {name} names volume {vol}, which does not point back"
            ));
        }
    }
    for (vol, names) in &holders {
        if names.len() > 1 {
            t.problems.push(format!(
                "volume {vol} is the volumeName of {}",
                names.join(", ")
            ));
        }
    }
    t
}

/// Lists the volumes of `class` and the claims of `ns` and tallies them.
pub async fn observe(client: &Client, ns: &str, class: &str) -> Result<Tally, kube::Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claims = claims.list(&ListParams::default()).await?.items;
    let volumes = volumes_of(client, class).await?;
    Ok(tally(ns, &volumes, &claims))
}

/// When each claim of a namespace was first seen Bound, from a watch (so a
/// condition on the count is noticed within milliseconds, not a poll).
pub struct BoundWatch {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    count: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl BoundWatch {
    pub fn start(client: &Client, ns: &str) -> Self {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (tx, count) = tokio::sync::watch::channel(0);
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
            loop {
                match stream.try_next().await {
                    Ok(Some(Event::Apply(c) | Event::InitApply(c))) => {
                        if phase_of_claim(&c) == "Bound" {
                            let n = {
                                let mut seen = sink.lock().expect("bound claims");
                                seen.entry(c.name_any()).or_insert_with(Instant::now);
                                seen.len()
                            };
                            tx.send_replace(n);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    // The watcher re-lists on its own; errors are transient.
                    Err(_) => {}
                }
            }
        });
        Self { seen, count, task }
    }

    pub fn bound(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until at least `n` claims have been seen Bound.
    pub async fn wait_for(&mut self, n: usize, timeout: Duration) -> Result<usize, String> {
        let reached = tokio::time::timeout(timeout, self.count.wait_for(|c| *c >= n))
            .await
            .map(|r| r.map(|c| *c));
        match reached {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(_)) => Err("the claim watch ended".into()),
            Err(_) => Err(format!(
                "{} of {n} claims Bound after {timeout:?}",
                self.bound()
            )),
        }
    }

    /// Each claim seen Bound, with when it was first seen so.
    pub fn bound_at(&self) -> HashMap<String, Instant> {
        self.seen.lock().expect("bound claims").clone()
    }
}

impl Drop for BoundWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "t";

    fn vol(name: &str, claim: Option<(&str, &str)>, phase: &str) -> PersistentVolume {
        let mut v = volume(name, "c");
        if let Some((claim, uid)) = claim {
            v.spec.as_mut().unwrap().claim_ref = Some(
                serde_json::from_value(
                    json!({"kind": "PersistentVolumeClaim", "namespace": NS, "name": claim, "uid": uid}),
                )
                .unwrap(),
            );
        }
        v.status = Some(serde_json::from_value(json!({"phase": phase})).unwrap());
        v
    }

    fn pvc(name: &str, uid: &str, volume: Option<&str>, phase: &str) -> PersistentVolumeClaim {
        let mut c = claim(name, "c");
        c.metadata.uid = Some(uid.into());
        c.metadata.namespace = Some(NS.into());
        c.spec.as_mut().unwrap().volume_name = volume.map(String::from);
        c.status = Some(serde_json::from_value(json!({"phase": phase})).unwrap());
        c
    }

    #[test]
    fn tally_table() {
        struct Case {
            name: &'static str,
            volumes: Vec<PersistentVolume>,
            claims: Vec<PersistentVolumeClaim>,
            bound: (usize, usize),
            problems: &'static [&'static str],
        }
        let cases = vec![
            Case {
                name: "two pairs and a pending claim",
                volumes: vec![
                    vol("a", Some(("x", "ux")), "Bound"),
                    vol("b", Some(("y", "uy")), "Bound"),
                ],
                claims: vec![
                    pvc("x", "ux", Some("a"), "Bound"),
                    pvc("y", "uy", Some("b"), "Bound"),
                    pvc("z", "uz", None, "Pending"),
                ],
                bound: (2, 2),
                problems: &[],
            },
            Case {
                name: "half-done bind: the volume is claimed, the claim not yet bound",
                volumes: vec![vol("a", Some(("x", "ux")), "Bound")],
                claims: vec![pvc("x", "ux", None, "Pending")],
                bound: (0, 1),
                problems: &["volume a is claimed by x, whose volumeName is None"],
            },
            Case {
                name: "one claim is the claimRef of two volumes",
                volumes: vec![
                    vol("a", Some(("x", "ux")), "Bound"),
                    vol("b", Some(("x", "ux")), "Bound"),
                ],
                claims: vec![pvc("x", "ux", Some("a"), "Bound")],
                bound: (1, 2),
                problems: &[
                    "volume b is claimed by x, whose volumeName is Some(\"a\")",
                    "claim x is the claimRef of a, b",
                ],
            },
            Case {
                name: "two claims name one volume",
                volumes: vec![vol("a", Some(("x", "ux")), "Bound")],
                claims: vec![
                    pvc("x", "ux", Some("a"), "Bound"),
                    pvc("y", "uy", Some("a"), "Lost"),
                ],
                bound: (1, 1),
                problems: &[
                    "claim y is Lost",
                    "claim y names volume a, which does not point back",
                    "volume a is the volumeName of x, y",
                ],
            },
            Case {
                name: "a claimRef of an earlier claim of the same name",
                volumes: vec![vol("a", Some(("x", "old")), "Bound")],
                claims: vec![pvc("x", "ux", Some("a"), "Bound")],
                bound: (1, 1),
                problems: &[
                    "volume a's claimRef has another UID than claim x",
                    "claim x names volume a, which does not point back",
                ],
            },
        ];
        for case in cases {
            let t = tally(NS, &case.volumes, &case.claims);
            assert_eq!(
                (t.claims_bound, t.volumes_bound),
                case.bound,
                "{}",
                case.name
            );
            assert_eq!(t.problems, case.problems, "{}", case.name);
            assert_eq!(
                t.settled_at(case.bound.0),
                case.problems.is_empty() && case.bound.0 == case.bound.1,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn both_binders_run_the_binder_alone_with_a_short_lease() {
        let opts = BinderOptions {
            kubeconfig: "/k".into(),
            toolchain_dir: "/tc".into(),
            components_dir: "/bin".into(),
            work_dir: "/w".into(),
            lease: Some(Lease {
                namespace: "ns".into(),
                name: "binder".into(),
            }),
            qps: 100,
            log_level: "info".into(),
        };
        for binder in [Binder::Upstream, Binder::Ours] {
            let (program, args) = command(binder, &opts, 1234, "b1");
            assert!(
                program.ends_with(match binder {
                    Binder::Upstream => "kube-controller-manager",
                    Binder::Ours => "understudy-controllers",
                }),
                "{program:?}"
            );
            for want in [
                "--controllers=persistentvolume-binder-controller",
                "--leader-elect=true",
                "--leader-elect-lease-duration=4s",
                "--leader-elect-resource-name=binder",
                "--leader-elect-resource-namespace=ns",
                "--kube-api-qps=100",
            ] {
                assert!(
                    args.iter().any(|a| a == want),
                    "{binder:?}: {want} in {args:?}"
                );
            }
        }
        let opts = BinderOptions {
            lease: None,
            ..opts
        };
        let (_, args) = command(Binder::Ours, &opts, 1, "b");
        assert!(args.iter().any(|a| a == "--leader-elect=false"));
    }
}
