//! [`Store`]: the registry engine's public face.
//!
//! The shape follows etcd's, so an etcd backend can stand behind the same interface
//! later: the store assigns revisions; writes carry an optional precondition on the
//! key's mod revision; reads can be at a revision; watches start after a revision; and
//! history before a revision can be compacted.

use crate::backend::{Backend, BackendError, MemoryBackend, RocksBackend};
use crate::commit::{CommitStats, Committer, Mutation, Request, WriteOutcome};
use crate::error::StoreError;
use crate::hub::{Hub, RingLimits};
use crate::index::KeyIndex;
use crate::read::{self, ListOptions, ListPage, ReadAt};
use crate::seal::Sealer;
use crate::watch::{WatchShared, Watcher};
use crate::{codec, meta};
use bytes::Bytes;
use keelson_engine::Revision;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest key accepted (etcd's limit is larger; Kubernetes keys are short).
const KEY_MAX_BYTES: usize = 8 << 10;

/// How long history is kept before automatic compaction drops it.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Keep changes younger than this.
    pub age: Duration,
    /// Keep at most this many revisions of history, whatever their age.
    pub revisions: u64,
    /// How often to check; `None` disables automatic compaction.
    pub check_every: Option<Duration>,
}

impl Default for Retention {
    /// Five minutes, as kube-apiserver compacts etcd; at most two million revisions
    /// (about 2 GiB of 1 KiB objects), so a write-heavy benchmark cannot fill the disk.
    fn default() -> Self {
        Retention { age: Duration::from_secs(300), revisions: 2_000_000, check_every: Some(Duration::from_secs(10)) }
    }
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Acknowledge a write only after its WAL sync (the default). `false` is for
    /// benchmarks that say so in their report.
    pub durable: bool,
    /// Most mutations committed in one batch (one WAL sync).
    pub max_batch: usize,
    /// Most writes waiting for the committer; past it writes fail with `Busy`.
    pub queue_capacity: usize,
    /// Largest value accepted (the API's request limit is 3 MiB).
    pub max_value_bytes: usize,
    pub ring: RingLimits,
    /// An idle watcher gets a progress notification this often.
    pub progress_interval: Duration,
    pub retention: Retention,
    /// Seals the values of some keys at rest (see `seal`); `None`: nothing is sealed.
    pub sealer: Option<Arc<Sealer>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durable: true,
            max_batch: 4096,
            queue_capacity: 65_536,
            max_value_bytes: 4 << 20,
            ring: RingLimits::default(),
            progress_interval: Duration::from_secs(5),
            retention: Retention::default(),
            sealer: None,
        }
    }
}

/// A write in flight: wait for it (blocking) or `.await` it.
pub struct Pending(PendingState);

enum PendingState {
    Failed(Option<StoreError>),
    Waiting(oneshot::Receiver<Result<WriteOutcome, StoreError>>),
}

impl Pending {
    fn failed(error: StoreError) -> Pending {
        Pending(PendingState::Failed(Some(error)))
    }

    /// Blocks until the write is committed (synced) or rejected.
    pub fn wait(self) -> Result<WriteOutcome, StoreError> {
        match self.0 {
            PendingState::Failed(error) => Err(error.unwrap_or(StoreError::Closed)),
            PendingState::Waiting(receiver) => receiver.recv().unwrap_or(Err(StoreError::Closed)),
        }
    }
}

