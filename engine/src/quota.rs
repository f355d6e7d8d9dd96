//! What a namespace uses of the resources a ResourceQuota limits: kube's quota
//! evaluators for pods, services and claims, and object counts for the rest.
//!
//! Pure: the ResourceQuota controller hands in the namespace's objects from its
//! caches; quota admission in the API server measures one new object the same way.

use crate::quantity::{Quantity, QuantityFormat};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, PodSpec, ResourceQuotaSpec, ResourceRequirements, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The storage-class-scoped resources end with these (`gold.storageclass...`).
const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";
/// The beta annotation older claims name their class with.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// The namespace's objects a quota is measured against.
pub struct Objects<'a> {
    pub pods: &'a [Arc<Pod>],
    pub services: &'a [Arc<Service>],
    pub claims: &'a [Arc<PersistentVolumeClaim>],
    /// How many objects of another resource (`configmaps`, `deployments.apps`) the
    /// namespace holds; `None` for a resource not tracked.
    pub count: &'a dyn Fn(&str) -> Option<usize>,
}

/// One condition a pod must meet to be charged to a scoped quota.
#[derive(Clone, Debug, PartialEq)]
enum Scope {
    /// `spec.activeDeadlineSeconds` is set.
    Terminating,
    NotTerminating,
    /// No container asks for or is limited in CPU or memory.
    BestEffort,
    NotBestEffort,
    /// `spec.priorityClassName` against a scope selector expression.
    PriorityClass {
        operator: String,
        values: Vec<String>,
    },
    /// A pod (anti-)affinity term reaches into other namespaces.
    CrossNamespacePodAffinity,
}

/// The scopes of one quota: a pod is charged when it meets all of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn of(spec: &ResourceQuotaSpec) -> Scopes {
        let simple = |name: &str, operator: &str, values: Vec<String>| -> Option<Scope> {
            Some(match name {
                "Terminating" => Scope::Terminating,
                "NotTerminating" => Scope::NotTerminating,
                "BestEffort" => Scope::BestEffort,
                "NotBestEffort" => Scope::NotBestEffort,
                "PriorityClass" => Scope::PriorityClass { operator: operator.to_string(), values },
                "CrossNamespacePodAffinity" => Scope::CrossNamespacePodAffinity,
                _ => return None,
            })
        };
        let mut scopes: Vec<Scope> =
            spec.scopes.iter().flatten().filter_map(|name| simple(name, "Exists", Vec::new())).collect();
        let expressions = spec.scope_selector.as_ref().and_then(|s| s.match_expressions.as_ref());
        for expression in expressions.into_iter().flatten() {
            let values = expression.values.clone().unwrap_or_default();
            scopes.extend(simple(&expression.scope_name, &expression.operator, values));
        }
        Scopes(scopes)
    }

    pub fn matches(&self, pod: &Pod) -> bool {
        let Some(spec) = pod.spec.as_ref() else { return self.0.is_empty() };
        self.0.iter().all(|scope| match scope {
            Scope::Terminating => spec.active_deadline_seconds.is_some(),
            Scope::NotTerminating => spec.active_deadline_seconds.is_none(),
            Scope::BestEffort => best_effort(spec),
            Scope::NotBestEffort => !best_effort(spec),
            Scope::PriorityClass { operator, values } => {
                let class = spec.priority_class_name.as_deref().unwrap_or_default();
                match operator.as_str() {
                    "In" => values.iter().any(|v| v == class),
                    "NotIn" => !values.iter().any(|v| v == class),
                    "Exists" => !class.is_empty(),
                    "DoesNotExist" => class.is_empty(),
                    _ => false,
                }
            }
            Scope::CrossNamespacePodAffinity => cross_namespace_affinity(spec),
        })
    }
}

/// kube's BestEffort QoS class: no CPU or memory request or limit anywhere.
fn best_effort(spec: &PodSpec) -> bool {
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    !all.filter_map(|c| c.resources.as_ref()).any(|r| {
        [r.requests.as_ref(), r.limits.as_ref()]
            .into_iter()
            .flatten()
            .any(|list| list.keys().any(|k| k == "cpu" || k == "memory"))
    })
}

