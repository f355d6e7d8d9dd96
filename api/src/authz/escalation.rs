//! Escalation prevention on RBAC writes, as kube's RBAC storage does it: nobody can
//! grant, through a Role, a ClusterRole or a binding, a permission they do not hold.
//!
//! A write of a role passes if the writer is a superuser, may `escalate` that role, or
//! already holds every permission in its rules (where the role applies: in its
//! namespace, or at the cluster scope for a ClusterRole). Setting a ClusterRole's
//! `aggregationRule` (which can gather anything) needs every permission there is. A
//! write of a binding passes if the writer is a superuser, may `bind` the role it
//! refers to, or holds every permission of that role where the binding applies.
//! Writes that change only what garbage collection changes (owner references and
//! finalizers) pass, so the controllers that clean up need no such rights.

use super::rbac::{Permission, Policy, Rule};
use super::{Attributes, Authorizer, SUPERUSER_GROUP};
use crate::auth::User;
use k8s_openapi::api::rbac::v1::PolicyRule;
use keelson_engine::ApiError;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Checks a create (`old` is `None`) or an update of an object of an RBAC `resource`
/// (`roles`, `clusterroles`, `rolebindings`, `clusterrolebindings`) by `user`; the
/// refusal is kube's 403.
pub fn check(
    authorizer: &Authorizer,
    user: &User,
    resource: &str,
    namespace: &str,
    new: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == SUPERUSER_GROUP) || old.is_some_and(|old| only_gc_fields_differ(new, old)) {
        return Ok(());
    }
    let name = new.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let forbidden = |why: &str| ApiError::forbidden(RBAC_GROUP, resource, name, why);
    let policy = authorizer.policy();
    match resource {
        "roles" | "clusterroles" => {
            let escalate =
                Attributes { verb: "escalate", group: RBAC_GROUP, resource, namespace, name, ..Default::default() };
            if authorizer.authorize(user, &escalate).allowed {
                return Ok(());
            }
            let rules = parse_rules(new.get("rules"))?;
            uncovered(&policy, user, namespace, &rules).map_err(|why| forbidden(&why))?;
            let aggregation = |object: &Value| object.get("aggregationRule").filter(|a| !a.is_null()).cloned();
            let aggregating = aggregation(new);
            if aggregating.is_some() && aggregating != old.and_then(aggregation) {
                uncovered(&policy, user, "", &everything())
                    .map_err(|_| forbidden("must have cluster-admin privileges to use the aggregationRule"))?;
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            let role = new.get("roleRef").unwrap_or(&Value::Null);
            let kind = role.get("kind").and_then(Value::as_str).unwrap_or("");
            let role_name = role.get("name").and_then(Value::as_str).unwrap_or("");
            let role_resource = if kind == "ClusterRole" { "clusterroles" } else { "roles" };
            let bind = Attributes {
                verb: "bind",
                group: RBAC_GROUP,
                resource: role_resource,
                namespace,
                name: role_name,
                ..Default::default()
            };
            if authorizer.authorize(user, &bind).allowed {
                return Ok(());
            }
            let Some(rules) = policy.role_rules(kind, namespace, role_name) else {
                return Err(forbidden(&format!("{role_resource}.{RBAC_GROUP} {role_name:?} not found")));
            };
            uncovered(&policy, user, namespace, rules).map_err(|why| forbidden(&why))
        }
        _ => Ok(()),
    }
}

/// Whether `user` holds every permission in `rules` in `namespace` (empty: at the
/// cluster scope); if not, kube's message listing what is missing.
fn uncovered(policy: &Policy, user: &User, namespace: &str, rules: &[Rule]) -> Result<(), String> {
    let held = policy.rules_for(user, namespace).unwrap_or_default();
    let missing: Vec<Permission> = rules
        .iter()
        .flat_map(Rule::permissions)
        .filter(|permission| !held.iter().any(|rule| rule.covers(permission)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let described: BTreeSet<String> = compact(&missing).iter().map(Compact::describe).collect();
    let described: Vec<String> = described.into_iter().collect();
    Err(format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        go_quoted(user.groups.iter().map(String::as_str)),
        described.join("\n")
    ))
}

/// Every permission there is: what the `aggregationRule` needs.
fn everything() -> [Rule; 2] {
    let rule = |json: Value| Rule::compile(&serde_json::from_value::<PolicyRule>(json).expect("a valid rule"));
    [
        rule(serde_json::json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})),
        rule(serde_json::json!({"nonResourceURLs": ["*"], "verbs": ["*"]})),
    ]
}

fn parse_rules(rules: Option<&Value>) -> Result<Vec<Rule>, ApiError> {
    let Some(rules) = rules.filter(|r| !r.is_null()) else { return Ok(Vec::new()) };
    let rules: Vec<PolicyRule> =
        serde_json::from_value(rules.clone()).map_err(|e| ApiError::bad_request(format!("rules: {e}")))?;
    Ok(rules.iter().map(Rule::compile).collect())
}

