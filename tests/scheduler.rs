//! The scheduler end to end: a real `keelson server` (which runs the scheduler in
//! process), Node and Pod objects created with the real kubectl, placements, events
//! and preemption observed through the API. No node agents: nodes are plain objects.

mod common;

use common::{Kubectl, TestServer};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn node(name: &str, zone: &str, cpu: &str, taint: Option<&str>) -> String {
    let taints = taint.map(|t| format!("  taints: [{t}]\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}, \
         topology.kubernetes.io/zone: {zone}}}\nspec:\n{taints}status:\n  allocatable: {{cpu: \"{cpu}\", \
         memory: 8Gi, pods: \"110\"}}\n  capacity: {{cpu: \"{cpu}\", memory: 8Gi, pods: \"110\"}}\n---\n"
    )
}

fn pod(name: &str, cpu: &str, extra_spec: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n{extra_spec}  \
         containers: [{{name: c, image: registry.local/pause:1, resources: {{requests: {{cpu: \"{cpu}\"}}}}}}]\n---\n"
    )
}

/// Polls (bounded) until `pod` is bound; returns its node.
fn wait_for_node(kubectl: &Kubectl, pod: &str) -> String {
    let started = Instant::now();
    loop {
        let node = kubectl.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]);
        if !node.is_empty() {
            return node;
        }
        assert!(started.elapsed() < WAIT, "pod {pod} was not scheduled within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls (bounded) until an event with `reason` about `pod` exists; returns its message.
fn wait_for_event(kubectl: &Kubectl, pod: &str, reason: &str) -> String {
    let started = Instant::now();
    loop {
        let selector = format!("involvedObject.name={pod},reason={reason}");
        let events = kubectl.json(&["get", "events", "--field-selector", &selector]);
        if let Some(message) = events["items"].as_array().and_then(|items| items.last()).map(|e| &e["message"]) {
            return message.as_str().unwrap_or_default().to_string();
        }
        assert!(started.elapsed() < WAIT, "no {reason} event for {pod} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pods_land_where_filters_allow_and_wait_for_a_node_that_fits() {
    let mut server = TestServer::start();
    let kubectl = server.kubectl("");
    let taint = "{key: dedicated, value: gpu, effect: NoSchedule}";
    let nodes = node("node-a", "a", "4", None) + &node("node-b", "b", "1", Some(taint));
    kubectl.apply(&["apply", "-f", "-"], &nodes);

    // Only node-a has 2 CPUs free (node-b is too small, and tainted).
    let tolerate = "  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]\n";
    let pinned = "  nodeSelector: {kubernetes.io/hostname: node-b}\n";
    let pods = pod("web", "2", "", "app: web")
        + &pod("gpu-job", "500m", &format!("{tolerate}{pinned}"), "app: gpu")
        + &pod("no-toleration", "100m", pinned, "app: x")
        + &pod("huge", "8", "", "app: huge");
    kubectl.apply(&["apply", "-f", "-"], &pods);
    assert_eq!(wait_for_node(&kubectl, "web"), "node-a");
    assert_eq!(wait_for_node(&kubectl, "gpu-job"), "node-b", "a toleration lets it onto the tainted node");
    let scheduled = wait_for_event(&kubectl, "web", "Scheduled");
    assert_eq!(scheduled, "Successfully assigned default/web to node-a");

    let refused = wait_for_event(&kubectl, "no-toleration", "FailedScheduling");
    assert!(
        refused.starts_with(
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {dedicated: gpu}."
        ),
        "{refused}"
    );
    let too_big = wait_for_event(&kubectl, "huge", "FailedScheduling");
    assert!(too_big.starts_with("0/2 nodes are available: 1 Insufficient cpu,"), "{too_big}");
    let condition = kubectl.ok(&[
        "get",
        "pod",
        "huge",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}/{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
    ]);
    assert_eq!(condition, "False/Unschedulable");

    // A node that fits arrives: the parked pod is retried and lands there.
    kubectl.apply(&["apply", "-f", "-"], &node("node-c", "c", "16", None));
    assert_eq!(wait_for_node(&kubectl, "huge"), "node-c");
    let condition =
        kubectl.ok(&["get", "pod", "huge", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}"]);
    assert_eq!(condition, "True", "binding sets PodScheduled");

    // Required anti-affinity on the hostname: two replicas never share a node.
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      \
                - labelSelector: {matchLabels: {app: db}}\n        topologyKey: kubernetes.io/hostname\n";
    kubectl
        .apply(&["apply", "-f", "-"], &(pod("db-1", "100m", anti, "app: db") + &pod("db-2", "100m", anti, "app: db")));
    let (first, second) = (wait_for_node(&kubectl, "db-1"), wait_for_node(&kubectl, "db-2"));
    assert_ne!(first, second, "anti-affinity keeps replicas apart");

    // Hard spread over zones: three pods, three zones (node-b's taint is tolerated).
    let spread = format!(
        "{tolerate}  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    \
         whenUnsatisfiable: DoNotSchedule\n    labelSelector: {{matchLabels: {{app: spread}}}}\n"
    );
    let spread_pods: String = (1..=3).map(|i| pod(&format!("spread-{i}"), "100m", &spread, "app: spread")).collect();
    kubectl.apply(&["apply", "-f", "-"], &spread_pods);
    let mut zones: Vec<String> = (1..=3).map(|i| wait_for_node(&kubectl, &format!("spread-{i}"))).collect();
    zones.sort();
    assert_eq!(zones, ["node-a", "node-b", "node-c"], "one pod per zone");

    // Volumes with node affinity pin their pods (VolumeBinding): a claim bound to a
    // zone-c volume lands in zone c; a claim bound to a volume not made yet waits, and
    // the volume's arrival (a zone-a one) brings the pod to zone a.
    let volume = |name: &str, zone: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: 1Gi}}\n  \
             accessModes: [ReadWriteOnce]\n  hostPath: {{path: /tmp/{name}}}\n  nodeAffinity:\n    required:\n      \
             nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: topology.kubernetes.io/zone, operator: In, \
             values: [{zone}]}}\n---\n"
        )
    };
    let claim = |name: &str, volume: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  volumeName: {volume}\n  \
             accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n---\n"
        )
    };
    let uses = |claim: &str| format!("  volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]\n");
    kubectl.apply(&["apply", "-f", "-"], &(volume("pv-c", "c") + &claim("data-c", "pv-c") + &claim("late", "pv-late")));
    kubectl.apply(&["apply", "-f", "-"], &(pod("stateful", "100m", &uses("data-c"), "app: st")));
    assert_eq!(wait_for_node(&kubectl, "stateful"), "node-c");
    kubectl.apply(&["apply", "-f", "-"], &(pod("late", "100m", &format!("{tolerate}{}", uses("late")), "app: late")));
    let waiting = wait_for_event(&kubectl, "late", "FailedScheduling");
    assert!(
        waiting.contains("3 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"),
        "{waiting}"
    );
    kubectl.apply(&["apply", "-f", "-"], &volume("pv-late", "a"));
    assert_eq!(wait_for_node(&kubectl, "late"), "node-a");

    // The scheduler reports itself and its metrics through the server.
    let metrics = kubectl.ok(&["get", "--raw", "/metrics"]);
    assert!(metrics.contains("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"}"));
    assert!(metrics.contains("scheduler_pending_pods{queue=\"unschedulable\"}"));
    assert!(metrics.contains("scheduler_scheduling_attempt_duration_seconds_bucket"));
    // Extension points, timed once per cycle: filters passed for placed pods, and the
    // pods that did not fit ended at Filter and went through PostFilter (preemption).
    let point = |point: &str, status: &str| {
        format!("scheduler_framework_extension_point_duration_seconds_count{{extension_point=\"{point}\",profile=\"default-scheduler\",status=\"{status}\"}}")
    };
    for (name, status) in
        [("PreFilter", "Success"), ("Filter", "Success"), ("Score", "Success"), ("Reserve", "Success")]
    {
        assert!(metrics.contains(&point(name, status)), "{name} {status} in:\n{metrics}");
    }
    assert!(metrics.contains(&point("PostFilter", "Unschedulable")), "{metrics}");
    assert!(
        metrics.contains(&point("Filter", "Unschedulable"))
            || metrics.contains(&point("Filter", "UnschedulableAndUnresolvable"))
    );
    let scheduler = kubectl.json(&["get", "componentstatuses", "scheduler"]);
    assert_eq!(scheduler["conditions"][0]["status"], "True");
    server.stop();
}

#[test]
fn a_higher_priority_pod_preempts_the_lowest_priority_victim() {
    let mut server = TestServer::start();
    let kubectl = server.kubectl("");
    let classes = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n---\n\
                   apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: mid}\nvalue: 10\n---\n";
    kubectl.apply(&["apply", "-f", "-"], &(classes.to_string() + &node("only", "a", "2", None)));
    let mid = "  priorityClassName: mid\n";
    kubectl.apply(&["apply", "-f", "-"], &(pod("low", "1", "", "app: low") + &pod("middle", "1", mid, "app: mid")));
    assert_eq!(wait_for_node(&kubectl, "low"), "only");
    assert_eq!(wait_for_node(&kubectl, "middle"), "only");

    kubectl.apply(&["apply", "-f", "-"], &pod("urgent", "1", "  priorityClassName: high\n", "app: urgent"));
    assert_eq!(wait_for_node(&kubectl, "urgent"), "only");
    let preempted = wait_for_event(&kubectl, "low", "Preempted");
    assert!(preempted.starts_with("Preempted by pod "), "{preempted}");
    assert!(preempted.ends_with(" on node only"), "{preempted}");
    // The victim is the lowest-priority pod, marked and being deleted; the other stays.
    let low = kubectl.json(&["get", "pod", "low"]);
    assert!(low["metadata"]["deletionTimestamp"].is_string(), "{low}");
    let marked = low["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "DisruptionTarget");
    assert!(marked, "victims carry DisruptionTarget: {low}");
    let middle = kubectl.json(&["get", "pod", "middle"]);
    assert!(middle["metadata"]["deletionTimestamp"].is_null(), "{middle}");
    let nominated = kubectl.ok(&["get", "pod", "urgent", "-o", "jsonpath={.status.nominatedNodeName}"]);
    assert_eq!(nominated, "only");
    server.stop();
}

/// `GET /metrics` over plain HTTP/1.1 from the scheduler's own endpoint.
fn http_get_metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the metrics endpoint accepts");
    stream.set_read_timeout(Some(WAIT)).expect("a timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}

#[test]
fn the_scheduler_runs_alone_against_a_server() {
    let mut server = TestServer::start_with(|_| vec!["--no-scheduler".into()]);
    let kubectl = server.kubectl("");
    let batch = pod("q", "500m", "  schedulerName: batch-scheduler\n", "app: q");
    kubectl.apply(&["apply", "-f", "-"], &(node("solo", "a", "2", None) + &pod("p", "1", "", "app: p") + &batch));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(kubectl.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]), "", "no scheduler yet");

    // Two profiles: the default one, and one that packs (MostAllocated).
    let config = common::write(
        server.dir.path(),
        "scheduler.yaml",
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nparallelism: 2\nprofiles:\n\
         - schedulerName: default-scheduler\n\
         - schedulerName: batch-scheduler\n  pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      \
         scoringStrategy: {type: MostAllocated}\n",
    );
    let mut scheduler = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["scheduler", "--metrics-listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(server.kubeconfig())
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("keelson scheduler starts");
    let stdout = scheduler.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("metrics on http://").and_then(|l| l.strip_suffix("/metrics")) {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let placed = std::panic::catch_unwind(|| (wait_for_node(&kubectl, "p"), wait_for_node(&kubectl, "q")));
    let metrics_addr = rx.recv_timeout(WAIT).ok();
    let metrics = metrics_addr.as_deref().map(http_get_metrics);
    let _ = std::process::Command::new("kill").args(["-TERM", &scheduler.id().to_string()]).status();
    let status = scheduler.wait().expect("the scheduler exits");
    assert_eq!(placed.expect("scheduled by the separate process"), ("solo".to_string(), "solo".to_string()));
    assert!(status.success(), "SIGTERM ends the scheduler cleanly: {status}");
    let metrics = metrics.expect("the scheduler printed its metrics address");
    assert!(
        metrics.contains("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 1\n"),
        "{metrics}"
    );
    // Each profile counts its own pods.
    assert!(
        metrics.contains("scheduler_schedule_attempts_total{profile=\"batch-scheduler\",result=\"scheduled\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("extension_point=\"Bind\",profile=\"batch-scheduler\",status=\"Success\""), "{metrics}");

    // A configuration error stops the start with the field named.
    let bad = common::write(
        server.dir.path(),
        "bad.yaml",
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\npercentageOfNodesToScore: 140\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["scheduler", "--kubeconfig"])
        .arg(server.kubeconfig())
        .arg("--config")
        .arg(&bad)
        .output()
        .expect("keelson runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("percentageOfNodesToScore"), "{stderr}");
    server.stop();
}
