//! Prometheus metrics for the agents: lock-free counters, gauges and fixed-bucket
//! histograms, rendered in the text exposition format. Updates are single atomic
//! adds, so the scheduling thread records without contention.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets in seconds: kube-scheduler's exponential buckets from 1 ms.
pub const LATENCY_BUCKETS_S: [f64; 15] =
    [0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024];

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram over [`LATENCY_BUCKETS_S`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS_S.iter().position(|b| seconds <= *b).unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the `_bucket`, `_sum` and `_count` series; `labels` is `""` or
    /// `key="value",...` without braces.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS_S.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = |s: &str| if s.is_empty() { String::new() } else { format!("{{{s}}}") };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Serves `GET /metrics` (and `/healthz`) over plain HTTP/1.1 on `listener` until the
/// task is aborted: for a component run alone, which has no API server's `/metrics`
/// to join. One response per connection; requests larger than 8 KiB are refused.
pub async fn serve(listener: tokio::net::TcpListener, render: std::sync::Arc<dyn Fn(&mut String) + Send + Sync>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let render = std::sync::Arc::clone(&render);
        tokio::spawn(async move {
            let mut request = Vec::with_capacity(1024);
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) if request.len() + n > 8192 => return,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics ") {
                let mut body = String::new();
                render(&mut body);
                ("200 OK", body)
            } else if line.starts_with(b"GET /healthz ") {
                ("200 OK", "ok".to_string())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "result=\"ok\"");
        assert!(out.contains("x_seconds_bucket{result=\"ok\",le=\"0.00001\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{result=\"ok\",le=\"0.004\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{result=\"ok\",le=\"1.024\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{result=\"ok\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count{result=\"ok\"} 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }
}
