//! Events: what an agent tells users about the objects it acts on (`kubectl describe`
//! lists them), recorded without ever slowing the agent down.
//!
//! A [`Recorder`] hands each event to one background writer over a bounded channel:
//! recording never waits, and when the writer falls behind the event is dropped and
//! counted (kube's broadcaster drops the same way). The writer does what kube's
//! `EventCorrelator` does before writing:
//! - a repeat of an event (same object, type, reason and message) within ten minutes
//!   bumps the first one's `count` and `lastTimestamp` instead of creating another;
//! - each object gets a token bucket (25 events, then one per five minutes), so a
//!   10,000-pod ReplicaSet costs 25 event writes, not 10,000.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events waiting for the writer, at most.
const QUEUE: usize = 1000;
/// A repeat within this long updates the earlier event.
const CORRELATION_WINDOW: Duration = Duration::from_secs(600);
/// Distinct events remembered for correlation, at most (oldest forgotten first).
const REMEMBERED: usize = 4096;
/// Per object: events allowed in a burst, and how often one more is allowed.
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(300);

/// `Normal` or `Warning`, as `kubectl get events` shows the type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event to write.
struct Pending {
    object: ObjectReference,
    kind: EventType,
    reason: &'static str,
    message: String,
    component: &'static str,
}

/// Records events as one component (`replicaset-controller`). Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    /// `None`: a recorder that records nothing (an agent started without a writer).
    sink: Option<mpsc::Sender<Pending>>,
    component: &'static str,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// A recorder that discards every event.
    pub fn discarding(component: &'static str) -> Recorder {
        Recorder { sink: None, component, dropped: Arc::new(AtomicU64::new(0)) }
    }

    pub fn normal<K: Resource<DynamicType = ()>>(&self, object: &K, reason: &'static str, message: String) {
        self.record(object, EventType::Normal, reason, message);
    }

    pub fn warning<K: Resource<DynamicType = ()>>(&self, object: &K, reason: &'static str, message: String) {
        self.record(object, EventType::Warning, reason, message);
    }

    pub fn record<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        kind: EventType,
        reason: &'static str,
        message: String,
    ) {
        let Some(sink) = &self.sink else { return };
        let pending = Pending { object: object.object_ref(&()), kind, reason, message, component: self.component };
        if sink.try_send(pending).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer every [`Recorder`] of one process (or controller manager) feeds.
pub struct EventSink {
    sink: mpsc::Sender<Pending>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Starts the writer on `client`. Must be called inside a tokio runtime; the
    /// writer ends when the sink and every recorder are gone.
    pub fn start(client: Client) -> (EventSink, JoinHandle<()>) {
        let (sink, events) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_events(client, events));
        (EventSink { sink, dropped: Arc::new(AtomicU64::new(0)) }, task)
    }

    pub fn recorder(&self, component: &'static str) -> Recorder {
        Recorder { sink: Some(self.sink.clone()), component, dropped: Arc::clone(&self.dropped) }
    }

    /// Events dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What an event says about a failed API call: the server's message, not the
/// client's debug rendering of it.
pub fn failure(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// What the writer does with one event.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Write a new event with this name.
    Create(String),
    /// Bump the event of this name to this count.
    Repeat { name: String, count: i32 },
    /// Too many events for this object lately.
    Drop,
}

/// What identifies a repeat: the object, and what was said about it.
type Key = (String, EventType, &'static str, String);

/// kube's correlator, pure: repeats and the per-object spam filter.
#[derive(Default)]
struct Correlator {
    seen: HashMap<Key, (String, i32, Instant)>,
    order: VecDeque<Key>,
    buckets: HashMap<String, (f64, Instant)>,
}

impl Correlator {
    fn decide(&mut self, pending: &Pending, now: Instant) -> Decision {
        let object = object_key(&pending.object);
        let (tokens, last) = self.buckets.entry(object.clone()).or_insert((SPAM_BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() / SPAM_REFILL.as_secs_f64()).min(SPAM_BURST);
        *last = now;
        if *tokens < 1.0 {
            return Decision::Drop;
        }
        *tokens -= 1.0;
        let key = (object, pending.kind, pending.reason, pending.message.clone());
        if let Some((name, count, at)) = self.seen.get_mut(&key) {
            if now.duration_since(*at) < CORRELATION_WINDOW {
                *count += 1;
                *at = now;
                return Decision::Repeat { name: name.clone(), count: *count };
            }
        }
        let name = unique_name(pending.object.name.as_deref().unwrap_or("unknown"));
        if self.seen.insert(key.clone(), (name.clone(), 1, now)).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        if self.buckets.len() > REMEMBERED {
            // A bucket refilled by now carries no information: forgetting it changes
            // nothing.
            let refill = SPAM_REFILL.as_secs_f64();
            self.buckets
                .retain(|_, (tokens, last)| *tokens + now.duration_since(*last).as_secs_f64() / refill < SPAM_BURST);
        }
        Decision::Create(name)
    }
}

fn object_key(object: &ObjectReference) -> String {
    format!(
        "{}/{}/{}/{}",
        object.kind.as_deref().unwrap_or_default(),
        object.namespace.as_deref().unwrap_or_default(),
        object.name.as_deref().unwrap_or_default(),
        object.uid.as_deref().unwrap_or_default()
    )
}

/// Events of cluster-scoped objects (Nodes) live in `default`, as kube's do.
fn event_namespace(object: &ObjectReference) -> String {
    object.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into())
}

async fn write_events(client: Client, mut events: mpsc::Receiver<Pending>) {
    let mut correlator = Correlator::default();
    while let Some(pending) = events.recv().await {
        let wall = Timestamp::now();
        let api: Api<Event> = Api::namespaced(client.clone(), &event_namespace(&pending.object));
        let result = match correlator.decide(&pending, Instant::now()) {
            Decision::Drop => continue,
            Decision::Create(name) => {
                let details = EventDetails {
                    kind: pending.kind,
                    reason: pending.reason,
                    action: None,
                    message: pending.message,
                    component: pending.component,
                };
                let event = new_event(name, pending.object, details, wall);
                api.create(&PostParams::default(), &event).await.map(drop)
            }
            Decision::Repeat { name, count } => {
                let patch = serde_json::json!({"count": count, "lastTimestamp": Time(wall)});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.map(drop)
            }
        };
        // An event is best effort: a namespace going away or an event expired by its
        // TTL must not stop the next one.
        if let Err(error) = result {
            tracing::debug!(%error, "writing an event");
        }
    }
}

/// A name for a new event about the object named `object_name`, as kube names them
/// (`NAME.HEX`): the clock in nanoseconds plus a sequence, so unique in this process.
pub fn unique_name(object_name: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = Timestamp::now().as_nanosecond() as u64;
    format!("{object_name}.{:x}", nanos.wrapping_add(SEQUENCE.fetch_add(1, Ordering::Relaxed)))
}

/// What a core/v1 Event says, apart from its name and time.
pub struct EventDetails<'a> {
    pub kind: EventType,
    pub reason: &'a str,
    /// What the component did or failed to do (`Binding`); optional in core/v1.
    pub action: Option<&'a str>,
    pub message: String,
    pub component: &'a str,
}

/// A core/v1 Event named `name` about `object`, first seen `now`, in the object's
/// namespace (`default` for cluster-scoped objects).
pub fn new_event(name: String, object: ObjectReference, details: EventDetails<'_>, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta { name: Some(name), namespace: Some(event_namespace(&object)), ..Default::default() },
        involved_object: object,
        reason: Some(details.reason.into()),
        message: Some(details.message),
        type_: Some(details.kind.as_str().into()),
        action: details.action.map(str::to_string),
        source: Some(EventSource { component: Some(details.component.into()), host: None }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(details.component.into()),
        reporting_instance: Some(details.component.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(name: &str, reason: &'static str, message: &str) -> Pending {
        Pending {
            object: ObjectReference {
                kind: Some("ReplicaSet".into()),
                namespace: Some("default".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            kind: EventType::Normal,
            reason,
            message: message.into(),
            component: "replicaset-controller",
        }
    }

    #[test]
    fn repeats_bump_the_first_event_within_the_window() {
        let mut correlator = Correlator::default();
        let start = Instant::now();
        let Decision::Create(name) = correlator.decide(&pending("web", "Failed", "boom"), start) else {
            panic!("the first event is created")
        };
        assert!(name.starts_with("web."), "{name}");
        assert_eq!(
            correlator.decide(&pending("web", "Failed", "boom"), start + Duration::from_secs(1)),
            Decision::Repeat { name: name.clone(), count: 2 }
        );
        // Something else said about the same object is its own event.
        assert!(matches!(correlator.decide(&pending("web", "Other", "boom"), start), Decision::Create(_)));
        // Past the window, a repeat starts afresh.
        let later = start + Duration::from_secs(1) + CORRELATION_WINDOW;
        assert!(matches!(correlator.decide(&pending("web", "Failed", "boom"), later), Decision::Create(_)));
    }

    #[test]
    fn an_object_gets_a_burst_of_events_then_one_per_refill() {
        let mut correlator = Correlator::default();
        let start = Instant::now();
        let decisions: Vec<Decision> = (0..30)
            .map(|i| correlator.decide(&pending("web", "SuccessfulCreate", &format!("Created pod: p{i}")), start))
            .collect();
        assert_eq!(decisions.iter().filter(|d| **d == Decision::Drop).count(), 5, "25 allowed, 5 dropped");
        // Another object has its own bucket.
        assert!(matches!(correlator.decide(&pending("db", "SuccessfulCreate", "x"), start), Decision::Create(_)));
        // One refill period later, one more.
        let later = start + SPAM_REFILL;
        assert!(matches!(correlator.decide(&pending("web", "SuccessfulCreate", "y"), later), Decision::Create(_)));
        assert_eq!(correlator.decide(&pending("web", "SuccessfulCreate", "z"), later), Decision::Drop);
    }
}
