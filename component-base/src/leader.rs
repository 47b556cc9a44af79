//! Lease leader election (`coordination.k8s.io/v1`) with client-go's semantics, so that
//! kube-scheduler, kube-controller-manager and our replicas can share one Lease and
//! tools reading it see the same fields written the same way.
//!
//! Why our own loop rather than the kube-lease-manager crate (0.13.1, the newest): its
//! standby sleeps until the expiry it last read instead of polling, so a lease released on
//! graceful shutdown is noticed only when the old expiry passes — measured 11–14 s for the
//! chart's scheduler pods, against client-go's standby, which re-reads the Lease every
//! retry period and takes an empty holder at once. It has no setting for that; it also
//! judges expiry by the writer's `renewTime` against the local wall clock (client-go
//! trusts only local observation times), releases by clearing the holder rather than
//! writing `""` with `leaseDurationSeconds: 1`, and does not guard writes with the
//! resourceVersion it read.
//!
//! The rules, as client-go's `leaderelection` and `resourcelock.LeaseLock`:
//! - every attempt reads the Lease (the leader first tries a write against the version it
//!   last wrote) and takes it when it is missing, held by nobody, held by us, or has not
//!   changed for `leaseDurationSeconds` of *our* clock since we first saw it as it is;
//! - every write is a whole-spec update carrying the resourceVersion read, so a 409 means
//!   someone else wrote first and we try again next period;
//! - a standby tries every retry period stretched by up to `JITTER_FACTOR`, the leader
//!   renews every retry period and gives up when a round of renewals does not succeed
//!   within the renew deadline;
//! - releasing writes holder `""`, duration 1 s and fresh times, keeping the transitions.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::fence::WriteFence;

/// client-go's `leaderelection.JitterFactor`: a standby's wait between attempts is
/// uniformly drawn from `[retry, retry × (1 + JITTER_FACTOR)]`, so standbys spread out.
const JITTER_FACTOR: f64 = 1.2;

/// What upstream writes as `leaseDurationSeconds` on release, for clients older than
/// Kubernetes 1.14 that do not treat an empty holder as free.
const RELEASED_LEASE_SECONDS: i32 = 1;

/// Releasing retries a conflict with a fresh read this many times: a conflict can be our
/// own renewal whose response was lost when the election loop was stopped mid-request.
const RELEASE_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {0}")]
    Config(String),
    #[error("leader election on lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: kube::Error,
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

    /// client-go's `NewLeaderElector` checks, plus a whole second of lease: the Lease
    /// stores whole seconds, and 0 would make every holder look expired at once.
    /// Returns the `leaseDurationSeconds` to write.
    fn lease_seconds(&self) -> Result<i32, LeaderError> {
        if self.identity.is_empty() {
            return Err(LeaderError::Config("identity must not be empty".into()));
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(LeaderError::Config(format!(
                "lease duration {:?} must be at least 1s",
                self.lease_duration
            )));
        }
        if self.renew_deadline.is_zero() || self.renew_deadline >= self.lease_duration {
            return Err(LeaderError::Config(format!(
                "renew deadline {:?} must be positive and shorter than the lease duration {:?}",
                self.renew_deadline, self.lease_duration
            )));
        }
        // As upstream: a deadline within one (jittered) retry period would leave a leader
        // whose renewal failed once no second attempt before giving up.
        if self.retry_period.is_zero()
            || self.renew_deadline <= self.retry_period.mul_f64(JITTER_FACTOR)
        {
            return Err(LeaderError::Config(format!(
                "retry period {:?} must be positive and, times {JITTER_FACTOR}, shorter than the renew deadline {:?}",
                self.retry_period, self.renew_deadline
            )));
        }
        i32::try_from(self.lease_duration.as_secs()).map_err(|_| {
            LeaderError::Config(format!(
                "lease duration {:?} is too long",
                self.lease_duration
            ))
        })
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
    task: JoinHandle<Result<(), kube::Error>>,
    /// Dropping the elector stops the loop, which then releases a lease it still holds,
    /// as client-go's `ReleaseOnCancel`.
    stop: DropGuard,
}

