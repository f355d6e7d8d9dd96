//! What every result file records: the commit, the machine, and latency summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The machine a figure was measured on.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub cpu: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = kib_field(&meminfo, "MemTotal:");
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: memory_kib * 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            cpu,
        }
    }
}

/// A `NAME:   1234 kB` line of a `/proc` file, in KiB (0 if absent).
pub fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// The git commit the binary was built from (`-dirty` if its code had uncommitted
/// changes): the code the run measured, wherever it runs. A copied older binary run
/// inside the repository must not take the working tree's commit. Built outside a
/// repository: the working tree's commit, if there is one.
pub fn commit() -> String {
    match env!("LOADGEN_BUILD_COMMIT") {
        "unknown" => crate::git_head::head_commit().unwrap_or_else(|| "unknown".to_owned()),
        built => built.to_owned(),
    }
}

/// p50/p90/p99/max of a histogram recorded in microseconds, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct LatencyMs {
    pub p50: f64,
    #[serde(default)]
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencyMs {
    /// All zeros for an empty histogram.
    pub fn from_micros(histogram: &Histogram<u64>) -> LatencyMs {
        LatencyMs::observed(histogram).unwrap_or_default()
    }

    /// `None` for an empty histogram.
    pub fn observed(histogram: &Histogram<u64>) -> Option<LatencyMs> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(LatencyMs {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        })
    }
}

/// A histogram for latencies from 1 µs to 1 hour, 3 significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// scheduler_perf's SchedulingThroughput: the average and percentiles of per-second
/// samples.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct Throughput {
    pub average: f64,
    pub perc50: f64,
    pub perc90: f64,
    pub perc99: f64,
}

impl Throughput {
    pub fn of(samples: &[f64]) -> Throughput {
        if samples.is_empty() {
            return Throughput::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
        Throughput {
            average: sorted.iter().sum::<f64>() / sorted.len() as f64,
            perc50: at(0.5),
            perc90: at(0.9),
            perc99: at(0.99),
        }
    }
}

/// Events per whole second since `start` (a partial last second is left out, unless
/// it is the only one, which is scaled to a rate).
pub fn per_second(start: std::time::Instant, at: &[std::time::Instant]) -> Vec<f64> {
    let Some(last) = at.iter().max() else { return Vec::new() };
    let seconds = last.duration_since(start).as_secs_f64();
    let whole = seconds.floor() as usize;
    let mut counts = vec![0f64; whole.max(1)];
    for t in at {
        let s = t.duration_since(start).as_secs() as usize;
        if s < counts.len() {
            counts[s] += 1.0;
        }
    }
    if whole == 0 {
        counts[0] /= seconds.max(1e-3);
    }
    counts
}

/// This process's peak RSS (`VmHWM`, bytes) and CPU time (user + system, seconds).
pub fn own_usage() -> (u64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib = kib_field(&status, "VmHWM:");
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat.rsplit_once(") ").map_or(Vec::new(), |(_, rest)| rest.split(' ').collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 11 and 12 after the name.
    let ticks_per_second = 100.0;
    (peak_kib * 1024, (ticks(11) + ticks(12)) / ticks_per_second)
}

/// Starts a new peak-RSS period (`VmHWM` falls back to the current RSS), so a run in a
/// process that ran others before reports its own peak.
pub fn reset_peak_rss() {
    // "5" resets the peak resident set size (proc(5), /proc/pid/clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn throughput_follows_scheduler_perf() {
        let t = Throughput::of(&[10.0, 30.0, 20.0, 40.0]);
        assert_eq!((t.average, t.perc50, t.perc90, t.perc99), (25.0, 20.0, 40.0, 40.0));
        let start = Instant::now();
        let at: Vec<Instant> = [100, 900, 1100, 2500].iter().map(|ms| start + Duration::from_millis(*ms)).collect();
        assert_eq!(per_second(start, &at), vec![2.0, 1.0]);
        assert!(today().len() == 10 && today().starts_with("20"));
    }
}
