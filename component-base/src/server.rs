//! The one HTTP server every component runs: Prometheus `/metrics` and the
//! `/healthz`, `/livez`, `/readyz` endpoints, on the component's well-known port.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::{Health, Report};

/// Metrics registry shared by the component's parts; they may register late.
pub type SharedRegistry = Arc<RwLock<Registry>>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr}: {source} (is another process using the port? pick one with --bind-address/--secure-port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("health and metrics server failed: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone)]
struct ServerState {
    registry: SharedRegistry,
    health: Health,
}

/// Routes of the health and metrics server, separate from binding so tests can
/// drive them without a socket.
pub fn router(registry: SharedRegistry, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(ServerState { registry, health })
}

/// Binds first so a busy port is reported at start-up, not from a background task.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    registry: SharedRegistry,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    axum::serve(listener, router(registry, health))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServerError::Serve)
}

async fn metrics(State(state): State<ServerState>) -> Response {
    let mut body = String::new();
    let encoded = {
        let registry = state.registry.read().expect("registry lock");
        prometheus_client::encoding::text::encode(&mut body, &registry)
    };
    match encoded {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}

fn report(report: Report) -> Response {
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, report.body).into_response()
}

/// The component's own answer on `path`, if it set one.
fn overridden(health: &Health, path: &str) -> Option<Response> {
    let handler = health.endpoint_override(path)?;
    let answer = handler();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(
        (
            status,
            [
                (header::CONTENT_TYPE, answer.content_type),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            answer.body,
        )
            .into_response(),
    )
}

async fn healthz(State(state): State<ServerState>) -> Response {
    overridden(&state.health, "/healthz").unwrap_or_else(|| report(state.health.liveness()))
}

async fn livez(State(state): State<ServerState>) -> Response {
    overridden(&state.health, "/livez").unwrap_or_else(|| report(state.health.liveness()))
}

async fn readyz(State(state): State<ServerState>) -> Response {
    report(state.health.readiness())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn serves_registered_metrics() {
        let registry: SharedRegistry = Default::default();
        let counter: Counter = Counter::default();
        registry.write().unwrap().register(
            "scheduler_schedule_attempts",
            "attempts",
            counter.clone(),
        );
        counter.inc();
        let (status, body) = get(router(registry, Health::new()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("scheduler_schedule_attempts_total 1"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn readyz_follows_checks() {
        let health = Health::new();
        health.register("leader-election");
        let app = router(Default::default(), health.clone());
        let (status, body) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("[-]leader-election failed"));
        health.set("leader-election", true);
        assert_eq!(get(app.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(app, "/livez").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_component_may_answer_healthz_and_livez_itself() {
        let health = Health::new();
        health.override_endpoint(
            "/healthz",
            std::sync::Arc::new(|| crate::health::EndpointResponse {
                status: 503,
                content_type: "application/json",
                body: "{\"healthy\":false}".into(),
            }),
        );
        let app = router(Default::default(), health);
        assert_eq!(
            get(app.clone(), "/healthz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"healthy\":false}".to_string()
            )
        );
        assert_eq!(get(app, "/livez").await.0, StatusCode::OK, "not overridden");
    }

    #[tokio::test]
    async fn busy_port_is_a_clear_error() {
        let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err().to_string();
        assert!(
            err.contains(&addr.to_string()) && err.contains("port"),
            "{err}"
        );
    }
}