impl LeaderElector {
    /// Starts contending; the lease is created when missing. Errors talking to the
    /// apiserver are logged and retried every period, as upstream, not returned.
    pub async fn start(client: Client, config: LeaderElectionConfig) -> Result<Self, LeaderError> {
        Self::start_fenced(client, config, WriteFence::default()).await
    }

    /// [`Self::start`], opening `fence` while the lease is known to be held (see
    /// [`crate::fence`]): the work's clients check it, the elector's `client` must not.
    pub async fn start_fenced(
        client: Client,
        config: LeaderElectionConfig,
        fence: WriteFence,
    ) -> Result<Self, LeaderError> {
        let lease_seconds = config.lease_seconds()?;
        let (sender, state) = watch::channel(false);
        let stop = CancellationToken::new();
        let election = Election {
            api: Api::namespaced(client, &config.namespace),
            config: config.clone(),
            lease_seconds,
            lease: None,
            observed: None,
            state: sender,
            fence,
        };
        let task = tokio::spawn(election.run(stop.clone()));
        Ok(Self {
            config,
            state,
            task,
            stop: stop.drop_guard(),
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

    /// Stops contending and, if the lease is still ours, marks it free so a standby takes
    /// over at its next attempt instead of waiting for expiry.
    pub async fn release(self) -> Result<(), LeaderError> {
        let Self {
            config,
            state,
            task,
            stop,
        } = self;
        drop(state);
        stop.disarm().cancel();
        match task.await {
            Ok(Ok(())) => Ok(()),
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

/// client-go's `LeaderElectionRecord`: the part of a Lease spec the election reads and
/// writes. A missing holder reads as `""`, i.e. free, as upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Record {
    holder: String,
    lease_seconds: i32,
    acquire_time: Option<MicroTime>,
    renew_time: Option<MicroTime>,
    transitions: i32,
}

impl Record {
    fn from_spec(spec: Option<&LeaseSpec>) -> Self {
        let Some(spec) = spec else {
            return Self::default();
        };
        Self {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            lease_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time.clone(),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }

    /// The whole spec, as `LeaderElectionRecordToLeaseSpec`: fields it does not know
    /// (strategy, preferredHolder) are cleared, as an upstream holder's update does.
    fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.lease_seconds),
            acquire_time: self.acquire_time.clone(),
            renew_time: self.renew_time.clone(),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }
}

/// A record and when this process first saw it as it is. Expiry is measured from that
/// local moment, never from the writer's `renewTime`, so clock skew between replicas
/// does not matter (client-go's `observedTime`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    record: Record,
    at: Instant,
}

impl Observed {
    fn expired(&self, now: Instant) -> bool {
        let lease = Duration::from_secs(u64::try_from(self.record.lease_seconds).unwrap_or(0));
        self.at + lease <= now
    }
}

/// The observation time moves only when the record changes: a holder that stopped
/// renewing leaves the same record behind, which then expires by our clock.
fn observe(previous: Option<&Observed>, record: Record, now: Instant) -> Observed {
    match previous {
        Some(previous) if previous.record == record => previous.clone(),
        _ => Observed { record, at: now },
    }
}

/// What one attempt should do with the Lease it just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// No Lease: create it holding it.
    Create,
    /// Free or expired: take it, one more transition.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else's and still valid.
    Wait,
}

/// client-go's `tryAcquireOrRenew` decision. `current` is the Lease as just read (`None`:
/// not found), with when this process first saw it that way.
fn decide(current: Option<&Observed>, now: Instant, identity: &str) -> Decision {
    let Some(current) = current else {
        return Decision::Create;
    };
    if current.record.holder == identity {
        Decision::Renew
    } else if !current.record.holder.is_empty() && !current.expired(now) {
        Decision::Wait
    } else {
        Decision::Acquire
    }
}

/// The record to write for a decision; `None` for `Wait`. A holder keeps its
/// `acquireTime` and the transition count; a new holder gets both afresh.
fn claim(
    decision: Decision,
    current: Option<&Record>,
    identity: &str,
    lease_seconds: i32,
    now: &MicroTime,
) -> Option<Record> {
    let mut record = Record {
        holder: identity.into(),
        lease_seconds,
        acquire_time: Some(now.clone()),
        renew_time: Some(now.clone()),
        transitions: 0,
    };
    match (decision, current) {
        (Decision::Wait, _) => return None,
        (Decision::Create, _) | (_, None) => {}
        (Decision::Acquire, Some(current)) => record.transitions = current.transitions + 1,
        (Decision::Renew, Some(current)) => {
            record.acquire_time = current.acquire_time.clone();
            record.transitions = current.transitions;
        }
    }
    Some(record)
}

/// What upstream's `release` writes over a lease it holds.
fn released(current: &Record, now: &MicroTime) -> Record {
    Record {
        holder: String::new(),
        lease_seconds: RELEASED_LEASE_SECONDS,
        acquire_time: Some(now.clone()),
        renew_time: Some(now.clone()),
        transitions: current.transitions,
    }
}

fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(fastrand::f64() * JITTER_FACTOR)
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict() || status.is_already_exists())
}

