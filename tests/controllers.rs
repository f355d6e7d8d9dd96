//! End to end: the controllers in a real `keelson server` (and alone, as `keelson
//! controller-manager`), with hollow nodes running the pods, driven by the real
//! kubectl: Deployments scale, roll out, pause and roll back; deletion follows each
//! propagation policy; a deleted namespace takes everything in it; Jobs complete
//! (Indexed too) and expire; and of two controller managers only the Lease holder
//! acts, the other taking over when it stops; and the pods of a node agent that
//! dies are evicted and recreated on the nodes left; ResourceQuotas report what their
//! namespace uses.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn hollow_nodes(server: &TestServer, nodes: usize) -> AgentProcess {
    hollow_nodes_named(server, nodes, "cm-")
}

/// `nodes` hollow nodes named `PREFIX0...`, renewing their Leases every second.
fn hollow_nodes_named(server: &TestServer, nodes: usize, prefix: &str) -> AgentProcess {
    AgentProcess::start(
        |command| {
            command.args(["--runtime", "hollow", "--kubeconfig"]).arg(server.kubeconfig()).args([
                "--nodes",
                &nodes.to_string(),
                "--node-name-prefix",
                prefix,
                "--lease-renew-seconds",
                "1",
            ]);
        },
        Duration::from_secs(120),
    )
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .map(|items| items.iter().map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn count(kubectl: &Kubectl, args: &[&str]) -> usize {
    names(&kubectl.json(&[args, &["-o", "json"]].concat())).len()
}

/// Polls until `check` holds (up to 120 s: a CronJob acts on the minute, so a check
/// that waits for its next run can need a full minute plus the work itself on a slow,
/// busy machine).
fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn deployments_scale_roll_out_pause_and_roll_back() {
    let server = TestServer::start();
    let _nodes = hollow_nodes(&server, 10);
    let kubectl = server.kubectl("");
    kubectl.ok(&["create", "deployment", "web", "--image=localhost/keelson/web:1", "--replicas=3"]);
    kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(count(&kubectl, &["get", "pods", "-l", "app=web"]), 3);
    let sa = kubectl.ok(&["get", "serviceaccount", "default", "-o", "name"]);
    assert_eq!(sa.trim(), "serviceaccount/default", "every namespace gets a default ServiceAccount");
    // The controllers' writes are recorded under their component's name, as kube's.
    let managed = kubectl.json(&["get", "deployment", "web", "--show-managed-fields"]);
    let managers: Vec<&str> = managed["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert!(managers.contains(&"kube-controller-manager"), "{managers:?}");
    // What the controllers did, as events on the objects they acted for.
    wait_until("the Deployment's scaling event", || {
        let described = kubectl.ok(&["describe", "deployment", "web"]);
        described.lines().any(|l| l.contains("ScalingReplicaSet") && l.contains("deployment-controller"))
    });
    wait_until("the ReplicaSet's pod creation events", || {
        let events =
            kubectl.json(&["get", "events", "--field-selector", "involvedObject.kind=ReplicaSet", "-o", "json"]);
        let created = events["items"].as_array().map_or(0, |items| {
            items
                .iter()
                .filter(|e| e["reason"] == "SuccessfulCreate" && e["source"]["component"] == "replicaset-controller")
                .count()
        });
        created == 3
    });

    kubectl.ok(&["scale", "deployment/web", "--replicas=6"]);
    kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    wait_until("6 pods", || count(&kubectl, &["get", "pods", "-l", "app=web"]) == 6);

    kubectl.ok(&["set", "image", "deployment/web", "web=localhost/keelson/web:2"]);
    let done = kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(done.contains("successfully rolled out"), "{done}");
    let sets = kubectl.json(&["get", "rs", "-l", "app=web", "-o", "json"]);
    let sizes: Vec<(i64, String)> = sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["spec"]["replicas"].as_i64().unwrap(),
                s["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        sizes.contains(&(6, "localhost/keelson/web:2".into()))
            && sizes.contains(&(0, "localhost/keelson/web:1".into())),
        "{sizes:?}"
    );
    let deployment = kubectl.json(&["get", "deployment", "web", "-o", "json"]);
    assert_eq!(deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    assert_eq!(deployment["status"]["updatedReplicas"], 6);
    assert_eq!(deployment["status"]["availableReplicas"], 6);
    let available = deployment["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Available")
        .unwrap()
        .clone();
    assert_eq!(available["status"], "True");

    // Paused: a template change waits; resumed, it rolls.
    kubectl.ok(&["rollout", "pause", "deployment/web"]);
    kubectl.ok(&["set", "image", "deployment/web", "web=localhost/keelson/web:3"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&kubectl, &["get", "rs", "-l", "app=web"]), 2, "no rollout while paused");
    let reason = kubectl.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
    ]);
    assert_eq!(reason, "DeploymentPaused");
    kubectl.ok(&["rollout", "resume", "deployment/web"]);
    kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(count(&kubectl, &["get", "rs", "-l", "app=web"]), 3);

    // Undo goes back to revision 2's template, reusing its ReplicaSet as revision 4.
    kubectl.ok(&["rollout", "undo", "deployment/web"]);
    kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(count(&kubectl, &["get", "rs", "-l", "app=web"]), 3, "the old ReplicaSet is reused");
    let history = kubectl.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["1", "3", "4"], "{history}");
    wait_until("every pod on web:2", || {
        let pods = kubectl.json(&["get", "pods", "-l", "app=web", "-o", "json"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == 6
            && items.iter().all(|p| {
                p["spec"]["containers"][0]["image"] == "localhost/keelson/web:2"
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
    });
}

#[test]
fn deletion_follows_each_propagation_policy_and_namespaces_empty_out() {
    let server = TestServer::start();
    let _nodes = hollow_nodes(&server, 5);
    let kubectl = server.kubectl("");
    for policy in ["background", "foreground", "orphan"] {
        kubectl.ok(&["create", "deployment", &format!("d-{policy}"), "--image=x", "--replicas=2"]);
    }
    for policy in ["background", "foreground", "orphan"] {
        kubectl.ok(&["rollout", "status", &format!("deployment/d-{policy}"), "--timeout=60s"]);
    }
    for policy in ["background", "foreground", "orphan"] {
        kubectl.ok(&["delete", "deployment", &format!("d-{policy}"), &format!("--cascade={policy}")]);
    }
    for policy in ["background", "foreground"] {
        let label = format!("app=d-{policy}");
        wait_until(&format!("{policy} dependents gone"), || {
            count(&kubectl, &["get", "rs", "-l", &label]) == 0 && count(&kubectl, &["get", "pods", "-l", &label]) == 0
        });
    }
    // Orphaned: the ReplicaSet and its pods stay, without the owner reference.
    std::thread::sleep(Duration::from_secs(1));
    let orphans = kubectl.json(&["get", "rs", "-l", "app=d-orphan", "-o", "json"]);
    assert_eq!(orphans["items"].as_array().map_or(0, Vec::len), 1, "the orphaned ReplicaSet stays: {orphans}");
    let set = &orphans["items"][0];
    assert!(set["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty), "{set}");
    assert_eq!(count(&kubectl, &["get", "pods", "-l", "app=d-orphan"]), 2);

    // A namespace being deleted is emptied of every kind, then goes.
    kubectl.ok(&["create", "namespace", "team"]);
    kubectl.ok(&["-n", "team", "create", "deployment", "web", "--image=x", "--replicas=2"]);
    kubectl.ok(&["-n", "team", "create", "configmap", "settings", "--from-literal=a=b"]);
    kubectl.ok(&["-n", "team", "create", "secret", "generic", "token", "--from-literal=t=x"]);
    kubectl.ok(&["-n", "team", "create", "service", "clusterip", "web", "--tcp=80:80"]);
    kubectl.ok(&["-n", "team", "rollout", "status", "deployment/web", "--timeout=60s"]);
    kubectl.ok(&["delete", "namespace", "team", "--wait=false"]);
    wait_until("namespace team gone", || !kubectl.run(&["get", "namespace", "team"]).ok);
    for kind in ["deployments", "replicasets", "pods", "configmaps", "secrets", "services", "serviceaccounts"] {
        assert_eq!(count(&kubectl, &["-n", "team", "get", kind]), 0, "{kind} left in a deleted namespace");
    }
}

#[test]
fn jobs_complete_by_count_and_by_index_then_expire() {
    let server = TestServer::start();
    let _nodes = hollow_nodes(&server, 5);
    let kubectl = server.kubectl("");
    let jobs = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: batch}\nspec:\n  completions: 4\n  parallelism: 2\n  \
        ttlSecondsAfterFinished: 3\n  template:\n    metadata: {annotations: {hollow.keelson.dev/run-seconds: '1'}}\n    \
        spec: {restartPolicy: Never, containers: [{name: c, image: x}]}\n---\n\
        apiVersion: batch/v1\nkind: Job\nmetadata: {name: indexed}\nspec:\n  completions: 3\n  parallelism: 3\n  \
        completionMode: Indexed\n  template:\n    metadata: {annotations: {hollow.keelson.dev/run-seconds: '1'}}\n    \
        spec: {restartPolicy: Never, containers: [{name: c, image: x}]}\n";
    kubectl.apply(&["apply", "-f", "-"], jobs);
    kubectl.ok(&["wait", "--for=condition=complete", "job/batch", "job/indexed", "--timeout=60s"]);
    let indexed = kubectl.json(&["get", "job", "indexed", "-o", "json"]);
    assert_eq!(indexed["status"]["succeeded"], 3);
    assert_eq!(indexed["status"]["completedIndexes"], "0-2");
    wait_until("the Job's Completed event", || {
        let reasons = kubectl.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Job,involvedObject.name=indexed",
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        reasons.contains("Completed") && reasons.contains("SuccessfulCreate")
    });
    assert!(indexed["status"]["active"].is_null(), "{}", indexed["status"]);
    let pods = kubectl.json(&["get", "pods", "-l", "job-name=indexed", "-o", "json"]);
    let mut indexes: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap().to_string())
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    // Every pod counted and released.
    wait_until("finalizers released", || {
        let pods = kubectl.json(&["get", "pods", "-o", "json"]);
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty))
    });
    // The TTL deletes the finished Job and its pods.
    wait_until("job batch expired", || !kubectl.run(&["get", "job", "batch"]).ok);
    wait_until("its pods gone", || count(&kubectl, &["get", "pods", "-l", "job-name=batch"]) == 0);

    // A Job that keeps failing stops at its backoff limit.
    let failing =
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: failing}\nspec:\n  backoffLimit: 0\n  template:\n    \
        metadata: {annotations: {hollow.keelson.dev/run-seconds: '1', hollow.keelson.dev/exit-code: '1'}}\n    \
        spec: {restartPolicy: Never, containers: [{name: c, image: x}]}\n";
    kubectl.apply(&["apply", "-f", "-"], failing);
    kubectl.ok(&["wait", "--for=condition=failed", "job/failing", "--timeout=60s"]);
    let reason =
        kubectl.ok(&["get", "job", "failing", "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}"]);
    assert_eq!(reason, "BackoffLimitExceeded");
}

/// `keelson controller-manager` against a server without in-process controllers.
fn controller_manager(server: &TestServer) -> AgentProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keelson"));
    command.arg("controller-manager").arg("--kubeconfig").arg(server.kubeconfig());
    AgentProcess::from_child(spawn_until_ready(&mut command, Duration::from_secs(60)))
}

fn lease_holder(kubectl: &Kubectl) -> String {
    kubectl
        .run(&["-n", "kube-system", "get", "lease", "kube-controller-manager", "-o", "jsonpath={.spec.holderIdentity}"])
        .stdout
}

#[test]
fn of_two_controller_managers_only_the_leader_acts_and_the_other_takes_over() {
    let server = TestServer::start_with(|_| vec!["--no-controllers".into()]);
    let _nodes = hollow_nodes(&server, 5);
    let kubectl = server.kubectl("");
    kubectl.ok(&["create", "deployment", "before", "--image=x", "--replicas=2"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&kubectl, &["get", "rs"]), 0, "no controllers run in the server");

    let first = controller_manager(&server);
    kubectl.ok(&["rollout", "status", "deployment/before", "--timeout=60s"]);
    let leader = lease_holder(&kubectl);
    assert!(!leader.is_empty());
    let second = controller_manager(&server);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lease_holder(&kubectl), leader, "the second waits");

    // The leader stops (and hands the Lease back): the second takes over at once.
    first.stop();
    wait_until("a new leader", || {
        let holder = lease_holder(&kubectl);
        !holder.is_empty() && holder != leader
    });
    kubectl.ok(&["create", "deployment", "after", "--image=x", "--replicas=2"]);
    kubectl.ok(&["rollout", "status", "deployment/after", "--timeout=60s"]);
    assert_eq!(count(&kubectl, &["get", "pods", "-l", "app=after"]), 2);
    second.stop();
}

