//! ResourceQuota admission: a create that would take its namespace past a quota's
//! hard limits is refused with kube's message; otherwise it is charged to each
//! quota's `status.used` before it is stored, with a compare-and-swap per quota, so
//! two concurrent creates cannot both take the last unit.
//!
//! As in kube, a quota counts once its controller has filled in `status.hard`, and
//! a quota whose `status.used` lacks a resource the create would use refuses it until
//! the controller has measured it. A create that fails after being charged leaves
//! the charge until the ResourceQuota controller next recomputes `used` from what
//! exists. An update is charged what it adds (a claim asking for more storage, a
//! Service that becomes a NodePort or LoadBalancer); one that adds nothing is not
//! judged, as in kube.

use crate::admitted::AsValue;
use crate::cache::WatchCache;
use crate::object;
use crate::resources::ResourceInfo;
use bytes::Bytes;
use keelson_engine::k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota, Service};
use keelson_engine::k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use keelson_engine::k8s_openapi::jiff::Timestamp;
use keelson_engine::quota::{self, Objects, Scopes};
use keelson_engine::{ApiError, Quantity, Revision};
use keelson_store::{ListOptions, Store, StoreError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Attempts at charging before the create is refused as contended.
const ATTEMPTS: usize = 8;

/// The new object, typed for the evaluator that measures its kind.
enum Measured {
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    Claim(Arc<PersistentVolumeClaim>),
    /// Any other kind: counted only.
    Counted,
}

/// One quota as stored, with what the create would make its usage.
struct Charge {
    key: Bytes,
    revision: Revision,
    stored: Value,
    used: BTreeMap<String, Quantity>,
}

/// Checks a create of `candidate` (or an update of `old` to it) against every quota
/// in `namespace` and, unless `dry_run`, charges it to them; `Err` is the 403 to
/// answer.
pub async fn admit(
    store: &Store,
    cache: &WatchCache,
    info: &ResourceInfo,
    namespace: &str,
    candidate: &mut impl AsValue,
    old: Option<&Value>,
    dry_run: bool,
) -> Result<(), ApiError> {
    let prefix = keelson_store::resource_prefix("resourcequotas", Some(namespace));
    // Nearly every namespace has no quota: the cache answers that without a decode.
    let mut quotas = cache.find_under(prefix.as_bytes()).map_err(ApiError::internal)?;
    if quotas.is_empty() {
        return Ok(());
    }
    let resource =
        if info.group.is_empty() { info.plural.to_string() } else { format!("{}.{}", info.plural, info.group) };
    let candidate = candidate.as_value()?;
    let measured = Measured::of(info, candidate)?;
    let before = old.map(|old| Measured::of(info, old)).transpose()?;
    let refuse = |why: String| ApiError::forbidden(info.group, info.plural, object::name(candidate), &why);
    let mut charged: Vec<Bytes> = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut charges = Vec::new();
        for (key, bytes, revision) in quotas.iter().filter(|(key, ..)| !charged.contains(key)) {
            let stored: Value = serde_json::from_slice(bytes).map_err(ApiError::internal)?;
            let quota: ResourceQuota = serde_json::from_value(stored.clone()).map_err(ApiError::internal)?;
            if let Some(used) = assess(&quota, &resource, &measured, before.as_ref()).map_err(refuse)? {
                charges.push(Charge { key: key.clone(), revision: *revision, stored, used });
            }
        }
        if dry_run {
            return Ok(());
        }
        let mut contended = false;
        for charge in charges {
            let mut stored = charge.stored;
            for (name, amount) in &charge.used {
                object::set(&mut stored, &["status", "used", name], Value::String(amount.to_string()));
            }
            match store.update(charge.key.clone(), object::encode(&stored), Some(charge.revision)).await {
                Ok(_) => charged.push(charge.key),
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => contended = true,
                Err(error) => return Err(ApiError::internal(error)),
            }
        }
        if !contended {
            return Ok(());
        }
        // Another writer moved a quota: measure again against what is stored now.
        let page = store.list(prefix.as_bytes(), &ListOptions::default()).map_err(ApiError::internal)?;
        quotas = page.items.into_iter().filter_map(|(key, r)| Some((key, r.value?, r.mod_revision))).collect();
    }
    Err(refuse("the quota is being updated concurrently; retry".into()))
}

