//! How long each extension point took in a scheduling cycle, for kube-scheduler's
//! `scheduler_framework_extension_point_duration_seconds`. One clock read at each
//! boundary per cycle (never per node), so timing costs nothing measurable.

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

/// The points one cycle ran: how long each took and how it ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct PointTimes {
    points: [Option<(Duration, Code)>; 7],
}

impl PointTimes {
    pub fn clear(&mut self) {
        self.points = Default::default();
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
        assert!(Point::ALL.iter().enumerate().all(|(i, p)| p.index() == i));
        assert!(Code::ALL.iter().all(|c| Code::from_index(c.index()) == Some(*c)));
    }
}