fn cross_namespace_affinity(spec: &PodSpec) -> bool {
    let Some(affinity) = spec.affinity.as_ref() else { return false };
    let mut terms = Vec::new();
    if let Some(a) = &affinity.pod_affinity {
        terms.extend(a.required_during_scheduling_ignored_during_execution.iter().flatten());
        terms.extend(
            a.preferred_during_scheduling_ignored_during_execution.iter().flatten().map(|w| &w.pod_affinity_term),
        );
    }
    if let Some(a) = &affinity.pod_anti_affinity {
        terms.extend(a.required_during_scheduling_ignored_during_execution.iter().flatten());
        terms.extend(
            a.preferred_during_scheduling_ignored_during_execution.iter().flatten().map(|w| &w.pod_affinity_term),
        );
    }
    terms.iter().any(|t| t.namespace_selector.is_some() || t.namespaces.as_ref().is_some_and(|n| !n.is_empty()))
}

/// Whether a pod is charged at all (kube's `QuotaV1Pod`): not once it has finished,
/// nor once its deletion's grace period has run out.
pub fn charged(pod: &Pod, now: Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    match (&pod.metadata.deletion_timestamp, pod.metadata.deletion_grace_period_seconds) {
        (Some(at), Some(grace)) => now <= at.0 + SignedDuration::from_secs(grace),
        _ => true,
    }
}

fn parse(quantity: &ApiQuantity) -> Quantity {
    Quantity::try_from(quantity).unwrap_or(Quantity::ZERO)
}

/// A pod's requests or limits (`pick` chooses which), by resource: the regular
/// containers add up; init containers run one at a time, so the pod needs the larger
/// of that and the biggest init container; sidecars (restartable init containers) keep
/// running and add to both; the overhead comes on top of what is set.
pub fn pod_amounts(
    spec: &PodSpec,
    pick: fn(&ResourceRequirements) -> Option<&BTreeMap<String, ApiQuantity>>,
) -> BTreeMap<String, Quantity> {
    let amounts = |c: &Container| -> BTreeMap<String, Quantity> {
        let list = c.resources.as_ref().and_then(pick);
        list.into_iter().flatten().map(|(k, v)| (k.clone(), parse(v))).collect()
    };
    let add = |into: &mut BTreeMap<String, Quantity>, from: &BTreeMap<String, Quantity>| {
        for (k, v) in from {
            let sum = into.get(k).copied().unwrap_or(Quantity::ZERO).plus(*v);
            into.insert(k.clone(), sum);
        }
    };
    let mut sum = BTreeMap::new();
    for container in &spec.containers {
        add(&mut sum, &amounts(container));
    }
    let mut sidecars = BTreeMap::new();
    let mut init_peak: BTreeMap<String, Quantity> = BTreeMap::new();
    for container in spec.init_containers.iter().flatten() {
        let own = amounts(container);
        let during = if container.restart_policy.as_deref() == Some("Always") {
            add(&mut sum, &own);
            add(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut during = own;
            add(&mut during, &sidecars);
            during
        };
        for (k, v) in during {
            let peak = init_peak.get(&k).copied().unwrap_or(Quantity::ZERO).larger(v);
            init_peak.insert(k, peak);
        }
    }
    for (k, v) in init_peak {
        let larger = sum.get(&k).copied().unwrap_or(Quantity::ZERO).larger(v);
        sum.insert(k, larger);
    }
    for (k, v) in spec.overhead.iter().flatten() {
        if let Some(total) = sum.get_mut(k) {
            *total = total.plus(parse(v));
        }
    }
    sum
}

/// What the charged pods use, by quota resource name (`requests.cpu`, `limits.memory`).
fn pods_usage(pods: &[&Pod]) -> BTreeMap<String, Quantity> {
    let mut usage = BTreeMap::new();
    let mut add = |name: String, amount: Quantity| {
        let total: &mut Quantity = usage.entry(name).or_insert(Quantity::ZERO);
        *total = total.plus(amount);
    };
    for spec in pods.iter().filter_map(|p| p.spec.as_ref()) {
        for (resource, amount) in pod_amounts(spec, |r| r.requests.as_ref()) {
            add(format!("requests.{resource}"), amount);
        }
        for (resource, amount) in pod_amounts(spec, |r| r.limits.as_ref()) {
            add(format!("limits.{resource}"), amount);
        }
    }
    usage
}

/// A claim's storage class: `spec.storageClassName`, or the beta annotation.
fn storage_class(claim: &PersistentVolumeClaim) -> &str {
    let annotation = claim.metadata.annotations.as_ref().and_then(|a| a.get(BETA_STORAGE_CLASS));
    annotation.or(claim.spec.as_ref().and_then(|s| s.storage_class_name.as_ref())).map_or("", String::as_str)
}

fn claim_storage(claim: &PersistentVolumeClaim) -> Quantity {
    let requests = claim.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref());
    requests.and_then(|r| r.get("storage")).map_or(Quantity::ZERO, parse)
}

