//! A scheduling profile: the plugins enabled at each extension point, built
//! from the configuration with upstream's merge rules, and the runner of
//! those points for one pod.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::config::{PluginRef, PluginSet, ProfileConfig};
use crate::framework::{
    Code, CycleState, Handle, NodeInfo, NodeScore, Plugin, PodInfo, PreFilterResult, ScorePlugin,
    Snapshot, Status,
};
use crate::plugins;
use crate::preemption::{self, PreemptionArgs};
use rayon::prelude::*;

/// Nodes per unit of parallel scoring work: enough that waking a worker
/// costs less than the work it is given.
const SCORE_CHUNK: usize = 64;

/// Upstream's default multiPoint plugins (v1.37), in order, with default score weights.
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0),
    ("NodeVolumeLimits", 0),
    ("VolumeBinding", 0),
    ("VolumeZone", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultPreemption", 0),
    // Appended by upstream's applyFeatureGates (GA and locked on in v1.37).
    ("NodeDeclaredFeatures", 0),
];

/// Upstream plugins whose behaviour is built into this scheduler rather than
/// being a plugin object: naming them in a configuration is accepted.
pub const BUILT_IN: &[&str] = &[
    "SchedulingGates",
    "DefaultBinder",
    "DefaultPreemption",
    "DynamicResources",
];

/// Plugins of one extension point with their score weights.
type Weighted = Vec<(Arc<dyn Plugin>, i64)>;

pub struct Profile {
    pub scheduler_name: String,
    pub percentage_of_nodes_to_score: Option<u32>,
    pub queue_sort: Arc<dyn Plugin>,
    pub pre_filter: Vec<Arc<dyn Plugin>>,
    pub filter: Vec<Arc<dyn Plugin>>,
    pub pre_score: Vec<Arc<dyn Plugin>>,
    pub score: Vec<(Arc<dyn Plugin>, i64)>,
    pub reserve: Vec<Arc<dyn Plugin>>,
    pub pre_bind: Vec<Arc<dyn Plugin>>,
    /// DefaultPreemption's settings when it is enabled as the PostFilter.
    pub preemption: Option<PreemptionArgs>,
}

/// Upstream's mergePluginSet: defaults minus the disabled (`*` = all), a
/// default re-enabled by the user replaced in place (taking the user's weight),
/// then the user's other enabled plugins in their order.
fn merge_set(
    defaults: &[(String, i64)],
    set: Option<&PluginSet>,
) -> Result<Vec<(String, i64)>, String> {
    let Some(set) = set else {
        return Ok(defaults.to_vec());
    };
    let weight = |r: &PluginRef| -> Result<i64, String> {
        match r.weight {
            Some(w) if w < 0 => Err(format!(
                "plugin {:?}: weight {w} must not be negative",
                r.name
            )),
            w => Ok(i64::from(w.unwrap_or(0))),
        }
    };
    let disabled_all = set.disabled.iter().any(|d| d.name == "*");
    let mut out = vec![];
    let mut replaced = HashSet::new();
    for (name, w) in defaults {
        if disabled_all || set.disabled.iter().any(|d| &d.name == name) {
            continue;
        }
        match set.enabled.iter().find(|e| &e.name == name) {
            Some(custom) => {
                out.push((name.clone(), weight(custom)?));
                replaced.insert(name.clone());
            }
            None => out.push((name.clone(), *w)),
        }
    }
    for e in &set.enabled {
        if !replaced.contains(&e.name) && !out.iter().any(|(n, _)| n == &e.name) {
            out.push((e.name.clone(), weight(e)?));
        }
    }
    Ok(out)
}

