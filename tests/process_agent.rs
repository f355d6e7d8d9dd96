//! End to end: `keelson agent --runtime process` against a real `keelson server`,
//! driven by the real kubectl. Containers run as host processes: a crashing container
//! shows its exit code and restarts by its policy, `kubectl logs` shows what it printed,
//! an HTTP server becomes Ready through its httpGet probe and answers on the pod IP, a
//! failing liveness probe restarts its container, a container with no command says why
//! it cannot run, `kubectl exec` runs a command in a container and reports its exit
//! code (also with stdin and on a terminal, over WebSocket and SPDY), `kubectl attach`
//! shows a container's output, `kubectl port-forward` reaches a pod's port, a deleted
//! pod's processes stop within the grace period, and a restarted agent takes its
//! running containers back instead of starting them again.

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
                // The node's own identity: what the Node authorizer allows must suffice.
                .arg(server.node_kubeconfig("proc-1"))
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
    let stubborn = "    command: [sh, -c, 'trap \"\" TERM; echo started; while true; do echo tick; sleep 0.5; done']\n";
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

    // `kubectl exec` (WebSocket, v5.channel.k8s.io) runs a command in the container:
    // its stdout and stderr apart, and its exit code as kubectl's.
    let both = kubectl.run(&["exec", "web", "--", "sh", "-c", "echo out $WHERE; echo err >&2"]);
    assert!(both.ok, "{}", both.stderr);
    assert_eq!(both.stdout, "out\n");
    assert_eq!(both.stderr, "err\n");
    let failed = kubectl.command(&["exec", "web", "-c", "main", "--", "sh", "-c", "exit 3"]).output().unwrap();
    assert_eq!(failed.status.code(), Some(3), "{}", String::from_utf8_lossy(&failed.stderr));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("command terminated with exit code 3"));
    // Interactive sessions, over both transports: kubectl 1.33's WebSocket
    // (v5.channel.k8s.io, where the end of stdin is a message of its own) and 1.28's
    // SPDY/3.1 (v4.channel.k8s.io, a stream per channel).
    let old = server.kubectl("1.28");
    for client in [&kubectl, &old] {
        client.check_interactive_sessions("web", "stubborn");
        let failed = client.run(&["exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
        assert_eq!((failed.stdout.as_str(), failed.ok), ("out\n", false));
        assert!(failed.stderr.starts_with("err\n") && failed.stderr.contains("exit code 3"), "{}", failed.stderr);
        // port-forward reaches the pod's port (1.33 tunnels SPDY through a WebSocket,
        // 1.28 upgrades to SPDY), and a closed port is reported, not hung on.
        let (answer, _) = client.port_forward_get("web", port);
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}");
        let (nothing, complaint) = client.port_forward_get("web", free_port());
        assert!(nothing.is_empty() && complaint.contains("error forwarding port"), "{nothing:?} {complaint}");
    }
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

/// The addresses of a Service's Endpoints (`addresses` or `notReadyAddresses`) and
/// the ready flags of its EndpointSlices' endpoints, as kubectl shows them.
fn endpoint_view(kubectl: &Kubectl) -> (usize, usize, Vec<bool>, Vec<i64>) {
    let endpoints = kubectl.json(&["get", "endpoints", "web", "-o", "json"]);
    let count = |field: &str| {
        endpoints["subsets"].as_array().into_iter().flatten().map(|s| s[field].as_array().map_or(0, Vec::len)).sum()
    };
    let slices = kubectl.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"]);
    let items = slices["items"].as_array().cloned().unwrap_or_default();
    let ready = items
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| e["conditions"]["ready"] == true)
        .collect();
    let ports = items
        .iter()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    (count("addresses"), count("notReadyAddresses"), ready, ports)
}

/// A Service's Endpoints and EndpointSlices follow its pod's readiness probe: not
/// ready until the probe passes, ready while it does, not ready again when it fails,
/// and empty once the pod is gone. The named target port resolves to the container's.
#[test]
fn service_endpoints_track_pod_readiness() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let root = tempfile::tempdir().unwrap();
    let agent = start_agent(&server, root.path());
    let flag = root.path().join("ready-flag");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, labels: {{app: web}}}}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: localhost/keelson/web:1\n    \
         command: [sleep, '3600']\n    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe:\n      \
         exec: {{command: [test, -f, {flag}]}}\n      periodSeconds: 1\n      failureThreshold: 1\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  \
         ports: [{{name: web, port: 80, targetPort: http}}]\n",
        flag = flag.display()
    );
    kubectl.apply(&["apply", "-f", "-"], &manifest);
    let wait_for = |what: &str, wanted: (usize, usize, Vec<bool>, Vec<i64>)| {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let seen = endpoint_view(&kubectl);
            if seen == wanted {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: endpoints {seen:?}, wanted {wanted:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("a running pod failing its probe", (0, 1, vec![false], vec![8080]));
    std::fs::write(&flag, "").unwrap();
    wait_for("the probe passing", (1, 0, vec![true], vec![8080]));
    let address = kubectl.json(&["get", "endpoints", "web", "-o", "json"])["subsets"][0]["addresses"][0].clone();
    assert_eq!(address["targetRef"]["name"], "web-0");
    assert_eq!(address["nodeName"], "proc-1");
    std::fs::remove_file(&flag).unwrap();
    wait_for("the probe failing again", (0, 1, vec![false], vec![8080]));
    kubectl.ok(&["delete", "pod", "web-0", "--wait=true"]);
    // No endpoints: an empty Endpoints object and one placeholder slice without ports.
    wait_for("the pod gone", (0, 0, vec![], vec![]));
    kubectl.ok(&["delete", "service", "web", "--wait=true"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while kubectl.run(&["get", "endpoints", "web"]).ok || !endpoint_slices_gone(&kubectl) {
        assert!(Instant::now() < deadline, "the Service's endpoints outlived it");
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.stop();
}

fn endpoint_slices_gone(kubectl: &Kubectl) -> bool {
    let slices = kubectl.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"]);
    slices["items"].as_array().is_some_and(Vec::is_empty)
}
