//! What a chaos run found, and its printed summary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::faults::{Fault, FaultKind};
use super::invariants::Violation;
use super::invariants::traffic::Outage;
use super::replicas::Flavour;

/// A leader frozen past its Lease and resumed: the writes it made (other
/// than to its Lease) from its resumption until the next fault.
#[derive(Clone, Debug)]
pub struct PauseWindow {
    pub replica: String,
    pub user: String,
    /// The pod, when the replica is one: its writes are told from its
    /// twin's (the same ServiceAccount user) by the pod their token names.
    pub pod: Option<String>,
    pub resumed: Timestamp,
    pub until: Option<Timestamp>,
    /// Counted from the audit log once the run is over.
    pub writes: Option<usize>,
}

/// One injected fault.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// Since the run started.
    pub at: Duration,
    pub wall: Timestamp,
    pub fault: Fault,
    pub note: String,
    /// From the fault to everything converged; `None`: not within the timeout.
    pub converged_after: Option<Duration>,
    pub pause: Option<PauseWindow>,
    /// At a `kcm-hands-back`: how many of the run's objects
    /// kube-controller-manager wrote while it had our controllers' work.
    pub kcm_wrote: Option<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub flavour: Flavour,
    pub backend: crate::chart::Backend,
    pub ran_for: Duration,
    pub converge_timeout: Duration,
    pub faults: Vec<FaultRecord>,
    /// Each violation once, with when it was counted.
    pub violations: Vec<(Duration, Violation)>,
    pub restarts: u32,
    pub api_errors: u32,
    pub churn: BTreeMap<&'static str, u32>,
    /// From the end of the churn (after the last fault) to everything converged.
    pub final_convergence: Option<Duration>,
    /// Successful `pods/binding` creates by the scheduler's replicas (audit log).
    pub bindings: usize,
    /// Pods the scheduler's replicas deleted: preemption victims (audit log).
    pub preemption_victims: usize,
    /// With real nodes: what the prober saw of the traffic Service.
    pub traffic: Option<TrafficFigures>,
}

/// The prober's figures: requests to the traffic Service's ClusterIP from a
/// real node's network namespace through its proxy.
#[derive(Clone, Debug)]
pub struct TrafficFigures {
    /// `namespace/name`.
    pub service: String,
    /// ClusterIP:port.
    pub address: String,
    /// The node whose namespace the requests left from.
    pub from: String,
    /// The lab's proxy processes on the real nodes.
    pub proxy: String,
    /// When the run started, by the wall clock (outages are since then).
    pub started_wall: Timestamp,
    pub requests: usize,
    pub failures: usize,
    pub outages: Vec<Outage>,
    /// Requests sent while the Service was stable: a failure of any of
    /// them would have been a violation.
    pub strict: usize,
    /// Listings of the Service the invariant judged the failures by.
    pub listings: usize,
}

impl TrafficFigures {
    pub fn longest_outage(&self) -> Option<&Outage> {
        self.outages.iter().max_by_key(|o| o.length())
    }
}

/// Outages listed one a line, at most this many (the longest first).
const OUTAGES_LISTED: usize = 20;

impl fmt::Display for TrafficFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = if self.requests == 0 {
            0.0
        } else {
            100.0 * self.failures as f64 / self.requests as f64
        };
        writeln!(
            f,
            "traffic: Service {} ({}) from {}'s network namespace through {}, a request every {}ms: \
             {} requests, {} failed ({share:.2}%), {} outages",
            self.service,
            self.address,
            self.from,
            self.proxy,
            super::traffic::INTERVAL.as_millis(),
            self.requests,
            self.failures,
            self.outages.len()
        )?;
        let wall = |at: Duration| (self.started_wall + at).strftime("%H:%M:%S").to_string();
        writeln!(
            f,
            "  {} of the requests were sent while the Service was stable (ready endpoints = serving pods, \
             settled {}s; any failure among them a violation), over {} listings",
            self.strict,
            super::traffic::SETTLE.as_secs(),
            self.listings
        )?;
        match self.longest_outage() {
            Some(o) => writeln!(
                f,
                "  longest outage: {} from {} ({}), {} failed: {}",
                secs(o.length()),
                secs(o.start),
                wall(o.start),
                o.failures,
                o.error
            )?,
            None => writeln!(f, "  longest outage: none")?,
        }
        let mut longest: Vec<&Outage> = self.outages.iter().collect();
        longest.sort_by_key(|o| std::cmp::Reverse(o.length()));
        longest.truncate(OUTAGES_LISTED);
        longest.sort_by_key(|o| o.start);
        for o in longest {
            writeln!(
                f,
                "  outage at {:>7} ({}): {:>5}, {} failed: {} — {}",
                secs(o.start),
                wall(o.start),
                secs(o.length()),
                o.failures,
                o.error,
                o.excuse.as_deref().unwrap_or("NOT EXCUSED")
            )?;
        }
        Ok(())
    }
}

