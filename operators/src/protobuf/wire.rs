//! The Kubernetes API's protobuf wire format, as apimachinery's
//! `runtime/serializer/protobuf` and `util/framer` write it:
//!
//! - an object (a list page, an error status, the object inside a watch
//!   event) is the magic `k8s\0` and then a `runtime.Unknown` whose `raw`
//!   holds the object's own message;
//! - a watch response (`Content-Type:
//!   application/vnd.kubernetes.protobuf;stream=watch`) is a sequence of
//!   frames, each a 4-byte big-endian length and a `metav1.WatchEvent`
//!   message with neither magic nor envelope; the event's `object.raw` is an
//!   enveloped object again.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use k8s_openapi::api::core::v1::Pod;
use prost::Message;

use super::convert;
use super::messages as pb;

/// The media type of protobuf objects; watch responses add
/// `;stream=watch`.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What a protobuf-speaking client-go sends as `Accept` on every request,
/// lists and watches alike (`rest.Request.setAcceptHeader` with a protobuf
/// `ContentType` and no `AcceptContentTypes`, as kube-controller-manager
/// configures it).
pub const ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";

const MAGIC: &[u8; 4] = b"k8s\0";

/// The largest watch frame accepted: client-go's streaming decoder stops at
/// the same size (`ErrObjectTooLarge`). A pod is far smaller; a length
/// beyond this is a broken stream, not a pod, and must not become an
/// allocation.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a protobuf object: the k8s\\0 magic is missing")]
    NoMagic,
    #[error("decoding {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("expected a {expected}, got a {got}")]
    Kind { expected: &'static str, got: String },
    #[error("a watch frame of {len} bytes is over the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("an empty watch event")]
    EmptyEvent,
    #[error("a {0} watch event without an object")]
    NoObject(String),
    #[error("an unknown watch event type {0:?}")]
    UnknownEventType(String),
}

fn decode<M: Message + Default>(what: &'static str, data: Bytes) -> Result<M, WireError> {
    M::decode(data).map_err(|source| WireError::Decode { what, source })
}

/// The message inside an enveloped object of the expected kind.
fn unwrap_object(data: Bytes, expected: &'static str) -> Result<Bytes, WireError> {
    if !data.starts_with(MAGIC) {
        return Err(WireError::NoMagic);
    }
    let unknown: pb::Unknown = decode("runtime.Unknown", data.slice(MAGIC.len()..))?;
    // The apiserver always names the kind; an unnamed one is taken on trust
    // as Go's decoder does with a default kind.
    let kind = unknown.type_meta.map(|t| t.kind).unwrap_or_default();
    if !kind.is_empty() && kind != expected {
        return Err(WireError::Kind {
            expected,
            got: kind,
        });
    }
    Ok(unknown.raw)
}

/// One page of a pod list.
#[derive(Debug)]
pub struct PodPage {
    pub items: Vec<Pod>,
    pub resource_version: String,
    pub continue_token: String,
}

pub fn decode_pod_list(body: Bytes) -> Result<PodPage, WireError> {
    let list: pb::PodList = decode("PodList", unwrap_object(body, "PodList")?)?;
    let meta = list.metadata.unwrap_or_default();
    Ok(PodPage {
        items: list.items.into_iter().map(convert::pod).collect(),
        resource_version: meta.resource_version,
        continue_token: meta.r#continue,
    })
}

/// A `metav1.Status`: what the apiserver says when it refuses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiStatus {
    pub code: i32,
    pub reason: String,
    pub message: String,
    /// The causes' reasons.
    pub causes: Vec<String>,
}

impl ApiStatus {
    /// The resourceVersion asked for has left the apiserver's window
    /// (client-go's `isExpiredError`): only a new list helps.
    pub fn is_expired(&self) -> bool {
        self.code == 410 || self.reason == "Expired" || self.reason == "Gone"
    }

    /// The resourceVersion asked for is newer than the apiserver has seen
    /// (client-go's `isTooLargeResourceVersionError`): relist.
    pub fn is_too_large_resource_version(&self) -> bool {
        self.causes.iter().any(|c| c == "ResourceVersionTooLarge")
    }
}

impl fmt::Display for ApiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

/// The same Status, when the apiserver answered an error in JSON.
impl From<kube::core::Status> for ApiStatus {
    fn from(s: kube::core::Status) -> Self {
        Self {
            code: s.code.into(),
            reason: s.reason,
            message: s.message,
            causes: s
                .details
                .into_iter()
                .flat_map(|d| d.causes)
                .map(|c| c.reason)
                .collect(),
        }
    }
}

