//! End to end: `keelson agent --runtime hollow` against a real `keelson server`, seen
//! through the real kubectl. Nodes register Ready with their Leases, the Leases are
//! renewed while the agent runs and go stale once it stops, pods bound to the nodes go
//! Running (or Succeeded when asked), deletions complete, and a restarted agent takes
//! its nodes and running pods back.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const NODES: usize = 20;

struct Agent;

impl Agent {
    /// `NODES` nodes renewing their Leases every second.
    fn start(server: &TestServer) -> AgentProcess {
        Agent::start_with(server, NODES, 1)
    }

    fn start_with(server: &TestServer, nodes: usize, renew_seconds: u64) -> AgentProcess {
        AgentProcess::start(
            |command| {
                command
                    .args(["--runtime", "hollow", "--kubeconfig"])
                    .arg(server.kubeconfig())
                    .args(["--nodes", &nodes.to_string(), "--node-name-prefix", "sim-", "--node-labels", "tier=sim"])
                    .args(["--lease-renew-seconds", &renew_seconds.to_string()]);
            },
            Duration::from_secs(180),
        )
    }
}

fn renew_times(kubectl: &Kubectl) -> Vec<String> {
    let leases = kubectl.json(&["get", "leases", "-n", "kube-node-lease"]);
    let mut times: Vec<String> = leases["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{}={}", l["metadata"]["name"], l["spec"]["renewTime"]))
        .collect();
    times.sort();
    times
}

#[test]
fn hollow_nodes_register_keep_their_leases_and_run_pods() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let agent = Agent::start(&server);

    let nodes = kubectl.json(&["get", "nodes", "-l", "tier=sim"]);
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), NODES);
    for node in items {
        let ready = node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True", "{node}");
        assert!(node["spec"]["podCIDR"].as_str().unwrap().starts_with("10."));
    }
    let table = kubectl.ok(&["get", "nodes"]);
    assert_eq!(table.lines().filter(|l| l.contains(" Ready ")).count(), NODES, "{table}");

    // Leases exist, owned by their nodes, and are renewed.
    let before = renew_times(&kubectl);
    assert_eq!(before.len(), NODES);
    let lease = kubectl.json(&["get", "lease", "sim-0", "-n", "kube-node-lease"]);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    std::thread::sleep(Duration::from_millis(2500));
    let renewed = renew_times(&kubectl);
    assert!(before.iter().zip(&renewed).all(|(a, b)| a != b), "every lease renewed:\n{before:?}\n{renewed:?}");

    // Pods run, finish when asked, and deletions complete.
    kubectl.ok(&["run", "web", "--image=localhost/keelson/web:1"]);
    kubectl.ok(&[
        "run",
        "once",
        "--image=busybox",
        "--restart=Never",
        "--annotations=hollow.keelson.dev/run-seconds=1",
    ]);
    let ip = eventually(&kubectl, &["get", "pod", "web"], "web Running", |pod| {
        (pod["status"]["phase"] == "Running").then(|| pod["status"]["podIP"].as_str().unwrap_or("").to_owned())
    });
    assert!(ip.starts_with("10."), "{ip}");
    eventually(&kubectl, &["get", "pod", "once"], "once Succeeded", |pod| {
        (pod["status"]["phase"] == "Succeeded").then_some(())
    });
    let ready = kubectl.ok(&["get", "pod", "web"]);
    assert!(ready.contains("1/1") && ready.contains("Running"), "{ready}");
    kubectl.ok(&["delete", "pod", "once", "--timeout=20s"]);
    assert!(!kubectl.run(&["get", "pod", "once"]).ok, "the deleted pod is gone");

    // A restarted agent takes its nodes and running pods back.
    agent.stop();
    let stopped = renew_times(&kubectl);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(renew_times(&kubectl), stopped, "a stopped agent's leases go stale");
    let agent = Agent::start(&server);
    assert_eq!(kubectl.json(&["get", "nodes", "-l", "tier=sim"])["items"].as_array().unwrap().len(), NODES);
    let web = kubectl.json(&["get", "pod", "web"]);
    assert_eq!(
        (web["status"]["phase"].clone(), web["status"]["podIP"].clone()),
        (Value::from("Running"), Value::from(ip))
    );
    kubectl.ok(&["run", "after", "--image=busybox"]);
    eventually(&kubectl, &["get", "pod", "after"], "after Running", |pod| {
        (pod["status"]["phase"] == "Running").then_some(())
    });
    agent.stop();
}

/// The ages (seconds) of every node Lease's last renewal, as the server holds them.
fn lease_ages(kubectl: &Kubectl) -> Vec<f64> {
    let leases = kubectl.json(&["get", "leases", "-n", "kube-node-lease"]);
    let now = keelson::engine::k8s_openapi::jiff::Timestamp::now();
    leases["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lease| {
            let renewed: keelson::engine::k8s_openapi::jiff::Timestamp =
                lease["spec"]["renewTime"].as_str().unwrap().parse().unwrap();
            now.duration_since(renewed).as_secs_f64()
        })
        .collect()
}

#[test]
fn five_thousand_hollow_nodes_in_one_process_keep_every_lease_fresh() {
    const MANY: usize = 5000;
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    // The kubelet's 10 s renewal against the 40 s lease duration.
    let agent = Agent::start_with(&server, MANY, 10);
    // Across three renewal rounds, every Lease stays well inside its duration.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(10));
        let ages = lease_ages(&kubectl);
        assert_eq!(ages.len(), MANY);
        let oldest = ages.iter().cloned().fold(0.0, f64::max);
        assert!(oldest < 25.0, "a lease {oldest:.1} s old (duration 40 s)");
    }
    let ready = kubectl.ok(&["get", "nodes", "--no-headers"]);
    assert_eq!(ready.lines().filter(|l| l.contains(" Ready ")).count(), MANY);
    agent.stop();
}
