//! The scheduling thread: the one owner of the scheduler's snapshot and queue.
//!
//! Each turn it applies every update waiting (so a cycle sees the cluster as fresh as
//! the watches are), does its housekeeping when due, then pops one pod and runs its
//! cycle. A placed pod is assumed at once and its bind handed to the actors; the pod
//! stays "in flight" in the queue until the bind's answer comes back. With nothing to
//! do it sleeps on the update channel until the next backoff ends.

use super::actions::{Actors, BindRequest, BindResult, Report};
use super::informers::KINDS;
use super::metrics::{AttemptResult, ProfileMetrics, SchedulerMetrics};
use super::{RunnerOptions, Update};
use k8s_openapi::api::core::v1::{Node, Pod};
use keelson_scheduler::config::SchedulerConfig;
use keelson_scheduler::framework::Code;
use keelson_scheduler::profile::scheduler_name;
use keelson_scheduler::queue::{QueuedPod, SchedulingQueue};
use keelson_scheduler::snapshot::{is_terminal, pod_key};
use keelson_scheduler::{Outcome, Scheduler};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often unschedulable pods are checked for the 5-minute flush, assumed pods for
/// expiry, and the pending-pod gauges refreshed.
const HOUSEKEEPING_MS: u64 = 1_000;
/// An assumed pod whose bind was answered but never seen in a watch is dropped after
/// this long (kube's assumed-pod expiry), so its resources do not leak.
const ASSUMED_TTL_MS: u64 = 5 * 60 * 1_000;
/// The longest the thread sleeps with nothing to do (it checks for stop this often).
const IDLE_WAIT_MS: u64 = 200;

pub struct Worker {
    scheduler: Scheduler,
    state: State,
}

struct State {
    queue: SchedulingQueue,
    options: RunnerOptions,
    updates: flume::Receiver<Update>,
    actors: Actors,
    metrics: Arc<SchedulerMetrics>,
    /// Each profile's series, in the scheduler's profile order.
    profile_metrics: Vec<Arc<ProfileMetrics>>,
    pod_resync: Arc<Notify>,
    epoch: Instant,
    binds_in_flight: usize,
    /// Kinds whose first list is complete (bit per `KINDS` entry); no cycle runs before
    /// all are, as kube-scheduler waits for its caches to sync.
    synced: u32,
    /// The scheduling-relevant parts of each node as last seen, to tell a heartbeat
    /// from a change that may make pending pods fit.
    nodes: HashMap<String, Arc<Node>>,
    /// Bound pods whose node the snapshot does not know yet (the watches race), by node.
    orphans: HashMap<String, HashMap<String, Arc<Pod>>>,
    /// Something happened that may make parked pods schedulable.
    cluster_changed: bool,
    /// Pending pods were turned away by a full queue: re-list pods once there is room.
    overflowed: bool,
    next_housekeeping_ms: u64,
}

impl Worker {
    pub fn new(
        config: SchedulerConfig,
        options: RunnerOptions,
        updates: flume::Receiver<Update>,
        actors: Actors,
        metrics: Arc<SchedulerMetrics>,
        pod_resync: Arc<Notify>,
    ) -> Worker {
        let profile_metrics = config
            .profiles
            .iter()
            .map(|p| {
                let series = metrics.profile(&p.scheduler_name);
                series.set_plugins(p.plugins.iter().map(|plugin| plugin.name()));
                series
            })
            .collect();
        let mut scheduler = Scheduler::new(config.profiles, config.parallelism);
        scheduler.set_percentage_of_nodes_to_score(config.percentage_of_nodes_to_score);
        scheduler.set_audit_every(config.placement_audit_every);
        let state = State {
            queue: SchedulingQueue::new(options.queue_capacity),
            options,
            updates,
            actors,
            metrics,
            profile_metrics,
            pod_resync,
            epoch: Instant::now(),
            binds_in_flight: 0,
            synced: 0,
            nodes: HashMap::new(),
            orphans: HashMap::new(),
            cluster_changed: false,
            overflowed: false,
            next_housekeeping_ms: 0,
        };
        Worker { scheduler, state }
    }

