//! The filter pass. HOT PATH.
//!
//! PreFilter once, then Filter over the candidate nodes, in parallel chunks when there
//! is enough work, until enough feasible nodes are found. Rejections are compact codes,
//! rendered to text only when the pod fits nowhere.

use super::{chunk_size, prepared_code, Scratch, MIN_PARALLEL_WORK};
use crate::framework::{Code, PluginState, Prepared, Rejection, Status};
use crate::memo::{LocalVerdict, Memo};
use crate::profile::Profile;
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, Snapshot};
use crate::timing::{Point, PointTimes};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What one chunk of a filter pass saw.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ChunkStats {
    pub(super) passed: usize,
    pub(super) rejected: usize,
    pub(super) looked: usize,
}

/// A node's verdict in the filter pass: which plugin (`PASSED` if none) rejected it, how.
#[derive(Clone, Copy, Debug)]
pub(super) struct Verdict {
    pub(super) node: NodeIx,
    pub(super) plugin: u16,
    pub(super) rejection: Rejection,
}

pub(super) const PASSED: u16 = u16::MAX;
pub(super) const NOT_LIVE: u16 = u16::MAX - 1;
pub(super) const PASS: Rejection = Rejection { code: Code::Success, reason: 0 };

/// One filter that did not skip: its index in the profile, its state, and whether its
/// verdicts come from the memo.
pub(super) struct ActiveFilter {
    pub(super) plugin: usize,
    pub(super) state: PluginState,
    pub(super) memoised: bool,
}

/// The state of one cycle after PreFilter: the filters that did not skip, with their
/// states.
pub(super) struct Filtering<'a> {
    pub(super) profile: &'a Profile,
    pub(super) query: &'a PodQuery,
    pub(super) snapshot: &'a Snapshot,
    pub(super) active: Vec<ActiveFilter>,
    pub(super) memo: Option<&'a Memo>,
    /// Whether any active filter is not memoised.
    pub(super) unmemoised: bool,
}

impl Filtering<'_> {
    /// The node's verdict: the first active filter (in profile order) that rejects it.
    #[inline(always)]
    pub(super) fn verdict(&self, node: NodeIx) -> Verdict {
        let row = node as usize;
        if !self.snapshot.nodes.live[row] {
            return Verdict { node, plugin: NOT_LIVE, rejection: PASS };
        }
        let memoised = match self.memo {
            Some(memo) => memo.verdict(node, self.snapshot.nodes.versions[row], || self.memoised_verdict(node)),
            None => None,
        };
        if self.unmemoised {
            for filter in &self.active {
                if filter.memoised {
                    // The memoised verdict is the first memoised filter to reject, so the
                    // filters before it in this walk all passed.
                    match memoised {
                        Some((plugin, rejection)) if usize::from(plugin) == filter.plugin => {
                            return Verdict { node, plugin, rejection }
                        }
                        _ => continue,
                    }
                }
                let plugin = &self.profile.plugins[filter.plugin];
                if let Err(rejection) = plugin.filter(&filter.state, self.query, self.snapshot, node) {
                    return Verdict { node, plugin: filter.plugin as u16, rejection };
                }
            }
            return Verdict { node, plugin: PASSED, rejection: PASS };
        }
        match memoised {
            Some((plugin, rejection)) => Verdict { node, plugin, rejection },
            None => Verdict { node, plugin: PASSED, rejection: PASS },
        }
    }

    /// Times each active filter on `node`, for a sampled cycle's plugin metrics. Filters
    /// are pure, so calling them again changes nothing.
    pub(super) fn time_filters(&self, node: NodeIx, times: &mut PointTimes) {
        for filter in &self.active {
            let plugin = &self.profile.plugins[filter.plugin];
            let _verdict = times.plugin_call(
                filter.plugin,
                Point::Filter,
                || plugin.filter(&filter.state, self.query, self.snapshot, node),
                |verdict| verdict.map_or_else(|rejection| rejection.code, |()| Code::Success),
            );
        }
    }

    /// The verdict of the memoised filters alone, computed.
    fn memoised_verdict(&self, node: NodeIx) -> LocalVerdict {
        for filter in self.active.iter().filter(|f| f.memoised) {
            let plugin = &self.profile.plugins[filter.plugin];
            if let Err(rejection) = plugin.filter(&filter.state, self.query, self.snapshot, node) {
                return Some((filter.plugin as u16, rejection));
            }
        }
        None
    }
}

/// What PreFilter left to look at: the nodes plugins narrowed the pod to (kube's
/// `PreFilterResult`), and the nodes outside which some plugin's Filter fails anyway.
#[derive(Default)]
pub(super) struct Candidates {
    pub(super) narrowed: Option<Vec<NodeIx>>,
    pub(super) passable: Option<Vec<NodeIx>>,
}

