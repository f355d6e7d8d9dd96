//! The `process` runtime, for hosts without a container runtime: each container's
//! `command` + `args` run as a host process, under a [shim](super::shim) that keeps
//! the process's log and exit status in the container's directory. The image is not
//! used, so a container without `command` cannot run and says so. There are no mount
//! namespaces either: the pod's volumes are prepared on the node but not mounted, and
//! a process sees the host's filesystem.
//!
//! Layout under the root directory:
//! `pods/UID/pod.json`, `pods/UID/containers/NAME/ATTEMPT/{pid,exit.json}`,
//! `pods/UID/logs/NAME/ATTEMPT.log`. Container ids are `process://UID/NAME/ATTEMPT`.

use super::shim::{self, EXIT_FILE, PID_FILE};
use super::{host_session, logs};
use super::{
    remove_dir, ContainerRecord, ContainerSpec, ContainerState, ExecResult, Exit, Runtime, RuntimeError, SandboxSpec,
    Started,
};
use crate::node::stream::portforward::Pipe;
use crate::node::stream::{Outcome, Session};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ID_SCHEME: &str = "process://";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct ProcessRuntime {
    root: PathBuf,
    /// The program that, run as `PROGRAM shim ...`, is the shim (the keelson binary).
    shim_program: PathBuf,
    /// Pods share the host's network: this is every pod's IP.
    host_ip: String,
}

impl ProcessRuntime {
    pub fn new(root: PathBuf, shim_program: PathBuf, host_ip: String) -> Result<ProcessRuntime, RuntimeError> {
        std::fs::create_dir_all(root.join("pods")).map_err(RuntimeError::io(format!("creating {}", root.display())))?;
        Ok(ProcessRuntime { root, shim_program, host_ip })
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    fn container_dir(&self, uid: &str, name: &str, attempt: u32) -> PathBuf {
        self.pod_dir(uid).join("containers").join(name).join(attempt.to_string())
    }

    fn dir_of(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let (uid, name, attempt) = parse_id(id)?;
        Ok(self.container_dir(uid, name, attempt))
    }
}

/// `process://UID/NAME/ATTEMPT` → its parts (never a path that leaves the root).
fn parse_id(id: &str) -> Result<(&str, &str, u32), RuntimeError> {
    let parts: Vec<&str> = id.strip_prefix(ID_SCHEME).unwrap_or("").split('/').collect();
    match parts[..] {
        [uid, name, attempt] if !uid.contains("..") && !name.contains("..") => match attempt.parse::<u32>() {
            Ok(attempt) => Ok((uid, name, attempt)),
            Err(_) => Err(RuntimeError::NotFound(id.to_owned())),
        },
        _ => Err(RuntimeError::NotFound(id.to_owned())),
    }
}

/// The container's process group (its pid) and start time, once the shim started it.
fn read_pid(dir: &Path) -> Option<(i32, SystemTime)> {
    let text = std::fs::read_to_string(dir.join(PID_FILE)).ok()?;
    let (pid, started) = text.trim().split_once(' ')?;
    let nanos: u64 = started.parse().ok()?;
    Some((pid.parse().ok()?, UNIX_EPOCH + Duration::from_nanos(nanos)))
}

fn read_exit(dir: &Path) -> Option<Exit> {
    serde_json::from_slice(&std::fs::read(dir.join(EXIT_FILE)).ok()?).ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; no signal is sent.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn signal_group(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: a negative pid signals the container's own process group, which the
        // shim created for it; nothing else is in it.
        unsafe { libc::kill(-pid, signal) };
    }
}

/// A container's state from its directory. A process that is gone without an exit
/// record (the shim was killed too) is lost: `ContainerStatusUnknown`, as the kubelet
/// reports a container it can no longer find.
async fn state_in(dir: &Path) -> Option<ContainerState> {
    if let Some(exit) = read_exit(dir) {
        return Some(ContainerState::Exited(exit));
    }
    let (pid, started_at) = read_pid(dir)?;
    if alive(pid) {
        return Some(ContainerState::Running { started_at });
    }
    // The shim writes exit.json just after the process ends: look once more.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Some(ContainerState::Exited(read_exit(dir).unwrap_or_else(|| Exit {
        exit_code: 137,
        reason: "ContainerStatusUnknown".into(),
        message: Some("The container could not be located when the pod was terminated".into()),
        started_at: Some(started_at),
        finished_at: SystemTime::now(),
    })))
}

