//! The scheduler's runner: the part of kube-scheduler that talks to the API.
//!
//! Three parts, one owner each:
//! - the informers ([`informers`]) watch nodes, pods, namespaces, workloads and
//!   disruption budgets and send [`Update`]s down one bounded channel;
//! - the scheduling thread ([`worker`]) owns the [`Scheduler`] (its snapshot) and the
//!   [`SchedulingQueue`]: it applies updates, pops pods and runs scheduling cycles,
//!   assuming each placed pod at once;
//! - the actors ([`actions`]) run on tokio: they bind (many in flight, bounded by
//!   the thread), write events and status, and carry out preemptions, then report
//!   bind results back down the update channel.
//!
//! Nothing is shared but the channels and the metrics (atomics).
//!
//! [`Scheduler`]: keelson_scheduler::Scheduler
//! [`SchedulingQueue`]: keelson_scheduler::queue::SchedulingQueue

pub mod actions;
pub mod informers;
pub mod metrics;
pub mod watched_pod;
pub mod worker;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use keelson_engine::Selector;
use keelson_scheduler::config::SchedulerConfig;
use metrics::SchedulerMetrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::Notify;

/// A change the scheduling thread applies, in arrival order.
#[derive(Debug)]
pub enum Update {
    Pod(Arc<Pod>),
    /// `namespace/name`.
    PodGone(String),
    Node(Arc<Node>),
    NodeGone(String),
    Namespace(Box<Namespace>),
    NamespaceGone(String),
    /// A Service's, ReplicaSet's, StatefulSet's or ReplicationController's selector
    /// (`None`: the object is gone, or selects nothing by label).
    Workload {
        kind: &'static str,
        namespace: String,
        name: String,
        selector: Option<Selector>,
    },
    Budget(Arc<PodDisruptionBudget>),
    BudgetGone {
        namespace: String,
        name: String,
    },
    Claim(Box<k8s_openapi::api::core::v1::PersistentVolumeClaim>),
    ClaimGone {
        namespace: String,
        name: String,
    },
    Volume(Box<k8s_openapi::api::core::v1::PersistentVolume>),
    VolumeGone(String),
    /// A kind's initial list (or a re-list) is complete.
    Synced(&'static str),
    /// The answer to a bind the thread asked for.
    Bound {
        key: Arc<str>,
        result: actions::BindResult,
    },
}

/// Tunables of the runner (the scheduling itself is tuned by [`SchedulerConfig`]).
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Pending pods the queue holds at most; more wait for a re-list.
    pub queue_capacity: usize,
    /// Binds sent and not yet answered, at most: scheduling pauses at this many. Kept
    /// well under the API server's limit on mutating requests in flight (200 by
    /// default), which answers 429 beyond it.
    pub max_binds_in_flight: usize,
    /// Updates waiting for the scheduling thread, at most (watches pause beyond).
    pub update_capacity: usize,
    /// Events and status reports waiting, at most (more are dropped and counted).
    pub report_capacity: usize,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            queue_capacity: 1_000_000,
            max_binds_in_flight: 100,
            update_capacity: 16_384,
            report_capacity: 4_096,
        }
    }
}

/// A running scheduler. Dropping it does not stop it; call [`SchedulerRunner::stop`].
pub struct SchedulerRunner {
    metrics: Arc<SchedulerMetrics>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SchedulerRunner {
    /// Starts the watches, the scheduling thread and the actors. Must be called inside
    /// a tokio runtime.
    pub fn start(client: kube::Client, config: SchedulerConfig, options: RunnerOptions) -> SchedulerRunner {
        Self::start_with_metrics(client, config, options, Arc::new(SchedulerMetrics::default()))
    }

    /// As [`SchedulerRunner::start`], counting into `metrics` (kept across runs, e.g.
    /// from one term as leader to the next).
    pub fn start_with_metrics(
        client: kube::Client,
        config: SchedulerConfig,
        options: RunnerOptions,
        metrics: Arc<SchedulerMetrics>,
    ) -> SchedulerRunner {
        let stop = Arc::new(AtomicBool::new(false));
        let (updates_tx, updates_rx) = flume::bounded(options.update_capacity);
        let pod_resync = Arc::new(Notify::new());
        let mut tasks = informers::start(&client, &updates_tx, &pod_resync);
        let (actors, actor_tasks) = actions::start(client, updates_tx, Arc::clone(&metrics), options.report_capacity);
        tasks.extend(actor_tasks);
        let worker = worker::Worker::new(config, options, updates_rx, actors, Arc::clone(&metrics), pod_resync);
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || worker.run(&thread_stop))
            .expect("spawning the scheduling thread");
        SchedulerRunner { metrics, stop, thread: Some(thread), tasks }
    }

    pub fn metrics(&self) -> Arc<SchedulerMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Stops the watches and actors and joins the scheduling thread. Binds in flight
    /// are abandoned: their pods stay pending and are scheduled again by the next run.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
