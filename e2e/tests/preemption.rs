//! Priorities and preemption e2e: the scheduler evicts the fewest
//! lower-priority pods, nominates the node, marks victims with DisruptionTarget,
//! honours preemptionPolicy Never and PodDisruptionBudgets, and two preemptors
//! never both evict for one node. Victims carry a finalizer so each step can
//! be observed before they disappear.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace};
use understudy_e2e::pods::{
    self, create, create_private_node, delete_node, from_json, wait_scheduled,
};
use understudy_e2e::wait;

const T: Duration = Duration::from_secs(60);
const HOLD: &str = "understudy.dev/e2e-hold";

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 3,
        understudies: "scheduler",
        start_understudies: true,
        real_nodes: 0,
        kwok: true,
        backend: None,
        proxy_mode: Default::default(),
    })
}

struct Fixture {
    client: Client,
    ns: TestNamespace,
    pods: Api<Pod>,
    classes: Vec<String>,
    nodes: Vec<String>,
}

impl Fixture {
    async fn new(prefix: &str) -> Self {
        let cluster = cluster();
        let client = cluster.client().await;
        let ns = TestNamespace::create(cluster, &client, prefix).await;
        let pods = Api::namespaced(client.clone(), &ns.name);
        Self {
            client,
            ns,
            pods,
            classes: vec![],
            nodes: vec![],
        }
    }

    async fn class(
        &mut self,
        suffix: &str,
        value: i32,
        policy: &str,
        global_default: bool,
    ) -> String {
        let name = format!("{}-{suffix}", self.ns.name);
        let classes: Api<PriorityClass> = Api::all(self.client.clone());
        let pc: PriorityClass = from_json(json!({
            "metadata": {"name": name},
            "value": value,
            "preemptionPolicy": policy,
            "globalDefault": global_default,
        }));
        classes.create(&PostParams::default(), &pc).await.unwrap();
        self.classes.push(name.clone());
        name
    }

    async fn node(&mut self, suffix: &str, cpu: &str) -> String {
        let name = format!("{suffix}-{}", self.ns.name);
        create_private_node(&self.client, &name, &self.ns.name, cpu, json!({})).await;
        self.nodes.push(name.clone());
        name
    }

    /// A pod for our scheduler requesting `cpu`, allowed onto this test's
    /// private nodes (`node`: pinned to one of them).
    fn pod(
        &self,
        name: &str,
        class: &str,
        cpu: &str,
        node: Option<&str>,
        labels: Value,
        hold: bool,
    ) -> Value {
        let selector = match node {
            Some(n) => json!({"kubernetes.io/hostname": n}),
            None => json!({"understudy.dev/test": self.ns.name}),
        };
        let mut p = json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "schedulerName": "understudy-scheduler",
                "priorityClassName": class,
                "nodeSelector": selector,
                "tolerations": [{"key": "understudy.dev/test", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}],
            },
        });
        if hold {
            p["metadata"]["finalizers"] = json!([HOLD]);
        }
        p
    }

    async fn release(&self, name: &str) {
        let patch = json!({"metadata": {"finalizers": null}});
        let _ = self
            .pods
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
    }

    /// Pods marked for preemption: terminating, with DisruptionTarget set.
    async fn victims(&self) -> Vec<Pod> {
        self.pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .collect()
    }

    async fn cleanup(self) {
        for p in self
            .pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            self.release(&p.name_any()).await;
        }
        let classes: Api<PriorityClass> = Api::all(self.client.clone());
        for c in &self.classes {
            let _ = classes.delete(c, &DeleteParams::default()).await;
        }
        for n in &self.nodes {
            delete_node(&self.client, n).await;
        }
    }
}

fn disruption_target(p: &Pod) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn wait_nominated(pods: &Api<Pod>, name: &str) -> String {
    let pod = wait::object(pods, name, T, |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.nominated_node_name.as_ref())
            .is_some()
    })
    .await
    .unwrap();
    pod.status.unwrap().nominated_node_name.unwrap()
}