    /// Runs until `stop` is set or every update sender is gone.
    pub fn run(self, stop: &AtomicBool) {
        let Worker { mut scheduler, mut state } = self;
        // Inside the pool, the parallel sections of each cycle start without a thread hop.
        scheduler.in_pool(|scheduler| state.run(scheduler, stop));
    }
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

/// Whether a node update can change where pods fit (labels, taints, cordon,
/// allocatable); heartbeats and condition updates cannot.
fn node_changed(old: &Node, new: &Node) -> bool {
    old.metadata.labels != new.metadata.labels
        || old.spec != new.spec
        || old.status.as_ref().map(|s| &s.allocatable) != new.status.as_ref().map(|s| &s.allocatable)
}

/// kube's `isPodUpdated`: whether an update may change where a pending pod fits
/// (its spec, labels, annotations), as opposed to its status or bookkeeping.
fn pod_changed(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

impl State {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn ready(&self) -> bool {
        self.synced == (1 << KINDS.len()) - 1
    }

    fn run(&mut self, scheduler: &mut Scheduler, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            loop {
                match self.updates.try_recv() {
                    Ok(update) => self.apply(scheduler, update),
                    Err(flume::TryRecvError::Empty) => break,
                    Err(flume::TryRecvError::Disconnected) => return,
                }
            }
            let now = self.now_ms();
            if self.cluster_changed {
                self.queue.cluster_changed(now);
                self.cluster_changed = false;
            }
            if now >= self.next_housekeeping_ms {
                self.housekeeping(scheduler, now);
            }
            if self.ready() && self.binds_in_flight < self.options.max_binds_in_flight {
                if let Some(pod) = self.queue.pop(now) {
                    self.schedule_one(scheduler, pod, now);
                    continue;
                }
            }
            let wake = self.queue.next_backoff_ms().unwrap_or(u64::MAX).min(self.next_housekeeping_ms);
            let wait = wake.saturating_sub(now).clamp(1, IDLE_WAIT_MS);
            match self.updates.recv_timeout(Duration::from_millis(wait)) {
                Ok(update) => self.apply(scheduler, update),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn housekeeping(&mut self, scheduler: &mut Scheduler, now: u64) {
        self.next_housekeeping_ms = now + HOUSEKEEPING_MS;
        self.queue.flush_unschedulable(now);
        for key in scheduler.snapshot.expire_assumed(now, ASSUMED_TTL_MS) {
            tracing::warn!(pod = key, "assumed pod expired: its bind was never observed");
        }
        if self.overflowed && self.queue.len() < self.options.queue_capacity / 2 {
            self.overflowed = false;
            self.pod_resync.notify_one();
        }
        self.metrics.set_pending(self.queue.lengths());
    }

    fn apply(&mut self, scheduler: &mut Scheduler, update: Update) {
        let now = self.now_ms();
        let snapshot = &mut scheduler.snapshot;
        match update {
            Update::Pod(pod) => self.apply_pod(scheduler, pod, now),
            Update::PodGone(key) => {
                snapshot.clear_nomination(&key);
                if snapshot.pods.find(&key).is_some() {
                    snapshot.remove_pod(&key);
                    self.cluster_changed = true;
                }
                for orphans in self.orphans.values_mut() {
                    orphans.remove(&key);
                }
                self.queue.delete(&key);
            }
            Update::Node(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                let changed = self.nodes.get(&name).is_none_or(|old| node_changed(old, &node));
                snapshot.upsert_node(&node);
                self.nodes.insert(name.clone(), node);
                if let Some(orphans) = self.orphans.remove(&name) {
                    for pod in orphans.into_values() {
                        snapshot.upsert_pod(&pod);
                    }
                }
                self.cluster_changed |= changed;
            }
            Update::NodeGone(name) => {
                snapshot.remove_node(&name);
                self.nodes.remove(&name);
            }
            Update::Namespace(namespace) => {
                snapshot.upsert_namespace(&namespace);
                self.cluster_changed = true;
            }
            Update::NamespaceGone(name) => snapshot.remove_namespace(&name),
            Update::Workload { kind, namespace, name, selector } => match selector {
                Some(selector) => snapshot.set_workload_selector(kind, &namespace, &name, selector),
                None => snapshot.remove_workload_selector(kind, &namespace, &name),
            },
            Update::Budget(pdb) => {
                let namespace = pdb.metadata.namespace.as_deref().unwrap_or("default");
                let name = pdb.metadata.name.as_deref().unwrap_or("");
                let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
                let allowed = pdb.status.as_ref().map_or(0, |s| s.disruptions_allowed);
                snapshot.set_budget(namespace, name, selector, allowed);
            }
            Update::BudgetGone { namespace, name } => snapshot.remove_budget(&namespace, &name),
            // A claim that binds, or a volume that appears, may unblock parked pods.
            Update::Claim(claim) => {
                snapshot.upsert_claim(&claim);
                self.cluster_changed = true;
            }
            Update::ClaimGone { namespace, name } => snapshot.remove_claim(&namespace, &name),
            Update::Volume(volume) => {
                snapshot.upsert_volume(&volume);
                self.cluster_changed = true;
            }
            Update::VolumeGone(name) => snapshot.remove_volume(&name),
            Update::Synced(kind) => {
                if let Some(bit) = KINDS.iter().position(|k| *k == kind) {
                    self.synced |= 1 << bit;
                }
            }
            Update::Bound { key, result } => {
                self.binds_in_flight = self.binds_in_flight.saturating_sub(1);
                self.metrics.binds_in_flight.set(self.binds_in_flight as i64);
                match result {
                    BindResult::Bound => self.queue.done(&key),
                    BindResult::Moot => {
                        snapshot.forget(&key);
                        self.queue.delete(&key);
                    }
                    BindResult::Failed => {
                        snapshot.forget(&key);
                        self.queue.failed(&key, now);
                    }
                }
            }
        }
    }

    fn apply_pod(&mut self, scheduler: &mut Scheduler, pod: Arc<Pod>, now: u64) {
        let key = pod_key(&pod);
        // Finished or going away: it holds nothing and is not pending.
        let leaving = is_terminal(&pod) || pod.metadata.deletion_timestamp.is_some();
        let snapshot = &mut scheduler.snapshot;
        if let Some(node) = node_name(&pod) {
            // Bound: the snapshot places it (confirming an assumed pod); it is not pending.
            let was_placed = snapshot.pods.find(&key).is_some();
            if snapshot.nodes.find(node).is_some() {
                snapshot.upsert_pod(&pod);
            } else if leaving {
                if let Some(orphans) = self.orphans.get_mut(node) {
                    orphans.remove(&key);
                }
            } else {
                self.orphans.entry(node.to_string()).or_default().insert(key.clone(), Arc::clone(&pod));
            }
            // Resources freed, or a pod newly bound by someone else (it may matter to
            // pending pods' affinity): parked pods may fit now. A status update of a pod
            // already placed (or the confirmation of our own assumed pod) changes nothing.
            self.cluster_changed |= if leaving { was_placed } else { !was_placed };
            self.queue.delete(&key);
            return;
        }
        if leaving || !scheduler.serves(scheduler_name(&pod)) {
            scheduler.snapshot.clear_nomination(&key);
            self.queue.delete(&key);
            return;
        }
        if scheduler.snapshot.is_assumed(&key) {
            return; // our bind is on its way; this event predates it
        }
        // A nomination this scheduler made before it restarted (or another made):
        // hold the room again from now on, not only when the pod's turn comes.
        if scheduler.snapshot.nomination(&key).is_none() {
            scheduler.restore_nomination(&pod);
        }
        if self.queue.get(&key).is_some_and(|old| !pod_changed(old, &pod)) {
            // Our own status reports come back this way: they must not retry the pod.
            self.queue.refresh(&key, pod);
            return;
        }
        if self.queue.add(&key, pod, now).is_err() {
            self.metrics.queue_overflows.inc();
            self.overflowed = true;
        }
    }

    fn schedule_one(&mut self, scheduler: &mut Scheduler, queued: QueuedPod, now: u64) {
        let started = Instant::now();
        let QueuedPod { key, pod, .. } = queued;
        let outcome = scheduler.schedule(&pod, now);
        let Some(profile) = scheduler.profile_index(scheduler_name(&pod)).map(|i| &self.profile_metrics[i]) else {
            // No profile serves the pod: nothing ran.
            self.queue.delete(&key);
            return;
        };
        profile.extension_points(&scheduler.last_points);
        match outcome {
            Outcome::Scheduled(decision) => {
                profile.attempt(AttemptResult::Scheduled, started.elapsed());
                if let Some(audit) = decision.audit {
                    self.metrics.audited.inc();
                    self.metrics.audit_quality_micros.add((audit.quality() * 1e6) as u64);
                }
                self.binds_in_flight += 1;
                self.metrics.binds_in_flight.set(self.binds_in_flight as i64);
                let request =
                    BindRequest { key: Arc::clone(&key), pod, node: decision.node, metrics: Arc::clone(profile) };
                if !self.actors.bind(request) {
                    // The actors are gone (shutting down): undo, the next run retries.
                    self.binds_in_flight -= 1;
                    scheduler.snapshot.forget(&key);
                    self.queue.failed(&key, now);
                }
            }
            Outcome::Unschedulable(failure) => {
                let result =
                    if failure.code == Code::Error { AttemptResult::Error } else { AttemptResult::Unschedulable };
                profile.attempt(result, started.elapsed());
                if failure.code == Code::Error {
                    self.queue.failed(&key, now);
                } else {
                    self.queue.unschedulable(&key, now);
                }
                if let Some((node, victims)) = failure.nomination {
                    self.actors.reporter.report(Report::Preempt { pod: Arc::clone(&pod), node, victims });
                }
                self.actors.reporter.report(Report::Unschedulable { pod, message: failure.message });
            }
            Outcome::Gated => self.queue.unschedulable(&key, now),
            Outcome::NoProfile => self.queue.delete(&key),
        }
    }
}
