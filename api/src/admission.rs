//! Admission: the checks and mutations that need cluster state, run after decoding
//! and before storage (kube-apiserver's default admission plugins that matter here).
//!
//! - NamespaceLifecycle: no creates in a namespace that is missing or terminating.
//! - ServiceAccount: a pod without one runs as `default`, and gets its API access
//!   volume ([`crate::token_volume`]).
//! - Priority: `priorityClassName` resolves to `priority` (unknown classes are refused).
//! - DefaultTolerationSeconds: pods tolerate not-ready/unreachable nodes for 300 s.

use crate::cache::WatchCache;
use crate::pod_security;
use crate::resources::ResourceInfo;
use keelson_engine::k8s_openapi::api::core::v1::{Pod, PodSpec, Toleration};
use keelson_engine::{ApiError, StatusReason};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Namespaces that always exist and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How long pods tolerate a node that is not ready or unreachable.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The one thing NamespaceLifecycle reads of a namespace. Decoding only this skips
/// the rest of the object (labels, managedFields) on every namespaced create.
#[derive(serde::Deserialize)]
struct NamespaceLife {
    #[serde(default)]
    metadata: LifeMeta,
}

#[derive(serde::Deserialize, Default)]
struct LifeMeta {
    #[serde(default, rename = "deletionTimestamp")]
    deletion_timestamp: Option<serde::de::IgnoredAny>,
    /// Only PodSecurity's labels are decoded.
    #[serde(default)]
    labels: pod_security::Labels,
}

/// How long a namespace this server deleted is read from the store, not the watch cache
/// (kube's NamespaceLifecycle keeps its force-live-lookup names as long).
const LIVE_LOOKUP_AFTER_DELETE: Duration = Duration::from_secs(30);

/// Namespaces whose deletion went through this server in the last
/// [`LIVE_LOOKUP_AFTER_DELETE`], as kube's NamespaceLifecycle remembers them: the watch
/// cache may not show the deletion yet, and a create a client sends after its delete
/// was answered must still be refused. Almost always empty, which a create learns
/// without taking the lock.
#[derive(Default)]
pub struct DeletedNamespaces {
    remembered: AtomicUsize,
    names: Mutex<HashMap<String, Instant>>,
}

impl DeletedNamespaces {
    pub fn note(&self, namespace: &str) {
        let mut names = self.names.lock();
        names.insert(namespace.to_owned(), Instant::now());
        self.remembered.store(names.len(), Ordering::Release);
    }

    fn recently(&self, namespace: &str) -> bool {
        if self.remembered.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut names = self.names.lock();
        names.retain(|_, at| at.elapsed() < LIVE_LOOKUP_AFTER_DELETE);
        self.remembered.store(names.len(), Ordering::Release);
        names.contains_key(namespace)
    }
}

/// NamespaceLifecycle for a create of a namespaced object; returns the namespace's
/// PodSecurity labels, read in the same decode.
pub fn check_namespace(
    cache: &WatchCache,
    deleted: &DeletedNamespaces,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> Result<pod_security::Labels, ApiError> {
    if !info.namespaced {
        return Ok(pod_security::Labels::default());
    }
    let mut life = namespace_life(cache, namespace, false)?;
    if life.as_ref().is_some_and(|ns| ns.metadata.deletion_timestamp.is_none()) && deleted.recently(namespace) {
        life = namespace_life(cache, namespace, true)?;
    }
    match life {
        None => Err(ApiError::not_found("", "namespaces", namespace)),
        Some(ns) if ns.metadata.deletion_timestamp.is_some() => {
            Err(ApiError::new(
                StatusReason::Forbidden,
                format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    info.plural,
                ),
            ))
        }
        Some(ns) => Ok(ns.metadata.labels),
    }
}

/// The namespace's lifecycle fields, from the watch cache or (`live`) the store.
fn namespace_life(cache: &WatchCache, namespace: &str, live: bool) -> Result<Option<NamespaceLife>, ApiError> {
    let key = keelson_store::object_key("namespaces", None, namespace);
    let found = if live { cache.find_in_store(key.as_bytes()) } else { cache.find(key.as_bytes()) };
    match found.map_err(ApiError::internal)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(ApiError::internal),
        None => Ok(None),
    }
}

/// The namespace's PodSecurity labels (none if it is gone), for judging an update.
pub fn pod_security_labels(cache: &WatchCache, namespace: &str) -> Result<pod_security::Labels, ApiError> {
    Ok(namespace_life(cache, namespace, false)?.map(|ns| ns.metadata.labels).unwrap_or_default())
}

