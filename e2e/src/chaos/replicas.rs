//! The understudies of a chaos run: two replicas of each, local processes
//! contending for one Lease, each with a client certificate of its own so
//! the apiserver's audit log tells their writes apart. A supervisor restarts
//! a replica that died, as a kubelet restarts a crashed container.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::audit::CHAOS_GROUP;
use crate::certs::Pki;
use crate::controlplane::{COMPONENT_NAMESPACE, free_port};
use crate::process::{self, ProcessRecord};
use crate::state::ClusterState;
use crate::understudies::Understudy;

/// Leader election timings short enough that a lost leader is replaced in
/// seconds, so a run sees many hand-overs (upstream's defaults: 15s/10s/2s).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    pub duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(6),
            renew_deadline: Duration::from_secs(4),
            retry_period: Duration::from_secs(1),
        }
    }
}

/// Whose components play the understudies' parts in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    /// understudy-scheduler and understudy-controllers.
    #[default]
    Ours,
    /// kube-scheduler (a profile named `understudy-scheduler`) and
    /// kube-controller-manager running only the controllers ours replace,
    /// for comparison.
    Upstream,
}

impl Flavour {
    /// The binary playing `understudy`'s part.
    pub fn binary(self, understudy: Understudy) -> &'static str {
        match (self, understudy) {
            (Self::Upstream, Understudy::Scheduler) => "kube-scheduler",
            (Self::Upstream, Understudy::Controllers) => "kube-controller-manager",
            (_, understudy) => understudy.binary(),
        }
    }
}

/// One replica: its process (while running) and how to start it again.
#[derive(Debug)]
pub struct Replica {
    pub understudy: Understudy,
    pub flavour: Flavour,
    /// `<binary>-a`, `<binary>-b`: the process name, Lease identity and user.
    pub name: String,
    pub user: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    pub record: ProcessRecord,
    pub restarts: u32,
    /// SIGSTOPped: alive but frozen; the supervisor leaves it be.
    pub paused: bool,
    /// Stopped on purpose while another component does its work (the
    /// kube-controller-manager switch); the supervisor leaves it stopped.
    pub held: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("certificate for {0}: {1}")]
    Cert(String, crate::certs::CertError),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
}

/// Every replica of the run.
#[derive(Debug)]
pub struct Replicas {
    pub list: Vec<Replica>,
}

impl Replica {
    /// The Lease identity of the replica's current process: a restarted
    /// process is a new candidate, as a restarted pod is (upstream's
    /// identity is the hostname and a random suffix).
    pub fn identity(&self) -> String {
        format!("{}-{}", self.name, self.restarts)
    }

    /// Whether a Lease's holder is this replica's current process.
    /// Upstream's components take no identity flag: theirs is the hostname
    /// and `_<uuid>`, so each runs in a UTS namespace named for it.
    pub fn holds(&self, holder: &str) -> bool {
        let identity = self.identity();
        match self.flavour {
            Flavour::Ours => holder == identity,
            Flavour::Upstream => holder
                .strip_prefix(&identity)
                .is_some_and(|rest| rest.starts_with('_')),
        }
    }

    fn spawn(&self) -> Result<ProcessRecord, crate::process::ProcessError> {
        match self.flavour {
            Flavour::Ours => {
                let mut args = self.args.clone();
                args.push(format!("--leader-elect-identity={}", self.identity()));
                process::spawn(&self.name, &self.program, &args, &self.log)
            }
            Flavour::Upstream => {
                // unshare and sh exec: the pid (and process group) stays the component's.
                let mut args: Vec<String> = ["--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\""]
                    .map(String::from)
                    .to_vec();
                args.push(self.identity());
                args.push(self.program.display().to_string());
                args.extend(self.args.iter().cloned());
                process::spawn(&self.name, Path::new(UNSHARE), &args, &self.log)
            }
        }
    }

    /// Running and not frozen.
    pub fn live(&self) -> bool {
        !self.paused && self.record.is_alive()
    }
}

