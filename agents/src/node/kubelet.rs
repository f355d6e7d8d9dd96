//! The node agent for one real node: registers the Node with the host's resources,
//! keeps its Lease and status fresh, and runs the pods bound to it through a
//! [`Runtime`], one [`Worker`] per pod, fed by one watch (`spec.nodeName=NAME`).
//!
//! On start it lists what the runtime already holds: containers of pods still in the
//! API are taken back by their workers, the rest (orphans) are stopped and removed.

use super::heartbeat::{FleetError, Heartbeat};
use super::logserver::{self, LogServerError};
use super::objects::{node_object, NodeIdentity, NodeShape};
use super::pod::worker::{NodeContext, Worker};
use super::runtime::{ContainerRecord, Runtime};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Register(#[from] FleetError),
    #[error(transparent)]
    Logs(#[from] LogServerError),
    #[error("configuring the container runtime: {0}")]
    Runtime(#[from] super::runtime::RuntimeError),
}

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub node_name: String,
    pub shape: NodeShape,
    /// The address the node reports (InternalIP) and pods of the process runtime use.
    pub host_ip: String,
    /// The port of the agent's HTTPS endpoint (logs), published on the Node; 0 picks
    /// a free one.
    pub kubelet_port: u16,
    /// The range pod IPs come from (published as the Node's `spec.podCIDR`).
    pub pod_cidr: String,
    /// Where pods' volumes (and the runtime's logs) live.
    pub root_dir: std::path::PathBuf,
    pub renew_interval: Duration,
    pub status_interval: Duration,
}

/// Which pod uid a `namespace/name` is, for the log endpoint.
pub type PodDirectory = Arc<RwLock<HashMap<(String, String), String>>>;

pub struct NodeAgent {
    tasks: Vec<JoinHandle<()>>,
    pub pods: PodDirectory,
    /// The runtime's name and version, as the Node reports it.
    pub runtime_version: String,
}

/// What the host offers: CPUs, memory and the disk holding `root`.
pub fn host_shape(root: &std::path::Path) -> NodeShape {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    let disk_bytes = disk_size(root).unwrap_or(0);
    NodeShape {
        cpu: cpus.to_string(),
        memory: format!("{memory_kib}Ki"),
        ephemeral_storage: disk_bytes.to_string(),
        ..NodeShape::default()
    }
}

fn disk_size(path: &std::path::Path) -> Option<u64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid C string and `stat` a writable statvfs.
    let ok = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } == 0;
    ok.then(|| stat.f_blocks as u64 * stat.f_frsize as u64)
}

fn first_line_of(path: &str, key: Option<&str>) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match key {
        None => text.trim().to_owned(),
        Some(key) => text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "Linux".into()),
    }
}

