//! Memoised node-local results. HOT PATH.
//!
//! Most plugins judge a node by its own row alone (see `Plugin::node_local`), and most
//! pods come in classes that ask every node the same thing (the replicas of one
//! Deployment, a benchmark's identical pods). Between two pods of a class only the rows
//! the cycle or the watch touched have changed, so the node-local filter verdict and raw
//! scores of every other node can be read back instead of recomputed.
//!
//! A [`Memo`] holds one class's results per node row, each stamped with the row's
//! version (`NodeTable::versions`) and the memo's epoch: an entry is valid only while the
//! row is unchanged and the memo still serves the class it was written for. Switching a
//! memo to another class bumps its epoch, which invalidates every entry at once without
//! touching them. Entries are atomics written with relaxed stores so parallel filter
//! chunks, which always work on distinct rows, can fill them without a lock; a pass
//! reads only what it or an earlier (joined) pass wrote.

use crate::framework::{Code, Rejection};
use crate::query::PodQuery;
use crate::snapshot::NodeIx;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// How many classes each profile remembers: enough for a few Deployments scaling at
/// once without evicting each other on every pod.
const CLASSES_PER_PROFILE: usize = 4;
/// Row versions keep the low bits of a stamp, the memo's epoch the high ones.
const VERSION_BITS: u32 = 48;
const VERSION_MASK: u64 = (1 << VERSION_BITS) - 1;
const MAX_EPOCH: u64 = (1 << (64 - VERSION_BITS)) - 1;

/// A node-local filter verdict: the first node-local filter that rejected the node (its
/// index in the profile) and how, or `None` if all passed.
pub type LocalVerdict = Option<(u16, Rejection)>;

/// One class's memoised results.
pub struct Memo {
    /// A pod of the class: others belong if `same_node_inputs` says so.
    class: PodQuery,
    epoch: u64,
    last_used: u64,
    filter_stamps: Vec<AtomicU64>,
    verdicts: Vec<AtomicU64>,
    score_stamps: Vec<AtomicU64>,
    /// `rows × width` raw scores, one per node-local scorer of the profile.
    scores: Vec<AtomicI64>,
    width: usize,
}

impl Memo {
    fn new(class: PodQuery, width: usize) -> Memo {
        Memo {
            class,
            epoch: 1,
            last_used: 0,
            filter_stamps: Vec::new(),
            verdicts: Vec::new(),
            score_stamps: Vec::new(),
            scores: Vec::new(),
            width,
        }
    }

    /// Takes the memo over for another class: every entry becomes stale.
    fn reset(&mut self, class: PodQuery) {
        self.class = class;
        if self.epoch == MAX_EPOCH {
            // Old stamps could match again once epochs wrap: wipe them instead.
            self.filter_stamps.iter().chain(&self.score_stamps).for_each(|s| s.store(0, Relaxed));
            self.epoch = 0;
        }
        self.epoch += 1;
    }

    /// Grows the tables to cover `rows` node rows.
    fn cover(&mut self, rows: usize) {
        if self.filter_stamps.len() < rows {
            let grow = |v: &mut Vec<AtomicU64>, n| v.resize_with(n, || AtomicU64::new(0));
            grow(&mut self.filter_stamps, rows);
            grow(&mut self.verdicts, rows);
            grow(&mut self.score_stamps, rows);
            self.scores.resize_with(rows * self.width, || AtomicI64::new(0));
        }
    }

    #[inline]
    fn stamp(&self, version: u64) -> u64 {
        (self.epoch << VERSION_BITS) | (version & VERSION_MASK)
    }

    /// The node-local verdict for `node` at row version `version`, computed by `compute`
    /// unless memoised.
    #[inline]
    pub fn verdict(&self, node: NodeIx, version: u64, compute: impl FnOnce() -> LocalVerdict) -> LocalVerdict {
        let row = node as usize;
        let stamp = self.stamp(version);
        if self.filter_stamps[row].load(Relaxed) == stamp {
            return unpack(self.verdicts[row].load(Relaxed));
        }
        let verdict = compute();
        self.verdicts[row].store(pack(verdict), Relaxed);
        self.filter_stamps[row].store(stamp, Relaxed);
        verdict
    }

