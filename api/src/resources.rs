//! The resource registry: every resource the server serves, with its group, version,
//! kind, scope, verbs, short names and subresources.
//!
//! One static table drives routing, discovery (aggregated and legacy), `kubectl
//! api-resources`, storage keys and the OpenAPI index, so a resource is added in one
//! place.

use crate::event_view::StorageView;
use crate::kinds::{self, KindCodec};

/// The verbs kube-apiserver lists for a full read-write resource.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const READ_VERBS: &[&str] = &["get", "list"];
const CREATE_ONLY: &[&str] = &["create"];
const SUB_RW: &[&str] = &["get", "patch", "update"];

/// A subresource (`status`, `scale`, `binding`, ...).
#[derive(Debug)]
pub struct Subresource {
    pub name: &'static str,
    /// The kind exchanged on this subresource, as group/version/kind.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served resource.
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    /// The plural, lower-case resource name in URLs (`deployments`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// The resource segment of the storage key (`/registry/<storage>/...`).
    pub storage: &'static str,
    /// Decoding, defaulting and validation of this kind's objects.
    pub codec: &'static dyn KindCodec,
    /// For a resource stored as another's objects (events.k8s.io Events are core
    /// Events), the conversion between the two forms.
    pub view: Option<&'static StorageView>,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.group_resource())
    }
}

impl ResourceInfo {
    /// `apiVersion` of this resource's objects (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Converts a stored object to the form this resource serves (a no-op unless the
    /// resource is a view of another's storage).
    pub fn to_served(&self, object: &mut serde_json::Value) {
        if let Some(view) = self.view {
            (view.from_storage)(object);
        }
    }

    /// Converts an object in the served form to the form it is stored in.
    pub fn to_stored(&self, object: &mut serde_json::Value) {
        if let Some(view) = self.view {
            (view.to_storage)(object);
        }
    }

    /// `deployments.apps`, or `pods` for the core group: how Kubernetes names a resource
    /// in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether `status` is a subresource: then the main resource ignores status changes.
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        keelson_store::object_key(self.storage, namespace.filter(|_| self.namespaced), name)
    }

    /// The storage prefix of a collection (one namespace, or all).
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        keelson_store::resource_prefix(self.storage, namespace.filter(|_| self.namespaced))
    }
}

const fn status_of(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource { name: "status", group, version, kind, verbs: SUB_RW }
}

const fn scale() -> Subresource {
    Subresource { name: "scale", group: "autoscaling", version: "v1", kind: "Scale", verbs: SUB_RW }
}