/// The one field of a PriorityClass that Priority admission reads.
#[derive(serde::Deserialize)]
struct ClassValue {
    #[serde(default)]
    value: i32,
}

/// The pod admission plugins, on the defaulted pod.
pub fn admit_pod(
    cache: &WatchCache,
    namespace: &str,
    pod: &mut Pod,
    suffix: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    let spec = pod.spec.get_or_insert_with(Default::default);
    if spec.service_account_name.as_deref().unwrap_or("").is_empty() {
        spec.service_account_name = Some("default".to_owned());
    }
    crate::token_volume::add(cache, namespace, &pod.metadata, spec, suffix)?;
    let class = spec.priority_class_name.as_deref().unwrap_or("");
    if class.is_empty() {
        spec.priority.get_or_insert(0);
    } else {
        let key = keelson_store::object_key("priorityclasses", None, class);
        let priority = match cache.find(key.as_bytes()).map_err(ApiError::internal)? {
            Some(bytes) => serde_json::from_slice::<ClassValue>(&bytes).map_err(ApiError::internal)?.value,
            None if class == "system-cluster-critical" => 2_000_000_000,
            None if class == "system-node-critical" => 2_000_001_000,
            None => {
                return Err(ApiError::new(
                    StatusReason::Forbidden,
                    format!(
                        "pods \"{}\" is forbidden: no PriorityClass with name {class} was found",
                        pod.metadata.name.as_deref().unwrap_or("")
                    ),
                ))
            }
        };
        if spec.priority.is_some_and(|given| given != priority) {
            return Err(ApiError::new(
                StatusReason::Forbidden,
                "the integer value of priority must not be provided in pod spec; priority admission controller computed a different value from the given PriorityClass name",
            ));
        }
        spec.priority = Some(priority);
    }
    spec.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".to_owned());
    add_default_tolerations(spec);
    Ok(())
}

fn add_default_tolerations(spec: &mut PodSpec) {
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let covered = list.iter().any(|t| {
            let effect = t.effect.as_deref().unwrap_or("");
            let t_key = t.key.as_deref().unwrap_or("");
            let exists_all = t_key.is_empty() && t.operator.as_deref() == Some("Exists");
            (t_key == key || exists_all) && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            list.push(Toleration {
                key: Some(key.to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some("NoExecute".to_owned()),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
                value: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deleted_namespaces_are_remembered_by_name() {
        let deleted = DeletedNamespaces::default();
        assert!(!deleted.recently("doomed"), "nothing noted: no lock taken, nothing found");
        deleted.note("doomed");
        assert!(deleted.recently("doomed"));
        assert!(!deleted.recently("other"));
    }

    #[test]
    fn pods_get_a_service_account_priority_and_tolerations() {
        let store = keelson_store::Store::in_memory(Default::default()).unwrap();
        let cache = WatchCache::start(store.clone());
        let mut pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}})).unwrap();
        admit_pod(&cache, "team", &mut pod, || "abcde".into()).unwrap();
        let admitted = serde_json::to_value(&pod).unwrap();
        assert_eq!(admitted["spec"]["serviceAccountName"], "default");
        assert_eq!(admitted["spec"]["priority"], 0);
        assert_eq!(admitted["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(admitted["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(
            admitted["spec"]["tolerations"][0],
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300})
        );
        admit_pod(&cache, "team", &mut pod, || "abcde".into()).unwrap();
        assert_eq!(serde_json::to_value(&pod).unwrap(), admitted, "idempotent");

        let mut gold: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "gold"}})).unwrap();
        assert_eq!(admit_pod(&cache, "team", &mut gold, || "abcde".into()).unwrap_err().code(), 403);
        let key = keelson_store::object_key("priorityclasses", None, "gold");
        let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "gold"}, "value": 1000});
        store.create(key.into_bytes(), serde_json::to_vec(&class).unwrap()).wait().unwrap();
        admit_pod(&cache, "team", &mut gold, || "abcde".into()).unwrap();
        assert_eq!(gold.spec.as_ref().unwrap().priority, Some(1000));
        let mut insisting: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "gold", "priority": 7}}),
        )
        .unwrap();
        assert_eq!(admit_pod(&cache, "team", &mut insisting, || "abcde".into()).unwrap_err().code(), 403);
        let mut critical: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "system-node-critical"}}),
        )
        .unwrap();
        admit_pod(&cache, "team", &mut critical, || "abcde".into()).unwrap();
        assert_eq!(critical.spec.as_ref().unwrap().priority, Some(2_000_001_000));
        cache.stop();
        store.close();
    }
}
