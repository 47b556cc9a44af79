//! kube-proxy's conntrack settings (upstream's pkg/proxy/conntrack
//! sysctls.go, run once at start-up before any rule is written): the table
//! size scaled by the node's CPUs, the hash table large enough for it, the
//! TCP and UDP timeouts and TCP liberal mode of the configuration. A setting
//! that cannot be written stops the start, as upstream's.

use std::time::Duration;

use crate::config::ConntrackConfig;

pub const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
pub const HASHSIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";
pub const TCP_ESTABLISHED: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";
pub const TCP_CLOSE_WAIT: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait";
pub const TCP_BE_LIBERAL: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal";
pub const UDP: &str = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout";
pub const UDP_STREAM: &str = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream";

/// Upstream caps the scaled table size so many-core machines do not spend
/// their memory on it.
const MAX_LIMIT: u64 = 1_048_576;

/// Where the settings are read and written (the real files, or a fake).
pub trait Knobs {
    fn read(&self, path: &str) -> Option<i64>;
    fn write(&mut self, path: &str, value: i64) -> std::io::Result<()>;
}

/// The files under /proc and /sys.
pub struct SystemKnobs;

impl Knobs for SystemKnobs {
    fn read(&self, path: &str) -> Option<i64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
    fn write(&mut self, path: &str, value: i64) -> std::io::Result<()> {
        std::fs::write(path, value.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not set conntrack parameters from kube-proxy configuration: {0}")]
pub struct SysctlError(String);

/// nf_conntrack_max for `cpus` CPUs: 0 leaves it alone.
pub fn conntrack_max(config: &ConntrackConfig, cpus: usize) -> u64 {
    if config.max_per_core == 0 {
        return 0;
    }
    let scaled = u64::from(config.max_per_core) * cpus as u64;
    if scaled > MAX_LIMIT {
        MAX_LIMIT
    } else {
        scaled.max(u64::from(config.min))
    }
}

/// Applies `config`; returns what was written, in order.
pub fn apply<K: Knobs>(
    config: &ConntrackConfig,
    cpus: usize,
    knobs: &mut K,
) -> Result<Vec<(&'static str, i64)>, SysctlError> {
    let mut written = Vec::new();
    let mut set = |knobs: &mut K, path: &'static str, value: i64| {
        if knobs.read(path) != Some(value) {
            knobs
                .write(path, value)
                .map_err(|e| SysctlError(format!("writing {value} to {path}: {e}")))?;
            tracing::info!(entry = path, value, "Set sysctl");
            written.push((path, value));
        }
        Ok::<_, SysctlError>(())
    };
    let max = conntrack_max(config, cpus) as i64;
    if max > 0 {
        // Only raised, never lowered.
        if knobs.read(MAX).is_none_or(|current| current < max) {
            set(knobs, MAX, max)?;
        }
        let hashsize = knobs
            .read(HASHSIZE)
            .ok_or_else(|| SysctlError(format!("reading {HASHSIZE}")))?;
        if hashsize < max / 4 {
            set(knobs, HASHSIZE, max / 4)?;
        }
    }
    for (path, timeout) in [
        (TCP_ESTABLISHED, config.tcp_established_timeout),
        (TCP_CLOSE_WAIT, config.tcp_close_wait_timeout),
    ] {
        if timeout > Duration::ZERO {
            set(knobs, path, timeout.as_secs() as i64)?;
        }
    }
    if config.tcp_be_liberal {
        set(knobs, TCP_BE_LIBERAL, 1)?;
    }
    for (path, timeout) in [
        (UDP, config.udp_timeout),
        (UDP_STREAM, config.udp_stream_timeout),
    ] {
        if timeout > Duration::ZERO {
            set(knobs, path, timeout.as_secs() as i64)?;
        }
    }
    Ok(written)
}

/// The node's online CPUs (nf_conntrack_max is the whole node's, so not the
/// process's cpuset), from sysfs; else what the process may use.
pub fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| count_cpu_list(list.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// "0-3,8,10-11" → 7.
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.split(',') {
        count += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Fake {
        values: BTreeMap<String, i64>,
        read_only: Vec<&'static str>,
    }

    impl Knobs for Fake {
        fn read(&self, path: &str) -> Option<i64> {
            self.values.get(path).copied()
        }
        fn write(&mut self, path: &str, value: i64) -> std::io::Result<()> {
            if self.read_only.contains(&path) {
                return Err(std::io::Error::from_raw_os_error(30));
            }
            self.values.insert(path.to_string(), value);
            Ok(())
        }
    }

    fn defaults() -> ConntrackConfig {
        crate::config::KubeProxyConfiguration::default().conntrack
    }

    fn fake(max: i64, hashsize: i64) -> Fake {
        let mut fake = Fake::default();
        fake.values.insert(MAX.into(), max);
        fake.values.insert(HASHSIZE.into(), hashsize);
        fake.values.insert(TCP_ESTABLISHED.into(), 432000);
        fake.values.insert(TCP_CLOSE_WAIT.into(), 60);
        fake
    }

    #[test]
    fn the_table_size_scales_with_cpus_between_min_and_the_cap() {
        let config = defaults();
        assert_eq!(conntrack_max(&config, 2), 131072, "the min wins");
        assert_eq!(conntrack_max(&config, 8), 262144);
        assert_eq!(conntrack_max(&config, 64), MAX_LIMIT);
        let off = ConntrackConfig {
            max_per_core: 0,
            ..config
        };
        assert_eq!(conntrack_max(&off, 8), 0);
    }

    #[test]
    fn defaults_raise_the_table_and_hash_and_set_upstreams_tcp_timeouts() {
        let mut knobs = fake(65536, 4096);
        let written = apply(&defaults(), 8, &mut knobs).unwrap();
        assert_eq!(
            written,
            [
                (MAX, 262144),
                (HASHSIZE, 65536),
                (TCP_ESTABLISHED, 86400),
                (TCP_CLOSE_WAIT, 3600),
            ]
        );
        // Applied again: nothing to do.
        assert_eq!(apply(&defaults(), 8, &mut knobs).unwrap(), []);
    }

    #[test]
    fn a_larger_table_is_never_lowered_and_zero_leaves_settings_alone() {
        let mut knobs = fake(1_000_000, 1_000_000);
        let written = apply(&defaults(), 8, &mut knobs).unwrap();
        assert_eq!(written, [(TCP_ESTABLISHED, 86400), (TCP_CLOSE_WAIT, 3600)]);
        let untouched = ConntrackConfig {
            max_per_core: 0,
            tcp_established_timeout: Duration::ZERO,
            tcp_close_wait_timeout: Duration::ZERO,
            ..defaults()
        };
        let mut knobs = fake(10, 10);
        assert_eq!(apply(&untouched, 8, &mut knobs).unwrap(), []);
    }

    #[test]
    fn udp_timeouts_and_liberal_mode_when_asked() {
        let config = ConntrackConfig {
            max_per_core: 0,
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_secs(120),
            tcp_be_liberal: true,
            ..defaults()
        };
        let mut knobs = fake(0, 0);
        let written = apply(&config, 2, &mut knobs).unwrap();
        assert_eq!(
            written,
            [
                (TCP_ESTABLISHED, 86400),
                (TCP_CLOSE_WAIT, 3600),
                (TCP_BE_LIBERAL, 1),
                (UDP, 30),
                (UDP_STREAM, 120),
            ]
        );
    }

    #[test]
    fn a_read_only_setting_stops_the_start_naming_it() {
        // A network namespace: nf_conntrack_max is the host's.
        let mut knobs = fake(65536, 65536);
        knobs.read_only.push(MAX);
        let err = apply(&defaults(), 8, &mut knobs).unwrap_err().to_string();
        assert!(
            err.starts_with("could not set conntrack parameters from kube-proxy configuration: writing 262144 to /proc/sys/net/netfilter/nf_conntrack_max"),
            "{err}"
        );
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }
}