impl Report {
    pub fn worst_convergence(&self) -> Option<Duration> {
        self.faults.iter().filter_map(|f| f.converged_after).max()
    }

    /// No violation, every fault and the end converged, no write of a
    /// leader that lost its Lease. Upstream's components, run for
    /// comparison, promise no fence: their resumed leaders' writes are
    /// reported, not held against them.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.final_convergence.is_some()
            && self.faults.iter().all(|f| f.converged_after.is_some())
            && (self.flavour == Flavour::Upstream
                || self
                    .faults
                    .iter()
                    .filter_map(|f| f.pause.as_ref())
                    .all(|p| p.writes == Some(0)))
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos run: seed {} (reproduce with --seed {}), ran {}{}",
            self.seed,
            self.seed,
            secs(self.ran_for),
            match self.flavour {
                Flavour::Ours => "",
                Flavour::Upstream => ", upstream's kube-scheduler and kube-controller-manager",
            }
        )?;
        if self.backend == crate::chart::Backend::Chart {
            writeln!(
                f,
                "understudies: the chart's pods on the real nodes (kills and freezes act on their containers' processes)"
            )?;
        }
        let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
        for record in &self.faults {
            *by_kind.entry(record.fault.kind).or_default() += 1;
        }
        writeln!(f, "faults injected: {}", self.faults.len())?;
        for (kind, n) in &by_kind {
            writeln!(f, "  {:<22} {n}", kind.name())?;
        }
        writeln!(
            f,
            "time to converge after each fault (timeout {}):",
            secs(self.converge_timeout)
        )?;
        for record in &self.faults {
            let converged = record
                .converged_after
                .map(secs)
                .unwrap_or_else(|| "NOT CONVERGED".into());
            writeln!(
                f,
                "  {:>7} {}  {:<42} {:>13}  {}",
                secs(record.at),
                record.wall.strftime("%H:%M:%S"),
                record.fault.to_string(),
                converged,
                record.note
            )?;
        }
        if let Some(worst) = self.worst_convergence() {
            writeln!(f, "worst convergence after a fault: {}", secs(worst))?;
        }
        match self.final_convergence {
            Some(d) => writeln!(
                f,
                "converged after the last fault and the churn: {}",
                secs(d)
            )?,
            None => writeln!(
                f,
                "NOT converged after the churn within {}",
                secs(self.converge_timeout)
            )?,
        }
        writeln!(
            f,
            "leader writes after resuming from SIGSTOP, before noticing the lost lease:"
        )?;
        for pause in self.faults.iter().filter_map(|r| r.pause.as_ref()) {
            let writes = pause
                .writes
                .map(|w| w.to_string())
                .unwrap_or_else(|| "unknown (audit log unreadable)".into());
            writeln!(f, "  {:<28} {writes}", pause.replica)?;
        }
        writeln!(
            f,
            "scheduler: {} pods bound, {} preemption victims",
            self.bindings, self.preemption_victims
        )?;
        writeln!(f, "replica restarts: {}", self.restarts)?;
        writeln!(
            f,
            "API errors (churn writes and invariant reads, mostly while the apiserver was down): {}",
            self.api_errors
        )?;
        let churn: Vec<String> = self.churn.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(f, "churn: {}", churn.join(", "))?;
        if let Some(traffic) = &self.traffic {
            write!(f, "{traffic}")?;
        }
        writeln!(f, "invariant violations: {}", self.violations.len())?;
        for (at, violation) in &self.violations {
            writeln!(f, "  {:>7} {violation}", secs(*at))?;
        }
        Ok(())
    }
}
