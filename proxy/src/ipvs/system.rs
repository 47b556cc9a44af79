//! What the IPVS mode needs from the node's kernel: the features (checked at
//! start-up with an error that names what is missing) and the sysctls
//! upstream's NewProxier sets.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::desired::DEFAULT_SCHEDULER;
use super::diff::Operation;
use super::model::{ServiceKey, VirtualServer};
use super::reconcile::Ipvs;
use crate::tracker::Protocol;

/// The kernel configuration options the mode relies on, with what each is for.
pub const REQUIRED_CONFIG: [(&str, &str); 5] = [
    ("CONFIG_IP_VS", "IPVS itself"),
    (
        "CONFIG_DUMMY",
        "the dummy interface that holds service addresses",
    ),
    ("CONFIG_IP_SET", "ipsets"),
    ("CONFIG_NETFILTER_XT_SET", "iptables' set match"),
    (
        "CONFIG_NETFILTER_XT_MATCH_IPVS",
        "iptables' ipvs match (load balancers closed to the node)",
    ),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the IPVS proxy mode cannot run on this kernel: {}; use mode iptables or nftables, \
     or a kernel with IPVS (modprobe ip_vs)",
    .missing.join("; ")
)]
pub struct Unsupported {
    /// What is missing, one phrase each.
    pub missing: Vec<String>,
}

/// The required options a kernel configuration (`/proc/config.gz` or
/// `/boot/config-*` text) sets to neither `y` nor `m`.
pub fn missing_config(config: &str) -> Vec<(&'static str, &'static str)> {
    REQUIRED_CONFIG
        .into_iter()
        .filter(|(option, _)| {
            !config.lines().any(|line| {
                line.strip_prefix(option)
                    .and_then(|rest| rest.strip_prefix('='))
                    .is_some_and(|value| value == "y" || value == "m")
            })
        })
        .collect()
}

/// Whether the kernel has IPVS now (`/proc/net/ip_vs` exists once the
/// module is loaded or built in), and, when the configuration is known,
/// which required options it lacks. Upstream relies on a failing probe
/// virtual server; this says why.
pub fn check_support(ip_vs_present: bool, config: Option<&str>) -> Result<(), Unsupported> {
    let mut missing = Vec::new();
    if !ip_vs_present {
        missing.push("/proc/net/ip_vs is absent (IPVS is neither built in nor loaded)".to_string());
    }
    for (option, purpose) in config.map(missing_config).unwrap_or_default() {
        missing.push(format!("{option} is not set ({purpose})"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Unsupported { missing })
    }
}

/// [`check_support`] for this node: `/proc/net/ip_vs`, and the kernel
/// configuration from `/boot/config-<release>` or `/proc/config.gz` when
/// one can be read.
pub fn check_this_kernel() -> Result<(), Unsupported> {
    let present = Path::new("/proc/net/ip_vs").exists();
    check_support(present, read_kernel_config().as_deref())
}

fn read_kernel_config() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{}", release.trim())) {
        return Some(text);
    }
    // Compressed; zcat spares a gzip dependency for one start-up read.
    let out = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Upstream needs ipset 6.0 or later (IPv6 support); `text` is
/// `ipset --version` output such as `ipset v7.17, protocol version: 7`.
pub fn check_ipset_version(text: &str) -> Result<(), String> {
    let version = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))
        .map(|v| v.trim_end_matches(','))
        .ok_or_else(|| format!("no ipset version in {:?}", text.trim()))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(_minor))) if major >= 6 => Ok(()),
        (Some(Ok(_)), Some(Ok(_))) => Err(format!(
            "ipset version {version} is less than the minimum 6.0 the IPVS mode needs"
        )),
        _ => Err(format!("no ipset version in {:?}", text.trim())),
    }
}

