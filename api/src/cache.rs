//! The watch cache: every stored object the API serves, in memory, kept current by one
//! store watch, as kube-apiserver's watch cache is.
//!
//! GET and LIST read here instead of RocksDB. One applier thread owns the only store
//! watcher: it loads everything at one revision, then applies each commit to the
//! shard of its resource (one `RwLock`ed ordered map per storage segment, so a burst of
//! pod writes never blocks a read of nodes). Values are the store's own `Bytes`: the
//! cache shares them with the watch ring instead of copying.
//!
//! **Consistency.** A shard's content is always the state of its keys at one revision:
//! the later of the shard's last applied change (`through`) and the revision every
//! shard has been brought to (`applied`, read while holding the shard's lock). A read
//! that must be current (`resourceVersion` unset) first waits until `applied` reaches
//! the store's current revision, as kube-apiserver's consistent reads from cache do;
//! a read that accepts any state (`resourceVersion=0`) does not wait. When the cache
//! cannot answer (still loading, re-listing after its watcher fell behind, or too slow
//! to catch up within [`FRESHNESS_WAIT`]), the caller reads the store: the cache is an
//! accelerator, never the only source of truth.
//!
//! **The RBAC policy** is derived here too: after a load, and after any batch of commits
//! that touches a Role, ClusterRole or binding, the applier rebuilds the policy from
//! the cached RBAC objects and publishes it (`authorizer`) before it reports the batch
//! applied, so a read that waited for a revision also authorizes by its bindings.
//! Likewise the Node authorizer's graph (what each node's pods use) follows every pod
//! and claim change.

use crate::authz::rbac::{Objects, Policy};
use crate::authz::Authorizer;
use crate::resources::RESOURCES;
use bytes::Bytes;
use keelson_engine::Revision;
use keelson_store::{ListOptions, ReadAt, Store, StoreError, WatchItem, Watcher};
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long a read waits for the cache to catch up before it reads the store instead.
pub const FRESHNESS_WAIT: Duration = Duration::from_secs(3);
/// Keys per store read while (re)loading.
const LOAD_PAGE: usize = 10_000;
/// How often the applier checks whether it should stop while no commit arrives.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// One cached object: the stored bytes (without `resourceVersion`) and its revision.
#[derive(Clone, Debug)]
pub struct Cached {
    pub value: Bytes,
    pub mod_revision: Revision,
    /// The object's protobuf message (stamped with its revision), built by the first
    /// reader that asks for protobuf and shared by every later one: a protobuf LIST
    /// then copies bytes instead of parsing and encoding each object. A change makes a
    /// new entry, so this never goes stale.
    protobuf: Arc<OnceLock<Option<Bytes>>>,
}

impl PartialEq for Cached {
    fn eq(&self, other: &Cached) -> bool {
        self.value == other.value && self.mod_revision == other.mod_revision
    }
}

impl Cached {
    pub fn new(value: Bytes, mod_revision: Revision) -> Cached {
        Cached { value, mod_revision, protobuf: Arc::default() }
    }

    /// The object's protobuf message body; `None` if protobuf cannot express it.
    pub fn protobuf(&self) -> Option<Bytes> {
        self.protobuf
            .get_or_init(|| {
                let stamped = crate::object::stamped(&self.value, self.mod_revision.get());
                let value: serde_json::Value = serde_json::from_slice(&stamped).ok()?;
                crate::protobuf::encode_body(&value).ok().map(Bytes::from)
            })
            .clone()
    }
}

#[derive(Default)]
struct ShardState {
    objects: BTreeMap<Bytes, Cached>,
    /// The revision of the last change applied to this shard.
    through: Revision,
}

pub struct WatchCache {
    store: Arc<Store>,
    /// One shard per storage segment, found by segment name (fixed at start: no lock).
    shards: Vec<RwLock<ShardState>>,
    by_segment: HashMap<&'static str, usize>,
    /// Every commit through this revision has been applied to every shard.
    applied: AtomicU64,
    /// Set once the first load is done: before that, nothing is served from here.
    loaded: AtomicBool,
    /// Woken whenever `applied` moves.
    progress: event_listener::Event,
    stopped: AtomicBool,
    /// Reads answered here, and reads sent to the store (not loaded, or not fresh in time).
    served: AtomicU64,
    fell_back: AtomicU64,
    reloads: AtomicU64,
    /// The shards of the RBAC kinds: ClusterRoles, Roles, ClusterRoleBindings,
    /// RoleBindings, in that order.
    rbac: [usize; 4],
    /// The shards of Pods and PersistentVolumeClaims, which the node graph follows.
    pods: usize,
    claims: usize,
    /// The RBAC policy, as of the last applied change to the RBAC shards, and the node
    /// graph as of the last applied batch.
    pub authorizer: Authorizer,
}

