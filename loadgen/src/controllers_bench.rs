//! `loadgen controllers`: a large Deployment through the controllers onto hollow nodes.
//!
//! An embedded control plane (durable RocksDB store, HTTPS API server, the scheduler and
//! the controller manager in process) or a remote one (`--kubeconfig`, with its own
//! scheduler and controllers), and a fleet of `--nodes` hollow node agents in this
//! process talking HTTPS to the server. Two phases, each timed from the write that
//! starts it to the Deployment's status showing it done:
//!
//! 1. **scale-up**: a Deployment of `--replicas` (scheduler_perf's pod shape) is created;
//!    done when every replica is available.
//! 2. **rolling update**: the pod template changes (a new annotation, so a new
//!    ReplicaSet); done when the status shows the new generation observed and every
//!    replica updated and available with no old pod left, as `kubectl rollout status`
//!    reads it.
//!
//! The API writes each phase cost are counted twice: every write the server answered
//! (from its `/metrics`, so the node agents' status updates and the scheduler's binds
//! are in it), and, with the embedded control plane, the controllers' own writes, taken
//! at their client, by verb and resource. Writes per pod (lower is better) divide those
//! by the replicas the phase created.

use crate::api_bench::{client, ensure_namespace, read_kubeconfig, Target};
use crate::embedded::Embedded;
use crate::report::{self, Machine};
use anyhow::{bail, Context, Result};
use keelson::agents::node::hollow::{HollowFleet, HollowOptions};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "bench";
const DEPLOYMENT: &str = "web";
/// The verbs of `apiserver_request_total` that write.
const WRITE_VERBS: &[&str] = &["CREATE", "UPDATE", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"];

#[derive(clap::Args, Debug)]
pub struct ControllersArgs {
    /// Target an existing server (with a scheduler and controllers running); by default
    /// an embedded control plane on a temp dir is booted.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Hollow nodes (4 CPU, 32Gi, 110 pods each), run in this process.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 10000)]
    pub replicas: usize,
    /// The rolling update's maxSurge and maxUnavailable (Kubernetes' defaults).
    #[arg(long, default_value = "25%")]
    pub max_surge: String,
    #[arg(long, default_value = "25%")]
    pub max_unavailable: String,
    /// Concurrent writes of the hollow fleet.
    #[arg(long, default_value_t = 64)]
    pub node_concurrency: usize,
    /// Seconds each phase may take.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct ControllersResult {
    pub workload: String,
    pub target: String,
    pub machine: Machine,
    pub commit: String,
    pub nodes: usize,
    pub replicas: usize,
    pub max_surge: String,
    pub max_unavailable: String,
    pub scale_up: Phase,
    pub rolling_update: Phase,
    /// This process (server, controllers, scheduler and fleet when embedded).
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Phase {
    /// Whether the phase finished before `--timeout`.
    pub completed: bool,
    /// Seconds from the starting write until the status showed each milestone.
    pub all_created_s: Option<f64>,
    pub all_ready_s: Option<f64>,
    pub done_s: Option<f64>,
    /// Replicas available per second over the phase.
    pub pods_per_sec: f64,
    /// Every write the server answered during the phase (all clients).
    pub api_writes: f64,
    pub api_writes_per_pod: f64,
    /// The controllers' own writes (embedded control plane only), by verb and resource.
    pub controller_writes: Option<u64>,
    pub controller_writes_per_pod: Option<f64>,
    pub controller_writes_by_kind: BTreeMap<String, u64>,
    /// Of those, the ones the server refused, by "CODE VERB resource".
    pub controller_write_errors: BTreeMap<String, u64>,
}

/// Counts the writes a client sends, by "VERB resource[/subresource]", and the ones
/// answered with an error. A mutex is fine: this is measurement, not the hot path,
/// and the controllers' write rate is a few thousand a second at most.
#[derive(Default)]
struct WriteCounter {
    by_kind: Mutex<BTreeMap<String, u64>>,
    /// "CODE VERB resource" of each refused write.
    errors: Mutex<BTreeMap<String, u64>>,
}

/// What a [`WriteCounter`] held at one moment.
type Counted = (BTreeMap<String, u64>, BTreeMap<String, u64>);

/// `after - before`, per key, leaving out keys that did not move.
fn difference(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(kind, n)| (kind.clone(), n - before.get(kind).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

impl WriteCounter {
    fn observe(&self, method: &http::Method, path: &str) {
        if matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS) {
            return;
        }
        let key = format!("{method} {}", resource_of(path));
        *self.by_kind.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
    }

    fn failed(&self, code: u16, method: &http::Method, path: &str) {
        let key = format!("{code} {method} {}", resource_of(path));
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
    }

    fn snapshot(&self) -> Counted {
        let by_kind = self.by_kind.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (by_kind, self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// `pods`, `replicasets/status`, ... from an API path.
fn resource_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/GROUP/VERSION/...
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let Some(mut rest) = rest else { return path.to_string() };
    // namespaces/NS/RESOURCE..., but namespaces/NS/status and /finalize are the
    // Namespace's own subresources.
    let own_subresource = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    if rest.first() == Some(&"namespaces") && rest.len() > 2 && !own_subresource {
        rest = &rest[2..];
    }
    match rest {
        [resource] | [resource, _] => resource.to_string(),
        [resource, _, subresource, ..] => format!("{resource}/{subresource}"),
        [] => path.to_string(),
    }
}

/// The sum of every write the server has answered, from its `/metrics`.
async fn server_writes(http: &reqwest::Client, server: &str) -> Result<f64> {
    let text = http.get(format!("{server}/metrics")).send().await?.error_for_status()?.text().await?;
    let mut total = 0.0;
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let write = WRITE_VERBS.iter().any(|verb| line.contains(&format!("verb=\"{verb}\"")));
        if let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            if write {
                total += value;
            }
        }
    }
    Ok(total)
}

/// scheduler_perf's pod shape, as a Deployment.
fn deployment(args: &ControllersArgs) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {"replicas": args.replicas,
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": int_or_percent(&args.max_surge),
                                  "maxUnavailable": int_or_percent(&args.max_unavailable)}},
            "template": {"metadata": {"labels": {"app": DEPLOYMENT}},
                "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                    "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "100m", "memory": "500Mi"},
                                  "limits": {"cpu": "100m", "memory": "500Mi"}}}]}}}})
}

