//! Plugin outcomes, as upstream's framework.Status: a code, the reasons shown
//! to users (they end up in "0/N nodes are available: …"), and the plugin.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Success,
    /// An internal failure; the pod is retried with backoff.
    Error,
    /// The node does not fit now; preemption may make it fit.
    Unschedulable,
    /// The node cannot fit whatever is preempted.
    UnschedulableAndUnresolvable,
    /// PreFilter/PreScore: the plugin has nothing to do for this pod, skip its
    /// Filter/Score.
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Self {
        Self::new(Code::Success, vec![])
    }
    pub fn skip() -> Self {
        Self::new(Code::Skip, vec![])
    }
    pub fn new(code: Code, reasons: Vec<String>) -> Self {
        Self {
            code,
            reasons,
            plugin: "",
        }
    }
    pub fn unschedulable(reason: impl Into<String>) -> Self {
        Self::new(Code::Unschedulable, vec![reason.into()])
    }
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Self::new(Code::UnschedulableAndUnresolvable, vec![reason.into()])
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Code::Error, vec![message.into()])
    }
    pub fn with_plugin(mut self, plugin: &'static str) -> Self {
        self.plugin = plugin;
        self
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }
    /// Unschedulable of either kind (not an internal error).
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message())
    }
}
