//! End to end: `keelson agent --runtime hollow` against a real `keelson server`, seen
//! through the real kubectl. Nodes register Ready with their Leases, the Leases are
//! renewed while the agent runs and go stale once it stops, pods bound to the nodes go
//! Running (or Succeeded when asked), deletions complete, and a restarted agent takes
//! its nodes and running pods back. A node joins with a bootstrap token and renews its
//! own certificate while it runs.

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

/// TLS bootstrap end to end: an agent with only a bootstrap token and the CA joins.
/// It asks for its node's certificate; the approver approves (after a
/// SubjectAccessReview) and the signer issues it; the agent writes its own kubeconfig
/// and registers as `system:node:NAME`. The token can do nothing but ask, a restart
/// reuses the written credentials, and a deleted token no longer authenticates.
/// A bootstrap token (its Secret in kube-system); returns the token.
fn bootstrap_token(kubectl: &Kubectl) -> &'static str {
    kubectl.ok(&[
        "-n",
        "kube-system",
        "create",
        "secret",
        "generic",
        "bootstrap-token-abcdef",
        "--type=bootstrap.kubernetes.io/token",
        "--from-literal=token-id=abcdef",
        "--from-literal=token-secret=0123456789abcdef",
        "--from-literal=usage-bootstrap-authentication=true",
    ]);
    "abcdef.0123456789abcdef"
}

/// A hollow node `node` that joins with `token`, keeping its credentials under `root`.
fn join(server: &TestServer, root: &std::path::Path, node: &str, token: &str) -> AgentProcess {
    let ca = server.data_dir().join("pki").join("ca.crt");
    let url = format!("https://127.0.0.1:{}", server.port);
    let (root, node, token) = (root.to_path_buf(), node.to_string(), token.to_string());
    AgentProcess::start(
        move |command| {
            command.args(["--runtime", "hollow", "--node-name", &node, "--token", &token, "--server", &url]);
            command.arg("--certificate-authority").arg(&ca).arg("--root-dir").arg(&root);
            command.args(["--lease-renew-seconds", "1"]);
        },
        Duration::from_secs(120),
    )
}

