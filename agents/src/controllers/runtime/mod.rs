//! The controller runtime: shared informers feed caches and work queues; workers take
//! keys off a queue and reconcile them, reading the caches and writing through the
//! API.
//!
//! - [`cache`]: one kind's objects, indexed by namespace and owner.
//! - [`informer`]: list + watch into a cache, then handlers that enqueue keys.
//! - [`queue`]: the deduplicating, rate-limited work queue.
//! - [`expectations`]: creates and deletes a controller made and has not yet seen
//!   come back through its watch (client-go's ControllerExpectations).
//! - [`metrics`]: queue depth, adds, retries and reconcile latency per controller.

pub mod cache;
pub mod expectations;
pub mod informer;
pub mod metrics;
pub mod queue;

use metrics::QueueMetrics;
use queue::WorkQueue;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub use cache::{object_key, split_key, Cache};
pub use informer::{Change, Informer, Informers, Watched};

/// What to do with a key after a successful reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the key's objects change again.
    Done,
    /// Look again after this long even if nothing changes (deadlines, readiness age).
    RequeueAfter(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

impl ReconcileError {
    /// The HTTP status the server answered, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            ReconcileError::Api(error) => api_code(error),
            ReconcileError::Other(_) => None,
        }
    }
}

/// The HTTP code of an API error, if the server answered.
pub fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Treats 404 Not Found as done: the object is already gone.
pub fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if api_code(&error) == Some(404) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Whether the server refused a create because the namespace is terminating: there
/// is nothing to make in it any more.
pub fn namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}

/// A controller's reconcile function. It reads from caches and writes through the
/// API; a 409 Conflict is an error like any other and the key is retried (from the
/// fresh state the watch brings).
pub trait Reconciler: Send + Sync + 'static {
    fn reconcile(&self, key: &str) -> impl Future<Output = Result<Action, ReconcileError>> + Send;
}

/// Runs `workers` workers over `queue` until it shuts down.
pub fn run_workers<R: Reconciler>(
    name: &'static str,
    reconciler: Arc<R>,
    queue: Arc<WorkQueue>,
    metrics: Arc<QueueMetrics>,
    workers: usize,
) -> Vec<JoinHandle<()>> {
    (0..workers.max(1))
        .map(|_| {
            let (reconciler, queue, metrics) = (Arc::clone(&reconciler), Arc::clone(&queue), Arc::clone(&metrics));
            tokio::spawn(async move {
                while let Some(key) = queue.next().await {
                    let started = Instant::now();
                    let result = reconciler.reconcile(&key).await;
                    metrics.work_duration.observe(started.elapsed());
                    match result {
                        Ok(Action::Done) => queue.forget(&key),
                        Ok(Action::RequeueAfter(delay)) => {
                            queue.forget(&key);
                            queue.add_after(&key, delay);
                        }
                        Err(error) => {
                            metrics.errors.inc();
                            if error.code() == Some(409) {
                                tracing::debug!(controller = name, key, %error, "conflict; retrying");
                            } else {
                                tracing::warn!(controller = name, key, %error, "reconcile failed; retrying");
                            }
                            queue.add_rate_limited(&key);
                        }
                    }
                    queue.done(&key);
                }
            })
        })
        .collect()
}

/// A JSON merge patch that turns `old` into `new`: fields `new` leaves out are set to
/// null (a merge patch otherwise keeps them), so a count that drops to zero and is
/// omitted, or a condition list that empties, is really cleared.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                let value = match old.get(key) {
                    Some(previous) => merge_patch(previous, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), value);
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        (_, new) => new.clone(),
    }
}

/// The merge patch that replaces an object's status with `new`.
pub fn status_patch<S: serde::Serialize>(old: Option<&S>, new: &S) -> serde_json::Value {
    let old = old.map(|o| serde_json::to_value(o).unwrap_or_default()).unwrap_or_else(|| serde_json::json!({}));
    let new = serde_json::to_value(new).unwrap_or_default();
    serde_json::json!({ "status": merge_patch(&old, &new) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patches_clear_what_the_new_value_leaves_out() {
        let old = json!({"replicas": 3, "ready": 2, "nested": {"a": 1, "b": 2}, "list": [1]});
        let new = json!({"replicas": 4, "nested": {"a": 1}, "list": []});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"replicas": 4, "ready": null, "nested": {"a": 1, "b": null}, "list": []})
        );
    }
}
