//! An informer's cache: the objects of one kind as the watch last reported them,
//! indexed by namespace and by owner.
//!
//! The informer task is the only writer; reconcilers on every worker read. Reads take
//! a shared lock just long enough to clone `Arc`s out, so a reconciler never holds
//! the lock while it talks to the API.

use kube::Resource;
use parking_lot::RwLock;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `namespace/name`, or `name` for a cluster-scoped object (client-go's key).
pub fn object_key<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Splits a key into namespace (empty for cluster-scoped) and name.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The owner-index entries of an object: the uids its `ownerReferences` name, and,
/// for an object without a controller, its namespace's orphan entry (uids never
/// contain a `/`).
fn owner_entries<K: Resource>(object: &K) -> Vec<String> {
    let meta = object.meta();
    let mut entries: Vec<String> = meta.owner_references.iter().flatten().map(|r| r.uid.clone()).collect();
    if !meta.owner_references.iter().flatten().any(|r| r.controller == Some(true)) {
        entries.push(orphan_entry(meta.namespace.as_deref().unwrap_or_default()));
    }
    entries
}

fn orphan_entry(namespace: &str) -> String {
    format!("orphans/{namespace}")
}

struct Inner<K> {
    objects: HashMap<String, Arc<K>>,
    by_namespace: HashMap<String, BTreeSet<String>>,
    by_owner: HashMap<String, HashSet<String>>,
}

impl<K: Resource> Inner<K> {
    /// The objects an index entry lists.
    fn objects_at<'a>(&self, keys: impl Iterator<Item = &'a String>) -> Vec<Arc<K>> {
        keys.filter_map(|k| self.objects.get(k).cloned()).collect()
    }

    fn unindex(&mut self, key: &str, object: &K) {
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        if let Some(keys) = self.by_namespace.get_mut(&namespace) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_namespace.remove(&namespace);
            }
        }
        for entry in owner_entries(object) {
            if let Some(keys) = self.by_owner.get_mut(&entry) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_owner.remove(&entry);
                }
            }
        }
    }

    fn index(&mut self, key: &str, object: &K) {
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        self.by_namespace.entry(namespace).or_default().insert(key.to_string());
        for entry in owner_entries(object) {
            self.by_owner.entry(entry).or_default().insert(key.to_string());
        }
    }
}

/// The objects of one kind.
pub struct Cache<K> {
    inner: RwLock<Inner<K>>,
    synced: AtomicBool,
}

impl<K: Resource> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            inner: RwLock::new(Inner {
                objects: HashMap::new(),
                by_namespace: HashMap::new(),
                by_owner: HashMap::new(),
            }),
            synced: AtomicBool::new(false),
        }
    }
}

impl<K: Resource> Cache<K> {
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.inner.read().objects.get(key).cloned()
    }

    pub fn get_in(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        if namespace.is_empty() {
            self.get(name)
        } else {
            self.get(&format!("{namespace}/{name}"))
        }
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.inner.read().objects.values().cloned().collect()
    }

    /// Every object in `namespace`, in name order.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read();
        inner.objects_at(inner.by_namespace.get(namespace).into_iter().flatten())
    }

    /// How many objects `namespace` holds.
    pub fn count_in(&self, namespace: &str) -> usize {
        self.inner.read().by_namespace.get(namespace).map_or(0, BTreeSet::len)
    }

    /// Every object naming `uid` among its owners.
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read();
        inner.objects_at(inner.by_owner.get(uid).into_iter().flatten())
    }

    /// Every object in `namespace` without a controller (candidates for adoption).
    pub fn orphans_in(&self, namespace: &str) -> Vec<Arc<K>> {
        self.owned_by(&orphan_entry(namespace))
    }

    pub fn len(&self) -> usize {
        self.inner.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has been loaded.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub(super) fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Stores `object`; returns the version it replaced.
    pub(super) fn apply(&self, object: Arc<K>) -> Option<Arc<K>> {
        let key = object_key(object.as_ref());
        let mut inner = self.inner.write();
        let old = inner.objects.insert(key.clone(), Arc::clone(&object));
        if let Some(old) = &old {
            inner.unindex(&key, old);
        }
        inner.index(&key, &object);
        old
    }

    /// Drops `key`; returns what was stored.
    pub(super) fn remove(&self, key: &str) -> Option<Arc<K>> {
        let mut inner = self.inner.write();
        let old = inner.objects.remove(key)?;
        inner.unindex(key, &old);
        Some(old)
    }

    /// Replaces everything with a fresh list, as one swap; returns what was stored
    /// before, by key (the informer tells from it what changed while it re-listed).
    pub(super) fn replace(&self, objects: &[Arc<K>]) -> HashMap<String, Arc<K>> {
        let mut fresh: Inner<K> =
            Inner { objects: HashMap::new(), by_namespace: HashMap::new(), by_owner: HashMap::new() };
        for object in objects {
            let key = object_key(object.as_ref());
            fresh.index(&key, object.as_ref());
            fresh.objects.insert(key, Arc::clone(object));
        }
        std::mem::replace(&mut *self.inner.write(), fresh).objects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some(ns.into());
        pod.metadata.name = Some(name.into());
        pod.metadata.owner_references =
            owner.map(|uid| vec![OwnerReference { uid: uid.into(), name: "o".into(), ..Default::default() }]);
        Arc::new(pod)
    }

    #[test]
    fn indexes_follow_updates_and_removals() {
        let cache = Cache::<Pod>::default();
        assert!(cache.apply(pod("a", "p1", Some("u1"))).is_none());
        cache.apply(pod("a", "p2", Some("u1")));
        cache.apply(pod("b", "p1", None));
        assert_eq!(cache.in_namespace("a").len(), 2);
        assert_eq!(cache.owned_by("u1").len(), 2);
        // An owner reference that is not a controller leaves the pod an orphan.
        assert_eq!(cache.orphans_in("a").len(), 2);
        assert_eq!(cache.orphans_in("b").len(), 1);
        // Re-owning moves the pod between owner index entries.
        assert!(cache.apply(pod("a", "p2", Some("u2"))).is_some());
        assert_eq!(cache.owned_by("u1").len(), 1);
        assert_eq!(cache.owned_by("u2").len(), 1);
        assert!(cache.remove("a/p1").is_some());
        assert!(cache.owned_by("u1").is_empty());
        assert_eq!(cache.get_in("b", "p1").map(|p| p.metadata.name.clone().unwrap()), Some("p1".into()));
        let before = cache.replace(&[pod("b", "p1", None)]);
        assert_eq!(before.len(), 2, "a/p2 and b/p1 were stored");
        assert!(cache.in_namespace("a").is_empty());
        assert_eq!(cache.len(), 1);
    }
}
