//! `loadgen scheduling`: scheduler_perf's SchedulingBasic end to end through the API.
//!
//! An embedded control plane (durable RocksDB store, HTTPS API server, the scheduler in
//! process) or a remote one (`--kubeconfig`). Nodes are created from scheduler_perf's
//! node template (4 CPU, 32 GiB, 110 pods), then `--init-pods` pods are created and
//! scheduled, then the measured `--pods` are created by `--clients` concurrent HTTPS
//! clients while a watch observes each pod's bind. Throughput is measured pods over the
//! time from the first create to the last bind seen; per-second samples of binds give
//! scheduler_perf's SchedulingThroughput percentiles.
//!
//! With `--hollow` the nodes are not bare Node objects but a fleet of hollow node
//! agents (`keelson agent --runtime hollow`, run inside this process and talking HTTPS
//! to the server like a separate agent): they register, renew Leases and start the
//! pods bound to them, and each measured pod's startup (created → Running) is measured
//! too.
//!
//! With `--cri SOCKET` there is one real node: a node agent with the CRI runtime (run
//! in this process) on the containerd at SOCKET, so each pod is a sandbox and a
//! container of `--image` (`keelson test-images` provides `localhost/keelson/web:1`),
//! and startup is created → Running on a real runtime. The pods are deleted (and their
//! containers stopped) at the end.

use crate::api_bench::{client, ensure_namespace, read_kubeconfig, Target};
use crate::embedded::Embedded;
use crate::podlite::WatchLine;
use crate::report::{self, LatencyMs, Machine};
use crate::scrape;
use crate::workload::cluster::Cluster;
use anyhow::{bail, Context, Result};
use keelson::agents::node::hollow::{HollowFleet, HollowOptions};
use keelson::agents::node::kubelet::{AgentOptions, NodeAgent};
use keelson::agents::node::runtime::cri::CriRuntime;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct SchedulingArgs {
    /// Target an existing server (with a scheduler running); by default an embedded
    /// control plane on a temp dir is booted.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,
    /// Pods created and scheduled before the measurement.
    #[arg(long, default_value_t = 1000)]
    pub init_pods: usize,
    /// Pods measured.
    #[arg(long, default_value_t = 10000)]
    pub pods: usize,
    /// Concurrent HTTPS clients creating objects.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections the clients share (0: one each). The default is client-go's:
    /// every clientset made from one rest config multiplexes its requests over one
    /// connection, as scheduler_perf's pod creator does. One shared connection costs the
    /// server and the load generator fewer, fuller socket writes than one per client
    /// (1.27× the pods/s of one each in results/scheduling/2026-11-24.md).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// The embedded scheduler's KubeSchedulerConfiguration.
    #[arg(long)]
    pub scheduler_config: Option<PathBuf>,
    /// Seconds to wait for every pod to be bound.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Hollow node agents instead of bare Node objects; pods must also reach Running.
    #[arg(long)]
    pub hollow: bool,
    /// One real node on the containerd at this socket (CRI) instead of `--nodes`; pods
    /// must reach Running.
    #[arg(long, conflicts_with = "hollow")]
    pub cri: Option<String>,
    /// `--cri`: the image every pod runs (its default command).
    #[arg(long, default_value = "localhost/keelson/web:1")]
    pub image: String,
    /// Offered load: measured pods created at this many per second (by default as fast
    /// as the clients go). Latency is only meaningful below saturation.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct SchedulingResult {
    pub workload: String,
    pub target: String,
    pub machine: Machine,
    pub commit: String,
    pub nodes: usize,
    pub init_pods: usize,
    pub pods: usize,
    pub clients: usize,
    /// The HTTP/2 connections they shared.
    pub connections: usize,
    /// The offered load (`--rate`), if any.
    pub rate: Option<f64>,
    /// Measured pods created per second (the create phase alone).
    pub creates_per_sec: f64,
    pub create_latency_ms: LatencyMs,
    /// Measured pods over first create → last bind observed.
    pub pods_per_sec: f64,
    pub elapsed_s: f64,
    /// Binds observed per whole second of the measurement (scheduler_perf's
    /// SchedulingThroughput samples), as percentiles.
    pub throughput_samples: report::Throughput,
    /// Create sent → bind observed by the watch, per pod.
    pub create_to_bound_ms: LatencyMs,
    /// Pods the watch saw bound (equals `pods` on success).
    pub bound: usize,
    /// `--hollow` or `--cri`: pods seen Running, and their create → Running latency.
    pub running: Option<usize>,
    pub create_to_running_ms: Option<LatencyMs>,
    /// From the scheduler's metrics, when reachable.
    pub scheduler: Option<SchedulerFigures>,
}

