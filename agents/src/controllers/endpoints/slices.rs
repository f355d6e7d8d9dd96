//! The EndpointSlice controller: a selecting Service's endpoints as EndpointSlices of
//! at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints, one group of slices per address
//! type and resolved port set, owned by the Service (so they go when it goes).
//!
//! A reconcile changes as few slices as it can: an endpoint stays in the slice that
//! holds it, new endpoints fill slices already being rewritten and then slices with
//! room, and only then new slices; a slice left empty is reused before one is
//! created, else deleted. Writes go creates, then updates, then deletes, so an
//! endpoint never drops out between two writes. A Service without endpoints keeps
//! one empty placeholder slice.
//!
//! Slices are created with generated names, so a reconcile that ran on a cache that
//! had not yet seen the previous one's writes would create duplicates; [`Pending`]
//! holds a Service back until its cache shows every write it made.

use super::{endpoint_labels, hostname, is_endpoint, managed_selector, pod_reference, target_port};
use crate::controllers::pods::{self, controller_reference};
use crate::controllers::runtime::queue::WorkQueue;
use crate::controllers::runtime::{
    ignore_not_found, namespace_terminating, object_key, split_key, Action, Cache, Change, Informers, ReconcileError,
    Reconciler,
};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Endpoints one slice holds at most (kube's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "endpointslice-controller.k8s.io";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How long a write the watch never showed holds its Service back.
const PENDING_LIMIT: Duration = Duration::from_secs(10);

pub struct EndpointSliceController {
    client: Client,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
    slices: Arc<Cache<EndpointSlice>>,
    pending: Arc<Pending>,
    max_per_slice: usize,
}

/// The Service a managed slice belongs to (its cache key).
fn service_key_of(slice: &EndpointSlice) -> Option<String> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGER) {
        return None;
    }
    let service = labels.get(SERVICE_NAME_LABEL)?;
    Some(format!("{}/{service}", slice.metadata.namespace.as_deref().unwrap_or_default()))
}

fn revision(meta: &ObjectMeta) -> u64 {
    meta.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl EndpointSliceController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let services = informers.get::<Service>();
        let pods = informers.get::<Pod>();
        let slices = informers.get::<EndpointSlice>();
        let pending = Arc::new(Pending::default());
        let q = Arc::clone(queue);
        let p = Arc::clone(&pending);
        services.on_change(move |change| {
            let key = object_key(change.object().as_ref());
            if let Change::Deleted(_) = change {
                p.forget(&key);
            }
            q.add(&key);
        });
        let (q, service_cache) = (Arc::clone(queue), services.cache());
        pods.on_change(move |change| super::on_pod_change(&service_cache, &q, change));
        let (q, p) = (Arc::clone(queue), Arc::clone(&pending));
        slices.on_change(move |change| {
            let slice = change.object();
            let Some(service) = service_key_of(slice) else { return };
            let name = slice.metadata.name.as_deref().unwrap_or_default();
            let seen = match change {
                Change::Deleted(_) => None,
                _ => Some(revision(&slice.metadata)),
            };
            p.observe(&service, name, seen);
            q.add(&service);
        });
        Arc::new(EndpointSliceController {
            client: informers.client().clone(),
            services: services.cache(),
            pods: pods.cache(),
            nodes: informers.get::<Node>().cache(),
            slices: slices.cache(),
            pending,
            max_per_slice: MAX_ENDPOINTS_PER_SLICE,
        })
    }
}

/// Slice writes the cache has not shown yet, per Service: slice name → the revision
/// written (`None`: deleted), and when.
#[derive(Default)]
pub struct Pending {
    writes: Mutex<HashMap<String, SliceWrites>>,
}

/// Slice name → the revision written (`None`: deleted) and when.
type SliceWrites = HashMap<String, (Option<u64>, Instant)>;

impl Pending {
    /// Records a write, unless `cached` (what the cache holds now: `None` for
    /// nothing) already shows it. The check and the record happen under the lock
    /// [`Pending::observe`] takes after the cache is updated, so a watch event that
    /// races the write's response is either seen here or observed there.
    fn expect(&self, service: &str, slice: &str, revision: Option<u64>, cached: impl FnOnce() -> Option<u64>) {
        let mut writes = self.writes.lock();
        let shown = match (revision, cached()) {
            (Some(written), Some(seen)) => seen >= written,
            (None, None) => true,
            _ => false,
        };
        if !shown {
            writes.entry(service.into()).or_default().insert(slice.into(), (revision, Instant::now()));
        }
    }

