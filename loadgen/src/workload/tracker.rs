//! One watch on every pod of the cluster, kept for the whole run: how many pods each
//! namespace has, how many are scheduled and Running (for waits, barriers and the
//! progress line), and, for the measured pods, when each was bound and started.
//!
//! A measured pod is one first seen in a namespace while that namespace is being
//! measured (a createPods or createAny op with `collectMetrics`). Its create time is
//! the `loadgen.keelson.dev/sent-us` annotation when loadgen created it, otherwise the
//! moment its ADDED event arrived (pods a controller made).
//!
//! The watch task is the only writer; ops read counts under a short lock a few times a
//! second. On `410 Gone` or a broken stream the tracker re-lists and carries on.

use super::cluster::Cluster;
use crate::podlite::{PodLite, WatchLine};
use crate::report;
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The annotation with the microsecond wall-clock time loadgen sent a pod's create.
pub const SENT_US: &str = "loadgen.keelson.dev/sent-us";

#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub pods: usize,
    pub scheduled: usize,
    pub running: usize,
}

/// What the measured pods did.
pub struct Measured {
    pub pods: usize,
    /// When each measured pod was seen bound, in order.
    pub bound_at: Vec<Instant>,
    pub create_to_bound: Histogram<u64>,
    pub running: usize,
    pub create_to_running: Histogram<u64>,
}

struct PodState {
    created_us: u64,
    bound: bool,
    running: bool,
    measured: bool,
}

struct State {
    pods: HashMap<String, PodState>,
    namespaces: HashMap<String, Counts>,
    total: Counts,
    measuring: HashSet<String>,
    measured: Measured,
    /// The watch failed for good (the message).
    failed: Option<String>,
}

#[derive(Deserialize)]
struct PodList {
    metadata: ListMeta,
    items: Vec<PodLite>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
}

impl State {
    /// A pod is gone: it leaves the counts (a measured pod's figures stay).
    fn remove(&mut self, namespace: &str, key: &str) {
        let Some(old) = self.pods.remove(key) else { return };
        let counts = self.namespaces.entry(namespace.to_string()).or_default();
        for c in [counts, &mut self.total] {
            c.pods -= 1;
            c.scheduled -= old.bound as usize;
            c.running -= old.running as usize;
        }
    }

    fn apply(&mut self, pod: &PodLite, deleted: bool) {
        let meta = &pod.metadata;
        let key = format!("{}/{}", meta.namespace, meta.name);
        if deleted {
            self.remove(&meta.namespace, &key);
            return;
        }
        let counts = self.namespaces.entry(meta.namespace.clone()).or_default();
        let measuring = &self.measuring;
        let measured = &mut self.measured;
        let total = &mut self.total;
        let state = self.pods.entry(key).or_insert_with(|| {
            counts.pods += 1;
            total.pods += 1;
            let is_measured = measuring.contains(&meta.namespace);
            measured.pods += is_measured as usize;
            let sent = pod.annotation(SENT_US).and_then(|s| s.parse().ok());
            PodState {
                created_us: sent.unwrap_or_else(|| crate::api_bench::now_us() as u64),
                bound: false,
                running: false,
                measured: is_measured,
            }
        });
        let since_created = || (crate::api_bench::now_us() as u64).saturating_sub(state.created_us);
        if !state.bound && pod.bound() {
            state.bound = true;
            counts.scheduled += 1;
            total.scheduled += 1;
            if state.measured {
                measured.bound_at.push(Instant::now());
                measured.create_to_bound.saturating_record(since_created());
            }
        }
        if !state.running && pod.running() {
            state.running = true;
            counts.running += 1;
            total.running += 1;
            if state.measured {
                measured.running += 1;
                measured.create_to_running.saturating_record(since_created());
            }
        }
    }
}

pub struct Tracker {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Tracker {
    /// Lists every pod, then watches from there until stopped.
    pub async fn start(cluster: Arc<Cluster>) -> Result<Tracker> {
        let state = Arc::new(Mutex::new(State {
            pods: HashMap::new(),
            namespaces: HashMap::new(),
            total: Counts::default(),
            measuring: HashSet::new(),
            measured: Measured {
                pods: 0,
                bound_at: Vec::new(),
                create_to_bound: report::micros_histogram(),
                running: 0,
                create_to_running: report::micros_histogram(),
            },
            failed: None,
        }));
        let revision = relist(&cluster, &state).await?;
        let task = tokio::spawn(follow(cluster, Arc::clone(&state), revision));
        Ok(Tracker { state, task })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("tracker state"))
    }

