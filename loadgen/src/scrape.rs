//! Reading the Prometheus text exposition the server serves at `/metrics`: single
//! samples, and histograms turned into quantiles the way PromQL's
//! `histogram_quantile` does (linear within the bucket), over the difference of two
//! scrapes so a figure covers only the measured phase.

use serde::Serialize;
use std::collections::BTreeMap;

/// One sample: the series must match `series` exactly up to the value.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(f64::NAN)
}

/// Cumulative bucket counts by upper bound, in bound order (`+Inf` last).
pub type Buckets = Vec<(f64, f64)>;

fn labels(text: &str) -> Vec<(&str, &str)> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key.trim_matches(','), value.trim_end_matches('"')))
        })
        .collect()
}

/// The buckets of histogram `name`, summed over every series whose labels include
/// `filter`, grouped by the value of label `by` ("" when `by` is empty).
pub fn histograms(text: &str, name: &str, by: &str, filter: &[(&str, &str)]) -> BTreeMap<String, Buckets> {
    let prefix = format!("{name}_bucket{{");
    let mut out: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else { continue };
        let Some((inside, value)) = rest.rsplit_once("} ") else { continue };
        let Ok(count) = value.trim().parse::<f64>() else { continue };
        let labels = labels(inside);
        let get = |k: &str| labels.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        if filter.iter().any(|(k, v)| get(k) != Some(*v)) {
            continue;
        }
        let Some(le) = get("le") else { continue };
        let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let group = if by.is_empty() { String::new() } else { get(by).unwrap_or("").to_string() };
        // Keyed by the bound's bits so buckets of one bound add up across series.
        let slot = out.entry(group).or_default().entry(bound.to_bits()).or_insert((bound, 0.0));
        slot.1 += count;
    }
    out.into_iter()
        .map(|(group, by_bound)| {
            let mut buckets: Buckets = by_bound.into_values().collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            (group, buckets)
        })
        .collect()
}

/// `after - before`, bucket by bucket (a bucket missing before counts as 0).
pub fn difference(after: &Buckets, before: Option<&Buckets>) -> Buckets {
    after
        .iter()
        .map(|(bound, count)| {
            let earlier = before.and_then(|b| b.iter().find(|(x, _)| x == bound)).map_or(0.0, |(_, c)| *c);
            (*bound, count - earlier)
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, linear within a bucket; the largest finite
/// bound when it falls in `+Inf`. `None` without observations.
pub fn quantile(buckets: &Buckets, q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in buckets {
        if *count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
            return Some(lower + (bound - lower) * fraction);
        }
        (lower, below) = (*bound, *count);
    }
    Some(lower)
}

/// p50/p90/p99 in milliseconds and the number of observations.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct QuantilesMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub count: f64,
}

impl QuantilesMs {
    /// From buckets in seconds.
    pub fn from_seconds(buckets: &Buckets) -> Option<QuantilesMs> {
        let ms = |q| quantile(buckets, q).map(|s| (s * 1e6).round() / 1e3);
        Some(QuantilesMs { p50: ms(0.5)?, p90: ms(0.9)?, p99: ms(0.99)?, count: buckets.last()?.1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
x_bucket{verb=\"GET\",resource=\"pods\",le=\"0.001\"} 10
x_bucket{verb=\"GET\",resource=\"pods\",le=\"0.01\"} 90
x_bucket{verb=\"GET\",resource=\"pods\",le=\"+Inf\"} 100
x_bucket{verb=\"GET\",resource=\"nodes\",le=\"0.001\"} 0
x_bucket{verb=\"GET\",resource=\"nodes\",le=\"0.01\"} 0
x_bucket{verb=\"GET\",resource=\"nodes\",le=\"+Inf\"} 100
x_bucket{verb=\"POST\",resource=\"pods\",le=\"0.001\"} 4
x_bucket{verb=\"POST\",resource=\"pods\",le=\"0.01\"} 4
x_bucket{verb=\"POST\",resource=\"pods\",le=\"+Inf\"} 4
y_total 7
";

    #[test]
    fn histograms_group_sum_and_give_quantiles() {
        let by_verb = histograms(TEXT, "x", "verb", &[]);
        assert_eq!(by_verb["GET"], vec![(0.001, 10.0), (0.01, 90.0), (f64::INFINITY, 200.0)]);
        let pods = histograms(TEXT, "x", "", &[("resource", "pods"), ("verb", "GET")]);
        let get = &pods[""];
        assert_eq!(quantile(get, 0.05), Some(0.0005));
        assert!((quantile(get, 0.5).unwrap() - 0.0055).abs() < 1e-12);
        assert_eq!(quantile(get, 0.99), Some(0.01), "in +Inf: the largest finite bound");
        let before = vec![(0.001, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)];
        assert_eq!(difference(get, Some(&before)), vec![(0.001, 0.0), (0.01, 80.0), (f64::INFINITY, 90.0)]);
        assert_eq!(sample(TEXT, "y_total"), 7.0);
        assert!(QuantilesMs::from_seconds(&vec![(1.0, 0.0)]).is_none());
    }
}
