//! The cluster as the scheduling cycle sees it: a node table in struct-of-arrays form and
//! a table of the pods placed on nodes (bound or assumed).
//!
//! Updated incrementally from watch events (`upsert_node`, `upsert_pod`, ...) and by the
//! cycle itself (`assume`), never rebuilt per pod. Rows are recycled when nodes or pods go
//! away, so indexes stay small and dense. The scheduling cycle owns the snapshot: no lock.

pub mod affinity_index;
pub mod columns;
pub mod volumes;

use crate::intern::{Interner, StrId, NONE};
use crate::matchers::{label_set, CompiledTaint, LabelMatcher, LabelSet};
use crate::query::{normalize_image, pod_record, AffinityTerms, PodQuery};
use crate::resources::{resource_list, NonZero, Resources, ScalarNames};
use columns::Columns;
use keelson_engine::k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use keelson_engine::Selector;
use std::collections::HashMap;
use std::sync::Arc;

pub type NodeIx = u32;
pub type PodIx = u32;
/// The node of a free pod row.
pub const NO_NODE: NodeIx = u32::MAX;

/// A host port a pod holds on its node. `ip == NONE` is the wildcard `0.0.0.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: u8,
    pub ip: StrId,
    pub port: u16,
}

impl HostPort {
    /// kube's `HostPortInfo` conflict: same protocol and port, and either address is the
    /// wildcard or both are the same.
    #[inline]
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == NONE || other.ip == NONE || self.ip == other.ip)
    }
}

/// The change log never starts over below this many changes, so a small table does not
/// make every memo start afresh after a handful of changes.
pub(crate) const MIN_CHANGES_KEPT: usize = 1024;

/// The node table. Every `Vec` is indexed by `NodeIx`; rows of deleted nodes have
/// `live == false` until reused.
#[derive(Debug, Default)]
pub struct NodeTable {
    pub names: Vec<Box<str>>,
    index: HashMap<Box<str>, NodeIx>,
    free: Vec<NodeIx>,
    pub live: Vec<bool>,
    pub unschedulable: Vec<bool>,
    pub allocatable: Vec<Resources>,
    pub requested: Vec<Resources>,
    pub non_zero_requested: Vec<NonZero>,
    pub pod_count: Vec<u32>,
    pub taints: Vec<Box<[CompiledTaint]>>,
    pub ports: Vec<Vec<HostPort>>,
    /// `(image, size in bytes)` sorted by image.
    pub images: Vec<Box<[(StrId, i64)]>>,
    pub pods: Vec<Vec<PodIx>>,
    /// Pods nominated for the row after a preemption there (usually none).
    pub nominated: Vec<Vec<Nominee>>,
    pub columns: Columns,
    /// The rows changed, in order: `changes[i]` is the row changed by change number
    /// `changes_before + 1 + i`. A row changes whenever anything a plugin reads of it
    /// changes (the node itself, or a pod placed on or taken off it), so a result
    /// memoised for a row stays valid until the row appears here again. Bounded: once
    /// it holds as many changes as there are rows, it starts over (a reader that far
    /// behind would be no better off replaying it than starting afresh).
    changes: Vec<NodeIx>,
    changes_before: u64,
    /// Changes made so far.
    changed: u64,
    live_count: usize,
}

impl NodeTable {
    /// Rows, live or not: the range the cycle iterates.
    pub fn rows(&self) -> usize {
        self.names.len()
    }

    pub fn live_count(&self) -> usize {
        self.live_count
    }

    pub fn find(&self, name: &str) -> Option<NodeIx> {
        self.index.get(name).copied()
    }

    /// Marks the row changed: results memoised for it are stale.
    fn touch(&mut self, ix: NodeIx) {
        if self.changes.len() >= self.rows().max(MIN_CHANGES_KEPT) {
            self.changes_before = self.changed;
            self.changes.clear();
        }
        self.changed += 1;
        self.changes.push(ix);
    }

