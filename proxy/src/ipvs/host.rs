//! [`Host`] through the node's tools: `ip` for the dummy interface, `ipset`
//! for the sets, `iptables-restore` for the rules. Upstream drives the
//! interface through netlink and runs one `ipset` per entry; these tools are
//! in the proxy's image already (iptables mode runs them) and one `ipset
//! restore` per sync replaces thousands of processes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::desired::DUMMY_INTERFACE;
use super::ipsets::{ALL_SETS, Set, SetEntries};
use super::reconcile::{BoxError, Host};
use crate::exec::{Exec, Output};
use crate::tracker::IpFamily;

pub struct ToolHost<E: Exec> {
    exec: E,
}

impl<E: Exec> ToolHost<E> {
    pub fn new(exec: E) -> Self {
        ToolHost { exec }
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, BoxError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Ok(self.exec.run(program, &args, stdin)?)
    }

    fn check(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, BoxError> {
        let out = self.run(program, args, stdin)?;
        if out.success() {
            Ok(out)
        } else {
            Err(failed(program, args, &out).into())
        }
    }

    /// Creates the dummy interface (up, so its addresses are local).
    fn ensure_interface(&self) -> Result<(), BoxError> {
        let out = self.run(
            "ip",
            &["link", "add", DUMMY_INTERFACE, "type", "dummy"],
            None,
        )?;
        if !out.success() && !out.stderr.contains("File exists") {
            return Err(format!(
                "cannot create the dummy interface {DUMMY_INTERFACE} (does the kernel have \
                 CONFIG_DUMMY?): {}",
                out.stderr.trim()
            )
            .into());
        }
        self.check("ip", &["link", "set", DUMMY_INTERFACE, "up"], None)?;
        Ok(())
    }
}

fn failed(program: &str, args: &[&str], out: &Output) -> String {
    format!(
        "`{program} {}` exited with {:?}: {}",
        args.join(" "),
        out.code,
        out.stderr.trim()
    )
}

fn prefix(address: IpAddr) -> String {
    match address {
        IpAddr::V4(_) => format!("{address}/32"),
        IpAddr::V6(_) => format!("{address}/128"),
    }
}

/// The addresses in `ip -o addr show` output.
pub fn parse_addresses(text: &str) -> BTreeSet<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The addresses in `ip -o addr show` output on interfaces other than
/// `except`, less loopback and IPv6 link-local ones.
pub fn parse_local_addresses(text: &str, except: &str) -> BTreeSet<IpAddr> {
    text.lines()
        .filter(|line| line.split_whitespace().nth(1) != Some(except))
        .flat_map(parse_addresses)
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback(),
            IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
        })
        .collect()
}

/// Our sets' entries in `ipset save` output.
pub fn parse_set_entries(text: &str, family: IpFamily) -> SetEntries {
    let mut entries = SetEntries::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some("add"), Some(name), Some(entry)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if let Some(set) = ALL_SETS.into_iter().find(|s| s.name(family) == name) {
            entries.entry(set).or_default().insert(entry.to_string());
        }
    }
    entries
}

