//! What every network-namespace test of the proxy needs: a namespace that
//! goes away even when the test fails, and the host's own netfilter state,
//! which no test may change.

// Each test binary uses its own part of this.
#![allow(dead_code)]

pub mod packets;

use std::process::{Command, Output};

/// A network namespace, deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    /// `ip netns add <prefix>-<tag>-<pid>`.
    pub fn add(prefix: &str, tag: &str) -> Self {
        let name = format!("{prefix}-{tag}-{}", std::process::id());
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "`ip netns add {name}` failed: these tests need root and iproute2"
        );
        Netns(name)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// A command run inside, as it ended.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap()
    }

    /// A command run inside: its stdout; panics when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A host command's output, comment lines left out.
pub fn host_output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The host's iptables and nftables rules: equal before and after a test,
/// or the test wrote where it must not.
pub fn host_rules() -> String {
    format!(
        "{}\n{}\n{}",
        host_output("iptables-save", &[]),
        host_output("ip6tables-save", &[]),
        host_output("nft", &["list", "ruleset"])
    )
}
