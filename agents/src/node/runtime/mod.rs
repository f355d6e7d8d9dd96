//! Container runtimes behind one trait: the pod worker says what to run, a runtime runs
//! it. [`cri`] runs containers through containerd's CRI; [`process`] runs them as host
//! processes, for hosts without a container runtime.
//!
//! A runtime is stateless toward the agent: everything it knows about a container is on
//! disk or in the runtime itself, so a restarted agent lists what is running
//! ([`Runtime::list`]) and takes it back instead of starting it twice.

pub mod cri;
mod host_session;
pub mod logs;
pub mod process;
mod pty;
pub mod shim;

use crate::node::stream::portforward::Pipe;
use crate::node::stream::{Outcome, Session};
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
    /// `Always`, `IfNotPresent` or `Never` (defaulted by the API server).
    pub image_pull_policy: String,
    /// Replaces the image's entrypoint; empty keeps it.
    pub command: Vec<String>,
    /// Replaces the image's default arguments; empty keeps them (unless `command` is set).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub resources: Resources,
    /// Volumes (prepared on the node by the pod worker) to mount into the container.
    pub mounts: Vec<Mount>,
}

/// One mount of a node path into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

impl ContainerSpec {
    /// What runs when the image is not used: `command` then `args`.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// A container's CPU and memory, from its requests and limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// The CPU request in millicores (its share of contended CPU).
    pub cpu_request_millis: u64,
    /// The CPU limit in millicores (a quota per period); 0 means none.
    pub cpu_limit_millis: u64,
    /// The memory limit in bytes (past it the container is OOM-killed); 0 means none.
    pub memory_limit_bytes: u64,
}

/// The pod-level part of what a runtime prepares before any container runs.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    pub pod: PodRef,
    pub hostname: String,
    /// Container ports published on the node (`hostPort`).
    pub ports: Vec<PortMapping>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
}

/// A container the runtime has started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub id: String,
    /// The image it runs, as the runtime names it (`imageID` in the pod's status).
    pub image_id: String,
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
    pub image_id: String,
    pub state: ContainerState,
}

/// The outcome of a command run inside a container (exec probes, `kubectl exec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecResult {
    Exited { code: i32, stdout: Vec<u8>, stderr: Vec<u8> },
    TimedOut,
}

impl ExecResult {
    /// A command that could not be started (exit code 126, as a shell reports it).
    pub fn not_started(message: impl Into<String>) -> ExecResult {
        ExecResult::Exited { code: 126, stdout: Vec::new(), stderr: message.into().into_bytes() }
    }

    /// Standard output then standard error, as text (what a probe reports).
    pub fn output(stdout: &[u8], stderr: &[u8]) -> String {
        let mut output = String::from_utf8_lossy(stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(stderr));
        output
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container cannot be created as specified: the pod shows it as the waiting
    /// reason `CreateContainerError` with this message, and the worker retries.
    #[error("{0}")]
    CreateContainer(String),
    /// The image is not there and cannot be fetched: `reason` is the kubelet's
    /// (`ErrImagePull`, `ErrImageNeverPull`); the worker backs off before trying again.
    #[error("{message}")]
    ImagePull { reason: &'static str, message: String },
    #[error("container {0} not found")]
    NotFound(String),
    /// The runtime itself failed or cannot be reached.
    #[error("{0}")]
    Runtime(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl RuntimeError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }
}

/// Removes a pod's directory and everything in it; one already gone is fine.
pub(crate) fn remove_dir(dir: &std::path::Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::Io { context: format!("removing {}", dir.display()), source: error })
        }
        _ => Ok(()),
    }
}

/// What a node agent needs from a container runtime.
pub trait Runtime: Send + Sync + 'static {
    /// `process://0.1`, `containerd://1.7.24`: the node's `containerRuntimeVersion`
    /// and the prefix of container ids.
    fn version(&self) -> String;

    /// Tells the runtime the node's pod CIDR (the CRI runtime's network hands out pod
    /// IPs from it).
    fn set_pod_cidr(&self, _cidr: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async { Ok(()) }
    }

    /// Prepares the pod's sandbox (directory, network) and returns its IP. A sandbox
    /// that already exists (a restarted agent) is reused.
    fn run_sandbox(&self, sandbox: &SandboxSpec) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Creates and starts a container in its pod's sandbox.
    fn start(&self, spec: &ContainerSpec) -> impl Future<Output = Result<Started, RuntimeError>> + Send;

    fn state(&self, id: &str) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;

    /// SIGTERM, then SIGKILL once `grace` has passed; returns once the container exited.
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Runs `argv` inside a running container, killed after `timeout`.
    fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> impl Future<Output = ExecResult> + Send;

    /// Runs `argv` inside a running container with its standard streams (or a
    /// terminal, if the session has one) connected to `session` (`kubectl exec`).
    fn exec_stream(&self, id: &str, argv: &[String], session: Session) -> impl Future<Output = Outcome> + Send;

    /// Connects `session` to a running container's own streams from now on
    /// (`kubectl attach`); ends when the container does.
    fn attach(&self, id: &str, session: Session) -> impl Future<Output = Outcome> + Send;

    /// Joins `pipe` to `port` in the pod's network (`kubectl port-forward`); returns
    /// once the connection has ended both ways, or why it could not be made.
    fn port_forward(&self, pod_uid: &str, port: u16, pipe: Pipe) -> impl Future<Output = Result<(), String>> + Send;

    /// Stops whatever of the pod still runs and removes its sandbox, containers and logs.
    fn remove_pod(&self, pod_uid: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Every container the runtime holds (for re-adoption after a restart and for
    /// stopping orphans).
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerRecord>, RuntimeError>> + Send;

    /// The log file of a container: CRI's format, one `TIME STREAM TAG text` per line.
    fn log_path(&self, pod_uid: &str, container: &str, attempt: u32) -> PathBuf;
}
