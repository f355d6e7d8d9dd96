//! The ReplicaSet controller: as many active pods as `spec.replicas`, and a status
//! that says how many exist, are ready and are available.
//!
//! Pods are created in slow-start batches (1, 2, 4, ...), so a template the server
//! rejects costs one failed write, not hundreds; at most [`BURST`] creates or deletes
//! per reconcile, a bounded number in flight (see [`super::batch`]). Surplus pods go in kube's order (unscheduled, pending, not ready,
//! newest first). [`Expectations`] keep a reconcile from acting on a cache that has
//! not yet seen the previous one's writes.

use super::batch::{bounded, slow_start, BURST};
use super::ownership::{controller_key, enqueue_selecting, Claimer};
use super::pods::{self, controller_of, controller_reference};
use super::runtime::expectations::Expectations;
use super::runtime::queue::WorkQueue;
use super::runtime::{
    ignore_not_found, object_key, split_key, status_patch, Action, Cache, Change, Informers, ReconcileError, Reconciler,
};
use crate::events::Recorder;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use keelson_engine::Selector;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;

pub struct ReplicaSetController {
    client: Client,
    sets: Arc<Cache<ReplicaSet>>,
    pods: Arc<Cache<Pod>>,
    expectations: Arc<Expectations>,
    events: Recorder,
}

/// The ReplicaSet that controls `pod`, if it exists in the cache.
fn owning_set(sets: &Cache<ReplicaSet>, pod: &Pod) -> Option<String> {
    controller_key(sets, "ReplicaSet", &pod.metadata)
}

fn selector_of(set: &ReplicaSet) -> Option<Selector> {
    set.spec.as_ref().and_then(|s| Selector::from_label_selector(&s.selector).ok())
}

fn min_ready_seconds(set: &ReplicaSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

impl ReplicaSetController {
    /// Creates the controller and registers its informer handlers.
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let set_informer = informers.get::<ReplicaSet>();
        let pod_informer = informers.get::<Pod>();
        let controller = Arc::new(ReplicaSetController {
            client: informers.client().clone(),
            sets: set_informer.cache(),
            pods: pod_informer.cache(),
            expectations: Arc::new(Expectations::default()),
            events: informers.recorder("replicaset-controller"),
        });
        let q = Arc::clone(queue);
        let expectations = Arc::clone(&controller.expectations);
        set_informer.on_change(move |change| {
            let key = object_key(change.object().as_ref());
            if let Change::Deleted(_) = change {
                expectations.forget(&key);
            }
            q.add(&key);
        });
        let (q, sets, expectations) =
            (Arc::clone(queue), controller.sets.clone(), Arc::clone(&controller.expectations));
        pod_informer.on_change(move |change| match change {
            Change::Added(pod) => match owning_set(&sets, pod) {
                Some(key) => {
                    if pod.metadata.deletion_timestamp.is_some() {
                        expectations.deletion_observed(&key, pod.metadata.uid.as_deref().unwrap_or_default());
                    } else {
                        expectations.creation_observed(&key);
                    }
                    q.add(&key);
                }
                None if controller_of(&pod.metadata).is_none() => {
                    enqueue_selecting(&sets, &q, &pod.metadata, selector_of)
                }
                None => {}
            },
            Change::Updated { old, new } => {
                let old_owner = owning_set(&sets, old);
                let new_owner = owning_set(&sets, new);
                if let Some(key) = &new_owner {
                    if new.metadata.deletion_timestamp.is_some() && old.metadata.deletion_timestamp.is_none() {
                        expectations.deletion_observed(key, new.metadata.uid.as_deref().unwrap_or_default());
                    }
                    q.add(key);
                    // Once ready, it becomes available minReadySeconds later.
                    if !pods::is_ready(old) && pods::is_ready(new) {
                        if let Some(set) = sets.get(key) {
                            let seconds = min_ready_seconds(&set);
                            if seconds > 0 {
                                q.add_after(key, Duration::from_secs(seconds as u64 + 1));
                            }
                        }
                    }
                }
                if old_owner != new_owner {
                    if let Some(key) = old_owner {
                        q.add(&key);
                    }
                }
                if controller_of(&new.metadata).is_none() && old.metadata.labels != new.metadata.labels {
                    enqueue_selecting(&sets, &q, &new.metadata, selector_of);
                }
            }
            Change::Deleted(pod) => {
                if let Some(key) = owning_set(&sets, pod) {
                    expectations.deletion_observed(&key, pod.metadata.uid.as_deref().unwrap_or_default());
                    q.add(&key);
                }
            }
        });
        controller
    }

    /// Creates or deletes pods toward `spec.replicas`.
    async fn manage(&self, key: &str, set: &ReplicaSet, owned: &[Arc<Pod>]) -> Result<(), kube::Error> {
        let (namespace, name) = split_key(key);
        let spec = set.spec.as_ref().expect("checked by the caller");
        let wanted = spec.replicas.unwrap_or(1).max(0) as usize;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        if owned.len() < wanted {
            let count = (wanted - owned.len()).min(BURST);
            let Some(template) = spec.template.as_ref() else { return Ok(()) };
            let owner = controller_reference("apps/v1", "ReplicaSet", &set.metadata);
            let pod = pods::pod_from_template(template, namespace, name, owner);
            self.expectations.expect(key, count, []);
            let created = slow_start(count, |_| pods::create_for(&api, &pod, set, &self.events)).await;
            let (succeeded, error) = created;
            for _ in succeeded..count {
                self.expectations.creation_observed(key);
            }
            if let Some(error) = error {
                return Err(error);
            }
        } else if owned.len() > wanted {
            let count = (owned.len() - wanted).min(BURST);
            let mut ranked: Vec<&Arc<Pod>> = owned.iter().collect();
            ranked.sort_by(|a, b| pods::deletion_order(a, b));
            let doomed = &ranked[..count];
            let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
            self.expectations.expect(key, 0, doomed.iter().map(|p| uid(p)));
            let results = bounded(doomed.iter().map(|pod| {
                let api = &api;
                async move { (pod, pods::delete_for(api, pod, set, &self.events).await) }
            }))
            .await;
            let mut first_error = None;
            for (pod, result) in results {
                match result {
                    Ok(()) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => self.expectations.deletion_observed(key, &uid(pod)),
                    Err(error) => {
                        self.expectations.deletion_observed(key, &uid(pod));
                        first_error.get_or_insert(error);
                    }
                }
            }
            if let Some(error) = first_error {
                return Err(error);
            }
        }
        Ok(())
    }
}

