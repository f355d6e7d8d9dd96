//! The API's semantics over real HTTPS against an in-process server: status codes and
//! `Status` bodies for bad input, optimistic concurrency, subresources, finalizers,
//! watch with selectors and 410, and overload.

use keelson_api::{Server, ServerConfig};
use keelson_store::{Store, StoreConfig};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

struct Harness {
    base: String,
    http: reqwest::Client,
    anonymous: reqwest::Client,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn client_from_kubeconfig(dir: &std::path::Path, with_identity: bool) -> reqwest::Client {
    let pki = dir.join("pki");
    let ca = std::fs::read(pki.join("ca.crt")).unwrap();
    let mut builder =
        reqwest::Client::builder().use_rustls_tls().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    if with_identity {
        let mut identity = std::fs::read(pki.join("admin.crt")).unwrap();
        identity.extend(std::fs::read(pki.join("admin.key")).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&identity).unwrap());
    }
    builder.build().unwrap()
}

async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_memory(StoreConfig::default()).unwrap();
    let mut config = ServerConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    configure(&mut config);
    let server = Server::bind(config, store.clone()).await.unwrap();
    let base = format!("https://127.0.0.1:{}", server.local_addr().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Harness {
        base,
        http: client_from_kubeconfig(dir.path(), true),
        anonymous: client_from_kubeconfig(dir.path(), false),
        store,
        _dir: dir,
        stop: Some(stop),
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Harness {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = request.send().await.unwrap();
        let code = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap();
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null), headers)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (code, body, _) = self.send(self.http.post(format!("{}{path}", self.base)).json(&body)).await;
        (code, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (code, body, _) = self.send(self.http.get(format!("{}{path}", self.base))).await;
        (code, body)
    }
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "web"}}, "data": {"k": "v"}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn bad_input_gets_a_status_and_stores_nothing() {
    let h = start(|_| {}).await;
    let (code, _, _) = h.send(h.anonymous.get(format!("{}{CMS}", h.base))).await;
    assert_eq!(code, 401);

    assert_eq!(h.post(CMS, configmap("a")).await.0, 201);
    let (code, status) = h.post(CMS, configmap("a")).await;
    assert_eq!((code, status["reason"].as_str()), (409, Some("AlreadyExists")));

    let (code, status) = h.post(CMS, configmap("Bad_Name")).await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(h.get(&format!("{CMS}/Bad_Name")).await.0, 404);
    let generated = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "Bad_"}});
    assert_eq!(h.post(CMS, generated).await.0, 422, "invalid generated names fail at once");
    let generated = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}});
    let (code, made) = h.post(CMS, generated).await;
    assert_eq!(code, 201);
    assert!(made["metadata"]["name"].as_str().unwrap().starts_with("gen-"));

    let huge = json!({"metadata": {"name": "huge"}, "data": {"k": "x".repeat(3 * 1024 * 1024 + 1)}});
    assert_eq!(h.post(CMS, huge).await.0, 413);
    let post_as = |content_type: &'static str, body: &'static [u8]| {
        h.http.post(format!("{}{CMS}", h.base)).header("Content-Type", content_type).body(body.to_vec())
    };
    assert_eq!(h.send(post_as("application/cbor", b"\xa0")).await.0, 415);
    assert_eq!(h.send(post_as("application/vnd.kubernetes.protobuf", b"k8s\0\x0a\xff")).await.0, 400);
    let (code, _, _) = h
        .send(h.http.post(format!("{}{CMS}", h.base)).header("Content-Type", "application/json").body("{not json"))
        .await;
    assert_eq!(code, 400);

    let mut unknown = configmap("u");
    unknown["spec"] = json!({"x": 1});
    let (code, status) = h.post(&format!("{CMS}?fieldValidation=Strict"), unknown.clone()).await;
    assert_eq!(code, 400);
    assert!(status["message"].as_str().unwrap().contains("unknown field \"spec\""), "{status}");
    let (code, _, headers) = h.send(h.http.post(format!("{}{CMS}?fieldValidation=Warn", h.base)).json(&unknown)).await;
    assert_eq!(code, 201);
    assert!(headers.get("warning").unwrap().to_str().unwrap().contains("unknown field"));

    let (code, status) = h.post("/api/v1/namespaces/missing/configmaps", configmap("x")).await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));

    // NamespaceLifecycle: nothing new in a namespace being deleted (a finalizer holds it).
    let doomed = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "doomed", "finalizers": ["example.com/hold"]}});
    assert_eq!(h.post("/api/v1/namespaces", doomed).await.0, 201);
    assert_eq!(h.post("/api/v1/namespaces/doomed/configmaps", configmap("before")).await.0, 201);
    let (code, _, _) = h.send(h.http.delete(format!("{}/api/v1/namespaces/doomed", h.base))).await;
    assert_eq!(code, 200);
    let (code, status) = h.post("/api/v1/namespaces/doomed/configmaps", configmap("after")).await;
    assert_eq!((code, status["reason"].as_str()), (403, Some("Forbidden")), "{status}");
    assert!(status["message"].as_str().unwrap().contains("because it is being terminated"), "{status}");
}

