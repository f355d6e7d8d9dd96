//! The ResourceQuota controller: `status.hard` mirrors `spec.hard` and `status.used`
//! says what the namespace uses of each, recomputed when an object it counts changes
//! and every five minutes besides (kube's resync), since a pod stops being charged
//! when its deletion grace runs out without any event saying so.

use super::pods;
use super::runtime::queue::WorkQueue;
use super::runtime::{ignore_not_found, status_patch, Action, Cache, Change, Informers, ReconcileError, Reconciler};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Secret, Service, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::jiff::Timestamp;
use keelson_engine::quota::{self as usage, Objects, Scopes};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often every quota is recomputed regardless of events.
const RESYNC: Duration = Duration::from_secs(300);

/// The object count of one more resource, by its quota name (`deployments.apps`).
type Counter = Box<dyn Fn(&str) -> usize + Send + Sync>;

pub struct ResourceQuotaController {
    client: Client,
    quotas: Arc<Cache<ResourceQuota>>,
    pods: Arc<Cache<Pod>>,
    services: Arc<Cache<Service>>,
    claims: Arc<Cache<PersistentVolumeClaim>>,
    counters: Vec<(&'static str, Counter)>,
}

/// Queues every quota in `namespace`.
fn enqueue_quotas(quotas: &Cache<ResourceQuota>, queue: &WorkQueue, namespace: &str) {
    for quota in quotas.in_namespace(namespace) {
        queue.add(&format!("{namespace}/{}", quota.metadata.name.as_deref().unwrap_or_default()));
    }
}

/// Whether a pod change can move a quota: it appeared or went, finished, or started
/// terminating (its requests do not change in place here).
fn pod_change_counts(change: &Change<'_, Pod>) -> bool {
    match change {
        Change::Added(_) | Change::Deleted(_) => true,
        Change::Updated { old, new } => {
            pods::phase(old) != pods::phase(new) || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        }
    }
}

impl ResourceQuotaController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let quotas = informers.get::<ResourceQuota>();
        let q = Arc::clone(queue);
        quotas.on_change(move |change| {
            if !matches!(change, Change::Deleted(_)) {
                let quota = change.object();
                let namespace = quotas_namespace(quota);
                q.add(&format!("{namespace}/{}", quota.metadata.name.as_deref().unwrap_or_default()));
            }
        });
        let quota_cache = quotas.cache();

        let pods = informers.get::<Pod>();
        let (q, cache) = (Arc::clone(queue), Arc::clone(&quota_cache));
        pods.on_change(move |change| {
            if pod_change_counts(change) {
                enqueue_quotas(&cache, &q, change.object().metadata.namespace.as_deref().unwrap_or_default());
            }
        });
        let services = watch_additions_and_deletions::<Service>(informers, queue, &quota_cache);
        let claims = watch_additions_and_deletions::<PersistentVolumeClaim>(informers, queue, &quota_cache);

        let mut counters: Vec<(&'static str, Counter)> = Vec::new();
        let mut count = |name: &'static str, cache: Arc<dyn NamespaceCount>| {
            counters.push((name, Box::new(move |namespace: &str| cache.count_in_namespace(namespace))));
        };
        count("resourcequotas", Arc::clone(&quota_cache) as Arc<dyn NamespaceCount>);
        count("configmaps", watch_additions_and_deletions::<ConfigMap>(informers, queue, &quota_cache));
        count("secrets", watch_additions_and_deletions::<Secret>(informers, queue, &quota_cache));
        count("serviceaccounts", watch_additions_and_deletions::<ServiceAccount>(informers, queue, &quota_cache));
        count("deployments.apps", watch_additions_and_deletions::<Deployment>(informers, queue, &quota_cache));
        count("replicasets.apps", watch_additions_and_deletions::<ReplicaSet>(informers, queue, &quota_cache));
        count("statefulsets.apps", watch_additions_and_deletions::<StatefulSet>(informers, queue, &quota_cache));
        count("daemonsets.apps", watch_additions_and_deletions::<DaemonSet>(informers, queue, &quota_cache));
        count("jobs.batch", watch_additions_and_deletions::<Job>(informers, queue, &quota_cache));
        count("cronjobs.batch", watch_additions_and_deletions::<CronJob>(informers, queue, &quota_cache));

