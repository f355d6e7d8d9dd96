//! LimitRanger admission: a namespace's LimitRanges give new pods' containers their
//! default requests and limits, and bound what pods, containers and claims may ask
//! for, refusing a create that goes outside them with kube's messages.
//!
//! Pods are checked when created only: their containers' resources cannot change
//! afterwards. Claims are checked when created and when updated (a claim asking for
//! more storage).

use crate::cache::WatchCache;
use crate::object;
use crate::resources::ResourceInfo;
use keelson_engine::k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, PersistentVolumeClaim, Pod};
use keelson_engine::k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use keelson_engine::quota::pod_amounts;
use keelson_engine::{ApiError, Quantity};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The annotation that says which defaults a pod was given.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

type Amounts = BTreeMap<String, Quantity>;

/// The namespace's LimitRanges, in name order, when it has any and they bound the
/// resource's objects (pods and claims); otherwise none, without a read.
pub fn limit_ranges(cache: &WatchCache, info: &ResourceInfo, namespace: &str) -> Result<Vec<LimitRange>, ApiError> {
    if !info.group.is_empty() || !matches!(info.kind, "Pod" | "PersistentVolumeClaim") {
        return Ok(Vec::new());
    }
    let prefix = keelson_store::resource_prefix("limitranges", Some(namespace));
    let found = cache.find_under(prefix.as_bytes()).map_err(ApiError::internal)?;
    found.iter().map(|(_, value, _)| serde_json::from_slice(value).map_err(ApiError::internal)).collect()
}

