//! RBAC, as kube's RBAC authorizer decides it: a request is allowed when some binding
//! of the user (by name, by one of its groups, or as a ServiceAccount) grants a role
//! with a rule that matches it. There is no deny.
//!
//! [`Policy::build`] compiles Roles, ClusterRoles (with aggregation resolved) and their
//! bindings into an immutable index from subject to grants. A decision then looks up
//! the user's and each group's grants and tests their rules: no lock, no allocation,
//! and cost proportional to what the user holds, not to the number of bindings in the
//! cluster. Changes build a new policy, published whole (see `Authorizer`).

use super::{Attributes, Decision, SUPERUSER_GROUP};
use crate::auth::User;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use keelson_engine::Selector;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One rule, kept as written (rules are short lists; matching walks them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    verbs: Box<[Box<str>]>,
    groups: Box<[Box<str>]>,
    resources: Box<[Box<str>]>,
    names: Box<[Box<str>]>,
    urls: Box<[Box<str>]>,
}

fn boxed(list: Option<&Vec<String>>) -> Box<[Box<str>]> {
    list.into_iter().flatten().map(|s| Box::from(s.as_str())).collect()
}

fn contains_or_star(list: &[Box<str>], wanted: &str) -> bool {
    list.iter().any(|s| &**s == "*" || &**s == wanted)
}

impl Rule {
    pub fn compile(rule: &PolicyRule) -> Rule {
        Rule {
            verbs: rule.verbs.iter().map(|s| Box::from(s.as_str())).collect(),
            groups: boxed(rule.api_groups.as_ref()),
            resources: boxed(rule.resources.as_ref()),
            names: boxed(rule.resource_names.as_ref()),
            urls: boxed(rule.non_resource_urls.as_ref()),
        }
    }

    /// Whether the rule allows the request (kube's `RuleAllows`).
    pub fn allows(&self, request: &Attributes) -> bool {
        if !contains_or_star(&self.verbs, request.verb) {
            return false;
        }
        if !request.is_resource_request() {
            return self.urls.iter().any(|url| match url.strip_suffix('*') {
                Some(prefix) => request.path.starts_with(prefix),
                None => **url == *request.path,
            });
        }
        contains_or_star(&self.groups, request.group)
            && self.resource_matches(request)
            && (self.names.is_empty() || self.names.iter().any(|n| **n == *request.name))
    }

    /// Whether this is a rule about paths rather than resources.
    pub fn is_non_resource(&self) -> bool {
        !self.urls.is_empty()
    }

    /// The rule as a `PolicyRule` (for SelfSubjectRulesReview): `resourceRules` entries
    /// have `verbs`, `apiGroups`, `resources`, `resourceNames`; `nonResourceRules`
    /// entries `verbs` and `nonResourceURLs`.
    pub fn to_json(&self) -> serde_json::Value {
        let list = |items: &[Box<str>]| items.iter().map(|s| serde_json::Value::from(&**s)).collect::<Vec<_>>();
        let mut rule = serde_json::json!({"verbs": list(&self.verbs)});
        if self.is_non_resource() {
            rule["nonResourceURLs"] = list(&self.urls).into();
            return rule;
        }
        rule["apiGroups"] = list(&self.groups).into();
        rule["resources"] = list(&self.resources).into();
        if !self.names.is_empty() {
            rule["resourceNames"] = list(&self.names).into();
        }
        rule
    }

    /// The rule broken into single permissions, as kube's `BreakdownRule` does: one
    /// per group, resource, verb (and name, if the rule names objects), and one per
    /// path and verb. A `*` stays a `*`: only a `*` covers it.
    pub fn permissions(&self) -> Vec<Permission<'_>> {
        let mut permissions = Vec::new();
        for group in self.groups.iter() {
            for resource in self.resources.iter() {
                for verb in self.verbs.iter() {
                    if self.names.is_empty() {
                        permissions.push(Permission::Resource { verb, group, resource, name: None });
                    }
                    for name in self.names.iter() {
                        permissions.push(Permission::Resource { verb, group, resource, name: Some(name) });
                    }
                }
            }
        }
        for url in self.urls.iter() {
            for verb in self.verbs.iter() {
                permissions.push(Permission::Path { verb, url });
            }
        }
        permissions
    }

    /// Whether holding this rule means holding `permission` (kube's `ruleCovers`): a
    /// rule about resources never covers a path, nor the other way round.
    pub fn covers(&self, permission: &Permission) -> bool {
        match *permission {
            Permission::Resource { verb, group, resource, name } => {
                contains_or_star(&self.verbs, verb)
                    && contains_or_star(&self.groups, group)
                    && self.covers_resource(resource)
                    && (self.names.is_empty() || name.is_some_and(|n| self.names.iter().any(|own| **own == *n)))
            }
            Permission::Path { verb, url } => {
                contains_or_star(&self.verbs, verb)
                    && self.urls.iter().any(|own| match own.strip_suffix('*') {
                        Some(prefix) => url.starts_with(prefix),
                        None => **own == *url,
                    })
            }
        }
    }

    /// `*` covers any resource; `*/status` any resource's status.
    fn covers_resource(&self, resource: &str) -> bool {
        self.resources.iter().any(|own| {
            &**own == "*"
                || **own == *resource
                || resource.split_once('/').is_some_and(|(_, sub)| own.strip_prefix("*/") == Some(sub))
        })
    }

    /// `*`, `pods`, `pods/exec`, `*/scale`: the forms a rule's resources take.
    fn resource_matches(&self, request: &Attributes) -> bool {
        let (resource, subresource) = (request.resource, request.subresource);
        self.resources.iter().any(|rule| {
            let rule: &str = rule;
            if rule == "*" {
                return true;
            }
            match rule.split_once('/') {
                None => subresource.is_empty() && rule == resource,
                Some((r, s)) => s == subresource && !subresource.is_empty() && (r == "*" || r == resource),
            }
        })
    }
}