#[tokio::test]
async fn a_high_priority_pod_preempts_the_fewest_victims_and_runs_there() {
    let mut f = Fixture::new("preempt").await;
    let low = f.class("low", 100, "PreemptLowerPriority", false).await;
    let high = f.class("high", 1000, "PreemptLowerPriority", false).await;
    let node = f.node("full", "4").await;
    for i in 0..4 {
        create(
            &f.pods,
            f.pod(&format!("low{i}"), &low, "1", Some(&node), json!({}), true),
        )
        .await;
        wait_scheduled(&f.pods, &format!("low{i}"), T)
            .await
            .unwrap();
    }
    create(
        &f.pods,
        f.pod("high", &high, "2", Some(&node), json!({}), false),
    )
    .await;
    assert_eq!(wait_nominated(&f.pods, "high").await, node);
    // The failed cycle reports the placement preemption found, as upstream.
    let placement = format!(
        "preemption: found a potential placement for pod on node {node}, preempting 2 victims"
    );
    let high_pod = f.pods.get("high").await.unwrap();
    let condition = high_pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .cloned()
        .expect("PodScheduled condition");
    // Its message may already be a later attempt's (waiting for the
    // victims); the Event below holds the preemption's.
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(condition.observed_generation, high_pod.metadata.generation);
    // Later attempts (waiting for the victims) record FailedScheduling too.
    let failed = pods::wait_event_with(
        &f.client,
        &f.ns.name,
        "high",
        "FailedScheduling",
        &placement,
        T,
    )
    .await
    .unwrap();
    let note = failed.note.unwrap_or_default();
    assert!(note.ends_with(&placement), "{note}");
    let victims = wait::until("two victims", T, || async {
        let v = f.victims().await;
        Ok((v.len() >= 2).then_some(v))
    })
    .await
    .unwrap();
    assert_eq!(victims.len(), 2, "the minimum set: 2 of 4 CPU");
    for v in &victims {
        assert_eq!(
            disruption_target(v),
            Some(("True".into(), "PreemptionByScheduler".into())),
            "{}",
            v.name_any()
        );
        let event = pods::wait_event(&f.client, &f.ns.name, &v.name_any(), "Preempted", T)
            .await
            .unwrap();
        assert!(
            event
                .note
                .unwrap_or_default()
                .starts_with("Preempted by pod ")
        );
    }
    // Victims gone: the preemptor takes the room made for it.
    for v in &victims {
        f.release(&v.name_any()).await;
    }
    assert_eq!(wait_scheduled(&f.pods, "high", T).await.unwrap(), node);
    wait::object(
        &f.pods,
        "high",
        T,
        kube::runtime::conditions::is_pod_running(),
    )
    .await
    .unwrap();
    assert_eq!(f.victims().await.len(), 0);
    f.cleanup().await;
}

#[tokio::test]
async fn preemption_policy_never_waits_instead() {
    let mut f = Fixture::new("never").await;
    let low = f.class("low", 100, "PreemptLowerPriority", false).await;
    let never = f.class("never", 1000, "Never", false).await;
    let node = f.node("full", "2").await;
    for i in 0..2 {
        create(
            &f.pods,
            f.pod(&format!("low{i}"), &low, "1", Some(&node), json!({}), true),
        )
        .await;
        wait_scheduled(&f.pods, &format!("low{i}"), T)
            .await
            .unwrap();
    }
    create(
        &f.pods,
        f.pod("polite", &never, "1", Some(&node), json!({}), false),
    )
    .await;
    let (_, message) = pods::wait_unschedulable_with(&f.pods, "polite", T, "preemption:")
        .await
        .unwrap();
    assert!(
        message.contains("preemption: not eligible due to preemptionPolicy=Never."),
        "{message}"
    );
    assert!(f.victims().await.is_empty(), "nobody evicted");
    f.cleanup().await;
}

