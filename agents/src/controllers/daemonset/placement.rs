//! Where a DaemonSet's pods belong: which nodes should run one, and the pod that is
//! pinned to a node (through node affinity, so the scheduler still checks resources
//! and binds it, as kube does).

use crate::controllers::taints::{tolerates, NOT_READY, NO_EXECUTE, NO_SCHEDULE, UNREACHABLE};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Toleration,
};

/// What a node means for a DaemonSet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// A daemon pod should be created here if missing.
    pub should_run: bool,
    /// A daemon pod already here may stay (a NoSchedule taint added later does not
    /// evict it; a NoExecute one does).
    pub may_continue: bool,
}

/// The tolerations every daemon pod gets (kube's AddOrUpdateDaemonPodTolerations):
/// a daemon stays through node trouble, since it is there for the node.
pub fn daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    let mut add = |key: &str, effect: &str| {
        let present = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.operator.as_deref() == Some("Exists")
                && t.effect.as_deref() == Some(effect)
                && t.toleration_seconds.is_none()
        });
        if !present {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    };
    add(NOT_READY, NO_EXECUTE);
    add(UNREACHABLE, NO_EXECUTE);
    for key in ["disk-pressure", "memory-pressure", "pid-pressure", "unschedulable"] {
        add(&format!("node.kubernetes.io/{key}"), NO_SCHEDULE);
    }
    if spec.host_network == Some(true) {
        add("node.kubernetes.io/network-unavailable", NO_SCHEDULE);
    }
    tolerations
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |v: &str| v.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b),
        "Lt" => matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    // A term with no requirement matches nothing.
    (!expressions.is_empty() || !fields.is_empty())
        && expressions.iter().all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref()))
}

/// Whether the pod's node selector and required node affinity admit `node`.
pub fn node_selected(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let selector_ok =
        spec.node_selector.iter().flatten().all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    selector_ok && required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// Where a DaemonSet with pod template `spec` stands on `node`; `tolerations` are
/// the template's [`daemon_tolerations`] (worked out once, not per node).
pub fn placement(spec: &PodSpec, tolerations: &[Toleration], node: &Node) -> Placement {
    if !node_selected(spec, node) {
        return Placement { should_run: false, may_continue: false };
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let untolerated = |effect: &str| {
        taints.iter().filter(|t| t.effect == effect).any(|t| !tolerations.iter().any(|o| tolerates(o, t)))
    };
    if untolerated(NO_EXECUTE) {
        Placement { should_run: false, may_continue: false }
    } else if untolerated(NO_SCHEDULE) {
        Placement { should_run: false, may_continue: true }
    } else {
        Placement { should_run: true, may_continue: true }
    }
}

/// The node a daemon pod is for: where it is bound, else the node its affinity pins.
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|r| {
        (r.key == "metadata.name" && r.operator == "In").then(|| r.values.as_ref()?.first().map(String::as_str))?
    })
}

/// Pins a daemon pod's spec to `node`: its required node affinity becomes the one
/// term `metadata.name In [node]` (the node already matched the rest), and it gets
/// the daemon tolerations.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    spec.tolerations = Some(daemon_tolerations(spec));
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            match_expressions: None,
        }],
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}
        }))
        .unwrap()
    }

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn selectors_affinity_and_taints_decide_placement() {
        let plain = spec(serde_json::json!({"containers": []}));
        let ssd = node("a", serde_json::json!({"disk": "ssd", "cores": "8"}), serde_json::json!([]));
        assert_eq!(
            placement(&plain, &daemon_tolerations(&plain), &ssd),
            Placement { should_run: true, may_continue: true }
        );

        let selecting = spec(serde_json::json!({"containers": [], "nodeSelector": {"disk": "hdd"}}));
        assert!(!placement(&selecting, &daemon_tolerations(&selecting), &ssd).should_run);
        let big = spec(serde_json::json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}]}}}}));
        assert!(placement(&big, &daemon_tolerations(&big), &ssd).should_run);

        let dedicated =
            node("b", serde_json::json!({}), serde_json::json!([{"key": "dedicated", "effect": "NoSchedule"}]));
        assert_eq!(
            placement(&plain, &daemon_tolerations(&plain), &dedicated),
            Placement { should_run: false, may_continue: true }
        );
        let evicting = node("c", serde_json::json!({}), serde_json::json!([{"key": "gone", "effect": "NoExecute"}]));
        assert_eq!(
            placement(&plain, &daemon_tolerations(&plain), &evicting),
            Placement { should_run: false, may_continue: false }
        );
        // Node trouble is tolerated: daemons stay on not-ready and unschedulable nodes.
        let troubled = node(
            "d",
            serde_json::json!({}),
            serde_json::json!([{"key": UNREACHABLE, "effect": "NoExecute"}, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert!(placement(&plain, &daemon_tolerations(&plain), &troubled).should_run);
    }

    #[test]
    fn pinned_pods_name_their_node() {
        let mut pinned = spec(serde_json::json!({"containers": []}));
        pin_to_node(&mut pinned, "n7");
        let pod = Pod { spec: Some(pinned.clone()), ..Default::default() };
        assert_eq!(target_node(&pod), Some("n7"));
        assert!(node_selected(&pinned, &node("n7", serde_json::json!({}), serde_json::json!([]))));
        assert!(!node_selected(&pinned, &node("n8", serde_json::json!({}), serde_json::json!([]))));
        assert_eq!(pinned.tolerations.as_ref().map(Vec::len), Some(6));
    }
}
