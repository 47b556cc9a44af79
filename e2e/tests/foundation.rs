//! Foundation e2e: the local control plane itself, kwok nodes and pods, the
//! replaced kube-controller-manager controllers being off, and leader election
//! of the shared component runtime against the real apiserver.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::conditions::is_pod_running;
use serde_json::json;
use understudy_component_base::leader::{LeaderElectionConfig, LeaderElector};
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace, binaries_dir};
use understudy_e2e::nodes::{HOSTNAME_LABEL, ZONE_LABEL};
use understudy_e2e::wait;

const NODES: usize = 3;

/// kube-controller-manager runs with the understudy-controllers' controllers
/// switched off, and the understudies are not started: tests start their own.
fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: NODES,
        understudies: "controllers",
        start_understudies: false,
        real_nodes: 0,
        kwok: true,
        backend: None,
        proxy_mode: Default::default(),
    })
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

#[tokio::test]
async fn kwok_nodes_are_ready_with_zone_and_hostname_labels() {
    let client = cluster().client().await;
    wait::nodes_ready(&client, NODES, Duration::from_secs(60))
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        // Not the nodes tests make for themselves (on a cluster shared by
        // the whole suite they outlive their test binary).
        .list(&ListParams::default().labels("type=kwok,!understudy.dev/test"))
        .await
        .unwrap();
    assert!(list.items.len() >= NODES);
    for node in &list.items {
        let labels = node.metadata.labels.as_ref().unwrap();
        assert!(labels.contains_key(ZONE_LABEL), "{labels:?}");
        assert_eq!(labels.get(HOSTNAME_LABEL), node.metadata.name.as_ref());
        let allocatable = node.status.as_ref().unwrap().allocatable.as_ref().unwrap();
        assert_eq!(allocatable["cpu"].0, "32");
    }
}

#[tokio::test]
async fn a_pod_bound_to_a_node_runs_with_a_pod_ip() {
    let cluster = cluster();
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "pod").await;
    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    let pod: Pod = from_json(json!({
        "metadata": {"name": "web"},
        "spec": {
            "nodeName": "kwok-node-1",
            "containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}],
        },
    }));
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = wait::object(&pods, "web", Duration::from_secs(60), is_pod_running())
        .await
        .unwrap();
    let status = running.status.unwrap();
    let ip: std::net::Ipv4Addr = status.pod_ip.expect("pod IP").parse().expect("IPv4 pod IP");
    assert_eq!(
        ip.octets()[0..2],
        [10, 128],
        "from kwok-node-1's pod CIDR 10.128.1.0/24"
    );
    assert_eq!(ip.octets()[2], 1);
}

#[tokio::test]
async fn replaced_controllers_are_off_in_kube_controller_manager() {
    let cluster = cluster();
    let Some(state) = &cluster.local else {
        // There understudy-controllers run (the chart's): a ReplicaSet would
        // appear whoever is off.
        eprintln!(
            "skipped: tells kube-controller-manager's work apart only where no understudy runs"
        );
        return;
    };
    {
        let kcm = state.process("kube-controller-manager").expect("kcm runs");
        let controllers = kcm
            .args
            .iter()
            .find(|a| a.starts_with("--controllers="))
            .unwrap();
        for off in [
            "-deployment-controller",
            "-replicaset-controller",
            "-endpointslice-controller",
        ] {
            assert!(controllers.contains(off), "{controllers}");
        }
    }
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "kcm-off").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let labels = json!({"app": "web"});
    let template = json!({
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    });
    deployments
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": "web"},
                "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": template},
            })),
        )
        .await
        .unwrap();
    // A Job created after the Deployment is the control: kube-controller-manager
    // is alive and has caught up past the Deployment once the Job has its pod.
    jobs.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": {"name": "probe"},
            "spec": {"template": {"metadata": {"labels": {"probe": "yes"}}, "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            }}},
        })),
    )
    .await
    .unwrap();
    wait::until("the Job's pod", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("probe=yes"))
                .await
                .map_err(|e| e.to_string())?;
            Ok((!list.items.is_empty()).then_some(()))
        }
    })
    .await
    .unwrap();
    let rs = replicasets.list(&ListParams::default()).await.unwrap();
    assert!(
        rs.items.is_empty(),
        "deployment-controller is off, yet: {:?}",
        rs.items
    );
    let deployment = deployments.get("web").await.unwrap();
    assert_eq!(deployment.status.and_then(|s| s.observed_generation), None);
}

/// Short timings so the test runs in seconds; the proportions are upstream's rules
/// (renew deadline under the lease duration and above 1.2 × the retry period).
fn election(identity: &str, namespace: &str, lease: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        namespace: namespace.into(),
        name: lease.into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_secs(1),
    }
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn lease_spec(leases: &Api<Lease>, name: &str) -> LeaseSpec {
    leases.get(name).await.unwrap().spec.unwrap()
}

