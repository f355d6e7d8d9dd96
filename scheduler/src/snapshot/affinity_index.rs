//! Per-node counts of the placed pods that inter-pod affinity terms and topology spread
//! constraints are about, kept up to date as pods are placed and removed, so
//! InterPodAffinity and PodTopologySpread read counts each cycle instead of testing every
//! placed pod against every term or selector (kube's PreFilter and PreScore do that
//! scan, which made a cycle cost grow with the pods in the cluster).
//!
//! - Every term's *targets* (label selector and namespaces, without the topology key) get
//!   an id when a pod is compiled ([`AffinityIndex::intern`]), so the counts below are
//!   keyed by small integers.
//! - *Carried terms*: for each distinct term placed pods carry (by role: required
//!   affinity, required anti-affinity, preferred affinity or anti-affinity with its
//!   weight), how many of its carriers each node holds. A cycle tests each distinct term
//!   against the incoming pod once, not once per carrier.
//! - *Selections*: for the targets an incoming pod's own terms name (its required
//!   affinity as one conjunction, each other term alone) and for each of its spread
//!   constraints (the selector over the pod's namespace), how many placed pods each node
//!   holds that all of them select. A selection is counted by one scan of the placed
//!   pods the first time a pod asks for it ([`AffinityIndex::track`], from the cycle),
//!   then kept up to date; at most [`MAX_SELECTIONS`] are kept, the one asked for least
//!   recently dropped first. Without a selection the plugin scans, as before.
//!
//! **Invariant:** each count equals what a scan of the node's pods would give. The hooks
//! mirror the node's pod list (`NodeTable::pods`): counted where a pod is pushed onto it,
//! uncounted where it is taken off, zeroed when the node goes. A namespace's labels
//! changing drops the selections whose targets read namespace labels.

use super::NodeIx;
use crate::intern::StrId;
use crate::matchers::LabelMatcher;
use crate::query::{AffinityTerm, AffinityTerms, NamespaceFilter};
use crate::snapshot::columns::ColId;
use std::collections::HashMap;

/// The id of a term's targets: what it selects, regardless of topology.
pub type TargetsId = u32;

/// Selections kept at most.
pub const MAX_SELECTIONS: usize = 64;

/// What a term selects: pods with matching labels in matching namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Targets {
    pub selector: LabelMatcher,
    pub namespaces: NamespaceFilter,
}

impl Targets {
    /// Whether the pod (by namespace, labels and its namespace's labels) is a target.
    #[inline]
    pub fn selects(&self, namespace: StrId, labels: &[(StrId, StrId)], namespace_labels: &[(StrId, StrId)]) -> bool {
        self.namespaces.matches_labels(namespace, namespace_labels) && self.selector.matches(labels)
    }
}

/// What a carried term asks of the pods it selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    RequiredAffinity,
    RequiredAnti,
    /// Preferred affinity, with its weight.
    Preferred(i32),
    /// Preferred anti-affinity, with its weight.
    PreferredAnti(i32),
}

/// One distinct carried term: its role, targets and topology column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CarriedTerm {
    pub role: Role,
    pub targets: TargetsId,
    pub topology: ColId,
}

/// A pod, as the hooks see it.
pub struct PodView<'a> {
    pub namespace: StrId,
    pub labels: &'a [(StrId, StrId)],
    pub namespace_labels: &'a [(StrId, StrId)],
    pub affinity: Option<&'a AffinityTerms>,
}

#[derive(Debug)]
struct Selection {
    /// All must select a pod for it to count.
    targets: Box<[TargetsId]>,
    /// Indexed by node; shorter than the node table where the tail is zero.
    per_node: Vec<u32>,
    /// When it was last asked for (the index's clock).
    used: u64,
}

#[derive(Debug, Default)]
pub struct AffinityIndex {
    targets: Vec<Targets>,
    ids: HashMap<Targets, TargetsId>,
    carried: HashMap<CarriedTerm, HashMap<NodeIx, u32>>,
    selections: Vec<Selection>,
    clock: u64,
}

/// Each term a pod carries, with its role.
fn carried_terms(terms: &AffinityTerms) -> impl Iterator<Item = CarriedTerm> + '_ {
    let carried =
        |role: Role, term: &AffinityTerm| CarriedTerm { role, targets: term.targets, topology: term.topology };
    let required = terms.required_affinity.iter().map(move |t| carried(Role::RequiredAffinity, t));
    let anti = terms.required_anti_affinity.iter().map(move |t| carried(Role::RequiredAnti, t));
    let preferred = terms.preferred_affinity.iter().map(move |w| carried(Role::Preferred(w.weight), &w.term));
    let preferred_anti =
        terms.preferred_anti_affinity.iter().map(move |w| carried(Role::PreferredAnti(w.weight), &w.term));
    required.chain(anti).chain(preferred).chain(preferred_anti)
}

