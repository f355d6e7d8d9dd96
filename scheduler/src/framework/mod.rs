//! The scheduling framework: extension points and their contracts, typed outcomes, and
//! the per-cycle state plugins compute once and read per node.
//!
//! A plugin implements [`Plugin`]; a profile lists which plugins run at which point and
//! with which score weight. The contracts, as in kube-scheduler:
//!
//! - **PreFilter** runs once per pod before any Filter. It computes the plugin's cycle
//!   state, may narrow the candidate nodes, may reject the pod outright, or may answer
//!   `Skip`, after which the plugin's Filter is not called for this pod. Here PreFilter is
//!   part of the filter contract: a plugin enabled for Filter gets its PreFilter called.
//! - **Filter** runs per node, in parallel over node chunks: it must not allocate, lock or
//!   compare strings, and it returns a compact [`Rejection`] whose reason is rendered to
//!   text (by [`Plugin::explain`]) only when the pod turns out to be unschedulable.
//! - **PostFilter** runs when no node passed: preemption lives here.
//! - **PreScore** runs once over the feasible nodes (or answers `Skip`); **Score** per
//!   feasible node; **NormalizeScore** once over all of them, into `0..=100`.
//! - **Reserve/Unreserve** run after a node is chosen; Unreserve must be idempotent, since
//!   it runs when any later step fails. **Permit** may deny. PreBind/Bind/PostBind run in
//!   the asynchronous binding cycle (the runner in `agents`, which talks to the API).

pub mod status;

use crate::query::PodQuery;
use crate::snapshot::{NodeIx, Snapshot};
pub use status::{Code, Rejection, Status};
use std::any::Any;

/// The highest score a plugin gives after normalisation.
pub const MAX_NODE_SCORE: i64 = 100;

/// A plugin's state for one scheduling cycle.
pub type PluginState = Option<Box<dyn Any + Send + Sync>>;

/// What PreFilter or PreScore decided.
pub struct Prepared {
    /// Nothing to do for this pod: the per-node method is not called.
    pub skip: bool,
    pub state: PluginState,
    /// PreFilter only: the pod can only go to these nodes (e.g. `spec.nodeName`), as
    /// kube's `PreFilterResult`: the cycle looks at these alone.
    pub nodes: Option<Vec<NodeIx>>,
    /// PreFilter only: every live node not in this list (ascending) fails this plugin's
    /// Filter. Unlike `nodes` this changes nothing kube would decide or report: the
    /// cycle skips the other nodes where its scan would reach them, and looks at every
    /// node again only to explain a pod that fits nowhere.
    pub candidates: Option<Vec<NodeIx>>,
}

impl Prepared {
    pub fn skip() -> Prepared {
        Prepared { skip: true, state: None, nodes: None, candidates: None }
    }

    pub fn run() -> Prepared {
        Prepared { skip: false, state: None, nodes: None, candidates: None }
    }

    pub fn with_state<T: Any + Send + Sync>(state: T) -> Prepared {
        Prepared { skip: false, state: Some(Box::new(state)), nodes: None, candidates: None }
    }
}

/// Reads a plugin's cycle state. Panics if PreFilter/PreScore stored another type: that is
/// a bug in the plugin, not bad input.
#[inline]
pub fn state<T: Any>(state: &PluginState) -> &T {
    state.as_deref().and_then(|s| s.downcast_ref::<T>()).expect("plugin state set by its PreFilter/PreScore")
}

/// What a PostFilter found: a node the pod may go to once `victims` are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nomination {
    pub node: NodeIx,
    /// Keys (`namespace/name`) of the pods to evict.
    pub victims: Vec<String>,
}

/// Why each node was rejected: the input to PostFilter and to the FailedScheduling text.
#[derive(Debug, Default, Clone)]
pub struct Diagnosis {
    /// Per rejected node, the plugin (index in the profile) and rejection.
    pub rejections: Vec<(NodeIx, usize, Rejection)>,
    /// Set when PreFilter rejected the pod before any node was looked at.
    pub pre_filter: Option<Status>,
}

pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Whether this plugin's Filter and Score results on a node depend only on that
    /// node's own row (labels, taints, allocatable, what its pods request and hold) and
    /// on the pod inputs [`PodQuery::same_node_inputs`] compares; likewise its
    /// PreFilter/PreScore state and Skip. The cycle then memoises its verdicts and raw
    /// scores per node across pods that ask the same, until the node's row changes. A
    /// plugin that reads other nodes, other pods' labels or cluster-wide counts must
    /// answer `false` (the default).
    fn node_local(&self) -> bool {
        false
    }

    fn pre_filter(&self, _pod: &PodQuery, _snapshot: &Snapshot) -> Result<Prepared, Status> {
        Ok(Prepared::run())
    }

    fn filter(
        &self,
        _state: &PluginState,
        _pod: &PodQuery,
        _snapshot: &Snapshot,
        _node: NodeIx,
    ) -> Result<(), Rejection> {
        Ok(())
    }

    /// The text of a rejection, as kube-scheduler words it ("Insufficient cpu"); one
    /// rejection may carry several reasons (cpu and memory both short).
    fn explain(
        &self,
        _rejection: Rejection,
        _pod: &PodQuery,
        _snapshot: &Snapshot,
        _node: NodeIx,
        out: &mut Vec<String>,
    ) {
        out.push(format!("rejected by {}", self.name()));
    }

    fn post_filter(&self, _pod: &PodQuery, _snapshot: &Snapshot, _diagnosis: &Diagnosis) -> Option<Nomination> {
        None
    }

    fn pre_score(&self, _pod: &PodQuery, _snapshot: &Snapshot, _feasible: &[NodeIx]) -> Result<Prepared, Status> {
        Ok(Prepared::run())
    }

    fn score(&self, _state: &PluginState, _pod: &PodQuery, _snapshot: &Snapshot, _node: NodeIx) -> i64 {
        0
    }

    /// Rescales raw scores (one per feasible node, in order) into `0..=MAX_NODE_SCORE`.
    /// A plugin that overrides this must say so in [`normalizes`](Plugin::normalizes).
    fn normalize(&self, _state: &PluginState, _pod: &PodQuery, _scores: &mut [i64]) {}

    /// Whether [`normalize`](Plugin::normalize) rescales. The scores of plugins that
    /// keep their raw scores are added to the totals as they are, without gathering
    /// them into a column first.
    fn normalizes(&self) -> bool {
        false
    }

    fn reserve(&self, _pod: &PodQuery, _node: NodeIx) -> Result<(), Status> {
        Ok(())
    }

    fn unreserve(&self, _pod: &PodQuery, _node: NodeIx) {}

    fn permit(&self, _pod: &PodQuery, _node: NodeIx) -> Result<(), Status> {
        Ok(())
    }
}

/// Scales `scores` so the highest becomes `MAX_NODE_SCORE` (or, with `reverse`, the
/// lowest does): kube's `DefaultNormalizeScore`.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.fill(MAX_NODE_SCORE);
        }
        return;
    }
    for score in scores {
        *score = MAX_NODE_SCORE * *score / max;
        if reverse {
            *score = MAX_NODE_SCORE - *score;
        }
    }
}
