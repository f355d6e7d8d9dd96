//! The `cri` runtime: containers run through the Kubernetes Container Runtime
//! Interface (gRPC `runtime.v1`) of containerd, as the kubelet runs them.
//!
//! Each pod gets a sandbox (`RunPodSandbox`: the pause container holding the pod's
//! network namespace, wired by containerd's CNI plugins to the node's pod CIDR), then
//! its containers (`CreateContainer` + `StartContainer`) from images already in
//! containerd, or pulled when the pull policy says so. containerd writes each
//! container's log in CRI's format to `ROOT/pods/UID/logs/NAME/ATTEMPT.log`, the same
//! layout the process runtime keeps, so the log server reads both alike.
//!
//! Everything the agent needs to take a node back after a restart is in containerd:
//! sandboxes and containers carry the pod's uid and the node's name as labels (only
//! this node's are listed, so several agents can share one containerd in tests).

use super::{
    remove_dir, ContainerRecord, ContainerSpec, ContainerState, ExecResult, Exit, PodRef, Runtime, RuntimeError,
    SandboxSpec, Started,
};
use crate::node::stream::portforward::{self, Pipe};
use crate::node::stream::{remote_spdy, Outcome, Session};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::{Channel, Endpoint, Uri};

const ID_SCHEME: &str = "containerd://";
/// The kubelet's labels, so `crictl` and other tools see familiar pods.
const POD_UID: &str = "io.kubernetes.pod.uid";
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Which agent's node a sandbox or container belongs to.
const NODE: &str = "io.keelson.node";
/// Calls that should answer at once (status, list) give up after this.
const QUICK_CALL: Duration = Duration::from_secs(30);
/// Calls that may do real work (sandbox setup, pulls, create) give up after this.
const SLOW_CALL: Duration = Duration::from_secs(300);
/// The CFS period the CPU quota is expressed in (the kubelet's 100 ms).
const CPU_PERIOD_MICROS: i64 = 100_000;
/// How old the shared container listing may be before a state query lists again
/// (the kubelet's PLEG relists every second; pod workers look every 250 ms).
const RELIST_PERIOD: Duration = Duration::from_millis(250);

/// One `ListContainers` of this node's containers: raw id → CRI state.
struct Relist {
    at: tokio::time::Instant,
    states: HashMap<String, i32>,
}

#[derive(Clone, Debug)]
struct Sandbox {
    id: String,
    ip: String,
    /// The sandbox's attempt (one more for each dead sandbox replaced).
    attempt: u32,
}

fn sandbox_metadata(pod: &PodRef, attempt: u32) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata { name: pod.name.clone(), uid: pod.uid.clone(), namespace: pod.namespace.clone(), attempt }
}

pub struct CriRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    version: String,
    node_name: String,
    root: PathBuf,
    /// Pod uid → its ready sandbox. Filled by `run_sandbox` and `list`; a cache of what
    /// containerd holds, so a lost entry is found again by listing.
    sandboxes: Mutex<HashMap<String, Sandbox>>,
    /// The newest listing, shared by every pod worker: a running container's state is
    /// answered from it, so N workers cost one `ListContainers` per period rather than
    /// N `ContainerStatus` calls. The async lock makes concurrent refreshes one call.
    relist: tokio::sync::Mutex<Option<Arc<Relist>>>,
    /// When each container known to be running started (raw id → time).
    running_since: Mutex<HashMap<String, SystemTime>>,
}

