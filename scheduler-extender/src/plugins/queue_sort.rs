//! PrioritySort: the active queue pops higher `spec.priority` first, and among
//! equals the pod that entered the queue earliest.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;

use crate::framework::{Plugin, QueueSortPlugin, QueuedPodInfo};

pub const NAME: &str = "PrioritySort";

pub struct PrioritySort;

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        Some(self)
    }
}

impl QueueSortPlugin for PrioritySort {
    /// `Less` means `a` pops before `b`.
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> Ordering {
        b.pod
            .priority
            .cmp(&a.pod.priority)
            .then(a.timestamp.cmp(&b.timestamp))
    }
}

pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(PrioritySort))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::pod;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn queued(priority: i32, at: Instant) -> QueuedPodInfo {
        QueuedPodInfo {
            pod: pod("p", &[], json!({"priority": priority})),
            initial_attempt: at,
            timestamp: at,
            attempts: 0,
            unschedulable_count: 0,
            consecutive_errors: 0,
        }
    }

    #[test]
    fn higher_priority_first_then_earlier() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let sort = PrioritySort;
        assert_eq!(sort.less(&queued(10, t1), &queued(5, t0)), Ordering::Less);
        assert_eq!(
            sort.less(&queued(5, t0), &queued(10, t1)),
            Ordering::Greater
        );
        assert_eq!(sort.less(&queued(5, t0), &queued(5, t1)), Ordering::Less);
        assert_eq!(sort.less(&queued(5, t1), &queued(5, t0)), Ordering::Greater);
    }
}
