//! The StatefulSet controller: pods with stable names `NAME-0..N-1` (from
//! `spec.ordinals.start`), each with its own PersistentVolumeClaims from
//! `volumeClaimTemplates` (`CLAIM-NAME-i`, created before the pod and kept after it).
//!
//! `OrderedReady` (the default) creates pods one at a time in ordinal order, each
//! only once the ones before it are Running and Ready, and removes them highest
//! first, one at a time, only while the rest are healthy. `Parallel` creates and
//! removes them all at once. A failed pod is replaced under the same name.
//!
//! `RollingUpdate` replaces pods of an old template from the highest ordinal down to
//! `partition`, one at a time, each once the set is healthy; pods below the
//! partition keep (and are recreated with) the current revision. `OnDelete`
//! replaces a pod only when someone deletes it. Templates are kept as
//! ControllerRevisions; `status.currentRevision` moves to `updateRevision` once
//! every pod runs it.

use super::deployment::revision::template_hash;
use super::history::{template_of, History, REVISION_HASH_LABEL};
use super::ownership::{controller_key, enqueue_selecting, Claimer};
use super::pods::{self, controller_reference};
use super::runtime::queue::WorkQueue;
use super::runtime::{
    ignore_not_found, namespace_terminating, object_key, split_key, status_patch, Action, Cache, Informers,
    ReconcileError, Reconciler,
};
use crate::events::{failure, Recorder};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use keelson_engine::Selector;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct StatefulSetController {
    client: Client,
    sets: Arc<Cache<StatefulSet>>,
    pods: Arc<Cache<Pod>>,
    claims: Arc<Cache<PersistentVolumeClaim>>,
    revisions: Arc<Cache<ControllerRevision>>,
    events: Recorder,
}

fn selector_of(set: &StatefulSet) -> Option<Selector> {
    set.spec.as_ref().and_then(|s| Selector::from_label_selector(&s.selector).ok())
}

/// The ordinal in a pod's name, if it is `SET-N`.
fn ordinal_of(set_name: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    name.strip_prefix(set_name)?.strip_prefix('-')?.parse().ok().filter(|n: &i32| *n >= 0)
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(REVISION_HASH_LABEL).map(String::as_str)
}

/// Running, Ready (for `min_ready` seconds) and not on its way out.
fn healthy(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    pods::phase(pod) == "Running"
        && pod.metadata.deletion_timestamp.is_none()
        && pods::is_available(pod, min_ready, now)
}

/// The claim a pod of the set gets from a template: `TEMPLATE-POD`.
fn claim_name(template: &PersistentVolumeClaim, pod_name: &str) -> String {
    format!("{}-{pod_name}", template.metadata.name.as_deref().unwrap_or_default())
}

