//! What NodeResourcesFit's scoring strategies and
//! NodeResourcesBalancedAllocation share (upstream's
//! `resourceAllocationScorer`): the configured `resources` list, how a pod's
//! and a node's amounts of each are counted, the per-strategy scorers, and
//! the resource-name predicates upstream uses to tell extended resources apart.

use serde::Deserialize;

use crate::framework::resources::{CPU, EPHEMERAL_STORAGE, MEMORY};
use crate::framework::{MAX_NODE_SCORE, NodeInfo, PodInfo};

/// Shape scores in configuration go up to 10; they are scaled to
/// MAX_NODE_SCORE (upstream's `config.MaxCustomPriorityScore`).
pub const MAX_CUSTOM_PRIORITY_SCORE: i64 = 10;

/// Utilization is expressed in percent.
const MAX_UTILIZATION: i64 = 100;

/// One entry of a `resources` list (upstream's `ResourceSpec`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSpec {
    #[serde(default)]
    pub name: String,
    /// 0 (or absent) is defaulted to 1, as the v1 config defaulting does.
    #[serde(default)]
    pub weight: i64,
}

/// cpu and memory with weight 1: the default of both plugins' `resources`.
pub fn default_resources() -> Vec<ResourceSpec> {
    [CPU, MEMORY]
        .into_iter()
        .map(|name| ResourceSpec {
            name: name.to_string(),
            weight: 1,
        })
        .collect()
}

/// Applies the v1 defaulting of a `resources` list: empty means cpu+memory,
/// and an unset weight means 1.
pub fn defaulted_resources(resources: Vec<ResourceSpec>) -> Vec<ResourceSpec> {
    if resources.is_empty() {
        return default_resources();
    }
    resources
        .into_iter()
        .map(|mut r| {
            if r.weight == 0 {
                r.weight = 1;
            }
            r
        })
        .collect()
}

/// Per configured resource (same order as `resources`), the amounts a
/// scorer compares. Resources the node does not offer are left at 0 in all
/// three, which every scorer reads as "skip this resource".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// What the node would have requested with the pod placed on it.
    pub requested: PerResource,
    /// What the node has requested without the pod.
    pub allocated: PerResource,
    pub allocatable: PerResource,
}

/// One amount per configured resource, inline for the usual few: computed
/// for every scored node by two plugins, so heap vectors cost thousands of
/// allocations per pod.
pub type PerResource = smallvec::SmallVec<[i64; 4]>;

/// Counts pod and node amounts of the configured resources.
#[derive(Clone, Debug)]
pub struct ResourceAllocation {
    /// `true`: plain requests for cpu/memory (BalancedAllocation); `false`:
    /// requests with the per-container scoring defaults (Fit's strategies),
    /// so pods without requests still count on a node.
    pub use_requested: bool,
    pub resources: Vec<ResourceSpec>,
    /// How each of `resources` is counted, decided once: telling the names
    /// apart for every scored node showed in profiles.
    counted: Vec<Counted>,
}

/// Where a node's amounts of one configured resource come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    Cpu,
    Memory,
    EphemeralStorage,
    /// Extended resources, hugepages and the like: scored only for pods
    /// that request them (so nodes without them are not favoured).
    Scalar,
    /// A resource the scheduler does not account (such as `pods`).
    Not,
}

impl Counted {
    fn of(name: &str) -> Self {
        match name {
            CPU => Self::Cpu,
            MEMORY => Self::Memory,
            EPHEMERAL_STORAGE => Self::EphemeralStorage,
            other if is_scalar_resource_name(other) => Self::Scalar,
            _ => Self::Not,
        }
    }
}

impl ResourceAllocation {
    pub fn new(use_requested: bool, resources: Vec<ResourceSpec>) -> Self {
        let counted = resources.iter().map(|r| Counted::of(&r.name)).collect();
        Self {
            use_requested,
            resources,
            counted,
        }
    }

    /// The pod's request of each configured resource.
    pub fn pod_requests(&self, pod: &PodInfo) -> Vec<i64> {
        let requests = if self.use_requested {
            &pod.requests
        } else {
            &pod.non_zero_requests
        };
        self.resources
            .iter()
            .map(|r| requests.get(&r.name))
            .collect()
    }

