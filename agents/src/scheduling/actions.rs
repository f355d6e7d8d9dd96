//! What the scheduler does to the cluster, run on tokio beside the scheduling thread:
//! binds (DefaultBinder: `POST pods/NAME/binding`), events and pod status (the
//! `PodScheduled` condition, `nominatedNodeName`), and preemption (victims marked with
//! a `DisruptionTarget` condition, then deleted).
//!
//! Binds are never dropped: the scheduling thread bounds how many are in flight and
//! hears every answer. Events and status reports are best effort, as in kube's event
//! broadcaster: a bounded queue, and what does not fit is dropped and counted.

use super::metrics::{ProfileMetrics, SchedulerMetrics};
use super::Update;
use crate::client::retry_throttled;
use crate::events::{self, EventDetails, EventType};
use k8s_openapi::api::core::v1::{Binding, Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The component name on events and in `managedFields`.
pub const COMPONENT: &str = "default-scheduler";

#[derive(Debug)]
pub enum BindResult {
    Bound,
    /// The pod was deleted or bound by someone else meanwhile: nothing to retry.
    Moot,
    /// The API refused or failed: the pod backs off and is tried again.
    Failed,
}

#[derive(Debug)]
pub struct BindRequest {
    pub key: Arc<str>,
    pub pod: Arc<Pod>,
    pub node: String,
    /// The series of the profile that placed the pod (its bind is timed there).
    pub metrics: Arc<ProfileMetrics>,
}

#[derive(Debug)]
pub enum Report {
    /// A `Scheduled` event: the bind succeeded.
    Scheduled { pod: Arc<Pod>, node: String },
    /// A `FailedScheduling` event and the pod's `PodScheduled=False` condition.
    Unschedulable { pod: Arc<Pod>, message: String },
    /// Evict `victims` (`namespace/name`) from `node` so `pod` fits there.
    Preempt { pod: Arc<Pod>, node: String, victims: Vec<String> },
}

/// The sending side of the bounded report queue.
#[derive(Clone)]
pub struct Reporter {
    reports: mpsc::Sender<Report>,
    metrics: Arc<SchedulerMetrics>,
}

impl Reporter {
    /// Queues a report, or drops it (counted) when the queue is full.
    pub fn report(&self, report: Report) {
        if self.reports.try_send(report).is_err() {
            self.metrics.reports_dropped.inc();
        }
    }
}

/// The scheduling thread's handle on the actors.
pub struct Actors {
    binds: mpsc::UnboundedSender<BindRequest>,
    pub reporter: Reporter,
}

impl Actors {
    /// Sends a bind; its answer arrives as `Update::Bound`. Unbounded here because the
    /// scheduling thread caps the binds in flight.
    pub fn bind(&self, request: BindRequest) -> bool {
        self.binds.send(request).is_ok()
    }
}

pub fn start(
    client: Client,
    updates: flume::Sender<Update>,
    metrics: Arc<SchedulerMetrics>,
    report_capacity: usize,
) -> (Actors, Vec<JoinHandle<()>>) {
    let (binds_tx, binds_rx) = mpsc::unbounded_channel();
    let (reports_tx, reports_rx) = mpsc::channel(report_capacity.max(1));
    let reporter = Reporter { reports: reports_tx, metrics: Arc::clone(&metrics) };
    let binder = Binder { client: client.clone(), updates, metrics: Arc::clone(&metrics), reporter: reporter.clone() };
    let tasks = vec![tokio::spawn(binder.run(binds_rx)), tokio::spawn(report_loop(client, reports_rx, metrics))];
    (Actors { binds: binds_tx, reporter }, tasks)
}

#[derive(Clone)]
struct Binder {
    client: Client,
    updates: flume::Sender<Update>,
    metrics: Arc<SchedulerMetrics>,
    reporter: Reporter,
}

impl Binder {
    /// Takes binds as they come, a batch at a time, and sends each batch's requests
    /// together: the server commits concurrent writes in one group.
    async fn run(self, mut requests: mpsc::UnboundedReceiver<BindRequest>) {
        let mut batch = Vec::with_capacity(256);
        while requests.recv_many(&mut batch, 256).await > 0 {
            for request in batch.drain(..) {
                tokio::spawn(self.clone().bind(request));
            }
        }
    }

    async fn bind(self, request: BindRequest) {
        let started = Instant::now();
        let BindRequest { key, pod, node, metrics: profile } = request;
        let (namespace, name) = namespace_and_name(&pod);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.clone()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = PostParams::default();
        let answer =
            retry_throttled(|| api.create_subresource::<_, serde_json::Value>("binding", name, &params, &binding))
                .await;
        profile.bind_duration.observe(started.elapsed());
        let result = match answer {
            Ok(_) => BindResult::Bound,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => BindResult::Moot,
            Err(error) => {
                self.metrics.bind_errors.inc();
                let message = format!("Binding rejected: running Bind plugin \"DefaultBinder\": {error}");
                self.reporter.report(Report::Unschedulable { pod: Arc::clone(&pod), message });
                BindResult::Failed
            }
        };
        if matches!(result, BindResult::Bound) {
            self.reporter.report(Report::Scheduled { pod, node });
        }
        let _ = self.updates.send_async(Update::Bound { key, result }).await;
    }
}

fn namespace_and_name(pod: &Pod) -> (&str, &str) {
    (pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""))
}

