//! The scheduling cycle. HOT PATH.
//!
//! One pod at a time, sequentially (the cycle owns the snapshot): compile the pod, run
//! PreFilter once, Filter in parallel over node chunks until enough feasible nodes are
//! found, PreScore once, Score in parallel over the feasible nodes, NormalizeScore, pick
//! the best (ties broken at random), then assume the pod on that node so the next cycle
//! sees it. Binding happens elsewhere (the runner), asynchronously.
//!
//! Per node there is no allocation, lock or string comparison: buffers are reused across
//! cycles, plugins read integer columns, and rejections are compact codes turned into
//! text only when the pod cannot be placed. Node-local plugins' verdicts and raw scores
//! are memoised per node for pods that ask nodes the same (`memo`), so a class of pods
//! pays for them once per node change rather than once per pod.

mod filter;
mod score;

use crate::framework::{Code, Diagnosis, Nomination, Prepared, Status};
use crate::memo::{Memo, Memos};
use crate::profile::Profile;
use crate::query::{compile, PodQuery};
use crate::snapshot::{NodeIx, Snapshot};
use crate::timing::{Point, PointTimes, PLUGIN_SAMPLE_EVERY};
use filter::{filter_pass, pre_filter, ChunkStats, Scan, Verdict};
use keelson_engine::k8s_openapi::api::core::v1::Pod;
use score::{memo_width, score_pass, ScoreInputs};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Below this many nodes kube-scheduler checks them all.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;
/// Work per parallel task is at least this many nodes: smaller chunks cost more in task
/// handoff than they save.
const MIN_CHUNK: usize = 32;
/// Node × plugin evaluations below which a pass runs on the calling thread. Measured on
/// the 2-core bench machine (`cargo bench --bench scheduler`): at 5,000 nodes (500 to
/// find, 3 active filters) waking the second worker cost more than it saved.
const MIN_PARALLEL_WORK: usize = 4096;

/// kube-scheduler's `numFeasibleNodesToFind`: with `percentage` 0 the adaptive default
/// (50% minus 1% per 125 nodes, at least 5%), and never fewer than 100 nodes.
pub fn feasible_nodes_to_find(percentage: u32, nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return nodes;
    }
    let mut percentage = percentage as usize;
    if percentage == 0 {
        percentage = 50usize.saturating_sub(nodes / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE);
    }
    (nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// The scheduler's decision for one pod.
#[derive(Clone, Debug)]
pub struct Decision {
    pub pod_key: String,
    pub node: String,
    pub node_ix: NodeIx,
    /// Nodes the filters looked at, and how many of them passed.
    pub evaluated_nodes: usize,
    pub feasible_nodes: usize,
    /// Set for sampled decisions when auditing placement quality.
    pub audit: Option<AuditSample>,
}

/// Placement quality of one decision: the chosen node's total score against the best
/// any feasible node would have had, both scored over all feasible nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AuditSample {
    pub chosen_score: i64,
    pub best_score: i64,
    pub feasible_nodes: usize,
}

