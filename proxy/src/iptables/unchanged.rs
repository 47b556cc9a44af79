//! A partial sync leaves alone the fixed chains (`US-SERVICES`,
//! `US-NODEPORTS`, …) whose rules are what the last restore wrote.
//!
//! Upstream rewrites them in every sync: `KUBE-SERVICES` holds a rule per
//! Service port, so a one-endpoint change restores thousands of lines, and
//! `iptables-restore` spends most of a partial sync on them. An endpoint
//! change rarely changes them; when it does (a Service gains or loses its
//! last endpoint), their rules differ and they are written. The kernel ends
//! up with the same rules either way. What the last restore wrote is known
//! only while nothing else touches our chains: a flushed table loses the
//! canary and forces a full sync, a failed restore forgets the record.
//!
//! Works on the rendered restore input, which only `render` produces: one
//! `*table` section per table, each chain declared as `:CHAIN - [0:0]`
//! before its `-A CHAIN …` rules, `COMMIT` closing the section.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::chains::{
    EXTERNAL_SERVICES, FORWARD, LOCALHOST_FIREWALL, MARK_MASQ, NODE_PORTS, POSTROUTING,
    PROXY_FIREWALL, SERVICES,
};

/// The chains a restore may leave out when unchanged: every chain of ours
/// that is not a service's own.
const FIXED_CHAINS: [&str; 8] = [
    SERVICES,
    EXTERNAL_SERVICES,
    FORWARD,
    NODE_PORTS,
    PROXY_FIREWALL,
    POSTROUTING,
    MARK_MASQ,
    LOCALHOST_FIREWALL,
];

/// The rules of each fixed chain a restore wrote, by table and chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FixedChains(BTreeMap<(String, String), [u8; 32]>);

/// One table's section of the restore input.
struct Section<'a> {
    table: &'a str,
    lines: Vec<&'a str>,
}

/// The chain a declaration (`:CHAIN - [0:0]`) or an append (`-A CHAIN …`)
/// is about.
fn chain_of(line: &str) -> Option<&str> {
    if let Some(declared) = line.strip_prefix(':') {
        return declared.split_whitespace().next();
    }
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("-A"), Some(chain)) => Some(chain),
        _ => None,
    }
}

fn sections(text: &str) -> Vec<Section<'_>> {
    let mut sections = Vec::new();
    let mut current: Option<Section> = None;
    for line in text.lines() {
        if let Some(table) = line.strip_prefix('*') {
            current = Some(Section {
                table,
                lines: Vec::new(),
            });
        } else if line == "COMMIT" {
            sections.extend(current.take());
        } else if let Some(section) = current.as_mut() {
            section.lines.push(line);
        }
    }
    sections
}

/// The fixed chains' rules in `text`.
pub fn fixed_chains(text: &str) -> FixedChains {
    let mut hashers: BTreeMap<(String, String), Sha256> = BTreeMap::new();
    for section in sections(text) {
        for line in &section.lines {
            let Some(chain) = chain_of(line).filter(|c| FIXED_CHAINS.contains(c)) else {
                continue;
            };
            let hasher = hashers
                .entry((section.table.to_string(), chain.to_string()))
                .or_default();
            if line.starts_with("-A") {
                hasher.update(line.as_bytes());
                hasher.update(b"\n");
            }
        }
    }
    FixedChains(
        hashers
            .into_iter()
            .map(|(key, hasher)| (key, hasher.finalize().into()))
            .collect(),
    )
}

