//! API server work per request: recording field ownership (`metadata.managedFields`)
//! on a create and an update, a server-side apply, and the protobuf codec (a
//! response re-encoded for a client that asks for protobuf; a protobuf body decoded),
//! authorization, `pods/binding`'s edit of a stored pod, and a create's decoding,
//! defaulting and validation (with unknown fields found, as the default
//! `fieldValidation=Warn` asks).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keelson_api::apply::{self, Writer};
use keelson_api::openapi::OpenApi;
use serde_json::{json, Value};
use std::hint::black_box;

fn deployment(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "frontend"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "web", "image": image, "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
                    {"name": "sidecar", "image": "busybox", "args": ["sleep", "3600"]}],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30}}}})
}

fn managed_fields(c: &mut Criterion) {
    let openapi = OpenApi::build();
    let types = &openapi.types;
    let definition = types.kind("apps", "Deployment").expect("deployments have a schema");
    let writer = Writer {
        manager: "kubectl-create",
        api_version: "apps/v1",
        subresource: None,
        has_status: true,
        now: "2026-11-22T00:00:00Z",
    };
    let mut created = deployment("nginx:1");
    apply::record_update(types, definition, &writer, None, &mut created);
    let updated = {
        let mut d = created.clone();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        d
    };

    let mut group = c.benchmark_group("managed_fields");
    group.throughput(Throughput::Elements(1));
    group.bench_function("record_create_deployment", |b| {
        b.iter(|| {
            let mut object = deployment("nginx:1");
            apply::record_update(types, definition, &writer, None, black_box(&mut object));
            object
        })
    });
    group.bench_function("record_update_deployment", |b| {
        b.iter(|| {
            let mut object = updated.clone();
            apply::record_update(types, definition, &writer, Some(black_box(&created)), &mut object);
            object
        })
    });
    group.bench_function("clone_deployment_baseline", |b| b.iter(|| black_box(&updated).clone()));
    let config = deployment("nginx:3");
    let applier = Writer { manager: "ci", ..writer };
    group.bench_function("server_side_apply_deployment", |b| {
        b.iter(|| apply::apply(types, definition, &applier, Some(black_box(&created)), &config, true))
    });
    group.finish();
}

/// A pod as the store holds it after scheduling and a status update.
fn stored_pod() -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d4b9c-x2x9q", "namespace": "default", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "resourceVersion": "123456", "creationTimestamp": "2026-11-23T00:00:00Z", "generateName": "web-7d4b9c-",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                "uid": "6fa459ea-ee8a-3ca4-894e-db77e160355e", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-23T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {
                    "f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}}}}}]},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 80, "scheme": "HTTP"},
                    "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "nodeName": "node-0042", "schedulerName": "default-scheduler",
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "hostIP": "10.0.0.42", "podIP": "10.244.42.7", "podIPs": [{"ip": "10.244.42.7"}],
            "startTime": "2026-11-23T00:00:01Z", "qosClass": "Burstable",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T00:00:00Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-23T00:00:03Z"}],
            "containerStatuses": [{"name": "web", "ready": true, "started": true, "restartCount": 0, "image": "nginx:1.27",
                "imageID": "sha256:3b25b682ea82b2db3cc4fd48db818be788ee3f902ac7378090cf2624ec2442df",
                "containerID": "containerd://4f0c8d", "state": {"running": {"startedAt": "2026-11-23T00:00:02Z"}}}]}}))
    .unwrap()
}

fn protobuf(c: &mut Criterion) {
    let json_bytes = stored_pod();
    let value: Value = serde_json::from_slice(&json_bytes).unwrap();
    let encoded = keelson_api::protobuf::encode(&value).unwrap();
    let mut group = c.benchmark_group("protobuf");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_pod_json_baseline", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&json_bytes)).unwrap())
    });
    group.bench_function("encode_pod", |b| b.iter(|| keelson_api::protobuf::encode(black_box(&value)).unwrap()));
    group.bench_function("transcode_pod_response", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&json_bytes)).unwrap();
            keelson_api::protobuf::encode(&value).unwrap()
        })
    });
    group.bench_function("decode_pod_body", |b| b.iter(|| keelson_api::protobuf::decode(black_box(&encoded)).unwrap()));
    group.finish();
}