    /// How many changes rows have seen so far (see [`NodeTable::changed_since`]).
    pub fn changes_made(&self) -> u64 {
        self.changed
    }

    /// The rows changed after the first `seen` changes, in order (a row may appear more
    /// than once); `None` if the table no longer remembers that far back.
    pub fn changed_since(&self, seen: u64) -> Option<&[NodeIx]> {
        let from = seen.checked_sub(self.changes_before)?;
        self.changes.get(usize::try_from(from).ok()?..)
    }

    fn claim_row(&mut self, name: &str) -> NodeIx {
        if let Some(&ix) = self.index.get(name) {
            return ix;
        }
        let ix = match self.free.pop() {
            Some(ix) => ix,
            None => {
                let ix = NodeIx::try_from(self.names.len()).expect("fewer than 2^32 nodes");
                let rows = ix as usize + 1;
                self.names.push("".into());
                self.live.push(false);
                self.unschedulable.push(false);
                self.allocatable.push(Resources::default());
                self.requested.push(Resources::default());
                self.non_zero_requested.push(NonZero::default());
                self.pod_count.push(0);
                self.taints.push(Box::new([]));
                self.ports.push(Vec::new());
                self.images.push(Box::new([]));
                self.pods.push(Vec::new());
                self.nominated.push(Vec::new());
                self.columns.grow(rows);
                ix
            }
        };
        self.names[ix as usize] = name.into();
        self.index.insert(name.into(), ix);
        ix
    }
}

/// A pod nominated for a node (`status.nominatedNodeName`) after preempting there: the
/// room its victims leave is held for it against pods of no higher priority, as kube's
/// scheduler adds nominated pods before filtering.
#[derive(Clone, Debug)]
pub struct Nominee {
    pub key: Box<str>,
    pub priority: i32,
    pub requests: Resources,
    /// Host ports the nominee will take: held like its resources.
    pub ports: Box<[HostPort]>,
    /// What inter-pod affinity and topology spread see of the nominee on its node.
    pub namespace: StrId,
    pub labels: LabelSet,
    pub affinity: Option<Arc<AffinityTerms>>,
}

impl Nominee {
    /// Whether this nominee holds its room against `pod` (kube adds nominated pods of
    /// no lower priority before filtering; a pod never competes with its own nomination).
    #[inline]
    pub fn holds_against(&self, pod: &PodRecord) -> bool {
        self.priority >= pod.priority && self.key != pod.key
    }
}

impl NodeTable {
    /// The nominees on `node` that hold their room against `pod` (usually none): kube
    /// filters such a node once with them added and once without, and both must pass.
    #[inline]
    pub fn nominees_against<'a>(&'a self, node: NodeIx, pod: &'a PodRecord) -> impl Iterator<Item = &'a Nominee> + 'a {
        self.nominated[node as usize].iter().filter(move |n| n.holds_against(pod))
    }
}

/// The pods placed on nodes, one row each, indexed by `PodIx`.
#[derive(Debug, Default)]
pub struct PodTable {
    index: HashMap<Box<str>, PodIx>,
    free: Vec<PodIx>,
    pub keys: Vec<Box<str>>,
    /// `NO_NODE` for free rows.
    pub node: Vec<NodeIx>,
    pub namespace: Vec<StrId>,
    pub labels: Vec<LabelSet>,
    pub requests: Vec<Resources>,
    pub non_zero: Vec<NonZero>,
    pub ports: Vec<Box<[HostPort]>>,
    pub priority: Vec<i32>,
    pub affinity: Vec<Option<Arc<AffinityTerms>>>,
    /// `Some(ms)` while assumed (decided by the cycle, bind not yet observed).
    pub assumed_at_ms: Vec<Option<u64>>,
    pub claims: Vec<Box<[Box<str>]>>,
}