impl NodeAgent {
    /// Serves logs (to clients `cluster_ca` signed), registers the node, and starts
    /// running its pods.
    pub async fn start<R: Runtime>(
        client: Client,
        options: AgentOptions,
        runtime: Arc<R>,
        cluster_ca: &[Vec<u8>],
    ) -> Result<NodeAgent, AgentError> {
        let pods: PodDirectory = Arc::default();
        runtime.set_pod_cidr(&options.pod_cidr).await?;
        let (port, log_server) = logserver::bind(
            options.kubelet_port,
            &options.node_name,
            &options.host_ip,
            cluster_ca,
            Arc::clone(&runtime),
            Arc::clone(&pods),
        )
        .await?;
        let registered_at = Time(Timestamp::now());
        let identity = NodeIdentity {
            host_ip: options.host_ip.clone(),
            pod_cidr: options.pod_cidr.clone(),
            runtime_version: runtime.version(),
            os_image: first_line_of("/etc/os-release", Some("PRETTY_NAME=")),
            kernel_version: first_line_of("/proc/sys/kernel/osrelease", None),
            kubelet_port: i32::from(port),
        };
        let node = node_object(&options.node_name, &identity, &options.shape, &registered_at);
        let heartbeat = Heartbeat {
            renew_interval: options.renew_interval,
            status_interval: options.status_interval,
            concurrency: 1,
        };
        let mut tasks = heartbeat.register_and_start(&client, std::iter::once(node), registered_at).await?;
        tasks.push(tokio::spawn(log_server));
        let context = Arc::new(NodeContext {
            node_name: options.node_name.clone(),
            root: options.root_dir.clone(),
            host_ip: options.host_ip.clone(),
            allocatable: [
                ("cpu", &options.shape.cpu),
                ("memory", &options.shape.memory),
                ("ephemeral-storage", &options.shape.ephemeral_storage),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect(),
        });
        let runtime_version = runtime.version();
        tasks.push(tokio::spawn(run_pods(client, runtime, context, Arc::clone(&pods))));
        Ok(NodeAgent { tasks, pods, runtime_version })
    }

    /// Stops the agent (not its containers: they keep running, for the next agent; the
    /// workers see their channels close and end without touching them).
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

struct Running {
    /// `Some(pod)`: its newest version; `None`: it left the API.
    updates: watch::Sender<Option<Pod>>,
    key: (String, String),
}

impl Running {
    /// The pod left the API: its worker stops the containers; logs are no longer served.
    fn leave(&self, directory: &PodDirectory) {
        self.updates.send_replace(None);
        directory.write().remove(&self.key);
    }
}

/// The one watch of this node's pods, handing each pod to its worker.
async fn run_pods<R: Runtime>(client: Client, runtime: Arc<R>, node: Arc<NodeContext>, directory: PodDirectory) {
    let mut adoptable: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
    match runtime.list().await {
        Ok(records) => {
            for record in records {
                adoptable.entry(record.pod_uid.clone()).or_default().push(record);
            }
        }
        Err(error) => tracing::warn!(%error, "listing the runtime's containers"),
    }
    let mut workers: HashMap<String, Running> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let api: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.node_name));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                listed.insert(pod.metadata.uid.clone().unwrap_or_default());
                dispatch(&client, &runtime, &node, &directory, &mut workers, &mut adoptable, pod);
            }
            Ok(Event::Apply(pod)) => dispatch(&client, &runtime, &node, &directory, &mut workers, &mut adoptable, pod),
            Ok(Event::Delete(pod)) => {
                if let Some(gone) = workers.remove(pod.metadata.uid.as_deref().unwrap_or("")) {
                    gone.leave(&directory);
                }
            }
            Ok(Event::InitDone) => {
                // Pods that went away while the watch was down, and containers of pods
                // that no longer exist (orphans), are stopped.
                workers.retain(|uid, running| {
                    let keep = listed.contains(uid);
                    if !keep {
                        running.leave(&directory);
                    }
                    keep
                });
                for (uid, _) in adoptable.drain() {
                    let runtime = Arc::clone(&runtime);
                    tokio::spawn(async move {
                        tracing::info!(pod_uid = uid, "stopping the containers of a pod that is gone");
                        if let Err(error) = runtime.remove_pod(&uid).await {
                            tracing::warn!(%error, pod_uid = uid, "removing an orphaned pod");
                        }
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "watching this node's pods"),
        }
    }
}

fn dispatch<R: Runtime>(
    client: &Client,
    runtime: &Arc<R>,
    node: &Arc<NodeContext>,
    directory: &PodDirectory,
    workers: &mut HashMap<String, Running>,
    adoptable: &mut HashMap<String, Vec<ContainerRecord>>,
    pod: Pod,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(running) = workers.get(&uid) {
        running.updates.send_replace(Some(pod));
        return;
    }
    let key = (
        pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    directory.write().insert(key.clone(), uid.clone());
    let adopted = adoptable.remove(&uid).unwrap_or_default();
    let (updates, receiver) = watch::channel(Some(pod.clone()));
    let worker = Worker::new(Arc::clone(runtime), client.clone(), Arc::clone(node), pod, adopted);
    tokio::spawn(worker.run(receiver));
    workers.insert(uid, Running { updates, key });
}
