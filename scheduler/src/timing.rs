//! How long each extension point took in a scheduling cycle, for kube-scheduler's
//! `scheduler_framework_extension_point_duration_seconds`. One clock read at each
//! boundary per cycle (never per node), so timing costs nothing measurable.
//!
//! Plugin calls are timed too, for `scheduler_plugin_execution_duration_seconds`, but
//! as kube-scheduler does only in sampled cycles (one in [`PLUGIN_SAMPLE_EVERY`]; kube
//! samples 10% at random). PreFilter and PreScore are timed per plugin; Filter and
//! Score, which run per node, are timed on one sample node per sampled cycle (the
//! first feasible node, else the first one rejected), outside the parallel pass, so
//! the per-node loop never reads a clock.

use crate::framework::Code;
use std::time::{Duration, Instant};

/// The extension points the cycle times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    PreFilter,
    Filter,
    PostFilter,
    PreScore,
    Score,
    Reserve,
    Permit,
}

impl Point {
    pub const ALL: [Point; 7] = [
        Point::PreFilter,
        Point::Filter,
        Point::PostFilter,
        Point::PreScore,
        Point::Score,
        Point::Reserve,
        Point::Permit,
    ];

    /// kube's `extension_point` label.
    pub fn name(self) -> &'static str {
        match self {
            Point::PreFilter => "PreFilter",
            Point::Filter => "Filter",
            Point::PostFilter => "PostFilter",
            Point::PreScore => "PreScore",
            Point::Score => "Score",
            Point::Reserve => "Reserve",
            Point::Permit => "Permit",
        }
    }

    /// `ALL[point.index()] == point`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One cycle in this many times its plugin calls.
pub const PLUGIN_SAMPLE_EVERY: u64 = 10;

/// One plugin call timed in a sampled cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginSample {
    /// The plugin's index in its profile.
    pub plugin: u16,
    pub point: Point,
    pub code: Code,
    pub elapsed: Duration,
}

/// The points one cycle ran: how long each took and how it ended; in sampled cycles,
/// also the plugin calls.
#[derive(Clone, Debug, Default)]
pub struct PointTimes {
    points: [Option<(Duration, Code)>; 7],
    sampling: bool,
    plugins: Vec<PluginSample>,
}

impl PointTimes {
    pub fn clear(&mut self) {
        self.points = Default::default();
        self.sampling = false;
        self.plugins.clear();
    }

    /// Clears, and makes this cycle time its plugin calls or not.
    pub fn start(&mut self, sample_plugins: bool) {
        self.clear();
        self.sampling = sample_plugins;
    }

    /// Whether this cycle times its plugin calls.
    pub fn sampling(&self) -> bool {
        self.sampling
    }

    /// Runs `call`, plugin `plugin`'s work at `point`, timing it (and its outcome, by
    /// `code`) in a sampled cycle; otherwise just runs it, reading no clock.
    #[inline]
    pub fn plugin_call<T>(
        &mut self,
        plugin: usize,
        point: Point,
        call: impl FnOnce() -> T,
        code: impl FnOnce(&T) -> Code,
    ) -> T {
        if !self.sampling {
            return call();
        }
        let started = Instant::now();
        let out = call();
        let elapsed = started.elapsed();
        self.plugins.push(PluginSample { plugin: plugin as u16, point, code: code(&out), elapsed });
        out
    }

    /// The plugin calls timed in this cycle (none unless it was sampled).
    pub fn plugins(&self) -> &[PluginSample] {
        &self.plugins
    }

    /// Records `point` as having run from `since` until now, ending with `code`.
    pub fn record(&mut self, point: Point, since: Instant, code: Code) {
        self.points[point.index()] = Some((since.elapsed(), code));
    }

    /// Marks a recorded point as where the pod was refused.
    pub fn set_code(&mut self, point: Point, code: Code) {
        if let Some((_, c)) = &mut self.points[point.index()] {
            *c = code;
        }
    }

    pub fn get(&self, point: Point) -> Option<(Duration, Code)> {
        self.points[point.index()]
    }

    /// The points that ran, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Point, Duration, Code)> + '_ {
        Point::ALL.iter().filter_map(|&p| self.get(p).map(|(d, c)| (p, d, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_points_that_ran_are_reported() {
        let mut times = PointTimes::default();
        let start = Instant::now();
        times.record(Point::Filter, start, Code::Success);
        times.set_code(Point::Filter, Code::Unschedulable);
        times.set_code(Point::Score, Code::Error);
        let ran: Vec<_> = times.iter().map(|(p, _, c)| (p, c)).collect();
        assert_eq!(ran, vec![(Point::Filter, Code::Unschedulable)]);
        times.clear();
        assert_eq!(times.iter().count(), 0);
        assert_eq!(times.plugin_call(3, Point::Filter, || 7, |_| Code::Success), 7);
        assert!(times.plugins().is_empty(), "an unsampled cycle times no plugin");
        times.start(true);
        times.plugin_call(3, Point::Filter, || (), |_| Code::Unschedulable);
        assert_eq!(times.plugins().len(), 1);
        assert_eq!((times.plugins()[0].plugin, times.plugins()[0].code), (3, Code::Unschedulable));
        times.start(false);
        assert!(times.plugins().is_empty() && !times.sampling());
        assert!(Point::ALL.iter().enumerate().all(|(i, p)| p.index() == i));
        assert!(Code::ALL.iter().all(|c| Code::from_index(c.index()) == Some(*c)));
    }
}