impl PodTable {
    pub fn find(&self, key: &str) -> Option<PodIx> {
        self.index.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Rows, used or free.
    pub fn rows(&self) -> usize {
        self.node.len()
    }

    /// Has `index` keep the selection of `targets`, counted from these pods if new.
    fn track(
        &self,
        index: &mut affinity_index::AffinityIndex,
        namespaces: &HashMap<StrId, LabelSet>,
        targets: impl Iterator<Item = affinity_index::TargetsId> + Clone,
    ) {
        let placed = (0..self.rows()).filter(|&row| self.node[row] != NO_NODE);
        index.track(targets, placed.map(|row| (self.node[row], self.view(row, namespaces))));
    }

    /// A row as the affinity index sees it; `namespaces` holds each namespace's labels.
    fn view<'a>(&'a self, row: usize, namespaces: &'a HashMap<StrId, LabelSet>) -> affinity_index::PodView<'a> {
        affinity_index::PodView {
            namespace: self.namespace[row],
            labels: &self.labels[row],
            namespace_labels: namespaces.get(&self.namespace[row]).map_or(&[], |l| l),
            affinity: self.affinity[row].as_deref(),
        }
    }
}

/// Everything the snapshot keeps about one placed pod.
#[derive(Clone, Debug)]
pub struct PodRecord {
    pub key: Box<str>,
    pub namespace: StrId,
    pub labels: LabelSet,
    pub requests: Resources,
    pub non_zero: NonZero,
    pub ports: Box<[HostPort]>,
    pub priority: i32,
    pub affinity: Option<Arc<AffinityTerms>>,
    /// Set while the pod is assumed (placed by the cycle, bind not yet observed).
    pub assumed_at_ms: Option<u64>,
    /// The PersistentVolumeClaims it uses, as `namespace/name`.
    pub claims: Box<[Box<str>]>,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: NodeTable,
    pub pods: PodTable,
    pub strings: Interner,
    pub scalars: ScalarNames,
    /// How many live nodes hold each image (ImageLocality's spread factor).
    pub image_nodes: HashMap<StrId, u32>,
    namespaces: HashMap<StrId, LabelSet>,
    /// Selectors of Services, ReplicaSets, StatefulSets and ReplicationControllers, by
    /// `kind/namespace/name`: the source of the default spreading selector.
    workloads: HashMap<Box<str>, (StrId, Selector)>,
    /// PodDisruptionBudgets by `namespace/name`: namespace, selector, disruptions allowed.
    budgets: HashMap<Box<str>, (StrId, LabelMatcher, i32)>,
    /// The node each nominated pod waits for.
    nominations: HashMap<Box<str>, NodeIx>,
    /// Claims and volumes, for VolumeBinding.
    pub volumes: volumes::Volumes,
    /// Per-node counts of the pods affinity terms and spread constraints are about, for
    /// InterPodAffinity and PodTopologySpread.
    pub affinity: affinity_index::AffinityIndex,
    /// Placed pods per claim (`namespace/name`), for VolumeRestrictions.
    claim_users: HashMap<Box<str>, u32>,
    /// Bumped on every change; lets the runner and the queue tell "something changed".
    pub generation: u64,
}

/// `namespace/name`, the key of a pod in the snapshot and the queue.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""))
}