impl Profile {
    pub fn from_config(cfg: &ProfileConfig) -> Result<Self, String> {
        let registry: HashMap<&str, plugins::Factory> = plugins::registry().into_iter().collect();
        let context = |msg: String| format!("profile {:?}: {msg}", cfg.scheduler_name);

        for name in cfg.plugin_config.keys() {
            if !registry.contains_key(name.as_str()) && !BUILT_IN.contains(&name.as_str()) {
                return Err(context(format!("pluginConfig: unknown plugin {name:?}")));
            }
        }
        // multiPoint: defaults, then the profile's multiPoint changes.
        let defaults: Vec<(String, i64)> = DEFAULT_PLUGINS
            .iter()
            .map(|(n, w)| (n.to_string(), *w))
            .collect();
        let multi = merge_set(&defaults, cfg.plugins.multi_point.as_ref()).map_err(context)?;

        let mut instances: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
        let mut instance = |name: &str| -> Result<Option<Arc<dyn Plugin>>, String> {
            if BUILT_IN.contains(&name) {
                return Ok(None);
            }
            if let Some(p) = instances.get(name) {
                return Ok(Some(p.clone()));
            }
            let factory = registry
                .get(name)
                .ok_or_else(|| context(format!("unknown plugin {name:?}")))?;
            let plugin =
                factory(cfg.plugin_config.get(name).filter(|v| !v.is_null())).map_err(context)?;
            instances.insert(name.to_string(), plugin.clone());
            Ok(Some(plugin))
        };

        // Each point: the multiPoint plugins serving it, then that point's own set.
        type Serves = fn(&dyn Plugin) -> bool;
        // One extension point, as upstream's expandMultiPointPlugins orders it:
        // plugins enabled both here and in multiPoint (this point's order and
        // weight), then the other multiPoint plugins serving this point, then
        // the plugins enabled only here. A weight of 0 means 1.
        let mut point = |set: Option<&PluginSet>, serves: Serves| -> Result<Weighted, String> {
            let regular = merge_set(&[], set).map_err(context)?;
            let disabled_all = set.is_some_and(|s| s.disabled.iter().any(|d| d.name == "*"));
            let disabled = |name: &str| {
                disabled_all || set.is_some_and(|s| s.disabled.iter().any(|d| d.name == name))
            };
            let in_multi = |name: &str| multi.iter().any(|(n, _)| n == name);
            let mut list: Vec<(String, i64)> = regular
                .iter()
                .filter(|(n, _)| in_multi(n))
                .cloned()
                .collect();
            for (name, weight) in &multi {
                if disabled(name) || regular.iter().any(|(n, _)| n == name) {
                    continue;
                }
                if let Some(p) = instance(name)?
                    && serves(p.as_ref())
                {
                    list.push((name.clone(), *weight));
                }
            }
            list.extend(regular.iter().filter(|(n, _)| !in_multi(n)).cloned());
            let mut out = vec![];
            for (name, weight) in list {
                if let Some(p) = instance(&name)? {
                    if !serves(p.as_ref()) {
                        return Err(context(format!(
                            "plugin {name:?} does not serve the extension point it is enabled at"
                        )));
                    }
                    out.push((p, weight.max(1)));
                }
            }
            Ok(out)
        };
        let p = &cfg.plugins;
        let queue_sort = point(p.queue_sort.as_ref(), |p| p.as_queue_sort().is_some())?;
        let pre_filter = point(p.pre_filter.as_ref(), |p| p.as_pre_filter().is_some())?;
        let filter = point(p.filter.as_ref(), |p| p.as_filter().is_some())?;
        let pre_score = point(p.pre_score.as_ref(), |p| p.as_pre_score().is_some())?;
        let score = point(p.score.as_ref(), |p| p.as_score().is_some())?;
        let reserve = point(p.reserve.as_ref(), |p| p.as_reserve().is_some())?;
        let pre_bind = point(p.pre_bind.as_ref(), |p| p.as_pre_bind().is_some())?;
        for (what, set) in [
            ("permit", &p.permit),
            ("postBind", &p.post_bind),
            ("preEnqueue", &p.pre_enqueue),
            ("postFilter", &p.post_filter),
            ("bind", &p.bind),
        ] {
            if let Some(set) = set
                && let Some(bad) = set
                    .enabled
                    .iter()
                    .find(|r| !BUILT_IN.contains(&r.name.as_str()))
            {
                return Err(context(format!(
                    "plugins.{what}: plugin {:?} is not supported at this extension point",
                    bad.name
                )));
            }
        }
        let post_filter_disabled = p.post_filter.as_ref().is_some_and(|set| {
            set.disabled
                .iter()
                .any(|d| d.name == "*" || d.name == preemption::NAME)
        });
        let post_filter_enabled = p
            .post_filter
            .as_ref()
            .is_some_and(|set| set.enabled.iter().any(|e| e.name == preemption::NAME));
        let preemption_on = post_filter_enabled
            || (!post_filter_disabled && multi.iter().any(|(n, _)| n == preemption::NAME));
        let preemption = if preemption_on {
            Some(
                PreemptionArgs::parse(
                    cfg.plugin_config
                        .get(preemption::NAME)
                        .filter(|v| !v.is_null()),
                )
                .map_err(context)?,
            )
        } else {
            None
        };
        let queue_sort = match queue_sort.as_slice() {
            [(one, _)] => one.clone(),
            [] => {
                return Err(context(
                    "plugins.queueSort: exactly one queue sort plugin must be enabled".into(),
                ));
            }
            _ => {
                return Err(context(
                    "plugins.queueSort: only one queue sort plugin may be enabled".into(),
                ));
            }
        };
        Ok(Self {
            scheduler_name: cfg.scheduler_name.clone(),
            percentage_of_nodes_to_score: cfg.percentage_of_nodes_to_score,
            queue_sort,
            pre_filter: pre_filter.into_iter().map(|(p, _)| p).collect(),
            filter: filter.into_iter().map(|(p, _)| p).collect(),
            pre_score: pre_score.into_iter().map(|(p, _)| p).collect(),
            score,
            reserve: reserve.into_iter().map(|(p, _)| p).collect(),
            pre_bind: pre_bind.into_iter().map(|(p, _)| p).collect(),
            preemption,
        })
    }