/// The RBAC kinds' plurals, in the order of [`WatchCache::rbac`].
const RBAC_KINDS: [&str; 4] = ["clusterroles", "roles", "clusterrolebindings", "rolebindings"];

impl WatchCache {
    /// Creates the cache and starts its applier thread, which loads the store and then
    /// follows it. Reads fall back to the store until the load is done.
    pub fn start(store: Arc<Store>) -> Arc<WatchCache> {
        let mut by_segment = HashMap::new();
        for info in RESOURCES {
            let next = by_segment.len();
            by_segment.entry(info.storage).or_insert(next);
        }
        let rbac = RBAC_KINDS.map(|plural| {
            let info = RESOURCES
                .iter()
                .find(|r| r.group == "rbac.authorization.k8s.io" && r.plural == plural)
                .expect("the RBAC kinds are served");
            by_segment[info.storage]
        });
        let core_shard = |plural: &str| {
            let info = RESOURCES.iter().find(|r| r.group.is_empty() && r.plural == plural).expect("a core kind");
            by_segment[info.storage]
        };
        let (pods, claims) = (core_shard("pods"), core_shard("persistentvolumeclaims"));
        let cache = Arc::new(WatchCache {
            store,
            shards: (0..by_segment.len()).map(|_| RwLock::new(ShardState::default())).collect(),
            by_segment,
            applied: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            progress: event_listener::Event::new(),
            stopped: AtomicBool::new(false),
            served: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            rbac,
            pods,
            claims,
            authorizer: Authorizer::default(),
        });
        let applier = Arc::clone(&cache);
        std::thread::Builder::new()
            .name("watch-cache".into())
            .spawn(move || applier.run())
            .expect("spawning the watch cache's applier thread");
        cache
    }

    /// Stops the applier (it also stops by itself when the store closes).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// The revision every shard has been brought to.
    pub fn applied(&self) -> Revision {
        Revision(self.applied.load(Ordering::Acquire))
    }

    /// Whether the cache can serve a read that needs every commit through `min` (`None`:
    /// any state will do), waiting up to [`FRESHNESS_WAIT`] for the applier.
    pub async fn ready_for(&self, min: Option<Revision>) -> bool {
        let ready = self.wait_for(min).await;
        if !ready {
            self.fell_back.fetch_add(1, Ordering::Relaxed);
        }
        ready
    }

    async fn wait_for(&self, min: Option<Revision>) -> bool {
        if !self.loaded.load(Ordering::Acquire) {
            return false;
        }
        let Some(min) = min else { return true };
        let deadline = tokio::time::Instant::now() + FRESHNESS_WAIT;
        loop {
            if self.applied() >= min {
                return true;
            }
            let listener = self.progress.listen();
            if self.applied() >= min {
                return true;
            }
            if tokio::time::timeout_at(deadline, listener).await.is_err() {
                return self.applied() >= min;
            }
        }
    }

    /// Counts a read as served here or sent to the store.
    fn count<T>(&self, answer: Option<T>) -> Option<T> {
        let counter = if answer.is_some() { &self.served } else { &self.fell_back };
        counter.fetch_add(1, Ordering::Relaxed);
        answer
    }

