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
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// One scorer that did not skip: its index in the profile, weight and state, and the
/// column its raw scores are kept in if it normalizes them.
struct ActiveScorer {
    plugin: usize,
    weight: i64,
    state: PluginState,
    column: Option<usize>,
}

/// How many scores the memo keeps per row for a profile: the weighted sum of the
/// node-local scorers that keep their raw scores, and the raw scores of each node-local
/// scorer that normalizes.
pub(super) fn memo_width(profile: &Profile) -> usize {
    let plugins = &profile.plugins;
    1 + profile.scorers.iter().filter(|&&(p, _)| plugins[p].node_local() && plugins[p].normalizes()).count()
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
/// `scratch.totals`, one per feasible node. Node-local scorers' scores (their weighted
/// sum, and the raw scores of those that normalize) come from `memo` when there is one.
pub(super) fn score_pass(
    pool: &rayon::ThreadPool,
    scratch: &mut Scratch,
    inputs: ScoreInputs<'_>,
    feasible: &[NodeIx],
    times: &mut PointTimes,
) -> Result<(), Status> {
    let ScoreInputs { snapshot, query, profile, memo } = inputs;
    let started = Instant::now();
    // Node-local scorers' scores come from the memo when there is one; the others are
    // computed for every node.
    let mut memoised: Vec<ActiveScorer> = Vec::with_capacity(profile.scorers.len());
    let mut computed: Vec<ActiveScorer> = Vec::with_capacity(profile.scorers.len());
    let mut memoised_set = 0u64;
    for (position, &(plugin, weight)) in profile.scorers.iter().enumerate() {
        let prepared = times.plugin_call(
            plugin,
            Point::PreScore,
            || profile.plugins[plugin].pre_score(query, snapshot, feasible),
            prepared_code,
        );
        let Prepared { skip, state, .. } = prepared.inspect_err(|e| times.record(Point::PreScore, started, e.code))?;
        if skip {
            continue;
        }
        let scorer = ActiveScorer { plugin, weight, state, column: None };
        if memo.is_some() && profile.plugins[plugin].node_local() {
            // A profile holds each plugin once, and there are far fewer than 64.
            debug_assert!(position < 64);
            memoised_set |= 1 << position;
            memoised.push(scorer);
        } else {
            computed.push(scorer);
        }
    }
    // Raw scores are kept only for scorers that normalize: the memoised ones' columns
    // first, in the order the memo keeps them.
    let mut columns = 0;
    for scorer in memoised.iter_mut().chain(computed.iter_mut()) {
        if profile.plugins[scorer.plugin].normalizes() {
            scorer.column = Some(columns);
            columns += 1;
        }
    }
    let memoised_columns = memoised.iter().filter(|s| s.column.is_some()).count();
    times.record(Point::PreScore, started, Code::Success);
    let started = Instant::now();
    let Scratch { scores, column, totals, .. } = scratch;
    let n = feasible.len();
    totals.clear();
    totals.resize(n, 0);
    let per_node = memoised.len() + computed.len();
    if per_node == 0 {
        times.record(Point::Score, started, Code::Success);
        return Ok(());
    }
    let memo = memo.filter(|_| !memoised.is_empty());
    if let Some(memo) = memo {
        memo.score_for(memoised_set);
    }
    // At least one slot per node, so the parallel pass's chunks of `scores` line up
    // with its chunks of nodes even when no scorer normalizes.
    let kept_per_node = columns.max(1);
    scores.clear();
    scores.resize(n * kept_per_node, 0);
    let parallel = n * per_node >= MIN_PARALLEL_WORK && pool.current_num_threads() > 1;
    let chunk = if parallel { chunk_size(pool, n) } else { n };
    let score =
        |scorer: &ActiveScorer, node| profile.plugins[scorer.plugin].score(&scorer.state, query, snapshot, node);
    let work = |totals: &mut [i64], kept: &mut [i64], nodes: &[NodeIx]| {
        for ((&node, total), kept) in nodes.iter().zip(totals.iter_mut()).zip(kept.chunks_exact_mut(kept_per_node)) {
            let mut sum = 0;
            if let Some(memo) = memo {
                let entry = memo.scores(node, |entry| {
                    for scorer in &memoised {
                        let value = score(scorer, node);
                        match scorer.column {
                            Some(column) => entry[1 + column] = value,
                            None => entry[0] += value * scorer.weight,
                        }
                    }
                });
                sum = entry[0].load(Relaxed);
                for (kept, memoised) in kept[..memoised_columns].iter_mut().zip(&entry[1..]) {
                    *kept = memoised.load(Relaxed);
                }
            }
            for scorer in &computed {
                let value = score(scorer, node);
                match scorer.column {
                    Some(column) => kept[column] = value,
                    None => sum += value * scorer.weight,
                }
            }
            *total = sum;
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
    for scorer in memoised.iter().chain(&computed) {
        let Some(k) = scorer.column else { continue };
        let column = if columns == 1 {
            &mut scores[..n]
        } else {
            column.clear();
            column.extend(scores.iter().skip(k).step_by(columns));
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
        for scorer in memoised.iter().chain(&computed) {
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
