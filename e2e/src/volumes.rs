//! Static PersistentVolumes on the lab's two real nodes, run the same way
//! against Understudy (understudy-controllers' binder and understudy-scheduler
//! from the chart) and upstream (kube-controller-manager's
//! persistentvolume-binder-controller and kube-scheduler), so the two answer
//! for the same behaviour:
//! - a pod writes a file to a volume bound through its claim; a later pod on
//!   the same claim reads it; deleting the claim releases the volume (Retain)
//!   and the file stays on the node's disk;
//! - the smallest volume that fits is chosen; claims and volumes pre-bound by
//!   name bind to each other; mismatches stay Pending with upstream's Events;
//! - `Delete` of a volume nothing can delete fails it; a claim whose volume
//!   is gone is Lost;
//! - WaitForFirstConsumer claims wait for a pod, which goes to the node its
//!   volume is pinned to.
//!
//! Volumes are directories under the lab's state directory (`local` volumes
//! pinned to a node, or `hostPath`): the real nodes share this machine's
//! filesystem, so the test reads what the pods wrote. Every volume and claim
//! has a storage class named after the test's namespace, so tests sharing a
//! lab never match each other's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::fixture::{Cluster, ClusterSpec, TestNamespace};
use crate::images;
use crate::realnode::REAL_NODE_LABEL;
use crate::wait;

const T: Duration = Duration::from_secs(90);
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

/// Who binds volumes and places the pods that use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// understudy-controllers' binder and understudy-scheduler (the chart's).
    Understudy,
    /// kube-controller-manager's binder and kube-scheduler.
    Upstream,
}

impl Stack {
    fn scheduler_name(self) -> &'static str {
        match self {
            Stack::Understudy => "understudy-scheduler",
            Stack::Upstream => "default-scheduler",
        }
    }
}