impl AffinityIndex {
    /// The id of `targets`, assigned on first sight (ids are never reused, as strings'
    /// are not).
    pub fn intern(&mut self, targets: Targets) -> TargetsId {
        if let Some(&id) = self.ids.get(&targets) {
            return id;
        }
        let id = TargetsId::try_from(self.targets.len()).expect("fewer than 2^32 distinct affinity targets");
        self.targets.push(targets.clone());
        self.ids.insert(targets, id);
        id
    }

    #[inline]
    pub fn targets(&self, id: TargetsId) -> &Targets {
        &self.targets[id as usize]
    }

    /// Each distinct term placed pods carry, with its carriers per node.
    pub fn carried(&self) -> impl Iterator<Item = (&CarriedTerm, &HashMap<NodeIx, u32>)> {
        self.carried.iter()
    }

    /// Whether no placed pod carries any term.
    pub fn carries_nothing(&self) -> bool {
        self.carried.is_empty()
    }

    /// Where the selection of the pods all of `targets` select is kept, if it is: a slot
    /// stays valid until the index next changes (for the length of a cycle, which does
    /// not change it).
    pub fn slot(&self, targets: impl Iterator<Item = TargetsId> + Clone) -> Option<usize> {
        self.selections.iter().position(|s| s.targets.iter().copied().eq(targets.clone()))
    }

    /// The per-node counts of the selection in `slot`. Indexed by node; nodes past the
    /// end count zero.
    pub fn counts(&self, slot: usize) -> &[u32] {
        &self.selections[slot].per_node
    }

    /// The pods the selection in `slot` picks on `node`.
    #[inline]
    pub fn count_in(&self, slot: usize, node: NodeIx) -> u32 {
        self.counts(slot).get(node as usize).copied().unwrap_or(0)
    }

    /// Every kept selection: its targets and per-node counts.
    pub fn selections(&self) -> impl Iterator<Item = (&[TargetsId], &[u32])> {
        self.selections.iter().map(|s| (&s.targets[..], &s.per_node[..]))
    }

    /// Keeps the selection of `targets` (a no-op if kept already), counting it from
    /// `placed` (each placed pod with its node) when new.
    pub fn track<'a>(
        &mut self,
        targets: impl Iterator<Item = TargetsId> + Clone,
        placed: impl Iterator<Item = (NodeIx, PodView<'a>)>,
    ) {
        self.clock += 1;
        if let Some(slot) = self.slot(targets.clone()) {
            self.selections[slot].used = self.clock;
            return;
        }
        if self.selections.len() >= MAX_SELECTIONS {
            if let Some(oldest) = (0..self.selections.len()).min_by_key(|&i| self.selections[i].used) {
                self.selections.swap_remove(oldest);
            }
        }
        let mut selection = Selection { targets: targets.collect(), per_node: Vec::new(), used: self.clock };
        for (node, pod) in placed {
            if self.selects_all(&selection.targets, &pod) {
                bump(&mut selection.per_node, node, 1);
            }
        }
        self.selections.push(selection);
    }

    fn selects_all(&self, targets: &[TargetsId], pod: &PodView<'_>) -> bool {
        targets.iter().all(|&t| self.targets[t as usize].selects(pod.namespace, pod.labels, pod.namespace_labels))
    }

    /// A pod was put on `node`.
    pub fn pod_placed(&mut self, node: NodeIx, pod: &PodView<'_>) {
        self.count(node, pod, 1);
    }

    /// A pod was taken off `node`.
    pub fn pod_removed(&mut self, node: NodeIx, pod: &PodView<'_>) {
        self.count(node, pod, -1);
    }

    fn count(&mut self, node: NodeIx, pod: &PodView<'_>, delta: i32) {
        for i in 0..self.selections.len() {
            if self.selects_all(&self.selections[i].targets, pod) {
                bump(&mut self.selections[i].per_node, node, delta);
            }
        }
        let Some(terms) = pod.affinity else { return };
        for term in carried_terms(terms) {
            let carriers = self.carried.entry(term).or_default();
            let count = carriers.entry(node).or_default();
            *count = count.saturating_add_signed(delta);
            if *count == 0 {
                carriers.remove(&node);
                if carriers.is_empty() {
                    self.carried.remove(&term);
                }
            }
        }
    }

    /// A node went away with every pod on it.
    pub fn node_removed(&mut self, node: NodeIx) {
        for selection in &mut self.selections {
            if let Some(count) = selection.per_node.get_mut(node as usize) {
                *count = 0;
            }
        }
        self.carried.retain(|_, carriers| {
            carriers.remove(&node);
            !carriers.is_empty()
        });
    }

    /// A namespace's labels changed (or it went away): selections whose targets read
    /// namespace labels are dropped, to be counted afresh when next asked for.
    pub fn namespace_labels_changed(&mut self) {
        let targets = &self.targets;
        self.selections.retain(|s| s.targets.iter().all(|&t| !targets[t as usize].namespaces.reads_labels()));
    }
}

fn bump(per_node: &mut Vec<u32>, node: NodeIx, delta: i32) {
    let at = node as usize;
    if per_node.len() <= at {
        per_node.resize(at + 1, 0);
    }
    per_node[at] = per_node[at].saturating_add_signed(delta);
}
