//! API client construction with client-go's QPS/burst token bucket, so a component
//! can be tuned with the same `--kube-api-qps`/`--kube-api-burst` (or config file
//! `qps`/`burst`) users set on the upstream component.

use std::future::Future;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder};

use crate::fence::{FenceLayer, WriteFence};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no kubeconfig given and none found (set --kubeconfig or KUBECONFIG): {0}")]
    Infer(kube::config::InferConfigError),
    #[error("building API client: {0}")]
    Build(kube::Error),
    #[error("cannot reach the apiserver at {server}: {reason}")]
    Unreachable { server: String, reason: String },
}

/// Where to connect and how fast.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub kubeconfig: Option<PathBuf>,
    /// Sustained requests per second; 0 or less disables limiting, as in client-go.
    pub qps: f32,
    /// Requests allowed in a burst above `qps`.
    pub burst: u32,
    /// Sent as User-Agent so audit logs name the component.
    pub user_agent: String,
}

impl ClientOptions {
    pub async fn config(&self) -> Result<Config, ClientError> {
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
                        path: path.clone(),
                        source,
                    })?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|source| ClientError::Kubeconfig {
                        path: path.clone(),
                        source,
                    })?
            }
            None => Config::infer().await.map_err(ClientError::Infer)?,
        };
        // A name that is not a valid header value only loses the audit label.
        if let Ok(agent) = http::HeaderValue::from_str(&self.user_agent) {
            config.headers.push((http::header::USER_AGENT, agent));
        }
        Ok(config)
    }

    /// A client limited to `qps`/`burst`, speaking HTTP/2 to the apiserver
    /// when it offers it (see [`http2_stack`]).
    pub async fn client(&self) -> Result<Client, ClientError> {
        let config = self.config().await?;
        self.client_for(&config)
    }

    /// [`Self::client`] whose writes pass only while `fence` is open.
    pub async fn fenced_client(&self, fence: WriteFence) -> Result<Client, ClientError> {
        let config = self.config().await?;
        self.client_with(&config, Some(fence))
    }

    fn client_for(&self, config: &Config) -> Result<Client, ClientError> {
        self.client_with(config, None)
    }

    fn client_with(
        &self,
        config: &Config,
        fence: Option<WriteFence>,
    ) -> Result<Client, ClientError> {
        http2_stack(
            config,
            RateLimitLayer::new(self.qps, self.burst),
            fence.map(FenceLayer),
        )
        .map_err(ClientError::Build)
    }

    /// A client that has answered `/version` within `timeout`, so a wrong address
    /// or credentials fail start-up with one line instead of a hang.
    pub async fn connected_client(&self, timeout: Duration) -> Result<Client, ClientError> {
        self.connected_with(timeout, None).await
    }

    /// [`Self::connected_client`] whose writes pass only while `fence` is open:
    /// the client of a component's work when it elects a leader.
    pub async fn connected_fenced_client(
        &self,
        timeout: Duration,
        fence: WriteFence,
    ) -> Result<Client, ClientError> {
        self.connected_with(timeout, Some(fence)).await
    }

    async fn connected_with(
        &self,
        timeout: Duration,
        fence: Option<WriteFence>,
    ) -> Result<Client, ClientError> {
        let config = self.config().await?;
        let server = config.cluster_url.to_string();
        let client = self.client_with(&config, fence)?;
        match tokio::time::timeout(timeout, client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(e)) => Err(ClientError::Unreachable {
                server,
                reason: e.to_string(),
            }),
            Err(_) => Err(ClientError::Unreachable {
                server,
                reason: format!("no answer within {timeout:?}"),
            }),
        }
    }
}

