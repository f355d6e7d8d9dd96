//! The Job controller: runs pods until enough succeed, or fails the Job.
//!
//! Pods carry the `batch.kubernetes.io/job-tracking` finalizer, so a finished pod is
//! never lost before it is counted: the controller first records it in
//! `status.uncountedTerminatedPods` together with the new count (one status write),
//! then removes the finalizer, then forgets the uid once the pod no longer holds it.
//! A crash between the steps counts nothing twice and nothing never.
//!
//! Completion: `completions` successes (NonIndexed), every index `0..completions`
//! (Indexed), or, without `completions`, any success once no pod is running. Failure:
//! more failures than `backoffLimit`, `activeDeadlineSeconds` passed, or a pod
//! failure policy rule with `FailJob`. `suspend` removes the running pods; a finished
//! Job with `ttlSecondsAfterFinished` is deleted once that has passed.

pub mod policy;

use super::batch::{bounded, slow_start};
use super::ownership::{controller_key, Claimer};
use super::pods::{self, controller_reference};
use super::runtime::expectations::Expectations;
use super::runtime::queue::WorkQueue;
use super::runtime::{
    ignore_not_found, object_key, split_key, status_patch, Action, Cache, Change, Informers, ReconcileError, Reconciler,
};
use crate::events::Recorder;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use keelson_engine::Selector;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Client};
use parking_lot::Mutex;
use policy::{FailureVerdict, INDEX_ANNOTATION};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

pub struct JobController {
    client: Client,
    jobs: Arc<Cache<Job>>,
    pods: Arc<Cache<Pod>>,
    expectations: Arc<Expectations>,
    /// When each Job may create pods again after failures.
    backoff_until: Mutex<HashMap<String, Instant>>,
    events: Recorder,
}

fn owning_job(jobs: &Cache<Job>, pod: &Pod) -> Option<String> {
    controller_key(jobs, "Job", &pod.metadata)
}

fn tracked(pod: &Pod) -> bool {
    pod.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER)
}

fn condition_true(status: &JobStatus, type_: &str) -> bool {
    status.conditions.iter().flatten().any(|c| c.type_ == type_ && c.status == "True")
}

