//! The pure rules of a Job: completion indexes and their text form, the pod failure
//! policy, and the delay before replacing failed pods.

use k8s_openapi::api::batch::v1::{JobSpec, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeSet;
use std::time::Duration;

pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// The completion index a pod of an Indexed Job carries.
pub fn index_of(pod: &Pod) -> Option<i32> {
    let meta = &pod.metadata;
    let text = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_ANNOTATION))
        .or_else(|| meta.labels.as_ref()?.get(INDEX_ANNOTATION))?;
    text.parse().ok()
}

/// Parses `completedIndexes` (`"1,3-5,7"`).
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as ranges, the form `completedIndexes` takes.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    parts.join(",")
}

/// What the pod failure policy says about a failed pod.
#[derive(Debug, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Fail the whole Job now.
    FailJob(String),
    /// Not counted toward the backoff limit.
    Ignore,
    /// Counted (the default).
    Count,
}

fn rule_matches(rule: &PodFailurePolicyRule, pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    if let Some(codes) = &rule.on_exit_codes {
        let statuses = status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten();
        return statuses
            .filter(|c| codes.container_name.as_ref().is_none_or(|n| *n == c.name))
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
            .filter(|code| *code != 0)
            .any(|code| {
                let listed = codes.values.contains(&code);
                if codes.operator == "In" {
                    listed
                } else {
                    !listed
                }
            });
    }
    if let Some(patterns) = &rule.on_pod_conditions {
        let conditions = status.and_then(|s| s.conditions.as_ref());
        return patterns.iter().any(|p| {
            // The server defaults a pattern's status to "True".
            let status = if p.status.is_empty() { "True" } else { p.status.as_str() };
            conditions.into_iter().flatten().any(|c| c.type_ == p.type_ && c.status == status)
        });
    }
    false
}

/// The first matching rule's action for a failed pod.
pub fn judge_failure(spec: &JobSpec, pod: &Pod) -> FailureVerdict {
    let Some(policy) = &spec.pod_failure_policy else { return FailureVerdict::Count };
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule_matches(rule, pod) {
            return match rule.action.as_str() {
                "FailJob" => FailureVerdict::FailJob(format!(
                    "Container of pod {} failed and matched the FailJob rule at index {i}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                )),
                "Ignore" => FailureVerdict::Ignore,
                _ => FailureVerdict::Count,
            };
        }
    }
    FailureVerdict::Count
}

/// The delay before a Job creates pods again after `failures` failed ones (kube's
/// pod backoff: 10 s doubling, at most 6 minutes).
pub fn failure_backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exponent = (failures - 1).min(6) as u32;
    Duration::from_secs(10 * (1u64 << exponent)).min(Duration::from_secs(360))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_round_trip_as_ranges() {
        let set = parse_indexes("0-2,5,7-8");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(format_indexes(&set), "0-2,5,7-8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn the_failure_policy_matches_exit_codes() {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "template": {},
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]}
        }))
        .unwrap();
        let failed = |code: i32| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Failed",
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": code}}}]}}))
            .unwrap()
        };
        assert!(matches!(judge_failure(&spec, &failed(42)), FailureVerdict::FailJob(_)));
        assert_eq!(judge_failure(&spec, &failed(1)), FailureVerdict::Count);
        let mut disrupted = failed(1);
        disrupted.status.as_mut().unwrap().conditions =
            Some(vec![
                serde_json::from_value(serde_json::json!({"type": "DisruptionTarget", "status": "True"})).unwrap()
            ]);
        assert_eq!(judge_failure(&spec, &disrupted), FailureVerdict::Ignore);
    }

    #[test]
    fn replacing_failed_pods_backs_off() {
        assert_eq!(failure_backoff(0), Duration::ZERO);
        assert_eq!(failure_backoff(1), Duration::from_secs(10));
        assert_eq!(failure_backoff(3), Duration::from_secs(40));
        assert_eq!(failure_backoff(20), Duration::from_secs(360));
    }
}