impl Replicas {
    /// Starts `per_component` replicas of each understudy, recorded in the
    /// lab's state so `understudy-lab down` stops them whatever happens to us.
    pub fn start(
        state: &mut ClusterState,
        components_dir: &Path,
        understudies: &[Understudy],
        per_component: usize,
        lease: LeaseTiming,
        flavour: Flavour,
    ) -> Result<Self, ReplicaError> {
        let pki = Pki {
            dir: state.state_dir.join("pki"),
        };
        let kubeconfigs = state.state_dir.join("kubeconfigs");
        let logs = state.logs_dir();
        let mut list = vec![];
        for &understudy in understudies {
            for index in 0..per_component {
                let binary = flavour.binary(understudy);
                let name = format!("{binary}-{}", (b'a' + index as u8) as char);
                let user = format!("chaos:{name}");
                // One group (a certificate carries one O here): the chaos
                // group, which the audit policy logs and `grant_cluster_admin` binds.
                let (cert, key) = pki
                    .issue_client(&name, &user, &[CHAOS_GROUP])
                    .map_err(|e| ReplicaError::Cert(name.clone(), e))?;
                let kubeconfig = crate::kubeconfig::write_for(
                    &kubeconfigs.join(format!("{name}.yaml")),
                    &state.name,
                    &state.server,
                    &pki.ca_cert(),
                    &user,
                    (&cert, &key),
                )
                .map_err(|e| ReplicaError::Io(format!("kubeconfig of {name}: {e}")))?;
                let port = free_port().map_err(|e| ReplicaError::Io(e.to_string()))?;
                let (program, args) = match flavour {
                    Flavour::Ours => (
                        components_dir.join(binary),
                        our_args(understudy, &kubeconfig, port, lease),
                    ),
                    Flavour::Upstream => (
                        state.toolchain_dir.join(binary),
                        upstream_args(
                            understudy,
                            &name,
                            &kubeconfig,
                            port,
                            lease,
                            &state.state_dir,
                        )?,
                    ),
                };
                let log = logs.join(format!("{name}.log"));
                let mut replica = Replica {
                    understudy,
                    flavour,
                    name,
                    user,
                    program,
                    args,
                    log,
                    record: ProcessRecord::default(),
                    restarts: 0,
                    paused: false,
                    held: false,
                };
                replica.record = replica.spawn()?;
                state.processes.push(replica.record.clone());
                list.push(replica);
            }
        }
        state
            .save()
            .map_err(|e| ReplicaError::Io(format!("saving the state: {e}")))?;
        Ok(Self { list })
    }

    pub fn of(&self, understudy: Understudy) -> impl Iterator<Item = &Replica> {
        self.list.iter().filter(move |r| r.understudy == understudy)
    }

    pub fn by_name(&self, name: &str) -> Option<&Replica> {
        self.list.iter().find(|r| r.name == name)
    }

    /// The replica whose current process holds the Lease as `holder`.
    pub fn by_identity(&self, holder: &str) -> Option<&Replica> {
        self.list.iter().find(|r| r.holds(holder))
    }

    fn by_name_mut(&mut self, name: &str) -> Option<&mut Replica> {
        self.list.iter_mut().find(|r| r.name == name)
    }

