//! `loadgen api`: the API server end to end over HTTPS, as kube-apiserver is measured.
//!
//! Phases, each for `--duration` seconds: creates of ConfigMaps with a `--value-size`
//! payload at `--clients` concurrent clients; GETs of the created objects at the same
//! concurrency; LISTs of a namespace holding `--list-size` objects at
//! `--list-clients`; and, with `--watchers N`, a create load while N watches on one
//! namespace measure delivered events per second and create→event lag. Every client
//! has its own connection, as separate processes would.

use crate::report::{self, LatencyMs, Machine};
use anyhow::{bail, Context, Result};
use base64::Engine;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Target an existing server; by default an embedded server on a temp dir is booted.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    #[arg(long, default_value_t = 8)]
    pub list_clients: usize,
    #[arg(long, default_value_t = 1000)]
    pub list_size: usize,
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// The encoding GETs and LISTs ask for: `json`, or `protobuf` (listed first, as
    /// Go's typed clients do, so the server re-encodes its JSON).
    #[arg(long, value_enum, default_value_t = Accept::Json)]
    pub accept: Accept,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    Json,
    Protobuf,
}

impl Accept {
    fn header(self) -> &'static str {
        match self {
            Accept::Json => "application/json",
            Accept::Protobuf => "application/vnd.kubernetes.protobuf, application/json",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    pub per_sec: f64,
    pub latency_ms: LatencyMs,
}

#[derive(Debug, Serialize)]
pub struct WatchPhase {
    pub watchers: usize,
    pub creates: u64,
    pub events: u64,
    pub events_per_sec: f64,
    /// Every watcher saw every create.
    pub complete: bool,
    pub lag_ms: LatencyMs,
}

/// A list response, validated as JSON and counted without keeping its items.
#[derive(serde::Deserialize)]
struct ItemCount {
    items: Vec<serde::de::IgnoredAny>,
}

#[derive(Debug, Serialize)]
pub struct ApiResult {
    pub target: String,
    pub machine: Machine,
    pub commit: String,
    pub protocol: String,
    pub duration_s: u64,
    pub value_size: usize,
    pub creates: Phase,
    pub gets: Phase,
    pub lists: Phase,
    pub list_size: usize,
    pub watch: Option<WatchPhase>,
}

/// What a client needs from a kubeconfig.
pub(crate) struct Target {
    pub(crate) server: String,
    ca_pem: Vec<u8>,
    identity_pem: Vec<u8>,
}

pub(crate) fn read_kubeconfig(path: &Path) -> Result<Target> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let b64 = |v: &serde_yaml::Value| -> Result<Vec<u8>> {
        let text = v.as_str().context("a base64 field")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
    };
    let cluster = &config["clusters"][0]["cluster"];
    let user = &config["users"][0]["user"];
    let mut identity_pem = b64(&user["client-certificate-data"])?;
    identity_pem.extend(b64(&user["client-key-data"])?);
    Ok(Target {
        server: cluster["server"].as_str().context("clusters[0].cluster.server")?.to_string(),
        ca_pem: b64(&cluster["certificate-authority-data"])?,
        identity_pem,
    })
}

pub(crate) fn client(target: &Target) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&target.ca_pem)?)
        .identity(reqwest::Identity::from_pem(&target.identity_pem)?)
        .pool_max_idle_per_host(1)
        .build()?)
}

fn configmap(name: &str, value_size: usize, sent_us: Option<u128>) -> Value {
    let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"payload": "x".repeat(value_size)}});
    if let Some(sent) = sent_us {
        object["metadata"]["annotations"] = json!({"loadgen.keelson.dev/sent-us": sent.to_string()});
    }
    object
}

pub(crate) fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

struct Tally {
    latency: Histogram<u64>,
    ops: u64,
    errors: u64,
}

fn summarize(clients: usize, tallies: Vec<Tally>, elapsed: Duration) -> Phase {
    let mut latency = report::micros_histogram();
    let (mut ops, mut errors) = (0, 0);
    for t in tallies {
        latency.add(&t.latency).expect("same bounds");
        ops += t.ops;
        errors += t.errors;
    }
    Phase {
        clients,
        ops,
        errors,
        per_sec: ops as f64 / elapsed.as_secs_f64(),
        latency_ms: LatencyMs::from_micros(&latency),
    }
}

/// Runs `clients` loops of `op(client index, iteration)` until the deadline.
async fn phase<F, Fut>(target: &Target, clients: usize, duration: Duration, op: F) -> Result<Phase>
where
    F: Fn(reqwest::Client, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<bool>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = client(target)?;
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally { latency: report::micros_histogram(), ops: 0, errors: 0 };
            let mut i = 0;
            while Instant::now() < deadline {
                let begun = Instant::now();
                match op(http.clone(), c, i).await {
                    Ok(true) => {
                        tally.ops += 1;
                        tally.latency.saturating_record(begun.elapsed().as_micros() as u64);
                    }
                    _ => tally.errors += 1,
                }
                i += 1;
            }
            tally
        }));
    }
    let mut tallies = Vec::new();
    for task in tasks {
        tallies.push(task.await?);
    }
    Ok(summarize(clients, tallies, started.elapsed()))
}