/// A released lease is taken by the standby at its next poll, as client-go's: the standby
/// re-reads the Lease every retry period (jittered up to ×2.2) and treats an empty holder
/// as free, instead of waiting for the released lease's old expiry. The Lease carries
/// client-go's fields throughout.
#[tokio::test]
async fn leader_lease_hands_over_when_the_leader_releases_it() {
    let cluster = cluster();
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "lease").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let config = election("first", &ns.name, "handover");
    let retry = config.retry_period;
    let lease_duration = config.lease_duration;

    let mut first = LeaderElector::start(client.clone(), config).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), first.acquired())
        .await
        .unwrap()
        .unwrap();
    let created = lease_spec(&leases, "handover").await;
    assert_eq!(created.holder_identity.as_deref(), Some("first"));
    assert_eq!(created.lease_duration_seconds, Some(4));
    assert_eq!(created.lease_transitions, Some(0));
    assert!(created.acquire_time.is_some() && created.renew_time.is_some());

    let mut second = LeaderElector::start(client.clone(), election("second", &ns.name, "handover"))
        .await
        .unwrap();
    // The leader renews every retry period, so the lease never expires under the standby:
    // for longer than a lease duration the standby stays a standby.
    let standby = tokio::time::timeout(lease_duration + 2 * retry, second.acquired()).await;
    assert!(
        standby.is_err(),
        "standby took a lease that was being renewed"
    );
    assert!(first.is_leader() && !second.is_leader());
    let renewed = lease_spec(&leases, "handover").await;
    assert_eq!(renewed.holder_identity.as_deref(), Some("first"));
    assert_eq!(
        renewed.acquire_time, created.acquire_time,
        "a renewal keeps acquireTime"
    );
    assert!(
        renewed.renew_time > created.renew_time,
        "renewTime moves on renewal"
    );
    assert_eq!(renewed.lease_transitions, Some(0));

    first.release().await.unwrap();
    let released_at = tokio::time::Instant::now();
    // The standby's next poll comes within retry × 2.2 (client-go's jitter); the rest is
    // slack for the requests.
    tokio::time::timeout(3 * retry + Duration::from_millis(500), second.acquired())
        .await
        .expect("standby takes a released lease at its next poll")
        .unwrap();
    let takeover = released_at.elapsed();
    println!("takeover after release: {takeover:?}");

    let taken = lease_spec(&leases, "handover").await;
    assert_eq!(taken.holder_identity.as_deref(), Some("second"));
    assert_eq!(taken.lease_transitions, Some(1), "one change of holder");
    assert_eq!(taken.lease_duration_seconds, Some(4));
    assert!(
        taken.acquire_time > created.acquire_time,
        "a new holder sets acquireTime"
    );

    // Releasing writes what client-go's ReleaseOnCancel writes.
    second.release().await.unwrap();
    let released = lease_spec(&leases, "handover").await;
    assert_eq!(released.holder_identity.as_deref(), Some(""));
    assert_eq!(released.lease_duration_seconds, Some(1));
    assert_eq!(released.lease_transitions, Some(1));
    assert!(released.renew_time > taken.renew_time);
    assert_eq!(released.acquire_time, released.renew_time);
}

/// A leader whose lease is overwritten by a foreign holder can no longer renew it: it
/// observes `lost()` (within a renew deadline) and its release leaves the new holder alone.
#[tokio::test]
async fn a_leader_that_cannot_renew_loses_the_lease() {
    let cluster = cluster();
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "lease-lost").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let config = election("leader", &ns.name, "overwritten");
    let (retry, renew_deadline) = (config.retry_period, config.renew_deadline);
    let mut leader = LeaderElector::start(client.clone(), config).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), leader.acquired())
        .await
        .unwrap()
        .unwrap();

    // The leader renews concurrently, so our update may conflict: re-read and retry.
    let intruded = wait::until(
        "the intruder to take the lease",
        Duration::from_secs(10),
        || {
            let leases = leases.clone();
            async move {
                let mut lease = leases.get("overwritten").await.map_err(|e| e.to_string())?;
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let now = MicroTime(Timestamp::now());
                spec.holder_identity = Some("intruder".into());
                spec.lease_duration_seconds = Some(60);
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                match leases
                    .replace("overwritten", &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Some(tokio::time::Instant::now())),
                    Err(kube::Error::Api(s)) if s.is_conflict() => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await
    .unwrap();

    tokio::time::timeout(renew_deadline + 2 * retry, leader.lost())
        .await
        .expect("the leader notices it lost the lease");
    println!("lost observed after: {:?}", intruded.elapsed());
    assert!(!leader.is_leader());
    leader.release().await.unwrap();
    let after = lease_spec(&leases, "overwritten").await;
    assert_eq!(after.holder_identity.as_deref(), Some("intruder"));
    assert_eq!(after.lease_duration_seconds, Some(60));
}

/// Process-level failover: two understudy-scheduler replicas, the leader killed
/// with SIGKILL (no release), the standby takes the lease once it expires.
#[tokio::test]
async fn standby_replica_takes_over_from_a_killed_leader() {
    let cluster = cluster();
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "failover").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let spawn = |identity: &str| {
        tokio::process::Command::new(binaries_dir().join("understudy-scheduler"))
            .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
            .args([
                "--bind-address=127.0.0.1",
                "--port=0",
                "--extender-port=0",
                "--log-level=warn",
            ])
            .arg(format!("--leader-elect-resource-namespace={}", ns.name))
            .arg(format!("--leader-elect-identity={identity}"))
            .args([
                "--leader-elect-lease-duration=4s",
                "--leader-elect-renew-deadline=2s",
                "--leader-elect-retry-period=1s",
            ])
            .kill_on_drop(true)
            .spawn()
            .expect("start understudy-scheduler")
    };
    let holder_is = |who: &'static str| {
        let leases = leases.clone();
        move || {
            let leases = leases.clone();
            async move {
                Ok(
                    (holder(&leases, "understudy-scheduler").await.as_deref() == Some(who))
                        .then_some(()),
                )
            }
        }
    };
    let mut a = spawn("replica-a");
    wait::until(
        "replica-a to lead",
        Duration::from_secs(30),
        holder_is("replica-a"),
    )
    .await
    .unwrap();
    let mut b = spawn("replica-b");
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    wait::until(
        "replica-b to take over",
        Duration::from_secs(30),
        holder_is("replica-b"),
    )
    .await
    .unwrap();

    // A graceful stop releases the lease: exit code 0 and no holder left.
    let pid = nix::unistd::Pid::from_raw(b.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), b.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let after = holder(&leases, "understudy-scheduler").await;
    assert!(
        after.as_deref().is_none_or(str::is_empty),
        "lease released, holder {after:?}"
    );
}