#[tokio::test]
async fn a_pod_disruption_budget_steers_preemption_to_another_node() {
    let mut f = Fixture::new("pdb").await;
    let low = f.class("low", 100, "PreemptLowerPriority", false).await;
    let high = f.class("high", 1000, "PreemptLowerPriority", false).await;
    let guarded = f.node("guarded", "2").await;
    let open = f.node("open", "2").await;
    for i in 0..2 {
        create(
            &f.pods,
            f.pod(
                &format!("g{i}"),
                &low,
                "1",
                Some(&guarded),
                json!({"app": "guarded"}),
                true,
            ),
        )
        .await;
        create(
            &f.pods,
            f.pod(
                &format!("o{i}"),
                &low,
                "1",
                Some(&open),
                json!({"app": "open"}),
                true,
            ),
        )
        .await;
    }
    for name in ["g0", "g1", "o0", "o1"] {
        wait_scheduled(&f.pods, name, T).await.unwrap();
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(f.client.clone(), &f.ns.name);
    pdbs.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": {"name": "guard"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}},
        })),
    )
    .await
    .unwrap();
    // The disruption controller must have counted the guarded pods healthy.
    wait::object(&pdbs, "guard", T, |p: Option<&PodDisruptionBudget>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.current_healthy == Some(2) && s.disruptions_allowed == Some(0))
    })
    .await
    .unwrap();
    create(&f.pods, f.pod("high", &high, "1", None, json!({}), false)).await;
    assert_eq!(wait_nominated(&f.pods, "high").await, open);
    let victims = wait::until("a victim", T, || async {
        let v = f.victims().await;
        Ok((!v.is_empty()).then_some(v))
    })
    .await
    .unwrap();
    assert!(
        victims
            .iter()
            .all(|v| v.labels().get("app").map(String::as_str) == Some("open")),
        "{victims:?}"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn two_preemptors_for_one_node_do_not_both_evict() {
    let mut f = Fixture::new("compete").await;
    let low = f.class("low", 100, "PreemptLowerPriority", false).await;
    let high = f.class("high", 1000, "PreemptLowerPriority", false).await;
    let node = f.node("one", "4").await;
    for i in 0..4 {
        create(
            &f.pods,
            f.pod(&format!("low{i}"), &low, "1", Some(&node), json!({}), true),
        )
        .await;
        wait_scheduled(&f.pods, &format!("low{i}"), T)
            .await
            .unwrap();
    }
    create(
        &f.pods,
        f.pod("first", &high, "3", Some(&node), json!({}), false),
    )
    .await;
    create(
        &f.pods,
        f.pod("second", &high, "3", Some(&node), json!({}), false),
    )
    .await;
    // One of them is nominated; the other, seeing the room taken by an equal
    // priority nominee, finds nothing worth evicting.
    let nominee = wait::until("one nominee", T, || async {
        let pods = f
            .pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        Ok(pods
            .iter()
            .find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.nominated_node_name.as_ref())
                    .is_some()
            })
            .map(|p| p.name_any()))
    })
    .await
    .unwrap();
    let other = if nominee == "first" {
        "second"
    } else {
        "first"
    };
    let (_, message) = pods::wait_unschedulable_with(&f.pods, other, T, "preemption:")
        .await
        .unwrap();
    assert!(message.contains("preemption:"), "{message}");
    // The nomination is written before the victims are (as upstream's
    // asynchronous preemption): wait for them, then count.
    let victims = wait::until("the nominee's victims", T, || async {
        let v = f.victims().await;
        Ok((v.len() >= 3).then_some(v))
    })
    .await
    .unwrap();
    assert_eq!(
        victims.len(),
        3,
        "only the nominee's victims: {:?}",
        victims.iter().map(|v| v.name_any()).collect::<Vec<_>>()
    );
    let other_pod = f.pods.get(other).await.unwrap();
    assert_eq!(other_pod.status.and_then(|s| s.nominated_node_name), None);
    f.cleanup().await;
}

#[tokio::test]
async fn a_global_default_priority_class_sets_pod_priority() {
    let mut f = Fixture::new("default-class").await;
    let class = f.class("default", 4242, "PreemptLowerPriority", true).await;
    let mut p = f.pod("plain", &class, "100m", None, json!({}), false);
    p["spec"]
        .as_object_mut()
        .unwrap()
        .remove("priorityClassName");
    create(&f.pods, p).await;
    let pod = f.pods.get("plain").await.unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.priority, Some(4242));
    assert_eq!(spec.priority_class_name.as_deref(), Some(class.as_str()));
    f.node("any", "4").await;
    wait_scheduled(&f.pods, "plain", T).await.unwrap();
    f.cleanup().await;
}
