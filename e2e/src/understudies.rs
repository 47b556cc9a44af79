//! The Understudy components the lab can run, and which upstream controllers
//! each one replaces (and so must be switched off in kube-controller-manager).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Understudy {
    Scheduler,
    Controllers,
    Proxy,
}

impl Understudy {
    pub const ALL: [Understudy; 3] = [Self::Scheduler, Self::Controllers, Self::Proxy];

    pub fn binary(self) -> &'static str {
        match self {
            Self::Scheduler => "understudy-scheduler",
            Self::Controllers => "understudy-controllers",
            Self::Proxy => "understudy-proxy",
        }
    }

    /// kube-controller-manager controllers this understudy takes over.
    pub fn replaced_controllers(self) -> &'static [&'static str] {
        match self {
            Self::Controllers => &[
                "deployment-controller",
                "replicaset-controller",
                "endpoints-controller",
                "endpointslice-controller",
                "persistentvolume-binder-controller",
            ],
            Self::Scheduler | Self::Proxy => &[],
        }
    }
}

impl fmt::Display for Understudy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Scheduler => "scheduler",
            Self::Controllers => "controllers",
            Self::Proxy => "proxy",
        })
    }
}

impl FromStr for Understudy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "scheduler" => Ok(Self::Scheduler),
            "controllers" => Ok(Self::Controllers),
            "proxy" => Ok(Self::Proxy),
            other => Err(format!(
                "unknown understudy {other:?}: expected scheduler, controllers or proxy"
            )),
        }
    }
}

/// Parses `all`, `none` or a comma-separated list.
pub fn parse_set(list: &str) -> Result<BTreeSet<Understudy>, String> {
    match list.trim() {
        "all" => Ok(Understudy::ALL.into_iter().collect()),
        "none" | "" => Ok(BTreeSet::new()),
        list => list.split(',').map(str::parse).collect(),
    }
}

/// kube-controller-manager's `--controllers` value: everything on by default
/// (`*`) minus what the chosen understudies replace.
pub fn controller_manager_controllers(replaced: &BTreeSet<Understudy>) -> String {
    let mut list = vec!["*".to_string()];
    for understudy in replaced {
        list.extend(
            understudy
                .replaced_controllers()
                .iter()
                .map(|c| format!("-{c}")),
        );
    }
    list.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_list_follows_the_replaced_understudies() {
        assert_eq!(controller_manager_controllers(&BTreeSet::new()), "*");
        assert_eq!(
            controller_manager_controllers(&parse_set("scheduler,controllers").unwrap()),
            "*,-deployment-controller,-replicaset-controller,-endpoints-controller,-endpointslice-controller,-persistentvolume-binder-controller"
        );
        assert_eq!(
            controller_manager_controllers(&parse_set("scheduler,proxy").unwrap()),
            "*"
        );
    }

    #[test]
    fn parses_lists() {
        assert_eq!(parse_set("all").unwrap().len(), 3);
        assert!(parse_set("none").unwrap().is_empty());
        assert_eq!(
            parse_set("proxy").unwrap().into_iter().collect::<Vec<_>>(),
            vec![Understudy::Proxy]
        );
        assert!(
            parse_set("scheduler,kubelet")
                .unwrap_err()
                .contains("kubelet")
        );
    }
}
