//! kube-proxy's healthCheckNodePort servers (pkg/proxy/healthcheck's
//! ServiceHealthServer): for each LoadBalancer Service with
//! `externalTrafficPolicy: Local`, an HTTP server on its healthCheckNodePort
//! tells the cloud's load balancer whether this node has a ready endpoint of
//! it (200) or not (503), so traffic only goes where it can be served locally.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::tracker::{ServiceName, Tracker};

/// What each health-checked Service needs: its port and its local ready
/// endpoints (distinct IPs over all its ports, as upstream counts them).
pub fn desired(tracker: &Tracker) -> BTreeMap<ServiceName, (u16, usize)> {
    let mut wanted: BTreeMap<ServiceName, (u16, BTreeSet<IpAddr>)> = BTreeMap::new();
    for (name, port) in tracker.service_ports() {
        if port.health_check_node_port != 0 {
            wanted
                .entry(name.service.clone())
                .or_insert_with(|| (port.health_check_node_port, BTreeSet::new()));
        }
    }
    for (name, _) in tracker.service_ports() {
        if let Some((_, ips)) = wanted.get_mut(&name.service) {
            (tracker.endpoints(name).iter())
                .filter(|e| e.is_local && e.ready)
                .for_each(|e| {
                    ips.insert(e.ip());
                });
        }
    }
    wanted
        .into_iter()
        .map(|(name, (port, ips))| (name, (port, ips.len())))
        .collect()
}

/// The answer, byte for byte as upstream's (its indented JSON included).
pub fn answer(service: &ServiceName, local_endpoints: usize, proxy_healthy: bool) -> Response {
    let status = if local_endpoints != 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let quote = |s: &str| serde_json::to_string(s).expect("a string");
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        quote(&service.namespace),
        quote(&service.name),
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "X-Load-Balancing-Endpoint-Weight",
        HeaderValue::from(local_endpoints),
    );
    response
}

struct Instance {
    port: u16,
    endpoints: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

/// The running servers, one per health-checked Service.
/// A healthCheckNodePort that could not be opened (taken by another
/// process, say): upstream reports it as a Warning Event on the Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedToListen {
    pub service: ServiceName,
    pub port: u16,
    pub error: String,
}

impl FailedToListen {
    /// Upstream's Event reason.
    pub const REASON: &'static str = "FailedToStartServiceHealthcheck";
    /// Upstream's Event action.
    pub const ACTION: &'static str = "Listen";

    /// Upstream's Event message, word for word.
    pub fn message(&self, node: &str) -> String {
        format!(
            "node {node} failed to start healthcheck \"{}\" on port {}: {}",
            self.service, self.port, self.error
        )
    }
}

pub struct ServiceHealthServers {
    runtime: tokio::runtime::Handle,
    proxy_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
    instances: Mutex<BTreeMap<ServiceName, Instance>>,
}

impl ServiceHealthServers {
    /// `proxy_healthy`: the proxy's own health (`serviceProxyHealthy`).
    pub fn new(
        runtime: tokio::runtime::Handle,
        proxy_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Self {
        ServiceHealthServers {
            runtime,
            proxy_healthy,
            instances: Mutex::default(),
        }
    }

    /// Starts servers for new Services, stops those of Services gone (or
    /// moved to another port), and updates the endpoint counts. A port that
    /// cannot be bound is reported and tried again on the next sync.
    pub fn sync(&self, wanted: &BTreeMap<ServiceName, (u16, usize)>) -> Vec<FailedToListen> {
        let mut problems = Vec::new();
        let mut instances = self.instances.lock().unwrap();
        instances.retain(|name, instance| {
            let keep = wanted
                .get(name)
                .is_some_and(|(port, _)| *port == instance.port);
            if !keep {
                instance.task.abort();
            }
            keep
        });
        for (name, (port, endpoints)) in wanted {
            if let Some(instance) = instances.get(name) {
                *instance.endpoints.lock().unwrap() = *endpoints;
                continue;
            }
            match self.start(name, *port, *endpoints) {
                Ok(instance) => {
                    instances.insert(name.clone(), instance);
                }
                Err(e) => problems.push(FailedToListen {
                    service: name.clone(),
                    port: *port,
                    error: e.to_string(),
                }),
            }
        }
        problems
    }

    fn start(&self, name: &ServiceName, port: u16, endpoints: usize) -> std::io::Result<Instance> {
        let listener = std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
        listener.set_nonblocking(true)?;
        let count = Arc::new(Mutex::new(endpoints));
        let (service, shared, healthy) = (name.clone(), count.clone(), self.proxy_healthy.clone());
        let app = Router::new().fallback(move || {
            let endpoints = *shared.lock().unwrap();
            let response = answer(&service, endpoints, healthy());
            async move { response }
        });
        let _guard = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let task = self.runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Instance {
            port,
            endpoints: count,
            task,
        })
    }
}

