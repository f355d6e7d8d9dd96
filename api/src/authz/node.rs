//! The Node authorizer, as kube's: a node agent authenticates as `system:node:NAME` in
//! group `system:nodes`, and may do what kube's node rules allow, except that reads
//! of Secrets, ConfigMaps, PersistentVolumeClaims and PersistentVolumes, and tokens
//! for ServiceAccounts, are limited to what the pods bound to that node use (the
//! [`NodeGraph`]), and node Leases to its own. It runs before RBAC; where it has no
//! opinion RBAC decides, and its reason is added to the refusal.
//!
//! Which object a node may write (its own Node, its pods' status) is admission's
//! part: see `crate::node_restriction`.

use super::node_graph::{NodeGraph, Referent};
use super::rbac::Rule;
use super::Attributes;
use crate::auth::User;
use k8s_openapi::api::rbac::v1::PolicyRule;

/// The group every node identity is in.
pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is, if it is one (`system:node:NAME` in `system:nodes`).
pub fn node_name(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX).filter(|n| !n.is_empty())?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// The Node authorizer's answer: allowed, or no opinion (with why, for the 403).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    NoOpinion(Option<String>),
}

/// See the module documentation.
#[derive(Debug)]
pub struct NodeAuthorizer {
    rules: Vec<Rule>,
}

impl NodeAuthorizer {
    /// With kube's node rules (`bootstrap::node_rules`).
    pub fn new(rules: &[serde_json::Value]) -> NodeAuthorizer {
        let rules = rules
            .iter()
            .map(|rule| Rule::compile(&serde_json::from_value::<PolicyRule>(rule.clone()).expect("a valid node rule")))
            .collect();
        NodeAuthorizer { rules }
    }

    pub fn authorize(&self, node: &str, request: &Attributes, graph: &NodeGraph) -> Verdict {
        if request.is_resource_request() {
            let graphed = |kind| match reachable(node, request, graph, kind) {
                Some(found) => related(node, found),
                None => deny("No Object name found"),
            };
            match (request.group, request.resource, request.subresource) {
                ("", "secrets" | "configmaps", subresource) => {
                    if !matches!(request.verb, "get" | "list" | "watch") {
                        return deny("can only read resources of this type");
                    }
                    if !subresource.is_empty() {
                        return deny("cannot read subresource");
                    }
                    if request.namespace.is_empty() {
                        return deny("can only read namespaced object of this type");
                    }
                    let kind = if request.resource == "secrets" { Referent::Secret } else { Referent::ConfigMap };
                    return graphed(kind);
                }
                ("", "persistentvolumeclaims", "status") => {
                    if !matches!(request.verb, "get" | "update" | "patch") {
                        return deny("can only get/update/patch this type");
                    }
                    return graphed(Referent::Claim);
                }
                ("", "persistentvolumeclaims" | "persistentvolumes", subresource) => {
                    if request.verb != "get" {
                        return deny("can only get individual resources of this type");
                    }
                    if !subresource.is_empty() {
                        return deny("cannot get subresource");
                    }
                    if request.resource == "persistentvolumeclaims" {
                        return graphed(Referent::Claim);
                    }
                    return related(node, graph.uses_volume(node, request.name));
                }
                ("", "serviceaccounts", subresource) => {
                    if request.verb != "create" || subresource != "token" || request.name.is_empty() {
                        return deny("can only create tokens for individual service accounts");
                    }
                    return graphed(Referent::ServiceAccount);
                }
                ("coordination.k8s.io", "leases", _) => return lease(node, request),
                _ => {}
            }
        }
        if self.rules.iter().any(|rule| rule.allows(request)) {
            Verdict::Allow
        } else {
            Verdict::NoOpinion(None)
        }
    }
}

/// Allowed if the graph relates the node to the object.
fn related(node: &str, found: bool) -> Verdict {
    if found {
        Verdict::Allow
    } else {
        Verdict::NoOpinion(Some(format!("no relationship found between node '{node}' and this object")))
    }
}

