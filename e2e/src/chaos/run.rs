//! The chaos run itself: replicas up, churn going, faults one after the
//! other with the time everything takes to converge after each, invariants
//! checked throughout, then the audit log read for what only it can tell.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

use super::cast::Cast;
use super::churn::{self, Churn};
use super::faults::{self, Fault, FaultKind};
use super::invariants::traffic::{self as routes, ServiceSeen};
use super::invariants::{self, BindingHistory, Invariant, Snapshot, Violation};
use super::netcut;
use super::pods::PodReplicas;
use super::replicas::{self, Flavour, LeaseTiming, Replicas};
use super::report::{FaultRecord, PauseWindow, Report, TrafficFigures};
use super::traffic::{self, Prober};
use crate::binder::CLASS_LABEL;
use crate::chart::Backend;
use crate::state::ClusterState;
use crate::understudies::Understudy;
use crate::wait;

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// Faults start while the run is younger than this (a round begun finishes).
    pub duration: Duration,
    pub seed: u64,
    /// Where the understudy binaries are.
    pub components_dir: PathBuf,
    /// How long everything may take to converge after a fault.
    pub converge_timeout: Duration,
    /// How long a convergence invariant may stay broken before it counts.
    pub grace: Duration,
    pub lease: LeaseTiming,
    /// Churn between two faults: drawn from this range.
    pub gap: (Duration, Duration),
    /// Whether a round hands our controllers to kube-controller-manager and back.
    pub switch_kcm: bool,
    /// Whose components are under test.
    pub flavour: Flavour,
    /// Processes the run starts, or the pods the lab's chart installed.
    pub backend: Backend,
}

impl ChaosOptions {
    pub fn new(duration: Duration, seed: u64, components_dir: PathBuf) -> Self {
        Self {
            duration,
            seed,
            components_dir,
            converge_timeout: Duration::from_secs(120),
            grace: Duration::from_secs(60),
            lease: LeaseTiming::default(),
            gap: (Duration::from_secs(3), Duration::from_secs(10)),
            switch_kcm: true,
            flavour: Flavour::Ours,
            backend: Backend::Processes,
        }
    }
}

const UNDERSTUDIES: [Understudy; 2] = [Understudy::Scheduler, Understudy::Controllers];

/// Replicas of each understudy: the chart's default, and the run's own.
const PER_COMPONENT: usize = 2;

/// Why the chart backend skips the kube-controller-manager switch.
pub const NO_KCM_SWITCH_WITH_THE_CHART: &str = "with --backend chart our controllers run their own Deployment: \
handing it to kube-controller-manager and back means both run for a moment (the chart's bootstrap, \
tested by the chart e2e tests), not the never-both switch this fault measures";

/// Lists what the invariants read: the run's namespace and volume class,
/// and every node.
pub async fn snapshot(client: &Client, ns: &str, class: &str) -> Result<Snapshot, kube::Error> {
    let lp = ListParams::default();
    let all = |c: &Client| c.clone();
    Ok(Snapshot {
        nodes: Api::<Node>::all(all(client)).list(&lp).await?.items,
        pods: Api::<Pod>::namespaced(all(client), ns)
            .list(&lp)
            .await?
            .items,
        replica_sets: Api::<ReplicaSet>::namespaced(all(client), ns)
            .list(&lp)
            .await?
            .items,
        deployments: Api::<Deployment>::namespaced(all(client), ns)
            .list(&lp)
            .await?
            .items,
        services: Api::<Service>::namespaced(all(client), ns)
            .list(&lp)
            .await?
            .items,
        endpoints: Api::<Endpoints>::namespaced(all(client), ns)
            .list(&lp)
            .await?
            .items,
        slices: Api::<EndpointSlice>::namespaced(all(client), ns)
            .list(&lp)
            .await?
            .items,
        volumes: Api::<PersistentVolume>::all(all(client))
            .list(&ListParams::default().labels(&format!("{CLASS_LABEL}={class}")))
            .await?
            .items,
        claims: Api::<PersistentVolumeClaim>::namespaced(all(client), ns)
            .list(&lp)
            .await?
            .items,
    })
}

