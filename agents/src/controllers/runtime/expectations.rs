//! Expectations (client-go's ControllerExpectations): the creates and deletes a
//! controller issued and has not yet seen through its informer.
//!
//! A controller's cache lags its own writes. Without expectations, a ReplicaSet
//! reconciled again before its new pods arrive would count too few and create more.
//! So after creating N pods it expects N adds, and does not manage replicas again
//! until the informer has reported them (or five minutes have passed, in case an
//! event was lost to a re-list).

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long expectations stand before they are considered stale.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Expected {
    adds: i64,
    /// The uids of pods being deleted, so a deletion is counted once.
    deletes: HashSet<String>,
    set_at: Instant,
}

#[derive(Debug, Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    /// Whether `key` may act on what its cache shows: nothing pending, or pending
    /// for longer than the timeout.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.by_key.lock().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.set_at.elapsed() > TIMEOUT,
        }
    }

    /// Before issuing `adds` creates and deleting the pods `deletes`.
    pub fn expect(&self, key: &str, adds: usize, deletes: impl IntoIterator<Item = String>) {
        self.by_key.lock().insert(
            key.to_string(),
            Expected { adds: adds as i64, deletes: deletes.into_iter().collect(), set_at: Instant::now() },
        );
    }

    /// A create was seen (or will never come: it failed or was skipped).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.by_key.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// The deletion of the pod `uid` was seen (or failed).
    pub fn deletion_observed(&self, key: &str, uid: &str) {
        if let Some(e) = self.by_key.lock().get_mut(key) {
            e.deletes.remove(uid);
        }
    }

    /// The controller's object is gone.
    pub fn forget(&self, key: &str) {
        self.by_key.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_every_create_and_delete_is_seen() {
        let e = Expectations::default();
        assert!(e.satisfied("rs"));
        e.expect("rs", 2, ["u1".to_string()]);
        assert!(!e.satisfied("rs"));
        e.creation_observed("rs");
        e.creation_observed("rs");
        assert!(!e.satisfied("rs"), "a delete is still pending");
        e.deletion_observed("rs", "u1");
        e.deletion_observed("rs", "u1");
        assert!(e.satisfied("rs"));
        e.expect("rs", 1, []);
        e.forget("rs");
        assert!(e.satisfied("rs"));
    }
}
