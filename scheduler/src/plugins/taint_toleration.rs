//! TaintToleration: NoSchedule and NoExecute taints the pod does not tolerate rule a node
//! out; untolerated PreferNoSchedule taints make it less attractive.

use crate::framework::{default_normalize, Plugin, PluginState, Prepared, Rejection, Status};
use crate::matchers::{tolerated, CompiledToleration, Effect};
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, Snapshot};

pub struct TaintToleration;

/// The tolerations that count for scoring: those with no effect or PreferNoSchedule.
struct PreferTolerations(Vec<CompiledToleration>);

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn node_local(&self) -> bool {
        true
    }

    /// The rejection reason is the index of the first untolerated taint.
    #[inline]
    fn filter(&self, _: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        let taints = &snapshot.nodes.taints[node as usize];
        for (index, taint) in taints.iter().enumerate() {
            if taint.effect != Effect::PreferNoSchedule && !tolerated(&pod.tolerations, taint) {
                return Err(Rejection::unresolvable(index as u32));
            }
        }
        Ok(())
    }

    fn explain(&self, rejection: Rejection, _: &PodQuery, snapshot: &Snapshot, node: NodeIx, out: &mut Vec<String>) {
        let taint = snapshot.nodes.taints[node as usize].get(rejection.reason as usize);
        let described = taint.map(|t| t.describe(&snapshot.strings)).unwrap_or_default();
        out.push(format!("node(s) had untolerated taint {described}"));
    }

    fn pre_score(&self, pod: &PodQuery, _: &Snapshot, _: &[NodeIx]) -> Result<Prepared, Status> {
        let tolerations = pod
            .tolerations
            .iter()
            .filter(|t| t.effect().is_none_or(|e| e == Effect::PreferNoSchedule))
            .copied()
            .collect();
        Ok(Prepared::with_state(PreferTolerations(tolerations)))
    }

    #[inline]
    fn score(&self, state: &PluginState, _: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> i64 {
        let tolerations = &crate::framework::state::<PreferTolerations>(state).0;
        snapshot.nodes.taints[node as usize]
            .iter()
            .filter(|t| t.effect == Effect::PreferNoSchedule && !tolerated(tolerations, t))
            .count() as i64
    }

    fn normalizes(&self) -> bool {
        true
    }

    fn normalize(&self, _: &PluginState, _: &PodQuery, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}
