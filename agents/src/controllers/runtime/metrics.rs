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

    pub fn get(&self, name: &str) -> Option<Arc<QueueMetrics>> {
        self.queues.lock().iter().find(|(n, _)| *n == name).map(|(_, m)| Arc::clone(m))
    }

    pub fn render(&self, out: &mut String) {
        let queues = self.queues.lock().clone();
        header(out, "workqueue_depth", "gauge", "Keys waiting in a controller's work queue.");
        for (name, m) in &queues {
            let _ = writeln!(out, "workqueue_depth{{name=\"{name}\"}} {}", m.depth.get());
        }
        header(out, "workqueue_adds_total", "counter", "Keys added to a controller's work queue.");
        for (name, m) in &queues {
            let _ = writeln!(out, "workqueue_adds_total{{name=\"{name}\"}} {}", m.adds.get());
        }
        header(out, "workqueue_retries_total", "counter", "Keys re-queued after a failed reconcile.");
        for (name, m) in &queues {
            let _ = writeln!(out, "workqueue_retries_total{{name=\"{name}\"}} {}", m.retries.get());
        }
        header(out, "controller_reconcile_errors_total", "counter", "Reconciles that failed.");
        for (name, m) in &queues {
            let _ = writeln!(out, "controller_reconcile_errors_total{{controller=\"{name}\"}} {}", m.errors.get());
        }
        header(out, "workqueue_work_duration_seconds", "histogram", "Time one reconcile took.");
        for (name, m) in &queues {
            m.work_duration.render(out, "workqueue_work_duration_seconds", &format!("name=\"{name}\""));
        }
    }
}