fn grpc_error(context: &str, status: tonic::Status) -> RuntimeError {
    match status.code() {
        tonic::Code::NotFound => RuntimeError::NotFound(format!("{context}: {}", status.message())),
        _ => RuntimeError::Runtime(format!("{context}: {}", status.message())),
    }
}

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn time_of(nanos: i64) -> Option<SystemTime> {
    (nanos > 0).then(|| UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

/// Opens a gRPC channel over containerd's unix socket.
async fn connect(socket: &Path) -> Result<Channel, RuntimeError> {
    let path = socket.to_owned();
    // The URI is required by the API and ignored by the connector.
    Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| RuntimeError::Runtime(format!("connecting to the CRI socket {}: {e}", socket.display())))
}

impl CriRuntime {
    /// Connects to the CRI endpoint at `socket` (a path, or `unix://PATH`). Logs go under
    /// `root`; `node_name` labels everything this agent creates.
    pub async fn connect(socket: &str, root: PathBuf, node_name: &str) -> Result<CriRuntime, RuntimeError> {
        let socket = Path::new(socket.strip_prefix("unix://").unwrap_or(socket));
        let channel = connect(socket).await?;
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let version = runtime
            .version(request(cri::VersionRequest { version: "v1".into() }, QUICK_CALL))
            .await
            .map_err(|s| grpc_error("asking the runtime's version (does it serve CRI runtime.v1?)", s))?
            .into_inner();
        std::fs::create_dir_all(root.join("pods")).map_err(RuntimeError::io(format!("creating {}", root.display())))?;
        Ok(CriRuntime {
            runtime,
            images: ImageServiceClient::new(channel),
            version: format!("{}://{}", version.runtime_name, version.runtime_version),
            node_name: node_name.to_owned(),
            root,
            sandboxes: Mutex::default(),
            relist: tokio::sync::Mutex::new(None),
            running_since: Mutex::default(),
        })
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    fn client(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// This node's sandboxes of one pod (or all pods), with their state.
    async fn list_sandboxes(&self, pod_uid: Option<&str>) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let mut labels = HashMap::from([(NODE.to_owned(), self.node_name.clone())]);
        if let Some(uid) = pod_uid {
            labels.insert(POD_UID.to_owned(), uid.to_owned());
        }
        let filter = cri::PodSandboxFilter { label_selector: labels, ..Default::default() };
        let response = self
            .client()
            .list_pod_sandbox(request(cri::ListPodSandboxRequest { filter: Some(filter) }, QUICK_CALL))
            .await
            .map_err(|s| grpc_error("listing pod sandboxes", s))?;
        Ok(response.into_inner().items)
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String, RuntimeError> {
        let status = self
            .client()
            .pod_sandbox_status(request(
                cri::PodSandboxStatusRequest { pod_sandbox_id: id.to_owned(), verbose: false },
                QUICK_CALL,
            ))
            .await
            .map_err(|s| grpc_error("reading a pod sandbox's status", s))?
            .into_inner();
        Ok(status.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default())
    }

    /// The image to run, present in containerd (pulled first when the policy says so);
    /// returns its reference for `imageID`.
    async fn ensure_image(&self, image: &str, policy: &str) -> Result<String, RuntimeError> {
        let spec = cri::ImageSpec { image: image.to_owned(), ..Default::default() };
        let present = self
            .images
            .clone()
            .image_status(request(cri::ImageStatusRequest { image: Some(spec.clone()), verbose: false }, QUICK_CALL))
            .await
            .map_err(|s| grpc_error(&format!("looking up image {image:?}"), s))?
            .into_inner()
            .image;
        let reference = |image: &cri::Image| image.repo_digests.first().cloned().unwrap_or_else(|| image.id.clone());
        match (present, policy) {
            (Some(found), "IfNotPresent" | "Never") => return Ok(reference(&found)),
            (None, "Never") => {
                return Err(RuntimeError::ImagePull {
                    reason: "ErrImageNeverPull",
                    message: format!("Container image {image:?} is not present with pull policy of Never"),
                })
            }
            _ => {}
        }
        let pull = cri::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None };
        match self.images.clone().pull_image(request(pull, SLOW_CALL)).await {
            Ok(pulled) => Ok(pulled.into_inner().image_ref),
            Err(status) => Err(RuntimeError::ImagePull {
                reason: "ErrImagePull",
                message: format!("failed to pull image {image:?}: {}", status.message()),
            }),
        }
    }

    /// This node's containers and their states, listed at most once per period.
    async fn relisted(&self) -> Result<Arc<Relist>, RuntimeError> {
        let mut cached = self.relist.lock().await;
        if let Some(relist) = cached.as_ref().filter(|r| r.at.elapsed() < RELIST_PERIOD) {
            return Ok(Arc::clone(relist));
        }
        let at = tokio::time::Instant::now();
        let containers = self.list_node_containers().await?;
        let relist = Arc::new(Relist { at, states: containers.into_iter().map(|c| (c.id, c.state)).collect() });
        *cached = Some(Arc::clone(&relist));
        Ok(relist)
    }

    /// Every container this node's agent created.
    async fn list_node_containers(&self) -> Result<Vec<cri::Container>, RuntimeError> {
        let filter = cri::ContainerFilter {
            label_selector: HashMap::from([(NODE.to_owned(), self.node_name.clone())]),
            ..Default::default()
        };
        Ok(self
            .client()
            .list_containers(request(cri::ListContainersRequest { filter: Some(filter) }, QUICK_CALL))
            .await
            .map_err(|s| grpc_error("listing containers", s))?
            .into_inner()
            .containers)
    }

    /// The kubelet's pod labels, and this node's.
    fn pod_labels(&self, pod: &PodRef) -> HashMap<String, String> {
        HashMap::from([
            (NODE.to_owned(), self.node_name.clone()),
            (POD_UID.to_owned(), pod.uid.clone()),
            (POD_NAME.to_owned(), pod.name.clone()),
            (POD_NAMESPACE.to_owned(), pod.namespace.clone()),
        ])
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, RuntimeError> {
        let raw = id.strip_prefix(ID_SCHEME).unwrap_or(id);
        self.client()
            .container_status(request(
                cri::ContainerStatusRequest { container_id: raw.to_owned(), verbose: false },
                QUICK_CALL,
            ))
            .await
            .map_err(|s| grpc_error(&format!("reading container {id}"), s))?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn remove_container(&self, raw_id: &str) {
        let removed = self
            .client()
            .remove_container(request(cri::RemoveContainerRequest { container_id: raw_id.to_owned() }, QUICK_CALL))
            .await;
        if let Err(status) = removed {
            tracing::warn!(container = raw_id, error = status.message(), "removing a container");
        }
    }

    /// Removes this pod's containers named `name` older than the previous run (the
    /// kubelet keeps one dead container per name, for `logs --previous`), and one with
    /// exactly `attempt` left by a start that failed half-way (its name is taken).
    async fn collect_garbage(&self, sandbox_id: &str, name: &str, attempt: u32) -> Result<(), RuntimeError> {
        let filter = cri::ContainerFilter { pod_sandbox_id: sandbox_id.to_owned(), ..Default::default() };
        let containers = self
            .client()
            .list_containers(request(cri::ListContainersRequest { filter: Some(filter) }, QUICK_CALL))
            .await
            .map_err(|s| grpc_error("listing a pod's containers", s))?
            .into_inner()
            .containers;
        for container in containers {
            let Some(meta) = &container.metadata else { continue };
            if meta.name == name && (meta.attempt + 1 < attempt || meta.attempt == attempt) {
                self.remove_container(&container.id).await;
            }
        }
        Ok(())
    }

    fn container_config(&self, spec: &ContainerSpec, image: &str) -> cri::ContainerConfig {
        let mut labels = self.pod_labels(&spec.pod);
        labels.insert(CONTAINER_NAME.to_owned(), spec.name.clone());
        let limits = &spec.resources;
        let resources = cri::LinuxContainerResources {
            // Shares as the kubelet computes them: 1024 per CPU requested, at least 2.
            cpu_shares: ((limits.cpu_request_millis * 1024) / 1000).max(2) as i64,
            cpu_period: if limits.cpu_limit_millis > 0 { CPU_PERIOD_MICROS } else { 0 },
            cpu_quota: if limits.cpu_limit_millis > 0 {
                (limits.cpu_limit_millis as i64 * CPU_PERIOD_MICROS / 1000).max(1000)
            } else {
                0
            },
            memory_limit_in_bytes: limits.memory_limit_bytes as i64,
            ..Default::default()
        };
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: spec.name.clone(), attempt: spec.attempt }),
            image: Some(cri::ImageSpec { image: image.to_owned(), ..Default::default() }),
            command: spec.command.clone(),
            args: spec.args.clone(),
            working_dir: spec.working_dir.clone().unwrap_or_default(),
            envs: spec
                .env
                .iter()
                .map(|(key, value)| cri::KeyValue { key: key.clone(), value: value.clone() })
                .collect(),
            labels,
            log_path: format!("{}/{}.log", spec.name, spec.attempt),
            mounts: spec
                .mounts
                .iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.display().to_string(),
                    readonly: m.read_only,
                    ..Default::default()
                })
                .collect(),
            linux: Some(cri::LinuxContainerConfig { resources: Some(resources), ..Default::default() }),
            ..Default::default()
        }
    }
}

