//! Where the Go-built upstream binaries live, and a clear error when they don't.

use std::path::{Path, PathBuf};

/// The binaries `understudy-lab up` needs.
pub const REQUIRED: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error(
        "the control-plane toolchain is missing {missing} in {dir}: run `make toolchain` (or set UNDERSTUDY_TOOLCHAIN_DIR)"
    )]
    Missing { dir: PathBuf, missing: String },
    #[error("finding the toolchain directory with {script}: {reason}")]
    Locate { script: PathBuf, reason: String },
}

/// The built binaries plus the kwok stage files copied from the pinned module.
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub bin_dir: PathBuf,
}

impl Toolchain {
    /// `UNDERSTUDY_TOOLCHAIN_DIR` when set, else the directory the build script
    /// prints for the pinned versions.
    pub fn locate() -> Result<Self, ToolchainError> {
        let bin_dir = match std::env::var_os("UNDERSTUDY_TOOLCHAIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let script = build_script();
                let output = std::process::Command::new("bash")
                    .arg(&script)
                    .arg("--print-dir")
                    .output()
                    .map_err(|e| ToolchainError::Locate {
                        script: script.clone(),
                        reason: e.to_string(),
                    })?;
                if !output.status.success() {
                    return Err(ToolchainError::Locate {
                        script,
                        reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
                    });
                }
                PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
            }
        };
        let toolchain = Self { bin_dir };
        toolchain.check(REQUIRED)?;
        Ok(toolchain)
    }

    pub fn check(&self, names: &[&str]) -> Result<(), ToolchainError> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| !is_executable(&self.bin(name)))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ToolchainError::Missing {
                dir: self.bin_dir.clone(),
                missing: missing.join(", "),
            })
        }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// kwok's node and pod lifecycle stages, passed with `--config`.
    pub fn kwok_stages(&self) -> Vec<PathBuf> {
        let dir = self.bin_dir.join("../kwok-stages");
        let mut stages: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                    .collect()
            })
            .unwrap_or_default();
        stages.sort();
        stages
    }
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let toolchain = Toolchain {
            bin_dir: dir.path().into(),
        };
        let err = toolchain.check(REQUIRED).unwrap_err().to_string();
        assert!(
            err.contains("kube-apiserver") && err.contains("make toolchain"),
            "{err}"
        );
    }
}