impl Drop for ServiceHealthServers {
    fn drop(&mut self) {
        for instance in self.instances.lock().unwrap().values() {
            instance.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::IpFamily;
    use serde_json::json;

    fn local_lb(tracker: &mut Tracker) {
        let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
                     "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                     "ports": [{"name": "a", "port": 80, "nodePort": 30001}, {"name": "b", "port": 81, "nodePort": 30002}]}
        }))
        .unwrap();
        tracker.apply_service(&service);
        let endpoint = |ip: &str, node: &str, ready: bool| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}});
        let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "lb-x", "labels": {"kubernetes.io/service-name": "lb"}},
            "addressType": "IPv4",
            "ports": [{"name": "a", "port": 8080}, {"name": "b", "port": 8081}],
            "endpoints": [endpoint("10.244.0.5", "me", true), endpoint("10.244.0.6", "me", false),
                          endpoint("10.244.1.5", "other", true)]
        }))
        .unwrap();
        tracker.apply_endpoint_slice(&slice);
    }

    #[test]
    fn counts_local_ready_endpoint_ips_once_over_all_ports() {
        let mut tracker = Tracker::new(IpFamily::V4, "me");
        local_lb(&mut tracker);
        let wanted = desired(&tracker);
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[&ServiceName::new("ns", "lb")], (32000, 1));
    }

    #[tokio::test]
    async fn answers_as_upstream() {
        use http_body_util::BodyExt;
        let response = answer(&ServiceName::new("ns", "lb"), 2, true);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["X-Load-Balancing-Endpoint-Weight"], "2");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        assert_eq!(
            answer(&ServiceName::new("ns", "lb"), 2, false).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            answer(&ServiceName::new("ns", "lb"), 0, true).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_taken_port_is_reported_in_upstreams_words_and_retried() {
        let servers =
            ServiceHealthServers::new(tokio::runtime::Handle::current(), Arc::new(|| true));
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let name = ServiceName::new("ns", "lb");
        let wanted: BTreeMap<_, _> = [(name.clone(), (port, 1))].into();
        let failed = servers.sync(&wanted);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!((failed[0].service.clone(), failed[0].port), (name, port));
        let message = failed[0].message("real-0");
        assert!(
            message.starts_with(&format!(
                "node real-0 failed to start healthcheck \"ns/lb\" on port {port}: "
            )),
            "{message}"
        );
        // Freed: the next sync opens it.
        drop(taken);
        assert_eq!(servers.sync(&wanted), vec![]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn servers_follow_the_services() {
        let servers =
            ServiceHealthServers::new(tokio::runtime::Handle::current(), Arc::new(|| true));
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let name = ServiceName::new("ns", "lb");
        assert!(servers.sync(&[(name.clone(), (port, 1))].into()).is_empty());
        let get = || async move {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
            let mut text = String::new();
            stream.read_to_string(&mut text).await?;
            Ok::<_, std::io::Error>(text)
        };
        let text = get().await.unwrap();
        assert!(
            text.starts_with("HTTP/1.") && text.contains(" 200 "),
            "{text}"
        );
        servers.sync(&[(name.clone(), (port, 0))].into());
        let text = get().await.unwrap();
        assert!(
            text.contains(" 503 ") && text.contains("\"localEndpoints\": 0"),
            "{text}"
        );
        servers.sync(&BTreeMap::new());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while get().await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server stops with its Service"
            );
            tokio::task::yield_now().await;
        }
    }
}
