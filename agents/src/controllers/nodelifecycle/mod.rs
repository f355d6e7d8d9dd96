//! Node lifecycle: notices nodes whose agent went silent and moves their work away.
//!
//! - The monitor ([`NodeLifecycleController`], one key, every `monitor_period`)
//!   watches each node's Lease and Ready heartbeat. A node neither has renewed for
//!   `grace_period` (judged on this controller's clock, from when it last saw either
//!   change, so clock skew between machines does not matter) gets its conditions set
//!   Unknown and its pods marked not ready. It then taints nodes by condition:
//!   NoSchedule taints for the scheduler, and the `not-ready`/`unreachable`
//!   NoExecute taint, added at a rate limited per zone ([`zones`]).
//! - The taint eviction controller ([`eviction`]) deletes the pods on a NoExecute
//!   tainted node once their tolerations run out.

pub mod conditions;
pub mod eviction;
pub mod zones;

use super::pods::node_name;
use super::runtime::queue::WorkQueue;
use super::runtime::{ignore_not_found, Action, Cache, Informers, ReconcileError, Reconciler};
use crate::events::Recorder;
use conditions::{current_no_execute, desired_taints, no_execute_key, ready_status, same_taints, unknown_conditions};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zones::{EvictionPolicy, TokenBucket, ZoneState};

/// The monitor's only work-queue key.
const MONITOR_KEY: &str = "monitor";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// kube-controller-manager's node lifecycle flags.
#[derive(Clone, Copy, Debug)]
pub struct NodeLifecycleOptions {
    /// How often node health is checked (`--node-monitor-period`).
    pub monitor_period: Duration,
    /// How long a node may stay silent before it is Unknown
    /// (`--node-monitor-grace-period`).
    pub grace_period: Duration,
    pub eviction: EvictionPolicy,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        NodeLifecycleOptions {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            eviction: EvictionPolicy::default(),
        }
    }
}

/// What the monitor last saw of a node's signs of life, and when (its own clock).
struct Observed {
    heartbeat: Option<Time>,
    renewed: Option<String>,
    at: Instant,
}

#[derive(Default)]
struct MonitorState {
    nodes: HashMap<String, Observed>,
    zones: HashMap<String, TokenBucket>,
}

pub struct NodeLifecycleController {
    client: Client,
    nodes: Arc<Cache<Node>>,
    leases: Arc<Cache<Lease>>,
    pods: Arc<Cache<Pod>>,
    options: NodeLifecycleOptions,
    /// Touched only by the monitor key's reconcile, which never runs twice at once.
    state: Mutex<MonitorState>,
    events: Recorder,
}

fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str).unwrap_or_default();
    format!("{}/{}", label(REGION_LABEL), label(ZONE_LABEL))
}

impl NodeLifecycleController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>, options: NodeLifecycleOptions) -> Arc<Self> {
        queue.add(MONITOR_KEY);
        Arc::new(NodeLifecycleController {
            client: informers.client().clone(),
            nodes: informers.get::<Node>().cache(),
            leases: informers.get::<Lease>().cache(),
            pods: informers.get::<Pod>().cache(),
            options,
            state: Mutex::new(MonitorState::default()),
            events: informers.recorder("node-controller"),
        })
    }

    /// The nodes silent for longer than the grace period.
    fn silent_nodes(&self, nodes: &[Arc<Node>], now: Instant) -> Vec<Arc<Node>> {
        let mut state = self.state.lock();
        state.nodes.retain(|name, _| nodes.iter().any(|n| n.metadata.name.as_ref() == Some(name)));
        let mut silent = Vec::new();
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let heartbeat = conditions::heartbeat(node).cloned();
            let renewed = self
                .leases
                .get_in(LEASE_NAMESPACE, &name)
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| format!("{:?}", t.0)));
            let observed = state.nodes.entry(name).or_insert(Observed { heartbeat: None, renewed: None, at: now });
            if observed.heartbeat != heartbeat || observed.renewed != renewed {
                *observed = Observed { heartbeat, renewed, at: now };
            }
            if now.saturating_duration_since(observed.at) > self.options.grace_period && ready_status(node) != "Unknown"
            {
                silent.push(Arc::clone(node));
            }
        }
        silent
    }

    /// Sets a silent node's conditions Unknown and its pods (`on_node`) not ready;
    /// returns the node as written.
    async fn mark_unknown(&self, node: &Node, on_node: &[Arc<Pod>], now: &Time) -> Result<Option<Node>, kube::Error> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        tracing::info!(node = name, "node stopped posting status; marking it Unknown");
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "status": {"conditions": unknown_conditions(node, now)},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        let written = ignore_not_found(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await)?;
        if written.is_some() {
            self.events.normal(node, "NodeNotReady", format!("Node {name} status is now: NodeNotReady"));
        }
        for pod in on_node {
            if mark_pod_not_ready(&self.client, pod, now).await? {
                self.events.warning(&**pod, "NodeNotReady", "Node is not ready".into());
            }
        }
        Ok(written)
    }

    /// Per zone: its state and size, from the nodes' Ready statuses.
    fn zone_states(&self, nodes: &[Arc<Node>]) -> HashMap<String, (ZoneState, usize)> {
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for node in nodes {
            let entry = counts.entry(zone_of(node)).or_default();
            if ready_status(node) == "True" {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        counts
            .into_iter()
            .map(|(zone, (ready, not_ready))| {
                (zone, (self.options.eviction.state(ready, not_ready), ready + not_ready))
            })
            .collect()
    }
}

/// Sets a pod's Ready condition False (its node is gone silent; kube's
/// MarkPodsNotReady), so Services stop sending it traffic; returns whether it did.
async fn mark_pod_not_ready(client: &Client, pod: &Pod, now: &Time) -> Result<bool, kube::Error> {
    let mut conditions = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready" && c.status != "False") else {
        return Ok(false);
    };
    ready.status = "False".into();
    ready.last_transition_time = Some(now.clone());
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    let api: Api<Pod> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    Ok(ignore_not_found(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await)?.is_some())
}

