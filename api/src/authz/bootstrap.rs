//! The roles and bindings a new cluster starts with, as kube-apiserver's bootstrap
//! policy creates them: the user-facing `cluster-admin`, `admin`, `edit` and `view`
//! (the last three aggregated from `system:aggregate-to-*`), what every authenticated
//! user may do (`system:basic-user`, `system:discovery`, `system:public-info-viewer`),
//! and one role per control-plane component, bound to the identity it runs as.
//!
//! The server writes them at start ([`crate::server`]): a missing one is created; one
//! that exists is brought back to this definition unless its
//! `rbac.authorization.kubernetes.io/autoupdate` annotation is `"false"`, as kube's
//! reconciliation leaves roles an operator has taken over.

use serde_json::{json, Value};

/// The annotation that lets an operator keep their own version of a bootstrap object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn metadata(name: &str, labels: Value) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": metadata(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: Value, selector_label: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": metadata(name, labels), "rules": [],
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selector_label: "true"}}]}})
}

/// A ClusterRoleBinding of the ClusterRole of the same name to `subjects`
/// (`("User" | "Group", name)`).
fn binding(name: &str, subjects: &[(&str, &str)]) -> Value {
    binding_to(name, name, subjects)
}

/// A ClusterRoleBinding named `name` of ClusterRole `role` to `subjects`.
fn binding_to(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, who)| json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": who}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": metadata(name, json!({})),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

const BOOTSTRAPPERS: &str = crate::auth::bootstrap_token::GROUP;
const NODE_CLIENT_ROLE: &str = "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
const SELF_NODE_CLIENT_ROLE: &str = "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";

const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// What `view` may read in a namespace (kube's list; no Secrets).
fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "bindings",
                "configmaps",
                "endpoints",
                "events",
                "limitranges",
                "namespaces",
                "namespaces/status",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "pods/log",
                "pods/status",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(READ, &["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ, &["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        rule(READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ, &["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(READ, &["events.k8s.io"], &["events"]),
    ]
}

/// What `edit` adds: writing workloads and their config, Secrets, and the pod
/// sessions (exec, attach, port-forward).
fn edit_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &[""], &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "pods/eviction"]),
        rule(READ, &[""], &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets"]),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            WRITE,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "events",
                "persistentvolumeclaims",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(WRITE, &["networking.k8s.io"], &["ingresses", "networkpolicies"]),
        rule(WRITE, &["discovery.k8s.io"], &["endpointslices"]),
        rule(WRITE, &["events.k8s.io"], &["events"]),
    ]
}

/// What `admin` adds: the namespace's own RBAC.
fn admin_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
        rule(&[READ, WRITE].concat(), &["rbac.authorization.k8s.io"], &["rolebindings", "roles"]),
    ]
}