/// The invariant checker's memory across snapshots.
struct Checker {
    started: Instant,
    grace: Duration,
    history: BindingHistory,
    first_seen: HashMap<(Invariant, Vec<String>), Instant>,
    counted: HashSet<(Invariant, Vec<String>)>,
    violations: Vec<(Duration, Violation)>,
    api_errors: u32,
    /// With traffic: the traffic Service as each listing saw it.
    traffic_seen: Option<Vec<ServiceSeen>>,
}

impl Checker {
    /// Everything a listing (from `at.0` to `at.1`) shows: the safety and
    /// convergence invariants, and the traffic Service's state.
    fn listed(&mut self, at: (Duration, Duration), s: &Snapshot, now_final: bool) {
        let mut found = self.history.observe(&s.pods);
        found.extend(s.check());
        self.observe(found, now_final);
        if let Some(seen) = self.traffic_seen.as_mut() {
            seen.push(ServiceSeen::from_listing(
                at,
                traffic::WORKLOAD,
                traffic::WORKLOAD,
                &s.slices,
                &s.pods,
            ));
        }
    }

    /// Safety violations count at once; the others once they outlived the
    /// grace period (or `now_final`: the run is over and all must hold).
    fn observe(&mut self, found: Vec<Violation>, now_final: bool) {
        let now = Instant::now();
        let present: HashSet<_> = found.iter().map(Violation::key).collect();
        self.first_seen.retain(|k, _| present.contains(k));
        for violation in found {
            let key = violation.key();
            let since = *self.first_seen.entry(key.clone()).or_insert(now);
            let due = violation.invariant.is_safety()
                || now_final
                || now.duration_since(since) >= self.grace;
            if due && self.counted.insert(key) {
                let at = now.duration_since(self.started);
                println!("[{:>7.1}s] VIOLATION {violation}", at.as_secs_f64());
                self.violations.push((at, violation));
            }
        }
    }
}

