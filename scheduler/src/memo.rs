//! Memoised node-local results. HOT PATH.
//!
//! Most plugins judge a node by its own row alone (see `Plugin::node_local`), and most
//! pods come in classes that ask every node the same thing (the replicas of one
//! Deployment, a benchmark's identical pods). Between two pods of a class only the rows
//! the cycle or the watch touched have changed, so the node-local filter verdict and raw
//! scores of every other node can be read back instead of recomputed.
//!
//! A [`Memo`] holds one class's results per node row, and bitmaps saying which rows'
//! results are known. Before each cycle it replays the node table's change log
//! (`NodeTable::changed_since`) and forgets the rows changed since it last looked, so a
//! known result is always current: the hot path tests a bit instead of comparing row
//! versions, and the filter pass can take a word of 64 known-to-pass rows at once.
//!
//! Entries and bitmap words are atomics written with relaxed operations, so parallel
//! filter or score chunks, which always work on distinct rows, can fill them without a
//! lock; a pass reads only what it or an earlier (joined) pass wrote.

use crate::framework::{Code, Rejection};
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, NodeTable};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// How many classes each profile remembers: enough for a few Deployments scaling at
/// once without evicting each other on every pod.
const CLASSES_PER_PROFILE: usize = 4;

/// A node-local filter verdict: the first node-local filter that rejected the node (its
/// index in the profile) and how, or `None` if all passed.
pub type LocalVerdict = Option<(u16, Rejection)>;

/// One bit per node row.
#[derive(Default)]
pub struct RowBits(Vec<AtomicU64>);

impl RowBits {
    fn cover(&mut self, rows: usize) {
        let words = rows.div_ceil(64);
        if self.0.len() < words {
            self.0.resize_with(words, || AtomicU64::new(0));
        }
    }

    #[inline]
    pub fn get(&self, row: usize) -> bool {
        self.word(row / 64) >> (row % 64) & 1 == 1
    }

    /// The bits of rows `64 * index ..` (bit `i` is row `64 * index + i`).
    #[inline]
    pub fn word(&self, index: usize) -> u64 {
        self.0[index].load(Relaxed)
    }

    #[inline]
    fn set(&self, row: usize) {
        self.0[row / 64].fetch_or(1 << (row % 64), Relaxed);
    }

    #[inline]
    fn clear(&self, row: usize) {
        // Only sync clears, with no pass running: a plain read-modify-write is enough.
        let word = &self.0[row / 64];
        word.store(word.load(Relaxed) & !(1 << (row % 64)), Relaxed);
    }

    fn clear_all(&mut self) {
        self.0.iter_mut().for_each(|w| *w.get_mut() = 0);
    }
}

/// One class's memoised results.
pub struct Memo {
    /// A pod of the class: others belong if `same_node_inputs` says so.
    class: PodQuery,
    last_used: u64,
    /// The node table's changes replayed so far (`NodeTable::changes_made`).
    synced: u64,
    /// Rows whose node-local verdict is known, and of those, the rows that passed.
    verdict_known: RowBits,
    passed: RowBits,
    /// Packed rejections (see `pack`), read for known rows that did not pass.
    rejections: Vec<AtomicU64>,
    /// Rows whose node-local scores are known.
    scores_known: RowBits,
    /// `rows × width` scores: per row, the weighted sum of the memoised scorers that
    /// keep their raw scores, then the raw scores of those that normalize.
    scores: Vec<AtomicI64>,
    width: usize,
    /// The memoised scorers the scores were computed for (a bit per profile scorer):
    /// scores computed for another set are forgotten.
    scorers: AtomicU64,
}

impl Memo {
    fn new(class: PodQuery, width: usize, table: &NodeTable) -> Memo {
        assert!(width <= MAX_WIDTH, "{width} memoised scores per row; at most {MAX_WIDTH}");
        let mut memo = Memo {
            class,
            last_used: 0,
            synced: table.changes_made(),
            verdict_known: RowBits::default(),
            passed: RowBits::default(),
            rejections: Vec::new(),
            scores_known: RowBits::default(),
            scores: Vec::new(),
            width,
            scorers: AtomicU64::new(0),
        };
        memo.cover(table.rows());
        memo
    }

    /// Takes the memo over for another class: nothing is known, every row covered.
    fn reset(&mut self, class: PodQuery, table: &NodeTable) {
        self.class = class;
        self.forget_all(table);
        self.cover(table.rows());
    }

    fn forget_all(&mut self, table: &NodeTable) {
        self.verdict_known.clear_all();
        self.passed.clear_all();
        self.scores_known.clear_all();
        self.synced = table.changes_made();
    }

    /// Forgets the rows changed since the memo last looked, and grows to cover every row.
    fn sync(&mut self, table: &NodeTable) {
        self.cover(table.rows());
        match table.changed_since(self.synced) {
            Some(changed) => {
                for &row in changed {
                    let row = row as usize;
                    self.verdict_known.clear(row);
                    self.passed.clear(row);
                    self.scores_known.clear(row);
                }
                self.synced = table.changes_made();
            }
            None => self.forget_all(table),
        }
    }

    fn cover(&mut self, rows: usize) {
        self.verdict_known.cover(rows);
        self.passed.cover(rows);
        self.scores_known.cover(rows);
        if self.rejections.len() < rows {
            self.rejections.resize_with(rows, || AtomicU64::new(0));
            self.scores.resize_with(rows * self.width, || AtomicI64::new(0));
        }
    }