#[derive(Debug, Serialize)]
pub struct SchedulerFigures {
    pub attempts_scheduled: f64,
    pub attempts_unschedulable: f64,
    pub bind_errors: f64,
    pub reports_dropped: f64,
    pub placement_quality: f64,
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": {"pods": "110", "cpu": "4", "memory": "32Gi"},
                   "allocatable": {"pods": "110", "cpu": "4", "memory": "32Gi"},
                   "conditions": [{"type": "Ready", "status": "True"}], "phase": "Running"}})
}

/// scheduler_perf's `pod-default.yaml`, with the send time for latency.
fn pod(name: &str, sent_us: u128) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"loadgen.keelson.dev/sent-us": sent_us.to_string()}},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"},
                          "limits": {"cpu": "100m", "memory": "500Mi"}}}]}})
}

/// A pod for a real node: the image's own command, small requests so 100 fit a small
/// host, and a short grace period so the clean-up is quick.
fn real_pod(name: &str, image: &str, sent_us: u128) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"loadgen.keelson.dev/sent-us": sent_us.to_string()}},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": image,
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}})
}

/// One node whose pods run on containerd, in this process.
async fn start_cri_node(kubeconfig: &Path, socket: &str, root: &Path) -> Result<NodeAgent> {
    let client = keelson::agents::client::from_kubeconfig(kubeconfig).await?;
    let cluster_ca = keelson::agents::client::cluster_ca(kubeconfig).await?;
    let name = "cri-node-0";
    let runtime = CriRuntime::connect(socket, root.to_path_buf(), name).await?;
    let mut shape = keelson::agents::node::kubelet::host_shape(root);
    shape.pods = 110;
    let options = AgentOptions {
        node_name: name.into(),
        shape,
        host_ip: "127.0.0.1".into(),
        kubelet_port: 0,
        pod_cidr: "10.244.0.0/24".into(),
        root_dir: root.to_path_buf(),
        renew_interval: Duration::from_secs(10),
        status_interval: Duration::from_secs(300),
    };
    Ok(NodeAgent::start(client, options, Arc::new(runtime), &cluster_ca).await?)
}