/// Whether two versions of an object differ only in owner references and finalizers
/// (and the bookkeeping the server keeps): kube's `IsOnlyMutatingGCFields`.
fn only_gc_fields_differ(new: &Value, old: &Value) -> bool {
    let strip = |object: &Value| {
        let mut object = object.clone();
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["ownerReferences", "finalizers", "resourceVersion", "managedFields", "generation"] {
                metadata.remove(field);
            }
        }
        object
    };
    strip(new) == strip(old)
}

/// Missing permissions as kube reports them: those on one resource of one group with
/// no names merged into one rule listing their verbs; the rest one by one.
struct Compact<'a> {
    permission: Permission<'a>,
    verbs: Vec<&'a str>,
}

fn compact<'a>(missing: &[Permission<'a>]) -> Vec<Compact<'a>> {
    let mut merged: Vec<Compact<'a>> = Vec::new();
    for &permission in missing {
        let key = match permission {
            Permission::Resource { group, resource, name: None, .. } => Some((group, resource)),
            _ => None,
        };
        let same = |c: &&mut Compact<'a>| match c.permission {
            Permission::Resource { group, resource, name: None, .. } => key == Some((group, resource)),
            _ => false,
        };
        match merged.iter_mut().find(|c| key.is_some() && same(c)) {
            Some(existing) => existing.verbs.push(permission.verb()),
            None => merged.push(Compact { permission, verbs: vec![permission.verb()] }),
        }
    }
    merged
}

impl Compact<'_> {
    /// kube's `CompactString`: `{APIGroups:["apps"], Resources:["deployments"],
    /// Verbs:["get" "list"]}`.
    fn describe(&self) -> String {
        let mut out = String::from("{");
        match self.permission {
            Permission::Resource { group, resource, name, .. } => {
                let _ = write!(out, "APIGroups:{}, Resources:{}, ", go_quoted([group]), go_quoted([resource]));
                if let Some(name) = name {
                    let _ = write!(out, "ResourceNames:{}, ", go_quoted([name]));
                }
            }
            Permission::Path { url, .. } => {
                let _ = write!(out, "NonResourceURLs:{}, ", go_quoted([url]));
            }
        }
        let _ = write!(out, "Verbs:{}}}", go_quoted(self.verbs.iter().copied()));
        out
    }
}

