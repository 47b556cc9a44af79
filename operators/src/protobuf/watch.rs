//! List+watch of Pods in protobuf with client-go's reflector semantics, as a
//! stream of kube-runtime watcher events, the same events the JSON watcher
//! yields, so [`crate::informer::Informer::run`] consumes either source.
//!
//! - `Init`, then a paged list (`limit=500`, `continue`; no
//!   resourceVersion, so a consistent read as the JSON watcher's default)
//!   → an `InitApply` per pod, then `InitDone`.
//! - A watch from the list's resourceVersion with `allowWatchBookmarks=true`
//!   and `timeoutSeconds` random in [5, 10) minutes, as client-go's
//!   reflector spreads its watches: ADDED/MODIFIED → `Apply`, DELETED →
//!   `Delete`, BOOKMARK only moves the resourceVersion.
//! - When the apiserver ends a watch (its timeout) the next one resumes from
//!   the last resourceVersion seen, at once. A watch that ended within a
//!   second without a single event is an error instead (client-go's "very
//!   short watch"), so something closing every watch cannot make us spin.
//! - 410 Gone/Expired (an HTTP answer or an ERROR event) or a too-large
//!   resourceVersion → a new list from scratch (`Init` again). Any other
//!   failure resumes the watch from the last resourceVersion, or restarts
//!   the list if it was listing.
//!
//! Failures are yielded as errors, never retried in place: the consumer's
//! backoff (`WatchStreamExt::default_backoff`, as for the JSON watcher)
//! spaces the retries, and the stream carries on when polled again.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use kube::core::params::{ListParams, WatchParams};
use kube::runtime::watcher::Event;
use kube::{Client, Resource};
use rand::Rng;
use tokio::time::Instant;

use super::wire::{self, ApiStatus, FrameDecoder, PodEvent, PodPage, WireError};

/// client-go's pager's page size, and the JSON watcher's.
const PAGE_SIZE: u32 = 500;

/// client-go's reflector's `minWatchTimeout`; watches last between it and
/// twice it.
const MIN_WATCH_TIMEOUT_SECS: u32 = 300;

/// Beyond the watch's own timeout, how long a silent connection is trusted
/// before it is taken for dead (kube-runtime's margin).
const IDLE_MARGIN: Duration = Duration::from_secs(5);

/// A watch that ends this soon without any event is a failure.
const SHORT_WATCH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the request: {0}")]
    Request(#[from] kube::core::request::Error),
    #[error("talking to the apiserver: {0}")]
    Http(#[from] kube::Error),
    #[error("the apiserver refused: {0}")]
    Api(ApiStatus),
    #[error(
        "the apiserver answered in {0:?}, not protobuf; \
         start with --kube-api-content-type=application/json"
    )]
    ContentType(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the watch stream ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error("a pod list page with neither resourceVersion nor continue token")]
    NoListResourceVersion,
    #[error("a watch event for a pod without resourceVersion")]
    NoResourceVersion,
    #[error("the watch closed after {0:?} without any event")]
    ShortWatch(Duration),
    #[error("no watch data for {0:?}; taking the connection for dead")]
    Idle(Duration),
}

impl Error {
    /// Whether only a new list can recover.
    fn needs_relist(&self) -> bool {
        match self {
            Error::Api(status) => status.is_expired() || status.is_too_large_resource_version(),
            Error::NoResourceVersion | Error::NoListResourceVersion => true,
            _ => false,
        }
    }
}

/// Pod events from a protobuf list+watch over `client`; never ends.
pub fn pod_events(client: Client) -> impl Stream<Item = Result<Event<Pod>, Error>> + Send {
    futures::stream::unfold(PodWatcher::new(client), |mut watcher| async move {
        let event = watcher.next().await;
        Some((event, watcher))
    })
}

enum State {
    /// Next: `Init` and the first page.
    Empty,
    Listing {
        continue_token: Option<String>,
        items: std::vec::IntoIter<Pod>,
        resource_version: Option<String>,
    },
    /// Next: a watch from `resource_version`.
    Listed { resource_version: String },
    Watching {
        resource_version: String,
        watch: WatchBody,
    },
}

struct PodWatcher {
    client: Client,
    state: State,
}

impl PodWatcher {
    fn new(client: Client) -> Self {
        Self {
            client,
            state: State::Empty,
        }
    }