/// One permission of a rule (see [`Rule::permissions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission<'a> {
    Resource { verb: &'a str, group: &'a str, resource: &'a str, name: Option<&'a str> },
    Path { verb: &'a str, url: &'a str },
}

impl<'a> Permission<'a> {
    pub fn verb(&self) -> &'a str {
        match *self {
            Permission::Resource { verb, .. } | Permission::Path { verb, .. } => verb,
        }
    }
}

/// What one binding gives: a role's rules, in one namespace or everywhere.
#[derive(Clone, Debug)]
struct Grant {
    /// `None`: a ClusterRoleBinding, good in every namespace and at the cluster scope.
    namespace: Option<Box<str>>,
    rules: Arc<[Rule]>,
    /// `ClusterRoleBinding "x" of ClusterRole "y"`: for the decision's reason.
    source: Arc<str>,
}

/// The compiled RBAC state: who holds which grants, and each role's rules (for the
/// escalation checks on RBAC writes).
#[derive(Debug, Default)]
pub struct Policy {
    by_user: HashMap<Box<str>, Vec<Grant>>,
    by_group: HashMap<Box<str>, Vec<Grant>>,
    /// ClusterRoles by name, aggregation resolved.
    cluster_roles: HashMap<Box<str>, Arc<[Rule]>>,
    /// Roles by `namespace/name`.
    roles: HashMap<Box<str>, Arc<[Rule]>>,
}

/// The objects a policy is built from.
#[derive(Default)]
pub struct Objects<'a> {
    pub cluster_roles: &'a [ClusterRole],
    pub roles: &'a [Role],
    pub cluster_role_bindings: &'a [ClusterRoleBinding],
    pub role_bindings: &'a [RoleBinding],
}

