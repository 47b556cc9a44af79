//! The HTTP side of the extender API: routes kube-scheduler's POSTs to a
//! [`Backend`], turning bad input into 4xx replies (never a panic), and serves
//! them over plain TCP or TLS.

use std::any::Any;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use k8s_openapi::api::core::v1::Pod;

use super::types::{
    DecodeError, ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, ExtenderPreemptionResult, HostPriorityList, decode,
};
use super::validate;

/// How large a request body may be before it is refused with 413.
///
/// kube-scheduler sends a non-nodeCacheCapable extender every candidate Node
/// object in full (managedFields stripped, but with up to 50 images each:
/// 8–15 KiB per node in practice), and with `percentageOfNodesToScore: 100`
/// the candidates are every node. A fixed limit that admits 5000 such nodes
/// (~75 MB) would also admit any 50 MB junk body in a small cluster, so the
/// default grows with the cluster this scheduler knows: see
/// [`DEFAULT_BODY_LIMIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLimit {
    /// This many bytes, whatever the cluster (`--extender-max-request-bytes`).
    Fixed(usize),
    /// `base` plus `per_node` for each node in the scheduler's cache.
    PerNode { base: usize, per_node: usize },
}

impl BodyLimit {
    /// The limit in bytes for a cluster of `nodes` nodes.
    pub fn bytes(self, nodes: usize) -> usize {
        match self {
            BodyLimit::Fixed(bytes) => bytes,
            BodyLimit::PerNode { base, per_node } => {
                base.saturating_add(per_node.saturating_mul(nodes))
            }
        }
    }
}

/// The default body limit: 16 MiB, plus 32 KiB per known node.
///
/// - 32 KiB per node is twice a heavy Node object (50 images with digests and
///   tags, conditions, addresses, labels), so a full Node list always fits:
///   5000 nodes give 16 MiB + 156 MiB = 172 MiB.
/// - The 16 MiB base covers what does not grow with the node count: the Pod,
///   and preemption's victims (`NodeNameToVictims` carries full Pods, a few
///   KiB each, for at most the candidate nodes) — 16 MiB is ~4000 victim
///   Pods of 4 KiB — and it is what a cache that has not synced yet allows.
/// - A 3-node cluster accepts 16.1 MiB: a 50 MB body there is no real
///   request and is refused before it is read.
pub const DEFAULT_BODY_LIMIT: BodyLimit = BodyLimit::PerNode {
    base: 16 << 20,
    per_node: 32 << 10,
};

/// How long a request body may take to arrive. kube-scheduler gives up on an
/// extender call after its `httpTimeout` (5 s by default, the whole call), so
/// a body still arriving after 30 s is a stalled or hostile client: it gets
/// 408 and its connection is closed, rather than holding a task and a buffer.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server accepts: body size and the time to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub body: BodyLimit,
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body: DEFAULT_BODY_LIMIT,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

/// How long a client may take to finish the TLS handshake before it is dropped,
/// so a stalled client cannot hold resources.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a verb could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request is well-formed JSON but unusable (e.g. no Pod): 400.
    BadRequest(String),
    /// Something on our side failed (a plugin error, a poisoned lock): 500.
    Internal(String),
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        Failure::BadRequest(e.to_string())
    }
}

/// What answers the verbs. The scheduler implements it over its cache; tests
/// implement it without an apiserver.
pub trait Backend: Send + Sync + 'static {
    /// CPU work: called on a blocking thread.
    fn filter(&self, args: ExtenderArgs) -> Result<ExtenderFilterResult, Failure>;
    /// CPU work: called on a blocking thread.
    fn prioritize(&self, args: ExtenderArgs) -> Result<HostPriorityList, Failure>;
    /// CPU work: called on a blocking thread.
    fn preempt(&self, args: ExtenderPreemptionArgs) -> Result<ExtenderPreemptionResult, Failure>;
    /// An API call: awaited on the async runtime. Failures go in the reply's
    /// `Error`, as kube-scheduler expects.
    fn bind(&self, args: ExtenderBindingArgs)
    -> impl Future<Output = ExtenderBindingResult> + Send;
    /// How many nodes the backend knows, for [`BodyLimit::PerNode`].
    fn node_count(&self) -> usize {
        0
    }
}

