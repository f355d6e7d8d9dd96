//! PodGC: deletes pods nobody else will. Every `period`:
//! - pods bound to a node that no longer exists (confirmed with the server, since the
//!   node cache may lag a node just created), marked Failed first;
//! - terminating pods never scheduled (no agent will ever finish their deletion);
//! - terminated (Succeeded/Failed) pods beyond `terminated_threshold`, oldest first.

use super::pods::{is_finished, node_name, with_disruption_target};
use super::runtime::queue::WorkQueue;
use super::runtime::{api_code, ignore_not_found, Action, Cache, Informers, ReconcileError, Reconciler};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;

const GC_KEY: &str = "podgc";

#[derive(Clone, Copy, Debug)]
pub struct PodGcOptions {
    /// How often pods are collected (kube's gcCheckPeriod).
    pub period: Duration,
    /// Terminated pods kept before the oldest go (`--terminated-pod-gc-threshold`;
    /// 0 keeps them all).
    pub terminated_threshold: usize,
}

impl Default for PodGcOptions {
    fn default() -> Self {
        PodGcOptions { period: Duration::from_secs(20), terminated_threshold: 12_500 }
    }
}

pub struct PodGcController {
    client: Client,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
    options: PodGcOptions,
}

/// The terminated pods to delete so at most `threshold` remain: the oldest.
fn excess_terminated(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    let mut terminated: Vec<&Arc<Pod>> =
        pods.iter().filter(|p| is_finished(p) && p.metadata.deletion_timestamp.is_none()).collect();
    if threshold == 0 || terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by(|a, b| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let excess = terminated.len() - threshold;
    terminated.into_iter().take(excess).cloned().collect()
}

impl PodGcController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>, options: PodGcOptions) -> Arc<Self> {
        queue.add(GC_KEY);
        Arc::new(PodGcController {
            client: informers.client().clone(),
            pods: informers.get::<Pod>().cache(),
            nodes: informers.get::<Node>().cache(),
            options,
        })
    }

    fn api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default())
    }

    /// Deletes a pod at once (its agent, if any, will not).
    async fn force_delete(&self, pod: &Pod) -> Result<(), kube::Error> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        ignore_not_found(self.api(pod).delete(name, &params).await).map(|_| ())
    }

    /// A pod whose node is gone: Failed, with the reason, then deleted.
    async fn collect_orphan(&self, pod: &Pod) -> Result<(), kube::Error> {
        let conditions =
            with_disruption_target(pod, "DeletionByPodGC", "PodGC: node no longer exists", Timestamp::now());
        let mut status = serde_json::json!({"conditions": conditions});
        if !is_finished(pod) {
            status["phase"] = "Failed".into();
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = serde_json::json!({ "status": status });
        ignore_not_found(self.api(pod).patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await)?;
        self.force_delete(pod).await
    }
}

impl Reconciler for PodGcController {
    async fn reconcile(&self, _key: &str) -> Result<Action, ReconcileError> {
        let pods = self.pods.list();
        for pod in excess_terminated(&pods, self.options.terminated_threshold) {
            self.force_delete(&pod).await?;
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        for pod in &pods {
            match node_name(pod) {
                None if pod.metadata.deletion_timestamp.is_some() => self.force_delete(pod).await?,
                None => {}
                Some(node) if self.nodes.get(node).is_none() => {
                    // The cache may not have a node created a moment ago: ask.
                    match nodes.get(node).await {
                        Err(error) if api_code(&error) == Some(404) => self.collect_orphan(pod).await?,
                        Err(error) => return Err(error.into()),
                        Ok(_) => {}
                    }
                }
                Some(_) => {}
            }
        }
        Ok(Action::RequeueAfter(self.options.period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::pods::tests::pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn the_oldest_terminated_pods_beyond_the_threshold_go() {
        let mut pods: Vec<Arc<Pod>> = Vec::new();
        for (i, phase) in ["Succeeded", "Running", "Failed", "Succeeded", "Failed"].iter().enumerate() {
            let mut p = pod(&format!("p{i}"), Some("n1"), phase, None);
            p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(100 - i as i64).unwrap()));
            pods.push(Arc::new(p));
        }
        let names = |ps: Vec<Arc<Pod>>| ps.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>();
        assert_eq!(names(excess_terminated(&pods, 2)), ["p4", "p3"], "four terminated, the two oldest go");
        assert!(excess_terminated(&pods, 4).is_empty());
        assert!(excess_terminated(&pods, 0).is_empty(), "zero keeps every pod");
    }

    #[tokio::test]
    async fn pods_of_nodes_that_are_gone_are_failed_then_force_deleted() {
        use crate::controllers::fake::Rig;
        use serde_json::json;
        let rig = Rig::new();
        let options = PodGcOptions { period: Duration::from_secs(20), terminated_threshold: 0 };
        let gc = PodGcController::register(&rig.informers, &rig.queue, options);
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "alive"}})).expect("a node");
        rig.fake.insert(&node);
        for (name, node) in [("stays", "alive"), ("stranded", "gone")] {
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": []}, "status": {"phase": "Running"}}))
            .expect("a pod");
            rig.fake.insert(&pod);
        }
        rig.sync::<Node>();
        rig.sync::<Pod>();
        gc.reconcile(GC_KEY).await.expect("reconciled");
        assert_eq!(rig.writes(), ["patch pods/status stranded", "delete pods stranded"]);
        assert!(rig.fake.get::<Pod>("default", "stays").is_some());
    }
}