/// The shared Event recorder folds a repeated Event into a series on the real
/// apiserver: the first is created, the second patches `series.count` to 2
/// into that same Event (client-go's events broadcaster does the same).
#[tokio::test]
async fn a_repeated_event_becomes_a_series_on_the_first_event() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::events::v1::Event;
    use understudy_component_base::events::EventRecorder;

    let cluster = cluster();
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "events").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let map = maps
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "subject"}})),
        )
        .await
        .unwrap();
    let regarding = kube::Resource::object_ref(&map, &());
    let recorder = EventRecorder::new(client.clone(), "understudy-e2e", None);
    let events: Api<Event> = Api::namespaced(client, &ns.name);
    let ours = || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(
                list.items
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some("Tested"))
                    .collect::<Vec<_>>(),
            )
        }
    };

    recorder
        .warning(&regarding, "Tested", "Testing", "first".into())
        .await;
    let first = wait::until("the first Event", Duration::from_secs(30), || async {
        Ok(ours().await?.into_iter().next())
    })
    .await
    .unwrap();
    assert!(first.series.is_none());
    assert_eq!(first.note.as_deref(), Some("first"));
    assert_eq!(first.type_.as_deref(), Some("Warning"));
    assert_eq!(
        first.reporting_controller.as_deref(),
        Some("understudy-e2e")
    );
    assert!(
        first
            .reporting_instance
            .as_deref()
            .is_some_and(|i| i.starts_with("understudy-e2e-")),
        "{:?}",
        first.reporting_instance
    );
    assert_eq!(
        first.regarding.as_ref().and_then(|r| r.uid.as_deref()),
        map.metadata.uid.as_deref()
    );

    recorder
        .warning(&regarding, "Tested", "Testing", "second".into())
        .await;
    let series = wait::until("a series of 2", Duration::from_secs(30), || async {
        let found = ours().await?;
        Ok(found
            .iter()
            .any(|e| e.series.as_ref().is_some_and(|s| s.count == 2))
            .then_some(found))
    })
    .await
    .unwrap();
    assert_eq!(
        series.len(),
        1,
        "the repeat patched the first Event: {series:?}"
    );
    assert_eq!(series[0].metadata.name, first.metadata.name);
    assert_eq!(series[0].note.as_deref(), Some("first"));
}

/// Our components' client negotiates HTTP/2 with the apiserver, as client-go
/// does, so concurrent requests share one connection instead of opening one
/// each (kube's own stack speaks HTTP/1.1 only).
#[tokio::test]
async fn the_component_client_multiplexes_requests_over_http2() {
    use understudy_component_base::client::ClientOptions;

    let options = ClientOptions {
        kubeconfig: Some(cluster().kubeconfig.clone()),
        qps: 0.0,
        burst: 0,
        user_agent: "understudy-e2e".into(),
    };
    let client = options.client().await.unwrap();
    let version = |client: kube::Client| async move {
        let request = http::Request::get("/version").body(Vec::new()).unwrap();
        client
            .send(request.map(Into::into))
            .await
            .unwrap()
            .version()
    };
    let answers = futures::future::join_all((0..20).map(|_| version(client.clone()))).await;
    assert!(
        answers.iter().all(|v| *v == http::Version::HTTP_2),
        "{answers:?}"
    );
    // kube's default stack, for contrast: the check above can tell them apart.
    let plain = kube::Client::try_from(options.config().await.unwrap()).unwrap();
    assert_eq!(version(plain).await, http::Version::HTTP_11);
}
