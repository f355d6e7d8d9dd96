//! Authorization: may this user do this?
//!
//! A request is reduced to [`Attributes`] (kube's authorizer attributes: verb, API
//! group, resource, subresource, namespace, name, or a non-resource path) and asked of
//! the authorizers in turn, as kube-apiserver's `--authorization-mode=Node,RBAC`:
//! [`node`] answers for node agents from the [`node_graph`]; [`rbac`] from Roles,
//! ClusterRoles and their bindings, compiled into an immutable [`rbac::Policy`].

pub mod bootstrap;
pub mod escalation;
pub mod node;
pub mod node_graph;
pub mod rbac;

use crate::auth::User;
use parking_lot::RwLock;
use std::sync::Arc;

/// The group whose members may do anything (kube's superuser group).
pub const SUPERUSER_GROUP: &str = "system:masters";

/// What a request asks to do, as kube's authorizers see it. It borrows from the
/// request (route, path, review body), so authorizing allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, or a special verb (`impersonate`, `escalate`, `bind`, ...).
    pub verb: &'a str,
    /// Empty for a resource request; the path for a non-resource one (`/metrics`).
    pub path: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    /// Empty at the cluster scope.
    pub namespace: &'a str,
    pub name: &'a str,
}

impl<'a> Attributes<'a> {
    pub fn resource(verb: &'a str, group: &'a str, resource: &'a str, namespace: &'a str) -> Attributes<'a> {
        Attributes { verb, group, resource, namespace, ..Attributes::default() }
    }

    pub fn non_resource(verb: &'a str, path: &'a str) -> Attributes<'a> {
        Attributes { verb, path, ..Attributes::default() }
    }

    pub fn is_resource_request(&self) -> bool {
        self.path.is_empty()
    }

    /// `pods/exec`: the resource with its subresource, as rules name it.
    pub fn qualified_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The authorizers every request asks. The watch cache's applier replaces the RBAC
/// policy whole when RBAC objects change (rarely) and keeps the node graph current;
/// requests only take the read side of a lock for the length of one decision, so they
/// never wait on each other.
#[derive(Debug)]
pub struct Authorizer {
    policy: RwLock<Arc<rbac::Policy>>,
    nodes: node::NodeAuthorizer,
    /// What each node's pods use (written by the watch cache's applier).
    pub graph: node_graph::NodeGraph,
}

impl Default for Authorizer {
    fn default() -> Authorizer {
        Authorizer {
            policy: RwLock::default(),
            nodes: node::NodeAuthorizer::new(&bootstrap::node_rules()),
            graph: node_graph::NodeGraph::default(),
        }
    }
}

impl Authorizer {
    /// The Node authorizer for nodes, then RBAC; a refusal carries the Node
    /// authorizer's reason, if it gave one.
    pub fn authorize(&self, user: &User, request: &Attributes) -> Decision {
        let mut why = None;
        if let Some(node) = node::node_name(user) {
            match self.nodes.authorize(node, request, &self.graph) {
                node::Verdict::Allow => return Decision { allowed: true, grant: None, why: None },
                node::Verdict::NoOpinion(reason) => why = reason,
            }
        }
        let mut decision = self.policy.read().authorize(user, request);
        if !decision.allowed {
            decision.why = why;
        }
        decision
    }

    pub fn publish(&self, policy: rbac::Policy) {
        *self.policy.write() = Arc::new(policy);
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<rbac::Policy> {
        Arc::clone(&self.policy.read())
    }
}

/// An authorizer's answer. `grant` names what allowed it (`ClusterRoleBinding "x" of
/// ClusterRole "y"`); the reason text is rendered only when asked for, so a decision
/// allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub grant: Option<std::sync::Arc<str>>,
    /// Why a refusal: what an authorizer said beyond "no rule allows it".
    pub why: Option<String>,
}

impl Decision {
    /// The reason kube gives (in audit logs and SubjectAccessReview status).
    pub fn reason(&self, user: &User) -> String {
        match &self.grant {
            Some(grant) => format!("RBAC: allowed by {grant} to User {:?}", user.name),
            None => String::new(),
        }
    }
}

/// The text of a 403, as kube-apiserver words it: `User "jane" cannot list resource
/// "pods" in API group "" in the namespace "team"`.
pub fn forbidden_message(user: &User, attributes: &Attributes) -> String {
    let name = &user.name;
    let verb = &attributes.verb;
    if !attributes.is_resource_request() {
        return format!("User {name:?} cannot {verb} path {:?}", attributes.path);
    }
    let resource = attributes.qualified_resource();
    let group = &attributes.group;
    if attributes.namespace.is_empty() {
        format!("User {name:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope")
    } else {
        format!(
            "User {name:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {:?}",
            attributes.namespace
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_are_kubes() {
        let jane = User::new("jane".into(), String::new(), Vec::new());
        let list = Attributes::resource("list", "", "pods", "team");
        assert_eq!(
            forbidden_message(&jane, &list),
            "User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"team\""
        );
        let mut exec = Attributes::resource("create", "", "pods", "team");
        exec.subresource = "exec";
        assert!(forbidden_message(&jane, &exec).contains("cannot create resource \"pods/exec\""));
        let nodes = Attributes::resource("delete", "", "nodes", "");
        assert!(forbidden_message(&jane, &nodes).ends_with("in API group \"\" at the cluster scope"));
        assert_eq!(
            forbidden_message(&jane, &Attributes::non_resource("get", "/metrics")),
            "User \"jane\" cannot get path \"/metrics\""
        );
    }
}
