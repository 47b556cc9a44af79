//! A short chaos run inside the suite: one round of every fault (each
//! understudy killed with SIGKILL one replica at a time and both at once,
//! its leader frozen past its lease and resumed, the apiserver restarted,
//! etcd compacted, kube-controller-manager handed our controllers' work
//! and handing it back) under a seeded churn, on kwok nodes. Asserts no
//! invariant violated, convergence within the stated time after every
//! fault and at the end, and no write by a frozen leader after it resumed.
//!
//! The lab replaces the scheduler and controllers but starts neither: the
//! run starts two replicas of each itself, with client certificates of
//! their own that the audit log names.

use std::time::Duration;

use understudy_e2e::chaos::faults::FaultKind;
use understudy_e2e::chaos::{self, ChaosOptions};
use understudy_e2e::fixture::{Cluster, ClusterSpec, binaries_dir};

/// The seed of the suite's run: fixed, so a failure reproduces with
/// `understudy-lab chaos --seed 17 --duration 1m`.
const SEED: u64 = 17;
/// Everything converges within this after each fault.
const CONVERGE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_of_faults_under_churn_breaks_no_invariant() {
    let cluster = Cluster::shared(ClusterSpec {
        nodes: 3,
        understudies: "scheduler,controllers",
        start_understudies: false,
        real_nodes: 0,
        kwok: true,
        backend: Some(understudy_e2e::chart::Backend::Processes),
        proxy_mode: Default::default(),
    });
    let Some(local) = cluster.local.as_ref() else {
        eprintln!("skipped: the chaos run kills and restarts the local lab's processes");
        return;
    };
    // One round: faults start only in the first second; the round then
    // runs to its end (ten faults).
    let mut options = ChaosOptions::new(Duration::from_secs(1), SEED, binaries_dir());
    options.converge_timeout = CONVERGE;
    let report = chaos::run(&local.state_dir, options)
        .await
        .unwrap_or_else(|e| panic!("chaos run: {e}"));
    println!("{report}");
    assert_eq!(
        report.faults.len(),
        10,
        "one round of every fault, kube-controller-manager switched in and out"
    );
    assert!(
        report.violations.is_empty(),
        "invariant violations:\n{report}"
    );
    for fault in &report.faults {
        assert!(
            fault.converged_after.is_some_and(|d| d <= CONVERGE),
            "{} did not converge within {CONVERGE:?}:\n{report}",
            fault.fault
        );
    }
    assert!(
        report.final_convergence.is_some(),
        "no convergence after the churn:\n{report}"
    );
    let hand_back = report
        .faults
        .iter()
        .find(|f| f.fault.kind == FaultKind::KcmHandBack)
        .expect("kube-controller-manager handed the controllers back");
    assert!(
        hand_back.kcm_wrote.is_some_and(|n| n > 0),
        "kube-controller-manager wrote none of the run's objects while it had the controllers:\n{report}"
    );
    let pauses: Vec<_> = report
        .faults
        .iter()
        .filter_map(|f| f.pause.as_ref())
        .collect();
    assert_eq!(pauses.len(), 2, "each understudy's leader frozen once");
    for pause in pauses {
        assert_eq!(
            pause.writes,
            Some(0),
            "{} wrote after resuming without the lease:\n{report}",
            pause.replica
        );
    }
    assert!(report.passed());
}