impl Reconciler for NodeLifecycleController {
    async fn reconcile(&self, _key: &str) -> Result<Action, ReconcileError> {
        let instant = Instant::now();
        let now = Time(Timestamp::now());
        let mut nodes = self.nodes.list();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let silent = self.silent_nodes(&nodes, instant);
        // The pods of the silent nodes, found in one pass over the cache.
        let mut on_silent: HashMap<String, Vec<Arc<Pod>>> =
            silent.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), Vec::new())).collect();
        if !on_silent.is_empty() {
            for pod in self.pods.list() {
                if let Some(pods) = node_name(&pod).and_then(|n| on_silent.get_mut(n)) {
                    pods.push(pod);
                }
            }
        }
        for node in &silent {
            let on_node = &on_silent[node.metadata.name.as_deref().unwrap_or_default()];
            if let Some(written) = self.mark_unknown(node, on_node, &now).await? {
                let at = nodes.iter().position(|n| n.metadata.name == written.metadata.name).expect("listed");
                nodes[at] = Arc::new(written);
            }
        }
        let zones = self.zone_states(&nodes);
        // Every zone down: the fault is most likely ours; evict nothing.
        let everything_down = !zones.is_empty() && zones.values().all(|(s, _)| *s == ZoneState::FullDisruption);
        let api: Api<Node> = Api::all(self.client.clone());
        for node in &nodes {
            let mut no_execute = if everything_down { None } else { no_execute_key(ready_status(node)) };
            // A new NoExecute taint waits for its zone's turn; swapping one for the
            // other does not.
            if no_execute.is_some() && current_no_execute(node).is_none() {
                let zone = zone_of(node);
                let (state, size) = zones[&zone];
                let rate = self.options.eviction.rate(state, size);
                let mut monitor = self.state.lock();
                let bucket = monitor.zones.entry(zone).or_insert_with(|| TokenBucket::new(instant));
                if !bucket.try_take(rate, instant) {
                    no_execute = None;
                }
            }
            let taints = desired_taints(node, no_execute, &now);
            if same_taints(&taints, conditions::taints(node)) {
                continue;
            }
            let name = node.metadata.name.as_deref().unwrap_or_default();
            tracing::info!(node = name, ready = ready_status(node), ?no_execute, "updating node taints");
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": taints},
            });
            // A conflict means the node changed; the next pass sees it.
            match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(Action::RequeueAfter(self.options.monitor_period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;
    use crate::controllers::taints::UNREACHABLE;
    use serde_json::json;

    #[tokio::test]
    async fn a_silent_node_turns_unknown_its_pods_not_ready_and_it_is_tainted() {
        // n1 falls silent; n2 keeps posting, so the zone is not fully down (where
        // nothing would be evicted).
        let rig = Rig::new();
        let options = NodeLifecycleOptions { grace_period: Duration::from_millis(1), ..Default::default() };
        let controller = NodeLifecycleController::register(&rig.informers, &rig.queue, options);
        for name in ["n1", "n2"] {
            let node: Node = serde_json::from_value(json!({"metadata": {"name": name}, "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}}))
            .expect("a node");
            rig.fake.insert(&node);
        }
        let beats = std::sync::atomic::AtomicU32::new(0);
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))
        .expect("a pod");
        rig.fake.insert(&pod);
        let pass = || async {
            let beat = beats.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rig.fake.modify::<Node>("", "n2", |object| {
                let at = format!("2026-01-01T00:00:{:02}Z", beat + 1);
                object["status"]["conditions"][0]["lastHeartbeatTime"] = json!(at);
            });
            rig.sync::<Node>();
            rig.sync::<Lease>();
            rig.sync::<Pod>();
            controller.reconcile(MONITOR_KEY).await.expect("reconciled");
            rig.writes()
        };
        // First sight: the node's signs of life are noted, nothing judged.
        assert!(pass().await.iter().all(|w| !w.starts_with("patch nodes/status")));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let writes = pass().await;
        assert!(writes.contains(&"patch nodes/status n1".to_string()), "{writes:?}");
        assert!(writes.contains(&"patch pods/status p".to_string()), "{writes:?}");
        for _ in 0..3 {
            pass().await;
        }
        let node = rig.fake.get::<Node>("", "n1").expect("stored");
        let ready = node.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status), Some("Unknown".to_string()));
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        let effects: Vec<&str> = taints.iter().filter(|t| t.key == UNREACHABLE).map(|t| t.effect.as_str()).collect();
        assert!(effects.contains(&"NoSchedule") && effects.contains(&"NoExecute"), "{taints:?}");
        let pod = rig.fake.get::<Pod>("default", "p").expect("stored");
        let ready = pod.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status), Some("False".to_string()));
    }
}