/// Pods in these phases hold no resources.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    // ---- nodes ----

    pub fn upsert_node(&mut self, node: &Node) {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let ix = self.nodes.claim_row(name);
        let row = ix as usize;
        if !self.nodes.live[row] {
            self.nodes.live[row] = true;
            self.nodes.live_count += 1;
        }
        let spec = node.spec.as_ref();
        self.nodes.unschedulable[row] = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.nodes.taints[row] = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|t| CompiledTaint::compile(t, &mut self.strings))
            .collect();
        let status = node.status.as_ref();
        let mut untracked = Vec::new();
        self.nodes.allocatable[row] = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(|list| resource_list(list, &mut self.scalars, &mut untracked))
            .unwrap_or_default();
        self.set_node_images(ix, node);
        let labels = node.metadata.labels.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()));
        self.nodes.columns.set_row(ix, labels);
        self.nodes.touch(ix);
        self.generation += 1;
    }

    fn set_node_images(&mut self, ix: NodeIx, node: &Node) {
        for &(image, _) in self.nodes.images[ix as usize].iter() {
            if let Some(count) = self.image_nodes.get_mut(&image) {
                *count = count.saturating_sub(1);
            }
        }
        let mut images: Vec<(StrId, i64)> = Vec::new();
        for image in node.status.as_ref().and_then(|s| s.images.as_ref()).into_iter().flatten() {
            let size = image.size_bytes.unwrap_or(0);
            for name in image.names.iter().flatten() {
                images.push((self.strings.intern(&normalize_image(name)), size));
            }
        }
        images.sort_unstable();
        images.dedup_by_key(|(id, _)| *id);
        for &(image, _) in &images {
            *self.image_nodes.entry(image).or_default() += 1;
        }
        self.nodes.images[ix as usize] = images.into();
    }

    /// Removes a node and the pods placed on it: they hold nothing anywhere else, and if
    /// they still exist their next watch event (or re-list) brings them back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(ix) = self.nodes.index.remove(name) else { return };
        let row = ix as usize;
        if self.nodes.live[row] {
            self.nodes.live_count -= 1;
        }
        for &(image, _) in self.nodes.images[row].iter() {
            if let Some(count) = self.image_nodes.get_mut(&image) {
                *count = count.saturating_sub(1);
            }
        }
        for pod in std::mem::take(&mut self.nodes.pods[row]) {
            self.release_pod_row(pod);
        }
        self.affinity.node_removed(ix);
        for nominee in std::mem::take(&mut self.nodes.nominated[row]) {
            self.nominations.remove(&nominee.key);
        }
        self.nodes.live[row] = false;
        self.nodes.images[row] = Box::new([]);
        self.nodes.taints[row] = Box::new([]);
        self.nodes.ports[row].clear();
        self.nodes.requested[row] = Resources::default();
        self.nodes.non_zero_requested[row] = NonZero::default();
        self.nodes.pod_count[row] = 0;
        self.nodes.columns.clear_row(ix);
        self.nodes.touch(ix);
        self.nodes.free.push(ix);
        self.generation += 1;
    }

    // ---- namespaces and workload selectors ----

    pub fn upsert_namespace(&mut self, namespace: &Namespace) {
        let name = self.strings.intern(namespace.metadata.name.as_deref().unwrap_or(""));
        let labels = label_set(&mut self.strings, namespace.metadata.labels.iter().flatten());
        if self.namespaces.insert(name, labels.clone()).is_none_or(|old| old != labels) {
            self.affinity.namespace_labels_changed();
        }
        self.generation += 1;
    }

    pub fn remove_namespace(&mut self, name: &str) {
        let id = self.strings.lookup(name);
        if self.namespaces.remove(&id).is_some() {
            self.affinity.namespace_labels_changed();
        }
        self.generation += 1;
    }

    pub fn namespace_labels(&self, namespace: StrId) -> &[(StrId, StrId)] {
        self.namespaces.get(&namespace).map_or(&[], |l| l)
    }

    /// Records the selector of a Service (`kind` "Service", from `spec.selector`) or a
    /// ReplicaSet/StatefulSet/ReplicationController (from `spec.selector`): the system
    /// default spread constraints spread pods selected by them.
    pub fn set_workload_selector(&mut self, kind: &str, namespace: &str, name: &str, selector: Selector) {
        let ns = self.strings.intern(namespace);
        self.workloads.insert(format!("{kind}/{namespace}/{name}").into(), (ns, selector));
    }

    pub fn remove_workload_selector(&mut self, kind: &str, namespace: &str, name: &str) {
        self.workloads.remove(format!("{kind}/{namespace}/{name}").as_str());
    }

    /// kube's `DefaultSelector`: the requirements of every workload selector in the pod's
    /// namespace that selects the pod, merged. `None` when nothing selects it.
    pub fn default_selector(
        &self,
        namespace: StrId,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<Selector> {
        let mut requirements = Vec::new();
        for (ns, selector) in self.workloads.values() {
            if *ns == namespace && !selector.is_everything() && selector.matches(labels) {
                requirements.extend(selector.requirements().iter().cloned());
            }
        }
        (!requirements.is_empty()).then(|| Selector::from_requirements(requirements))
    }

    // ---- pods ----

    /// Applies a pod from a watch event. A pod bound to a node (and not finished) takes its
    /// place there, replacing an assumed record; any other pod is not in the snapshot.
    pub fn upsert_pod(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        let node = node_name.and_then(|n| self.nodes.find(n));
        match node {
            Some(node) if !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none() => {
                let (record, _) = pod_record(pod, self);
                self.place(record, node);
            }
            _ => self.remove_pod(&key),
        }
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some(ix) = self.pods.find(key) {
            self.unplace(ix);
            self.release_pod_row(ix);
            self.generation += 1;
        }
    }

    /// Places a pod the cycle chose a node for, before the bind is observed.
    pub fn assume(&mut self, mut record: PodRecord, node: NodeIx, now_ms: u64) {
        record.assumed_at_ms = Some(now_ms);
        self.place(record, node);
    }

    /// Takes a placed pod off its node, returning its record and node, for a what-if
    /// (preemption); `put_back` restores it.
    pub fn take_pod(&mut self, ix: PodIx) -> Option<(PodRecord, NodeIx)> {
        let row = ix as usize;
        let node = *self.pods.node.get(row)?;
        if node == NO_NODE {
            return None;
        }
        let record = PodRecord {
            key: self.pods.keys[row].clone(),
            namespace: self.pods.namespace[row],
            labels: self.pods.labels[row].clone(),
            requests: self.pods.requests[row],
            non_zero: self.pods.non_zero[row],
            ports: self.pods.ports[row].clone(),
            priority: self.pods.priority[row],
            affinity: self.pods.affinity[row].clone(),
            assumed_at_ms: self.pods.assumed_at_ms[row],
            claims: self.pods.claims[row].clone(),
        };
        self.unplace(ix);
        self.release_pod_row(ix);
        self.generation += 1;
        Some((record, node))
    }

    pub fn put_back(&mut self, record: PodRecord, node: NodeIx) {
        self.place(record, node);
    }

    /// Keeps counting what a pod's own affinity terms select (its required affinity as
    /// one conjunction, each other term alone) and what its spread constraints count, so
    /// InterPodAffinity and PodTopologySpread read per-node counts instead of scanning
    /// the placed pods. The cycle calls it before filtering.
    pub fn track_selections(&mut self, query: &PodQuery) {
        let (pods, namespaces, index) = (&self.pods, &self.namespaces, &mut self.affinity);
        if let Some(terms) = query.record.affinity.as_deref() {
            if !terms.required_affinity.is_empty() {
                pods.track(index, namespaces, terms.required_affinity.iter().map(|t| t.targets));
            }
            let weighted = terms.preferred_affinity.iter().chain(terms.preferred_anti_affinity.iter());
            for term in terms.required_anti_affinity.iter().chain(weighted.map(|w| &w.term)) {
                pods.track(index, namespaces, std::iter::once(term.targets));
            }
        }
        for constraint in query.spread.iter() {
            pods.track(index, namespaces, std::iter::once(constraint.targets));
        }
    }

    /// Holds room on `node` for the pod (replacing any earlier nomination of it).
    pub fn nominate(&mut self, record: &PodRecord, node: NodeIx) {
        self.clear_nomination(&record.key);
        let nominee = Nominee {
            key: record.key.clone(),
            priority: record.priority,
            requests: record.requests,
            ports: record.ports.clone(),
            namespace: record.namespace,
            labels: record.labels.clone(),
            affinity: record.affinity.clone(),
        };
        self.nodes.nominated[node as usize].push(nominee);
        self.nominations.insert(record.key.clone(), node);
        self.nodes.touch(node);
        self.generation += 1;
    }

    /// The node the pod is nominated for, if any.
    pub fn nomination(&self, key: &str) -> Option<NodeIx> {
        self.nominations.get(key).copied()
    }

    /// Drops the pod's nomination (it was placed, deleted, or nominated elsewhere).
    pub fn clear_nomination(&mut self, key: &str) {
        // Every placement asks; nominations are rare, so skip the lookup without any.
        if self.nominations.is_empty() {
            return;
        }
        let Some(node) = self.nominations.remove(key) else { return };
        self.nodes.nominated[node as usize].retain(|n| &*n.key != key);
        self.nodes.touch(node);
        self.generation += 1;
    }

    // ---- claims and volumes ----

    pub fn upsert_claim(&mut self, claim: &PersistentVolumeClaim) {
        self.volumes.upsert_claim(claim);
        self.generation += 1;
    }

    pub fn remove_claim(&mut self, namespace: &str, name: &str) {
        self.volumes.remove_claim(namespace, name);
        self.generation += 1;
    }

    pub fn upsert_volume(&mut self, volume: &PersistentVolume) {
        self.volumes.upsert_volume(volume);
        self.generation += 1;
    }

    pub fn remove_volume(&mut self, name: &str) {
        self.volumes.remove_volume(name);
        self.generation += 1;
    }

    /// Records a PodDisruptionBudget: evicting a pod it selects while
    /// `disruptions_allowed <= 0` violates it.
    pub fn set_budget(
        &mut self,
        namespace: &str,
        name: &str,
        selector: Option<&keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
        disruptions_allowed: i32,
    ) {
        let ns = self.strings.intern(namespace);
        let matcher = LabelMatcher::from_wire(selector, &mut self.strings);
        self.budgets.insert(format!("{namespace}/{name}").into(), (ns, matcher, disruptions_allowed));
    }

    pub fn remove_budget(&mut self, namespace: &str, name: &str) {
        self.budgets.remove(format!("{namespace}/{name}").as_str());
    }

    /// Whether evicting this pod would break a disruption budget.
    pub fn disruption_blocked(&self, pod: PodIx) -> bool {
        let row = pod as usize;
        self.budgets.values().any(|(ns, selector, allowed)| {
            *allowed <= 0 && *ns == self.pods.namespace[row] && selector.matches(&self.pods.labels[row])
        })
    }

    /// Undoes `assume` after a failed bind. A pod whose bind was already observed stays.
    pub fn forget(&mut self, key: &str) {
        if let Some(ix) = self.pods.find(key) {
            if self.pods.assumed_at_ms[ix as usize].is_some() {
                self.remove_pod(key);
            }
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.find(key).is_some_and(|ix| self.pods.assumed_at_ms[ix as usize].is_some())
    }

    /// Drops assumed pods whose bind was never observed within `ttl_ms`: their bind was
    /// lost, and the resources they hold would otherwise leak. Returns their keys.
    pub fn expire_assumed(&mut self, now_ms: u64, ttl_ms: u64) -> Vec<String> {
        let expired: Vec<String> = (0..self.pods.rows())
            .filter(|&ix| self.pods.assumed_at_ms[ix].is_some_and(|at| now_ms.saturating_sub(at) >= ttl_ms))
            .map(|ix| self.pods.keys[ix].to_string())
            .collect();
        for key in &expired {
            self.remove_pod(key);
        }
        expired
    }

    fn place(&mut self, record: PodRecord, node: NodeIx) {
        self.clear_nomination(&record.key);
        if let Some(ix) = self.pods.find(&record.key) {
            self.unplace(ix);
            self.release_pod_row(ix);
        }
        let pods = &mut self.pods;
        let ix = match pods.free.pop() {
            Some(ix) => ix,
            None => {
                let ix = PodIx::try_from(pods.node.len()).expect("fewer than 2^32 pods");
                pods.keys.push("".into());
                pods.node.push(NO_NODE);
                pods.namespace.push(NONE);
                pods.labels.push(Box::new([]));
                pods.requests.push(Resources::default());
                pods.non_zero.push(NonZero::default());
                pods.ports.push(Box::new([]));
                pods.priority.push(0);
                pods.affinity.push(None);
                pods.assumed_at_ms.push(None);
                pods.claims.push(Box::new([]));
                ix
            }
        };
        let row = ix as usize;
        let n = node as usize;
        self.nodes.requested[n].add(&record.requests);
        self.nodes.non_zero_requested[n].milli_cpu += record.non_zero.milli_cpu;
        self.nodes.non_zero_requested[n].memory += record.non_zero.memory;
        self.nodes.pod_count[n] += 1;
        self.nodes.ports[n].extend_from_slice(&record.ports);
        self.nodes.pods[n].push(ix);
        self.nodes.touch(node);
        pods.index.insert(record.key.clone(), ix);
        pods.keys[row] = record.key;
        pods.node[row] = node;
        pods.namespace[row] = record.namespace;
        pods.labels[row] = record.labels;
        pods.requests[row] = record.requests;
        pods.non_zero[row] = record.non_zero;
        pods.ports[row] = record.ports;
        pods.priority[row] = record.priority;
        pods.affinity[row] = record.affinity;
        pods.assumed_at_ms[row] = record.assumed_at_ms;
        for claim in record.claims.iter() {
            *self.claim_users.entry(claim.clone()).or_default() += 1;
        }
        pods.claims[row] = record.claims;
        self.affinity.pod_placed(node, &pods.view(row, &self.namespaces));
        self.generation += 1;
    }

    /// Takes a pod's resources and ports off its node (if the node is still live).
    fn unplace(&mut self, ix: PodIx) {
        let row = ix as usize;
        let node = self.pods.node[row];
        if node == NO_NODE || !self.nodes.live[node as usize] {
            return;
        }
        let n = node as usize;
        self.nodes.requested[n].sub(&self.pods.requests[row]);
        self.nodes.non_zero_requested[n].milli_cpu -= self.pods.non_zero[row].milli_cpu;
        self.nodes.non_zero_requested[n].memory -= self.pods.non_zero[row].memory;
        self.nodes.pod_count[n] -= 1;
        for port in self.pods.ports[row].iter() {
            if let Some(at) = self.nodes.ports[n].iter().position(|p| p == port) {
                self.nodes.ports[n].swap_remove(at);
            }
        }
        if let Some(at) = self.nodes.pods[n].iter().position(|&p| p == ix) {
            self.nodes.pods[n].swap_remove(at);
            self.affinity.pod_removed(node, &self.pods.view(row, &self.namespaces));
        }
        self.nodes.touch(node);
    }

    fn release_pod_row(&mut self, ix: PodIx) {
        let row = ix as usize;
        let pods = &mut self.pods;
        let key = std::mem::replace(&mut pods.keys[row], "".into());
        pods.index.remove(&key);
        pods.node[row] = NO_NODE;
        pods.labels[row] = Box::new([]);
        pods.ports[row] = Box::new([]);
        pods.affinity[row] = None;
        pods.assumed_at_ms[row] = None;
        pods.free.push(ix);
        for claim in std::mem::take(&mut pods.claims[row]).iter() {
            if let Some(users) = self.claim_users.get_mut(claim) {
                *users -= 1;
                if *users == 0 {
                    self.claim_users.remove(claim);
                }
            }
        }
    }

    /// How many placed pods use the claim (`namespace/name`).
    pub fn claim_users(&self, claim: &str) -> u32 {
        self.claim_users.get(claim).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"}}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: &str, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}},
                     "ports": [{"containerPort": 80, "hostPort": 8080}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn pods_add_and_release_resources_and_ports() {
        let mut snap = Snapshot::new();
        snap.upsert_node(&node("a", "4", json!({"zone": "z1"})));
        snap.upsert_pod(&pod("p", "a", "500m"));
        let a = snap.nodes.find("a").unwrap() as usize;
        assert_eq!(snap.nodes.requested[a].milli_cpu, 500);
        assert_eq!(snap.nodes.pod_count[a], 1);
        assert_eq!(snap.nodes.ports[a].len(), 1);
        // The same pod again (an update) replaces, not adds.
        snap.upsert_pod(&pod("p", "a", "700m"));
        assert_eq!(snap.nodes.requested[a].milli_cpu, 700);
        assert_eq!(snap.nodes.pod_count[a], 1);
        snap.remove_pod("default/p");
        assert_eq!(snap.nodes.requested[a], Resources { pods: 0, ..Resources::default() });
        assert!(snap.nodes.ports[a].is_empty());
        assert_eq!(snap.pods.len(), 0);
    }

    #[test]
    fn node_rows_are_reused_and_labels_become_columns() {
        let mut snap = Snapshot::new();
        snap.upsert_node(&node("a", "4", json!({"zone": "z1"})));
        snap.upsert_node(&node("b", "4", json!({"zone": "z2"})));
        let zone = snap.nodes.columns.find("zone").unwrap();
        let b = snap.nodes.find("b").unwrap();
        assert_eq!(snap.nodes.columns.get(zone).value(snap.nodes.columns.get(zone).domain(b)), "z2");
        snap.remove_node("a");
        assert_eq!(snap.nodes.live_count(), 1);
        snap.upsert_node(&node("c", "4", json!({})));
        assert_eq!(snap.nodes.rows(), 2, "the free row is reused");
        let c = snap.nodes.find("c").unwrap();
        assert_eq!(snap.nodes.columns.get(zone).domain(c), columns::ABSENT);
    }

    #[test]
    fn assumed_pods_are_confirmed_forgotten_or_expired() {
        let mut snap = Snapshot::new();
        snap.upsert_node(&node("a", "4", json!({})));
        let a = snap.nodes.find("a").unwrap();
        let p = pod("p", "a", "1");
        let (record, _) = pod_record(&p, &mut snap);
        snap.assume(record.clone(), a, 0);
        assert!(snap.is_assumed("default/p"));
        snap.forget("default/p");
        assert_eq!(snap.nodes.requested[a as usize].milli_cpu, 0);

        snap.assume(record.clone(), a, 0);
        snap.upsert_pod(&p);
        assert!(!snap.is_assumed("default/p"), "the bind's watch event confirms it");
        snap.forget("default/p");
        assert_eq!(snap.nodes.requested[a as usize].milli_cpu, 1000, "confirmed pods are not forgotten");

        snap.remove_pod("default/p");
        snap.assume(record, a, 1_000);
        assert!(snap.expire_assumed(20_000, 30_000).is_empty());
        assert_eq!(snap.expire_assumed(31_000, 30_000), vec!["default/p".to_string()]);
        assert_eq!(snap.nodes.pod_count[a as usize], 0);
    }

    #[test]
    fn the_change_log_lists_changed_rows_until_it_starts_over() {
        let mut snap = Snapshot::new();
        snap.upsert_node(&node("a", "4", json!({})));
        snap.upsert_node(&node("b", "4", json!({})));
        let seen = snap.nodes.changes_made();
        snap.upsert_pod(&pod("p", "b", "1"));
        snap.upsert_node(&node("a", "8", json!({})));
        assert_eq!(snap.nodes.changed_since(seen), Some(&[1, 0][..]));
        assert_eq!(snap.nodes.changed_since(snap.nodes.changes_made()), Some(&[][..]));
        for _ in 0..MIN_CHANGES_KEPT {
            snap.upsert_node(&node("a", "4", json!({})));
        }
        assert_eq!(snap.nodes.changed_since(seen), None, "too far back");
        let recent = snap.nodes.changes_made() - 3;
        assert_eq!(snap.nodes.changed_since(recent), Some(&[0, 0, 0][..]));
    }
}