    /// The node's (allocatable, requested-without-the-pod) of one resource;
    /// (0, 0) when it is not to be scored: a scalar resource the pod does not
    /// request (so nodes without it are not favoured), or one the scheduler
    /// does not account.
    fn allocatable_and_requested(&self, node: &NodeInfo, i: usize, pod_request: i64) -> (i64, i64) {
        let requested = if self.use_requested {
            &node.requested
        } else {
            &node.non_zero_requested
        };
        match self.counted[i] {
            Counted::Cpu => (node.allocatable.milli_cpu, requested.milli_cpu),
            Counted::Memory => (node.allocatable.memory, requested.memory),
            // The scoring defaults only exist for cpu and memory.
            Counted::EphemeralStorage => (
                node.allocatable.ephemeral_storage,
                node.requested.ephemeral_storage,
            ),
            Counted::Scalar if pod_request != 0 => {
                let name = &self.resources[i].name;
                match node.allocatable.scalar.get(name) {
                    Some(allocatable) => (*allocatable, node.requested.get(name)),
                    None => (0, 0),
                }
            }
            Counted::Scalar | Counted::Not => (0, 0),
        }
    }

    /// The amounts of every configured resource on `node`, given the pod's
    /// requests from [`Self::pod_requests`].
    pub fn allocation(&self, node: &NodeInfo, pod_requests: &[i64]) -> Allocation {
        let n = self.resources.len();
        let mut out = Allocation {
            requested: smallvec::smallvec![0; n],
            allocated: smallvec::smallvec![0; n],
            allocatable: smallvec::smallvec![0; n],
        };
        for (i, pod_request) in pod_requests.iter().enumerate().take(n) {
            let (allocatable, requested) = self.allocatable_and_requested(node, i, *pod_request);
            if allocatable == 0 {
                continue;
            }
            out.allocatable[i] = allocatable;
            out.allocated[i] = requested;
            out.requested[i] = requested.saturating_add(*pod_request);
        }
        out
    }
}

/// Whether every request is zero: a best-effort pod as far as the configured
/// resources go.
pub fn requests_nothing(pod_requests: &[i64]) -> bool {
    pod_requests.iter().all(|r| *r == 0)
}

/// Weighted mean of a per-resource score over resources the node offers,
/// truncated as upstream's integer division.
fn weighted_mean(
    resources: &[ResourceSpec],
    a: &Allocation,
    per_resource: impl Fn(i64, i64) -> i64,
) -> i64 {
    let (mut total, mut weights) = (0i64, 0i64);
    for (i, spec) in resources.iter().enumerate() {
        if a.allocatable[i] == 0 {
            continue;
        }
        total += per_resource(a.requested[i], a.allocatable[i]) * spec.weight;
        weights += spec.weight;
    }
    if weights == 0 { 0 } else { total / weights }
}

/// LeastAllocated: the share left free, favouring emptier nodes.
pub fn least_allocated(resources: &[ResourceSpec], a: &Allocation) -> i64 {
    weighted_mean(resources, a, |requested, capacity| {
        if requested > capacity {
            0
        } else {
            // 128-bit: a capacity near i64::MAX ("8Ei") times 100 overflows.
            (i128::from(capacity - requested) * i128::from(MAX_NODE_SCORE) / i128::from(capacity))
                as i64
        }
    })
}

/// MostAllocated: the share in use, favouring fuller nodes (bin packing).
/// Requests above capacity (possible through the scoring defaults) count as
/// full.
pub fn most_allocated(resources: &[ResourceSpec], a: &Allocation) -> i64 {
    weighted_mean(resources, a, |requested, capacity| {
        (i128::from(requested.min(capacity)) * i128::from(MAX_NODE_SCORE) / i128::from(capacity))
            as i64
    })
}

/// A piecewise-linear function of utilization (percent) through the shape
/// points, flat before the first and after the last (upstream's
/// `BuildBrokenLinearFunction`). Points are (utilization, score) with
/// strictly increasing utilization, as validation guarantees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLinear(pub Vec<(i64, i64)>);

impl BrokenLinear {
    pub fn eval(&self, p: i64) -> i64 {
        let shape = &self.0;
        for (i, &(x, y)) in shape.iter().enumerate() {
            if p <= x {
                if i == 0 {
                    return y;
                }
                let (x0, y0) = shape[i - 1];
                return y0 + (y - y0) * (p - x0) / (x - x0);
            }
        }
        shape.last().map(|p| p.1).unwrap_or(0)
    }
}

/// `requested * 100 / capacity` exactly, in [0, 100]; 128-bit so huge
/// quantities (memory in bytes times 100) cannot overflow.
fn utilization_percent(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested <= 0 {
        return 0;
    }
    if requested >= capacity {
        return MAX_UTILIZATION;
    }
    (i128::from(requested) * i128::from(MAX_UTILIZATION) / i128::from(capacity)) as i64
}