/// `text` without the fixed chains whose rules are the same as in
/// `previous` (declaration and rules both: a declaration alone would flush
/// the chain), and without a table's section left empty by that.
pub fn omit_unchanged(text: &str, now: &FixedChains, previous: &FixedChains) -> String {
    let mut out = String::with_capacity(text.len());
    for section in sections(text) {
        let unchanged = |chain: &str| {
            let key = (section.table.to_string(), chain.to_string());
            FIXED_CHAINS.contains(&chain)
                && now
                    .0
                    .get(&key)
                    .is_some_and(|d| previous.0.get(&key) == Some(d))
        };
        let kept: Vec<&str> = (section.lines.iter())
            .filter(|line| !chain_of(line).is_some_and(unchanged))
            .copied()
            .collect();
        if kept.is_empty() {
            continue;
        }
        out.push('*');
        out.push_str(section.table);
        out.push('\n');
        for line in kept {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "*filter
:US-SERVICES - [0:0]
:US-FORWARD - [0:0]
-A US-SERVICES -d 10.96.0.11/32 -p tcp --dport 80 -j REJECT
-A US-FORWARD -j ACCEPT
COMMIT
*nat
:US-SERVICES - [0:0]
:US-SVC-AAAA - [0:0]
:US-SEP-BBBB - [0:0]
-A US-SERVICES -d 10.96.0.10/32 -p tcp --dport 80 -j US-SVC-AAAA
-A US-SVC-AAAA -j US-SEP-BBBB
-A US-SEP-BBBB -p tcp -j DNAT --to-destination 10.244.0.5:8080
COMMIT
";

    #[test]
    fn unchanged_fixed_chains_are_left_out_with_their_declaration() {
        let previous = fixed_chains(BEFORE);
        // One endpoint moved: only the service's own chains differ.
        let after = BEFORE.replace("10.244.0.5", "10.244.0.6");
        let text = omit_unchanged(&after, &fixed_chains(&after), &previous);
        assert_eq!(
            text,
            "*nat
:US-SVC-AAAA - [0:0]
:US-SEP-BBBB - [0:0]
-A US-SVC-AAAA -j US-SEP-BBBB
-A US-SEP-BBBB -p tcp -j DNAT --to-destination 10.244.0.6:8080
COMMIT
",
            "the filter section, all of it unchanged, is gone"
        );
    }

    #[test]
    fn a_fixed_chain_whose_rules_changed_is_written_whole() {
        let previous = fixed_chains(BEFORE);
        // The Service lost its endpoints: its filter REJECT rule appears.
        let after = BEFORE.replace(
            "-A US-FORWARD -j ACCEPT",
            "-A US-SERVICES -d 10.96.0.10/32 -p tcp --dport 80 -j REJECT\n-A US-FORWARD -j ACCEPT",
        );
        let text = omit_unchanged(&after, &fixed_chains(&after), &previous);
        assert!(
            text.starts_with(
                "*filter
:US-SERVICES - [0:0]
-A US-SERVICES -d 10.96.0.11/32 -p tcp --dport 80 -j REJECT
-A US-SERVICES -d 10.96.0.10/32 -p tcp --dport 80 -j REJECT
COMMIT
"
            ),
            "{text}"
        );
        assert!(!text.contains("US-FORWARD"), "{text}");
        assert!(
            !text.contains("-A US-SERVICES -d 10.96.0.10/32 -p tcp --dport 80 -j US-SVC"),
            "the nat table's US-SERVICES is unchanged: {text}"
        );
    }

    #[test]
    fn a_chain_that_became_empty_is_still_flushed() {
        let previous = fixed_chains(BEFORE);
        let after = BEFORE.replace("-A US-FORWARD -j ACCEPT\n", "");
        let text = omit_unchanged(&after, &fixed_chains(&after), &previous);
        assert!(text.contains(":US-FORWARD - [0:0]\n"), "{text}");
    }

    #[test]
    fn without_a_record_everything_is_written() {
        let text = omit_unchanged(BEFORE, &fixed_chains(BEFORE), &FixedChains::default());
        assert_eq!(text, BEFORE);
    }

    #[test]
    fn the_same_rules_in_another_table_are_another_chain() {
        let chains = fixed_chains(BEFORE);
        assert_ne!(
            chains.0[&("filter".into(), SERVICES.into())],
            chains.0[&("nat".into(), SERVICES.into())]
        );
        assert_eq!(
            chains.0.len(),
            3,
            "filter US-SERVICES, US-FORWARD; nat US-SERVICES"
        );
    }
}
