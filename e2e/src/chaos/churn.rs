//! The churn workload: a seeded stream of changes — Deployments created,
//! scaled, rolled and deleted; Services whose selectors move between them;
//! standalone pods of mixed shapes and priorities (big low-priority fillers
//! that high-priority pods must preempt); volumes and claims for the binder;
//! with real nodes, the traffic Deployment scaled and rolled now and then.
//! The same seed gives the same sequence of actions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::binder;
use crate::workloads::{self, PAUSE_IMAGE};

pub const SCHEDULER_NAME: &str = "understudy-scheduler";
/// Priority classes of the run: fillers (the victims), small standalone pods,
/// and preemptors — the big standalone pods and the Deployments' pods, which
/// no standalone pod may preempt (or a rollout could never finish).
pub const PRIORITIES: [(&str, i32); 3] =
    [("chaos-low", 100), ("chaos-mid", 500), ("chaos-high", 1000)];

const MAX_DEPLOYMENTS: usize = 6;
const MAX_SERVICES: usize = 4;
const MAX_PODS: usize = 10;
const MAX_CLAIMS: usize = 8;
/// Big high-priority standalone pods alive at once: with the Deployments'
/// pods at their largest they still fit the three 32-CPU nodes, so every
/// Deployment can roll out once the fillers are preempted.
const MAX_BIG_PREEMPTORS: usize = 2;
/// One churn step in this many scales or rolls the traffic Deployment.
const TRAFFIC_ONE_IN: u32 = 15;

