//! Builders for nodes and pods as the API would hand them over.
#![allow(dead_code)]

use keelson_engine::k8s_openapi::api::core::v1::{Node, Pod};
use keelson_scheduler::{Outcome, Profile, Scheduler};
use serde_json::{json, Value};

pub fn node(name: &str, cpu: &str, memory: &str, labels: Value) -> Node {
    node_with(name, cpu, memory, labels, json!({}))
}

pub fn node_with(name: &str, cpu: &str, memory: &str, labels: Value, spec: Value) -> Node {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}
    }))
    .unwrap()
}

pub fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
    pod_with(name, cpu, memory, json!({}), json!({}))
}

/// A pod with extra labels and extra spec fields merged in.
pub fn pod_with(name: &str, cpu: &str, memory: &str, labels: Value, spec: Value) -> Pod {
    let mut spec_value = json!({
        "containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
    });
    if let (Some(target), Some(extra)) = (spec_value.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": labels, "uid": format!("uid-{name}")},
        "spec": spec_value
    }))
    .unwrap()
}

/// A bound copy of `pod` on `node`, as the watch would deliver it.
pub fn bound(mut pod: Pod, node: &str) -> Pod {
    pod.spec.as_mut().unwrap().node_name = Some(node.to_owned());
    pod
}

pub fn scheduler(nodes: &[Node]) -> Scheduler {
    let mut scheduler = Scheduler::new(vec![Profile::default_profile()], 2);
    for node in nodes {
        scheduler.snapshot.upsert_node(node);
    }
    scheduler
}

/// The node the pod went to, or the failure message.
pub fn place(scheduler: &mut Scheduler, pod: &Pod) -> Result<String, String> {
    match scheduler.schedule(pod, 0) {
        Outcome::Scheduled(decision) => Ok(decision.node),
        Outcome::Unschedulable(failure) => Err(failure.message),
        other => Err(format!("{other:?}")),
    }
}