impl Runtime for ProcessRuntime {
    fn version(&self) -> String {
        format!("process://{}", env!("CARGO_PKG_VERSION"))
    }

    async fn run_sandbox(&self, sandbox: &SandboxSpec) -> Result<String, RuntimeError> {
        let pod = &sandbox.pod;
        let dir = self.pod_dir(&pod.uid);
        std::fs::create_dir_all(dir.join("logs")).map_err(RuntimeError::io(format!("creating {}", dir.display())))?;
        let record = serde_json::json!({"namespace": pod.namespace, "name": pod.name, "uid": pod.uid});
        shim::write_atomically(&dir.join("pod.json"), record.to_string().as_bytes())
            .map_err(RuntimeError::io("writing pod.json"))?;
        Ok(self.host_ip.clone())
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        let argv = spec.argv();
        if argv.is_empty() {
            return Err(RuntimeError::CreateContainer(format!(
                "the process runtime runs a container's command and args, and container {:?} has no command \
                 (image {:?} is not used by this runtime)",
                spec.name, spec.image
            )));
        }
        let dir = self.container_dir(&spec.pod.uid, &spec.name, spec.attempt);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(RuntimeError::io(format!("clearing {}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(RuntimeError::io(format!("creating {}", dir.display())))?;
        let log = self.log_path(&spec.pod.uid, &spec.name, spec.attempt);
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).map_err(RuntimeError::io(format!("creating {}", parent.display())))?;
        }
        let working_dir = spec.working_dir.as_ref().map(PathBuf::from).unwrap_or_else(|| self.pod_dir(&spec.pod.uid));
        let mut command = tokio::process::Command::new(&self.shim_program);
        command
            .arg("shim")
            .arg("--dir")
            .arg(&dir)
            .arg("--log")
            .arg(&log)
            .arg("--")
            .args(&argv)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOSTNAME", &spec.pod.name)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&working_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group: signals meant for the agent do not reach it.
            .process_group(0);
        let mut child = command.spawn().map_err(|e| {
            RuntimeError::CreateContainer(format!(
                "starting the shim {} in {}: {e}",
                self.shim_program.display(),
                working_dir.display()
            ))
        })?;
        // Reap the shim when it ends (a restarted agent is no longer its parent; init is).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        for _ in 0..1000 {
            if dir.join(PID_FILE).exists() || dir.join(EXIT_FILE).exists() {
                let id = format!("{ID_SCHEME}{}/{}/{}", spec.pod.uid, spec.name, spec.attempt);
                return Ok(Started { id, image_id: String::new() });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(RuntimeError::CreateContainer(format!("container {:?} did not start within 5 s", spec.name)))
    }

    async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let dir = self.dir_of(id)?;
        state_in(&dir).await.ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let dir = self.dir_of(id)?;
        let Some((pid, _)) = read_pid(&dir) else { return Ok(()) };
        if read_exit(&dir).is_some() {
            return Ok(());
        }
        signal_group(pid, libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if read_exit(&dir).is_some() || !alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal_group(pid, libc::SIGKILL);
        for _ in 0..250 {
            if read_exit(&dir).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> ExecResult {
        let Some((program, args)) = argv.split_first() else {
            return ExecResult::not_started("no command");
        };
        let cwd = parse_id(id).ok().map(|(uid, _, _)| self.pod_dir(uid));
        let mut command = tokio::process::Command::new(program);
        command.args(args).kill_on_drop(true).stdin(std::process::Stdio::null());
        if let Some(cwd) = cwd.filter(|d| d.exists()) {
            command.current_dir(cwd);
        }
        match tokio::time::timeout(timeout, command.output()).await {
            Err(_) => ExecResult::TimedOut,
            Ok(Err(error)) => ExecResult::not_started(format!("exec {program:?}: {error}")),
            Ok(Ok(out)) => {
                ExecResult::Exited { code: out.status.code().unwrap_or(128), stdout: out.stdout, stderr: out.stderr }
            }
        }
    }

    async fn exec_stream(&self, id: &str, argv: &[String], session: Session) -> Outcome {
        let Some((program, args)) = argv.split_first() else {
            return Outcome::Failed("no command".into());
        };
        let mut command = tokio::process::Command::new(program);
        command.args(args);
        if let Some(cwd) = parse_id(id).ok().map(|(uid, _, _)| self.pod_dir(uid)).filter(|d| d.exists()) {
            command.current_dir(cwd);
        }
        host_session::run(command, session).await
    }

    /// The container's output from now on, read from its log as the shim writes it.
    /// Its stdin is not kept (the shim gives the process none), so input is ignored.
    async fn attach(&self, id: &str, session: Session) -> Outcome {
        let (dir, (uid, name, attempt)) = match (self.dir_of(id), parse_id(id)) {
            (Ok(dir), Ok(parts)) => (dir, parts),
            _ => return Outcome::Failed(format!("container {id} not found")),
        };
        let path = self.log_path(uid, name, attempt);
        let offset = tokio::fs::metadata(&path).await.map_or(0, |m| m.len() as usize);
        let running = move || {
            let dir = dir.clone();
            async move { matches!(state_in(&dir).await, Some(ContainerState::Running { .. })) }
        };
        let (lines, mut batches) = tokio::sync::mpsc::channel(4);
        let follower = tokio::spawn(logs::follow(path, offset, running, lines));
        while let Some(batch) = batches.recv().await {
            for line in batch.lines() {
                let Some((_, stream, partial, text)) = logs::parse_line(line) else { continue };
                let to = if stream == "stderr" && session.stderr.is_some() { &session.stderr } else { &session.stdout };
                let Some(to) = to else { continue };
                let chunk = if partial { text.to_owned() } else { format!("{text}\n") };
                if to.send(bytes::Bytes::from(chunk)).await.is_err() {
                    follower.abort();
                    return Outcome::Exited(0);
                }
            }
        }
        Outcome::Exited(0)
    }

    /// Pods share the host's network: the pod's port is the host's.
    async fn port_forward(&self, _pod_uid: &str, port: u16, mut pipe: Pipe) -> Result<(), String> {
        let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("failed to connect to localhost:{port} (the host's network): {e}"))?;
        tokio::io::copy_bidirectional(&mut connection, &mut pipe).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn remove_pod(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        for record in self.list().await?.into_iter().filter(|r| r.pod_uid == pod_uid) {
            if matches!(record.state, ContainerState::Running { .. }) {
                self.stop(&record.id, Duration::ZERO).await?;
            }
        }
        remove_dir(&self.pod_dir(pod_uid))
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let mut records = Vec::new();
        let pods = self.root.join("pods");
        for pod in read_dir_names(&pods)? {
            let containers = pods.join(&pod).join("containers");
            for name in read_dir_names(&containers)? {
                for attempt in read_dir_names(&containers.join(&name))? {
                    let Ok(number) = attempt.parse::<u32>() else { continue };
                    let Some(state) = state_in(&containers.join(&name).join(&attempt)).await else { continue };
                    let id = format!("{ID_SCHEME}{pod}/{name}/{number}");
                    records.push(ContainerRecord {
                        pod_uid: pod.clone(),
                        name: name.clone(),
                        attempt: number,
                        id,
                        image_id: String::new(),
                        state,
                    });
                }
            }
        }
        Ok(records)
    }

    fn log_path(&self, pod_uid: &str, container: &str, attempt: u32) -> PathBuf {
        self.pod_dir(pod_uid).join("logs").join(container).join(format!("{attempt}.log"))
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, RuntimeError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(RuntimeError::Io { context: format!("reading {}", dir.display()), source: error }),
    }
}