/// Node ports a Service takes: one per port for NodePort and LoadBalancer Services
/// (unless a LoadBalancer opts out of node ports).
fn node_ports(service: &Service) -> usize {
    let Some(spec) = service.spec.as_ref() else { return 0 };
    let ports = spec.ports.as_ref().map_or(0, Vec::len);
    match spec.type_.as_deref() {
        Some("NodePort") => ports,
        Some("LoadBalancer") if spec.allocate_load_balancer_node_ports != Some(false) => ports,
        _ => 0,
    }
}

fn count(n: usize) -> Quantity {
    Quantity::from_units(n as i64, QuantityFormat::DecimalSI)
}

/// Whether quota resource `name` measures objects of `resource` (a plural, with its
/// group after a dot for grouped kinds: `pods`, `deployments.apps`): the resources
/// kube's evaluator for that kind matches. An object's create is charged only to these.
pub fn concerns(resource: &str, name: &str) -> bool {
    if name.strip_prefix("count/").unwrap_or(name) == resource {
        return true;
    }
    match resource {
        "pods" => {
            matches!(
                name,
                "cpu"
                    | "memory"
                    | "ephemeral-storage"
                    | "requests.cpu"
                    | "requests.memory"
                    | "requests.ephemeral-storage"
                    | "limits.cpu"
                    | "limits.memory"
                    | "limits.ephemeral-storage"
            ) || name.starts_with("hugepages-")
                || name.starts_with("requests.hugepages-")
                // Extended resources (`requests.example.com/gpu`) carry a domain.
                || name.strip_prefix("requests.").is_some_and(|r| r.contains('/'))
        }
        "services" => matches!(name, "services.loadbalancers" | "services.nodeports"),
        "persistentvolumeclaims" => {
            name == "requests.storage"
                || name
                    .split_once(STORAGE_CLASS_SUFFIX)
                    .is_some_and(|(_, what)| matches!(what, "requests.storage" | "persistentvolumeclaims"))
        }
        _ => false,
    }
}

/// The quota resources a pod must state for each container once a quota limits them
/// (kube keeps this rule for compatibility: quota on CPU or memory demands explicit
/// requests or limits, which LimitRange defaults usually supply).
const MUST_STATE: [&str; 6] = ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

