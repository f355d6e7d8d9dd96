//! Zones and how fast their nodes may be tainted for eviction.
//!
//! kube's rules: a zone with no ready node is fully disrupted (probably the zone is
//! gone; evict at the normal rate so work moves elsewhere); a zone where at least
//! `unhealthy_zone_threshold` of its nodes (and more than two) are not ready is
//! partially disrupted (slow down: the secondary rate in a large zone, none in a
//! small one); when every zone is fully disrupted the fault is most likely the
//! control plane's own view, and nothing is evicted at all.

use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// Eviction rates and thresholds (kube-controller-manager's flags of the same names).
#[derive(Clone, Copy, Debug)]
pub struct EvictionPolicy {
    /// Nodes per second tainted for eviction in a healthy zone.
    pub node_eviction_rate: f64,
    /// Nodes per second in a partially disrupted zone larger than the threshold below.
    pub secondary_node_eviction_rate: f64,
    pub large_cluster_size_threshold: usize,
    pub unhealthy_zone_threshold: f64,
}

impl Default for EvictionPolicy {
    fn default() -> Self {
        EvictionPolicy {
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            large_cluster_size_threshold: 50,
            unhealthy_zone_threshold: 0.55,
        }
    }
}

impl EvictionPolicy {
    pub fn state(&self, ready: usize, not_ready: usize) -> ZoneState {
        let total = ready + not_ready;
        if ready == 0 && not_ready > 0 {
            ZoneState::FullDisruption
        } else if not_ready > 2 && not_ready as f64 >= self.unhealthy_zone_threshold * total as f64 {
            ZoneState::PartialDisruption
        } else {
            ZoneState::Normal
        }
    }

    /// Nodes per second a zone of `size` nodes in `state` may be tainted at.
    pub fn rate(&self, state: ZoneState, size: usize) -> f64 {
        match state {
            ZoneState::Normal | ZoneState::FullDisruption => self.node_eviction_rate,
            ZoneState::PartialDisruption if size > self.large_cluster_size_threshold => {
                self.secondary_node_eviction_rate
            }
            ZoneState::PartialDisruption => 0.0,
        }
    }
}

/// A token bucket of burst one: at most one node at once, then one per `1/rate` s.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(now: Instant) -> Self {
        TokenBucket { tokens: 1.0, last: now }
    }

    pub fn try_take(&mut self, rate: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate.max(0.0)).min(1.0);
        if rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn zone_states_follow_the_thresholds() {
        let policy = EvictionPolicy::default();
        assert_eq!(policy.state(10, 0), ZoneState::Normal);
        assert_eq!(policy.state(0, 3), ZoneState::FullDisruption);
        assert_eq!(policy.state(1, 2), ZoneState::Normal, "two nodes down is never a disruption");
        assert_eq!(policy.state(4, 5), ZoneState::PartialDisruption);
        assert_eq!(policy.state(5, 4), ZoneState::Normal);
        assert_eq!(policy.rate(ZoneState::PartialDisruption, 10), 0.0);
        assert_eq!(policy.rate(ZoneState::PartialDisruption, 100), 0.01);
        assert_eq!(policy.rate(ZoneState::FullDisruption, 10), 0.1);
    }

    #[test]
    fn buckets_release_one_node_then_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        assert!(bucket.try_take(0.5, start));
        assert!(!bucket.try_take(0.5, start + Duration::from_secs(1)));
        assert!(bucket.try_take(0.5, start + Duration::from_secs(2)));
        assert!(!bucket.try_take(0.0, start + Duration::from_secs(100)), "rate zero stops");
    }
}
