//! NodeResourcesFit (filter and score) and NodeResourcesBalancedAllocation.

use crate::framework::{Plugin, PluginState, Prepared, Rejection, Status, MAX_NODE_SCORE};
use crate::query::PodQuery;
use crate::resources::{Resources, MAX_SCALAR};
use crate::snapshot::{NodeIx, Snapshot};

// Fit's rejection reason is a bit set: one bit per short resource, so one node can be
// counted under "Insufficient cpu" and "Insufficient memory" at once, as kube does.
const TOO_MANY_PODS: u32 = 1;
const SHORT_CPU: u32 = 1 << 1;
const SHORT_MEMORY: u32 = 1 << 2;
const SHORT_EPHEMERAL: u32 = 1 << 3;
const SHORT_SCALAR_SHIFT: u32 = 4;
const UNTRACKED: u32 = 1 << 31;

/// A resource a scoring strategy looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Cpu,
    Memory,
    Ephemeral,
    Scalar(usize),
}

/// A resource name with its weight, as in `NodeResourcesFitArgs.scoringStrategy.resources`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceWeight {
    pub name: String,
    pub weight: i64,
}

pub fn default_resources() -> Vec<ResourceWeight> {
    vec![ResourceWeight { name: "cpu".into(), weight: 1 }, ResourceWeight { name: "memory".into(), weight: 1 }]
}

/// `(utilization 0..=100, score 0..=10)` points of RequestedToCapacityRatio's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapePoint {
    pub utilization: i64,
    pub score: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    LeastAllocated,
    MostAllocated,
    RequestedToCapacityRatio(Vec<ShapePoint>),
}

pub struct NodeResourcesFit {
    pub strategy: Strategy,
    pub resources: Vec<ResourceWeight>,
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        NodeResourcesFit { strategy: Strategy::LeastAllocated, resources: default_resources() }
    }
}

/// The resources a strategy scores, resolved to kinds once per cycle.
struct ScoreState {
    resources: Vec<(ResourceKind, i64)>,
}

fn resolve(resources: &[ResourceWeight], snapshot: &Snapshot, pod: &PodQuery) -> Vec<(ResourceKind, i64)> {
    resources
        .iter()
        .filter_map(|r| {
            let kind = match r.name.as_str() {
                "cpu" => ResourceKind::Cpu,
                "memory" => ResourceKind::Memory,
                "ephemeral-storage" => ResourceKind::Ephemeral,
                other => {
                    let slot = snapshot.scalars.find(other)?;
                    // Extended resources the pod does not ask for do not score (kube).
                    if pod.record.requests.scalar[slot] == 0 {
                        return None;
                    }
                    ResourceKind::Scalar(slot)
                }
            };
            Some((kind, r.weight))
        })
        .collect()
}

/// `(requested after placing the pod, allocatable)` of one resource on one node. CPU and
/// memory count request-less containers at the defaults unless `actual` (as the
/// balanced-allocation score wants).
#[inline]
fn usage(kind: ResourceKind, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx, actual: bool) -> (i64, i64) {
    let n = node as usize;
    let allocatable = &snapshot.nodes.allocatable[n];
    let requested = &snapshot.nodes.requested[n];
    let non_zero = &snapshot.nodes.non_zero_requested[n];
    let pod_requests = &pod.record.requests;
    match kind {
        ResourceKind::Cpu if actual => (requested.milli_cpu + pod_requests.milli_cpu, allocatable.milli_cpu),
        ResourceKind::Cpu => (non_zero.milli_cpu + pod.record.non_zero.milli_cpu, allocatable.milli_cpu),
        ResourceKind::Memory if actual => (requested.memory + pod_requests.memory, allocatable.memory),
        ResourceKind::Memory => (non_zero.memory + pod.record.non_zero.memory, allocatable.memory),
        ResourceKind::Ephemeral => {
            (requested.ephemeral_storage + pod_requests.ephemeral_storage, allocatable.ephemeral_storage)
        }
        ResourceKind::Scalar(slot) => (requested.scalar[slot] + pod_requests.scalar[slot], allocatable.scalar[slot]),
    }
}

/// kube's `BuildBrokenLinearFunction`, with the shape's scores already scaled to 0..=100.
fn broken_linear(shape: &[ShapePoint], utilization: i64) -> i64 {
    for (i, point) in shape.iter().enumerate() {
        if utilization <= point.utilization {
            if i == 0 {
                return point.score;
            }
            let previous = &shape[i - 1];
            return previous.score
                + (point.score - previous.score) * (utilization - previous.utilization)
                    / (point.utilization - previous.utilization);
        }
    }
    shape.last().map_or(0, |p| p.score)
}

