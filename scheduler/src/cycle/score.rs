//! The score pass. HOT PATH.
//!
//! PreScore once over the feasible nodes, Score per node (in parallel chunks when there
//! is enough work), NormalizeScore once per scorer that normalizes, weighted totals.

use super::{chunk_size, prepared_code, Scratch, MIN_PARALLEL_WORK};
use crate::framework::{Code, PluginState, Prepared, Status};
use crate::memo::Memo;
use crate::profile::Profile;
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, Snapshot};
use crate::timing::{Point, PointTimes};
use rayon::prelude::*;
use std::time::Instant;

/// One scorer that did not skip: its index in the profile, weight, state, its slot in
/// the memo if its raw scores are memoised, and whether it normalizes them.
pub(super) struct ActiveScorer {
    plugin: usize,
    weight: i64,
    state: PluginState,
    slot: Option<usize>,
    normalizes: bool,
}

/// How many memo slots a profile's node-local scorers need.
pub(super) fn memo_width(profile: &Profile) -> usize {
    profile.scorers.iter().filter(|&&(plugin, _)| profile.plugins[plugin].node_local()).count()
}

/// What a score pass reads.
#[derive(Clone, Copy)]
pub(super) struct ScoreInputs<'a> {
    pub(super) snapshot: &'a Snapshot,
    pub(super) query: &'a PodQuery,
    pub(super) profile: &'a Profile,
    pub(super) memo: Option<&'a Memo>,
}

/// Runs PreScore, Score and NormalizeScore over `feasible`; leaves the weighted totals in
/// `scratch.totals`, one per feasible node. Node-local raw scores come from `memo` when
/// there is one.
pub(super) fn score_pass(
    pool: &rayon::ThreadPool,
    scratch: &mut Scratch,
    inputs: ScoreInputs<'_>,
    feasible: &[NodeIx],
    times: &mut PointTimes,
) -> Result<(), Status> {
    let ScoreInputs { snapshot, query, profile, memo } = inputs;
    let started = Instant::now();
    let mut active: Vec<ActiveScorer> = Vec::with_capacity(profile.scorers.len());
    let mut slots = 0;
    for &(plugin, weight) in &profile.scorers {
        // Slots follow the profile's node-local scorers, skipped or not, so they are the
        // same for every pod of a class.
        let slot = (memo.is_some() && profile.plugins[plugin].node_local()).then(|| {
            slots += 1;
            slots - 1
        });
        let prepared = times.plugin_call(
            plugin,
            Point::PreScore,
            || profile.plugins[plugin].pre_score(query, snapshot, feasible),
            prepared_code,
        );
        let Prepared { skip, state, .. } = prepared.inspect_err(|e| times.record(Point::PreScore, started, e.code))?;
        if !skip {
            let normalizes = profile.plugins[plugin].normalizes();
            active.push(ActiveScorer { plugin, weight, state, slot, normalizes });
        }
    }
    times.record(Point::PreScore, started, Code::Success);
    let started = Instant::now();
    let Scratch { scores, column, totals, .. } = scratch;
    let n = feasible.len();
    totals.clear();
    totals.resize(n, 0);
    let per_node = active.len();
    if per_node == 0 {
        times.record(Point::Score, started, Code::Success);
        return Ok(());
    }
    // Scorers that keep their raw scores add them, weighted, straight into the node's
    // total; only those that normalize keep theirs (node-major, `normalized` per node)
    // for the pass over all feasible nodes that normalizing needs.
    let normalized = active.iter().filter(|scorer| scorer.normalizes).count();
    // At least one slot per node, so the parallel pass's chunks of `scores` line up
    // with its chunks of nodes even when no scorer normalizes.
    let kept_per_node = normalized.max(1);
    scores.clear();
    scores.resize(n * kept_per_node, 0);
    let parallel = n * per_node >= MIN_PARALLEL_WORK && pool.current_num_threads() > 1;
    let chunk = if parallel { chunk_size(pool, n) } else { n };
    let work = |totals: &mut [i64], kept: &mut [i64], nodes: &[NodeIx]| {
        for (i, (&node, total)) in nodes.iter().zip(totals.iter_mut()).enumerate() {
            let version = snapshot.nodes.versions[node as usize];
            let memoised = memo.is_some_and(|m| m.has_scores(node, version));
            let mut sum = 0;
            let mut k = i * kept_per_node;
            for scorer in &active {
                let score = |plugin: usize| profile.plugins[plugin].score(&scorer.state, query, snapshot, node);
                let value = match (memo, scorer.slot) {
                    (Some(memo), Some(slot)) if memoised => memo.score(node, slot),
                    (Some(memo), Some(slot)) => {
                        let value = score(scorer.plugin);
                        memo.set_score(node, slot, value);
                        value
                    }
                    _ => score(scorer.plugin),
                };
                if scorer.normalizes {
                    kept[k] = value;
                    k += 1;
                } else {
                    sum += value * scorer.weight;
                }
            }
            *total = sum;
            if let Some(memo) = memo.filter(|_| !memoised) {
                memo.seal_scores(node, version);
            }
        }
    };
    if n <= chunk {
        work(totals, scores, feasible);
    } else {
        pool.install(|| {
            totals
                .par_chunks_mut(chunk)
                .zip(scores.par_chunks_mut(chunk * kept_per_node))
                .zip(feasible.par_chunks(chunk))
                .for_each(|((totals, kept), nodes)| work(totals, kept, nodes));
        });
    }
    for (k, scorer) in active.iter().filter(|scorer| scorer.normalizes).enumerate() {
        let column = if normalized == 1 {
            &mut scores[..n]
        } else {
            column.clear();
            column.extend(scores.iter().skip(k).step_by(normalized));
            &mut column[..]
        };
        profile.plugins[scorer.plugin].normalize(&scorer.state, query, column);
        for (total, score) in totals.iter_mut().zip(column.iter()) {
            *total += score * scorer.weight;
        }
    }
    times.record(Point::Score, started, Code::Success);
    if times.sampling() {
        // Timed apart from the pass (see `timing`): scorers are pure.
        for scorer in &active {
            let plugin = &profile.plugins[scorer.plugin];
            let node = feasible[0];
            times.plugin_call(
                scorer.plugin,
                Point::Score,
                || plugin.score(&scorer.state, query, snapshot, node),
                |_| Code::Success,
            );
        }
    }
    Ok(())
}
