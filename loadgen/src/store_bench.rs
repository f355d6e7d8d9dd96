//! `loadgen store`: durable write throughput and watch fan-out of the registry, against
//! keelson's store or a real etcd with the same load, for a side-by-side figure.
//!
//! Every write creates a new key under one prefix with a value whose first 8 bytes are
//! the time the write was issued, so watchers measure create→event latency the same way
//! for both targets. Each watcher checks it receives every revision, in order.

use crate::report::{self, LatencyMs, Machine};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use keelson_engine::Revision;
use keelson_store::{Store, StoreConfig, WatchItem};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "/registry/configmaps/loadgen/";

#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// `rocksdb` (keelson's store, embedded), `etcd=URL` (e.g. etcd=http://127.0.0.1:2379),
    /// or `rocksdb-backend`: the ceiling under the store, RocksDB alone with the store's
    /// options, one thread writing each value once in synced batches of `--writers/2`
    /// puts (about what the committer's batches reach) with nothing else around it; its
    /// latency is per batch.
    #[arg(long, default_value = "rocksdb")]
    pub target: String,
    /// Where the RocksDB store lives (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub writers: usize,
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Acknowledge writes before the WAL sync (rocksdb only). Reported as `durable: false`.
    #[arg(long)]
    pub no_sync: bool,
    /// gRPC connections to etcd, shared round-robin by writers and watchers (etcd only).
    /// One HTTP/2 connection would serialize every writer on one socket and understate
    /// etcd; several model a fleet of API servers.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct StoreResult {
    pub target: String,
    pub durable: bool,
    pub writers: usize,
    pub value_size: usize,
    pub duration_s: f64,
    pub writes: u64,
    pub writes_per_sec: f64,
    pub latency_ms: LatencyMs,
    pub syncs: u64,
    pub writes_per_sync: f64,
    pub watchers: usize,
    /// etcd only: gRPC connections used (0 for the embedded store).
    pub connections: usize,
    pub watch_events: u64,
    pub watch_events_per_sec: f64,
    /// Write issued → event delivered, over every event at every watcher.
    pub watch_lag_ms: LatencyMs,
    /// Whether every watcher saw every revision exactly once, in order.
    pub watch_complete_in_order: bool,
    pub commit: String,
    pub machine: Machine,
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn value_with_timestamp(size: usize) -> Vec<u8> {
    let mut value = vec![b'v'; size.max(8)];
    value[..8].copy_from_slice(&now_nanos().to_le_bytes());
    value
}

