//! DefaultPreemption (PostFilter): when no node fits, find the node where evicting the
//! fewest, least important lower-priority pods makes room, honouring
//! PodDisruptionBudgets where it can.
//!
//! Per candidate node (one rejected as `Unschedulable`, not unresolvable): take every
//! lower-priority pod off the node; if the pod still does not fit, the node is no help.
//! Otherwise put the pods back one at a time, most important first (and those whose
//! eviction would break a budget before the others), keeping each one the pod can live
//! with: what remains are the victims. Among candidates, kube's order picks the winner:
//! fewest budget violations, then the lowest highest-victim priority, the lowest sum of
//! victim priorities, the fewest victims.
//!
//! The what-if runs on the live snapshot (pods taken off and put back), so the filters
//! and their PreFilter state see exactly what the cycle would see.

use crate::framework::{Code, Diagnosis, Nomination};
use crate::profile::Profile;
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, PodIx, PodRecord, Snapshot};

/// Whether the pod passes every filter on `node` (nominated pods of no lower priority
/// held against it).
pub(crate) fn fits(query: &PodQuery, profile: &Profile, snapshot: &Snapshot, node: NodeIx) -> bool {
    let mut states = Vec::with_capacity(profile.filters.len());
    for &plugin in &profile.filters {
        match profile.plugins[plugin].pre_filter(query, snapshot) {
            Ok(prepared) if prepared.skip => {}
            Ok(prepared) => {
                if prepared.nodes.as_ref().is_some_and(|nodes| !nodes.contains(&node)) {
                    return false;
                }
                states.push((plugin, prepared.state));
            }
            Err(_) => return false,
        }
    }
    states.iter().all(|(plugin, state)| profile.plugins[*plugin].filter(state, query, snapshot, node).is_ok())
}

struct Candidate {
    node: NodeIx,
    victims: Vec<(PodRecord, bool)>,
    violations: usize,
}

impl Candidate {
    /// kube's `pickOneNodeForPreemption` order, smallest first.
    fn rank(&self) -> (usize, i64, i64, usize) {
        let top = self.victims.iter().map(|(v, _)| i64::from(v.priority)).max().unwrap_or(i64::MIN);
        let sum: i64 = self.victims.iter().map(|(v, _)| i64::from(v.priority) + i64::from(i32::MAX) + 1).sum();
        (self.violations, top, sum, self.victims.len())
    }
}

/// The victims on `node`, or `None` if evicting lower-priority pods would not make room.
fn victims_on(query: &PodQuery, profile: &Profile, snapshot: &mut Snapshot, node: NodeIx) -> Option<Candidate> {
    let priority = query.record.priority;
    let lower: Vec<PodIx> = snapshot.nodes.pods[node as usize]
        .iter()
        .copied()
        .filter(|&p| snapshot.pods.priority[p as usize] < priority)
        .collect();
    if lower.is_empty() {
        return None;
    }
    let mut removed: Vec<(PodRecord, bool)> = lower
        .into_iter()
        .filter_map(|p| {
            let breaks_budget = snapshot.disruption_blocked(p);
            snapshot.take_pod(p).map(|(record, _)| (record, breaks_budget))
        })
        .collect();
    if !fits(query, profile, snapshot, node) {
        for (record, _) in removed {
            snapshot.put_back(record, node);
        }
        return None;
    }
    // Reprieve in order: budget-protected first, then by priority, most important first.
    removed.sort_by(|(a, a_blocked), (b, b_blocked)| b_blocked.cmp(a_blocked).then(b.priority.cmp(&a.priority)));
    let mut victims = Vec::new();
    for (record, blocked) in removed {
        let key = record.key.clone();
        snapshot.put_back(record, node);
        if !fits(query, profile, snapshot, node) {
            let ix = snapshot.pods.find(&key).expect("just put back");
            let (record, _) = snapshot.take_pod(ix).expect("just put back");
            victims.push((record, blocked));
        }
    }
    let violations = victims.iter().filter(|(_, blocked)| *blocked).count();
    for (record, _) in &victims {
        snapshot.put_back(record.clone(), node);
    }
    Some(Candidate { node, victims, violations })
}

/// kube's defaults for how many candidates the dry run looks for before choosing:
/// 10% of the nodes, at least 100.
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// Finds a node and victims, or explains (kube's wording) why preemption cannot help.
/// The rejected nodes are tried from `offset` (mod their count) on, and the search stops
/// once it has as many candidates as kube's dry run wants.
pub fn find(
    query: &PodQuery,
    profile: &Profile,
    snapshot: &mut Snapshot,
    diagnosis: &Diagnosis,
    offset: usize,
) -> Result<Nomination, String> {
    if query.never_preempts {
        return Err("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    let live = snapshot.nodes.live_count();
    let wanted = (live * MIN_CANDIDATE_NODES_PERCENTAGE / 100).max(MIN_CANDIDATE_NODES_ABSOLUTE);
    let mut candidates = Vec::new();
    let mut not_helpful = 0;
    let mut no_victims = 0;
    let rejections = &diagnosis.rejections;
    let start = if rejections.is_empty() { 0 } else { offset % rejections.len() };
    for &(node, _, rejection) in rejections[start..].iter().chain(&rejections[..start]) {
        if candidates.len() >= wanted {
            break;
        }
        if rejection.code != Code::Unschedulable {
            not_helpful += 1;
            continue;
        }
        match victims_on(query, profile, snapshot, node) {
            Some(candidate) => candidates.push(candidate),
            None => no_victims += 1,
        }
    }
    if let Some(best) = candidates.into_iter().min_by_key(Candidate::rank) {
        let victims = best.victims.into_iter().map(|(record, _)| record.key.to_string()).collect();
        return Ok(Nomination { node: best.node, victims });
    }
    let mut reasons = Vec::new();
    if no_victims > 0 {
        reasons.push(format!("{no_victims} No preemption victims found for incoming pod"));
    }
    if not_helpful > 0 {
        reasons.push(format!("{not_helpful} Preemption is not helpful for scheduling"));
    }
    Err(format!("preemption: 0/{live} nodes are available: {}.", reasons.join(", ")))
}
