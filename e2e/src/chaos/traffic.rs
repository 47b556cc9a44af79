//! Traffic through a Service, with real nodes: a Deployment of the lab's
//! testserver pinned to the real nodes behind a ClusterIP Service (the
//! churn scales and rolls it now and then), and a prober that sends an HTTP
//! request to the ClusterIP from a real node's network namespace every
//! [`INTERVAL`] for the whole run — through that node's proxy rules, as a
//! pod or the node itself would — and logs each answer or failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::churn::SCHEDULER_NAME;
use super::invariants::traffic::ProbeResult;
use crate::realnode::REAL_NODE_LABEL;
use crate::realnode::forward::in_netns;
use crate::workloads;

/// The Deployment (label `app`) and Service of the traffic, on the real nodes.
pub const WORKLOAD: &str = "on-real-nodes";
/// The Service's port (to the pods' `http`, the testserver's 8080).
pub const PORT: u16 = 80;
/// One request every this long.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// A request that has not connected or answered by then failed.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long after the Service's endpoints settle a request may still fail:
/// the proxy's time to program a change (its sync runs at most once a
/// second) with room for a loaded 2-core machine.
pub const SETTLE: Duration = Duration::from_secs(5);

/// Two pods per real node, pinned there, behind a ClusterIP Service: what
/// the prober reaches, and what a cut node's pods and endpoints look like
/// to the invariants. A rolling update never takes a ready pod away before
/// its replacement is ready, so the Service always has endpoints.
pub async fn create_workload(
    client: &Client,
    namespace: &str,
    count: usize,
) -> Result<Service, String> {
    let mut server = crate::datapath::testserver_container(json!(["serve"]));
    server["ports"] = json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]);
    server["resources"] = json!({"requests": {"cpu": "10m", "memory": "16Mi"}});
    server["readinessProbe"] = json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1});
    let deployment: Deployment = workloads::deployment(
        WORKLOAD,
        2 * count as i32,
        "unused",
        json!({
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"spec": {
                "schedulerName": SCHEDULER_NAME,
                "priorityClassName": "chaos-high",
                "nodeSelector": {REAL_NODE_LABEL: "true"},
                "tolerations": [{"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [server],
            }},
        }),
    );
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .map_err(|e| format!("creating Deployment {WORKLOAD}: {e}"))?;
    let service: Service = workloads::service(WORKLOAD, WORKLOAD, json!("http"));
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &service)
        .await
        .map_err(|e| format!("creating Service {WORKLOAD}: {e}"))
}

/// The Service's ClusterIP address and port.
pub fn address(service: &Service) -> Result<SocketAddr, String> {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .ok_or("the traffic Service has no ClusterIP")?;
    format!("{ip}:{PORT}")
        .parse()
        .map_err(|e| format!("ClusterIP {ip}: {e}"))
}

/// One HTTP request to `to` from the calling thread's namespace: Ok once a
/// 200 came back.
fn request(to: SocketAddr) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&to, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("socket: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: chaos\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "answered {:?}",
            answer.lines().next().unwrap_or_default()
        ))
    }
}

/// Waits until the Service answers from the node (the proxy programmed it
/// and a backend is ready), or `timeout`.
pub async fn wait_answers(netns: PathBuf, to: SocketAddr, timeout: Duration) -> Result<(), String> {
    crate::wait::until(
        &format!(
            "the traffic Service {to} to answer from {}",
            netns.display()
        ),
        timeout,
        || {
            let netns = netns.clone();
            async move {
                let answered =
                    tokio::task::spawn_blocking(move || in_netns(&netns, move || Ok(request(to))))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                Ok(answered.ok())
            }
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// The prober: a thread in the node's network namespace, one request every
/// [`INTERVAL`] (paced, not waiting on anything) until stopped.
pub struct Prober {
    log: Arc<Mutex<Vec<ProbeResult>>>,
    stop: Arc<AtomicBool>,
    /// Taken by [`Prober::finish`].
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    pub netns: PathBuf,
    pub to: SocketAddr,
}

impl Prober {
    /// Starts probing `to` from `netns`; times are since `started`.
    pub fn start(netns: PathBuf, to: SocketAddr, started: Instant) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop, netns) = (log.clone(), stop.clone(), netns.clone());
            std::thread::spawn(move || {
                in_netns(&netns, move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let at = started.elapsed();
                        let error = request(to).err();
                        log.lock()
                            .expect("probe log")
                            .push(ProbeResult { at, error });
                        next += INTERVAL;
                        // A request that timed out overran its slot: the
                        // next goes at once, the schedule does not catch up.
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                    Ok(())
                })
            })
        };
        Self {
            log,
            stop,
            thread: Some(thread),
            netns,
            to,
        }
    }

    /// Stops the prober; its log.
    pub fn finish(mut self) -> Result<Vec<ProbeResult>, String> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the prober could not enter the node: {e}")),
            Err(_) => return Err("the prober panicked".into()),
        }
        Ok(std::mem::take(&mut *self.log.lock().expect("probe log")))
    }
}

/// A run that ends early (an error, Ctrl-C) stops the prober too, so no
/// thread keeps sending from the node while the lab is taken down.
impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