/// Creates namespace `name` unless it exists, with its `default` ServiceAccount as a
/// cluster's ServiceAccount controller would make it: an embedded control plane may run
/// without controllers, and every pod's admission looks its ServiceAccount up (a
/// missing one costs a store read per pod that no real cluster pays).
pub(crate) async fn ensure_namespace(http: &reqwest::Client, server: &str, name: &str) -> Result<()> {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    for (url, body) in [
        (format!("{server}/api/v1/namespaces"), namespace),
        (format!("{server}/api/v1/namespaces/{name}/serviceaccounts"), account),
    ] {
        let response = http.post(url).json(&body).send().await?;
        if !(response.status().is_success() || response.status() == reqwest::StatusCode::CONFLICT) {
            bail!("creating {} in namespace {name}: {}", body["kind"], response.status());
        }
    }
    Ok(())
}

async fn watch_phase(target: &Target, args: &ApiArgs, duration: Duration) -> Result<WatchPhase> {
    let server = target.server.clone();
    let http = client(target)?;
    ensure_namespace(&http, &server, "bench-watch").await?;
    let rv: Value =
        http.get(format!("{server}/api/v1/namespaces/bench-watch/configmaps?limit=1")).send().await?.json().await?;
    let rv = rv["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let events = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let http = client(target)?;
        let url = format!("{server}/api/v1/namespaces/bench-watch/configmaps?watch=true&resourceVersion={rv}");
        let (events, stop) = (events.clone(), stop.clone());
        watchers.push(tokio::spawn(async move {
            let mut lag = report::micros_histogram();
            let mut seen = 0u64;
            let Ok(mut response) = http.get(url).send().await else { return (lag, seen) };
            let mut buffer: Vec<u8> = Vec::new();
            let marker = b"sent-us\":\"";
            while !stop.load(Ordering::Relaxed) {
                let chunk = match tokio::time::timeout(Duration::from_millis(200), response.chunk()).await {
                    Ok(Ok(Some(chunk))) => chunk,
                    Ok(_) => break,
                    Err(_) => continue,
                };
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if let Some(at) = line.windows(marker.len()).position(|w| w == marker) {
                        let digits: String = line[at + marker.len()..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .map(|b| *b as char)
                            .collect();
                        if let Ok(sent) = digits.parse::<u128>() {
                            lag.saturating_record(now_us().saturating_sub(sent) as u64);
                        }
                    }
                    seen += 1;
                    events.fetch_add(1, Ordering::Relaxed);
                }
            }
            (lag, seen)
        }));
    }
    // Give the watches time to connect before writing.
    tokio::time::sleep(Duration::from_millis(500 + args.watchers as u64)).await;
    let started = Instant::now();
    let value_size = args.value_size;
    let writer_server = server.clone();
    let creates = phase(target, args.clients.min(16), duration, move |http, c, i| {
        let url = format!("{writer_server}/api/v1/namespaces/bench-watch/configmaps");
        async move {
            let body = configmap(&format!("w{c}-{i}"), value_size, Some(now_us()));
            Ok(http.post(url).json(&body).send().await?.status() == reqwest::StatusCode::CREATED)
        }
    })
    .await?;
    // Let the last events arrive.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while events.load(Ordering::Relaxed) < creates.ops * args.watchers as u64 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lag = report::micros_histogram();
    let mut complete = true;
    for watcher in watchers {
        let (l, seen) = watcher.await?;
        lag.add(&l).expect("same bounds");
        complete &= seen == creates.ops;
    }
    let total = events.load(Ordering::Relaxed);
    Ok(WatchPhase {
        watchers: args.watchers,
        creates: creates.ops,
        events: total,
        events_per_sec: total as f64 / elapsed.as_secs_f64(),
        complete,
        lag_ms: LatencyMs::from_micros(&lag),
    })
}

