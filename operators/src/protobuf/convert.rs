//! Decoded protobuf pods → the `k8s-openapi` pods the informer stores,
//! holding exactly the kept set of [`podutil::trim_pod`] and shaped as the
//! JSON path shapes it, so the store and every handler see the same pod
//! whichever content type delivered it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use super::messages as pb;
use crate::controllers::podutil::{self, non_empty};

/// The stored form of a decoded pod.
pub fn pod(pod: pb::Pod) -> core::Pod {
    core::Pod {
        metadata: object_meta(pod.metadata.unwrap_or_default()),
        spec: pod.spec.map(pod_spec),
        status: pod.status.map(pod_status),
    }
}

/// Go leaves empty non-pointer strings out of JSON; protobuf carries them.
fn text(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn time(t: pb::Time) -> Option<meta::Time> {
    // Go's valid times (years 1–9999) are all within jiff's range.
    jiff::Timestamp::from_second(t.seconds?)
        .ok()
        .map(meta::Time)
}

fn object_meta(m: pb::ObjectMeta) -> meta::ObjectMeta {
    let annotations: BTreeMap<String, String> = m
        .annotations
        .into_iter()
        .filter(|entry| podutil::is_kept_annotation(&entry.key))
        .map(|entry| {
            (
                String::from_utf8_lossy(&entry.key).into_owned(),
                // As Go's JSON encoder, which replaces invalid UTF-8 too.
                String::from_utf8_lossy(&entry.value).into_owned(),
            )
        })
        .collect();
    meta::ObjectMeta {
        name: text(m.name),
        namespace: text(m.namespace),
        uid: text(m.uid),
        resource_version: text(m.resource_version),
        creation_timestamp: m.creation_timestamp.and_then(time),
        deletion_timestamp: m.deletion_timestamp.and_then(time),
        labels: (!m.labels.is_empty()).then_some(m.labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: non_empty(
            m.owner_references
                .into_iter()
                .map(|o| meta::OwnerReference {
                    api_version: o.api_version,
                    kind: o.kind,
                    name: o.name,
                    uid: o.uid,
                    controller: o.controller,
                    block_owner_deletion: o.block_owner_deletion,
                })
                .collect(),
        ),
        ..meta::ObjectMeta::default()
    }
}

fn pod_spec(s: pb::PodSpec) -> core::PodSpec {
    core::PodSpec {
        volumes: non_empty(s.volumes.into_iter().filter_map(claim_volume).collect()),
        containers: s.containers.into_iter().map(container).collect(),
        init_containers: non_empty(s.init_containers.into_iter().map(container).collect()),
        node_name: text(s.node_name),
        hostname: text(s.hostname),
        subdomain: text(s.subdomain),
        ..core::PodSpec::default()
    }
}

/// A volume that uses a claim, in [`podutil::trim_pod`]'s kept form; `None`
/// for every other volume.
fn claim_volume(v: pb::Volume) -> Option<core::Volume> {
    let source = v.volume_source?;
    if let Some(pvc) = source.persistent_volume_claim {
        return Some(podutil::claim_volume(v.name, Some(pvc.claim_name), false));
    }
    source
        .ephemeral
        .map(|_| podutil::claim_volume(v.name, None, true))
}

fn container(c: pb::Container) -> core::Container {
    core::Container {
        name: c.name,
        // A pointer in Go: an empty policy that was set stays set.
        restart_policy: c.restart_policy,
        ports: non_empty(
            c.ports
                .into_iter()
                .map(|p| core::ContainerPort {
                    name: text(p.name),
                    container_port: p.container_port,
                    protocol: text(p.protocol),
                    ..core::ContainerPort::default()
                })
                .collect(),
        ),
        ..core::Container::default()
    }
}

fn pod_status(s: pb::PodStatus) -> core::PodStatus {
    core::PodStatus {
        phase: text(s.phase),
        pod_ip: text(s.pod_ip),
        pod_ips: non_empty(
            s.pod_ips
                .into_iter()
                .map(|ip| core::PodIP { ip: ip.ip })
                .collect(),
        ),
        conditions: podutil::ready_conditions(s.conditions.into_iter().map(|c| {
            core::PodCondition {
                type_: c.r#type,
                status: c.status,
                last_transition_time: c.last_transition_time.and_then(time),
                ..core::PodCondition::default()
            }
        })),
        container_statuses: container_statuses(s.container_statuses),
        init_container_statuses: container_statuses(s.init_container_statuses),
        ..core::PodStatus::default()
    }
}

fn container_statuses(statuses: Vec<pb::ContainerStatus>) -> Option<Vec<core::ContainerStatus>> {
    non_empty(
        statuses
            .into_iter()
            .map(|s| core::ContainerStatus {
                name: s.name,
                restart_count: s.restart_count,
                ..core::ContainerStatus::default()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::ObjectList;

    use crate::controllers::podutil::trim_pod;
    use crate::protobuf::wire::tests::fixture;
    use crate::protobuf::wire::{self, FrameDecoder, PodEvent};

    // The fixtures were made by a Go program with k8s.io/api and
    // apimachinery v0.37.2 (see `tests/fixtures/README.md`): a PodList of a
    // rich pod and a bare one as the apiserver encodes it in protobuf and in
    // JSON, and the rich pod as one protobuf watch frame.

    /// The JSON path: what kube-runtime's watcher decodes, trimmed.
    fn json_pods() -> Vec<Pod> {
        let list: ObjectList<Pod> = serde_json::from_slice(&fixture("podlist.json")).unwrap();
        list.items
            .into_iter()
            .map(|mut pod| {
                trim_pod(&mut pod);
                pod
            })
            .collect()
    }

    #[test]
    fn claim_volumes_are_kept_alike_by_both_paths() {
        let page = wire::decode_pod_list(fixture("pod-volumes.pb")).unwrap();
        let list: ObjectList<Pod> = serde_json::from_slice(&fixture("pod-volumes.json")).unwrap();
        let mut json = list.items;
        trim_pod(&mut json[0]);
        assert_eq!(page.items, json);
        let volumes = json[0].spec.as_ref().unwrap().volumes.as_ref().unwrap();
        let kept: Vec<_> = volumes
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    v.persistent_volume_claim
                        .as_ref()
                        .map(|p| p.claim_name.as_str()),
                    v.ephemeral.is_some(),
                )
            })
            .collect();
        // emptyDir and projected volumes go; so does readOnly.
        assert_eq!(
            kept,
            [("data", Some("data-db-0"), false), ("scratch", None, true)]
        );
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .read_only,
            None
        );
        assert!(
            volumes[1]
                .ephemeral
                .as_ref()
                .unwrap()
                .volume_claim_template
                .is_none()
        );
    }

    #[test]
    fn protobuf_list_stores_what_json_and_trimming_store() {
        let page = wire::decode_pod_list(fixture("podlist.pb")).unwrap();
        assert_eq!(page.resource_version, "48290");
        assert_eq!(page.continue_token, "");
        let json = json_pods();
        assert_eq!(page.items.len(), 2);
        for (pb, json) in page.items.iter().zip(&json) {
            assert_eq!(pb, json, "{:?}", json.metadata.name);
        }
    }

    #[test]
    fn protobuf_watch_frame_stores_what_json_and_trimming_store() {
        let mut frames = FrameDecoder::default();
        frames.push(&fixture("pod-watch-modified.pb"));
        let frame = frames.next_frame().unwrap().expect("one whole frame");
        assert_eq!(frames.buffered(), 0);
        let PodEvent::Modified(pod) = wire::decode_event(frame).unwrap() else {
            panic!("a MODIFIED event")
        };
        assert_eq!(pod, json_pods()[0]);
    }

    /// Guards the fixture itself: the rich pod exercises every kept field,
    /// so an equality above cannot pass by both sides dropping something.
    #[test]
    fn the_rich_pod_carries_every_kept_field() {
        let pod = &json_pods()[0];
        let meta = &pod.metadata;
        assert!(meta.name.is_some() && meta.namespace.is_some() && meta.uid.is_some());
        assert!(meta.resource_version.is_some());
        assert!(meta.creation_timestamp.is_some() && meta.deletion_timestamp.is_some());
        assert_eq!(meta.labels.as_ref().unwrap().len(), 3);
        assert_eq!(
            meta.annotations
                .as_ref()
                .unwrap()
                .values()
                .collect::<Vec<_>>(),
            ["-5"]
        );
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[1].controller, None);
        assert!(meta.managed_fields.is_none() && meta.finalizers.is_none());

        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-3"));
        assert!(spec.hostname.is_some() && spec.subdomain.is_some());
        let app = &spec.containers[0];
        let ports = app.ports.as_ref().unwrap();
        assert_eq!(ports.len(), 3);
        assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
        assert_eq!(
            (ports[2].name.as_deref(), ports[2].protocol.as_deref()),
            (None, None)
        );
        assert!(ports[1].host_port.is_none() && app.env.is_none() && app.image.is_none());
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
        assert!(spec.volumes.is_none() && spec.tolerations.is_none());

        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ips.as_ref().unwrap().len(), 2);
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert!(conditions[0].last_transition_time.is_some());
        let restarts: Vec<i32> = status
            .container_statuses
            .iter()
            .chain(&status.init_container_statuses)
            .flatten()
            .map(|s| s.restart_count)
            .collect();
        assert_eq!(restarts, [2, 7, 0, 0, 4]);
        assert!(status.host_ip.is_none() && status.start_time.is_none());

        // The bare pod: unset times, an empty label value, a restartPolicy
        // set to "" (a pointer in Go), a Ready condition without a time.
        let bare = &json_pods()[1];
        assert!(bare.metadata.creation_timestamp.is_none());
        assert_eq!(bare.metadata.labels.as_ref().unwrap()["empty"], "");
        let init = bare
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap();
        assert_eq!(init[0].restart_policy.as_deref(), Some(""));
        let ready = &bare.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
        assert!(ready.last_transition_time.is_none());
    }
}
