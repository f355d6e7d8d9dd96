//! API server write-path work per request: recording field ownership
//! (`metadata.managedFields`) on a create and an update, and a server-side apply.

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

criterion_group!(benches, managed_fields);
criterion_main!(benches);