/// A container's state as CRI reports it.
fn state_of(status: &cri::ContainerStatus) -> ContainerState {
    let exit = |code: i32, reason: String, message: Option<String>| Exit {
        exit_code: code,
        reason,
        message,
        started_at: time_of(status.started_at),
        finished_at: time_of(status.finished_at).unwrap_or_else(SystemTime::now),
    };
    match cri::ContainerState::try_from(status.state) {
        Ok(cri::ContainerState::ContainerRunning) => {
            ContainerState::Running { started_at: time_of(status.started_at).unwrap_or_else(SystemTime::now) }
        }
        // Created but not yet started: only seen between the two calls of a start.
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Running { started_at: SystemTime::now() },
        Ok(cri::ContainerState::ContainerExited) => {
            let reason = if status.reason.is_empty() {
                Exit::reason_for(status.exit_code).to_owned()
            } else {
                status.reason.clone()
            };
            let message = (!status.message.is_empty()).then(|| status.message.clone());
            ContainerState::Exited(exit(status.exit_code, reason, message))
        }
        _ => ContainerState::Exited(exit(
            137,
            "ContainerStatusUnknown".into(),
            Some("The container could not be located when the pod was terminated".into()),
        )),
    }
}

fn protocol(name: &str) -> i32 {
    match name {
        "UDP" => cri::Protocol::Udp as i32,
        "SCTP" => cri::Protocol::Sctp as i32,
        _ => cri::Protocol::Tcp as i32,
    }
}