/// Fills in the containers' missing requests and limits from the `ranges`'
/// Container defaults, on the defaulted pod, and notes what it set in the
/// `kubernetes.io/limit-ranger` annotation; returns whether it set anything. A
/// container that states a limit but no request gets the limit as its request first,
/// as pod defaulting gives it, so a default request never undercuts a stated limit.
pub fn default_pod(ranges: &[LimitRange], pod: &mut Value) -> bool {
    let mut requests = Map::new();
    let mut limits = Map::new();
    for item in ranges.iter().filter_map(|r| r.spec.as_ref()).flat_map(|s| &s.limits) {
        if item.type_ != "Container" {
            continue;
        }
        // Stored LimitRanges have their defaults filled in from max and min already.
        for (name, value) in item.default_request.iter().flatten() {
            requests.entry(name.clone()).or_insert(Value::String(value.0.clone()));
        }
        for (name, value) in item.default.iter().flatten() {
            limits.entry(name.clone()).or_insert(Value::String(value.0.clone()));
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return false;
    }
    let mut notes = Vec::new();
    for (list, what) in [("containers", "container"), ("initContainers", "init container")] {
        if object::get(pod, &["spec", list]).is_none_or(|c| !c.is_array()) {
            continue;
        }
        let containers = object::entry(pod, &["spec", list]).as_array_mut().expect("checked above");
        for container in containers {
            let name = object::get_str(container, &["name"]).unwrap_or("").to_string();
            let resources = object::entry(container, &["resources"]);
            if !resources.is_object() {
                *resources = Value::Object(Map::new());
            }
            let stated_limits = resources.get("limits").and_then(Value::as_object).cloned().unwrap_or_default();
            let set_limits = fill(object::entry(resources, &["limits"]), &limits);
            let own_requests = object::entry(resources, &["requests"]);
            if !own_requests.is_object() {
                *own_requests = Value::Object(Map::new());
            }
            let own = own_requests.as_object_mut().expect("made an object above");
            for (resource, limit) in stated_limits {
                own.entry(resource).or_insert(limit);
            }
            let set_requests = fill(own_requests, &requests);
            if !set_requests.is_empty() {
                notes.push(format!("{} request for {what} {name}", set_requests.join(", ")));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        let annotations = object::entry(pod, &["metadata", "annotations"]);
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        annotations[ANNOTATION] = Value::String(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
    !notes.is_empty()
}

/// Adds each default `list` lacks; returns the resources it added, sorted.
fn fill(list: &mut Value, defaults: &Map<String, Value>) -> Vec<String> {
    if !list.is_object() {
        *list = Value::Object(Map::new());
    }
    let list = list.as_object_mut().expect("made an object above");
    let mut set = Vec::new();
    for (name, value) in defaults {
        if !list.contains_key(name) {
            list.insert(name.clone(), value.clone());
            set.push(name.clone());
        }
    }
    set.sort();
    set
}

/// Checks a new pod or claim against the `ranges`' minimums, maximums and
/// limit-to-request ratios; refuses it with every violation, as kube does.
pub fn check(ranges: &[LimitRange], info: &ResourceInfo, candidate: &Value) -> Result<(), ApiError> {
    if ranges.is_empty() {
        return Ok(());
    }
    let items: Vec<&LimitRangeItem> = ranges.iter().filter_map(|r| r.spec.as_ref()).flat_map(|s| &s.limits).collect();
    let mut errors = Vec::new();
    if info.kind == "Pod" {
        let pod: Pod = serde_json::from_value(candidate.clone()).map_err(ApiError::internal)?;
        check_pod(&pod, &items, &mut errors);
    } else {
        let claim: PersistentVolumeClaim = serde_json::from_value(candidate.clone()).map_err(ApiError::internal)?;
        let requests =
            amounts(claim.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref()));
        for item in items.iter().filter(|i| i.type_ == "PersistentVolumeClaim") {
            for (name, min) in bounds(item.min.as_ref()) {
                errors.extend(below_min(&item.type_, &name, min, &requests, &Amounts::new()));
            }
            for (name, max) in bounds(item.max.as_ref()) {
                errors.extend(request_above_max(&item.type_, &name, max, &requests));
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let reasons = if errors.len() == 1 { errors.remove(0) } else { format!("[{}]", errors.join(", ")) };
    Err(ApiError::forbidden(info.group, info.plural, object::name(candidate), &reasons))
}

fn check_pod(pod: &Pod, items: &[&LimitRangeItem], errors: &mut Vec<String>) {
    let Some(spec) = pod.spec.as_ref() else { return };
    for item in items {
        match item.type_.as_str() {
            "Container" => {
                for container in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
                    let resources = container.resources.as_ref();
                    let requests = amounts(resources.and_then(|r| r.requests.as_ref()));
                    let limits = amounts(resources.and_then(|r| r.limits.as_ref()));
                    check_item(item, &requests, &limits, errors);
                }
            }
            "Pod" => {
                let requests = pod_amounts(spec, |r| r.requests.as_ref());
                let limits = pod_amounts(spec, |r| r.limits.as_ref());
                check_item(item, &requests, &limits, errors);
            }
            _ => {}
        }
    }
}

/// A Container or Pod item's three kinds of bound against one set of amounts.
fn check_item(item: &LimitRangeItem, requests: &Amounts, limits: &Amounts, errors: &mut Vec<String>) {
    let kind = item.type_.as_str();
    for (name, min) in bounds(item.min.as_ref()) {
        errors.extend(below_min(kind, &name, min, requests, limits));
    }
    for (name, max) in bounds(item.max.as_ref()) {
        errors.extend(above_max(kind, &name, max, requests, limits));
    }
    for (name, ratio) in bounds(item.max_limit_request_ratio.as_ref()) {
        errors.extend(ratio_exceeded(kind, &name, ratio, requests, limits));
    }
}

fn amounts(list: Option<&BTreeMap<String, ApiQuantity>>) -> Amounts {
    list.into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), Quantity::try_from(v).ok()?))).collect()
}

/// A LimitRange bound list (min, max, ratio) in resource order.
fn bounds(list: Option<&BTreeMap<String, ApiQuantity>>) -> Amounts {
    amounts(list)
}

fn below_min(kind: &str, name: &str, min: Quantity, requests: &Amounts, limits: &Amounts) -> Option<String> {
    let Some(request) = requests.get(name) else {
        return Some(format!("minimum {name} usage per {kind} is {min}.  No request is specified"));
    };
    if request.nanos() < min.nanos() {
        return Some(format!("minimum {name} usage per {kind} is {min}, but request is {request}"));
    }
    let limit = limits.get(name).filter(|l| l.nanos() < min.nanos())?;
    Some(format!("minimum {name} usage per {kind} is {min}, but limit is {limit}"))
}

fn above_max(kind: &str, name: &str, max: Quantity, requests: &Amounts, limits: &Amounts) -> Option<String> {
    let Some(limit) = limits.get(name) else {
        return Some(format!("maximum {name} usage per {kind} is {max}.  No limit is specified"));
    };
    if limit.nanos() > max.nanos() {
        return Some(format!("maximum {name} usage per {kind} is {max}, but limit is {limit}"));
    }
    let request = requests.get(name).filter(|r| r.nanos() > max.nanos())?;
    Some(format!("maximum {name} usage per {kind} is {max}, but request is {request}"))
}

/// A claim's maximum bounds its request (claims have no limits).
fn request_above_max(kind: &str, name: &str, max: Quantity, requests: &Amounts) -> Option<String> {
    let Some(request) = requests.get(name) else {
        return Some(format!("maximum {name} usage per {kind} is {max}.  No request is specified"));
    };
    (request.nanos() > max.nanos())
        .then(|| format!("maximum {name} usage per {kind} is {max}, but request is {request}"))
}

fn ratio_exceeded(kind: &str, name: &str, ratio: Quantity, requests: &Amounts, limits: &Amounts) -> Option<String> {
    let Some(request) = requests.get(name).filter(|r| !r.is_zero()) else {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
        ));
    };
    let Some(limit) = limits.get(name).filter(|l| !l.is_zero()) else {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
        ));
    };
    let observed = limit.nanos() as f64 / request.nanos() as f64;
    (observed * 1e9 > ratio.nanos() as f64).then(|| {
        format!("{name} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(value: Value) -> LimitRangeItem {
        serde_json::from_value(value).expect("a limit range item")
    }

    fn q(s: &str) -> Quantity {
        s.parse().expect("a quantity")
    }

    fn list(pairs: &[(&str, &str)]) -> Amounts {
        pairs.iter().map(|(k, v)| (k.to_string(), q(v))).collect()
    }

    #[test]
    fn bounds_are_reported_in_kubes_words() {
        let lr = item(json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1", "memory": "1Gi"},
            "maxLimitRequestRatio": {"cpu": "2"}}));
        let mut errors = Vec::new();
        check_item(&lr, &list(&[("cpu", "50m")]), &list(&[("cpu", "2")]), &mut errors);
        assert_eq!(
            errors,
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum cpu usage per Container is 1, but limit is 2",
                "maximum memory usage per Container is 1Gi.  No limit is specified",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 40.000000",
            ]
        );
        errors.clear();
        check_item(&lr, &list(&[("cpu", "500m")]), &list(&[("cpu", "1"), ("memory", "1Gi")]), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
