//! Lease leader election (`coordination.k8s.io/v1`), with upstream's knobs:
//! lease duration, renew deadline and retry period. The lease-keeping itself is
//! kube-lease-manager's; this module maps upstream's settings onto it and turns
//! its state channel into "became leader" / "lost leadership" moments.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {0}")]
    Config(String),
    #[error("leader election on lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: LeaseManagerError,
    },
}

/// Upstream's `leaderElection` settings (component-base's LeaderElectionConfiguration).
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Whole seconds of lease validity and of the renewal margin before expiry.
    /// The margin is what is left of the lease after the renew deadline.
    fn lease_seconds(&self) -> Result<(u64, u64), LeaderError> {
        let duration = self.lease_duration.as_secs();
        let renew = self.renew_deadline.as_secs();
        if duration < 2 {
            return Err(LeaderError::Config(format!(
                "lease duration {:?} must be at least 2s",
                self.lease_duration
            )));
        }
        if renew == 0 || renew >= duration {
            return Err(LeaderError::Config(format!(
                "renew deadline {:?} must be positive and shorter than the lease duration {:?}",
                self.renew_deadline, self.lease_duration
            )));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(LeaderError::Config(format!(
                "retry period {:?} must be positive and shorter than the renew deadline {:?}",
                self.retry_period, self.renew_deadline
            )));
        }
        Ok((duration, duration - renew))
    }
}

/// `hostname_<random>` as upstream builds it, so two replicas on one host differ.
pub fn default_identity() -> String {
    format!("{}_{:016x}", hostname(), fastrand::u64(..))
}

/// This host's name, as Go's `os.Hostname` would give it in a pod.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// One contender for a lease.
pub struct LeaderElector {
    config: LeaderElectionConfig,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl LeaderElector {
    /// Starts contending; the lease is created when missing.
    pub async fn start(client: Client, config: LeaderElectionConfig) -> Result<Self, LeaderError> {
        let (duration, grace) = config.lease_seconds()?;
        let lease_err = |source| LeaderError::Lease {
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            source,
        };
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await
            .map_err(lease_err)?;
        let (state, task) = manager.watch().await;
        Ok(Self {
            config,
            state,
            task,
        })
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// Resolves once this contender holds the lease. Errs if the election stopped.
    pub async fn acquired(&mut self) -> Result<(), LeaderError> {
        self.state
            .wait_for(|leader| *leader)
            .await
            .map(|_| ())
            .map_err(|_| self.stopped())
    }

    /// Resolves when a held lease is lost (another holder, or renewal failed).
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Gives the lease up so a standby takes over without waiting for expiry.
    pub async fn release(self) -> Result<(), LeaderError> {
        let Self {
            config,
            state,
            task,
        } = self;
        drop(state);
        match task.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(LeaderError::Lease {
                namespace: config.namespace,
                name: config.name,
                source,
            }),
            Err(join) => Err(LeaderError::Config(format!("election task failed: {join}"))),
        }
    }

    fn stopped(&self) -> LeaderError {
        LeaderError::Config(format!(
            "leader election for {}/{} stopped",
            self.config.namespace, self.config.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_upstream_defaults_onto_lease_seconds() {
        let config = LeaderElectionConfig::new("kube-system", "understudy-scheduler");
        assert_eq!(config.lease_seconds().unwrap(), (15, 5));
    }

    #[test]
    fn rejects_inconsistent_timings() {
        let mut config = LeaderElectionConfig::new("ns", "lease");
        config.renew_deadline = Duration::from_secs(20);
        assert!(
            config
                .lease_seconds()
                .unwrap_err()
                .to_string()
                .contains("renew deadline")
        );
        let mut config = LeaderElectionConfig::new("ns", "lease");
        config.retry_period = Duration::from_secs(10);
        assert!(
            config
                .lease_seconds()
                .unwrap_err()
                .to_string()
                .contains("retry period")
        );
        let mut config = LeaderElectionConfig::new("ns", "lease");
        config.lease_duration = Duration::from_secs(1);
        assert!(config.lease_seconds().is_err());
    }

    #[test]
    fn identities_are_unique_per_contender() {
        assert_ne!(default_identity(), default_identity());
    }
}