/// Creates the run's priority classes (kept if already there).
pub async fn create_priority_classes(client: &Client) -> Result<(), kube::Error> {
    let api: Api<PriorityClass> = Api::all(client.clone());
    for (name, value) in PRIORITIES {
        let class: PriorityClass = serde_json::from_value(json!({
            "metadata": {"name": name}, "value": value,
        }))
        .expect("priority class");
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The workload's own bookkeeping: what it made and still believes exists.
pub struct Churn {
    rng: fastrand::Rng,
    client: Client,
    pub namespace: String,
    /// The storage class of the run's volumes (and their label).
    pub class: String,
    next: u32,
    deployments: Vec<String>,
    services: Vec<String>,
    pods: Vec<String>,
    claims: Vec<String>,
    /// Actions taken, by kind.
    pub actions: BTreeMap<&'static str, u32>,
    /// Writes the apiserver refused or that failed (a fault's doing, mostly).
    pub api_errors: u32,
    /// With real nodes: the traffic Deployment's own draws (so the rest of
    /// the churn is the seed's as without) and its most replicas.
    traffic: Option<(fastrand::Rng, i32)>,
}

impl Churn {
    pub fn new(client: Client, namespace: &str, seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            client,
            namespace: namespace.into(),
            class: format!("{namespace}-volumes"),
            next: 0,
            deployments: vec![],
            services: vec![],
            pods: vec![],
            claims: vec![],
            actions: BTreeMap::new(),
            api_errors: 0,
            traffic: None,
        }
    }

    /// Scales (1 to `max_replicas`) and rolls the traffic Deployment now and then.
    pub fn with_traffic(mut self, seed: u64, max_replicas: i32) -> Self {
        self.traffic = Some((fastrand::Rng::with_seed(seed ^ 0x7a4f_f1c0), max_replicas));
        self
    }

    fn name(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{}", self.next)
    }

    /// One seeded action; returns what it did. A failed write counts as an
    /// API error and the workload goes on.
    pub async fn step(&mut self) -> String {
        let traffic = self.traffic.as_mut().and_then(|(rng, max)| {
            (rng.u32(0..TRAFFIC_ONE_IN) == 0).then(|| rng.bool().then(|| rng.i32(1..=*max)))
        });
        let (kind, result) = match traffic {
            Some(Some(replicas)) => ("traffic-scale", self.scale_traffic(replicas).await),
            Some(None) => ("traffic-roll", self.roll_traffic().await),
            None => self.action().await,
        };
        *self.actions.entry(kind).or_default() += 1;
        match result {
            Ok(what) => what,
            Err(e) => {
                self.api_errors += 1;
                format!("{kind} failed: {e}")
            }
        }
    }

    async fn scale_traffic(&mut self, replicas: i32) -> Result<String, kube::Error> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(
            super::traffic::WORKLOAD,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
        Ok(format!(
            "scaled the traffic Deployment {} to {replicas}",
            super::traffic::WORKLOAD
        ))
    }

    async fn roll_traffic(&mut self) -> Result<String, kube::Error> {
        let revision = self.traffic.as_mut().map_or(0, |(rng, _)| rng.u32(..));
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(
            super::traffic::WORKLOAD,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
                "chaos/revision": revision.to_string(),
            }}}}})),
        )
        .await?;
        Ok(format!(
            "rolled the traffic Deployment {}",
            super::traffic::WORKLOAD
        ))
    }

    /// One seeded action of the workload proper.
    async fn action(&mut self) -> (&'static str, Result<String, kube::Error>) {
        let choice = self.rng.u32(0..100);
        match choice {
            0..=14 if self.deployments.len() < MAX_DEPLOYMENTS => {
                ("deployment-create", self.create_deployment().await)
            }
            0..=24 if !self.deployments.is_empty() => ("deployment-scale", self.scale().await),
            25..=34 if !self.deployments.is_empty() => ("deployment-roll", self.roll().await),
            35..=39 if self.deployments.len() > 2 => {
                ("deployment-delete", self.delete_deployment().await)
            }
            40..=47 if self.services.len() < MAX_SERVICES && !self.deployments.is_empty() => {
                ("service-create", self.create_service().await)
            }
            40..=54 if !self.services.is_empty() && !self.deployments.is_empty() => {
                ("service-retarget", self.retarget_service().await)
            }
            55..=74 if self.pods.len() < MAX_PODS => ("pod-create", self.create_pod().await),
            55..=82 if !self.pods.is_empty() => ("pod-delete", self.delete_pod().await),
            83..=93 if self.claims.len() < MAX_CLAIMS => {
                ("claim-create", self.create_claim().await)
            }
            83..=99 if !self.claims.is_empty() => ("claim-delete", self.delete_claim().await),
            _ => ("deployment-scale", self.scale_or_create().await),
        }
    }

    async fn scale_or_create(&mut self) -> Result<String, kube::Error> {
        if self.deployments.is_empty() {
            self.create_deployment().await
        } else {
            self.scale().await
        }
    }

    fn pick(&mut self, of: &[String]) -> String {
        of[self.rng.usize(..of.len())].clone()
    }

    fn strategy(&mut self) -> Value {
        if self.rng.u8(0..5) == 0 {
            return json!({"type": "Recreate", "rollingUpdate": null});
        }
        let surge = [json!(0), json!(1), json!("25%"), json!("50%")][self.rng.usize(..4)].clone();
        // Both zero is refused by validation: a rollout could never move.
        let unavailable = if surge == json!(0) {
            [json!(1), json!("25%")][self.rng.usize(..2)].clone()
        } else {
            [json!(0), json!(1), json!("25%")][self.rng.usize(..3)].clone()
        };
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    async fn create_deployment(&mut self) -> Result<String, kube::Error> {
        let name = self.name("web");
        let replicas = self.rng.i32(1..=5);
        let cpu = format!("{}m", 100 * self.rng.u32(1..=5));
        let strategy = self.strategy();
        let deployment = workloads::deployment(
            &name,
            replicas,
            PAUSE_IMAGE,
            json!({
                "strategy": strategy,
                "template": {"spec": {
                    "schedulerName": SCHEDULER_NAME,
                    "priorityClassName": "chaos-high",
                    "containers": [{
                        "name": "c", "image": PAUSE_IMAGE,
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
                    }],
                }},
            }),
        );
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &deployment).await?;
        self.deployments.push(name.clone());
        Ok(format!(
            "created Deployment {name} ({replicas} replicas, {cpu})"
        ))
    }

    async fn scale(&mut self) -> Result<String, kube::Error> {
        let name = self.pick(&self.deployments.clone());
        let replicas = self.rng.i32(0..=6);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
        Ok(format!("scaled Deployment {name} to {replicas}"))
    }

    async fn roll(&mut self) -> Result<String, kube::Error> {
        let name = self.pick(&self.deployments.clone());
        let revision = self.rng.u32(..);
        let strategy = self.strategy();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "strategy": strategy,
                "template": {"metadata": {"annotations": {"chaos/revision": revision.to_string()}}},
            }})),
        )
        .await?;
        Ok(format!("rolled Deployment {name}"))
    }

    async fn delete_deployment(&mut self) -> Result<String, kube::Error> {
        let index = self.rng.usize(..self.deployments.len());
        let name = self.deployments.remove(index);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        ignore_missing(api.delete(&name, &DeleteParams::background()).await)?;
        Ok(format!("deleted Deployment {name}"))
    }

    async fn create_service(&mut self) -> Result<String, kube::Error> {
        let name = self.name("svc");
        let app = self.pick(&self.deployments.clone());
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        api.create(
            &PostParams::default(),
            &workloads::service(&name, &app, json!("http")),
        )
        .await?;
        self.services.push(name.clone());
        Ok(format!("created Service {name} selecting app={app}"))
    }

    async fn retarget_service(&mut self) -> Result<String, kube::Error> {
        let name = self.pick(&self.services.clone());
        let app = self.pick(&self.deployments.clone());
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": app}}})),
        )
        .await?;
        Ok(format!("Service {name} now selects app={app}"))
    }

    async fn create_pod(&mut self) -> Result<String, kube::Error> {
        // (priority class, cpu, memory): small pods, big low-priority fillers
        // (two or three fill a node) and big high-priority pods that find
        // room only by preempting fillers.
        let shapes = [
            ("chaos-low", "250m", "128Mi"),
            ("chaos-low", "12", "8Gi"),
            ("chaos-low", "12", "8Gi"),
            ("chaos-mid", "1", "1Gi"),
            ("chaos-high", "16", "16Gi"),
        ];
        let (mut priority, mut cpu, mut memory) = shapes[self.rng.usize(..shapes.len())];
        let big_preemptors = self.pods.iter().filter(|p| p.starts_with("high-")).count();
        if priority == "chaos-high" && big_preemptors >= MAX_BIG_PREEMPTORS {
            (priority, cpu, memory) = shapes[1];
        }
        let name = self.name(priority.trim_start_matches("chaos-"));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"chaos/shape": priority}},
            "spec": {
                "schedulerName": SCHEDULER_NAME,
                "priorityClassName": priority,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": PAUSE_IMAGE,
                                "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
            },
        }))
        .expect("pod");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &pod).await?;
        self.pods.push(name.clone());
        Ok(format!("created Pod {name} ({priority}, {cpu} cpu)"))
    }

    async fn delete_pod(&mut self) -> Result<String, kube::Error> {
        let index = self.rng.usize(..self.pods.len());
        let name = self.pods.remove(index);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        // Preemption may have deleted it already.
        ignore_missing(api.delete(&name, &DeleteParams::default()).await)?;
        Ok(format!("deleted Pod {name}"))
    }

    async fn create_claim(&mut self) -> Result<String, kube::Error> {
        let n = self.next + 1;
        let name = self.name("claim");
        let volume_name = format!("{}-{n}", self.class);
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        volumes
            .create(
                &PostParams::default(),
                &binder::volume(&volume_name, &self.class),
            )
            .await?;
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &self.namespace);
        claims
            .create(&PostParams::default(), &binder::claim(&name, &self.class))
            .await?;
        self.claims.push(name.clone());
        Ok(format!(
            "created PersistentVolume {volume_name} and claim {name}"
        ))
    }

    async fn delete_claim(&mut self) -> Result<String, kube::Error> {
        let index = self.rng.usize(..self.claims.len());
        let name = self.claims.remove(index);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.namespace);
        ignore_missing(api.delete(&name, &DeleteParams::default()).await)?;
        Ok(format!("deleted claim {name}"))
    }
}

fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