fn deny(why: &str) -> Verdict {
    Verdict::NoOpinion(Some(why.to_string()))
}

/// Whether a pod on the node uses the named object; `None` if the request names none.
fn reachable(node: &str, request: &Attributes, graph: &NodeGraph, kind: Referent) -> Option<bool> {
    (!request.name.is_empty()).then(|| graph.refers(node, kind, request.namespace, request.name))
}

/// A node's own Lease, in `kube-node-lease`. A create names its Lease in the body, so
/// admission checks that name.
fn lease(node: &str, request: &Attributes) -> Verdict {
    if !matches!(request.verb, "get" | "create" | "update" | "patch" | "delete") {
        return deny("can only get, create, update, patch, or delete a node lease");
    }
    if request.namespace != LEASE_NAMESPACE {
        return deny("can only access leases in this namespace");
    }
    if request.verb != "create" && request.name != node {
        return deny("can only access node lease with the same name as the requesting node");
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> User {
        User::new(format!("system:node:{name}"), String::new(), vec![NODES_GROUP.into()])
    }

    fn request<'a>(verb: &'a str, resource: &'a str, namespace: &'a str, name: &'a str) -> Attributes<'a> {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let (group, resource) = resource.split_once('.').map(|(r, g)| (g, r)).unwrap_or(("", resource));
        Attributes { verb, group, resource, subresource, namespace, name, path: "" }
    }

    #[test]
    fn nodes_reach_only_what_their_pods_use() {
        assert_eq!(node_name(&node("n1")), Some("n1"));
        assert_eq!(node_name(&User::new("system:node:n1".into(), String::new(), vec![])), None, "not in the group");
        let graph = NodeGraph::default();
        let pod = json!({"metadata": {"namespace": "team"}, "spec": {"nodeName": "n1", "serviceAccountName": "sa",
            "volumes": [{"name": "s", "secret": {"secretName": "tls"}}]}});
        graph.apply_pod(b"/registry/pods/team/web", Some(&serde_json::to_vec(&pod).unwrap()));
        let authorizer = NodeAuthorizer::new(&crate::authz::bootstrap::node_rules());
        let decide = |who: &str, r: Attributes| authorizer.authorize(who, &r, &graph);
        assert_eq!(decide("n1", request("get", "secrets", "team", "tls")), Verdict::Allow);
        assert_eq!(
            decide("n2", request("get", "secrets", "team", "tls")),
            Verdict::NoOpinion(Some("no relationship found between node 'n2' and this object".into()))
        );
        assert_eq!(decide("n1", request("list", "secrets", "team", "")), deny("No Object name found"));
        assert_eq!(
            decide("n1", request("delete", "secrets", "team", "tls")),
            deny("can only read resources of this type")
        );
        assert_eq!(decide("n1", request("create", "serviceaccounts/token", "team", "sa")), Verdict::Allow);
        assert!(matches!(
            decide("n1", request("create", "serviceaccounts/token", "team", "other")),
            Verdict::NoOpinion(_)
        ));
        // Its own Lease only; creating one is admission's to check.
        assert_eq!(
            decide("n1", request("update", "leases.coordination.k8s.io", "kube-node-lease", "n1")),
            Verdict::Allow
        );
        assert!(matches!(
            decide("n1", request("update", "leases.coordination.k8s.io", "kube-node-lease", "n2")),
            Verdict::NoOpinion(Some(_))
        ));
        assert_eq!(
            decide("n1", request("create", "leases.coordination.k8s.io", "kube-node-lease", "")),
            Verdict::Allow
        );
        // The rest by kube's node rules: pods' status yes, Deployments no.
        assert_eq!(decide("n1", request("patch", "pods/status", "team", "web")), Verdict::Allow);
        assert_eq!(decide("n1", request("create", "deployments.apps", "team", "")), Verdict::NoOpinion(None));
    }
}
