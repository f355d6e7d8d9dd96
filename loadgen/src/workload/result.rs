//! A run's result: the JSON `loadgen run` writes (and `loadgen report` reads back),
//! and the summary table it prints.

use super::exec::Executed;
use super::placement::Balance;
use crate::report::{self, LatencyMs, Machine, Throughput};
use crate::scrape::{self, QuantilesMs};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub workload: String,
    #[serde(default)]
    pub description: String,
    /// Parameters after `--set`, including scheduler settings that were set.
    pub params: BTreeMap<String, Value>,
    pub commit: String,
    pub date: String,
    pub machine: Machine,
    pub target: String,
    /// Every measured pod was scheduled (and Running, where nodes run pods).
    pub complete: bool,
    #[serde(default)]
    pub shortfall: Option<String>,
    pub nodes: usize,
    pub pods_measured: usize,
    pub pods_scheduled: usize,
    pub pods_running: Option<usize>,
    /// Binds of measured pods per second, sampled each second from the first create.
    pub scheduling_throughput: Throughput,
    /// Measured pods over first create → last bind.
    pub pods_per_sec: f64,
    pub measured_s: f64,
    /// The per-second samples (for the throughput-over-time plot).
    pub throughput_series: Vec<f64>,
    /// Create sent → bind seen by the watch.
    pub create_to_bound_ms: Option<LatencyMs>,
    /// The scheduling cycle of each successful attempt during the measurement (the
    /// scheduler's histogram).
    pub attempt_latency_ms: Option<QuantilesMs>,
    /// Created → Running, where nodes run pods.
    pub pod_startup_latency_ms: Option<LatencyMs>,
    /// Every client's requests during the measurement, by verb (the server's histogram).
    pub api_latency_ms: BTreeMap<String, QuantilesMs>,
    pub placement: Placement,
    pub scheduler: SchedulerCounts,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    pub duration_s: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Placement {
    /// Mean of chosen score / best feasible score over audited decisions (1: always a
    /// best node); present when the audit ran (`--audit-every`).
    pub audit_quality: Option<f64>,
    /// 1 - audit_quality.
    pub score_regret: Option<f64>,
    pub cpu_allocation: Option<Balance>,
}

/// The scheduler's counters over the measurement.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SchedulerCounts {
    pub attempts_scheduled: f64,
    pub attempts_unschedulable: f64,
    pub attempts_error: f64,
    pub bind_errors: f64,
    pub preemption_victims: f64,
}

const ATTEMPTS: &str = "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=";

fn delta(before: &str, after: &str, series: &str) -> f64 {
    let (b, a) = (scrape::sample(before, series), scrape::sample(after, series));
    if a.is_nan() {
        return f64::NAN;
    }
    a - if b.is_nan() { 0.0 } else { b }
}

/// Everything but the identity fields, from what the run saw.
pub struct Context {
    pub workload: String,
    pub description: String,
    pub params: BTreeMap<String, Value>,
    pub target: String,
    /// The measured pods the workload means to create (0: count what was seen).
    pub expected_pods: usize,
    pub balance: Option<Balance>,
    pub audited: bool,
    pub duration_s: f64,
    /// This process's CPU time when the run began (a sweep runs several in one).
    pub cpu_at_start: f64,
}

