//! kwok's lifecycle stages as the lab runs them: kwok's own stage files, with
//! the pod stages that play a kubelet (making a pod Running, completing a
//! Job's pod) told to leave pods labelled [`NO_KUBELET_LABEL`]`=none` alone.
//!
//! Why: upstream's scheduler_perf, which the scheduler benchmarks follow, runs
//! no kubelet — a bound pod stays Pending on its node. Without the label kwok
//! patches every bound pod's status, and those writes (and their watch
//! fan-out) compete with the binds being measured. Deletion is left to kwok
//! for every pod: a bound pod is deleted gracefully and only a kubelet (here
//! kwok's `pod-delete` stage) finishes that.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// Pods with this label set to `none` get no simulated kubelet status.
pub const NO_KUBELET_LABEL: &str = "understudy.dev/kubelet";

/// Writes the lab's copies of `stages` into `dir` and returns their paths.
/// Files that are not kwok Stages (kwok's kustomization) are left out.
pub fn write(stages: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut written = vec![];
    for source in stages {
        let text = std::fs::read_to_string(source)
            .map_err(|e| format!("reading {}: {e}", source.display()))?;
        let Some(stage) = patched(&text).map_err(|e| format!("{}: {e}", source.display()))? else {
            continue;
        };
        let target = dir.join(source.file_name().unwrap_or_default());
        std::fs::write(&target, stage).map_err(|e| format!("writing {}: {e}", target.display()))?;
        written.push(target);
    }
    Ok(written)
}

/// The stage in `text` as the lab runs it, or `None` for a file that is not a
/// Stage.
fn patched(text: &str) -> Result<Option<String>, String> {
    let mut stage: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if stage["kind"].as_str() != Some("Stage") {
        return Ok(None);
    }
    let for_pods = stage["spec"]["resourceRef"]["kind"].as_str() == Some("Pod");
    let deletes = stage["spec"]["next"]["delete"].as_bool() == Some(true);
    if for_pods && !deletes {
        let requirement: Value = serde_yaml::from_str(&format!(
            "{{key: '.metadata.labels[\"{NO_KUBELET_LABEL}\"]', operator: NotIn, values: [none]}}"
        ))
        .map_err(|e| e.to_string())?;
        let expressions = stage["spec"]["selector"]
            .as_mapping_mut()
            .ok_or("a pod stage without a selector")?
            .entry("matchExpressions".into())
            .or_insert_with(|| Value::Sequence(vec![]));
        expressions
            .as_sequence_mut()
            .ok_or("matchExpressions is not a list")?
            .push(requirement);
    }
    serde_yaml::to_string(&stage)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kwok pod stage selecting on `.metadata.deletionTimestamp` with
    /// `operator`, then doing `next`.
    fn pod_stage(name: &str, operator: &str, next: &str) -> String {
        format!(
            "apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: {name}
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: '{operator}'
  next:
{next}"
        )
    }

    fn ready() -> String {
        pod_stage(
            "pod-ready",
            "DoesNotExist",
            "    statusTemplate: |\n      phase: Running\n",
        )
    }

    fn delete() -> String {
        pod_stage("pod-delete", "Exists", "    delete: true\n")
    }

    fn expressions(text: &str) -> Vec<(String, String)> {
        let stage: Value = serde_yaml::from_str(text).unwrap();
        stage["spec"]["selector"]["matchExpressions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["key"].as_str().unwrap().to_string(),
                    e["operator"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_kubelet_stage_skips_labelled_pods_and_keeps_its_template() {
        let out = patched(&ready()).unwrap().unwrap();
        assert_eq!(
            expressions(&out),
            vec![
                (".metadata.deletionTimestamp".into(), "DoesNotExist".into()),
                (
                    ".metadata.labels[\"understudy.dev/kubelet\"]".into(),
                    "NotIn".into()
                ),
            ]
        );
        let stage: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(
            stage["spec"]["next"]["statusTemplate"].as_str(),
            Some("phase: Running\n")
        );
    }

    #[test]
    fn deletion_and_node_stages_are_unchanged() {
        let out = patched(&delete()).unwrap().unwrap();
        assert_eq!(
            expressions(&out),
            vec![(".metadata.deletionTimestamp".into(), "Exists".into())]
        );
        let node = ready().replace("kind: Pod", "kind: Node");
        assert_eq!(expressions(&patched(&node).unwrap().unwrap()).len(), 1);
    }

    #[test]
    fn files_that_are_not_stages_are_left_out() {
        let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n";
        assert_eq!(patched(kustomization).unwrap(), None);
    }
}