/// Upstream's CanUseIPVSProxier, after the kernel check: a virtual server
/// with the configured scheduler can be made (its module loads on demand).
/// When one already uses it (a restart), nothing is probed; otherwise a
/// probe server on 198.51.100.0:20000/TCP (TEST-NET-2, documentation only,
/// as upstream) is added, seen, and deleted.
pub fn probe_scheduler(ipvs: &mut dyn Ipvs, scheduler: &str) -> Result<(), String> {
    let scheduler = if scheduler.is_empty() {
        DEFAULT_SCHEDULER
    } else {
        scheduler
    };
    let servers = ipvs
        .services()
        .map_err(|e| format!("cannot list IPVS services: {e}"))?;
    if servers.iter().any(|s| s.scheduler == scheduler) {
        return Ok(());
    }
    let probe = VirtualServer {
        key: ServiceKey {
            address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)),
            port: 20000,
            protocol: Protocol::Tcp,
        },
        scheduler: scheduler.to_string(),
        flags: 0,
        timeout: 0,
    };
    ipvs.apply(&Operation::AddService(probe.clone()))
        .map_err(|e| {
            format!(
                "IPVS scheduler {scheduler:?} cannot be used (is ip_vs_{scheduler} available?): {e}"
            )
        })?;
    let seen = ipvs
        .services()
        .map_err(|e| format!("cannot list IPVS services: {e}"))?
        .iter()
        .any(|s| s.key == probe.key);
    let deleted = ipvs.apply(&Operation::DeleteService(probe.key));
    if !seen {
        return Err(format!(
            "IPVS scheduler {scheduler:?}: the probe virtual server was accepted but not created"
        ));
    }
    deleted.map_err(|e| format!("cannot delete the IPVS probe virtual server: {e}"))
}

