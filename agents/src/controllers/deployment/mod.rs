//! The Deployment controller: rolls a Deployment's pods from one template to the next
//! through ReplicaSets, one per template, named by the template's hash.
//!
//! Each reconcile takes one step and writes it (kube's `syncDeployment`): scale the
//! new ReplicaSet up within `maxSurge`, or the old ones down within
//! `maxUnavailable` (RollingUpdate); or all old ones to zero, then the new one up
//! (Recreate). The ReplicaSets' status changes bring the Deployment back for the next
//! step. A paused Deployment, or one resized mid-rollout, is only scaled, in
//! proportion. Every ReplicaSet write carries the resourceVersion the step was
//! computed from, so a step on stale state fails with 409 and is retried.

pub mod revision;
pub mod rollout;
pub mod status;

use super::ownership::{controller_key, enqueue_selecting, Claimer};
use super::pods::{controller_of, controller_reference};
use super::runtime::queue::WorkQueue;
use super::runtime::{
    ignore_not_found, object_key, split_key, status_patch, Action, Cache, Change, Informers, ReconcileError, Reconciler,
};
use crate::events::Recorder;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use keelson_engine::Selector;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use revision::{equal_ignoring_hash, revision_of, set_annotations, template_hash, HASH_LABEL, REVISION};
use rollout::SetCounts;
use serde_json::json;
use status::{available, desired, spec_replicas};
use std::sync::Arc;
use std::time::Duration;

pub struct DeploymentController {
    client: Client,
    deployments: Arc<Cache<Deployment>>,
    sets: Arc<Cache<ReplicaSet>>,
    pods: Arc<Cache<Pod>>,
    events: Recorder,
}

fn selector_of(d: &Deployment) -> Option<Selector> {
    d.spec.as_ref().and_then(|s| Selector::from_label_selector(&s.selector).ok())
}

/// The Deployment that controls `set`, if it exists in the cache.
fn owning_deployment(deployments: &Cache<Deployment>, set: &ReplicaSet) -> Option<String> {
    controller_key(deployments, "Deployment", &set.metadata)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn created(set: &ReplicaSet) -> Option<Timestamp> {
    set.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn counts(set: &ReplicaSet) -> SetCounts {
    SetCounts {
        replicas: spec_replicas(set),
        available: available(set),
        annotated_max: revision::int_annotation(set, revision::MAX_REPLICAS),
    }
}

impl DeploymentController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let d_informer = informers.get::<Deployment>();
        let set_informer = informers.get::<ReplicaSet>();
        let pod_informer = informers.get::<Pod>();
        let controller = Arc::new(DeploymentController {
            client: informers.client().clone(),
            deployments: d_informer.cache(),
            sets: set_informer.cache(),
            pods: pod_informer.cache(),
            events: informers.recorder("deployment-controller"),
        });
        let q = Arc::clone(queue);
        d_informer.on_change(move |change| q.add(&object_key(change.object().as_ref())));
        let (q, deployments) = (Arc::clone(queue), controller.deployments.clone());
        set_informer.on_change(move |change| match change {
            Change::Added(set) | Change::Deleted(set) => match owning_deployment(&deployments, set) {
                Some(key) => q.add(&key),
                None if controller_of(&set.metadata).is_none() && matches!(change, Change::Added(_)) => {
                    enqueue_selecting(&deployments, &q, &set.metadata, selector_of)
                }
                None => {}
            },
            Change::Updated { old, new } => {
                let old_owner = owning_deployment(&deployments, old);
                let new_owner = owning_deployment(&deployments, new);
                if let Some(key) = &new_owner {
                    q.add(key);
                }
                if old_owner != new_owner {
                    if let Some(key) = old_owner {
                        q.add(&key);
                    }
                }
                if controller_of(&new.metadata).is_none() && old.metadata.labels != new.metadata.labels {
                    enqueue_selecting(&deployments, &q, &new.metadata, selector_of);
                }
            }
        });
        // Recreate waits for the old pods to be gone.
        let (q, deployments, sets) = (Arc::clone(queue), controller.deployments.clone(), controller.sets.clone());
        pod_informer.on_change(move |change| {
            let Change::Deleted(pod) = change else { return };
            let Some(reference) = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet") else { return };
            let Some(set) = sets.get_in(pod.metadata.namespace.as_deref().unwrap_or_default(), &reference.name) else {
                return;
            };
            if let Some(key) = owning_deployment(&deployments, &set) {
                if deployments.get(&key).is_some_and(|d| is_recreate(&d)) {
                    q.add(&key);
                }
            }
        });
        controller
    }
}

