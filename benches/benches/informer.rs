//! The scheduler's watch, per pod event: decoding one watch line of a pod shaped like
//! `loadgen scheduling`'s (scheduler_perf's SchedulingBasic pod after admission: the
//! defaulted fields, the projected API access volume and its mounts, the create's
//! managed fields) as the scheduler's informer does (`WatchedPod`: only the fields the
//! scheduler reads), beside the full `k8s-openapi` decode.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keelson_agents::kube::core::WatchEvent;
use keelson_agents::scheduling::watched_pod::WatchedPod;
use keelson_engine::k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use std::hint::black_box;

/// A watch line (`ADDED`) of a pending SchedulingBasic pod as the server stores it.
fn watch_line() -> Vec<u8> {
    let container = json!({"name": "pause", "image": "registry.k8s.io/pause:3.10",
        "imagePullPolicy": "IfNotPresent", "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}, "limits": {"cpu": "100m", "memory": "500Mi"}},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]});
    let fields = json!({"f:metadata": {"f:annotations": {".": {}, "f:keelson.io/sent-us": {}}},
        "f:spec": {"f:containers": {"k:{\"name\":\"pause\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {},
            "f:name": {}, "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {},
                "f:containerPort": {}, "f:protocol": {}}}, "f:resources": {".": {}, "f:limits": {".": {}, "f:cpu": {},
                "f:memory": {}}, "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
            "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
            "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {},
            "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}});
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pod-004711", "namespace": "sched-bench", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "resourceVersion": "123456", "creationTimestamp": "2026-11-24T00:00:00Z",
            "annotations": {"keelson.io/sent-us": "1795478400000000"},
            "managedFields": [{"manager": "reqwest", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-24T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields}]},
        "spec": {"containers": [container], "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "serviceAccountName": "default", "serviceAccount": "default",
            "securityContext": {}, "schedulerName": "default-scheduler", "priority": 0,
            "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}]},
        "status": {"phase": "Pending", "qosClass": "Guaranteed"}});
    // As the server frames it: the type first, so the event decodes in one pass.
    let mut line = br#"{"type":"ADDED","object":"#.to_vec();
    line.extend_from_slice(&serde_json::to_vec(&pod).unwrap());
    line.push(b'}');
    line
}

fn pod_event(c: &mut Criterion) {
    let line = watch_line();
    let text = std::str::from_utf8(&line).unwrap();
    let mut group = c.benchmark_group("watch_pod_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("scheduler", |b| {
        b.iter(|| serde_json::from_str::<WatchEvent<WatchedPod>>(black_box(text)).unwrap())
    });
    group.bench_function("full_pod", |b| b.iter(|| serde_json::from_str::<WatchEvent<Pod>>(black_box(text)).unwrap()));
    group.finish();
}

criterion_group!(benches, pod_event);
criterion_main!(benches);