    pub fn plugin_names(&self, point: &str) -> Vec<&'static str> {
        match point {
            "preFilter" => self.pre_filter.iter().map(|p| p.name()).collect(),
            "filter" => self.filter.iter().map(|p| p.name()).collect(),
            "preScore" => self.pre_score.iter().map(|p| p.name()).collect(),
            "score" => self.score.iter().map(|(p, _)| p.name()).collect(),
            "reserve" => self.reserve.iter().map(|p| p.name()).collect(),
            "preBind" => self.pre_bind.iter().map(|p| p.name()).collect(),
            _ => vec![],
        }
    }

    /// Runs every PreFilter; the candidate node sets they return intersect.
    /// A rejection ends the cycle with that status.
    /// Also returns the plugins that narrowed the candidate nodes, named in the
    /// reason given to the nodes they excluded.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Result<(PreFilterResult, Vec<&'static str>), Status> {
        let mut result = PreFilterResult::default();
        let mut narrowing = vec![];
        state.narrowing.clear();
        let mut unschedulable: Option<Status> = None;
        for plugin in &self.pre_filter {
            let pf = plugin.as_pre_filter().expect("registered as PreFilter");
            let (r, status) = pf.pre_filter(state, pod, snapshot);
            if status.is_skip() {
                state.skip_filter.insert(plugin.name());
                continue;
            }
            match status.code {
                Code::Success => {}
                // Preemption may still help: run the remaining PreFilters so
                // their state exists, then report this one.
                Code::Unschedulable => {
                    unschedulable.get_or_insert(status.with_plugin(plugin.name()));
                    continue;
                }
                _ => return Err(status.with_plugin(plugin.name())),
            }
            if let Some(names) = r.node_names {
                narrowing.push(plugin.name());
                state.narrowing.push(plugin.name());
                let merged = match result.node_names {
                    None => names,
                    Some(prev) => prev.intersection(&names).cloned().collect::<BTreeSet<_>>(),
                };
                if merged.is_empty() {
                    let msg = match narrowing.as_slice() {
                        [one] => format!("node(s) didn't satisfy plugin {one}"),
                        many => format!(
                            "node(s) didn't satisfy plugin(s) [{}] simultaneously",
                            many.join(" ")
                        ),
                    };
                    return Err(Status::unresolvable(msg).with_plugin(plugin.name()));
                }
                result.node_names = Some(merged);
            }
        }
        match unschedulable {
            Some(status) => Err(status),
            None => Ok((result, narrowing)),
        }
    }

    /// Tells every PreFilter with extensions that `other` was added to `node`
    /// (upstream's RunPreFilterExtensionAddPod); `node` already includes it.
    pub fn run_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Result<(), Status> {
        self.run_extension(state, |pf, state| {
            pf.add_pod(state, pod, other, node, snapshot)
        })
    }

    /// The same for a pod removed from `node` (already without it).
    pub fn run_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Result<(), Status> {
        self.run_extension(state, |pf, state| {
            pf.remove_pod(state, pod, other, node, snapshot)
        })
    }

    fn run_extension(
        &self,
        state: &mut CycleState,
        call: impl Fn(&dyn crate::framework::PreFilterPlugin, &mut CycleState) -> Status,
    ) -> Result<(), Status> {
        for plugin in &self.pre_filter {
            let pf = plugin.as_pre_filter().expect("registered as PreFilter");
            if pf.has_extensions() && !state.skip_filter.contains(plugin.name()) {
                let status = call(pf, state);
                if !status.is_success() {
                    return Err(status.with_plugin(plugin.name()));
                }
            }
        }
        Ok(())
    }

    /// Runs Filters in order; the first rejection is the node's status.
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for plugin in &self.filter {
            if state.skip_filter.contains(plugin.name()) {
                continue;
            }
            let status = plugin
                .as_filter()
                .expect("registered as Filter")
                .filter(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(plugin.name());
            }
        }
        Status::success()
    }

    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Result<(), Status> {
        for plugin in &self.pre_score {
            let status = plugin
                .as_pre_score()
                .expect("registered as PreScore")
                .pre_score(state, pod, nodes, snapshot);
            if status.is_skip() {
                state.skip_score.insert(plugin.name());
            } else if !status.is_success() {
                return Err(status.with_plugin(plugin.name()));
            }
        }
        Ok(())
    }

    /// Runs every Reserve plugin in order; the first failure ends it. A
    /// rejection keeps its code (the pod is unschedulable on this node), any
    /// other failure becomes an error naming the plugin, as upstream's
    /// RunReservePluginsReserve. The caller then runs [`Profile::run_unreserve`].
    pub fn run_reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
        handle: &Handle,
    ) -> Result<(), Status> {
        for plugin in &self.reserve {
            let status = plugin
                .as_reserve()
                .expect("registered as Reserve")
                .reserve(state, pod, node, handle);
            if !status.is_success() {
                return Err(wrap_failure("Reserve", plugin.name(), status));
            }
        }
        Ok(())
    }

    /// Every Reserve plugin's Unreserve, in reverse order.
    pub fn run_unreserve(&self, state: &CycleState, pod: &PodInfo, node: &str, handle: &Handle) {
        for plugin in self.reserve.iter().rev() {
            plugin
                .as_reserve()
                .expect("registered as Reserve")
                .unreserve(state, pod, node, handle);
        }
    }

    /// Runs every PreBind plugin in order; the first failure ends it, reported
    /// like Reserve's.
    pub async fn run_pre_bind(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &str,
        handle: &Handle,
    ) -> Result<(), Status> {
        for plugin in &self.pre_bind {
            let status = plugin
                .as_pre_bind()
                .expect("registered as PreBind")
                .pre_bind(state, pod, node, handle)
                .await;
            if !status.is_success() && !status.is_skip() {
                return Err(wrap_failure("PreBind", plugin.name(), status));
            }
        }
        Ok(())
    }

    /// Weighted sum of every Score plugin's normalized score, per node.
    pub fn run_score<'n>(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        nodes: &'n [Arc<NodeInfo>],
    ) -> Result<Vec<NodeScore<'n>>, Status> {
        let active: Vec<(&str, &dyn ScorePlugin, i64)> = self
            .score
            .iter()
            .filter(|(plugin, _)| !state.skip_score.contains(plugin.name()))
            .map(|(plugin, weight)| {
                let scorer = plugin.as_score().expect("registered as Score");
                (plugin.name(), scorer, *weight)
            })
            .collect();
        // Every plugin's raw score of a node in one parallel pass (upstream's
        // parallelizer also runs all Score plugins per node in one piece of
        // work): one fork-join per cycle, not one per plugin.
        let per_node = active.len().max(1);
        let mut raw = vec![0i64; nodes.len() * per_node];
        raw.par_chunks_mut(per_node)
            .zip(nodes.par_iter())
            .with_min_len(SCORE_CHUNK)
            .try_for_each(|(out, node)| {
                for (slot, (name, scorer, _)) in out.iter_mut().zip(&active) {
                    *slot = scorer
                        .score(state, pod, node)
                        .map_err(|s| s.with_plugin(name))?;
                }
                Ok::<(), Status>(())
            })?;
        let mut totals: Vec<NodeScore<'n>> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.as_str(),
                score: 0,
            })
            .collect();
        let mut scores = totals.clone();
        for (i, (name, scorer, weight)) in active.iter().enumerate() {
            for (s, node_raw) in scores.iter_mut().zip(raw.chunks(per_node)) {
                s.score = node_raw[i];
            }
            let status = scorer.normalize(state, pod, &mut scores);
            if !status.is_success() {
                return Err(status.with_plugin(name));
            }
            for (total, s) in totals.iter_mut().zip(&scores) {
                total.score += s.score * weight;
            }
        }
        Ok(totals)
    }
}