/// A node agent that dies: its nodes go Unknown and get the `unreachable` taints, its
/// pods are evicted once their toleration runs out, and their ReplicaSet recreates
/// them on the nodes that are left. When the agent returns, the taints go.
#[test]
fn pods_of_a_dead_node_agent_are_evicted_and_recreated_elsewhere() {
    let server = TestServer::start_with(|_| {
        ["--node-monitor-grace-period", "3s", "--node-monitor-period", "500ms", "--node-eviction-rate", "100"]
            .map(String::from)
            .to_vec()
    });
    let kubectl = server.kubectl("");
    let doomed = hollow_nodes_named(&server, 2, "doomed-");
    let _survivors = hollow_nodes_named(&server, 2, "survivor-");
    wait_until("four nodes", || count(&kubectl, &["get", "nodes"]) == 4);
    kubectl.apply(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 8\n  \
         selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      \
         tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]\n      \
         containers: [{name: main, image: web:1}]\n",
    );
    kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let on_doomed = |kubectl: &Kubectl| {
        let pods = kubectl.json(&["get", "pods", "-l", "app=web", "-o", "json"]);
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| n.starts_with("doomed-")))
            .count()
    };
    assert!(on_doomed(&kubectl) > 0, "the scheduler spreads pods over all four nodes");

    drop(doomed); // killed: no goodbye, the Leases just stop
    let node_state = |kubectl: &Kubectl, name: &str| {
        let node = kubectl.json(&["get", "node", name, "-o", "json"]);
        let ready = node["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            .unwrap_or_default();
        let taints: Vec<String> = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| format!("{}:{}", t["key"].as_str().unwrap_or_default(), t["effect"].as_str().unwrap_or_default()))
            .collect();
        (ready["status"].as_str().unwrap_or_default().to_string(), taints)
    };
    wait_until("the dead agent's nodes Unknown and tainted", || {
        (0..2).all(|i| {
            let (ready, taints) = node_state(&kubectl, &format!("doomed-{i}"));
            ready == "Unknown"
                && taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
                && taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string())
        })
    });
    assert_eq!(node_state(&kubectl, "survivor-0").0, "True");
    wait_until("every pod evicted from the dead nodes", || on_doomed(&kubectl) == 0);
    kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let available = kubectl.json(&["get", "deployment", "web", "-o", "json"])["status"]["availableReplicas"].clone();
    assert_eq!(available, 8, "the evicted pods were recreated on the surviving nodes");
    let evicted = kubectl.json(&["get", "pods", "-l", "app=web", "-o", "json"]);
    let reason = evicted["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
        .flat_map(|p| p["status"]["conditions"].as_array().cloned().unwrap_or_default())
        .find(|c| c["type"] == "DisruptionTarget");
    assert_eq!(reason.map(|c| c["reason"].clone()), Some(Value::from("DeletionByTaintManager")));

    // The agent comes back: the nodes are Ready again and untainted.
    let _back = hollow_nodes_named(&server, 2, "doomed-");
    wait_until("the returned nodes Ready and untainted", || {
        (0..2).all(|i| node_state(&kubectl, &format!("doomed-{i}")) == ("True".to_string(), vec![]))
    });
}

