//! A leader's write fence: the client of a component that elects a leader
//! refuses to send a write (anything but GET, HEAD, OPTIONS) unless its
//! lease is known to be held, by the local monotonic clock.
//!
//! The election loop notices a lost lease only at its next renewal; a leader
//! frozen (SIGSTOP, a long GC-like stall, a suspended VM) past its lease and
//! then resumed would otherwise keep writing from its work queues until then,
//! alongside the new leader. The fence is open until the start of the last
//! successful renewal plus the renew deadline: another contender takes over
//! only a full lease duration after it saw that renewal, which came later.
//! The monotonic clock keeps running while a process is stopped, so a
//! resumed leader finds its fence closed before any of its tasks runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

/// Shared between the election loop (which opens it) and the clients (which check it).
#[derive(Clone, Debug, Default)]
pub struct WriteFence {
    until: Arc<Mutex<Option<Instant>>>,
}

impl WriteFence {
    /// Whether a write may be sent now.
    pub fn is_open(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Open until `until` (a renewal succeeded).
    pub fn open_until(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    /// Closed for good (the lease was lost or released).
    pub fn close(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The error a fenced write fails with, before anything is sent.
#[derive(Debug, thiserror::Error)]
#[error("write refused: this replica does not hold its leader lease (its last renewal is too old)")]
pub struct FenceClosed;

/// A tower layer applying a [`WriteFence`] to every request of a client.
#[derive(Clone)]
pub struct FenceLayer(pub WriteFence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Fenced<S> {
    inner: S,
    fence: WriteFence,
}

impl<S, B> Service<http::Request<B>> for Fenced<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let reads = matches!(
            *request.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if !reads && !self.fence.is_open() {
            return Box::pin(async { Err(BoxError::from(FenceClosed)) });
        }
        let call = self.inner.call(request);
        Box::pin(async move { call.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::ServiceExt;

    fn request(method: http::Method) -> http::Request<()> {
        http::Request::builder()
            .method(method)
            .uri("/api/v1/pods")
            .body(())
            .unwrap()
    }

    async fn send(fence: &WriteFence, method: http::Method) -> Result<(), BoxError> {
        let service = tower::service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(()) });
        FenceLayer(fence.clone())
            .layer(service)
            .oneshot(request(method))
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn writes_pass_only_while_the_lease_is_fresh_reads_always() {
        let fence = WriteFence::default();
        assert!(send(&fence, http::Method::GET).await.is_ok());
        let refused = send(&fence, http::Method::POST).await.unwrap_err();
        assert!(refused.is::<FenceClosed>(), "{refused}");

        fence.open_until(Instant::now() + Duration::from_secs(4));
        for method in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ] {
            assert!(send(&fence, method).await.is_ok());
        }
        // Frozen past the deadline: the clock moved on, the fence closed by itself.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(send(&fence, http::Method::PUT).await.is_err());
        assert!(send(&fence, http::Method::GET).await.is_ok());

        fence.open_until(Instant::now() + Duration::from_secs(4));
        fence.close();
        assert!(send(&fence, http::Method::DELETE).await.is_err());
    }
}