fn int_or_percent(text: &str) -> Value {
    text.parse::<i64>().map_or_else(|_| json!(text), |n| json!(n))
}

/// What the Deployment's status says, as far as the phases need.
#[derive(Debug, Default)]
struct Progress {
    generation: i64,
    observed: i64,
    replicas: i64,
    updated: i64,
    ready: i64,
    available: i64,
}

async fn progress(http: &reqwest::Client, url: &str) -> Result<Progress> {
    let object: Value = http.get(url).send().await?.error_for_status()?.json().await?;
    let status = &object["status"];
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    Ok(Progress {
        generation: int(&object["metadata"]["generation"]),
        observed: int(&status["observedGeneration"]),
        replicas: int(&status["replicas"]),
        updated: int(&status["updatedReplicas"]),
        ready: int(&status["readyReplicas"]),
        available: int(&status["availableReplicas"]),
    })
}

/// Polls the Deployment every 250 ms from `start` until `done` holds or the timeout,
/// recording when every replica was first created, ready, and when the phase was done.
async fn follow(
    http: &reqwest::Client,
    url: &str,
    start: Instant,
    timeout: Duration,
    wanted: i64,
    name: &str,
    done: impl Fn(&Progress) -> bool,
) -> Result<Phase> {
    let mut phase = Phase::default();
    let mut last_print = Instant::now();
    let since = || start.elapsed().as_secs_f64();
    while start.elapsed() < timeout {
        let now = progress(http, url).await?;
        if phase.all_created_s.is_none() && now.observed >= now.generation && now.updated >= wanted {
            phase.all_created_s = Some(since());
        }
        if phase.all_ready_s.is_none() && now.observed >= now.generation && now.ready >= wanted && now.updated >= wanted
        {
            phase.all_ready_s = Some(since());
        }
        if done(&now) {
            phase.completed = true;
            phase.done_s = Some(since());
            phase.pods_per_sec = wanted as f64 / since().max(1e-9);
            eprintln!("{name}: done in {:.1}s", since());
            return Ok(phase);
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "{name} {:>6.1}s: replicas {} updated {} ready {} available {}",
                since(),
                now.replicas,
                now.updated,
                now.ready,
                now.available
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{name}: not done within {}s", timeout.as_secs());
    Ok(phase)
}

/// Fills in a phase's write figures from the counters before and after it.
fn account(phase: &mut Phase, pods: usize, server: (f64, f64), counter: Option<(&Counted, &Counted)>) {
    let pods = pods.max(1) as f64;
    phase.api_writes = server.1 - server.0;
    phase.api_writes_per_pod = phase.api_writes / pods;
    if let Some(((before, errors_before), (after, errors_after))) = counter {
        phase.controller_writes_by_kind = difference(before, after);
        let total: u64 = phase.controller_writes_by_kind.values().sum();
        phase.controller_writes = Some(total);
        phase.controller_writes_per_pod = Some(total as f64 / pods);
        phase.controller_write_errors = difference(errors_before, errors_after);
    }
}

async fn measure(
    target: Target,
    kubeconfig: &Path,
    args: &ControllersArgs,
    label: String,
    counter: Option<Arc<WriteCounter>>,
) -> Result<ControllersResult> {
    let http = client(&target)?;
    let server = target.server.clone();
    let begun = Instant::now();
    let agent_client = keelson::agents::client::from_kubeconfig(kubeconfig).await?;
    let mut options = HollowOptions::numbered("node-", args.nodes);
    options.concurrency = args.node_concurrency;
    let fleet = HollowFleet::start(agent_client, options).await?;
    eprintln!("{} hollow nodes registered in {:.1}s", args.nodes, begun.elapsed().as_secs_f64());
    ensure_namespace(&http, &server, NAMESPACE).await?;

    let timeout = Duration::from_secs(args.timeout);
    let wanted = args.replicas as i64;
    let snapshot = || counter.as_ref().map(|c| c.snapshot());
    let collection = format!("{server}/apis/apps/v1/namespaces/{NAMESPACE}/deployments");
    let url = format!("{collection}/{DEPLOYMENT}");

    // Phase 1: scale-up.
    let (writes_before, counted_before) = (server_writes(&http, &server).await?, snapshot());
    let start = Instant::now();
    let response = http.post(&collection).json(&deployment(args)).send().await?;
    if !response.status().is_success() {
        bail!("creating the Deployment: HTTP {}: {}", response.status(), response.text().await?);
    }
    let mut scale_up = follow(&http, &url, start, timeout, wanted, "scale-up", |p| {
        p.observed >= p.generation && p.available >= wanted && p.updated >= wanted
    })
    .await?;
    let (writes_after, counted_after) = (server_writes(&http, &server).await?, snapshot());
    account(
        &mut scale_up,
        args.replicas,
        (writes_before, writes_after),
        counted_before.as_ref().zip(counted_after.as_ref()),
    );

    // Phase 2: a rolling update to a new template.
    let mut rolling_update = Phase::default();
    if scale_up.completed {
        let (writes_before, counted_before) = (writes_after, counted_after);
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"loadgen.keelson.dev/rollout": "2"}}}}});
        let start = Instant::now();
        let response = http
            .patch(&url)
            .header("content-type", "application/strategic-merge-patch+json")
            .body(patch.to_string())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("updating the Deployment: HTTP {}: {}", response.status(), response.text().await?);
        }
        rolling_update = follow(&http, &url, start, timeout, wanted, "rolling update", |p| {
            p.observed >= p.generation && p.updated >= wanted && p.replicas == wanted && p.available >= wanted
        })
        .await?;
        let (writes_after, counted_after) = (server_writes(&http, &server).await?, snapshot());
        account(
            &mut rolling_update,
            args.replicas,
            (writes_before, writes_after),
            counted_before.as_ref().zip(counted_after.as_ref()),
        );
    }
    fleet.stop();
    let (peak_rss_bytes, cpu_seconds) = report::own_usage();
    Ok(ControllersResult {
        workload: "Deployment scale-up and rolling update (hollow nodes)".into(),
        target: label,
        machine: Machine::detect(),
        commit: report::commit(),
        nodes: args.nodes,
        replicas: args.replicas,
        max_surge: args.max_surge.clone(),
        max_unavailable: args.max_unavailable.clone(),
        scale_up,
        rolling_update,
        peak_rss_bytes,
        cpu_seconds,
    })
}

