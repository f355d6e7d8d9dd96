//! The CronJob controller: creates a Job at each scheduled time.
//!
//! Each reconcile works out the most recent scheduled time not yet run (from
//! `status.lastScheduleTime`, else the CronJob's creation, no further back than
//! `startingDeadlineSeconds`), starts a Job for it unless the deadline has passed or
//! the concurrency policy says no (`Forbid` while one runs; `Replace` deletes the
//! running ones first), records it in `status.active`/`lastScheduleTime`, deletes
//! finished Jobs beyond the history limits, and asks to be woken at the next time.
//!
//! A Job's name is the CronJob's plus the scheduled time in minutes since the epoch
//! (kube's naming), so a reconcile repeated on a stale cache finds the Job it made
//! (409) instead of making a second.

use super::ownership::controller_key;
use super::pods::controller_reference;
use super::runtime::queue::WorkQueue;
use super::runtime::{
    ignore_not_found, namespace_terminating, object_key, split_key, status_patch, Action, Cache, Informers,
    ReconcileError, Reconciler,
};
use crate::events::{failure, Recorder};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, Zoned};
use keelson_engine::cron::Schedule;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed times beyond which kube warns (and still runs only the latest).
const TOO_MANY_MISSED: usize = 100;

pub struct CronJobController {
    client: Client,
    cronjobs: Arc<Cache<CronJob>>,
    jobs: Arc<Cache<Job>>,
    events: Recorder,
}

impl CronJobController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let cronjobs = informers.get::<CronJob>();
        let jobs = informers.get::<Job>();
        let q = Arc::clone(queue);
        cronjobs.on_change(move |change| q.add(&object_key(change.object().as_ref())));
        let (q, owners) = (Arc::clone(queue), cronjobs.cache());
        jobs.on_change(move |change| {
            if let Some(key) = controller_key(&owners, "CronJob", &change.object().metadata) {
                q.add(&key);
            }
        });
        Arc::new(CronJobController {
            client: informers.client().clone(),
            cronjobs: cronjobs.cache(),
            jobs: jobs.cache(),
            events: informers.recorder("cronjob-controller"),
        })
    }
}

/// Whether a Job has finished, and whether it succeeded.
fn finished(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let is = |t: &str| conditions.iter().any(|c| c.type_ == t && c.status == "True");
    if is("Complete") {
        Some(true)
    } else if is("Failed") {
        Some(false)
    } else {
        None
    }
}

/// The scheduled times due between `earliest` (exclusive) and `now` (inclusive): the
/// most recent and how many there were.
pub fn most_recent(schedule: &Schedule, earliest: &Zoned, now: Timestamp) -> (Option<Zoned>, usize) {
    let mut latest: Option<Zoned> = None;
    let mut missed = 0;
    let mut widest_gap = k8s_openapi::jiff::SignedDuration::ZERO;
    let mut skipped = false;
    let mut cursor = earliest.clone();
    while let Some(next) = schedule.next_after(&cursor) {
        if next.timestamp() > now {
            break;
        }
        missed += 1;
        widest_gap = widest_gap.max(next.timestamp().duration_since(cursor.timestamp()));
        latest = Some(next.clone());
        cursor = next;
        if missed == 10 * TOO_MANY_MISSED && !skipped {
            // Far behind (a schedule every second, a CronJob made long ago): only
            // the latest time matters, so skip to a span before now that surely
            // holds some times (a thousand of the widest gaps seen so far).
            skipped = true;
            let span = widest_gap.checked_mul(10 * TOO_MANY_MISSED as i32).unwrap_or(widest_gap);
            if let Ok(skip) = now.checked_sub(span) {
                if skip > cursor.timestamp() {
                    cursor = skip.to_zoned(cursor.time_zone().clone());
                }
            }
        }
    }
    (latest, missed)
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The Job for the run at `scheduled`.
fn job_for(cronjob: &CronJob, scheduled: &Zoned) -> Job {
    let spec = cronjob.spec.as_ref().expect("checked by the caller");
    let template = &spec.job_template;
    let name =
        format!("{}-{}", cronjob.metadata.name.as_deref().unwrap_or_default(), scheduled.timestamp().as_second() / 60);
    let mut annotations = template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), scheduled.timestamp().to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: cronjob.metadata.namespace.clone(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference("batch/v1", "CronJob", &cronjob.metadata)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

impl CronJobController {
    async fn delete_job(&self, cronjob: &CronJob, job: &Job) -> Result<(), kube::Error> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or_default());
        let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        if ignore_not_found(api.delete(&job.name_any(), &params).await)?.is_some() {
            self.events.normal(cronjob, "SuccessfulDelete", format!("Deleted job {}", job.name_any()));
        }
        Ok(())
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn trim_history(&self, cronjob: &CronJob, owned: &[Arc<Job>]) -> Result<(), kube::Error> {
        let spec = cronjob.spec.as_ref().expect("checked by the caller");
        for (succeeded, limit) in [
            (true, spec.successful_jobs_history_limit.unwrap_or(3)),
            (false, spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut done: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| finished(j) == Some(succeeded) && j.metadata.deletion_timestamp.is_none())
                .collect();
            done.sort_by_key(|j| j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0));
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            for job in &done[..excess] {
                self.delete_job(cronjob, job).await?;
            }
        }
        Ok(())
    }
}