fn decode<T: serde::de::DeserializeOwned>(candidate: &Value) -> Result<T, ApiError> {
    serde_json::from_value(candidate.clone()).map_err(ApiError::internal)
}

impl Measured {
    fn of(info: &ResourceInfo, object: &Value) -> Result<Measured, ApiError> {
        Ok(match (info.group, info.kind) {
            ("", "Pod") => Measured::Pod(Arc::new(decode(object)?)),
            ("", "Service") => Measured::Service(Arc::new(decode(object)?)),
            ("", "PersistentVolumeClaim") => Measured::Claim(Arc::new(decode(object)?)),
            _ => Measured::Counted,
        })
    }

    /// What this object alone uses of the `limited` resources.
    fn usage(&self, resource: &str, limited: &[&str], scopes: &Scopes) -> BTreeMap<String, Quantity> {
        let one = |r: &str| (r == resource).then_some(1);
        let (pods, services, claims) = match self {
            Measured::Pod(p) => (vec![Arc::clone(p)], vec![], vec![]),
            Measured::Service(s) => (vec![], vec![Arc::clone(s)], vec![]),
            Measured::Claim(c) => (vec![], vec![], vec![Arc::clone(c)]),
            Measured::Counted => (vec![], vec![], vec![]),
        };
        let objects = Objects { pods: &pods, services: &services, claims: &claims, count: &one };
        quota::used(limited.iter().copied(), scopes, &objects, Timestamp::now())
    }
}