/// The four extender verbs. kube-scheduler POSTs to `urlPrefix + "/" + verb`,
/// so the verb is the last segment of the path, whatever prefix precedes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Filter,
    Prioritize,
    Preempt,
    Bind,
}

impl Verb {
    pub fn from_path(path: &str) -> Option<Self> {
        match path.rsplit('/').find(|s| !s.is_empty())? {
            "filter" => Some(Verb::Filter),
            "prioritize" => Some(Verb::Prioritize),
            "preempt" => Some(Verb::Preempt),
            "bind" => Some(Verb::Bind),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Filter => "filter",
            Verb::Prioritize => "prioritize",
            Verb::Preempt => "preempt",
            Verb::Bind => "bind",
        }
    }
}

/// The extender routes over `backend` with the default [`Limits`].
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    router_with_limits(backend, Limits::default())
}

/// As [`router`] with other limits (a `--extender-max-request-bytes`; tests
/// use small ones).
pub fn router_with_limits<B: Backend>(backend: Arc<B>, limits: Limits) -> Router {
    // One fallback instead of a route per verb: any prefix may precede the
    // verb, and method/verb checks then come before reading the body. The
    // body is read by `read_body` under `limits`, not by an extractor, so
    // axum's own default limit (2 MB) is lifted.
    Router::new()
        .fallback(handle::<B>)
        .with_state((backend, limits))
        .layer(DefaultBodyLimit::disable())
}

/// The body, or the reply refusing it: 413 past the limit (judged on
/// Content-Length before anything is read, then on the bytes themselves for
/// a chunked body), 408 when it does not arrive in time, 400 when the
/// connection breaks mid-body.
async fn read_body(request: Request, limit: usize, timeout: Duration) -> Result<Bytes, Response> {
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than the extender's limit of {limit} bytes \
                 (--extender-max-request-bytes; by default 16 MiB plus 32 KiB per node)"
            ),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), limit);
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}"),
        )),
        Err(_) => {
            let mut response = text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}s",
                    timeout.as_secs_f64()
                ),
            );
            // The rest of the body may still be on its way: do not read it as
            // the next request.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            Err(response)
        }
    }
}

async fn handle<B: Backend>(
    State((backend, limits)): State<(Arc<B>, Limits)>,
    request: Request,
) -> Response {
    let start = Instant::now();
    let path = request.uri().path().to_owned();
    let Some(verb) = Verb::from_path(&path) else {
        tracing::debug!(%path, "extender request for an unknown verb");
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no extender verb at {path}: the path must end in filter, prioritize, preempt or bind"
            ),
        );
    };
    if request.method() != Method::POST {
        tracing::debug!(%path, method = %request.method(), "extender request with a wrong method");
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} accepts POST only", verb.as_str()),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    let limit = limits.body.bytes(backend.node_count());
    let body = match read_body(request, limit, limits.read_timeout).await {
        Ok(body) => body,
        Err(response) => {
            tracing::debug!(
                verb = verb.as_str(),
                status = response.status().as_u16(),
                limit,
                "extender request body refused"
            );
            return response;
        }
    };
    let size = body.len();
    let response = match verb {
        Verb::Bind => match decode::<ExtenderBindingArgs>(&body) {
            Ok(args) => {
                // A panic in the bind path must not take the connection's
                // task down without a reply.
                match AssertUnwindSafe(backend.bind(args)).catch_unwind().await {
                    Ok(result) => json(&result),
                    Err(panic) => internal_panic(verb, panic),
                }
            }
            Err(e) => failure(Failure::from(e)),
        },
        _ => {
            // Filtering and scoring take CPU (and rayon's pool): keep them off
            // the async workers. A panic there surfaces as a JoinError.
            let task =
                tokio::task::spawn_blocking(move || answer_cpu_verb(backend.as_ref(), verb, &body));
            match task.await {
                Ok(response) => response,
                Err(e) if e.is_panic() => internal_panic(verb, e.into_panic()),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
    };
    tracing::debug!(
        verb = verb.as_str(),
        %path,
        bytes = size,
        status = response.status().as_u16(),
        elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
        "extender request"
    );
    response
}

fn answer_cpu_verb<B: Backend>(backend: &B, verb: Verb, body: &[u8]) -> Response {
    let reply = match verb {
        Verb::Filter => decode::<ExtenderArgs>(body)
            .map_err(Failure::from)
            .and_then(checked_args)
            .and_then(|args| backend.filter(args))
            .map(|r| json(&r)),
        Verb::Prioritize => decode::<ExtenderArgs>(body)
            .map_err(Failure::from)
            .and_then(checked_args)
            .and_then(|args| backend.prioritize(args))
            .map(|r| json(&r)),
        Verb::Preempt => decode::<ExtenderPreemptionArgs>(body)
            .map_err(Failure::from)
            .and_then(|args| {
                check_pod(args.pod.as_ref())?;
                Ok(args)
            })
            .and_then(|args| backend.preempt(args))
            .map(|r| json(&r)),
        Verb::Bind => Err(Failure::Internal("bind is not a CPU verb".into())),
    };
    reply.unwrap_or_else(failure)
}

/// Refuses a pod the apiserver would not have stored (see [`validate`]).
fn check_pod(pod: Option<&Pod>) -> Result<(), Failure> {
    let problems = pod.map(validate::pod_problems).unwrap_or_default();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::BadRequest(format!(
            "invalid Pod: {}",
            problems.join("; ")
        )))
    }
}

