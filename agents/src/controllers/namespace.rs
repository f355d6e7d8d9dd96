//! The Namespace controller: empties a namespace being deleted, then lets it go.
//!
//! For every namespaced resource the server serves (found through discovery, cached
//! for a minute) it deletes the collection in the namespace, then checks what is
//! left: pods on nodes take their grace period. While anything remains, the
//! namespace carries a `NamespaceContentRemaining` condition and is looked at again
//! shortly; once empty, the `kubernetes` finalizer is removed through the `finalize`
//! subresource and the server deletes the namespace.

use super::runtime::queue::WorkQueue;
use super::runtime::{ignore_not_found, Action, Cache, Informers, ReconcileError, Reconciler};
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::discovery::{verbs, Discovery, Scope};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a discovery result is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);
/// How soon a namespace with content left is looked at again.
const RECHECK: Duration = Duration::from_secs(2);
const FINALIZER: &str = "kubernetes";

pub struct NamespaceController {
    client: Client,
    namespaces: Arc<Cache<Namespace>>,
    discovered: Mutex<Option<(Instant, Arc<Vec<ApiResource>>)>>,
}

impl NamespaceController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let informer = informers.get::<Namespace>();
        let q = Arc::clone(queue);
        informer.on_change(move |change| {
            let ns = change.object();
            if ns.metadata.deletion_timestamp.is_some() {
                q.add(ns.metadata.name.as_deref().unwrap_or_default());
            }
        });
        Arc::new(NamespaceController {
            client: informers.client().clone(),
            namespaces: informer.cache(),
            discovered: Mutex::new(None),
        })
    }

    /// The namespaced resources that can be listed and deleted as a collection.
    async fn resources(&self) -> Result<Arc<Vec<ApiResource>>, kube::Error> {
        if let Some((at, list)) = self.discovered.lock().as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(Arc::clone(list));
            }
        }
        let discovery = Discovery::new(self.client.clone()).run().await?;
        let mut list = Vec::new();
        for group in discovery.groups() {
            // Each resource once, at its group's preferred version.
            for (resource, capabilities) in group.recommended_resources() {
                if capabilities.scope == Scope::Namespaced
                    && capabilities.supports_operation(verbs::DELETE_COLLECTION)
                    && capabilities.supports_operation(verbs::LIST)
                {
                    list.push(resource);
                }
            }
        }
        let list = Arc::new(list);
        *self.discovered.lock() = Some((Instant::now(), Arc::clone(&list)));
        Ok(list)
    }

    /// Sets (or with `None` clears) the content-remaining condition; returns the
    /// namespace as written, if it was.
    async fn set_condition(
        &self,
        ns: &Namespace,
        condition: Option<NamespaceCondition>,
    ) -> Result<Option<Namespace>, kube::Error> {
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        let current = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let mut conditions: Vec<NamespaceCondition> =
            current.iter().filter(|c| c.type_ != "NamespaceContentRemaining").cloned().collect();
        if let Some(condition) = condition {
            let same = current
                .iter()
                .any(|c| c.type_ == condition.type_ && c.status == condition.status && c.message == condition.message);
            if same {
                return Ok(None);
            }
            conditions.push(condition);
        } else if conditions.len() == current.len() {
            return Ok(None);
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": conditions}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await.map(Some)
    }
}

impl Reconciler for NamespaceController {
    async fn reconcile(&self, name: &str) -> Result<Action, ReconcileError> {
        let Some(ns) = self.namespaces.get(name) else { return Ok(Action::Done) };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(Action::Done);
        }
        let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(Action::Done);
        }
        let mut remaining = Vec::new();
        for resource in self.resources().await?.iter() {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), name, resource);
            match api.delete_collection(&DeleteParams::background(), &ListParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
                Err(error) => return Err(error.into()),
            }
            let left = api.list(&ListParams::default().limit(1)).await?;
            if !left.items.is_empty() {
                remaining.push(resource.plural.clone());
            }
        }
        if !remaining.is_empty() {
            let condition = NamespaceCondition {
                type_: "NamespaceContentRemaining".into(),
                status: "True".into(),
                reason: Some("SomeResourcesRemain".into()),
                message: Some(format!("Some resources are remaining: {}", remaining.join(", "))),
                last_transition_time: Some(Time(Timestamp::now())),
            };
            self.set_condition(&ns, Some(condition)).await?;
            return Ok(Action::RequeueAfter(RECHECK));
        }
        // Finalize the version just written: the cached one is stale after a write.
        let written = self.set_condition(&ns, None).await?;
        let mut finalized = written.unwrap_or_else(|| (*ns).clone());
        finalized.spec.get_or_insert_with(Default::default).finalizers =
            Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
        let api: Api<Namespace> = Api::all(self.client.clone());
        ignore_not_found(api.replace_subresource("finalize", name, &PostParams::default(), &finalized).await)?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use serde_json::json;

    #[tokio::test]
    async fn a_deleted_namespace_is_emptied_then_finalized() {
        let rig = Rig::new();
        let controller = NamespaceController::register(&rig.informers, &rig.queue);
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "team"}, "spec": {"finalizers": [FINALIZER]}}))
                .expect("a namespace");
        rig.fake.insert(&namespace);
        rig.fake.modify::<Namespace>("", "team", |object| {
            object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        });
        let mut held: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "team",
            "finalizers": ["example.com/hold"]}, "spec": {"containers": []}}))
        .expect("a pod");
        rig.fake.insert(&held);
        let config: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "team"}})).expect("a ConfigMap");
        rig.fake.insert(&config);

        rig.sync::<Namespace>();
        let action = controller.reconcile("team").await.expect("reconciled");
        assert!(matches!(action, Action::RequeueAfter(_)), "the held pod remains");
        assert!(rig.fake.get::<ConfigMap>("team", "c").is_none());
        let ns = rig.fake.get::<Namespace>("", "team").expect("still there");
        let condition = ns.status.and_then(|s| s.conditions).unwrap_or_default();
        assert_eq!(condition[0].message.as_deref(), Some("Some resources are remaining: pods"));

        // Once the pod's finalizer goes, the namespace gives up its own.
        held = rig.fake.get::<Pod>("team", "p").expect("held");
        assert!(held.metadata.deletion_timestamp.is_some());
        rig.fake.remove::<Pod>("team", "p");
        rig.sync::<Namespace>();
        rig.writes();
        assert!(matches!(controller.reconcile("team").await.expect("reconciled"), Action::Done));
        let writes = rig.writes();
        assert!(writes.contains(&"update namespaces/finalize team".to_string()), "{writes:?}");
        let ns = rig.fake.get::<Namespace>("", "team");
        assert!(ns.is_none_or(|n| n.spec.and_then(|s| s.finalizers).unwrap_or_default().is_empty()));
    }
}
