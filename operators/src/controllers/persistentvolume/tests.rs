//! Table tests in the style of upstream's binder_test.go / framework_test.go:
//! initial volumes and claims, one sync, then the expected volumes, claims
//! and Event reasons. Writes go through [`apply`] to an in-memory apiserver
//! that checks resourceVersions, as the real one does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use understudy_component_base::events::EventType;

use super::apply::{BinderApi, apply};
use super::claim_sync::{ClaimView, sync_claim};
use super::fixtures::*;
use super::helpers::claim_key;
use super::plan::{Plan, Step};
use super::volume_sync::{ClaimSeen, sync_volume};

const BOUND_BY: &str = "pv.kubernetes.io/bound-by-controller";
const COMPLETED: &str = "pv.kubernetes.io/bind-completed";

/// An apiserver for PVs and PVCs: full updates with optimistic
/// concurrency, spec and status written separately.
#[derive(Default)]
struct FakeApi {
    volumes: Mutex<BTreeMap<String, PersistentVolume>>,
    claims: Mutex<BTreeMap<String, PersistentVolumeClaim>>,
    version: AtomicU64,
    writes: AtomicUsize,
    /// Writes that succeed before every further write fails (a crash).
    crash_after: Option<usize>,
    /// Pods, for the syncs that look at who uses a claim.
    pods: Vec<Arc<Pod>>,
}

fn conflict(kind: &str, name: &str) -> String {
    format!(
        "Operation cannot be fulfilled on {kind} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
    )
}

impl FakeApi {
    fn new(volumes: &[PersistentVolume], claims: &[PersistentVolumeClaim]) -> Self {
        let api = FakeApi {
            version: AtomicU64::new(100),
            ..FakeApi::default()
        };
        for v in volumes {
            api.volumes
                .lock()
                .unwrap()
                .insert(v.metadata.name.clone().unwrap(), v.clone());
        }
        for c in claims {
            api.claims.lock().unwrap().insert(claim_key(c), c.clone());
        }
        api
    }

    fn crashing_after(mut self, writes: usize) -> Self {
        self.crash_after = Some(writes);
        self
    }

    fn admit(&self) -> Result<String, String> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if self.crash_after.is_some_and(|limit| n >= limit) {
            return Err("connection refused".into());
        }
        Ok((self.version.fetch_add(1, Ordering::SeqCst) + 1).to_string())
    }

    fn volume_view(&self) -> BTreeMap<Arc<str>, Arc<PersistentVolume>> {
        let volumes = self.volumes.lock().unwrap();
        volumes
            .iter()
            .map(|(k, v)| (Arc::from(k.as_str()), Arc::new(v.clone())))
            .collect()
    }

    fn write_volume(
        &self,
        new: PersistentVolume,
        status: bool,
    ) -> Result<PersistentVolume, String> {
        let name = new.metadata.name.clone().unwrap_or_default();
        let mut volumes = self.volumes.lock().unwrap();
        let Some(stored) = volumes.get_mut(&name) else {
            return Err(format!("persistentvolumes {name:?} not found"));
        };
        if stored.metadata.resource_version != new.metadata.resource_version {
            return Err(conflict("persistentvolumes", &name));
        }
        let rv = self.admit()?;
        if status {
            stored.status = new.status;
        } else {
            stored.metadata = new.metadata;
            stored.spec = new.spec;
        }
        stored.metadata.resource_version = Some(rv);
        Ok(stored.clone())
    }

    fn write_claim(
        &self,
        new: PersistentVolumeClaim,
        status: bool,
    ) -> Result<PersistentVolumeClaim, String> {
        let key = claim_key(&new);
        let mut claims = self.claims.lock().unwrap();
        let Some(stored) = claims.get_mut(&key) else {
            return Err(format!("persistentvolumeclaims {key:?} not found"));
        };
        if stored.metadata.resource_version != new.metadata.resource_version {
            return Err(conflict("persistentvolumeclaims", &key));
        }
        let rv = self.admit()?;
        if status {
            stored.status = new.status;
        } else {
            stored.metadata = new.metadata;
            stored.spec = new.spec;
        }
        stored.metadata.resource_version = Some(rv);
        Ok(stored.clone())
    }
}

impl BinderApi for FakeApi {
    fn update_volume(
        &self,
        v: PersistentVolume,
    ) -> BoxFuture<'_, Result<PersistentVolume, String>> {
        futures::future::ready(self.write_volume(v, false)).boxed()
    }
    fn update_volume_status(
        &self,
        v: PersistentVolume,
    ) -> BoxFuture<'_, Result<PersistentVolume, String>> {
        futures::future::ready(self.write_volume(v, true)).boxed()
    }
    fn update_claim(
        &self,
        c: PersistentVolumeClaim,
    ) -> BoxFuture<'_, Result<PersistentVolumeClaim, String>> {
        futures::future::ready(self.write_claim(c, false)).boxed()
    }
    fn update_claim_status(
        &self,
        c: PersistentVolumeClaim,
    ) -> BoxFuture<'_, Result<PersistentVolumeClaim, String>> {
        futures::future::ready(self.write_claim(c, true)).boxed()
    }
}

enum Sync {
    Claim(&'static str),
    Volume(&'static str),
}

struct Case {
    name: &'static str,
    initial_volumes: Vec<PersistentVolume>,
    expected_volumes: Vec<PersistentVolume>,
    initial_claims: Vec<PersistentVolumeClaim>,
    expected_claims: Vec<PersistentVolumeClaim>,
    classes: Vec<StorageClass>,
    /// "Type Reason", as upstream's expectedEvents.
    expected_events: Vec<&'static str>,
    sync: Sync,
    expect_error: bool,
}

fn classes_by_name(classes: &[StorageClass]) -> BTreeMap<String, StorageClass> {
    classes
        .iter()
        .map(|c| (c.metadata.name.clone().unwrap(), c.clone()))
        .collect()
}

/// Plans one sync against the fake's current objects, as the controller
/// plans against its view.
fn plan_sync(api: &FakeApi, sync: &Sync, classes: &BTreeMap<String, StorageClass>) -> Plan {
    match sync {
        Sync::Claim(name) => {
            let claim = api.claims.lock().unwrap()[&format!("{NS}/{name}")].clone();
            let volumes = api.volume_view();
            let pods: Vec<Arc<Pod>> = api
                .pods
                .iter()
                .filter(|p| super::helpers::pod_uses_claim(p, name))
                .cloned()
                .collect();
            sync_claim(
                &claim,
                &ClaimView {
                    volumes: &volumes,
                    classes,
                    pods: &pods,
                    dynamic_provisioning: true,
                },
            )
        }
        Sync::Volume(name) => {
            let volume = api.volumes.lock().unwrap()[*name].clone();
            let claim = volume
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| {
                    let key = format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or_default(),
                        r.name.as_deref().unwrap_or_default()
                    );
                    api.claims.lock().unwrap().get(&key).cloned()
                });
            let seen = match &claim {
                Some(c) => ClaimSeen::Found(c),
                None => ClaimSeen::Missing,
            };
            let claim_name = volume
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            let users: Vec<String> = api
                .pods
                .iter()
                .filter(|p| super::helpers::pod_uses_claim(p, &claim_name))
                .filter(|p| !super::helpers::is_pod_terminated(p))
                .map(|p| format!("{NS}/{}", p.metadata.name.as_deref().unwrap_or_default()))
                .collect();
            sync_volume(&volume, seen, &users)
        }
    }
}