    /// `kill -9` of a replica's process group; returns once it is gone.
    pub fn kill9(&mut self, name: &str) {
        if let Some(replica) = self.by_name_mut(name) {
            let _ = killpg(Pid::from_raw(replica.record.pid), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while replica.record.is_alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            replica.paused = false;
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT of a replica's process group.
    pub fn freeze(&mut self, name: &str, pause: bool) {
        if let Some(replica) = self.by_name_mut(name) {
            let signal = if pause {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            let _ = killpg(Pid::from_raw(replica.record.pid), signal);
            replica.paused = pause;
        }
    }

    /// Restarts every replica that is not running (and not frozen on
    /// purpose), updating the lab's state; returns the names restarted.
    pub fn supervise(&mut self, state: &mut ClusterState) -> Vec<String> {
        let mut restarted = vec![];
        for replica in &mut self.list {
            if replica.paused || replica.held || replica.record.is_alive() {
                continue;
            }
            replica.restarts += 1;
            match replica.spawn() {
                Ok(record) => {
                    for p in state
                        .processes
                        .iter_mut()
                        .filter(|p| p.name == replica.name)
                    {
                        *p = record.clone();
                    }
                    replica.record = record;
                    restarted.push(replica.name.clone());
                }
                Err(e) => tracing::warn!(replica = %replica.name, "restart failed: {e}"),
            }
        }
        if !restarted.is_empty() {
            let _ = state.save();
        }
        restarted
    }

    /// Every replica running (frozen ones count as not running; held ones
    /// are not expected to run).
    pub fn all_running(&self) -> bool {
        self.list
            .iter()
            .all(|r| r.held || (!r.paused && r.record.is_alive()))
    }

    /// Stops every replica of `understudy` (SIGTERM, as a Deployment scaled
    /// to zero would) and keeps them stopped until `release`.
    pub fn hold(&mut self, understudy: Understudy) {
        for replica in self.list.iter_mut().filter(|r| r.understudy == understudy) {
            replica.held = true;
            if replica.paused {
                let _ = killpg(Pid::from_raw(replica.record.pid), Signal::SIGCONT);
                replica.paused = false;
            }
            replica.record.stop(Duration::from_secs(10));
        }
    }

    /// Lets the supervisor start the replicas of `understudy` again.
    pub fn release(&mut self, understudy: Understudy) {
        for replica in self.list.iter_mut().filter(|r| r.understudy == understudy) {
            replica.held = false;
        }
    }

    /// Whether the replicas of `understudy` are held stopped.
    pub fn held(&self, understudy: Understudy) -> bool {
        self.of(understudy).all(|r| r.held)
    }

    pub fn restarts(&self) -> u32 {
        self.list.iter().map(|r| r.restarts).sum()
    }
}

const UNSHARE: &str = "/usr/bin/unshare";

fn lease_flags(lease: LeaseTiming) -> Vec<String> {
    let mut flags = vec![format!(
        "--leader-elect-resource-namespace={COMPONENT_NAMESPACE}"
    )];
    flags.extend(timing_flags(lease));
    flags
}

/// The flags of a lease's timings (the chart's pods take these as extra
/// arguments; their namespace is the release's).
pub fn timing_flags(lease: LeaseTiming) -> Vec<String> {
    vec![
        format!(
            "--leader-elect-lease-duration={}ms",
            lease.duration.as_millis()
        ),
        format!(
            "--leader-elect-renew-deadline={}ms",
            lease.renew_deadline.as_millis()
        ),
        format!(
            "--leader-elect-retry-period={}ms",
            lease.retry_period.as_millis()
        ),
    ]
}

fn our_args(
    understudy: Understudy,
    kubeconfig: &Path,
    port: u16,
    lease: LeaseTiming,
) -> Vec<String> {
    let mut args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--port={port}"),
    ];
    args.extend(lease_flags(lease));
    if understudy == Understudy::Scheduler {
        // The extender API is not under test here: no port to share.
        args.push("--extender-port=0".into());
    }
    args
}

/// kube-scheduler's configuration for a run: one profile answering to our
/// scheduler's name, so the churn's pods go to it unchanged.
pub fn scheduler_config(kubeconfig: &Path) -> String {
    format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\n\
         kind: KubeSchedulerConfiguration\n\
         clientConnection:\n  kubeconfig: {}\n\
         profiles:\n- schedulerName: {}\n",
        kubeconfig.display(),
        Understudy::Scheduler.binary()
    )
}

/// Upstream's components in our components' places: the same Lease (name,
/// namespace, timings) and the replica's own credentials. kube-controller-manager
/// runs only the controllers understudy-controllers replaces, with its own
/// client for all of them (not one service account each), so the audit log
/// names the replica.
fn upstream_args(
    understudy: Understudy,
    name: &str,
    kubeconfig: &Path,
    port: u16,
    lease: LeaseTiming,
    state_dir: &Path,
) -> Result<Vec<String>, ReplicaError> {
    let dir = state_dir.join("chaos").join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ReplicaError::Io(format!("{}: {e}", dir.display())))?;
    let config_path = kubeconfig;
    let kubeconfig = kubeconfig.display();
    let mut args = vec![
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.display()),
        "--leader-elect=true".into(),
        format!("--leader-elect-resource-name={}", understudy.binary()),
        "--v=0".into(),
    ];
    args.extend(lease_flags(lease));
    match understudy {
        Understudy::Scheduler => {
            let config = dir.join("config.yaml");
            std::fs::write(&config, scheduler_config(config_path))
                .map_err(|e| ReplicaError::Io(format!("{}: {e}", config.display())))?;
            args.push(format!("--config={}", config.display()));
        }
        Understudy::Controllers | Understudy::Proxy => {
            args.push(format!("--kubeconfig={kubeconfig}"));
            args.push(format!(
                "--controllers={}",
                Understudy::Controllers.replaced_controllers().join(",")
            ));
            args.push("--kube-api-qps=100".into());
            args.push("--kube-api-burst=200".into());
        }
    }
    Ok(args)
}

