//! End to end: `keelson agent --runtime process` against a real `keelson server`,
//! driven by the real kubectl. Containers run as host processes: a crashing container
//! shows its exit code and restarts by its policy, `kubectl logs` shows what it printed,
//! an HTTP server becomes Ready through its httpGet probe and answers on the pod IP, a
//! failing liveness probe restarts its container, a container with no command says why
//! it cannot run, a deleted pod's processes stop within the grace period, and a
//! restarted agent takes its running containers back instead of starting them again.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The process agent for node `proc-1`, keeping its pods under `root`.
fn start_agent(server: &TestServer, root: &Path) -> AgentProcess {
    AgentProcess::start(
        |command| {
            command
                .args(["--runtime", "process", "--node-name", "proc-1", "--kubeconfig"])
                .arg(server.kubeconfig())
                .arg("--root-dir")
                .arg(root)
                .args(["--kubelet-port", &free_port().to_string(), "--lease-renew-seconds", "1"]);
        },
        Duration::from_secs(60),
    )
}

fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn pod_manifest(name: &str, restart: &str, container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: localhost/keelson/web:1\n{container}"
    )
}

#[test]
fn process_pods_run_restart_probe_log_and_stop() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let root = tempfile::tempdir().unwrap();
    let agent = start_agent(&server, root.path());
    eventually(&kubectl, &["get", "node", "proc-1"], "node Ready", |node| {
        let ready = node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?;
        (ready["status"] == "True").then_some(())
    });

    // Exit code, restart by policy, logs.
    let crash = "    command: [sh, -c, 'echo hello $(WHO); sleep 1; exit 3']\n    env: [{name: WHO, value: world}]\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("crash", "OnFailure", crash));
    // Never restarted: exits 0 once and the pod Succeeds.
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("once", "Never", "    command: [sh, -c, 'exit 0']\n"));
    // No command: the process runtime cannot run an image's default command.
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("nocmd", "Always", ""));
    let port = free_port();
    let web = format!(
        "    command: [python3, -m, http.server, '{port}', --bind, 127.0.0.1]\n    readinessProbe:\n      \
         httpGet: {{path: /, port: {port}}}\n      periodSeconds: 1\n"
    );
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("web", "Always", &web));
    let live = "    command: [sleep, '600']\n    livenessProbe:\n      exec: {command: ['false']}\n      \
                periodSeconds: 1\n      failureThreshold: 1\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("live", "Always", live));
    let stubborn = "    command: [sh, -c, 'trap \"\" TERM; echo started; while true; do sleep 0.1; done']\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("stubborn", "Always", stubborn));

    let last_exit = eventually(&kubectl, &["get", "pod", "crash"], "crash restarted", |pod| {
        let status = container_status(pod);
        (status["restartCount"].as_i64()? >= 1).then(|| status["lastState"]["terminated"]["exitCode"].clone())
    });
    assert_eq!(last_exit, 3);
    let logs = kubectl.ok(&["logs", "crash"]);
    assert!(logs.contains("hello world"), "kubectl logs: {logs:?}");
    let previous = kubectl.ok(&["logs", "crash", "--previous", "--timestamps"]);
    assert!(previous.trim_end().ends_with("hello world") && previous.starts_with("20"), "{previous:?}");

    // The agent's log endpoint answers the API server only, not other cluster users.
    let agent_port =
        kubectl.ok(&["get", "node", "proc-1", "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}"]);
    let pki = server.data_dir().join("pki");
    let direct = Command::new("curl")
        .args(["-sk", "--cert"])
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{agent_port}/containerLogs/default/crash/main"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "403", "an admin certificate is not the API server's");

    eventually(&kubectl, &["get", "pod", "once"], "once Succeeded", |pod| {
        (pod["status"]["phase"] == "Succeeded").then_some(())
    });
    let waiting = eventually(&kubectl, &["get", "pod", "nocmd"], "nocmd waiting", |pod| {
        let waiting = &container_status(pod)["state"]["waiting"];
        (waiting["reason"] == "CreateContainerError").then(|| waiting["message"].as_str().unwrap_or("").to_owned())
    });
    assert!(waiting.contains("has no command"), "{waiting}");

    eventually(&kubectl, &["get", "pod", "web"], "web Ready", |pod| {
        let ready = pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?;
        (ready["status"] == "True").then_some(())
    });
    let pod_ip = kubectl.ok(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    let mut stream = std::net::TcpStream::connect((pod_ip.as_str(), port)).expect("web answers on its pod IP");
    use std::io::{Read, Write};
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");

    eventually(&kubectl, &["get", "pod", "live"], "live restarted by its liveness probe", |pod| {
        (container_status(pod)["restartCount"].as_i64()? >= 1).then_some(())
    });

    // A restarted agent takes its running containers back.
    eventually(&kubectl, &["get", "pod", "stubborn"], "stubborn Running", |pod| {
        (pod["status"]["phase"] == "Running").then_some(())
    });
    let agent = assert_readopts(&kubectl, "web", || {
        agent.stop();
        start_agent(&server, root.path())
    });

    // Deletion: SIGTERM, then SIGKILL after the 2 s grace period; then the pod is gone.
    let began = Instant::now();
    kubectl.ok(&["delete", "pod", "stubborn", "--wait=true"]);
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "deletion took {took:?}");
    let stubborn_left = std::fs::read_dir(root.path().join("pods")).unwrap().count();
    kubectl.ok(&["delete", "pod", "--all", "--wait=true"]);
    let left = std::fs::read_dir(root.path().join("pods")).unwrap().count();
    assert_eq!(left, 0, "every sandbox removed (before the last deletion: {stubborn_left})");
    agent.stop();
}

/// The controllers' pods run on the process runtime too, and `kubectl logs` finds a
/// Job's and a Deployment's pod by their owners.
#[test]
fn jobs_and_deployments_run_as_processes_and_kubectl_logs_finds_their_pods() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let root = tempfile::tempdir().unwrap();
    let agent = start_agent(&server, root.path());
    kubectl.ok(&["create", "job", "hello", "--image=localhost/keelson/web:1", "--", "sh", "-c", "echo job done"]);
    kubectl.ok(&["wait", "--for=condition=complete", "job/hello", "--timeout=60s"]);
    let logs = kubectl.ok(&["logs", "job/hello"]);
    assert!(logs.contains("job done"), "kubectl logs job/hello: {logs:?}");

    let serve = ["sh", "-c", "echo serving; exec sleep 3600"];
    kubectl.ok(&[&["create", "deployment", "server", "--image=localhost/keelson/web:1", "--"][..], &serve].concat());
    kubectl.ok(&["rollout", "status", "deployment/server", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = kubectl.run(&["logs", "deployment/server"]);
        if logs.stdout.contains("serving") {
            break;
        }
        assert!(Instant::now() < deadline, "kubectl logs deployment/server: {} {}", logs.stdout, logs.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    kubectl.ok(&["delete", "deployment", "server", "--wait=true"]);
    kubectl.ok(&["delete", "job", "hello", "--wait=true"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    while std::fs::read_dir(root.path().join("pods")).map(|d| d.count()).unwrap_or(0) > 0 {
        assert!(Instant::now() < deadline, "pods left running after their owners were deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.stop();
}