#[tokio::test]
async fn optimistic_concurrency_subresources_and_finalizers() {
    let h = start(|_| {}).await;
    let (_, created) = h.post(CMS, configmap("c")).await;
    let mut stale = created.clone();
    stale["data"]["k"] = json!("v2");
    let (code, _, _) = h.send(h.http.put(format!("{}{CMS}/c", h.base)).json(&stale)).await;
    assert_eq!(code, 200);
    let (code, status, _) = h.send(h.http.put(format!("{}{CMS}/c", h.base)).json(&stale)).await;
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")));

    // Binding sets nodeName once.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    assert_eq!(h.post("/api/v1/namespaces/default/pods", pod).await.0, 201);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    assert_eq!(h.post("/api/v1/namespaces/default/pods/p/binding", binding.clone()).await.0, 201);
    let (code, status) = h.post("/api/v1/namespaces/default/pods/p/binding", binding).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on pods/binding \"p\": pod p is already assigned to node \"n1\""
    );
    // A pod being deleted cannot be bound; a pod that does not exist is not found.
    let held = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    assert_eq!(h.post("/api/v1/namespaces/default/pods", held).await.0, 201);
    let (code, _, _) = h.send(h.http.delete(format!("{}/api/v1/namespaces/default/pods/held", h.base))).await;
    assert_eq!(code, 200);
    let to_n1 = |name: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": "n1"}});
    let (code, status) = h.post("/api/v1/namespaces/default/pods/held/binding", to_n1("held")).await;
    assert_eq!(
        (code, status["message"].as_str()),
        (
            409,
            Some("Operation cannot be fulfilled on pods \"held\": pod is being deleted, cannot be assigned to a host")
        ),
        "{status}"
    );
    assert_eq!(h.post("/api/v1/namespaces/default/pods/nobody/binding", to_n1("nobody")).await.0, 404);
    // A Binding naming another pod's UID or a stale resourceVersion (kube's storage
    // preconditions) binds nothing.
    let (_, fresh) = h
        .post(
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fresh"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .await;
    let mut other_uid = to_n1("fresh");
    other_uid["metadata"]["uid"] = json!("0000-gone");
    let (code, status) = h.post("/api/v1/namespaces/default/pods/fresh/binding", other_uid).await;
    let uid = fresh["metadata"]["uid"].as_str().unwrap();
    let expected = format!("Operation cannot be fulfilled on pods \"fresh\": Precondition failed: UID in precondition: 0000-gone, UID in object meta: {uid}");
    assert_eq!((code, status["message"].as_str()), (409, Some(expected.as_str())), "{status}");
    let mut stale_rv = to_n1("fresh");
    stale_rv["metadata"]["resourceVersion"] = json!("1");
    let (code, status) = h.post("/api/v1/namespaces/default/pods/fresh/binding", stale_rv).await;
    assert_eq!(code, 409, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("Precondition failed: ResourceVersion in precondition: 1,"),
        "{status}"
    );
    let mut exact = to_n1("fresh");
    exact["metadata"]["uid"] = json!(uid);
    exact["metadata"]["resourceVersion"] = fresh["metadata"]["resourceVersion"].clone();
    assert_eq!(h.post("/api/v1/namespaces/default/pods/fresh/binding", exact).await.0, 201);
    let (_, pod) = h.get("/api/v1/namespaces/default/pods/p").await;
    assert_eq!(pod["spec"]["nodeName"], "n1");
    assert_eq!(pod["status"]["phase"], "Pending");
    let scheduled = pod["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled");
    assert_eq!(scheduled.map(|c| c["status"].clone()), Some(json!("True")), "{pod}");
    // A binding to something other than a node is invalid; a dry run changes nothing.
    let other = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    assert_eq!(h.post("/api/v1/namespaces/default/pods", other).await.0, 201);
    let to_pod = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "q"}, "target": {"kind": "Pod", "name": "n1"}});
    let (code, status) = h.post("/api/v1/namespaces/default/pods/q/binding", to_pod).await;
    assert_eq!((code, status["details"]["causes"][0]["field"].clone()), (422, json!("target.kind")), "{status}");
    let binding_q = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "q"}, "target": {"name": "n1"}});
    assert_eq!(h.post("/api/v1/namespaces/default/pods/q/binding?dryRun=All", binding_q).await.0, 201);
    assert_eq!(h.get("/api/v1/namespaces/default/pods/q").await.1["spec"]["nodeName"], json!(null));

    // A PodDisruptionBudget with no disruptions left blocks eviction with 429.
    let mut running = json!({"status": {"phase": "Running"}});
    let (code, _, _) = h
        .send(h.http.put(format!("{}/api/v1/namespaces/default/pods/p/status", h.base)).json(&{
            let (_, mut pod) = h.get("/api/v1/namespaces/default/pods/p").await;
            pod["status"] = running["status"].take();
            pod
        }))
        .await;
    assert_eq!(code, 200);
    let label = r#"{"metadata":{"labels":{"app":"guarded"}}}"#;
    let (code, _, _) = h
        .send(
            h.http
                .patch(format!("{}/api/v1/namespaces/default/pods/p", h.base))
                .header("Content-Type", "application/merge-patch+json")
                .body(label),
        )
        .await;
    assert_eq!(code, 200);
    // `force` belongs to server-side apply only.
    let (code, status, _) = h
        .send(
            h.http
                .patch(format!("{}/api/v1/namespaces/default/pods/p?force=true", h.base))
                .header("Content-Type", "application/merge-patch+json")
                .body(label),
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
    let (_, pod) = h.get("/api/v1/namespaces/default/pods/p").await;
    let managed = pod["metadata"]["managedFields"].as_array().expect("writes record their fields");
    assert!(managed.iter().any(|e| e["subresource"] == "status"), "{managed:?}");
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guard"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}});
    assert_eq!(h.post("/apis/policy/v1/namespaces/default/poddisruptionbudgets", pdb).await.0, 201);
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}});
    let (code, status) = h.post("/api/v1/namespaces/default/pods/p/eviction", eviction.clone()).await;
    assert_eq!((code, status["reason"].as_str()), (429, Some("TooManyRequests")), "{status}");
    assert_eq!(h.get("/api/v1/namespaces/default/pods/p").await.0, 200, "the pod stays");
    // Once the budget allows a disruption, the eviction spends it and the pod goes.
    let allow = r#"{"status":{"disruptionsAllowed":1,"observedGeneration":1,"currentHealthy":1,"desiredHealthy":1,"expectedPods":1}}"#;
    let (code, _, _) = h
        .send(
            h.http
                .patch(format!("{}/apis/policy/v1/namespaces/default/poddisruptionbudgets/guard/status", h.base))
                .header("Content-Type", "application/merge-patch+json")
                .body(allow),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(h.post("/api/v1/namespaces/default/pods/p/eviction", eviction).await.0, 201);
    let (_, guard) = h.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets/guard").await;
    assert_eq!(guard["status"]["disruptionsAllowed"], 0);
    assert!(h.get("/api/v1/namespaces/default/pods/p").await.1["metadata"]["deletionTimestamp"].is_string());

    // A bound pod is deleted gracefully: marked, not removed.
    let (code, _, _) = h.send(h.http.delete(format!("{}/api/v1/namespaces/default/pods/p", h.base))).await;
    assert_eq!(code, 200);
    let (_, pod) = h.get("/api/v1/namespaces/default/pods/p").await;
    assert!(pod["metadata"]["deletionTimestamp"].is_string());

    // Finalizers hold an object until the last is removed.
    let mut held = configmap("held");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    assert_eq!(h.post(CMS, held).await.0, 201);
    h.send(h.http.delete(format!("{}{CMS}/held", h.base))).await;
    let (code, marked) = h.get(&format!("{CMS}/held")).await;
    assert_eq!(code, 200);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (code, _, _) = h
        .send(
            h.http
                .patch(format!("{}{CMS}/held", h.base))
                .header("Content-Type", "application/merge-patch+json")
                .body(r#"{"metadata":{"finalizers":null}}"#),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(h.get(&format!("{CMS}/held")).await.0, 404);

    // Services get a unique ClusterIP, kept across updates and freed on delete.
    let svc = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"port": 80}]}})
    };
    let (code, a) = h.post("/api/v1/namespaces/default/services", svc("a")).await;
    assert_eq!(code, 201);
    let ip = a["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10."), "{ip}");
    let mut taken = svc("b");
    taken["spec"]["clusterIP"] = json!(ip);
    assert_eq!(h.post("/api/v1/namespaces/default/services", taken.clone()).await.0, 422);
    let mut put = a.clone();
    put["spec"].as_object_mut().unwrap().remove("clusterIP");
    put["spec"].as_object_mut().unwrap().remove("clusterIPs");
    let (code, _, _) = h.send(h.http.put(format!("{}/api/v1/namespaces/default/services/a", h.base)).json(&put)).await;
    assert_eq!(code, 200);
    assert_eq!(h.get("/api/v1/namespaces/default/services/a").await.1["spec"]["clusterIP"], ip.as_str());
    h.send(h.http.delete(format!("{}/api/v1/namespaces/default/services/a", h.base))).await;
    assert_eq!(h.post("/api/v1/namespaces/default/services", taken).await.0, 201, "the address was freed");
    let (_, kubernetes) = h.get("/api/v1/namespaces/default/services/kubernetes").await;
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1");

    // Scale and status subresources.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}, "status": {"replicas": 99}});
    let (code, created) = h.post("/apis/apps/v1/namespaces/default/deployments", deployment).await;
    assert_eq!(code, 201);
    assert!(created["status"].get("replicas").is_none(), "clients cannot create status");
    let (_, scale) = h.get("/apis/apps/v1/namespaces/default/deployments/d/scale").await;
    assert_eq!((scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()), (Some("Scale"), Some(1)));
    assert_eq!(scale["status"]["selector"], "app=d");
}