/// The scheduler's watches (pods, nodes, what the volume plugins read, budgets for
/// preemption), binds, status and events, and its leader-election Lease.
fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
        rule(READ, &[""], &["nodes", "namespaces", "persistentvolumeclaims", "persistentvolumes", "services"]),
        rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
        rule(&["create"], &[""], &["bindings", "pods/binding"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(READ, &["apps"], &["replicasets", "statefulsets"]),
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        rule(READ, &["storage.k8s.io"], &["csinodes", "csidrivers", "csistoragecapacities", "storageclasses"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
    ]
}

/// The controller manager runs every controller under one identity (kube's
/// `--use-service-account-credentials=false`). The garbage collector and the namespace
/// controller act on every kind, so it reads, deletes, patches and updates everything
/// (RBAC objects included); it creates only what controllers make. It holds none of
/// the special verbs (`escalate`, `bind`, `impersonate`): an RBAC write it makes passes
/// the escalation checks only if it changes nothing but owner references and
/// finalizers (what garbage collection changes), or grants what it holds.
fn controller_manager_rules() -> Vec<Value> {
    let everything = &["get", "list", "watch", "delete", "deletecollection", "patch", "update"];
    vec![
        rule(everything, &["*"], &["*"]),
        rule(
            &["create"],
            &[""],
            &[
                "configmaps",
                "endpoints",
                "events",
                "persistentvolumeclaims",
                "pods",
                "pods/eviction",
                "secrets",
                "serviceaccounts",
                "serviceaccounts/token",
            ],
        ),
        rule(&["create"], &["apps"], &["controllerrevisions", "replicasets"]),
        rule(&["create"], &["batch"], &["jobs"]),
        rule(&["create"], &["discovery.k8s.io"], &["endpointslices"]),
        rule(&["create"], &["events.k8s.io"], &["events"]),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
        // The CSR approver and signer, for the signers keelson serves.
        json!({"verbs": ["approve", "sign"], "apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
            "resourceNames": ["kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kube-apiserver-client"]}),
    ]
}

/// A node agent's rights (kube's node rules, the `system:node` ClusterRole): register
/// and update Nodes, report its pods' status, create mirror pods and evictions, read
/// what its pods use, events, Leases, its certificate requests. The Node authorizer
/// applies these to every `system:node:NAME` and narrows the reads of Secrets,
/// ConfigMaps, claims and volumes, tokens and Leases to the node's own; admission
/// (NodeRestriction) narrows the writes to its own Node and pods.
pub fn node_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews", "localsubjectaccessreviews"]),
        rule(READ, &[""], &["services"]),
        rule(&["create", "get", "list", "watch", "patch", "update"], &[""], &["nodes"]),
        rule(&["patch", "update"], &[""], &["nodes/status"]),
        rule(&["create", "update", "patch"], &["", "events.k8s.io"], &["events"]),
        rule(READ, &[""], &["pods"]),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(READ, &[""], &["secrets", "configmaps"]),
        rule(&["get"], &[""], &["persistentvolumeclaims", "persistentvolumes", "endpoints"]),
        rule(&["get", "update", "patch"], &[""], &["persistentvolumeclaims/status"]),
        rule(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"]),
        rule(&["get", "create", "update", "patch", "delete"], &["coordination.k8s.io"], &["leases"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/openapi",
    "/openapi/*",
    "/version",
    "/version/",
];
const PUBLIC_URLS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// The bootstrap ClusterRoles, then the ClusterRoleBindings.
pub fn objects() -> Vec<Value> {
    let none = || json!({});
    vec![
        cluster_role("cluster-admin", none(), vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])]),
        aggregated("admin", none(), AGGREGATE_TO_ADMIN),
        aggregated("edit", json!({AGGREGATE_TO_ADMIN: "true"}), AGGREGATE_TO_EDIT),
        aggregated("view", json!({AGGREGATE_TO_EDIT: "true"}), AGGREGATE_TO_VIEW),
        cluster_role("system:aggregate-to-admin", json!({AGGREGATE_TO_ADMIN: "true"}), admin_rules()),
        cluster_role("system:aggregate-to-edit", json!({AGGREGATE_TO_EDIT: "true"}), edit_rules()),
        cluster_role("system:aggregate-to-view", json!({AGGREGATE_TO_VIEW: "true"}), view_rules()),
        cluster_role(
            "system:basic-user",
            none(),
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:auth-delegator",
            none(),
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
            ],
        ),
        cluster_role("system:discovery", none(), vec![url_rule(&["get"], DISCOVERY_URLS)]),
        cluster_role("system:public-info-viewer", none(), vec![url_rule(&["get"], PUBLIC_URLS)]),
        cluster_role(
            "system:monitoring",
            none(),
            vec![url_rule(
                &["get"],
                &["/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*", "/metrics"],
            )],
        ),
        cluster_role("system:kube-scheduler", none(), scheduler_rules()),
        cluster_role("system:kube-controller-manager", none(), controller_manager_rules()),
        cluster_role("system:node", none(), node_rules()),
        // Joining nodes: kube's roles, bound as kubeadm binds them. A bootstrap token
        // may ask for a node client certificate, which is then approved at once; a node
        // may ask to renew its own.
        cluster_role(
            "system:node-bootstrapper",
            none(),
            vec![rule(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"])],
        ),
        cluster_role(
            NODE_CLIENT_ROLE,
            none(),
            vec![rule(&["create"], &["certificates.k8s.io"], &["certificatesigningrequests/nodeclient"])],
        ),
        cluster_role(
            SELF_NODE_CLIENT_ROLE,
            none(),
            vec![rule(&["create"], &["certificates.k8s.io"], &["certificatesigningrequests/selfnodeclient"])],
        ),
        binding("cluster-admin", &[("Group", crate::authz::SUPERUSER_GROUP)]),
        binding("system:basic-user", &[("Group", "system:authenticated")]),
        binding("system:discovery", &[("Group", "system:authenticated")]),
        binding("system:public-info-viewer", &[("Group", "system:authenticated"), ("Group", "system:unauthenticated")]),
        binding("system:monitoring", &[("Group", "system:monitoring")]),
        binding("system:kube-scheduler", &[("User", "system:kube-scheduler")]),
        binding("system:kube-controller-manager", &[("User", "system:kube-controller-manager")]),
        // As in kube, bound to no one: the Node authorizer applies these rules to nodes,
        // narrowed to each node's own objects.
        binding("system:node", &[]),
        binding_to("keelson:kubelet-bootstrap", "system:node-bootstrapper", &[("Group", BOOTSTRAPPERS)]),
        binding_to("keelson:node-autoapprove-bootstrap", NODE_CLIENT_ROLE, &[("Group", BOOTSTRAPPERS)]),
        binding_to(
            "keelson:node-autoapprove-certificate-rotation",
            SELF_NODE_CLIENT_ROLE,
            &[("Group", "system:nodes")],
        ),
    ]
}

/// Whether a stored bootstrap object may be brought back to its definition.
pub fn may_update(stored: &Value) -> bool {
    stored["metadata"]["annotations"][AUTOUPDATE].as_str() != Some("false")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;
    use crate::authz::rbac::{Objects, Policy};
    use crate::authz::Attributes;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

    /// The policy of these ClusterRoles and ClusterRoleBindings.
    fn policy_of(objects: Vec<Value>) -> Policy {
        let (mut roles, mut bindings) = (Vec::new(), Vec::new());
        for object in objects {
            match object["kind"].as_str() {
                Some("ClusterRole") => roles.push(serde_json::from_value::<ClusterRole>(object).unwrap()),
                _ => bindings.push(serde_json::from_value::<ClusterRoleBinding>(object).unwrap()),
            }
        }
        Policy::build(&Objects { cluster_roles: &roles, cluster_role_bindings: &bindings, ..Objects::default() })
    }

    fn user(name: &str) -> User {
        User::new(name.into(), String::new(), Vec::new())
    }

    fn may(policy: &Policy, who: &User, verb: &str, group: &str, resource: &str, namespace: &str) -> bool {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let mut request = Attributes::resource(verb, group, resource, namespace);
        request.subresource = subresource;
        policy.authorize(who, &request).allowed
    }

    #[test]
    fn components_hold_what_they_use_and_no_more() {
        let policy = policy_of(objects());
        let scheduler = user("system:kube-scheduler");
        for (verb, group, resource) in [
            ("watch", "", "pods"),
            ("watch", "", "nodes"),
            ("list", "", "persistentvolumeclaims"),
            ("watch", "", "persistentvolumes"),
            ("create", "", "pods/binding"),
            ("patch", "", "pods/status"),
            ("create", "events.k8s.io", "events"),
            ("update", "coordination.k8s.io", "leases"),
        ] {
            assert!(may(&policy, &scheduler, verb, group, resource, "ns"), "scheduler {verb} {resource}");
        }
        assert!(!may(&policy, &scheduler, "create", "", "pods", "ns"));
        assert!(!may(&policy, &scheduler, "get", "", "secrets", "ns"));
        let controllers = user("system:kube-controller-manager");
        assert!(may(&policy, &controllers, "create", "", "pods", "ns"));
        assert!(may(&policy, &controllers, "delete", "rbac.authorization.k8s.io", "rolebindings", "ns"));
        assert!(may(&policy, &controllers, "update", "apps", "deployments/status", "ns"));
        assert!(!may(&policy, &controllers, "create", "rbac.authorization.k8s.io", "clusterrolebindings", ""));
        assert!(!may(&policy, &controllers, "escalate", "rbac.authorization.k8s.io", "clusterroles", ""));
        let nobody = user("jane");
        assert!(!may(&policy, &nobody, "get", "", "pods", "ns"));
        assert!(may(&policy, &nobody, "create", "authorization.k8s.io", "selfsubjectaccessreviews", ""));
        assert!(policy.authorize(&nobody, &Attributes::non_resource("get", "/apis/apps/v1")).allowed);
        assert!(!policy.authorize(&nobody, &Attributes::non_resource("get", "/metrics")).allowed);
    }

    #[test]
    fn admin_includes_edit_includes_view() {
        let mut objects = objects();
        for (name, role) in [("ann", "admin"), ("ed", "edit"), ("vi", "view")] {
            objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "name": name}]}));
        }
        let policy = policy_of(objects);
        let (admin, edit, view) = (user("ann"), user("ed"), user("vi"));
        for who in [&admin, &edit, &view] {
            assert!(may(&policy, who, "list", "apps", "deployments", "team"), "{}", who.name);
        }
        for who in [&admin, &edit] {
            assert!(may(&policy, who, "delete", "", "pods", "team"));
            assert!(may(&policy, who, "create", "", "pods/exec", "team"));
        }
        assert!(!may(&policy, &view, "delete", "", "pods", "team"));
        assert!(!may(&policy, &view, "get", "", "secrets", "team"), "view reads no Secrets");
        assert!(may(&policy, &admin, "create", "rbac.authorization.k8s.io", "rolebindings", "team"));
        assert!(!may(&policy, &edit, "create", "rbac.authorization.k8s.io", "rolebindings", "team"));
    }
}
