//! One worker per pod: it starts the pod's containers in order (init containers one by
//! one, then the rest), watches them, restarts them as the restart policy and the
//! backoff say, runs their probes, writes the pod's status when it changes, and on
//! deletion stops them within the grace period and lets the pod go.

use super::backoff::Backoff;
use super::env::{self, Placement};
use super::probe::{self, Tally};
use super::status::{self, ContainerView, Observed, PodView};
use super::volumes;
use crate::node::runtime::{
    ContainerRecord, ContainerSpec, ContainerState, Exit, PodRef, PortMapping, Resources, Runtime, RuntimeError,
    SandboxSpec,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use keelson_engine::Quantity;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a worker looks at its containers when nothing else wakes it.
const TICK: Duration = Duration::from_millis(250);
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// The kubelet's image pull back-off: 10 s, doubling to 5 minutes.
const PULL_BACKOFF_FIRST: Duration = Duration::from_secs(10);
const PULL_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often a running pod's configMap/secret/downwardAPI volumes are refreshed (the
/// kubelet's sync period), and how soon a volume that failed is tried again.
const VOLUME_REFRESH: Duration = Duration::from_secs(60);
const VOLUME_RETRY: Duration = Duration::from_secs(2);

/// What the node tells each worker.
pub struct NodeContext {
    pub node_name: String,
    /// The agent's root directory: each pod's volumes live in `ROOT/pods/UID/volumes`.
    pub root: std::path::PathBuf,
    pub host_ip: String,
    pub allocatable: BTreeMap<String, String>,
}

/// One container of the pod, across its restarts.
struct Slot {
    spec: Container,
    init: bool,
    /// Runs started so far; the next run's attempt number.
    attempts: u32,
    id: Option<String>,
    image_id: String,
    state: Observed,
    /// The previous run's end (`lastState`).
    last: Option<Exit>,
    /// When the current run's end was seen (the backoff counts from there).
    exited_at: Option<Instant>,
    backoff: Backoff,
    /// After a failed image pull: when to try again, and the delay after that.
    pull_retry: Option<(Instant, Duration)>,
    /// A sidecar stopped because the pod's containers finished: not restarted.
    finished: bool,
    started_at: Option<Instant>,
    startup: Option<Tally>,
    liveness: Option<Tally>,
    readiness: Option<Tally>,
}

impl Slot {
    fn new(spec: Container, init: bool) -> Slot {
        Slot {
            spec,
            init,
            attempts: 0,
            id: None,
            image_id: String::new(),
            state: Observed::Waiting { reason: "ContainerCreating".into(), message: None },
            last: None,
            exited_at: None,
            backoff: Backoff::default(),
            pull_retry: None,
            finished: false,
            started_at: None,
            startup: None,
            liveness: None,
            readiness: None,
        }
    }

    /// An init container with `restartPolicy: Always`: a sidecar.
    fn sidecar(&self) -> bool {
        self.init && self.spec.restart_policy.as_deref() == Some("Always")
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, Observed::Terminated(e) if e.exit_code == 0)
    }

    fn started(&self) -> bool {
        matches!(self.state, Observed::Running { .. }) && self.startup.as_ref().is_none_or(|t| t.passing == Some(true))
    }

    fn ready(&self) -> bool {
        self.started() && self.readiness.as_ref().is_none_or(|t| t.passing == Some(true))
    }
}

fn should_restart(policy: &str, exit: &Exit) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit.exit_code != 0,
        _ => true,
    }
}

pub struct Worker<R: Runtime> {
    runtime: Arc<R>,
    client: Client,
    node: Arc<NodeContext>,
    pod: Pod,
    slots: Vec<Slot>,
    pod_ip: Option<String>,
    /// Each volume's path on the node, once prepared, and when to prepare them again.
    volumes: Option<BTreeMap<String, std::path::PathBuf>>,
    volumes_due: Instant,
    start_time: SystemTime,
    init_failed: bool,
    written: Option<PodStatus>,
}

