//! `--controllers`: kube-controller-manager's syntax and names. `*` enables
//! every controller, `foo` enables one, `-foo` disables one; upstream's short
//! aliases (`deployment`, `endpoint`, …) are accepted too.

use std::collections::BTreeSet;

/// The controllers this binary implements, by upstream name, with aliases.
pub const CONTROLLERS: &[(&str, &[&str])] = &[
    ("replicaset-controller", &["replicaset"]),
    ("deployment-controller", &["deployment"]),
    ("endpoints-controller", &["endpoint", "endpoints"]),
    ("endpointslice-controller", &["endpointslice"]),
    (
        "persistentvolume-binder-controller",
        &["persistentvolume-binder"],
    ),
];

fn canonical(name: &str) -> Result<&'static str, String> {
    for (canonical, aliases) in CONTROLLERS {
        if *canonical == name || aliases.contains(&name) {
            return Ok(canonical);
        }
    }
    let known: Vec<&str> = CONTROLLERS.iter().map(|(n, _)| *n).collect();
    Err(format!(
        "unknown controller {name:?}; known: {}",
        known.join(", ")
    ))
}

/// Parses a `--controllers` list into the enabled set.
pub fn parse(list: &[String]) -> Result<BTreeSet<&'static str>, String> {
    let mut star = false;
    let mut on = BTreeSet::new();
    let mut off = BTreeSet::new();
    for item in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
        match item {
            "" => {}
            "*" => star = true,
            _ => match item.strip_prefix('-') {
                Some(name) => {
                    off.insert(canonical(name)?);
                }
                None => {
                    on.insert(canonical(item)?);
                }
            },
        }
    }
    let mut enabled: BTreeSet<&'static str> = if star {
        CONTROLLERS.iter().map(|(n, _)| *n).collect()
    } else {
        BTreeSet::new()
    };
    enabled.extend(on);
    for name in off {
        enabled.remove(name);
    }
    Ok(enabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<&'static str>, String> {
        parse(&[s.to_string()]).map(|set| set.into_iter().collect())
    }

    #[test]
    fn star_enables_all_and_minus_disables() {
        assert_eq!(p("*").unwrap().len(), CONTROLLERS.len());
        assert_eq!(
            p("*,-endpoints-controller,-endpointslice").unwrap(),
            vec![
                "deployment-controller",
                "persistentvolume-binder-controller",
                "replicaset-controller"
            ]
        );
    }

    #[test]
    fn names_and_aliases() {
        assert_eq!(
            p("deployment,endpointslice-controller").unwrap(),
            vec!["deployment-controller", "endpointslice-controller"]
        );
        assert!(p("").unwrap().is_empty());
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(p("garbage").unwrap_err().contains("unknown controller"));
    }

    #[test]
    fn the_pv_binder_by_name_and_alias() {
        assert_eq!(
            p("persistentvolume-binder").unwrap(),
            vec!["persistentvolume-binder-controller"]
        );
        assert_eq!(
            p("*,-persistentvolume-binder-controller").unwrap().len(),
            CONTROLLERS.len() - 1
        );
    }
}
