//! NodeRestriction, kube's admission plugin for node agents: what the Node authorizer
//! lets a `system:node:NAME` write, it may write only for itself. Its own Node (and
//! that Node's status), its own Lease, mirror pods bound to itself, and the status,
//! deletion and eviction of pods bound to itself.
//!
//! Creates and updates are checked on the object about to be stored (`check_write`,
//! from `Call::admit`); deletions and evictions on the pod as the node graph has it
//! (`check_pod_removal`), before anything is read or written.

use crate::authz::node_graph::NodeGraph;
use crate::object;
use crate::resources::ResourceInfo;
use keelson_engine::ApiError;
use serde_json::Value;

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Whether NodeRestriction looks at a node's writes to the resource at all (nodes,
/// their leases and pods); the rest [`check_write`] lets through unread.
pub fn restricts(info: &ResourceInfo) -> bool {
    matches!((info.group, info.plural), ("", "nodes") | ("coordination.k8s.io", "leases") | ("", "pods"))
}

/// Checks a create (`old` is `None`) or update by node `node` of `new`.
pub fn check_write(
    node: &str,
    info: &ResourceInfo,
    subresource: Option<&str>,
    new: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = object::name(new);
    let forbidden = |why: String| ApiError::forbidden(info.group, info.plural, name, &why);
    match (info.group, info.plural) {
        ("", "nodes") if name != node => {
            Err(forbidden(format!("node {node:?} is not allowed to modify node {name:?}")))
        }
        ("coordination.k8s.io", "leases") if name != node => {
            Err(forbidden("can only access node lease with the same name as the requesting node".into()))
        }
        ("", "pods") => match old {
            None => {
                let mirror = new.pointer("/metadata/annotations").and_then(|a| a.get(MIRROR_ANNOTATION)).is_some();
                if !mirror {
                    return Err(forbidden(format!(
                        "pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
                    )));
                }
                if object::get_str(new, &["spec", "nodeName"]) != Some(node) {
                    return Err(forbidden(format!(
                        "node {node:?} can only create pods with spec.nodeName set to itself"
                    )));
                }
                Ok(())
            }
            Some(old) if object::get_str(old, &["spec", "nodeName"]) != Some(node) => {
                let what = if subresource == Some("status") { "update pod status for" } else { "update" };
                Err(forbidden(format!("node {node:?} can only {what} pods with spec.nodeName set to itself")))
            }
            Some(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Checks node `node` deleting (or, `evicting`, evicting) the pod at storage `key`.
pub fn check_pod_removal(node: &str, graph: &NodeGraph, key: &str, name: &str, evicting: bool) -> Result<(), ApiError> {
    if graph.node_of(key.as_bytes()).as_deref() == Some(node) {
        return Ok(());
    }
    let verb = if evicting { "evict" } else { "delete" };
    Err(ApiError::forbidden(
        "",
        "pods",
        name,
        &format!("node {node:?} can only {verb} pods with spec.nodeName set to itself"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(group: &str, plural: &str) -> &'static ResourceInfo {
        crate::resources::RESOURCES.iter().find(|r| r.group == group && r.plural == plural).unwrap()
    }

    #[test]
    fn a_node_writes_only_for_itself() {
        let nodes = info("", "nodes");
        check_write("n1", nodes, None, &json!({"metadata": {"name": "n1"}}), None).unwrap();
        let other = check_write("n1", nodes, Some("status"), &json!({"metadata": {"name": "n2"}}), None).unwrap_err();
        assert_eq!(other.message, "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"");
        let leases = info("coordination.k8s.io", "leases");
        check_write("n1", leases, None, &json!({"metadata": {"name": "n1"}}), None).unwrap();
        assert!(check_write("n1", leases, None, &json!({"metadata": {"name": "n2"}}), None).is_err());

        let pods = info("", "pods");
        let mirror = json!({"metadata": {"name": "static", "annotations": {MIRROR_ANNOTATION: "x"}}, "spec": {"nodeName": "n1"}});
        check_write("n1", pods, None, &mirror, None).unwrap();
        let plain = json!({"metadata": {"name": "web"}, "spec": {"nodeName": "n1"}});
        assert!(check_write("n1", pods, None, &plain, None)
            .unwrap_err()
            .message
            .contains("can only create mirror pods"));
        let elsewhere = json!({"metadata": {"name": "web"}, "spec": {"nodeName": "n2"}});
        check_write("n2", pods, Some("status"), &elsewhere, Some(&elsewhere)).unwrap();
        let refused = check_write("n1", pods, Some("status"), &elsewhere, Some(&elsewhere)).unwrap_err();
        assert!(refused
            .message
            .ends_with("node \"n1\" can only update pod status for pods with spec.nodeName set to itself"));

        let graph = NodeGraph::default();
        graph.apply_pod(b"/registry/pods/team/web", Some(&serde_json::to_vec(&elsewhere).unwrap()));
        check_pod_removal("n2", &graph, "/registry/pods/team/web", "web", false).unwrap();
        let evict = check_pod_removal("n1", &graph, "/registry/pods/team/web", "web", true).unwrap_err();
        assert!(evict.message.ends_with("node \"n1\" can only evict pods with spec.nodeName set to itself"));
    }
}
