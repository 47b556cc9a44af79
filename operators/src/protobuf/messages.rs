//! The protobuf messages the Pod list and watch are read through, declared
//! by hand with upstream's field numbers (`k8s.io/api/core/v1`,
//! `k8s.io/apimachinery/pkg/apis/meta/v1` and `.../pkg/runtime`
//! `generated.proto`, v0.37).
//!
//! Only the fields of the kept set (see
//! [`crate::controllers::podutil::trim_pod`]) are declared. prost skips every
//! other field on the wire without allocating, so managedFields, commands,
//! environments, probes, volumes and container states are never
//! materialised: that is the point of decoding protobuf at all. The `k8s-pb`
//! crate would give complete messages, but it decodes every field and
//! compiles every API group, which is the cost this module exists to avoid.
//! No build script or `protoc`: the subset is small and changes only when
//! the kept set does.
//!
//! Go strings that are not pointers are always encoded, empty or not, and
//! Go's JSON leaves the empty ones out; pointers (e.g. a container's
//! `restartPolicy`) are encoded only when set. Fields are declared so that
//! [`super::convert`] can tell the two apart where it matters.

use std::collections::BTreeMap;

use bytes::Bytes;

/// `runtime.Unknown`: the envelope after the `k8s\0` magic of every
/// protobuf object the apiserver sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unknown {
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<TypeMeta>,
    #[prost(bytes = "bytes", tag = "2")]
    pub raw: Bytes,
}

/// `runtime.TypeMeta`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeMeta {
    #[prost(string, tag = "1")]
    pub api_version: String,
    #[prost(string, tag = "2")]
    pub kind: String,
}

/// `metav1.WatchEvent`: one frame of a protobuf watch, without magic or
/// envelope; the object inside is enveloped again.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchEvent {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(message, optional, tag = "2")]
    pub object: Option<RawExtension>,
}

/// `runtime.RawExtension`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawExtension {
    #[prost(bytes = "bytes", tag = "1")]
    pub raw: Bytes,
}

/// `metav1.Status`, as error responses and ERROR watch events carry it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "3")]
    pub message: String,
    #[prost(string, tag = "4")]
    pub reason: String,
    #[prost(message, optional, tag = "5")]
    pub details: Option<StatusDetails>,
    #[prost(int32, tag = "6")]
    pub code: i32,
}

/// `metav1.StatusDetails`: only the causes, which tell a too-large
/// resourceVersion apart from other timeouts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusDetails {
    #[prost(message, repeated, tag = "4")]
    pub causes: Vec<StatusCause>,
}

/// `metav1.StatusCause`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusCause {
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// `metav1.ListMeta`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListMeta {
    #[prost(string, tag = "2")]
    pub resource_version: String,
    #[prost(string, tag = "3")]
    pub r#continue: String,
}

/// `core/v1.PodList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodList {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    pub items: Vec<Pod>,
}

/// `core/v1.Pod`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pod {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<PodSpec>,
    #[prost(message, optional, tag = "3")]
    pub status: Option<PodStatus>,
}

/// `metav1.ObjectMeta`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectMeta {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(string, tag = "5")]
    pub uid: String,
    #[prost(string, tag = "6")]
    pub resource_version: String,
    #[prost(message, optional, tag = "8")]
    pub creation_timestamp: Option<Time>,
    #[prost(message, optional, tag = "9")]
    pub deletion_timestamp: Option<Time>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub labels: BTreeMap<String, String>,
    /// A map on the wire is a repeated key/value message. Declared as such
    /// with `Bytes`, an annotation is a view into the received buffer, so
    /// the large ones no controller reads (last-applied-configuration…)
    /// are never copied.
    #[prost(message, repeated, tag = "12")]
    pub annotations: Vec<BytesEntry>,
    #[prost(message, repeated, tag = "13")]
    pub owner_references: Vec<OwnerReference>,
}

/// One entry of a `map<string, string>`, left as bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BytesEntry {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `metav1.OwnerReference`; `controller` and `blockOwnerDeletion` are Go
/// pointers, so their presence is kept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnerReference {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub uid: String,
    #[prost(string, tag = "5")]
    pub api_version: String,
    #[prost(bool, optional, tag = "6")]
    pub controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub block_owner_deletion: Option<bool>,
}

/// `metav1.Time`. Go writes the zero time as an empty message and never
/// writes nanoseconds (nor reads them back), so `seconds` is all there is
/// and its absence means "unset".
#[derive(Clone, PartialEq, prost::Message)]
pub struct Time {
    #[prost(int64, optional, tag = "1")]
    pub seconds: Option<i64>,
}

/// `core/v1.PodSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSpec {
    #[prost(message, repeated, tag = "1")]
    pub volumes: Vec<Volume>,
    #[prost(message, repeated, tag = "2")]
    pub containers: Vec<Container>,
    #[prost(string, tag = "10")]
    pub node_name: String,
    #[prost(string, tag = "16")]
    pub hostname: String,
    #[prost(string, tag = "17")]
    pub subdomain: String,
    #[prost(message, repeated, tag = "20")]
    pub init_containers: Vec<Container>,
}

/// `core/v1.Volume`: its name and, of its source, only what names a claim.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Volume {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub volume_source: Option<VolumeSource>,
}

/// `core/v1.VolumeSource`, the two sources that use a PersistentVolumeClaim.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VolumeSource {
    #[prost(message, optional, tag = "10")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    #[prost(message, optional, tag = "29")]
    pub ephemeral: Option<EphemeralVolumeSource>,
}

/// `core/v1.PersistentVolumeClaimVolumeSource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PersistentVolumeClaimVolumeSource {
    #[prost(string, tag = "1")]
    pub claim_name: String,
}

/// `core/v1.EphemeralVolumeSource`: only its presence matters (the claim is
/// named `<pod>-<volume>`), so none of its fields is decoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EphemeralVolumeSource {}

/// `core/v1.Container`; `restartPolicy` is a Go pointer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "6")]
    pub ports: Vec<ContainerPort>,
    #[prost(string, optional, tag = "24")]
    pub restart_policy: Option<String>,
}

/// `core/v1.ContainerPort`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerPort {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "3")]
    pub container_port: i32,
    #[prost(string, tag = "4")]
    pub protocol: String,
}

/// `core/v1.PodStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodStatus {
    #[prost(string, tag = "1")]
    pub phase: String,
    #[prost(message, repeated, tag = "2")]
    pub conditions: Vec<PodCondition>,
    #[prost(string, tag = "6")]
    pub pod_ip: String,
    #[prost(message, repeated, tag = "8")]
    pub container_statuses: Vec<ContainerStatus>,
    #[prost(message, repeated, tag = "10")]
    pub init_container_statuses: Vec<ContainerStatus>,
    #[prost(message, repeated, tag = "12")]
    pub pod_ips: Vec<PodIp>,
}

/// `core/v1.PodCondition`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodCondition {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub status: String,
    #[prost(message, optional, tag = "4")]
    pub last_transition_time: Option<Time>,
}

/// `core/v1.ContainerStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "5")]
    pub restart_count: i32,
}

/// `core/v1.PodIP`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodIp {
    #[prost(string, tag = "1")]
    pub ip: String,
}