fn set_condition(status: &mut JobStatus, type_: &str, state: &str, reason: &str, message: &str, now: Timestamp) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != state {
            c.last_transition_time = Some(Time(now));
        }
        c.status = state.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return;
    }
    conditions.push(JobCondition {
        type_: type_.into(),
        status: state.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

impl JobController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let job_informer = informers.get::<Job>();
        let pod_informer = informers.get::<Pod>();
        let controller = Arc::new(JobController {
            client: informers.client().clone(),
            jobs: job_informer.cache(),
            pods: pod_informer.cache(),
            expectations: Arc::new(Expectations::default()),
            backoff_until: Mutex::new(HashMap::new()),
            events: informers.recorder("job-controller"),
        });
        let (q, expectations) = (Arc::clone(queue), Arc::clone(&controller.expectations));
        job_informer.on_change(move |change| {
            let key = object_key(change.object().as_ref());
            if let Change::Deleted(_) = change {
                expectations.forget(&key);
            }
            q.add(&key);
        });
        let (q, jobs, expectations) =
            (Arc::clone(queue), controller.jobs.clone(), Arc::clone(&controller.expectations));
        pod_informer.on_change(move |change| {
            let pod = change.object();
            let Some(key) = owning_job(&jobs, pod) else { return };
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            match change {
                Change::Added(_) if pod.metadata.deletion_timestamp.is_none() => expectations.creation_observed(&key),
                Change::Updated { old, new }
                    if new.metadata.deletion_timestamp.is_some() && old.metadata.deletion_timestamp.is_none() =>
                {
                    expectations.deletion_observed(&key, uid)
                }
                Change::Deleted(_) => expectations.deletion_observed(&key, uid),
                _ => {}
            }
            q.add(&key);
        });
        controller
    }

    fn pod_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Removes the tracking finalizer from counted pods.
    async fn release(&self, namespace: &str, pods: &[Arc<Pod>]) -> Result<(), kube::Error> {
        let api = self.pod_api(namespace);
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}});
        let results = bounded(pods.iter().map(|pod| {
            let (api, patch) = (&api, &patch);
            async move {
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                api.patch(name, &PatchParams::default(), &Patch::Strategic(patch.clone())).await
            }
        }))
        .await;
        for result in results {
            ignore_not_found(result)?;
        }
        Ok(())
    }

    async fn delete_pods(&self, key: &str, job: &Job, doomed: &[&Arc<Pod>]) -> Result<(), kube::Error> {
        let namespace = split_key(key).0;
        if doomed.is_empty() {
            return Ok(());
        }
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        self.expectations.expect(key, 0, doomed.iter().map(|p| uid(p)));
        let api = self.pod_api(namespace);
        let results = bounded(doomed.iter().map(|pod| {
            let api = &api;
            async move { (pod, pods::delete_for(api, pod, job, &self.events).await) }
        }))
        .await;
        let mut first_error = None;
        for (pod, result) in results {
            if let Err(error) = result {
                self.expectations.deletion_observed(key, &uid(pod));
                if !matches!(&error, kube::Error::Api(s) if s.code == 404) {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Creates pods: `indexes` for an Indexed Job (one each), else `count`.
    async fn create_pods(&self, key: &str, job: &Job, count: usize, indexes: &[i32]) -> Result<(), kube::Error> {
        let (namespace, name) = split_key(key);
        let spec = job.spec.as_ref().expect("checked by the caller");
        let owner = controller_reference("batch/v1", "Job", &job.metadata);
        let total = if indexes.is_empty() { count } else { indexes.len() };
        if total == 0 {
            return Ok(());
        }
        self.expectations.expect(key, total, []);
        let api = self.pod_api(namespace);
        let (created, error) = slow_start(total, |i| {
            let mut pod = pods::pod_from_template(&spec.template, namespace, name, owner.clone());
            pod.metadata.finalizers.get_or_insert_with(Vec::new).push(TRACKING_FINALIZER.into());
            if let Some(index) = indexes.get(i) {
                let index = index.to_string();
                pod.metadata.generate_name = Some(format!("{name}-{index}-"));
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(INDEX_ANNOTATION.into(), index.clone());
                pod.metadata.labels.get_or_insert_with(Default::default).insert(INDEX_ANNOTATION.into(), index.clone());
                if let Some(pod_spec) = pod.spec.as_mut() {
                    pod_spec.hostname.get_or_insert_with(|| format!("{name}-{index}"));
                    for container in pod_spec.containers.iter_mut().chain(pod_spec.init_containers.iter_mut().flatten())
                    {
                        let env = container.env.get_or_insert_with(Vec::new);
                        env.push(EnvVar {
                            name: "JOB_COMPLETION_INDEX".into(),
                            value: Some(index.clone()),
                            value_from: None,
                        });
                    }
                }
            }
            let api = &api;
            async move { pods::create_for(api, &pod, job, &self.events).await }
        })
        .await;
        for _ in created..total {
            self.expectations.creation_observed(key);
        }
        error.map_or(Ok(()), Err)
    }

    /// Events for the conditions a status write just turned on.
    fn record_transitions(&self, job: &Job, old: &JobStatus, new: &JobStatus) {
        let turned_on = |kind: &str| condition_true(new, kind) && !condition_true(old, kind);
        if turned_on("Complete") {
            self.events.normal(job, "Completed", "Job completed".into());
        }
        if turned_on("Failed") {
            let failed = new.conditions.iter().flatten().find(|c| c.type_ == "Failed");
            let reason = match failed.and_then(|c| c.reason.as_deref()) {
                Some("BackoffLimitExceeded") => "BackoffLimitExceeded",
                Some("DeadlineExceeded") => "DeadlineExceeded",
                Some("PodFailurePolicy") => "PodFailurePolicy",
                _ => "Failed",
            };
            let message = failed.and_then(|c| c.message.clone()).unwrap_or_default();
            self.events.warning(job, reason, message);
        }
        if turned_on("Suspended") {
            self.events.normal(job, "Suspended", "Job suspended".into());
        } else if condition_true(old, "Suspended") && !condition_true(new, "Suspended") {
            self.events.normal(job, "Resumed", "Job resumed".into());
        }
    }

    /// A finished Job: release leftover pods, and delete the Job once its TTL passed.
    async fn finished(&self, key: &str, job: &Job, now: Timestamp) -> Result<Action, ReconcileError> {
        let (namespace, name) = split_key(key);
        let uid = job.metadata.uid.as_deref().unwrap_or_default();
        let leftovers: Vec<Arc<Pod>> = self.pods.owned_by(uid).into_iter().filter(|p| tracked(p)).collect();
        self.release(namespace, &leftovers).await?;
        // Every pod is released: nothing is left uncounted.
        let uncounted = job.status.as_ref().and_then(|s| s.uncounted_terminated_pods.as_ref());
        if uncounted.is_some_and(|u| u.succeeded.iter().chain(u.failed.iter()).any(|l| !l.is_empty())) {
            let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({"status": {"uncountedTerminatedPods": {"succeeded": null, "failed": null}}});
            if ignore_not_found(api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await)?.is_none()
            {
                return Ok(Action::Done);
            }
        }
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else { return Ok(Action::Done) };
        let status = job.status.clone().unwrap_or_default();
        let finished_at = status.completion_time.map(|t| t.0).or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed")
                .and_then(|c| c.last_transition_time.clone())
                .map(|t| t.0)
        });
        let Some(finished_at) = finished_at else { return Ok(Action::Done) };
        let left = finished_at.as_second() + i64::from(ttl) - now.as_second();
        if left > 0 {
            return Ok(Action::RequeueAfter(Duration::from_secs(left as u64)));
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..Default::default() };
        ignore_not_found(api.delete(name, &params).await)?;
        Ok(Action::Done)
    }
}

impl Reconciler for JobController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(job) = self.jobs.get(key) else {
            self.expectations.forget(key);
            self.backoff_until.lock().remove(key);
            return Ok(Action::Done);
        };
        let Some(spec) = job.spec.as_ref() else { return Ok(Action::Done) };
        let (namespace, _) = split_key(key);
        let now = Timestamp::now();
        let old_status = job.status.clone().unwrap_or_default();
        if condition_true(&old_status, "Complete") || condition_true(&old_status, "Failed") {
            return self.finished(key, &job, now).await;
        }
        let Some(selector) = spec.selector.as_ref().and_then(|s| Selector::from_label_selector(s).ok()) else {
            return Ok(Action::Done);
        };
        let claimer = Claimer { owner: &job.metadata, api_version: "batch/v1", kind: "Job", selector: &selector };
        let owned = claimer.claim_from(&self.pod_api(namespace), &self.pods).await?;

        let mut status = old_status.clone();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let mut completed: BTreeSet<i32> =
            status.completed_indexes.as_deref().map(policy::parse_indexes).unwrap_or_default();
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let counted: HashSet<String> =
            uncounted.succeeded.iter().flatten().chain(uncounted.failed.iter().flatten()).cloned().collect();
        let (mut succeeded, mut failed) = (status.succeeded.unwrap_or(0), status.failed.unwrap_or(0));
        let mut fail_job: Option<(String, String)> = None;
        let mut to_release = Vec::new();
        let mut new_failures = 0;
        for pod in &owned {
            let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
            let finished = pods::is_finished(pod);
            // A pod deleted before it finished counts as failed (its node may be gone).
            let gone = pod.metadata.deletion_timestamp.is_some();
            if !tracked(pod) || !(finished || gone) {
                continue;
            }
            to_release.push(Arc::clone(pod));
            if counted.contains(&pod_uid) {
                continue;
            }
            if pods::phase(pod) == "Succeeded" {
                if indexed {
                    match policy::index_of(pod) {
                        Some(i) if !completed.contains(&i) => {
                            completed.insert(i);
                            succeeded += 1;
                        }
                        _ => {}
                    }
                } else {
                    succeeded += 1;
                }
                uncounted.succeeded.get_or_insert_with(Vec::new).push(pod_uid);
            } else {
                match policy::judge_failure(spec, pod) {
                    FailureVerdict::Ignore => {}
                    FailureVerdict::FailJob(message) => {
                        failed += 1;
                        new_failures += 1;
                        fail_job.get_or_insert(("PodFailurePolicy".into(), message));
                    }
                    FailureVerdict::Count => {
                        failed += 1;
                        new_failures += 1;
                    }
                }
                uncounted.failed.get_or_insert_with(Vec::new).push(pod_uid);
            }
        }
        // Uids whose pods no longer hold the finalizer are done.
        let holding: HashSet<&str> =
            owned.iter().filter(|p| tracked(p)).filter_map(|p| p.metadata.uid.as_deref()).collect();
        for list in [&mut uncounted.succeeded, &mut uncounted.failed] {
            if let Some(uids) = list.as_mut() {
                uids.retain(|u| holding.contains(u.as_str()));
            }
        }

        let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| pods::is_active(p)).collect();
        let suspended = spec.suspend == Some(true);
        if suspended {
            status.start_time = None;
        } else if status.start_time.is_none() {
            status.start_time = Some(Time(now));
        }
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        if fail_job.is_none() && failed > backoff_limit {
            fail_job = Some(("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into()));
        }
        let deadline_left = match (spec.active_deadline_seconds, &status.start_time) {
            (Some(deadline), Some(start)) if !suspended => Some(start.0.as_second() + deadline - now.as_second()),
            _ => None,
        };
        if fail_job.is_none() && deadline_left.is_some_and(|left| left <= 0) {
            fail_job = Some(("DeadlineExceeded".into(), "Job was active longer than specified deadline".into()));
        }
        let completions = spec.completions;
        let complete = fail_job.is_none()
            && match completions {
                Some(n) if indexed => (0..n).all(|i| completed.contains(&i)),
                Some(n) => succeeded >= n,
                None => succeeded > 0 && active.is_empty(),
            };

        let mut manage_error = None;
        let mut requeue = None;
        if fail_job.is_some() || complete || suspended {
            if let Err(e) = self.delete_pods(key, &job, &active).await {
                manage_error = Some(e);
            }
        } else if self.expectations.satisfied(key) && job.metadata.deletion_timestamp.is_none() {
            if new_failures > 0 {
                let until = Instant::now() + policy::failure_backoff(failed);
                self.backoff_until.lock().insert(key.to_string(), until);
            }
            let wait = self.backoff_until.lock().get(key).map(|u| u.saturating_duration_since(Instant::now()));
            let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
            match wait.filter(|w| !w.is_zero()) {
                Some(wait) => requeue = Some(wait),
                None if indexed => {
                    let running: HashSet<i32> = active.iter().filter_map(|p| policy::index_of(p)).collect();
                    let pending: Vec<i32> = (0..completions.unwrap_or(0))
                        .filter(|i| !completed.contains(i) && !running.contains(i))
                        .take(parallelism.saturating_sub(active.len()))
                        .collect();
                    manage_error = self.create_pods(key, &job, 0, &pending).await.err();
                }
                None => {
                    let want = match completions {
                        None if succeeded > 0 => 0,
                        None => parallelism,
                        Some(n) => parallelism.min((n - succeeded).max(0) as usize),
                    };
                    if active.len() > want {
                        let mut ranked = active.clone();
                        ranked.sort_by(|a, b| pods::deletion_order(a, b));
                        manage_error = self.delete_pods(key, &job, &ranked[..active.len() - want]).await.err();
                    } else if active.len() < want {
                        manage_error = self.create_pods(key, &job, want - active.len(), &[]).await.err();
                    }
                }
            }
        }

        status.succeeded = (succeeded > 0).then_some(succeeded);
        status.failed = (failed > 0).then_some(failed);
        let active_now = if fail_job.is_some() || complete || suspended { 0 } else { active.len() as i32 };
        status.active = (active_now > 0).then_some(active_now);
        let ready = active.iter().filter(|p| pods::is_ready(p)).count() as i32;
        status.ready = Some(if active_now > 0 { ready } else { 0 });
        let terminating = owned.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).count() as i32;
        status.terminating = Some(terminating);
        if indexed {
            let text = policy::format_indexes(&completed);
            status.completed_indexes = (!text.is_empty()).then_some(text);
        }
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: uncounted.succeeded.filter(|u| !u.is_empty()),
            failed: uncounted.failed.filter(|u| !u.is_empty()),
        });
        if suspended {
            set_condition(&mut status, "Suspended", "True", "JobSuspended", "Job suspended", now);
        } else if condition_true(&old_status, "Suspended") {
            set_condition(&mut status, "Suspended", "False", "JobResumed", "Job resumed", now);
        }
        if let Some((reason, message)) = &fail_job {
            set_condition(&mut status, "Failed", "True", reason, message, now);
        } else if complete {
            set_condition(
                &mut status,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            );
            status.completion_time = Some(Time(now));
        }
        if status != old_status {
            let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
            let name = job.metadata.name.as_deref().unwrap_or_default();
            let patch = status_patch(job.status.as_ref(), &status);
            if ignore_not_found(api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await)?.is_none()
            {
                return Ok(Action::Done);
            }
            self.record_transitions(&job, &old_status, &status);
        }
        // Counted (durably) above: now the pods may go.
        self.release(namespace, &to_release).await?;
        if let Some(error) = manage_error {
            return Err(error.into());
        }
        let deadline = deadline_left.filter(|l| *l > 0).map(|l| Duration::from_secs(l as u64));
        Ok(match requeue.into_iter().chain(deadline).min() {
            Some(after) => Action::RequeueAfter(after),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;
    use kube::ResourceExt;
    use serde_json::json;

    /// A Job as the API server stores it: with the selector and labels it defaults.
    fn job(spec: serde_json::Value) -> Job {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"job-name": "batch"}});
        spec["template"] = json!({"metadata": {"labels": {"job-name": "batch"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}});
        serde_json::from_value(json!({"metadata": {"name": "batch", "namespace": "default"}, "spec": spec}))
            .expect("a Job")
    }

    async fn pass(rig: &Rig, controller: &JobController) -> Vec<String> {
        rig.sync::<Job>();
        rig.sync::<Pod>();
        controller.reconcile("default/batch").await.expect("reconciled");
        rig.writes()
    }

    /// The node agent: the named pods ran and exited with `phase`.
    fn finish(rig: &Rig, pods: &[Pod], phase: &str) {
        for pod in pods {
            rig.fake.modify::<Pod>("default", &pod.name_any(), |object| {
                object["status"] = json!({"phase": phase});
            });
        }
    }

    fn active(rig: &Rig) -> Vec<Pod> {
        rig.fake.list::<Pod>().into_iter().filter(|p| !pods::is_finished(p)).collect()
    }

    #[tokio::test]
    async fn runs_pods_in_parallel_until_the_completions_succeed() {
        let rig = Rig::new();
        let controller = JobController::register(&rig.informers, &rig.queue);
        rig.fake.insert(&job(json!({"completions": 3, "parallelism": 2})));
        let writes = pass(&rig, &controller).await;
        assert_eq!(writes.iter().filter(|w| w.starts_with("create pods")).count(), 2, "{writes:?}");
        let running = active(&rig);
        assert!(running.iter().all(|p| p.finalizers().iter().any(|f| f == TRACKING_FINALIZER)));

        finish(&rig, &running[..1], "Succeeded");
        let writes = pass(&rig, &controller).await;
        // Counted in the status first, then the finalizer released, then one more pod.
        let status_at = writes.iter().position(|w| w.starts_with("patch jobs/status")).expect("a status write");
        let release_at = writes.iter().position(|w| w.starts_with("patch pods")).expect("a release");
        assert!(status_at < release_at, "{writes:?}");
        assert_eq!(writes.iter().filter(|w| w.starts_with("create pods")).count(), 1, "{writes:?}");
        assert_eq!(rig.fake.get::<Job>("default", "batch").and_then(|j| j.status).and_then(|s| s.succeeded), Some(1));

        for _ in 0..3 {
            finish(&rig, &active(&rig), "Succeeded");
            pass(&rig, &controller).await;
        }
        let status = rig.fake.get::<Job>("default", "batch").and_then(|j| j.status).expect("a status");
        assert_eq!(status.succeeded, Some(3));
        assert!(condition_true(&status, "Complete"), "{status:?}");
        assert!(rig.fake.list::<Pod>().iter().all(|p| p.finalizers().is_empty()), "every pod released");
    }

    #[tokio::test]
    async fn stops_at_the_backoff_limit() {
        let rig = Rig::new();
        let controller = JobController::register(&rig.informers, &rig.queue);
        rig.fake.insert(&job(json!({"backoffLimit": 0})));
        pass(&rig, &controller).await;
        finish(&rig, &active(&rig), "Failed");
        pass(&rig, &controller).await;
        let status = rig.fake.get::<Job>("default", "batch").and_then(|j| j.status).expect("a status");
        let failed = status.conditions.iter().flatten().find(|c| c.type_ == "Failed").expect("failed");
        assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert!(active(&rig).is_empty(), "no pod after the limit");
    }
}
