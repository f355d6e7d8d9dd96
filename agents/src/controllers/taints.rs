//! Taints and tolerations as the controllers need them: which taints a pod tolerates,
//! and how long it may stay on a node with `NoExecute` taints.

use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::jiff::Timestamp;

pub const NO_EXECUTE: &str = "NoExecute";
pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Whether `toleration` tolerates `taint` (Kubernetes' rules: an empty effect matches
/// every effect; an empty key with `Exists` matches every taint; `Equal`, the
/// default operator, compares values).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// When a pod with `tolerations` must leave a node with `taints` (only `NoExecute`
/// ones count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Every NoExecute taint is tolerated for ever (or there is none).
    Never,
    /// A taint is not tolerated, or its time is up.
    Now,
    /// At this time: the earliest `timeAdded + tolerationSeconds` (the shortest
    /// toleration of a taint counts, as kube's taint manager does).
    At(Timestamp),
}

pub fn eviction(tolerations: &[Toleration], taints: &[Taint], now: Timestamp) -> Eviction {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        // A toleration without seconds tolerates for ever; the shortest bound wins.
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else { continue };
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let at = added.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds.max(0))).unwrap_or(added);
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    match earliest {
        None => Eviction::Never,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, effect: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: Some(Time(Timestamp::from_second(added).unwrap())),
            value: None,
        }
    }

    fn toleration(key: &str, operator: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(operator.into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn matching_follows_kubernetes() {
        let t = taint(UNREACHABLE, NO_EXECUTE, 0);
        assert!(tolerates(&toleration(UNREACHABLE, "Exists", None), &t));
        assert!(tolerates(&toleration("", "Exists", None), &t), "an empty key with Exists tolerates all");
        assert!(!tolerates(&toleration(NOT_READY, "Exists", None), &t));
        let mut wrong_effect = toleration(UNREACHABLE, "Exists", None);
        wrong_effect.effect = Some(NO_SCHEDULE.into());
        assert!(!tolerates(&wrong_effect, &t));
        let mut valued = Taint { value: Some("a".into()), ..t.clone() };
        assert!(tolerates(&Toleration { value: Some("a".into()), ..toleration(UNREACHABLE, "Equal", None) }, &valued));
        valued.value = Some("b".into());
        assert!(!tolerates(&Toleration { value: Some("a".into()), ..toleration(UNREACHABLE, "Equal", None) }, &valued));
    }

    #[test]
    fn eviction_time_is_the_shortest_toleration_after_the_taint() {
        let now = Timestamp::from_second(1_000).unwrap();
        let taints = [taint(UNREACHABLE, NO_EXECUTE, 990), taint("other", NO_SCHEDULE, 0)];
        assert_eq!(eviction(&[], &taints, now), Eviction::Now, "untolerated");
        let forever = [toleration(UNREACHABLE, "Exists", None)];
        assert_eq!(eviction(&forever, &taints, now), Eviction::Never);
        let bounded = [toleration(UNREACHABLE, "Exists", Some(300)), toleration("", "Exists", Some(20))];
        assert_eq!(eviction(&bounded, &taints, now), Eviction::At(Timestamp::from_second(1_010).unwrap()));
        let expired = [toleration(UNREACHABLE, "Exists", Some(5))];
        assert_eq!(eviction(&expired, &taints, now), Eviction::Now);
        assert_eq!(eviction(&[], &taints[1..], now), Eviction::Never, "NoSchedule taints never evict");
    }
}
