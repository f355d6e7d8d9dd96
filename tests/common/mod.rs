//! A real `keelson server` on a free loopback port, and the real kubectl against it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to print `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| Vec::new())
    }

    /// Starts with extra flags, computed from the server's temp dir.
    pub fn start_with(args: impl FnOnce(&Path) -> Vec<String>) -> TestServer {
        let dir = tempfile::tempdir().expect("a temp dir");
        let extra_args = args(dir.path());
        let mut server = TestServer { dir, port: free_port(), child: None, extra_args };
        server.spawn();
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    /// A kubeconfig for node `node`'s own identity (`keelson kubeconfig --node`).
    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        let output = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["kubeconfig", "--data-dir"])
            .arg(self.data_dir())
            .args(["--node", node])
            .output()
            .expect("keelson kubeconfig runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        write(self.dir.path(), &format!("node-{node}.kubeconfig"), &String::from_utf8_lossy(&output.stdout))
    }

    fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keelson"));
        command
            .args(["server", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.extra_args);
        self.child = Some(spawn_until_ready(&mut command, START_TIMEOUT));
    }

    /// SIGTERM, then wait: the server must exit 0.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts with other extra flags (same data).
    pub fn restart_with(&mut self, extra_args: Vec<String>) {
        self.stop();
        self.extra_args = extra_args;
        self.spawn();
    }

    pub fn kubectl(&self, version: &str) -> Kubectl {
        Kubectl {
            binary: kubectl_binary(version),
            kubeconfig: self.kubeconfig(),
            cache: self.dir.path().join(format!("cache-{version}")),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `command` (stdout piped, stderr inherited) and waits until it prints a line
/// containing `ready`; kills it and panics if that takes longer than `timeout`.
pub fn spawn_until_ready(command: &mut Command, timeout: Duration) -> Child {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("the command starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(timeout).is_err() {
        let _ = child.kill();
        panic!("{command:?} did not print ready within {timeout:?}");
    }
    child
}

/// SIGTERM, then wait: the process must exit 0 within 15 s.
pub fn terminate(child: &mut Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("waitable") {
            assert!(status.success(), "the process exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the process did not exit within 15 s of SIGTERM");
}

/// `/usr/bin/kubectl` dispatches by the server's minor; the versioned binaries sit
/// beside its target.
pub fn kubectl_binary(version: &str) -> PathBuf {
    let dispatcher = std::fs::canonicalize("/usr/bin/kubectl").unwrap_or_else(|_| "/usr/bin/kubectl".into());
    match version {
        "" => dispatcher,
        v => dispatcher.with_file_name(format!("kubectl.{v}")),
    }
}

pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            ok: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    /// The same kubectl with another user's kubeconfig (and its own discovery cache).
    pub fn as_user(&self, kubeconfig: PathBuf, user: &str) -> Kubectl {
        Kubectl { binary: self.binary.clone(), kubeconfig, cache: self.cache.with_extension(user) }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache);
        command.arg("--request-timeout=30s").args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("kubectl runs"))
    }

    pub fn stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child.stdin.take().expect("piped").write_all(input.as_bytes()).expect("stdin accepts");
        Run::from(child.wait_with_output().expect("kubectl finishes"))
    }

    /// Runs kubectl on a terminal (under `script`): `setup` runs first in the same
    /// shell (e.g. `stty cols 100 rows 30`), and `input` is typed once kubectl is up.
    pub fn on_terminal(&self, setup: &str, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let quote = |word: &str| format!("'{}'", word.replace('\'', "'\\''"));
        let command = self.command(args);
        let mut line = vec![quote(&command.get_program().to_string_lossy())];
        line.extend(command.get_args().map(|a| quote(&a.to_string_lossy())));
        let mut child = Command::new("script")
            .args(["-qec", &format!("{setup}; {}", line.join(" ")), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script runs");
        std::thread::sleep(Duration::from_secs(2));
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(input.as_bytes()).expect("the terminal accepts input");
        drop(stdin);
        Run::from(child.wait_with_output().expect("script finishes"))
    }

    /// `kubectl port-forward pod/POD LOCAL:PORT`, one plain HTTP GET through it, then
    /// stop: the answer, and what kubectl printed on stderr.
    pub fn port_forward_get(&self, pod: &str, port: u16) -> (String, String) {
        use std::io::{Read, Write};
        let local = free_port();
        let mut child = self
            .command(&["port-forward", &format!("pod/{pod}"), &format!("{local}:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        // kubectl upgrades the connection before it listens, then says so.
        // (Its stdout stays open: kubectl dies of SIGPIPE if it cannot print.)
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut ready = String::new();
        stdout.read_line(&mut ready).expect("kubectl prints");
        assert!(ready.starts_with("Forwarding from"), "kubectl port-forward: {ready:?}");
        let mut answer = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let _ = stream.read_to_string(&mut answer);
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.kill();
        let output = child.wait_with_output().expect("kubectl stops");
        drop(stdout);
        (answer, String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Interactive sessions, as a user runs them: `exec -i` to the end of stdin in
    /// `exec_pod` (which has `sh` and `tr`), `exec -it` on a terminal of kubectl's size
    /// with the shell's exit code passed on, and `attach` to `ticking_pod`, whose
    /// container prints `tick` every half second.
    pub fn check_interactive_sessions(&self, exec_pod: &str, ticking_pod: &str) {
        let upper = self.stdin(&["exec", "-i", exec_pod, "--", "tr", "a-z", "A-Z"], "hello\n");
        assert!(upper.ok, "{}", upper.stderr);
        assert_eq!(upper.stdout, "HELLO\n");
        let shell = self.on_terminal(
            "stty cols 100 rows 30",
            &["exec", "-it", exec_pod, "--", "sh"],
            "tty; stty size; exit 7\n",
        );
        assert_eq!(shell.code, Some(7), "{}\n{}", shell.stdout, shell.stderr);
        assert!(shell.stdout.contains("/dev/pts/") && shell.stdout.contains("30 100"), "{:?}", shell.stdout);
        let attached = self.for_a_while(&["attach", ticking_pod], Duration::from_secs(3));
        assert!(attached.contains("tick"), "kubectl attach printed {attached:?}");
    }

    /// Runs kubectl for `duration`, then stops it; returns what it printed.
    pub fn for_a_while(&self, args: &[&str], duration: Duration) -> String {
        let mut child = self.command(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("kubectl runs");
        std::thread::sleep(duration);
        let _ = child.kill();
        let output = child.wait_with_output().expect("kubectl stops");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(run.ok, "kubectl {args:?} failed:\n{}\n{}", run.stdout, run.stderr);
        run.stdout
    }

    pub fn apply(&self, args: &[&str], manifest: &str) -> String {
        let run = self.stdin(args, manifest);
        assert!(run.ok, "kubectl {args:?} failed:\n{}\n{}", run.stdout, run.stderr);
        run.stdout
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl prints JSON")
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writable");
    path
}

/// A kubeconfig for the same server with a bearer token instead of the client
/// certificate.
pub fn token_kubeconfig(server: &TestServer, token: &str) -> std::path::PathBuf {
    let config = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let with_token: String = config
        .lines()
        .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
        .map(|l| if l.trim() == "user:" { format!("  user:\n    token: {token}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    // A JWT is too long for a file name; its end (the signature) tells tokens apart.
    let tail = &token[token.len().saturating_sub(24)..];
    write(server.dir.path(), &format!("token-{tail}.kubeconfig"), &with_token)
}

/// Polls `check` (kubectl's JSON of `args`) until it returns `Some`, for up to 30 s.
pub fn eventually<T>(
    kubectl: &Kubectl,
    args: &[&str],
    what: &str,
    check: impl Fn(&serde_json::Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = kubectl.run(&[args, &["-o", "json"]].concat());
        let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
        if let Some(found) = check(&value) {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last: {value}\n{}", run.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `keelson agent` started by a test: stopped with SIGTERM (and must exit 0), killed
/// if the test ends first.
pub struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    /// `keelson agent ARGS...`, once it printed its ready line.
    pub fn start(args: impl FnOnce(&mut Command), timeout: Duration) -> AgentProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keelson"));
        command.arg("agent");
        args(&mut command);
        AgentProcess { child: spawn_until_ready(&mut command, timeout) }
    }

    /// Any keelson process a test started (stopped and killed the same way).
    pub fn from_child(child: Child) -> AgentProcess {
        AgentProcess { child }
    }

    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Restarts a node agent (`restart` stops the running one and starts another) and
/// checks that `pod`'s running container was taken back, not started again: the same
/// container id, no restart, still Ready. Returns the new agent.
pub fn assert_readopts(kubectl: &Kubectl, pod: &str, restart: impl FnOnce() -> AgentProcess) -> AgentProcess {
    let id = "jsonpath={.status.containerStatuses[0].containerID}";
    let before = kubectl.ok(&["get", "pod", pod, "-o", id]);
    let agent = restart();
    std::thread::sleep(Duration::from_secs(2));
    let after = kubectl.json(&["get", "pod", pod, "-o", "json"]);
    let status = &after["status"]["containerStatuses"][0];
    assert_eq!(status["containerID"], before.as_str(), "re-adopted, not started again");
    assert_eq!(status["restartCount"], 0);
    assert_eq!(status["ready"], true);
    agent
}