macro_rules! resource {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $namespaced:expr,
     short: $short:expr, cat: $cat:expr, verbs: $verbs:expr, subs: $subs:expr, codec: $codec:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $namespaced,
            short_names: $short,
            categories: $cat,
            verbs: $verbs,
            subresources: $subs,
            storage: $plural,
            codec: $codec,
            view: None,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every served resource, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    resource!("", "v1", "bindings", "binding", "Binding", true, short: NONE, cat: NONE, verbs: CREATE_ONLY, subs: &[],
        codec: &kinds::BINDING),
    resource!("", "v1", "componentstatuses", "componentstatus", "ComponentStatus", false, short: &["cs"], cat: NONE,
        verbs: READ_VERBS, subs: &[], codec: &kinds::COMPONENT_STATUS),
    resource!("", "v1", "configmaps", "configmap", "ConfigMap", true, short: &["cm"], cat: NONE, verbs: ALL_VERBS,
        subs: &[], codec: &kinds::CONFIG_MAP),
    resource!("", "v1", "endpoints", "endpoints", "Endpoints", true, short: &["ep"], cat: NONE, verbs: ALL_VERBS,
        subs: &[], codec: &kinds::ENDPOINTS),
    resource!("", "v1", "events", "event", "Event", true, short: &["ev"], cat: NONE, verbs: ALL_VERBS, subs: &[],
        codec: &kinds::EVENT),
    resource!("", "v1", "limitranges", "limitrange", "LimitRange", true, short: &["limits"], cat: NONE,
        verbs: ALL_VERBS, subs: &[], codec: &kinds::LIMIT_RANGE),
    resource!("", "v1", "namespaces", "namespace", "Namespace", false, short: &["ns"], cat: NONE,
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        subs: &[
            Subresource { name: "finalize", group: "", version: "v1", kind: "Namespace", verbs: &["update"] },
            status_of("", "v1", "Namespace"),
        ],
        codec: &kinds::NAMESPACE),
    resource!("", "v1", "nodes", "node", "Node", false, short: &["no"], cat: NONE, verbs: ALL_VERBS,
        subs: &[status_of("", "v1", "Node")], codec: &kinds::NODE),
    resource!("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", true,
        short: &["pvc"], cat: ALL, verbs: ALL_VERBS, subs: &[status_of("", "v1", "PersistentVolumeClaim")],
        codec: &kinds::PERSISTENT_VOLUME_CLAIM),
    resource!("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", false, short: &["pv"],
        cat: NONE, verbs: ALL_VERBS, subs: &[status_of("", "v1", "PersistentVolume")],
        codec: &kinds::PERSISTENT_VOLUME),
    resource!("", "v1", "pods", "pod", "Pod", true, short: &["po"], cat: ALL, verbs: ALL_VERBS,
        subs: &[
            Subresource { name: "binding", group: "", version: "v1", kind: "Binding", verbs: CREATE_ONLY },
            Subresource { name: "eviction", group: "policy", version: "v1", kind: "Eviction", verbs: CREATE_ONLY },
            Subresource { name: "log", group: "", version: "v1", kind: "Pod", verbs: &["get"] },
            Subresource { name: "attach", group: "", version: "v1", kind: "PodAttachOptions", verbs: &["create", "get"] },
            Subresource { name: "exec", group: "", version: "v1", kind: "PodExecOptions", verbs: &["create", "get"] },
            Subresource {
                name: "portforward",
                group: "",
                version: "v1",
                kind: "PodPortForwardOptions",
                verbs: &["create", "get"],
            },
            status_of("", "v1", "Pod"),
        ],
        codec: &kinds::POD),
    resource!("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", true, short: &["quota"], cat: NONE,
        verbs: ALL_VERBS, subs: &[status_of("", "v1", "ResourceQuota")], codec: &kinds::RESOURCE_QUOTA),
    resource!("", "v1", "secrets", "secret", "Secret", true, short: NONE, cat: NONE, verbs: ALL_VERBS, subs: &[],
        codec: &kinds::SECRET),
    resource!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, short: &["sa"], cat: NONE,
        verbs: ALL_VERBS,
        subs: &[Subresource { name: "token", group: "authentication.k8s.io", version: "v1", kind: "TokenRequest",
            verbs: CREATE_ONLY }],
        codec: &kinds::SERVICE_ACCOUNT),
    resource!("", "v1", "services", "service", "Service", true, short: &["svc"], cat: ALL,
        verbs: &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        subs: &[status_of("", "v1", "Service")], codec: &kinds::SERVICE),
    // apps/v1
    resource!("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", true, short: NONE,
        cat: NONE, verbs: ALL_VERBS, subs: &[], codec: &kinds::CONTROLLER_REVISION),
    resource!("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, short: &["ds"], cat: ALL,
        verbs: ALL_VERBS, subs: &[status_of("apps", "v1", "DaemonSet")], codec: &kinds::DAEMON_SET),
    resource!("apps", "v1", "deployments", "deployment", "Deployment", true, short: &["deploy"], cat: ALL,
        verbs: ALL_VERBS, subs: &[scale(), status_of("apps", "v1", "Deployment")], codec: &kinds::DEPLOYMENT),
    resource!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, short: &["rs"], cat: ALL,
        verbs: ALL_VERBS, subs: &[scale(), status_of("apps", "v1", "ReplicaSet")], codec: &kinds::REPLICA_SET),
    resource!("apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, short: &["sts"], cat: ALL,
        verbs: ALL_VERBS, subs: &[scale(), status_of("apps", "v1", "StatefulSet")], codec: &kinds::STATEFUL_SET),
    // authentication + authorization (reviews are answered, never stored)
    resource!("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", false,
        short: NONE, cat: NONE, verbs: CREATE_ONLY, subs: &[], codec: &kinds::SELF_SUBJECT_REVIEW),
    resource!("authentication.k8s.io", "v1", "tokenreviews", "tokenreview", "TokenReview", false,
        short: NONE, cat: NONE, verbs: CREATE_ONLY, subs: &[], codec: &kinds::TOKEN_REVIEW),
    resource!("authorization.k8s.io", "v1", "localsubjectaccessreviews", "localsubjectaccessreview",
        "LocalSubjectAccessReview", true, short: NONE, cat: NONE, verbs: CREATE_ONLY, subs: &[],
        codec: &kinds::LOCAL_SUBJECT_ACCESS_REVIEW),
    resource!("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
        "SelfSubjectAccessReview", false, short: NONE, cat: NONE, verbs: CREATE_ONLY, subs: &[],
        codec: &kinds::SELF_SUBJECT_ACCESS_REVIEW),
    resource!("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "selfsubjectrulesreview",
        "SelfSubjectRulesReview", false, short: NONE, cat: NONE, verbs: CREATE_ONLY, subs: &[],
        codec: &kinds::SELF_SUBJECT_RULES_REVIEW),
    resource!("authorization.k8s.io", "v1", "subjectaccessreviews", "subjectaccessreview", "SubjectAccessReview",
        false, short: NONE, cat: NONE, verbs: CREATE_ONLY, subs: &[], codec: &kinds::SUBJECT_ACCESS_REVIEW),
    // batch/v1
    resource!("batch", "v1", "cronjobs", "cronjob", "CronJob", true, short: &["cj"], cat: ALL, verbs: ALL_VERBS,
        subs: &[status_of("batch", "v1", "CronJob")], codec: &kinds::CRON_JOB),
    resource!("batch", "v1", "jobs", "job", "Job", true, short: NONE, cat: ALL, verbs: ALL_VERBS,
        subs: &[status_of("batch", "v1", "Job")], codec: &kinds::JOB),
    // coordination, discovery, events, policy, rbac, scheduling
    resource!("certificates.k8s.io", "v1", "certificatesigningrequests", "certificatesigningrequest",
        "CertificateSigningRequest", false, short: &["csr"], cat: NONE, verbs: ALL_VERBS,
        subs: &[status_of("certificates.k8s.io", "v1", "CertificateSigningRequest"),
            Subresource { name: "approval", group: "certificates.k8s.io", version: "v1",
                kind: "CertificateSigningRequest", verbs: SUB_RW }],
        codec: &kinds::CERTIFICATE_SIGNING_REQUEST),
    resource!("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, short: NONE, cat: NONE,
        verbs: ALL_VERBS, subs: &[], codec: &kinds::LEASE),
    resource!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, short: NONE,
        cat: NONE, verbs: ALL_VERBS, subs: &[], codec: &kinds::ENDPOINT_SLICE),
    ResourceInfo {
        storage: "events",
        view: Some(&crate::event_view::EVENTS_V1),
        ..resource!("events.k8s.io", "v1", "events", "event", "Event", true, short: &["ev"], cat: NONE,
            verbs: ALL_VERBS, subs: &[], codec: &kinds::EVENTS_V1_EVENT)
    },
    resource!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true,
        short: &["pdb"], cat: NONE, verbs: ALL_VERBS, subs: &[status_of("policy", "v1", "PodDisruptionBudget")],
        codec: &kinds::POD_DISRUPTION_BUDGET),
    resource!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding",
        false, short: NONE, cat: NONE, verbs: ALL_VERBS, subs: &[], codec: &kinds::CLUSTER_ROLE_BINDING),
    resource!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", false, short: NONE,
        cat: NONE, verbs: ALL_VERBS, subs: &[], codec: &kinds::CLUSTER_ROLE),
    resource!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, short: NONE,
        cat: NONE, verbs: ALL_VERBS, subs: &[], codec: &kinds::ROLE_BINDING),
    resource!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, short: NONE, cat: NONE,
        verbs: ALL_VERBS, subs: &[], codec: &kinds::ROLE),
    resource!("scheduling.k8s.io", "v1", "priorityclasses", "priorityclass", "PriorityClass", false, short: &["pc"],
        cat: NONE, verbs: ALL_VERBS, subs: &[], codec: &kinds::PRIORITY_CLASS),
];