/// The sysctls upstream's IPVS proxier sets (path under /proc/sys, value),
/// in its order, for a kernel of this `(major, minor)` version.
pub fn required_sysctls(strict_arp: bool, kernel: (u32, u32)) -> Vec<(&'static str, u32)> {
    // Lets IPVS connections go through conntrack, which masquerading needs.
    let mut sysctls = vec![("net/ipv4/vs/conntrack", 1)];
    // conn_reuse_mode appeared in 4.1; until 5.9 its default stalled
    // reused connections for a second (https://issue.k8s.io/93297).
    if ((4, 1)..(5, 9)).contains(&kernel) {
        sysctls.push(("net/ipv4/vs/conn_reuse_mode", 0));
    }
    // Drop connections to a deleted real server at their next packet
    // (UDP and SCTP real servers are deleted without draining).
    sysctls.push(("net/ipv4/vs/expire_nodest_conn", 1));
    // Persistence templates of a weight-0 real server expire, so affinity
    // does not keep sending new connections to a draining one.
    sysctls.push(("net/ipv4/vs/expire_quiescent_template", 1));
    sysctls.push(("net/ipv4/ip_forward", 1));
    if strict_arp {
        // The dummy interface's addresses must not be answered for by ARP.
        sysctls.push(("net/ipv4/conf/all/arp_ignore", 1));
        sysctls.push(("net/ipv4/conf/all/arp_announce", 2));
    }
    sysctls
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v1272`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_without_ipvs_is_refused_naming_what_is_missing() {
        let config = "CONFIG_NETFILTER_XT_SET=y\nCONFIG_IP_SET=y\n# CONFIG_IP_VS is not set\n\
                      # CONFIG_DUMMY is not set\nCONFIG_DUMMY_CONSOLE=y\n";
        let error = check_support(false, Some(config)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the IPVS proxy mode cannot run on this kernel: /proc/net/ip_vs is absent (IPVS is \
             neither built in nor loaded); CONFIG_IP_VS is not set (IPVS itself); CONFIG_DUMMY is \
             not set (the dummy interface that holds service addresses); \
             CONFIG_NETFILTER_XT_MATCH_IPVS is not set (iptables' ipvs match (load balancers \
             closed to the node)); use mode iptables or nftables, or a kernel with IPVS (modprobe ip_vs)"
        );
        assert_eq!(
            check_support(false, None).unwrap_err().missing.len(),
            1,
            "without the configuration only the probe speaks"
        );
    }

    #[test]
    fn a_kernel_with_everything_passes() {
        let config = "CONFIG_IP_VS=m\nCONFIG_DUMMY=m\nCONFIG_IP_SET=y\n\
                      CONFIG_NETFILTER_XT_SET=m\nCONFIG_NETFILTER_XT_MATCH_IPVS=m\n";
        assert_eq!(check_support(true, Some(config)), Ok(()));
        assert_eq!(check_support(true, None), Ok(()));
        assert!(
            missing_config("CONFIG_IP_VS_RR=m\n")
                .iter()
                .any(|(o, _)| *o == "CONFIG_IP_VS")
        );
    }

    #[test]
    fn this_machines_answer_agrees_with_proc() {
        let present = Path::new("/proc/net/ip_vs").exists();
        let names_proc = match check_this_kernel() {
            Ok(()) => false,
            Err(error) => error.missing[0].contains("/proc/net/ip_vs"),
        };
        assert_eq!(names_proc, !present);
    }

    #[test]
    fn the_scheduler_is_probed_unless_already_in_use() {
        use crate::ipvs::reconcile::fake::FakeIpvs;

        let mut ipvs = FakeIpvs::default();
        assert_eq!(probe_scheduler(&mut ipvs, ""), Ok(()));
        assert!(ipvs.state.services.is_empty(), "the probe is deleted");

        ipvs.failing = vec!["\"lc\"".into()];
        let error = probe_scheduler(&mut ipvs, "lc").unwrap_err();
        assert!(error.contains("ip_vs_lc"), "{error}");

        let in_use = VirtualServer {
            key: ServiceKey {
                address: "172.30.0.41".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
            },
            scheduler: "lc".into(),
            flags: 0,
            timeout: 0,
        };
        ipvs.state.apply(&Operation::AddService(in_use));
        assert_eq!(
            probe_scheduler(&mut ipvs, "lc"),
            Ok(()),
            "already used: no probe"
        );
    }

    #[test]
    fn ipset_must_be_6_or_later() {
        assert_eq!(
            check_ipset_version("ipset v7.17, protocol version: 7\n"),
            Ok(())
        );
        assert!(
            check_ipset_version("ipset v5.4, protocol version: 5")
                .unwrap_err()
                .contains("less than the minimum 6.0")
        );
        assert!(check_ipset_version("command not found").is_err());
    }

    #[test]
    fn sysctls_follow_the_kernel_version_and_strict_arp() {
        let names = |strict, kernel| -> Vec<String> {
            required_sysctls(strict, kernel)
                .into_iter()
                .map(|(p, v)| format!("{p}={v}"))
                .collect()
        };
        assert_eq!(
            names(false, (6, 18)),
            [
                "net/ipv4/vs/conntrack=1",
                "net/ipv4/vs/expire_nodest_conn=1",
                "net/ipv4/vs/expire_quiescent_template=1",
                "net/ipv4/ip_forward=1"
            ]
        );
        assert!(names(false, (5, 4)).contains(&"net/ipv4/vs/conn_reuse_mode=0".to_string()));
        assert!(
            !names(false, (4, 0))
                .iter()
                .any(|s| s.contains("conn_reuse"))
        );
        assert!(
            !names(false, (5, 9))
                .iter()
                .any(|s| s.contains("conn_reuse"))
        );
        let strict = names(true, (6, 1));
        assert_eq!(
            strict[strict.len() - 2..],
            [
                "net/ipv4/conf/all/arp_ignore=1",
                "net/ipv4/conf/all/arp_announce=2"
            ]
        );
        assert_eq!(kernel_version("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("x"), None);
    }
}
