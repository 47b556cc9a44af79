//! Running the iptables tools, behind a trait so tests can fake them and
//! check the exact calls, or point them into a throwaway network namespace.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

pub trait Exec: Send + Sync {
    /// Runs `program args…`, feeding `stdin` when given, and waits for it.
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> std::io::Result<Output>;
}

impl<T: Exec + ?Sized> Exec for &T {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> std::io::Result<Output> {
        (**self).run(program, args, stdin)
    }
}

/// Runs programs on this machine, each behind `prefix` (e.g. `ip netns exec
/// NS` in tests; empty for the proxy, whose pod is in the node's namespace).
#[derive(Clone, Debug, Default)]
pub struct SystemExec {
    pub prefix: Vec<String>,
}

impl SystemExec {
    pub fn in_netns(name: &str) -> Self {
        SystemExec {
            prefix: ["ip", "netns", "exec", name].map(String::from).to_vec(),
        }
    }
}

impl Exec for SystemExec {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> std::io::Result<Output> {
        let mut argv = self.prefix.iter().map(String::as_str).chain([program]);
        let first = argv.next().expect("a program");
        let mut command = Command::new(first);
        command
            .args(argv)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            // A tool that fails early closes its end: its stderr says why.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output()?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
pub mod fake {
    //! A scripted stand-in: answers by the most recently added rule whose
    //! prefix matches (success by default), records every call.

    use std::sync::Mutex;

    use super::{Exec, Output};

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Call {
        pub line: String,
        pub stdin: Option<String>,
    }

    /// (prefix, answer, answers only once).
    type Rule = (String, Box<dyn Fn() -> Output + Send + Sync>, bool);

    #[derive(Default)]
    pub struct FakeExec {
        rules: Mutex<Vec<Rule>>,
        pub calls: Mutex<Vec<Call>>,
    }

    impl FakeExec {
        /// Calls whose command line starts with `prefix` answer `code`/`stdout`.
        pub fn answer(&self, prefix: &str, code: i32, stdout: &str) {
            let stderr = if code == 0 { "" } else { "failed" };
            self.script(prefix, code, stdout, stderr, false);
        }

        /// Calls whose command line starts with `prefix` fail with `code`
        /// and this message.
        pub fn fail(&self, prefix: &str, code: i32, stderr: &str) {
            self.script(prefix, code, "", stderr, false);
        }

        /// As `fail`, for the next matching call only.
        pub fn fail_once(&self, prefix: &str, code: i32, stderr: &str) {
            self.script(prefix, code, "", stderr, true);
        }

        fn script(&self, prefix: &str, code: i32, stdout: &str, stderr: &str, once: bool) {
            let (stdout, stderr) = (stdout.to_string(), stderr.to_string());
            self.rules.lock().unwrap().insert(
                0,
                (
                    prefix.to_string(),
                    Box::new(move || Output {
                        code: Some(code),
                        stdout: stdout.clone(),
                        stderr: stderr.clone(),
                    }),
                    once,
                ),
            );
        }

        pub fn take_lines(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
                .into_iter()
                .map(|c| c.line)
                .collect()
        }

        pub fn take_calls(&self) -> Vec<Call> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    impl Exec for FakeExec {
        fn run(
            &self,
            program: &str,
            args: &[String],
            stdin: Option<&str>,
        ) -> std::io::Result<Output> {
            let line = std::iter::once(program.to_string())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            self.calls.lock().unwrap().push(Call {
                line: line.clone(),
                stdin: stdin.map(String::from),
            });
            let mut rules = self.rules.lock().unwrap();
            let Some(at) = rules
                .iter()
                .position(|(prefix, ..)| line.starts_with(prefix.as_str()))
            else {
                return Ok(Output {
                    code: Some(0),
                    ..Default::default()
                });
            };
            let answer = (rules[at].1)();
            if rules[at].2 {
                drop(rules.remove(at));
            }
            Ok(answer)
        }
    }
}
