//! End to end: `keelson agent --runtime cri` on containerd, against a real `keelson
//! server`, driven by the real kubectl, running the busybox test images
//! (`keelson test-images`). A crashing container shows its output in `kubectl logs`,
//! its exit code in its status and restarts by its policy; an HTTP server becomes Ready
//! through its httpGet probe and answers on its own pod IP from the host; the image's
//! default command serves its page; a failing liveness probe restarts its container; a
//! missing image shows ErrImagePull, then ImagePullBackOff; a container past its memory
//! limit is OOMKilled; ConfigMap, Secret, downward API, emptyDir and hostPath volumes are
//! mounted with their contents, and the ServiceAccount's API access volume holds a
//! token that authenticates as the pod's ServiceAccount; a sidecar runs beside its pod's container and stops when
//! it finishes; a restarted agent takes its
//! running containers back; `kubectl delete pod` stops a container that ignores SIGTERM
//! within the grace period and removes the sandbox; a stopped agent's Lease goes stale.
//!
//! Needs a containerd with the test images: `scripts/test` (and so CI) starts a private
//! one and sets `KEELSON_CRI_SOCKET`. Without it the test says so and passes, unless
//! `KEELSON_REQUIRE_CRI=1` (set by `scripts/test`) makes that a failure.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cri_socket() -> Option<String> {
    match std::env::var("KEELSON_CRI_SOCKET") {
        Ok(socket) if Path::new(&socket).exists() => Some(socket),
        _ => {
            let required = std::env::var("KEELSON_REQUIRE_CRI").is_ok_and(|v| v == "1");
            assert!(!required, "KEELSON_REQUIRE_CRI=1 but KEELSON_CRI_SOCKET names no containerd socket");
            eprintln!("skipping: no containerd (run scripts/test, or set KEELSON_CRI_SOCKET)");
            None
        }
    }
}

fn start_agent(server: &TestServer, socket: &str, node: &str, root: &Path) -> AgentProcess {
    AgentProcess::start(
        |command| {
            command
                .args(["--runtime", "cri", "--container-runtime-endpoint", socket, "--node-name", node])
                // The node's own identity: what the Node authorizer allows must suffice.
                .arg("--kubeconfig")
                .arg(server.node_kubeconfig(node))
                .arg("--root-dir")
                .arg(root)
                .args(["--kubelet-port", "0", "--lease-renew-seconds", "1"]);
        },
        Duration::from_secs(60),
    )
}

fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn pod_manifest(name: &str, node: &str, restart: &str, image: &str, container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  restartPolicy: {restart}\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n{container}"
    )
}