/// Objects compared without resourceVersions, which only the fake assigns.
fn normalized_volume(mut v: PersistentVolume) -> PersistentVolume {
    v.metadata.resource_version = None;
    if let Some(r) = v.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
        r.resource_version = None;
    }
    v
}

fn normalized_claim(mut c: PersistentVolumeClaim) -> PersistentVolumeClaim {
    c.metadata.resource_version = None;
    c
}

fn event_strings(events: &[super::plan::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let t = match e.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            };
            format!("{t} {}", e.reason)
        })
        .collect()
}

fn run(cases: Vec<Case>) {
    for case in cases {
        let api = FakeApi::new(&case.initial_volumes, &case.initial_claims);
        let classes = classes_by_name(&case.classes);
        let plan = plan_sync(&api, &case.sync, &classes);
        let applied = apply(plan, &api)
            .now_or_never()
            .expect("fake API never waits");
        assert_eq!(
            applied.error.is_some(),
            case.expect_error,
            "{}: error {:?}",
            case.name,
            applied.error
        );
        assert_eq!(
            event_strings(&applied.events),
            case.expected_events,
            "{}: events",
            case.name
        );
        let volumes: Vec<_> = api
            .volumes
            .lock()
            .unwrap()
            .values()
            .cloned()
            .map(normalized_volume)
            .collect();
        let mut expected: Vec<_> = case
            .expected_volumes
            .into_iter()
            .map(normalized_volume)
            .collect();
        expected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        assert_eq!(volumes, expected, "{}: volumes", case.name);
        let claims: Vec<_> = api
            .claims
            .lock()
            .unwrap()
            .values()
            .cloned()
            .map(normalized_claim)
            .collect();
        let mut expected: Vec<_> = case
            .expected_claims
            .into_iter()
            .map(normalized_claim)
            .collect();
        expected.sort_by_key(claim_key);
        assert_eq!(claims, expected, "{}: claims", case.name);
    }
}

/// A claim bound by the controller to `volume`, as upstream's bind leaves it.
fn bound_claim(
    name: &str,
    uid: &str,
    size: &str,
    volume: &str,
    vol_size: &str,
    class: Option<&str>,
    anns: &[&str],
) -> PersistentVolumeClaim {
    bound_status(
        claim(name, uid, size, volume, "Bound", class, anns),
        vol_size,
    )
}

fn no_events() -> Vec<&'static str> {
    Vec::new()
}