    /// The watch showed `slice` at `seen` (`None`: deleted).
    fn observe(&self, service: &str, slice: &str, seen: Option<u64>) {
        let mut writes = self.writes.lock();
        let Some(slices) = writes.get_mut(service) else { return };
        let settled = match (slices.get(slice), seen) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some((Some(written), _)), Some(seen)) => seen >= *written,
            (Some((None, _)), Some(_)) => false,
        };
        if settled {
            slices.remove(slice);
            if slices.is_empty() {
                writes.remove(service);
            }
        }
    }

    /// Whether the cache shows every write made for `service` (a write unseen for
    /// longer than [`PENDING_LIMIT`] is given up on).
    fn settled(&self, service: &str) -> bool {
        let mut writes = self.writes.lock();
        let Some(slices) = writes.get_mut(service) else { return true };
        slices.retain(|_, (_, at)| at.elapsed() < PENDING_LIMIT);
        if slices.is_empty() {
            writes.remove(service);
            return true;
        }
        false
    }

    fn forget(&self, service: &str) {
        self.writes.lock().remove(service);
    }
}

/// One group of endpoints: an address type and the ports its pods resolve to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct GroupKey {
    address_type: String,
    ports: Vec<(String, i32, String)>,
}

fn port_key(ports: &[EndpointPort]) -> Vec<(String, i32, String)> {
    let mut key: Vec<_> = ports
        .iter()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0), p.protocol.clone().unwrap_or_default()))
        .collect();
    key.sort();
    key
}

fn group_of(slice: &EndpointSlice) -> GroupKey {
    GroupKey { address_type: slice.address_type.clone(), ports: port_key(slice.ports.as_deref().unwrap_or_default()) }
}

/// Identifies an endpoint across reconciles: its pod, else its address.
fn endpoint_id(endpoint: &Endpoint) -> String {
    match endpoint.target_ref.as_ref().and_then(|r| r.uid.clone()) {
        Some(uid) => uid,
        None => endpoint.addresses.first().cloned().unwrap_or_default(),
    }
}

type Groups = BTreeMap<GroupKey, (Vec<EndpointPort>, Vec<Endpoint>)>;

/// The endpoints a Service should have, grouped by address type and port set.
fn desired_groups(service: &Service, selected: &[Arc<Pod>], nodes: &Cache<Node>) -> Groups {
    let spec = service.spec.as_ref();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let service_ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let mut groups = Groups::new();
    for pod in selected.iter().filter(|p| is_endpoint(p, true)) {
        let status = pod.status.as_ref().expect("endpoints have a status");
        let ip = status.pod_ip.clone().unwrap_or_default();
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|port| {
                Some(EndpointPort {
                    name: Some(port.name.clone().unwrap_or_default()),
                    port: Some(target_port(port, pod)?),
                    protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: port.app_protocol.clone(),
                })
            })
            .collect();
        let serving = pods::is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let zone = node_name
            .as_deref()
            .and_then(|n| nodes.get(n))
            .and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned());
        let endpoint = Endpoint {
            addresses: vec![ip.clone()],
            conditions: Some(EndpointConditions {
                // Never ready while terminating, unless the Service publishes every pod.
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname(pod, service),
            node_name,
            target_ref: Some(pod_reference(pod)),
            zone,
            ..Default::default()
        };
        let address_type = if ip.contains(':') { "IPv6" } else { "IPv4" };
        let key = GroupKey { address_type: address_type.into(), ports: port_key(&ports) };
        groups.entry(key).or_insert_with(|| (ports, Vec::new())).1.push(endpoint);
    }
    groups
}

/// The slice writes that bring a Service's slices to `desired`.
#[derive(Debug, Default)]
struct Plan {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<Arc<EndpointSlice>>,
}

/// One group's endpoints not yet placed: by id, and in the order pods listed them.
struct Wanted {
    ports: Vec<EndpointPort>,
    by_id: BTreeMap<String, Endpoint>,
    order: Vec<String>,
}

/// A slice as this reconcile will leave it.
struct Draft {
    original: Option<Arc<EndpointSlice>>,
    group: GroupKey,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
}

impl Draft {
    fn changed(&self, labels: &BTreeMap<String, String>) -> bool {
        let Some(original) = &self.original else { return true };
        original.endpoints != self.endpoints
            || group_of(original) != self.group
            || original.ports.clone().unwrap_or_default() != self.ports
            || original.metadata.labels.as_ref() != Some(labels)
    }
}