impl<R: Runtime> Worker<R> {
    /// A worker for `pod`, taking back the containers a previous agent left running.
    pub fn new(
        runtime: Arc<R>,
        client: Client,
        node: Arc<NodeContext>,
        pod: Pod,
        adopted: Vec<ContainerRecord>,
    ) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut slots: Vec<Slot> = spec.init_containers.into_iter().flatten().map(|c| Slot::new(c, true)).collect();
        slots.extend(spec.containers.into_iter().map(|c| Slot::new(c, false)));
        for slot in &mut slots {
            let mut runs: Vec<&ContainerRecord> = adopted.iter().filter(|r| r.name == slot.spec.name).collect();
            runs.sort_by_key(|r| r.attempt);
            if let Some(latest) = runs.last() {
                slot.attempts = latest.attempt + 1;
                slot.id = Some(latest.id.clone());
                slot.image_id = latest.image_id.clone();
                slot.state = match &latest.state {
                    ContainerState::Running { started_at } => {
                        slot.started_at = Some(Instant::now());
                        Observed::Running { started_at: *started_at }
                    }
                    ContainerState::Exited(exit) => {
                        slot.exited_at = Some(Instant::now());
                        Observed::Terminated(exit.clone())
                    }
                };
                slot.arm_probes(Instant::now());
            }
            if let Some(ContainerState::Exited(previous)) = runs.iter().rev().nth(1).map(|r| &r.state) {
                slot.last = Some(previous.clone());
            }
        }
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .and_then(|t| u64::try_from(t.0.as_second()).ok())
            .map_or_else(SystemTime::now, |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let written = pod.status.clone();
        Worker {
            runtime,
            client,
            node,
            pod,
            slots,
            pod_ip: None,
            volumes: None,
            volumes_due: Instant::now(),
            start_time,
            init_failed: false,
            written,
        }
    }

    fn pod_ref(&self) -> PodRef {
        let meta = &self.pod.metadata;
        PodRef {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// Sets up (or refreshes) the pod's volumes; until they are ready its containers
    /// wait in `ContainerCreating`.
    async fn prepare_volumes(&mut self) {
        let pod_dir = self.node.root.join("pods").join(self.pod_ref().uid);
        let ip = self.pod_ip.clone().unwrap_or_default();
        let placement = Placement { node_name: &self.node.node_name, host_ip: &self.node.host_ip, pod_ip: &ip };
        match volumes::prepare(&self.client, &self.pod, &pod_dir, &placement).await {
            Ok(paths) => {
                self.volumes = Some(paths);
                self.volumes_due = Instant::now() + VOLUME_REFRESH;
            }
            Err(message) => {
                // A pod already running keeps its volumes as they were.
                if self.volumes.is_none() {
                    tracing::warn!(pod = ?self.pod.metadata.name, %message, "setting up volumes");
                }
                self.volumes_due = Instant::now() + VOLUME_RETRY;
            }
        }
    }

    fn sandbox_spec(&self) -> SandboxSpec {
        let spec = self.pod.spec.as_ref();
        let ports = spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let host_port = u16::try_from(p.host_port?).ok().filter(|port| *port > 0)?;
                Some(PortMapping {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    container_port: u16::try_from(p.container_port).ok()?,
                    host_port,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                })
            })
            .collect();
        let hostname = spec.and_then(|s| s.hostname.clone()).unwrap_or_else(|| self.pod_ref().name);
        SandboxSpec { pod: self.pod_ref(), hostname, ports }
    }

    fn restart_policy(&self) -> String {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
    }