async fn read_events(response: &mut reqwest::Response, count: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut buffer = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.expect("an event in time");
        let Some(chunk) = chunk.unwrap() else { break };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

#[tokio::test]
async fn watch_follows_selectors_and_expires() {
    let h = start(|_| {}).await;
    let (_, list) = h.get(CMS).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut watch = h
        .http
        .get(format!("{}{CMS}?watch=true&labelSelector=app%3Dweb&resourceVersion={rv}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.post(CMS, configmap("w")).await.0, 201);
    let relabel = r#"{"metadata":{"labels":{"app":"db"}}}"#;
    let patch = |body: &'static str| {
        h.http.patch(format!("{}{CMS}/w", h.base)).header("Content-Type", "application/merge-patch+json").body(body)
    };
    assert_eq!(h.send(patch(relabel)).await.0, 200);
    assert_eq!(h.send(patch(r#"{"metadata":{"labels":{"app":"web"}}}"#)).await.0, 200);
    let events = read_events(&mut watch, 3).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "DELETED", "ADDED"], "leaving and re-entering the selector");

    // A watch from a compacted revision gets an ERROR event with a 410 Status.
    h.store.compact(h.store.current_revision()).await.unwrap();
    let mut old = h.http.get(format!("{}{CMS}?watch=true&resourceVersion=1", h.base)).send().await.unwrap();
    let events = read_events(&mut old, 1).await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
}

#[tokio::test]
async fn overload_answers_429_with_retry_after() {
    let h = start(|config| config.max_mutating_requests_inflight = 0).await;
    let (code, status, headers) = h.send(h.http.post(format!("{}{CMS}", h.base)).json(&configmap("x"))).await;
    assert_eq!((code, status["reason"].as_str()), (429, Some("TooManyRequests")));
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    // Reads have their own bound.
    assert_eq!(h.get(CMS).await.0, 200);
}

/// The `items[].metadata.name`s of a list.
fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

async fn metric(h: &Harness, line_start: &str) -> u64 {
    let text = h.http.get(format!("{}/metrics", h.base)).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("no {line_start} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn reads_from_the_watch_cache_are_consistent() {
    let h = start(|_| {}).await;
    // Every write is visible to the next read: the cache waits for the store's revision.
    for i in 0..25 {
        let mut cm = configmap(&format!("c{i:02}"));
        cm["metadata"]["labels"]["parity"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        assert_eq!(h.post(CMS, cm).await.0, 201);
        let (code, got) = h.get(&format!("{CMS}/c{i:02}")).await;
        assert_eq!(code, 200, "{got}");
    }
    let (_, all) = h.get(CMS).await;
    assert_eq!(names(&all).len(), 25);
    let rv = all["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    // Pages: the first from the cache, the rest from the store at the first's revision,
    // even while the collection changes in between.
    let (_, first) = h.get(&format!("{CMS}?limit=10")).await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    assert_eq!(h.post(CMS, configmap("a-late")).await.0, 201);
    let (_, second) = h.get(&format!("{CMS}?limit=10&continue={token}")).await;
    let token = second["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, third) = h.get(&format!("{CMS}?limit=10&continue={token}")).await;
    assert!(third["metadata"].get("continue").is_none(), "{third}");
    let paged: Vec<String> = [&first, &second, &third].iter().flat_map(|p| names(p)).collect();
    assert_eq!(paged, names(&all), "pages are the state at the first page's revision");
    assert_eq!(first["metadata"]["resourceVersion"], third["metadata"]["resourceVersion"]);

    // A selector with a limit: a continue token only when another match follows.
    let (_, odd) = h.get(&format!("{CMS}?labelSelector=parity%3Dodd&limit=12")).await;
    assert_eq!(names(&odd).len(), 12);
    assert!(odd["metadata"].get("continue").is_none(), "12 odd configmaps, no more: {odd}");
    let (_, odd) = h.get(&format!("{CMS}?labelSelector=parity%3Dodd&limit=5")).await;
    assert_eq!(names(&odd), ["c01", "c03", "c05", "c07", "c09"]);
    assert!(odd["metadata"].get("continue").is_some());

    // An update is seen at once; an exact old revision is still the old state.
    let patch = h
        .http
        .patch(format!("{}{CMS}/c00", h.base))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"data":{"k":"changed"}}"#);
    assert_eq!(h.send(patch).await.0, 200);
    assert_eq!(h.get(&format!("{CMS}/c00")).await.1["data"]["k"], "changed");
    let (_, old) = h.get(&format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact")).await;
    assert_eq!(names(&old).len(), 25);
    assert_eq!(old["items"][0]["data"]["k"], "v");
    // resourceVersion=0: any state will do; here the cache is current anyway.
    let (_, any) = h.get(&format!("{CMS}?resourceVersion=0")).await;
    assert_eq!(names(&any).len(), 26);

    // Deleted objects leave the cache with their commit.
    let delete = h.http.delete(format!("{}{CMS}/c01", h.base));
    assert_eq!(h.send(delete).await.0, 200);
    assert_eq!(h.get(&format!("{CMS}/c01")).await.0, 404);
    assert!(metric(&h, "keelson_watch_cache_reads_total{source=\"cache\"}").await > 30);
}

/// A client that lists protobuf first (as Go's typed clients do) gets protobuf objects,
/// lists, Status errors and watch events; one that lists JSON first gets JSON.
#[tokio::test]
async fn protobuf_responses_for_clients_that_ask_first() {
    use keelson_api::protobuf::{decode, decode_watch_event};
    const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf, application/json";
    let h = start(|_| {}).await;
    let ask = |path: &str| h.http.get(format!("{}{path}", h.base)).header("Accept", PROTOBUF_FIRST);
    let (_, list) = h.get(CMS).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut watch = ask(&format!("{CMS}?watch=true&resourceVersion={rv}")).send().await.unwrap();
    assert_eq!(watch.headers()["content-type"], "application/vnd.kubernetes.protobuf;stream=watch");

    // A create answered in protobuf.
    let created = h.http.post(format!("{}{CMS}", h.base)).header("Accept", PROTOBUF_FIRST).json(&configmap("pb"));
    let created = created.send().await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["content-type"], "application/vnd.kubernetes.protobuf");
    let created = decode(&created.bytes().await.unwrap()).unwrap();
    assert_eq!((created["kind"].as_str(), created["data"]["k"].as_str()), (Some("ConfigMap"), Some("v")));

    // GET and LIST agree with JSON.
    let object = ask(&format!("{CMS}/pb")).send().await.unwrap();
    assert_eq!(object.headers()["content-type"], "application/vnd.kubernetes.protobuf");
    let mut object = decode(&object.bytes().await.unwrap()).unwrap();
    let as_json = h.get(&format!("{CMS}/pb")).await.1;
    // The only difference: protobuf cannot tell an empty string from an unset one,
    // and this client sends no User-Agent, so its field manager is "".
    assert_eq!(as_json["metadata"]["managedFields"][0]["manager"], "");
    object["metadata"]["managedFields"][0]["manager"] = json!("");
    assert_eq!(object, as_json);
    let listed = decode(&ask(CMS).send().await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(listed["kind"], "ConfigMapList");
    assert_eq!(listed["items"][0]["metadata"]["name"], "pb");
    // Lists come from the watch cache's memoised encodings: pages and selectors hold.
    assert_eq!(h.post(CMS, configmap("pb2")).await.0, 201);
    let page = decode(&ask(&format!("{CMS}?limit=1")).send().await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(
        (page["items"].as_array().unwrap().len(), page["items"][0]["metadata"]["name"].as_str()),
        (1, Some("pb"))
    );
    let token = page["metadata"]["continue"].as_str().expect("a continue token").to_string();
    let rest = ask(&format!("{CMS}?limit=1&continue={token}")).send().await.unwrap();
    assert_eq!(decode(&rest.bytes().await.unwrap()).unwrap()["items"][0]["metadata"]["name"], "pb2");
    let selected = ask(&format!("{CMS}?fieldSelector=metadata.name%3Dpb2")).send().await.unwrap();
    let selected = decode(&selected.bytes().await.unwrap()).unwrap();
    assert_eq!(selected["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        selected["items"][0]["metadata"]["resourceVersion"],
        h.get(&format!("{CMS}/pb2")).await.1["metadata"]["resourceVersion"]
    );

    // Errors are protobuf Status objects with the same code.
    let missing = ask(&format!("{CMS}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let status = decode(&missing.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str(), status["code"].as_i64()),
        (Some("Status"), Some("NotFound"), Some(404))
    );

    // JSON first still means JSON.
    let json_first = h
        .http
        .get(format!("{}{CMS}/pb", h.base))
        .header("Accept", "application/json, application/vnd.kubernetes.protobuf");
    assert_eq!(json_first.send().await.unwrap().headers()["content-type"], "application/json");

    // The watch saw the create as a length-delimited protobuf event.
    let mut buffer = Vec::new();
    while buffer.len() < 4 || buffer.len() < 4 + u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize {
        let chunk = tokio::time::timeout(Duration::from_secs(10), watch.chunk()).await.expect("an event in time");
        buffer.extend_from_slice(&chunk.unwrap().expect("the stream is open"));
    }
    let len = u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize;
    let (kind, object) = decode_watch_event(&buffer[4..4 + len]).unwrap();
    assert_eq!(kind, "ADDED");
    assert_eq!(object["metadata"]["name"], "pb");
    assert_eq!(object["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
}

/// Metadata-only conversions answer 406 when the response is not the shape asked for,
/// with Kubernetes' message.
#[tokio::test]
async fn partial_object_metadata_of_the_wrong_shape_is_not_acceptable() {
    let h = start(|_| {}).await;
    assert_eq!(h.post(CMS, configmap("a")).await.0, 201);
    let ask = |path: &str, accept: &str| h.http.get(format!("{}{path}", h.base)).header("Accept", accept);
    let object = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1";
    let (code, status, _) = h.send(ask(CMS, object)).await;
    assert_eq!(code, 406);
    assert_eq!(
        status["message"],
        "you requested PartialObjectMetadata, but the requested object is a list (*v1.ConfigMapList)"
    );
    let (code, status, _) = h.send(ask(&format!("{CMS}/a"), list)).await;
    assert_eq!(code, 406);
    assert!(status["message"].as_str().unwrap().contains("is not a list (*v1.ConfigMap)"));
    // The right shapes, in the version asked for.
    let (code, partial, headers) = h.send(ask(&format!("{CMS}/a"), object)).await;
    assert_eq!((code, partial["apiVersion"].as_str()), (200, Some("meta.k8s.io/v1")));
    assert_eq!(headers["content-type"], object);
    assert!(partial.get("data").is_none());
    let (_, listed, _) = h.send(ask(CMS, list)).await;
    assert_eq!(listed["kind"], "PartialObjectMetadataList");
    assert_eq!(listed["items"][0]["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(listed["items"][0]["metadata"]["labels"]["app"], "web");
}

/// events.k8s.io/v1 Events and core v1 Events are one collection seen two ways.
#[tokio::test]
async fn events_api_and_core_events_share_one_storage() {
    const CORE: &str = "/api/v1/namespaces/default/events";
    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
    let h = start(|_| {}).await;
    let (_, list) = h.get(EVENTS).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut watch = h.http.get(format!("{}{EVENTS}?watch=true&resourceVersion={rv}", h.base)).send().await.unwrap();

    // Written through the events API, read as a core Event.
    let noted = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web.noted"},
        "eventTime": "2026-11-23T00:00:00.000000Z", "reportingController": "example.com/noter",
        "reportingInstance": "noter-1", "action": "Noting", "reason": "Noted", "type": "Normal",
        "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"}, "note": "the deployment was noted"});
    let (code, created) = h.post(EVENTS, noted).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        (created["apiVersion"].as_str(), created["note"].as_str()),
        (Some("events.k8s.io/v1"), Some("the deployment was noted"))
    );
    let (code, core) = h.get(&format!("{CORE}/web.noted")).await;
    assert_eq!(code, 200);
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "the deployment was noted");
    assert_eq!(core["involvedObject"]["name"], "web");
    assert_eq!(core["reportingComponent"], "example.com/noter");
    assert!(core.get("note").is_none());
    let (_, by_object) = h.get(&format!("{CORE}?fieldSelector=involvedObject.name%3Dweb")).await;
    assert_eq!(names(&by_object), ["web.noted"]);

    // Written as a core Event, read through the events API and its selectors.
    let core_event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "db.started"},
        "involvedObject": {"kind": "Pod", "name": "db", "namespace": "default"}, "reason": "Started",
        "message": "container started", "type": "Normal", "source": {"component": "kubelet"}, "count": 1,
        "firstTimestamp": "2026-11-23T00:00:00Z", "lastTimestamp": "2026-11-23T00:00:00Z"});
    assert_eq!(h.post(CORE, core_event).await.0, 201);
    let (_, seen) = h.get(&format!("{EVENTS}/db.started")).await;
    assert_eq!((seen["note"].as_str(), seen["regarding"]["name"].as_str()), (Some("container started"), Some("db")));
    assert_eq!(
        (seen["deprecatedCount"].as_i64(), seen["deprecatedSource"]["component"].as_str()),
        (Some(1), Some("kubelet"))
    );
    let (_, selected) = h.get(&format!("{EVENTS}?fieldSelector=regarding.name%3Ddb")).await;
    assert_eq!(names(&selected), ["db.started"]);
    assert_eq!(selected["items"][0]["apiVersion"], "events.k8s.io/v1");

    // The events API's watch sees both writes in its own form.
    let events = read_events(&mut watch, 2).await;
    assert_eq!(events[0]["object"]["note"], "the deployment was noted");
    assert_eq!(events[1]["object"]["note"], "container started");
    assert_eq!(events[1]["object"]["apiVersion"], "events.k8s.io/v1");

    // A patch through the events API changes the core Event; a core delete removes both.
    let patch = h
        .http
        .patch(format!("{}{EVENTS}/web.noted", h.base))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"note":"noted twice"}"#);
    let (code, patched, _) = h.send(patch).await;
    assert_eq!((code, patched["note"].as_str()), (200, Some("noted twice")));
    assert_eq!(h.get(&format!("{CORE}/web.noted")).await.1["message"], "noted twice");
    let deleted = h.http.delete(format!("{}{CORE}/web.noted", h.base));
    assert_eq!(h.send(deleted).await.0, 200);
    assert_eq!(h.get(&format!("{EVENTS}/web.noted")).await.0, 404);
}

#[tokio::test]
async fn what_admission_adds_to_a_pod_belongs_to_no_manager() {
    let h = start(|_| {}).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
    let (code, created) = h.post("/api/v1/namespaces/default/pods", pod).await;
    assert_eq!(code, 201, "{created}");
    let spec = &created["spec"];
    assert!(spec["volumes"][0]["name"].as_str().unwrap().starts_with("kube-api-access-"), "{spec}");
    assert_eq!(spec["containers"][0]["volumeMounts"][0]["mountPath"], "/var/run/secrets/kubernetes.io/serviceaccount");
    assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2), "{spec}");
    assert_eq!(spec["serviceAccountName"], "default");

    // As in kube, the client owns what it sent and what defaulting filled in; the
    // admission plugins' additions are nobody's.
    let managed = &created["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
    for defaulted in ["f:containers", "f:dnsPolicy", "f:restartPolicy", "f:schedulerName"] {
        assert!(managed.get(defaulted).is_some(), "{defaulted} missing from {managed}");
    }
    for added in ["f:volumes", "f:tolerations", "f:serviceAccountName", "f:priority", "f:preemptionPolicy"] {
        assert!(managed.get(added).is_none(), "{added} in {managed}");
    }
    let container = &managed["f:containers"]["k:{\"name\":\"app\"}"];
    assert!(container.get("f:image").is_some() && container.get("f:volumeMounts").is_none(), "{container}");
}

/// Every route of every served resource and subresource, with every method: a request
/// without credentials gets 401, one from a user granted nothing gets 403 (except
/// the self-reviews every authenticated user may create), and nothing is stored.
#[tokio::test]
async fn every_route_refuses_the_unauthenticated_and_the_ungranted_and_stores_nothing() {
    let tokens = tempfile::tempdir().unwrap();
    let token_file = tokens.path().join("tokens.csv");
    std::fs::write(&token_file, "n0b0dy,nobody,u-9\n").unwrap();
    let h = start(|config| config.token_auth_file = Some(token_file.clone())).await;
    // Let the server's own start-up writes settle.
    let mut revision = h.store.current_revision();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = h.store.current_revision();
        if now == revision {
            break;
        }
        revision = now;
    }
    let methods = [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::PATCH];
    let mut checked = 0;
    for info in keelson_api::resources::RESOURCES {
        let base = if info.group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}/{}", info.group, info.version)
        };
        let collection = match info.namespaced {
            true => format!("{base}/namespaces/default/{}", info.plural),
            false => format!("{base}/{}", info.plural),
        };
        let named = format!("{collection}/x");
        let mut routes: Vec<String> = vec![collection.clone(), named.clone()];
        routes.extend(info.subresources.iter().map(|s| format!("{named}/{}", s.name)));
        let body = json!({"apiVersion": info.api_version(), "kind": info.kind,
            "metadata": {"name": "x", "namespace": "default"}});
        for route in &routes {
            for method in methods.iter().chain([&reqwest::Method::DELETE]) {
                let url = format!("{}{route}", h.base);
                let request = |client: &reqwest::Client| {
                    client
                        .request(method.clone(), &url)
                        .header("content-type", "application/merge-patch+json")
                        .body(body.to_string())
                };
                let (code, status, _) = h.send(request(&h.anonymous)).await;
                assert_eq!(code, 401, "{method} {route} without credentials: {status}");
                let (code, status, _) = h.send(request(&h.anonymous).bearer_auth("n0b0dy")).await;
                // Every user may create self-reviews: that is authorized, and answered
                // on its merits (an empty review is invalid; a POST to a name is not
                // allowed), as in kube.
                let self_review = *method == reqwest::Method::POST && info.plural.starts_with("selfsubject");
                if self_review {
                    assert!(![401, 403].contains(&code), "{method} {route} by nobody: {status}");
                } else {
                    assert_eq!(code, 403, "{method} {route} by nobody: {status}");
                    assert_eq!(status["reason"], "Forbidden", "{method} {route}: {status}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "only {checked} requests");
    assert_eq!(h.store.current_revision(), revision, "a refused request stored something");
}

/// A create whose body is clean JSON is decoded straight into its kind; any other body
/// (here the same bytes sent as YAML) takes the general path through a JSON value. Both
/// must store the same object and refuse the same input with the same Status.
#[tokio::test]
async fn typed_creates_store_what_general_creates_store() {
    let h = start(|_| {}).await;
    let post = |path: String, body: Value, yaml: bool| {
        let request = h.http.post(format!("{}{path}", h.base)).query(&[("fieldValidation", "Strict")]);
        let content_type = if yaml { "application/yaml" } else { "application/json" };
        h.send(request.header("Content-Type", content_type).body(body.to_string()))
    };
    // What differs between two creates of one object: identity, time, revision.
    let comparable = |mut object: Value| {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let uid = object["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let metadata = object["metadata"].as_object_mut().unwrap();
        for server_set in ["name", "uid", "creationTimestamp", "resourceVersion"] {
            metadata.remove(server_set);
        }
        for entry in metadata.get_mut("managedFields").and_then(Value::as_array_mut).into_iter().flatten() {
            entry.as_object_mut().unwrap().remove("time");
        }
        let mut text = object.to_string().replace(&name, "NAME").replace(&uid, "UID");
        // The API access volume is named after a random suffix.
        while let Some(at) = text.find("kube-api-access-") {
            text.replace_range(at..at + "kube-api-access-".len() + 5, "KUBE-API-ACCESS");
        }
        text
    };
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "/api/v1/namespaces/default/pods",
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}, "resourceVersion": "",
                "uid": "client-set", "generation": 7, "selfLink": "/x"},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "100m", "memory": "500Mi"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}}),
        ),
        (
            "/api/v1/namespaces/default/events",
            "Event",
            json!({"apiVersion": "v1", "kind": "Event",
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Scheduled",
            "message": "Successfully assigned default/web to n1", "type": "Normal",
            "source": {"component": "default-scheduler"}, "count": 1,
            "firstTimestamp": "2026-11-23T00:00:00Z", "lastTimestamp": "2026-11-23T00:00:00Z"}),
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/default/events",
            "Event",
            json!({"apiVersion": "events.k8s.io/v1",
            "kind": "Event", "eventTime": "2026-11-23T00:00:00.000000Z", "reportingController": "x/y",
            "reportingInstance": "y-1", "action": "Noting", "reason": "Noted", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web", "namespace": "default"}, "note": "noted"}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            "Deployment",
            json!({"apiVersion": "apps/v1",
            "kind": "Deployment", "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
            "status": {"replicas": 3}}),
        ),
        (
            "/api/v1/namespaces",
            "Namespace",
            json!({"apiVersion": "v1", "kind": "Namespace",
            "status": {"phase": "Terminating"}}),
        ),
        (
            "/api/v1/nodes",
            "Node",
            json!({"apiVersion": "v1", "kind": "Node",
            "status": {"capacity": {"cpu": "4"}, "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
        (
            "/api/v1/namespaces/default/persistentvolumeclaims",
            "PersistentVolumeClaim",
            json!({"apiVersion": "v1",
            "kind": "PersistentVolumeClaim", "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Bound"}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            "Job",
            json!({"apiVersion": "batch/v1", "kind": "Job",
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}),
        ),
        ("/api/v1/namespaces/default/configmaps", "ConfigMap", json!({"data": {"k": "v"}})),
    ];
    for (i, (path, kind, object)) in cases.into_iter().enumerate() {
        let mut stored = Vec::new();
        for yaml in [false, true] {
            let mut object = object.clone();
            object["metadata"]["name"] = json!(format!("typed-{i}-{}", if yaml { "general" } else { "json" }));
            let (code, created, _) = post(path.to_string(), object, yaml).await;
            assert_eq!(code, 201, "{kind} (yaml: {yaml}): {created}");
            let name = created["metadata"]["name"].as_str().unwrap();
            let (code, read) = h.get(&format!("{path}/{name}")).await;
            assert_eq!(code, 200);
            assert_eq!(comparable(created), comparable(read.clone()), "{kind}: the create's answer is what was stored");
            stored.push(comparable(read));
        }
        assert_eq!(stored[0], stored[1], "{kind}: typed and general creates differ");
    }

    // A generated name, in both paths.
    let generated = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}});
    for yaml in [false, true] {
        let (code, created, _) = post(CMS.to_string(), generated.clone(), yaml).await;
        let name = created["metadata"]["name"].as_str().unwrap();
        assert_eq!((code, name.len()), (201, "gen-".len() + 5), "{created}");
    }

    // Refusals: the same code and message either way (unknown fields and wrong type
    // meta leave the typed path for the general one, which words them).
    let refused = [
        (CMS, json!({"metadata": {"name": "x", "namespace": "other"}})),
        (CMS, json!({"metadata": {"name": "x", "resourceVersion": "5"}})),
        (CMS, json!({"metadata": {"name": "x"}, "extra": 1})),
        (CMS, json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}})),
        (CMS, json!({"metadata": {"name": "Not_Valid"}})),
        (CMS, json!({"metadata": {"name": "x"}, "data": {"k": 1}})),
        ("/api/v1/namespaces/missing/configmaps", json!({"metadata": {"name": "x"}})),
        ("/api/v1/namespaces/default/pods", json!({"metadata": {"name": "x"}, "spec": {"containers": []}})),
    ];
    for (path, object) in refused {
        let json = post(path.to_string(), object.clone(), false).await;
        let general = post(path.to_string(), object.clone(), true).await;
        assert!(json.0 >= 400, "{object} was accepted: {}", json.1);
        assert_eq!((json.0, &json.1["message"]), (general.0, &general.1["message"]), "{object}");
    }
}
