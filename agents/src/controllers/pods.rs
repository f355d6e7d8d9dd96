//! What controllers ask of pods: active, ready, available; which to delete first;
//! a new pod from a template; and creating and deleting pods for an owner, with
//! kube's pod-control events on the owner.

use crate::client::retry_throttled;
use crate::events::{failure, Recorder};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use std::cmp::Ordering;

/// Creates `pod` for `owner`, recording `SuccessfulCreate` or `FailedCreate` on the
/// owner. A namespace going away is not a failure: there is nothing to create. A busy
/// server (429) is waited out, as the node agent and scheduler do, not reported.
pub async fn create_for<K: Resource<DynamicType = ()>>(
    api: &Api<Pod>,
    pod: &Pod,
    owner: &K,
    events: &Recorder,
) -> Result<(), kube::Error> {
    let params = PostParams::default();
    match retry_throttled(|| api.create(&params, pod)).await {
        Ok(created) => {
            events.normal(owner, "SuccessfulCreate", format!("Created pod: {}", created.name_any()));
            Ok(())
        }
        Err(error) if crate::controllers::runtime::namespace_terminating(&error) => Ok(()),
        Err(error) => {
            events.warning(owner, "FailedCreate", format!("Error creating: {}", failure(&error)));
            Err(error)
        }
    }
}

/// Deletes `pod` of `owner`, recording `SuccessfulDelete` or `FailedDelete` (a pod
/// already gone is reported to the caller as the 404 it is, without an event; a 429
/// is waited out).
pub async fn delete_for<K: Resource<DynamicType = ()>>(
    api: &Api<Pod>,
    pod: &Pod,
    owner: &K,
    events: &Recorder,
) -> Result<(), kube::Error> {
    let (name, params) = (pod.name_any(), DeleteParams::default());
    match retry_throttled(|| api.delete(&name, &params)).await {
        Ok(_) => {
            events.normal(owner, "SuccessfulDelete", format!("Deleted pod: {}", pod.name_any()));
            Ok(())
        }
        Err(error) => {
            if crate::controllers::runtime::api_code(&error) != Some(404) {
                events.warning(owner, "FailedDelete", format!("Error deleting: {}", failure(&error)));
            }
            Err(error)
        }
    }
}

/// The owner reference that marks its holder as the controller of an object.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// A controller reference to the object `owner` of `kind` in `api_version`.
pub fn controller_reference(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Succeeded or Failed: the pod will not run again.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// The node the pod is bound to.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

/// The pod's conditions with `DisruptionTarget` set True for `reason`: what a
/// controller records before it deletes a pod it did not create (kube's wording).
pub fn with_disruption_target(pod: &Pod, reason: &str, message: &str, now: Timestamp) -> Vec<PodCondition> {
    let mut conditions = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    });
    conditions
}

/// Neither finished nor being deleted: a pod that counts toward replicas.
pub fn is_active(pod: &Pod) -> bool {
    !is_finished(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Since when the pod has been Ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let condition = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    (condition.status == "True").then(|| condition.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (a readiness time unknown counts as long ago).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => true,
        Some(Some(since)) => since.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// Seconds until a ready pod becomes available, if it is not yet.
pub fn seconds_to_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<i64> {
    let since = ready_since(pod)??;
    let left = since.as_second() + i64::from(min_ready_seconds) - now.as_second();
    (left > 0).then_some(left)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |c| c.iter().map(|c| c.restart_count).max().unwrap_or(0))
}

/// kube's deletion order (`ActivePods` less-than): the pod that goes first sorts
/// first. Unscheduled before scheduled; pending before unknown before running; not
/// ready before ready; more recently ready first; more restarts first; newer first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    assigned(a)
        .cmp(&assigned(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| match (ready_since(a).flatten(), ready_since(b).flatten()) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => Ordering::Equal,
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// A pod from `template`, named `prefix-xxxxx` by the server and controlled by `owner`.
pub fn pod_from_template(template: &PodTemplateSpec, namespace: &str, prefix: &str, owner: OwnerReference) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(namespace.into()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

    pub fn pod(name: &str, node: Option<&str>, phase: &str, ready_at: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(PodSpec { node_name: node.map(String::from), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|at| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(at).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn unscheduled_pending_and_unready_pods_are_deleted_first() {
        let mut pods = [
            pod("ready-old", Some("n"), "Running", Some(100)),
            pod("unscheduled", None, "Pending", None),
            pod("ready-new", Some("n"), "Running", Some(200)),
            pod("pending", Some("n"), "Pending", None),
            pod("running-unready", Some("n"), "Running", None),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["unscheduled", "pending", "running-unready", "ready-new", "ready-old"]);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now = Timestamp::from_second(1_000).unwrap();
        let p = pod("p", Some("n"), "Running", Some(990));
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 10, now));
        assert!(!is_available(&p, 11, now));
        assert_eq!(seconds_to_available(&p, 15, now), Some(5));
        assert!(!is_available(&pod("q", None, "Pending", None), 0, now));
    }
}