/// A list of strings as Go's `%q` prints a `[]string`: `["a" "b"]`.
fn go_quoted<'s>(items: impl IntoIterator<Item = &'s str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::super::rbac::Objects;
    use super::*;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    /// `lead` may manage RBAC in `team` and holds pod reads and configmap writes there;
    /// `root` is a superuser; `binder` may bind the `deleter` role without holding it.
    fn authorizer() -> Authorizer {
        let cluster_roles: Vec<ClusterRole> = vec![
            from(json!({"metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]})),
            from(json!({"metadata": {"name": "rbac-manager"}, "rules": [{"apiGroups": [RBAC_GROUP],
                "resources": ["roles", "rolebindings", "clusterroles", "clusterrolebindings"],
                // Not `*`, which would include `escalate` and `bind`.
                "verbs": ["get", "list", "create", "update", "patch", "delete"]}]})),
            from(json!({"metadata": {"name": "deleter"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]})),
            from(json!({"metadata": {"name": "binder"},
                "rules": [{"apiGroups": [RBAC_GROUP], "resources": ["clusterroles"], "resourceNames": ["deleter"], "verbs": ["bind"]},
                          {"apiGroups": [RBAC_GROUP], "resources": ["rolebindings"], "verbs": ["create"]}]})),
        ];
        let roles: Vec<Role> = vec![from(json!({"metadata": {"name": "cm-writer", "namespace": "team"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"]}]}))];
        let crb = |name: &str, role: &str, user: &str| -> ClusterRoleBinding {
            from(json!({"metadata": {"name": name},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "name": user}]}))
        };
        let rb = |name: &str, kind: &str, role: &str, user: &str| -> RoleBinding {
            from(json!({"metadata": {"name": name, "namespace": "team"},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role},
                "subjects": [{"kind": "User", "name": user}]}))
        };
        let authorizer = Authorizer::default();
        authorizer.publish(Policy::build(&Objects {
            cluster_roles: &cluster_roles,
            roles: &roles,
            cluster_role_bindings: &[crb("binders", "binder", "binder")],
            role_bindings: &[
                rb("lead-pods", "ClusterRole", "pod-reader", "lead"),
                rb("lead-rbac", "ClusterRole", "rbac-manager", "lead"),
                rb("lead-cms", "Role", "cm-writer", "lead"),
            ],
        }));
        authorizer
    }

    fn user(name: &str, groups: &[&str]) -> User {
        User::new(name.into(), String::new(), groups.iter().map(|g| g.to_string()).collect())
    }

    fn role(name: &str, rules: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "team"}, "rules": rules})
    }

    fn binding(name: &str, kind: &str, role: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "team"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role},
            "subjects": [{"kind": "User", "name": "someone"}]})
    }

    #[test]
    fn roles_may_hold_only_what_their_writer_holds() {
        let authorizer = authorizer();
        let lead = user("lead", &["devs"]);
        let check = |resource: &str, ns: &str, new: &Value, old: Option<&Value>| {
            check(&authorizer, &lead, resource, ns, new, old)
        };
        // A subset of what lead holds in the namespace, `*/log`-style and named ones too.
        let reader = role(
            "reader",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["update"]}]),
        );
        check("roles", "team", &reader, None).unwrap();
        // More than lead holds: refused with kube's message, verbs on one resource merged.
        let greedy = role(
            "greedy",
            json!([{"apiGroups": ["", "apps"], "resources": ["pods"], "verbs": ["get", "delete", "patch"]}]),
        );
        let refused = check("roles", "team", &greedy, None).unwrap_err();
        assert_eq!(refused.code(), 403);
        assert_eq!(
            refused.message,
            "roles.rbac.authorization.k8s.io \"greedy\" is forbidden: user \"lead\" (groups=[\"devs\" \
             \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\" \"patch\"]}\n\
             {APIGroups:[\"apps\"], Resources:[\"pods\"], Verbs:[\"get\" \"delete\" \"patch\"]}"
        );
        // What lead holds only in `team` is not held at the cluster scope.
        assert!(check("clusterroles", "", &reader, None).is_err());
        // `*` is only covered by `*`.
        let star = role("star", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]));
        assert!(check("roles", "team", &star, None).unwrap_err().message.contains("Verbs:[\"*\"]"));
        // Paths are their own permissions.
        let paths = role("paths", json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]));
        assert!(check("roles", "team", &paths, None)
            .unwrap_err()
            .message
            .ends_with("{NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}"));
        // Changing only owner references or finalizers needs nothing held.
        let mut collected = greedy.clone();
        collected["metadata"]["finalizers"] = json!(["example.com/hold"]);
        check("roles", "team", &collected, Some(&greedy)).unwrap();
        let mut relabelled = greedy.clone();
        relabelled["metadata"]["labels"] = json!({"a": "b"});
        assert!(check("roles", "team", &relabelled, Some(&greedy)).is_err());
        // A superuser may write anything.
        let root = user("root", &[SUPERUSER_GROUP]);
        super::check(&authorizer, &root, "roles", "team", &greedy, None).unwrap();
    }

    #[test]
    fn aggregation_needs_every_permission() {
        let authorizer = authorizer();
        let lead = user("lead", &[]);
        let aggregate = json!({"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"x": "y"}}]}});
        let refused = check(&authorizer, &lead, "clusterroles", "", &aggregate, None).unwrap_err();
        assert!(refused.message.ends_with("must have cluster-admin privileges to use the aggregationRule"));
    }

    #[test]
    fn bindings_grant_only_held_or_bindable_roles() {
        let authorizer = authorizer();
        let lead = user("lead", &[]);
        // lead holds pod-reader in team: may bind it there, not at the cluster scope.
        check(&authorizer, &lead, "rolebindings", "team", &binding("b", "ClusterRole", "pod-reader"), None).unwrap();
        check(&authorizer, &lead, "rolebindings", "team", &binding("b", "Role", "cm-writer"), None).unwrap();
        let everywhere = json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "pod-reader"}});
        assert!(check(&authorizer, &lead, "clusterrolebindings", "", &everywhere, None).is_err());
        // deleter is more than lead holds.
        let refused = check(&authorizer, &lead, "rolebindings", "team", &binding("d", "ClusterRole", "deleter"), None)
            .unwrap_err();
        assert!(refused
            .message
            .starts_with("rolebindings.rbac.authorization.k8s.io \"d\" is forbidden: user \"lead\""));
        assert!(refused.message.ends_with("{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"));
        // binder holds the `bind` verb on deleter (only), not its rules.
        let binder = user("binder", &[]);
        check(&authorizer, &binder, "rolebindings", "team", &binding("d", "ClusterRole", "deleter"), None).unwrap();
        assert!(check(&authorizer, &binder, "rolebindings", "team", &binding("r", "ClusterRole", "pod-reader"), None)
            .is_err());
        // A role that does not exist cannot be checked, so it cannot be bound.
        let missing =
            check(&authorizer, &lead, "rolebindings", "team", &binding("m", "Role", "nope"), None).unwrap_err();
        assert!(missing.message.ends_with("roles.rbac.authorization.k8s.io \"nope\" not found"));
    }
}
