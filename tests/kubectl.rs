//! The real kubectl against a real `keelson server`: the everyday commands, watch,
//! errors, and a restart that keeps every object.

mod common;

use common::{token_kubeconfig, Kubectl, TestServer};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels:
    app: web
data:
  mode: fast
";

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: main
        image: {image}
        ports:
        - containerPort: 80
"
    )
}

const BAD_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: Bad_Name
spec:
  containers:
  - name: c
    image: busybox
";

fn scenarios(server: &mut TestServer, version: &str) {
    let k = server.kubectl(version);

    let info: Value = serde_json::from_str(&k.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(info["serverVersion"]["minor"], "33");

    let namespaces = k.ok(&["get", "namespaces"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }
    assert!(namespaces.contains("Active"), "the Table's STATUS column: {namespaces}");

    // explain reads the OpenAPI schemas.
    let explained = k.ok(&["explain", "pod.spec"]);
    assert!(explained.contains("containers") && explained.contains("<[]Container>"), "{explained}");

    let resources = k.ok(&["api-resources"]);
    for line in ["deployments", "deploy", "apps/v1", "Deployment"] {
        assert!(resources.contains(line), "{resources}");
    }

    // create -f, get, label, patch (merge, json, strategic), delete.
    let out = k.apply(&["create", "-f", "-"], CONFIGMAP);
    assert!(out.contains("configmap/settings created"), "{out}");
    let cm = k.json(&["get", "configmap", "settings"]);
    assert_eq!(cm["data"]["mode"], "fast");
    assert!(cm["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    k.ok(&["label", "configmap", "settings", "tier=backend"]);
    k.ok(&["patch", "configmap", "settings", "--type=merge", "-p", r#"{"data":{"extra":"1"}}"#]);
    k.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/mode","value":"slow"}]"#,
    ]);
    let cm = k.json(&["get", "cm", "settings"]);
    assert_eq!(cm["metadata"]["labels"]["tier"], "backend");
    assert_eq!(cm["data"]["extra"], "1");
    assert_eq!(cm["data"]["mode"], "slow");
    let listed = k.ok(&["get", "configmaps", "-l", "tier=backend"]);
    assert!(listed.contains("settings"), "{listed}");

    // apply twice: the second is a no-op; a change bumps the generation.
    let out = k.apply(&["apply", "-f", "-"], &deployment("nginx:1.26"));
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = k.apply(&["apply", "-f", "-"], &deployment("nginx:1.26"));
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    let out = k.apply(&["apply", "-f", "-"], &deployment("nginx:1.27"));
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let d = k.json(&["get", "deployment", "web"]);
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%", "server-side defaults");
    // Client-side apply computes a strategic merge patch from the OpenAPI markers
    // (v3 from 1.29, v2 before): containers merge by name, a dropped one is deleted.
    let with_sidecar = format!("{}      - name: sidecar\n        image: busybox\n", deployment("nginx:1.27"));
    k.apply(&["apply", "-f", "-"], &with_sidecar);
    let d = k.json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][1]["name"], "sidecar");
    k.apply(&["apply", "-f", "-"], &deployment("nginx:1.27"));
    let d = k.json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1, "{d}");
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"nginx:1.28"}]}}}}"#,
    ]);
    k.ok(&["scale", "deployment", "web", "--replicas=5"]);
    let d = k.json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.28");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
    let table = k.ok(&["get", "deployments"]);
    assert!(table.contains("UP-TO-DATE") && table.contains("web"), "{table}");

    // edit through $EDITOR: a sed script changes the replica count.
    let mut edit = k.command(&["edit", "deployment", "web"]);
    edit.env("EDITOR", "sed -i -e 's/replicas: 5/replicas: 4/'");
    let status = edit.status().expect("kubectl edit runs");
    assert!(status.success());
    assert_eq!(k.json(&["get", "deploy", "web"])["spec"]["replicas"], 4);

    // Invalid input: kubectl prints the field error and nothing is stored.
    let run = k.stdin(&["apply", "-f", "-"], BAD_POD);
    assert!(!run.ok);
    assert!(run.stderr.contains("is invalid") && run.stderr.contains("metadata.name"), "{}", run.stderr);
    assert!(!k.run(&["get", "pod", "Bad_Name"]).ok);
    let run = k.stdin(
        &["create", "--validate=strict", "-f", "-"],
        &CONFIGMAP.replace("  mode: fast", "  mode: fast\nbogus: 1"),
    );
    assert!(!run.ok);
    assert!(run.stderr.contains("unknown field"), "{}", run.stderr);

    // kubectl get -w sees ADDED, MODIFIED and DELETED.
    let mut watch = k
        .command(&["get", "configmaps", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w starts");
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The initial list arrives as ADDED; wait for it so the changes come after.
    let header = rx.recv_timeout(Duration::from_secs(20)).expect("the watch prints a header");
    assert!(header.contains("EVENT") && header.contains("DATA"), "{header}");
    // Every namespace also holds the cluster CA's ConfigMap, kube-root-ca.crt.
    let mut listed = Vec::new();
    while !listed.iter().any(|l: &String| l.contains("settings")) && listed.len() < 2 {
        listed.push(rx.recv_timeout(Duration::from_secs(20)).expect("the watch lists first"));
    }
    assert!(listed.iter().all(|l| l.contains("ADDED")), "{listed:?}");
    assert!(listed.iter().any(|l| l.contains("settings")), "{listed:?}");
    k.apply(&["create", "--validate=false", "-f", "-"], &CONFIGMAP.replace("settings", "watched"));
    k.ok(&["label", "configmap", "watched", "seen=yes"]);
    k.ok(&["delete", "configmap", "watched"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|l: &String| l.contains("DELETED")) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let watched: Vec<&String> = seen.iter().filter(|l| l.contains("watched")).collect();
    assert!(watched.len() >= 3, "{seen:?}");
    assert!(watched[0].contains("ADDED") && watched[1].contains("MODIFIED"), "{seen:?}");
    assert!(watched.last().unwrap().contains("DELETED"), "{seen:?}");

    // Server-side apply: field ownership, a conflict with another manager's value,
    // forcing it, and removing what the manager no longer applies.
    let ssa = deployment("nginx:1.27").replace("name: web", "name: ssa");
    let out = k.apply(
        &["apply", "--server-side", "-f", "-"],
        &format!("{ssa}      - name: sidecar\n        image: busybox\n"),
    );
    assert!(out.contains("deployment.apps/ssa serverside-applied"), "{out}");
    let d = k.json(&["get", "deploy", "ssa", "--show-managed-fields"]);
    let entries = d["metadata"]["managedFields"].as_array().expect("managedFields");
    let applied = entries.iter().find(|e| e["operation"] == "Apply").expect("an Apply entry");
    assert_eq!(applied["manager"], "kubectl");
    assert!(
        applied["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"sidecar\"}"].is_object()
    );
    k.ok(&["scale", "deploy", "ssa", "--replicas=5"]);
    let run = k.stdin(&["apply", "--server-side", "-f", "-"], &ssa.replace("replicas: 2", "replicas: 3"));
    assert!(!run.ok, "{}", run.stdout);
    assert!(
        // kube names the other manager as it wrote: through the scale subresource. (The
        // manager is the binary's name: `kubectl`, or `kubectl.1.28` beside it.)
        run.stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl")
            && run.stderr.contains("\" with subresource \"scale\" using apps/v1 at ")
            && run.stderr.contains(".spec.replicas"),
        "{}",
        run.stderr
    );
    k.apply(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &ssa.replace("replicas: 2", "replicas: 3"));
    let d = k.json(&["get", "deploy", "ssa"]);
    assert_eq!(d["spec"]["replicas"], 3);
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "the sidecar is no longer applied: {containers:?}");
    assert_eq!(containers[0]["ports"].as_array().unwrap().len(), 1, "the defaulted port is the applied one");

    // The typed `kubectl create <kind>` family: protobuf bodies from kubectl 1.32 on.
    k.ok(&["create", "namespace", "team-a"]);
    k.ok(&["create", "deployment", "api", "--image=nginx:1.27", "--replicas=2", "--port=8080", "-n", "team-a"]);
    let d = k.json(&["get", "deployment", "api", "-n", "team-a"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "api");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 8080);
    // `describe` reads through the typed client: protobuf answers from kubectl 1.32 on.
    let described = k.ok(&["describe", "deployment", "api", "-n", "team-a"]);
    assert!(described.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"), "{described}");
    assert!(described.lines().any(|l| l.split_whitespace().eq(["Port:", "8080/TCP"])), "{described}");
    k.ok(&["create", "configmap", "literal", "--from-literal=mode=fast", "-n", "team-a"]);
    assert_eq!(k.json(&["get", "cm", "literal", "-n", "team-a"])["data"]["mode"], "fast");
    k.ok(&["create", "secret", "generic", "creds", "--from-literal=password=hunter2", "-n", "team-a"]);
    assert_eq!(k.json(&["get", "secret", "creds", "-n", "team-a"])["data"]["password"], "aHVudGVyMg==");
    k.ok(&["create", "job", "once", "--image=busybox", "-n", "team-a", "--", "echo", "hi"]);
    let job = k.json(&["get", "job", "once", "-n", "team-a"]);
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::json!(["echo", "hi"]));
    k.ok(&["create", "service", "clusterip", "api", "--tcp=80:8080", "-n", "team-a"]);
    assert_eq!(k.json(&["get", "svc", "api", "-n", "team-a"])["spec"]["ports"][0]["targetPort"], 8080);
    // NodePorts: allocated from 30000-32767, unique, kept across updates, freed when
    // the Service stops exposing them.
    k.ok(&["create", "service", "nodeport", "edge", "--tcp=80:8080", "-n", "team-a"]);
    let node_port = k.json(&["get", "svc", "edge", "-n", "team-a"])["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    let taken =
        k.run(&["create", "service", "nodeport", "edge2", "--tcp=81:8080", &format!("--node-port={node_port}")]);
    assert!(!taken.ok && taken.stderr.contains("provided port is already allocated"), "{}", taken.stderr);
    k.ok(&["label", "svc", "edge", "tier=front", "-n", "team-a"]);
    assert_eq!(k.json(&["get", "svc", "edge", "-n", "team-a"])["spec"]["ports"][0]["nodePort"], node_port);
    k.ok(&["patch", "svc", "edge", "-n", "team-a", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    assert!(k.json(&["get", "svc", "edge", "-n", "team-a"])["spec"]["ports"][0].get("nodePort").is_none());
    k.ok(&["create", "service", "nodeport", "edge2", "--tcp=81:8080", &format!("--node-port={node_port}")]);
    let wide = k.ok(&["get", "svc", "edge2"]);
    assert!(wide.contains(&format!("81:{node_port}/TCP")), "{wide}");
    assert_eq!(k.ok(&["auth", "can-i", "create", "deployments"]).trim(), "yes");
    assert!(k.ok(&["auth", "whoami"]).contains("admin"));

    // An event recorded through events.k8s.io/v1 is a core Event to `kubectl get events`.
    let noted = r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: web.noted}
eventTime: "2026-11-23T00:00:00.000000Z"
reportingController: example.com/noter
reportingInstance: noter-1
action: Noting
reason: Noted
type: Normal
regarding: {kind: Deployment, name: web, namespace: default}
note: the deployment was noted
"#;
    let run = k.stdin(&["create", "-f", "-"], noted);
    assert!(run.ok, "{}", run.stderr);
    let events = k.ok(&["get", "events", "--field-selector", "reason=Noted"]);
    assert!(events.contains("deployment/web") && events.contains("the deployment was noted"), "{events}");
    let seen = k.json(&["get", "events.v1.events.k8s.io", "web.noted"]);
    assert_eq!(seen["note"], "the deployment was noted");

    // Restart: every object survives.
    server.restart();
    let k = server.kubectl(version);
    assert_eq!(k.json(&["get", "cm", "settings"])["data"]["mode"], "slow");
    assert_eq!(k.json(&["get", "deploy", "web"])["spec"]["replicas"], 4);
    let out = k.ok(&["delete", "deployment", "web"]);
    assert!(out.contains("deleted"), "{out}");
    assert!(!k.run(&["get", "deploy", "web"]).ok);
    k.ok(&["delete", "configmap", "settings"]);
}

#[test]
fn kubectl_1_33_drives_the_server() {
    let mut server = TestServer::start();
    scenarios(&mut server, "");
    server.stop();
}

#[test]
fn kubectl_1_28_drives_the_server() {
    let mut server = TestServer::start();
    scenarios(&mut server, "1.28");
    server.stop();
}

#[test]
fn requests_authenticate_by_certificate_or_token() {
    let server = TestServer::start_with(|dir| {
        let tokens = common::write(dir, "tokens.csv", "s3cret,alice,u-1,\"dev,ops\"\n");
        vec!["--token-auth-file".into(), tokens.display().to_string()]
    });
    let kubectl = |config: &std::path::Path, args: &[&str]| {
        std::process::Command::new(common::kubectl_binary("1.33"))
            .arg("--kubeconfig")
            .arg(config)
            .args(args)
            .output()
            .unwrap()
    };
    let run = kubectl(&token_kubeconfig(&server, "wrong"), &["get", "namespaces"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("You must be logged in") || stderr.contains("provide credentials"), "{stderr}");

    let run = kubectl(&token_kubeconfig(&server, "s3cret"), &["auth", "whoami", "-o", "json"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    // kubectl 1.33 sends this review as protobuf: accepted once protobuf bodies are.
    if run.status.success() {
        let review: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(review["status"]["userInfo"]["username"], "alice");
    }
    // Authenticated, but not yet authorized to read anything.
    let run = kubectl(&token_kubeconfig(&server, "s3cret"), &["get", "ns", "default", "-o", "name"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("Error from server (Forbidden): namespaces \"default\" is forbidden: User \"alice\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"default\""),
        "{stderr}"
    );

    // The admin kubeconfig works as it is.
    let k: Kubectl = server.kubectl("1.33");
    assert!(k.ok(&["get", "ns", "default", "-o", "name"]).contains("namespace/default"));
}

/// Retries `args` until the user is allowed them: a new binding takes effect as soon as
/// the server has applied it, within moments.
fn until_allowed(who: &Kubectl, args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !who.run(args).ok {
        assert!(Instant::now() < deadline, "never allowed: {args:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// RBAC end to end: the bootstrap roles, a RoleBinding of `view` and one of `edit` to a
/// group, kube's 403 wording, and `kubectl auth can-i` (with `--list`) answered from
/// the same policy. Nothing a refused request asked for is stored.
#[test]
fn rbac_keeps_users_to_their_roles() {
    let server = TestServer::start_with(|dir| {
        let tokens = common::write(dir, "tokens.csv", "v1ew,vera,u-1,\"auditors\"\ned1t,ed,u-2,\"devs\"\n");
        let audit = dir.join("audit").join("audit.log");
        vec![
            "--token-auth-file".into(),
            tokens.display().to_string(),
            "--audit-log-path".into(),
            audit.display().to_string(),
        ]
    });
    let admin: Kubectl = server.kubectl("1.33");
    let vera = admin.as_user(token_kubeconfig(&server, "v1ew"), "vera");
    let ed = admin.as_user(token_kubeconfig(&server, "ed1t"), "ed");
    admin.ok(&["create", "namespace", "team"]);
    admin.ok(&["-n", "team", "create", "configmap", "settings", "--from-literal=a=1"]);
    // Bootstrap roles exist, aggregated as kube aggregates them.
    let view = admin.json(&["get", "clusterrole", "view"]);
    assert_eq!(
        view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]
            ["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert!(admin
        .ok(&["get", "clusterrolebindings", "-o", "name"])
        .contains("clusterrolebinding.rbac.authorization.k8s.io/system:kube-scheduler"));

    let forbidden = vera.run(&["-n", "team", "get", "configmaps"]);
    assert!(!forbidden.ok);
    assert!(
        forbidden.stderr.contains("configmaps is forbidden: User \"vera\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"team\""),
        "{}",
        forbidden.stderr
    );
    admin.ok(&["-n", "team", "create", "rolebinding", "auditors-view", "--clusterrole=view", "--group=auditors"]);
    admin.ok(&["-n", "team", "create", "rolebinding", "devs-edit", "--clusterrole=edit", "--group=devs"]);
    // The policy follows the bindings within moments (it is rebuilt as they are applied).
    until_allowed(&vera, &["-n", "team", "get", "configmaps"]);
    assert!(vera.ok(&["-n", "team", "get", "configmap", "settings", "-o", "name"]).contains("configmap/settings"));
    let delete = vera.run(&["-n", "team", "delete", "configmap", "settings"]);
    assert!(
        delete.stderr.contains("Error from server (Forbidden): configmaps \"settings\" is forbidden: User \"vera\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"team\""),
        "{}",
        delete.stderr
    );
    let create = vera.run(&["-n", "team", "create", "configmap", "sneaky", "--from-literal=a=1"]);
    assert!(create.stderr.contains("cannot create resource \"configmaps\""), "{}", create.stderr);
    assert!(
        !admin.ok(&["-n", "team", "get", "configmaps", "-o", "name"]).contains("sneaky"),
        "a refused create stores nothing"
    );
    // Secrets are not in view; another namespace is not covered; the cluster scope neither.
    assert!(vera.run(&["-n", "team", "get", "secrets"]).stderr.contains("cannot list resource \"secrets\""));
    assert!(vera.run(&["-n", "default", "get", "configmaps"]).stderr.contains("in the namespace \"default\""));
    assert!(vera
        .run(&["get", "nodes"])
        .stderr
        .contains("cannot list resource \"nodes\" in API group \"\" at the cluster scope"));

    // can-i, from the same policy.
    let can = |who: &Kubectl, args: &[&str]| who.run(&[&["auth", "can-i"], args].concat()).stdout.trim().to_string();
    assert_eq!(can(&vera, &["get", "pods", "-n", "team"]), "yes");
    assert_eq!(can(&vera, &["delete", "pods", "-n", "team"]), "no");
    assert_eq!(can(&ed, &["delete", "pods", "-n", "team"]), "yes");
    assert_eq!(can(&ed, &["create", "pods/exec", "-n", "team"]), "yes");
    assert_eq!(can(&ed, &["create", "rolebindings", "-n", "team"]), "no");
    assert_eq!(can(&admin, &["delete", "nodes"]), "yes");
    let list = vera.ok(&["auth", "can-i", "--list", "-n", "team"]);
    let configmaps = list.lines().find(|l| l.starts_with("configmaps ")).unwrap_or_else(|| panic!("{list}"));
    assert!(configmaps.contains("[get list watch]"), "{configmaps}");
    assert!(list.lines().any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")), "{list}");
    assert!(list.contains("/apis/*"), "discovery paths are listed: {list}");
    // ed edits: the write goes through.
    ed.ok(&["-n", "team", "create", "configmap", "from-ed", "--from-literal=a=1"]);
    ed.ok(&["-n", "team", "delete", "configmap", "from-ed"]);

    // Reviews about others, for delegating components: SubjectAccessReview (and its
    // namespaced form) and TokenReview, which only auth delegators may ask.
    let review = |who: &Kubectl, namespace: &str, body: Value| -> (bool, Value, String) {
        let run = who.stdin(&["-n", namespace, "create", "-f", "-", "-o", "json"], &body.to_string());
        (run.ok, serde_json::from_str(&run.stdout).unwrap_or(Value::Null), run.stderr)
    };
    let sar = |verb: &str| {
        serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "vera", "groups": ["auditors"],
                "resourceAttributes": {"namespace": "team", "verb": verb, "resource": "configmaps"}}})
    };
    let (ok, answer, stderr) = review(&admin, "team", sar("get"));
    assert!(ok, "{stderr}");
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    assert_eq!(review(&admin, "team", sar("delete")).1["status"]["allowed"], false);
    let mut local = sar("list");
    local["kind"] = "LocalSubjectAccessReview".into();
    local["spec"]["resourceAttributes"]["namespace"] = "".into();
    let (_, answer, _) = review(&admin, "team", local.clone());
    assert_eq!(
        (answer["status"]["allowed"].clone(), answer["spec"]["resourceAttributes"]["namespace"].clone()),
        (true.into(), "team".into())
    );
    let (ok, _, stderr) = review(&admin, "default", {
        local["spec"]["resourceAttributes"]["namespace"] = "team".into();
        local
    });
    assert!(!ok && stderr.contains("must match metadata.namespace"), "{stderr}");
    let token_review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": "v1ew"}});
    let (_, answer, _) = review(&admin, "default", token_review.clone());
    assert_eq!(answer["status"]["user"]["username"], "vera", "{answer}");
    // (kubectl lists CRDs to validate a review, which vera may not, as in kube.)
    let refused = vera.stdin(&["create", "--validate=false", "-f", "-"], &token_review.to_string());
    assert!(!refused.ok && refused.stderr.contains("cannot create resource \"tokenreviews\""), "{}", refused.stderr);

    // Every request above is in the audit log, one kube audit Event per line, with
    // who, what and the answer; a Secret's value never is.
    admin.ok(&["-n", "team", "create", "secret", "generic", "vault", "--from-literal=key=s3cr3t-audit-value"]);
    let audit_path = server.data_dir().parent().expect("the temp dir").join("audit").join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let events: Vec<Value> = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        if events.iter().any(|e| e["objectRef"]["name"] == "vault") {
            assert!(!text.contains("s3cr3t-audit-value") && !text.contains("czNjcjN0"), "no Secret value is logged");
            break events;
        }
        assert!(Instant::now() < deadline, "the audit log never showed the secret's create");
        std::thread::sleep(Duration::from_millis(100));
    };
    let found = |user: &str, verb: &str, name: &str, code: u64| {
        events.iter().any(|e| {
            e["user"]["username"] == user
                && e["verb"] == verb
                && e["objectRef"]["name"] == name
                && e["responseStatus"]["code"] == code
                && e["objectRef"]["namespace"] == "team"
        })
    };
    assert!(found("vera", "delete", "settings", 403), "vera's refused delete is audited");
    assert!(found("ed", "delete", "from-ed", 200), "ed's delete is audited");
    assert!(events.iter().all(|e| e["apiVersion"] == "audit.k8s.io/v1" && e["stage"] == "ResponseComplete"));
}

#[test]
fn rbac_writes_grant_no_more_than_their_writer_holds() {
    let server = TestServer::start_with(|dir| {
        let tokens = common::write(dir, "tokens.csv", "4da,ada,u-1,\"leads\"\n");
        vec!["--token-auth-file".into(), tokens.display().to_string()]
    });
    let admin: Kubectl = server.kubectl("1.33");
    let ada = admin.as_user(token_kubeconfig(&server, "4da"), "ada");
    admin.ok(&["create", "namespace", "team"]);
    admin.ok(&["-n", "team", "create", "rolebinding", "leads-admin", "--clusterrole=admin", "--group=leads"]);
    until_allowed(&ada, &["-n", "team", "get", "rolebindings"]);

    // What ada holds in team, ada may grant there.
    ada.ok(&["-n", "team", "create", "rolebinding", "interns-view", "--clusterrole=view", "--group=interns"]);
    ada.ok(&["-n", "team", "create", "role", "pod-deleter", "--verb=delete", "--resource=pods"]);
    // More than that, not: kube's message lists what is missing.
    let grab = ada.run(&["-n", "team", "create", "rolebinding", "grab", "--clusterrole=cluster-admin", "--user=ada"]);
    assert!(
        grab.stderr.contains(
            "rolebindings.rbac.authorization.k8s.io \"grab\" is forbidden: user \"ada\" (groups=[\"leads\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"
        ),
        "{}",
        grab.stderr
    );
    let all_pods = ada.run(&["-n", "team", "create", "role", "pods-all", "--verb=*", "--resource=pods"]);
    assert!(all_pods.stderr.contains("{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"*\"]}"), "{}", all_pods.stderr);
    // Nor by changing a role already there.
    let widen = ada.run(&[
        "-n",
        "team",
        "patch",
        "role",
        "pod-deleter",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/rules/0/resources/-", "value": "nodes"}]"#,
    ]);
    assert!(widen.stderr.contains("Resources:[\"nodes\"], Verbs:[\"delete\"]}"), "{}", widen.stderr);
    let stored = admin.ok(&["-n", "team", "get", "roles,rolebindings", "-o", "name"]);
    assert!(!stored.contains("grab") && !stored.contains("pods-all"), "refused writes store nothing: {stored}");
    let role = admin.json(&["-n", "team", "get", "role", "pod-deleter"]);
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["pods"]));

    // The `bind` verb on a role lets ada bind it without holding it.
    admin.ok(&["create", "clusterrole", "node-deleter", "--verb=delete", "--resource=nodes"]);
    admin.ok(&[
        "create",
        "clusterrole",
        "node-deleter-binder",
        "--verb=bind",
        "--resource=clusterroles",
        "--resource-name=node-deleter",
    ]);
    admin.ok(&["-n", "team", "create", "rolebinding", "ada-binds", "--clusterrole=node-deleter-binder", "--user=ada"]);
    until_allowed(
        &ada,
        &["-n", "team", "create", "rolebinding", "ops-nodes", "--clusterrole=node-deleter", "--group=ops"],
    );
}

/// The claims of a JWT, unverified (the test reads what the server put there).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn service_account_tokens_from_kubectl_create_token() {
    let server = TestServer::start();
    let admin: Kubectl = server.kubectl("1.33");
    admin.ok(&["create", "namespace", "team"]);
    admin.ok(&["-n", "team", "create", "serviceaccount", "builder"]);
    admin.ok(&[
        "-n",
        "team",
        "create",
        "rolebinding",
        "builder-view",
        "--clusterrole=view",
        "--serviceaccount=team:builder",
    ]);
    admin.ok(&["-n", "team", "create", "configmap", "settings", "--from-literal=a=1"]);

    // A token for ten minutes, signed for the API server's audience.
    let token = admin.ok(&["-n", "team", "create", "token", "builder", "--duration=10m"]).trim().to_string();
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], "system:serviceaccount:team:builder");
    assert_eq!(claims["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(claims["aud"], serde_json::json!(["https://kubernetes.default.svc.cluster.local"]));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
    let builder_uid = admin.json(&["-n", "team", "get", "serviceaccount", "builder"])["metadata"]["uid"].clone();
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["uid"], builder_uid);

    // It speaks for the ServiceAccount, with what its bindings give.
    let builder = admin.as_user(token_kubeconfig(&server, &token), "builder");
    until_allowed(&builder, &["-n", "team", "get", "configmap", "settings"]);
    let whoami = builder.ok(&["auth", "whoami", "-o", "json"]);
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(whoami["status"]["userInfo"]["username"], "system:serviceaccount:team:builder");
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        serde_json::json!(["system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"])
    );
    let delete = builder.run(&["-n", "team", "delete", "configmap", "settings"]);
    assert!(
        delete.stderr.contains("User \"system:serviceaccount:team:builder\" cannot delete resource \"configmaps\""),
        "{}",
        delete.stderr
    );

    // kube's limits on lifetimes; an unknown account has no tokens.
    let short = admin.run(&["-n", "team", "create", "token", "builder", "--duration=1m"]);
    assert!(
        short.stderr.contains("TokenRequest.authentication.k8s.io \"builder\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
        "{}",
        short.stderr
    );
    let nobody = admin.run(&["-n", "team", "create", "token", "nobody"]);
    assert!(nobody.stderr.contains("serviceaccounts \"nobody\" not found"), "{}", nobody.stderr);

    // A token for another audience is not for this server.
    let vault = admin.ok(&["-n", "team", "create", "token", "builder", "--audience=vault"]).trim().to_string();
    let refused = admin.as_user(token_kubeconfig(&server, &vault), "vault").run(&["-n", "team", "get", "configmaps"]);
    assert!(refused.stderr.contains("You must be logged in to the server"), "{}", refused.stderr);

    // A token bound to a pod lives as long as the pod.
    admin.ok(&[
        "-n",
        "team",
        "run",
        "web",
        "--image=busybox",
        "--overrides",
        r#"{"spec": {"serviceAccountName": "builder"}}"#,
    ]);
    let bound = admin
        .ok(&["-n", "team", "create", "token", "builder", "--bound-object-kind=Pod", "--bound-object-name=web"])
        .trim()
        .to_string();
    let web_uid = admin.json(&["-n", "team", "get", "pod", "web"])["metadata"]["uid"].clone();
    assert_eq!(jwt_claims(&bound)["kubernetes.io"]["pod"], serde_json::json!({"name": "web", "uid": web_uid}));
    let through_pod = admin.as_user(token_kubeconfig(&server, &bound), "web");
    through_pod.ok(&["-n", "team", "get", "configmap", "settings"]);
    let mismatched =
        admin.run(&["-n", "team", "create", "token", "default", "--bound-object-kind=Pod", "--bound-object-name=web"]);
    assert!(mismatched.stderr.contains("to pod running with different serviceaccount name"), "{}", mismatched.stderr);
    admin.ok(&["-n", "team", "delete", "pod", "web", "--grace-period=0", "--force"]);
    let gone = through_pod.run(&["-n", "team", "get", "configmap", "settings"]);
    assert!(
        gone.stderr.contains("You must be logged in to the server"),
        "the pod's token outlived it: {}",
        gone.stderr
    );

    // Deleting the ServiceAccount revokes its tokens, also when one of that name returns.
    admin.ok(&["-n", "team", "delete", "serviceaccount", "builder"]);
    admin.ok(&["-n", "team", "create", "serviceaccount", "builder"]);
    let revoked = builder.run(&["-n", "team", "get", "configmap", "settings"]);
    assert!(revoked.stderr.contains("You must be logged in to the server"), "{}", revoked.stderr);
}

#[test]
fn nodes_reach_only_their_own_objects() {
    let server = TestServer::start_with(|_| vec!["--no-scheduler".into()]);
    let admin: Kubectl = server.kubectl("1.33");
    let n1 = admin.as_user(server.node_kubeconfig("n1"), "n1");
    let n2 = admin.as_user(server.node_kubeconfig("n2"), "n2");
    let node =
        |name: &str| format!("{{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {{\"name\": \"{name}\"}}}}");
    // A node registers itself, and no other.
    n1.apply(&["create", "-f", "-"], &node("n1"));
    n2.apply(&["create", "-f", "-"], &node("n2"));
    let other = n1.stdin(&["create", "-f", "-"], &node("n3"));
    assert!(
        other.stderr.contains("nodes \"n3\" is forbidden: node \"n1\" is not allowed to modify node \"n3\""),
        "{}",
        other.stderr
    );
    n1.ok(&["label", "node", "n1", "disk=ssd"]);
    assert!(n1.run(&["label", "node", "n2", "disk=ssd"]).stderr.contains("is not allowed to modify node \"n2\""));
    // Its own Lease only.
    let lease = |name: &str| {
        format!("{{\"apiVersion\": \"coordination.k8s.io/v1\", \"kind\": \"Lease\", \"metadata\": {{\"name\": \"{name}\", \"namespace\": \"kube-node-lease\"}}, \"spec\": {{\"holderIdentity\": \"{name}\"}}}}")
    };
    n1.apply(&["create", "-f", "-"], &lease("n1"));
    assert!(!n1.stdin(&["create", "-f", "-"], &lease("n2")).ok);
    n2.apply(&["create", "-f", "-"], &lease("n2"));
    let foreign = n1.run(&["-n", "kube-node-lease", "get", "lease", "n2"]);
    assert!(
        foreign.stderr.contains("can only access node lease with the same name as the requesting node"),
        "{}",
        foreign.stderr
    );

    // A pod on n1 using a Secret and a ConfigMap: n1 may read those, n2 may not; nobody
    // reads what no pod of theirs uses.
    admin.ok(&["create", "namespace", "team"]);
    admin.ok(&["-n", "team", "create", "secret", "generic", "db", "--from-literal=password=hunter2"]);
    admin.ok(&["-n", "team", "create", "secret", "generic", "unused", "--from-literal=x=y"]);
    admin.ok(&["-n", "team", "create", "configmap", "settings", "--from-literal=a=1"]);
    admin.apply(
        &["create", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
              "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
              "envFrom": [{"configMapRef": {"name": "settings"}}]}]}}"#,
    );
    until_allowed(&n1, &["-n", "team", "get", "secret", "db"]);
    n1.ok(&["-n", "team", "get", "configmap", "settings"]);
    let stolen = n2.run(&["-n", "team", "get", "secret", "db"]);
    assert!(
        stolen.stderr.contains("secrets \"db\" is forbidden: User \"system:node:n2\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\": no relationship found between node 'n2' and this object"),
        "{}",
        stolen.stderr
    );
    assert!(n1.run(&["-n", "team", "get", "secret", "unused"]).stderr.contains("no relationship found"));
    assert!(n1.run(&["-n", "team", "get", "secrets"]).stderr.contains("No Object name found"));
    // Tokens only for its pods' ServiceAccounts, bound to those pods.
    let token =
        n1.run(&["-n", "team", "create", "token", "default", "--bound-object-kind=Pod", "--bound-object-name=web"]);
    assert!(token.ok, "{}", token.stderr);
    let unbound = n1.run(&["-n", "team", "create", "token", "default"]);
    assert!(unbound.stderr.contains("node requested token not bound to a pod"), "{}", unbound.stderr);
    assert!(
        !n2.run(&["-n", "team", "create", "token", "default", "--bound-object-kind=Pod", "--bound-object-name=web"]).ok
    );

    // Pod status, deletion and eviction: only for its own pods; no ordinary pods.
    // (PUT on pods/status, as a kubelet writes it: node rules hold no GET of it.)
    let mut pod = admin.json(&["-n", "team", "get", "pod", "web"]);
    pod["status"]["phase"] = "Running".into();
    pod["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    let pod_file = common::write(server.dir.path(), "web.json", &pod.to_string());
    let pod_file = pod_file.to_str().unwrap();
    let put_status = ["replace", "--raw", "/api/v1/namespaces/team/pods/web/status", "-f", pod_file];
    n1.ok(&put_status);
    assert_eq!(admin.json(&["-n", "team", "get", "pod", "web"])["status"]["phase"], "Running");
    let meddle = n2.run(&put_status);
    assert!(
        meddle.stderr.contains("node \"n2\" can only update pod status for pods with spec.nodeName set to itself"),
        "{}",
        meddle.stderr
    );
    let delete = n2.run(&["-n", "team", "delete", "pod", "web", "--wait=false"]);
    assert!(
        delete.stderr.contains("node \"n2\" can only delete pods with spec.nodeName set to itself"),
        "{}",
        delete.stderr
    );
    let create = n1.stdin(&["create", "-f", "-"], r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sneaky", "namespace": "team"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}"#);
    assert!(create.stderr.contains("can only create mirror pods"), "{}", create.stderr);
    // A mirror pod of its own it may create, and admission treats it as any pod's
    // create (NodeRestriction reads it first).
    let mirror = n1.stdin(&["create", "-f", "-"], r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "static-n1", "namespace": "team", "annotations": {"kubernetes.io/config.mirror": "x"}}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}"#);
    assert!(mirror.ok, "{}", mirror.stderr);
    let mirror = admin.json(&["-n", "team", "get", "pod", "static-n1"]);
    assert_eq!(mirror["status"]["phase"], "Pending");
    assert_eq!(mirror["spec"]["priority"], 0);
    assert_eq!(mirror["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
    assert!(n1.run(&["-n", "team", "create", "deployment", "d", "--image=busybox"]).stderr.contains("forbidden"));
    // Moving the pod moves what each node may read.
    admin.ok(&["-n", "team", "delete", "pod", "web", "--grace-period=0", "--force"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while n1.run(&["-n", "team", "get", "secret", "db"]).ok {
        assert!(Instant::now() < deadline, "n1 still reads the secret of a pod it no longer runs");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether any file under `dir` holds `needle`.
fn found_in_files(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            found_in_files(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut server = TestServer::start();
    let admin: Kubectl = server.kubectl("1.33");
    let key_dir = server.dir.path().to_path_buf();
    let keys = |lines: &[(&str, u8)]| {
        let text: String = lines.iter().map(|(name, fill)| format!("{name}:{}\n", b64(&[*fill; 32]))).collect();
        let path = common::write(&key_dir, "encryption.keys", &text);
        vec!["--encryption-key-file".to_string(), path.display().to_string()]
    };
    // Without a key file, a Secret is stored as it is: the search below can find it.
    admin.ok(&["create", "secret", "generic", "early", "--from-literal=password=EarlyPlainValue"]);
    assert!(found_in_files(&server.data_dir(), b64(b"EarlyPlainValue").as_bytes()), "the control: plain at rest");

    server.restart_with(keys(&[("k1", 1)]));
    admin.ok(&["create", "secret", "generic", "db", "--from-literal=password=Sup3rS3cretValue"]);
    admin.ok(&["create", "configmap", "notes", "--from-literal=note=PlainConfigValue"]);
    let read = |name: &str| admin.ok(&["get", "secret", name, "-o", "jsonpath={.data.password}"]);
    assert_eq!(read("db"), b64(b"Sup3rS3cretValue"));
    assert_eq!(read("early"), b64(b"EarlyPlainValue"), "what was stored before still reads");
    for needle in [b64(b"Sup3rS3cretValue"), "Sup3rS3cretValue".to_string()] {
        assert!(!found_in_files(&server.data_dir(), needle.as_bytes()), "{needle} is at rest in clear");
    }
    assert!(found_in_files(&server.data_dir(), b"PlainConfigValue"), "only Secrets are sealed");
    assert!(found_in_files(&server.data_dir(), b"k8s:enc:aesgcm:v1:k1:"));

    // Rotation, as kube's: the new key first, every Secret rewritten, the old key dropped.
    server.restart_with(keys(&[("k2", 2), ("k1", 1)]));
    assert_eq!(read("db"), b64(b"Sup3rS3cretValue"));
    let all = admin.ok(&["get", "secrets", "-o", "json"]);
    admin.apply(&["replace", "-f", "-"], &all);
    server.restart_with(keys(&[("k2", 2)]));
    assert_eq!(read("db"), b64(b"Sup3rS3cretValue"));
    assert_eq!(read("early"), b64(b"EarlyPlainValue"));
    assert!(found_in_files(&server.data_dir(), b"k8s:enc:aesgcm:v1:k2:"));
    server.stop();
}

#[test]
fn anonymous_requests_are_refused_unless_anonymous_auth_is_on() {
    // A client with no credentials at all (kubectl would prompt for a password).
    let get = |server: &TestServer, path: &str| -> (String, String) {
        let output = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(server.data_dir().join("pki/ca.crt"))
            .arg(format!("https://127.0.0.1:{}{path}", server.port))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (code.to_string(), body.to_string())
    };
    let server = TestServer::start();
    assert_eq!(get(&server, "/api/v1/namespaces").0, "401");

    let server = TestServer::start_with(|_| vec!["--anonymous-auth".into()]);
    // system:anonymous in system:unauthenticated: the public paths, and nothing else.
    let (code, body) = get(&server, "/version");
    assert_eq!(code, "200", "{body}");
    let (code, body) = get(&server, "/api/v1/namespaces");
    assert_eq!(code, "403", "{body}");
    assert!(body.contains(r#"User \"system:anonymous\" cannot list resource \"namespaces\""#), "{body}");
}

fn pod_manifest(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: app\n    image: web\n    resources: {resources}\n"
    )
}

/// LimitRanger and ResourceQuota admission with kubectl: defaults filled in and noted,
/// a limit above the range's maximum refused, creates past a quota refused with kube's
/// message and nothing stored, each admitted create charged to `status.used` at once,
/// and room given back once the quota's controller sees a pod go.
#[test]
fn limit_ranges_and_quotas_bound_what_a_namespace_takes() {
    let server = TestServer::start();
    let admin = server.kubectl("1.33");
    admin.ok(&["create", "namespace", "team"]);
    admin.apply(
        &["-n", "team", "apply", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: sizes\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 250m}\n    max: {cpu: '1'}\n",
    );
    // The stored range has kube's defaults: the memory request from the memory limit.
    let range = admin.json(&["-n", "team", "get", "limitrange", "sizes"]);
    assert_eq!(range["spec"]["limits"][0]["defaultRequest"]["memory"], "256Mi", "{range}");
    admin.ok(&["-n", "team", "create", "quota", "compute", "--hard=pods=2,requests.cpu=1,limits.memory=1Gi"]);
    admin.ok(&["-n", "team", "create", "quota", "objects", "--hard=services=1,services.nodeports=0"]);
    for quota in ["compute", "objects"] {
        common::eventually(&admin, &["-n", "team", "get", "quota", quota], "the quota measured", |q| {
            let hard = q["spec"]["hard"].as_object()?.len();
            q["status"]["used"].as_object().filter(|u| u.len() == hard).map(|_| ())
        });
    }

    admin.apply(&["-n", "team", "apply", "-f", "-"], &pod_manifest("a", "{}"));
    let a = admin.json(&["-n", "team", "get", "pod", "a"]);
    assert_eq!(
        a["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
    );
    assert_eq!(a["spec"]["containers"][0]["resources"]["requests"]["cpu"], "250m");
    assert_eq!(a["spec"]["containers"][0]["resources"]["limits"]["memory"], "256Mi");
    // Charged at admission, before the controller recounts.
    let compute = admin.json(&["-n", "team", "get", "quota", "compute"]);
    assert_eq!(compute["status"]["used"]["pods"], "1", "{compute}");
    assert_eq!(compute["status"]["used"]["requests.cpu"], "250m", "{compute}");

    let too_big = admin.stdin(&["-n", "team", "apply", "-f", "-"], &pod_manifest("big", "{limits: {cpu: '2'}}"));
    assert!(
        too_big.stderr.contains("pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"),
        "{}",
        too_big.stderr
    );
    let greedy = admin.stdin(&["-n", "team", "apply", "-f", "-"], &pod_manifest("greedy", "{limits: {cpu: 800m}}"));
    assert!(
        greedy.stderr.contains("pods \"greedy\" is forbidden: exceeded quota: compute, requested: requests.cpu=800m, used: requests.cpu=250m, limited: requests.cpu=1"),
        "{}",
        greedy.stderr
    );
    admin.apply(&["-n", "team", "apply", "-f", "-"], &pod_manifest("b", "{}"));
    let third = admin.stdin(&["-n", "team", "apply", "-f", "-"], &pod_manifest("c", "{}"));
    assert!(
        third.stderr.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"c\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{}",
        third.stderr
    );
    admin.ok(&["-n", "team", "create", "service", "clusterip", "one", "--tcp=80"]);
    let second = admin.run(&["-n", "team", "create", "service", "clusterip", "two", "--tcp=80"]);
    assert!(
        second.stderr.contains("services \"two\" is forbidden: exceeded quota: objects, requested: services=1, used: services=1, limited: services=1"),
        "{}",
        second.stderr
    );
    // A claim is bounded when it is created and when it asks for more.
    admin.apply(
        &["-n", "team", "apply", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: claims\nspec:\n  limits:\n  - type: PersistentVolumeClaim\n    max: {storage: 1Gi}\n",
    );
    admin.apply(
        &["-n", "team", "apply", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 512Mi}}\n",
    );
    let grown = admin.run(&[
        "-n",
        "team",
        "patch",
        "pvc",
        "data",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ]);
    assert!(
        grown.stderr.contains("persistentvolumeclaims \"data\" is forbidden: maximum storage usage per PersistentVolumeClaim is 1Gi, but request is 2Gi"),
        "{}",
        grown.stderr
    );

    // An update is charged what it adds: the Service may not become a NodePort.
    let exposed = admin.run(&["-n", "team", "patch", "service", "one", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    assert!(
        exposed.stderr.contains("services \"one\" is forbidden: exceeded quota: objects, requested: services.nodeports=1, used: services.nodeports=0, limited: services.nodeports=0"),
        "{}",
        exposed.stderr
    );
    assert_eq!(admin.json(&["-n", "team", "get", "service", "one"])["spec"]["type"], "ClusterIP");
    let pods = admin.ok(&["-n", "team", "get", "pods", "-o", "name"]);
    assert_eq!(pods.lines().collect::<Vec<_>>(), ["pod/a", "pod/b"], "refused creates store nothing");
    assert!(!admin.ok(&["-n", "team", "get", "services", "-o", "name"]).contains("two"));

    // A pod that goes gives its share back once the controller recounts.
    admin.ok(&["-n", "team", "delete", "pod", "a", "--grace-period=0", "--force"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !admin.stdin(&["-n", "team", "apply", "-f", "-"], &pod_manifest("c", "{}")).ok {
        assert!(Instant::now() < deadline, "the quota never gave room back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// PodSecurity by namespace label with kubectl: the enforced level refuses a pod in
/// kube's words and stores nothing, the warned level warns, a workload's template is
/// warned about, and a namespace without labels admits anything.
#[test]
fn pod_security_levels_follow_namespace_labels() {
    let server = TestServer::start_with(|dir| {
        vec!["--audit-log-path".into(), dir.join("audit").join("audit.log").display().to_string()]
    });
    let admin = server.kubectl("1.33");
    admin.ok(&["create", "namespace", "locked"]);
    admin.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=baseline",
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/audit=restricted",
    ]);
    let privileged = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: root\nspec:\n  containers:\n  - name: app\n    image: web\n    securityContext: {privileged: true}\n";
    let refused = admin.stdin(&["-n", "locked", "apply", "-f", "-"], privileged);
    assert!(
        refused.stderr.contains("pods \"root\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"app\" must not set securityContext.privileged=true)"),
        "{}",
        refused.stderr
    );
    assert!(!admin.ok(&["-n", "locked", "get", "pods", "-o", "name"]).contains("root"), "nothing stored");

    let bare = admin.run(&["-n", "locked", "run", "bare", "--image=web"]);
    assert!(bare.ok, "{}", bare.stderr);
    assert!(
        bare.stderr.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"bare\" must set securityContext.allowPrivilegeEscalation=false)"),
        "{}",
        bare.stderr
    );
    let deployment =
        admin.run(&["-n", "locked", "create", "deployment", "net", "--image=web", "--dry-run=client", "-o", "json"]);
    let mut deployment: Value = serde_json::from_str(&deployment.stdout).expect("a deployment");
    deployment["spec"]["template"]["spec"]["hostNetwork"] = true.into();
    let created = admin.stdin(&["-n", "locked", "create", "-f", "-"], &deployment.to_string());
    assert!(created.ok, "{}", created.stderr);
    assert!(
        created
            .stderr
            .contains("Warning: would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"),
        "{}",
        created.stderr
    );
    // No labels: privileged.
    admin.ok(&["create", "namespace", "open"]);
    admin.apply(&["-n", "open", "apply", "-f", "-"], privileged);

    // Once the namespace enforces baseline, an update that changes what the pod runs
    // is judged again; one that only labels it is not.
    admin.ok(&["label", "namespace", "open", "pod-security.kubernetes.io/enforce=baseline"]);
    admin.ok(&["-n", "open", "label", "pod", "root", "tier=db"]);
    let reimaged = admin.run(&["-n", "open", "set", "image", "pod/root", "app=web:2"]);
    assert!(
        !reimaged.ok
            && reimaged.stderr.contains("pods \"root\" is forbidden: violates PodSecurity \"baseline:latest\""),
        "{}",
        reimaged.stderr
    );

    // The audit log records the level each pod was judged at, and what the audited
    // level (restricted) found wrong with the bare pod.
    let audit_path = server.data_dir().parent().expect("the temp dir").join("audit").join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let created_bare = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        let found = text.lines().map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")).find(|e| {
            e["verb"] == "create" && e["objectRef"]["resource"] == "pods" && e["objectRef"]["name"] == "bare"
        });
        if let Some(event) = found {
            break event;
        }
        assert!(Instant::now() < deadline, "the audit log never showed the bare pod's create");
        std::thread::sleep(Duration::from_millis(100));
    };
    let annotations = &created_bare["annotations"];
    assert_eq!(annotations["pod-security.kubernetes.io/enforce-policy"], "baseline:latest", "{annotations}");
    let violations = annotations["pod-security.kubernetes.io/audit-violations"].as_str().unwrap_or("");
    assert!(
        violations.starts_with("would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"),
        "{annotations}"
    );
}