/// What `pod`'s containers leave unstated of the `limited` quota resources, in kube's
/// words (`must specify limits.cpu for: app; requests.memory for: app,init`), or
/// `None` when every container states them all.
pub fn unstated(pod: &Pod, limited: &[&str]) -> Option<String> {
    let required: Vec<&str> = MUST_STATE.iter().copied().filter(|r| limited.contains(r)).collect();
    let spec = pod.spec.as_ref()?;
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for container in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let resources = container.resources.as_ref();
        let has = |list: Option<&BTreeMap<String, ApiQuantity>>, key: &str| list.is_some_and(|l| l.contains_key(key));
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        for name in &required {
            let stated = match *name {
                "cpu" | "requests.cpu" => has(requests, "cpu"),
                "memory" | "requests.memory" => has(requests, "memory"),
                "limits.cpu" => has(limits, "cpu"),
                _ => has(limits, "memory"),
            };
            if !stated {
                missing.entry(name).or_default().push(&container.name);
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(resource, mut containers)| {
            containers.sort_unstable();
            containers.dedup();
            format!("{resource} for: {}", containers.join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// The usage of each resource in `hard` that keelson can measure (others are left
/// out, as kube leaves out resources no evaluator knows).
pub fn used<'h>(
    hard: impl IntoIterator<Item = &'h str>,
    scopes: &Scopes,
    objects: &Objects<'_>,
    now: Timestamp,
) -> BTreeMap<String, Quantity> {
    let charged: Vec<&Pod> =
        objects.pods.iter().map(|p| &**p).filter(|p| charged(p, now) && scopes.matches(p)).collect();
    let mut pod_usage = None;
    let mut from_pods = |name: &str| -> Quantity {
        let usage = pod_usage.get_or_insert_with(|| pods_usage(&charged));
        usage.get(name).copied().unwrap_or(Quantity::ZERO)
    };
    let mut used = BTreeMap::new();
    for resource in hard {
        let amount = match resource {
            "pods" | "count/pods" => count(charged.len()),
            "cpu" | "memory" | "ephemeral-storage" => from_pods(&format!("requests.{resource}")),
            r if r.starts_with("hugepages-") => from_pods(&format!("requests.{r}")),
            "services" | "count/services" => count(objects.services.len()),
            "services.loadbalancers" => count(
                objects
                    .services
                    .iter()
                    .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
                    .count(),
            ),
            "services.nodeports" => count(objects.services.iter().map(|s| node_ports(s)).sum()),
            "persistentvolumeclaims" | "count/persistentvolumeclaims" => count(objects.claims.len()),
            "requests.storage" => objects.claims.iter().fold(Quantity::ZERO, |t, c| t.plus(claim_storage(c))),
            r if r.contains(STORAGE_CLASS_SUFFIX) => {
                let (class, what) = r.split_once(STORAGE_CLASS_SUFFIX).unwrap_or_default();
                let claims = objects.claims.iter().filter(|c| storage_class(c) == class);
                match what {
                    "requests.storage" => claims.fold(Quantity::ZERO, |t, c| t.plus(claim_storage(c))),
                    "persistentvolumeclaims" => count(claims.count()),
                    _ => continue,
                }
            }
            r if r.starts_with("requests.") || r.starts_with("limits.") => from_pods(r),
            r => match (objects.count)(r.strip_prefix("count/").unwrap_or(r)) {
                Some(n) => count(n),
                None => continue,
            },
        };
        used.insert(resource.to_string(), amount);
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(value).expect("a pod"))
    }

    fn web(cpu: &str, memory: &str) -> Arc<Pod> {
        pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": "1", "memory": memory}}}]}}))
    }

    fn measure(hard: &[&str], scopes: &Scopes, objects: &Objects<'_>) -> BTreeMap<String, String> {
        let used = used(hard.iter().copied(), scopes, objects, Timestamp::now());
        used.into_iter().map(|(k, v)| (k, v.to_string())).collect()
    }

    fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn pods_are_charged_their_requests_and_limits_until_they_finish() {
        let finished = pod(json!({"metadata": {"name": "done"}, "spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": "4"}}}]}, "status": {"phase": "Succeeded"}}));
        let pods = vec![web("100m", "500Mi"), web("250m", "500Mi"), finished];
        let no_count = |_: &str| None;
        let objects = Objects { pods: &pods, services: &[], claims: &[], count: &no_count };
        let hard = ["pods", "requests.cpu", "cpu", "requests.memory", "limits.cpu", "limits.memory", "secrets"];
        assert_eq!(
            measure(&hard, &Scopes::default(), &objects),
            strings(&[
                ("pods", "2"),
                ("requests.cpu", "350m"),
                ("cpu", "350m"),
                ("requests.memory", "1000Mi"),
                ("limits.cpu", "2"),
                ("limits.memory", "1000Mi"),
            ]),
            "secrets are not tracked here, so left out"
        );
    }

    #[test]
    fn init_containers_count_at_their_peak_and_sidecars_on_top() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [
                {"name": "big-init", "resources": {"requests": {"cpu": "2"}}},
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}],
            "overhead": {"cpu": "50m"}}}));
        let no_count = |_: &str| None;
        let objects = Objects { pods: &[p], services: &[], claims: &[], count: &no_count };
        // max(500m + 100m sidecar, 2 init) + 50m overhead.
        assert_eq!(measure(&["requests.cpu"], &Scopes::default(), &objects), strings(&[("requests.cpu", "2050m")]));
    }

    #[test]
    fn scopes_pick_the_pods_charged() {
        let best_effort = pod(json!({"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c"}],
            "activeDeadlineSeconds": 30, "priorityClassName": "high"}}));
        let pods = vec![web("100m", "1Gi"), best_effort];
        let no_count = |_: &str| None;
        let objects = Objects { pods: &pods, services: &[], claims: &[], count: &no_count };
        let spec = |value: serde_json::Value| Scopes::of(&serde_json::from_value(value).expect("a spec"));
        let pods_under = |scopes: serde_json::Value| measure(&["pods"], &spec(scopes), &objects)["pods"].clone();
        assert_eq!(pods_under(json!({"scopes": ["BestEffort"]})), "1");
        assert_eq!(pods_under(json!({"scopes": ["NotBestEffort", "NotTerminating"]})), "1");
        assert_eq!(pods_under(json!({"scopes": ["NotBestEffort", "Terminating"]})), "0");
        let priority = |operator: &str, values: serde_json::Value| {
            pods_under(json!({"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": operator, "values": values}]}}))
        };
        assert_eq!(priority("In", json!(["high"])), "1");
        assert_eq!(priority("NotIn", json!(["high"])), "1");
        assert_eq!(priority("Exists", json!(null)), "1");
        assert_eq!(priority("DoesNotExist", json!(null)), "1");
        assert_eq!(priority("In", json!(["low"])), "0");
    }

    #[test]
    fn a_pod_past_its_deletion_grace_is_not_charged() {
        let now = Timestamp::now();
        let deleting = |seconds_ago: i64| {
            let at = now - SignedDuration::from_secs(seconds_ago);
            pod(json!({"metadata": {"name": "p", "deletionTimestamp": at.to_string(),
                "deletionGracePeriodSeconds": 30}, "spec": {"containers": [{"name": "c"}]}}))
        };
        assert!(charged(&deleting(10), now));
        assert!(!charged(&deleting(60), now));
    }

    #[test]
    fn services_claims_and_object_counts() {
        let service = |kind: &str, ports: usize| -> Arc<Service> {
            let ports: Vec<_> = (0..ports).map(|i| json!({"port": 80 + i})).collect();
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"type": kind, "ports": ports}}))
                    .expect("a service"),
            )
        };
        let claim = |class: &str, size: &str| -> Arc<PersistentVolumeClaim> {
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": {"storageClassName": class,
                    "resources": {"requests": {"storage": size}}}}))
                .expect("a claim"),
            )
        };
        let services = vec![service("ClusterIP", 1), service("NodePort", 2), service("LoadBalancer", 1)];
        let claims = vec![claim("gold", "10Gi"), claim("silver", "5Gi")];
        let counts = |resource: &str| match resource {
            "configmaps" => Some(3),
            "deployments.apps" => Some(1),
            _ => None,
        };
        let objects = Objects { pods: &[], services: &services, claims: &claims, count: &counts };
        let hard = [
            "services",
            "services.nodeports",
            "services.loadbalancers",
            "persistentvolumeclaims",
            "requests.storage",
            "gold.storageclass.storage.k8s.io/requests.storage",
            "silver.storageclass.storage.k8s.io/persistentvolumeclaims",
            "configmaps",
            "count/deployments.apps",
            "count/widgets.example.com",
        ];
        assert_eq!(
            measure(&hard, &Scopes::default(), &objects),
            strings(&[
                ("services", "3"),
                ("services.nodeports", "3"),
                ("services.loadbalancers", "1"),
                ("persistentvolumeclaims", "2"),
                ("requests.storage", "15Gi"),
                ("gold.storageclass.storage.k8s.io/requests.storage", "10Gi"),
                ("silver.storageclass.storage.k8s.io/persistentvolumeclaims", "1"),
                ("configmaps", "3"),
                ("count/deployments.apps", "1"),
            ])
        );
    }

    #[test]
    fn each_kind_is_charged_only_its_own_quota_resources() {
        assert!(concerns("pods", "pods") && concerns("pods", "count/pods") && concerns("pods", "limits.memory"));
        assert!(concerns("pods", "requests.example.com/gpu") && concerns("pods", "hugepages-2Mi"));
        assert!(!concerns("pods", "requests.storage") && !concerns("pods", "services"));
        assert!(concerns("services", "services.nodeports") && !concerns("services", "pods"));
        assert!(concerns("persistentvolumeclaims", "gold.storageclass.storage.k8s.io/requests.storage"));
        assert!(concerns("configmaps", "configmaps") && concerns("deployments.apps", "count/deployments.apps"));
        assert!(!concerns("configmaps", "count/secrets"));
    }

    #[test]
    fn quota_on_cpu_or_memory_makes_each_container_state_it() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "1"}}}]}}));
        assert_eq!(
            unstated(&p, &["pods", "requests.cpu", "limits.memory"]).unwrap(),
            "must specify limits.memory for: app,init; requests.cpu for: init"
        );
        assert_eq!(unstated(&p, &["pods", "requests.storage"]), None);
    }
}