/// kube's own stack speaks HTTP/1.1 only, so every concurrent request holds
/// a TLS connection of its own: a scheduler with a few hundred binds and
/// Events in flight opened as many connections (and the apiserver did as many
/// handshakes). client-go negotiates HTTP/2 and multiplexes everything over
/// one connection; this is kube's stack (base URI, auth, extra headers, its
/// retry of 429/503/504) over a connector that offers `h2` by ALPN, falling
/// back to HTTP/1.1 for servers that do not.
fn http2_stack(
    config: &Config,
    rate_limit: RateLimitLayer,
    fence: Option<FenceLayer>,
) -> Result<Client, kube::Error> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(config.connect_timeout);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => {
            let name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                kube::Error::Service(format!("invalid tls-server-name {name:?}: {e}").into())
            })?;
            tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => tls,
    };
    let connector = tls.enable_all_versions().wrap_connector(tcp);
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        // A dead connection would take every watch and request with it:
        // ping it, as client-go's ReadIdleTimeout does.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(15))
        // client-go's windows (Go's HTTP/2 transport: 4 MiB a stream, 1 GiB
        // the connection), not HTTP/2's 64 KiB: a burst of watch events (60
        // pod deletions) must reach the informers at once, as it reaches
        // kube-scheduler's, not a window at a time with scheduling attempts
        // between — a pod retried between two deletions is moved again by
        // the next one, and retried again. Large LISTs need no window that
        // grows with these.
        .http2_initial_stream_window_size(4 << 20)
        .http2_initial_connection_window_size(1 << 30)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(rate_limit)
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        // Innermost, next to the wire: checked after the rate limiter's wait
        // and again on each retry of kube's retry layer.
        .option_layer(fence)
        .map_err(BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// Token bucket in front of the client's HTTP stack.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl RateLimitLayer {
    pub fn new(qps: f32, burst: u32) -> Self {
        let limiter = quota(qps, burst).map(|q| Arc::new(RateLimiter::direct(q)));
        Self { limiter }
    }
}

/// client-go semantics: qps <= 0 means unlimited; burst is at least 1.
fn quota(qps: f32, burst: u32) -> Option<Quota> {
    if qps.is_nan() || qps <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(qps));
    let burst = NonZeroU32::new(burst.max(1)).expect("burst is at least 1");
    Quota::with_period(period).map(|q| q.allow_burst(burst))
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: self.limiter.clone(),
            waiting: None,
            permitted: false,
        }
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Waits for a token in `poll_ready`, so back-pressure reaches the caller through
/// tower's readiness contract and no request is sent early.
pub struct RateLimited<S> {
    inner: S,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    waiting: Option<Wait>,
    permitted: bool,
}

impl<S, Req> Service<Req> for RateLimited<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(limiter) = &self.limiter
            && !self.permitted
        {
            if self.waiting.is_none() {
                if limiter.check().is_ok() {
                    self.permitted = true;
                } else {
                    let limiter = limiter.clone();
                    self.waiting = Some(Box::pin(async move { limiter.until_ready().await }));
                }
            }
            if let Some(wait) = self.waiting.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.waiting = None;
                self.permitted = true;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.permitted = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[test]
    fn non_positive_qps_disables_limiting() {
        assert!(quota(0.0, 10).is_none());
        assert!(quota(-1.0, 10).is_none());
        assert!(quota(f32::NAN, 10).is_none());
        assert!(quota(50.0, 0).is_some(), "burst 0 is raised to 1");
    }

    #[tokio::test]
    async fn burst_passes_then_requests_wait_for_tokens() {
        let svc = tower::service_fn(|_: ()| async { Ok::<_, Infallible>(()) });
        let mut svc = RateLimitLayer::new(5.0, 3).layer(svc);
        // Three requests fit the burst without waiting.
        for _ in 0..3 {
            let ready = futures::poll!(std::pin::pin!(svc.ready()));
            assert!(ready.is_ready(), "burst request not ready");
            svc.call(()).await.unwrap();
        }
        // The fourth must wait for the bucket to refill.
        let mut fourth = std::pin::pin!(async {
            svc.ready().await.unwrap();
        });
        assert!(futures::poll!(fourth.as_mut()).is_pending());
        tokio::time::timeout(Duration::from_secs(5), fourth)
            .await
            .expect("a token arrives once the bucket refills");
    }

    #[tokio::test]
    async fn missing_kubeconfig_names_the_path() {
        let opts = ClientOptions {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            qps: 5.0,
            burst: 10,
            user_agent: "test".into(),
        };
        let Err(err) = opts.client().await else {
            panic!("a missing kubeconfig must fail");
        };
        let err = err.to_string();
        assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
    }
}