impl<E: Exec> Host for ToolHost<E> {
    fn dummy_addresses(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, BoxError> {
        self.ensure_interface()?;
        let flag = match family {
            IpFamily::V4 => "-4",
            IpFamily::V6 => "-6",
        };
        let out = self.check(
            "ip",
            &["-o", flag, "addr", "show", "dev", DUMMY_INTERFACE],
            None,
        )?;
        Ok(parse_addresses(&out.stdout))
    }

    fn local_addresses(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, BoxError> {
        let flag = match family {
            IpFamily::V4 => "-4",
            IpFamily::V6 => "-6",
        };
        let out = self.check("ip", &["-o", flag, "addr", "show"], None)?;
        Ok(parse_local_addresses(&out.stdout, DUMMY_INTERFACE))
    }

    fn add_address(&mut self, address: IpAddr) -> Result<(), BoxError> {
        let address = prefix(address);
        let args = ["addr", "add", &address, "dev", DUMMY_INTERFACE];
        let out = self.run("ip", &args, None)?;
        if out.success() || out.stderr.contains("File exists") {
            Ok(())
        } else {
            Err(failed("ip", &args, &out).into())
        }
    }

    fn remove_address(&mut self, address: IpAddr) -> Result<(), BoxError> {
        let address = prefix(address);
        let args = ["addr", "del", &address, "dev", DUMMY_INTERFACE];
        let out = self.run("ip", &args, None)?;
        if out.success() || out.stderr.contains("Cannot assign requested address") {
            Ok(())
        } else {
            Err(failed("ip", &args, &out).into())
        }
    }

    fn delete_interface(&mut self) -> Result<(), BoxError> {
        let args = ["link", "del", DUMMY_INTERFACE];
        let out = self.run("ip", &args, None)?;
        if out.success() || out.stderr.contains("Cannot find device") {
            Ok(())
        } else {
            Err(failed("ip", &args, &out).into())
        }
    }

    fn destroy_set(&mut self, set: Set, family: IpFamily) -> Result<(), BoxError> {
        let name = set.name(family);
        let args = ["destroy", name.as_str()];
        let out = self.run("ipset", &args, None)?;
        if out.success() || out.stderr.contains("does not exist") {
            Ok(())
        } else {
            Err(failed("ipset", &args, &out).into())
        }
    }

    fn set_entries(&mut self, family: IpFamily) -> Result<SetEntries, BoxError> {
        let out = self.check("ipset", &["save"], None)?;
        Ok(parse_set_entries(&out.stdout, family))
    }

    fn restore_sets(&mut self, text: &str) -> Result<(), BoxError> {
        self.check("ipset", &["-exist", "restore"], Some(text))?;
        Ok(())
    }

    fn restore_rules(&mut self, family: IpFamily, text: &str) -> Result<(), BoxError> {
        let program = match family {
            IpFamily::V4 => "iptables-restore",
            IpFamily::V6 => "ip6tables-restore",
        };
        self.check(program, &["--noflush", "--counters"], Some(text))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::FakeExec;

    #[test]
    fn addresses_and_entries_are_read_from_the_tools() {
        let ip = "5: understudy-ipvs0    inet 172.30.0.41/32 scope global understudy-ipvs0\\       valid_lft forever preferred_lft forever\n\
                  5: understudy-ipvs0    inet 172.30.0.42/32 scope global understudy-ipvs0\\       valid_lft forever\n";
        assert_eq!(
            parse_addresses(ip),
            BTreeSet::from([
                "172.30.0.41".parse().unwrap(),
                "172.30.0.42".parse().unwrap()
            ])
        );
        let save = "create US-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1\n\
                    add US-CLUSTER-IP 172.30.0.41,tcp:80\n\
                    add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n\
                    add US-NODE-PORT-TCP 30080\n";
        let entries = parse_set_entries(save, IpFamily::V4);
        assert_eq!(entries.len(), 2, "kube-proxy's sets are not ours");
        assert!(entries[&Set::ClusterIp].contains("172.30.0.41,tcp:80"));
        assert!(entries[&Set::NodePortTcp].contains("30080"));
        assert!(parse_set_entries(save, IpFamily::V6).is_empty());
        let all = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   2: eth0    inet 192.168.0.2/24 brd 192.168.0.255 scope global eth0\\ x\n\
                   2: eth0    inet6 fe80::1/64 scope link\\ x\n\
                   2: eth0    inet6 fd00::2/64 scope global\\ x\n\
                   5: understudy-ipvs0    inet 172.30.0.41/32 scope global understudy-ipvs0\\ x\n";
        assert_eq!(
            parse_local_addresses(all, DUMMY_INTERFACE),
            BTreeSet::from(["192.168.0.2".parse().unwrap(), "fd00::2".parse().unwrap()])
        );
    }

    #[test]
    fn commands_are_the_expected_ones() {
        let exec = FakeExec::default();
        exec.answer("ip addr add", 2, "");
        let mut host = ToolHost::new(&exec);
        host.dummy_addresses(IpFamily::V4).unwrap();
        assert!(host.add_address("172.30.0.41".parse().unwrap()).is_err());
        host.remove_address("fd00::1".parse().unwrap()).unwrap();
        host.restore_sets("create X hash:ip\n").unwrap();
        host.restore_rules(IpFamily::V6, "*nat\nCOMMIT\n").unwrap();
        let calls = exec.take_calls();
        let lines: Vec<&str> = calls.iter().map(|c| c.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "ip link add understudy-ipvs0 type dummy",
                "ip link set understudy-ipvs0 up",
                "ip -o -4 addr show dev understudy-ipvs0",
                "ip addr add 172.30.0.41/32 dev understudy-ipvs0",
                "ip addr del fd00::1/128 dev understudy-ipvs0",
                "ipset -exist restore",
                "ip6tables-restore --noflush --counters",
            ]
        );
        assert_eq!(calls[5].stdin.as_deref(), Some("create X hash:ip\n"));
    }

    #[test]
    fn a_kernel_without_dummy_interfaces_is_named() {
        let exec = FakeExec::default();
        exec.answer("ip link add", 2, "");
        let mut host = ToolHost::new(&exec);
        let error = host.dummy_addresses(IpFamily::V4).unwrap_err().to_string();
        assert!(error.contains("CONFIG_DUMMY"), "{error}");
    }
}
