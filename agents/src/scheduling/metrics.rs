//! The scheduler runner's metrics, named as kube-scheduler names them.

use crate::metrics::{header, Counter, Gauge, Histogram};
use keelson_scheduler::framework::Code;
use keelson_scheduler::queue::QueueLengths;
use keelson_scheduler::timing::{Point, PointTimes};
use parking_lot::RwLock;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

/// Results of a scheduling attempt (kube-scheduler's `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Scheduled,
    Unschedulable,
    Error,
}

impl AttemptResult {
    const ALL: [AttemptResult; 3] = [AttemptResult::Scheduled, AttemptResult::Unschedulable, AttemptResult::Error];

    fn label(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

/// One profile's series: kube-scheduler labels attempts and extension points with the
/// profile (`schedulerName`) that handled the pod.
#[derive(Debug, Default)]
pub struct ProfileMetrics {
    attempts: [Counter; 3],
    attempt_duration: [Histogram; 3],
    /// Per extension point the cycle runs (`Point::ALL`) and per status (`Code::ALL`).
    extension_points: [[Histogram; 5]; 7],
    /// The API round trip of a bind (kube's Bind extension point).
    pub bind_duration: Histogram,
    /// Per plugin of the profile (in its order), the calls timed in sampled cycles, per
    /// extension point and status.
    plugins: OnceLock<Box<[PluginSeries]>>,
}

#[derive(Debug)]
struct PluginSeries {
    name: &'static str,
    calls: [[Histogram; 5]; 7],
}

impl ProfileMetrics {
    /// Names the profile's plugins, in its order (once; later calls are ignored).
    pub fn set_plugins(&self, names: impl IntoIterator<Item = &'static str>) {
        let series =
            || names.into_iter().map(|name| PluginSeries { name, calls: Default::default() }).collect::<Box<[_]>>();
        self.plugins.get_or_init(series);
    }

    /// Records how long each extension point of a cycle took and, in a sampled cycle,
    /// its plugin calls.
    pub fn extension_points(&self, times: &PointTimes) {
        for (point, elapsed, code) in times.iter() {
            self.extension_points[point.index()][code.index()].observe(elapsed);
        }
        if let Some(plugins) = self.plugins.get() {
            for sample in times.plugins() {
                if let Some(series) = plugins.get(usize::from(sample.plugin)) {
                    series.calls[sample.point.index()][sample.code.index()].observe(sample.elapsed);
                }
            }
        }
    }

    fn render_plugins(&self, out: &mut String, profile: &str) {
        for series in self.plugins.get().into_iter().flatten() {
            let plugin = format!("plugin=\"{}\",profile=\"{profile}\"", series.name);
            render_by_point_and_status(out, PLUGIN_DURATION, &series.calls, &plugin);
        }
    }

    pub fn attempt(&self, result: AttemptResult, elapsed: Duration) {
        let i = AttemptResult::ALL.iter().position(|r| *r == result).expect("listed");
        self.attempts[i].inc();
        self.attempt_duration[i].observe(elapsed);
    }

    fn render_attempts(&self, out: &mut String, profile: &str) {
        for (i, result) in AttemptResult::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "scheduler_schedule_attempts_total{{profile=\"{profile}\",result=\"{}\"}} {}",
                result.label(),
                self.attempts[i].get()
            );
        }
    }

    fn render_attempt_durations(&self, out: &mut String, profile: &str) {
        for (i, result) in AttemptResult::ALL.iter().enumerate() {
            let labels = format!("profile=\"{profile}\",result=\"{}\"", result.label());
            self.attempt_duration[i].render(out, "scheduler_scheduling_attempt_duration_seconds", &labels);
        }
    }

    fn render_extension_points(&self, out: &mut String, profile: &str) {
        const NAME: &str = "scheduler_framework_extension_point_duration_seconds";
        render_by_point_and_status(out, NAME, &self.extension_points, &format!("profile=\"{profile}\""));
        if self.bind_duration.count() > 0 {
            let labels = format!("extension_point=\"Bind\",profile=\"{profile}\",status=\"Success\"");
            self.bind_duration.render(out, NAME, &labels);
        }
    }
}