/// The outcome of one `try_acquire_or_renew`.
enum Attempt {
    Holding,
    HeldBy(String),
    Failed,
}

/// How the election loop ended.
enum End {
    Stopped,
    Lost,
}

/// The loop's own state; it lives in the spawned task.
struct Election {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    lease_seconds: i32,
    /// The Lease as last read or written: its resourceVersion guards the next update.
    lease: Option<Lease>,
    observed: Option<Observed>,
    state: watch::Sender<bool>,
    /// Open until the last successful attempt's start plus the renew deadline.
    fence: WriteFence,
}

impl Election {
    async fn run(mut self, stop: CancellationToken) -> Result<(), kube::Error> {
        let end = self.contend(&stop).await;
        self.fence.close();
        match end {
            End::Stopped => {
                let result = self.release().await;
                self.state.send_replace(false);
                result
            }
            // Not released: after a failed renewal our work may still be winding down,
            // so the lease is left to expire rather than handed over at once.
            End::Lost => Ok(()),
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn holding(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| o.record.holder == self.config.identity)
    }

    /// Client-go's `acquire` then `renew`. Returns when stopped or when leadership is lost.
    async fn contend(&mut self, stop: &CancellationToken) -> End {
        let lease = self.lease_name();
        let identity = self.config.identity.clone();
        let retry = self.config.retry_period;
        loop {
            // A request stuck on a dead connection must not stall the standby's polling.
            let attempt = tokio::time::timeout(self.config.renew_deadline, self.attempt());
            let acquired = tokio::select! {
                _ = stop.cancelled() => return End::Stopped,
                attempt = attempt => matches!(attempt, Ok(Attempt::Holding)),
            };
            if acquired {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return End::Stopped,
                _ = tokio::time::sleep(jittered(retry)) => {}
            }
        }
        let transitions = self.observed.as_ref().map_or(0, |o| o.record.transitions);
        // The component logs client-go's "successfully acquired lease" at info.
        tracing::debug!(%lease, %identity, transitions, "became leader");
        self.state.send_replace(true);

        loop {
            tokio::select! {
                _ = stop.cancelled() => return End::Stopped,
                _ = tokio::time::sleep(retry) => {}
            }
            let deadline = Instant::now() + self.config.renew_deadline;
            loop {
                let attempt = tokio::time::timeout_at(deadline, self.attempt());
                let attempt = tokio::select! {
                    _ = stop.cancelled() => return End::Stopped,
                    attempt = attempt => attempt,
                };
                match attempt {
                    Ok(Attempt::Holding) => {
                        tracing::debug!(%lease, %identity, "renewed lease");
                        break;
                    }
                    // Upstream would keep retrying until the deadline, but a valid lease of
                    // another holder cannot become ours before it expires, which is after
                    // the deadline: stop acting as leader now rather than alongside it.
                    Ok(Attempt::HeldBy(holder)) => {
                        self.fence.close();
                        tracing::info!(%lease, %identity, %holder, "lost lease to another holder");
                        self.state.send_replace(false);
                        return End::Lost;
                    }
                    Ok(Attempt::Failed) => {}
                    Err(_) => return self.lose_at_deadline(),
                }
                tokio::select! {
                    _ = stop.cancelled() => return End::Stopped,
                    _ = tokio::time::sleep_until(deadline.min(Instant::now() + retry)) => {}
                }
                if Instant::now() >= deadline {
                    return self.lose_at_deadline();
                }
            }
        }
    }

    /// One attempt; a success opens the write fence until the attempt's start
    /// plus the renew deadline: the lease was ours from before the request went
    /// out, and no one else may take it for a lease duration after that.
    async fn attempt(&mut self) -> Attempt {
        let started = Instant::now();
        let attempt = self.try_acquire_or_renew().await;
        if matches!(attempt, Attempt::Holding) {
            self.fence.open_until(started + self.config.renew_deadline);
        }
        attempt
    }

    fn lose_at_deadline(&self) -> End {
        self.fence.close();
        tracing::info!(
            lease = %self.lease_name(),
            identity = %self.config.identity,
            renew_deadline = ?self.config.renew_deadline,
            "lost lease: could not renew it within the renew deadline"
        );
        self.state.send_replace(false);
        End::Lost
    }

    /// One client-go `tryAcquireOrRenew`. Failures are logged here and retried by the loop.
    async fn try_acquire_or_renew(&mut self) -> Attempt {
        let lease_name = self.lease_name();
        let name = self.config.name.clone();
        let identity = self.config.identity.clone();
        let now = MicroTime(Timestamp::now());

        // A leader first writes over the version it last wrote, saving a read per renewal;
        // a conflict there only means falling back to reading.
        if let (Some(observed), Some(lease)) = (&self.observed, &self.lease)
            && observed.record.holder == identity
            && !observed.expired(Instant::now())
        {
            let record = claim(
                Decision::Renew,
                Some(&observed.record),
                &identity,
                self.lease_seconds,
                &now,
            );
            let mut lease = lease.clone();
            lease.spec = record.map(|r| r.to_spec());
            match self
                .api
                .replace(&name, &PostParams::default(), &lease)
                .await
            {
                Ok(written) => {
                    self.remember(written);
                    return Attempt::Holding;
                }
                Err(error) => {
                    tracing::debug!(lease = %lease_name, %error, "optimistic renewal failed, reading the lease");
                }
            }
        }

        let current = match self.api.get_opt(&name).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(lease = %lease_name, %error, "could not read the lease");
                return Attempt::Failed;
            }
        };
        let observed_now = Instant::now();
        let Some(mut lease) = current else {
            let Some(record) = claim(Decision::Create, None, &identity, self.lease_seconds, &now)
            else {
                return Attempt::Failed;
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(record.to_spec()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.remember(created);
                    Attempt::Holding
                }
                Err(error) if is_conflict(&error) => {
                    tracing::debug!(lease = %lease_name, "another contender created the lease first");
                    Attempt::Failed
                }
                Err(error) => {
                    tracing::warn!(lease = %lease_name, %error, "could not create the lease");
                    Attempt::Failed
                }
            };
        };

