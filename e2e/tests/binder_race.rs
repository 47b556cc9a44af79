//! The PV binder under contention and crashes: 200 claims for 100 volumes,
//! the binder killed with SIGKILL twice mid-run and restarted (each time a
//! new process taking the Lease over), must end with exactly 100 claims
//! Bound and no volume given twice. Run against ours and, as the reference,
//! upstream's binder (kube-controller-manager running only that controller).
//!
//! The lab's kube-controller-manager has its binder switched off (the
//! "controllers" understudy replaces it) and the lab starts no understudy,
//! so the binder a test spawns is the only one. The two tests share the
//! cluster and take turns: volumes are cluster-wide and every binder looks
//! at all of them.

use std::time::Duration;

use understudy_e2e::binder::{
    self, Binder, BinderOptions, BoundWatch, CONTROLLER, Lease, RunningBinder,
};
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace, binaries_dir};

const VOLUMES: usize = 100;
const CLAIMS: usize = 200;
/// Bound claims at which the binder is killed.
const KILL_AT: [usize; 2] = [30, 60];
const T: Duration = Duration::from_secs(180);

static ONE_BINDER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 0,
        understudies: "controllers",
        start_understudies: false,
        real_nodes: 0,
        kwok: false,
        backend: None,
        proxy_mode: Default::default(),
    })
}

async fn race(which: Binder) {
    let cluster = cluster();
    let Some(local) = cluster.local.as_ref() else {
        eprintln!("skipped: the binder race runs its own binder process against the local lab");
        return;
    };
    let kcm = local
        .process("kube-controller-manager")
        .expect("the lab's kube-controller-manager");
    assert!(
        kcm.args
            .iter()
            .any(|a| a.starts_with("--controllers=") && a.contains(&format!("-{CONTROLLER}"))),
        "the lab's kube-controller-manager runs a binder of its own: {:?}",
        kcm.args
    );
    let _turn = ONE_BINDER_AT_A_TIME.lock().await;
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, &format!("binder-{}", which.slug())).await;
    // The class is the namespace's name: unique, so volumes left by the
    // other test never match.
    let class = ns.name.clone();
    let opts = BinderOptions {
        kubeconfig: local.kubeconfig.clone(),
        toolchain_dir: local.toolchain_dir.clone(),
        components_dir: binaries_dir(),
        work_dir: local.logs_dir(),
        lease: Some(Lease {
            namespace: ns.name.clone(),
            name: "binder-race".into(),
        }),
        qps: 200,
        log_level: "info".into(),
    };

    binder::create_volumes(&client, &class, 0, VOLUMES, 16)
        .await
        .unwrap();
    let mut bound = BoundWatch::start(&client, &ns.name);
    let instance = |n: usize| format!("{}-{}-{n}", ns.name, which.slug());
    let started = std::time::Instant::now();
    let mut running = RunningBinder::start(which, &opts, &instance(1)).unwrap();
    let creating = {
        let (client, ns, class) = (client.clone(), ns.name.clone(), class.clone());
        tokio::spawn(async move { binder::create_claims(&client, &ns, &class, 0, CLAIMS, 8).await })
    };

    for (round, at) in KILL_AT.into_iter().enumerate() {
        let seen = bound.wait_for(at, T).await.unwrap_or_else(|e| {
            panic!(
                "{} before kill {}: {e}\n{}",
                which.label(),
                round + 1,
                running.log_tail(30)
            )
        });
        running.kill9();
        eprintln!(
            "{}: killed with SIGKILL at {seen} claims Bound, {:.1} s in",
            which.label(),
            started.elapsed().as_secs_f64()
        );
        running = RunningBinder::start(which, &opts, &instance(round + 2)).unwrap();
    }
    creating.await.unwrap().unwrap();

    let settled =
        understudy_e2e::wait::until("100 claims Bound, each to its own volume", T, || {
            let (client, ns, class) = (client.clone(), ns.name.clone(), class.clone());
            async move {
                let t = binder::observe(&client, &ns, &class)
                    .await
                    .map_err(|e| e.to_string())?;
                if t.settled_at(VOLUMES) {
                    Ok(Some(t))
                } else {
                    Err(format!("{t:?}"))
                }
            }
        })
        .await;
    let tally =
        settled.unwrap_or_else(|e| panic!("{}: {e}\n{}", which.label(), running.log_tail(40)));
    eprintln!(
        "{}: settled after {:.1} s",
        which.label(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(tally.claims_pending, CLAIMS - VOLUMES, "{tally:?}");
    assert_eq!(tally.volumes_available, 0, "{tally:?}");
    // The last binder keeps running: a late second bind would show now.
    let again = binder::observe(&client, &ns.name, &class).await.unwrap();
    assert_eq!(again, tally, "the binding changed after it had settled");

    running.stop(Duration::from_secs(10));
    drop(bound);
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(client.clone(), &ns.name);
    claims
        .delete_collection(&Default::default(), &Default::default())
        .await
        .unwrap();
    binder::delete_volumes(&client, &class, T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ours_binds_each_volume_once_across_kills() {
    race(Binder::Ours).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_binds_each_volume_once_across_kills() {
    race(Binder::Upstream).await;
}