fn plan(
    service: &Service,
    existing: &[Arc<EndpointSlice>],
    mut desired: Groups,
    labels: &BTreeMap<String, String>,
    max: usize,
) -> Plan {
    // A Service without endpoints keeps a single empty placeholder slice.
    let mut placeholder = None;
    if desired.is_empty() {
        let address_type = service
            .spec
            .as_ref()
            .and_then(|s| s.ip_families.as_ref()?.first().cloned())
            .unwrap_or_else(|| "IPv4".into());
        let key = GroupKey { address_type, ports: Vec::new() };
        desired.insert(key.clone(), (Vec::new(), Vec::new()));
        placeholder = Some(key);
    }
    let mut drafts: Vec<Draft> = Vec::new();
    let mut spare: Vec<Arc<EndpointSlice>> = Vec::new();
    let mut slices: Vec<&Arc<EndpointSlice>> = existing.iter().collect();
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // Endpoints stay where they are, updated in place.
    let mut wanted: HashMap<GroupKey, Wanted> = desired
        .into_iter()
        .map(|(key, (ports, endpoints))| {
            let order = endpoints.iter().map(endpoint_id).collect();
            let by_id = endpoints.into_iter().map(|e| (endpoint_id(&e), e)).collect();
            (key, Wanted { ports, by_id, order })
        })
        .collect();
    for slice in slices {
        let group = group_of(slice);
        let Some(Wanted { ports, by_id: remaining, .. }) = wanted.get_mut(&group) else {
            spare.push(Arc::clone(slice));
            continue;
        };
        let endpoints: Vec<Endpoint> =
            slice.endpoints.iter().filter_map(|e| remaining.remove(&endpoint_id(e))).take(max).collect();
        let first_placeholder = placeholder.as_ref() == Some(&group) && !drafts.iter().any(|d| d.group == group);
        if endpoints.is_empty() && !first_placeholder {
            spare.push(Arc::clone(slice));
            continue;
        }
        drafts.push(Draft { original: Some(Arc::clone(slice)), group, ports: ports.clone(), endpoints });
    }
    // New endpoints: first into slices being rewritten anyway, then any with room,
    // then spare slices of the same address type, then new slices.
    let mut keys: Vec<GroupKey> = wanted.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let Wanted { ports, by_id: mut remaining, order } = wanted.remove(&key).expect("listed above");
        let mut fresh: Vec<Endpoint> = order.iter().filter_map(|id| remaining.remove(id)).collect();
        for pass in 0..2 {
            for draft in drafts.iter_mut().filter(|d| d.group == key) {
                if fresh.is_empty() {
                    break;
                }
                if pass == 0 && !draft.changed(labels) {
                    continue;
                }
                let room = max.saturating_sub(draft.endpoints.len()).min(fresh.len());
                draft.endpoints.extend(fresh.drain(..room));
            }
        }
        let needs_placeholder =
            |drafts: &[Draft]| placeholder.as_ref() == Some(&key) && !drafts.iter().any(|d| d.group == key);
        while !fresh.is_empty() || needs_placeholder(&drafts) {
            let take = fresh.len().min(max);
            let endpoints: Vec<Endpoint> = fresh.drain(..take).collect();
            let reuse = spare.iter().position(|s| s.address_type == key.address_type);
            let original = reuse.map(|i| spare.remove(i));
            drafts.push(Draft { original, group: key.clone(), ports: ports.clone(), endpoints });
        }
    }
    let mut plan = Plan { delete: spare, ..Default::default() };
    let namespace = service.metadata.namespace.clone();
    let name = service.metadata.name.clone().unwrap_or_default();
    for draft in drafts {
        if !draft.changed(labels) {
            continue;
        }
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: draft.original.as_ref().and_then(|o| o.metadata.name.clone()),
                generate_name: draft.original.is_none().then(|| format!("{name}-")),
                namespace: namespace.clone(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![controller_reference("v1", "Service", &service.metadata)]),
                resource_version: draft.original.as_ref().and_then(|o| o.metadata.resource_version.clone()),
                ..Default::default()
            },
            address_type: draft.group.address_type,
            endpoints: draft.endpoints,
            ports: Some(draft.ports),
        };
        match draft.original {
            Some(_) => plan.update.push(slice),
            None => plan.create.push(slice),
        }
    }
    plan
}