    /// Runs until the pod is gone. `updates` holds the newest version of the pod, or
    /// `None` once the pod left the API (its containers are then stopped). A dropped
    /// sender means the agent itself is stopping: the worker ends and leaves the
    /// containers running, for the next agent to take back.
    pub async fn run(mut self, mut updates: watch::Receiver<Option<Pod>>) {
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.terminate(true).await;
                return;
            }
            if let Err(error) = self.sync().await {
                tracing::warn!(%error, pod = ?self.pod.metadata.name, "syncing pod");
            }
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let newest = updates.borrow_and_update().clone();
                    match newest {
                        Some(pod) => self.pod = pod,
                        None => {
                            // Deleted from the API already (grace 0 by someone else).
                            self.terminate(false).await;
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn sync(&mut self) -> Result<(), RuntimeError> {
        let terminal = matches!(self.written.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        if terminal {
            return Ok(());
        }
        if self.pod_ip.is_none() {
            match self.runtime.run_sandbox(&self.sandbox_spec()).await {
                Ok(ip) => self.pod_ip = Some(ip),
                Err(error) => {
                    // The pod shows its containers still being created; the next tick retries.
                    self.write_status().await;
                    return Err(error);
                }
            }
        }
        if Instant::now() >= self.volumes_due {
            self.prepare_volumes().await;
            if self.volumes.is_none() {
                self.write_status().await;
                return Ok(());
            }
        }
        self.observe().await;
        let policy = self.restart_policy();
        let mut init_done = true;
        for index in 0..self.slots.len() {
            if !self.slots[index].init {
                continue;
            }
            if self.slots[index].finished {
                continue;
            }
            if self.slots[index].sidecar() {
                // A sidecar (restartPolicy Always) lets the next init container go once
                // it has started, and keeps running beside the pod's containers.
                match &self.slots[index].state {
                    Observed::Running { .. } => self.probe(index).await,
                    _ => self.start(index).await,
                }
                if self.slots[index].started() {
                    continue;
                }
                init_done = false;
                break;
            }
            if self.slots[index].succeeded() {
                continue;
            }
            init_done = false;
            match &self.slots[index].state {
                Observed::Running { .. } => {}
                // An init container that failed is retried unless the pod never restarts.
                Observed::Terminated(_) if policy == "Never" => self.init_failed = true,
                _ => self.start(index).await,
            }
            break;
        }
        if init_done {
            for index in 0..self.slots.len() {
                if self.slots[index].init {
                    continue;
                }
                match &self.slots[index].state {
                    Observed::Running { .. } => self.probe(index).await,
                    Observed::Terminated(exit) if !should_restart(&policy, exit) => {}
                    _ => self.start(index).await,
                }
            }
            self.stop_sidecars_when_done(&policy).await;
        }
        self.write_status().await;
        Ok(())
    }

    /// Once every regular container has finished for good, the sidecars are stopped
    /// (they would otherwise keep the pod from completing), as the kubelet does.
    async fn stop_sidecars_when_done(&mut self, policy: &str) {
        let finished = self
            .slots
            .iter()
            .filter(|s| !s.init)
            .all(|s| matches!(&s.state, Observed::Terminated(exit) if !should_restart(policy, exit)));
        if !finished {
            return;
        }
        let grace = self.grace();
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if !slot.sidecar() {
                continue;
            }
            slot.finished = true;
            if let (Observed::Running { .. }, Some(id)) = (&slot.state, slot.id.clone()) {
                if let Err(error) = self.runtime.stop(&id, grace).await {
                    tracing::warn!(%error, container = self.slots[index].spec.name, "stopping a sidecar");
                }
            }
        }
        self.observe().await;
    }

    /// Refreshes every running container's state from the runtime.
    async fn observe(&mut self) {
        for slot in &mut self.slots {
            let (Observed::Running { .. }, Some(id)) = (&slot.state, &slot.id) else { continue };
            match self.runtime.state(id).await {
                Ok(ContainerState::Running { .. }) => {}
                Ok(ContainerState::Exited(exit)) => {
                    slot.state = Observed::Terminated(exit);
                    slot.exited_at = Some(Instant::now());
                }
                Err(error) => tracing::warn!(%error, container = slot.spec.name, "reading container state"),
            }
        }
    }

    /// Starts (or restarts, once its backoff allows) the container in slot `index`.
    async fn start(&mut self, index: usize) {
        let pod_ref = self.pod_ref();
        let now = Instant::now();
        let slot = &mut self.slots[index];
        if let Some(exited) = slot.exited_at {
            let ran_for = match &slot.state {
                Observed::Terminated(exit) => {
                    exit.started_at.and_then(|s| exit.finished_at.duration_since(s).ok()).unwrap_or_default()
                }
                _ => Duration::ZERO,
            };
            if let Observed::Terminated(exit) = &slot.state {
                slot.last = Some(exit.clone());
            }
            if slot.backoff.check(exited, ran_for, now).is_some() {
                slot.state = Observed::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        slot.backoff.current().as_secs(),
                        slot.spec.name,
                        pod_ref.name,
                        pod_ref.namespace,
                        pod_ref.uid
                    )),
                };
                return;
            }
        }
        if let Some((retry_at, _)) = slot.pull_retry {
            if now < retry_at {
                let image = slot.spec.image.clone().unwrap_or_default();
                slot.state = Observed::Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: Some(format!("Back-off pulling image {image:?}")),
                };
                return;
            }
        }
        let ip = self.pod_ip.clone().unwrap_or_default();
        let placement = Placement { node_name: &self.node.node_name, host_ip: &self.node.host_ip, pod_ip: &ip };
        let slot = &self.slots[index];
        let env = match env::resolve(&self.client, &self.pod, &slot.spec, &placement, &self.node.allocatable).await {
            Ok(env) => env,
            Err(message) => {
                self.slots[index].state =
                    Observed::Waiting { reason: "CreateContainerConfigError".into(), message: Some(message) };
                return;
            }
        };
        let mounts = match volumes::mounts(&slot.spec, self.volumes.as_ref().unwrap_or(&BTreeMap::new())) {
            Ok(mounts) => mounts,
            Err(message) => {
                self.slots[index].state =
                    Observed::Waiting { reason: "CreateContainerConfigError".into(), message: Some(message) };
                return;
            }
        };
        let (command, args) = env::command_and_args(&slot.spec, &env);
        let spec = ContainerSpec {
            pod: pod_ref,
            name: slot.spec.name.clone(),
            attempt: slot.attempts,
            image: slot.spec.image.clone().unwrap_or_default(),
            image_pull_policy: slot.spec.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into()),
            command,
            args,
            env,
            working_dir: slot.spec.working_dir.clone(),
            resources: resources(&slot.spec),
            mounts,
        };
        let started = self.runtime.start(&spec).await;
        let slot = &mut self.slots[index];
        match started {
            Ok(started) => {
                slot.attempts += 1;
                slot.pull_retry = None;
                let state = self.runtime.state(&started.id).await;
                slot.id = Some(started.id);
                slot.image_id = started.image_id;
                slot.exited_at = None;
                slot.started_at = Some(Instant::now());
                slot.arm_probes(Instant::now());
                slot.state = match state {
                    Ok(ContainerState::Running { started_at }) => Observed::Running { started_at },
                    Ok(ContainerState::Exited(exit)) => {
                        slot.exited_at = Some(Instant::now());
                        Observed::Terminated(exit)
                    }
                    Err(_) => Observed::Running { started_at: SystemTime::now() },
                };
            }
            Err(RuntimeError::ImagePull { reason, message }) => {
                let delay = slot.pull_retry.map_or(PULL_BACKOFF_FIRST, |(_, delay)| (delay * 2).min(PULL_BACKOFF_MAX));
                slot.pull_retry = Some((now + delay, delay));
                slot.state = Observed::Waiting { reason: reason.into(), message: Some(message) };
            }
            Err(RuntimeError::CreateContainer(message)) => {
                slot.state = Observed::Waiting { reason: "CreateContainerError".into(), message: Some(message) };
            }
            Err(error) => {
                slot.state = Observed::Waiting { reason: "ContainerCreating".into(), message: Some(error.to_string()) };
            }
        }
    }

    /// Runs the probes that are due for a running container; a failed liveness (or
    /// startup) probe stops it, and the restart policy takes over.
    async fn probe(&mut self, index: usize) {
        let now = Instant::now();
        let ip = self.pod_ip.clone().unwrap_or_default();
        let slot = &self.slots[index];
        let Some(id) = slot.id.clone() else { return };
        let spec = slot.spec.clone();
        let mut kill_reason = None;
        if let (Some(probe), Some(tally)) = (&spec.startup_probe, &slot.startup) {
            if tally.passing != Some(true) && tally.due(now) {
                let (ok, message) = probe::run(&*self.runtime, &id, &spec, probe, &ip).await;
                let tally = self.slots[index].startup.as_mut().expect("armed with the probe");
                if tally.record(probe, ok, message.clone(), now) == Some(false) {
                    kill_reason = Some(format!("Startup probe failed: {message}"));
                }
            }
        }
        if self.slots[index].started() {
            if let (Some(probe), Some(tally)) = (&spec.liveness_probe, &self.slots[index].liveness) {
                if tally.due(now) {
                    let (ok, message) = probe::run(&*self.runtime, &id, &spec, probe, &ip).await;
                    let tally = self.slots[index].liveness.as_mut().expect("armed with the probe");
                    if tally.record(probe, ok, message.clone(), now) == Some(false) {
                        kill_reason = Some(format!("Liveness probe failed: {message}"));
                    }
                }
            }
            if let (Some(probe), Some(tally)) = (&spec.readiness_probe, &self.slots[index].readiness) {
                if tally.due(now) {
                    let (ok, message) = probe::run(&*self.runtime, &id, &spec, probe, &ip).await;
                    let tally = self.slots[index].readiness.as_mut().expect("armed with the probe");
                    tally.record(probe, ok, message, now);
                }
            }
        }
        if let Some(reason) = kill_reason {
            tracing::info!(container = spec.name, %reason, "restarting container");
            let grace = spec
                .liveness_probe
                .as_ref()
                .and_then(|p| p.termination_grace_period_seconds)
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or_else(|| self.grace());
            if let Err(error) = self.runtime.stop(&id, grace).await {
                tracing::warn!(%error, container = spec.name, "stopping a container that failed its probe");
            }
            self.observe().await;
        }
    }

    fn grace(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds));
        seconds.map_or(DEFAULT_GRACE, |s| Duration::from_secs(s.max(0) as u64))
    }

    async fn write_status(&mut self) {
        let policy = self.restart_policy();
        let views = |init: bool| -> Vec<ContainerView> {
            self.slots
                .iter()
                .filter(|s| s.init == init)
                .map(|slot| ContainerView {
                    name: slot.spec.name.clone(),
                    image: slot.spec.image.clone().unwrap_or_default(),
                    image_id: slot.image_id.clone(),
                    id: slot.id.clone(),
                    state: slot.state.clone(),
                    last: slot.last.clone(),
                    restart_count: slot.attempts.saturating_sub(1) as i32,
                    ready: slot.ready(),
                    started: slot.started(),
                    will_restart: match &slot.state {
                        Observed::Terminated(_) if slot.sidecar() => !slot.finished,
                        Observed::Terminated(exit) => !slot.init && should_restart(&policy, exit),
                        _ => true,
                    },
                    sidecar: slot.sidecar(),
                })
                .collect()
        };
        let (init, containers) = (views(true), views(false));
        let view = PodView {
            init: &init,
            containers: &containers,
            sandbox_ready: self.pod_ip.is_some(),
            host_ip: &self.node.host_ip,
            pod_ip: self.pod_ip.as_deref(),
            start_time: self.start_time,
            init_failed: self.init_failed,
            previous: self.written.as_ref().or(self.pod.status.as_ref()),
        };
        let status = status::pod_status(&view, SystemTime::now());
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let pod_ref = self.pod_ref();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod_ref.namespace);
        let (patch, params) = (Patch::Merge(serde_json::json!({"status": status})), PatchParams::default());
        match crate::client::retry_throttled(|| api.patch_status(&pod_ref.name, &params, &patch)).await {
            Ok(_) => self.written = Some(status),
            Err(error) => tracing::warn!(%error, pod = pod_ref.name, "writing pod status"),
        }
    }

    /// Stops every container within the grace period, removes the sandbox and, if the
    /// pod is still in the API, lets it go (grace period 0, this pod's uid only).
    async fn terminate(&mut self, confirm: bool) {
        let grace = self.grace();
        let running: Vec<String> = self
            .slots
            .iter()
            .filter(|s| matches!(s.state, Observed::Running { .. }))
            .filter_map(|s| s.id.clone())
            .collect();
        let runtime = &self.runtime;
        futures::future::join_all(running.iter().map(|id| runtime.stop(id, grace))).await;
        let pod_ref = self.pod_ref();
        if let Err(error) = self.runtime.remove_pod(&pod_ref.uid).await {
            tracing::warn!(%error, pod = pod_ref.name, "removing the pod's sandbox");
        }
        if !confirm {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod_ref.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(pod_ref.uid.clone()), resource_version: None }),
            ..DeleteParams::default()
        };
        match crate::client::retry_throttled(|| api.delete(&pod_ref.name, &params)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => tracing::warn!(%error, pod = pod_ref.name, "confirming a pod's deletion"),
        }
    }
}

impl Slot {
    fn arm_probes(&mut self, now: Instant) {
        self.startup = self.spec.startup_probe.as_ref().map(|p| Tally::new(p, now));
        self.liveness = self.spec.liveness_probe.as_ref().map(|p| Tally::new(p, now));
        self.readiness = self.spec.readiness_probe.as_ref().map(|p| Tally::new(p, now));
    }
}

/// The container's CPU and memory for the runtime. A limit without a request implies an
/// equal request, as the API server defaults it.
fn resources(container: &Container) -> Resources {
    let Some(resources) = &container.resources else { return Resources::default() };
    let quantity = |map: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
                    name: &str| {
        map.as_ref().and_then(|m| m.get(name)).and_then(|q| q.0.parse::<Quantity>().ok())
    };
    let cpu_limit = quantity(&resources.limits, "cpu").map_or(0, |q| q.milli_value().max(0) as u64);
    Resources {
        cpu_request_millis: quantity(&resources.requests, "cpu").map_or(cpu_limit, |q| q.milli_value().max(0) as u64),
        cpu_limit_millis: cpu_limit,
        memory_limit_bytes: quantity(&resources.limits, "memory").map_or(0, |q| q.value().max(0) as u64),
    }
}
