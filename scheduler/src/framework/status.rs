//! Typed outcomes of the extension points.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Success,
    /// The pod does not fit now; preempting pods might make room.
    Unschedulable,
    /// The pod does not fit and preemption cannot help (node affinity, taints, ...).
    UnschedulableAndUnresolvable,
    /// Something broke; the pod is retried with backoff.
    Error,
    /// PreFilter/PreScore: nothing to do for this pod.
    Skip,
}

impl Code {
    /// Every code, in declaration order: `ALL[code.index()] == code`.
    pub const ALL: [Code; 5] =
        [Code::Success, Code::Unschedulable, Code::UnschedulableAndUnresolvable, Code::Error, Code::Skip];

    /// A small dense number for tables and packed words.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(index: usize) -> Option<Code> {
        Code::ALL.get(index).copied()
    }

    /// kube-scheduler's name for the code (its metrics' `status` label).
    pub fn name(self) -> &'static str {
        match self {
            Code::Success => "Success",
            Code::Unschedulable => "Unschedulable",
            Code::UnschedulableAndUnresolvable => "UnschedulableAndUnresolvable",
            Code::Error => "Error",
            Code::Skip => "Skip",
        }
    }
}

/// A Filter's verdict on one node: the code and a plugin-defined reason (a small number
/// the plugin turns into text later), so filtering allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rejection {
    pub code: Code,
    pub reason: u32,
}

impl Rejection {
    pub const fn unschedulable(reason: u32) -> Rejection {
        Rejection { code: Code::Unschedulable, reason }
    }

    pub const fn unresolvable(reason: u32) -> Rejection {
        Rejection { code: Code::UnschedulableAndUnresolvable, reason }
    }
}

/// An outcome with its reasons, for the once-per-pod extension points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub fn new(code: Code, plugin: &'static str, reason: impl Into<String>) -> Status {
        Status { code, reasons: vec![reason.into()], plugin }
    }

    pub fn unschedulable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, plugin, reason)
    }

    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, plugin, reason)
    }

    pub fn error(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status::new(Code::Error, plugin, reason)
    }

    pub fn is_unschedulable(&self) -> bool {
        matches!(self.code, Code::Unschedulable | Code::UnschedulableAndUnresolvable)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reasons.join(", "))
    }
}
