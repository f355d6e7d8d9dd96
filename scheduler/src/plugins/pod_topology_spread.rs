//! PodTopologySpread: keeps matching pods evenly spread over topology domains (zones,
//! hosts, ...). Hard constraints (`DoNotSchedule`) filter by skew; soft ones
//! (`ScheduleAnyway`) score, fewer matching pods in a node's domain scoring higher.
//!
//! Counts are per domain of a column (see `snapshot::columns`), so the per-node check is
//! an index into a vector. The matching pods on a node come from the snapshot's index
//! (`snapshot::affinity_index`, the selection the cycle tracks for each constraint),
//! not from testing each of the node's pods; without a kept selection they are tested.

use crate::framework::{Plugin, PluginState, Prepared, Rejection, Status, MAX_NODE_SCORE};
use crate::matchers::{tolerated, Effect, LabelMatcher};
use crate::query::{PodQuery, SpreadConstraint, LABEL_HOSTNAME};
use crate::snapshot::columns::ABSENT;
use crate::snapshot::{NodeIx, Snapshot};

const MISSING_LABEL: u32 = 0;
const SKEW: u32 = 1;

pub struct PodTopologySpread;

/// Matching pods on `node` in the pod's namespace: the count the index keeps in `slot`,
/// or else a look at each of the node's pods.
#[inline]
fn matching_pods_on(
    snapshot: &Snapshot,
    slot: Option<usize>,
    node: NodeIx,
    selector: &LabelMatcher,
    namespace: u32,
) -> u32 {
    if let Some(slot) = slot {
        return snapshot.affinity.count_in(slot, node);
    }
    let pods = &snapshot.pods;
    snapshot.nodes.pods[node as usize]
        .iter()
        .filter(|&&p| pods.namespace[p as usize] == namespace && selector.matches(&pods.labels[p as usize]))
        .count() as u32
}