/// RequestedToCapacityRatio: each resource's utilization through the
/// configured shape; resources scoring 0 do not count towards the weights,
/// and the mean is rounded (not truncated), as upstream.
pub fn requested_to_capacity_ratio(
    resources: &[ResourceSpec],
    shape: &BrokenLinear,
    a: &Allocation,
) -> i64 {
    let (mut total, mut weights) = (0i64, 0i64);
    for (i, spec) in resources.iter().enumerate() {
        let (requested, capacity) = (a.requested[i], a.allocatable[i]);
        if capacity == 0 {
            continue;
        }
        let score = if requested > capacity {
            shape.eval(MAX_UTILIZATION)
        } else {
            shape.eval(utilization_percent(requested, capacity))
        };
        if score > 0 {
            total += score * spec.weight;
            weights += spec.weight;
        }
    }
    if weights == 0 {
        0
    } else {
        (total as f64 / weights as f64).round() as i64
    }
}

/// How evenly a node's resources are used: (1 - standard deviation of the
/// requested fractions) * 100, fractions capped at 1. With two resources the
/// deviation is |a - b| / 2; one resource is always balanced.
pub fn balance_score(requested: &[i64], allocatable: &[i64]) -> i64 {
    let fractions: Vec<f64> = requested
        .iter()
        .zip(allocatable)
        .filter(|(_, a)| **a != 0)
        .map(|(r, a)| (*r as f64 / *a as f64).min(1.0))
        .collect();
    let std = match fractions.len() {
        2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
        n if n > 2 => {
            let mean = fractions.iter().sum::<f64>() / n as f64;
            let sum: f64 = fractions.iter().map(|f| (f - mean) * (f - mean)).sum();
            (sum / n as f64).sqrt()
        }
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// BalancedAllocation (v1.37): rewards the change in balance the pod brings,
/// not the balance after placing it. Both balance scores lie in [50, 100], so
/// their difference in [-50, 50] maps to [50, 100], with 75 for "no change".
pub fn balanced_allocation(a: &Allocation) -> i64 {
    let with_pod = balance_score(&a.requested, &a.allocatable);
    let without_pod = balance_score(&a.allocated, &a.allocatable);
    MAX_NODE_SCORE / 2 + (MAX_NODE_SCORE / 2 + with_pod - without_pod) / 2
}

// Resource-name predicates (upstream's v1helper / schedutil), needed because
// only some names are accounted as scalar resources and only extended
// resources may be ignored.

const DEFAULT_NAMESPACE_PREFIX: &str = "kubernetes.io/";
const REQUESTS_PREFIX: &str = "requests.";

/// `kubernetes.io/…` names: native, though prefixed.
pub fn is_prefixed_native_resource(name: &str) -> bool {
    name.contains(DEFAULT_NAMESPACE_PREFIX)
}

pub fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || is_prefixed_native_resource(name)
}

/// A vendor-domain resource such as `example.com/gpu`: not native, and valid
/// as a quota name (`requests.<name>` a qualified name).
pub fn is_extended_resource_name(name: &str) -> bool {
    if is_native_resource(name) || name.starts_with(REQUESTS_PREFIX) {
        return false;
    }
    qualified_name_errors(&format!("{REQUESTS_PREFIX}{name}")).is_empty()
}

/// The names the scheduler accounts besides cpu/memory/ephemeral-storage/pods.
pub fn is_scalar_resource_name(name: &str) -> bool {
    is_extended_resource_name(name)
        || name.starts_with("hugepages-")
        || is_prefixed_native_resource(name)
        || name.starts_with("attachable-volumes-")
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    is_alnum(first)
        && is_alnum(last)
        && s.chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// A DNS-1123 subdomain: dot-separated lowercase alphanumeric labels that may
/// contain inner '-', at most 253 characters.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let (Some(first), Some(last)) = (label.chars().next(), label.chars().last()) else {
                return false;
            };
            let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            lower_alnum(first)
                && lower_alnum(last)
                && label.chars().all(|c| lower_alnum(c) || c == '-')
        })
}

