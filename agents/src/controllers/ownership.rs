//! Claiming (kube's ControllerRefManager): a controller owns the objects that name it
//! as their controller and match its selector. It adopts matching orphans and
//! releases children that no longer match, each with one strategic-merge patch of
//! `ownerReferences` (merged by uid, so other owners are kept).

use super::pods::{controller_of, controller_reference};
use super::runtime::queue::WorkQueue;
use super::runtime::{object_key, Cache};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keelson_engine::Selector;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::sync::Arc;

pub struct Claimer<'a> {
    pub owner: &'a ObjectMeta,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub selector: &'a Selector,
}

impl Claimer<'_> {
    /// What the owner may own in `cache`: the objects naming it among their owners,
    /// and the orphans of its namespace (some of which it may adopt).
    pub fn candidates<K: Resource>(&self, cache: &Cache<K>) -> Vec<Arc<K>> {
        let mut candidates = cache.owned_by(self.owner.uid.as_deref().unwrap_or_default());
        candidates.extend(cache.orphans_in(self.owner.namespace.as_deref().unwrap_or_default()));
        candidates
    }

    /// Everything in `cache` this controller owns once claimed (`candidates`, then
    /// `claim`).
    pub async fn claim_from<K>(&self, api: &Api<K>, cache: &Cache<K>) -> Result<Vec<Arc<K>>, kube::Error>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        self.claim(api, self.candidates(cache)).await
    }

    /// The candidates this controller owns once claimed, in the input order.
    pub async fn claim<K>(&self, api: &Api<K>, candidates: Vec<Arc<K>>) -> Result<Vec<Arc<K>>, kube::Error>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        let owner_uid = self.owner.uid.as_deref().unwrap_or_default();
        let owner_deleting = self.owner.deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for candidate in candidates {
            let meta = candidate.meta();
            let empty = Default::default();
            let matches = self.selector.matches(meta.labels.as_ref().unwrap_or(&empty));
            let name = meta.name.clone().unwrap_or_default();
            let uid = meta.uid.clone().unwrap_or_default();
            match controller_of(meta) {
                Some(r) if r.uid == owner_uid => {
                    if matches || owner_deleting {
                        owned.push(candidate);
                    } else {
                        let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": uid}});
                        ignore_gone(api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch)).await)?;
                    }
                }
                Some(_) => {}
                None if matches && !owner_deleting && meta.deletion_timestamp.is_none() => {
                    let reference = controller_reference(self.api_version, self.kind, self.owner);
                    let patch = json!({"metadata": {"ownerReferences": [reference], "uid": uid}});
                    if let Some(adopted) =
                        ignore_gone(api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch)).await)?
                    {
                        owned.push(Arc::new(adopted));
                    }
                }
                None => {}
            }
        }
        Ok(owned)
    }
}

/// The cache key of the `kind` object that controls `child`, if the cache has it (the
/// same uid: a namesake created since does not count).
pub fn controller_key<K: Resource>(owners: &Cache<K>, kind: &str, child: &ObjectMeta) -> Option<String> {
    let reference = controller_of(child).filter(|r| r.kind == kind)?;
    let owner = owners.get_in(child.namespace.as_deref().unwrap_or_default(), &reference.name)?;
    (owner.meta().uid.as_deref() == Some(reference.uid.as_str())).then(|| object_key(owner.as_ref()))
}

/// Enqueues every owner in `child`'s namespace whose selector selects it: an orphan
/// one of them may adopt. An empty selector (everything) adopts nothing.
pub fn enqueue_selecting<K: Resource>(
    owners: &Cache<K>,
    queue: &WorkQueue,
    child: &ObjectMeta,
    selector_of: impl Fn(&K) -> Option<Selector>,
) {
    let empty = Default::default();
    let labels = child.labels.as_ref().unwrap_or(&empty);
    for owner in owners.in_namespace(child.namespace.as_deref().unwrap_or_default()) {
        if selector_of(&owner).is_some_and(|s| !s.is_everything() && s.matches(labels)) {
            queue.add(&object_key(owner.as_ref()));
        }
    }
}

/// A child deleted or changed meanwhile is simply not claimed.
fn ignore_gone<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(None),
        Err(error) => Err(error),
    }
}
