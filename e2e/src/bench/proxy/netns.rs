//! A network namespace of the bench's own for each proxy: everything a proxy
//! writes into netfilter stays there and goes with the namespace.
//!
//! Nothing is linked to the host: the proxy reaches the lab's loopback-only
//! apiserver through a relay the bench runs (a listener made inside the
//! namespace, forwarding to the host's loopback: `realnode::forward`), and the
//! bench reads the proxy's /metrics through the reverse relay. Inside, a link
//! carries the route to the Service range (so a connect to a ClusterIP leaves
//! through the proxy's rules), and the endpoints' ranges are routed as local,
//! so one listener answers every endpoint. The link is a veth pair with both
//! ends inside: kernels without the dummy module (this machine's) have veth,
//! which the real nodes need anyway.

use std::path::PathBuf;
use std::process::Command;

use super::objects::ENDPOINT_RANGE;

/// The source address of probes from inside the namespace.
const PROBE_ADDRESS: &str = "10.255.255.1/32";

/// A namespace that is deleted when dropped (its rules with it).
pub struct BenchNetns {
    name: String,
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program).args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl BenchNetns {
    /// Creates `name` (after deleting a leftover of an interrupted run)
    /// with routes for `service_cidr` and the endpoints.
    pub fn create(name: &str, service_cidr: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(name.starts_with("us-"), "bench namespaces are named us-…");
        if std::path::Path::new("/run/netns").join(name).exists() {
            ip(&["netns", "del", name])?;
        }
        ip(&["netns", "add", name])?;
        let ns = Self { name: name.into() };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", name, "link", "add", "bench0", "type", "veth", "peer", "name", "bench1",
        ])?;
        ip(&["-n", name, "addr", "add", PROBE_ADDRESS, "dev", "bench0"])?;
        ip(&["-n", name, "link", "set", "bench0", "up"])?;
        ip(&["-n", name, "link", "set", "bench1", "up"])?;
        ip(&["-n", name, "route", "add", service_cidr, "dev", "bench0"])?;
        ip(&[
            "-n",
            name,
            "route",
            "add",
            "local",
            ENDPOINT_RANGE,
            "dev",
            "lo",
        ])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `program args` run inside the namespace; its standard output.
    pub fn output(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The arguments of `ip` that run `program` inside the namespace.
    pub fn exec_args(&self, program: &std::path::Path, args: Vec<String>) -> Vec<String> {
        let mut all = vec![
            "netns".into(),
            "exec".into(),
            self.name.clone(),
            program.display().to_string(),
        ];
        all.extend(args);
        all
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("bench: deleting netns {}: {e}", self.name);
        }
    }
}