/// Runs every filter plugin's PreFilter. Returns the active filters and the candidates
/// they left (see [`Candidates`]). Node-local filters read their verdicts from `memo`
/// when there is one.
pub(super) fn pre_filter<'a>(
    snapshot: &'a Snapshot,
    query: &'a PodQuery,
    profile: &'a Profile,
    memo: Option<&'a Memo>,
    times: &mut PointTimes,
) -> Result<(Filtering<'a>, Candidates), Status> {
    let mut active = Vec::with_capacity(profile.filters.len());
    let mut narrowed: Option<Vec<NodeIx>> = None;
    let mut passable: Option<Vec<NodeIx>> = None;
    for &plugin in &profile.filters {
        let prepared = times.plugin_call(
            plugin,
            Point::PreFilter,
            || profile.plugins[plugin].pre_filter(query, snapshot),
            prepared_code,
        );
        let Prepared { skip, state, nodes, candidates } = prepared?;
        if let Some(candidates) = candidates {
            // Both ascending: the intersection keeps the order.
            passable = Some(match passable {
                None => candidates,
                Some(previous) => previous.into_iter().filter(|n| candidates.binary_search(n).is_ok()).collect(),
            });
        }
        if let Some(nodes) = nodes {
            narrowed = Some(match narrowed {
                None => nodes,
                Some(previous) => previous.into_iter().filter(|n| nodes.contains(n)).collect(),
            });
        }
        if !skip {
            let memoised = memo.is_some() && profile.plugins[plugin].node_local();
            active.push(ActiveFilter { plugin, state, memoised });
        }
    }
    let unmemoised = active.iter().any(|f| !f.memoised);
    Ok((Filtering { profile, query, snapshot, active, memo, unmemoised }, Candidates { narrowed, passable }))
}

/// Filters the candidates `candidate(0..total)` in chunks until `to_find` feasible nodes
/// are found. Fills `scratch.feasible` (at most `to_find`, in candidate order) and, per
/// chunk, the rejections among the candidates it looked at (`scratch.verdicts`, described
/// by `scratch.chunk_stats`); returns the number of candidates looked at.
///
/// Chunks run in parallel only when there is enough work: waking a sleeping worker costs
/// a few microseconds, as much as filtering a few hundred nodes.
pub(super) fn filter_pass(
    pool: &rayon::ThreadPool,
    scratch: &mut Scratch,
    filtering: &Filtering<'_>,
    total: usize,
    to_find: usize,
    candidate: impl Fn(usize) -> NodeIx + Sync,
) -> usize {
    let parallel =
        to_find.min(total) * filtering.active.len().max(1) >= MIN_PARALLEL_WORK && pool.current_num_threads() > 1;
    let chunk = if parallel { chunk_size(pool, to_find.min(total)) } else { total.max(1) };
    let chunks = total.div_ceil(chunk);
    scratch.chunk = chunk;
    let Scratch { slots, verdicts, chunk_stats, feasible, .. } = scratch;
    // Only grown, never cleared: every slot read was written in this pass.
    if slots.len() < total {
        slots.resize(total, 0);
        verdicts.resize(total, Verdict { node: 0, plugin: NOT_LIVE, rejection: PASS });
    }
    chunk_stats.clear();
    chunk_stats.resize(chunks, ChunkStats::default());
    let found = AtomicUsize::new(0);
    let work = |index: usize, slots: &mut [NodeIx], verdicts: &mut [Verdict], stats: &mut ChunkStats| {
        let base = index * chunk;
        let (mut passed, mut rejected, mut looked) = (0, 0, 0);
        for k in 0..slots.len() {
            // Checking now and then (not per node) keeps the shared counter cool.
            if k % 16 == 0 && passed + found.load(Ordering::Relaxed) >= to_find {
                break;
            }
            let verdict = filtering.verdict(candidate(base + k));
            looked += 1;
            match verdict.plugin {
                PASSED => {
                    slots[passed] = verdict.node;
                    passed += 1;
                }
                NOT_LIVE => {}
                _ => {
                    verdicts[rejected] = verdict;
                    rejected += 1;
                }
            }
        }
        found.fetch_add(passed, Ordering::Relaxed);
        *stats = ChunkStats { passed, rejected, looked };
    };
    if chunks == 1 {
        work(0, &mut slots[..total], &mut verdicts[..total], &mut chunk_stats[0]);
    } else {
        pool.install(|| {
            slots[..total]
                .par_chunks_mut(chunk)
                .zip(verdicts[..total].par_chunks_mut(chunk))
                .zip(chunk_stats.par_iter_mut())
                .enumerate()
                .for_each(|(index, ((slots, verdicts), stats))| work(index, slots, verdicts, stats));
        });
    }
    feasible.clear();
    let mut looked_total = 0;
    for (index, &ChunkStats { passed, looked, .. }) in chunk_stats.iter().enumerate() {
        looked_total += looked;
        let room = to_find.saturating_sub(feasible.len()).min(passed);
        feasible.extend_from_slice(&slots[index * chunk..index * chunk + room]);
    }
    looked_total
}