/// One reconcile of one Deployment.
struct Sync<'a> {
    pods: &'a Cache<Pod>,
    d: Deployment,
    name: String,
    sets_api: Api<ReplicaSet>,
    deployments_api: Api<Deployment>,
    events: &'a Recorder,
    now: Timestamp,
}

impl Sync<'_> {
    /// Splits the owned sets into the new one (the oldest whose template is the
    /// Deployment's) and the old ones.
    fn split(&self, sets: Vec<ReplicaSet>) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let template = self.d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let mut sets = sets;
        sets.sort_by_key(|s| (created(s), s.metadata.name.clone()));
        let position = sets.iter().position(|s| {
            s.spec.as_ref().and_then(|spec| spec.template.as_ref()).is_some_and(|t| equal_ignoring_hash(t, &template))
        });
        let new = position.map(|i| sets.remove(i));
        (new, sets)
    }

    fn surge(&self) -> i32 {
        status::deployment_fenceposts(&self.d).0
    }

    /// Brings the new set's revision annotations (and the Deployment's) up to date,
    /// creating the new set if `create` and there is none.
    async fn sync_revision(
        &mut self,
        new: Option<ReplicaSet>,
        olds: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, ReconcileError> {
        let revision = revision::max_revision(olds) + 1;
        let new = match new {
            Some(mut set) => {
                let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
                let annotated = set_annotations(&self.d, &mut set, revision, self.surge());
                let spec = set.spec.get_or_insert_with(Default::default);
                let min_ready_changed = spec.min_ready_seconds != min_ready;
                spec.min_ready_seconds = min_ready;
                if annotated || min_ready_changed {
                    set = self.write_set(&set).await?;
                }
                if status::progress_deadline(&self.d).is_some()
                    && status::condition(self.d.status.as_ref().unwrap_or(&Default::default()), status::PROGRESSING)
                        .is_none()
                {
                    let message =
                        format!("Found new replica set \"{}\"", set.metadata.name.as_deref().unwrap_or_default());
                    self.set_condition(status::new_condition(
                        status::PROGRESSING,
                        "True",
                        "FoundNewReplicaSet",
                        message,
                        self.now,
                    ));
                }
                Some(set)
            }
            None if create => Some(self.create_set(olds, revision).await?),
            None => None,
        };
        if let Some(set) = &new {
            let current = self.d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
            let wanted = revision_of(set).to_string();
            if current.as_deref() != Some(wanted.as_str()) {
                let patch = json!({"metadata": {"annotations": {REVISION: wanted}}});
                self.d = self.deployments_api.patch(&self.name, &PatchParams::default(), &Patch::Merge(patch)).await?;
            }
        }
        Ok(new)
    }

    fn set_condition(&mut self, condition: k8s_openapi::api::apps::v1::DeploymentCondition) {
        let status = self.d.status.get_or_insert_with(Default::default);
        status::set_condition(status, condition);
    }

    /// Creates the new ReplicaSet for the current template.
    async fn create_set(&mut self, olds: &[ReplicaSet], revision: i64) -> Result<ReplicaSet, ReconcileError> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
        let all: i32 = olds.iter().map(spec_replicas).sum();
        let replicas = if is_recreate(&self.d) {
            desired(&self.d)
        } else {
            rollout::new_set_replicas(desired(&self.d), self.surge(), 0, all)
        };
        let mut set = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", self.name)),
                namespace: self.d.metadata.namespace.clone(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![controller_reference("apps/v1", "Deployment", &self.d.metadata)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        set_annotations(&self.d, &mut set, revision, self.surge());
        match self.sets_api.create(&PostParams::default(), &set).await {
            Ok(created) => {
                if replicas > 0 {
                    let message = format!("Scaled up replica set {} to {replicas}", created.name_any());
                    self.events.normal(&self.d, "ScalingReplicaSet", message);
                }
                let message =
                    format!("Created new replica set \"{}\"", created.metadata.name.as_deref().unwrap_or_default());
                if status::progress_deadline(&self.d).is_some() {
                    self.set_condition(status::new_condition(
                        status::PROGRESSING,
                        "True",
                        "NewReplicaSetCreated",
                        message,
                        self.now,
                    ));
                }
                Ok(created)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already (the cache had not seen it), or a hash collision.
                let name = set.metadata.name.clone().unwrap_or_default();
                let existing = self.sets_api.get(&name).await?;
                let ours =
                    controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignoring_hash(t, &spec.template));
                if ours && same {
                    return Ok(existing);
                }
                let count = collisions.unwrap_or(0) + 1;
                let patch = json!({"status": {"collisionCount": count}});
                self.deployments_api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(patch)).await?;
                Err(ReconcileError::Other(format!(
                    "pod-template hash collision on {name}; collisionCount is now {count}"
                )))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Writes a set's spec and annotations, conditional on the version read.
    async fn write_set(&self, set: &ReplicaSet) -> Result<ReplicaSet, ReconcileError> {
        let patch = json!({
            "metadata": {"resourceVersion": set.metadata.resource_version, "annotations": set.metadata.annotations},
            "spec": {"replicas": spec_replicas(set), "minReadySeconds": set.spec.as_ref().and_then(|s| s.min_ready_seconds)},
        });
        let name = set.metadata.name.as_deref().unwrap_or_default();
        Ok(self.sets_api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?)
    }

    /// Scales `set` to `replicas` (and records the Deployment size it was scaled for);
    /// returns whether anything was written.
    async fn scale(&self, set: &mut ReplicaSet, replicas: i32) -> Result<bool, ReconcileError> {
        let before = spec_replicas(set);
        let revision = revision_of(set);
        let annotated = set_annotations(&self.d, set, revision, self.surge());
        if before == replicas && !annotated {
            return Ok(false);
        }
        set.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
        *set = self.write_set(set).await?;
        if before != replicas {
            let direction = if replicas > before { "up" } else { "down" };
            let message = format!("Scaled {direction} replica set {} to {replicas} from {before}", set.name_any());
            self.events.normal(&self.d, "ScalingReplicaSet", message);
        }
        Ok(before != replicas)
    }

    /// RollingUpdate: grow the new set within the surge, else shrink the old within
    /// the unavailability budget, else clean up and report.
    async fn rolling(&mut self, sets: Vec<ReplicaSet>) -> Result<Action, ReconcileError> {
        let (new, mut olds) = self.split(sets);
        let mut new = self.sync_revision(new, &olds, true).await?.expect("created when missing");
        let want = desired(&self.d);
        let (max_surge, max_unavailable) = status::deployment_fenceposts(&self.d);
        let all_replicas =
            |new: &ReplicaSet, olds: &[ReplicaSet]| spec_replicas(new) + olds.iter().map(spec_replicas).sum::<i32>();
        let current = spec_replicas(&new);
        if current != want {
            let target = if current > want {
                want
            } else {
                rollout::new_set_replicas(want, max_surge, current, all_replicas(&new, &olds))
            };
            if self.scale(&mut new, target).await? {
                return self.write_status(&olds, Some(&new)).await;
            }
        }
        if olds.iter().map(spec_replicas).sum::<i32>() > 0 {
            let budget =
                rollout::old_scale_down_budget(want, max_unavailable, all_replicas(&new, &olds), &counts(&new));
            if budget > 0 {
                let mut scaled = false;
                let sizes = rollout::cleanup_unhealthy(&olds.iter().map(counts).collect::<Vec<_>>(), budget);
                for (set, size) in olds.iter_mut().zip(sizes) {
                    scaled |= self.scale(set, size).await?;
                }
                let all_available = available(&new) + olds.iter().map(available).sum::<i32>();
                let sizes = rollout::scale_down_available(
                    &olds.iter().map(counts).collect::<Vec<_>>(),
                    all_available,
                    want,
                    max_unavailable,
                );
                for (set, size) in olds.iter_mut().zip(sizes) {
                    scaled |= self.scale(set, size).await?;
                }
                if scaled {
                    return self.write_status(&olds, Some(&new)).await;
                }
            }
        }
        self.finish(olds, Some(new)).await
    }

    /// Recreate: every old set to zero, wait for their pods to go, then the new set
    /// to full size.
    async fn recreate(&mut self, sets: Vec<ReplicaSet>) -> Result<Action, ReconcileError> {
        let (new, mut olds) = self.split(sets);
        let new = self.sync_revision(new, &olds, false).await?;
        let mut scaled = false;
        for set in olds.iter_mut().filter(|s| spec_replicas(s) > 0) {
            scaled |= self.scale(set, 0).await?;
        }
        let running = olds.iter().any(|set| {
            let uid = set.metadata.uid.as_deref().unwrap_or_default();
            self.pods
                .owned_by(uid)
                .iter()
                .any(|p| !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
        });
        if scaled || running {
            return self.write_status(&olds, new.as_ref()).await;
        }
        let mut new = match new {
            Some(set) => set,
            None => self.sync_revision(None, &olds, true).await?.expect("created when missing"),
        };
        let want = desired(&self.d);
        self.scale(&mut new, want).await?;
        self.finish(olds, Some(new)).await
    }

    /// Paused, or resized mid-rollout: scale only, in proportion.
    async fn scale_only(&mut self, sets: Vec<ReplicaSet>) -> Result<Action, ReconcileError> {
        let (new, olds) = self.split(sets);
        let new = self.sync_revision(new, &olds, false).await?;
        let want = desired(&self.d);
        let mut all: Vec<ReplicaSet> = olds;
        let new_index = new.map(|n| {
            all.push(n);
            all.len() - 1
        });
        let active: Vec<usize> = (0..all.len()).filter(|i| spec_replicas(&all[*i]) > 0).collect();
        let target = match active.len() {
            0 => new_index.or_else(|| (0..all.len()).max_by_key(|i| created(&all[*i]))),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = target {
            self.scale(&mut all[i], want).await?;
        } else if let Some(n) = new_index.filter(|n| {
            let set = &all[*n];
            spec_replicas(set) == want
                && revision::int_annotation(set, revision::DESIRED_REPLICAS) == Some(want)
                && available(set) == want
        }) {
            // The new set is saturated: the old ones can go.
            for i in (0..all.len()).filter(|i| *i != n) {
                self.scale(&mut all[i], 0).await?;
            }
        } else if !is_recreate(&self.d) {
            let mut order = active;
            let total: i32 = order.iter().map(|i| spec_replicas(&all[*i])).sum();
            let growing = want + self.surge() > total;
            order.sort_by(|a, b| {
                let (a, b) = (&all[*a], &all[*b]);
                let by_size = spec_replicas(b).cmp(&spec_replicas(a));
                if growing {
                    by_size.then_with(|| created(b).cmp(&created(a)))
                } else {
                    by_size.then_with(|| created(a).cmp(&created(b)))
                }
            });
            let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let sizes = rollout::proportional(
                &order.iter().map(|i| counts(&all[*i])).collect::<Vec<_>>(),
                want,
                self.surge(),
                status_replicas,
            );
            for (i, size) in order.into_iter().zip(sizes) {
                self.scale(&mut all[i], size).await?;
            }
        }
        let new = new_index.map(|i| all.remove(i));
        if paused(&self.d) {
            self.clean_history(&all).await?;
        }
        let refs: Vec<&ReplicaSet> = all.iter().chain(new.iter()).collect();
        let mut status = status::calculate(&self.d, &refs, new.as_ref(), self.now);
        if !paused(&self.d) {
            // A resize mid-rollout is progress too.
            status = status::rollout(&self.d, &refs, new.as_ref(), self.now);
        }
        self.post_status(status).await
    }

    /// The end of a rollout step: history cleanup once complete, then status.
    async fn finish(&mut self, olds: Vec<ReplicaSet>, new: Option<ReplicaSet>) -> Result<Action, ReconcileError> {
        let refs: Vec<&ReplicaSet> = olds.iter().chain(new.iter()).collect();
        let status = status::rollout(&self.d, &refs, new.as_ref(), self.now);
        if status::complete(&self.d, &status) {
            self.clean_history(&olds).await?;
        }
        self.post_status(status).await
    }

    async fn write_status(&mut self, olds: &[ReplicaSet], new: Option<&ReplicaSet>) -> Result<Action, ReconcileError> {
        let refs: Vec<&ReplicaSet> = olds.iter().chain(new).collect();
        let status = status::rollout(&self.d, &refs, new, self.now);
        self.post_status(status).await
    }

    /// Writes `status` if it changed; asks to come back when the progress deadline
    /// would pass.
    async fn post_status(&mut self, status: DeploymentStatus) -> Result<Action, ReconcileError> {
        if Some(&status) != self.d.status.as_ref() {
            let patch = status_patch(self.d.status.as_ref(), &status);
            if ignore_not_found(
                self.deployments_api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(patch)).await,
            )?
            .is_none()
            {
                return Ok(Action::Done);
            }
        }
        Ok(match status::seconds_to_deadline(&self.d, &status, self.now) {
            Some(seconds) => Action::RequeueAfter(Duration::from_secs(seconds as u64 + 1)),
            None => Action::Done,
        })
    }

    /// Deletes the oldest empty old sets beyond `revisionHistoryLimit`.
    async fn clean_history(&self, olds: &[ReplicaSet]) -> Result<(), ReconcileError> {
        let limit = self.d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        let mut cleanable: Vec<&ReplicaSet> = olds.iter().filter(|s| s.metadata.deletion_timestamp.is_none()).collect();
        if cleanable.len() <= limit {
            return Ok(());
        }
        cleanable.sort_by_key(|s| (revision_of(s), created(s)));
        let excess = cleanable.len() - limit;
        for set in cleanable.into_iter().take(excess) {
            let empty = spec_replicas(set) == 0 && set.status.as_ref().is_none_or(|s| s.replicas == 0);
            let observed = set.status.as_ref().and_then(|s| s.observed_generation) >= set.metadata.generation;
            if !empty || !observed {
                continue;
            }
            let name = set.metadata.name.as_deref().unwrap_or_default();
            ignore_not_found(self.sets_api.delete(name, &DeleteParams::default()).await)?;
        }
        Ok(())
    }

    /// The Progressing condition while paused, and on resume (kube's
    /// `checkPausedConditions`).
    fn mark_paused(&mut self) {
        let Some(_) = status::progress_deadline(&self.d) else { return };
        let reason = self
            .d
            .status
            .as_ref()
            .and_then(|s| status::condition(s, status::PROGRESSING))
            .and_then(|c| c.reason.clone());
        let is_paused = paused(&self.d);
        if is_paused && reason.as_deref() != Some(status::PAUSED) {
            let c = status::new_condition(
                status::PROGRESSING,
                "Unknown",
                status::PAUSED,
                "Deployment is paused".into(),
                self.now,
            );
            self.set_condition(c);
        } else if !is_paused && reason.as_deref() == Some(status::PAUSED) {
            let c = status::new_condition(
                status::PROGRESSING,
                "Unknown",
                status::RESUMED,
                "Deployment is resumed".into(),
                self.now,
            );
            self.set_condition(c);
        }
    }

    /// Whether an active set was last scaled for another Deployment size.
    fn is_scaling_event(&self, sets: &[ReplicaSet]) -> bool {
        let want = desired(&self.d);
        sets.iter()
            .filter(|s| spec_replicas(s) > 0)
            .any(|s| revision::int_annotation(s, revision::DESIRED_REPLICAS).is_some_and(|d| d != want))
    }
}

impl Reconciler for DeploymentController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(d) = self.deployments.get(key) else { return Ok(Action::Done) };
        let (namespace, name) = split_key(key);
        let Some(selector) = selector_of(&d).filter(|s| !s.is_everything()) else {
            tracing::warn!(key, "Deployment selector is empty or does not parse; nothing to do");
            return Ok(Action::Done);
        };
        let sets_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let claimer = Claimer { owner: &d.metadata, api_version: "apps/v1", kind: "Deployment", selector: &selector };
        let sets: Vec<ReplicaSet> =
            claimer.claim_from(&sets_api, &self.sets).await?.iter().map(|s| (**s).clone()).collect();
        let mut sync = Sync {
            pods: &self.pods,
            d: (*d).clone(),
            name: name.to_string(),
            sets_api,
            deployments_api: Api::namespaced(self.client.clone(), namespace),
            events: &self.events,
            now: Timestamp::now(),
        };
        if d.metadata.deletion_timestamp.is_some() {
            let (new, olds) = sync.split(sets);
            let refs: Vec<&ReplicaSet> = olds.iter().chain(new.iter()).collect();
            let status = status::calculate(&sync.d, &refs, new.as_ref(), sync.now);
            return sync.post_status(status).await;
        }
        sync.mark_paused();
        if paused(&d) || sync.is_scaling_event(&sets) {
            return sync.scale_only(sets).await;
        }
        if is_recreate(&d) {
            sync.recreate(sets).await
        } else {
            sync.rolling(sets).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;
    use serde_json::json;

    fn deployment(replicas: i32, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}}}))
        .expect("a Deployment")
    }

    async fn pass(rig: &Rig, controller: &DeploymentController) -> Vec<String> {
        rig.sync::<Deployment>();
        rig.sync::<ReplicaSet>();
        rig.sync::<Pod>();
        controller.reconcile("default/web").await.expect("reconciled");
        rig.writes()
    }

    /// What the ReplicaSet controller and node agents would report: every set has
    /// its replicas, all available.
    fn sets_settle(rig: &Rig) {
        for set in rig.fake.list::<ReplicaSet>() {
            let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            rig.fake.modify::<ReplicaSet>("default", &set.name_any(), |object| {
                object["status"] = json!({"replicas": replicas, "readyReplicas": replicas,
                    "availableReplicas": replicas, "observedGeneration": object["metadata"]["generation"]});
            });
        }
    }

    fn sizes(rig: &Rig) -> Vec<(String, i32)> {
        let mut sizes: Vec<(String, i32)> = rig
            .fake
            .list::<ReplicaSet>()
            .iter()
            .map(|s| {
                let image = s.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref());
                let image = image.and_then(|p| p.containers[0].image.clone()).unwrap_or_default();
                (image, spec_replicas(s))
            })
            .collect();
        sizes.sort();
        sizes
    }

    #[tokio::test]
    async fn a_rolling_update_surges_then_shrinks_the_old_set() {
        let rig = Rig::new();
        let controller = DeploymentController::register(&rig.informers, &rig.queue);
        let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        rig.fake.insert(&deployment(4, strategy));
        let writes = pass(&rig, &controller).await;
        assert!(writes.iter().any(|w| w.starts_with("create replicasets web-")), "{writes:?}");
        assert_eq!(sizes(&rig), [("v1".to_string(), 4)]);
        sets_settle(&rig);
        pass(&rig, &controller).await;
        let d = rig.fake.get::<Deployment>("default", "web").expect("stored");
        assert_eq!(d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).map(String::as_str), Some("1"));
        assert_eq!(d.status.as_ref().and_then(|s| s.available_replicas), Some(4));

        // A new template: one pod of surge, nothing unavailable.
        rig.fake.modify::<Deployment>("default", "web", |object| {
            object["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
            object["metadata"]["generation"] = json!(2);
        });
        pass(&rig, &controller).await;
        assert_eq!(sizes(&rig), [("v1".to_string(), 4), ("v2".to_string(), 1)]);
        // Once the new pod is available, the old set may shrink by one.
        sets_settle(&rig);
        pass(&rig, &controller).await;
        assert_eq!(sizes(&rig), [("v1".to_string(), 3), ("v2".to_string(), 1)]);
        // And so on, until the old set is empty.
        for _ in 0..10 {
            sets_settle(&rig);
            pass(&rig, &controller).await;
        }
        assert_eq!(sizes(&rig), [("v1".to_string(), 0), ("v2".to_string(), 4)]);
        let d = rig.fake.get::<Deployment>("default", "web").expect("stored");
        let status = d.status.expect("a status");
        assert_eq!((status.updated_replicas, status.observed_generation), (Some(4), Some(2)));
    }

    #[tokio::test]
    async fn recreate_empties_the_old_set_before_the_new_one_grows() {
        let rig = Rig::new();
        let controller = DeploymentController::register(&rig.informers, &rig.queue);
        rig.fake.insert(&deployment(3, json!({"type": "Recreate"})));
        pass(&rig, &controller).await;
        sets_settle(&rig);
        pass(&rig, &controller).await;
        rig.fake.modify::<Deployment>("default", "web", |object| {
            object["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
            object["metadata"]["generation"] = json!(2);
        });
        pass(&rig, &controller).await;
        assert_eq!(sizes(&rig), [("v1".to_string(), 0)], "scaled down first, no new set yet");
        sets_settle(&rig);
        pass(&rig, &controller).await;
        assert_eq!(sizes(&rig), [("v1".to_string(), 0), ("v2".to_string(), 3)]);
    }
}