/// Deletes every pod in `namespace` and waits (until `deadline`) for the node agent to
/// stop their containers and let them go.
async fn delete_pods(http: &reqwest::Client, server: &str, namespace: &str, deadline: Instant) -> Result<()> {
    let url = format!("{server}/api/v1/namespaces/{namespace}/pods");
    http.delete(&url).send().await?.error_for_status()?;
    while Instant::now() < deadline {
        let list: Value = http.get(&url).send().await?.json().await?;
        if list["items"].as_array().is_none_or(|items| items.is_empty()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("pods in {namespace} were not all deleted in time")
}

/// Creates `count` objects named `prefix-N` at `clients` concurrency, object `i` not
/// before `i / rate` seconds in when a rate is given; returns the per-create latencies
/// (µs) and the time the phase took.
async fn create_all(
    target: &Target,
    (clients, connections): (usize, usize),
    rate: Option<f64>,
    url: String,
    count: usize,
    make: impl Fn(&str) -> Value + Send + Sync + 'static,
    prefix: &'static str,
) -> Result<(hdrhistogram::Histogram<u64>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let url = reqwest::Url::parse(&url).with_context(|| format!("the URL {url}"))?;
    let started = Instant::now();
    let shared = (0..connections.min(clients.max(1))).map(|_| client(target)).collect::<Result<Vec<_>>>()?;
    let mut tasks = Vec::new();
    for i in 0..clients.max(1) {
        let http = if shared.is_empty() { client(target)? } else { shared[i % shared.len()].clone() };
        let (next, make, url) = (next.clone(), make.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = report::micros_histogram();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(latency);
                }
                if let Some(rate) = rate.filter(|r| *r > 0.0) {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                }
                let body = make(&format!("{prefix}-{i:06}"));
                let begun = Instant::now();
                // 429s (overload) are waited out: the phase must create every object.
                Cluster::create(&http, url.clone(), &body, true).await?;
                latency.saturating_record(begun.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latency = report::micros_histogram();
    for task in tasks {
        latency.add(&task.await??).expect("same bounds");
    }
    Ok((latency, started.elapsed()))
}

/// What the bind watcher saw.
struct Binds {
    /// Instant of each bind, in order seen.
    at: Vec<Instant>,
    create_to_bound: hdrhistogram::Histogram<u64>,
    /// Pods seen Running, and their create → Running latency.
    running: usize,
    create_to_running: hdrhistogram::Histogram<u64>,
}

/// The current resourceVersion of a namespace's pod list (a watch starts there).
async fn list_revision(http: &reqwest::Client, server: &str, namespace: &str) -> Result<String> {
    let list: Value =
        http.get(format!("{server}/api/v1/namespaces/{namespace}/pods?limit=1")).send().await?.json().await?;
    Ok(list["metadata"]["resourceVersion"].as_str().context("a list resourceVersion")?.to_string())
}

/// Watches `namespace`'s pods from `revision` until `count` distinct pods are bound
/// (and, with `until_running`, Running) or the deadline passes (re-watching from the
/// last revision seen if the stream ends).
async fn watch_binds(
    http: reqwest::Client,
    server: String,
    namespace: &'static str,
    mut revision: String,
    count: usize,
    until_running: bool,
    deadline: Instant,
) -> Result<Binds> {
    let mut seen = HashSet::with_capacity(count);
    let mut started = HashSet::with_capacity(if until_running { count } else { 0 });
    let mut binds = Binds {
        at: Vec::with_capacity(count),
        create_to_bound: report::micros_histogram(),
        running: 0,
        create_to_running: report::micros_histogram(),
    };
    let done = |seen: &HashSet<String>, started: &HashSet<String>| {
        seen.len() >= count && (!until_running || started.len() >= count)
    };
    while !done(&seen, &started) && Instant::now() < deadline {
        let url = format!("{server}/api/v1/namespaces/{namespace}/pods?watch=1&resourceVersion={revision}");
        let mut response = http.get(url).send().await?;
        if !response.status().is_success() {
            bail!("watching pods: HTTP {}", response.status());
        }
        // A line may span chunks: the tail of a chunk waits in `buffer` for the rest. A
        // chunk holds several events; each is parsed where it lies, and what the whole
        // lines took is dropped from the front once per chunk (the harness shares the
        // machine with what it measures, so its own loop is kept lean).
        let mut buffer = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(chunk) = tokio::time::timeout(remaining, response.chunk()).await else { break };
            let Some(chunk) = chunk? else { break };
            buffer.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(length) = memchr::memchr(b'\n', &buffer[start..]) {
                let line = &buffer[start..start + length + 1];
                start += length + 1;
                let event: WatchLine = serde_json::from_slice(line).context("a watch event")?;
                if event.kind == "ERROR" {
                    bail!("the pod watch failed: {}", String::from_utf8_lossy(line));
                }
                revision = event.object.metadata.resource_version.clone();
                let since_sent = || {
                    let sent = event.object.annotation(crate::workload::tracker::SENT_US)?;
                    let sent: u128 = sent.parse().ok()?;
                    Some(crate::api_bench::now_us().saturating_sub(sent) as u64)
                };
                let bound = event.object.bound();
                if bound && event.kind != "DELETED" && seen.insert(event.object.metadata.name.clone()) {
                    binds.at.push(Instant::now());
                    if let Some(micros) = since_sent() {
                        binds.create_to_bound.saturating_record(micros);
                    }
                }
                let running = event.object.running();
                if until_running && running && started.insert(event.object.metadata.name.clone()) {
                    binds.running += 1;
                    if let Some(micros) = since_sent() {
                        binds.create_to_running.saturating_record(micros);
                    }
                }
            }
            buffer.drain(..start);
            if done(&seen, &started) {
                break;
            }
        }
    }
    Ok(binds)
}

async fn scheduler_figures(http: &reqwest::Client, server: &str) -> Option<SchedulerFigures> {
    let text = http.get(format!("{server}/metrics")).send().await.ok()?.text().await.ok()?;
    let attempts = "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=";
    Some(SchedulerFigures {
        attempts_scheduled: scrape::sample(&text, &format!("{attempts}\"scheduled\"}}")),
        attempts_unschedulable: scrape::sample(&text, &format!("{attempts}\"unschedulable\"}}")),
        bind_errors: scrape::sample(&text, "scheduler_bind_errors_total"),
        reports_dropped: scrape::sample(&text, "scheduler_reports_dropped_total"),
        placement_quality: scrape::sample(&text, "scheduler_placement_quality_ratio"),
    })
}

async fn measure(target: Target, kubeconfig: &Path, args: &SchedulingArgs, label: String) -> Result<SchedulingResult> {
    let http = client(&target)?;
    let server = target.server.clone();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let begun = Instant::now();
    let until_running = args.hollow || args.cri.is_some();
    let cri_root = tempfile::tempdir()?;
    let cri_node = match &args.cri {
        Some(socket) => Some(start_cri_node(kubeconfig, socket, cri_root.path()).await?),
        None => None,
    };
    let fleet = if cri_node.is_some() {
        None
    } else if args.hollow {
        let agent_client = keelson::agents::client::from_kubeconfig(kubeconfig).await?;
        let mut options = HollowOptions::numbered("node-", args.nodes);
        options.concurrency = args.clients;
        Some(HollowFleet::start(agent_client, options).await?)
    } else {
        create_all(
            &target,
            (args.clients, args.connections),
            None,
            format!("{server}/api/v1/nodes"),
            args.nodes,
            node,
            "node",
        )
        .await?;
        None
    };
    let (kind, nodes) = match (&cri_node, args.hollow) {
        (Some(_), _) => ("CRI node registered", 1),
        (None, true) => ("hollow nodes registered", args.nodes),
        (None, false) => ("nodes created", args.nodes),
    };
    eprintln!("{nodes} {kind} in {:.1}s", begun.elapsed().as_secs_f64());

    // Each pod carries its send time, for the startup latency.
    let template: Arc<dyn Fn(&str) -> Value + Send + Sync> = match &args.cri {
        Some(_) => {
            let image = args.image.clone();
            Arc::new(move |n: &str| real_pod(n, &image, crate::api_bench::now_us()))
        }
        None => Arc::new(|n: &str| pod(n, crate::api_bench::now_us())),
    };
    ensure_namespace(&http, &server, "init").await?;
    ensure_namespace(&http, &server, "measure").await?;
    if args.init_pods > 0 {
        let revision = list_revision(&http, &server, "init").await?;
        let watch = tokio::spawn(watch_binds(
            http.clone(),
            server.clone(),
            "init",
            revision,
            args.init_pods,
            until_running,
            deadline,
        ));
        let url = format!("{server}/api/v1/namespaces/init/pods");
        let make = template.clone();
        create_all(&target, (args.clients, args.connections), None, url, args.init_pods, move |n| make(n), "init")
            .await?;
        let binds = watch.await??;
        if binds.at.len() < args.init_pods {
            bail!("only {} of {} initial pods were scheduled in time", binds.at.len(), args.init_pods);
        }
        eprintln!("scheduled {} initial pods", args.init_pods);
    }

    let revision = list_revision(&http, &server, "measure").await?;
    let watch = tokio::spawn(watch_binds(
        http.clone(),
        server.clone(),
        "measure",
        revision,
        args.pods,
        until_running,
        deadline,
    ));
    let start = Instant::now();
    let url = format!("{server}/api/v1/namespaces/measure/pods");
    let make = template.clone();
    let (create_latency, create_took) =
        create_all(&target, (args.clients, args.connections), args.rate, url, args.pods, move |n| make(n), "pod")
            .await?;
    let binds = watch.await??;
    if let Some(fleet) = fleet {
        fleet.stop();
    }
    if let Some(agent) = cri_node {
        let cleanup = Instant::now() + Duration::from_secs(120);
        let deleted = delete_pods(&http, &server, "measure", cleanup).await;
        let deleted_init = delete_pods(&http, &server, "init", cleanup).await;
        agent.stop();
        deleted.and(deleted_init)?;
    }
    let elapsed = binds.at.iter().max().map_or(Duration::ZERO, |last| last.duration_since(start));
    Ok(SchedulingResult {
        workload: match (&args.cri, args.hollow) {
            (Some(_), _) => format!("pod startup on one CRI node ({})", args.image),
            (None, true) => "SchedulingBasic (hollow nodes)".into(),
            (None, false) => "SchedulingBasic".into(),
        },
        target: label,
        machine: Machine::detect(),
        commit: report::commit(),
        nodes,
        init_pods: args.init_pods,
        pods: args.pods,
        clients: args.clients,
        connections: if args.connections == 0 { args.clients } else { args.connections.min(args.clients) },
        rate: args.rate,
        creates_per_sec: args.pods as f64 / create_took.as_secs_f64(),
        create_latency_ms: LatencyMs::from_micros(&create_latency),
        pods_per_sec: binds.at.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        elapsed_s: elapsed.as_secs_f64(),
        throughput_samples: report::Throughput::of(&report::per_second(start, &binds.at)),
        create_to_bound_ms: LatencyMs::from_micros(&binds.create_to_bound),
        bound: binds.at.len(),
        running: until_running.then_some(binds.running),
        create_to_running_ms: until_running.then(|| LatencyMs::from_micros(&binds.create_to_running)),
        scheduler: scheduler_figures(&http, &server).await,
    })
}

pub fn run(args: &SchedulingArgs) -> Result<SchedulingResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match &args.kubeconfig {
            Some(path) => measure(read_kubeconfig(path)?, path, args, format!("kubeconfig {}", path.display())).await,
            None => {
                let config = keelson::scheduler_config(args.scheduler_config.as_deref())?;
                let embedded = Embedded::boot(config, false).await?;
                let kubeconfig = embedded.kubeconfig();
                let target = read_kubeconfig(&kubeconfig)?;
                let label = "embedded keelson server (RocksDB, durable) + in-process scheduler".to_string();
                let result = measure(target, &kubeconfig, args, label).await;
                embedded.shutdown().await;
                result
            }
        }
    })
}

pub fn print_table(r: &SchedulingResult) {
    println!("{}: {} nodes, {} initial pods, {} measured pods", r.workload, r.nodes, r.init_pods, r.pods);
    println!("{:<28} {:>12}", "pods/s (create→last bind)", format!("{:.0}", r.pods_per_sec));
    println!("{:<28} {:>12}", "elapsed s", format!("{:.2}", r.elapsed_s));
    println!("{:<28} {:>12}", "creates/s", format!("{:.0}", r.creates_per_sec));
    let t = &r.throughput_samples;
    println!("{:<28} {:>12}", "binds/s per second p50/p90", format!("{:.0}/{:.0}", t.perc50, t.perc90));
    let l = &r.create_to_bound_ms;
    println!("{:<28} {:>12}", "create→bound ms p50/p99", format!("{:.1}/{:.1}", l.p50, l.p99));
    println!("{:<28} {:>12}", "bound", r.bound);
    if let (Some(running), Some(l)) = (r.running, &r.create_to_running_ms) {
        println!("{:<28} {:>12}", "create→Running ms p50/p99", format!("{:.1}/{:.1}", l.p50, l.p99));
        println!("{:<28} {:>12}", "running", running);
    }
}