/// The status `owned` gives `set`; `failure` is a create error to report.
fn status(set: &ReplicaSet, owned: &[Arc<Pod>], failure: Option<&str>, now: Timestamp) -> ReplicaSetStatus {
    let min_ready = min_ready_seconds(set);
    let template_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let old = set.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> =
        old.conditions.unwrap_or_default().into_iter().filter(|c| c.type_ != "ReplicaFailure").collect();
    if let Some(message) = failure {
        let previous = set
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "ReplicaFailure"));
        conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(message.into()),
            last_transition_time: previous.and_then(|c| c.last_transition_time.clone()).or(Some(Time(now))),
        });
    }
    ReplicaSetStatus {
        replicas: owned.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(owned.iter().filter(|p| pods::is_ready(p)).count() as i32),
        available_replicas: Some(owned.iter().filter(|p| pods::is_available(p, min_ready, now)).count() as i32),
        observed_generation: set.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    }
}

/// Zero counts are left out, as the server would return them.
fn normalized(mut status: ReplicaSetStatus) -> ReplicaSetStatus {
    for field in [&mut status.fully_labeled_replicas, &mut status.ready_replicas, &mut status.available_replicas] {
        if *field == Some(0) {
            *field = None;
        }
    }
    status
}

impl Reconciler for ReplicaSetController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(set) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(Action::Done);
        };
        let Some(spec) = set.spec.as_ref() else { return Ok(Action::Done) };
        let (namespace, _) = split_key(key);
        let selector = match Selector::from_label_selector(&spec.selector) {
            Ok(selector) => selector,
            Err(error) => {
                tracing::warn!(key, %error, "ReplicaSet selector does not parse");
                return Ok(Action::Done);
            }
        };
        let needs_sync = self.expectations.satisfied(key) && set.metadata.deletion_timestamp.is_none();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let claimer = Claimer { owner: &set.metadata, api_version: "apps/v1", kind: "ReplicaSet", selector: &selector };
        let mut candidates = claimer.candidates(&self.pods);
        candidates.retain(|p| pods::is_active(p));
        let owned = claimer.claim(&api, candidates).await?;
        let manage_error = if needs_sync { self.manage(key, &set, &owned).await.err() } else { None };
        let now = Timestamp::now();
        let failure = manage_error.as_ref().map(|e| e.to_string());
        let new_status = status(&set, &owned, failure.as_deref(), now);
        if normalized(new_status.clone()) != normalized(set.status.clone().unwrap_or_default()) {
            let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
            let patch = status_patch(set.status.as_ref(), &new_status);
            let name = set.metadata.name.as_deref().unwrap_or_default();
            if ignore_not_found(sets.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await)?.is_none()
            {
                return Ok(Action::Done);
            }
        }
        if let Some(error) = manage_error {
            return Err(error.into());
        }
        let min_ready = min_ready_seconds(&set);
        let next_available = owned.iter().filter_map(|p| pods::seconds_to_available(p, min_ready, now)).min();
        Ok(match next_available {
            Some(seconds) => Action::RequeueAfter(Duration::from_secs(seconds as u64 + 1)),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;
    use serde_json::json;

    fn replica_set(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}))
        .expect("a ReplicaSet")
    }

    fn rig() -> (Rig, Arc<ReplicaSetController>) {
        let rig = Rig::new();
        let controller = ReplicaSetController::register(&rig.informers, &rig.queue);
        (rig, controller)
    }

    /// One worker pass: the informers catch up with the fake, then a reconcile.
    async fn pass(rig: &Rig, controller: &ReplicaSetController) {
        rig.sync::<ReplicaSet>();
        rig.sync::<Pod>();
        controller.reconcile("default/web").await.expect("reconciled");
    }

    fn count_of(writes: &[String], prefix: &str) -> usize {
        writes.iter().filter(|w| w.starts_with(prefix)).count()
    }

    #[tokio::test]
    async fn creates_the_missing_pods_then_reports_them() {
        let (rig, controller) = rig();
        rig.fake.insert(&replica_set(5));
        pass(&rig, &controller).await;
        let writes = rig.writes();
        assert_eq!(count_of(&writes, "create pods"), 5, "{writes:?}");
        assert_eq!(count_of(&writes, "patch replicasets/status web"), 1, "{writes:?}");
        let pods = rig.fake.list::<Pod>();
        assert!(pods.iter().all(|p| controller_of(&p.metadata).is_some_and(|r| r.kind == "ReplicaSet")));

        // Until the cache shows them, the expectations hold back a second round.
        controller.reconcile("default/web").await.expect("reconciled");
        assert_eq!(count_of(&rig.writes(), "create pods"), 0);
        // Once seen, nothing more to create; the status says 5.
        pass(&rig, &controller).await;
        assert_eq!(count_of(&rig.writes(), "create pods"), 0);
        let status = rig.fake.get::<ReplicaSet>("default", "web").and_then(|s| s.status).expect("a status");
        assert_eq!((status.replicas, status.observed_generation), (5, Some(1)));
    }

    #[tokio::test]
    async fn a_rejected_template_costs_one_create_per_pass() {
        let (rig, controller) = rig();
        rig.fake.insert(&replica_set(100));
        rig.fake.fail("create", "pods", 500, 1);
        rig.sync::<ReplicaSet>();
        rig.sync::<Pod>();
        assert!(controller.reconcile("default/web").await.is_err(), "the failure is retried");
        let writes = rig.writes();
        assert_eq!(writes.iter().filter(|w| w.starts_with("create pods")).collect::<Vec<_>>(), ["create pods  -> 500"]);
        // The status reports the failure.
        let status = rig.fake.get::<ReplicaSet>("default", "web").and_then(|s| s.status).expect("a status");
        let failure = status.conditions.iter().flatten().find(|c| c.type_ == "ReplicaFailure").expect("a condition");
        assert_eq!(failure.reason.as_deref(), Some("FailedCreate"));
    }

    #[tokio::test]
    async fn adopts_matching_orphans_and_deletes_the_unscheduled_surplus_first() {
        let (rig, controller) = rig();
        rig.fake.insert(&replica_set(2));
        for (name, node) in [("a", Some("n1")), ("b", None), ("c", Some("n2"))] {
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default",
                "labels": {"app": "web"}}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}))
            .expect("a pod");
            rig.fake.insert(&pod);
        }
        pass(&rig, &controller).await;
        let writes = rig.writes();
        assert_eq!(count_of(&writes, "patch pods"), 3, "three orphans adopted: {writes:?}");
        assert_eq!(count_of(&writes, "delete pods"), 1, "{writes:?}");
        assert!(writes.contains(&"delete pods b".to_string()), "the unscheduled pod goes first: {writes:?}");
        let owned = rig.fake.list::<Pod>();
        assert_eq!(owned.len(), 2);
        assert!(owned.iter().all(|p| controller_of(&p.metadata).is_some()));
    }
}
