//! Evictions honour PodDisruptionBudgets, as the eviction subresource does in
//! Kubernetes: a pod covered by a budget with no disruptions left gets 429 (clients
//! such as `kubectl drain` retry), and a permitted eviction spends one disruption
//! before the pod is deleted. Budgets' status is computed by the disruption
//! controller; a budget it has not observed yet allows nothing.

use crate::filter::{spec_selector, ObjectLabels};
use crate::object;
use keelson_engine::{ApiError, StatusReason};
use keelson_store::{ListOptions, Store, StoreError};
use serde_json::{json, Value};

/// Spending a disruption races with the controller; retry a few times.
const ATTEMPTS: usize = 8;

fn blocked(message: &str) -> ApiError {
    let mut error = ApiError::new(StatusReason::TooManyRequests, message.to_string());
    error.retry_after_seconds = Some(10);
    error
}

/// Pods that are not running (pending or finished) or already terminating may be
/// evicted whatever the budget says.
fn ignores_budgets(pod: &Value) -> bool {
    matches!(object::get_str(pod, &["status", "phase"]), Some("Pending" | "Succeeded" | "Failed"))
        || object::get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null())
}

/// Checks the pod's budget and spends one disruption; `Ok` means the pod may go.
pub async fn admit(store: &Store, namespace: &str, pod: &Value) -> Result<(), ApiError> {
    if ignores_budgets(pod) {
        return Ok(());
    }
    let prefix = keelson_store::resource_prefix("poddisruptionbudgets", Some(namespace));
    for _ in 0..ATTEMPTS {
        let page = store.list(prefix.as_bytes(), &ListOptions::default()).map_err(ApiError::internal)?;
        let mut matching = Vec::new();
        for (key, record) in page.items {
            let Some(bytes) = record.value else { continue };
            let pdb: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
            let selector = spec_selector(&pdb);
            // A budget with an empty or unreadable selector selects nothing (policy/v1).
            if selector.is_some_and(|s| !s.is_everything() && s.matches(&ObjectLabels::of(pod))) {
                matching.push((key, record.mod_revision, pdb));
            }
        }
        let (key, revision, mut pdb) =
            match matching.len() {
                0 => return Ok(()),
                1 => matching.pop().expect("one element"),
                _ => return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                )),
            };
        let observed = object::get(&pdb, &["status", "observedGeneration"]).and_then(Value::as_i64).unwrap_or(0);
        let generation = object::get(&pdb, &["metadata", "generation"]).and_then(Value::as_i64).unwrap_or(0);
        let allowed = object::get(&pdb, &["status", "disruptionsAllowed"]).and_then(Value::as_i64).unwrap_or(0);
        if observed < generation || allowed <= 0 {
            return Err(blocked(&format!(
                "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {} needs {} healthy pods and has {} currently",
                object::name(&pdb),
                object::get(&pdb, &["status", "desiredHealthy"]).and_then(Value::as_i64).unwrap_or(0),
                object::get(&pdb, &["status", "currentHealthy"]).and_then(Value::as_i64).unwrap_or(0),
            )));
        }
        object::set(&mut pdb, &["status", "disruptionsAllowed"], json!(allowed - 1));
        object::set(&mut pdb, &["status", "disruptedPods", object::name(pod)], json!(object::now_rfc3339()));
        match store.update(key, object::encode(&pdb), Some(revision)).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(blocked("the disruption budget is being updated concurrently; retry"))
}
