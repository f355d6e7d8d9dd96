//! InterPodAffinity: required and preferred pod affinity and anti-affinity, including the
//! anti-affinity of pods already placed toward the incoming pod.
//!
//! PreFilter and PreScore count, per topology column and domain, the pods that matter;
//! Filter and Score then read those counts by the node's domain. The counts come from
//! the snapshot's affinity index (per-node counts kept as pods come and go, see
//! `snapshot::affinity_index`), so a cycle costs what the nodes cost, not what the
//! placed pods do; a selection the index does not keep is counted by a scan.

use crate::framework::{Plugin, PluginState, Prepared, Rejection, Status, MAX_NODE_SCORE};
use crate::query::{AffinityTerm, PodQuery, WeightedTerm};
use crate::snapshot::affinity_index::{Role, TargetsId};
use crate::snapshot::columns::{ColId, Domain, ABSENT};
use crate::snapshot::{NodeIx, PodIx, Snapshot, NO_NODE};

const AFFINITY: u32 = 0;
const ANTI_AFFINITY: u32 = 1;
const EXISTING_ANTI_AFFINITY: u32 = 2;

pub struct InterPodAffinity {
    /// The weight an existing pod's *required* affinity toward the incoming pod adds to
    /// its domain's score (`hardPodAffinityWeight`, default 1).
    pub hard_pod_affinity_weight: i32,
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        InterPodAffinity { hard_pod_affinity_weight: 1 }
    }
}

/// Counts per domain, for each topology column that appears in some term.
#[derive(Default)]
struct DomainCounts {
    columns: Vec<(ColId, Vec<i64>)>,
}

impl DomainCounts {
    fn add(&mut self, snapshot: &Snapshot, column: ColId, node: NodeIx, amount: i64) {
        let domain = snapshot.nodes.columns.get(column).domain(node);
        if domain == ABSENT {
            return;
        }
        let at = match self.columns.iter().position(|(c, _)| *c == column) {
            Some(at) => at,
            None => {
                let size = snapshot.nodes.columns.get(column).domain_count();
                self.columns.push((column, vec![0; size]));
                self.columns.len() - 1
            }
        };
        self.columns[at].1[domain as usize] += amount;
    }