/// Whether a node takes part in the constraint's counting under its inclusion policies.
#[inline]
fn included(c: &SpreadConstraint, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> bool {
    if c.honor_affinity && !pod.node_affinity_matches(snapshot, node) {
        return false;
    }
    if c.honor_taints {
        let taints = &snapshot.nodes.taints[node as usize];
        if taints.iter().any(|t| t.effect != Effect::PreferNoSchedule && !tolerated(&pod.tolerations, t)) {
            return false;
        }
    }
    true
}

#[inline]
fn has_all_keys(constraints: &[&SpreadConstraint], snapshot: &Snapshot, node: NodeIx) -> bool {
    constraints.iter().all(|c| snapshot.nodes.columns.get(c.topology).domain(node) != ABSENT)
}

struct HardState {
    constraints: Vec<HardConstraint>,
}

struct HardConstraint {
    spec: SpreadConstraint,
    /// Where the index keeps this constraint's matching pods per node, if it does.
    slot: Option<usize>,
    /// Matching pods per domain of the topology column.
    counts: Vec<u32>,
    /// The smallest count over eligible domains (0 if fewer than minDomains).
    min: i64,
    /// 1 if the incoming pod itself matches the selector (it will add to the count).
    self_match: i64,
    /// Domains of included nodes, which `min` is taken over.
    eligible: Vec<bool>,
    /// Whether there are at least minDomains of them (else `min` is 0).
    enough_domains: bool,
}

impl HardConstraint {
    /// Whether placing the pod in `domain`, which holds `extra` more matching pods than
    /// counted (nominees), keeps the skew within maxSkew.
    #[inline]
    fn allows(&self, domain: usize, extra: i64) -> bool {
        let count = self.counts.get(domain).copied().map_or(0, i64::from) + extra;
        let mut min = self.min;
        if extra > 0 && self.enough_domains && self.eligible.get(domain) == Some(&true) {
            // The nominees raise their domain's count, and with it the minimum when
            // that domain was the only one at it.
            min = (self.counts.iter().zip(&self.eligible).enumerate())
                .filter(|(_, (_, &e))| e)
                .map(|(d, (&n, _))| i64::from(n) + if d == domain { extra } else { 0 })
                .min()
                .unwrap_or(0);
        }
        count + self.self_match - min <= i64::from(self.spec.max_skew)
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn pre_filter(&self, pod: &PodQuery, snapshot: &Snapshot) -> Result<Prepared, Status> {
        let hard: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| c.hard).collect();
        if hard.is_empty() {
            return Ok(Prepared::skip());
        }
        let columns = &snapshot.nodes.columns;
        let mut constraints: Vec<HardConstraint> = hard
            .iter()
            .map(|c| HardConstraint {
                spec: (*c).clone(),
                slot: snapshot.affinity.slot(std::iter::once(c.targets)),
                counts: vec![0; columns.get(c.topology).domain_count()],
                min: 0,
                self_match: i64::from(c.selector.matches(&pod.record.labels)),
                eligible: vec![false; columns.get(c.topology).domain_count()],
                enough_domains: false,
            })
            .collect();
        for node in 0..snapshot.nodes.rows() as NodeIx {
            if !snapshot.nodes.live[node as usize] || !has_all_keys(&hard, snapshot, node) {
                continue;
            }
            for c in constraints.iter_mut() {
                if !included(&c.spec, pod, snapshot, node) {
                    continue;
                }
                let domain = columns.get(c.spec.topology).domain(node) as usize;
                c.eligible[domain] = true;
                c.counts[domain] += matching_pods_on(snapshot, c.slot, node, &c.spec.selector, pod.record.namespace);
            }
        }
        for c in constraints.iter_mut() {
            let domains = c.eligible.iter().filter(|&&e| e).count();
            let min = c.counts.iter().zip(&c.eligible).filter(|(_, &e)| e).map(|(&n, _)| i64::from(n)).min();
            c.enough_domains = domains >= c.spec.min_domains as usize;
            c.min = if c.enough_domains { min.unwrap_or(0) } else { 0 };
        }
        Ok(Prepared::with_state(HardState { constraints }))
    }

    #[inline]
    fn filter(&self, state: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        let state = crate::framework::state::<HardState>(state);
        let columns = &snapshot.nodes.columns;
        if state.constraints.iter().any(|c| columns.get(c.spec.topology).domain(node) == ABSENT) {
            return Err(Rejection::unresolvable(MISSING_LABEL));
        }
        let nominated = !snapshot.nodes.nominated[node as usize].is_empty();
        for c in &state.constraints {
            let domain = columns.get(c.spec.topology).domain(node) as usize;
            if !c.allows(domain, 0) {
                return Err(Rejection::unschedulable(SKEW));
            }
            // Nominees of no lower priority on the node count as placed there (kube's
            // AddPod with nominated pods), if the node counts for the constraint.
            if nominated && included(&c.spec, pod, snapshot, node) {
                let extra = snapshot
                    .nodes
                    .nominees_against(node, &pod.record)
                    .filter(|n| n.namespace == pod.record.namespace && c.spec.selector.matches(&n.labels))
                    .count() as i64;
                if extra > 0 && !c.allows(domain, extra) {
                    return Err(Rejection::unschedulable(SKEW));
                }
            }
        }
        Ok(())
    }

    fn explain(&self, rejection: Rejection, _: &PodQuery, _: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        out.push(if rejection.reason == MISSING_LABEL {
            "node(s) didn't match pod topology spread constraints (missing required label)".into()
        } else {
            "node(s) didn't match pod topology spread constraints".into()
        });
    }

    fn pre_score(&self, pod: &PodQuery, snapshot: &Snapshot, feasible: &[NodeIx]) -> Result<Prepared, Status> {
        let soft: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).collect();
        if soft.is_empty() {
            return Ok(Prepared::skip());
        }
        let require_all = !pod.spread_defaulted;
        let columns = &snapshot.nodes.columns;
        let mut constraints: Vec<SoftConstraint> = soft
            .iter()
            .map(|c| SoftConstraint {
                spec: (*c).clone(),
                slot: snapshot.affinity.slot(std::iter::once(c.targets)),
                hostname: columns.get(c.topology).key.as_ref() == LABEL_HOSTNAME,
                counts: vec![-1; columns.get(c.topology).domain_count()],
                weight: 0.0,
            })
            .collect();
        let mut ignored = 0usize;
        let mut sizes = vec![0usize; constraints.len()];
        for &node in feasible {
            if require_all && !has_all_keys(&soft, snapshot, node) {
                ignored += 1;
                continue;
            }
            for (c, size) in constraints.iter_mut().zip(sizes.iter_mut()) {
                let domain = columns.get(c.spec.topology).domain(node);
                if c.hostname || domain == ABSENT {
                    continue;
                }
                if c.counts[domain as usize] < 0 {
                    c.counts[domain as usize] = 0;
                    *size += 1;
                }
            }
        }
        for (c, size) in constraints.iter_mut().zip(&sizes) {
            let size = if c.hostname { feasible.len() - ignored } else { *size };
            c.weight = ((size + 2) as f64).ln();
        }
        for node in 0..snapshot.nodes.rows() as NodeIx {
            if !snapshot.nodes.live[node as usize] || (require_all && !has_all_keys(&soft, snapshot, node)) {
                continue;
            }
            for c in constraints.iter_mut() {
                if c.hostname || !included(&c.spec, pod, snapshot, node) {
                    continue;
                }
                let domain = columns.get(c.spec.topology).domain(node);
                if domain != ABSENT && c.counts[domain as usize] >= 0 {
                    let n = matching_pods_on(snapshot, c.slot, node, &c.spec.selector, pod.record.namespace);
                    c.counts[domain as usize] += i64::from(n);
                }
            }
        }
        Ok(Prepared::with_state(SoftState { constraints, require_all }))
    }

    /// Higher raw scores mean more matching pods nearby; normalisation reverses it. A node
    /// missing a required key scores -1, which normalisation turns into 0.
    #[inline]
    fn score(&self, state: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> i64 {
        let state = crate::framework::state::<SoftState>(state);
        let columns = &snapshot.nodes.columns;
        if state.require_all && state.constraints.iter().any(|c| columns.get(c.spec.topology).domain(node) == ABSENT) {
            return -1;
        }
        let mut score = 0f64;
        for c in &state.constraints {
            let domain = columns.get(c.spec.topology).domain(node);
            if domain == ABSENT {
                continue;
            }
            let count = if c.hostname {
                i64::from(matching_pods_on(snapshot, c.slot, node, &c.spec.selector, pod.record.namespace))
            } else {
                c.counts[domain as usize].max(0)
            };
            score += count as f64 * c.weight + f64::from(c.spec.max_skew - 1);
        }
        score.round() as i64
    }

    fn normalizes(&self) -> bool {
        true
    }

    fn normalize(&self, _: &PluginState, _: &PodQuery, scores: &mut [i64]) {
        let counted = scores.iter().copied().filter(|&s| s >= 0);
        let min = counted.clone().min().unwrap_or(0);
        let max = counted.max().unwrap_or(0);
        for score in scores {
            *score = if *score < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *score) / max
            };
        }
    }
}

struct SoftState {
    constraints: Vec<SoftConstraint>,
    require_all: bool,
}

struct SoftConstraint {
    spec: SpreadConstraint,
    /// Where the index keeps this constraint's matching pods per node, if it does.
    slot: Option<usize>,
    /// Hostname constraints count per node at score time instead of per domain.
    hostname: bool,
    /// Matching pods per domain; -1 for domains with no feasible node.
    counts: Vec<i64>,
    /// `ln(domains + 2)`: more domains, more weight per pod.
    weight: f64,
}