impl NodeResourcesFit {
    #[inline]
    fn fit(&self, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> u32 {
        let n = node as usize;
        let allocatable = &snapshot.nodes.allocatable[n];
        let mut requested = &snapshot.nodes.requested[n];
        let mut pod_count = i64::from(snapshot.nodes.pod_count[n]);
        let held;
        if !snapshot.nodes.nominated[n].is_empty() {
            // Room a preemptor of no lower priority waits for is taken (kube adds
            // nominated pods before filtering); the pod's own nomination is not.
            let mut with_nominees = *requested;
            for nominee in snapshot.nodes.nominees_against(node, &pod.record) {
                with_nominees.add(&nominee.requests);
                pod_count += 1;
            }
            held = with_nominees;
            requested = &held;
        }
        let want: &Resources = &pod.record.requests;
        let mut short = 0;
        if pod_count + 1 > allocatable.pods {
            short |= TOO_MANY_PODS;
        }
        if want.milli_cpu > 0 && want.milli_cpu > allocatable.milli_cpu - requested.milli_cpu {
            short |= SHORT_CPU;
        }
        if want.memory > 0 && want.memory > allocatable.memory - requested.memory {
            short |= SHORT_MEMORY;
        }
        if want.ephemeral_storage > 0
            && want.ephemeral_storage > allocatable.ephemeral_storage - requested.ephemeral_storage
        {
            short |= SHORT_EPHEMERAL;
        }
        if !pod.scalar_requests {
            return short | if pod.untracked.is_empty() { 0 } else { UNTRACKED };
        }
        for slot in 0..MAX_SCALAR {
            if want.scalar[slot] > 0 && want.scalar[slot] > allocatable.scalar[slot] - requested.scalar[slot] {
                short |= 1 << (SHORT_SCALAR_SHIFT + slot as u32);
            }
        }
        if !pod.untracked.is_empty() {
            short |= UNTRACKED;
        }
        short
    }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn node_local(&self) -> bool {
        true
    }

    #[inline]
    fn filter(&self, _: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        match self.fit(pod, snapshot, node) {
            0 => Ok(()),
            short => Err(Rejection::unschedulable(short)),
        }
    }

    fn explain(&self, rejection: Rejection, pod: &PodQuery, snapshot: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        let short = rejection.reason;
        if short & TOO_MANY_PODS != 0 {
            out.push("Too many pods".into());
        }
        for (bit, name) in [(SHORT_CPU, "cpu"), (SHORT_MEMORY, "memory"), (SHORT_EPHEMERAL, "ephemeral-storage")] {
            if short & bit != 0 {
                out.push(format!("Insufficient {name}"));
            }
        }
        for slot in 0..snapshot.scalars.len() {
            if short & (1 << (SHORT_SCALAR_SHIFT + slot as u32)) != 0 {
                out.push(format!("Insufficient {}", snapshot.scalars.name(slot)));
            }
        }
        if short & UNTRACKED != 0 {
            out.extend(pod.untracked.iter().map(|name| format!("Insufficient {name}")));
        }
    }

    fn pre_score(&self, pod: &PodQuery, snapshot: &Snapshot, _: &[NodeIx]) -> Result<Prepared, Status> {
        Ok(Prepared::with_state(ScoreState { resources: resolve(&self.resources, snapshot, pod) }))
    }

    #[inline]
    fn score(&self, state: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> i64 {
        let state = crate::framework::state::<ScoreState>(state);
        let (mut total, mut weights) = (0i64, 0i64);
        for &(kind, weight) in &state.resources {
            let (requested, capacity) = usage(kind, pod, snapshot, node, false);
            if capacity == 0 {
                continue;
            }
            let score = match &self.strategy {
                Strategy::LeastAllocated if requested > capacity => 0,
                Strategy::LeastAllocated => (capacity - requested) * MAX_NODE_SCORE / capacity,
                Strategy::MostAllocated => requested.min(capacity) * MAX_NODE_SCORE / capacity,
                Strategy::RequestedToCapacityRatio(shape) => {
                    let utilization = if requested > capacity { 100 } else { requested * 100 / capacity };
                    let score = broken_linear(shape, utilization);
                    if score <= 0 {
                        continue;
                    }
                    score
                }
            };
            total += score * weight;
            weights += weight;
        }
        match (&self.strategy, weights) {
            (_, 0) => 0,
            (Strategy::RequestedToCapacityRatio(_), w) => (total as f64 / w as f64).round() as i64,
            (_, w) => total / w,
        }
    }
}

/// Favours nodes whose resources stay evenly used: 100 × (1 − the standard deviation of
/// the requested fractions).
pub struct BalancedAllocation {
    pub resources: Vec<ResourceWeight>,
}

impl Default for BalancedAllocation {
    fn default() -> Self {
        BalancedAllocation { resources: default_resources() }
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn node_local(&self) -> bool {
        true
    }

    fn pre_score(&self, pod: &PodQuery, snapshot: &Snapshot, _: &[NodeIx]) -> Result<Prepared, Status> {
        Ok(Prepared::with_state(ScoreState { resources: resolve(&self.resources, snapshot, pod) }))
    }

    #[inline]
    fn score(&self, state: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> i64 {
        let state = crate::framework::state::<ScoreState>(state);
        let mut fractions = [0f64; 3 + MAX_SCALAR];
        let (mut count, mut sum) = (0usize, 0f64);
        for &(kind, _) in &state.resources {
            let (requested, capacity) = usage(kind, pod, snapshot, node, true);
            if capacity == 0 || count == fractions.len() {
                continue;
            }
            let fraction = (requested as f64 / capacity as f64).min(1.0);
            fractions[count] = fraction;
            sum += fraction;
            count += 1;
        }
        let deviation = match count {
            0 | 1 => 0.0,
            2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
            n => {
                let mean = sum / n as f64;
                (fractions[..n].iter().map(|f| (f - mean) * (f - mean)).sum::<f64>() / n as f64).sqrt()
            }
        };
        ((1.0 - deviation) * MAX_NODE_SCORE as f64) as i64
    }
}