/// The name a ServiceAccount authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl Policy {
    pub fn build(objects: &Objects<'_>) -> Policy {
        let cluster_roles = aggregated_cluster_roles(objects.cluster_roles);
        let roles: HashMap<(&str, &str), Arc<[Rule]>> = objects
            .roles
            .iter()
            .map(|role| {
                let key =
                    (role.metadata.namespace.as_deref().unwrap_or(""), role.metadata.name.as_deref().unwrap_or(""));
                (key, role.rules.iter().flatten().map(Rule::compile).collect())
            })
            .collect();
        let mut policy = Policy {
            cluster_roles: cluster_roles.iter().map(|(name, rules)| (Box::from(*name), Arc::clone(rules))).collect(),
            roles: roles.iter().map(|((ns, name), rules)| (format!("{ns}/{name}").into(), Arc::clone(rules))).collect(),
            ..Policy::default()
        };
        for binding in objects.cluster_role_bindings {
            let role = &binding.role_ref.name;
            // A ClusterRoleBinding may only refer to a ClusterRole.
            let Some(rules) = cluster_roles.get(role.as_str()) else { continue };
            let name = binding.metadata.name.as_deref().unwrap_or("");
            let source: Arc<str> = format!("ClusterRoleBinding {name:?} of ClusterRole {role:?}").into();
            let grant = Grant { namespace: None, rules: Arc::clone(rules), source };
            policy.add(binding.subjects.iter().flatten(), "", &grant);
        }
        for binding in objects.role_bindings {
            let namespace = binding.metadata.namespace.as_deref().unwrap_or("");
            let reference = &binding.role_ref;
            let rules = match reference.kind.as_str() {
                "ClusterRole" => cluster_roles.get(reference.name.as_str()),
                _ => roles.get(&(namespace, reference.name.as_str())),
            };
            let Some(rules) = rules else { continue };
            let name = binding.metadata.name.as_deref().unwrap_or("");
            let source: Arc<str> =
                format!("RoleBinding {:?} of {} {:?}", format!("{namespace}/{name}"), reference.kind, reference.name)
                    .into();
            let grant = Grant { namespace: Some(namespace.into()), rules: Arc::clone(rules), source };
            policy.add(binding.subjects.iter().flatten(), namespace, &grant);
        }
        policy
    }

    fn add<'s>(&mut self, subjects: impl Iterator<Item = &'s Subject>, binding_namespace: &str, grant: &Grant) {
        for subject in subjects {
            match subject.kind.as_str() {
                "User" => self.by_user.entry(subject.name.as_str().into()).or_default().push(grant.clone()),
                "Group" => self.by_group.entry(subject.name.as_str().into()).or_default().push(grant.clone()),
                "ServiceAccount" => {
                    // A ServiceAccount subject without a namespace is the binding's own.
                    let namespace = subject.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(binding_namespace);
                    let user = service_account_user(namespace, &subject.name);
                    self.by_user.entry(user.into()).or_default().push(grant.clone());
                }
                _ => {}
            }
        }
    }

    /// The grant that allows the request, if any: only the user's own grants and its
    /// groups' are looked at.
    fn find(&self, user: &User, request: &Attributes) -> Option<&Grant> {
        self.grants(user, request.namespace).find(|g| g.rules.iter().any(|rule| rule.allows(request)))
    }

    /// The grants of the user and of its groups that hold in `namespace` (empty: the
    /// cluster scope, where only ClusterRoleBindings hold).
    fn grants<'p: 'q, 'q>(&'p self, user: &'q User, namespace: &'q str) -> impl Iterator<Item = &'p Grant> + 'q {
        let groups = user.groups.iter().filter_map(|g| self.by_group.get(g.as_str()));
        let grants = self.by_user.get(user.name.as_str()).into_iter().chain(groups).flatten();
        grants.filter(move |g| g.namespace.as_deref().is_none_or(|ns| !namespace.is_empty() && ns == namespace))
    }

    /// Every rule `user` holds in `namespace` (cluster-wide grants included), each once:
    /// what SelfSubjectRulesReview lists. `None` for a superuser, who holds everything.
    pub fn rules_for(&self, user: &User, namespace: &str) -> Option<Vec<&Rule>> {
        if user.groups.iter().any(|g| g == SUPERUSER_GROUP) {
            return None;
        }
        let mut rules: Vec<&Rule> = Vec::new();
        for grant in self.grants(user, namespace) {
            for rule in grant.rules.iter() {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        Some(rules)
    }

    /// The rules a binding's `roleRef` grants (a Role is looked up in `namespace`).
    pub fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<&Arc<[Rule]>> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name),
            _ => self.roles.get(format!("{namespace}/{name}").as_str()),
        }
    }

    /// Whether `user` may do `request`: members of `system:masters` may do anything.
    pub fn authorize(&self, user: &User, request: &Attributes) -> Decision {
        if user.groups.iter().any(|g| g == SUPERUSER_GROUP) {
            return Decision { allowed: true, grant: None, why: None };
        }
        match self.find(user, request) {
            Some(grant) => Decision { allowed: true, grant: Some(Arc::clone(&grant.source)), why: None },
            None => Decision { allowed: false, grant: None, why: None },
        }
    }
}

fn role_name(role: &ClusterRole) -> &str {
    role.metadata.name.as_deref().unwrap_or("")
}