pub fn run(args: &ControllersArgs) -> Result<ControllersResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match &args.kubeconfig {
            Some(path) => {
                let label = format!("kubeconfig {}", path.display());
                measure(read_kubeconfig(path)?, path, args, label, None).await
            }
            None => {
                let counter = Arc::new(WriteCounter::default());
                let counted = Arc::clone(&counter);
                let client = move |server: &keelson::api::Server| counted_client(server, counted);
                let embedded = Embedded::boot_with(keelson::scheduler_config(None)?, Some(client)).await?;
                let kubeconfig = embedded.kubeconfig();
                let target = read_kubeconfig(&kubeconfig).context("the embedded server's kubeconfig")?;
                let label =
                    "embedded keelson server (RocksDB, durable) + in-process scheduler and controllers".to_string();
                let result = measure(target, &kubeconfig, args, label, Some(counter)).await;
                embedded.shutdown().await;
                result
            }
        }
    })
}

/// The controller manager's client to `server`, counting every write it sends.
fn counted_client(server: &keelson::api::Server, counter: Arc<WriteCounter>) -> keelson::agents::kube::Client {
    let transport = server.local_transport("system:kube-controller-manager", &[]);
    keelson::agents::client::in_process(move |request: http::Request<_>| {
        let (transport, counter) = (transport.clone(), Arc::clone(&counter));
        counter.observe(request.method(), request.uri().path());
        let write = !matches!(*request.method(), http::Method::GET | http::Method::HEAD);
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        async move {
            let response = transport.call(request).await;
            if write && !response.status().is_success() {
                counter.failed(response.status().as_u16(), &method, &path);
            }
            response
        }
    })
}

