//! Who plays the understudies' parts in a chaos run: local processes the
//! run starts and supervises (the default), or the chart's pods on the real
//! nodes, restarted by their kubelet. The run's faults go through here, so
//! they read the same whichever it is.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;

use super::pods::PodReplicas;
use super::replicas::{self, Replicas};
use crate::state::ClusterState;
use crate::understudies::Understudy;

pub enum Cast {
    Processes(Replicas),
    Pods(Box<PodReplicas>),
}

impl Cast {
    /// The namespace of the understudies' Leases.
    fn lease_namespace(&self) -> &'static str {
        match self {
            Self::Processes(_) => crate::controlplane::COMPONENT_NAMESPACE,
            Self::Pods(_) => crate::chart::NAMESPACE,
        }
    }

    /// The holder of an understudy's Lease and its last renewal.
    pub async fn lease(
        &self,
        client: &Client,
        understudy: Understudy,
    ) -> Result<Option<(String, Option<Timestamp>)>, kube::Error> {
        replicas::lease_in(client, self.lease_namespace(), understudy).await
    }

    pub async fn leader(
        &self,
        client: &Client,
        understudy: Understudy,
    ) -> Result<Option<String>, kube::Error> {
        Ok(self.lease(client, understudy).await?.map(|(h, _)| h))
    }

    /// Processes: restarts what died. Pods: lists them again (their kubelet
    /// restarts what died). Returns what happened, for the log.
    pub async fn supervise(&mut self, state: &mut ClusterState) -> Vec<String> {
        match self {
            Self::Processes(r) => r
                .supervise(state)
                .into_iter()
                .map(|name| format!("restarted {name}"))
                .collect(),
            // Unlisted while the apiserver is down: the checker counts those errors.
            Self::Pods(p) => p.refresh().await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "listing the understudies' pods");
                vec![]
            }),
        }
    }

    /// The replicas' names (processes or pods) of an understudy.
    pub fn names(&self, understudy: Understudy) -> Vec<String> {
        match self {
            Self::Processes(r) => r.of(understudy).map(|r| r.name.clone()).collect(),
            Self::Pods(p) => p.of(understudy).map(|r| r.name.clone()).collect(),
        }
    }

    /// The replica a Lease holder is, with the user its writes are audited as
    /// and, for a pod, its name (two pods share one ServiceAccount user).
    pub fn holder(&self, holder: &str) -> Option<(String, String, Option<String>)> {
        match self {
            Self::Processes(r) => r
                .by_identity(holder)
                .map(|r| (r.name.clone(), r.user.clone(), None)),
            Self::Pods(p) => p
                .by_identity(holder)
                .map(|r| (r.name.clone(), r.user.clone(), Some(r.name.clone()))),
        }
    }

    /// Whether `holder` is a live replica's current process that renewed
    /// at or after `since`.
    pub fn holder_live(&self, holder: &str, renewed: Option<Timestamp>, since: Timestamp) -> bool {
        let Some(renewed) = renewed.filter(|t| *t >= since) else {
            return false;
        };
        match self {
            Self::Processes(r) => r.by_identity(holder).is_some_and(|r| r.live()),
            Self::Pods(p) => p.holder_live(holder, renewed),
        }
    }

    /// `kill -9` of one replica; says what was killed.
    pub fn kill9(&mut self, name: &str) -> Result<String, String> {
        match self {
            Self::Processes(r) => {
                r.kill9(name);
                Ok(name.to_string())
            }
            Self::Pods(p) => p
                .kill9(name)
                .map(|n| format!("{name}'s container ({n} process{})", plural(n))),
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT of one replica.
    pub fn freeze(&mut self, name: &str, pause: bool) -> Result<(), String> {
        match self {
            Self::Processes(r) => {
                r.freeze(name, pause);
                Ok(())
            }
            Self::Pods(p) => p.freeze(name, pause).map(drop),
        }
    }

    pub fn all_running(&self) -> bool {
        match self {
            Self::Processes(r) => r.all_running(),
            Self::Pods(p) => p.all_running(),
        }
    }

    /// Whether an understudy's replicas are held stopped (the
    /// kube-controller-manager switch, processes only).
    pub fn held(&self, understudy: Understudy) -> bool {
        match self {
            Self::Processes(r) => r.held(understudy),
            Self::Pods(_) => false,
        }
    }

    pub fn hold(&mut self, understudy: Understudy) {
        if let Self::Processes(r) = self {
            r.hold(understudy);
        }
    }

    pub fn release(&mut self, understudy: Understudy) {
        if let Self::Processes(r) = self {
            r.release(understudy);
        }
    }

    pub fn restarts(&self) -> u32 {
        match self {
            Self::Processes(r) => r.restarts(),
            Self::Pods(p) => p.restarts(),
        }
    }

    /// The users the replicas of `understudy` write as.
    pub fn users(&self, understudy: Understudy) -> HashSet<String> {
        match self {
            Self::Processes(r) => r.of(understudy).map(|r| r.user.clone()).collect(),
            Self::Pods(p) => p.users(understudy),
        }
    }

    /// The end of a run: processes resumed and stopped, and dropped from
    /// the lab's state; pods resumed (they go with the lab).
    pub fn stop(&mut self, state: &mut ClusterState) {
        match self {
            Self::Processes(r) => {
                for replica in &r.list {
                    if replica.paused {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(replica.record.pid),
                            nix::sys::signal::Signal::SIGCONT,
                        );
                    }
                    replica.record.stop(Duration::from_secs(10));
                }
                let names: HashSet<&str> = r.list.iter().map(|r| r.name.as_str()).collect();
                state.processes.retain(|p| !names.contains(p.name.as_str()));
                let _ = state.save();
            }
            Self::Pods(p) => p.thaw_all(),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "es" }
}