fn checked_args(args: ExtenderArgs) -> Result<ExtenderArgs, Failure> {
    check_pod(args.pod.as_ref())?;
    if let Some(problem) = args.nodes.as_ref().and_then(validate::node_list_problem) {
        return Err(Failure::BadRequest(problem));
    }
    Ok(args)
}

fn internal_panic(verb: Verb, panic: Box<dyn Any + Send>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    tracing::error!(verb = verb.as_str(), panic = %what, "extender handler panicked");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{} failed: {what}", verb.as_str()),
    )
}

fn failure(f: Failure) -> Response {
    match f {
        Failure::BadRequest(msg) => text(StatusCode::BAD_REQUEST, msg),
        Failure::Internal(msg) => text(StatusCode::INTERNAL_SERVER_ERROR, msg),
    }
}

fn text(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the reply: {e}"),
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading TLS certificate {path}: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS certificate file {0} holds no certificate")]
    NoCert(String),
    #[error("reading TLS private key {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS certificate and key do not make a server configuration: {0}")]
    Config(rustls::Error),
}

/// A TLS server configuration from PEM files (certificate chain, then key),
/// speaking HTTP/1.1 only, as the server does.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|source| TlsError::Cert {
            path: cert.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.display().to_string(),
        source,
    })?;
    // The provider is named so the result does not depend on which rustls
    // backends other crates in the build happen to enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client may take to send a request's headers (hyper's
/// `header_read_timeout`, also the longest a kept-alive connection idles):
/// without it a client sending half a request line would hold its connection
/// for ever. axum's own `serve` sets no timer, so no such timeout.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` (over TLS when `tls` is given) until
/// `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with_header_timeout(listener, router, tls, shutdown, HEADER_READ_TIMEOUT).await
}

