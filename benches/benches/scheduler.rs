//! The scheduling cycle alone: decisions per second on a snapshot of N nodes with 1,000
//! placed pods, for scheduler_perf-shaped pods (SchedulingBasic: 100m CPU, 500Mi, one
//! container port) and for the expensive kinds (required pod anti-affinity, required pod
//! affinity to a group in one zone and to the placed pods in every zone, hard topology
//! spread).
//!
//! `schedule_basic_unmemoised` runs the basic shape with the node-local memo off, beside
//! the memoised runs, so the memo's effect is measured on the same machine in one run.
//!
//! Each measured iteration schedules one pod, which is assumed on its node as in the real
//! cycle; every 1,000 pods the timer stops and those pods are removed, so the snapshot
//! stays at its starting size instead of filling up over millions of iterations.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keelson_engine::k8s_openapi::api::core::v1::{Node, Pod};
use keelson_scheduler::{Outcome, Profile, Scheduler};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ZONES: usize = 10;
const EXISTING_PODS: usize = 1000;
const BATCH: usize = 1000;

fn node(i: usize) -> Node {
    let name = format!("node-{i}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES),
            "kubernetes.io/os": "linux",
        }},
        "status": {
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"}
        }
    }))
    .unwrap()
}

fn pod(name: &str, labels: Value, extra: Value) -> Pod {
    let mut spec = json!({"containers": [{
        "name": "pause", "image": "registry.k8s.io/pause:3.10",
        "ports": [{"containerPort": 80}],
        "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}, "limits": {"cpu": "100m", "memory": "500Mi"}}
    }]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec}))
        .unwrap()
}

#[derive(Clone, Copy)]
enum Shape {
    Basic,
    AntiAffinity,
    Affinity,
    /// Required affinity to the placed pods, which are in every zone.
    AffinityEverywhere,
    HardSpread,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Basic => "basic",
            Shape::AntiAffinity => "pod_anti_affinity",
            Shape::Affinity => "pod_affinity",
            Shape::AffinityEverywhere => "pod_affinity_everywhere",
            Shape::HardSpread => "hard_topology_spread",
        }
    }

    /// (labels, spec extras) of a measured pod.
    fn pod(self, name: &str) -> Pod {
        match self {
            Shape::Basic => pod(name, json!({}), json!({})),
            Shape::AntiAffinity => pod(
                name,
                json!({"color": "green"}),
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"color": "green"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
            ),
            Shape::Affinity => pod(
                name,
                json!({"foo": "bar"}),
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"foo": "bar"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}),
            ),
            Shape::AffinityEverywhere => pod(
                name,
                json!({}),
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "existing"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}),
            ),
            Shape::HardSpread => pod(
                name,
                json!({"app": "spread"}),
                json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]}),
            ),
        }
    }
}

fn cluster(nodes: usize) -> Scheduler {
    let mut scheduler = Scheduler::new(vec![Profile::default_profile()], 2);
    for i in 0..nodes {
        scheduler.snapshot.upsert_node(&node(i));
    }
    for i in 0..EXISTING_PODS {
        let mut existing = pod(&format!("existing-{i}"), json!({"app": "existing"}), json!({}));
        existing.spec.as_mut().unwrap().node_name = Some(format!("node-{}", (i * 7) % nodes));
        scheduler.snapshot.upsert_pod(&existing);
    }
    scheduler
}

fn bench_shape(c: &mut Criterion, shape: Shape, sizes: &[usize], memoise: bool) {
    let suffix = if memoise { "" } else { "_unmemoised" };
    let mut group = c.benchmark_group(format!("schedule_{}{suffix}", shape.name()));
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    for &nodes in sizes {
        let mut scheduler = cluster(nodes);
        scheduler.set_memoise(memoise);
        let pods: Vec<Pod> = (0..BATCH).map(|i| shape.pod(&format!("measured-{i}"))).collect();
        let keys: Vec<String> = (0..BATCH).map(|i| format!("default/measured-{i}")).collect();
        group.bench_function(BenchmarkId::from_parameter(nodes), |b| {
            b.iter_custom(|iters| {
                scheduler.in_pool(|s| {
                    let mut elapsed = Duration::ZERO;
                    let mut done = 0u64;
                    while done < iters {
                        let batch = (iters - done).min(BATCH as u64) as usize;
                        let start = Instant::now();
                        for pod in &pods[..batch] {
                            match s.schedule(pod, 0) {
                                Outcome::Scheduled(_) => {}
                                other => panic!("{} did not schedule: {other:?}", shape.name()),
                            }
                        }
                        elapsed += start.elapsed();
                        for key in &keys[..batch] {
                            s.snapshot.remove_pod(key);
                        }
                        done += batch as u64;
                    }
                    elapsed
                })
            });
        });
    }
    group.finish();
}

fn scheduling(c: &mut Criterion) {
    bench_shape(c, Shape::Basic, &[1000, 5000, 50000], true);
    bench_shape(c, Shape::Basic, &[5000], false);
    bench_shape(c, Shape::AntiAffinity, &[1000, 5000], true);
    bench_shape(c, Shape::Affinity, &[1000, 5000], true);
    bench_shape(c, Shape::AffinityEverywhere, &[5000], true);
    bench_shape(c, Shape::HardSpread, &[1000, 5000], true);
}

criterion_group!(benches, scheduling);
criterion_main!(benches);