/// What one quota makes of the create (or of the update from `before`): `Ok(None)`
/// when it is not charged to this quota, `Ok(Some(used))` with the quota's new usage
/// of what it is charged, or the reason for refusing it.
fn assess(
    quota: &ResourceQuota,
    resource: &str,
    measured: &Measured,
    before: Option<&Measured>,
) -> Result<Option<BTreeMap<String, Quantity>>, String> {
    let name = quota.metadata.name.as_deref().unwrap_or("");
    let spec = quota.spec.clone().unwrap_or_default();
    let scopes = Scopes::of(&spec);
    // Scopes describe pods; a quota with scopes charges nothing else.
    let matches = match measured {
        Measured::Pod(pod) => scopes.matches(pod),
        _ => scopes == Scopes::default(),
    };
    let status = quota.status.as_ref();
    let hard = status.and_then(|s| s.hard.as_ref());
    let used = status.and_then(|s| s.used.as_ref());
    let limited: Vec<&str> =
        hard.into_iter().flatten().map(|(k, _)| k.as_str()).filter(|k| quota::concerns(resource, k)).collect();
    if !matches || limited.is_empty() {
        return Ok(None);
    }
    let mut requested = measured.usage(resource, &limited, &scopes);
    if let Some(before) = before {
        // An update is charged only what it adds.
        let was = before.usage(resource, &limited, &scopes);
        for (what, amount) in requested.iter_mut() {
            *amount = amount.minus(was.get(what).copied().unwrap_or(Quantity::ZERO));
        }
    }
    requested.retain(|_, amount| amount.nanos() > 0);
    if before.is_some() && requested.is_empty() {
        return Ok(None);
    }
    if let Measured::Pod(pod) = measured {
        if let Some(missing) = quota::unstated(pod, &limited) {
            return Err(format!("failed quota: {name}: {missing}"));
        }
    }
    if limited.iter().any(|k| !used.is_some_and(|u| u.contains_key(*k))) {
        // kube names every resource the quota limits for this kind, not only the unmeasured.
        let mut names = limited.clone();
        names.sort_unstable();
        return Err(format!("status unknown for quota: {name}, resources: {}", names.join(",")));
    }
    if requested.is_empty() {
        return Ok(None);
    }
    let parse = |list: Option<&BTreeMap<String, ApiQuantity>>, name: &str| -> Quantity {
        list.and_then(|l| l.get(name)).and_then(|q| Quantity::try_from(q).ok()).unwrap_or(Quantity::ZERO)
    };
    let mut new_used = BTreeMap::new();
    let mut exceeded = Vec::new();
    for (resource, amount) in &requested {
        let now = parse(used, resource);
        let total = now.plus(*amount);
        let limit = parse(hard, resource);
        if total.nanos() > limit.nanos() {
            exceeded.push((resource.as_str(), *amount, now, limit));
        }
        new_used.insert(resource.clone(), total);
    }
    if !exceeded.is_empty() {
        let list = |pick: fn(&(&str, Quantity, Quantity, Quantity)) -> Quantity| {
            exceeded.iter().map(|e| format!("{}={}", e.0, pick(e))).collect::<Vec<_>>().join(",")
        };
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            list(|e| e.1),
            list(|e| e.2),
            list(|e| e.3)
        ));
    }
    Ok(Some(new_used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quota(hard: Value, used: Value, spec: Value) -> ResourceQuota {
        let mut spec = spec;
        spec["hard"] = hard.clone();
        serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": spec,
            "status": {"hard": hard, "used": used}}))
        .expect("a quota")
    }

    fn web(cpu: &str) -> Measured {
        Measured::Pod(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app",
                "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}, "limits": {"cpu": cpu, "memory": "1Gi"}}}]}}))
            .expect("a pod"),
        ))
    }

    fn strings(used: BTreeMap<String, Quantity>) -> Vec<(String, String)> {
        used.into_iter().map(|(k, v)| (k, v.to_string())).collect()
    }

    #[test]
    fn a_create_is_charged_what_it_adds_and_refused_past_the_hard_limit() {
        let q = quota(
            json!({"pods": "2", "requests.cpu": "1", "configmaps": "5"}),
            json!({"pods": "1", "requests.cpu": "500m", "configmaps": "5"}),
            json!({}),
        );
        let charged = assess(&q, "pods", &web("250m"), None).unwrap().unwrap();
        assert_eq!(strings(charged), [("pods".into(), "2".into()), ("requests.cpu".into(), "750m".into())]);
        assert_eq!(
            assess(&q, "pods", &web("600m"), None).unwrap_err(),
            "exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"
        );
        assert_eq!(
            assess(&q, "configmaps", &Measured::Counted, None).unwrap_err(),
            "exceeded quota: q, requested: configmaps=1, used: configmaps=5, limited: configmaps=5"
        );
        assert_eq!(assess(&q, "secrets", &Measured::Counted, None).unwrap(), None, "not limited here");
    }

    #[test]
    fn unmeasured_and_unstated_resources_refuse_and_scopes_pick_pods() {
        let q = quota(json!({"pods": "2", "limits.cpu": "2"}), json!({"pods": "0"}), json!({}));
        assert_eq!(
            assess(&q, "pods", &web("1"), None).unwrap_err(),
            "status unknown for quota: q, resources: limits.cpu,pods"
        );
        let bare = Measured::Pod(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}}))
                .unwrap(),
        ));
        assert_eq!(assess(&q, "pods", &bare, None).unwrap_err(), "failed quota: q: must specify limits.cpu for: app");
        let best_effort = quota(json!({"pods": "1"}), json!({"pods": "1"}), json!({"scopes": ["BestEffort"]}));
        assert_eq!(assess(&best_effort, "pods", &web("1"), None).unwrap(), None, "not best effort");
        assert!(assess(&best_effort, "pods", &bare, None).is_err());
        assert_eq!(assess(&best_effort, "configmaps", &Measured::Counted, None).unwrap(), None);
    }

    #[test]
    fn an_update_is_charged_only_what_it_adds() {
        let claim = |size: &str| {
            Measured::Claim(Arc::new(
                serde_json::from_value(json!({"metadata": {"name": "data"},
                    "spec": {"resources": {"requests": {"storage": size}}}}))
                .expect("a claim"),
            ))
        };
        let q = quota(
            json!({"requests.storage": "2Gi", "persistentvolumeclaims": "1"}),
            json!({"requests.storage": "1Gi", "persistentvolumeclaims": "1"}),
            json!({}),
        );
        assert_eq!(
            assess(&q, "persistentvolumeclaims", &claim("3Gi"), Some(&claim("1Gi"))).unwrap_err(),
            "exceeded quota: q, requested: requests.storage=2Gi, used: requests.storage=1Gi, limited: requests.storage=2Gi"
        );
        let grown = assess(&q, "persistentvolumeclaims", &claim("2Gi"), Some(&claim("1Gi"))).unwrap().unwrap();
        assert_eq!(strings(grown), [("requests.storage".into(), "2Gi".into())], "the count is not charged again");
        assert_eq!(assess(&q, "persistentvolumeclaims", &claim("1Gi"), Some(&claim("1Gi"))).unwrap(), None);
        assert_eq!(assess(&q, "persistentvolumeclaims", &claim("512Mi"), Some(&claim("1Gi"))).unwrap(), None);
    }
}