/// Name of the ClusterRoleBinding giving the replicas' group cluster-admin,
/// as the lab's own understudies run with the admin's credentials.
pub const BINDING: &str = "understudy-chaos";

/// Binds cluster-admin to the replicas' group (kept if already there).
pub async fn grant_cluster_admin(client: &Client) -> Result<(), kube::Error> {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": BINDING},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": CHAOS_GROUP}],
    }))
    .expect("cluster role binding");
    match api.create(&Default::default(), &binding).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The holder of an understudy's Lease, if any holds it now.
pub async fn leader(
    client: &Client,
    understudy: Understudy,
) -> Result<Option<String>, kube::Error> {
    Ok(lease(client, understudy).await?.map(|(holder, _)| holder))
}

/// The holder of an understudy's Lease and its last renewal.
pub async fn lease(
    client: &Client,
    understudy: Understudy,
) -> Result<Option<(String, Option<k8s_openapi::jiff::Timestamp>)>, kube::Error> {
    lease_in(client, COMPONENT_NAMESPACE, understudy).await
}

/// The same, for a Lease in `namespace` (the chart's release namespace).
pub async fn lease_in(
    client: &Client,
    namespace: &str,
    understudy: Understudy,
) -> Result<Option<(String, Option<k8s_openapi::jiff::Timestamp>)>, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    Ok(leases
        .get_opt(understudy.binary())
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| {
            let holder = s.holder_identity.filter(|h| !h.is_empty())?;
            Some((holder, s.renew_time.map(|t| t.0)))
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(flavour: Flavour, restarts: u32) -> Replica {
        Replica {
            understudy: Understudy::Scheduler,
            flavour,
            name: "kube-scheduler-a".into(),
            user: "chaos:kube-scheduler-a".into(),
            program: PathBuf::new(),
            args: vec![],
            log: PathBuf::new(),
            record: ProcessRecord::default(),
            restarts,
            paused: false,
            held: false,
        }
    }

    #[test]
    fn an_upstream_holder_is_the_hostname_and_a_uuid() {
        let r = replica(Flavour::Upstream, 2);
        assert!(r.holds("kube-scheduler-a-2_6f1c0e1e-3d0b-4c5e-9a34-1b2b3c4d5e6f"));
        assert!(
            !r.holds("kube-scheduler-a-1_6f1c0e1e"),
            "an earlier process"
        );
        assert!(
            !r.holds("kube-scheduler-a-21_6f1c0e1e"),
            "another restart count"
        );
        assert!(
            !r.holds("kube-scheduler-a-2"),
            "no uuid: not upstream's form"
        );
    }

    #[test]
    fn ours_hold_by_exact_identity() {
        let r = replica(Flavour::Ours, 0);
        assert!(r.holds("kube-scheduler-a-0"));
        assert!(!r.holds("kube-scheduler-a-0_6f1c0e1e"));
    }

    #[test]
    fn upstream_plays_the_understudies_parts() {
        assert_eq!(
            Flavour::Upstream.binary(Understudy::Scheduler),
            "kube-scheduler"
        );
        assert_eq!(
            Flavour::Upstream.binary(Understudy::Controllers),
            "kube-controller-manager"
        );
        assert_eq!(
            Flavour::Ours.binary(Understudy::Controllers),
            "understudy-controllers"
        );
        let config = scheduler_config(Path::new("/k/s.yaml"));
        assert!(config.contains("kubeconfig: /k/s.yaml\n"), "{config}");
        assert!(
            config.contains("- schedulerName: understudy-scheduler\n"),
            "{config}"
        );
    }
}