impl Reconciler for CronJobController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(cronjob) = self.cronjobs.get(key) else { return Ok(Action::Done) };
        let Some(spec) = cronjob.spec.as_ref() else { return Ok(Action::Done) };
        if cronjob.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let (namespace, _) = split_key(key);
        let uid = cronjob.metadata.uid.as_deref().unwrap_or_default();
        let owned: Vec<Arc<Job>> = self
            .jobs
            .owned_by(uid)
            .into_iter()
            .filter(|j| super::pods::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let old_status = cronjob.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        // Active: the running Jobs this CronJob made (a Job listed but gone, or
        // finished, drops out; one found running but unlisted joins).
        let mut active: Vec<ObjectReference> = owned
            .iter()
            .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
            .map(|j| reference(j))
            .collect();
        // A Job this CronJob listed as active that has now finished.
        let was_active =
            |job: &Job| old_status.active.iter().flatten().any(|r| r.uid.is_some() && r.uid == job.metadata.uid);
        for job in owned.iter().filter(|j| was_active(j)) {
            if let Some(complete) = finished(job) {
                let outcome = if complete { "Complete" } else { "Failed" };
                let message = format!("Saw completed job: {}, status: {outcome}", job.name_any());
                self.events.normal(&*cronjob, "SawCompletedJob", message);
            }
        }
        for job in owned.iter().filter(|j| finished(j) == Some(true)) {
            let completed = job.status.as_ref().and_then(|s| s.completion_time.clone());
            if completed.is_some()
                && status.last_successful_time.as_ref().map(|t| t.0) < completed.as_ref().map(|t| t.0)
            {
                status.last_successful_time = completed;
            }
        }

        let zone = match spec.time_zone.as_deref() {
            None => TimeZone::system(),
            Some(name) => match TimeZone::get(name) {
                Ok(zone) => zone,
                Err(_) => return Ok(Action::Done), // validation rejects these; nothing to do
            },
        };
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(schedule) => schedule,
            Err(error) => {
                tracing::warn!(cronjob = key, %error, "unparseable schedule");
                return Ok(Action::Done);
            }
        };
        let now = Timestamp::now();
        let mut next_wake = None;
        if spec.suspend != Some(true) {
            let since = status
                .last_schedule_time
                .as_ref()
                .or(cronjob.metadata.creation_timestamp.as_ref())
                .map(|t| t.0)
                .unwrap_or(now);
            let deadline = spec.starting_deadline_seconds.map(k8s_openapi::jiff::SignedDuration::from_secs);
            let earliest = match deadline.and_then(|d| now.checked_sub(d).ok()) {
                Some(limit) if limit > since => limit,
                _ => since,
            };
            let (due, missed) = most_recent(&schedule, &earliest.to_zoned(zone.clone()), now);
            if missed > TOO_MANY_MISSED {
                tracing::warn!(cronjob = key, missed, "too many missed start times; running only the latest");
            }
            next_wake = schedule.next_after(&now.to_zoned(zone.clone()));
            if let Some(due) = due {
                let too_late = deadline.is_some_and(|d| due.timestamp().checked_add(d).is_ok_and(|end| end < now));
                let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                let forbidden = policy == "Forbid" && !active.is_empty();
                if !too_late && !forbidden {
                    if policy == "Replace" {
                        for job in owned.iter().filter(|j| finished(j).is_none()) {
                            self.delete_job(&cronjob, job).await?;
                        }
                        active.clear();
                    }
                    let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
                    let job = job_for(&cronjob, &due);
                    let name = job.metadata.name.clone().unwrap_or_default();
                    match api.create(&PostParams::default(), &job).await {
                        Ok(created) => {
                            self.events.normal(&*cronjob, "SuccessfulCreate", format!("Created job {name}"));
                            active.push(reference(&created))
                        }
                        // Made by an earlier reconcile the cache has not shown yet.
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            if let Some(existing) = self.jobs.get_in(namespace, &name) {
                                if !active.iter().any(|r| r.name.as_deref() == Some(name.as_str())) {
                                    active.push(reference(&existing));
                                }
                            }
                        }
                        Err(error) if namespace_terminating(&error) => return Ok(Action::Done),
                        Err(error) => {
                            let message = format!("Error creating job: {}", failure(&error));
                            self.events.warning(&*cronjob, "FailedCreate", message);
                            return Err(error.into());
                        }
                    }
                    status.last_schedule_time = Some(Time(due.timestamp()));
                } else if forbidden {
                    // Skipped, not postponed: the next run is the next time.
                    if status.last_schedule_time.as_ref().map(|t| t.0) != Some(due.timestamp()) {
                        let message =
                            "Not starting job because prior execution is running and concurrency policy is Forbid";
                        self.events.normal(&*cronjob, "JobAlreadyActive", message.into());
                    }
                    status.last_schedule_time = Some(Time(due.timestamp()));
                } else if status.last_schedule_time.as_ref().map(|t| t.0) != Some(due.timestamp()) {
                    let message = format!("Missed scheduled time to start a job: {}", due.timestamp());
                    self.events.warning(&*cronjob, "MissSchedule", message);
                }
            }
        }
        active.sort_by(|a, b| a.name.cmp(&b.name));
        for reference in &mut active {
            reference.resource_version = None;
        }
        status.active = (!active.is_empty()).then_some(active);
        if status != old_status {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), namespace);
            let patch = status_patch(cronjob.status.as_ref().or(Some(&CronJobStatus::default())), &status);
            let name = cronjob.metadata.name.as_deref().unwrap_or_default();
            ignore_not_found(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await)?;
        }
        self.trim_history(&cronjob, &owned).await?;
        Ok(match next_wake {
            Some(next) => {
                let wait = next.timestamp().duration_since(now).unsigned_abs();
                Action::RequeueAfter(wait + Duration::from_millis(100))
            }
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_most_recent_due_time_and_how_many_were_missed() {
        let schedule = Schedule::parse("*/10 * * * *").unwrap();
        let earliest = at("2026-01-01T10:00:00Z").to_zoned(TimeZone::UTC);
        let (due, missed) = most_recent(&schedule, &earliest, at("2026-01-01T10:35:00Z"));
        assert_eq!(due.unwrap().timestamp(), at("2026-01-01T10:30:00Z"));
        assert_eq!(missed, 3);
        let (due, missed) = most_recent(&schedule, &earliest, at("2026-01-01T10:05:00Z"));
        assert!(due.is_none());
        assert_eq!(missed, 0);
    }

    #[test]
    fn a_schedule_far_behind_skips_to_the_latest_time() {
        let schedule = Schedule::parse("@every 1s").unwrap();
        let earliest = at("2025-01-01T00:00:00Z").to_zoned(TimeZone::UTC);
        let (due, missed) = most_recent(&schedule, &earliest, at("2026-01-01T00:00:00Z"));
        assert_eq!(due.unwrap().timestamp(), at("2026-01-01T00:00:00Z"));
        assert!(missed > TOO_MANY_MISSED);
    }

    #[test]
    fn jobs_are_named_by_their_scheduled_minute() {
        let cronjob: CronJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "tick", "namespace": "default", "uid": "u1"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"metadata": {"labels": {"a": "b"}},
                     "spec": {"template": {"spec": {"containers": []}}}}}
        }))
        .unwrap();
        let job = job_for(&cronjob, &at("2026-01-01T00:01:00Z").to_zoned(TimeZone::UTC));
        assert_eq!(job.metadata.name.as_deref(), Some("tick-29453761"));
        assert_eq!(job.metadata.labels.unwrap()["a"], "b");
        assert_eq!(job.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP_ANNOTATION], "2026-01-01T00:01:00Z");
        assert_eq!(job.metadata.owner_references.unwrap()[0].kind, "CronJob");
    }

    #[tokio::test]
    async fn a_due_schedule_creates_its_job_and_forbid_skips_the_next_while_it_runs() {
        use crate::controllers::fake::Rig;
        use serde_json::json;
        let rig = Rig::new();
        let controller = CronJobController::register(&rig.informers, &rig.queue);
        let cronjob: CronJob = serde_json::from_value(json!({"metadata": {"name": "tick", "namespace": "default"},
            "spec": {"schedule": "* * * * *", "timeZone": "UTC", "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}}}}))
        .expect("a CronJob");
        rig.fake.insert(&cronjob);
        // Created three minutes ago: a start time has come.
        let created = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(180);
        rig.fake.modify::<CronJob>("default", "tick", |object| {
            object["metadata"]["creationTimestamp"] = json!(created.to_string());
        });
        let pass = || async {
            rig.sync::<CronJob>();
            rig.sync::<Job>();
            controller.reconcile("default/tick").await.expect("reconciled")
        };
        let action = pass().await;
        assert!(matches!(action, Action::RequeueAfter(_)), "wakes for the next minute: {action:?}");
        let writes = rig.writes();
        assert!(writes.iter().any(|w| w.starts_with("create jobs tick-")), "{writes:?}");
        let status = rig.fake.get::<CronJob>("default", "tick").and_then(|c| c.status).expect("a status");
        assert_eq!(status.active.map(|a| a.len()), Some(1));

        // A minute later the Job still runs: Forbid skips this start.
        rig.fake.modify::<CronJob>("default", "tick", |object| {
            let earlier = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(61);
            object["status"]["lastScheduleTime"] = json!(earlier.to_string());
        });
        pass().await;
        let writes = rig.writes();
        assert!(!writes.iter().any(|w| w.starts_with("create jobs")), "{writes:?}");
        assert_eq!(rig.fake.list::<Job>().len(), 1);
    }
}