/// Renders a table of histograms by extension point and status, with `labels` (sorted
/// between `extension_point` and `status`). Only the series that have happened, as
/// Prometheus client libraries do.
fn render_by_point_and_status(out: &mut String, name: &str, table: &[[Histogram; 5]; 7], labels: &str) {
    for point in Point::ALL {
        for code in Code::ALL {
            let histogram = &table[point.index()][code.index()];
            if histogram.count() > 0 {
                let labels = format!("extension_point=\"{}\",{labels},status=\"{}\"", point.name(), code.name());
                histogram.render(out, name, &labels);
            }
        }
    }
}

/// kube-scheduler's per-plugin series, observed in sampled cycles.
const PLUGIN_DURATION: &str = "scheduler_plugin_execution_duration_seconds";

#[derive(Debug, Default)]
pub struct SchedulerMetrics {
    /// Per profile, by scheduler name, in the order runners registered them. Written
    /// only when a runner starts ([`SchedulerMetrics::profile`]); the hot path holds
    /// its profiles' `Arc`s and never takes this lock.
    profiles: RwLock<Vec<(String, Arc<ProfileMetrics>)>>,
    pub bind_errors: Counter,
    pub preemption_victims: Counter,
    pub preemption_attempts: Counter,
    /// Events and status reports dropped because their queue was full (best effort,
    /// as kube's event broadcaster).
    pub reports_dropped: Counter,
    /// Pending pods not queued because the queue was full (they come back on re-list).
    pub queue_overflows: Counter,
    pending: [Gauge; 4],
    pub binds_in_flight: Gauge,
    /// Placement-quality audit: sampled decisions and the sum of their quality
    /// (chosen score / best score), in millionths.
    pub audited: Counter,
    pub audit_quality_micros: Counter,
}

impl SchedulerMetrics {
    /// The series of the profile `scheduler_name`, registered on first use (and kept
    /// across runner restarts, as the counters are).
    pub fn profile(&self, scheduler_name: &str) -> Arc<ProfileMetrics> {
        if let Some((_, found)) = self.profiles.read().iter().find(|(name, _)| name == scheduler_name) {
            return Arc::clone(found);
        }
        let mut profiles = self.profiles.write();
        if let Some((_, found)) = profiles.iter().find(|(name, _)| name == scheduler_name) {
            return Arc::clone(found);
        }
        let created = Arc::new(ProfileMetrics::default());
        profiles.push((scheduler_name.to_string(), Arc::clone(&created)));
        created
    }

    /// Attempts with this result, over every profile.
    pub fn attempts(&self, result: AttemptResult) -> u64 {
        let i = AttemptResult::ALL.iter().position(|r| *r == result).expect("listed");
        self.profiles.read().iter().map(|(_, p)| p.attempts[i].get()).sum()
    }

    pub fn set_pending(&self, lengths: QueueLengths) {
        self.pending[0].set(lengths.active as i64);
        self.pending[1].set(lengths.backoff as i64);
        self.pending[2].set(lengths.unschedulable as i64);
        self.pending[3].set(lengths.gated as i64);
    }

    /// Mean placement quality of audited decisions (1.0: always the best node).
    pub fn placement_quality(&self) -> Option<f64> {
        let n = self.audited.get();
        (n > 0).then(|| self.audit_quality_micros.get() as f64 / 1e6 / n as f64)
    }

