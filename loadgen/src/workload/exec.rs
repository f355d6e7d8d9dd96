//! Runs a workload's ops in order against a cluster, with one line of progress a
//! second, and collects what the measured ops need: the tracker's view of the measured
//! pods and the server's metrics before and after them.

use super::cluster::Cluster;
use super::spec::{self, ChurnMode, Op, Workload};
use super::template::{Stamp, Template};
use super::tracker::{Counts, Measured, Tracker, SENT_US};
use anyhow::{bail, Context, Result};
use keelson::agents::node::hollow::{HollowFleet, HollowOptions};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub struct RunOptions {
    /// Concurrent creating clients.
    pub clients: usize,
    /// How long any one wait (for pods to be scheduled, a barrier ...) may take.
    pub timeout: Duration,
    /// Print a progress line each second.
    pub progress: bool,
}

/// What a run leaves for the report.
pub struct Executed {
    pub nodes: usize,
    /// Every measured op finished (its pods all scheduled, and Running on hollow nodes).
    pub complete: bool,
    /// Why not, when not.
    pub shortfall: Option<String>,
    pub measured: Measured,
    /// When the first measured op started.
    pub measure_start: Option<Instant>,
    /// `/metrics` at those two moments.
    pub metrics_before: String,
    pub metrics_after: String,
    /// Whether pods run somewhere (hollow nodes), so startup latency means something.
    pub pods_run: bool,
}

struct Runner<'a> {
    workload: &'a Workload,
    options: &'a RunOptions,
    cluster: Arc<Cluster>,
    tracker: Arc<Tracker>,
    /// Every node created so far, in order (`{{node}}` cycles over them).
    nodes: Arc<Vec<String>>,
    fleets: Vec<HollowFleet>,
    churns: Vec<JoinHandle<Result<()>>>,
    /// Namespaces whose pods a barrier waits for by default.
    waited: Vec<String>,
    /// Pods this run created (for the progress line).
    created: Arc<AtomicUsize>,
    /// What the progress line says is going on.
    doing: Arc<Mutex<String>>,
    measure_start: Option<Instant>,
    metrics_before: String,
    metrics_after: String,
}

pub async fn execute(workload: &Workload, cluster: Arc<Cluster>, options: &RunOptions) -> Result<Executed> {
    let tracker = Arc::new(Tracker::start(Arc::clone(&cluster)).await?);
    let mut runner = Runner {
        workload,
        options,
        cluster,
        tracker: Arc::clone(&tracker),
        nodes: Arc::new(Vec::new()),
        fleets: Vec::new(),
        churns: Vec::new(),
        waited: Vec::new(),
        created: Arc::new(AtomicUsize::new(0)),
        doing: Arc::new(Mutex::new(String::from("starting"))),
        measure_start: None,
        metrics_before: String::new(),
        metrics_after: String::new(),
    };
    let progress = options.progress.then(|| spawn_progress(Arc::clone(&tracker), Arc::clone(&runner.doing)));
    let mut shortfall = None;
    for (i, op) in workload.ops.iter().enumerate() {
        *runner.doing.lock().expect("progress label") = format!("op {}/{} {}", i + 1, workload.ops.len(), op.opcode());
        let outcome = runner.op(i, op).await.with_context(|| format!("op {i} ({})", op.opcode()))?;
        if let Some(missing) = outcome {
            shortfall = Some(missing);
            break;
        }
    }
    // A churn loop runs until here; one that ended early failed.
    for churn in runner.churns.drain(..) {
        if churn.is_finished() {
            churn.await?.context("a churn op")?;
        } else {
            churn.abort();
        }
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let pods_run = !runner.fleets.is_empty();
    for fleet in runner.fleets.drain(..) {
        fleet.stop();
    }
    let Runner { nodes, measure_start, metrics_before, metrics_after, .. } = runner;
    let measured = tracker.finish();
    Ok(Executed {
        nodes: nodes.len(),
        complete: shortfall.is_none(),
        shortfall,
        measured,
        measure_start,
        metrics_before,
        metrics_after,
        pods_run,
    })
}

fn spawn_progress(tracker: Arc<Tracker>, doing: Arc<Mutex<String>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = tracker.total().scheduled;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now: Counts = tracker.total();
            let measured = tracker.measured_counts();
            let label = doing.lock().expect("progress label").clone();
            eprintln!(
                "[{:>6.1}s] {label}: pods {} scheduled {} running {} | measured {}/{} bound | {} binds/s",
                start.elapsed().as_secs_f64(),
                now.pods,
                now.scheduled,
                now.running,
                measured.scheduled,
                measured.pods,
                now.scheduled.saturating_sub(last)
            );
            last = now.scheduled;
        }
    })
}