    async fn next(&mut self) -> Result<Event<Pod>, Error> {
        loop {
            // Whatever returns early without setting a state leaves `Empty`:
            // the next call starts over with a new list.
            match std::mem::replace(&mut self.state, State::Empty) {
                State::Empty => {
                    self.state = State::Listing {
                        continue_token: None,
                        items: Vec::new().into_iter(),
                        resource_version: None,
                    };
                    return Ok(Event::Init);
                }
                State::Listing {
                    continue_token,
                    mut items,
                    resource_version,
                } => {
                    if let Some(pod) = items.next() {
                        self.state = State::Listing {
                            continue_token,
                            items,
                            resource_version,
                        };
                        return Ok(Event::InitApply(pod));
                    }
                    if continue_token.is_none()
                        && let Some(resource_version) = resource_version
                    {
                        tracing::debug!(%resource_version, "pods listed");
                        self.state = State::Listed { resource_version };
                        return Ok(Event::InitDone);
                    }
                    // An expired continue token, like any failed page,
                    // restarts the list (client-go's pager falls back to a
                    // full list too).
                    let page = list(&self.client, continue_token).await?;
                    if page.resource_version.is_empty() && page.continue_token.is_empty() {
                        return Err(Error::NoListResourceVersion);
                    }
                    self.state = State::Listing {
                        continue_token: non_empty(page.continue_token),
                        items: page.items.into_iter(),
                        resource_version: non_empty(page.resource_version),
                    };
                }
                State::Listed { resource_version } => {
                    match watch(&self.client, &resource_version).await {
                        Ok(watch) => {
                            self.state = State::Watching {
                                resource_version,
                                watch,
                            }
                        }
                        Err(error) => {
                            if !error.needs_relist() {
                                self.state = State::Listed { resource_version };
                            }
                            return Err(error);
                        }
                    }
                }
                State::Watching {
                    mut resource_version,
                    mut watch,
                } => {
                    let event = match watch.next().await {
                        Ok(Some(event)) => event,
                        Ok(None) => {
                            let short = watch.ended_early();
                            tracing::debug!(%resource_version, events = watch.events, "pod watch ended; resuming");
                            self.state = State::Listed { resource_version };
                            match short {
                                Some(after) => return Err(Error::ShortWatch(after)),
                                None => continue,
                            }
                        }
                        Err(error) => {
                            self.state = State::Listed { resource_version };
                            return Err(error);
                        }
                    };
                    let (pod, deleted) = match event {
                        PodEvent::Added(pod) | PodEvent::Modified(pod) => (pod, false),
                        PodEvent::Deleted(pod) => (pod, true),
                        PodEvent::Bookmark {
                            resource_version: bookmark,
                        } => {
                            if !bookmark.is_empty() {
                                resource_version = bookmark;
                            }
                            self.state = State::Watching {
                                resource_version,
                                watch,
                            };
                            continue;
                        }
                        PodEvent::Error(status) => {
                            let error = Error::Api(status);
                            if !error.needs_relist() {
                                self.state = State::Listed { resource_version };
                            }
                            return Err(error);
                        }
                    };
                    match pod.metadata.resource_version.as_deref() {
                        Some(rv) if !rv.is_empty() => resource_version = rv.to_string(),
                        // Nowhere to resume from (kube-runtime relists too).
                        _ => return Err(Error::NoResourceVersion),
                    }
                    self.state = State::Watching {
                        resource_version,
                        watch,
                    };
                    let event = if deleted {
                        Event::Delete(pod)
                    } else {
                        Event::Apply(pod)
                    };
                    return Ok(event);
                }
            }
        }
    }
}

async fn list(client: &Client, continue_token: Option<String>) -> Result<PodPage, Error> {
    let params = ListParams {
        limit: Some(PAGE_SIZE),
        continue_token,
        ..ListParams::default()
    };
    let request = kube::core::Request::new(Pod::url_path(&(), None)).list(&params)?;
    let response = send(client, request).await?;
    let body = collect(response.into_body()).await?;
    Ok(wire::decode_pod_list(body)?)
}

