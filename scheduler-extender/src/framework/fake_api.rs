//! A stand-in apiserver for unit tests whose call sequence matters: every
//! request is reported on a channel, and a responder decides the answer.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Value,
}

pub type Responder = dyn Fn(&Request) -> (u16, Value) + Send + Sync;

/// A client whose requests `respond` answers.
pub fn apiserver(respond: Arc<Responder>) -> (Client, mpsc::UnboundedReceiver<Request>) {
    let (seen, requests) = mpsc::unbounded_channel();
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let seen = seen.clone();
        let respond = respond.clone();
        async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let bytes = request
                .into_body()
                .collect()
                .await
                .expect("request body")
                .to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let request = Request { method, path, body };
            let (status, answer) = respond(&request);
            let _ = seen.send(request);
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(
                        serde_json::to_vec(&answer).expect("json"),
                    )))
                    .expect("response"),
            )
        }
    });
    (Client::new(service, "default"), requests)
}

/// Answers a write with the object written, its resourceVersion one higher,
/// as the apiserver does for an update that changed something.
pub fn echo_bumping_version(request: &Request) -> (u16, Value) {
    let mut body = request.body.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let next = meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        meta.insert("resourceVersion".into(), json!(next.to_string()));
    }
    (200, body)
}

/// An apiserver Status refusing with `code`.
pub fn refusal(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

/// A handle over an empty cache and an apiserver that echoes writes.
pub fn handle() -> super::Handle {
    let (client, _) = apiserver(Arc::new(echo_bumping_version));
    super::Handle {
        client,
        cache: Arc::new(std::sync::Mutex::new(crate::cache::Cache::new())),
    }
}