impl Runtime for CriRuntime {
    fn version(&self) -> String {
        self.version.clone()
    }

    async fn set_pod_cidr(&self, cidr: &str) -> Result<(), RuntimeError> {
        let config = cri::RuntimeConfig { network_config: Some(cri::NetworkConfig { pod_cidr: cidr.to_owned() }) };
        self.client()
            .update_runtime_config(request(
                cri::UpdateRuntimeConfigRequest { runtime_config: Some(config) },
                QUICK_CALL,
            ))
            .await
            .map_err(|s| grpc_error("setting the pod CIDR", s))?;
        Ok(())
    }

    async fn run_sandbox(&self, sandbox: &SandboxSpec) -> Result<String, RuntimeError> {
        let pod = &sandbox.pod;
        if let Some(found) = self.sandboxes.lock().get(&pod.uid) {
            return Ok(found.ip.clone());
        }
        // A sandbox a previous agent started is taken back; a dead one is replaced.
        let mut attempt = 0;
        for existing in self.list_sandboxes(Some(&pod.uid)).await? {
            if existing.state == cri::PodSandboxState::SandboxReady as i32 {
                let ip = self.sandbox_ip(&existing.id).await?;
                let attempt = existing.metadata.as_ref().map_or(0, |m| m.attempt);
                self.sandboxes.lock().insert(pod.uid.clone(), Sandbox { id: existing.id, ip: ip.clone(), attempt });
                return Ok(ip);
            }
            attempt = attempt.max(existing.metadata.as_ref().map_or(0, |m| m.attempt + 1));
            let removed =
                self.client().remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: existing.id }).await;
            if let Err(status) = removed {
                tracing::warn!(pod = pod.name, error = status.message(), "removing a dead sandbox");
            }
        }
        let log_dir = self.pod_dir(&pod.uid).join("logs");
        std::fs::create_dir_all(&log_dir).map_err(RuntimeError::io(format!("creating {}", log_dir.display())))?;
        let config = cri::PodSandboxConfig {
            metadata: Some(sandbox_metadata(pod, attempt)),
            hostname: sandbox.hostname.clone(),
            log_directory: log_dir.display().to_string(),
            port_mappings: sandbox
                .ports
                .iter()
                .map(|p| cri::PortMapping {
                    protocol: protocol(&p.protocol),
                    container_port: i32::from(p.container_port),
                    host_port: i32::from(p.host_port),
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
            labels: self.pod_labels(pod),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Pod as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .client()
            .run_pod_sandbox(request(
                cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() },
                SLOW_CALL,
            ))
            .await
            .map_err(|s| grpc_error("creating the pod sandbox", s))?
            .into_inner()
            .pod_sandbox_id;
        let ip = self.sandbox_ip(&id).await?;
        self.sandboxes.lock().insert(pod.uid.clone(), Sandbox { id, ip: ip.clone(), attempt });
        Ok(ip)
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        let sandbox = self.sandboxes.lock().get(&spec.pod.uid).cloned();
        let Some(sandbox) = sandbox else {
            return Err(RuntimeError::Runtime(format!("pod {} has no sandbox", spec.pod.name)));
        };
        let image_id = self.ensure_image(&spec.image, &spec.image_pull_policy).await?;
        self.collect_garbage(&sandbox.id, &spec.name, spec.attempt).await?;
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(sandbox_metadata(&spec.pod, sandbox.attempt)),
            log_directory: self.pod_dir(&spec.pod.uid).join("logs").display().to_string(),
            ..Default::default()
        };
        let create = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.id.clone(),
            config: Some(self.container_config(spec, &spec.image)),
            sandbox_config: Some(sandbox_config),
        };
        let raw_id = self
            .client()
            .create_container(request(create, SLOW_CALL))
            .await
            .map_err(|s| RuntimeError::CreateContainer(s.message().to_owned()))?
            .into_inner()
            .container_id;
        let started = self
            .client()
            .start_container(request(cri::StartContainerRequest { container_id: raw_id.clone() }, SLOW_CALL))
            .await;
        let id = format!("{ID_SCHEME}{raw_id}");
        if let Err(status) = started {
            // containerd records a start that failed (a missing executable, say) as an
            // exited container with reason StartError: the pod shows that, as with the
            // kubelet. Anything else is a failure to create.
            let recorded = self.container_status(&id).await.map(|s| state_of(&s));
            if !matches!(recorded, Ok(ContainerState::Exited(_))) {
                self.remove_container(&raw_id).await;
                return Err(RuntimeError::CreateContainer(status.message().to_owned()));
            }
        }
        Ok(Started { id, image_id })
    }

    async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let raw = id.strip_prefix(ID_SCHEME).unwrap_or(id);
        let known = self.running_since.lock().get(raw).copied();
        if let Some(started_at) = known {
            let running = cri::ContainerState::ContainerRunning as i32;
            if self.relisted().await?.states.get(raw) == Some(&running) {
                return Ok(ContainerState::Running { started_at });
            }
        }
        // New to us, or no longer running: its full status (exit code, reason, times).
        let status = match self.container_status(id).await {
            Ok(status) => status,
            Err(error) => {
                self.running_since.lock().remove(raw);
                return Err(error);
            }
        };
        let state = state_of(&status);
        match &state {
            ContainerState::Running { started_at } => self.running_since.lock().insert(raw.to_owned(), *started_at),
            ContainerState::Exited(_) => self.running_since.lock().remove(raw),
        };
        Ok(state)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let raw = id.strip_prefix(ID_SCHEME).unwrap_or(id);
        let stop = cri::StopContainerRequest { container_id: raw.to_owned(), timeout: grace.as_secs() as i64 };
        let stopped = self.client().stop_container(request(stop, grace + QUICK_CALL)).await;
        // The shared listing may predate the stop: the next state query asks directly.
        self.running_since.lock().remove(raw);
        match stopped {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(grpc_error(&format!("stopping container {id}"), status)),
        }
    }

    async fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> ExecResult {
        let raw = id.strip_prefix(ID_SCHEME).unwrap_or(id);
        let exec = cri::ExecSyncRequest {
            container_id: raw.to_owned(),
            cmd: argv.to_vec(),
            timeout: timeout.as_secs().max(1) as i64,
        };
        match self.client().exec_sync(request(exec, timeout + QUICK_CALL)).await {
            Ok(response) => {
                let response = response.into_inner();
                ExecResult::Exited { code: response.exit_code, stdout: response.stdout, stderr: response.stderr }
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded || status.message().contains("timeout") => {
                ExecResult::TimedOut
            }
            Err(status) => ExecResult::not_started(status.message()),
        }
    }

    async fn exec_stream(&self, id: &str, argv: &[String], session: Session) -> Outcome {
        let exec = cri::ExecRequest {
            container_id: id.strip_prefix(ID_SCHEME).unwrap_or(id).to_owned(),
            cmd: argv.to_vec(),
            tty: session.tty,
            stdin: session.stdin.is_some(),
            stdout: session.stdout.is_some(),
            stderr: session.stderr.is_some(),
        };
        match self.client().exec(request(exec, QUICK_CALL)).await {
            Ok(response) => remote_spdy::connect(&response.into_inner().url, session).await,
            Err(status) => Outcome::Failed(status.message().to_owned()),
        }
    }

    async fn attach(&self, id: &str, session: Session) -> Outcome {
        let attach = cri::AttachRequest {
            container_id: id.strip_prefix(ID_SCHEME).unwrap_or(id).to_owned(),
            stdin: session.stdin.is_some(),
            tty: session.tty,
            stdout: session.stdout.is_some(),
            stderr: session.stderr.is_some(),
        };
        match self.client().attach(request(attach, QUICK_CALL)).await {
            Ok(response) => remote_spdy::connect(&response.into_inner().url, session).await,
            Err(status) => Outcome::Failed(status.message().to_owned()),
        }
    }

    async fn port_forward(&self, pod_uid: &str, port: u16, pipe: Pipe) -> Result<(), String> {
        let known = self.sandboxes.lock().get(pod_uid).map(|s| s.id.clone());
        let sandbox = match known {
            Some(id) => id,
            None => {
                let ready = cri::PodSandboxState::SandboxReady as i32;
                let sandboxes = self.list_sandboxes(Some(pod_uid)).await.map_err(|e| e.to_string())?;
                let found = sandboxes.into_iter().find(|s| s.state == ready).map(|s| s.id);
                found.ok_or_else(|| format!("pod {pod_uid} has no ready sandbox"))?
            }
        };
        let forward = cri::PortForwardRequest { pod_sandbox_id: sandbox, port: vec![i32::from(port)] };
        match self.client().port_forward(request(forward, QUICK_CALL)).await {
            Ok(response) => portforward::forward(&response.into_inner().url, port, pipe).await,
            Err(status) => Err(status.message().to_owned()),
        }
    }

    async fn remove_pod(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        self.sandboxes.lock().remove(pod_uid);
        for sandbox in self.list_sandboxes(Some(pod_uid)).await? {
            let id = sandbox.id;
            self.client()
                .stop_pod_sandbox(request(cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() }, SLOW_CALL))
                .await
                .map_err(|s| grpc_error("stopping the pod sandbox", s))?;
            self.client()
                .remove_pod_sandbox(request(cri::RemovePodSandboxRequest { pod_sandbox_id: id }, SLOW_CALL))
                .await
                .map_err(|s| grpc_error("removing the pod sandbox", s))?;
        }
        remove_dir(&self.pod_dir(pod_uid))
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        for sandbox in self.list_sandboxes(None).await? {
            let Some(uid) = sandbox.labels.get(POD_UID).cloned() else { continue };
            if sandbox.state == cri::PodSandboxState::SandboxReady as i32 {
                let ip = self.sandbox_ip(&sandbox.id).await?;
                let attempt = sandbox.metadata.as_ref().map_or(0, |m| m.attempt);
                self.sandboxes.lock().insert(uid, Sandbox { id: sandbox.id, ip, attempt });
            }
        }
        let containers = self.list_node_containers().await?;
        let mut records = Vec::with_capacity(containers.len());
        for container in containers {
            let (Some(uid), Some(meta)) = (container.labels.get(POD_UID), &container.metadata) else { continue };
            let id = format!("{ID_SCHEME}{}", container.id);
            let status = match self.container_status(&id).await {
                Ok(status) => status,
                Err(RuntimeError::NotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            records.push(ContainerRecord {
                pod_uid: uid.clone(),
                name: meta.name.clone(),
                attempt: meta.attempt,
                image_id: status.image_ref.clone(),
                state: state_of(&status),
                id,
            });
        }
        Ok(records)
    }

    fn log_path(&self, pod_uid: &str, container: &str, attempt: u32) -> PathBuf {
        self.pod_dir(pod_uid).join("logs").join(container).join(format!("{attempt}.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: cri::ContainerState, code: i32, reason: &str) -> cri::ContainerStatus {
        cri::ContainerStatus {
            state: state as i32,
            exit_code: code,
            reason: reason.into(),
            started_at: 1_700_000_000_000_000_000,
            finished_at: 1_700_000_005_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn exits_keep_the_runtime_reason_or_take_the_kubelet_one() {
        let exited = |code, reason| match state_of(&status(cri::ContainerState::ContainerExited, code, reason)) {
            ContainerState::Exited(exit) => (exit.exit_code, exit.reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(exited(0, ""), (0, "Completed".into()));
        assert_eq!(exited(3, ""), (3, "Error".into()));
        assert_eq!(exited(137, "OOMKilled"), (137, "OOMKilled".into()));
        assert_eq!(exited(128, "StartError"), (128, "StartError".into()));
    }

    #[test]
    fn a_running_container_reports_its_start_time() {
        match state_of(&status(cri::ContainerState::ContainerRunning, 0, "")) {
            ContainerState::Running { started_at } => {
                assert_eq!(started_at, UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            }
            other => panic!("{other:?}"),
        }
    }
}
