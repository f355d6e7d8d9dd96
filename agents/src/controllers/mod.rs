//! The controller manager: the control loops that drive the cluster toward what its
//! objects ask for, each a [`runtime::Reconciler`] fed by shared informers.
//!
//! Every controller reads from the informers' caches and writes through the API,
//! so it runs the same in the server's process or alone (`keelson
//! controller-manager`). Only the leader of the `kube-controller-manager` Lease runs
//! them; see [`crate::leader`].

pub mod batch;
pub mod certificates;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
#[cfg(test)]
pub mod fake;
pub mod gc;
pub mod history;
pub mod job;
pub mod namespace;
pub mod nodelifecycle;
pub mod ownership;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod resourcequota;
pub mod rootcacert;
pub mod runtime;
pub mod serviceaccount;
pub mod statefulset;
pub mod taints;

use runtime::metrics::ControllerMetrics;
use runtime::queue::WorkQueue;
use runtime::{Informers, Reconciler};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The controllers, by the names `--controllers` and the metrics use.
pub const CONTROLLERS: &[&str] = &[
    "replicaset",
    "deployment",
    "daemonset",
    "statefulset",
    "job",
    "cronjob",
    "garbagecollector",
    "namespace",
    "resourcequota",
    "serviceaccount",
    "endpoint",
    "endpointslice",
    "nodelifecycle",
    "taint-eviction-controller",
    "podgc",
    "csrapproving",
    "csrsigning",
    "root-ca-cert-publisher",
];

/// Tunables of the manager.
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    /// Workers per controller; a controller not named gets its default.
    pub workers: HashMap<String, usize>,
    pub node_lifecycle: nodelifecycle::NodeLifecycleOptions,
    pub pod_gc: podgc::PodGcOptions,
    /// The CA node and client certificates are issued from; without it `csrsigning`
    /// does not run (as kube's signer needs its signing files).
    pub signing: Option<certificates::signer::SigningCa>,
    /// The CA bundle (PEM) published to every namespace as `kube-root-ca.crt`;
    /// without it `root-ca-cert-publisher` does not run.
    pub root_ca: Option<String>,
    /// The longest lifetime `csrsigning` gives (kube's `--cluster-signing-duration`).
    pub signing_duration: std::time::Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            workers: HashMap::new(),
            node_lifecycle: Default::default(),
            pod_gc: Default::default(),
            signing: None,
            root_ca: None,
            signing_duration: certificates::signer::DEFAULT_DURATION,
        }
    }
}

impl ManagerOptions {
    fn workers(&self, name: &str, default: usize) -> usize {
        self.workers.get(name).copied().unwrap_or(default)
    }
}

/// Running controllers: their informers, queues and workers.
pub struct ControllerManager {
    queues: Vec<Arc<WorkQueue>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControllerManager {
    /// Starts every controller's informers, then (once the caches are loaded) its
    /// workers. Must be called inside a tokio runtime.
    pub fn start(client: kube::Client, options: &ManagerOptions, metrics: &Arc<ControllerMetrics>) -> Self {
        let (events, event_writer) = crate::events::EventSink::start(client.clone());
        let informers = Arc::new(Informers::with_events(client, events));
        let mut queues = Vec::new();
        let mut launches: Vec<Box<dyn FnOnce() -> Vec<JoinHandle<()>> + Send>> = Vec::new();
        let mut add = |name: &'static str, default_workers: usize, register: Register| {
            let queue_metrics = metrics.queue(name);
            let queue = WorkQueue::new(Arc::clone(&queue_metrics));
            let launch = register(&informers, &queue);
            let workers = options.workers(name, default_workers);
            queues.push(Arc::clone(&queue));
            launches.push(Box::new(move || launch(queue, queue_metrics, workers)));
        };
        add("replicaset", 5, &|i, q| launcher("replicaset", replicaset::ReplicaSetController::register(i, q)));
        add("deployment", 5, &|i, q| launcher("deployment", deployment::DeploymentController::register(i, q)));
        add("daemonset", 2, &|i, q| launcher("daemonset", daemonset::DaemonSetController::register(i, q)));
        add("statefulset", 5, &|i, q| launcher("statefulset", statefulset::StatefulSetController::register(i, q)));
        add("garbagecollector", 20, &|i, q| launcher("garbagecollector", gc::GarbageCollector::register(i, q)));
        add("job", 5, &|i, q| launcher("job", job::JobController::register(i, q)));
        add("cronjob", 5, &|i, q| launcher("cronjob", cronjob::CronJobController::register(i, q)));
        add("namespace", 10, &|i, q| launcher("namespace", namespace::NamespaceController::register(i, q)));
        add("endpoint", 5, &|i, q| launcher("endpoint", endpoints::subsets::EndpointsController::register(i, q)));
        add("endpointslice", 5, &|i, q| {
            launcher("endpointslice", endpoints::slices::EndpointSliceController::register(i, q))
        });
        let lifecycle = options.node_lifecycle;
        add("nodelifecycle", 1, &|i, q| {
            launcher("nodelifecycle", nodelifecycle::NodeLifecycleController::register(i, q, lifecycle))
        });
        add("taint-eviction-controller", 5, &|i, q| {
            launcher("taint-eviction-controller", nodelifecycle::eviction::TaintEvictionController::register(i, q))
        });
        let pod_gc = options.pod_gc;
        add("podgc", 1, &|i, q| launcher("podgc", podgc::PodGcController::register(i, q, pod_gc)));
        add("resourcequota", 5, &|i, q| {
            launcher("resourcequota", resourcequota::ResourceQuotaController::register(i, q))
        });
        add("serviceaccount", 5, &|i, q| {
            launcher("serviceaccount", serviceaccount::ServiceAccountController::register(i, q))
        });
        add("csrapproving", 1, &|i, q| launcher("csrapproving", certificates::approver::CsrApprover::register(i, q)));
        if let Some(ca) = options.signing.clone() {
            add("csrsigning", 1, &move |i, q| {
                launcher("csrsigning", certificates::signer::CsrSigner::register(i, q, ca.clone()))
            });
        }
        if let Some(root_ca) = options.root_ca.clone() {
            add("root-ca-cert-publisher", 1, &move |i, q| {
                launcher("root-ca-cert-publisher", rootcacert::RootCaPublisher::register(i, q, root_ca.clone()))
            });
        }
        let mut tasks = informers.start();
        tasks.push(event_writer);
        tasks.push(tokio::spawn(async move {
            informers.wait_synced().await;
            let mut workers = Vec::new();
            for launch in launches {
                workers.extend(launch());
            }
            // Workers end when their queues shut down; this task holds the informers.
            for worker in workers {
                let _ = worker.await;
            }
            drop(informers);
        }));
        ControllerManager { queues, tasks }
    }

    /// Stops the informers and workers (a reconcile in progress is abandoned; its key
    /// is reconciled again by the next leader).
    pub fn stop(self) {
        for queue in &self.queues {
            queue.shut_down();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Creates a controller on the informers and its queue; returns its launcher.
type Register<'a> = &'a dyn Fn(&Informers, &Arc<WorkQueue>) -> Launch;

type Launch = Box<dyn FnOnce(Arc<WorkQueue>, Arc<runtime::metrics::QueueMetrics>, usize) -> Vec<JoinHandle<()>> + Send>;

/// Defers a registered controller's workers until the caches are loaded.
fn launcher<R: Reconciler>(name: &'static str, reconciler: Arc<R>) -> Launch {
    Box::new(move |queue, metrics, workers| runtime::run_workers(name, reconciler, queue, metrics, workers))
}