/// Why `value` is not a qualified name (`[prefix/]name`, as label keys and
/// resource names are); empty when it is one.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errors = vec![];
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else if !is_dns1123_subdomain(prefix) {
                errors.push(
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case \
                     alphanumeric characters, '-' or '.', and must start and end with an \
                     alphanumeric character (e.g. 'example.com')"
                        .to_string(),
                );
            }
            *name
        }
        _ => {
            errors.push(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', \
                 and must start and end with an alphanumeric character (e.g. 'MyName', or \
                 'my.name', or '123-abc') with an optional DNS subdomain prefix and '/' \
                 (e.g. 'example.com/MyName')"
                    .to_string(),
            );
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errors.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or \
             '123-abc')"
                .to_string(),
        );
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(requested: &[i64], allocatable: &[i64]) -> Allocation {
        Allocation {
            requested: requested.into(),
            allocated: smallvec::smallvec![0; requested.len()],
            allocatable: allocatable.into(),
        }
    }

    #[test]
    fn broken_linear_function() {
        // Upstream's TestBrokenLinearFunction shape.
        let f = BrokenLinear(vec![(10, 1), (90, 9)]);
        for (p, want) in [
            (-10, 1),
            (0, 1),
            (9, 1),
            (10, 1),
            (15, 1),
            (19, 1),
            (25, 2),
            (50, 5),
            (70, 7),
            (90, 9),
            (95, 9),
            (200, 9),
        ] {
            assert_eq!(f.eval(p), want, "p={p}");
        }
        let decreasing = BrokenLinear(vec![(0, 100), (100, 0)]);
        assert_eq!(decreasing.eval(25), 75);
    }

    #[test]
    fn utilization_is_exact_for_huge_quantities() {
        assert_eq!(utilization_percent(i64::MAX / 2, i64::MAX), 49);
        assert_eq!(utilization_percent(3, 4), 75);
        assert_eq!(utilization_percent(5, 4), 100);
        assert_eq!(utilization_percent(0, 4), 0);
    }

    #[test]
    fn least_and_most_allocated_weighted_means() {
        let res = vec![
            ResourceSpec {
                name: "memory".into(),
                weight: 2,
            },
            ResourceSpec {
                name: "cpu".into(),
                weight: 1,
            },
        ];
        // memory 5000/10000 → 50, cpu 3000/4000 → 25 free: (50*2 + 25) / 3.
        let a = alloc(&[5000, 3000], &[10000, 4000]);
        assert_eq!(least_allocated(&res, &a), 41);
        // memory 50, cpu 75 used: (100 + 75) / 3.
        assert_eq!(most_allocated(&res, &a), 58);
        // Over capacity: least gives 0, most counts as full.
        let over = alloc(&[6000, 6000], &[4000, 4000]);
        assert_eq!(least_allocated(&res, &over), 0);
        assert_eq!(most_allocated(&res, &over), 100);
        // Resources the node lacks are skipped entirely.
        let missing = alloc(&[0, 2000], &[0, 4000]);
        assert_eq!(least_allocated(&res, &missing), 50);
        assert_eq!(least_allocated(&res, &alloc(&[0, 0], &[0, 0])), 0);
    }

    #[test]
    fn requested_to_capacity_ratio_skips_zero_scores_and_rounds() {
        let res = default_resources();
        let bin_packing = BrokenLinear(vec![(0, 0), (100, 100)]);
        // cpu 25%, memory 0% (scores 0, so its weight is dropped).
        assert_eq!(
            requested_to_capacity_ratio(&res, &bin_packing, &alloc(&[1, 0], &[4, 4])),
            25
        );
        // cpu 25, memory 50 → 37.5 rounds to 38 (least/most would truncate).
        assert_eq!(
            requested_to_capacity_ratio(&res, &bin_packing, &alloc(&[1, 2], &[4, 4])),
            38
        );
        // Over capacity reads the shape at 100%.
        assert_eq!(
            requested_to_capacity_ratio(&res, &bin_packing, &alloc(&[9, 0], &[4, 4])),
            100
        );
    }

    #[test]
    fn balance_score_uses_the_standard_deviation() {
        assert_eq!(balance_score(&[3, 5], &[4, 10]), 87); // 0.75 vs 0.5
        assert_eq!(balance_score(&[1, 1], &[2, 2]), 100);
        assert_eq!(balance_score(&[8, 0], &[4, 10]), 50); // capped at 1
        // Three resources: fractions 0.5, 0.5, 1 → std = sqrt(1/18).
        assert_eq!(balance_score(&[2, 5, 4], &[4, 10, 4]), 76);
        assert_eq!(balance_score(&[3], &[4]), 100);
        assert_eq!(balance_score(&[0, 3], &[0, 4]), 100);
    }

    #[test]
    fn resource_names() {
        for (name, extended, scalar) in [
            ("example.com/gpu", true, true),
            ("nvidia.com/gpu", true, true),
            ("kubernetes.io/something", false, true),
            ("hugepages-2Mi", false, true),
            ("attachable-volumes-aws-ebs", false, true),
            ("cpu", false, false),
            ("pods", false, false),
            ("foo", false, false),
            ("requests.example.com/gpu", false, false),
            ("Example.com/gpu", false, false),
            ("example.com/a/b", false, false),
        ] {
            assert_eq!(is_extended_resource_name(name), extended, "{name}");
            assert_eq!(is_scalar_resource_name(name), scalar, "{name}");
        }
        assert!(qualified_name_errors("example.com/MyName").is_empty());
        assert!(qualified_name_errors("my.name").is_empty());
        assert!(!qualified_name_errors("/name").is_empty());
        assert!(!qualified_name_errors("-bad").is_empty());
        assert!(!qualified_name_errors(&"a".repeat(64)).is_empty());
    }
}