impl AuditSample {
    /// `chosen / best`, 1.0 when the choice was as good as any.
    pub fn quality(&self) -> f64 {
        if self.best_score <= 0 {
            1.0
        } else {
            self.chosen_score as f64 / self.best_score as f64
        }
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub code: Code,
    /// kube-scheduler's FailedScheduling text: "0/5 nodes are available: ...".
    pub message: String,
    /// From PostFilter: where the pod may go once victims are evicted.
    pub nomination: Option<(String, Vec<String>)>,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Scheduled(Decision),
    Unschedulable(Failure),
    /// The pod has scheduling gates; it waits until they are removed.
    Gated,
    /// No profile serves the pod's `schedulerName`.
    NoProfile,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CycleStats {
    pub scheduled: u64,
    pub unschedulable: u64,
    pub audited: u64,
    pub quality_sum: f64,
}

/// Buffers reused across cycles so a cycle allocates per pod, never per node.
#[derive(Default)]
struct Scratch {
    /// The chunk length of the last filter pass (to find each chunk's rejections).
    chunk: usize,
    slots: Vec<NodeIx>,
    /// Per chunk, from the chunk's start: the rejections it saw (nodes that passed or
    /// are gone are not recorded).
    verdicts: Vec<Verdict>,
    chunk_stats: Vec<ChunkStats>,
    feasible: Vec<NodeIx>,
    scores: Vec<i64>,
    column: Vec<i64>,
    totals: Vec<i64>,
}

impl Scratch {
    /// After a filter pass: the first feasible node, else the first rejected one.
    fn sample_node(&self) -> Option<NodeIx> {
        self.feasible.first().copied().or_else(|| {
            let chunk = self.chunk_stats.iter().position(|s| s.rejected > 0)?;
            Some(self.verdicts[chunk * self.chunk].node)
        })
    }
}

pub struct Scheduler {
    pub snapshot: Snapshot,
    profiles: Vec<Arc<Profile>>,
    pool: Arc<rayon::ThreadPool>,
    /// 0: adaptive.
    percentage_of_nodes_to_score: u32,
    /// Audit one decision in this many (0: never).
    audit_every: u64,
    next_start: usize,
    rng: u64,
    scratch: Scratch,
    /// Per profile, memoised node-local results; `None` turns memoisation off.
    memos: Option<Vec<Memos>>,
    pub stats: CycleStats,
    /// The extension points the last `schedule` ran, timed (and, in sampled cycles, its
    /// plugin calls).
    pub last_points: PointTimes,
    /// Cycles run, and one in how many times its plugin calls (0: none).
    cycles: u64,
    plugin_sample_every: u64,
}

impl Scheduler {
    /// A scheduler with these profiles and `parallelism` worker threads.
    pub fn new(profiles: Vec<Profile>, parallelism: usize) -> Scheduler {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(parallelism.max(1))
            .thread_name(|i| format!("sched-{i}"))
            .build()
            .expect("a thread pool");
        let memos = Some(profiles.iter().map(|_| Memos::default()).collect());
        Scheduler {
            snapshot: Snapshot::new(),
            profiles: profiles.into_iter().map(Arc::new).collect(),
            pool: Arc::new(pool),
            percentage_of_nodes_to_score: 0,
            audit_every: 0,
            next_start: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            scratch: Scratch::default(),
            memos,
            stats: CycleStats::default(),
            last_points: PointTimes::default(),
            cycles: 0,
            plugin_sample_every: PLUGIN_SAMPLE_EVERY,
        }
    }

    /// Memoisation of node-local results is on by default; off, every node is evaluated
    /// from scratch for every pod (the benches compare the two).
    pub fn set_memoise(&mut self, on: bool) {
        self.memos = on.then(|| self.profiles.iter().map(|_| Memos::default()).collect());
    }

    /// 0 (the default) is adaptive.
    pub fn set_percentage_of_nodes_to_score(&mut self, percentage: u32) {
        self.percentage_of_nodes_to_score = percentage.min(100);
    }

    /// Times the plugin calls of one cycle in `every` (0 turns it off); the first cycle is
    /// always sampled.
    pub fn set_plugin_sample_every(&mut self, every: u64) {
        self.plugin_sample_every = every;
    }

    /// Audits placement quality on one decision in `every` (0 turns it off).
    pub fn set_audit_every(&mut self, every: u64) {
        self.audit_every = every;
    }

    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.iter().map(|p| &**p)
    }

    pub fn serves(&self, scheduler_name: &str) -> bool {
        self.profile_index(scheduler_name).is_some()
    }

    /// The position among [`Scheduler::profiles`] of the profile `scheduler_name`.
    pub fn profile_index(&self, scheduler_name: &str) -> Option<usize> {
        self.profiles.iter().position(|p| p.scheduler_name == scheduler_name)
    }

    /// Runs `f` on the scheduler's thread pool, so the parallel sections inside each cycle
    /// start without crossing threads. Call `schedule` in a loop inside it.
    pub fn in_pool<R: Send>(&mut self, f: impl FnOnce(&mut Scheduler) -> R + Send) -> R {
        let pool = Arc::clone(&self.pool);
        pool.install(|| f(self))
    }

    /// Takes back a nomination the pod carries (`status.nominatedNodeName`) that the
    /// snapshot does not hold: after a restart, room a preemption made is held again
    /// for its preemptor, as kube-scheduler's nominator does when it re-lists pods.
    /// Returns whether a nomination was restored.
    pub fn restore_nomination(&mut self, pod: &Pod) -> bool {
        let nominated = pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty());
        let node = nominated.and_then(|name| self.snapshot.nodes.find(name));
        let Some(node) = node.filter(|&n| self.snapshot.nodes.live[n as usize]) else { return false };
        let Some(profile_ix) = self.profile_index(crate::profile::scheduler_name(pod)) else { return false };
        let query = compile(pod, &mut self.snapshot, &self.profiles[profile_ix].default_spread);
        if self.snapshot.nomination(query.key()).is_some() {
            return false;
        }
        self.snapshot.nominate(&query.record, node);
        true
    }

