//! The taint eviction controller (kube's `taint-eviction-controller`): a pod on a
//! node with NoExecute taints it does not tolerate is deleted; one that tolerates
//! them for a while is deleted when the shortest `tolerationSeconds` runs out,
//! counted from the taint's `timeAdded`. A taint removed first saves the pod.
//!
//! Keys are pods. A node's taints changing enqueues the pods on it, found through an
//! index by node this controller keeps from the pod watch.

use crate::controllers::pods::{is_finished, node_name, with_disruption_target};
use crate::controllers::runtime::queue::WorkQueue;
use crate::controllers::runtime::{
    ignore_not_found, object_key, split_key, Action, Cache, Change, Informers, ReconcileError, Reconciler,
};
use crate::controllers::taints::{eviction, Eviction, NO_EXECUTE};
use crate::events::Recorder;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub struct TaintEvictionController {
    client: Client,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
    events: Recorder,
}

fn no_execute_taints(node: &Node) -> Vec<&Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == NO_EXECUTE)
        .collect()
}

/// Pod keys by the node they are bound to.
#[derive(Default)]
struct PodsByNode(Mutex<HashMap<String, HashSet<String>>>);

impl PodsByNode {
    fn set(&self, pod: &Pod, present: bool) {
        let Some(node) = node_name(pod) else { return };
        let key = object_key(pod);
        let mut index = self.0.lock();
        if present {
            index.entry(node.to_string()).or_default().insert(key);
        } else if let Some(keys) = index.get_mut(node) {
            keys.remove(&key);
            if keys.is_empty() {
                index.remove(node);
            }
        }
    }

    fn on(&self, node: &str) -> Vec<String> {
        self.0.lock().get(node).map(|keys| keys.iter().cloned().collect()).unwrap_or_default()
    }
}

impl TaintEvictionController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let pods = informers.get::<Pod>();
        let nodes = informers.get::<Node>();
        let by_node = Arc::new(PodsByNode::default());
        let (q, index, node_cache) = (Arc::clone(queue), Arc::clone(&by_node), nodes.cache());
        pods.on_change(move |change| {
            if let Change::Updated { old, .. } = change {
                index.set(old, false);
            }
            let pod = change.object();
            let present = !matches!(change, Change::Deleted(_));
            index.set(pod, present);
            let tainted =
                node_name(pod).and_then(|n| node_cache.get(n)).is_some_and(|n| !no_execute_taints(&n).is_empty());
            if present && tainted {
                q.add(&object_key(pod.as_ref()));
            }
        });
        let q = Arc::clone(queue);
        nodes.on_change(move |change| {
            let changed = match change {
                Change::Added(node) => !no_execute_taints(node).is_empty(),
                Change::Updated { old, new } => no_execute_taints(old) != no_execute_taints(new),
                Change::Deleted(_) => false,
            };
            if changed {
                for key in by_node.on(change.object().metadata.name.as_deref().unwrap_or_default()) {
                    q.add(&key);
                }
            }
        });
        Arc::new(TaintEvictionController {
            client: informers.client().clone(),
            pods: pods.cache(),
            nodes: nodes.cache(),
            events: informers.recorder("taint-eviction-controller"),
        })
    }
}

impl Reconciler for TaintEvictionController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(pod) = self.pods.get(key) else { return Ok(Action::Done) };
        if pod.metadata.deletion_timestamp.is_some() || is_finished(&pod) {
            return Ok(Action::Done);
        }
        let Some(node) = node_name(&pod).and_then(|n| self.nodes.get(n)) else { return Ok(Action::Done) };
        let taints: Vec<Taint> = no_execute_taints(&node).into_iter().cloned().collect();
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
        let now = Timestamp::now();
        match eviction(tolerations, &taints, now) {
            Eviction::Never => Ok(Action::Done),
            Eviction::At(at) => {
                let wait = at.duration_since(now).unsigned_abs();
                Ok(Action::RequeueAfter(wait + Duration::from_millis(100)))
            }
            Eviction::Now => {
                let (namespace, name) = split_key(key);
                tracing::info!(pod = key, node = node_name(&pod), "evicting pod from a NoExecute-tainted node");
                let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
                // Say why before it goes (the DisruptionTarget condition kube sets).
                let conditions = with_disruption_target(
                    &pod,
                    "DeletionByTaintManager",
                    "Taint manager: deleting due to NoExecute taint",
                    now,
                );
                let patch = serde_json::json!({"status": {"conditions": conditions}});
                if ignore_not_found(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await)?
                    .is_none()
                {
                    return Ok(Action::Done);
                }
                self.events.normal(&*pod, "TaintManagerEviction", format!("Marking for deletion Pod {key}"));
                ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
                Ok(Action::Done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;
    use serde_json::json;

    #[tokio::test]
    async fn pods_leave_a_no_execute_node_unless_they_tolerate_it() {
        let rig = Rig::new();
        let controller = TaintEvictionController::register(&rig.informers, &rig.queue);
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
                "timeAdded": "2026-01-01T00:00:00Z"}]}}))
        .expect("a node");
        rig.fake.insert(&node);
        let tolerating =
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]);
        for (name, tolerations) in [("plain", json!([])), ("tolerant", tolerating)] {
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": "n1", "tolerations": tolerations, "containers": []}, "status": {"phase": "Running"}}))
            .expect("a pod");
            rig.fake.insert(&pod);
        }
        rig.sync::<Node>();
        rig.sync::<Pod>();
        controller.reconcile("default/plain").await.expect("reconciled");
        controller.reconcile("default/tolerant").await.expect("reconciled");
        assert_eq!(rig.writes(), ["patch pods/status plain", "delete pods plain"]);
    }
}