    /// Pods first seen in `namespace` from now on are measured.
    pub fn measure(&self, namespace: &str) {
        self.with(|s| s.measuring.insert(namespace.to_string()));
    }

    pub fn stop_measuring(&self) {
        self.with(|s| s.measuring.clear());
    }

    pub fn namespace(&self, namespace: &str) -> Counts {
        self.with(|s| s.namespaces.get(namespace).copied().unwrap_or_default())
    }

    pub fn total(&self) -> Counts {
        self.with(|s| s.total)
    }

    /// Measured pods seen, bound and Running so far.
    pub fn measured_counts(&self) -> Counts {
        self.with(|s| Counts {
            pods: s.measured.pods,
            scheduled: s.measured.bound_at.len(),
            running: s.measured.running,
        })
    }

    pub fn failure(&self) -> Option<String> {
        self.with(|s| s.failed.clone())
    }

    /// Stops the watch and hands over what the measured pods did.
    pub fn finish(&self) -> Measured {
        self.task.abort();
        let mut state = self.state.lock().expect("tracker state");
        let empty = Measured {
            pods: 0,
            bound_at: Vec::new(),
            create_to_bound: report::micros_histogram(),
            running: 0,
            create_to_running: report::micros_histogram(),
        };
        std::mem::replace(&mut state.measured, empty)
    }
}

/// Applies a full, paged list of pods (dropping pods no longer there); returns its
/// revision.
async fn relist(cluster: &Cluster, state: &Mutex<State>) -> Result<String> {
    let mut seen = HashSet::new();
    let mut revision = String::new();
    cluster
        .list_paged("/api/v1/pods", |body| {
            let list: PodList = serde_json::from_slice(body).context("a pod list")?;
            let mut state = state.lock().expect("tracker state");
            for pod in &list.items {
                seen.insert(format!("{}/{}", pod.metadata.namespace, pod.metadata.name));
                state.apply(pod, false);
            }
            revision = list.metadata.resource_version;
            Ok(list.metadata.continue_token)
        })
        .await?;
    let mut state = state.lock().expect("tracker state");
    let gone: Vec<String> = state.pods.keys().filter(|k| !seen.contains(*k)).cloned().collect();
    for key in gone {
        let (namespace, _) = key.split_once('/').expect("namespace/name");
        state.remove(namespace, &key);
    }
    Ok(revision)
}

/// Watches from `revision` until aborted; re-lists after a 410 and re-watches after a
/// stream ends. Gives up (recording why) after 20 failures in a row.
async fn follow(cluster: Arc<Cluster>, state: Arc<Mutex<State>>, mut revision: String) {
    let mut failures = 0;
    while failures < 20 {
        match watch_once(&cluster, &state, &mut revision).await {
            Ok(WatchEnd::Closed) => failures = 0,
            Ok(WatchEnd::Gone) => match relist(&cluster, &state).await {
                Ok(r) => revision = r,
                Err(_) => failures += 1,
            },
            Err(_) => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    state.lock().expect("tracker state").failed = Some("the pod watch failed 20 times in a row".into());
}

enum WatchEnd {
    Closed,
    Gone,
}

async fn watch_once(cluster: &Cluster, state: &Mutex<State>, revision: &mut String) -> Result<WatchEnd> {
    let url = format!(
        "{}/api/v1/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={revision}",
        cluster.server
    );
    let mut response = cluster.watch_http.get(url).send().await?;
    match response.status().as_u16() {
        200 => {}
        410 => return Ok(WatchEnd::Gone),
        code => bail!("watching pods: HTTP {code}"),
    }
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        buffer.extend_from_slice(&chunk);
        let mut start = 0;
        let mut state = state.lock().expect("tracker state");
        while let Some(end) = buffer[start..].iter().position(|b| *b == b'\n') {
            let line = &buffer[start..start + end];
            start += end + 1;
            if line.is_empty() {
                continue;
            }
            let event: WatchLine = serde_json::from_slice(line).context("a watch event")?;
            match event.kind {
                "ERROR" if event.object.code == Some(410) => return Ok(WatchEnd::Gone),
                "ERROR" => bail!("the pod watch failed: {}", String::from_utf8_lossy(line)),
                "BOOKMARK" => {}
                kind => state.apply(&event.object, kind == "DELETED"),
            }
            if !event.object.metadata.resource_version.is_empty() {
                *revision = event.object.metadata.resource_version;
            }
        }
        drop(state);
        buffer.drain(..start);
    }
    Ok(WatchEnd::Closed)
}
