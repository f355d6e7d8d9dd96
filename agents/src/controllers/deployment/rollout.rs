//! The numbers of a rollout (kube's `deployment/util`): how far a rolling update may
//! surge and how much it may leave unavailable, how big the new ReplicaSet may grow,
//! how much of the old may go, and how a resize spreads over ReplicaSets mid-rollout.
//! Pure functions over counts, so every rule is tested without an API.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `maxSurge` and `maxUnavailable` as pod counts for `desired` replicas: percentages
/// of surge round up and of unavailability round down; both zero would deadlock, so
/// unavailability becomes 1.
pub fn fenceposts(max_surge: Option<&IntOrString>, max_unavailable: Option<&IntOrString>, desired: i32) -> (i32, i32) {
    // 25% is the default of both.
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&quarter), desired, true).max(0);
    let unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), desired, false).max(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// A count or a percentage of `total`, rounded up or down (kube's
/// GetScaledValueFromIntOrPercent).
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let scaled = f64::from(total) * percent / 100.0;
            if round_up {
                scaled.ceil() as i32
            } else {
                scaled.floor() as i32
            }
        }
    }
}

/// One ReplicaSet as the rollout sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetCounts {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// The `max-replicas` annotation (the deployment size plus surge it was scaled for).
    pub annotated_max: Option<i32>,
}

/// The size the new ReplicaSet may grow to in a rolling update: up to `desired`, as
/// long as all ReplicaSets together stay within `desired + max_surge`.
pub fn new_set_replicas(desired: i32, max_surge: i32, new_replicas: i32, all_replicas: i32) -> i32 {
    let max_total = desired + max_surge;
    if all_replicas >= max_total {
        return new_replicas;
    }
    let scale_up = (max_total - all_replicas).min(desired - new_replicas);
    new_replicas + scale_up.max(0)
}

/// How many old pods a rolling update may remove now without dropping below
/// `desired - max_unavailable` available pods, counting the new set's unavailable
/// pods as already missing.
pub fn old_scale_down_budget(desired: i32, max_unavailable: i32, all_replicas: i32, new: &SetCounts) -> i32 {
    let min_available = desired - max_unavailable;
    let new_unavailable = new.replicas - new.available;
    all_replicas - min_available - new_unavailable.max(0)
}

/// Scales down `olds` (oldest first) to remove unhealthy pods first: at most
/// `budget` in total, each set down to its available count. Returns new sizes.
pub fn cleanup_unhealthy(olds: &[SetCounts], budget: i32) -> Vec<i32> {
    let mut left = budget.max(0);
    olds.iter()
        .map(|set| {
            let unhealthy = (set.replicas - set.available).max(0);
            let cut = unhealthy.min(left);
            left -= cut;
            set.replicas - cut
        })
        .collect()
}

/// Scales down available old pods (oldest sets first) while more than
/// `desired - max_unavailable` pods are available across all sets. Returns new sizes.
pub fn scale_down_available(olds: &[SetCounts], all_available: i32, desired: i32, max_unavailable: i32) -> Vec<i32> {
    let min_available = desired - max_unavailable;
    let mut left = (all_available - min_available).max(0);
    olds.iter()
        .map(|set| {
            let cut = set.replicas.min(left).max(0);
            left -= cut;
            set.replicas - cut
        })
        .collect()
}

/// Proportional scaling (kube's `scale`): the deployment was resized mid-rollout, so
/// `sets` (the active ones, largest first; the newer first when growing, the older
/// first when shrinking) are resized in proportion to the size each was last scaled
/// for; what rounding leaves over goes to the first. Returns new sizes.
pub fn proportional(sets: &[SetCounts], desired: i32, max_surge: i32, status_replicas: i32) -> Vec<i32> {
    let total: i32 = sets.iter().map(|s| s.replicas).sum();
    let allowed = if desired > 0 { desired + max_surge } else { 0 };
    let to_add = allowed - total;
    let mut added = 0;
    let mut sizes: Vec<i32> = sets
        .iter()
        .map(|set| {
            if to_add == 0 || set.replicas == 0 || to_add == added {
                return set.replicas;
            }
            let fraction = if desired == 0 {
                -set.replicas
            } else {
                let annotated = set.annotated_max.unwrap_or(status_replicas).max(1);
                let scaled = (f64::from(set.replicas) * f64::from(allowed) / f64::from(annotated)).round() as i32;
                scaled - set.replicas
            };
            let left = to_add - added;
            let proportion = if to_add > 0 { fraction.min(left) } else { fraction.max(left) };
            added += proportion;
            set.replicas + proportion
        })
        .collect();
    if let Some(first) = sizes.first_mut() {
        if to_add != 0 {
            *first = (*first + to_add - added).max(0);
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(replicas: i32, available: i32) -> SetCounts {
        SetCounts { replicas, available, annotated_max: None }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(None, None, 10), (3, 2), "25% each by default");
        assert_eq!(fenceposts(Some(&pct("10%")), Some(&pct("10%")), 15), (2, 1));
        assert_eq!(fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 5), (0, 1));
        assert_eq!(fenceposts(Some(&pct("0%")), Some(&pct("20%")), 3), (0, 1), "20% of 3 rounds to 0");
    }

    #[test]
    fn the_new_set_grows_within_the_surge() {
        // 10 desired, surge 3: 10 old + 0 new → the new set may have 3.
        assert_eq!(new_set_replicas(10, 3, 0, 10), 3);
        // Already at 13 pods: no growth.
        assert_eq!(new_set_replicas(10, 3, 3, 13), 3);
        // Never beyond desired.
        assert_eq!(new_set_replicas(10, 3, 9, 9), 10);
    }

    #[test]
    fn old_sets_shrink_unhealthy_first_then_available_within_the_budget() {
        // 10 desired, unavailable 2; 10 old (all available) + 3 new (none available).
        let new = set(3, 0);
        let budget = old_scale_down_budget(10, 2, 13, &new);
        assert_eq!(budget, 13 - 8 - 3);
        assert_eq!(cleanup_unhealthy(&[set(10, 10)], budget), vec![10], "nothing unhealthy");
        assert_eq!(scale_down_available(&[set(10, 10)], 10, 10, 2), vec![8]);
        // Unhealthy old pods go first, oldest set first, within the budget.
        assert_eq!(cleanup_unhealthy(&[set(4, 1), set(5, 3)], 4), vec![1, 4]);
    }

    #[test]
    fn a_resize_mid_rollout_spreads_in_proportion() {
        // kube's example: 10 replicas, surge 3, rolling: old 8, new 5 (13 pods, the
        // max). Scaled to 15 (max 18): 5 more split 8:5.
        let mut old = set(8, 8);
        old.annotated_max = Some(13);
        let mut new = set(5, 0);
        new.annotated_max = Some(13);
        let sizes = proportional(&[old.clone(), new.clone()], 15, 3, 13);
        assert_eq!(sizes.iter().sum::<i32>(), 18);
        assert_eq!(sizes, vec![11, 7]);
        // Scaled down to 5 (max 8): older first when shrinking.
        let sizes = proportional(&[old, new], 5, 3, 13);
        assert_eq!(sizes.iter().sum::<i32>(), 8);
        assert_eq!(sizes, vec![5, 3]);
        // To zero: everything goes.
        assert_eq!(proportional(&[set(4, 4), set(2, 2)], 0, 1, 6), vec![0, 0]);
    }
}