async fn measure(target: Target, args: &ApiArgs, label: String) -> Result<ApiResult> {
    let duration = Duration::from_secs(args.duration);
    let server = target.server.clone();
    let http = client(&target)?;
    ensure_namespace(&http, &server, "bench").await?;
    ensure_namespace(&http, &server, "bench-list").await?;

    let value_size = args.value_size;
    let create_server = server.clone();
    let created = Arc::new(AtomicU64::new(0));
    let counter = created.clone();
    let creates = phase(&target, args.clients, duration, move |http, c, i| {
        let url = format!("{create_server}/api/v1/namespaces/bench/configmaps");
        let counter = counter.clone();
        async move {
            let body = configmap(&format!("c{c}-{i}"), value_size, None);
            let ok = http.post(url).json(&body).send().await?.status() == reqwest::StatusCode::CREATED;
            if ok && c == 0 {
                counter.store(i + 1, Ordering::Relaxed);
            }
            Ok(ok)
        }
    })
    .await?;

    // GETs of objects client 0 created (`c0-0` .. `c0-{n}`).
    let known = created.load(Ordering::Relaxed).max(1);
    let get_server = server.clone();
    let accept = args.accept;
    let gets = phase(&target, args.clients, duration, move |http, c, i| {
        let name = format!("c0-{}", (c as u64 * 7919 + i) % known);
        let url = format!("{get_server}/api/v1/namespaces/bench/configmaps/{name}");
        async move {
            let response = http.get(url).header(reqwest::header::ACCEPT, accept.header()).send().await?;
            Ok(response.status() == reqwest::StatusCode::OK && response.bytes().await.is_ok())
        }
    })
    .await?;

    // A namespace with exactly `list_size` objects, listed whole.
    let fill = client(&target)?;
    for i in 0..args.list_size {
        let response = fill
            .post(format!("{server}/api/v1/namespaces/bench-list/configmaps"))
            .json(&configmap(&format!("l{i}"), value_size, None))
            .send()
            .await?;
        if !(response.status().is_success() || response.status() == reqwest::StatusCode::CONFLICT) {
            bail!("filling the list namespace: {}", response.status());
        }
    }
    let list_server = server.clone();
    let expected = args.list_size;
    let lists = phase(&target, args.list_clients, duration, move |http, _, _| {
        let url = format!("{list_server}/api/v1/namespaces/bench-list/configmaps");
        async move {
            let response = http.get(url).header(reqwest::header::ACCEPT, accept.header()).send().await?;
            if response.status() != reqwest::StatusCode::OK {
                return Ok(false);
            }
            // Count the items without building a DOM: the client's work stays small
            // next to the server's on the shared cores (client-go, too, keeps
            // `managedFields.fieldsV1` as raw bytes rather than parsing it).
            let body = response.bytes().await?;
            let items = match accept {
                Accept::Json => serde_json::from_slice::<ItemCount>(&body)?.items.len(),
                Accept::Protobuf => keelson::api::protobuf::list_item_count(&body)?,
            };
            Ok(items == expected)
        }
    })
    .await?;

    let watch = if args.watchers > 0 { Some(watch_phase(&target, args, duration).await?) } else { None };
    Ok(ApiResult {
        target: label,
        machine: Machine::detect(),
        commit: report::commit(),
        protocol: match args.accept {
            Accept::Json => "HTTPS (HTTP/2 by ALPN), one connection per client, JSON",
            Accept::Protobuf => "HTTPS (HTTP/2 by ALPN), one connection per client, JSON writes, protobuf reads",
        }
        .into(),
        duration_s: args.duration,
        value_size: args.value_size,
        creates,
        gets,
        lists,
        list_size: args.list_size,
        watch,
    })
}

pub fn run(args: &ApiArgs) -> Result<ApiResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match &args.kubeconfig {
            Some(path) => measure(read_kubeconfig(path)?, args, format!("kubeconfig {}", path.display())).await,
            None => {
                let dir = tempfile::tempdir()?;
                let store = keelson::store::Store::open(&dir.path().join("store"), Default::default())?;
                let config = keelson::api::ServerConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse()?);
                let server = keelson::api::Server::bind(config, store.clone()).await?;
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                let serving = tokio::spawn(server.serve(async {
                    let _ = stop_rx.await;
                }));
                let target = read_kubeconfig(&dir.path().join("admin.kubeconfig"))?;
                let result = measure(target, args, "embedded keelson server (RocksDB, durable)".into()).await;
                let _ = stop_tx.send(());
                let _ = serving.await;
                store.close();
                result
            }
        }
    })
}

pub fn print_table(result: &ApiResult) {
    println!(
        "{:<10} {:>8} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "phase", "clients", "ops/s", "errors", "p50 ms", "p99 ms", "max ms"
    );
    for (name, p) in [("create", &result.creates), ("get", &result.gets), ("list", &result.lists)] {
        println!(
            "{:<10} {:>8} {:>10.0} {:>8} {:>10.3} {:>10.3} {:>10.3}",
            name, p.clients, p.per_sec, p.errors, p.latency_ms.p50, p.latency_ms.p99, p.latency_ms.max
        );
    }
    if let Some(w) = &result.watch {
        println!(
            "watch: {} watchers, {} creates, {:.0} events/s delivered, lag p50 {:.3} ms p99 {:.3} ms, complete: {}",
            w.watchers, w.creates, w.events_per_sec, w.lag_ms.p50, w.lag_ms.p99, w.complete
        );
    }
}