        let observed = observe(
            self.observed.as_ref(),
            Record::from_spec(lease.spec.as_ref()),
            observed_now,
        );
        let decision = decide(Some(&observed), Instant::now(), &identity);
        let record = claim(
            decision,
            Some(&observed.record),
            &identity,
            self.lease_seconds,
            &now,
        );
        let holder = observed.record.holder.clone();
        self.observed = Some(observed);
        let Some(record) = record else {
            tracing::debug!(lease = %lease_name, %holder, "lease is held by another and has not expired");
            self.lease = Some(lease);
            return Attempt::HeldBy(holder);
        };
        lease.spec = Some(record.to_spec());
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                if decision == Decision::Acquire {
                    tracing::debug!(lease = %lease_name, previous = %holder, "took over the lease");
                }
                self.remember(written);
                Attempt::Holding
            }
            Err(error) if is_conflict(&error) => {
                tracing::debug!(lease = %lease_name, "lease changed since it was read; retrying later");
                Attempt::Failed
            }
            Err(error) => {
                tracing::warn!(lease = %lease_name, %error, "could not update the lease");
                Attempt::Failed
            }
        }
    }

    /// Our own write is what we observe next, as of now.
    fn remember(&mut self, written: Lease) {
        self.observed = Some(Observed {
            record: Record::from_spec(written.spec.as_ref()),
            at: Instant::now(),
        });
        self.lease = Some(written);
    }

    /// Client-go's `release`: only a lease we hold, and only over the version we know,
    /// so a lease someone else took in the meantime is left alone.
    async fn release(&mut self) -> Result<(), kube::Error> {
        if !self.holding() {
            return Ok(());
        }
        let Some(mut lease) = self.lease.clone() else {
            return Ok(());
        };
        let lease_name = self.lease_name();
        let mut attempt = 1;
        loop {
            let now = MicroTime(Timestamp::now());
            let record = released(&Record::from_spec(lease.spec.as_ref()), &now);
            lease.spec = Some(record.to_spec());
            let error = match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(written) => {
                    tracing::info!(lease = %lease_name, identity = %self.config.identity, "released lease");
                    self.remember(written);
                    return Ok(());
                }
                Err(error) => error,
            };
            if !is_conflict(&error) || attempt == RELEASE_ATTEMPTS {
                return Err(error);
            }
            attempt += 1;
            match self.api.get_opt(&self.config.name).await? {
                Some(current)
                    if Record::from_spec(current.spec.as_ref()).holder == self.config.identity =>
                {
                    lease = current;
                }
                _ => {
                    tracing::info!(lease = %lease_name, "lease no longer ours; nothing to release");
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";

    fn at(secs: i64) -> MicroTime {
        MicroTime(Timestamp::from_second(1_800_000_000 + secs).unwrap())
    }

    fn record(holder: &str, lease_seconds: i32, transitions: i32) -> Record {
        Record {
            holder: holder.into(),
            lease_seconds,
            acquire_time: Some(at(0)),
            renew_time: Some(at(5)),
            transitions,
        }
    }

    #[test]
    fn accepts_upstream_defaults() {
        let config = LeaderElectionConfig::new("kube-system", "understudy-scheduler");
        assert_eq!(config.lease_seconds().unwrap(), 15);
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
        // Upstream: renew deadline must exceed retry period × 1.2.
        let mut config = LeaderElectionConfig::new("ns", "lease");
        config.renew_deadline = Duration::from_millis(2400);
        assert!(
            config
                .lease_seconds()
                .unwrap_err()
                .to_string()
                .contains("retry period")
        );
        config.renew_deadline = Duration::from_millis(2401);
        assert!(config.lease_seconds().is_ok());
        let mut config = LeaderElectionConfig::new("ns", "lease");
        config.lease_duration = Duration::from_millis(900);
        config.renew_deadline = Duration::from_millis(800);
        config.retry_period = Duration::from_millis(100);
        assert!(config.lease_seconds().is_err());
        let mut config = LeaderElectionConfig::new("ns", "lease");
        config.identity.clear();
        assert!(config.lease_seconds().is_err());
    }

    #[test]
    fn identities_are_unique_per_contender() {
        assert_ne!(default_identity(), default_identity());
    }

    #[test]
    fn decides_as_client_go() {
        let seen = Instant::now();
        let observed = |holder: &str, lease_seconds: i32| Observed {
            record: record(holder, lease_seconds, 3),
            at: seen,
        };
        let secs = |s: u64| seen + Duration::from_secs(s);
        let cases: &[(&str, Option<Observed>, Instant, Decision)] = &[
            ("missing", None, seen, Decision::Create),
            (
                "empty holder",
                Some(observed("", 15)),
                seen,
                Decision::Acquire,
            ),
            // What a releasing client-go or Understudy leader leaves behind: free at once,
            // the 1 s duration only matters to pre-1.14 clients.
            (
                "released with duration 1",
                Some(observed("", 1)),
                seen,
                Decision::Acquire,
            ),
            (
                "held by other, fresh",
                Some(observed("other", 15)),
                secs(14),
                Decision::Wait,
            ),
            (
                "held by other, expired",
                Some(observed("other", 15)),
                secs(15),
                Decision::Acquire,
            ),
            ("held by me", Some(observed(ME, 15)), seen, Decision::Renew),
            // Ours even when our last renewal is long past: renew, keeping the acquire time.
            (
                "held by me, expired",
                Some(observed(ME, 15)),
                secs(60),
                Decision::Renew,
            ),
            (
                "held by other, zero duration",
                Some(observed("other", 0)),
                seen,
                Decision::Acquire,
            ),
        ];
        for (name, current, now, want) in cases {
            assert_eq!(decide(current.as_ref(), *now, ME), *want, "{name}");
        }
    }

    #[test]
    fn expiry_counts_from_local_observation_not_the_writers_clock() {
        let start = Instant::now();
        // renewTime says long ago (a skewed or stopped writer): seen now, valid for 15 s.
        let mut stale = record("other", 15, 0);
        stale.renew_time = Some(at(-3600));
        let first = observe(None, stale.clone(), start);
        assert_eq!(decide(Some(&first), start, ME), Decision::Wait);
        // Read again, unchanged: the observation keeps its first time and expires.
        let later = start + Duration::from_secs(15);
        let again = observe(Some(&first), stale.clone(), later);
        assert_eq!(again.at, start);
        assert_eq!(decide(Some(&again), later, ME), Decision::Acquire);
        // A renewal changes the record: the clock starts over.
        let mut renewed = stale;
        renewed.renew_time = Some(at(1));
        let fresh = observe(Some(&again), renewed, later);
        assert_eq!(fresh.at, later);
        assert_eq!(decide(Some(&fresh), later, ME), Decision::Wait);
    }

    #[test]
    fn writes_the_fields_client_go_writes() {
        let now = at(100);
        let created = claim(Decision::Create, None, ME, 15, &now).unwrap();
        assert_eq!(
            created,
            Record {
                holder: ME.into(),
                lease_seconds: 15,
                acquire_time: Some(now.clone()),
                renew_time: Some(now.clone()),
                transitions: 0,
            }
        );

        let taken = claim(
            Decision::Acquire,
            Some(&record("other", 1, 4)),
            ME,
            15,
            &now,
        )
        .unwrap();
        assert_eq!((taken.holder.as_str(), taken.transitions), (ME, 5));
        assert_eq!(taken.acquire_time, Some(now.clone()));
        assert_eq!(taken.lease_seconds, 15);

        let renewed = claim(Decision::Renew, Some(&record(ME, 15, 4)), ME, 15, &now).unwrap();
        assert_eq!(renewed.transitions, 4);
        assert_eq!(renewed.acquire_time, Some(at(0)));
        assert_eq!(renewed.renew_time, Some(now.clone()));

        assert_eq!(
            claim(Decision::Wait, Some(&record("other", 15, 4)), ME, 15, &now),
            None
        );

        let free = released(&record(ME, 15, 4), &now);
        assert_eq!(
            free,
            Record {
                holder: String::new(),
                lease_seconds: 1,
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                transitions: 4,
            }
        );
        // Written as `holderIdentity: ""`, not omitted, as Go's pointer to "".
        let spec = serde_json::to_value(free.to_spec()).unwrap();
        assert_eq!(spec["holderIdentity"], "");
        assert_eq!(spec["leaseDurationSeconds"], 1);
        assert_eq!(spec["leaseTransitions"], 4);
    }

    #[test]
    fn a_missing_holder_reads_as_free() {
        let spec = LeaseSpec {
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        let observed = observe(None, Record::from_spec(Some(&spec)), Instant::now());
        assert_eq!(decide(Some(&observed), observed.at, ME), Decision::Acquire);
        assert_eq!(Record::from_spec(None), Record::default());
    }

    #[test]
    fn jitter_stays_within_client_go_bounds() {
        let period = Duration::from_secs(2);
        for _ in 0..1000 {
            let wait = jittered(period);
            assert!(
                wait >= period && wait <= period.mul_f64(1.0 + JITTER_FACTOR),
                "{wait:?}"
            );
        }
    }
}
