//! Taking real nodes apart so nothing is left: the pods' processes (found by
//! the node's cgroup branch: a container outlives its shim and containerd),
//! the shims, the node's mount namespace with every mount in it, the network
//! namespaces and links, the cgroup branches, the node directories. Every step
//! tolerates what is already gone, so it also cleans a start that failed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::RealNodes;
use super::network;
use super::plan::LabNetwork;

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// The cgroup v1 hierarchies of this machine (cgroup v2's `unified` is empty
/// here and the kubelet does not use it on a v1 host).
fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir(CGROUP_FS)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists() && !p.ends_with("unified"))
                .collect()
        })
        .unwrap_or_default()
}

/// Makes the node's cgroup parent in every hierarchy (the kubelet requires it
/// to exist); cpuset's must be given the machine's CPUs and memory nodes, or
/// nothing can join it.
pub(super) fn create_cgroup_root(root: &str) -> Result<(), super::RealNodeError> {
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)
            .map_err(|e| super::RealNodeError::Io(format!("creating {}: {e}", dir.display())))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(hierarchy.join(file)) {
                std::fs::write(dir.join(file), value.trim()).map_err(|e| {
                    super::RealNodeError::Io(format!("writing {}: {e}", dir.join(file).display()))
                })?;
            }
        }
    }
    Ok(())
}

fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|h| h.join(root.trim_start_matches('/')))
        .filter(|d| d.exists())
        .collect()
}

/// Every process in a cgroup branch, in any hierarchy.
fn processes_in(root: &str) -> Vec<i32> {
    let mut pids = vec![];
    for dir in cgroup_dirs(root) {
        walk(&dir, &mut |d| {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        });
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Depth-first, children before their parent.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(|e| e.ok()) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), visit);
            }
        }
    }
    visit(dir);
}

/// Processes whose command line names `needle` (the node's directory: its
/// containerd, kubelet, shims and relay all do).
fn processes_naming(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

fn kill_until_gone(what: &dyn Fn() -> Vec<i32>, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = what();
        if pids.is_empty() || Instant::now() >= deadline {
            return pids;
        }
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points at or under `dir` in the host's mount table, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(String::from)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    mounts
}

/// Removes everything of the real nodes; returns what could not be removed.
pub fn teardown(nodes: &RealNodes) -> Vec<String> {
    let net = &nodes.network;
    let plans = nodes.nodes();
    let mut problems = vec![];
    let slot_dir = format!("{}/", net.dir().display());
    let netns_prefix = format!("/run/netns/{}n", net.netns());
    let ours = || {
        let mut pids = processes_naming(&slot_dir);
        pids.extend(processes_naming(&netns_prefix));
        pids
    };
    // containerd, kubelets, shims and relays still running (the lab stops its
    // own processes first; this catches the ones it lost track of).
    let left = kill_until_gone(&ours, Duration::from_secs(10));
    if !left.is_empty() {
        problems.push(format!("processes of {slot_dir} did not exit: {left:?}"));
    }
    for node in &plans {
        let root = node.cgroup_root();
        let left = kill_until_gone(&|| processes_in(&root), Duration::from_secs(10));
        if !left.is_empty() {
            problems.push(format!("processes in cgroup {root} did not exit: {left:?}"));
        }
    }
    for mount in mounts_under(&net.dir()) {
        if let Err(e) = network::run("umount", &["--lazy", &mount]) {
            problems.push(e.to_string());
        }
    }
    problems.extend(network::delete(net, &plans));
    release_netns_dir();
    for node in &plans {
        for dir in cgroup_dirs(&node.cgroup_root()) {
            walk(&dir, &mut |d| {
                if let Err(e) = std::fs::remove_dir(d) {
                    problems.push(format!("removing cgroup {}: {e}", d.display()));
                }
            });
        }
    }
    if net.dir().exists()
        && let Err(e) = std::fs::remove_dir_all(net.dir())
    {
        problems.push(format!("removing {}: {e}", net.dir().display()));
    }
    problems
}

/// `ip netns add` makes /run/netns a shared bind mount of itself on first
/// use; once the last namespace there is gone, the machine gets its
/// /run/netns back as it was. (A lab starting at this very moment still
/// works: its namespace is mounted on the plain directory instead.)
fn release_netns_dir() {
    let dir = Path::new("/run/netns");
    let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if empty && !mounts_under(dir).is_empty() {
        let _ = network::run("umount", &["/run/netns"]);
    }
}

/// What of the lab's real nodes is still on the machine: processes, mounts,
/// namespaces, links, cgroups, files. Empty after a clean `down`.
pub fn leftovers(net: &LabNetwork, count: usize) -> Vec<String> {
    let mut found = vec![];
    let slot_dir = format!("{}/", net.dir().display());
    let netns_prefix = format!("/run/netns/{}n", net.netns());
    let mut pids = processes_naming(&slot_dir);
    pids.extend(processes_naming(&netns_prefix));
    for pid in pids {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        found.push(format!("process {pid}: {cmd}"));
    }
    for mount in mounts_under(&net.dir()) {
        found.push(format!("mount {mount}"));
    }
    let netns = network::list_netns();
    let plans: Vec<_> = (0..count).map(|i| net.node(i)).collect();
    for ns in plans.iter().map(|n| n.netns()).chain([net.netns()]) {
        if netns.contains(&ns) {
            found.push(format!("network namespace {ns}"));
        }
    }
    if network::link_exists(&net.host_link()) {
        found.push(format!("link {}", net.host_link()));
    }
    for node in &plans {
        for pid in processes_in(&node.cgroup_root()) {
            found.push(format!("process {pid} in cgroup {}", node.cgroup_root()));
        }
        for dir in cgroup_dirs(&node.cgroup_root()) {
            found.push(format!("cgroup {}", dir.display()));
        }
    }
    if net.dir().exists() {
        found.push(format!("directory {}", net.dir().display()));
    }
    found
}