/// A core/v1 Event about `pod` from the scheduler.
pub fn event(pod: &Pod, kind: EventType, reason: &str, action: &str, message: String) -> Event {
    let name = events::unique_name(pod.metadata.name.as_deref().unwrap_or_default());
    let details = EventDetails { kind, reason, action: Some(action), message, component: COMPONENT };
    events::new_event(name, pod.object_ref(&()), details, Timestamp::now())
}

/// Reports handled at once, at most: each is an API write or two, so they overlap
/// (the server commits concurrent writes together) without growing without bound, and
/// together with the binds stay well under the API server's default limit of 200
/// mutating requests in flight.
const REPORTS_IN_FLIGHT: usize = 32;

async fn report_loop(client: Client, mut reports: mpsc::Receiver<Report>, metrics: Arc<SchedulerMetrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(REPORTS_IN_FLIGHT));
    while let Some(report) = reports.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let (client, metrics) = (client.clone(), Arc::clone(&metrics));
        tokio::spawn(async move {
            match report {
                Report::Scheduled { pod, node } => scheduled(&client, &pod, &node).await,
                Report::Unschedulable { pod, message } => unschedulable(&client, &pod, message).await,
                Report::Preempt { pod, node, victims } => preempt(&client, &pod, &node, &victims, &metrics).await,
            }
            drop(slot);
        });
    }
}

async fn scheduled(client: &Client, pod: &Pod, node: &str) {
    let (namespace, name) = namespace_and_name(pod);
    let message = format!("Successfully assigned {namespace}/{name} to {node}");
    let event = event(pod, EventType::Normal, "Scheduled", "Binding", message);
    if let Err(error) = write_event(client, namespace, &event).await {
        tracing::debug!(%error, pod = name, "writing a Scheduled event");
    }
}

/// Creates `event` in `namespace`, waiting out throttling. The created Event the
/// server answers with is not decoded: nothing reads it, and this is one write per
/// placed pod.
async fn write_event(client: &Client, namespace: &str, event: &Event) -> Result<(), kube::Error> {
    let body = serde_json::to_vec(event).map_err(kube::Error::SerdeError)?;
    let uri = format!("/api/v1/namespaces/{namespace}/events");
    retry_throttled(|| {
        let request = http::Request::post(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .map_err(kube::Error::HttpError);
        async move { client.request_text(request?).await.map(drop) }
    })
    .await
}

async fn unschedulable(client: &Client, pod: &Pod, message: String) {
    let (namespace, name) = namespace_and_name(pod);
    let event = event(pod, EventType::Warning, "FailedScheduling", "Scheduling", message.clone());
    if let Err(error) = write_event(client, namespace, &event).await {
        tracing::debug!(%error, pod = name, "writing a FailedScheduling event");
    }
    let already = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
        conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.message.as_deref() == Some(message.as_str()))
    });
    if already {
        return;
    }
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastProbeTime": null, "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let patch = Patch::Strategic(patch);
    let params = PatchParams::default();
    if let Err(error) = retry_throttled(|| pods.patch_status(name, &params, &patch)).await {
        tracing::debug!(%error, pod = name, "setting PodScheduled=False");
    }
}

/// kube's preemption: nominate the node on the preemptor, then for each victim set the
/// `DisruptionTarget` condition, delete it and say why in an event.
async fn preempt(client: &Client, pod: &Pod, node: &str, victims: &[String], metrics: &SchedulerMetrics) {
    let (namespace, name) = namespace_and_name(pod);
    metrics.preemption_attempts.inc();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let nominate = json!({"status": {"nominatedNodeName": node}});
    if let Err(error) = pods.patch_status(name, &PatchParams::default(), &Patch::Merge(nominate)).await {
        tracing::warn!(%error, pod = name, "setting nominatedNodeName");
    }
    let preemptor = pod.metadata.uid.as_deref().unwrap_or(name);
    for victim in victims {
        let Some((victim_ns, victim_name)) = victim.split_once('/') else { continue };
        let api: Api<Pod> = Api::namespaced(client.clone(), victim_ns);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{COMPONENT}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        let marked = api.patch_status(victim_name, &PatchParams::default(), &Patch::Strategic(condition)).await;
        let victim_pod = match marked {
            Ok(pod) => pod,
            Err(error) => {
                tracing::debug!(%error, victim, "marking a preemption victim");
                continue;
            }
        };
        match api.delete(victim_name, &DeleteParams::default()).await {
            Ok(_) => {
                metrics.preemption_victims.inc();
                let message = format!("Preempted by pod {preemptor} on node {node}");
                let event = event(&victim_pod, EventType::Normal, "Preempted", "Preempting", message);
                if let Err(error) = write_event(client, victim_ns, &event).await {
                    tracing::debug!(%error, victim, "writing a Preempted event");
                }
            }
            Err(error) => tracing::warn!(%error, victim, "deleting a preemption victim"),
        }
    }
}
