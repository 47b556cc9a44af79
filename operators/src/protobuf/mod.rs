//! Protobuf list and watch of Pods for the shared Pod informer.
//!
//! kube-controller-manager talks protobuf to the apiserver
//! (`--kube-api-content-type`, default `application/vnd.kubernetes.protobuf`);
//! kube-rs speaks only JSON, and decoding JSON Pod watch events (every pod
//! update carries the whole pod, managedFields included) dominated our CPU
//! profile. So the Pod informer, by far the busiest, lists and watches Pods
//! in protobuf and decodes only the fields the controllers read (the kept set
//! of [`crate::controllers::podutil::trim_pod`]). Requests still go through
//! kube's `Client`, so authentication, TLS and the QPS limiter are the same.
//! Every other kind, and every write, stays JSON.
//!
//! - [`messages`]: the hand-declared subset of upstream's messages;
//! - [`wire`]: the envelope, the watch framing, decoding pages and events;
//! - [`convert`]: decoded pods → the `k8s-openapi` pods the store holds;
//! - [`watch`]: the list+watch loop, yielding kube-runtime watcher events.

pub mod convert;
pub mod messages;
pub mod watch;
pub mod wire;

use std::fmt;
use std::str::FromStr;

pub use watch::{Error, pod_events};

/// `--kube-api-content-type`: how the Pod informer talks to the apiserver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentType {
    /// `application/vnd.kubernetes.protobuf`, kube-controller-manager's
    /// default.
    #[default]
    Protobuf,
    /// `application/json`: kube-runtime's watcher, as for every other kind.
    Json,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Protobuf => wire::MEDIA_TYPE,
            ContentType::Json => "application/json",
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContentType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            wire::MEDIA_TYPE => Ok(ContentType::Protobuf),
            "application/json" => Ok(ContentType::Json),
            other => Err(format!(
                "unsupported content type {other:?}: expected {} or application/json",
                wire::MEDIA_TYPE
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_parse_as_upstream_spells_them() {
        assert_eq!(
            "application/vnd.kubernetes.protobuf".parse(),
            Ok(ContentType::Protobuf)
        );
        assert_eq!("application/json".parse(), Ok(ContentType::Json));
        assert!("application/yaml".parse::<ContentType>().is_err());
        assert_eq!(ContentType::default().to_string(), wire::MEDIA_TYPE);
    }
}
