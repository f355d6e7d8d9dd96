//! The simple node filters: NodeUnschedulable, NodeName, NodePorts.

use crate::framework::{Plugin, PluginState, Prepared, Rejection, Status};
use crate::matchers::{tolerated, CompiledTaint, Effect};
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, Snapshot};

const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Rejects cordoned nodes (`spec.unschedulable`) unless the pod tolerates the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint.
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn node_local(&self) -> bool {
        true
    }

    fn pre_filter(&self, pod: &PodQuery, snapshot: &Snapshot) -> Result<Prepared, Status> {
        let taint = CompiledTaint {
            key: snapshot.strings.lookup(TAINT_UNSCHEDULABLE),
            value: snapshot.strings.lookup(""),
            effect: Effect::NoSchedule,
        };
        let tolerates = taint.key != crate::intern::NONE && tolerated(&pod.tolerations, &taint);
        Ok(if tolerates { Prepared::skip() } else { Prepared::run() })
    }

    #[inline]
    fn filter(&self, _: &PluginState, _: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        if snapshot.nodes.unschedulable[node as usize] {
            return Err(Rejection::unresolvable(0));
        }
        Ok(())
    }

    fn explain(&self, _: Rejection, _: &PodQuery, _: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        out.push("node(s) were unschedulable".into());
    }
}

/// Pods with `spec.nodeName` set may only go to that node.
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn node_local(&self) -> bool {
        true
    }

    fn pre_filter(&self, pod: &PodQuery, snapshot: &Snapshot) -> Result<Prepared, Status> {
        let Some(name) = pod.node_name.as_deref() else {
            return Ok(Prepared::skip());
        };
        let target = snapshot.nodes.find(name);
        let mut prepared = Prepared::with_state(target.unwrap_or(NodeIx::MAX));
        prepared.nodes = Some(target.into_iter().collect());
        Ok(prepared)
    }

    #[inline]
    fn filter(&self, state: &PluginState, _: &PodQuery, _: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        if *crate::framework::state::<NodeIx>(state) != node {
            return Err(Rejection::unresolvable(0));
        }
        Ok(())
    }

    fn explain(&self, _: Rejection, _: &PodQuery, _: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        out.push("node(s) didn't match the requested node name".into());
    }
}

/// Host ports already taken on the node block pods that want them.
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn node_local(&self) -> bool {
        true
    }

    fn pre_filter(&self, pod: &PodQuery, _: &Snapshot) -> Result<Prepared, Status> {
        Ok(if pod.record.ports.is_empty() { Prepared::skip() } else { Prepared::run() })
    }

    #[inline]
    fn filter(&self, _: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        let used = &snapshot.nodes.ports[node as usize];
        let conflict = pod.record.ports.iter().any(|wanted| used.iter().any(|u| u.conflicts(wanted)));
        // Ports a nominated preemptor will take are held too, like its resources.
        let held = || {
            snapshot
                .nodes
                .nominees_against(node, &pod.record)
                .any(|n| pod.record.ports.iter().any(|wanted| n.ports.iter().any(|u| u.conflicts(wanted))))
        };
        if conflict || held() {
            return Err(Rejection::unschedulable(0));
        }
        Ok(())
    }

    fn explain(&self, _: Rejection, _: &PodQuery, _: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        out.push("node(s) didn't have free ports for the requested pod ports".into());
    }
}