/// The labels a managed slice of `service` carries.
fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoint_labels(service);
    labels.insert(SERVICE_NAME_LABEL.into(), service.metadata.name.clone().unwrap_or_default());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
    labels
}

impl EndpointSliceController {
    /// The managed slices of `service` in the cache.
    fn slices_of(&self, service: &Service) -> Vec<Arc<EndpointSlice>> {
        let uid = service.metadata.uid.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref();
        self.slices
            .owned_by(uid)
            .into_iter()
            .filter(|s| {
                let labels = s.metadata.labels.as_ref();
                labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGER)
                    && labels.and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str) == name
            })
            .collect()
    }
}

impl EndpointSliceController {
    /// Records a write to slice `name` of Service `key` until the cache shows it.
    fn expect(&self, key: &str, name: &str, written: Option<u64>) {
        let (namespace, _) = split_key(key);
        self.pending.expect(key, name, written, || self.slices.get_in(namespace, name).map(|s| revision(&s.metadata)));
    }
}

impl Reconciler for EndpointSliceController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        // Slices of a deleted Service are the garbage collector's (they are owned).
        let Some(service) = self.services.get(key) else { return Ok(Action::Done) };
        if service.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        if !self.pending.settled(key) {
            // The watch will bring the writes and enqueue the Service; look again
            // anyway in case it brings them as a re-list that changes nothing.
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        }
        let (namespace, _) = split_key(key);
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        let existing = self.slices_of(&service);
        let plan = if managed_selector(&service).is_some() {
            let desired = desired_groups(&service, &super::selected_pods(&service, &self.pods), &self.nodes);
            plan(&service, &existing, desired, &slice_labels(&service), self.max_per_slice)
        } else {
            // The selector was removed: the slices are no longer this controller's.
            Plan { delete: existing, ..Default::default() }
        };
        for slice in &plan.create {
            match api.create(&PostParams::default(), slice).await {
                Ok(created) => {
                    let name = created.metadata.name.as_deref().unwrap_or_default();
                    self.expect(key, name, Some(revision(&created.metadata)));
                }
                Err(error) if namespace_terminating(&error) => return Ok(Action::Done),
                Err(error) => return Err(error.into()),
            }
        }
        for slice in &plan.update {
            let name = slice.metadata.name.as_deref().unwrap_or_default();
            let updated = api.replace(name, &PostParams::default(), slice).await?;
            self.expect(key, name, Some(revision(&updated.metadata)));
        }
        for slice in &plan.delete {
            let name = slice.metadata.name.as_deref().unwrap_or_default();
            ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
            self.expect(key, name, None);
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn groups(service: &Service, pods: &[Pod]) -> Groups {
        let pods: Vec<_> = pods.iter().cloned().map(Arc::new).collect();
        desired_groups(service, &pods, &Cache::default())
    }

    fn pods(count: usize) -> Vec<Pod> {
        (0..count).map(|i| web_pod(&format!("p{i:03}"), &format!("10.1.{}.{}", i / 200, i % 200 + 1), true)).collect()
    }

    /// Applies a plan as the server would (names for created slices).
    fn apply(existing: &mut Vec<Arc<EndpointSlice>>, plan: Plan) {
        existing.retain(|s| !plan.delete.iter().any(|d| d.metadata.name == s.metadata.name));
        for updated in plan.update {
            let at = existing.iter().position(|s| s.metadata.name == updated.metadata.name).unwrap();
            existing[at] = Arc::new(updated);
        }
        for (i, mut created) in plan.create.into_iter().enumerate() {
            created.metadata.name = Some(format!("web-{}{i}", existing.len()));
            existing.push(Arc::new(created));
        }
    }

    #[test]
    fn endpoints_are_packed_into_slices_of_at_most_the_limit() {
        let service = web_service();
        let labels = slice_labels(&service);
        let plan = plan(&service, &[], groups(&service, &pods(250)), &labels, 100);
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let slice = &plan.create[0];
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080), "the named port, resolved");
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(slice.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL], "web");
        assert_eq!(slice.metadata.owner_references.as_ref().unwrap()[0].kind, "Service");
    }

    #[test]
    fn a_change_rewrites_only_the_slice_that_holds_it() {
        let service = web_service();
        let labels = slice_labels(&service);
        let mut all = pods(250);
        let mut slices = Vec::new();
        let first = plan(&service, &slices, groups(&service, &all), &labels, 100);
        apply(&mut slices, first);
        assert_eq!(slices.len(), 3);
        // Nothing changed: nothing to write.
        let same = plan(&service, &slices, groups(&service, &all), &labels, 100);
        assert!(same.create.is_empty() && same.update.is_empty() && same.delete.is_empty());
        // One pod turns unready: one update, in place.
        all[7] = web_pod("p007", "10.1.0.8", false);
        let one = plan(&service, &slices, groups(&service, &all), &labels, 100);
        assert_eq!((one.create.len(), one.update.len(), one.delete.len()), (0, 1, 0));
        let conditions = one.update[0].endpoints.iter().find(|e| e.addresses[0] == "10.1.0.8").unwrap();
        assert_eq!(conditions.conditions.as_ref().unwrap().ready, Some(false));
        apply(&mut slices, one);
        // Ten new pods fill the slice with room rather than making a new one.
        all.extend((250..260).map(|i| web_pod(&format!("p{i}"), &format!("10.9.0.{i}"), true)));
        let grown = plan(&service, &slices, groups(&service, &all), &labels, 100);
        assert_eq!((grown.create.len(), grown.update.len()), (0, 1));
        assert_eq!(grown.update[0].endpoints.len(), 60);
    }

    #[test]
    fn emptied_slices_are_deleted_and_an_empty_service_keeps_a_placeholder() {
        let service = web_service();
        let labels = slice_labels(&service);
        let mut slices = Vec::new();
        let first = plan(&service, &slices, groups(&service, &pods(150)), &labels, 100);
        apply(&mut slices, first);
        assert_eq!(slices.len(), 2);
        let shrunk = plan(&service, &slices, groups(&service, &pods(50)), &labels, 100);
        assert_eq!((shrunk.create.len(), shrunk.update.len(), shrunk.delete.len()), (0, 1, 1));
        apply(&mut slices, shrunk);
        let emptied = plan(&service, &slices, groups(&service, &[]), &labels, 100);
        assert_eq!((emptied.create.len(), emptied.update.len(), emptied.delete.len()), (0, 1, 0));
        assert!(emptied.update[0].endpoints.is_empty() && emptied.update[0].ports.as_ref().unwrap().is_empty());
        apply(&mut slices, emptied);
        let again = plan(&service, &slices, groups(&service, &[]), &labels, 100);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // From nothing, an empty Service gets one placeholder.
        let fresh = plan(&service, &[], groups(&service, &[]), &labels, 100);
        assert_eq!(fresh.create.len(), 1);
    }

    #[test]
    fn terminating_pods_stay_listed_as_not_ready_but_serving() {
        let service = web_service();
        let mut pod = web_pod("a", "10.1.0.1", true);
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let groups = groups(&service, &[pod]);
        let conditions = groups.values().next().unwrap().1[0].conditions.clone().unwrap();
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn pending_writes_hold_a_service_until_the_watch_shows_them() {
        let pending = Pending::default();
        pending.expect("ns/web", "web-abc", Some(10), || None);
        pending.expect("ns/web", "web-old", None, || Some(3));
        pending.expect("ns/web", "web-seen", Some(4), || Some(4));
        assert!(!pending.settled("ns/web"));
        pending.observe("ns/web", "web-abc", Some(9));
        pending.observe("ns/web", "web-old", Some(12));
        assert!(!pending.settled("ns/web"), "an older version, and a deleted slice still listed");
        pending.observe("ns/web", "web-abc", Some(10));
        pending.observe("ns/web", "web-old", None);
        assert!(pending.settled("ns/web"));
    }

    #[tokio::test]
    async fn reconcile_writes_a_slice_and_then_leaves_it_alone() {
        use crate::controllers::fake::Rig;
        let rig = Rig::new();
        let controller = EndpointSliceController::register(&rig.informers, &rig.queue);
        let service = rig.fake.insert(&web_service());
        rig.fake.insert(&web_pod("a", "10.1.0.1", true));
        let pass = || async {
            rig.sync::<Service>();
            rig.sync::<Pod>();
            rig.sync::<Node>();
            rig.sync::<EndpointSlice>();
            controller.reconcile("default/web").await.expect("reconciled");
            rig.writes()
        };
        let writes = pass().await;
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert!(writes[0].starts_with("create endpointslices web-"), "{writes:?}");
        assert!(pass().await.is_empty(), "up to date");
        let slices = rig.fake.list::<EndpointSlice>();
        let owner = slices[0].metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner[0].uid, service.metadata.uid.clone().unwrap_or_default());
        assert_eq!(slices[0].endpoints[0].addresses, ["10.1.0.1"]);
    }
}