async fn watch(client: &Client, resource_version: &str) -> Result<WatchBody, Error> {
    let timeout = rand::rng().random_range(MIN_WATCH_TIMEOUT_SECS..2 * MIN_WATCH_TIMEOUT_SECS);
    let params = WatchParams {
        timeout: Some(timeout),
        bookmarks: true,
        ..WatchParams::default()
    };
    let request =
        kube::core::Request::new(Pod::url_path(&(), None)).watch(&params, resource_version)?;
    let response = send(client, request).await?;
    Ok(WatchBody::new(
        response.into_body(),
        Duration::from_secs(timeout.into()) + IDLE_MARGIN,
    ))
}

/// Sends with client-go's protobuf `Accept`; a refusal becomes
/// [`Error::Api`], an answer in another content type
/// [`Error::ContentType`].
async fn send(client: &Client, request: http::Request<Vec<u8>>) -> Result<Response<Body>, Error> {
    let mut request = request.map(Body::from);
    request
        .headers_mut()
        .insert(ACCEPT, HeaderValue::from_static(wire::ACCEPT));
    let response = client.send(request).await?;
    let status = response.status();
    if !status.is_success() {
        let body = collect(response.into_body()).await.unwrap_or_default();
        return Err(Error::Api(refusal(status, body)));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with(wire::MEDIA_TYPE) {
        return Err(Error::ContentType(content_type.to_string()));
    }
    Ok(response)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

async fn collect(body: Body) -> Result<Bytes, Error> {
    Ok(body.collect().await?.to_bytes())
}

/// What a non-2xx answer says: a protobuf Status (the apiserver negotiates
/// errors like objects), else a JSON one, else the HTTP status and text.
fn refusal(status: http::StatusCode, body: Bytes) -> ApiStatus {
    let mut refusal = wire::decode_status(body.clone())
        .ok()
        .or_else(|| {
            serde_json::from_slice::<kube::core::Status>(&body)
                .ok()
                .map(ApiStatus::from)
        })
        .unwrap_or_else(|| ApiStatus {
            reason: status.canonical_reason().unwrap_or_default().to_string(),
            message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            ..ApiStatus::default()
        });
    if refusal.code == 0 {
        refusal.code = status.as_u16().into();
    }
    refusal
}

/// An open watch response, read frame by frame.
struct WatchBody {
    body: Body,
    frames: FrameDecoder,
    idle: Duration,
    opened: Instant,
    events: usize,
}

impl WatchBody {
    fn new(body: Body, idle: Duration) -> Self {
        Self {
            body,
            frames: FrameDecoder::default(),
            idle,
            opened: Instant::now(),
            events: 0,
        }
    }

    /// The next event; `None` when the apiserver ended the watch.
    async fn next(&mut self) -> Result<Option<PodEvent>, Error> {
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                self.events += 1;
                return Ok(Some(wire::decode_event(frame)?));
            }
            match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Err(Error::Idle(self.idle)),
                Ok(None) if self.frames.buffered() > 0 => {
                    return Err(Error::Truncated(self.frames.buffered()));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(error))) => return Err(error.into()),
                Ok(Some(Ok(frame))) => {
                    // Trailers carry nothing for us.
                    if let Ok(data) = frame.into_data() {
                        self.frames.push(&data);
                    }
                }
            }
        }
    }

    /// How long the watch lasted, if it ended too soon and empty.
    fn ended_early(&self) -> Option<Duration> {
        let lasted = self.opened.elapsed();
        (self.events == 0 && lasted < SHORT_WATCH).then_some(lasted)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use http_body_util::combinators::BoxBody;
    use prost::Message;

    use super::*;
    use crate::protobuf::messages as pb;
    use crate::protobuf::wire::tests::{enveloped, framed};

    /// One scripted apiserver answer, its body in `chunks`.
    struct Reply {
        status: u16,
        content_type: &'static str,
        chunks: Vec<Bytes>,
    }

    fn ok(body: Bytes) -> Reply {
        Reply {
            status: 200,
            content_type: wire::MEDIA_TYPE,
            chunks: vec![body],
        }
    }

    fn watch_reply(chunks: Vec<Bytes>) -> Reply {
        Reply {
            status: 200,
            content_type: "application/vnd.kubernetes.protobuf;stream=watch",
            chunks,
        }
    }

    fn pod(name: &str, rv: &str) -> pb::Pod {
        pb::Pod {
            metadata: Some(pb::ObjectMeta {
                name: name.into(),
                namespace: "ns".into(),
                resource_version: rv.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn page(rv: &str, continue_token: &str, items: Vec<pb::Pod>) -> Bytes {
        let list = pb::PodList {
            metadata: Some(pb::ListMeta {
                resource_version: rv.into(),
                r#continue: continue_token.into(),
            }),
            items,
        };
        enveloped("PodList", &list)
    }

    fn event(kind: &str, raw: Bytes) -> Vec<u8> {
        let event = pb::WatchEvent {
            r#type: kind.into(),
            object: Some(pb::RawExtension { raw }),
        };
        framed(&event.encode_to_vec())
    }

    fn pod_event(kind: &str, name: &str, rv: &str) -> Vec<u8> {
        event(kind, enveloped("Pod", &pod(name, rv)))
    }

    fn status(code: i32, reason: &str) -> Bytes {
        let status = pb::Status {
            code,
            reason: reason.into(),
            message: format!("{reason} for the test"),
            details: None,
        };
        enveloped("Status", &status)
    }

    type Requests = Arc<Mutex<Vec<(String, String)>>>;

    /// A client whose apiserver answers from `script` in order and records
    /// every request's path and `Accept`.
    fn fake_apiserver(script: Vec<Reply>) -> (Client, Requests) {
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let requests: Requests = Arc::default();
        let seen = requests.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let accept = request
                .headers()
                .get(ACCEPT)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            seen.lock()
                .unwrap()
                .push((request.uri().to_string(), accept));
            let reply = script.lock().unwrap().pop_front().unwrap_or(Reply {
                status: 599,
                content_type: "text/plain",
                chunks: vec![Bytes::from_static(b"unscripted request")],
            });
            async move {
                let chunks = reply
                    .chunks
                    .into_iter()
                    .map(|c| Ok::<_, Infallible>(Frame::data(c)));
                let body = BoxBody::new(StreamBody::new(futures::stream::iter(chunks)));
                let response = http::Response::builder()
                    .status(reply.status)
                    .header(CONTENT_TYPE, reply.content_type)
                    .body(body)
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        });
        (Client::new(service, "default"), requests)
    }

    /// The first `n` events, each as a short line.
    async fn first(client: Client, n: usize) -> Vec<String> {
        let name = |p: &Pod| {
            format!(
                "{} {}",
                p.metadata.name.as_deref().unwrap_or(""),
                p.metadata.resource_version.as_deref().unwrap_or("")
            )
        };
        pod_events(client)
            .take(n)
            .map(|event| match event {
                Ok(Event::Init) => "Init".to_string(),
                Ok(Event::InitApply(p)) => format!("InitApply {}", name(&p)),
                Ok(Event::InitDone) => "InitDone".to_string(),
                Ok(Event::Apply(p)) => format!("Apply {}", name(&p)),
                Ok(Event::Delete(p)) => format!("Delete {}", name(&p)),
                Err(Error::Api(s)) => format!("Err {}", s.code),
                Err(Error::ContentType(t)) => format!("Err content type {t}"),
                Err(Error::ShortWatch(_)) => "Err short watch".to_string(),
                Err(Error::Truncated(n)) => format!("Err truncated {n}"),
                Err(Error::Wire(WireError::FrameTooLarge { len, .. })) => {
                    format!("Err frame of {len}")
                }
                Err(other) => format!("Err {other}"),
            })
            .collect()
            .await
    }

    fn query(uri: &str) -> Vec<(String, String)> {
        let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
        query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[tokio::test]
    async fn lists_in_pages_watches_resumes_and_relists_when_expired() {
        let added = pod_event("ADDED", "c", "11");
        let (first_half, second_half) = added.split_at(added.len() / 2);
        let script = vec![
            ok(page("10", "c/1+=", vec![pod("a", "5")])),
            ok(page("10", "", vec![pod("b", "7")])),
            watch_reply(vec![
                // A frame split across body chunks, then two in one chunk.
                Bytes::copy_from_slice(first_half),
                Bytes::copy_from_slice(second_half),
                [
                    event("BOOKMARK", enveloped("Pod", &pod("", "15"))),
                    event("ERROR", status(410, "Expired")),
                ]
                .concat()
                .into(),
            ]),
            ok(page("20", "", vec![pod("c", "11")])),
            // Ends after an event, as the apiserver's timeout ends it.
            watch_reply(vec![pod_event("MODIFIED", "c", "21").into()]),
            watch_reply(vec![
                pod_event("DELETED", "c", "22").into(),
                event("BOOKMARK", enveloped("Pod", &pod("", "30"))).into(),
            ]),
        ];
        let (client, requests) = fake_apiserver(script);
        assert_eq!(
            first(client, 11).await,
            [
                "Init",
                "InitApply a 5",
                "InitApply b 7",
                "InitDone",
                "Apply c 11",
                "Err 410",
                "Init",
                "InitApply c 11",
                "InitDone",
                "Apply c 21",
                "Delete c 22",
            ]
        );
        let requests = requests.lock().unwrap();
        for (uri, accept) in requests.iter() {
            assert_eq!(accept, "application/vnd.kubernetes.protobuf, */*", "{uri}");
            assert!(uri.starts_with("/api/v1/pods?"), "{uri}");
        }
        let uris: Vec<&str> = requests.iter().map(|(u, _)| u.as_str()).collect();
        // kube-core's query builder leaves an empty pair after `?`.
        assert_eq!(uris[0], "/api/v1/pods?&limit=500");
        assert_eq!(uris[1], "/api/v1/pods?&limit=500&continue=c%2F1%2B%3D");
        assert_eq!(uris[3], "/api/v1/pods?&limit=500", "a relist starts over");
        let watches: Vec<(String, u32)> = [2, 4, 5]
            .iter()
            .map(|&i| {
                let q = query(uris[i]);
                let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                assert_eq!(get("watch").as_deref(), Some("true"));
                assert_eq!(get("allowWatchBookmarks").as_deref(), Some("true"));
                let timeout: u32 = get("timeoutSeconds").unwrap().parse().unwrap();
                (get("resourceVersion").unwrap(), timeout)
            })
            .collect();
        let versions: Vec<&str> = watches.iter().map(|(rv, _)| rv.as_str()).collect();
        // From the list, from the relist, then from the last event seen.
        assert_eq!(versions, ["10", "20", "21"]);
        for (_, timeout) in &watches {
            assert!((300..600).contains(timeout), "timeoutSeconds={timeout}");
        }
        assert_eq!(requests.len(), 6);
    }

    #[tokio::test]
    async fn failures_are_yielded_and_retried_from_the_right_place() {
        let json_error = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is sad","reason":"InternalError","code":500}"#;
        let too_large = (wire::MAX_FRAME_LEN as u32 + 1).to_be_bytes().to_vec();
        let script = vec![
            Reply {
                status: 500,
                content_type: "application/json",
                chunks: vec![Bytes::from_static(json_error)],
            },
            ok(page("5", "", vec![])),
            // Closed at once and empty: an error, not a silent retry loop.
            watch_reply(vec![]),
            // Cut inside a frame.
            watch_reply(vec![pod_event("ADDED", "a", "6")[..10].to_vec().into()]),
            watch_reply(vec![pod_event("ADDED", "a", "6").into()]),
            Reply {
                status: 410,
                content_type: wire::MEDIA_TYPE,
                chunks: vec![status(410, "Expired")],
            },
            Reply {
                status: 200,
                content_type: "application/json",
                chunks: vec![Bytes::from_static(b"{}")],
            },
        ];
        let (client, requests) = fake_apiserver(script);
        assert_eq!(
            first(client, 9).await,
            [
                "Init",
                "Err 500",
                "Init",
                "InitDone",
                "Err short watch",
                "Err truncated 10",
                "Apply a 6",
                "Err 410",
                "Init",
            ]
        );
        let (client, _) = fake_apiserver(vec![Reply {
            status: 200,
            content_type: "application/json",
            chunks: vec![Bytes::from_static(b"{}")],
        }]);
        assert_eq!(
            first(client, 2).await,
            ["Init", "Err content type application/json"]
        );
        let (client, _) = fake_apiserver(vec![
            ok(page("5", "", vec![])),
            watch_reply(vec![too_large.into()]),
        ]);
        assert_eq!(
            first(client, 3).await,
            ["Init", "InitDone", "Err frame of 16777217"]
        );
        let requests = requests.lock().unwrap();
        let versions: Vec<String> = requests[2..]
            .iter()
            .map(|(uri, _)| {
                query(uri)
                    .into_iter()
                    .find(|(k, _)| k == "resourceVersion")
                    .map(|(_, v)| v)
                    .unwrap_or_default()
            })
            .collect();
        // Each failed watch resumes where the list left off, until the 410.
        assert_eq!(versions, ["5", "5", "5", "6"]);
    }
}
