//! Per-controller metrics, under client-go's work-queue names.

use crate::metrics::{header, Counter, Gauge, Histogram};
use std::fmt::Write;
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct QueueMetrics {
    pub depth: Gauge,
    pub adds: Counter,
    pub retries: Counter,
    /// One reconcile, start to finish.
    pub work_duration: Histogram,
    pub errors: Counter,
}

/// Every controller's metrics, by name.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    queues: parking_lot::Mutex<Vec<(&'static str, Arc<QueueMetrics>)>>,
}

impl ControllerMetrics {
    pub fn queue(&self, name: &'static str) -> Arc<QueueMetrics> {
        let metrics = Arc::new(QueueMetrics::default());
        self.queues.lock().push((name, Arc::clone(&metrics)));
        metrics
    }

    pub fn render(&self, out: &mut String) {
        let queues = self.queues.lock().clone();
        type Read = fn(&QueueMetrics) -> i64;
        let series: [(&str, &str, &str, &str, Read); 4] = [
            ("workqueue_depth", "gauge", "name", "Keys waiting in a controller's work queue.", |m| m.depth.get()),
            ("workqueue_adds_total", "counter", "name", "Keys added to a controller's work queue.", |m| {
                m.adds.get() as i64
            }),
            ("workqueue_retries_total", "counter", "name", "Keys re-queued after a failed reconcile.", |m| {
                m.retries.get() as i64
            }),
            ("controller_reconcile_errors_total", "counter", "controller", "Reconciles that failed.", |m| {
                m.errors.get() as i64
            }),
        ];
        for (family, kind, label, help, read) in series {
            header(out, family, kind, help);
            for (name, m) in &queues {
                let _ = writeln!(out, "{family}{{{label}=\"{name}\"}} {}", read(m));
            }
        }
        header(out, "workqueue_work_duration_seconds", "histogram", "Time one reconcile took.");
        for (name, m) in &queues {
            m.work_duration.render(out, "workqueue_work_duration_seconds", &format!("name=\"{name}\""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_renders_under_its_controller_name() {
        let metrics = ControllerMetrics::default();
        let rs = metrics.queue("replicaset");
        rs.depth.set(3);
        rs.adds.add(7);
        rs.errors.inc();
        rs.work_duration.observe(std::time::Duration::from_millis(2));
        metrics.queue("job");
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("workqueue_depth{name=\"replicaset\"} 3\n"), "{out}");
        assert!(out.contains("workqueue_adds_total{name=\"replicaset\"} 7\n"), "{out}");
        assert!(out.contains("workqueue_retries_total{name=\"job\"} 0\n"), "{out}");
        assert!(out.contains("controller_reconcile_errors_total{controller=\"replicaset\"} 1\n"), "{out}");
        assert!(out.contains("workqueue_work_duration_seconds_count{name=\"replicaset\"} 1\n"), "{out}");
        assert_eq!(out.matches("# TYPE").count(), 5);
    }
}
