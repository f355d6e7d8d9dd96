//! Container runtimes behind one trait: the pod worker says what to run, a runtime runs
//! it. `process` runs containers as host processes; a CRI runtime (containerd) is next.
//!
//! A runtime is stateless toward the agent: everything it knows about a container is on
//! disk or in the runtime itself, so a restarted agent lists what is running
//! ([`Runtime::list`]) and takes it back instead of starting it twice.

pub mod logs;
pub mod process;
pub mod shim;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// One container to start, resolved by the pod worker (command, args and env expanded).
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    pub pod: PodRef,
    pub name: String,
    /// 0 for the first run; each restart counts one up.
    pub attempt: u32,
    pub image: String,
    /// `command` + `args`; empty means "the image's default command".
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
}

/// Which pod a container belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A container as the runtime last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Running { started_at: SystemTime },
    Exited(Exit),
}

/// How a container ended, with the kubelet's reasons: `Completed` (exit 0), `Error`,
/// `OOMKilled`, `StartError` (it never ran), `ContainerStatusUnknown` (lost track).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exit {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<SystemTime>,
    pub finished_at: SystemTime,
}

impl Exit {
    /// The reason the kubelet gives a process that exited with `code`.
    pub fn reason_for(code: i32) -> &'static str {
        if code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// A container the runtime holds, found by [`Runtime::list`].
#[derive(Clone, Debug)]
pub struct ContainerRecord {
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    pub id: String,
    pub state: ContainerState,
}

/// The outcome of a command run inside a container (exec probes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecResult {
    Exited { code: i32, output: String },
    TimedOut,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container cannot be created as specified: the pod shows it as the waiting
    /// reason `CreateContainerError` with this message, and the worker retries.
    #[error("{0}")]
    CreateContainer(String),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl RuntimeError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }
}

/// What a node agent needs from a container runtime.
pub trait Runtime: Send + Sync + 'static {
    /// `process://0.1`, `containerd://1.7.24`: the node's `containerRuntimeVersion`
    /// and the prefix of container ids.
    fn version(&self) -> String;

    /// Prepares the pod's sandbox (directory, network) and returns its IP.
    fn run_sandbox(&self, pod: &PodRef) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Creates and starts a container; returns its id.
    fn start(&self, spec: &ContainerSpec) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    fn state(&self, id: &str) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;

    /// SIGTERM, then SIGKILL once `grace` has passed; returns once the container exited.
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Runs `argv` inside a running container, killed after `timeout`.
    fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> impl Future<Output = ExecResult> + Send;

    /// Stops whatever of the pod still runs and removes its sandbox, containers and logs.
    fn remove_pod(&self, pod_uid: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Every container the runtime holds (for re-adoption after a restart and for
    /// stopping orphans).
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerRecord>, RuntimeError>> + Send;

    /// The log file of a container: CRI's format, one `TIME STREAM TAG text` per line.
    fn log_path(&self, pod_uid: &str, container: &str, attempt: u32) -> PathBuf;
}