    /// Schedules one pod and, on success, assumes it on the chosen node.
    pub fn schedule(&mut self, pod: &Pod, now_ms: u64) -> Outcome {
        let sampled = self.plugin_sample_every > 0 && self.cycles.is_multiple_of(self.plugin_sample_every);
        self.cycles += 1;
        self.last_points.start(sampled);
        let name = crate::profile::scheduler_name(pod);
        let Some(profile_ix) = self.profile_index(name) else {
            return Outcome::NoProfile;
        };
        let query = compile(pod, &mut self.snapshot, &self.profiles[profile_ix].default_spread);
        if query.scheduling_gates > 0 {
            return Outcome::Gated;
        }
        self.schedule_query(&query, profile_ix, now_ms)
    }

    fn schedule_query(&mut self, query: &PodQuery, profile_ix: usize, now_ms: u64) -> Outcome {
        let profile = Arc::clone(&self.profiles[profile_ix]);
        let percentage = profile.percentage_of_nodes_to_score.unwrap_or(self.percentage_of_nodes_to_score);
        // A pod nominated after preempting tries its node first and takes it if it fits
        // (kube's evaluateNominatedNode). Its own nomination is invisible to it alone, so
        // the memo, shared with pods that do see it, is not used for it.
        let nominated = self.snapshot.nomination(query.key());
        if query.record.affinity.is_some() || !query.spread.is_empty() {
            self.snapshot.track_selections(query);
        }
        let on_nominated = nominated.filter(|&node| {
            self.snapshot.nodes.live[node as usize] && crate::preemption::fits(query, &profile, &self.snapshot, node)
        });
        let found = match on_nominated {
            Some(node) => Ok((node, 1, 1)),
            None => self.find_node(query, profile_ix, &profile, percentage, nominated.is_none()),
        };
        let (node, evaluated, feasible) = match found {
            Ok(found) => found,
            Err(failure) => {
                self.stats.unschedulable += 1;
                return Outcome::Unschedulable(failure);
            }
        };
        let audit = if self.audit_due() { self.audit(query, &profile, node) } else { None };
        if let Err(status) = reserve_and_permit(&profile, query, node, &mut self.last_points) {
            self.stats.unschedulable += 1;
            return Outcome::Unschedulable(Failure {
                code: status.code,
                message: status.to_string(),
                nomination: None,
            });
        }
        self.snapshot.assume(query.record.clone(), node, now_ms);
        self.stats.scheduled += 1;
        Outcome::Scheduled(Decision {
            pod_key: query.key().to_owned(),
            node: self.snapshot.nodes.names[node as usize].to_string(),
            node_ix: node,
            evaluated_nodes: evaluated,
            feasible_nodes: feasible,
            audit,
        })
    }

    fn audit_due(&self) -> bool {
        self.audit_every > 0 && self.stats.scheduled.is_multiple_of(self.audit_every)
    }