impl From<pb::Status> for ApiStatus {
    fn from(s: pb::Status) -> Self {
        Self {
            code: s.code,
            reason: s.reason,
            message: s.message,
            causes: s
                .details
                .into_iter()
                .flat_map(|d| d.causes)
                .map(|c| c.reason)
                .collect(),
        }
    }
}

/// An enveloped `metav1.Status`, as error responses carry it.
pub fn decode_status(body: Bytes) -> Result<ApiStatus, WireError> {
    let status: pb::Status = decode("Status", unwrap_object(body, "Status")?)?;
    Ok(status.into())
}

/// One decoded watch event.
#[derive(Debug)]
pub enum PodEvent {
    Added(Pod),
    Modified(Pod),
    Deleted(Pod),
    /// Progress without a change: only the resourceVersion counts.
    Bookmark {
        resource_version: String,
    },
    Error(ApiStatus),
}

/// Decodes one watch frame (without its length prefix).
pub fn decode_event(frame: Bytes) -> Result<PodEvent, WireError> {
    if frame.is_empty() {
        // Go's decoder refuses empty data too.
        return Err(WireError::EmptyEvent);
    }
    let event: pb::WatchEvent = decode("WatchEvent", frame)?;
    let Some(object) = event.object.filter(|o| !o.raw.is_empty()) else {
        return Err(WireError::NoObject(event.r#type));
    };
    let pod =
        |raw: Bytes| -> Result<pb::Pod, WireError> { decode("Pod", unwrap_object(raw, "Pod")?) };
    Ok(match event.r#type.as_str() {
        "ADDED" => PodEvent::Added(convert::pod(pod(object.raw)?)),
        "MODIFIED" => PodEvent::Modified(convert::pod(pod(object.raw)?)),
        "DELETED" => PodEvent::Deleted(convert::pod(pod(object.raw)?)),
        "BOOKMARK" => PodEvent::Bookmark {
            resource_version: pod(object.raw)?
                .metadata
                .map(|m| m.resource_version)
                .unwrap_or_default(),
        },
        "ERROR" => PodEvent::Error(decode_status(object.raw)?),
        _ => return Err(WireError::UnknownEventType(event.r#type)),
    })
}

/// Splits a watch body into frames as its chunks arrive; a frame may span
/// chunks and a chunk may hold many frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole frame, if one is buffered. A length over the limit is
    /// an error as soon as its prefix arrives, before its body is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, WireError> {
        let Some(prefix) = self.buffer.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("four bytes")) as usize;
        if len > self.max {
            return Err(WireError::FrameTooLarge { len, max: self.max });
        }
        if self.buffer.len() < 4 + len {
            self.buffer.reserve(4 + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(4);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// Bytes received that are not a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A file of `tests/fixtures/`.
    pub(crate) fn fixture(name: &str) -> Bytes {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    /// `data` with its 4-byte big-endian length in front.
    pub(crate) fn framed(data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    /// `msg` enveloped as the apiserver sends objects.
    pub(crate) fn enveloped(kind: &str, msg: &impl Message) -> Bytes {
        let unknown = pb::Unknown {
            type_meta: Some(pb::TypeMeta {
                api_version: "v1".into(),
                kind: kind.into(),
            }),
            raw: msg.encode_to_vec().into(),
        };
        let mut out = MAGIC.to_vec();
        out.extend(unknown.encode_to_vec());
        out.into()
    }

    /// Every frame of `stream`, fed in chunks of `chunk` bytes.
    fn split(stream: &[u8], chunk: usize, max: usize) -> Result<Vec<Bytes>, WireError> {
        let mut decoder = FrameDecoder::new(max);
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            decoder.push(piece);
            while let Some(frame) = decoder.next_frame()? {
                frames.push(frame);
            }
        }
        assert_eq!(decoder.buffered(), 0, "a partial frame left over");
        Ok(frames)
    }

    #[test]
    fn frames_come_out_whole_however_the_body_is_chunked() {
        // The apiserver's own frames: a MODIFIED pod, a BOOKMARK, an ERROR.
        let mut stream = fixture("pod-watch-modified.pb").to_vec();
        stream.extend_from_slice(&fixture("watch-bookmark-error.pb"));
        let whole = split(&stream, stream.len(), MAX_FRAME_LEN).unwrap();
        assert_eq!(whole.len(), 3);
        for chunk in [1, 2, 3, 4, 5, 7, 64, 1000, 2404] {
            assert_eq!(
                split(&stream, chunk, MAX_FRAME_LEN).unwrap(),
                whole,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn framing_table() {
        type Case = (
            &'static str,
            Vec<u8>,
            usize,
            Result<Vec<&'static [u8]>, usize>,
        );
        let cases: Vec<Case> = vec![
            ("nothing", vec![], 16, Ok(vec![])),
            (
                "two frames",
                [framed(b"ab"), framed(b"cde")].concat(),
                16,
                Ok(vec![b"ab", b"cde"]),
            ),
            (
                "zero-length frame between two",
                [framed(b"ab"), framed(b""), framed(b"c")].concat(),
                16,
                Ok(vec![b"ab", b"", b"c"]),
            ),
            (
                "exactly the limit",
                framed(b"12345678"),
                8,
                Ok(vec![b"12345678"]),
            ),
            // Refused on the prefix alone: the body is never awaited.
            ("over the limit", 9u32.to_be_bytes().to_vec(), 8, Err(9)),
            (
                "u32::MAX",
                u32::MAX.to_be_bytes().to_vec(),
                MAX_FRAME_LEN,
                Err(u32::MAX as usize),
            ),
        ];
        for (name, stream, max, want) in cases {
            for chunk in [1, 3, stream.len().max(1)] {
                let got = split(&stream, chunk, max);
                match (&got, &want) {
                    (Ok(frames), Ok(want)) => {
                        let frames: Vec<&[u8]> = frames.iter().map(|f| f.as_ref()).collect();
                        assert_eq!(&frames, want, "{name}, chunks of {chunk}");
                    }
                    (Err(WireError::FrameTooLarge { len, max: m }), Err(want_len)) => {
                        assert_eq!((len, m), (want_len, &max), "{name}");
                    }
                    _ => panic!("{name}, chunks of {chunk}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_before_its_body_is_buffered() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&((MAX_FRAME_LEN + 1) as u32).to_be_bytes());
        assert!(matches!(
            decoder.next_frame(),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(decoder.buffer.capacity() < 1024);
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0, 0]);
        assert!(decoder.next_frame().unwrap().is_none());
        decoder.push(&[0, 3, b'a']);
        assert!(decoder.next_frame().unwrap().is_none());
        assert_eq!(decoder.buffered(), 5);
        decoder.push(b"bc");
        assert_eq!(decoder.next_frame().unwrap().unwrap(), "abc");
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn bookmark_and_expired_error_as_the_apiserver_sends_them() {
        let frames = split(&fixture("watch-bookmark-error.pb"), 7, MAX_FRAME_LEN).unwrap();
        let events: Vec<PodEvent> = frames
            .into_iter()
            .map(|f| decode_event(f).unwrap())
            .collect();
        let [
            PodEvent::Bookmark { resource_version },
            PodEvent::Error(status),
        ] = events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert_eq!(resource_version, "48377");
        assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        assert!(status.message.contains("too old resource version"));
        assert!(status.is_expired() && !status.is_too_large_resource_version());
    }

    #[test]
    fn malformed_events_are_errors() {
        let event = |t: &str, raw: Bytes| {
            pb::WatchEvent {
                r#type: t.into(),
                object: Some(pb::RawExtension { raw }),
            }
            .encode_to_vec()
            .into()
        };
        let pod = enveloped("Pod", &pb::Pod::default());
        assert!(matches!(
            decode_event(Bytes::new()),
            Err(WireError::EmptyEvent)
        ));
        assert!(matches!(
            decode_event(event("ADDED", Bytes::new())),
            Err(WireError::NoObject(t)) if t == "ADDED"
        ));
        assert!(matches!(
            decode_event(event("RESYNC", pod.clone())),
            Err(WireError::UnknownEventType(t)) if t == "RESYNC"
        ));
        assert!(matches!(
            decode_event(event("ADDED", pod.slice(4..))),
            Err(WireError::NoMagic)
        ));
        assert!(matches!(
            decode_event(event("ADDED", enveloped("Status", &pb::Status::default()))),
            Err(WireError::Kind {
                expected: "Pod",
                ..
            })
        ));
        assert!(matches!(
            decode_event(Bytes::from_static(b"\xff\xff")),
            Err(WireError::Decode {
                what: "WatchEvent",
                ..
            })
        ));
        assert!(matches!(
            decode_event(event("ADDED", pod)),
            Ok(PodEvent::Added(_))
        ));
    }

    #[test]
    fn too_large_resource_version_is_told_by_its_cause() {
        let status = pb::Status {
            code: 504,
            reason: "Timeout".into(),
            message: "Too large resource version".into(),
            details: Some(pb::StatusDetails {
                causes: vec![pb::StatusCause {
                    reason: "ResourceVersionTooLarge".into(),
                }],
            }),
        };
        let status = decode_status(enveloped("Status", &status)).unwrap();
        assert!(status.is_too_large_resource_version() && !status.is_expired());
    }
}
