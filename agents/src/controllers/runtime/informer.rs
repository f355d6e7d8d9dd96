//! Shared informers: one watch per kind, however many controllers read it.
//!
//! An informer lists, then watches from the list's resourceVersion (kube's watcher:
//! bookmarks on, a re-list after `410 Gone` or an error, with backoff). Every change
//! lands in its [`Cache`] first and is then handed to the handlers controllers
//! registered, which map it to work-queue keys. A re-list swaps the cache in one step
//! and reports what changed meanwhile, deletions included, so no controller waits
//! on an object the server no longer has.

use super::cache::{object_key, Cache};
use crate::events::{EventSink, Recorder};
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What happened to one object.
pub enum Change<'a, K> {
    Added(&'a Arc<K>),
    Updated { old: &'a Arc<K>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

impl<'a, K> Change<'a, K> {
    /// The object as it is now (or was last, for a deletion).
    pub fn object(&self) -> &'a Arc<K> {
        match self {
            Change::Added(object) | Change::Deleted(object) => object,
            Change::Updated { new, .. } => new,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;

/// The bound every informer's kind meets.
pub trait Watched: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}
impl<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static> Watched for K {}

/// One kind's watch and cache.
pub struct Informer<K> {
    cache: Arc<Cache<K>>,
    handlers: Mutex<Vec<Handler<K>>>,
}

impl<K: Watched> Informer<K> {
    fn new() -> Self {
        Informer { cache: Arc::new(Cache::default()), handlers: Mutex::new(Vec::new()) }
    }

    pub fn cache(&self) -> Arc<Cache<K>> {
        Arc::clone(&self.cache)
    }

    /// Calls `handler` for every change, after the cache has it. Register before the
    /// informers start; handlers must be quick (they run on the watch's task).
    pub fn on_change(&self, handler: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        self.handlers.lock().push(Box::new(handler));
    }

    fn dispatch(&self, change: Change<'_, K>) {
        for handler in self.handlers.lock().iter() {
            handler(&change);
        }
    }

    /// A fresh list replaces the cache in one step; the handlers hear what changed
    /// since the last one, deletions included.
    fn relisted(&self, fresh: Vec<Arc<K>>) {
        let mut before = self.cache.replace(&fresh);
        self.cache.mark_synced();
        for object in &fresh {
            match before.remove(&object_key(object.as_ref())) {
                None => self.dispatch(Change::Added(object)),
                Some(old) if old.meta().resource_version != object.meta().resource_version => {
                    self.dispatch(Change::Updated { old: &old, new: object })
                }
                Some(_) => {}
            }
        }
        // What is left was deleted while the watch was down.
        for object in before.values() {
            self.dispatch(Change::Deleted(object));
        }
    }

    /// Loads `objects` as if listed from the server (tests drive informers with the
    /// fake API's state this way, without a watch).
    #[cfg(test)]
    pub(crate) fn load(&self, objects: Vec<K>) {
        self.relisted(objects.into_iter().map(Arc::new).collect());
    }

    /// Runs the watch until aborted.
    async fn run(self: Arc<Self>, api: Api<K>) {
        let config = watcher::Config::default().page_size(500);
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut listing: Vec<Arc<K>> = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(object)) => listing.push(Arc::new(object)),
                Ok(Event::InitDone) => self.relisted(std::mem::take(&mut listing)),
                Ok(Event::Apply(object)) => {
                    let object = Arc::new(object);
                    match self.cache.apply(Arc::clone(&object)) {
                        Some(old) => self.dispatch(Change::Updated { old: &old, new: &object }),
                        None => self.dispatch(Change::Added(&object)),
                    }
                }
                Ok(Event::Delete(object)) => {
                    let key = object_key(&object);
                    let gone = self.cache.remove(&key).unwrap_or_else(|| Arc::new(object));
                    self.dispatch(Change::Deleted(&gone));
                }
                Err(error) => tracing::warn!(kind = %K::kind(&()), %error, "informer watch failed; retrying"),
            }
        }
    }
}

/// Starts one informer's watch.
type Starter = Box<dyn FnOnce() -> JoinHandle<()> + Send>;
/// Whether one informer has loaded its first list.
type SyncCheck = Box<dyn Fn() -> bool + Send + Sync>;

/// The informers of one controller manager, one per kind, created on first use; and
/// what else every controller registers with: the client and the event writer.
pub struct Informers {
    client: Client,
    events: Option<EventSink>,
    informers: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    starters: Mutex<Vec<Starter>>,
    synced: Mutex<Vec<SyncCheck>>,
}

impl Informers {
    /// Informers whose controllers' events are discarded (tests).
    pub fn new(client: Client) -> Self {
        Self::build(client, None)
    }

    /// Informers whose controllers record events through `events`.
    pub fn with_events(client: Client, events: EventSink) -> Self {
        Self::build(client, Some(events))
    }

    fn build(client: Client, events: Option<EventSink>) -> Self {
        Informers {
            client,
            events,
            informers: Mutex::new(HashMap::new()),
            starters: Mutex::new(Vec::new()),
            synced: Mutex::new(Vec::new()),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A recorder of events as `component` (`replicaset-controller`).
    pub fn recorder(&self, component: &'static str) -> Recorder {
        match &self.events {
            Some(events) => events.recorder(component),
            None => Recorder::discarding(component),
        }
    }

    /// The informer of kind `K` (across all namespaces).
    pub fn get<K: Watched>(&self) -> Arc<Informer<K>> {
        let mut informers = self.informers.lock();
        if let Some(existing) = informers.get(&TypeId::of::<K>()) {
            return Arc::clone(existing).downcast::<Informer<K>>().expect("keyed by its type");
        }
        let informer = Arc::new(Informer::<K>::new());
        informers.insert(TypeId::of::<K>(), informer.clone());
        let api = Api::<K>::all(self.client.clone());
        let run = Arc::clone(&informer);
        self.starters.lock().push(Box::new(move || tokio::spawn(run.run(api))));
        let cache = informer.cache();
        self.synced.lock().push(Box::new(move || cache.synced()));
        informer
    }

    /// Starts every informer created so far. Must be called inside a tokio runtime.
    pub fn start(&self) -> Vec<JoinHandle<()>> {
        self.starters.lock().drain(..).map(|start| start()).collect()
    }

    /// Waits until every informer has loaded its first list.
    pub async fn wait_synced(&self) {
        loop {
            if self.synced.lock().iter().all(|synced| synced()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