#[test]
fn sync_unbound_claims() {
    let gold_wffc = class(
        "gold",
        "kubernetes.io/no-provisioner",
        "WaitForFirstConsumer",
        false,
    );
    run(vec![
        Case {
            name: "1-1 no volume, no class: FailedBinding and Pending",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![claim("claim1-1", "uid1-1", "10Gi", "", "", None, &[])],
            expected_claims: vec![claim(
                "claim1-1",
                "uid1-1",
                "10Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            classes: vec![],
            expected_events: vec!["Normal FailedBinding"],
            sync: Sync::Claim("claim1-1"),
            expect_error: false,
        },
        Case {
            name: "1-2 an Available volume of the same size binds",
            initial_volumes: vec![volume(
                "volume1-2",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume1-2",
                "10Gi",
                "uid1-2",
                "claim1-2",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![claim(
                "claim1-2",
                "uid1-2",
                "10Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            expected_claims: vec![bound_claim(
                "claim1-2",
                "uid1-2",
                "10Gi",
                "volume1-2",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim1-2"),
            expect_error: false,
        },
        Case {
            name: "1-3 the only volume is too small",
            initial_volumes: vec![volume(
                "volume1-3",
                "1Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume1-3",
                "1Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![claim(
                "claim1-3",
                "uid1-3",
                "10Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            expected_claims: vec![claim(
                "claim1-3",
                "uid1-3",
                "10Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            classes: vec![],
            expected_events: vec!["Normal FailedBinding"],
            sync: Sync::Claim("claim1-3"),
            expect_error: false,
        },
        Case {
            name: "1-4 the smallest volume that fits wins",
            initial_volumes: vec![
                volume("volume1-4a", "1Gi", "", "", "Available", "Retain", "", &[]),
                volume("volume1-4b", "5Gi", "", "", "Available", "Retain", "", &[]),
                volume("volume1-4c", "10Gi", "", "", "Available", "Retain", "", &[]),
            ],
            expected_volumes: vec![
                volume("volume1-4a", "1Gi", "", "", "Available", "Retain", "", &[]),
                volume(
                    "volume1-4b",
                    "5Gi",
                    "uid1-4",
                    "claim1-4",
                    "Bound",
                    "Retain",
                    "",
                    &[BOUND_BY],
                ),
                volume("volume1-4c", "10Gi", "", "", "Available", "Retain", "", &[]),
            ],
            initial_claims: vec![claim("claim1-4", "uid1-4", "4Gi", "", "Pending", None, &[])],
            expected_claims: vec![bound_claim(
                "claim1-4",
                "uid1-4",
                "4Gi",
                "volume1-4b",
                "5Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim1-4"),
            expect_error: false,
        },
        Case {
            name: "1-5 an unknown class: ProvisioningFailed, status untouched",
            initial_volumes: vec![volume(
                "volume1-5",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume1-5",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![claim(
                "claim1-5",
                "uid1-5",
                "1Gi",
                "",
                "Pending",
                Some("silver"),
                &[],
            )],
            expected_claims: vec![claim(
                "claim1-5",
                "uid1-5",
                "1Gi",
                "",
                "Pending",
                Some("silver"),
                &[],
            )],
            classes: vec![],
            expected_events: vec!["Warning ProvisioningFailed"],
            sync: Sync::Claim("claim1-5"),
            expect_error: false,
        },
        Case {
            name: "1-6 a class matches only volumes of that class",
            initial_volumes: vec![
                volume("volume1-6a", "1Gi", "", "", "Available", "Retain", "", &[]),
                volume(
                    "volume1-6b",
                    "10Gi",
                    "",
                    "",
                    "Available",
                    "Retain",
                    "gold",
                    &[],
                ),
            ],
            expected_volumes: vec![
                volume("volume1-6a", "1Gi", "", "", "Available", "Retain", "", &[]),
                volume(
                    "volume1-6b",
                    "10Gi",
                    "uid1-6",
                    "claim1-6",
                    "Bound",
                    "Retain",
                    "gold",
                    &[BOUND_BY],
                ),
            ],
            initial_claims: vec![claim(
                "claim1-6",
                "uid1-6",
                "1Gi",
                "",
                "Pending",
                Some("gold"),
                &[],
            )],
            expected_claims: vec![bound_claim(
                "claim1-6",
                "uid1-6",
                "1Gi",
                "volume1-6b",
                "10Gi",
                Some("gold"),
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![class(
                "gold",
                "kubernetes.io/no-provisioner",
                "Immediate",
                false,
            )],
            expected_events: no_events(),
            sync: Sync::Claim("claim1-6"),
            expect_error: false,
        },
        Case {
            name: "1-7 no class: volumes without class first, the default class is not matched",
            initial_volumes: vec![
                volume("volume1-7a", "10Gi", "", "", "Available", "Retain", "", &[]),
                volume(
                    "volume1-7b",
                    "1Gi",
                    "",
                    "",
                    "Available",
                    "Retain",
                    "gold",
                    &[],
                ),
            ],
            expected_volumes: vec![
                volume(
                    "volume1-7a",
                    "10Gi",
                    "uid1-7",
                    "claim1-7",
                    "Bound",
                    "Retain",
                    "",
                    &[BOUND_BY],
                ),
                volume(
                    "volume1-7b",
                    "1Gi",
                    "",
                    "",
                    "Available",
                    "Retain",
                    "gold",
                    &[],
                ),
            ],
            initial_claims: vec![claim("claim1-7", "uid1-7", "1Gi", "", "Pending", None, &[])],
            expected_claims: vec![bound_claim(
                "claim1-7",
                "uid1-7",
                "1Gi",
                "volume1-7a",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![class("gold", "example.com/csi", "Immediate", true)],
            expected_events: no_events(),
            sync: Sync::Claim("claim1-7"),
            expect_error: false,
        },
        Case {
            name: "1-8 no class and nothing fits: the default class is assigned, retroactively",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![claim("claim1-8", "uid1-8", "1Gi", "", "Pending", None, &[])],
            expected_claims: vec![claim(
                "claim1-8",
                "uid1-8",
                "1Gi",
                "",
                "Pending",
                Some("gold"),
                &[],
            )],
            classes: vec![
                class("silver", "example.com/csi", "Immediate", false),
                class("gold", "example.com/csi", "Immediate", true),
            ],
            expected_events: no_events(),
            sync: Sync::Claim("claim1-8"),
            expect_error: false,
        },
        Case {
            name: "1-9 an explicit empty class never gets the default",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![claim(
                "claim1-9",
                "uid1-9",
                "1Gi",
                "",
                "Pending",
                Some(""),
                &[],
            )],
            expected_claims: vec![claim(
                "claim1-9",
                "uid1-9",
                "1Gi",
                "",
                "Pending",
                Some(""),
                &[],
            )],
            classes: vec![class("gold", "example.com/csi", "Immediate", true)],
            expected_events: vec!["Normal FailedBinding"],
            sync: Sync::Claim("claim1-9"),
            expect_error: false,
        },
        Case {
            name: "1-10 WaitForFirstConsumer: free volumes are left to the scheduler",
            initial_volumes: vec![volume(
                "volume1-10",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "gold",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume1-10",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "gold",
                &[],
            )],
            initial_claims: vec![claim(
                "claim1-10",
                "uid1-10",
                "1Gi",
                "",
                "",
                Some("gold"),
                &[],
            )],
            expected_claims: vec![claim(
                "claim1-10",
                "uid1-10",
                "1Gi",
                "",
                "Pending",
                Some("gold"),
                &[],
            )],
            classes: vec![gold_wffc.clone()],
            expected_events: vec!["Normal WaitForFirstConsumer"],
            sync: Sync::Claim("claim1-10"),
            expect_error: false,
        },
        Case {
            name: "1-11 WaitForFirstConsumer: the volume the scheduler bound is completed",
            initial_volumes: vec![volume(
                "volume1-11",
                "10Gi",
                "uid1-11",
                "claim1-11",
                "Available",
                "Retain",
                "gold",
                &[BOUND_BY],
            )],
            expected_volumes: vec![volume(
                "volume1-11",
                "10Gi",
                "uid1-11",
                "claim1-11",
                "Bound",
                "Retain",
                "gold",
                &[BOUND_BY],
            )],
            initial_claims: vec![claim(
                "claim1-11",
                "uid1-11",
                "1Gi",
                "",
                "Pending",
                Some("gold"),
                &["volume.kubernetes.io/selected-node=node-1"],
            )],
            expected_claims: vec![bound_claim(
                "claim1-11",
                "uid1-11",
                "1Gi",
                "volume1-11",
                "10Gi",
                Some("gold"),
                &[
                    "volume.kubernetes.io/selected-node=node-1",
                    BOUND_BY,
                    COMPLETED,
                ],
            )],
            classes: vec![gold_wffc.clone()],
            expected_events: no_events(),
            sync: Sync::Claim("claim1-11"),
            expect_error: false,
        },
        Case {
            name: "1-12 WaitForFirstConsumer with a selected node and no provisioner",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![claim(
                "claim1-12",
                "uid1-12",
                "1Gi",
                "",
                "Pending",
                Some("gold"),
                &["volume.kubernetes.io/selected-node=node-1"],
            )],
            expected_claims: vec![claim(
                "claim1-12",
                "uid1-12",
                "1Gi",
                "",
                "Pending",
                Some("gold"),
                &["volume.kubernetes.io/selected-node=node-1"],
            )],
            classes: vec![gold_wffc.clone()],
            expected_events: vec!["Warning ProvisioningFailed"],
            sync: Sync::Claim("claim1-12"),
            expect_error: false,
        },
        Case {
            name: "1-13 an external provisioner is asked through annotations",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![claim(
                "claim1-13",
                "uid1-13",
                "1Gi",
                "",
                "Pending",
                Some("csi"),
                &[],
            )],
            expected_claims: vec![claim(
                "claim1-13",
                "uid1-13",
                "1Gi",
                "",
                "Pending",
                Some("csi"),
                &[
                    "volume.beta.kubernetes.io/storage-provisioner=example.com/csi",
                    "volume.kubernetes.io/storage-provisioner=example.com/csi",
                ],
            )],
            classes: vec![class("csi", "example.com/csi", "Immediate", false)],
            expected_events: vec!["Normal ExternalProvisioning"],
            sync: Sync::Claim("claim1-13"),
            expect_error: false,
        },
        Case {
            name: "1-14 a volume pre-bound by the user (no UID) gets the UID, not bound-by-controller",
            initial_volumes: vec![
                volume("volume1-14a", "1Gi", "", "", "Available", "Retain", "", &[]),
                volume(
                    "volume1-14b",
                    "10Gi",
                    "",
                    "claim1-14",
                    "Available",
                    "Retain",
                    "",
                    &[],
                ),
            ],
            expected_volumes: vec![
                volume("volume1-14a", "1Gi", "", "", "Available", "Retain", "", &[]),
                volume(
                    "volume1-14b",
                    "10Gi",
                    "uid1-14",
                    "claim1-14",
                    "Bound",
                    "Retain",
                    "",
                    &[],
                ),
            ],
            initial_claims: vec![claim(
                "claim1-14",
                "uid1-14",
                "1Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            expected_claims: vec![bound_claim(
                "claim1-14",
                "uid1-14",
                "1Gi",
                "volume1-14b",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim1-14"),
            expect_error: false,
        },
        Case {
            name: "1-15 a volume pre-bound to another claim is never taken",
            initial_volumes: vec![volume(
                "volume1-15",
                "10Gi",
                "",
                "other",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume1-15",
                "10Gi",
                "",
                "other",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![claim(
                "claim1-15",
                "uid1-15",
                "1Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            expected_claims: vec![claim(
                "claim1-15",
                "uid1-15",
                "1Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            classes: vec![],
            expected_events: vec!["Normal FailedBinding"],
            sync: Sync::Claim("claim1-15"),
            expect_error: false,
        },
        Case {
            name: "1-16 the claim's selector must select the volume's labels",
            initial_volumes: vec![
                volume("volume1-16a", "1Gi", "", "", "Available", "Retain", "", &[]),
                with(
                    volume(
                        "volume1-16b",
                        "10Gi",
                        "",
                        "",
                        "Available",
                        "Retain",
                        "",
                        &[],
                    ),
                    |v| v.metadata.labels = Some([("tier".to_string(), "fast".to_string())].into()),
                ),
            ],
            expected_volumes: vec![
                volume("volume1-16a", "1Gi", "", "", "Available", "Retain", "", &[]),
                with(
                    volume(
                        "volume1-16b",
                        "10Gi",
                        "uid1-16",
                        "claim1-16",
                        "Bound",
                        "Retain",
                        "",
                        &[BOUND_BY],
                    ),
                    |v| v.metadata.labels = Some([("tier".to_string(), "fast".to_string())].into()),
                ),
            ],
            initial_claims: vec![with(
                claim("claim1-16", "uid1-16", "1Gi", "", "Pending", None, &[]),
                select_fast,
            )],
            expected_claims: vec![with(
                bound_claim(
                    "claim1-16",
                    "uid1-16",
                    "1Gi",
                    "volume1-16b",
                    "10Gi",
                    None,
                    &[BOUND_BY, COMPLETED],
                ),
                select_fast,
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim1-16"),
            expect_error: false,
        },
        Case {
            name: "1-17 a Block claim does not get a Filesystem volume",
            initial_volumes: vec![volume(
                "volume1-17",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume1-17",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![with(
                claim("claim1-17", "uid1-17", "1Gi", "", "Pending", None, &[]),
                block,
            )],
            expected_claims: vec![with(
                claim("claim1-17", "uid1-17", "1Gi", "", "Pending", None, &[]),
                block,
            )],
            classes: vec![],
            expected_events: vec!["Normal FailedBinding"],
            sync: Sync::Claim("claim1-17"),
            expect_error: false,
        },
    ]);
}

fn select_fast(c: &mut PersistentVolumeClaim) {
    c.spec.as_mut().unwrap().selector =
        Some(serde_json::from_value(serde_json::json!({"matchLabels": {"tier": "fast"}})).unwrap());
}

fn block(c: &mut PersistentVolumeClaim) {
    c.spec.as_mut().unwrap().volume_mode = Some("Block".into());
}

#[test]
fn sync_claims_asking_for_a_volume() {
    run(vec![
        Case {
            name: "2-1 the volume does not exist (yet): Pending, quietly",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![claim(
                "claim2-1",
                "uid2-1",
                "10Gi",
                "volume2-1",
                "",
                None,
                &[],
            )],
            expected_claims: vec![claim(
                "claim2-1",
                "uid2-1",
                "10Gi",
                "volume2-1",
                "Pending",
                None,
                &[],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim2-1"),
            expect_error: false,
        },
        Case {
            name: "2-2 the free volume is bound; the claim was bound by the user",
            initial_volumes: vec![volume(
                "volume2-2",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume2-2",
                "10Gi",
                "uid2-2",
                "claim2-2",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![claim(
                "claim2-2",
                "uid2-2",
                "10Gi",
                "volume2-2",
                "Pending",
                None,
                &[],
            )],
            expected_claims: vec![bound_claim(
                "claim2-2",
                "uid2-2",
                "10Gi",
                "volume2-2",
                "10Gi",
                None,
                &[COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim2-2"),
            expect_error: false,
        },
        Case {
            name: "2-3 the volume is too small: VolumeMismatch",
            initial_volumes: vec![volume(
                "volume2-3",
                "1Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume2-3",
                "1Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![claim(
                "claim2-3",
                "uid2-3",
                "10Gi",
                "volume2-3",
                "",
                None,
                &[],
            )],
            expected_claims: vec![claim(
                "claim2-3",
                "uid2-3",
                "10Gi",
                "volume2-3",
                "Pending",
                None,
                &[],
            )],
            classes: vec![],
            expected_events: vec!["Warning VolumeMismatch"],
            sync: Sync::Claim("claim2-3"),
            expect_error: false,
        },
        Case {
            name: "2-4 the volume belongs to another claim: FailedBinding, Pending",
            initial_volumes: vec![volume(
                "volume2-4",
                "10Gi",
                "uid-other",
                "other",
                "Bound",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume2-4",
                "10Gi",
                "uid-other",
                "other",
                "Bound",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![claim(
                "claim2-4",
                "uid2-4",
                "10Gi",
                "volume2-4",
                "",
                None,
                &[],
            )],
            expected_claims: vec![claim(
                "claim2-4",
                "uid2-4",
                "10Gi",
                "volume2-4",
                "Pending",
                None,
                &[],
            )],
            classes: vec![],
            expected_events: vec!["Warning FailedBinding"],
            sync: Sync::Claim("claim2-4"),
            expect_error: false,
        },
        Case {
            name: "2-5 bound by the controller to a volume claimed by another: error",
            initial_volumes: vec![volume(
                "volume2-5",
                "10Gi",
                "uid-other",
                "other",
                "Bound",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume2-5",
                "10Gi",
                "uid-other",
                "other",
                "Bound",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![claim(
                "claim2-5",
                "uid2-5",
                "10Gi",
                "volume2-5",
                "Pending",
                None,
                &[BOUND_BY],
            )],
            expected_claims: vec![claim(
                "claim2-5",
                "uid2-5",
                "10Gi",
                "volume2-5",
                "Pending",
                None,
                &[BOUND_BY],
            )],
            classes: vec![],
            expected_events: vec!["Warning FailedBinding"],
            sync: Sync::Claim("claim2-5"),
            expect_error: true,
        },
        Case {
            name: "2-6 the volume is pre-bound to this claim too: bound, no bound-by-controller anywhere",
            initial_volumes: vec![volume(
                "volume2-6",
                "10Gi",
                "",
                "claim2-6",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume2-6",
                "10Gi",
                "uid2-6",
                "claim2-6",
                "Bound",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![claim(
                "claim2-6",
                "uid2-6",
                "10Gi",
                "volume2-6",
                "Pending",
                None,
                &[],
            )],
            expected_claims: vec![bound_claim(
                "claim2-6",
                "uid2-6",
                "10Gi",
                "volume2-6",
                "10Gi",
                None,
                &[COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim2-6"),
            expect_error: false,
        },
    ]);
}

#[test]
fn sync_bound_claims() {
    run(vec![
        Case {
            name: "3-1 lost its volumeName: Lost",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![claim(
                "claim3-1",
                "uid3-1",
                "10Gi",
                "",
                "Bound",
                None,
                &[COMPLETED],
            )],
            expected_claims: vec![claim(
                "claim3-1",
                "uid3-1",
                "10Gi",
                "",
                "Lost",
                None,
                &[COMPLETED],
            )],
            classes: vec![],
            expected_events: vec!["Warning ClaimLost"],
            sync: Sync::Claim("claim3-1"),
            expect_error: false,
        },
        Case {
            name: "3-2 its volume was deleted: Lost, capacity cleared",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![bound_claim(
                "claim3-2",
                "uid3-2",
                "10Gi",
                "volume3-2",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![claim(
                "claim3-2",
                "uid3-2",
                "10Gi",
                "volume3-2",
                "Lost",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: vec!["Warning ClaimLost"],
            sync: Sync::Claim("claim3-2"),
            expect_error: false,
        },
        Case {
            name: "3-3 already Lost: nothing again",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: vec![claim(
                "claim3-3",
                "uid3-3",
                "10Gi",
                "volume3-3",
                "Lost",
                None,
                &[COMPLETED],
            )],
            expected_claims: vec![claim(
                "claim3-3",
                "uid3-3",
                "10Gi",
                "volume3-3",
                "Lost",
                None,
                &[COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim3-3"),
            expect_error: false,
        },
        Case {
            name: "3-4 its volume is bound to another claim: ClaimMisbound",
            initial_volumes: vec![volume(
                "volume3-4",
                "10Gi",
                "uid-other",
                "other",
                "Bound",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume3-4",
                "10Gi",
                "uid-other",
                "other",
                "Bound",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![bound_claim(
                "claim3-4",
                "uid3-4",
                "10Gi",
                "volume3-4",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![claim(
                "claim3-4",
                "uid3-4",
                "10Gi",
                "volume3-4",
                "Lost",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: vec!["Warning ClaimMisbound"],
            sync: Sync::Claim("claim3-4"),
            expect_error: false,
        },
        Case {
            name: "3-5 its volume came unbound: bound again",
            initial_volumes: vec![volume(
                "volume3-5",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume3-5",
                "10Gi",
                "uid3-5",
                "claim3-5",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![bound_claim(
                "claim3-5",
                "uid3-5",
                "10Gi",
                "volume3-5",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![bound_claim(
                "claim3-5",
                "uid3-5",
                "10Gi",
                "volume3-5",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim3-5"),
            expect_error: false,
        },
        Case {
            name: "3-6 crash before the claim's status: Bound now, capacity from the volume",
            initial_volumes: vec![volume(
                "volume3-6",
                "10Gi",
                "uid3-6",
                "claim3-6",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![volume(
                "volume3-6",
                "10Gi",
                "uid3-6",
                "claim3-6",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![claim(
                "claim3-6",
                "uid3-6",
                "1Gi",
                "volume3-6",
                "Pending",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![bound_claim(
                "claim3-6",
                "uid3-6",
                "1Gi",
                "volume3-6",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim3-6"),
            expect_error: false,
        },
        Case {
            name: "3-7 all is well: no writes",
            initial_volumes: vec![volume(
                "volume3-7",
                "10Gi",
                "uid3-7",
                "claim3-7",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![volume(
                "volume3-7",
                "10Gi",
                "uid3-7",
                "claim3-7",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![bound_claim(
                "claim3-7",
                "uid3-7",
                "1Gi",
                "volume3-7",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![bound_claim(
                "claim3-7",
                "uid3-7",
                "1Gi",
                "volume3-7",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Claim("claim3-7"),
            expect_error: false,
        },
    ]);
}

#[test]
fn sync_volumes() {
    run(vec![
        Case {
            name: "4-1 unbound volume becomes Available",
            initial_volumes: vec![volume(
                "volume4-1",
                "10Gi",
                "",
                "",
                "Pending",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume4-1",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-1"),
            expect_error: false,
        },
        Case {
            name: "4-2 pre-bound by the user to a missing claim: Available",
            initial_volumes: vec![volume(
                "volume4-2",
                "10Gi",
                "",
                "claim4-2",
                "Pending",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume4-2",
                "10Gi",
                "",
                "claim4-2",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-2"),
            expect_error: false,
        },
        Case {
            name: "4-3 claim deleted, Retain: Released and kept",
            initial_volumes: vec![volume(
                "volume4-3",
                "10Gi",
                "uid4-3",
                "claim4-3",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![volume(
                "volume4-3",
                "10Gi",
                "uid4-3",
                "claim4-3",
                "Released",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-3"),
            expect_error: false,
        },
        Case {
            name: "4-4 claim deleted, Delete of a static volume: Failed, VolumeFailedDelete",
            initial_volumes: vec![volume(
                "volume4-4",
                "10Gi",
                "uid4-4",
                "claim4-4",
                "Bound",
                "Delete",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![with(
                volume(
                    "volume4-4",
                    "10Gi",
                    "uid4-4",
                    "claim4-4",
                    "Failed",
                    "Delete",
                    "",
                    &[BOUND_BY],
                ),
                |v| {
                    v.status.as_mut().unwrap().message = Some(
                    "error getting deleter volume plugin for volume \"volume4-4\": no volume plugin matched".into(),
                )
                },
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            classes: vec![],
            expected_events: vec!["Warning VolumeFailedDelete"],
            sync: Sync::Volume("volume4-4"),
            expect_error: false,
        },
        Case {
            name: "4-5 claim deleted, Recycle: Failed, VolumeFailedRecycle",
            initial_volumes: vec![volume(
                "volume4-5",
                "10Gi",
                "uid4-5",
                "claim4-5",
                "Bound",
                "Recycle",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![with(
                volume(
                    "volume4-5",
                    "10Gi",
                    "uid4-5",
                    "claim4-5",
                    "Failed",
                    "Recycle",
                    "",
                    &[BOUND_BY],
                ),
                |v| {
                    v.status.as_mut().unwrap().message =
                        Some("No recycler plugin found for the volume!".into())
                },
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            classes: vec![],
            expected_events: vec!["Warning VolumeFailedRecycle"],
            sync: Sync::Volume("volume4-5"),
            expect_error: false,
        },
        Case {
            name: "4-6 claim deleted, Delete of a CSI volume: Released for its external deleter",
            initial_volumes: vec![with(
                volume(
                    "volume4-6",
                    "10Gi",
                    "uid4-6",
                    "claim4-6",
                    "Bound",
                    "Delete",
                    "",
                    &[BOUND_BY],
                ),
                csi,
            )],
            expected_volumes: vec![with(
                volume(
                    "volume4-6",
                    "10Gi",
                    "uid4-6",
                    "claim4-6",
                    "Released",
                    "Delete",
                    "",
                    &[BOUND_BY],
                ),
                csi,
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-6"),
            expect_error: false,
        },
        Case {
            name: "4-7 a new claim of the same name (other UID): Released",
            initial_volumes: vec![volume(
                "volume4-7",
                "10Gi",
                "uid4-7",
                "claim4-7",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![volume(
                "volume4-7",
                "10Gi",
                "uid4-7",
                "claim4-7",
                "Released",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![claim(
                "claim4-7",
                "uid4-7-new",
                "10Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            expected_claims: vec![claim(
                "claim4-7",
                "uid4-7-new",
                "10Gi",
                "",
                "Pending",
                None,
                &[],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-7"),
            expect_error: false,
        },
        Case {
            name: "4-8 bound both ways: Bound",
            initial_volumes: vec![volume(
                "volume4-8",
                "10Gi",
                "uid4-8",
                "claim4-8",
                "Available",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![volume(
                "volume4-8",
                "10Gi",
                "uid4-8",
                "claim4-8",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![bound_claim(
                "claim4-8",
                "uid4-8",
                "10Gi",
                "volume4-8",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![bound_claim(
                "claim4-8",
                "uid4-8",
                "10Gi",
                "volume4-8",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-8"),
            expect_error: false,
        },
        Case {
            name: "4-9 claim bound elsewhere, volume bound by the controller: unbound",
            initial_volumes: vec![volume(
                "volume4-9",
                "10Gi",
                "uid4-9",
                "claim4-9",
                "Bound",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![volume(
                "volume4-9",
                "10Gi",
                "",
                "",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![bound_claim(
                "claim4-9",
                "uid4-9",
                "10Gi",
                "elsewhere",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![bound_claim(
                "claim4-9",
                "uid4-9",
                "10Gi",
                "elsewhere",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-9"),
            expect_error: false,
        },
        Case {
            name: "4-10 claim bound elsewhere, volume pre-bound by the user: UID cleared",
            initial_volumes: vec![volume(
                "volume4-10",
                "10Gi",
                "uid4-10",
                "claim4-10",
                "Bound",
                "Retain",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume4-10",
                "10Gi",
                "",
                "claim4-10",
                "Available",
                "Retain",
                "",
                &[],
            )],
            initial_claims: vec![bound_claim(
                "claim4-10",
                "uid4-10",
                "10Gi",
                "elsewhere",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![bound_claim(
                "claim4-10",
                "uid4-10",
                "10Gi",
                "elsewhere",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-10"),
            expect_error: false,
        },
        Case {
            name: "4-11 claim not bound yet, volumeMode differs: VolumeMismatch on both",
            initial_volumes: vec![volume(
                "volume4-11",
                "10Gi",
                "uid4-11",
                "claim4-11",
                "Available",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            expected_volumes: vec![volume(
                "volume4-11",
                "10Gi",
                "uid4-11",
                "claim4-11",
                "Available",
                "Retain",
                "",
                &[BOUND_BY],
            )],
            initial_claims: vec![with(
                claim("claim4-11", "uid4-11", "10Gi", "", "Pending", None, &[]),
                block,
            )],
            expected_claims: vec![with(
                claim("claim4-11", "uid4-11", "10Gi", "", "Pending", None, &[]),
                block,
            )],
            classes: vec![],
            expected_events: vec!["Warning VolumeMismatch", "Warning VolumeMismatch"],
            sync: Sync::Volume("volume4-11"),
            expect_error: false,
        },
        Case {
            name: "4-12 an unknown reclaim policy: Failed",
            initial_volumes: vec![volume(
                "volume4-12",
                "10Gi",
                "uid4-12",
                "claim4-12",
                "Bound",
                "Shred",
                "",
                &[],
            )],
            expected_volumes: vec![with(
                volume(
                    "volume4-12",
                    "10Gi",
                    "uid4-12",
                    "claim4-12",
                    "Failed",
                    "Shred",
                    "",
                    &[],
                ),
                |v| {
                    v.status.as_mut().unwrap().message =
                        Some("Volume has unrecognized PersistentVolumeReclaimPolicy".into())
                },
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            classes: vec![],
            expected_events: vec!["Warning VolumeUnknownReclaimPolicy"],
            sync: Sync::Volume("volume4-12"),
            expect_error: false,
        },
        Case {
            name: "4-13 already Failed: no write, no Event on resync",
            initial_volumes: vec![volume(
                "volume4-13",
                "10Gi",
                "uid4-13",
                "claim4-13",
                "Failed",
                "Delete",
                "",
                &[],
            )],
            expected_volumes: vec![volume(
                "volume4-13",
                "10Gi",
                "uid4-13",
                "claim4-13",
                "Failed",
                "Delete",
                "",
                &[],
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-13"),
            expect_error: false,
        },
        Case {
            name: "4-14 dynamically provisioned, claim bound elsewhere: Released for its deleter",
            initial_volumes: vec![volume(
                "volume4-14",
                "10Gi",
                "uid4-14",
                "claim4-14",
                "Bound",
                "Delete",
                "",
                &["pv.kubernetes.io/provisioned-by=example.com/csi"],
            )],
            expected_volumes: vec![volume(
                "volume4-14",
                "10Gi",
                "uid4-14",
                "claim4-14",
                "Released",
                "Delete",
                "",
                &["pv.kubernetes.io/provisioned-by=example.com/csi"],
            )],
            initial_claims: vec![bound_claim(
                "claim4-14",
                "uid4-14",
                "10Gi",
                "elsewhere",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            expected_claims: vec![bound_claim(
                "claim4-14",
                "uid4-14",
                "10Gi",
                "elsewhere",
                "10Gi",
                None,
                &[BOUND_BY, COMPLETED],
            )],
            classes: vec![],
            expected_events: no_events(),
            sync: Sync::Volume("volume4-14"),
            expect_error: false,
        },
    ]);
}

fn csi(v: &mut PersistentVolume) {
    v.spec.as_mut().unwrap().csi = Some(k8s_openapi::api::core::v1::CSIPersistentVolumeSource {
        driver: "example.com/csi".into(),
        volume_handle: "h".into(),
        ..Default::default()
    });
}

#[test]
fn a_volume_half_bound_to_an_unbound_claim_wakes_the_claim() {
    let api = FakeApi::new(
        &[volume(
            "v",
            "10Gi",
            "uid-c",
            "c",
            "Bound",
            "Retain",
            "",
            &[BOUND_BY],
        )],
        &[claim("c", "uid-c", "1Gi", "", "Pending", None, &[])],
    );
    let plan = plan_sync(&api, &Sync::Volume("v"), &BTreeMap::new());
    assert_eq!(plan.steps, vec![Step::EnqueueClaim("default/c".into())]);
}

#[test]
fn event_messages_are_upstreams() {
    let messages = |volumes: &[PersistentVolume],
                    claims: &[PersistentVolumeClaim],
                    sync: Sync,
                    classes: &[StorageClass]| {
        let api = FakeApi::new(volumes, claims);
        let plan = plan_sync(&api, &sync, &classes_by_name(classes));
        plan.steps
            .into_iter()
            .filter_map(|s| match s {
                Step::Event(e) => Some(e.message),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        messages(
            &[],
            &[claim("c", "u", "1Gi", "", "", None, &[])],
            Sync::Claim("c"),
            &[]
        ),
        ["no persistent volumes available for this claim and no storage class is set"]
    );
    assert_eq!(
        messages(
            &[],
            &[claim("c", "u", "1Gi", "", "", Some("gold"), &[])],
            Sync::Claim("c"),
            &[class(
                "gold",
                "kubernetes.io/no-provisioner",
                "WaitForFirstConsumer",
                false
            )]
        ),
        ["waiting for first consumer to be created before binding"]
    );
    assert_eq!(
        messages(
            &[],
            &[claim("c", "u", "1Gi", "", "", Some("gold"), &[])],
            Sync::Claim("c"),
            &[]
        ),
        ["storageclass.storage.k8s.io \"gold\" not found"]
    );
    assert_eq!(
        messages(
            &[volume("v", "1Gi", "", "", "Available", "Retain", "", &[])],
            &[claim("c", "u", "5Gi", "v", "", None, &[])],
            Sync::Claim("c"),
            &[]
        ),
        ["Cannot bind to requested volume \"v\": requested PV is too small"]
    );
    assert_eq!(
        messages(
            &[volume("v", "1Gi", "x", "other", "Bound", "Retain", "", &[])],
            &[claim("c", "u", "1Gi", "v", "", None, &[])],
            Sync::Claim("c"),
            &[]
        ),
        ["volume \"v\" already bound to a different claim."]
    );
    assert_eq!(
        messages(
            &[],
            &[claim("c", "u", "1Gi", "v", "Bound", None, &[COMPLETED])],
            Sync::Claim("c"),
            &[]
        ),
        ["Bound claim has lost its PersistentVolume. Data on the volume is lost!"]
    );
    assert_eq!(
        messages(
            &[],
            &[claim("c", "u", "1Gi", "", "", Some("csi"), &[])],
            Sync::Claim("c"),
            &[class("csi", "example.com/csi", "Immediate", false)]
        ),
        [
            "Waiting for a volume to be created either by the external provisioner 'example.com/csi' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
        ]
    );
}

/// Syncs every claim, then every volume, until a round writes nothing;
/// returns the final objects.
fn settle(api: &FakeApi, classes: &BTreeMap<String, StorageClass>) {
    for _ in 0..10 {
        let before = api.writes.load(Ordering::SeqCst);
        let claims: Vec<String> = api
            .claims
            .lock()
            .unwrap()
            .values()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        for name in claims {
            let name: &'static str = Box::leak(name.into_boxed_str());
            let plan = plan_sync(api, &Sync::Claim(name), classes);
            apply(plan, api).now_or_never().unwrap();
        }
        let volumes: Vec<String> = api.volumes.lock().unwrap().keys().cloned().collect();
        for name in volumes {
            let name: &'static str = Box::leak(name.into_boxed_str());
            let plan = plan_sync(api, &Sync::Volume(name), classes);
            apply(plan, api).now_or_never().unwrap();
        }
        if api.writes.load(Ordering::SeqCst) == before {
            return;
        }
    }
    panic!("no steady state after 10 rounds");
}

fn snapshot(api: &FakeApi) -> (Vec<PersistentVolume>, Vec<PersistentVolumeClaim>) {
    (
        api.volumes
            .lock()
            .unwrap()
            .values()
            .cloned()
            .map(normalized_volume)
            .collect(),
        api.claims
            .lock()
            .unwrap()
            .values()
            .cloned()
            .map(normalized_claim)
            .collect(),
    )
}

#[test]
fn a_crash_between_any_two_writes_resumes_to_the_same_binding() {
    let volumes = [
        volume("small", "1Gi", "", "", "Available", "Retain", "", &[]),
        volume("fits", "5Gi", "", "", "Available", "Retain", "", &[]),
    ];
    let claims = [claim("c", "uid-c", "4Gi", "", "Pending", None, &[])];
    let clean = FakeApi::new(&volumes, &claims);
    settle(&clean, &BTreeMap::new());
    let want = snapshot(&clean);
    assert_eq!(
        want.1[0].spec.as_ref().unwrap().volume_name.as_deref(),
        Some("fits")
    );
    // bind() writes four times: claimRef, volume phase, claim, claim phase.
    for crash_after in 0..4 {
        let crashing = FakeApi::new(&volumes, &claims).crashing_after(crash_after);
        let plan = plan_sync(&crashing, &Sync::Claim("c"), &BTreeMap::new());
        let applied = apply(plan, &crashing).now_or_never().unwrap();
        assert!(applied.error.is_some(), "crash after {crash_after} writes");
        // The process restarts: same objects, a working apiserver.
        let restarted = FakeApi::new(&[], &[]);
        *restarted.volumes.lock().unwrap() = crashing.volumes.lock().unwrap().clone();
        *restarted.claims.lock().unwrap() = crashing.claims.lock().unwrap().clone();
        settle(&restarted, &BTreeMap::new());
        assert_eq!(
            snapshot(&restarted),
            want,
            "crash after {crash_after} writes"
        );
    }
}

#[test]
fn a_stale_view_never_gives_one_volume_to_two_claims() {
    // Two binders (a leader hand-over) plan from the same view: both pick
    // the only volume. The second write carries the old resourceVersion.
    let api = FakeApi::new(
        &[volume(
            "only",
            "10Gi",
            "",
            "",
            "Available",
            "Retain",
            "",
            &[],
        )],
        &[
            claim("a", "uid-a", "1Gi", "", "Pending", None, &[]),
            claim("b", "uid-b", "1Gi", "", "Pending", None, &[]),
        ],
    );
    let classes = BTreeMap::new();
    let plan_a = plan_sync(&api, &Sync::Claim("a"), &classes);
    let plan_b = plan_sync(&api, &Sync::Claim("b"), &classes);
    assert!(apply(plan_a, &api).now_or_never().unwrap().error.is_none());
    let second = apply(plan_b, &api).now_or_never().unwrap();
    assert!(
        second
            .error
            .as_deref()
            .unwrap()
            .contains("the object has been modified"),
        "{second:?}"
    );
    settle(&api, &classes);
    let (volumes, claims) = snapshot(&api);
    let owner = volumes[0]
        .spec
        .as_ref()
        .unwrap()
        .claim_ref
        .as_ref()
        .unwrap();
    assert_eq!(owner.name.as_deref(), Some("a"));
    assert_eq!(
        claims[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Bound")
    );
    assert_eq!(
        claims[1].status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert!(claims[1].spec.as_ref().unwrap().volume_name.is_none());
}

#[test]
fn upstreams_half_done_binding_is_finished_and_ours_reads_as_upstreams() {
    // kube-controller-manager wrote the claimRef and stopped (hand-over):
    // the volume is half bound, exactly as our own first write leaves it.
    let api = FakeApi::new(
        &[volume(
            "v",
            "10Gi",
            "uid-c",
            "c",
            "Available",
            "Retain",
            "",
            &[BOUND_BY],
        )],
        &[claim("c", "uid-c", "1Gi", "", "Pending", None, &[])],
    );
    settle(&api, &BTreeMap::new());
    let (volumes, claims) = snapshot(&api);
    assert_eq!(
        volumes,
        vec![normalized_volume(volume(
            "v",
            "10Gi",
            "uid-c",
            "c",
            "Bound",
            "Retain",
            "",
            &[BOUND_BY]
        ))]
    );
    assert_eq!(
        claims,
        vec![normalized_claim(bound_claim(
            "c",
            "uid-c",
            "1Gi",
            "v",
            "10Gi",
            None,
            &[BOUND_BY, COMPLETED]
        ))]
    );
}

#[test]
fn claim_deleted_then_volume_released_then_retained() {
    let api = FakeApi::new(
        &[volume(
            "v",
            "10Gi",
            "uid-c",
            "c",
            "Bound",
            "Retain",
            "",
            &[BOUND_BY],
        )],
        &[bound_claim(
            "c",
            "uid-c",
            "1Gi",
            "v",
            "10Gi",
            None,
            &[BOUND_BY, COMPLETED],
        )],
    );
    api.claims.lock().unwrap().clear();
    settle(&api, &BTreeMap::new());
    let (volumes, _) = snapshot(&api);
    assert_eq!(
        volumes[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Released")
    );
    // A new claim does not get the released volume: it keeps its claimRef.
    api.claims.lock().unwrap().insert(
        "default/d".into(),
        claim("d", "uid-d", "1Gi", "", "", None, &[]),
    );
    settle(&api, &BTreeMap::new());
    let (_, claims) = snapshot(&api);
    assert_eq!(
        claims[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
}

fn pod(name: &str, claim: &str, node: &str, phase: &str) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "containers": [{"name": "c"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase},
        }))
        .unwrap(),
    )
}

#[test]
fn waiting_claims_name_the_pods_waiting_to_be_scheduled() {
    let classes = classes_by_name(&[class(
        "gold",
        "kubernetes.io/no-provisioner",
        "WaitForFirstConsumer",
        false,
    )]);
    let messages = |pods: Vec<Arc<Pod>>| {
        let mut api = FakeApi::new(
            &[],
            &[claim("c", "u", "1Gi", "", "Pending", Some("gold"), &[])],
        );
        api.pods = pods;
        plan_sync(&api, &Sync::Claim("c"), &classes)
            .steps
            .into_iter()
            .filter_map(|s| match s {
                Step::Event(e) => Some(format!("{} {}", e.reason, e.message)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        messages(vec![]),
        ["WaitForFirstConsumer waiting for first consumer to be created before binding"]
    );
    assert_eq!(
        messages(vec![
            pod("web-0", "c", "", "Pending"),
            pod("other", "elsewhere", "", "Pending")
        ]),
        ["WaitForPodScheduled waiting for pod web-0 to be scheduled"]
    );
    assert_eq!(
        messages(vec![
            pod("web-1", "c", "", "Pending"),
            pod("web-0", "c", "", "Pending"),
            pod("placed", "c", "node-1", "Pending"),
            pod("done", "c", "", "Succeeded"),
        ]),
        ["WaitForPodScheduled waiting for pods web-0,web-1 to be scheduled"]
    );
    // An ephemeral volume's claim is named after the pod and the volume.
    let ephemeral: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "c", "ephemeral": {}}]},
    }))
    .unwrap();
    let mut api = FakeApi::new(
        &[],
        &[claim("web-c", "u", "1Gi", "", "Pending", Some("gold"), &[])],
    );
    api.pods = vec![Arc::new(ephemeral)];
    assert_eq!(
        plan_sync(&api, &Sync::Claim("web-c"), &classes).reasons(),
        ["WaitForPodScheduled"]
    );
}

#[test]
fn a_volume_in_use_is_not_recycled_yet() {
    let mut api = FakeApi::new(
        &[volume(
            "v",
            "1Gi",
            "uid-c",
            "c",
            "Released",
            "Recycle",
            "",
            &[BOUND_BY],
        )],
        &[],
    );
    api.pods = vec![
        pod("user", "c", "node-1", "Running"),
        pod("gone", "c", "node-1", "Succeeded"),
    ];
    let plan = plan_sync(&api, &Sync::Volume("v"), &BTreeMap::new());
    let Some(Step::Event(event)) = plan.steps.first() else {
        panic!("an Event: {:?}", plan.steps)
    };
    assert_eq!(
        (event.type_, event.reason, event.message.as_str()),
        (
            EventType::Normal,
            "VolumeFailedRecycle",
            "Volume is used by pods: default/user"
        )
    );
    assert_eq!(plan.steps.len(), 1, "no write while in use");
    // Once nobody uses it: Failed, as there is no recycler.
    api.pods.clear();
    let plan = plan_sync(&api, &Sync::Volume("v"), &BTreeMap::new());
    assert_eq!(plan.reasons(), ["VolumeFailedRecycle"]);
    assert!(matches!(plan.steps[0], Step::UpdateVolumeStatus(_)));
}

#[test]
fn without_dynamic_provisioning_a_claim_with_a_class_just_waits() {
    let classes = classes_by_name(&[class("csi", "example.com/csi", "Immediate", false)]);
    let volumes = BTreeMap::new();
    let plan = sync_claim(
        &claim("c", "u", "1Gi", "", "Pending", Some("csi"), &[]),
        &ClaimView {
            volumes: &volumes,
            classes: &classes,
            pods: &[],
            dynamic_provisioning: false,
        },
    );
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
}