impl StatefulSetController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let sets = informers.get::<StatefulSet>();
        let pods = informers.get::<Pod>();
        let q = Arc::clone(queue);
        sets.on_change(move |change| q.add(&object_key(change.object().as_ref())));
        let (q, owners) = (Arc::clone(queue), sets.cache());
        pods.on_change(move |change| {
            let pod = change.object();
            match controller_key(&owners, "StatefulSet", &pod.metadata) {
                Some(key) => q.add(&key),
                None if pods::controller_of(&pod.metadata).is_none() => {
                    enqueue_selecting(&owners, &q, &pod.metadata, selector_of)
                }
                None => {}
            }
        });
        Arc::new(StatefulSetController {
            client: informers.client().clone(),
            sets: sets.cache(),
            pods: pods.cache(),
            claims: informers.get::<PersistentVolumeClaim>().cache(),
            revisions: informers.get::<ControllerRevision>().cache(),
            events: informers.recorder("statefulset-controller"),
        })
    }

    /// The pod for `ordinal` from `template` (revision `hash`), with its claims as
    /// volumes, its stable hostname and the set's labels.
    fn new_pod(&self, set: &StatefulSet, template: &PodTemplateSpec, hash: &str, ordinal: i32) -> Pod {
        let spec = set.spec.as_ref().expect("checked by the caller");
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let name = format!("{set_name}-{ordinal}");
        let owner = controller_reference("apps/v1", "StatefulSet", &set.metadata);
        let mut pod = pods::pod_from_template(template, namespace, set_name, owner);
        pod.metadata.generate_name = None;
        pod.metadata.name = Some(name.clone());
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        labels.insert(REVISION_HASH_LABEL.into(), hash.into());
        let pod_spec = pod.spec.get_or_insert_with(Default::default);
        pod_spec.hostname = Some(name.clone());
        if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
            pod_spec.subdomain = spec.service_name.clone();
        }
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        for claim in spec.volume_claim_templates.iter().flatten() {
            let volume_name = claim.metadata.name.clone().unwrap_or_default();
            volumes.retain(|v| v.name != volume_name);
            volumes.push(Volume {
                name: volume_name,
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(claim, &name),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
        pod
    }

    /// Creates the pod's missing claims (they outlive the pod: kube's default
    /// retention, Retain).
    async fn ensure_claims(&self, set: &StatefulSet, pod_name: &str) -> Result<(), kube::Error> {
        let spec = set.spec.as_ref().expect("checked by the caller");
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        for template in spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(template, pod_name);
            if self.claims.get_in(namespace, &name).is_some() {
                continue;
            }
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(namespace.into()),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            let (claim_name, set_name) = (claim.name_any(), set.name_any());
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    let message = format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success");
                    self.events.normal(set, "SuccessfulCreate", message);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(error) => {
                    let message = format!(
                        "create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                        failure(&error)
                    );
                    self.events.warning(set, "FailedCreate", message);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    async fn create_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), kube::Error> {
        self.ensure_claims(set, pod.metadata.name.as_deref().unwrap_or_default()).await?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), set.metadata.namespace.as_deref().unwrap_or_default());
        let what = format!("Pod {} in StatefulSet {}", pod.name_any(), set.name_any());
        match api.create(&PostParams::default(), pod).await {
            Ok(_) => {
                self.events.normal(set, "SuccessfulCreate", format!("create {what} successful"));
                Ok(())
            }
            // The previous pod of this name is still terminating; its deletion
            // brings us back.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(error) if namespace_terminating(&error) => Ok(()),
            Err(error) => {
                self.events.warning(set, "FailedCreate", format!("create {what} failed error: {}", failure(&error)));
                Err(error)
            }
        }
    }

    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let what = format!("Pod {} in StatefulSet {}", pod.name_any(), set.name_any());
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                self.events.normal(set, "SuccessfulDelete", format!("delete {what} successful"));
                Ok(())
            }
            Err(error) if super::runtime::api_code(&error) == Some(404) => Ok(()),
            Err(error) => {
                self.events.warning(set, "FailedDelete", format!("delete {what} failed error: {}", failure(&error)));
                Err(error)
            }
        }
    }
}

/// What one reconcile does to the pods.
#[derive(Debug, Default, PartialEq, Eq)]
struct Steps {
    /// Ordinals to create, with whether from the update revision (else the current).
    create: Vec<(i32, bool)>,
    /// Pod names to delete.
    delete: Vec<String>,
}

/// The pods as the plan sees them: by ordinal, with health and revision.
#[derive(Clone, Debug)]
struct Member {
    ordinal: i32,
    name: String,
    healthy: bool,
    failed: bool,
    terminating: bool,
    updated: bool,
}

struct Shape {
    start: i32,
    replicas: i32,
    ordered: bool,
    rolling: bool,
    partition: i32,
}

fn plan(shape: &Shape, members: &[Member]) -> Steps {
    let mut steps = Steps::default();
    let end = shape.start + shape.replicas;
    let find = |ordinal: i32| members.iter().find(|m| m.ordinal == ordinal);
    // Creation and repair, lowest ordinal first.
    let mut blocked = false;
    for ordinal in shape.start..end {
        match find(ordinal) {
            None => {
                steps.create.push((ordinal, !shape.rolling || ordinal >= shape.partition));
                if shape.ordered {
                    blocked = true;
                    break;
                }
            }
            Some(m) if m.failed && !m.terminating => {
                steps.delete.push(m.name.clone());
                if shape.ordered {
                    blocked = true;
                    break;
                }
            }
            Some(m) if !m.healthy && shape.ordered => {
                blocked = true;
                break;
            }
            Some(_) => {}
        }
    }
    // Scale-down: the highest ordinals beyond the range go first.
    let mut condemned: Vec<&Member> = members.iter().filter(|m| m.ordinal < shape.start || m.ordinal >= end).collect();
    condemned.sort_by_key(|m| std::cmp::Reverse(m.ordinal));
    if !shape.ordered {
        steps.delete.extend(condemned.iter().filter(|m| !m.terminating).map(|m| m.name.clone()));
    } else if !blocked {
        if let Some(highest) = condemned.first() {
            // One at a time, and only while the rest are healthy.
            let rest_healthy = members.iter().filter(|m| m.ordinal != highest.ordinal).all(|m| m.healthy);
            if !highest.terminating && rest_healthy {
                steps.delete.push(highest.name.clone());
            }
            blocked = true;
        }
    }
    // Rolling update: from the top down to the partition, one pod at a time, only
    // when every pod in range is healthy.
    let in_range = |m: &&Member| m.ordinal >= shape.start && m.ordinal < end;
    let all_healthy = members.iter().filter(in_range).count() == shape.replicas as usize
        && members.iter().filter(in_range).all(|m| m.healthy);
    if shape.rolling && !blocked && all_healthy && steps.create.is_empty() && steps.delete.is_empty() {
        let mut candidates: Vec<&Member> =
            members.iter().filter(in_range).filter(|m| m.ordinal >= shape.partition && !m.updated).collect();
        candidates.sort_by_key(|m| std::cmp::Reverse(m.ordinal));
        if let Some(next) = candidates.first() {
            steps.delete.push(next.name.clone());
        }
    }
    steps
}

