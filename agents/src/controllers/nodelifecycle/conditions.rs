//! What a node's conditions say, as the node lifecycle controller writes them back:
//! the conditions of a node whose agent went silent, and the taints its conditions
//! call for.

use crate::controllers::taints::{NOT_READY, NO_EXECUTE, NO_SCHEDULE, UNREACHABLE};
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The conditions an agent reports and this controller turns Unknown.
const REPORTED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Taints by condition (kube's TaintNodesByCondition): condition, status, taint key.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    ("MemoryPressure", "True", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    ("NetworkUnavailable", "True", "node.kubernetes.io/network-unavailable"),
];
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// The Ready condition's status: `True`, `False`, `Unknown`, or empty if never posted.
pub fn ready_status(node: &Node) -> &str {
    condition(node, "Ready").map_or("", |c| c.status.as_str())
}

/// When the agent last said the node was alive through its status.
pub fn heartbeat(node: &Node) -> Option<&Time> {
    condition(node, "Ready")?.last_heartbeat_time.as_ref()
}

/// The conditions of a node whose agent stopped reporting: every reported condition
/// Unknown (kube's wording), the rest as they were.
pub fn unknown_conditions(node: &Node, now: &Time) -> Vec<NodeCondition> {
    let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    for type_ in REPORTED {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != "Unknown" {
                    c.last_transition_time = Some(now.clone());
                }
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
            }
            None => conditions.push(NodeCondition {
                type_: type_.into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(now.clone()),
            }),
        }
    }
    conditions
}

/// Whether this controller owns a taint (it adds and removes it by condition).
fn managed(taint: &Taint) -> bool {
    let key = taint.key.as_str();
    key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == key)
}

/// The NoExecute taint a node's Ready status calls for.
pub fn no_execute_key(ready: &str) -> Option<&'static str> {
    match ready {
        "False" => Some(NOT_READY),
        "Unknown" => Some(UNREACHABLE),
        _ => None,
    }
}

/// The NoExecute taint (of the two this controller manages) the node has now.
pub fn current_no_execute(node: &Node) -> Option<&str> {
    taints(node).iter().find(|t| t.effect == NO_EXECUTE && managed(t)).map(|t| t.key.as_str())
}

pub fn taints(node: &Node) -> &[Taint] {
    node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default()
}

/// The node's taints with the managed ones as its conditions call for, and
/// `no_execute` as its one NoExecute taint of ours. A taint kept keeps its
/// `timeAdded` (a toleration counts from it); a new one is added `now`.
pub fn desired_taints(node: &Node, no_execute: Option<&str>, now: &Time) -> Vec<Taint> {
    let current = taints(node);
    let mut wanted: Vec<(&str, &str)> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, status, _)| condition(node, type_).is_some_and(|c| c.status == *status))
        .map(|(_, _, key)| (*key, NO_SCHEDULE))
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        wanted.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    if let Some(key) = no_execute {
        wanted.push((key, NO_EXECUTE));
    }
    let mut taints: Vec<Taint> = current.iter().filter(|t| !managed(t)).cloned().collect();
    for (key, effect) in wanted {
        let kept = current.iter().find(|t| t.key == key && t.effect == effect);
        taints.push(kept.cloned().unwrap_or_else(|| Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: Some(now.clone()),
            value: None,
        }));
    }
    taints
}

/// Whether two taint lists hold the same taints (order aside).
pub fn same_taints(a: &[Taint], b: &[Taint]) -> bool {
    a.len() == b.len()
        && a.iter().all(|t| b.iter().any(|u| u.key == t.key && u.effect == t.effect && u.value == t.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn node(ready: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "reason": "KubeletReady"},
                {"type": "MemoryPressure", "status": "False"},
            ]}
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    #[test]
    fn a_silent_node_has_every_reported_condition_unknown() {
        let conditions = unknown_conditions(&node("True", serde_json::json!([])), &now());
        let by_type = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(by_type("Ready").status, "Unknown");
        assert_eq!(by_type("Ready").reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(by_type("Ready").last_transition_time, Some(now()));
        assert_eq!(by_type("PIDPressure").reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(conditions.len(), 4);
    }

    #[test]
    fn taints_follow_conditions_and_keep_foreign_ones() {
        let tainted = node("Unknown", serde_json::json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]));
        let taints = desired_taints(&tainted, no_execute_key("Unknown"), &now());
        let keys: Vec<(&str, &str)> = taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, [("dedicated", "NoSchedule"), (UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]);
        assert_eq!(taints[2].time_added, Some(now()));

        // Ready again: our taints go, the foreign one stays.
        let mut recovered = tainted.clone();
        recovered.spec.as_mut().unwrap().taints = Some(taints);
        recovered.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        let taints = desired_taints(&recovered, no_execute_key("True"), &now());
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].key, "dedicated");
    }

    #[test]
    fn a_kept_taint_keeps_the_time_it_was_added() {
        let earlier =
            serde_json::json!([{"key": NOT_READY, "effect": "NoExecute", "timeAdded": "1970-01-01T00:01:40Z"}]);
        let node = node("False", earlier);
        let taints = desired_taints(&node, no_execute_key("False"), &now());
        let no_execute = taints.iter().find(|t| t.effect == NO_EXECUTE).unwrap();
        assert_eq!(no_execute.time_added.as_ref().unwrap().0.as_second(), 100);
        assert_eq!(current_no_execute(&node), Some(NOT_READY));
    }
}