/// The storage tests of one stack, each on the lab of [`cluster_spec`]:
/// tests/volumes.rs and tests/volumes_upstream.rs are this once each.
#[macro_export]
macro_rules! volume_tests {
    ($stack:expr) => {
        fn cluster() -> Option<&'static $crate::fixture::Cluster> {
            if std::env::var_os($crate::fixture::EXTERNAL_KUBECONFIG).is_some() {
                eprintln!("skipped: volumes are directories on the lab's own real nodes");
                return None;
            }
            Some($crate::fixture::Cluster::shared(
                $crate::volumes::cluster_spec($stack),
            ))
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn data_outlives_pods_and_claim() {
            let Some(cluster) = cluster() else { return };
            $crate::volumes::data_outlives_pods_and_claim(cluster, $stack).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn smallest_fit_and_prebinding() {
            let Some(cluster) = cluster() else { return };
            $crate::volumes::smallest_fit_and_prebinding(cluster, $stack).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn mismatches_stay_pending_with_reasons() {
            let Some(cluster) = cluster() else { return };
            $crate::volumes::mismatches_stay_pending_with_reasons(cluster, $stack).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn failed_delete_and_lost_claim() {
            let Some(cluster) = cluster() else { return };
            $crate::volumes::failed_delete_and_lost_claim(cluster, $stack).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn wait_for_first_consumer_follows_the_volume() {
            let Some(cluster) = cluster() else { return };
            $crate::volumes::wait_for_first_consumer_follows_the_volume(cluster, $stack).await;
        }
    };
}

/// Two real nodes and no fake ones (a pod of these tests can only run on a
/// real node); ours replace kube-controller-manager's binder, or upstream's
/// run alone.
pub fn cluster_spec(stack: Stack) -> ClusterSpec {
    ClusterSpec {
        nodes: 0,
        understudies: match stack {
            Stack::Understudy => "scheduler,controllers",
            Stack::Upstream => "none",
        },
        start_understudies: true,
        real_nodes: 2,
        kwok: false,
        backend: None,
        proxy_mode: Default::default(),
    }
}

/// One test's namespace, storage class prefix, volume directory and APIs.
struct Scene {
    client: Client,
    ns: TestNamespace,
    stack: Stack,
    dir: PathBuf,
    nodes: Vec<String>,
    pvs: Api<PersistentVolume>,
    claims: Api<PersistentVolumeClaim>,
    pods: Api<Pod>,
}

impl Scene {
    async fn new(cluster: &Cluster, stack: Stack, prefix: &str) -> Scene {
        let client = cluster.client().await;
        let ns = TestNamespace::create(cluster, &client, prefix).await;
        let state = cluster.local.as_ref().expect("a lab cluster");
        let dir = state.state_dir.join("volumes").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let nodes: Api<Node> = Api::all(client.clone());
        let mut names: Vec<String> = nodes
            .list(&ListParams::default().labels(REAL_NODE_LABEL))
            .await
            .expect("listing the real nodes")
            .items
            .iter()
            .map(|n| n.name_any())
            .collect();
        names.sort();
        assert!(names.len() >= 2, "two real nodes, found {names:?}");
        Scene {
            pvs: Api::all(client.clone()),
            claims: Api::namespaced(client.clone(), &ns.name),
            pods: Api::namespaced(client.clone(), &ns.name),
            client,
            ns,
            stack,
            dir,
            nodes: names,
        }
    }

    /// Names of cluster-wide objects (classes, volumes) carry the namespace.
    fn global(&self, name: &str) -> String {
        format!("{}-{name}", self.ns.name)
    }

    async fn storage_class(&self, name: &str, binding_mode: &str) -> String {
        let name = self.global(name);
        let class: StorageClass = crate::pods::from_json(json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": NO_PROVISIONER,
            "volumeBindingMode": binding_mode,
        }));
        Api::<StorageClass>::all(self.client.clone())
            .create(&PostParams::default(), &class)
            .await
            .unwrap_or_else(|e| panic!("creating StorageClass {name}: {e}"));
        name
    }

    /// A volume over a fresh world-writable directory (the pods run as
    /// nonroot): `local` and pinned to `node` when given, else `hostPath`.
    async fn volume(&self, name: &str, size: &str, class: &str, extra: Value) -> String {
        let global = self.global(name);
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut pv = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": global},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": class,
                "hostPath": {"path": path.display().to_string(), "type": "Directory"},
            },
        });
        crate::workloads::merge(&mut pv, extra);
        self.pvs
            .create(&PostParams::default(), &crate::pods::from_json(pv))
            .await
            .unwrap_or_else(|e| panic!("creating PersistentVolume {global}: {e}"));
        global
    }

    /// A `local` volume only `node` can mount.
    async fn pinned_volume(&self, name: &str, size: &str, class: &str, node: &str) -> String {
        let path = self.dir.join(name);
        self.volume(
            name,
            size,
            class,
            json!({"spec": {
                "hostPath": null,
                "local": {"path": path.display().to_string()},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]},
                ]}]}},
            }}),
        )
        .await
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    async fn claim(&self, name: &str, size: &str, extra: Value) {
        let mut pvc = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
            },
        });
        crate::workloads::merge(&mut pvc, extra);
        self.claims
            .create(&PostParams::default(), &crate::pods::from_json(pvc))
            .await
            .unwrap_or_else(|e| panic!("creating PersistentVolumeClaim {name}: {e}"));
    }

    async fn claim_of_class(&self, name: &str, size: &str, class: &str) {
        self.claim(name, size, json!({"spec": {"storageClassName": class}}))
            .await;
    }

    async fn wait_claim_bound(&self, name: &str) -> PersistentVolumeClaim {
        wait::object(
            &self.claims,
            name,
            T,
            |c: Option<&PersistentVolumeClaim>| c.is_some_and(|c| claim_phase(c) == "Bound"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn wait_volume_phase(&self, name: &str, phase: &str) -> PersistentVolume {
        wait::object(&self.pvs, name, T, |v: Option<&PersistentVolume>| {
            v.is_some_and(|v| volume_phase(v) == phase)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A pod that runs `understudy-testserver note` on the claim mounted at
    /// /data: it writes `write` there when given, and prints the file.
    async fn note_pod(&self, name: &str, claim: &str, write: Option<&str>) {
        let mut args = vec!["note".to_string(), "/data/note".to_string()];
        if let Some(text) = write {
            args.extend(["--write".to_string(), text.to_string()]);
        }
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "schedulerName": self.stack.scheduler_name(),
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "tolerations": [{"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{
                    "name": "note",
                    "image": images::reference(images::TESTSERVER_REPOSITORY),
                    "imagePullPolicy": "Never",
                    "args": args,
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "securityContext": {
                        "runAsNonRoot": true,
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            },
        });
        crate::pods::create(&self.pods, pod).await;
    }

    /// Waits for the note pod to succeed; returns its node and what it printed.
    async fn note_of(&self, name: &str) -> (String, String) {
        let pod = wait::object(&self.pods, name, T, |p: Option<&Pod>| {
            p.is_some_and(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                matches!(phase, Some("Succeeded" | "Failed"))
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let logs = self
            .pods
            .logs(name, &LogParams::default())
            .await
            .unwrap_or_else(|e| panic!("logs of pod {name}: {e}"));
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        assert_eq!(phase.as_deref(), Some("Succeeded"), "pod {name}: {logs}");
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        (node, logs.trim().to_string())
    }

    async fn delete_pod(&self, name: &str) {
        self.pods
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting pod {name}: {e}"));
        let pods = &self.pods;
        wait::until(&format!("pod {name} to be gone"), T, || async move {
            let pod = pods.get_opt(name).await.map_err(|e| e.to_string())?;
            Ok(pod.is_none().then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Until an Event with `reason` whose note contains `note` is recorded
    /// about `name` in `namespace` (Events about volumes are in `default`).
    async fn wait_event(&self, namespace: &str, name: &str, reason: &str, note: &str) -> Event {
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("a {reason} Event about {name} saying {note:?}");
        wait::until(&what, T, || {
            let events = events.clone();
            async move {
                let list = events
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(list.items.into_iter().find(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                        && e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().unwrap_or_default().contains(note)
                }))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn claim_event(&self, claim: &str, reason: &str, note: &str) -> Event {
        self.wait_event(&self.ns.name, claim, reason, note).await
    }
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn volume_phase(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn volume_name(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A claim binds with upstream's annotations on both sides; a pod writes a
/// file that a later pod on the same claim reads; deleting the claim
/// releases the Retain volume and leaves the file on the node's disk.
pub async fn data_outlives_pods_and_claim(cluster: &Cluster, stack: Stack) {
    let s = Scene::new(cluster, stack, "pv-data").await;
    let class = s.storage_class("immediate", "Immediate").await;
    let node = s.nodes[0].clone();
    let pv = s.pinned_volume("data", "1Gi", &class, &node).await;
    s.claim_of_class("data", "1Gi", &class).await;

    let claim = s.wait_claim_bound("data").await;
    assert_eq!(volume_name(&claim), pv);
    assert_eq!(annotation(&claim.metadata, ANN_BIND_COMPLETED), Some("yes"));
    assert_eq!(
        annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER),
        Some("yes")
    );
    let status = claim.status.as_ref().expect("claim status");
    assert_eq!(
        status
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.as_str()),
        Some("1Gi")
    );
    let volume = s.wait_volume_phase(&pv, "Bound").await;
    let claim_ref = volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.clone())
        .expect("claimRef");
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(claim_ref.namespace.as_deref(), Some(s.ns.name.as_str()));
    assert_eq!(claim_ref.uid, claim.metadata.uid);
    assert_eq!(
        annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER),
        Some("yes")
    );

    let token = format!("written by the first pod of {}", s.ns.name);
    s.note_pod("writer", "data", Some(&token)).await;
    let (writer_node, printed) = s.note_of("writer").await;
    assert_eq!(writer_node, node, "a local volume's pod runs on its node");
    assert_eq!(printed, format!("note {token}"));
    let file = s.volume_dir("data").join("note");
    assert_eq!(
        read(&file),
        token,
        "the pod wrote to the volume's directory"
    );
    s.delete_pod("writer").await;

    s.note_pod("reader", "data", None).await;
    let (_, printed) = s.note_of("reader").await;
    assert_eq!(printed, format!("note {token}"), "a new pod reads the file");
    s.delete_pod("reader").await;

    s.claims
        .delete("data", &DeleteParams::default())
        .await
        .expect("deleting the claim");
    let released = s.wait_volume_phase(&pv, "Released").await;
    assert_eq!(
        released
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| r.uid.clone()),
        claim.metadata.uid,
        "a Released volume keeps its claimRef"
    );
    assert_eq!(read(&file), token, "Retain leaves the data on disk");
}

/// Of volumes of 1, 3, 5 and 10 Gi a 4 Gi claim gets the 5 Gi one; a claim
/// naming the 10 Gi volume gets it; a volume whose claimRef names a claim
/// (no UID) is that claim's though a smaller one would fit.
pub async fn smallest_fit_and_prebinding(cluster: &Cluster, stack: Stack) {
    let s = Scene::new(cluster, stack, "pv-match").await;
    let class = s.storage_class("sizes", "Immediate").await;
    let mut volumes = Vec::new();
    for (name, size) in [
        ("one", "1Gi"),
        ("three", "3Gi"),
        ("five", "5Gi"),
        ("ten", "10Gi"),
    ] {
        volumes.push(s.volume(name, size, &class, json!({})).await);
    }
    let reserved = s
        .volume(
            "reserved",
            "20Gi",
            &class,
            json!({"spec": {"claimRef": {"namespace": s.ns.name, "name": "for-reserved"}}}),
        )
        .await;
    for v in &volumes {
        s.wait_volume_phase(v, "Available").await;
    }

    s.claim_of_class("four", "4Gi", &class).await;
    s.claim(
        "wants-ten",
        "2Gi",
        json!({"spec": {"storageClassName": class, "volumeName": s.global("ten")}}),
    )
    .await;
    s.claim_of_class("for-reserved", "1Gi", &class).await;

    let four = s.wait_claim_bound("four").await;
    assert_eq!(
        volume_name(&four),
        s.global("five"),
        "the smallest that fits"
    );
    let wants_ten = s.wait_claim_bound("wants-ten").await;
    assert_eq!(volume_name(&wants_ten), s.global("ten"));
    // The user chose the volume: not bound-by-controller on the claim.
    assert_eq!(
        annotation(&wants_ten.metadata, ANN_BOUND_BY_CONTROLLER),
        None
    );
    let for_reserved = s.wait_claim_bound("for-reserved").await;
    assert_eq!(volume_name(&for_reserved), reserved);
    let reserved_pv = s.wait_volume_phase(&reserved, "Bound").await;
    // The admin chose the claim: not bound-by-controller on the volume.
    assert_eq!(
        annotation(&reserved_pv.metadata, ANN_BOUND_BY_CONTROLLER),
        None
    );
    assert_eq!(
        reserved_pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| r.uid.clone()),
        for_reserved.metadata.uid,
        "the claim's UID completes a claimRef given by name"
    );
    s.wait_volume_phase(&s.global("five"), "Bound").await;
    s.wait_volume_phase(&s.global("ten"), "Bound").await;
    for left in ["one", "three"] {
        let v = s.pvs.get(&s.global(left)).await.expect("volume");
        assert_eq!(volume_phase(&v), "Available", "{left} stays unclaimed");
    }
}

/// Claims nothing serves stay Pending, each with upstream's Event.
pub async fn mismatches_stay_pending_with_reasons(cluster: &Cluster, stack: Stack) {
    let s = Scene::new(cluster, stack, "pv-mismatch").await;
    let class = s.storage_class("strict", "Immediate").await;
    let other = s.storage_class("other", "Immediate").await;
    let rwo = s
        .volume(
            "rwo",
            "5Gi",
            &class,
            json!({"metadata": {"labels": {"tier": "gold"}}}),
        )
        .await;
    let elsewhere = s.volume("elsewhere", "5Gi", &other, json!({})).await;
    s.wait_volume_phase(&rwo, "Available").await;
    s.wait_volume_phase(&elsewhere, "Available").await;

    // No class at all, and no class-less volume.
    s.claim(
        "classless",
        "1Gi",
        json!({"spec": {"storageClassName": ""}}),
    )
    .await;
    // The class's volumes are ReadWriteOnce / Filesystem / too small / of
    // another tier: its provisioner is no provisioner at all.
    s.claim(
        "shared",
        "1Gi",
        json!({"spec": {"storageClassName": class, "accessModes": ["ReadWriteMany"]}}),
    )
    .await;
    s.claim(
        "block",
        "1Gi",
        json!({"spec": {"storageClassName": class, "volumeMode": "Block"}}),
    )
    .await;
    s.claim_of_class("huge", "50Gi", &class).await;
    s.claim(
        "silver",
        "1Gi",
        json!({"spec": {"storageClassName": class, "selector": {"matchLabels": {"tier": "silver"}}}}),
    )
    .await;
    // Asks by name for a volume of another class.
    s.claim(
        "wrong-class",
        "1Gi",
        json!({"spec": {"storageClassName": class, "volumeName": elsewhere}}),
    )
    .await;

    s.claim_event(
        "classless",
        "FailedBinding",
        "no persistent volumes available for this claim and no storage class is set",
    )
    .await;
    for claim in ["shared", "block", "huge", "silver"] {
        s.claim_event(
            claim,
            "ProvisioningFailed",
            &format!("no volume plugin matched name: {NO_PROVISIONER}"),
        )
        .await;
    }
    s.claim_event(
        "wrong-class",
        "VolumeMismatch",
        &format!("Cannot bind to requested volume {elsewhere:?}: storageClassName does not match"),
    )
    .await;
    for claim in [
        "classless",
        "shared",
        "block",
        "huge",
        "silver",
        "wrong-class",
    ] {
        let c = s.claims.get(claim).await.expect("claim");
        assert_eq!(claim_phase(&c), "Pending", "{claim}");
        assert_eq!(
            volume_name(&c),
            if claim == "wrong-class" {
                elsewhere.as_str()
            } else {
                ""
            }
        );
    }
    for v in [&rwo, &elsewhere] {
        let pv = s.pvs.get(v).await.expect("volume");
        assert_eq!(volume_phase(&pv), "Available", "{v} stays unclaimed");
    }
}

/// `Delete` of a volume no plugin can delete marks it Failed with upstream's
/// Event; a claim whose volume is gone is Lost.
pub async fn failed_delete_and_lost_claim(cluster: &Cluster, stack: Stack) {
    let s = Scene::new(cluster, stack, "pv-reclaim").await;
    let class = s.storage_class("reclaim", "Immediate").await;
    let node = s.nodes[0].clone();
    let doomed = s.pinned_volume("doomed", "1Gi", &class, &node).await;
    s.pvs
        .patch(
            &doomed,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Delete"}})),
        )
        .await
        .expect("reclaim policy Delete");
    let lost = s.volume("lost", "2Gi", &class, json!({})).await;
    // Only Available volumes match (as upstream's binder): a claim created
    // before the binder marked the 1Gi volume Available would take the 2Gi.
    for v in [&doomed, &lost] {
        s.wait_volume_phase(v, "Available").await;
    }
    s.claim_of_class("doomed", "1Gi", &class).await;
    s.claim_of_class("lost", "2Gi", &class).await;
    assert_eq!(volume_name(&s.wait_claim_bound("doomed").await), doomed);
    assert_eq!(volume_name(&s.wait_claim_bound("lost").await), lost);

    s.claims
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("deleting the claim");
    s.wait_volume_phase(&doomed, "Failed").await;
    s.wait_event(
        "default",
        &doomed,
        "VolumeFailedDelete",
        // kube-controller-manager's binder knows no `local` volume plugin.
        &format!(
            "error getting deleter volume plugin for volume {doomed:?}: no volume plugin matched"
        ),
    )
    .await;
    assert!(s.volume_dir("doomed").exists(), "nothing deleted the data");

    // A bound volume is kept by its protection finalizer: take it off, as
    // an administrator forcing the delete would.
    s.pvs
        .delete(&lost, &DeleteParams::default())
        .await
        .expect("deleting the volume");
    s.pvs
        .patch(
            &lost,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("dropping the volume's finalizers");
    wait::object(&s.claims, "lost", T, |c: Option<&PersistentVolumeClaim>| {
        c.is_some_and(|c| claim_phase(c) == "Lost")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    s.claim_event(
        "lost",
        "ClaimLost",
        "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
    )
    .await;
}

/// WaitForFirstConsumer: a claim waits (with upstream's Event) until a pod
/// uses it; the pod goes to the node of the only volume that fits, which the
/// claim then binds; the next claim's pod goes to the other node's volume.
pub async fn wait_for_first_consumer_follows_the_volume(cluster: &Cluster, stack: Stack) {
    let s = Scene::new(cluster, stack, "pv-wffc").await;
    let class = s.storage_class("later", "WaitForFirstConsumer").await;
    let (first, second) = (s.nodes[0].clone(), s.nodes[1].clone());
    let small = s.pinned_volume("small", "1Gi", &class, &first).await;
    let large = s.pinned_volume("large", "5Gi", &class, &second).await;
    s.claim_of_class("big", "3Gi", &class).await;
    s.claim_event(
        "big",
        "WaitForFirstConsumer",
        "waiting for first consumer to be created before binding",
    )
    .await;
    assert_eq!(
        claim_phase(&s.claims.get("big").await.expect("claim")),
        "Pending"
    );
    assert_eq!(
        volume_phase(&s.pvs.get(&large).await.expect("volume")),
        "Available"
    );

    s.note_pod("big-user", "big", Some("on the large volume"))
        .await;
    let (node, printed) = s.note_of("big-user").await;
    assert_eq!(node, second, "the pod goes where its volume is");
    assert_eq!(printed, "note on the large volume");
    assert_eq!(volume_name(&s.wait_claim_bound("big").await), large);
    assert_eq!(
        read(&s.volume_dir("large").join("note")),
        "on the large volume"
    );

    s.claim_of_class("small", "1Gi", &class).await;
    s.note_pod("small-user", "small", Some("on the small volume"))
        .await;
    let (node, _) = s.note_of("small-user").await;
    assert_eq!(node, first);
    assert_eq!(volume_name(&s.wait_claim_bound("small").await), small);
    assert_eq!(
        read(&s.volume_dir("small").join("note")),
        "on the small volume"
    );
}
