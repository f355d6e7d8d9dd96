//! Admission: the checks and mutations that need cluster state, run after decoding
//! and before storage (kube-apiserver's default admission plugins that matter here).
//!
//! - NamespaceLifecycle: no creates in a namespace that is missing or terminating.
//! - ServiceAccount: a pod without one runs as `default`, and gets its API access
//!   volume ([`crate::token_volume`]).
//! - Priority: `priorityClassName` resolves to `priority` (unknown classes are refused).
//! - DefaultTolerationSeconds: pods tolerate not-ready/unreachable nodes for 300 s.

use crate::cache::WatchCache;
use crate::object;
use crate::pod_security;
use crate::resources::ResourceInfo;
use keelson_engine::{ApiError, StatusReason};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Namespaces that always exist and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How long pods tolerate a node that is not ready or unreachable.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

fn read(cache: &WatchCache, key: &str) -> Result<Option<Value>, ApiError> {
    match cache.find(key.as_bytes()).map_err(ApiError::internal)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(ApiError::internal),
        None => Ok(None),
    }
}

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

/// The pod admission plugins, on the defaulted pod.
pub fn admit_pod(
    cache: &WatchCache,
    namespace: &str,
    pod: &mut Value,
    suffix: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    let spec = object::entry(pod, &["spec"]);
    if spec.get("serviceAccountName").and_then(Value::as_str).unwrap_or("").is_empty() {
        spec["serviceAccountName"] = json!("default");
    }
    crate::token_volume::add(cache, namespace, pod, suffix)?;
    let spec = object::entry(pod, &["spec"]);
    let class = spec.get("priorityClassName").and_then(Value::as_str).unwrap_or("").to_string();
    if class.is_empty() {
        if spec.get("priority").is_none_or(Value::is_null) {
            spec["priority"] = json!(0);
        }
    } else {
        let key = keelson_store::object_key("priorityclasses", None, &class);
        let priority = match read(cache, &key)? {
            Some(pc) => pc.get("value").cloned().unwrap_or(json!(0)),
            None if class == "system-cluster-critical" => json!(2_000_000_000),
            None if class == "system-node-critical" => json!(2_000_001_000),
            None => {
                return Err(ApiError::new(
                    StatusReason::Forbidden,
                    format!(
                        "pods \"{}\" is forbidden: no PriorityClass with name {class} was found",
                        object::name(pod)
                    ),
                ))
            }
        };
        let spec = object::entry(pod, &["spec"]);
        if let Some(given) = spec.get("priority").filter(|p| !p.is_null()) {
            if *given != priority {
                return Err(ApiError::new(
                    StatusReason::Forbidden,
                    "the integer value of priority must not be provided in pod spec; priority admission controller computed a different value from the given PriorityClass name",
                ));
            }
        }
        spec["priority"] = priority;
    }
    let spec = object::entry(pod, &["spec"]);
    if spec.get("preemptionPolicy").is_none_or(Value::is_null) {
        spec["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
    add_default_tolerations(spec);
    Ok(())
}

fn add_default_tolerations(spec: &mut Value) {
    let list = object::array_entry(spec, &["tolerations"]);
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let covered = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let t_key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let exists_all = t_key.is_empty() && t.get("operator").and_then(Value::as_str) == Some("Exists");
            (t_key == key || exists_all) && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        admit_pod(&cache, "team", &mut pod, || "abcde".into()).unwrap();
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        assert_eq!(pod["spec"]["priority"], 0);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(pod["spec"]["tolerations"][0]["tolerationSeconds"], 300);
        admit_pod(&cache, "team", &mut pod, || "abcde".into()).unwrap();
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2, "idempotent");

        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "gold"}});
        assert_eq!(admit_pod(&cache, "team", &mut pod, || "abcde".into()).unwrap_err().code(), 403);
        cache.stop();
        store.close();
    }
}