pub fn print_table(r: &ControllersResult) {
    println!("{}: {} replicas on {} nodes", r.workload, r.replicas, r.nodes);
    let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.1}"));
    let per_pod = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.2}"));
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>10} {:>14} {:>18}",
        "phase", "created s", "ready s", "done s", "pods/s", "writes/pod", "controller w/pod"
    );
    for (name, p) in [("scale-up", &r.scale_up), ("rolling update", &r.rolling_update)] {
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>10.0} {:>14.2} {:>18}",
            name,
            secs(p.all_created_s),
            secs(p.all_ready_s),
            secs(p.done_s),
            p.pods_per_sec,
            p.api_writes_per_pod,
            per_pod(p.controller_writes_per_pod)
        );
    }
    println!("peak RSS {:.0} MiB, CPU {:.0} s", r.peak_rss_bytes as f64 / 1048576.0, r.cpu_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_of_names_resources_and_subresources() {
        assert_eq!(resource_of("/api/v1/namespaces/a/pods"), "pods");
        assert_eq!(resource_of("/api/v1/namespaces/a/pods/p"), "pods");
        assert_eq!(resource_of("/apis/apps/v1/namespaces/a/replicasets/r/status"), "replicasets/status");
        assert_eq!(resource_of("/api/v1/nodes/n"), "nodes");
        assert_eq!(resource_of("/api/v1/namespaces/a"), "namespaces");
        assert_eq!(resource_of("/api/v1/namespaces/a/finalize"), "namespaces/finalize");
        assert_eq!(resource_of("/api/v1/namespaces/a/pods?fieldManager=x"), "pods");
    }
}