impl RunResult {
    pub fn new(context: Context, run: &Executed) -> RunResult {
        let (before, after) = (run.metrics_before.as_str(), run.metrics_after.as_str());
        let measured = &run.measured;
        let series = run.measure_start.map_or_else(Vec::new, |start| report::per_second(start, &measured.bound_at));
        let measured_s = match (run.measure_start, measured.bound_at.iter().max()) {
            (Some(start), Some(last)) => last.duration_since(start).as_secs_f64(),
            _ => 0.0,
        };
        let attempts = |name: &str| {
            let filter = [("result", name)];
            let after = scrape::histograms(after, "scheduler_scheduling_attempt_duration_seconds", "", &filter);
            let before = scrape::histograms(before, "scheduler_scheduling_attempt_duration_seconds", "", &filter);
            after.get("").and_then(|a| QuantilesMs::from_seconds(&scrape::difference(a, before.get(""))))
        };
        let verbs_after = scrape::histograms(after, "apiserver_request_duration_seconds", "verb", &[]);
        let verbs_before = scrape::histograms(before, "apiserver_request_duration_seconds", "verb", &[]);
        let api_latency_ms = verbs_after
            .iter()
            .filter(|(verb, _)| verb.as_str() != "WATCH")
            .filter_map(|(verb, a)| {
                let q = QuantilesMs::from_seconds(&scrape::difference(a, verbs_before.get(verb)))?;
                (q.count > 0.0).then(|| (verb.clone(), q))
            })
            .collect();
        let quality = scrape::sample(after, "scheduler_placement_quality_ratio");
        let audit_quality = (context.audited && quality.is_finite()).then_some(quality);
        let (peak_rss_bytes, cpu_seconds) = report::own_usage();
        RunResult {
            workload: context.workload,
            description: context.description,
            params: context.params,
            commit: report::commit(),
            date: report::today(),
            machine: Machine::detect(),
            target: context.target,
            complete: run.complete,
            shortfall: run.shortfall.clone(),
            nodes: run.nodes,
            pods_measured: if context.expected_pods > 0 { context.expected_pods } else { measured.pods },
            pods_scheduled: measured.bound_at.len(),
            pods_running: run.pods_run.then_some(measured.running),
            scheduling_throughput: Throughput::of(&series),
            pods_per_sec: measured.bound_at.len() as f64 / measured_s.max(1e-9),
            measured_s,
            throughput_series: series,
            create_to_bound_ms: LatencyMs::observed(&measured.create_to_bound),
            attempt_latency_ms: attempts("scheduled"),
            pod_startup_latency_ms: if run.pods_run { LatencyMs::observed(&measured.create_to_running) } else { None },
            api_latency_ms,
            placement: Placement {
                audit_quality,
                score_regret: audit_quality.map(|q| 1.0 - q),
                cpu_allocation: context.balance,
            },
            scheduler: SchedulerCounts {
                attempts_scheduled: delta(before, after, &format!("{ATTEMPTS}\"scheduled\"}}")),
                attempts_unschedulable: delta(before, after, &format!("{ATTEMPTS}\"unschedulable\"}}")),
                attempts_error: delta(before, after, &format!("{ATTEMPTS}\"error\"}}")),
                bind_errors: delta(before, after, "scheduler_bind_errors_total"),
                preemption_victims: delta(before, after, "scheduler_preemption_victims_total"),
            },
            peak_rss_bytes,
            cpu_seconds: cpu_seconds - context.cpu_at_start,
            duration_s: context.duration_s,
        }
    }

    pub fn print_table(&self) {
        let row = |name: &str, value: String| println!("{name:<34} {value:>18}");
        println!("{}: {} nodes, {} measured pods ({})", self.workload, self.nodes, self.pods_measured, self.target);
        let t = &self.scheduling_throughput;
        row("throughput average pods/s", format!("{:.0}", t.average));
        row("throughput p50/p90/p99 pods/s", format!("{:.0}/{:.0}/{:.0}", t.perc50, t.perc90, t.perc99));
        row("measured pods / scheduled", format!("{} / {}", self.pods_measured, self.pods_scheduled));
        if let Some(running) = self.pods_running {
            row("measured pods Running", running.to_string());
        }
        row("first create → last bind s", format!("{:.2}", self.measured_s));
        if let Some(l) = &self.create_to_bound_ms {
            row("create → bound ms p50/p99", format!("{:.1}/{:.1}", l.p50, l.p99));
        }
        if let Some(l) = &self.attempt_latency_ms {
            row("attempt ms p50/p99", format!("{:.3}/{:.3}", l.p50, l.p99));
        }
        if let Some(l) = &self.pod_startup_latency_ms {
            row("pod startup ms p50/p99", format!("{:.1}/{:.1}", l.p50, l.p99));
        }
        for (verb, l) in &self.api_latency_ms {
            row(&format!("API {verb} ms p50/p99 (n)"), format!("{:.1}/{:.1} ({})", l.p50, l.p99, l.count));
        }
        if let Some(regret) = self.placement.score_regret {
            row("score regret (audit)", format!("{regret:.4}"));
        }
        if let Some(b) = &self.placement.cpu_allocation {
            row("node CPU allocation mean/stddev", format!("{:.3}/{:.3}", b.mean, b.stddev));
        }
        let s = &self.scheduler;
        row(
            "attempts ok/unschedulable/error",
            format!("{}/{}/{}", s.attempts_scheduled, s.attempts_unschedulable, s.attempts_error),
        );
        row("peak RSS MiB / CPU s", format!("{} / {:.1}", self.peak_rss_bytes >> 20, self.cpu_seconds));
        row("duration s", format!("{:.1}", self.duration_s));
        if let Some(why) = &self.shortfall {
            println!("INCOMPLETE: {why}");
        }
    }
}
