//! Writing nft commands: every one names our table in the family's
//! words.

use std::fmt::Write as _;

use super::elements::Element;
use super::names::TABLE;
use crate::tracker::IpFamily;

/// The family's words in rules and types.
#[derive(Clone, Copy)]
pub(super) struct Family {
    /// `ip` / `ip6`: the table family and the address match.
    pub ip: &'static str,
    pub addr: &'static str,
    pub not_localhost: &'static str,
}

impl Family {
    pub fn of(family: IpFamily) -> Self {
        match family {
            IpFamily::V4 => Family {
                ip: "ip",
                addr: "ipv4_addr",
                not_localhost: "ip daddr != 127.0.0.0/8",
            },
            IpFamily::V6 => Family {
                ip: "ip6",
                addr: "ipv6_addr",
                not_localhost: "ip6 daddr != ::1",
            },
        }
    }
}

/// The text being written: every command names our table.
pub(super) struct Out {
    pub family: &'static str,
    pub text: String,
}

impl Out {
    pub fn cmd(&mut self, verb: &str, kind: &str, rest: &str) {
        let _ = writeln!(self.text, "{verb} {kind} {} {TABLE} {rest}", self.family);
    }

    /// Creates the chain if missing and empties it.
    pub fn chain(&mut self, name: &str) {
        self.cmd("add", "chain", name);
        self.cmd("flush", "chain", name);
    }

    pub fn rule(&mut self, chain: &str, rule: &str) {
        self.cmd("add", "rule", &format!("{chain} {rule}"));
    }

    pub fn rule_commented(&mut self, chain: &str, rule: &str, comment: &str) {
        self.cmd(
            "add",
            "rule",
            &format!("{chain} {rule} comment {}", quote(comment)),
        );
    }
}

/// nft's double-quoted string. Our comments hold names and fixed text only.
pub(super) fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `add element` of a set or map element.
pub(super) fn write_element(out: &mut Out, container: &str, key: &str, element: &Element) {
    let comment = element
        .comment
        .as_deref()
        .map(|c| format!(" comment {}", quote(c)))
        .unwrap_or_default();
    let value = element
        .value
        .as_deref()
        .map(|v| format!(" : {v}"))
        .unwrap_or_default();
    out.cmd(
        "add",
        "element",
        &format!("{container} {{ {key}{comment}{value} }}"),
    );
}