impl Reconciler for StatefulSetController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(set) = self.sets.get(key) else { return Ok(Action::Done) };
        let Some(spec) = set.spec.as_ref() else { return Ok(Action::Done) };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(selector) = selector_of(&set) else { return Ok(Action::Done) };
        let (namespace, name) = split_key(key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let claimer =
            Claimer { owner: &set.metadata, api_version: "apps/v1", kind: "StatefulSet", selector: &selector };
        let owned = claimer.claim_from(&api, &self.pods).await?;

        let old_status = set.status.clone().unwrap_or_default();
        let update_hash = template_hash(&spec.template, old_status.collision_count);
        let update_revision = format!("{name}-{update_hash}");
        let history = History {
            client: &self.client,
            revisions: &self.revisions,
            owner: &set.metadata,
            kind: "StatefulSet",
            limit: spec.revision_history_limit.unwrap_or(10).max(0) as usize,
        };
        let live: Vec<&str> = owned.iter().filter_map(|p| revision_of(p)).collect();
        history.record(&spec.template, &update_hash, &live).await?;
        // The current revision: what pods ran before this update (the update itself
        // when there was none).
        let current_revision = old_status.current_revision.clone().unwrap_or_else(|| update_revision.clone());
        let current = history
            .revisions()
            .into_iter()
            .find(|r| r.metadata.name.as_deref() == Some(current_revision.as_str()))
            .and_then(|r| {
                let hash = r.metadata.labels.as_ref()?.get(REVISION_HASH_LABEL)?.clone();
                Some((hash, template_of(&r)?))
            });
        let (current_hash, current_template) = current.unwrap_or_else(|| (update_hash.clone(), spec.template.clone()));

        let now = Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let members: Vec<Member> = owned
            .iter()
            .filter_map(|pod| {
                Some(Member {
                    ordinal: ordinal_of(name, pod)?,
                    name: pod.metadata.name.clone()?,
                    healthy: healthy(pod, min_ready, now),
                    failed: pods::phase(pod) == "Failed",
                    terminating: pod.metadata.deletion_timestamp.is_some(),
                    updated: revision_of(pod) == Some(update_hash.as_str()),
                })
            })
            .collect();
        let strategy = spec.update_strategy.as_ref();
        let rolling = strategy.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
        let shape = Shape {
            start: spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0),
            replicas: spec.replicas.unwrap_or(1).max(0),
            ordered: spec.pod_management_policy.as_deref().unwrap_or("OrderedReady") != "Parallel",
            rolling,
            partition: strategy.and_then(|s| s.rolling_update.as_ref()?.partition).unwrap_or(0),
        };
        let steps = plan(&shape, &members);
        for (ordinal, updated) in &steps.create {
            let pod = if *updated {
                self.new_pod(&set, &spec.template, &update_hash, *ordinal)
            } else {
                self.new_pod(&set, &current_template, &current_hash, *ordinal)
            };
            self.create_pod(&set, &pod).await?;
        }
        for doomed in &steps.delete {
            if let Some(pod) = owned.iter().find(|p| p.metadata.name.as_deref() == Some(doomed.as_str())) {
                self.delete_pod(&set, pod).await?;
            }
        }

        let count = |f: &dyn Fn(&Pod) -> bool| owned.iter().filter(|p| f(p)).count() as i32;
        let replicas = count(&|_| true);
        let updated = count(&|p| revision_of(p) == Some(update_hash.as_str()));
        let mut status = StatefulSetStatus {
            available_replicas: Some(count(&|p| healthy(p, min_ready, now))),
            collision_count: old_status.collision_count,
            conditions: old_status.conditions.clone(),
            current_replicas: Some(count(&|p| revision_of(p) == Some(current_hash.as_str()))),
            current_revision: Some(current_revision),
            observed_generation: set.metadata.generation,
            ready_replicas: Some(count(&|p| pods::is_ready(p))),
            replicas,
            update_revision: Some(update_revision.clone()),
            updated_replicas: Some(updated),
        };
        // Every pod on the update: it becomes the current revision.
        if updated == shape.replicas && replicas == shape.replicas {
            status.current_revision = Some(update_revision);
            status.current_replicas = Some(updated);
        }
        if set.status.as_ref() != Some(&status) {
            let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
            let patch = status_patch(set.status.as_ref(), &status);
            ignore_not_found(sets.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await)?;
        }
        if min_ready > 0 && owned.iter().any(|p| pods::is_ready(p) && !healthy(p, min_ready, now)) {
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(ordinal: i32, healthy: bool, updated: bool) -> Member {
        Member { ordinal, name: format!("db-{ordinal}"), healthy, failed: false, terminating: false, updated }
    }

    fn shape(replicas: i32, ordered: bool) -> Shape {
        Shape { start: 0, replicas, ordered, rolling: true, partition: 0 }
    }

    #[test]
    fn ordered_sets_grow_one_healthy_pod_at_a_time() {
        assert_eq!(plan(&shape(3, true), &[]).create, [(0, true)]);
        assert!(plan(&shape(3, true), &[member(0, false, true)]).create.is_empty(), "waits for db-0");
        assert_eq!(plan(&shape(3, true), &[member(0, true, true)]).create, [(1, true)]);
        assert_eq!(plan(&shape(3, false), &[]).create, [(0, true), (1, true), (2, true)], "Parallel");
    }

    #[test]
    fn ordered_sets_shrink_from_the_top_while_the_rest_is_healthy() {
        let all = [member(0, true, true), member(1, true, true), member(2, true, true)];
        assert_eq!(plan(&shape(1, true), &all).delete, ["db-2"]);
        let sick = [member(0, false, true), member(1, true, true), member(2, true, true)];
        assert!(plan(&shape(1, true), &sick).delete.is_empty());
        assert_eq!(plan(&shape(1, false), &all).delete, ["db-2", "db-1"], "Parallel");
    }

    #[test]
    fn failed_pods_are_replaced_under_their_name() {
        let mut failed = member(1, false, true);
        failed.failed = true;
        let steps = plan(&shape(2, true), &[member(0, true, true), failed]);
        assert_eq!(steps.delete, ["db-1"]);
    }

    #[test]
    fn rolling_updates_go_top_down_to_the_partition() {
        let old = [member(0, true, false), member(1, true, false), member(2, true, false)];
        assert_eq!(plan(&shape(3, true), &old).delete, ["db-2"]);
        let partitioned = Shape { partition: 2, ..shape(3, true) };
        let half = [member(0, true, false), member(1, true, false), member(2, true, true)];
        assert!(plan(&partitioned, &half).delete.is_empty(), "below the partition stays");
        // A missing pod below the partition comes back on the current revision.
        assert_eq!(plan(&partitioned, &[member(1, true, false), member(2, true, true)]).create, [(0, false)]);
        let on_delete = Shape { rolling: false, ..shape(3, true) };
        assert!(plan(&on_delete, &old).delete.is_empty());
    }

    #[tokio::test]
    async fn reconcile_creates_claims_then_pods_in_order() {
        use crate::controllers::fake::Rig;
        use serde_json::json;
        let rig = Rig::new();
        let controller = StatefulSetController::register(&rig.informers, &rig.queue);
        let set: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}))
        .expect("a StatefulSet");
        rig.fake.insert(&set);
        let pass = || async {
            rig.sync::<StatefulSet>();
            rig.sync::<Pod>();
            rig.sync::<PersistentVolumeClaim>();
            rig.sync::<ControllerRevision>();
            controller.reconcile("default/db").await.expect("reconciled");
            rig.writes()
        };
        let writes = pass().await;
        let creates: Vec<&String> = writes.iter().filter(|w| w.starts_with("create p")).collect();
        assert_eq!(creates, ["create persistentvolumeclaims data-db-0", "create pods db-0"]);
        assert!(pass().await.iter().all(|w| !w.starts_with("create pods")), "db-1 waits for db-0");
        rig.fake.modify::<Pod>("default", "db-0", |pod| {
            pod["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        });
        let writes = pass().await;
        assert!(writes.contains(&"create pods db-1".to_string()), "{writes:?}");
        let pod = rig.fake.get::<Pod>("default", "db-1").expect("created");
        assert_eq!(pod.spec.as_ref().and_then(|s| s.hostname.as_deref()), Some("db-1"));
    }
}
