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
use std::ops::Range;
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
            Some(memo) => memo.verdict(node, || self.memoised_verdict(node)),
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

/// The nodes a filter pass looks at, in order: the ascending `list` (every row when
/// `None`) from position `first` to its end, then from its start up to `first`.
#[derive(Clone, Copy)]
pub(super) struct Scan<'a> {
    list: Option<&'a [NodeIx]>,
    len: usize,
    first: usize,
}

impl<'a> Scan<'a> {
    /// Every row, from `start`.
    pub(super) fn rows(rows: usize, start: usize) -> Scan<'a> {
        Scan { list: None, len: rows, first: start }
    }

    /// The ascending `list`, from its position `first`.
    pub(super) fn list(list: &'a [NodeIx], first: usize) -> Scan<'a> {
        Scan { list: Some(list), len: list.len(), first }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The node looked at `k`-th.
    #[inline]
    pub(super) fn at(&self, k: usize) -> NodeIx {
        let at = self.first + k;
        let at = if at >= self.len { at - self.len } else { at };
        match self.list {
            Some(list) => list[at],
            None => at as NodeIx,
        }
    }

    /// Where in the list the nodes looked at `from..to` are: at most two ascending
    /// ranges, in the order they are looked at.
    fn pieces(&self, from: usize, to: usize) -> [Range<usize>; 2] {
        let (from, to) = (self.first + from, self.first + to);
        if to <= self.len {
            [from..to, 0..0]
        } else if from >= self.len {
            [from - self.len..to - self.len, 0..0]
        } else {
            [from..self.len, 0..to - self.len]
        }
    }
}

/// One chunk's walk through its nodes: the nodes that passed (in `slots`, in the
/// order looked at) and the rejections (in `verdicts`). It stops once the feasible nodes
/// it and the other chunks found reach the number wanted.
struct ChunkWalk<'w> {
    filtering: &'w Filtering<'w>,
    slots: &'w mut [NodeIx],
    verdicts: &'w mut [Verdict],
    /// Feasible nodes found by chunks that finished, and the number wanted in all.
    found: &'w AtomicUsize,
    to_find: usize,
    /// `to_find` less what other chunks had found when last read.
    wanted: usize,
    passed: usize,
    rejected: usize,
    looked: usize,
}

impl ChunkWalk<'_> {
    /// Reads what other chunks found; whether that is enough to stop.
    #[inline]
    fn enough(&mut self) -> bool {
        self.wanted = self.to_find.saturating_sub(self.found.load(Ordering::Relaxed));
        self.passed >= self.wanted
    }

    /// Takes a node's verdict; whether to stop.
    #[inline]
    fn take(&mut self, verdict: Verdict) -> bool {
        self.looked += 1;
        match verdict.plugin {
            PASSED => {
                self.slots[self.passed] = verdict.node;
                self.passed += 1;
                return self.passed >= self.wanted;
            }
            NOT_LIVE => {}
            _ => {
                self.verdicts[self.rejected] = verdict;
                self.rejected += 1;
            }
        }
        false
    }

    /// Looks at `nodes` one by one; whether to stop.
    fn each(&mut self, nodes: impl Iterator<Item = NodeIx>) -> bool {
        for node in nodes {
            if self.take(self.filtering.verdict(node)) {
                return true;
            }
            // Now and then, not per node, so the shared counter stays cool.
            if self.looked.is_multiple_of(64) && self.enough() {
                return true;
            }
        }
        false
    }

    /// Looks at rows `rows`, taking each word of 64 rows the memo knows to pass whole
    /// (the common case: a class of pods on a cluster with room) without looking at the
    /// rows one by one. Only when every active filter is memoised.
    fn rows(&mut self, memo: &Memo, rows: Range<usize>) -> bool {
        let passed_rows = memo.passed();
        let mut row = rows.start;
        while row < rows.end {
            let word = row / 64;
            let end = (word * 64 + 64).min(rows.end);
            let span = end - row;
            let mask = (u64::MAX >> (64 - span)) << (row % 64);
            let passing = passed_rows.word(word) & mask;
            if passing == mask {
                let take = span.min(self.wanted - self.passed);
                for (slot, row) in self.slots[self.passed..self.passed + take].iter_mut().zip(row..) {
                    *slot = row as NodeIx;
                }
                self.passed += take;
                self.looked += take;
                if self.passed >= self.wanted {
                    return true;
                }
            } else {
                for row in row..end {
                    let verdict = if passing >> (row % 64) & 1 == 1 {
                        Verdict { node: row as NodeIx, plugin: PASSED, rejection: PASS }
                    } else {
                        self.filtering.verdict(row as NodeIx)
                    };
                    if self.take(verdict) {
                        return true;
                    }
                }
            }
            row = end;
            if self.enough() {
                return true;
            }
        }
        false
    }
}

/// Filters the nodes of `scan` in chunks until `to_find` feasible nodes are found: a
/// chunk stops right after the node that makes the feasible nodes found by it and by
/// the chunks that finished reach `to_find`. Fills `scratch.feasible` (at most
/// `to_find`, in scan order) and, per chunk, the rejections among the nodes it looked at
/// (`scratch.verdicts`, described by `scratch.chunk_stats`); returns the number of nodes
/// looked at.
///
/// Chunks run in parallel only when there is enough work: waking a sleeping worker costs
/// a few microseconds, as much as filtering a few hundred nodes.
pub(super) fn filter_pass(
    pool: &rayon::ThreadPool,
    scratch: &mut Scratch,
    filtering: &Filtering<'_>,
    scan: Scan<'_>,
    to_find: usize,
) -> usize {
    let total = scan.len();
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
    // Words of rows at a time when every verdict can come from the memo.
    let memo = filtering.memo.filter(|_| scan.list.is_none() && !filtering.unmemoised);
    let work = |index: usize, slots: &mut [NodeIx], verdicts: &mut [Verdict], stats: &mut ChunkStats| {
        let from = index * chunk;
        let to = from + slots.len();
        let mut walk = ChunkWalk {
            filtering,
            slots,
            verdicts,
            found: &found,
            to_find,
            wanted: 0,
            passed: 0,
            rejected: 0,
            looked: 0,
        };
        if !walk.enough() {
            for piece in scan.pieces(from, to) {
                let stop = match (scan.list, memo) {
                    (Some(list), _) => walk.each(list[piece].iter().copied()),
                    (None, Some(memo)) => walk.rows(memo, piece),
                    (None, None) => walk.each(piece.map(|row| row as NodeIx)),
                };
                if stop {
                    break;
                }
            }
        }
        let ChunkWalk { passed, rejected, looked, .. } = walk;
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