/// The API groups, in the order discovery lists them (core first).
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups
}

/// The resources of one group version.
pub fn in_group_version<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES.iter().filter(move |r| r.group == group && r.version == version)
}

/// Looks a resource up by its URL coordinates.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group and kind (for bindings, evictions and owner lookups).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_and_named_consistently() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(!(a.group == b.group && a.plural == b.plural), "{a:?} twice");
                let a_view_of_b = a.view.is_some() || b.view.is_some();
                assert!(a.storage != b.storage || a_view_of_b, "{a:?} and {b:?} share storage");
            }
            assert_eq!(a.singular, a.kind.to_lowercase(), "{a:?}");
            assert!(a.verbs.windows(2).all(|w| w[0] < w[1]), "{a:?} verbs unsorted");
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(find("apps", "v1", "deployments").unwrap().kind, "Deployment");
        assert_eq!(by_kind("", "Pod").unwrap().plural, "pods");
        assert!(find("", "v1", "widgets").is_none());
        assert_eq!(groups()[0], "");
        assert_eq!(find("", "v1", "pods").unwrap().key(Some("default"), "p"), "/registry/pods/default/p");
        assert_eq!(find("", "v1", "nodes").unwrap().key(Some("ignored"), "n"), "/registry/nodes/n");
    }
}