/// Whether every deployment rolled out and every claim is bound.
fn settled(snapshot: &Snapshot) -> bool {
    snapshot
        .deployments
        .iter()
        .all(crate::workloads::rolled_out)
        && snapshot
            .claims
            .iter()
            .all(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
}

struct Run {
    client: Client,
    state: ClusterState,
    cast: Cast,
    opts: ChaosOptions,
    started: Instant,
    namespace: String,
    class: String,
    checker: Arc<Mutex<Checker>>,
    churn_paused: Arc<AtomicBool>,
    /// When kube-controller-manager took our controllers over, while it has them.
    kcm_since: Option<Timestamp>,
    /// What it wrote meanwhile, counted at the hand-back for its record.
    kcm_wrote: Option<usize>,
    /// With traffic: the node the prober sends from, and when its proxy
    /// could not learn of changes (killed, or the node cut off).
    prober_node: Option<String>,
    blind: Vec<routes::Blind>,
}

impl Run {
    fn log(&self, line: impl std::fmt::Display) {
        println!(
            "[{:>7.1}s {}] {line}",
            self.started.elapsed().as_secs_f64(),
            Timestamp::now().strftime("%H:%M:%S")
        );
    }

    async fn supervise(&mut self) {
        for line in self.cast.supervise(&mut self.state).await {
            self.log(line);
        }
    }

    /// Each understudy led by a live replica's current process, which
    /// renewed its Lease after `since` (a Lease still naming a dead or
    /// frozen process does not count).
    async fn leaders_live(&self, since: Timestamp) -> Result<bool, kube::Error> {
        for understudy in UNDERSTUDIES {
            if self.cast.held(understudy) {
                continue;
            }
            let Some((holder, renewed)) = self.cast.lease(&self.client, understudy).await? else {
                return Ok(false);
            };
            if !self.cast.holder_live(&holder, renewed, since) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Restarts what died and polls until everything converged: replicas
    /// up, leaders live, no violation, Deployments rolled out, claims
    /// bound. Returns how long it took from `since`.
    async fn wait_converged(&mut self, since: Instant) -> Option<Duration> {
        let deadline = Instant::now() + self.opts.converge_timeout;
        let since_wall = Timestamp::now() - since.elapsed();
        while Instant::now() < deadline {
            self.supervise().await;
            if self.cast.all_running() && self.leaders_live(since_wall).await.unwrap_or(false) {
                match snapshot(&self.client, &self.namespace, &self.class).await {
                    Ok(s) if s.check().is_empty() && settled(&s) => return Some(since.elapsed()),
                    Ok(_) => {}
                    Err(_) => self.checker.lock().expect("checker").api_errors += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    async fn inject(
        &mut self,
        fault: Fault,
        rng: &mut fastrand::Rng,
    ) -> (String, Option<PauseWindow>) {
        match (fault.kind, fault.target) {
            (FaultKind::Kill9, Some(target)) => {
                let Some((victim, role)) = self.pick(target, rng).await else {
                    return (format!("no replica of {target} to kill"), None);
                };
                match self.cast.kill9(&victim) {
                    Ok(what) => (format!("killed {what} ({role})"), None),
                    Err(e) => (format!("killing {victim} failed: {e}"), None),
                }
            }
            (FaultKind::KillAll, Some(target)) => {
                let killed: Vec<String> = self
                    .cast
                    .names(target)
                    .iter()
                    .map(|name| self.cast.kill9(name).unwrap_or_else(|e| format!("({e})")))
                    .collect();
                (format!("killed {}", killed.join(" and ")), None)
            }
            (FaultKind::DeletePod, Some(target)) => {
                let Some((victim, role)) = self.pick(target, rng).await else {
                    return (format!("no pod of {target} to delete"), None);
                };
                let Cast::Pods(pods) = &self.cast else {
                    return ("pods are deleted only with --backend chart".into(), None);
                };
                match pods.delete_now(&victim).await {
                    Ok(()) => (
                        format!("deleted pod {victim} ({role}) with grace period 0"),
                        None,
                    ),
                    Err(e) => (format!("deleting pod {victim} failed: {e}"), None),
                }
            }
            (FaultKind::PauseLeader, Some(target)) => self.pause_leader(target).await,
            (FaultKind::ApiserverRestart, _) => {
                let t = Instant::now();
                match faults::restart_apiserver(&mut self.state).await {
                    Ok(()) => (
                        format!("apiserver back after {:.1}s", t.elapsed().as_secs_f64()),
                        None,
                    ),
                    Err(e) => (format!("apiserver restart failed: {e}"), None),
                }
            }
            (FaultKind::EtcdCompaction, _) => {
                let compacted = faults::compact_etcd(&self.state).await;
                let restarted = faults::restart_apiserver(&mut self.state).await;
                match (compacted, restarted) {
                    (Ok(rev), Ok(())) => (
                        format!("compacted at revision {rev}, apiserver restarted"),
                        None,
                    ),
                    (c, r) => (format!("compaction {c:?}, apiserver restart {r:?}"), None),
                }
            }
            (FaultKind::KcmTakeOver, _) => (self.switch_kcm(true, rng).await, None),
            (FaultKind::KcmHandBack, _) => (self.switch_kcm(false, rng).await, None),
            (FaultKind::NodeNetworkCut, _) => (self.cut_node(rng).await, None),
            (FaultKind::KillProxy, _) => (self.kill_proxy(rng).await, None),
            (kind, None) => (format!("{} needs a target", kind.name()), None),
        }
    }

    /// A replica of `target` drawn from `rng`, and whether it leads.
    async fn pick(
        &self,
        target: Understudy,
        rng: &mut fastrand::Rng,
    ) -> Option<(String, &'static str)> {
        let names = self.cast.names(target);
        if names.is_empty() {
            return None;
        }
        let victim = names[rng.usize(..names.len())].clone();
        let leader = self.cast.leader(&self.client, target).await.ok().flatten();
        let was_leader = leader
            .as_deref()
            .and_then(|h| self.cast.holder(h))
            .is_some_and(|(name, _, _)| name == victim);
        let role = if was_leader {
            "the leader"
        } else {
            "a follower"
        };
        Some((victim, role))
    }

    /// Hands the controllers understudy-controllers replaces to
    /// kube-controller-manager (`to_upstream`) or back: the side giving up
    /// stops first, as `understudy-lab switch-controllers` does, so the two
    /// never act at once.
    async fn switch_kcm(&mut self, to_upstream: bool, rng: &mut fastrand::Rng) -> String {
        let ours = Understudy::Controllers;
        let t = Instant::now();
        let mut wrote = None;
        if to_upstream {
            tokio::task::block_in_place(|| self.cast.hold(ours));
            self.state.replaced.retain(|u| *u != ours);
            self.kcm_since = Some(Timestamp::now());
        } else {
            if let Some(since) = self.kcm_since.take() {
                wrote = snapshot(&self.client, &self.namespace, &self.class)
                    .await
                    .ok()
                    .map(|s| faults::written_by_since(&s, faults::KCM_MANAGER, since));
                self.kcm_wrote = wrote;
            }
            if !self.state.replaced.contains(&ours) {
                self.state.replaced.push(ours);
            }
        }
        let logs = self.state.logs_dir();
        let restarted =
            crate::controlplane::restart_controller_manager(&mut self.state, &logs).await;
        let ready = t.elapsed();
        if to_upstream {
            // The churn goes on for a while with upstream's controllers at
            // work, so what is measured next is their convergence, not an
            // idle cluster's.
            let until = Instant::now() + Duration::from_millis(rng.u64(10_000..=20_000));
            while Instant::now() < until {
                self.supervise().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        } else {
            self.cast.release(ours);
            self.supervise().await;
        }
        let side = if to_upstream {
            format!(
                "our replicas stopped, kube-controller-manager runs the controllers; {:.1}s of churn",
                (t.elapsed() - ready).as_secs_f64()
            )
        } else {
            let wrote = wrote.map_or("unknown".into(), |n| n.to_string());
            format!(
                "kube-controller-manager without the controllers, our replicas started; objects it wrote meanwhile: {wrote}"
            )
        };
        match restarted {
            Ok(()) => format!(
                "{side} (kube-controller-manager ready after {:.1}s)",
                ready.as_secs_f64()
            ),
            Err(e) => format!("{side}; kube-controller-manager restart failed: {e}"),
        }
    }

    /// The lab's proxies on the real nodes (processes in their namespaces).
    fn node_proxies(&self) -> Vec<String> {
        node_proxies(&self.state)
    }

    /// SIGKILL of a real node's proxy, dead for a drawn 3–8s while the
    /// churn goes on and the prober keeps sending (the rules it left must
    /// keep routing), then started again as the lab started it.
    async fn kill_proxy(&mut self, rng: &mut fastrand::Rng) -> String {
        let names = self.node_proxies();
        if names.is_empty() {
            return "no proxy on a real node to kill".into();
        }
        let name = names[rng.usize(..names.len())].clone();
        let dead_for = Duration::from_millis(rng.u64(3_000..=8_000));
        let from = self.started.elapsed();
        let old = match faults::kill9(&self.state, &name).await {
            Ok(old) => old,
            Err(e) => return format!("killing {name} failed: {e}"),
        };
        let until = Instant::now() + dead_for;
        while Instant::now() < until {
            self.supervise().await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let t = Instant::now();
        let restarted = faults::restart_node_proxy(&mut self.state, &old).await;
        if self
            .prober_node
            .as_ref()
            .is_some_and(|node| name.ends_with(&format!("/{node}")))
        {
            self.blind.push(routes::Blind {
                from,
                to: self.started.elapsed(),
                partition: false,
            });
        }
        match restarted {
            Ok(()) => format!(
                "killed {name} (pid {}), dead for {:.1}s, restarted: healthy after {:.1}s",
                old.pid,
                dead_for.as_secs_f64(),
                t.elapsed().as_secs_f64()
            ),
            Err(e) => format!("killed {name}; starting it again failed: {e}"),
        }
    }

    /// Cuts a real node off for a drawn 15–25s while the churn goes on,
    /// then reconnects it; its pods must still be bound to it afterwards.
    async fn cut_node(&mut self, rng: &mut fastrand::Rng) -> String {
        let Some(nodes) = self.state.real_nodes.clone() else {
            return "no real node to cut".into();
        };
        let node = nodes.network.node(rng.usize(..nodes.count));
        let name = node.name();
        let on_node = |snapshot: &Snapshot| -> HashSet<String> {
            snapshot
                .pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name))
                .filter_map(|p| p.metadata.uid.clone())
                .collect()
        };
        let before = snapshot(&self.client, &self.namespace, &self.class)
            .await
            .map(|s| on_node(&s))
            .unwrap_or_default();
        let cut_for = Duration::from_millis(rng.u64(15_000..=25_000));
        let from = self.started.elapsed();
        if let Err(e) = netcut::set_connected(&self.state, &nodes, &node, false) {
            return format!("cutting {name} failed: {e}");
        }
        let until = Instant::now() + cut_for;
        while Instant::now() < until {
            self.supervise().await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let restored = netcut::set_connected(&self.state, &nodes, &node, true);
        // Any node: cut off, the prober's proxy learns nothing; another
        // node's endpoints stay published (node grace period) but
        // unreachable, whatever any proxy does.
        if self.prober_node.is_some() {
            self.blind.push(routes::Blind {
                from,
                to: self.started.elapsed(),
                partition: nodes.count > 1,
            });
        }
        let kept = match snapshot(&self.client, &self.namespace, &self.class).await {
            Ok(after) => {
                let moved = after
                    .pods
                    .iter()
                    .filter(|p| {
                        let uid = p.metadata.uid.as_deref().unwrap_or_default();
                        let node_now = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
                        before.contains(uid) && node_now != Some(name.as_str())
                    })
                    .count();
                format!("{moved} of them bound elsewhere since")
            }
            Err(e) => format!("pods unread after the cut: {e}"),
        };
        match restored {
            Ok(()) => format!(
                "{name} cut off for {:.1}s with {} of the run's pods on it, then reconnected; {kept}",
                cut_for.as_secs_f64(),
                before.len()
            ),
            Err(e) => format!("{name} cut off; reconnecting failed: {e}"),
        }
    }

    /// SIGSTOPs the leader until the other replica holds the Lease, then
    /// SIGCONTs it; its writes from then on are counted from the audit log.
    async fn pause_leader(&mut self, target: Understudy) -> (String, Option<PauseWindow>) {
        let Ok(Some(identity)) = self.cast.leader(&self.client, target).await else {
            return ("no leader to pause".into(), None);
        };
        let Some((holder, user, pod)) = self.cast.holder(&identity) else {
            return (format!("leader {identity} is none of ours"), None);
        };
        let frozen = Instant::now();
        if let Err(e) = self.cast.freeze(&holder, true) {
            return (format!("freezing {holder} failed: {e}"), None);
        }
        let deadline = frozen + self.opts.lease.duration * 4 + Duration::from_secs(30);
        let mut taken_over = None;
        while Instant::now() < deadline {
            self.supervise().await;
            match self.cast.leader(&self.client, target).await {
                Ok(Some(now)) if now != identity => {
                    taken_over = Some((now, frozen.elapsed()));
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let resumed = Timestamp::now();
        let thawed = self.cast.freeze(&holder, false);
        let note = match taken_over {
            Some((by, after)) => format!(
                "{holder} frozen; {by} took the lease after {:.1}s; resumed",
                after.as_secs_f64()
            ),
            None => format!("{holder} frozen; nobody took the lease; resumed"),
        };
        let note = match thawed {
            Ok(()) => note,
            Err(e) => format!("{note}, but SIGCONT failed: {e}"),
        };
        let window = PauseWindow {
            replica: holder,
            user,
            pod,
            resumed,
            until: None,
            writes: None,
        };
        (note, Some(window))
    }
}

/// The lab's proxies on the real nodes, by process name.
fn node_proxies(state: &ClusterState) -> Vec<String> {
    let Some(nodes) = &state.real_nodes else {
        return vec![];
    };
    let names: Vec<String> = (0..nodes.count)
        .flat_map(|i| {
            let node = nodes.network.node(i);
            [
                crate::realnode::NodeProxy::KubeProxy.process_name(&node),
                crate::realnode::NodeProxy::Understudy(PathBuf::new()).process_name(&node),
            ]
        })
        .flatten()
        .collect();
    state
        .processes
        .iter()
        .filter(|p| names.contains(&p.name))
        .map(|p| p.name.clone())
        .collect()
}

/// Runs the chaos workload and faults against the running lab in `state_dir`
/// (its understudies replaced but not started: the run starts its own two
/// replicas of each), and returns what it found.
pub async fn run(state_dir: &Path, opts: ChaosOptions) -> Result<Report, String> {
    let state = ClusterState::load(state_dir)
        .map_err(|e| e.to_string())?
        .filter(|s| s.ready)
        .ok_or_else(|| format!("no running lab in {}", state_dir.display()))?;
    let client = wait::client_for(&state.kubeconfig)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "chaos run: seed {} (reproduce with --seed {})",
        opts.seed, opts.seed
    );
    let namespace = format!("chaos-{}", opts.seed);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| format!("creating namespace {namespace}: {e}"))?;
    wait::accepts_pods(&client, &namespace, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    churn::create_priority_classes(&client)
        .await
        .map_err(|e| format!("creating priority classes: {e}"))?;

    let mut state = state;
    let cast = match opts.backend {
        Backend::Processes => {
            replicas::grant_cluster_admin(&client)
                .await
                .map_err(|e| format!("binding cluster-admin to the replicas: {e}"))?;
            Cast::Processes(
                Replicas::start(
                    &mut state,
                    &opts.components_dir,
                    &UNDERSTUDIES,
                    PER_COMPONENT,
                    opts.lease,
                    opts.flavour,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        Backend::Chart => {
            println!(
                "understudies: the chart's pods in {} on the real nodes",
                crate::chart::NAMESPACE
            );
            if opts.switch_kcm {
                println!("kube-controller-manager switch skipped: {NO_KCM_SWITCH_WITH_THE_CHART}");
            }
            Cast::Pods(Box::new(
                PodReplicas::new(client.clone(), &UNDERSTUDIES, PER_COMPONENT)
                    .await
                    .map_err(|e| format!("listing the chart's pods: {e}"))?,
            ))
        }
    };
    // With real nodes, traffic: a Service of testservers on them, probed
    // from the first one's network namespace through its proxy.
    let traffic_service = match &state.real_nodes {
        Some(nodes) => Some((
            traffic::create_workload(&client, &namespace, nodes.count).await?,
            nodes.network.node(0),
        )),
        None => None,
    };
    let mut churn = Churn::new(client.clone(), &namespace, opts.seed);
    if let Some(nodes) = &state.real_nodes {
        churn = churn.with_traffic(opts.seed, 3 * nodes.count as i32);
    }
    let class = churn.class.clone();
    let started = Instant::now();
    let checker = Arc::new(Mutex::new(Checker {
        started,
        grace: opts.grace,
        history: BindingHistory::default(),
        first_seen: HashMap::new(),
        counted: HashSet::new(),
        violations: vec![],
        api_errors: 0,
        traffic_seen: traffic_service.as_ref().map(|_| vec![]),
    }));
    let mut run = Run {
        client: client.clone(),
        state,
        cast,
        opts: opts.clone(),
        started,
        namespace: namespace.clone(),
        class: class.clone(),
        checker: checker.clone(),
        churn_paused: Arc::new(AtomicBool::new(true)),
        kcm_since: None,
        kcm_wrote: None,
        prober_node: traffic_service.as_ref().map(|(_, node)| node.name()),
        blind: vec![],
    };
    run.log(match opts.backend {
        Backend::Processes => "replicas started; waiting for leaders",
        Backend::Chart => "the chart's pods listed; waiting for leaders",
    });
    let Some(up) = run.wait_converged(Instant::now()).await else {
        return Err("the understudies' replicas never took their leases".into());
    };
    run.log(format!("leaders elected after {:.1}s", up.as_secs_f64()));
    let prober = match &traffic_service {
        Some((service, node)) => {
            let to = traffic::address(service)?;
            let netns = PathBuf::from("/run/netns").join(node.netns());
            traffic::wait_answers(netns.clone(), to, Duration::from_secs(120)).await?;
            let proxy = node_proxies(&run.state).join(", ");
            run.log(format!(
                "traffic: {to} answers from {}'s network namespace (proxy: {proxy}); probing every {:.1}s",
                node.name(),
                traffic::INTERVAL.as_secs_f64()
            ));
            Some(Prober::start(netns, to, started))
        }
        None => None,
    };

    // The checker: every two seconds, all invariants on a fresh listing.
    let stop = Arc::new(AtomicBool::new(false));
    let checking = {
        let (client, ns, class, checker, stop) = (
            client.clone(),
            namespace.clone(),
            class.clone(),
            checker.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let at = started.elapsed();
                match snapshot(&client, &ns, &class).await {
                    Ok(s) => {
                        let until = started.elapsed();
                        checker
                            .lock()
                            .expect("checker")
                            .listed((at, until), &s, false)
                    }
                    Err(_) => checker.lock().expect("checker").api_errors += 1,
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    // The churn, paced at a few actions a second, paused while convergence is measured.
    let churning = {
        let (paused, stop) = (run.churn_paused.clone(), stop.clone());
        let mut churn = churn;
        let started = run.started;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if !paused.load(Ordering::Relaxed) {
                    let what = churn.step().await;
                    println!("[{:>7.1}s] churn: {what}", started.elapsed().as_secs_f64());
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            churn
        })
    };

    let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x5eed_fa17);
    let mut records: Vec<FaultRecord> = vec![];
    // At least one round, however short the duration: a run without faults
    // proves nothing.
    let mut rounds = 0;
    while rounds == 0 || started.elapsed() < opts.duration {
        rounds += 1;
        for fault in faults::round(
            &mut rng,
            &UNDERSTUDIES,
            opts.switch_kcm && opts.flavour == Flavour::Ours && opts.backend == Backend::Processes,
            run.state.real_nodes.is_some(),
            opts.backend == Backend::Chart,
            !run.node_proxies().is_empty(),
        ) {
            run.churn_paused.store(false, Ordering::Relaxed);
            let gap = Duration::from_millis(
                rng.u64(opts.gap.0.as_millis() as u64..=opts.gap.1.as_millis() as u64),
            );
            let gap_end = Instant::now() + gap;
            while Instant::now() < gap_end {
                run.supervise().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let at = started.elapsed();
            let wall = Timestamp::now();
            if let Some(pause) = records.last_mut().and_then(|r| r.pause.as_mut()) {
                pause.until = Some(wall);
            }
            run.log(format!("FAULT {fault}"));
            let injected = Instant::now();
            let (note, pause) = run.inject(fault, &mut rng).await;
            run.log(format!("  {note}"));
            run.churn_paused.store(true, Ordering::Relaxed);
            let converged_after = run.wait_converged(injected).await;
            match converged_after {
                Some(d) => run.log(format!(
                    "  converged {:.1}s after the fault",
                    d.as_secs_f64()
                )),
                None => run.log("  NOT converged within the timeout"),
            }
            records.push(FaultRecord {
                at,
                wall,
                fault,
                note,
                converged_after,
                pause,
                kcm_wrote: run.kcm_wrote.take(),
            });
        }
    }

    // The end: churn stops, everything must converge, every invariant hold.
    run.churn_paused.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let churn = churning.await.map_err(|e| e.to_string())?;
    let _ = checking.await;
    // The prober stops with the checker's listings: a request sent during
    // the final convergence would be judged by the last listing before it
    // and the final one, however long apart, so a change between them would
    // excuse every failure in that gap.
    let probed = prober.map(|p| (p.to, p.finish()));
    let end = Timestamp::now();
    if let Some(pause) = records.last_mut().and_then(|r| r.pause.as_mut()) {
        pause.until = Some(end);
    }
    let final_convergence = run.wait_converged(Instant::now()).await;
    let at = started.elapsed();
    match snapshot(&client, &namespace, &class).await {
        Ok(s) => {
            let until = started.elapsed();
            checker
                .lock()
                .expect("checker")
                .listed((at, until), &s, true)
        }
        Err(_) => checker.lock().expect("checker").api_errors += 1,
    }

    // The traffic: every failed request excused by the Service's own
    // changes, or it stopped routing.
    let traffic_figures = match (probed, &traffic_service) {
        (Some((to, finished)), Some((_, node))) => {
            let service = format!("Service/{namespace}/{}", traffic::WORKLOAD);
            let (probes, mut broken) = match finished {
                Ok(probes) if !probes.is_empty() => (probes, vec![]),
                // A prober that sent nothing proves nothing: that fails too.
                Ok(_) => (
                    vec![],
                    vec![routes::nothing_probed(&service, "no request sent")],
                ),
                Err(e) => (vec![], vec![routes::nothing_probed(&service, &e)]),
            };
            let mut c = checker.lock().expect("checker");
            let seen = c.traffic_seen.take().unwrap_or_default();
            broken.extend(routes::service_keeps_routing(
                &service,
                &probes,
                &seen,
                &run.blind,
                traffic::SETTLE,
            ));
            c.observe(broken, true);
            Some(TrafficFigures {
                service: format!("{namespace}/{}", traffic::WORKLOAD),
                address: to.to_string(),
                from: node.name(),
                proxy: node_proxies(&run.state).join(", "),
                started_wall: Timestamp::now() - started.elapsed(),
                requests: probes.len(),
                failures: probes.iter().filter(|p| p.error.is_some()).count(),
                outages: routes::judged_outages(&probes, &seen, &run.blind, traffic::SETTLE),
                strict: probes
                    .iter()
                    .filter(|p| routes::excuse(p.at, &seen, &run.blind, traffic::SETTLE).is_none())
                    .count(),
                listings: seen.len(),
            })
        }
        _ => None,
    };

    // The audit log: no pod bound twice; no write by a resumed leader.
    let audit = std::fs::read_to_string(run.state.logs_dir().join(crate::controlplane::AUDIT_LOG));
    let writes = audit
        .as_deref()
        .map(crate::audit::writes)
        .unwrap_or_default();
    checker
        .lock()
        .expect("checker")
        .observe(invariants::bound_at_most_once(&writes), true);
    if audit.is_ok() {
        for pause in records.iter_mut().filter_map(|r| r.pause.as_mut()) {
            let until = pause.until.unwrap_or(end);
            pause.writes = Some(
                writes
                    .iter()
                    .filter(|w| {
                        w.user == pause.user
                            && (pause.pod.is_none() || w.pod == pause.pod)
                            && w.resource != "leases"
                            && w.at >= pause.resumed
                            && w.at < until
                    })
                    .count(),
            );
        }
    }

    let (violations, checker_errors) = {
        let mut c = checker.lock().expect("checker");
        (std::mem::take(&mut c.violations), c.api_errors)
    };
    let scheduler_users = run.cast.users(Understudy::Scheduler);
    let by_scheduler = |w: &&crate::audit::Write| {
        scheduler_users.contains(w.user.as_str())
            && (200..300).contains(&w.code)
            && w.resource == "pods"
    };
    let bindings = writes
        .iter()
        .filter(by_scheduler)
        .filter(|w| w.verb == "create" && w.subresource.as_deref() == Some("binding"))
        .count();
    let preemption_victims = writes
        .iter()
        .filter(by_scheduler)
        .filter(|w| w.verb == "delete" && w.subresource.is_none())
        .count();
    let report = Report {
        seed: opts.seed,
        flavour: opts.flavour,
        backend: opts.backend,
        ran_for: started.elapsed(),
        converge_timeout: opts.converge_timeout,
        faults: records,
        violations,
        restarts: run.cast.restarts(),
        api_errors: checker_errors + churn.api_errors,
        churn: churn.actions.clone(),
        final_convergence,
        bindings,
        preemption_victims,
        traffic: traffic_figures,
    };
    cleanup(&mut run).await;
    Ok(report)
}

/// Stops the replicas and removes what the run made.
async fn cleanup(run: &mut Run) {
    run.cast.stop(&mut run.state);
    let client = &run.client;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&run.namespace, &DeleteParams::background())
        .await;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let _ = volumes
        .delete_collection(
            &DeleteParams::background(),
            &ListParams::default().labels(&format!("{CLASS_LABEL}={}", run.class)),
        )
        .await;
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let _ = bindings
        .delete(replicas::BINDING, &DeleteParams::default())
        .await;
    let classes: Api<PriorityClass> = Api::all(client.clone());
    for (name, _) in churn::PRIORITIES {
        let _ = classes.delete(name, &DeleteParams::default()).await;
    }
}