    #[inline]
    fn get(&self, snapshot: &Snapshot, column: ColId, node: NodeIx) -> i64 {
        let domain = snapshot.nodes.columns.get(column).domain(node);
        if domain == ABSENT {
            return 0;
        }
        self.columns
            .iter()
            .find(|(c, _)| *c == column)
            .and_then(|(_, counts)| counts.get(domain as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Whether the node's domain has a positive count in any column.
    #[inline]
    fn any_positive(&self, snapshot: &Snapshot, node: NodeIx) -> bool {
        self.columns.iter().any(|(column, counts)| {
            let domain = snapshot.nodes.columns.get(*column).domain(node);
            domain != ABSENT && counts.get(domain as usize).is_some_and(|&n| n > 0)
        })
    }

    fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Adds `amount` for each pod of `pods` (node, how many), on live nodes.
    fn add_pods(&mut self, snapshot: &Snapshot, column: ColId, pods: impl Iterator<Item = (NodeIx, u32)>, amount: i64) {
        for (node, pods) in pods {
            if pods > 0 && snapshot.nodes.live.get(node as usize).copied().unwrap_or(false) {
                self.add(snapshot, column, node, amount * i64::from(pods));
            }
        }
    }
}

struct FilterState {
    /// Domains holding a placed pod whose required anti-affinity selects the incoming pod.
    existing_anti: DomainCounts,
    /// Domains holding pods that match all of the incoming pod's required affinity terms.
    affinity: DomainCounts,
    /// Domains holding pods matched by the incoming pod's required anti-affinity terms.
    anti: DomainCounts,
    /// The incoming pod matches its own affinity terms (it may start a group).
    self_affinity: bool,
}

fn placed(snapshot: &Snapshot) -> impl Iterator<Item = PodIx> + '_ {
    (0..snapshot.pods.rows() as PodIx).filter(|&p| {
        let node = snapshot.pods.node[p as usize];
        node != NO_NODE && snapshot.nodes.live[node as usize]
    })
}

fn selects(term: &AffinityTerm, snapshot: &Snapshot, pod: PodIx) -> bool {
    let p = pod as usize;
    term.selects(snapshot.pods.namespace[p], &snapshot.pods.labels[p], snapshot)
}

/// Counts into `counts`, in each of `terms`' topology columns, `amount` for every placed
/// pod that all of `terms` select: from the index when it keeps that selection, else by
/// a scan.
fn add_selected(counts: &mut DomainCounts, snapshot: &Snapshot, terms: &[AffinityTerm], amount: i64) {
    match snapshot.affinity.slot(terms.iter().map(|t| t.targets)) {
        Some(slot) => {
            let per_node = snapshot.affinity.counts(slot);
            for term in terms {
                let pods = per_node.iter().enumerate().map(|(node, &pods)| (node as NodeIx, pods));
                counts.add_pods(snapshot, term.topology, pods, amount);
            }
        }
        None => {
            for p in placed(snapshot) {
                if terms.iter().all(|t| selects(t, snapshot, p)) {
                    let node = snapshot.pods.node[p as usize];
                    for term in terms {
                        counts.add(snapshot, term.topology, node, amount);
                    }
                }
            }
        }
    }
}

/// The live nodes where every one of `terms` finds a domain of its topology holding a
/// matching pod: the only nodes Filter's required-affinity check lets through once
/// matching pods exist (ascending). `None` when matching pods are in most of some
/// term's domains: the list would then hold most nodes, and building it would cost a
/// pass over all of them that the cycle's scan, which stops early, does not make.
fn affinity_candidates(snapshot: &Snapshot, terms: &[AffinityTerm], affinity: &DomainCounts) -> Option<Vec<NodeIx>> {
    let columns = &snapshot.nodes.columns;
    let mut counted: Vec<(&[Domain], &[i64])> = Vec::with_capacity(terms.len());
    let mut narrows = false;
    for term in terms {
        let counts = affinity.columns.iter().find(|(c, _)| *c == term.topology).map_or(&[][..], |(_, n)| &n[..]);
        let column = columns.get(term.topology);
        let held = counts.iter().filter(|&&n| n > 0).count();
        narrows |= held * 4 <= column.domain_count() * 3;
        counted.push((&column.domain_of_node, counts));
    }
    if !narrows {
        return None;
    }
    let live = &snapshot.nodes.live;
    let admits = |node: usize| {
        counted.iter().all(|&(domains, counts)| {
            let domain = domains.get(node).copied().unwrap_or(ABSENT);
            domain != ABSENT && counts.get(domain as usize).is_some_and(|&n| n > 0)
        })
    };
    Some((0..snapshot.nodes.rows()).filter(|&node| live[node] && admits(node)).map(|node| node as NodeIx).collect())
}

/// Whether the placed pods' term `targets` selects the incoming pod.
fn selects_incoming(snapshot: &Snapshot, targets: TargetsId, pod: &PodQuery) -> bool {
    let namespace = pod.record.namespace;
    snapshot.affinity.targets(targets).selects(namespace, &pod.record.labels, snapshot.namespace_labels(namespace))
}

impl InterPodAffinity {
    /// The node's nominees of no lower priority count as placed on it (kube filters such
    /// a node with them added, as well as without). Added pods can only satisfy the
    /// pod's required affinity, which the pass without them already decided; what they
    /// can change is anti-affinity: the pod's toward them, or theirs toward the pod.
    fn filter_with_nominees(&self, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        let required_anti = pod.record.affinity.as_deref().map_or(&[][..], |a| &a.required_anti_affinity[..]);
        // A term's domain always holds the node the nominee waits on, so a match is a
        // match in the node's own domain (if it has the term's key at all).
        let in_domain = |t: &AffinityTerm| snapshot.nodes.columns.get(t.topology).domain(node) != ABSENT;
        for nominee in snapshot.nodes.nominees_against(node, &pod.record) {
            if required_anti.iter().any(|t| in_domain(t) && t.selects(nominee.namespace, &nominee.labels, snapshot)) {
                return Err(Rejection::unschedulable(ANTI_AFFINITY));
            }
            let theirs = nominee.affinity.as_deref().map_or(&[][..], |a| &a.required_anti_affinity[..]);
            if theirs.iter().any(|t| in_domain(t) && t.selects(pod.record.namespace, &pod.record.labels, snapshot)) {
                return Err(Rejection::unschedulable(EXISTING_ANTI_AFFINITY));
            }
        }
        Ok(())
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn pre_filter(&self, pod: &PodQuery, snapshot: &Snapshot) -> Result<Prepared, Status> {
        let own = pod.record.affinity.as_deref();
        let required_affinity = own.map_or(&[][..], |a| &a.required_affinity[..]);
        let required_anti = own.map_or(&[][..], |a| &a.required_anti_affinity[..]);
        let mut existing_anti = DomainCounts::default();
        for (term, carriers) in snapshot.affinity.carried() {
            if term.role == Role::RequiredAnti && selects_incoming(snapshot, term.targets, pod) {
                existing_anti.add_pods(snapshot, term.topology, carriers.iter().map(|(&n, &c)| (n, c)), 1);
            }
        }
        if required_affinity.is_empty() && required_anti.is_empty() && existing_anti.is_empty() {
            return Ok(Prepared::skip());
        }
        let mut affinity = DomainCounts::default();
        let mut anti = DomainCounts::default();
        if !required_affinity.is_empty() {
            add_selected(&mut affinity, snapshot, required_affinity, 1);
        }
        for term in required_anti {
            add_selected(&mut anti, snapshot, std::slice::from_ref(term), 1);
        }
        let self_affinity =
            required_affinity.iter().all(|t| t.selects(pod.record.namespace, &pod.record.labels, snapshot));
        // Required affinity that matched pods somewhere admits only the nodes of their
        // domains: usually a small part of the cluster, which the cycle then scans alone.
        let may_start_group = affinity.is_empty() && self_affinity;
        let candidates = (!required_affinity.is_empty() && !may_start_group)
            .then(|| affinity_candidates(snapshot, required_affinity, &affinity))
            .flatten();
        let mut prepared = Prepared::with_state(FilterState { existing_anti, affinity, anti, self_affinity });
        prepared.candidates = candidates;
        Ok(prepared)
    }

    #[inline]
    fn filter(&self, state: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        let state = crate::framework::state::<FilterState>(state);
        let own = pod.record.affinity.as_deref();
        let columns = &snapshot.nodes.columns;
        if let Some(terms) = own.map(|a| &a.required_affinity[..]).filter(|t| !t.is_empty()) {
            if terms.iter().any(|t| columns.get(t.topology).domain(node) == ABSENT) {
                return Err(Rejection::unresolvable(AFFINITY));
            }
            let all_exist = terms.iter().all(|t| state.affinity.get(snapshot, t.topology, node) > 0);
            let may_start_group = state.affinity.is_empty() && state.self_affinity;
            if !all_exist && !may_start_group {
                return Err(Rejection::unresolvable(AFFINITY));
            }
        }
        if let Some(terms) = own.map(|a| &a.required_anti_affinity[..]) {
            if terms.iter().any(|t| state.anti.get(snapshot, t.topology, node) > 0) {
                return Err(Rejection::unschedulable(ANTI_AFFINITY));
            }
        }
        if state.existing_anti.any_positive(snapshot, node) {
            return Err(Rejection::unschedulable(EXISTING_ANTI_AFFINITY));
        }
        if !snapshot.nodes.nominated[node as usize].is_empty() {
            return self.filter_with_nominees(pod, snapshot, node);
        }
        Ok(())
    }

    fn explain(&self, rejection: Rejection, _: &PodQuery, _: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        out.push(
            match rejection.reason {
                AFFINITY => "node(s) didn't match pod affinity rules",
                ANTI_AFFINITY => "node(s) didn't match pod anti-affinity rules",
                _ => "node(s) didn't satisfy existing pods anti-affinity rules",
            }
            .into(),
        );
    }

    fn pre_score(&self, pod: &PodQuery, snapshot: &Snapshot, _: &[NodeIx]) -> Result<Prepared, Status> {
        let own = pod.record.affinity.as_deref();
        let preferred = own.map_or(&[][..], |a| &a.preferred_affinity[..]);
        let preferred_anti = own.map_or(&[][..], |a| &a.preferred_anti_affinity[..]);
        let own_preferences = !preferred.is_empty() || !preferred_anti.is_empty();
        if !own_preferences && snapshot.affinity.carries_nothing() {
            return Ok(Prepared::skip());
        }
        let mut scores = DomainCounts::default();
        let weigh = |terms: &[WeightedTerm], sign: i64, scores: &mut DomainCounts| {
            for w in terms {
                add_selected(scores, snapshot, std::slice::from_ref(&w.term), sign * i64::from(w.weight));
            }
        };
        weigh(preferred, 1, &mut scores);
        weigh(preferred_anti, -1, &mut scores);
        for (term, carriers) in snapshot.affinity.carried() {
            let amount = match term.role {
                Role::RequiredAffinity if self.hard_pod_affinity_weight > 0 => self.hard_pod_affinity_weight,
                Role::RequiredAffinity | Role::RequiredAnti => continue,
                Role::Preferred(weight) => weight,
                Role::PreferredAnti(weight) => -weight,
            };
            if selects_incoming(snapshot, term.targets, pod) {
                scores.add_pods(snapshot, term.topology, carriers.iter().map(|(&n, &c)| (n, c)), i64::from(amount));
            }
        }
        if scores.is_empty() {
            return Ok(Prepared::skip());
        }
        Ok(Prepared::with_state(scores))
    }

    #[inline]
    fn score(&self, state: &PluginState, _: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> i64 {
        let scores = crate::framework::state::<DomainCounts>(state);
        scores.columns.iter().map(|(column, _)| scores.get(snapshot, *column, node)).sum()
    }

    fn normalizes(&self) -> bool {
        true
    }

    fn normalize(&self, _: &PluginState, _: &PodQuery, scores: &mut [i64]) {
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        let spread = max - min;
        for score in scores {
            *score =
                if spread > 0 { (MAX_NODE_SCORE as f64 * ((*score - min) as f64 / spread as f64)) as i64 } else { 0 };
        }
    }
}