        Arc::new(ResourceQuotaController {
            client: informers.client().clone(),
            quotas: quota_cache,
            pods: pods.cache(),
            services,
            claims,
            counters,
        })
    }

    fn count(&self, resource: &str, namespace: &str) -> Option<usize> {
        self.counters.iter().find(|(name, _)| *name == resource).map(|(_, count)| count(namespace))
    }

    /// What `namespace` uses of each resource in `hard`, as the status shows it.
    fn used(
        &self,
        namespace: &str,
        hard: &BTreeMap<String, ApiQuantity>,
        scopes: &Scopes,
    ) -> BTreeMap<String, ApiQuantity> {
        let pods = self.pods.in_namespace(namespace);
        let services = self.services.in_namespace(namespace);
        let claims = self.claims.in_namespace(namespace);
        let count = |resource: &str| self.count(resource, namespace);
        let objects = Objects { pods: &pods, services: &services, claims: &claims, count: &count };
        usage::used(hard.keys().map(String::as_str), scopes, &objects, Timestamp::now())
            .into_iter()
            .map(|(resource, amount)| (resource, ApiQuantity(amount.to_string())))
            .collect()
    }
}

fn quotas_namespace(quota: &ResourceQuota) -> &str {
    quota.metadata.namespace.as_deref().unwrap_or_default()
}

/// A cache's per-namespace count, whatever its kind.
trait NamespaceCount: Send + Sync {
    fn count_in_namespace(&self, namespace: &str) -> usize;
}

impl<K: kube::Resource + Send + Sync> NamespaceCount for Cache<K> {
    fn count_in_namespace(&self, namespace: &str) -> usize {
        self.count_in(namespace)
    }
}

/// The cache of kind `K`, queueing the quotas of a namespace where one appears or
/// goes (what a quota counts of these kinds; updates leave the count alone, and a
/// Service's type or a claim's request changing is caught by the resync).
fn watch_additions_and_deletions<K: super::runtime::Watched>(
    informers: &Informers,
    queue: &Arc<WorkQueue>,
    quotas: &Arc<Cache<ResourceQuota>>,
) -> Arc<Cache<K>> {
    let informer = informers.get::<K>();
    let (q, quotas) = (Arc::clone(queue), Arc::clone(quotas));
    informer.on_change(move |change| {
        if !matches!(change, Change::Updated { .. }) {
            let namespace = change.object().meta().namespace.as_deref().unwrap_or_default();
            enqueue_quotas(&quotas, &q, namespace);
        }
    });
    informer.cache()
}

impl Reconciler for ResourceQuotaController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(quota) = self.quotas.get(key) else { return Ok(Action::Done) };
        let namespace = quotas_namespace(&quota);
        let hard = quota.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
        let scopes = quota.spec.as_ref().map(Scopes::of).unwrap_or_default();
        let used = self.used(namespace, &hard, &scopes);
        let status = ResourceQuotaStatus { hard: Some(hard), used: Some(used) };
        if quota.status.as_ref() != Some(&status) {
            let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), namespace);
            let patch = status_patch(quota.status.as_ref(), &status);
            let name = quota.metadata.name.as_deref().unwrap_or_default();
            if ignore_not_found(api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await)?.is_none()
            {
                return Ok(Action::Done);
            }
        }
        Ok(Action::RequeueAfter(RESYNC))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;
    use serde_json::json;

    #[tokio::test]
    async fn writes_the_status_when_usage_changes_and_only_then() {
        let rig = Rig::new();
        let controller = ResourceQuotaController::register(&rig.informers, &rig.queue);
        let quota: ResourceQuota = serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "team"},
            "spec": {"hard": {"pods": "5", "requests.memory": "1Gi", "count/deployments.apps": "2"}}}))
        .expect("a quota");
        rig.fake.insert(&quota);
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "team"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"memory": "256Mi"}}}]}}))
        .expect("a pod");
        rig.fake.insert(&pod);
        let pass = || async {
            for sync in [Rig::sync::<ResourceQuota>, Rig::sync::<Pod>, Rig::sync::<Deployment>] {
                sync(&rig);
            }
            controller.reconcile("team/q").await.expect("reconciled");
            rig.writes()
        };
        assert_eq!(pass().await, ["patch resourcequotas/status q"]);
        let status = rig.fake.get::<ResourceQuota>("team", "q").and_then(|q| q.status).expect("a status");
        let used: BTreeMap<String, String> =
            status.used.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        let expected = [("count/deployments.apps", "0"), ("pods", "1"), ("requests.memory", "256Mi")];
        assert_eq!(used, expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert!(pass().await.is_empty(), "nothing changed, nothing written");
    }
}