#[test]
fn a_bootstrap_token_joins_a_node_with_its_own_certificate() {
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let token = bootstrap_token(&kubectl);
    let root = tempfile::tempdir().expect("a temp dir");
    let join = |root: &std::path::Path| join(&server, root, "joiner", token);
    let agent = join(root.path());

    // The node registered under its own name, with a certificate the controllers issued.
    let node = kubectl.json(&["get", "node", "joiner"]);
    assert_eq!(node["metadata"]["name"], "joiner");
    let csrs = kubectl.json(&["get", "csr"]);
    let csr = &csrs["items"][0];
    assert_eq!(csrs["items"].as_array().unwrap().len(), 1, "{csrs}");
    assert_eq!(csr["spec"]["username"], "system:bootstrap:abcdef");
    assert_eq!(csr["spec"]["signerName"], "kubernetes.io/kube-apiserver-client-kubelet");
    let approved = &csr["status"]["conditions"][0];
    assert_eq!((approved["type"].as_str(), approved["reason"].as_str()), (Some("Approved"), Some("AutoApproved")));
    assert!(csr["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()));
    let table = kubectl.ok(&["get", "csr"]);
    assert!(
        table.contains("kubernetes.io/kube-apiserver-client-kubelet   system:bootstrap:abcdef   <none>              Approved,Issued"),
        "{table}"
    );
    let written = root.path().join("kubelet.kubeconfig");
    let node_kubectl = kubectl.as_user(written.clone(), "joiner");
    assert_eq!(
        node_kubectl.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]),
        "system:node:joiner"
    );
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&written).unwrap().permissions()) & 0o777,
        0o600
    );

    // The token asks for certificates and nothing else.
    let as_token = kubectl.run(&[
        "--token",
        token,
        "--kubeconfig",
        "/dev/null",
        "--server",
        &format!("https://127.0.0.1:{}", server.port),
        "--insecure-skip-tls-verify",
        "get",
        "pods",
    ]);
    assert!(
        as_token.stderr.contains("User \"system:bootstrap:abcdef\" cannot list resource \"pods\""),
        "{}",
        as_token.stderr
    );

    // A restart keeps the node's credentials: no second request.
    agent.stop();
    let agent = join(root.path());
    assert_eq!(kubectl.json(&["get", "csr"])["items"].as_array().unwrap().len(), 1);
    agent.stop();

    // Without its Secret the token is nobody.
    kubectl.ok(&["-n", "kube-system", "delete", "secret", "bootstrap-token-abcdef"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = kubectl.run(&[
            "--token",
            token,
            "--kubeconfig",
            "/dev/null",
            "--server",
            &format!("https://127.0.0.1:{}", server.port),
            "--insecure-skip-tls-verify",
            "get",
            "pods",
        ]);
        if refused.stderr.contains("You must be logged in to the server") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", refused.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_running_agent_renews_its_certificate_before_it_expires() {
    // Certificates live 40 s here; the agent renews its own at 70-90% of that.
    let server = TestServer::start_with(|_| vec!["--cluster-signing-duration=40s".into()]);
    let kubectl = server.kubectl("");
    let token = bootstrap_token(&kubectl);
    let root = tempfile::tempdir().expect("a temp dir");
    let agent = join(&server, root.path(), "rotor", token);
    let joined = std::time::Instant::now();
    let written = root.path().join("kubelet.kubeconfig");
    let first = std::fs::read_to_string(&written).unwrap();

    // The renewal is asked for with the node's own certificate and approved as one.
    let requests = |kubectl: &Kubectl| {
        let csrs = kubectl.json(&["get", "csr"]);
        csrs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["spec"]["username"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let deadline = joined + Duration::from_secs(60);
    while requests(&kubectl).len() < 2 || std::fs::read_to_string(&written).unwrap() == first {
        assert!(std::time::Instant::now() < deadline, "no renewal: {:?}", requests(&kubectl));
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut users = requests(&kubectl);
    users.sort();
    assert_eq!(users, ["system:bootstrap:abcdef", "system:node:rotor"]);
    let node_kubectl = kubectl.as_user(written.clone(), "rotor");
    assert_eq!(node_kubectl.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]), "system:node:rotor");

    // Past the first certificate's end, the agent still renews its Lease: its open
    // connections were made again with the new certificate.
    let past_first = joined + Duration::from_secs(45);
    std::thread::sleep(past_first.saturating_duration_since(std::time::Instant::now()));
    let renewed = || kubectl.json(&["-n", "kube-node-lease", "get", "lease", "rotor"])["spec"]["renewTime"].clone();
    let before = renewed();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while renewed() == before {
        assert!(std::time::Instant::now() < deadline, "the Lease stopped at {before}");
        std::thread::sleep(Duration::from_millis(300));
    }
    agent.stop();
}

/// A key and a certificate request (PEM) for `user` in `group`.
fn certificate_request(user: &str, group: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, user);
    params.distinguished_name.push(rcgen::DnType::OrganizationName, group);
    (key.serialize_pem(), params.serialize_request(&key).expect("a request").pem().expect("PEM"))
}

fn csr_manifest(name: &str, request_pem: &str) -> String {
    use base64::Engine;
    let request = base64::engine::general_purpose::STANDARD.encode(request_pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages: [client auth]\n"
    )
}

/// A user's certificate the way kube's docs issue one: a CSR for the API server's
/// client signer, `kubectl certificate approve`, the signer issues it, and the
/// certificate authenticates. Approving needs `approve` on the signer: a user who may
/// update approvals but not approve for that signer is refused in kube's words.
#[test]
fn kubectl_certificate_approve_issues_a_users_certificate() {
    use base64::Engine;
    let server = TestServer::start();
    let kubectl = server.kubectl("");
    let (key, request) = certificate_request("ada", "devs");
    kubectl.apply(&["apply", "-f", "-"], &csr_manifest("ada", &request));
    let pending = kubectl.ok(&["get", "csr", "ada"]);
    assert!(pending.contains("24h") && pending.contains("Pending"), "{pending}");
    kubectl.ok(&["certificate", "approve", "ada"]);
    let certificate = eventually(&kubectl, &["get", "csr", "ada"], "the certificate", |csr| {
        csr["status"]["certificate"].as_str().filter(|c| !c.is_empty()).map(String::from)
    });
    let pem = base64::engine::general_purpose::STANDARD.decode(certificate).expect("base64");
    let dir = tempfile::tempdir().expect("a temp dir");
    let kubeconfig = dir.path().join("ada.kubeconfig");
    let ca = std::fs::read_to_string(server.data_dir().join("pki").join("ca.crt")).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\nusers:\n- name: ada\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: k\n  context: {{cluster: k, user: ada}}\ncurrent-context: k\n",
            server.port,
            b64(ca.as_bytes()),
            b64(&pem),
            b64(key.as_bytes())
        ),
    )
    .unwrap();
    let ada = kubectl.as_user(kubeconfig, "ada");
    assert_eq!(ada.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]), "ada");

    // Updating approvals is not enough: approving takes `approve` on the signer.
    kubectl.ok(&[
        "create",
        "clusterrole",
        "csr-clerk",
        "--verb=get,list,update",
        "--resource=certificatesigningrequests,certificatesigningrequests/approval",
    ]);
    kubectl.ok(&["create", "clusterrolebinding", "ada-clerk", "--clusterrole=csr-clerk", "--user=ada"]);
    let (_, other) = certificate_request("bob", "devs");
    kubectl.apply(&["apply", "-f", "-"], &csr_manifest("bob", &other));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let run = ada.run(&["certificate", "approve", "bob"]);
        if !run.stderr.contains("cannot get resource") && !run.stderr.contains("cannot update resource") {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "{}", run.stderr);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        refused
            .stderr
            .contains("user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""),
        "{}",
        refused.stderr
    );
    assert!(kubectl.ok(&["get", "csr", "bob"]).contains("Pending"));
}
