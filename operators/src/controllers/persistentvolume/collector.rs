//! Upstream's `pv_collector_*` gauges, counted from the informers at every
//! scrape as upstream's pvAndPVCCountCollector does.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::helpers::{FILESYSTEM, claim_class, claim_phase, volume_phase};
use crate::informer::Store;

pub struct PvCollector {
    pub volumes: Arc<Store<PersistentVolume>>,
    pub claims: Arc<Store<PersistentVolumeClaim>>,
}

impl std::fmt::Debug for PvCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PvCollector")
    }
}

/// The name kube-controller-manager's plugin manager gives a volume's
/// plugin (its in-tree plugins for persistent volumes), `N/A` for others.
fn plugin_name(volume: &PersistentVolume) -> String {
    let Some(spec) = volume.spec.as_ref() else {
        return "N/A".into();
    };
    if let Some(csi) = &spec.csi {
        return format!("kubernetes.io/csi:{}", csi.driver);
    }
    let name = if spec.host_path.is_some() {
        "kubernetes.io/host-path"
    } else if spec.nfs.is_some() {
        "kubernetes.io/nfs"
    } else if spec.fc.is_some() {
        "kubernetes.io/fc"
    } else if spec.iscsi.is_some() {
        "kubernetes.io/iscsi"
    } else {
        "N/A"
    };
    name.into()
}

/// Gauge values by label values.
pub type Counts = BTreeMap<Vec<String>, i64>;

/// (total by plugin and mode, bound by class, unbound by class)
pub fn count_volumes<'a>(volumes: impl IntoIterator<Item = &'a PersistentVolume>) -> [Counts; 3] {
    let mut counts: [Counts; 3] = Default::default();
    for volume in volumes {
        let spec = volume.spec.clone().unwrap_or_default();
        let mode = spec.volume_mode.unwrap_or_else(|| FILESYSTEM.into());
        *counts[0]
            .entry(vec![plugin_name(volume), mode])
            .or_default() += 1;
        let class = vec![spec.storage_class_name.unwrap_or_default()];
        let slot = if volume_phase(volume) == "Bound" {
            1
        } else {
            2
        };
        *counts[slot].entry(class).or_default() += 1;
    }
    counts
}

/// (bound, unbound) by namespace, class and attributes class.
pub fn count_claims<'a>(
    claims: impl IntoIterator<Item = &'a PersistentVolumeClaim>,
) -> [Counts; 2] {
    let mut counts: [Counts; 2] = Default::default();
    for claim in claims {
        let labels = vec![
            claim.metadata.namespace.clone().unwrap_or_default(),
            claim_class(claim).to_string(),
            claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_attributes_class_name.clone())
                .unwrap_or_default(),
        ];
        let slot = if claim_phase(claim) == "Bound" { 0 } else { 1 };
        *counts[slot].entry(labels).or_default() += 1;
    }
    counts
}

fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label_names: &[&str],
    counts: &Counts,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (values, count) in counts {
        let labels: Vec<(String, String)> = label_names
            .iter()
            .zip(values)
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for PvCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let volumes = self.volumes.list();
        let [total, bound, unbound] = count_volumes(volumes.iter().map(|v| v.as_ref()));
        let claims = self.claims.list();
        let [bound_claims, unbound_claims] = count_claims(claims.iter().map(|c| c.as_ref()));
        let e = &mut encoder;
        encode_gauges(
            e,
            "pv_collector_total_pv_count",
            "Gauge measuring total number of persistent volumes",
            &["plugin_name", "volume_mode"],
            &total,
        )?;
        encode_gauges(
            e,
            "pv_collector_bound_pv_count",
            "Gauge measuring number of persistent volume currently bound",
            &["storage_class"],
            &bound,
        )?;
        encode_gauges(
            e,
            "pv_collector_unbound_pv_count",
            "Gauge measuring number of persistent volume currently unbound",
            &["storage_class"],
            &unbound,
        )?;
        let claim_labels = ["namespace", "storage_class", "volume_attributes_class"];
        encode_gauges(
            e,
            "pv_collector_bound_pvc_count",
            "Gauge measuring number of persistent volume claim currently bound",
            &claim_labels,
            &bound_claims,
        )?;
        encode_gauges(
            e,
            "pv_collector_unbound_pvc_count",
            "Gauge measuring number of persistent volume claim currently unbound",
            &claim_labels,
            &unbound_claims,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::persistentvolume::fixtures::{claim, volume};
    use prometheus_client::registry::Registry;

    #[test]
    fn scrapes_count_volumes_and_claims_as_upstream() {
        let volumes = Arc::new(Store::default());
        let claims = Arc::new(Store::default());
        volumes.insert(Arc::new(volume(
            "a",
            "1Gi",
            "u",
            "c",
            "Bound",
            "Retain",
            "gold",
            &[],
        )));
        volumes.insert(Arc::new(volume(
            "b",
            "1Gi",
            "",
            "",
            "Available",
            "Retain",
            "gold",
            &[],
        )));
        volumes.insert(Arc::new(volume(
            "c",
            "1Gi",
            "",
            "",
            "Released",
            "Retain",
            "",
            &[],
        )));
        claims.insert(Arc::new(claim(
            "c",
            "u",
            "1Gi",
            "a",
            "Bound",
            Some("gold"),
            &[],
        )));
        claims.insert(Arc::new(claim("d", "u2", "1Gi", "", "Pending", None, &[])));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PvCollector { volumes, claims }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "pv_collector_total_pv_count{plugin_name=\"N/A\",volume_mode=\"Filesystem\"} 3",
            "pv_collector_bound_pv_count{storage_class=\"gold\"} 1",
            "pv_collector_unbound_pv_count{storage_class=\"gold\"} 1",
            "pv_collector_unbound_pv_count{storage_class=\"\"} 1",
            "pv_collector_bound_pvc_count{namespace=\"default\",storage_class=\"gold\",volume_attributes_class=\"\"} 1",
            "pv_collector_unbound_pvc_count{namespace=\"default\",storage_class=\"\",volume_attributes_class=\"\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
