//! The iptables commands the iptables proxier runs, as upstream's utiliptables runs
//! them: every call waits for the xtables lock (`-w 5`), which kubelet, CNI
//! plugins and a kube-proxy on the same node take too.

use crate::exec::{Exec, Output};
use crate::iptables::JumpRule;
use crate::tracker::IpFamily;

const WAIT: [&str; 2] = ["-w", "5"];

/// iptables' exit code for "rule/chain does not exist" (`-C`, `-S`).
const NOT_FOUND: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({code:?}): {stderr}")]
    Failed {
        command: String,
        code: Option<i32>,
        stderr: String,
    },
}

/// The iptables tools of one IP family: `iptables*` for IPv4, `ip6tables*`
/// for IPv6 (upstream's utiliptables.New(protocol)).
pub struct Iptables<E> {
    pub exec: E,
    pub family: IpFamily,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

impl<E> Iptables<E> {
    /// IPv4's tools.
    pub fn v4(exec: E) -> Self {
        Iptables {
            exec,
            family: IpFamily::V4,
        }
    }

    /// `iptables`, `iptables-save` or `iptables-restore` (`tool` is "",
    /// "-save" or "-restore") of this family.
    fn program(&self, tool: &str) -> String {
        match self.family {
            IpFamily::V4 => format!("iptables{tool}"),
            IpFamily::V6 => format!("ip6tables{tool}"),
        }
    }
}

impl<E: Exec> Iptables<E> {
    fn run(
        &self,
        program: &str,
        args: Vec<String>,
        stdin: Option<&str>,
    ) -> Result<Output, ToolError> {
        let command = || format!("{program} {}", args.join(" "));
        self.exec
            .run(program, &args, stdin)
            .map_err(|source| ToolError::Spawn {
                command: command(),
                source,
            })
    }

    fn checked(
        &self,
        program: &str,
        args: Vec<String>,
        stdin: Option<&str>,
    ) -> Result<Output, ToolError> {
        let command = format!("{program} {}", args.join(" "));
        let out = self.run(program, args, stdin)?;
        if out.success() {
            Ok(out)
        } else {
            Err(ToolError::Failed {
                command,
                code: out.code,
                stderr: out.stderr.trim().to_string(),
            })
        }
    }

    /// Whether `chain` exists in `table`.
    pub fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, ToolError> {
        let mut a = args(&WAIT);
        a.extend(args(&["-t", table, "-S", chain]));
        let out = self.run(&self.program(""), a.clone(), None)?;
        match out.code {
            Some(0) => Ok(true),
            Some(NOT_FOUND) => Ok(false),
            code => Err(ToolError::Failed {
                command: format!("{} {}", self.program(""), a.join(" ")),
                code,
                stderr: out.stderr.trim().to_string(),
            }),
        }
    }

    /// Creates `chain` unless it exists.
    /// As upstream's EnsureChain: `-N`, whose "already exists" (exit 1)
    /// means there is nothing to do. Asking first with `-S` would print
    /// the chain's rules — all of `US-SERVICES`, a rule per Service port,
    /// for each of the full sync's jumps.
    pub fn ensure_chain(&self, table: &str, chain: &str) -> Result<(), ToolError> {
        let mut a = args(&WAIT);
        a.extend(args(&["-t", table, "-N", chain]));
        let out = self.run(&self.program(""), a.clone(), None)?;
        match out.code {
            Some(0) | Some(NOT_FOUND) => Ok(()),
            code => Err(ToolError::Failed {
                command: format!("{} {}", self.program(""), a.join(" ")),
                code,
                stderr: out.stderr.trim().to_string(),
            }),
        }
    }

    /// Inserts the jump at the top of its built-in chain unless `-C` finds it.
    pub fn ensure_jump(&self, rule: &JumpRule) -> Result<(), ToolError> {
        let mut check = args(&WAIT);
        check.extend(args(&["-t", rule.table, "-C", rule.from]));
        check.extend(rule.args());
        let out = self.run(&self.program(""), check.clone(), None)?;
        match out.code {
            Some(0) => return Ok(()),
            Some(NOT_FOUND) => {}
            code => {
                return Err(ToolError::Failed {
                    command: format!("{} {}", self.program(""), check.join(" ")),
                    code,
                    stderr: out.stderr.trim().to_string(),
                });
            }
        }
        let mut insert = args(&WAIT);
        insert.extend(args(&["-t", rule.table, "-I", rule.from]));
        insert.extend(rule.args());
        self.checked(&self.program(""), insert, None).map(drop)
    }

    /// Deletes the jump while `-C` still finds it (it may be there twice).
    pub fn delete_jump(&self, rule: &JumpRule) -> Result<(), ToolError> {
        loop {
            let mut check = args(&WAIT);
            check.extend(args(&["-t", rule.table, "-C", rule.from]));
            check.extend(rule.args());
            if !self.run(&self.program(""), check, None)?.success() {
                return Ok(());
            }
            let mut delete = args(&WAIT);
            delete.extend(args(&["-t", rule.table, "-D", rule.from]));
            delete.extend(rule.args());
            self.checked(&self.program(""), delete, None)?;
        }
    }

    /// `iptables-save -t table`.
    pub fn save(&self, table: &str) -> Result<String, ToolError> {
        self.checked(&self.program("-save"), args(&["-t", table]), None)
            .map(|o| o.stdout)
    }

    /// `iptables-restore --noflush --counters` of `text`: only the chains
    /// the text declares are flushed, everyone else's rules stay.
    pub fn restore(&self, text: &str) -> Result<(), ToolError> {
        let mut a = args(&WAIT);
        a.extend(args(&["--noflush", "--counters"]));
        self.checked(&self.program("-restore"), a, Some(text))
            .map(drop)
    }
}
