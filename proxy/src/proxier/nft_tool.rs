//! The `nft` commands the nftables proxier runs, each confined to our own
//! table (listing the whole ruleset could trip over other tables' objects
//! an older nft cannot parse, as upstream's knftables avoids too).

use super::iptables_tool::ToolError;
use crate::exec::{Exec, Output};
use crate::nftables::{Existing, TABLE, names};

/// nft's message when the table (or chain) it was asked about is not there.
const NOT_FOUND: &str = "No such file or directory";

pub struct Nft<E> {
    pub exec: E,
}

fn failed(command: String, out: &Output) -> ToolError {
    ToolError::Failed {
        command,
        code: out.code,
        stderr: out.stderr.trim().to_string(),
    }
}

impl<E: Exec> Nft<E> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, ToolError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.exec
            .run("nft", &args, stdin)
            .map_err(|source| ToolError::Spawn {
                command: format!("nft {}", args.join(" ")),
                source,
            })
    }

    /// Runs one transaction (`nft -f -`): all of it or none.
    pub fn apply(&self, text: &str) -> Result<(), ToolError> {
        let out = self.run(&["-f", "-"], Some(text))?;
        if out.success() {
            Ok(())
        } else {
            Err(failed("nft -f -".into(), &out))
        }
    }

    /// Our table's chains and sets (`None`: no table), as upstream's
    /// `List("chain")` and `List("sets")`: the family's chain and set
    /// declarations only. Listing the table itself would print every rule
    /// too — tens of thousands of lines with 10000 Services, on each sync.
    pub fn list(&self, family: &str) -> Result<Option<Existing>, ToolError> {
        let mut existing = Existing::default();
        for what in ["chains", "sets"] {
            let args = ["--json", "--terse", "list", what, family];
            let out = self.run(&args, None)?;
            if !out.success() {
                return Err(failed(format!("nft {}", args.join(" ")), &out));
            }
            let listed = parse_listing(&out.stdout).map_err(|problem| ToolError::Failed {
                command: format!("nft {}", args.join(" ")),
                code: out.code,
                stderr: format!("unreadable output: {problem}"),
            })?;
            existing.chains.extend(listed.chains);
            existing.sets.extend(listed.sets);
        }
        // Our table always has its base chains: none listed, no table.
        Ok((!existing.chains.is_empty()).then_some(existing))
    }

    /// Whether our table is still in place: its NAT prerouting chain exists
    /// and jumps to the services (the table deleted, or flushed, loses it).
    /// Terse: the maps' elements (two per Service) are not read.
    pub fn intact(&self, family: &str) -> Result<bool, ToolError> {
        let args = [
            "--terse",
            "list",
            "chain",
            family,
            TABLE,
            names::NAT_PREROUTING,
        ];
        let out = self.run(&args, None)?;
        if out.success() {
            return Ok(out.stdout.contains(&format!("jump {}", names::SERVICES)));
        }
        if out.stderr.contains(NOT_FOUND) {
            return Ok(false);
        }
        Err(failed(format!("nft {}", args.join(" ")), &out))
    }

    /// The families (`ip`, `ip6`) that hold a table of ours.
    pub fn our_tables(&self) -> Result<Vec<String>, ToolError> {
        let out = self.run(&["list", "tables"], None)?;
        if !out.success() {
            return Err(failed("nft list tables".into(), &out));
        }
        Ok(out
            .stdout
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("table"), Some(family), Some(name)) if name == TABLE => {
                        Some(family.to_string())
                    }
                    _ => None,
                }
            })
            .collect())
    }
}

/// `nft --json` output: `{"nftables": [{"metainfo": …}, {"chain": {"name": …}}, …]}`;
/// only our table's objects count.
fn parse_listing(json: &str) -> Result<Existing, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let objects = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or("no \"nftables\" array")?;
    let mut existing = Existing::default();
    for object in objects {
        let name = |kind: &str| {
            object
                .get(kind)
                .filter(|o| o.get("table").and_then(|t| t.as_str()) == Some(TABLE))
                .and_then(|o| o.get("name"))
                .and_then(|n| n.as_str())
                .map(String::from)
        };
        if let Some(chain) = name("chain") {
            existing.chains.insert(chain);
        } else if let Some(set) = name("set") {
            existing.sets.insert(set);
        }
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chains_and_sets_from_the_json_listing() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "ip", "name": "understudy-proxy", "handle": 1}},
            {"set": {"family": "ip", "name": "affinity-X-ns/s/tcp/p__1.2.3.4/80", "table": "understudy-proxy", "type": "ipv4_addr"}},
            {"map": {"family": "ip", "name": "service-ips", "table": "understudy-proxy"}},
            {"chain": {"family": "ip", "table": "understudy-proxy", "name": "services", "handle": 3}},
            {"rule": {"family": "ip", "table": "understudy-proxy", "chain": "services", "expr": []}},
            {"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 3}},
            {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-prerouting", "handle": 4}}]}"#;
        let existing = parse_listing(json).unwrap();
        assert_eq!(
            existing.chains.into_iter().collect::<Vec<_>>(),
            ["services"]
        );
        assert_eq!(
            existing.sets.into_iter().collect::<Vec<_>>(),
            ["affinity-X-ns/s/tcp/p__1.2.3.4/80"]
        );
        assert!(parse_listing("not json").is_err());
    }
}