/// As [`serve`], with another header timeout (tests use a short one).
pub async fn serve_with_header_timeout(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
    header_timeout: Duration,
) -> io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually out of file descriptors: back off, as axum does.
                    tracing::warn!(error = %e, "extender: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (router, acceptor, shutdown) = (router.clone(), acceptor.clone(), shutdown.clone());
        // Each connection (and its TLS handshake) in its own task, so one
        // slow client never delays the next.
        connections.spawn(async move {
            match acceptor {
                None => serve_connection(tcp, router, shutdown, header_timeout).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, router, shutdown, header_timeout).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "extender: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "extender: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// HTTP/1.1 on one connection until it closes, or until `shutdown`, when the
/// request in flight (if any) is finished first.
async fn serve_connection<I>(
    io: I,
    router: Router,
    shutdown: CancellationToken,
    header_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "extender: connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extender::types::{HostPriority, MetaPod, MetaVictims};
    use axum::body::Body;
    use futures::StreamExt;
    use serde_json::{Value, json};
    use std::net::SocketAddr;
    use tower::ServiceExt;

    /// Answers from the request alone: every node fits, scores 5, one victim
    /// per node; a node named "boom" panics, to prove a panic becomes a 500.
    struct Echo;

    fn names(args: &ExtenderArgs) -> Vec<String> {
        match (&args.nodes, &args.node_names) {
            (Some(l), _) => l
                .items
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect(),
            (None, Some(n)) => n.clone(),
            _ => vec![],
        }
    }

    impl Backend for Echo {
        fn filter(&self, args: ExtenderArgs) -> Result<ExtenderFilterResult, Failure> {
            if args.pod.is_none() {
                return Err(Failure::BadRequest("Pod is required".into()));
            }
            let names = names(&args);
            if names.iter().any(|n| n == "boom") {
                panic!("boom");
            }
            Ok(ExtenderFilterResult {
                node_names: Some(names),
                ..Default::default()
            })
        }
        fn prioritize(&self, args: ExtenderArgs) -> Result<HostPriorityList, Failure> {
            Ok(names(&args)
                .into_iter()
                .map(|host| HostPriority { host, score: 5 })
                .collect())
        }
        fn preempt(
            &self,
            args: ExtenderPreemptionArgs,
        ) -> Result<ExtenderPreemptionResult, Failure> {
            Ok(ExtenderPreemptionResult {
                node_name_to_meta_victims: args
                    .node_name_to_meta_victims
                    .into_keys()
                    .map(|n| {
                        let v = MetaVictims {
                            pods: vec![MetaPod { uid: "v".into() }],
                            num_pdb_violations: 0,
                        };
                        (n, v)
                    })
                    .collect(),
            })
        }
        async fn bind(&self, args: ExtenderBindingArgs) -> ExtenderBindingResult {
            if args.node == "boom" {
                panic!("bind boom");
            }
            ExtenderBindingResult {
                error: if args.node.is_empty() {
                    "no node".into()
                } else {
                    String::new()
                },
            }
        }
    }

    fn small_limits(bytes: usize) -> Limits {
        Limits {
            body: BodyLimit::Fixed(bytes),
            read_timeout: Duration::from_secs(5),
        }
    }

    async fn call(
        router: &Router,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    async fn post(router: &Router, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, body) = call(router, Method::POST, path, body.to_string().into_bytes()).await;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        (status, value)
    }

    #[test]
    fn verbs_come_from_the_last_path_segment() {
        assert_eq!(Verb::from_path("/filter"), Some(Verb::Filter));
        assert_eq!(
            Verb::from_path("/scheduler/prioritize"),
            Some(Verb::Prioritize)
        );
        assert_eq!(Verb::from_path("/a/b/preempt/"), Some(Verb::Preempt));
        assert_eq!(Verb::from_path("bind"), Some(Verb::Bind));
        assert_eq!(Verb::from_path("/filter/x"), None);
        assert_eq!(Verb::from_path("/"), None);
        assert_eq!(Verb::from_path("/Filter"), None);
    }

    #[tokio::test]
    async fn each_verb_answers_in_upstream_shape() {
        let r = router(Arc::new(Echo));
        let (status, body) = post(
            &r,
            "/filter",
            json!({"Pod": {"metadata": {"name": "p"}}, "NodeNames": ["n1", "n2"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["NodeNames"], json!(["n1", "n2"]));
        assert_eq!(body["Error"], json!(""));

        let (status, body) = post(
            &r,
            "/scheduler/prioritize",
            json!({"pod": {}, "nodenames": ["n1"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!([{"Host": "n1", "Score": 5}]));

        let (status, body) = post(
            &r,
            "/preempt",
            json!({"Pod": {}, "NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "x"}], "NumPDBViolations": 0}}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "v"}], "NumPDBViolations": 0}}})
        );

        let (status, body) = post(
            &r,
            "/bind",
            json!({"PodName": "p", "PodNamespace": "ns", "PodUID": "u", "Node": ""}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"Error": "no node"}));
    }

    #[tokio::test]
    async fn bad_requests_get_4xx_with_a_reason() {
        let r = router_with_limits(Arc::new(Echo), small_limits(1024));
        let (status, body) = call(&r, Method::POST, "/filter", b"{\"Pod\": ".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            String::from_utf8_lossy(&body).contains("not valid JSON"),
            "{}",
            String::from_utf8_lossy(&body)
        );

        let (status, body) = post(&r, "/filter", json!({"NodeNames": ["n1"]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!("Pod is required"));

        let (status, _) = call(&r, Method::POST, "/filter", vec![b' '; 2048]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

        let (status, _) = call(&r, Method::GET, "/filter", vec![]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let request = axum::http::Request::builder()
            .method(Method::PUT)
            .uri("/bind")
            .body(Body::empty())
            .unwrap();
        let response = r.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST");

        let (status, _) = post(&r, "/healthz", json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// Echo in a cluster of `nodes` nodes, for the per-node body limit.
    struct Sized(usize);

    impl Backend for Sized {
        fn filter(&self, args: ExtenderArgs) -> Result<ExtenderFilterResult, Failure> {
            Echo.filter(args)
        }
        fn prioritize(&self, args: ExtenderArgs) -> Result<HostPriorityList, Failure> {
            Echo.prioritize(args)
        }
        fn preempt(
            &self,
            args: ExtenderPreemptionArgs,
        ) -> Result<ExtenderPreemptionResult, Failure> {
            Echo.preempt(args)
        }
        async fn bind(&self, args: ExtenderBindingArgs) -> ExtenderBindingResult {
            Echo.bind(args).await
        }
        fn node_count(&self) -> usize {
            self.0
        }
    }

    /// A Node as kubelet reports it with its image list full (50 images,
    /// each with a digest and a tag), as kube-scheduler sends it
    /// (managedFields stripped).
    fn heavy_node(i: usize) -> Value {
        let images: Vec<Value> = (0..50)
            .map(|j| {
                json!({"names": [
                    format!("registry.example.com/team-{j}/service-{j}@sha256:{:064x}", i * 50 + j),
                    format!("registry.example.com/team-{j}/service-{j}:v1.{j}.0"),
                ], "sizeBytes": 123_456_789})
            })
            .collect();
        let condition = |t: &str| {
            json!({"type": t, "status": "False", "lastHeartbeatTime": "2026-12-06T19:00:00Z",
            "lastTransitionTime": "2026-12-01T00:00:00Z", "reason": format!("Kubelet{t}"), "message": "kubelet has sufficient resources available"})
        };
        let conditions: Vec<Value> = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
            .map(condition)
            .into();
        json!({
            "metadata": {"name": format!("node-{i:05}"), "uid": "6f1c3a52-6a8f-4d7e-9a1b-2c3d4e5f6a7b",
                "resourceVersion": "123456789", "creationTimestamp": "2026-12-01T00:00:00Z",
                "labels": {"kubernetes.io/hostname": format!("node-{i:05}"), "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "m5.2xlarge",
                    "topology.kubernetes.io/zone": "eu-west-1a", "topology.kubernetes.io/region": "eu-west-1",
                    "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                    "csi.volume.kubernetes.io/nodeid": "{\"ebs.csi.aws.com\":\"i-0123456789abcdef0\"}"}},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "providerID": "aws:///eu-west-1a/i-0123456789abcdef0",
                "taints": [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "8", "memory": "32408228Ki", "pods": "110", "ephemeral-storage": "104845292Ki", "hugepages-2Mi": "0"},
                "allocatable": {"cpu": "7910m", "memory": "31391396Ki", "pods": "110", "ephemeral-storage": "95551679124", "hugepages-2Mi": "0"},
                "conditions": conditions,
                "addresses": [{"type": "InternalIP", "address": "10.0.12.34"}, {"type": "Hostname", "address": format!("node-{i:05}")},
                    {"type": "InternalDNS", "address": "ip-10-0-12-34.eu-west-1.compute.internal"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": "ec2a0b1c2d3e4f5a6b7c8d9e0f1a2b3c", "systemUUID": "ec2a0b1c-2d3e-4f5a-6b7c-8d9e0f1a2b3c",
                    "bootID": "0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e", "kernelVersion": "6.1.0-18-cloud-amd64",
                    "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.24",
                    "kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
                "images": images,
            },
        })
    }

    #[test]
    fn the_default_limit_admits_every_node_in_full_and_refuses_junk_in_small_clusters() {
        let node = serde_json::to_vec(&heavy_node(4999)).unwrap().len();
        assert!(
            (8 << 10..=16 << 10).contains(&node),
            "a heavy node is {node} bytes"
        );
        // kube-scheduler's filter body for 5000 such nodes, with room for the Pod.
        let body_5000 = 5000 * (node + 1) + (64 << 10);
        assert!(body_5000 < DEFAULT_BODY_LIMIT.bytes(5000), "{body_5000}");
        assert!(body_5000 > 50_000_000, "the fixture is as large as claimed");
        // A small cluster: 50 MB is no real request.
        assert!(DEFAULT_BODY_LIMIT.bytes(3) < 20 << 20);
        assert_eq!(BodyLimit::Fixed(7).bytes(5000), 7);
        assert_eq!(
            BodyLimit::PerNode {
                base: usize::MAX,
                per_node: 1
            }
            .bytes(2),
            usize::MAX
        );
    }

    #[tokio::test]
    async fn a_50_mb_body_gets_413_with_the_limit_before_it_is_read() {
        let r = router(Arc::new(Sized(3)));
        let limit = DEFAULT_BODY_LIMIT.bytes(3);
        // Declared: refused on Content-Length alone.
        let (status, reply) = call(&r, Method::POST, "/filter", vec![b' '; 50_000_000]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.contains(&format!("limit of {limit} bytes")),
            "{reply}"
        );
        assert!(reply.contains("--extender-max-request-bytes"), "{reply}");
        // Chunked, no length: refused once the limit is passed.
        let chunks = futures::stream::iter(
            (0..64).map(|_| Ok::<_, io::Error>(Bytes::from(vec![b' '; 1 << 20]))),
        );
        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/prioritize")
            .body(Body::from_stream(chunks))
            .unwrap();
        let response = r.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // The same body is accepted where the cluster is large enough.
        let r = router(Arc::new(Sized(5000)));
        let mut body = br#"{"Pod": {}, "NodeNames": ["n1"]}"#.to_vec();
        body.resize(50_000_000, b' ');
        let (status, _) = call(&r, Method::POST, "/filter", body).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_gets_408() {
        let r = router_with_limits(Arc::new(Echo), small_limits(1 << 20));
        // One chunk, then nothing, forever: the paused clock jumps to the
        // deadline as soon as the handler waits.
        let chunks =
            futures::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"{\"Pod\": {"))])
                .chain(futures::stream::pending());
        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/filter")
            .body(Body::from_stream(chunks))
            .unwrap();
        let response = r.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn invalid_pods_and_fields_are_refused_by_name() {
        let r = router(Arc::new(Echo));
        let abc = json!({"Pod": {"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": "abc"}}}]}}, "NodeNames": ["n1"]});
        for verb in ["/filter", "/prioritize"] {
            let (status, body) = post(&r, verb, abc.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{verb}");
            assert_eq!(
                body,
                json!(
                    "invalid Pod: Pod.spec.containers[0].resources.requests[cpu]: invalid quantity \"abc\""
                ),
                "{verb}"
            );
        }
        let (status, body) = post(
            &r,
            "/preempt",
            json!({"Pod": abc["Pod"], "NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "x"}]}}}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.as_str().unwrap().contains("requests[cpu]"), "{body}");
        // A wrong type is named by its path (a number is a valid quantity,
        // as in Go).
        let (status, body) = post(
            &r,
            "/filter",
            json!({"Pod": {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": 2}, "limits": []}}]}}}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.as_str()
                .unwrap()
                .contains("Pod.spec.containers[0].resources.limits: invalid type: sequence"),
            "{body}"
        );
        let (status, body) = post(
            &r,
            "/filter",
            json!({"Pod": {}, "Nodes": {"items": [{"metadata": {}}]}}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!("Nodes.items[0].metadata.name: required"));
    }

    #[tokio::test]
    async fn a_panicking_backend_yields_500_and_the_server_goes_on() {
        let r = router(Arc::new(Echo));
        let (status, body) = post(&r, "/filter", json!({"Pod": {}, "NodeNames": ["boom"]})).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.as_str().unwrap().contains("boom"), "{body}");
        let (status, _) = post(&r, "/bind", json!({"PodName": "p", "Node": "boom"})).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let (status, _) = post(&r, "/filter", json!({"Pod": {}, "NodeNames": ["ok"]})).await;
        assert_eq!(status, StatusCode::OK);
    }

    // Random and mutated bodies through the real decisions: fuzz_tests.rs.

    /// Clients that stop mid-headers or mid-body over a real socket: the
    /// connection is answered 408 or closed within the timeouts, and the
    /// server keeps serving others meanwhile.
    #[tokio::test]
    async fn stalled_clients_are_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stop = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            body: BodyLimit::Fixed(1 << 20),
            read_timeout: Duration::from_millis(300),
        };
        let server = tokio::spawn(serve_with_header_timeout(
            listener,
            router_with_limits(Arc::new(Echo), limits),
            None,
            stop.clone(),
            Duration::from_millis(300),
        ));
        async fn reply_to(addr: SocketAddr, sent: &[u8]) -> String {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            conn.write_all(sent).await.unwrap();
            let mut reply = vec![];
            // The deadline is far above the server's timeouts: reaching it
            // means the server kept the connection open.
            tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut reply))
                .await
                .expect("the server closed the stalled connection")
                .unwrap();
            String::from_utf8_lossy(&reply).into_owned()
        }
        let half_headers = reply_to(addr, b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Le").await;
        assert!(
            half_headers.is_empty() || half_headers.starts_with("HTTP/1.1 408"),
            "{half_headers}"
        );
        let half_body = reply_to(
            addr,
            b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"Pod\": {",
        )
        .await;
        assert!(half_body.starts_with("HTTP/1.1 408"), "{half_body}");
        assert!(half_body.contains("did not arrive within"), "{half_body}");
        // A whole request still works on the same server.
        let whole = br#"{"Pod": {}, "NodeNames": ["n1"]}"#;
        let mut request = format!(
            "POST /filter HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            whole.len()
        )
        .into_bytes();
        request.extend_from_slice(whole);
        let ok = reply_to(addr, &request).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn serves_over_tcp_and_tls() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("extender-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let tls = tls_config(&cert_path, &key_path).unwrap();
        assert!(matches!(
            tls_config(&key_path, &key_path),
            Err(TlsError::NoCert(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);

        let stop = CancellationToken::new();
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let secure = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (plain_addr, secure_addr) = (plain.local_addr().unwrap(), secure.local_addr().unwrap());
        let servers = [
            tokio::spawn(serve(plain, router(Arc::new(Echo)), None, stop.clone())),
            tokio::spawn(serve(
                secure,
                router(Arc::new(Echo)),
                Some(tls),
                stop.clone(),
            )),
        ];
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap(),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let body = json!({"Pod": {}, "NodeNames": ["n1"]}).to_string();
        for url in [
            format!("http://{plain_addr}/filter"),
            format!("https://localhost:{}/scheduler/filter", secure_addr.port()),
        ] {
            let response = client.post(&url).body(body.clone()).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            let reply: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(reply["NodeNames"], json!(["n1"]), "{url}");
        }
        stop.cancel();
        for s in servers {
            s.await.unwrap().unwrap();
        }
    }
}