    /// The rows known to pass every node-local filter.
    #[inline]
    pub fn passed(&self) -> &RowBits {
        &self.passed
    }

    /// The node-local verdict for `node`, computed by `compute` unless known.
    #[inline]
    pub fn verdict(&self, node: NodeIx, compute: impl FnOnce() -> LocalVerdict) -> LocalVerdict {
        let row = node as usize;
        if self.verdict_known.get(row) {
            return if self.passed.get(row) { None } else { unpack(self.rejections[row].load(Relaxed)) };
        }
        let verdict = compute();
        match verdict {
            None => self.passed.set(row),
            Some(_) => self.rejections[row].store(pack(verdict), Relaxed),
        }
        self.verdict_known.set(row);
        verdict
    }

    /// Takes the memoised scores as computed for the scorers in `scorers` (a bit per
    /// profile scorer); if they were computed for others, forgets them. Call before a
    /// pass, not during one.
    pub fn score_for(&self, scorers: u64) {
        if self.scorers.swap(scorers, Relaxed) != scorers {
            self.scores_known.0.iter().for_each(|w| w.store(0, Relaxed));
        }
    }

    /// `node`'s memoised scores (`width` of them, see [`Memo::scores`]), computed by
    /// `compute` into the slice unless known.
    #[inline]
    pub fn scores(&self, node: NodeIx, compute: impl FnOnce(&mut [i64])) -> &[AtomicI64] {
        let row = node as usize;
        let entry = &self.scores[row * self.width..(row + 1) * self.width];
        if !self.scores_known.get(row) {
            let mut computed = [0i64; MAX_WIDTH];
            compute(&mut computed[..self.width]);
            for (slot, value) in entry.iter().zip(computed) {
                slot.store(value, Relaxed);
            }
            self.scores_known.set(row);
        }
        entry
    }
}

/// At most this many memoised scores per row: the weighted sum and the raw scores of
/// the node-local scorers that normalize (few: NodeAffinity and TaintToleration).
pub const MAX_WIDTH: usize = 8;

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
    /// The memo for `query`'s class, current with `table` and covering its rows, with
    /// `width` scores per row: found, or taken over from the least recently used class.
    pub fn for_query(&mut self, query: &PodQuery, table: &NodeTable, width: usize) -> &Memo {
        self.clock += 1;
        let at = match self.memos.iter().position(|m| m.class.same_node_inputs(query)) {
            Some(at) => {
                self.memos[at].sync(table);
                at
            }
            None if self.memos.len() < CLASSES_PER_PROFILE => {
                self.memos.push(Memo::new(query.clone(), width, table));
                self.memos.len() - 1
            }
            None => {
                let at = (0..self.memos.len()).min_by_key(|&i| self.memos[i].last_used).unwrap_or(0);
                self.memos[at].reset(query.clone(), table);
                at
            }
        };
        let memo = &mut self.memos[at];
        memo.last_used = self.clock;
        memo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::MIN_CHANGES_KEPT;

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

    fn node(name: &str, zone: &str) -> keelson_engine::k8s_openapi::api::core::v1::Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"zone": zone}},
            "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"}}
        }))
        .unwrap()
    }

    #[test]
    fn results_are_forgotten_for_rows_that_changed_and_kept_for_the_rest() {
        let mut snapshot = crate::Snapshot::new();
        for name in ["a", "b", "c"] {
            snapshot.upsert_node(&node(name, "z1"));
        }
        let pod = keelson_engine::k8s_openapi::api::core::v1::Pod::default();
        let query = crate::query::compile(&pod, &mut snapshot, &crate::query::DefaultSpread::Disabled);
        let mut memos = Memos::default();
        let fail = Some((3, Rejection::unschedulable(2)));
        let memo = memos.for_query(&query, &snapshot.nodes, 2);
        assert_eq!(memo.verdict(1, || fail), fail);
        assert_eq!(memo.verdict(1, || unreachable!("known")), fail);
        assert_eq!(memo.verdict(0, || None), None);
        assert!(memo.passed().get(0) && !memo.passed().get(1) && !memo.passed().get(2));
        memo.score_for(0b11);
        let entry = memo.scores(2, |e| e.copy_from_slice(&[42, 7]));
        assert_eq!((entry[0].load(Relaxed), entry[1].load(Relaxed)), (42, 7));

        snapshot.upsert_node(&node("b", "z2"));
        let memo = memos.for_query(&query, &snapshot.nodes, 2);
        assert_eq!(memo.verdict(1, || None), None, "a changed row is computed again");
        assert_eq!(memo.verdict(0, || unreachable!("unchanged")), None);
        memo.score_for(0b11);
        assert_eq!(memo.scores(2, |_| unreachable!("unchanged"))[0].load(Relaxed), 42);
        memo.score_for(0b01);
        assert_eq!(memo.scores(2, |e| e[0] = 5)[0].load(Relaxed), 5, "other scorers, other scores");

        // More changes than the table remembers: everything is computed again.
        for _ in 0..MIN_CHANGES_KEPT {
            snapshot.upsert_node(&node("c", "z1"));
            snapshot.upsert_node(&node("c", "z2"));
        }
        assert!(snapshot.nodes.changed_since(0).is_none());
        let memo = memos.for_query(&query, &snapshot.nodes, 2);
        assert_eq!(memo.verdict(0, || fail), fail, "forgotten");
        assert!(!memo.passed().get(0));
    }
}