    /// Appends the cache's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ =
            writeln!(out, "# TYPE keelson_watch_cache_revision gauge\nkeelson_watch_cache_revision {}", self.applied());
        let _ = writeln!(out, "# HELP keelson_watch_cache_reads_total GET and LIST reads by where they were answered.");
        let _ = writeln!(out, "# TYPE keelson_watch_cache_reads_total counter");
        let _ = writeln!(
            out,
            "keelson_watch_cache_reads_total{{source=\"cache\"}} {}",
            self.served.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "keelson_watch_cache_reads_total{{source=\"store\"}} {}",
            self.fell_back.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE keelson_watch_cache_reloads_total counter\nkeelson_watch_cache_reloads_total {}",
            self.reloads.load(Ordering::Relaxed)
        );
    }

    /// [`ready_for`](Self::ready_for) the store's current revision: a consistent read.
    pub async fn ready_for_current(&self) -> bool {
        self.ready_for(Some(self.store.current_revision())).await
    }

    /// The shard of a key or prefix: `/registry/<segment>/...`.
    fn shard_index(&self, key: &[u8]) -> Option<usize> {
        let rest = key.strip_prefix(b"/registry/")?;
        let end = rest.iter().position(|b| *b == b'/')?;
        let segment = std::str::from_utf8(&rest[..end]).ok()?;
        self.by_segment.get(segment).copied()
    }

    fn shard_of(&self, key: &[u8]) -> Option<&RwLock<ShardState>> {
        self.shard_index(key).map(|i| &self.shards[i])
    }

    /// One object: `None` when the cache does not serve this key (not loaded, or not a
    /// resource's key), `Some(None)` when the object does not exist.
    pub fn get(&self, key: &[u8]) -> Option<Option<Cached>> {
        self.count(self.lookup(key))
    }

    /// [`get`](Self::get), uncounted.
    fn lookup(&self, key: &[u8]) -> Option<Option<Cached>> {
        if !self.loaded.load(Ordering::Acquire) {
            return None;
        }
        let shard = self.shard_of(key)?.read();
        Some(shard.objects.get(key).cloned())
    }

    /// The object at `key`, from the cache when it holds it, else from the store: for
    /// lookups that tolerate a moment's staleness (admission reads a namespace or a
    /// priority class), but must never miss an object just created.
    ///
    /// A miss is final without asking the store when the cache had applied every
    /// commit acknowledged before the lookup began (admission often asks for what is
    /// not there: the default ServiceAccount of a cluster without its controller).
    pub fn find(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        // In this order: every write acknowledged before now is at or before
        // `committed`, and the shards hold every commit through `applied` before the
        // lookup reads them.
        let committed = self.store.current_revision();
        let applied = self.applied();
        match self.lookup(key) {
            Some(Some(cached)) => {
                self.served.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(cached.value));
            }
            Some(None) if applied >= committed => {
                self.served.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            _ => {}
        }
        self.fell_back.fetch_add(1, Ordering::Relaxed);
        self.find_in_store(key)
    }

    /// The object at `key` as the store has it now, for a lookup the cache may be
    /// behind on.
    pub fn find_in_store(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.store.get(key, ReadAt::Latest)?.and_then(|record| record.value))
    }

    /// Every object under `prefix` as (key, value, revision), from the cache when it
    /// serves the prefix, else from the store: [`find`](Self::find) for a namespace's
    /// handful of policy objects (LimitRanges, ResourceQuotas) that admission reads.
    pub fn find_under(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes, Revision)>, StoreError> {
        if let Some((items, _)) = self.list(prefix, 0) {
            return Ok(items.into_iter().map(|(key, cached)| (key, cached.value, cached.mod_revision)).collect());
        }
        let page = self.store.list(prefix, &ListOptions::default())?;
        Ok(page.items.into_iter().filter_map(|(key, r)| Some((key, r.value?, r.mod_revision))).collect())
    }

    /// The objects under `prefix` in key order, up to `limit` of them (0: all), and the
    /// revision they are the state at. `None` when the
    /// cache does not serve this prefix. Only `Bytes` handles are copied under the
    /// lock; callers parse and filter after it is released.
    pub fn list(&self, prefix: &[u8], limit: usize) -> Option<(Vec<(Bytes, Cached)>, Revision)> {
        if !self.loaded.load(Ordering::Acquire) {
            return self.count(None);
        }
        let shard = self.count(self.shard_of(prefix))?.read();
        let revision = shard.through.max(self.applied());
        let range = shard
            .objects
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, cached)| (key.clone(), cached.clone()));
        let items = if limit == 0 { range.collect() } else { range.take(limit).collect() };
        Some((items, revision))
    }

    fn run(self: Arc<Self>) {
        while !self.stopped.load(Ordering::Acquire) {
            let watcher = match self.load() {
                Ok(watcher) => watcher,
                Err(StoreError::Closed) => return,
                Err(error) => {
                    tracing::warn!(%error, "watch cache: loading failed; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            match self.follow(watcher) {
                Ok(()) | Err(StoreError::Closed) => return,
                // Fell off the watch ring or under a compaction: re-list, as any
                // watcher would after a 410.
                Err(error) => {
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "watch cache: re-loading");
                }
            }
        }
    }

    /// Reads everything at one revision into fresh shards, swaps them in and returns a
    /// watcher that follows on from that revision.
    fn load(&self) -> Result<Watcher, StoreError> {
        let mut fresh: Vec<BTreeMap<Bytes, Cached>> = self.shards.iter().map(|_| BTreeMap::new()).collect();
        let mut options = ListOptions { at: ReadAt::Latest, limit: LOAD_PAGE, after_key: None };
        let revision = loop {
            let page = self.store.list(b"/registry/", &options)?;
            for (key, record) in page.items {
                let (Some(value), Some(index)) = (record.value, self.shard_index(&key)) else { continue };
                fresh[index].insert(key, Cached::new(value, record.mod_revision));
            }
            match page.next_key {
                Some(next) => {
                    options =
                        ListOptions { at: ReadAt::Revision(page.revision), limit: LOAD_PAGE, after_key: Some(next) }
                }
                None => break page.revision,
            }
        };
        let watcher = self.store.watch(Bytes::new(), revision)?;
        for (shard, objects) in self.shards.iter().zip(fresh) {
            let mut shard = shard.write();
            shard.objects = objects;
            shard.through = revision;
        }
        self.rebuild_policy();
        let (pods, claims) = (self.shards[self.pods].read(), self.shards[self.claims].read());
        fn entries(shard: &ShardState) -> impl Iterator<Item = (&[u8], &[u8])> {
            shard.objects.iter().map(|(key, cached)| (key.as_ref(), cached.value.as_ref()))
        }
        self.authorizer.graph.rebuild(entries(&pods), entries(&claims));
        drop((pods, claims));
        self.advance(revision);
        self.loaded.store(true, Ordering::Release);
        Ok(watcher)
    }

    /// Builds the RBAC policy from the cached RBAC objects and publishes it. Objects
    /// that do not parse are left out (validation keeps them from being stored).
    fn rebuild_policy(&self) {
        fn parse<T: serde::de::DeserializeOwned>(shard: &RwLock<ShardState>) -> Vec<T> {
            let shard = shard.read();
            shard.objects.values().filter_map(|cached| serde_json::from_slice(&cached.value).ok()).collect()
        }
        let [cluster_roles, roles, cluster_role_bindings, role_bindings] = self.rbac.map(|i| &self.shards[i]);
        let (cluster_roles, roles) = (parse(cluster_roles), parse(roles));
        let (cluster_role_bindings, role_bindings) = (parse(cluster_role_bindings), parse(role_bindings));
        let objects = Objects {
            cluster_roles: &cluster_roles,
            roles: &roles,
            cluster_role_bindings: &cluster_role_bindings,
            role_bindings: &role_bindings,
        };
        self.authorizer.publish(Policy::build(&objects));
    }

    fn advance(&self, revision: Revision) {
        self.applied.fetch_max(revision.get(), Ordering::AcqRel);
        self.progress.notify(usize::MAX);
    }

    /// Applies commits until the store closes, the cache stops, or the watcher fails.
    fn follow(&self, mut watcher: Watcher) -> Result<(), StoreError> {
        while !self.stopped.load(Ordering::Acquire) {
            match watcher.next_timeout(IDLE_POLL)? {
                Some(WatchItem::Events(batch)) => {
                    // Consecutive events of one shard are applied under one lock.
                    let mut held: Option<(usize, parking_lot::RwLockWriteGuard<'_, ShardState>)> = None;
                    let (mut rbac_changed, mut graph_changed) = (false, false);
                    for event in batch.iter() {
                        let Some(index) = self.shard_index(&event.key) else { continue };
                        rbac_changed |= self.rbac.contains(&index);
                        graph_changed |= index == self.pods || index == self.claims;
                        if held.as_ref().is_none_or(|(held_index, _)| *held_index != index) {
                            held = Some((index, self.shards[index].write()));
                        }
                        let Some((_, state)) = held.as_mut() else { continue };
                        match &event.value {
                            Some(value) => {
                                let cached = Cached::new(value.clone(), event.revision);
                                state.objects.insert(event.key.clone(), cached);
                            }
                            None => {
                                state.objects.remove(&event.key);
                            }
                        }
                        state.through = event.revision;
                    }
                    drop(held);
                    if rbac_changed {
                        self.rebuild_policy();
                    }
                    // Outside the shard locks: reads of the pods go on meanwhile.
                    for event in batch.iter().filter(|_| graph_changed) {
                        match self.shard_index(&event.key) {
                            Some(index) if index == self.pods => {
                                self.authorizer.graph.apply_pod(&event.key, event.value.as_deref())
                            }
                            Some(index) if index == self.claims => {
                                self.authorizer.graph.apply_claim(&event.key, event.value.as_deref())
                            }
                            _ => {}
                        }
                    }
                    self.advance(batch.last_revision());
                }
                Some(WatchItem::Progress(revision)) => self.advance(revision),
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(resource: &str, namespace: &str, name: &str) -> Vec<u8> {
        keelson_store::object_key(resource, Some(namespace), name).into_bytes()
    }

    fn wait_loaded(cache: &WatchCache) {
        for _ in 0..500 {
            if cache.loaded.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the cache never loaded");
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(future)
    }

    #[test]
    fn loads_then_follows_commits() {
        let store = Store::in_memory(Default::default()).unwrap();
        store.create(key("pods", "a", "one"), &b"{\"v\":1}"[..]).wait().unwrap();
        let cache = WatchCache::start(Arc::clone(&store));
        wait_loaded(&cache);
        assert_eq!(cache.get(&key("pods", "a", "one")).unwrap().unwrap().value, Bytes::from_static(b"{\"v\":1}"));

        let second = store.create(key("pods", "a", "two"), &b"{\"v\":2}"[..]).wait().unwrap();
        store.update(key("pods", "a", "one"), &b"{\"v\":3}"[..], None).wait().unwrap();
        let node = store.create(keelson_store::object_key("nodes", None, "n1"), &b"{}"[..]).wait().unwrap();
        assert!(block_on(cache.ready_for_current()));
        let (items, revision) = cache.list(b"/registry/pods/a/", 0).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].1.value, Bytes::from_static(b"{\"v\":3}"));
        assert_eq!(items[1].1.mod_revision, second.revision);
        // The pods' state is the state at the last commit, which was to another shard.
        assert_eq!(revision, node.revision);

        store.delete(key("pods", "a", "two"), None).wait().unwrap();
        assert!(block_on(cache.ready_for_current()));
        assert_eq!(cache.get(&key("pods", "a", "two")), Some(None));
        let (page, _) = cache.list(b"/registry/pods/", 5).unwrap();
        assert_eq!(page.len(), 1);
        // Keys outside the served resources are not cached.
        assert_eq!(cache.get(b"/registry/serviceips/10.96.0.1"), None);
        cache.stop();
        store.close();
    }

    #[test]
    fn find_never_misses_an_acknowledged_create() {
        let store = Store::in_memory(Default::default()).unwrap();
        let cache = WatchCache::start(Arc::clone(&store));
        wait_loaded(&cache);
        // Each object is looked up the moment its create is acknowledged, before the
        // applier has necessarily seen it: the cache must not answer that miss itself.
        for i in 0..500 {
            let key = key("serviceaccounts", "x", &format!("a{i}"));
            store.create(key.clone(), &b"{}"[..]).wait().unwrap();
            assert_eq!(cache.find(&key).unwrap(), Some(Bytes::from_static(b"{}")), "a{i}");
        }
        // Once current, a miss is answered by the cache.
        assert!(block_on(cache.ready_for_current()));
        let fell_back = cache.fell_back.load(Ordering::Relaxed);
        assert_eq!(cache.find(&key("serviceaccounts", "x", "missing")).unwrap(), None);
        assert_eq!(cache.fell_back.load(Ordering::Relaxed), fell_back);
        cache.stop();
        store.close();
    }

    #[test]
    fn reloads_after_falling_off_the_ring() {
        let config = keelson_store::StoreConfig {
            ring: keelson_store::RingLimits { events: 4, bytes: usize::MAX },
            ..Default::default()
        };
        let store = Store::in_memory(config).unwrap();
        let cache = WatchCache::start(Arc::clone(&store));
        wait_loaded(&cache);
        // Far more commits than the ring holds, faster than one thread may follow:
        // whether or not the applier falls behind, it must end at the current state.
        for i in 0..2_000 {
            store.create(key("configmaps", "x", &format!("c{i}")), &b"{}"[..]).wait().unwrap();
        }
        assert!(block_on(cache.ready_for_current()));
        let (items, _) = cache.list(b"/registry/configmaps/", 0).unwrap();
        assert_eq!(items.len(), 2_000);
        cache.stop();
        store.close();
    }
}