    pub fn render(&self, out: &mut String) {
        let profiles = self.profiles.read().clone();
        header(out, "scheduler_schedule_attempts_total", "counter", "Scheduling attempts by result.");
        for (name, profile) in &profiles {
            profile.render_attempts(out, name);
        }
        header(
            out,
            "scheduler_scheduling_attempt_duration_seconds",
            "histogram",
            "Scheduling attempt latency (the scheduling cycle, without binding) by result.",
        );
        for (name, profile) in &profiles {
            profile.render_attempt_durations(out, name);
        }
        header(out, "scheduler_pending_pods", "gauge", "Pending pods by queue.");
        for (i, queue) in ["active", "backoff", "unschedulable", "gated"].iter().enumerate() {
            let _ = writeln!(out, "scheduler_pending_pods{{queue=\"{queue}\"}} {}", self.pending[i].get());
        }
        header(
            out,
            "scheduler_framework_extension_point_duration_seconds",
            "histogram",
            "Latency of the extension points of scheduling cycles (once per cycle) and of binds.",
        );
        for (name, profile) in &profiles {
            profile.render_extension_points(out, name);
        }
        header(
            out,
            PLUGIN_DURATION,
            "histogram",
            "Latency of plugin calls, timed in one scheduling cycle in 10 (per-node calls on one node).",
        );
        for (name, profile) in &profiles {
            profile.render_plugins(out, name);
        }
        let counters = [
            ("scheduler_bind_errors_total", "Binds the API refused or that failed.", &self.bind_errors),
            ("scheduler_preemption_victims_total", "Pods evicted to make room.", &self.preemption_victims),
            ("scheduler_preemption_attempts_total", "Preemptions carried out.", &self.preemption_attempts),
            (
                "scheduler_reports_dropped_total",
                "Events and status reports dropped (queue full).",
                &self.reports_dropped,
            ),
            ("scheduler_queue_overflows_total", "Pending pods not queued (queue full).", &self.queue_overflows),
            ("scheduler_placement_audited_total", "Decisions audited for placement quality.", &self.audited),
        ];
        for (name, help, counter) in counters {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", counter.get());
        }
        header(out, "scheduler_binds_in_flight", "gauge", "Binds sent and not yet answered.");
        let _ = writeln!(out, "scheduler_binds_in_flight {}", self.binds_in_flight.get());
        header(
            out,
            "scheduler_placement_quality_ratio",
            "gauge",
            "Mean of chosen-node score / best feasible-node score over audited decisions.",
        );
        let _ = writeln!(out, "scheduler_placement_quality_ratio {}", self.placement_quality().unwrap_or(1.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_the_profile_that_scheduled_the_pod() {
        let metrics = SchedulerMetrics::default();
        let default = metrics.profile("default-scheduler");
        let batch = metrics.profile("batch-scheduler");
        assert!(Arc::ptr_eq(&default, &metrics.profile("default-scheduler")), "registered once");
        default.attempt(AttemptResult::Scheduled, Duration::from_millis(1));
        batch.attempt(AttemptResult::Scheduled, Duration::from_millis(2));
        batch.attempt(AttemptResult::Unschedulable, Duration::from_millis(2));
        batch.bind_duration.observe(Duration::from_millis(3));
        assert_eq!(metrics.attempts(AttemptResult::Scheduled), 2);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 1\n")
        );
        assert!(
            out.contains("scheduler_schedule_attempts_total{profile=\"batch-scheduler\",result=\"unschedulable\"} 1\n")
        );
        assert!(out.contains(
            "scheduler_framework_extension_point_duration_seconds_count{extension_point=\"Bind\",profile=\"batch-scheduler\",status=\"Success\"} 1\n"
        ));
        assert!(!out.contains("extension_point=\"Bind\",profile=\"default-scheduler\""), "no binds yet: no series");
        // Each metric's header once, its series for every profile after it.
        assert_eq!(out.matches("# TYPE scheduler_schedule_attempts_total").count(), 1);
    }

    #[test]
    fn sampled_plugin_calls_are_series_per_plugin_point_and_status() {
        let metrics = SchedulerMetrics::default();
        let profile = metrics.profile("default-scheduler");
        profile.set_plugins(["NodeResourcesFit", "TaintToleration"]);
        profile.set_plugins(["ignored"]);
        let mut times = PointTimes::default();
        times.start(false);
        times.plugin_call(0, Point::Filter, || (), |_| Code::Success);
        profile.extension_points(&times);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(!out.contains("plugin=\""), "an unsampled cycle adds no series");
        times.start(true);
        times.plugin_call(0, Point::Filter, || (), |_| Code::Success);
        times.plugin_call(1, Point::Filter, || (), |_| Code::UnschedulableAndUnresolvable);
        times.plugin_call(1, Point::PreScore, || (), |_| Code::Skip);
        profile.extension_points(&times);
        out.clear();
        metrics.render(&mut out);
        let count = |labels: &str| format!("{PLUGIN_DURATION}_count{{{labels}}} 1\n");
        for labels in [
            "extension_point=\"Filter\",plugin=\"NodeResourcesFit\",profile=\"default-scheduler\",status=\"Success\"",
            "extension_point=\"Filter\",plugin=\"TaintToleration\",profile=\"default-scheduler\",status=\"UnschedulableAndUnresolvable\"",
            "extension_point=\"PreScore\",plugin=\"TaintToleration\",profile=\"default-scheduler\",status=\"Skip\"",
        ] {
            assert!(out.contains(&count(labels)), "{labels} missing from:\n{out}");
        }
        assert_eq!(out.matches(&format!("{PLUGIN_DURATION}_count{{")).count(), 3);
    }
}