/// Every ClusterRole's compiled rules, with aggregation resolved as kube's
/// clusterrole-aggregation controller does: a role with an `aggregationRule` holds the
/// rules of every ClusterRole its selectors pick (themselves aggregated, to a fixpoint).
fn aggregated_cluster_roles(roles: &[ClusterRole]) -> HashMap<&str, Arc<[Rule]>> {
    let name = role_name;
    let empty = BTreeMap::new();
    let mut rules: HashMap<&str, Vec<Rule>> =
        roles.iter().map(|r| (name(r), r.rules.iter().flatten().map(Rule::compile).collect())).collect();
    let aggregating: Vec<(&str, Vec<Selector>)> = roles
        .iter()
        .filter_map(|role| {
            let selectors = role.aggregation_rule.as_ref()?.cluster_role_selectors.as_ref()?;
            let compiled =
                selectors.iter().map(|s| Selector::from_label_selector(s).unwrap_or_else(|_| Selector::nothing()));
            Some((name(role), compiled.collect()))
        })
        .collect();
    // Each round adds what the selected roles hold now; chains settle in as many rounds.
    for _ in 0..=aggregating.len() {
        let mut changed = false;
        for (aggregate, selectors) in &aggregating {
            let mut gathered: Vec<Rule> = Vec::new();
            for role in roles.iter().filter(|r| name(r) != *aggregate) {
                let labels = role.metadata.labels.as_ref().unwrap_or(&empty);
                if selectors.iter().any(|s| s.matches(labels)) {
                    gathered.extend(rules.get(name(role)).into_iter().flatten().cloned());
                }
            }
            let own = rules.entry(aggregate).or_default();
            for rule in gathered {
                if !own.contains(&rule) {
                    own.push(rule);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    rules.into_iter().map(|(name, rules)| (name, Arc::from(rules))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User::new(name.into(), String::new(), groups.iter().map(|g| g.to_string()).collect())
    }

    fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    fn attributes<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes { verb, group, resource, subresource, namespace, name, path: "" }
    }

    fn policy() -> Policy {
        let cluster_roles: Vec<ClusterRole> = vec![
            from(json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}})),
            from(
                json!({"metadata": {"name": "view-core", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}]}),
            ),
            from(json!({"metadata": {"name": "metrics"},
                "rules": [{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]})),
            from(json!({"metadata": {"name": "scaler"},
                "rules": [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update", "patch"]}]})),
        ];
        let roles: Vec<Role> = vec![from(json!({"metadata": {"name": "cm-editor", "namespace": "team"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["*"]}]}))];
        let cluster_role_bindings: Vec<ClusterRoleBinding> =
            vec![from(json!({"metadata": {"name": "metrics-readers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "metrics"},
            "subjects": [{"kind": "Group", "name": "monitoring"}]}))];
        let role_bindings: Vec<RoleBinding> = vec![
            from(json!({"metadata": {"name": "jane-views", "namespace": "team"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "builder"}]})),
            from(json!({"metadata": {"name": "jane-settings", "namespace": "team"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-editor"},
                "subjects": [{"kind": "User", "name": "jane"}]})),
            from(json!({"metadata": {"name": "ops-scale", "namespace": "team"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "scaler"},
                "subjects": [{"kind": "Group", "name": "ops"}]})),
        ];
        Policy::build(&Objects {
            cluster_roles: &cluster_roles,
            roles: &roles,
            cluster_role_bindings: &cluster_role_bindings,
            role_bindings: &role_bindings,
        })
    }

    #[test]
    fn bindings_grant_their_roles_rules_where_they_apply() {
        let policy = policy();
        let jane = user("jane", &[]);
        let allowed = |u: &User, a: Attributes| policy.authorize(u, &a).allowed;
        // The aggregated view role, through a RoleBinding: in its namespace only.
        assert!(allowed(&jane, attributes("list", "", "pods", "team", "")));
        assert!(allowed(&jane, attributes("get", "", "pods/log", "team", "web")));
        assert!(!allowed(&jane, attributes("list", "", "pods", "other", "")));
        assert!(!allowed(&jane, attributes("list", "", "pods", "", "")), "not at the cluster scope");
        assert!(!allowed(&jane, attributes("delete", "", "pods", "team", "web")));
        assert!(!allowed(&jane, attributes("create", "", "pods/exec", "team", "web")), "a subresource is its own");
        // resourceNames limit a rule to those objects.
        assert!(allowed(&jane, attributes("update", "", "configmaps", "team", "settings")));
        assert!(!allowed(&jane, attributes("update", "", "configmaps", "team", "other")));
        // ServiceAccounts, by their user name, in the binding's namespace by default.
        let builder = user(&service_account_user("team", "builder"), &["system:serviceaccounts"]);
        assert!(allowed(&builder, attributes("watch", "", "pods", "team", "")));
        // Groups, `*/scale`, and non-resource URLs with a trailing `*`.
        let ops = user("sam", &["ops"]);
        assert!(allowed(&ops, attributes("patch", "apps", "deployments/scale", "team", "web")));
        assert!(!allowed(&ops, attributes("patch", "apps", "deployments", "team", "web")));
        let monitor = user("prom", &["monitoring"]);
        assert!(allowed(&monitor, Attributes::non_resource("get", "/metrics")));
        assert!(allowed(&monitor, Attributes::non_resource("get", "/debug/pprof")));
        assert!(!allowed(&monitor, Attributes::non_resource("get", "/healthz")));
        assert!(!allowed(&monitor, attributes("get", "", "pods", "team", "")));
        // The superuser group may do anything; the reason names the binding otherwise.
        assert!(allowed(&user("root", &[SUPERUSER_GROUP]), attributes("delete", "", "nodes", "", "n1")));
        let decision = policy.authorize(&jane, &attributes("list", "", "pods", "team", ""));
        assert_eq!(
            decision.reason(&jane),
            "RBAC: allowed by RoleBinding \"team/jane-views\" of ClusterRole \"view\" to User \"jane\""
        );
    }
}
