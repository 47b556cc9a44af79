//! Flags every component shares, named as on the upstream components so an
//! operator's muscle memory (and manifests) carry over.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::client::ClientOptions;
use crate::leader::{LeaderElectionConfig, default_identity};
use crate::logging::LogFormat;

#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Path to a kubeconfig. Without it: $KUBECONFIG, then in-cluster config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Sustained requests per second to the apiserver (0 disables limiting).
    #[arg(long, default_value_t = 50.0)]
    pub kube_api_qps: f32,

    /// Requests allowed in a burst above --kube-api-qps.
    #[arg(long, default_value_t = 100)]
    pub kube_api_burst: u32,

    /// Address for the /metrics, /healthz, /livez and /readyz server.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Port of that server (0 picks a free one); defaults to the component's port.
    #[arg(long)]
    pub port: Option<u16>,

    /// Log line format (`--logging-format` as upstream also works).
    #[arg(long, alias = "logging-format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing directives, e.g. `info` or `info,kube=warn`); RUST_LOG overrides.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Upstream's klog verbosity, mapped onto --log-level: 0-2 info (klog's
    /// steady-state level), 3-4 our debug lines, 5-6 everything's debug and
    /// our trace, 7+ trace.
    #[arg(short = 'v', long = "v")]
    pub verbosity: Option<u8>,

    /// Take a Lease before doing any work, so only one replica acts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// How long a lease is valid after its last renewal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub leader_elect_lease_duration: Duration,

    /// How long the leader keeps retrying renewal before giving the lease up.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub leader_elect_renew_deadline: Duration,

    /// Wait between attempts to acquire or renew.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub leader_elect_retry_period: Duration,

    /// Lease name; defaults to the binary's name.
    #[arg(long)]
    pub leader_elect_resource_name: Option<String>,

    /// Lease namespace; defaults to $POD_NAMESPACE, then kube-system.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,

    /// Identity recorded in the lease; defaults to hostname_random.
    #[arg(long)]
    pub leader_elect_identity: Option<String>,
}

impl CommonArgs {
    /// The log filter in force: `--v` when given, else `--log-level`.
    pub fn log_filter(&self) -> String {
        // Targets match by prefix: `understudy` is every crate of ours, and
        // the HTTP/2 and TLS crates stay quiet until asked for.
        match self.verbosity {
            Some(0..=2) => "info".into(),
            Some(3..=4) => "info,understudy=debug".into(),
            Some(5..=6) => "debug,understudy=trace".into(),
            Some(_) => "trace".into(),
            None => self.log_level.clone(),
        }
    }

    pub fn client_options(&self, component: &str) -> ClientOptions {
        ClientOptions {
            kubeconfig: self.kubeconfig.clone(),
            qps: self.kube_api_qps,
            burst: self.kube_api_burst,
            user_agent: format!("{component}/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn leader_election(&self, component: &str) -> LeaderElectionConfig {
        LeaderElectionConfig {
            namespace: self.leader_elect_resource_namespace.clone(),
            name: self
                .leader_elect_resource_name
                .clone()
                .unwrap_or_else(|| component.to_string()),
            identity: self
                .leader_elect_identity
                .clone()
                .unwrap_or_else(default_identity),
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults_match_upstream() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let election = cli.common.leader_election("understudy-scheduler");
        assert_eq!(election.name, "understudy-scheduler");
        assert_eq!(election.lease_duration, Duration::from_secs(15));
        assert_eq!(election.renew_deadline, Duration::from_secs(10));
        assert_eq!(election.retry_period, Duration::from_secs(2));
        assert!(cli.common.leader_elect);
    }

    #[test]
    fn parses_go_style_durations_and_bools() {
        let cli = Cli::try_parse_from([
            "x",
            "--leader-elect=false",
            "--leader-elect-lease-duration=4s",
            "--leader-elect-retry-period=500ms",
            "--leader-elect-resource-name=mine",
        ])
        .unwrap();
        assert!(!cli.common.leader_elect);
        let election = cli.common.leader_election("c");
        assert_eq!(election.lease_duration, Duration::from_secs(4));
        assert_eq!(election.retry_period, Duration::from_millis(500));
        assert_eq!(election.name, "mine");
    }

    #[test]
    fn upstream_logging_flags_are_accepted() {
        let cli = Cli::try_parse_from(["x", "--logging-format=json", "--v=4"]).unwrap();
        assert_eq!(cli.common.log_format, LogFormat::Json);
        assert_eq!(cli.common.log_filter(), "info,understudy=debug");
        let cli = Cli::try_parse_from(["x", "--v=2"]).unwrap();
        assert_eq!(cli.common.log_filter(), "info");
        let cli = Cli::try_parse_from(["x", "--log-level=warn"]).unwrap();
        assert_eq!(cli.common.log_filter(), "warn");
    }

    #[test]
    fn rejects_bad_values_by_name() {
        let err = Cli::try_parse_from(["x", "--leader-elect-lease-duration=soon"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--leader-elect-lease-duration"), "{err}");
    }
}
