//! Whole API requests, as the server handles them: a Pod create shaped like
//! scheduler_perf's (what `loadgen scheduling` sends), an Event create shaped like the
//! scheduler's `Scheduled` event (one per placed pod), and the `pods/binding` that
//! places a pod. Each goes through the server's in-process door (everything a remote
//! request takes but TCP and TLS: authentication, authorization, admission, managed
//! fields, the durable commit to RocksDB and the response), with 64 requests in
//! flight as the load generator keeps them, so the time per element is the server's
//! cost per request when it is busy (commits share their WAL sync).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::BodyExt;
use keelson_api::server::{LocalTransport, Server, ServerConfig};
use keelson_store::{Store, StoreConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// Requests in flight, as `loadgen scheduling`'s 64 clients keep them.
const IN_FLIGHT: usize = 64;

/// The server binary's allocator: request handling allocates a lot, so the allocator
/// is part of what is measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bench {
    _dir: tempfile::TempDir,
    runtime: Runtime,
    transport: LocalTransport,
    /// Sequence numbers for object names (the benches share one server).
    next: AtomicU64,
}

fn start() -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let transport = runtime.block_on(async {
        let store = Store::open(&dir.path().join("store"), StoreConfig::default()).expect("open store");
        let config = ServerConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().expect("address"));
        let server = Server::bind(config, store).await.expect("server");
        server.local_transport("bench", &["system:masters"])
    });
    Bench { _dir: dir, runtime, transport, next: AtomicU64::new(0) }
}

/// scheduler_perf's `pod-default.yaml`, as `loadgen scheduling` sends it (its `pod`,
/// which lives in the loadgen binary).
fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"loadgen.keelson.dev/sent-us": "1763942400000000"}},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"},
                          "limits": {"cpu": "100m", "memory": "500Mi"}}}]}})
}

/// The scheduler's `Scheduled` event about pod `name`.
fn event(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.18a2b3c4d5e6f708"), "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "default", "name": name,
            "uid": "0b6e1a3c-6f3e-4c1e-9a53-3f1c2d4e5f60", "resourceVersion": "1234"},
        "reason": "Scheduled", "message": format!("Successfully assigned default/{name} to node-1"),
        "source": {"component": "default-scheduler"}, "type": "Normal", "action": "Binding",
        "firstTimestamp": "2026-11-24T00:00:00Z", "lastTimestamp": "2026-11-24T00:00:00Z", "count": 1,
        "reportingComponent": "default-scheduler", "reportingInstance": "default-scheduler-keelson"})
}

fn binding(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}})
}

/// Sends one POST and checks it answered 201.
async fn post(transport: LocalTransport, uri: String, body: Vec<u8>) {
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let response = transport.call(request).await;
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

/// Sends `count` requests made by `request` (given a fresh sequence number) with
/// [`IN_FLIGHT`] of them in flight; returns the elapsed time.
fn run(bench: &Bench, count: u64, mut request: impl FnMut(u64) -> (String, Value)) -> Duration {
    bench.runtime.block_on(async {
        let started = Instant::now();
        let mut in_flight = JoinSet::new();
        for _ in 0..count {
            if in_flight.len() == IN_FLIGHT {
                in_flight.join_next().await.expect("in flight").expect("request");
            }
            let (uri, body) = request(bench.next.fetch_add(1, Ordering::Relaxed));
            in_flight.spawn(post(bench.transport.clone(), uri, serde_json::to_vec(&body).expect("encode")));
        }
        while let Some(done) = in_flight.join_next().await {
            done.expect("request");
        }
        started.elapsed()
    })
}

fn creates(c: &mut Criterion) {
    let bench = start();
    let mut group = c.benchmark_group("requests");
    group.sample_size(20).measurement_time(Duration::from_secs(10)).throughput(Throughput::Elements(1));
    let pods = "/api/v1/namespaces/default/pods".to_string();
    group.bench_function("create_pod", |b| {
        b.iter_custom(|iters| run(&bench, iters, |n| (pods.clone(), pod(&format!("pod-{n}")))))
    });
    let events = "/api/v1/namespaces/default/events".to_string();
    group.bench_function("create_event", |b| {
        b.iter_custom(|iters| run(&bench, iters, |n| (events.clone(), event(&format!("pod-{n}")))))
    });
    // Each sample first creates the pods it binds (untimed).
    group.bench_function("bind_pod", |b| {
        b.iter_custom(|iters| {
            let first = bench.next.load(Ordering::Relaxed);
            run(&bench, iters, |n| (pods.clone(), pod(&format!("pod-{n}"))));
            let mut names = (first..first + iters).map(|n| format!("pod-{n}"));
            run(&bench, iters, |_| {
                let name = names.next().expect("one pod per bind");
                (format!("/api/v1/namespaces/default/pods/{name}/binding"), binding(&name))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, creates);
criterion_main!(benches);