/// A CronJob fires on its schedule: at the next minute a Job named after that
/// minute, owned by the CronJob and annotated with its scheduled time; status
/// records the last schedule and success; finished Jobs beyond the history limit go
/// (Jobs made by `kubectl create job --from=cronjob/...` count, as they are owned);
/// an unparseable schedule is refused with its field path.
#[test]
fn cronjobs_fire_on_schedule_and_keep_their_history_short() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let _nodes = hollow_nodes(&server, 3);
    kubectl.apply(
        &["apply", "-f", "-"],
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: '* * * * *'\n  \
         successfulJobsHistoryLimit: 1\n  jobTemplate:\n    spec:\n      template:\n        \
         metadata: {annotations: {hollow.keelson.dev/run-seconds: '1'}}\n        spec:\n          restartPolicy: Never\n          \
         containers: [{name: main, image: web:1}]\n",
    );
    for manual in ["manual-1", "manual-2", "manual-3"] {
        kubectl.ok(&["create", "job", manual, "--from=cronjob/tick"]);
    }
    let complete = |kubectl: &Kubectl| {
        let jobs = kubectl.json(&["get", "jobs", "-o", "json"]);
        jobs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Complete")))
            .map(|j| j["metadata"]["name"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    wait_until("the manual Jobs done and all but one deleted", || {
        let jobs = names(&kubectl.json(&["get", "jobs", "-o", "json"]));
        let manual: Vec<_> = jobs.iter().filter(|j| j.starts_with("manual-")).collect();
        manual.len() == 1 && complete(&kubectl).contains(manual[0])
    });

    let deadline = Instant::now() + Duration::from_secs(80);
    let scheduled = loop {
        let jobs = kubectl.json(&["get", "jobs", "-o", "json"]);
        let fired = jobs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("tick-")));
        if let Some(job) = fired {
            break job.clone();
        }
        assert!(Instant::now() < deadline, "no Job within a minute of a '* * * * *' CronJob");
        std::thread::sleep(Duration::from_millis(500));
    };
    let name = scheduled["metadata"]["name"].as_str().unwrap().to_string();
    let minutes: i64 = name.strip_prefix("tick-").and_then(|m| m.parse().ok()).expect("named tick-MINUTES");
    let at = scheduled["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].clone();
    let at: keelson::engine::k8s_openapi::jiff::Timestamp = at.as_str().expect("the scheduled time").parse().unwrap();
    assert_eq!(at.as_second() / 60, minutes, "named after its minute");
    assert_eq!(at.as_second() % 60, 0, "on the minute");
    assert_eq!(scheduled["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    wait_until("the scheduled Job's success recorded", || {
        let status = &kubectl.json(&["get", "cronjob", "tick", "-o", "json"])["status"];
        status["lastScheduleTime"]
            .as_str()
            .and_then(|t| t.parse::<keelson::engine::k8s_openapi::jiff::Timestamp>().ok())
            == Some(at)
            && status["lastSuccessfulTime"].is_string()
            && status["active"].is_null()
    });
    wait_until("only the newest success kept", || complete(&kubectl) == [name.clone()]);

    let refused = kubectl.run(&["create", "cronjob", "bad", "--image=web:1", "--schedule=61 * * * *"]);
    assert!(!refused.ok);
    assert!(refused.stderr.contains("spec.schedule"), "{}", refused.stderr);
}

/// A DaemonSet runs one pod per eligible node, pinned by node affinity and bound by
/// the scheduler; follows node labels; rolls out a new image node by node (`kubectl
/// rollout status`), records revisions (`kubectl rollout history`) and rolls back
/// (`kubectl rollout undo`).
#[test]
fn daemonsets_cover_their_nodes_roll_out_and_roll_back() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let _nodes = hollow_nodes(&server, 4);
    wait_until("four nodes", || count(&kubectl, &["get", "nodes"]) == 4);
    kubectl.apply(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  \
         template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: main, image: web:1}]}\n---\n\
         apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: edge}\nspec:\n  selector: {matchLabels: {app: edge}}\n  \
         template:\n    metadata: {labels: {app: edge}}\n    spec:\n      nodeSelector: {role: edge}\n      \
         containers: [{name: main, image: web:1}]\n",
    );
    kubectl.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    let pod_nodes = |selector: &str| {
        let pods = kubectl.json(&["get", "pods", "-l", selector, "-o", "json"]);
        let mut nodes: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("-").to_string())
            .collect();
        nodes.sort();
        nodes
    };
    assert_eq!(pod_nodes("app=agent"), ["cm-0", "cm-1", "cm-2", "cm-3"]);
    let status = kubectl.json(&["get", "daemonset", "agent", "-o", "json"])["status"].clone();
    assert_eq!((status["desiredNumberScheduled"].as_i64(), status["numberReady"].as_i64()), (Some(4), Some(4)));

    assert!(pod_nodes("app=edge").is_empty());
    kubectl.ok(&["label", "node", "cm-1", "cm-3", "role=edge"]);
    wait_until("edge daemons on the labelled nodes", || pod_nodes("app=edge") == ["cm-1", "cm-3"]);
    kubectl.ok(&["label", "node", "cm-1", "role-"]);
    wait_until("the unlabelled node's daemon gone", || pod_nodes("app=edge") == ["cm-3"]);

    kubectl.ok(&["set", "image", "daemonset/agent", "main=web:2"]);
    kubectl.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    let images = |kubectl: &Kubectl| {
        let pods = kubectl.json(&["get", "pods", "-l", "app=agent", "-o", "json"]);
        let mut images: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string())
            .collect();
        images.sort();
        images
    };
    wait_until("every daemon on web:2", || images(&kubectl) == ["web:2"; 4]);
    let history = kubectl.ok(&["rollout", "history", "daemonset/agent"]);
    assert!(history.contains('1') && history.contains('2'), "two revisions: {history}");
    kubectl.ok(&["rollout", "undo", "daemonset/agent"]);
    kubectl.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    wait_until("every daemon back on web:1", || images(&kubectl) == ["web:1"; 4]);
}