/// A failed Reserve/PreBind status as the framework reports it: a rejection
/// as it is, an error prefixed with the point and plugin.
fn wrap_failure(point: &str, plugin: &'static str, status: Status) -> Status {
    if status.is_rejected() {
        return status.with_plugin(plugin);
    }
    Status::error(format!(
        "running {point} plugin {plugin:?}: {}",
        status.message()
    ))
    .with_plugin(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfig;

    fn profile(yaml: &str) -> Result<Profile, String> {
        let cfg = SchedulerConfig::parse(yaml).map_err(|e| e.to_string())?;
        Profile::from_config(&cfg.profiles[0])
    }

    #[test]
    fn defaults_follow_upstream_order_and_weights() {
        let p = profile("").unwrap();
        assert_eq!(p.queue_sort.name(), "PrioritySort");
        let weights: HashMap<&str, i64> = p.score.iter().map(|(p, w)| (p.name(), *w)).collect();
        for (name, w) in [
            ("TaintToleration", 3),
            ("NodeAffinity", 2),
            ("PodTopologySpread", 2),
            ("InterPodAffinity", 2),
            ("NodeResourcesFit", 1),
            ("NodeResourcesBalancedAllocation", 1),
            ("ImageLocality", 1),
        ] {
            if let Some(got) = weights.get(name) {
                assert_eq!(*got, w, "{name}");
            }
        }
    }

    #[test]
    fn disabling_and_reweighting_scores() {
        let p = profile(
            "profiles: [{plugins: {score: {disabled: [{name: '*'}], enabled: [{name: NodeResourcesFit, weight: 7}]}}}]",
        );
        let p = p.unwrap();
        let names: Vec<(&str, i64)> = p.score.iter().map(|(p, w)| (p.name(), *w)).collect();
        assert_eq!(names, vec![("NodeResourcesFit", 7)]);
    }

    #[test]
    fn listed_without_weight_means_weight_one_and_negative_is_rejected() {
        let p =
            profile("profiles: [{plugins: {multiPoint: {enabled: [{name: TaintToleration}]}}}]")
                .unwrap();
        let w = p
            .score
            .iter()
            .find(|(p, _)| p.name() == "TaintToleration")
            .unwrap()
            .1;
        assert_eq!(
            w, 1,
            "re-listing a default without weight drops its default weight"
        );
        let err = profile(
            "profiles: [{plugins: {score: {enabled: [{name: ImageLocality, weight: -1}]}}}]",
        )
        .err()
        .unwrap();
        assert!(err.contains("negative"), "{err}");
    }

    #[test]
    fn a_plugin_enabled_at_a_point_comes_first_there() {
        let p = profile("profiles: [{plugins: {filter: {enabled: [{name: NodePorts}]}}}]").unwrap();
        let names = p.plugin_names("filter");
        assert_eq!(names[0], "NodePorts", "{names:?}");
        assert_eq!(names.iter().filter(|n| **n == "NodePorts").count(), 1);
        // Disabling at one point leaves the others.
        let p = profile("profiles: [{plugins: {filter: {disabled: [{name: TaintToleration}]}}}]")
            .unwrap();
        assert!(!p.plugin_names("filter").contains(&"TaintToleration"));
        assert!(p.plugin_names("score").contains(&"TaintToleration"));
    }

    #[test]
    fn unknown_plugins_are_rejected_by_name() {
        let err = profile("profiles: [{plugins: {filter: {enabled: [{name: Nope}]}}}]")
            .err()
            .unwrap();
        assert!(err.contains("Nope"), "{err}");
        let err = profile("profiles: [{pluginConfig: [{name: Nope, args: {}}]}]")
            .err()
            .unwrap();
        assert!(err.contains("Nope"), "{err}");
        let err = profile("profiles: [{plugins: {queueSort: {disabled: [{name: '*'}]}}}]")
            .err()
            .unwrap();
        assert!(err.contains("queueSort"), "{err}");
    }

    /// A plugin at Reserve and PreBind that logs its calls and answers with
    /// the given statuses.
    struct Recorder {
        name: &'static str,
        log: Arc<std::sync::Mutex<Vec<String>>>,
        reserve: Status,
        pre_bind: Status,
    }

    impl Plugin for Recorder {
        fn name(&self) -> &'static str {
            self.name
        }
        fn as_reserve(&self) -> Option<&dyn crate::framework::ReservePlugin> {
            Some(self)
        }
        fn as_pre_bind(&self) -> Option<&dyn crate::framework::PreBindPlugin> {
            Some(self)
        }
    }

    impl crate::framework::ReservePlugin for Recorder {
        fn reserve(&self, _: &mut CycleState, _: &PodInfo, node: &str, _: &Handle) -> Status {
            self.log
                .lock()
                .unwrap()
                .push(format!("reserve {} {node}", self.name));
            self.reserve.clone()
        }
        fn unreserve(&self, _: &CycleState, _: &PodInfo, node: &str, _: &Handle) {
            self.log
                .lock()
                .unwrap()
                .push(format!("unreserve {} {node}", self.name));
        }
    }

    impl crate::framework::PreBindPlugin for Recorder {
        fn pre_bind<'a>(
            &'a self,
            _: &'a CycleState,
            _: &'a PodInfo,
            node: &'a str,
            _: &'a Handle,
        ) -> futures::future::BoxFuture<'a, Status> {
            Box::pin(async move {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("prebind {} {node}", self.name));
                self.pre_bind.clone()
            })
        }
    }

    type Log = Arc<std::sync::Mutex<Vec<String>>>;

    fn recorders(answers: &[(&'static str, Status, Status)]) -> (Profile, Log) {
        let log: Log = Default::default();
        let mut p = profile("").unwrap();
        let plugins: Vec<Arc<dyn Plugin>> = answers
            .iter()
            .map(|(name, reserve, pre_bind)| {
                Arc::new(Recorder {
                    name,
                    log: log.clone(),
                    reserve: reserve.clone(),
                    pre_bind: pre_bind.clone(),
                }) as Arc<dyn Plugin>
            })
            .collect();
        p.reserve = plugins.clone();
        p.pre_bind = plugins;
        (p, log)
    }

    #[test]
    fn volume_binding_serves_reserve_and_pre_bind_by_default_and_can_be_disabled() {
        let p = profile("").unwrap();
        assert_eq!(p.plugin_names("reserve"), vec!["VolumeBinding"]);
        assert_eq!(p.plugin_names("preBind"), vec!["VolumeBinding"]);
        let p = profile(
            "profiles: [{plugins: {reserve: {disabled: [{name: VolumeBinding}]}, preBind: {disabled: [{name: '*'}]}}}]",
        )
        .unwrap();
        assert!(p.plugin_names("reserve").is_empty());
        assert!(p.plugin_names("preBind").is_empty());
        assert_eq!(
            p.plugin_names("filter")
                .iter()
                .filter(|n| **n == "VolumeBinding")
                .count(),
            1
        );
        let err = profile("profiles: [{plugins: {reserve: {enabled: [{name: NodePorts}]}}}]")
            .err()
            .unwrap();
        assert!(err.contains("NodePorts"), "{err}");
    }

    #[tokio::test]
    async fn reserve_runs_in_order_and_unreserve_in_reverse() {
        let pod = crate::framework::testing::pod("p", &[], serde_json::json!({}));
        let handle = crate::framework::fake_api::handle();
        let ok = Status::success;
        type Case = (
            &'static str,
            Vec<(&'static str, Status, Status)>,
            Result<(), Status>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "all succeed",
                vec![("A", ok(), ok()), ("B", ok(), ok())],
                Ok(()),
                vec!["reserve A n", "reserve B n"],
            ),
            (
                "an error stops the rest and names the plugin",
                vec![
                    ("A", ok(), ok()),
                    ("B", Status::error("boom"), ok()),
                    ("C", ok(), ok()),
                ],
                Err(Status::error("running Reserve plugin \"B\": boom").with_plugin("B")),
                vec!["reserve A n", "reserve B n"],
            ),
            (
                "a rejection keeps its code and reasons",
                vec![
                    ("A", Status::unschedulable("no room"), ok()),
                    ("B", ok(), ok()),
                ],
                Err(Status::unschedulable("no room").with_plugin("A")),
                vec!["reserve A n"],
            ),
        ];
        for (name, answers, want, calls) in cases {
            let (p, log) = recorders(&answers);
            let mut state = CycleState::new();
            assert_eq!(
                p.run_reserve(&mut state, &pod, "n", &handle),
                want,
                "{name}"
            );
            assert_eq!(*log.lock().unwrap(), calls, "{name}");
            log.lock().unwrap().clear();
            p.run_unreserve(&state, &pod, "n", &handle);
            let reversed: Vec<String> = answers
                .iter()
                .rev()
                .map(|(n, _, _)| format!("unreserve {n} n"))
                .collect();
            assert_eq!(
                *log.lock().unwrap(),
                reversed,
                "{name}: every plugin, reversed"
            );
        }
    }

    #[tokio::test]
    async fn pre_bind_runs_in_order_until_the_first_failure() {
        let pod = crate::framework::testing::pod("p", &[], serde_json::json!({}));
        let handle = crate::framework::fake_api::handle();
        let ok = Status::success;
        let (p, log) = recorders(&[
            ("A", ok(), Status::skip()),
            (
                "B",
                ok(),
                Status::error("binding volumes: context deadline exceeded"),
            ),
            ("C", ok(), ok()),
        ]);
        let state = CycleState::new();
        assert_eq!(
            p.run_pre_bind(&state, &pod, "n", &handle).await,
            Err(Status::error(
                "running PreBind plugin \"B\": binding volumes: context deadline exceeded"
            )
            .with_plugin("B"))
        );
        assert_eq!(*log.lock().unwrap(), vec!["prebind A n", "prebind B n"]);
    }
}