/// RBAC decisions with 1,000 RoleBindings in the cluster (issue 8's budget: under
/// 2 µs each). The user holds bindings in 3 of 100 namespaces and one through a group;
/// the denied request is in a namespace where it holds none (every grant is tested).
fn authorization(c: &mut Criterion) {
    use keelson_api::auth::User;
    use keelson_api::authz::rbac::{Objects, Policy};
    use keelson_api::authz::Attributes;
    fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).expect("valid object")
    }
    let verbs = json!(["get", "list", "watch", "create", "update", "patch", "delete"]);
    let cluster_roles: Vec<keelson_engine::k8s_openapi::api::rbac::v1::ClusterRole> = (0..50)
        .map(|i| {
            from(json!({"metadata": {"name": format!("role-{i}")}, "rules": [
                {"apiGroups": [""], "resources": ["configmaps", "secrets", format!("kind{i}")], "verbs": verbs},
                {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
            ]}))
        })
        .collect();
    let binding = |i: usize,
                   namespace: String,
                   subject: Value|
     -> keelson_engine::k8s_openapi::api::rbac::v1::RoleBinding {
        from(json!({"metadata": {"name": format!("binding-{i}"), "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("role-{}", i % 50)},
            "subjects": [subject]}))
    };
    let mut role_bindings: Vec<_> = (0..996)
        .map(|i| binding(i, format!("ns-{}", i % 100), json!({"kind": "User", "name": format!("user-{i}")})))
        .collect();
    for (i, ns) in [(996, "ns-1"), (997, "ns-2"), (998, "ns-3")] {
        role_bindings.push(binding(i, ns.to_owned(), json!({"kind": "User", "name": "jane"})));
    }
    role_bindings.push(binding(999, "ns-4".to_owned(), json!({"kind": "Group", "name": "team"})));
    let policy =
        Policy::build(&Objects { cluster_roles: &cluster_roles, role_bindings: &role_bindings, ..Objects::default() });
    let jane = User::new("jane".into(), String::new(), vec!["team".into()]);
    let allowed = Attributes::resource("list", "", "pods", "ns-3");
    let denied = Attributes::resource("delete", "", "pods", "ns-50");
    assert!(policy.authorize(&jane, &allowed).allowed && !policy.authorize(&jane, &denied).allowed);
    let mut group = c.benchmark_group("authz");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rbac_1000_bindings_allowed", |b| b.iter(|| policy.authorize(&jane, black_box(&allowed))));
    group.bench_function("rbac_1000_bindings_denied", |b| b.iter(|| policy.authorize(&jane, black_box(&denied))));
    // The whole chain a request asks (Node authorizer first, then RBAC).
    let authorizer = keelson_api::authz::Authorizer::default();
    authorizer.publish(policy);
    group
        .bench_function("chain_1000_bindings_allowed", |b| b.iter(|| authorizer.authorize(&jane, black_box(&allowed))));
    // A node reading a Secret its pods use, with 100,000 pods on 5,000 nodes in the graph.
    let pod = |node: usize, i: usize| {
        serde_json::to_vec(
            &json!({"metadata": {"name": format!("p-{node}-{i}"), "namespace": format!("ns-{}", i % 10)},
            "spec": {"nodeName": format!("node-{node}"), "serviceAccountName": "runner",
                "volumes": [{"name": "s", "secret": {"secretName": format!("secret-{i}")}}],
                "containers": [{"name": "c", "image": "web", "envFrom": [{"configMapRef": {"name": "settings"}}]}]}}),
        )
        .expect("JSON")
    };
    for node in 0..5000 {
        for i in 0..20 {
            authorizer
                .graph
                .apply_pod(format!("/registry/pods/ns-{}/p-{node}-{i}", i % 10).as_bytes(), Some(&pod(node, i)));
        }
    }
    let kubelet = User::new("system:node:node-42".into(), String::new(), vec!["system:nodes".into()]);
    let mut secret = Attributes::resource("get", "", "secrets", "ns-9");
    secret.name = "secret-19";
    assert!(authorizer.authorize(&kubelet, &secret).allowed);
    group.bench_function("node_secret_read_100k_pods", |b| {
        b.iter(|| authorizer.authorize(&kubelet, black_box(&secret)))
    });
    group.finish();

    // What the watch cache's applier adds per pod change: the node graph's update.
    let mut graph = c.benchmark_group("node_graph");
    graph.throughput(Throughput::Elements(1));
    // A pod as the server stores it once bound (defaults, managed fields, status).
    let bound = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p-7-3", "namespace": "ns-3", "uid": "6f1c9a2e-0d4b-4c57-9a51-1d2f3e4a5b6c",
            "creationTimestamp": "2026-11-22T00:00:00Z", "labels": {"app": "web", "pod-template-hash": "5d8f"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f",
                "uid": "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-22T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {
                "f:app": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {}}, "f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}, "f:resources": {"f:requests": {
                "f:cpu": {}, "f:memory": {}}}}}}}}]},
        "spec": {"nodeName": "node-7", "containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}, "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
            "serviceAccountName": "default", "securityContext": {}, "terminationGracePeriodSeconds": 30,
            "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300}, {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Pending", "qosClass": "Burstable", "conditions": [{"type": "PodScheduled",
            "status": "True", "lastTransitionTime": "2026-11-22T00:00:01Z"}]}}))
    .expect("JSON");
    graph.bench_function("apply_bound_pod", |b| {
        b.iter(|| authorizer.graph.apply_pod(b"/registry/pods/ns-3/p-7-3", Some(black_box(&bound))))
    });
    let pending = serde_json::to_vec(&json!({"metadata": {"name": "q", "namespace": "ns-1"},
        "spec": {"containers": [{"name": "c", "image": "web"}]}}))
    .expect("JSON");
    graph.bench_function("apply_pending_pod", |b| {
        b.iter(|| authorizer.graph.apply_pod(b"/registry/pods/ns-1/q", Some(black_box(&pending))))
    });
    graph.finish();
}