fn issued_at(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// What one watcher saw.
struct WatchReport {
    events: u64,
    in_order: bool,
    complete: bool,
    lag: Histogram<u64>,
}

impl WatchReport {
    fn new() -> WatchReport {
        WatchReport { events: 0, in_order: true, complete: false, lag: report::micros_histogram() }
    }

    /// Checks order and records the lag of one event.
    fn observe(&mut self, expected: &mut u64, revision: u64, value: &[u8], delivered_nanos: u64) {
        if revision != *expected {
            self.in_order = false;
        }
        *expected = revision + 1;
        self.events += 1;
        if let Some(issued) = issued_at(value) {
            let _ = self.lag.record((delivered_nanos.saturating_sub(issued) / 1000).max(1));
        }
    }
}

/// The last revision written, published when the writers are done.
struct Finish {
    last_revision: AtomicU64,
    writers_done: AtomicBool,
}

impl Finish {
    fn reached(&self, next_expected: u64) -> bool {
        self.writers_done.load(Ordering::Acquire) && next_expected > self.last_revision.load(Ordering::Acquire)
    }
}

pub fn run(args: &StoreArgs) -> Result<StoreResult> {
    if args.writers == 0 {
        bail!("--writers must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = match args.target.split_once('=') {
        None if args.target == "rocksdb" => runtime.block_on(run_keelson(args))?,
        None if args.target == "rocksdb-backend" => run_backend_ceiling(args)?,
        Some(("etcd", url)) => runtime.block_on(run_etcd(args, url))?,
        _ => bail!("unknown --target {:?}: use rocksdb, rocksdb-backend or etcd=URL", args.target),
    };
    Ok(result)
}

async fn run_keelson(args: &StoreArgs) -> Result<StoreResult> {
    let temp;
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let config = StoreConfig { durable: !args.no_sync, ..StoreConfig::default() };
    let store = Store::open(&dir, config).with_context(|| format!("opening the store in {}", dir.display()))?;
    let start_revision = store.current_revision();
    let finish = Arc::new(Finish { last_revision: AtomicU64::new(0), writers_done: AtomicBool::new(false) });

    let mut watchers = Vec::with_capacity(args.watchers);
    for _ in 0..args.watchers {
        let mut watcher = store.watch(PREFIX, start_revision)?;
        let finish = Arc::clone(&finish);
        watchers.push(tokio::spawn(async move {
            let mut report = WatchReport::new();
            let mut expected = start_revision.get() + 1;
            loop {
                if finish.reached(expected) {
                    report.complete = true;
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(1), watcher.next()).await {
                    Ok(Ok(WatchItem::Events(batch))) => {
                        let delivered = now_nanos();
                        for event in batch.iter() {
                            let value = event.value.as_deref().unwrap_or_default();
                            report.observe(&mut expected, event.revision.get(), value, delivered);
                        }
                    }
                    Ok(Ok(WatchItem::Progress(_))) | Err(_) => {}
                    Ok(Err(error)) => {
                        eprintln!("watcher failed: {error}");
                        break;
                    }
                }
            }
            report
        }));
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut writers = Vec::with_capacity(args.writers);
    for writer in 0..args.writers {
        let store = Arc::clone(&store);
        let value_size = args.value_size;
        writers.push(tokio::spawn(write_until(deadline, writer, value_size, move |key, value| {
            let write = store.create(key, value);
            async move { Ok(write.await?.revision) }
        })));
    }
    let (latency, elapsed, watch) = finish_run(started, writers, watchers, &finish).await?;
    let stats = store.stats();
    let writes = stats.writes;
    Ok(summarize(args, "rocksdb".into(), !args.no_sync, writes, stats.syncs, elapsed, &latency, &watch))
}

/// The backend alone: what any RocksDB-backed store that writes each value once, with
/// one WAL sync per batch, can reach here. No revisions, index, events or history.
fn run_backend_ceiling(args: &StoreArgs) -> Result<StoreResult> {
    use keelson_store::backend::{Backend, RocksBackend, Table, WriteBatch};
    if args.watchers > 0 {
        bail!("--target rocksdb-backend has no watch: it measures the backend alone");
    }
    let temp = tempfile::tempdir()?;
    let backend = RocksBackend::open(temp.path())?;
    let batch_size = (args.writers / 2).max(1);
    let value = bytes::Bytes::from(value_with_timestamp(args.value_size));
    let mut latency = report::micros_histogram();
    let mut batch = WriteBatch::default();
    let (mut writes, mut syncs, mut n) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    while Instant::now() < deadline {
        for _ in 0..batch_size {
            // Keys interleave over the writers, as the committer's batches do.
            let key = format!("{PREFIX}w{:04}-{:09}", n % args.writers as u64, n / args.writers as u64);
            batch.put(Table::Objects, key, value.clone());
            n += 1;
        }
        let begun = Instant::now();
        backend.write(&batch, !args.no_sync)?;
        let _ = latency.record((begun.elapsed().as_micros() as u64).max(1));
        batch.clear();
        writes += batch_size as u64;
        syncs += 1;
    }
    Ok(summarize(args, "rocksdb-backend".into(), !args.no_sync, writes, syncs, started.elapsed(), &latency, &[]))
}

/// What a writer task returns: its latency histogram and the last revision it wrote.
type WriterTask = tokio::task::JoinHandle<Result<(Histogram<u64>, Revision)>>;

/// One writer: creates keys until `deadline`, timing each; `put` returns the revision.
async fn write_until<F, Fut>(
    deadline: Instant,
    writer: usize,
    value_size: usize,
    mut put: F,
) -> Result<(Histogram<u64>, Revision)>
where
    F: FnMut(String, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<Revision>>,
{
    let mut latency = report::micros_histogram();
    let mut last = Revision::ZERO;
    let mut i = 0u64;
    while Instant::now() < deadline {
        let key = format!("{PREFIX}w{writer:04}-{i:09}");
        let begun = Instant::now();
        last = last.max(put(key, value_with_timestamp(value_size)).await?);
        let _ = latency.record((begun.elapsed().as_micros() as u64).max(1));
        i += 1;
    }
    Ok((latency, last))
}

/// Waits for the writers, tells the watchers the last revision written, and waits for
/// them to reach it. Returns write latency, the writing time, and the watch reports.
async fn finish_run(
    started: Instant,
    writers: Vec<WriterTask>,
    watchers: Vec<tokio::task::JoinHandle<WatchReport>>,
    finish: &Finish,
) -> Result<(Histogram<u64>, Duration, Vec<WatchReport>)> {
    let (latency, last) = join_writers(writers).await?;
    let elapsed = started.elapsed();
    finish.last_revision.store(last.get(), Ordering::Release);
    finish.writers_done.store(true, Ordering::Release);
    Ok((latency, elapsed, join_watchers(watchers).await?))
}

async fn join_writers(writers: Vec<WriterTask>) -> Result<(Histogram<u64>, Revision)> {
    let mut latency = report::micros_histogram();
    let mut last = Revision::ZERO;
    for writer in writers {
        let (histogram, revision) = writer.await??;
        latency.add(&histogram)?;
        last = last.max(revision);
    }
    Ok((latency, last))
}

async fn join_watchers(watchers: Vec<tokio::task::JoinHandle<WatchReport>>) -> Result<Vec<WatchReport>> {
    let mut reports = Vec::with_capacity(watchers.len());
    for watcher in watchers {
        reports.push(watcher.await?);
    }
    Ok(reports)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    args: &StoreArgs,
    target: String,
    durable: bool,
    writes: u64,
    syncs: u64,
    elapsed: Duration,
    latency: &Histogram<u64>,
    watch: &[WatchReport],
) -> StoreResult {
    let seconds = elapsed.as_secs_f64();
    let mut lag = report::micros_histogram();
    for report in watch {
        let _ = lag.add(&report.lag);
    }
    let watch_events: u64 = watch.iter().map(|r| r.events).sum();
    let connections = if target.starts_with("rocksdb") { 0 } else { args.connections.clamp(1, args.writers.max(1)) };
    StoreResult {
        target,
        durable,
        writers: args.writers,
        value_size: args.value_size,
        duration_s: (seconds * 1000.0).round() / 1000.0,
        writes,
        writes_per_sec: (writes as f64 / seconds).round(),
        latency_ms: LatencyMs::from_micros(latency),
        syncs,
        writes_per_sync: if syncs == 0 { 0.0 } else { ((writes as f64 / syncs as f64) * 10.0).round() / 10.0 },
        watchers: watch.len(),
        connections,
        watch_events,
        watch_events_per_sec: (watch_events as f64 / seconds).round(),
        watch_lag_ms: LatencyMs::from_micros(&lag),
        watch_complete_in_order: watch.iter().all(|r| r.in_order && r.complete && r.events == writes),
        commit: report::commit(),
        machine: Machine::detect(),
    }
}

async fn run_etcd(args: &StoreArgs, url: &str) -> Result<StoreResult> {
    use etcd_client::{Client, GetOptions, WatchOptions};
    let connections = args.connections.clamp(1, args.writers.max(1));
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(Client::connect([url], None).await.with_context(|| format!("connecting to etcd at {url}"))?);
    }
    let mut probe = clients[0].clone();
    let start_revision =
        probe.get("/", Some(GetOptions::new().with_count_only())).await?.header().map_or(0, |h| h.revision()) as u64;
    let finish = Arc::new(Finish { last_revision: AtomicU64::new(0), writers_done: AtomicBool::new(false) });

    let mut watchers = Vec::with_capacity(args.watchers);
    for index in 0..args.watchers {
        let mut client = clients[index % connections].clone();
        let finish = Arc::clone(&finish);
        let options = WatchOptions::new().with_prefix().with_start_revision(start_revision as i64 + 1);
        let mut stream = client.watch(PREFIX, Some(options)).await?;
        watchers.push(tokio::spawn(async move {
            let mut report = WatchReport::new();
            let mut expected = start_revision + 1;
            loop {
                if finish.reached(expected) {
                    report.complete = true;
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
                    Ok(Ok(Some(response))) => {
                        let delivered = now_nanos();
                        for event in response.events() {
                            if let Some(kv) = event.kv() {
                                report.observe(&mut expected, kv.mod_revision() as u64, kv.value(), delivered);
                            }
                        }
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
            report
        }));
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut writers = Vec::with_capacity(args.writers);
    for writer in 0..args.writers {
        let client = clients[writer % connections].clone();
        let value_size = args.value_size;
        writers.push(tokio::spawn(write_until(deadline, writer, value_size, move |key, value| {
            let mut client = client.clone();
            async move {
                let response = client.put(key, value, None).await?;
                Ok(Revision(response.header().map_or(0, |h| h.revision()) as u64))
            }
        })));
    }
    let (latency, elapsed, watch) = finish_run(started, writers, watchers, &finish).await?;
    let writes = finish.last_revision.load(Ordering::Acquire).saturating_sub(start_revision);
    Ok(summarize(args, format!("etcd={url}"), true, writes, 0, elapsed, &latency, &watch))
}

/// The human-readable table printed before the JSON line.
pub fn print_table(result: &StoreResult) {
    println!("{:<28} {}", "target", result.target);
    println!("{:<28} {}", "durable (ack after WAL sync)", result.durable);
    println!("{:<28} {} / {} B", "writers / value size", result.writers, result.value_size);
    println!("{:<28} {:.1} s", "duration", result.duration_s);
    println!("{:<28} {}", "writes", result.writes);
    println!("{:<28} {}", "writes/s", result.writes_per_sec);
    let l = result.latency_ms;
    println!("{:<28} p50 {:.3}  p99 {:.3}  max {:.3}", "write latency (ms)", l.p50, l.p99, l.max);
    println!("{:<28} {} ({} writes/sync)", "WAL syncs", result.syncs, result.writes_per_sync);
    if result.watchers > 0 {
        println!("{:<28} {}", "watchers", result.watchers);
        println!("{:<28} {}", "watch events delivered/s", result.watch_events_per_sec);
        let w = result.watch_lag_ms;
        println!("{:<28} p50 {:.3}  p99 {:.3}  max {:.3}", "create→event lag (ms)", w.p50, w.p99, w.max);
        println!("{:<28} {}", "every event, in order", result.watch_complete_in_order);
    }
}
