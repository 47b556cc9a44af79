//! Processes the lab starts and stops by PID. Each runs in its own process group
//! with its output in a log file, so it outlives `understudy-lab up` and a later
//! `down` (another process) can stop it and everything it spawned.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("opening log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What is remembered of a started process: enough to find it again and to be
/// sure a PID was not reused by something else before signalling it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: String,
    pub pid: i32,
    /// Start time in clock ticks since boot (/proc/<pid>/stat field 22).
    pub start_ticks: u64,
    pub log: PathBuf,
    pub args: Vec<String>,
}

/// Starts `program` detached in a new process group, logging to `log`.
pub fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<ProcessRecord, ProcessError> {
    let log_err = |source| ProcessError::Log {
        path: log.into(),
        source,
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            name: name.into(),
            program: program.into(),
            source,
        })?;
    let pid = child.id() as i32;
    // The Child handle is dropped on purpose: the process must outlive us. Whoever
    // ends up its parent (init, or a subreaper) reaps it.
    drop(child);
    Ok(ProcessRecord {
        name: name.into(),
        pid,
        start_ticks: start_ticks(pid).unwrap_or_default(),
        log: log.into(),
        args: args.to_vec(),
    })
}

/// Field 22 of /proc/<pid>/stat, and whether the process is a zombie.
fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((ticks, state == "Z" || state == "X"))
}

/// Whether a process whose main thread is a zombie still has other threads
/// running: the leader of a multi-threaded process (Go's runtime) can exit
/// first, and the process keeps its files — listening sockets included —
/// until the last thread is gone, so it is not dead yet.
fn threads_still_exiting(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let rest = stat.get(stat.rfind(')')? + 2..)?;
                rest.split_whitespace()
                    .next()
                    .map(|state| state != "Z" && state != "X")
            })
            .unwrap_or(false)
    })
}

fn start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(ticks, _)| ticks)
}

impl ProcessRecord {
    /// Alive and still the same process we started.
    pub fn is_alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((ticks, zombie)) => {
                (!zombie || threads_still_exiting(self.pid))
                    && (self.start_ticks == 0 || ticks == self.start_ticks)
            }
            None => false,
        }
    }

    /// SIGTERM to the process group, then SIGKILL after `grace`. Returns whether it
    /// had to be killed.
    pub fn stop(&self, grace: Duration) -> bool {
        if !self.is_alive() {
            return false;
        }
        let group = Pid::from_raw(self.pid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_alive() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// The last `lines` lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log, lines)
    }
}

/// The last `lines` lines of a log file ("" if it cannot be read).
pub fn file_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The live processes whose parent is `parent`, from /proc.
pub fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // Fields after the command name, which may hold spaces and ')'.
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// Whether a PID names a live (non-zombie) process.
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((_, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_detached_and_stops_by_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let record = spawn(
            "sleeper",
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; exec sleep 600".into()],
            &log,
        )
        .unwrap();
        assert!(record.is_alive());
        assert!(record.start_ticks > 0);
        let killed = record.stop(Duration::from_secs(5));
        assert!(!killed, "sleep exits on SIGTERM");
        assert!(!record.is_alive());
    }

    #[test]
    fn a_reused_pid_is_not_ours() {
        let me = std::process::id() as i32;
        let record = ProcessRecord {
            name: "me".into(),
            pid: me,
            start_ticks: start_ticks(me).unwrap() + 1,
            log: PathBuf::new(),
            args: vec![],
        };
        assert!(!record.is_alive());
        assert!(
            !record.stop(Duration::from_millis(10)),
            "never signals a stranger"
        );
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = spawn(
            "etcd",
            Path::new("/nonexistent/etcd"),
            &[],
            &dir.path().join("l"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("etcd") && err.contains("/nonexistent/etcd"),
            "{err}"
        );
    }
}
