//! CPU time and peak memory of a process, read from /proc.

/// Resource use of a process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcUsage {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// User + system CPU seconds of its children that it waited for (a
    /// proxy's iptables-restore and iptables-save runs).
    pub children_cpu_seconds: f64,
}

pub fn usage(pid: i32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse(&stat, &status, clock_ticks())
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

fn parse(stat: &str, status: &str, ticks: f64) -> Option<ProcUsage> {
    // Fields after the parenthesised command name: state is field 3, utime 14,
    // stime 15, cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let cutime: f64 = fields.get(13)?.parse().ok()?;
    let cstime: f64 = fields.get(14)?.parse().ok()?;
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(ProcUsage {
        cpu_seconds: (utime + stime) / ticks,
        peak_rss_bytes: hwm_kb * 1024,
        children_cpu_seconds: (cutime + cstime) / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (kube sched) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 70 30 20 0 12 0 100 1000 2000";
        let status = "Name:\tkube-scheduler\nVmHWM:\t  204800 kB\nVmRSS:\t 1000 kB\n";
        let u = parse(stat, status, 100.0).unwrap();
        assert_eq!(u.cpu_seconds, 3.0);
        assert_eq!(u.children_cpu_seconds, 1.0);
        assert_eq!(u.peak_rss_bytes, 204800 * 1024);
    }

    #[test]
    fn reads_this_process() {
        let u = usage(std::process::id() as i32).unwrap();
        assert!(u.peak_rss_bytes > 0);
    }
}