/// A StatefulSet's pods have stable names and hostnames and their own claims; it
/// scales down from the top (claims stay), rolls out a new image honouring the
/// partition, and `kubectl rollout status|history` follow it.
#[test]
fn statefulsets_keep_names_and_claims_and_roll_out_by_partition() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let _nodes = hollow_nodes(&server, 3);
    kubectl.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}\n---\n\
         apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 3\n  \
         selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    \
         spec: {containers: [{name: main, image: web:1}]}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    \
         spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    kubectl.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    let live = |kubectl: &Kubectl| {
        let pods = kubectl.json(&["get", "pods", "-l", "app=db", "-o", "json"]);
        let mut pods: Vec<(String, String)> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let name = p["metadata"]["name"].as_str().unwrap_or_default().to_string();
                (name, p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string())
            })
            .collect();
        pods.sort();
        pods
    };
    let pod_names = |pods: Vec<(String, String)>| pods.into_iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(pod_names(live(&kubectl)), ["db-0", "db-1", "db-2"]);
    let pod = kubectl.json(&["get", "pod", "db-1", "-o", "json"]);
    assert_eq!(pod["spec"]["hostname"], "db-1");
    assert_eq!(pod["spec"]["subdomain"], "db");
    assert_eq!(pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "db-1");
    assert_eq!(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-db-1");
    let claims = |kubectl: &Kubectl| names(&kubectl.json(&["get", "pvc", "-o", "json"]));
    assert_eq!(claims(&kubectl), ["data-db-0", "data-db-1", "data-db-2"]);
    // The headless Service lists each pod under its hostname.
    wait_until("endpoints with hostnames", || {
        let endpoints = kubectl.json(&["get", "endpoints", "db", "-o", "json"]);
        let mut hostnames: Vec<String> = endpoints["subsets"][0]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["hostname"].as_str().map(String::from))
            .collect();
        hostnames.sort();
        hostnames == ["db-0", "db-1", "db-2"]
    });

    kubectl.ok(&["scale", "statefulset", "db", "--replicas=1"]);
    wait_until("scaled down to db-0", || pod_names(live(&kubectl)) == ["db-0"]);
    assert_eq!(claims(&kubectl).len(), 3, "claims outlive their pods");
    kubectl.ok(&["scale", "statefulset", "db", "--replicas=3"]);
    kubectl.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);

    // Partition 2: only db-2 takes the new image.
    kubectl.ok(&[
        "patch",
        "statefulset",
        "db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ]);
    kubectl.ok(&["set", "image", "statefulset/db", "main=web:2"]);
    wait_until("db-2 on web:2, the rest on web:1", || {
        live(&kubectl)
            == [("db-0".into(), "web:1".into()), ("db-1".into(), "web:1".into()), ("db-2".into(), "web:2".into())]
    });
    kubectl.ok(&[
        "patch",
        "statefulset",
        "db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    kubectl.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    wait_until("every pod on web:2", || live(&kubectl).iter().all(|p| p.1 == "web:2") && live(&kubectl).len() == 3);
    let status = kubectl.json(&["get", "statefulset", "db", "-o", "json"])["status"].clone();
    assert_eq!(status["currentRevision"], status["updateRevision"]);
    let history = kubectl.ok(&["rollout", "history", "statefulset/db"]);
    assert!(history.contains('1') && history.contains('2'), "two revisions: {history}");
}

#[test]
fn resource_quotas_report_what_their_namespace_uses() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    kubectl.ok(&["create", "quota", "best-effort", "--hard=pods=10", "--scopes=BestEffort"]);
    let pod = |name: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: x{resources}}}]\n"
        )
    };
    // A pod without requests is created before the quota that names cpu and memory:
    // admission would refuse it afterwards (it must specify them), but the
    // controller still counts what is already there.
    kubectl.apply(&["apply", "-f", "-"], &pod("plain", ""));
    kubectl.ok(&[
        "create",
        "quota",
        "everything",
        "--hard=pods=10,requests.cpu=2,limits.memory=4Gi,configmaps=5,count/deployments.apps=3,services=4",
    ]);
    let used = |quota: &str| kubectl.json(&["get", "quota", quota, "-o", "json"])["status"]["used"].clone();
    // Until the controller has measured a quota, admission refuses what it covers.
    wait_until("the quota measured", || used("everything").is_object());
    let sized = ", resources: {requests: {cpu: 250m}, limits: {memory: 1Gi}}";
    kubectl.apply(&["apply", "-f", "-"], &pod("a", sized));
    kubectl.apply(&["apply", "-f", "-"], &pod("b", sized));
    kubectl.ok(&["create", "configmap", "settings", "--from-literal=a=b"]);
    kubectl.ok(&["create", "deployment", "web", "--image=x", "--replicas=0"]);
    kubectl.ok(&["create", "service", "clusterip", "web", "--tcp=80:80"]);
    // The default namespace also holds the `kubernetes` Service and the cluster CA's
    // ConfigMap, published by a controller.
    wait_until("the CA's ConfigMap", || kubectl.run(&["get", "configmap", "kube-root-ca.crt"]).ok);
    let configmaps = count(&kubectl, &["get", "configmaps"]).to_string();
    let services = count(&kubectl, &["get", "services"]).to_string();
    let expected = serde_json::json!({"pods": "3", "requests.cpu": "500m", "limits.memory": "2Gi",
        "configmaps": configmaps, "count/deployments.apps": "1", "services": services});
    wait_until("the quota's usage", || used("everything") == expected);
    wait_until("the scoped quota's usage", || used("best-effort") == serde_json::json!({"pods": "1"}));
    let hard = kubectl.json(&["get", "quota", "everything", "-o", "json"])["status"]["hard"].clone();
    assert_eq!(hard["requests.cpu"], "2", "{hard}");
    let described = kubectl.ok(&["describe", "quota", "everything"]);
    assert!(described.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["requests.cpu", "500m", "2"]));

    // A pod going away gives its share back.
    kubectl.ok(&["delete", "pod", "a", "--wait=false"]);
    wait_until("the deleted pod's share returned", || used("everything")["requests.cpu"] == "250m");
}