impl std::future::Future for Pending {
    type Output = Result<WriteOutcome, StoreError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        match &mut self.0 {
            PendingState::Failed(error) => Poll::Ready(Err(error.take().unwrap_or(StoreError::Closed))),
            PendingState::Waiting(receiver) => match std::pin::Pin::new(receiver).poll(cx) {
                Poll::Ready(result) => Poll::Ready(result.unwrap_or(Err(StoreError::Closed))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Snapshot of the store's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub current_revision: Revision,
    pub compacted_revision: Revision,
    pub batches: u64,
    pub writes: u64,
    /// WAL syncs performed (0 when not durable).
    pub syncs: u64,
    /// Commit (batch write + sync) latency: counts per bucket of
    /// [`crate::COMMIT_LATENCY_BOUNDS_US`] (the last slot: slower), and the sum.
    pub commit_latency_buckets: [u64; 14],
    pub commit_latency_sum_us: u64,
}

pub struct Store {
    backend: Arc<dyn Backend>,
    sender: flume::Sender<Request>,
    closed: std::sync::atomic::AtomicBool,
    hub: Arc<Hub>,
    current: Arc<AtomicU64>,
    compacted: Arc<AtomicU64>,
    stats: Arc<CommitStats>,
    watch: Arc<WatchShared>,
    config: StoreConfig,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: Arc<(Mutex<bool>, parking_lot::Condvar)>,
}

impl Store {
    /// Opens (or creates) a durable RocksDB store in `dir`.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(dir).map_err(BackendError::from)?;
        Store::with_backend(Arc::new(RocksBackend::open(dir)?), config)
    }

    /// An in-memory store, for unit tests.
    pub fn in_memory(config: StoreConfig) -> Result<Arc<Store>, StoreError> {
        Store::with_backend(Arc::new(MemoryBackend::new()), config)
    }

    /// Starts a store over any backend: restores the revision counters, then starts
    /// the committer (and the progress ticker and compactor).
    pub fn with_backend(backend: Arc<dyn Backend>, config: StoreConfig) -> Result<Arc<Store>, StoreError> {
        let (current, compacted) = {
            let snapshot = backend.snapshot();
            (read::read_u64(&*snapshot, meta::CURRENT)?, read::read_u64(&*snapshot, meta::COMPACTED)?)
        };
        let hub = Arc::new(Hub::new(Revision(current), config.ring));
        let current = Arc::new(AtomicU64::new(current));
        let compacted = Arc::new(AtomicU64::new(compacted));
        let stats = Arc::new(CommitStats::default());
        let (sender, receiver) = flume::bounded(config.queue_capacity);
        let committer = Committer {
            backend: Arc::clone(&backend),
            hub: Arc::clone(&hub),
            current: Arc::clone(&current),
            compacted: Arc::clone(&compacted),
            stats: Arc::clone(&stats),
            durable: config.durable,
            max_batch: config.max_batch.max(1),
            index: KeyIndex::load(&*backend)?,
            sealer: config.sealer.clone(),
        };
        let watch = Arc::new(WatchShared {
            backend: Arc::clone(&backend),
            hub: Arc::clone(&hub),
            compacted: Arc::clone(&compacted),
            progress_interval: config.progress_interval,
            sealer: config.sealer.clone(),
        });
        let committer_thread = std::thread::Builder::new()
            .name("keelson-committer".into())
            .spawn(move || committer.run(receiver))
            .map_err(BackendError::from)?;
        let store = Arc::new(Store {
            backend,
            sender,
            closed: std::sync::atomic::AtomicBool::new(false),
            hub,
            current,
            compacted,
            stats,
            watch,
            config,
            threads: Mutex::new(vec![committer_thread]),
            stop: Arc::new((Mutex::new(false), parking_lot::Condvar::new())),
        });
        store.start_background()?;
        Ok(store)
    }

    /// The ticker (wakes idle watchers so they can send progress notifications) and
    /// the compactor. Both hold only a weak reference, so dropping the store ends them.
    fn start_background(self: &Arc<Self>) -> Result<(), StoreError> {
        let weak = Arc::downgrade(self);
        let stop = Arc::clone(&self.stop);
        let tick = (self.config.progress_interval / 2).max(Duration::from_millis(10));
        let compact_every = self.config.retention.check_every;
        let handle = std::thread::Builder::new()
            .name("keelson-store-ticker".into())
            .spawn(move || {
                let mut since_compaction = Duration::ZERO;
                loop {
                    {
                        let (lock, condvar) = &*stop;
                        let mut stopped = lock.lock();
                        if !*stopped {
                            condvar.wait_for(&mut stopped, tick);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    let Some(store) = weak.upgrade() else { return };
                    store.hub.wake_all();
                    since_compaction += tick;
                    if compact_every.is_some_and(|every| since_compaction >= every) {
                        since_compaction = Duration::ZERO;
                        if let Err(error) = store.compact_by_retention() {
                            tracing::warn!(%error, "automatic compaction failed");
                        }
                    }
                }
            })
            .map_err(BackendError::from)?;
        self.threads.lock().push(handle);
        Ok(())
    }

    fn submit(&self, mutation: Mutation) -> Pending {
        if self.closed.load(Ordering::Acquire) {
            return Pending::failed(StoreError::Closed);
        }
        let (ack, receiver) = oneshot::channel();
        match self.sender.try_send(Request { mutation, ack }) {
            Ok(()) => Pending(PendingState::Waiting(receiver)),
            Err(flume::TrySendError::Full(_)) => Pending::failed(StoreError::Busy),
            Err(flume::TrySendError::Disconnected(_)) => Pending::failed(StoreError::Closed),
        }
    }

    fn check_key(key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() || key.len() > KEY_MAX_BYTES {
            return Err(StoreError::InvalidKey(String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned()));
        }
        Ok(())
    }

    fn check_write(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Store::check_key(key)?;
        if value.len() > self.config.max_value_bytes {
            return Err(StoreError::ValueTooLarge { len: value.len(), limit: self.config.max_value_bytes });
        }
        Ok(())
    }

    /// Creates `key`; fails with `AlreadyExists` if it is live.
    pub fn create(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Pending {
        let (key, value) = (key.into(), value.into());
        if let Err(error) = self.check_write(&key, &value) {
            return Pending::failed(error);
        }
        self.submit(Mutation::Create { key, value })
    }

    /// Replaces a live key's value; with `expected`, only if its mod revision matches.
    pub fn update(&self, key: impl Into<Bytes>, value: impl Into<Bytes>, expected: Option<Revision>) -> Pending {
        let (key, value) = (key.into(), value.into());
        if let Err(error) = self.check_write(&key, &value) {
            return Pending::failed(error);
        }
        self.submit(Mutation::Update { key, value, expected })
    }

    /// Deletes a live key; with `expected`, only if its mod revision matches. The
    /// outcome's `prev` holds the deleted object.
    pub fn delete(&self, key: impl Into<Bytes>, expected: Option<Revision>) -> Pending {
        let key = key.into();
        if let Err(error) = Store::check_key(&key) {
            return Pending::failed(error);
        }
        self.submit(Mutation::Delete { key, expected })
    }

    /// The live record of `key`, at the latest revision or an older one.
    pub fn get(&self, key: &[u8], at: ReadAt) -> Result<Option<codec::Record>, StoreError> {
        let mut record = read::get(&*self.backend.snapshot(), key, at)?.1;
        if let Some(record) = &mut record {
            self.open_sealed(key, record)?;
        }
        Ok(record)
    }

    /// One page of the live keys under `prefix`, in key order, all at one revision.
    pub fn list(&self, prefix: &[u8], options: &ListOptions) -> Result<ListPage, StoreError> {
        let mut page = read::list(&*self.backend.snapshot(), prefix, options)?;
        if self.config.sealer.is_some() {
            for (key, record) in &mut page.items {
                self.open_sealed(key, record)?;
            }
        }
        Ok(page)
    }

    /// Opens a record's value as read from disk, if it is sealed.
    fn open_sealed(&self, key: &[u8], record: &mut codec::Record) -> Result<(), StoreError> {
        if let Some(sealer) = self.config.sealer.as_ref().filter(|s| s.applies(key)) {
            if let Some(value) = record.value.take() {
                record.value = Some(sealer.open(key, value)?);
            }
        }
        Ok(())
    }

    /// Whether `key`'s stored value is sealed other than the sealer now seals (with an
    /// older key, or not at all): rewriting it, even unchanged, re-seals it.
    pub fn needs_reseal(&self, key: &[u8]) -> Result<bool, StoreError> {
        let Some(sealer) = self.config.sealer.as_ref().filter(|s| s.applies(key)) else { return Ok(false) };
        let stored = read::get(&*self.backend.snapshot(), key, ReadAt::Latest)?.1;
        Ok(stored.and_then(|record| record.value).is_some_and(|value| !sealer.is_current(&value)))
    }

    /// The number of live keys under `prefix` (latest revision).
    pub fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        read::count(&*self.backend.snapshot(), prefix)
    }

    /// Every change under `prefix` with a revision greater than `after`, then live changes.
    pub fn watch(&self, prefix: impl Into<Bytes>, after: Revision) -> Result<Watcher, StoreError> {
        Watcher::new(Arc::clone(&self.watch), prefix.into(), after)
    }

    /// Drops history at and before `revision`. Reads and watches at older revisions
    /// then fail with `Compacted`.
    pub fn compact(&self, revision: Revision) -> Pending {
        self.submit(Mutation::Compact { revision })
    }

    /// Compacts what the retention policy no longer keeps; returns the new compacted
    /// revision, if it moved.
    pub fn compact_by_retention(&self) -> Result<Option<Revision>, StoreError> {
        let current = self.current_revision().get();
        let compacted = self.compacted_revision().get();
        let retention = self.config.retention;
        let by_count = current.saturating_sub(retention.revisions);
        let cutoff_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(retention.age).as_millis()
                as u64;
        let by_age = self.last_revision_before(cutoff_ms, compacted, current)?;
        let target = by_count.max(by_age);
        if target <= compacted {
            return Ok(None);
        }
        self.compact(Revision(target)).wait()?;
        Ok(Some(Revision(target)))
    }

    /// The newest revision committed before `cutoff_ms`, by a binary search over the
    /// log (commit times grow with revisions).
    fn last_revision_before(&self, cutoff_ms: u64, compacted: u64, current: u64) -> Result<u64, StoreError> {
        let snapshot = self.backend.snapshot();
        let committed_at = |revision: u64| -> Result<Option<u64>, StoreError> {
            match snapshot.get(crate::backend::Table::Log, &Revision(revision).to_bytes())? {
                Some(bytes) => Ok(Some(codec::decode_log_entry(bytes)?.committed_at_ms)),
                None => Ok(None),
            }
        };
        let (mut low, mut high) = (compacted, current);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            match committed_at(middle)? {
                Some(at) if at < cutoff_ms => low = middle,
                Some(_) => high = middle - 1,
                None => return Ok(compacted),
            }
        }
        Ok(low)
    }

    /// The revision of the last commit.
    pub fn current_revision(&self) -> Revision {
        Revision(self.current.load(Ordering::Acquire))
    }

    pub fn compacted_revision(&self) -> Revision {
        Revision(self.compacted.load(Ordering::Acquire))
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            current_revision: self.current_revision(),
            compacted_revision: self.compacted_revision(),
            batches: self.stats.batches.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
            syncs: self.stats.syncs.load(Ordering::Relaxed),
            commit_latency_buckets: std::array::from_fn(|i| self.stats.latency_buckets[i].load(Ordering::Relaxed)),
            commit_latency_sum_us: self.stats.latency_sum_us.load(Ordering::Relaxed),
        }
    }

    pub fn is_durable(&self) -> bool {
        self.config.durable
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Writes a consistent copy of the store to `dir` (RocksDB checkpoint).
    pub fn backup(&self, dir: &Path) -> Result<Revision, StoreError> {
        let revision = self.current_revision();
        self.backend.checkpoint(dir)?;
        Ok(revision)
    }

    /// Makes `data_dir` a copy of the backup in `backup_dir`. The store must be closed
    /// and `data_dir` must not exist yet.
    pub fn restore(backup_dir: &Path, data_dir: &Path) -> Result<(), StoreError> {
        if data_dir.exists() {
            return Err(BackendError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already exists", data_dir.display()),
            ))
            .into());
        }
        std::fs::create_dir_all(data_dir).map_err(BackendError::from)?;
        for entry in std::fs::read_dir(backup_dir).map_err(BackendError::from)? {
            let entry = entry.map_err(BackendError::from)?;
            std::fs::copy(entry.path(), data_dir.join(entry.file_name())).map_err(BackendError::from)?;
        }
        Ok(())
    }

    /// Stops accepting writes, lets queued writes commit, and stops the threads.
    /// Watchers see `Closed` once they have drained what was committed.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (ack, _) = oneshot::channel();
        // Queued behind every accepted write, so those commit before the committer stops.
        let _ = self.sender.send(Request { mutation: Mutation::Stop, ack });
        {
            let (lock, condvar) = &*self.stop;
            *lock.lock() = true;
            condvar.notify_all();
        }
        let me = std::thread::current().id();
        for handle in self.threads.lock().drain(..) {
            // The ticker may hold the last reference and run this drop itself.
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
        self.hub.close();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}
