//! Watches that feed the scheduling thread.
//!
//! One task per kind runs kube's watcher (list, then watch; re-list after `410 Gone`
//! or an error, with backoff) and turns its events into [`Update`]s on a bounded
//! channel: a slow scheduling thread slows the watches down rather than letting
//! memory grow. A re-list reports what vanished meanwhile as deletions, so the
//! snapshot never keeps an object the server no longer has.

use super::watched_pod::WatchedPod;
use super::Update;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_engine::Selector;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The kinds the scheduler watches, in the order `Update::Synced` reports them.
pub const KINDS: [&str; 9] = [
    "Node",
    "Pod",
    "Namespace",
    "Service",
    "ReplicaSet",
    "StatefulSet",
    "PodDisruptionBudget",
    "PersistentVolumeClaim",
    "PersistentVolume",
];

fn key<K: Resource>(object: &K) -> String {
    match object.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// Runs one watch until aborted. `apply` turns an object into an update (`None`: not
/// of interest); `gone` turns a key into a deletion. `resync` restarts the watch from a
/// fresh list (the scheduling thread asks for it after its queue overflowed).
async fn watch<K>(
    api: Api<K>,
    kind: &'static str,
    updates: flume::Sender<Update>,
    resync: Arc<Notify>,
    apply: impl Fn(K) -> Option<Update>,
    gone: impl Fn(String) -> Update,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut known: HashSet<String> = HashSet::new();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let mut stream =
            watcher::watcher(api.clone(), watcher::Config::default().page_size(1000)).default_backoff().boxed();
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = resync.notified() => break,
            };
            let Some(event) = event else { return };
            let sent = match event {
                Ok(Event::Init) => {
                    listed.clear();
                    Ok(())
                }
                Ok(Event::InitApply(object)) => {
                    listed.insert(key(&object));
                    match apply(object) {
                        Some(update) => updates.send_async(update).await,
                        None => Ok(()),
                    }
                }
                Ok(Event::InitDone) => {
                    let mut result = Ok(());
                    for vanished in known.difference(&listed) {
                        result = result.and(updates.send_async(gone(vanished.clone())).await);
                    }
                    known = std::mem::take(&mut listed);
                    result.and(updates.send_async(Update::Synced(kind)).await)
                }
                Ok(Event::Apply(object)) => {
                    known.insert(key(&object));
                    match apply(object) {
                        Some(update) => updates.send_async(update).await,
                        None => Ok(()),
                    }
                }
                Ok(Event::Delete(object)) => {
                    let key = key(&object);
                    known.remove(&key);
                    updates.send_async(gone(key)).await
                }
                Err(error) => {
                    tracing::warn!(kind, %error, "scheduler watch failed; retrying");
                    Ok(())
                }
            };
            if sent.is_err() {
                return; // the scheduling thread is gone
            }
        }
    }
}

fn split(key: &str) -> (String, String) {
    match key.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), key.to_string()),
    }
}

/// Watches one workload kind whose selector feeds the default spread constraints.
/// `selector_of` reads it; `None` (no selector, or an empty map) removes any selector
/// recorded before, so an update that drops the selector is not missed.
fn watch_workload<K>(
    client: &Client,
    kind: &'static str,
    updates: flume::Sender<Update>,
    selector_of: fn(&K) -> Option<LabelSelector>,
) -> impl std::future::Future<Output = ()> + Send
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + 'static,
{
    let apply = move |object: K| {
        // A selector that does not parse selects nothing, as in kube.
        let selector =
            selector_of(&object).map(|s| Selector::from_label_selector(&s).unwrap_or_else(|_| Selector::nothing()));
        Some(Update::Workload {
            kind,
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
            selector,
        })
    };
    let gone = move |key: String| {
        let (namespace, name) = split(&key);
        Update::Workload { kind, namespace, name, selector: None }
    };
    watch(Api::<K>::all(client.clone()), kind, updates, Arc::new(Notify::new()), apply, gone)
}

/// A Service's map selector as a label selector.
fn map_selector(labels: Option<&std::collections::BTreeMap<String, String>>) -> Option<LabelSelector> {
    let labels = labels.filter(|l| !l.is_empty())?;
    Some(LabelSelector { match_labels: Some(labels.clone()), ..Default::default() })
}

/// Starts every watch; the handles abort them.
pub fn start(client: &Client, updates: &flume::Sender<Update>, pod_resync: &Arc<Notify>) -> Vec<JoinHandle<()>> {
    let never = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let mut spawn = |future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        tasks.push(tokio::spawn(future));
    };
    let u = || updates.clone();
    spawn(Box::pin(watch(
        Api::<Node>::all(client.clone()),
        "Node",
        u(),
        never.clone(),
        |node| Some(Update::Node(Arc::new(node))),
        Update::NodeGone,
    )));
    spawn(Box::pin(watch(
        Api::<WatchedPod>::all(client.clone()),
        "Pod",
        u(),
        pod_resync.clone(),
        |pod| Some(Update::Pod(Arc::new(pod.0))),
        Update::PodGone,
    )));
    spawn(Box::pin(watch(
        Api::<Namespace>::all(client.clone()),
        "Namespace",
        u(),
        never.clone(),
        |ns| Some(Update::Namespace(Box::new(ns))),
        Update::NamespaceGone,
    )));
    spawn(Box::pin(watch_workload::<Service>(client, "Service", u(), |svc| {
        map_selector(svc.spec.as_ref().and_then(|s| s.selector.as_ref()))
    })));
    spawn(Box::pin(watch_workload::<ReplicaSet>(client, "ReplicaSet", u(), |rs| {
        rs.spec.as_ref().map(|s| s.selector.clone())
    })));
    spawn(Box::pin(watch_workload::<StatefulSet>(client, "StatefulSet", u(), |ss| {
        ss.spec.as_ref().map(|s| s.selector.clone())
    })));
    spawn(Box::pin(watch(
        Api::<PodDisruptionBudget>::all(client.clone()),
        "PodDisruptionBudget",
        u(),
        never.clone(),
        |pdb| Some(Update::Budget(Arc::new(pdb))),
        |key| {
            let (namespace, name) = split(&key);
            Update::BudgetGone { namespace, name }
        },
    )));
    spawn(Box::pin(watch(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        "PersistentVolumeClaim",
        u(),
        never.clone(),
        |claim| Some(Update::Claim(Box::new(claim))),
        |key| {
            let (namespace, name) = split(&key);
            Update::ClaimGone { namespace, name }
        },
    )));
    spawn(Box::pin(watch(
        Api::<PersistentVolume>::all(client.clone()),
        "PersistentVolume",
        u(),
        never,
        |volume| Some(Update::Volume(Box::new(volume))),
        Update::VolumeGone,
    )));
    tasks
}
