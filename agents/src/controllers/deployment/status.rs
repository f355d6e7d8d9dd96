//! A Deployment's status: counts summed over its ReplicaSets, the Available condition,
//! and the Progressing condition with its deadline (kube's `progress.go`).

use super::rollout::fenceposts;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `(maxSurge, maxUnavailable)` in pods; Recreate has neither.
pub fn deployment_fenceposts(d: &Deployment) -> (i32, i32) {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, 0);
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    fenceposts(rolling.and_then(|r| r.max_surge.as_ref()), rolling.and_then(|r| r.max_unavailable.as_ref()), desired(d))
}

/// `progressDeadlineSeconds`, unless it is "never" (MaxInt32).
pub fn progress_deadline(d: &Deployment) -> Option<i64> {
    let seconds = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600);
    (seconds != i32::MAX).then_some(i64::from(seconds))
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

pub fn new_condition(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets `condition` unless one with the same status and reason is there; keeps the
/// transition time when only the reason changes.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|c| c.type_ == condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

fn sum(sets: &[&ReplicaSet], field: impl Fn(&ReplicaSet) -> i32) -> i32 {
    sets.iter().map(|s| field(s)).sum()
}

pub fn spec_replicas(set: &ReplicaSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn available(set: &ReplicaSet) -> i32 {
    set.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

fn status_replicas(set: &ReplicaSet) -> i32 {
    set.status.as_ref().map_or(0, |s| s.replicas)
}

/// Counts and the Available condition (kube's `calculateStatus`).
pub fn calculate(d: &Deployment, all: &[&ReplicaSet], new: Option<&ReplicaSet>, now: Timestamp) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let available_replicas = sum(all, available);
    let unavailable = (sum(all, spec_replicas) - available_replicas).max(0);
    // Zero counts are left out, as Go's JSON leaves them out.
    let count = |n: i32| (n != 0).then_some(n);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: count(sum(all, status_replicas)),
        updated_replicas: count(new.map_or(0, status_replicas)),
        ready_replicas: count(sum(all, |s| s.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0))),
        available_replicas: count(available_replicas),
        unavailable_replicas: count(unavailable),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    let (_, max_unavailable) = deployment_fenceposts(d);
    if available_replicas >= desired(d) - max_unavailable {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

/// Every replica updated and available, and the latest spec seen.
pub fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let want = desired(d);
    status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.observed_generation >= d.metadata.generation
}

/// More pods updated, ready or available than before, or fewer old ones.
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_pods = |s: &DeploymentStatus| s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || old_pods(new) < old_pods(&old)
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// Whether the Progressing condition has not moved for the deadline.
pub fn timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let (Some(deadline), Some(condition)) = (progress_deadline(d), condition(status, PROGRESSING)) else {
        return false;
    };
    if condition.reason.as_deref() == Some(TIMED_OUT) {
        return true;
    }
    let Some(from) = condition.last_update_time.as_ref() else { return false };
    from.0.as_second() + deadline < now.as_second()
}

/// The rollout's status (kube's `syncRolloutStatus`): counts, Available, and
/// Progressing moved on, completed or timed out; ReplicaFailure mirrored from the
/// ReplicaSets.
pub fn rollout(d: &Deployment, all: &[&ReplicaSet], new: Option<&ReplicaSet>, now: Timestamp) -> DeploymentStatus {
    let mut status = calculate(d, all, new, now);
    let new_name = new.and_then(|s| s.metadata.name.clone()).unwrap_or_default();
    if progress_deadline(d).is_none() {
        remove_condition(&mut status, PROGRESSING);
    }
    let current = condition(&status, PROGRESSING).cloned();
    let finished = status.replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
        && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if progress_deadline(d).is_some() && !finished {
        if complete(d, &status) {
            let message = format!("ReplicaSet \"{new_name}\" has successfully progressed.");
            set_condition(&mut status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now));
        } else if progressing(d, &status) {
            let message = format!("ReplicaSet \"{new_name}\" is progressing.");
            let mut condition = new_condition(PROGRESSING, "True", "ReplicaSetUpdated", message, now);
            if let Some(current) = current.as_ref().filter(|c| c.status == "True") {
                condition.last_transition_time = current.last_transition_time.clone();
            }
            remove_condition(&mut status, PROGRESSING);
            set_condition(&mut status, condition);
        } else if timed_out(d, &status, now) {
            let message = format!("ReplicaSet \"{new_name}\" has timed out progressing.");
            set_condition(&mut status, new_condition(PROGRESSING, "False", TIMED_OUT, message, now));
        }
    }
    let failure = all
        .iter()
        .find_map(|s| s.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == REPLICA_FAILURE).cloned());
    match failure {
        Some(f) => set_condition(
            &mut status,
            DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: f.status,
                reason: f.reason,
                message: f.message,
                last_update_time: f.last_transition_time.clone(),
                last_transition_time: f.last_transition_time,
            },
        ),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    status
}

/// Seconds until a stuck rollout times out, if it is neither done nor timed out.
pub fn seconds_to_deadline(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> Option<i64> {
    let deadline = progress_deadline(d)?;
    let condition = condition(status, PROGRESSING)?;
    if condition.reason.as_deref() == Some(TIMED_OUT) || complete(d, status) {
        return None;
    }
    let from = condition.last_update_time.as_ref()?.0.as_second();
    Some((from + deadline - now.as_second()).max(0))
}