/// `pods/binding` on a pending pod as stored: the byte edit the server does, against
/// the decode → edit → encode it replaced.
fn binding(c: &mut Criterion) {
    let mut pending: Value = serde_json::from_slice(&stored_pod()).unwrap();
    pending["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    pending["spec"].as_object_mut().unwrap().remove("nodeName");
    pending["status"] = json!({"phase": "Pending", "qosClass": "Burstable"});
    let stored = keelson_api::object::encode(&pending);
    let now = "2026-11-23T00:00:00Z";
    let mut group = c.benchmark_group("binding");
    group.throughput(Throughput::Elements(1));
    group.bench_function("edit_stored_pod", |b| {
        b.iter(|| keelson_api::binding::bind_stored(black_box(&stored), "node-0042", now, None).unwrap())
    });
    group.bench_function("decode_edit_encode_baseline", |b| {
        b.iter(|| {
            let old: Value = serde_json::from_slice(black_box(&stored)).unwrap();
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!("node-0042");
            new["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": now}]);
            keelson_api::object::encode(&new)
        })
    });
    group.finish();
}

fn admission(c: &mut Criterion) {
    use keelson_api::kinds::{KindCodec, Write, POD};
    let stored: Value = serde_json::from_slice(&stored_pod()).unwrap();
    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));
    group.bench_function("admit_pod_finding_unknown_fields", |b| {
        b.iter(|| {
            let mut unknown = Vec::new();
            let admitted = POD.admit(black_box(&stored), Write::Create, Some(&mut unknown)).unwrap();
            assert!(unknown.is_empty());
            admitted
        })
    });
    group.bench_function("admit_pod", |b| b.iter(|| POD.admit(black_box(&stored), Write::Create, None).unwrap()));
    group.finish();
}

criterion_group!(benches, managed_fields, protobuf, authorization, binding, admission);
criterion_main!(benches);