    /// Whether `node`'s raw node-local scores at `version` are memoised.
    #[inline]
    pub fn has_scores(&self, node: NodeIx, version: u64) -> bool {
        self.score_stamps[node as usize].load(Relaxed) == self.stamp(version)
    }

    #[inline]
    pub fn score(&self, node: NodeIx, slot: usize) -> i64 {
        self.scores[node as usize * self.width + slot].load(Relaxed)
    }

    #[inline]
    pub fn set_score(&self, node: NodeIx, slot: usize, score: i64) {
        self.scores[node as usize * self.width + slot].store(score, Relaxed);
    }

    /// Seals the scores written for `node` at `version` (after every `set_score`).
    #[inline]
    pub fn seal_scores(&self, node: NodeIx, version: u64) {
        self.score_stamps[node as usize].store(self.stamp(version), Relaxed);
    }
}

/// `1 | plugin << 8 | code << 24 | reason << 32`; 0 is "passed".
#[inline]
fn pack(verdict: LocalVerdict) -> u64 {
    match verdict {
        None => 0,
        Some((plugin, r)) => 1 | u64::from(plugin) << 8 | (r.code.index() as u64) << 24 | u64::from(r.reason) << 32,
    }
}

#[inline]
fn unpack(bits: u64) -> LocalVerdict {
    if bits == 0 {
        return None;
    }
    let plugin = (bits >> 8) as u16;
    Some((
        plugin,
        Rejection {
            code: Code::from_index(((bits >> 24) & 0xff) as usize).unwrap_or(Code::Error),
            reason: (bits >> 32) as u32,
        },
    ))
}

/// The memos of one profile, least recently used evicted first.
#[derive(Default)]
pub struct Memos {
    memos: Vec<Memo>,
    clock: u64,
}

impl Memos {
    /// The memo for `query`'s class, covering `rows` rows, with `width` score slots:
    /// found, or taken over from the least recently used class.
    pub fn for_query(&mut self, query: &PodQuery, rows: usize, width: usize) -> &Memo {
        self.clock += 1;
        let at = match self.memos.iter().position(|m| m.class.same_node_inputs(query)) {
            Some(at) => at,
            None if self.memos.len() < CLASSES_PER_PROFILE => {
                self.memos.push(Memo::new(query.clone(), width));
                self.memos.len() - 1
            }
            None => {
                let at = (0..self.memos.len()).min_by_key(|&i| self.memos[i].last_used).unwrap_or(0);
                self.memos[at].reset(query.clone());
                at
            }
        };
        let memo = &mut self.memos[at];
        memo.last_used = self.clock;
        memo.cover(rows);
        memo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_round_trip_through_their_packing() {
        for verdict in [
            None,
            Some((0, Rejection::unschedulable(0))),
            Some((7, Rejection::unresolvable(u32::MAX))),
            Some((u16::MAX - 2, Rejection { code: Code::Error, reason: 12345 })),
        ] {
            assert_eq!(unpack(pack(verdict)), verdict);
        }
    }

    #[test]
    fn stamps_tell_versions_and_epochs_apart() {
        let pod = keelson_engine::k8s_openapi::api::core::v1::Pod::default();
        let query = crate::query::compile(&pod, &mut crate::Snapshot::new(), &crate::query::DefaultSpread::Disabled);
        let mut memo = Memo::new(query.clone(), 2);
        memo.cover(4);
        let fail = Some((3, Rejection::unschedulable(2)));
        assert_eq!(memo.verdict(1, 10, || fail), fail);
        assert_eq!(memo.verdict(1, 10, || unreachable!("memoised")), fail);
        assert_eq!(memo.verdict(1, 11, || None), None, "a new row version recomputes");
        memo.set_score(2, 1, 42);
        memo.seal_scores(2, 5);
        assert!(memo.has_scores(2, 5) && !memo.has_scores(2, 6) && !memo.has_scores(3, 5));
        assert_eq!(memo.score(2, 1), 42);
        memo.reset(query.clone());
        assert!(!memo.has_scores(2, 5), "another class starts empty");
        assert_eq!(memo.verdict(1, 11, || fail), fail);
        memo.epoch = MAX_EPOCH;
        memo.reset(query);
        assert_eq!(memo.epoch, 1);
        assert_eq!(memo.verdict(1, 11, || None), None, "wrapped epochs do not revive old entries");
    }
}
