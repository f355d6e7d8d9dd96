//! Hollow nodes: many simulated nodes in one process, for large-cluster benchmarks.
//!
//! A fleet registers its Nodes and their Leases, then keeps them alive as kubelets do:
//! Leases renewed every 10 s, node conditions re-posted every 5 minutes. Nothing runs:
//! a pod bound to one of the fleet's nodes goes Running (after an optional delay) with a
//! pod IP from its node's /24, and Succeeded after the run time its
//! `hollow.keelson.dev/run-seconds` annotation asks for. A pod being deleted is
//! confirmed gone at once (deleted with grace period 0), as a kubelet does once its
//! containers stopped.
//!
//! One watch serves the whole fleet (bound pods, `spec.nodeName!=`), and one task owns
//! the per-pod state; API writes go out with bounded concurrency, so 5,000 nodes cost a
//! handful of tasks, not 5,000 kubelets.

pub use super::heartbeat::FleetError;
use super::heartbeat::Heartbeat;
use super::objects::{exited_status, hollow_node, running_status, NodeAddressing, NodeShape};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// A pod with this annotation (whole seconds) finishes that long after it started.
pub const RUN_SECONDS_ANNOTATION: &str = "hollow.keelson.dev/run-seconds";
/// The exit code a hollow pod's containers end with after their run time (default 0:
/// Succeeded; anything else: Failed).
pub const EXIT_CODE_ANNOTATION: &str = "hollow.keelson.dev/exit-code";

#[derive(Clone, Debug)]
pub struct HollowOptions {
    /// The nodes to simulate; a node's position is its index (for its addresses).
    pub names: Vec<String>,
    pub shape: NodeShape,
    /// Bound → Running.
    pub startup_delay: Duration,
    /// Lease renewal period (the kubelet's is 10 s).
    pub renew_interval: Duration,
    /// Node conditions are re-posted this often (the kubelet's default: 5 minutes).
    pub status_interval: Duration,
    /// API writes in flight at once, at most.
    pub concurrency: usize,
}

impl HollowOptions {
    /// `count` nodes named `PREFIX0`, `PREFIX1`, ...
    pub fn numbered(prefix: &str, count: usize) -> HollowOptions {
        HollowOptions {
            names: (0..count).map(|i| format!("{prefix}{i}")).collect(),
            shape: NodeShape::default(),
            startup_delay: Duration::ZERO,
            renew_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(300),
            concurrency: 32,
        }
    }
}

/// A running fleet. Stopping it stops the heartbeats: its Leases go stale and the
/// node lifecycle controller (once it runs) marks the nodes NotReady.
pub struct HollowFleet {
    tasks: Vec<JoinHandle<()>>,
}

impl HollowFleet {
    /// Registers every node and its Lease, then starts the heartbeats and the pod
    /// handling. Returns once all nodes are registered.
    pub async fn start(client: Client, options: HollowOptions) -> Result<HollowFleet, FleetError> {
        let options = Arc::new(options);
        let registered_at = Time(Timestamp::now());
        let nodes =
            options.names.iter().enumerate().map(|(index, name)| {
                hollow_node(name, NodeAddressing::new(index as u32), &options.shape, &registered_at)
            });
        let heartbeat = Heartbeat {
            renew_interval: options.renew_interval,
            status_interval: options.status_interval,
            concurrency: options.concurrency,
        };
        let mut tasks = heartbeat.register_and_start(&client, nodes, registered_at.clone()).await?;
        let writes = Arc::new(Semaphore::new(options.concurrency.max(1)));
        tasks.push(tokio::spawn(run_pods(client, options, writes)));
        Ok(HollowFleet { tasks })
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// What the fleet knows of a pod it runs.
struct HollowPod {
    deleting: bool,
}

/// Watches the pods bound to any node and runs those on the fleet's nodes. This task
/// owns the per-pod state; writes are spawned, bounded by `writes`.
async fn run_pods(client: Client, options: Arc<HollowOptions>, writes: Arc<Semaphore>) {
    let index: HashMap<&str, usize> = options.names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut next_ip: Vec<u32> = vec![0; options.names.len()];
    let mut pods: HashMap<String, HollowPod> = HashMap::new();
    let api: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName!=").page_size(1000);
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(Event::Delete(pod)) => {
                pods.remove(pod.metadata.uid.as_deref().unwrap_or(""));
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(error) => {
                tracing::warn!(%error, "watching pods");
                continue;
            }
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
        let Some(&node_index) = index.get(node) else { continue };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let addressing = NodeAddressing::new(node_index as u32);
        if pod.metadata.deletion_timestamp.is_some() {
            let known = pods.entry(uid).or_insert(HollowPod { deleting: false });
            if !known.deleting {
                known.deleting = true;
                spawn_write(&writes, confirm_deletion(client.clone(), pod));
            }
            continue;
        }
        if pods.contains_key(&uid) {
            continue;
        }
        pods.insert(uid, HollowPod { deleting: false });
        if phase != "Pending" {
            // Already running (a restarted agent re-adopts it) or finished.
            continue;
        }
        let pod_ip = addressing.pod_ip(next_ip[node_index]);
        next_ip[node_index] += 1;
        let start =
            start_pod(client.clone(), Arc::clone(&writes), pod, addressing.host_ip(), pod_ip, options.startup_delay);
        tokio::spawn(start);
    }
}

fn spawn_write(writes: &Arc<Semaphore>, write: impl std::future::Future<Output = ()> + Send + 'static) {
    let writes = Arc::clone(writes);
    tokio::spawn(async move {
        let Ok(_permit) = writes.acquire().await else { return };
        write.await;
    });
}

/// Bound → (delay) → Running → (run time, if asked) → Succeeded (or Failed, if asked).
async fn start_pod(client: Client, writes: Arc<Semaphore>, pod: Pod, host_ip: String, pod_ip: String, delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let started = Time(Timestamp::now());
    let annotation = |key: &str| pod.metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned();
    let run_seconds = annotation(RUN_SECONDS_ANNOTATION).and_then(|v| v.parse::<u64>().ok());
    let exit_code = annotation(EXIT_CODE_ANNOTATION).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    let running = running_status(&pod, &host_ip, &pod_ip, &started);
    if !write_status(&client, &writes, &pod, running).await {
        return;
    }
    let Some(seconds) = run_seconds else { return };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let finished = Time(Timestamp::now());
    let status = exited_status(&pod, &host_ip, &pod_ip, (&started, &finished), exit_code);
    write_status(&client, &writes, &pod, status).await;
}

/// Patches `pods/status`; false if the pod is gone or the write failed.
async fn write_status(
    client: &Client,
    writes: &Semaphore,
    pod: &Pod,
    status: k8s_openapi::api::core::v1::PodStatus,
) -> bool {
    let Ok(_permit) = writes.acquire().await else { return false };
    let (namespace, name) =
        (pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""));
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (patch, params) = (Patch::Merge(json!({"status": status})), PatchParams::default());
    let written = crate::client::retry_throttled(|| api.patch_status(name, &params, &patch)).await;
    match written {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(error) => {
            tracing::warn!(%error, pod = name, "writing pod status");
            false
        }
    }
}

/// The containers are "stopped": the pod may go (grace period 0, this pod only).
async fn confirm_deletion(client: Client, pod: Pod) {
    let (namespace, name) =
        (pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""));
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
        ..DeleteParams::default()
    };
    match crate::client::retry_throttled(|| api.delete(name, &params)).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => tracing::warn!(%error, pod = name, "confirming a pod's deletion"),
    }
}