impl Runner<'_> {
    fn template(&self, path: &std::path::Path) -> Result<Arc<Template>> {
        Ok(Arc::new(Template::load(&self.workload.dir, path, &self.workload.params)?))
    }

    /// Runs one op; `Some(why)` when a measured op did not finish in time.
    async fn op(&mut self, index: usize, op: &Op) -> Result<Option<String>> {
        let default_namespace = || format!("loadgen-{index}");
        match op {
            Op::CreateNodes(spec) => self.create_nodes(spec).await?,
            Op::CreateNamespaces(spec) => {
                for i in 0..spec.count {
                    self.cluster.ensure_namespace(&format!("{}-{i}", spec.prefix)).await?;
                }
            }
            Op::CreatePods(spec) => {
                let namespace = spec.namespace.clone().unwrap_or_else(default_namespace);
                self.cluster.ensure_namespace(&namespace).await?;
                let template = self.template(&spec.pod_template_path)?;
                if spec.collect_metrics {
                    self.start_measuring(&namespace).await;
                }
                let wanted = self.tracker.namespace(&namespace).pods + spec.count;
                let url = format!("{}/api/v1/namespaces/{namespace}/pods", self.cluster.server);
                let make = self.stamper(template, format!("pod-{index}"), true);
                self.cluster.create_many(url, spec.count, spec.rate, make, Arc::clone(&self.created)).await?;
                if !spec.skip_wait_to_completion {
                    self.waited.push(namespace.clone());
                    let scheduled = self
                        .wait(|t| t.namespace(&namespace).scheduled >= wanted, &format!("pods in {namespace}"))
                        .await?;
                    if spec.collect_metrics {
                        self.stop_measuring().await;
                    }
                    if !scheduled {
                        return Ok(Some(self.missing(&namespace, wanted, false)));
                    }
                }
            }
            Op::CreateAny(spec) => {
                let template = self.template(&spec.template_path)?;
                let resource = self.cluster.resource(&template.api_version, &template.kind).await?;
                let namespace = spec.namespace.clone().unwrap_or_else(default_namespace);
                if resource.namespaced {
                    self.cluster.ensure_namespace(&namespace).await?;
                }
                if spec.collect_metrics {
                    self.start_measuring(&namespace).await;
                }
                let url = resource.collection(&self.cluster.server, &namespace);
                let prefix = format!("{}-{index}", template.kind.to_lowercase());
                let make = self.stamper(template, prefix, false);
                self.cluster.create_many(url, spec.count, None, make, Arc::new(AtomicUsize::new(0))).await?;
                if spec.collect_metrics {
                    let wanted = spec.expected_pods.context("a measured createAny needs expectedPods")?;
                    let run = !self.fleets.is_empty();
                    let done = self
                        .wait(
                            |t| {
                                let c = t.namespace(&namespace);
                                c.scheduled >= wanted && (!run || c.running >= wanted)
                            },
                            &format!("pods of {namespace}"),
                        )
                        .await?;
                    self.stop_measuring().await;
                    if !done {
                        return Ok(Some(self.missing(&namespace, wanted, run)));
                    }
                }
            }
            Op::Churn(spec) => {
                let namespace = spec.namespace.clone().unwrap_or_else(default_namespace);
                let templates = spec.template_paths.iter().map(|p| self.template(p)).collect::<Result<Vec<_>>>()?;
                let mut targets = Vec::new();
                for template in templates {
                    let resource = self.cluster.resource(&template.api_version, &template.kind).await?;
                    if resource.namespaced {
                        self.cluster.ensure_namespace(&namespace).await?;
                    }
                    targets.push((template, resource.collection(&self.cluster.server, &namespace)));
                }
                let churn = Churner {
                    cluster: Arc::clone(&self.cluster),
                    nodes: Arc::clone(&self.nodes),
                    targets,
                    mode: spec.mode,
                    interval: Duration::from_millis(spec.interval_milliseconds.max(1)),
                    number: spec.number,
                    prefix: format!("churn-{index}"),
                };
                self.churns.push(tokio::spawn(churn.run()));
            }
            Op::Barrier(spec) => {
                let namespaces = if spec.namespaces.is_empty() { self.waited.clone() } else { spec.namespaces.clone() };
                let all_scheduled = |t: &Tracker| {
                    namespaces.iter().all(|n| {
                        let c = t.namespace(n);
                        c.scheduled >= c.pods
                    })
                };
                if !self.wait(all_scheduled, "the barrier").await? {
                    bail!("the barrier did not clear within {}s", self.options.timeout.as_secs());
                }
            }
            Op::Sleep(spec) => tokio::time::sleep(spec::parse_duration(&spec.duration)?).await,
            Op::DeletePods(spec) => self.delete_pods(spec).await?,
        }
        Ok(None)
    }

    /// Makes object `i` from `template`: placeholders filled, named `PREFIX-i` unless
    /// the template names it, and (for pods) stamped with their send time.
    fn stamper(
        &self,
        template: Arc<Template>,
        prefix: String,
        pod: bool,
    ) -> Arc<dyn Fn(usize) -> Result<Value> + Send + Sync> {
        let nodes = Arc::clone(&self.nodes);
        Arc::new(move |i| {
            let mut object = template.stamp(&Stamp { index: i, nodes: &nodes })?;
            let metadata = object["metadata"].as_object_mut().context("a template needs metadata")?;
            if template.name().is_none() {
                metadata.insert("name".into(), json!(format!("{prefix}-{i}")));
            }
            if pod {
                let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                annotations[SENT_US] = json!(crate::api_bench::now_us().to_string());
            }
            Ok(object)
        })
    }

    async fn create_nodes(&mut self, spec: &spec::CreateNodes) -> Result<()> {
        let template = self.template(&spec.node_template_path)?;
        let first = self.nodes.len();
        let names: Vec<String> = (first..first + spec.count).map(|i| format!("{}-{i}", spec.prefix)).collect();
        if spec.hollow {
            if spec.label_node_prepare_strategy.is_some() || spec.unique_node_label_strategy.is_some() {
                bail!("label strategies are for bare nodes; hollow nodes share their template's labels");
            }
            let object = template.stamp(&Stamp { index: 0, nodes: &[] })?;
            let mut options = HollowOptions::numbered("", 0);
            options.names = names.clone();
            options.concurrency = self.options.clients;
            let allocatable = &object["status"]["allocatable"];
            let text = |v: &Value, default: &str| v.as_str().unwrap_or(default).to_string();
            options.shape.cpu = text(&allocatable["cpu"], "4");
            options.shape.memory = text(&allocatable["memory"], "32Gi");
            options.shape.pods = allocatable["pods"].as_str().and_then(|p| p.parse().ok()).unwrap_or(110);
            if let Some(labels) = object["metadata"]["labels"].as_object() {
                options.shape.labels =
                    labels.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
            }
            let client = keelson::agents::client::from_kubeconfig(&self.cluster.kubeconfig).await?;
            self.fleets.push(HollowFleet::start(client, options).await?);
        } else {
            let names_for_make = Arc::new(names.clone());
            let (labels, unique) = (spec.label_node_prepare_strategy.clone(), spec.unique_node_label_strategy.clone());
            let make = Arc::new(move |i: usize| {
                let name = &names_for_make[i];
                let mut node = template.stamp(&Stamp { index: first + i, nodes: &[] })?;
                node["metadata"]["name"] = json!(name);
                let node_labels = node["metadata"].as_object_mut().context("node metadata")?;
                let node_labels = node_labels.entry("labels").or_insert_with(|| json!({}));
                node_labels["kubernetes.io/hostname"] = json!(name);
                if let Some(strategy) = &labels {
                    let values = &strategy.label_values;
                    if !values.is_empty() {
                        node_labels[strategy.label_key.as_str()] = json!(values[(first + i) % values.len()]);
                    }
                }
                if let Some(strategy) = &unique {
                    node_labels[strategy.label_key.as_str()] = json!(name);
                }
                Ok(node)
            });
            let url = format!("{}/api/v1/nodes", self.cluster.server);
            self.cluster.create_many(url, spec.count, None, make, Arc::new(AtomicUsize::new(0))).await?;
        }
        let mut all = (*self.nodes).clone();
        all.extend(names);
        self.nodes = Arc::new(all);
        Ok(())
    }

    async fn delete_pods(&mut self, spec: &spec::DeletePods) -> Result<()> {
        let url = format!("{}/api/v1/namespaces/{}/pods", self.cluster.server, spec.namespace);
        let list: Value = self.cluster.http.get(&url).send().await?.error_for_status()?.json().await?;
        let names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        let started = Instant::now();
        for (i, name) in names.iter().enumerate() {
            if let Some(rate) = spec.delete_pods_per_second.filter(|r| *r > 0.0) {
                tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
            }
            self.cluster.delete_now(&format!("{url}/{name}")).await?;
        }
        if spec.wait {
            let namespace = spec.namespace.clone();
            if !self.wait(|t| t.namespace(&namespace).pods == 0, "pod deletion").await? {
                bail!("the pods of {} were not all gone within {}s", spec.namespace, self.options.timeout.as_secs());
            }
        }
        Ok(())
    }

    async fn start_measuring(&mut self, namespace: &str) {
        if self.measure_start.is_none() {
            self.metrics_before = self.cluster.metrics().await;
            self.measure_start = Some(Instant::now());
        }
        self.tracker.measure(namespace);
    }

    async fn stop_measuring(&mut self) {
        self.tracker.stop_measuring();
        self.metrics_after = self.cluster.metrics().await;
    }

    fn missing(&self, namespace: &str, wanted: usize, running: bool) -> String {
        let c = self.tracker.namespace(namespace);
        let what = if running { format!(", {} Running", c.running) } else { String::new() };
        format!(
            "only {} of {wanted} pods in {namespace} were scheduled{what} within {}s",
            c.scheduled,
            self.options.timeout.as_secs()
        )
    }

    /// Polls `done` every 20 ms until it holds (true) or the timeout passes (false).
    async fn wait(&self, done: impl Fn(&Tracker) -> bool, what: &str) -> Result<bool> {
        let deadline = Instant::now() + self.options.timeout;
        while Instant::now() < deadline {
            if done(&self.tracker) {
                return Ok(true);
            }
            if let Some(failure) = self.tracker.failure() {
                bail!("waiting for {what}: {failure}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(done(&self.tracker))
    }
}

/// A churn op's background loop.
struct Churner {
    cluster: Arc<Cluster>,
    nodes: Arc<Vec<String>>,
    /// Each template with the collection it goes to.
    targets: Vec<(Arc<Template>, String)>,
    mode: ChurnMode,
    interval: Duration,
    number: usize,
    prefix: String,
}

impl Churner {
    async fn run(self) -> Result<()> {
        let mut alive: Vec<VecDeque<String>> = vec![VecDeque::new(); self.targets.len()];
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round = 0usize;
        loop {
            tick.tick().await;
            for (t, (template, url)) in self.targets.iter().enumerate() {
                let mut object = template.stamp(&Stamp { index: round, nodes: &self.nodes })?;
                let name = match self.mode {
                    ChurnMode::Recreate => format!("{}-{t}", self.prefix),
                    ChurnMode::Create => format!("{}-{t}-{round}", self.prefix),
                };
                object["metadata"]["name"] = json!(name);
                if self.mode == ChurnMode::Recreate && round > 0 {
                    self.cluster.delete_now(&format!("{url}/{name}")).await?;
                }
                Cluster::create(&self.cluster.http, url, &object, true).await?;
                if self.mode == ChurnMode::Create {
                    alive[t].push_back(name);
                    if self.number > 0 && alive[t].len() > self.number {
                        let oldest = alive[t].pop_front().expect("more than number");
                        self.cluster.delete_now(&format!("{url}/{oldest}")).await?;
                    }
                }
            }
            round += 1;
        }
    }
}
