//! A profile's hints together, and the decision upstream's
//! `PriorityQueue.isPodWorthRequeuing` makes for one unschedulable pod and
//! one event: the piece of the queue that needs no queue.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ClusterEvent, ClusterEventWithHint, Object, QueueingHint, for_plugin};
use crate::framework::PodInfo;

/// Where an unschedulable pod goes after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueueingStrategy {
    /// Stays in the unschedulable set.
    Skip,
    /// To the backoff queue (or straight to active once its backoff is over).
    AfterBackoff,
    /// To the active queue at once: a plugin that kept it pending (Permit
    /// or PreEnqueue) says the wait may be over.
    Immediately,
}

/// Every plugin's registrations in one profile (upstream's per-profile
/// `queueingHintMap`).
pub struct ProfileHints {
    plugins: Vec<(String, Vec<ClusterEventWithHint>)>,
}

impl ProfileHints {
    /// From the profile's plugins that can reject or hold pods, with their
    /// `pluginConfig` args.
    pub fn new<'a>(
        plugins: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>,
    ) -> Result<Self, String> {
        let plugins = plugins
            .into_iter()
            .map(|(name, args)| Ok((name.to_string(), for_plugin(name, args)?)))
            .collect::<Result<_, String>>()?;
        Ok(Self { plugins })
    }

    /// Whether any plugin registered an event `event` matches (the wildcard
    /// always is): others need not be looked at per pod.
    pub fn is_event_of_interest(&self, event: &ClusterEvent) -> bool {
        event.is_wildcard()
            || self
                .plugins
                .iter()
                .flat_map(|(_, regs)| regs)
                .any(|r| r.event.matches(event))
    }

    /// What `event` means for `pod`, rejected by `unschedulable` plugins
    /// (Filter/PreFilter…) and held by `pending` ones. A pod no plugin
    /// rejected (it failed with an error) is retried on any event. The
    /// wildcard (the 5-minute flush, forced activation) moves every pod
    /// without asking hints, except that a forced activation naming another
    /// pod (`new` is that pod) leaves this one.
    pub fn strategy(
        &self,
        unschedulable: &HashSet<String>,
        pending: &HashSet<String>,
        event: &ClusterEvent,
        pod: &PodInfo,
        old: Option<Object<'_>>,
        new: Option<Object<'_>>,
    ) -> QueueingStrategy {
        self.strategy_timed(
            unschedulable,
            pending,
            event,
            pod,
            (old, new),
            &mut |_, _, _| {},
        )
    }

    /// As [`Self::strategy`], telling `timed` each hint asked: the plugin,
    /// its answer and how long it took (upstream's
    /// `scheduler_queueing_hint_execution_duration_seconds`).
    pub fn strategy_timed(
        &self,
        unschedulable: &HashSet<String>,
        pending: &HashSet<String>,
        event: &ClusterEvent,
        pod: &PodInfo,
        (old, new): (Option<Object<'_>>, Option<Object<'_>>),
        timed: &mut dyn FnMut(&str, QueueingHint, Duration),
    ) -> QueueingStrategy {
        if unschedulable.is_empty() && pending.is_empty() {
            return QueueingStrategy::AfterBackoff;
        }
        if event.is_wildcard() {
            return match new {
                None => QueueingStrategy::AfterBackoff,
                Some(Object::Pod(p)) if p.uid == pod.uid => QueueingStrategy::AfterBackoff,
                Some(_) => QueueingStrategy::Skip,
            };
        }
        let mut strategy = QueueingStrategy::Skip;
        for (plugin, regs) in &self.plugins {
            let is_pending = pending.contains(plugin);
            if !is_pending && !unschedulable.contains(plugin) {
                continue;
            }
            for reg in regs {
                let start = Instant::now();
                let Some(hint) = reg.hint_for(event, pod, old, new) else {
                    continue;
                };
                timed(plugin, hint, start.elapsed());
                if hint != QueueingHint::Queue {
                    continue;
                }
                if is_pending {
                    return QueueingStrategy::Immediately;
                }
                if pending.is_empty() {
                    return QueueingStrategy::AfterBackoff;
                }
                strategy = QueueingStrategy::AfterBackoff;
            }
        }
        strategy
    }
}