    /// Scores every feasible node and compares the chosen one with the best.
    fn audit(&mut self, query: &PodQuery, profile: &Profile, chosen: NodeIx) -> Option<AuditSample> {
        let mut untimed = PointTimes::default();
        let (filtering, _) = pre_filter(&self.snapshot, query, profile, None, &mut untimed).ok()?;
        let rows = self.snapshot.nodes.rows();
        filter_pass(&self.pool, &mut self.scratch, &filtering, Scan::rows(rows, 0), rows);
        drop(filtering);
        let feasible = std::mem::take(&mut self.scratch.feasible);
        let inputs = ScoreInputs { snapshot: &self.snapshot, query, profile, memo: None };
        let scored = score_pass(&self.pool, &mut self.scratch, inputs, &feasible, &mut untimed);
        let totals = &self.scratch.totals;
        let best = totals.iter().copied().max();
        let chosen_score = feasible.iter().position(|&n| n == chosen).map(|i| totals[i]);
        self.scratch.feasible = feasible;
        scored.ok()?;
        let sample =
            AuditSample { chosen_score: chosen_score?, best_score: best?, feasible_nodes: self.scratch.totals.len() };
        self.stats.audited += 1;
        self.stats.quality_sum += sample.quality();
        Some(sample)
    }
}

/// The status label of a PreFilter or PreScore call.
fn prepared_code(prepared: &Result<Prepared, Status>) -> Code {
    match prepared {
        Ok(Prepared { skip: true, .. }) => Code::Skip,
        Ok(_) => Code::Success,
        Err(status) => status.code,
    }
}

fn chunk_size(pool: &rayon::ThreadPool, work: usize) -> usize {
    (work / (pool.current_num_threads() * 2).max(1)).max(MIN_CHUNK)
}

/// The index of the highest total; ties broken uniformly at random, as kube-scheduler
/// does, so equal nodes share the load. Two passes and one random number rather than
/// kube's reservoir sampling (a random number per tie): the same distribution, without a
/// division per tied node, which matters when hundreds of identical nodes tie.
fn select(totals: &[i64], rng: &mut u64) -> usize {
    let Some(&best) = totals.iter().max() else { return 0 };
    let ties = totals.iter().filter(|&&t| t == best).count() as u64;
    // Lemire's multiply-shift maps a 64-bit random number onto 0..ties.
    let pick = ((u128::from(next_random(rng)) * u128::from(ties)) >> 64) as usize;
    totals.iter().enumerate().filter(|&(_, &t)| t == best).nth(pick).map_or(0, |(i, _)| i)
}

