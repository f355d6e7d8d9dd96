//! Prometheus text metrics: request counts and latency by verb and resource, open
//! watches, and the store's commit counters.
//!
//! Every counter is a fixed slot of atomics indexed by (resource, verb), so recording
//! a request takes no lock and allocates nothing.

use crate::resources::RESOURCES;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub const VERBS: &[&str] =
    &["GET", "LIST", "WATCH", "CREATE", "UPDATE", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY", "CONNECT"];
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_S: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// 2xx, 3xx, 4xx, 5xx.
const CODE_CLASSES: usize = 4;

struct Slot {
    codes: [AtomicU64; CODE_CLASSES],
    buckets: [AtomicU64; BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

pub struct Metrics {
    /// `RESOURCES.len() + 1` resources (the last is "non-resource") × verbs.
    slots: Vec<Slot>,
    pub watches: AtomicI64,
    pub rejected_overload: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            slots: (0..(RESOURCES.len() + 1) * VERBS.len()).map(|_| Slot::new()).collect(),
            watches: AtomicI64::new(0),
            rejected_overload: AtomicU64::new(0),
        }
    }
}

/// Index of a resource in the table (`None` for non-resource paths).
pub fn resource_index(plural: &str, group: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.plural == plural && r.group == group)
}

impl Metrics {
    pub fn record(&self, resource: Option<usize>, verb: &str, code: u16, elapsed: Duration) {
        let Some(verb_index) = VERBS.iter().position(|v| *v == verb) else { return };
        let resource = resource.unwrap_or(RESOURCES.len());
        let slot = &self.slots[resource * VERBS.len() + verb_index];
        let class = (code / 100).clamp(2, 5) as usize - 2;
        slot.codes[class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS_S.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS_S.len());
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        slot.sum_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The exposition text, with the store's counters appended by the caller.
    pub fn render(&self, store: &keelson_store::StoreStats) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP apiserver_request_total Requests by verb, resource and code class.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        let mut latency = String::new();
        latency.push_str("# HELP apiserver_request_duration_seconds Request latency by verb and resource.\n");
        latency.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for resource in 0..=RESOURCES.len() {
            let (name, group) = RESOURCES.get(resource).map_or(("", ""), |r| (r.plural, r.group));
            for (v, verb) in VERBS.iter().enumerate() {
                let slot = &self.slots[resource * VERBS.len() + v];
                let labels = format!("verb=\"{verb}\",group=\"{group}\",resource=\"{name}\"");
                let mut total = 0;
                for (class, count) in slot.codes.iter().enumerate() {
                    let count = count.load(Ordering::Relaxed);
                    total += count;
                    if count > 0 {
                        let _ = writeln!(out, "apiserver_request_total{{{labels},code=\"{}xx\"}} {count}", class + 2);
                    }
                }
                if total == 0 {
                    continue;
                }
                let mut cumulative = 0;
                for (i, bound) in BUCKETS_S.iter().enumerate() {
                    cumulative += slot.buckets[i].load(Ordering::Relaxed);
                    let _ = writeln!(
                        latency,
                        "apiserver_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(latency, "apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}");
                let sum = slot.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
                let _ = writeln!(latency, "apiserver_request_duration_seconds_sum{{{labels}}} {sum}");
                let _ = writeln!(latency, "apiserver_request_duration_seconds_count{{{labels}}} {total}");
            }
        }
        out.push_str(&latency);
        let _ = writeln!(
            out,
            "# TYPE apiserver_registered_watchers gauge\napiserver_registered_watchers {}",
            self.watches.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE apiserver_dropped_requests_total counter\napiserver_dropped_requests_total {}",
            self.rejected_overload.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE keelson_store_revision gauge\nkeelson_store_revision {}",
            store.current_revision.get()
        );
        let _ = writeln!(
            out,
            "# TYPE keelson_store_commit_batches_total counter\nkeelson_store_commit_batches_total {}",
            store.batches
        );
        let _ = writeln!(out, "# TYPE keelson_store_writes_total counter\nkeelson_store_writes_total {}", store.writes);
        let _ = writeln!(
            out,
            "# TYPE keelson_store_wal_syncs_total counter\nkeelson_store_wal_syncs_total {}",
            store.syncs
        );
        render_commit_latency(&mut out, store);
        out
    }
}

/// The store's commit latency (batch write with its WAL sync) as a histogram.
fn render_commit_latency(out: &mut String, store: &keelson_store::StoreStats) {
    out.push_str("# HELP keelson_store_commit_duration_seconds Batch write with its WAL sync.\n");
    out.push_str("# TYPE keelson_store_commit_duration_seconds histogram\n");
    let bounds = keelson_store::COMMIT_LATENCY_BOUNDS_US;
    let mut cumulative = 0;
    for (i, bound) in bounds.iter().enumerate() {
        cumulative += store.commit_latency_buckets[i];
        let _ = writeln!(
            out,
            "keelson_store_commit_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    cumulative += store.commit_latency_buckets[bounds.len()];
    let _ = writeln!(out, "keelson_store_commit_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "keelson_store_commit_duration_seconds_sum {}", store.commit_latency_sum_us as f64 / 1e6);
    let _ = writeln!(out, "keelson_store_commit_duration_seconds_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_render_as_prometheus_text() {
        let metrics = Metrics::default();
        let pods = resource_index("pods", "");
        metrics.record(pods, "GET", 200, Duration::from_millis(3));
        metrics.record(pods, "GET", 404, Duration::from_millis(30));
        let text = metrics.render(&Default::default());
        assert!(text.contains("apiserver_request_total{verb=\"GET\",group=\"\",resource=\"pods\",code=\"2xx\"} 1"));
        assert!(text.contains(
            "apiserver_request_duration_seconds_bucket{verb=\"GET\",group=\"\",resource=\"pods\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("le=\"+Inf\"} 2"));
        let mut store = keelson_store::StoreStats::default();
        store.commit_latency_buckets[3] = 5;
        let text = metrics.render(&store);
        assert!(text.contains("keelson_store_commit_duration_seconds_bucket{le=\"0.001\"} 5"), "{text}");
        assert!(text.contains("keelson_store_commit_duration_seconds_count 5"));
    }
}