fn http_get(ip: &str, port: u16) -> String {
    let mut stream =
        std::net::TcpStream::connect_timeout(&format!("{ip}:{port}").parse().unwrap(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {ip}:{port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn ready(pod: &Value) -> Option<()> {
    let ready = pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?;
    (ready["status"] == "True").then_some(())
}

/// The waiting reasons a pod's container goes through, as `kubectl get -w` sees them
/// during `window`.
fn watched_reasons(kubectl: &Kubectl, pod: &str, window: Duration) -> String {
    let mut watch = kubectl
        .command(&[
            "get",
            "pod",
            pod,
            "--watch",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(window);
    let _ = watch.kill();
    let output = watch.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn cri_pods_run_restart_probe_log_pull_and_stop() {
    let Some(socket) = cri_socket() else { return };
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let root = tempfile::tempdir().unwrap();
    // Node names are unique per run: agents sharing one containerd see only their own.
    let node = format!("cri-{}", free_port());
    let agent = start_agent(&server, &socket, &node, root.path());
    eventually(&kubectl, &["get", "node", &node], "node Ready", |node| {
        let ready = node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?;
        let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"].as_str()?;
        (ready["status"] == "True" && runtime.starts_with("containerd://")).then_some(())
    });

    let web1 = "localhost/keelson/web:1";
    let crash = "    command: [sh, -c, 'echo hello; sleep 1; exit 3']\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("crash", &node, "OnFailure", web1, crash));
    let web = "    command: [httpd, -f, -p, '8080', -h, /www]\n    readinessProbe:\n      \
               httpGet: {path: /, port: 8080}\n      periodSeconds: 1\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("web", &node, "Always", web1, web));
    // No command: the image's own (httpd on port 80, serving "keelson web 2").
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("default", &node, "Always", "localhost/keelson/web:2", ""));
    let live = "    command: [sleep, '600']\n    livenessProbe:\n      exec: {command: ['false']}\n      \
                periodSeconds: 1\n      failureThreshold: 1\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("live", &node, "Always", web1, live));
    let stubborn = "    command: [sh, -c, 'trap \"\" TERM; echo started; while true; do echo tick; sleep 0.5; done']\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("stubborn", &node, "Always", web1, stubborn));
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("missing", &node, "Always", "localhost/keelson/absent:1", ""));
    // Past its memory limit the kernel kills it: OOMKilled.
    let oom = "    command: [sh, -c, 'head -c 200m /dev/zero | tail']\n    resources: {limits: {memory: 32Mi}}\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("oom", &node, "Never", web1, oom));
    // Volumes: a ConfigMap, a Secret, the downward API, an emptyDir and a host path.
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("marker"), "from the host\n").unwrap();
    kubectl.ok(&["create", "configmap", "settings", "--from-literal=greeting=hi from a configmap"]);
    kubectl.ok(&["create", "secret", "generic", "creds", "--from-literal=password=s3cret"]);
    let volumes = format!(
        "    command: [sh, -c, 'cat /cfg/greeting; echo; cat /sec/password; echo; cat /info/labels; \
         echo scratch > /scratch/f && cat /scratch/f; cat /host/marker; sleep 600']\n    volumeMounts:\n    \
         - {{name: cfg, mountPath: /cfg}}\n    - {{name: sec, mountPath: /sec, readOnly: true}}\n    \
         - {{name: info, mountPath: /info}}\n    - {{name: scratch, mountPath: /scratch}}\n    \
         - {{name: host, mountPath: /host}}\n  volumes:\n  - {{name: cfg, configMap: {{name: settings}}}}\n  \
         - {{name: sec, secret: {{secretName: creds}}}}\n  \
         - {{name: info, projected: {{sources: [{{downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}}}]}}}}\n  \
         - {{name: scratch, emptyDir: {{}}}}\n  - {{name: host, hostPath: {{path: {}, type: Directory}}}}\n",
        host_dir.path().display()
    );
    // A sidecar (an init container that always restarts) runs beside the main
    // container and is stopped when it finishes, so the pod completes.
    let sidecar = "    command: [sh, -c, 'sleep 2; echo main done']\n  initContainers:\n  - name: side\n    \
                   image: localhost/keelson/web:1\n    restartPolicy: Always\n    command: [sleep, '600']\n";
    kubectl.apply(&["apply", "-f", "-"], &pod_manifest("sidecar", &node, "Never", web1, sidecar));
    let manifest = pod_manifest("volumes", &node, "Always", web1, &volumes)
        .replace("metadata: {name: volumes}", "metadata: {name: volumes, labels: {app: demo}}");
    kubectl.apply(&["apply", "-f", "-"], &manifest);

    let reasons = watched_reasons(&kubectl, "missing", Duration::from_secs(12));
    assert!(reasons.contains("ErrImagePull") && reasons.contains("ImagePullBackOff"), "{reasons:?}");
    let missing = kubectl.json(&["get", "pod", "missing", "-o", "json"]);
    let message = container_status(&missing)["state"]["waiting"]["message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("localhost/keelson/absent:1"), "{message}");

    let status = eventually(&kubectl, &["get", "pod", "crash"], "crash restarted", |pod| {
        let status = container_status(pod);
        (status["restartCount"].as_i64()? >= 1).then(|| status.clone())
    });
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    assert!(status["containerID"].as_str().unwrap().starts_with("containerd://"), "{status}");
    assert!(status["imageID"].as_str().unwrap().starts_with("sha256:"), "{status}");
    let logs = kubectl.ok(&["logs", "crash", "--previous"]);
    assert_eq!(logs.trim(), "hello");

    let oom = eventually(&kubectl, &["get", "pod", "oom"], "oom killed", |pod| {
        (pod["status"]["phase"] == "Failed").then(|| container_status(pod)["state"]["terminated"].clone())
    });
    assert_eq!(oom["reason"], "OOMKilled", "{oom}");
    assert_eq!(oom["exitCode"], 137, "{oom}");

    let side = eventually(&kubectl, &["get", "pod", "sidecar"], "sidecar pod Succeeded", |pod| {
        (pod["status"]["phase"] == "Succeeded").then(|| pod["status"]["initContainerStatuses"][0].clone())
    });
    assert!(side["state"]["terminated"].is_object(), "the sidecar was stopped: {side}");
    assert_eq!(kubectl.ok(&["logs", "sidecar", "-c", "main"]).trim(), "main done");

    eventually(&kubectl, &["get", "pod", "volumes"], "volumes Running", |pod| {
        (pod["status"]["phase"] == "Running").then_some(())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let expected = "hi from a configmap\ns3cret\napp=\"demo\"\nscratch\nfrom the host";
    loop {
        let logs = kubectl.ok(&["logs", "volumes"]);
        if logs.trim() == expected {
            break;
        }
        assert!(Instant::now() < deadline, "volume contents: {logs:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // `kubectl exec` runs in the container through CRI ExecSync: its own filesystem,
    // stdout and stderr apart, the exit code passed on.
    let exec = kubectl.run(&["exec", "volumes", "--", "sh", "-c", "cat /sec/password; echo oops >&2; exit 4"]);
    assert!(!exec.ok);
    assert_eq!(exec.stdout, "s3cret");
    assert!(
        exec.stderr.starts_with("oops\n") && exec.stderr.contains("command terminated with exit code 4"),
        "{}",
        exec.stderr
    );

    // ServiceAccount admission gave the pod its API access volume: its namespace, the
    // cluster's CA (the ConfigMap kube-root-ca.crt) and a token bound to the pod that
    // authenticates as the pod's ServiceAccount.
    let account_file = |file: &str| {
        kubectl.ok(&["exec", "volumes", "--", "cat", &format!("/var/run/secrets/kubernetes.io/serviceaccount/{file}")])
    };
    assert_eq!(account_file("namespace"), "default");
    let ca = std::fs::read_to_string(server.data_dir().join("pki").join("ca.crt")).unwrap();
    assert_eq!(account_file("ca.crt").trim(), ca.trim());
    let token = account_file("token");
    let pod_account = kubectl.as_user(token_kubeconfig(&server, token.trim()), "pod-account");
    let whoami = pod_account.json(&["auth", "whoami"]);
    assert_eq!(whoami["status"]["userInfo"]["username"], "system:serviceaccount:default:default", "{whoami}");
    assert_eq!(
        whoami["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"][0], "volumes",
        "{whoami}"
    );

    // Interactive sessions go through CRI Exec and Attach to containerd's streaming
    // server (over SPDY, as the kubelet reaches it), whichever transport kubectl uses:
    // stdin to its end, a terminal of kubectl's size, a container's live output.
    eventually(&kubectl, &["get", "pod", "stubborn"], "stubborn Running", |pod| {
        (pod["status"]["phase"] == "Running").then_some(())
    });
    for client in [&kubectl, &server.kubectl("1.28")] {
        client.check_interactive_sessions("volumes", "stubborn");
    }

    eventually(&kubectl, &["get", "pod", "web"], "web Ready", ready);
    let pod_ip = kubectl.ok(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    let host_ip = kubectl.ok(&["get", "pod", "web", "-o", "jsonpath={.status.hostIP}"]);
    assert_ne!(pod_ip, host_ip, "each pod has its own IP on the pod network");
    let answer = http_get(&pod_ip, 8080);
    assert!(answer.starts_with("HTTP/1.") && answer.contains("keelson web 1"), "{answer}");
    // port-forward goes through CRI PortForward into the pod's network namespace.
    for client in [&kubectl, &server.kubectl("1.28")] {
        let (answer, stderr) = client.port_forward_get("web", 8080);
        assert!(answer.starts_with("HTTP/1.") && answer.contains("keelson web 1"), "{answer:?} {stderr}");
    }
    eventually(&kubectl, &["get", "pod", "default"], "default Running", |pod| {
        (pod["status"]["phase"] == "Running").then_some(())
    });
    let default_ip = kubectl.ok(&["get", "pod", "default", "-o", "jsonpath={.status.podIP}"]);
    assert_ne!(default_ip, pod_ip);
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match std::net::TcpStream::connect_timeout(&format!("{default_ip}:80").parse().unwrap(), Duration::from_secs(1))
        {
            Ok(_) => break http_get(&default_ip, 80),
            Err(error) => assert!(Instant::now() < deadline, "{default_ip}:80: {error}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(answer.contains("keelson web 2"), "{answer}");

    eventually(&kubectl, &["get", "pod", "live"], "live restarted by its liveness probe", |pod| {
        (container_status(pod)["restartCount"].as_i64()? >= 1).then_some(())
    });

    // A restarted agent takes its running containers back.
    eventually(&kubectl, &["get", "pod", "stubborn"], "stubborn Running", |pod| {
        (pod["status"]["phase"] == "Running").then_some(())
    });
    let agent = assert_readopts(&kubectl, "web", || {
        agent.stop();
        start_agent(&server, &socket, &node, root.path())
    });
    assert!(http_get(&pod_ip, 8080).contains("keelson web 1"), "still serving after the agent restart");

    // Deletion: SIGTERM (ignored), then SIGKILL after the 2 s grace period; then the pod
    // is gone from the API, and its sandbox from containerd.
    let began = Instant::now();
    kubectl.ok(&["delete", "pod", "stubborn", "--wait=true"]);
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(15), "deletion took {took:?}");
    kubectl.ok(&["delete", "pod", "--all", "--wait=true"]);
    let sandboxes = Command::new("ctr")
        .args(["--address", &socket, "--namespace", "k8s.io", "containers", "list", "-q"])
        .arg(format!("labels.\"io.keelson.node\"=={node}"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert!(sandboxes.is_empty(), "containers left in containerd: {sandboxes}");

    // A stopped agent's Lease is no longer renewed.
    let renew = |kubectl: &Kubectl| {
        kubectl.ok(&["get", "lease", &node, "-n", "kube-node-lease", "-o", "jsonpath={.spec.renewTime}"])
    };
    agent.stop();
    let last = renew(&kubectl);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(renew(&kubectl), last, "the Lease went stale");
}

/// `keelson server --kubelet`: one process is the whole single-node cluster; a pod
/// created without a node is scheduled to the in-process node and runs on containerd.
#[test]
fn server_with_kubelet_runs_pods_on_its_own_node() {
    let Some(socket) = cri_socket() else { return };
    let node = format!("single-{}", free_port());
    let args = ["--kubelet", "--container-runtime-endpoint", &socket, "--node-name", &node, "--kubelet-port", "0"];
    let server = TestServer::start_with(|_| args.iter().map(|a| a.to_string()).collect());
    let kubectl = server.kubectl("");
    let nodes = kubectl.ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), format!("node/{node}"));
    kubectl.ok(&[
        "run",
        "hello",
        "--image=localhost/keelson/web:1",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo from a single-node cluster",
    ]);
    let pod = eventually(&kubectl, &["get", "pod", "hello"], "hello Succeeded", |pod| {
        (pod["status"]["phase"] == "Succeeded").then(|| pod.clone())
    });
    assert_eq!(pod["spec"]["nodeName"], node.as_str(), "scheduled to the in-process node");
    assert_eq!(kubectl.ok(&["logs", "hello"]).trim(), "from a single-node cluster");
    kubectl.ok(&["delete", "pod", "hello", "--wait=true"]);
}
