//! What a running lab cluster is, persisted as `state.json` in its state
//! directory so `down` and `status` (separate processes) can find it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::process::ProcessRecord;
use crate::understudies::Understudy;

pub const STATE_FILE: &str = "state.json";

/// How to tell whether a process is healthy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Probe {
    pub process: String,
    pub url: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub state_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub toolchain_dir: PathBuf,
    pub nodes: usize,
    pub replaced: Vec<Understudy>,
    pub running_understudies: Vec<Understudy>,
    pub ports: BTreeMap<String, u16>,
    pub processes: Vec<ProcessRecord>,
    pub probes: Vec<Probe>,
    /// The real nodes' network slot and count, once allocated.
    #[serde(default)]
    pub real_nodes: Option<crate::realnode::RealNodes>,
    /// How the understudies run (processes, or the chart's pods).
    #[serde(default)]
    pub backend: crate::chart::Backend,
    /// The proxies' mode (the chart's understudy-proxy or kube-proxy).
    #[serde(default)]
    pub proxy_mode: crate::chart::ProxyMode,
    /// Set once `up` finished; a state without it is a start that was interrupted.
    pub ready: bool,
}

impl ClusterState {
    /// Where the lab's processes (and the apiserver's audit log) write.
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    pub fn load(state_dir: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read_to_string(Self::path(state_dir)) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                std::io::Error::other(format!("{}: {e}", Self::path(state_dir).display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Written atomically so a concurrent `status` never reads half a file.
    pub fn save(&self) -> std::io::Result<()> {
        let path = Self::path(&self.state_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    pub fn process(&self, name: &str) -> Option<&ProcessRecord> {
        self.processes.iter().find(|p| p.name == name)
    }

    pub fn dead_processes(&self) -> Vec<&str> {
        self.processes
            .iter()
            .filter(|p| !p.is_alive())
            .map(|p| p.name.as_str())
            .collect()
    }
}

/// Default state directory of a named cluster: `$XDG_STATE_HOME/understudy/<name>`.
pub fn default_state_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("understudy").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ClusterState::load(dir.path()).unwrap().is_none());
        let state = ClusterState {
            name: "lab".into(),
            state_dir: dir.path().into(),
            nodes: 3,
            replaced: vec![Understudy::Controllers],
            ports: BTreeMap::from([("apiserver".into(), 6443)]),
            ..Default::default()
        };
        state.save().unwrap();
        let loaded = ClusterState::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.name, "lab");
        assert_eq!(loaded.ports["apiserver"], 6443);
        assert_eq!(loaded.replaced, vec![Understudy::Controllers]);
    }
}
