//! NodeAffinity: `spec.nodeSelector` and required node affinity filter; preferred terms
//! score by the sum of the weights of the terms a node matches.

use crate::framework::{default_normalize, Plugin, PluginState, Prepared, Rejection, Status};
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, Snapshot};

pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn node_local(&self) -> bool {
        true
    }

    fn pre_filter(&self, pod: &PodQuery, _: &Snapshot) -> Result<Prepared, Status> {
        let nothing = pod.node_selector.is_none() && pod.required_node_affinity.is_none();
        if nothing {
            return Ok(Prepared::skip());
        }
        // Terms that name their nodes narrow the cycle to those nodes (kube's
        // PreFilterResult), instead of every node being asked.
        let mut prepared = Prepared::run();
        prepared.nodes = pod.required_node_affinity.as_ref().and_then(|m| m.named_nodes());
        Ok(prepared)
    }

    #[inline]
    fn filter(&self, _: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        if pod.node_affinity_matches(snapshot, node) {
            Ok(())
        } else {
            Err(Rejection::unresolvable(0))
        }
    }

    fn explain(&self, _: Rejection, _: &PodQuery, _: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        out.push("node(s) didn't match Pod's node affinity/selector".into());
    }

    fn pre_score(&self, pod: &PodQuery, _: &Snapshot, _: &[NodeIx]) -> Result<Prepared, Status> {
        Ok(if pod.preferred_node_affinity.is_empty() { Prepared::skip() } else { Prepared::run() })
    }

    #[inline]
    fn score(&self, _: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> i64 {
        let columns = &snapshot.nodes.columns;
        pod.preferred_node_affinity
            .iter()
            .filter(|(_, term)| term.matches(columns, node))
            .map(|&(weight, _)| i64::from(weight))
            .sum()
    }

    fn normalizes(&self) -> bool {
        true
    }

    fn normalize(&self, _: &PluginState, _: &PodQuery, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}