fn next_random(state: &mut u64) -> u64 {
    // xorshift64*: plenty for tie-breaking, no dependency, no lock.
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn reserve_and_permit(profile: &Profile, query: &PodQuery, node: NodeIx, times: &mut PointTimes) -> Result<(), Status> {
    let started = Instant::now();
    for (i, plugin) in profile.plugins.iter().enumerate() {
        if let Err(status) = plugin.reserve(query, node) {
            for earlier in profile.plugins[..=i].iter().rev() {
                earlier.unreserve(query, node);
            }
            times.record(Point::Reserve, started, status.code);
            return Err(status);
        }
    }
    times.record(Point::Reserve, started, Code::Success);
    let started = Instant::now();
    for plugin in &profile.plugins {
        if let Err(status) = plugin.permit(query, node) {
            for plugin in profile.plugins.iter().rev() {
                plugin.unreserve(query, node);
            }
            times.record(Point::Permit, started, status.code);
            return Err(status);
        }
    }
    times.record(Point::Permit, started, Code::Success);
    Ok(())
}

/// kube-scheduler's FitError text: "0/N nodes are available: <count> <reason>, ...".
fn fit_message(
    nodes: usize,
    pre_filter: Option<&Status>,
    histogram: &BTreeMap<String, usize>,
    post_filter: &str,
) -> String {
    let mut message = format!("0/{nodes} nodes are available:");
    match pre_filter {
        Some(status) => message.push_str(&format!(" {status}.")),
        None if !histogram.is_empty() => {
            let mut reasons: Vec<String> =
                histogram.iter().map(|(reason, count)| format!("{count} {reason}")).collect();
            reasons.sort();
            message.push_str(&format!(" {}.", reasons.join(", ")));
        }
        None => {}
    }
    if !post_filter.is_empty() {
        message.push_str(&format!(" {post_filter}"));
    }
    message
}

impl Scheduler {
    /// Filter and score; the chosen node, nodes looked at, and feasible nodes found.
    fn find_node(
        &mut self,
        query: &PodQuery,
        profile_ix: usize,
        profile: &Profile,
        percentage: u32,
        memoise: bool,
    ) -> Result<(NodeIx, usize, usize), Failure> {
        let live = self.snapshot.nodes.live_count();
        if live == 0 {
            return Err(Failure {
                code: Code::Unschedulable,
                message: "no nodes available to schedule pods".into(),
                nomination: None,
            });
        }
        // Taken out for the cycle so the memo can be read while `self` is borrowed.
        let mut memos = self.memos.as_mut().filter(|_| memoise).map(|m| std::mem::take(&mut m[profile_ix]));
        let memo = memos.as_mut().map(|m| m.for_query(query, &self.snapshot.nodes, memo_width(profile)));
        let found = self.filter_and_score(query, profile, percentage, live, memo);
        if let (Some(all), Some(memos)) = (self.memos.as_mut(), memos) {
            all[profile_ix] = memos;
        }
        match found? {
            Some(found) => Ok(found),
            None => Err(self.diagnose(query, profile, live)),
        }
    }

    /// The filter and score passes; `None` when no node passed the filters (the verdicts
    /// are left in `scratch` for `diagnose`).
    fn filter_and_score(
        &mut self,
        query: &PodQuery,
        profile: &Profile,
        percentage: u32,
        live: usize,
        memo: Option<&Memo>,
    ) -> Result<Option<(NodeIx, usize, usize)>, Failure> {
        let rows = self.snapshot.nodes.rows();
        let started = Instant::now();
        let prefiltered = pre_filter(&self.snapshot, query, profile, memo, &mut self.last_points);
        let code = prefiltered.as_ref().map_or_else(|status| status.code, |_| Code::Success);
        self.last_points.record(Point::PreFilter, started, code);
        let started = Instant::now();
        let (filtering, candidates) = match prefiltered {
            Ok(prepared) => prepared,
            Err(status) => {
                let code = status.code;
                let message = fit_message(live, Some(&status), &BTreeMap::new(), "");
                return Err(Failure { code, message, nomination: None });
            }
        };
        let to_find = feasible_nodes_to_find(percentage, live);
        let start = self.next_start % rows;
        let every_row = Scan::rows(rows, start);
        let evaluated = match (&candidates.narrowed, &candidates.passable) {
            (Some(nodes), _) => {
                filter_pass(&self.pool, &mut self.scratch, &filtering, Scan::list(nodes, 0), nodes.len())
            }
            (None, None) => {
                let looked = filter_pass(&self.pool, &mut self.scratch, &filtering, every_row, to_find);
                self.next_start = (start + looked) % rows;
                looked
            }
            // The scan of every node, with the nodes that would fail anyway left out: it
            // starts and stops where that scan would, so it finds the same feasible nodes.
            (None, Some(passable)) => {
                let scan = Scan::list(passable, passable.partition_point(|&n| (n as usize) < start));
                let looked = filter_pass(&self.pool, &mut self.scratch, &filtering, scan, to_find);
                // Past the last node looked at; where it started if it went all round.
                self.next_start =
                    if looked == 0 || looked >= scan.len() { start } else { (scan.at(looked - 1) as usize + 1) % rows };
                if self.scratch.feasible.is_empty() {
                    // Nothing fits: every node's verdict, for kube's account of why.
                    filter_pass(&self.pool, &mut self.scratch, &filtering, every_row, to_find);
                }
                looked
            }
        };
        if self.last_points.sampling() {
            if let Some(node) = self.scratch.sample_node() {
                filtering.time_filters(node, &mut self.last_points);
            }
        }
        drop(filtering);
        let feasible = std::mem::take(&mut self.scratch.feasible);
        let filtered = if feasible.is_empty() { Code::Unschedulable } else { Code::Success };
        self.last_points.record(Point::Filter, started, filtered);
        let times = &mut self.last_points;
        let result = match feasible.len() {
            0 => Ok(None),
            1 => Ok(Some((feasible[0], evaluated, 1))),
            n => {
                let inputs = ScoreInputs { snapshot: &self.snapshot, query, profile, memo };
                match score_pass(&self.pool, &mut self.scratch, inputs, &feasible, times) {
                    Ok(()) => Ok(Some((feasible[select(&self.scratch.totals, &mut self.rng)], evaluated, n))),
                    Err(status) => Err(Failure { code: Code::Error, message: status.to_string(), nomination: None }),
                }
            }
        };
        self.scratch.feasible = feasible;
        result
    }

    /// No node passed: count the reasons, ask PostFilter (preemption) for a way out.
    fn diagnose(&mut self, query: &PodQuery, profile: &Profile, live: usize) -> Failure {
        let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
        let mut diagnosis = Diagnosis::default();
        let mut reasons = Vec::new();
        let chunk = self.scratch.chunk;
        let rejected = self.scratch.chunk_stats.iter().enumerate().flat_map(|(i, s)| i * chunk..i * chunk + s.rejected);
        for verdict in rejected.map(|k| &self.scratch.verdicts[k]) {
            let plugin = verdict.plugin as usize;
            reasons.clear();
            profile.plugins[plugin].explain(verdict.rejection, query, &self.snapshot, verdict.node, &mut reasons);
            for reason in reasons.drain(..) {
                *histogram.entry(reason).or_default() += 1;
            }
            diagnosis.rejections.push((verdict.node, plugin, verdict.rejection));
        }
        let resolvable = diagnosis.rejections.iter().any(|(_, _, r)| r.code == Code::Unschedulable);
        let code = if resolvable { Code::Unschedulable } else { Code::UnschedulableAndUnresolvable };
        let mut nomination: Option<Nomination> = None;
        let mut post_filter = String::new();
        if profile.preemption {
            let started = Instant::now();
            // Candidates are tried from a random place, as kube's dry run does.
            let offset = next_random(&mut self.rng) as usize;
            match crate::preemption::find(query, profile, &mut self.snapshot, &diagnosis, offset) {
                Ok(found) => {
                    self.snapshot.nominate(&query.record, found.node);
                    nomination = Some(found);
                    self.last_points.record(Point::PostFilter, started, Code::Success);
                }
                Err(text) => {
                    post_filter = text;
                    self.last_points.record(Point::PostFilter, started, Code::Unschedulable);
                }
            }
        }
        self.last_points.set_code(Point::Filter, code);
        Failure {
            code,
            message: fit_message(live, None, &histogram, &post_filter),
            nomination: nomination.map(|n| (self.snapshot.nodes.names[n.node as usize].to_string(), n.victims)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_picks_the_highest_and_spreads_ties_evenly() {
        let mut rng = 0x1234_5678_9abc_def0;
        assert_eq!(select(&[3, 9, 4], &mut rng), 1);
        assert_eq!(select(&[], &mut rng), 0);
        let totals = [5, 7, 1, 7, 7, 2, 7];
        let mut hits = [0u32; 7];
        for _ in 0..40_000 {
            hits[select(&totals, &mut rng)] += 1;
        }
        assert_eq!(hits[0] + hits[2] + hits[5], 0, "only the best are chosen");
        for tied in [1, 3, 4, 6] {
            // 10,000 expected each; a fair pick stays well within ±5%.
            assert!((9_500..10_500).contains(&hits[tied]), "{hits:?}");
        }
    }
}
