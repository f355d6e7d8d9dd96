//! Property test: random operation sequences against a simple in-memory model.
//!
//! The model is a `BTreeMap` of live keys plus the full history of changes. After every
//! operation the store must agree with it: results, errors, revisions, reads at any
//! retained revision, paged lists, and finally the complete watch stream.

mod common;

use bytes::Bytes;
use keelson_engine::{EventType, Revision};
use keelson_store::{ListOptions, ReadAt, Store, StoreConfig, StoreError, WatchItem};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Create(u8, u8),
    Update(u8, u8, Precondition),
    Delete(u8, Precondition),
    Get(u8),
    GetAt(u8, u8),
    List(u8),
    Compact(u8),
}

#[derive(Clone, Copy, Debug)]
enum Precondition {
    None,
    Current,
    Stale,
}

fn op() -> impl Strategy<Value = Op> {
    let precondition = prop_oneof![Just(Precondition::None), Just(Precondition::Current), Just(Precondition::Stale)];
    prop_oneof![
        4 => (0u8..8, any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        3 => (0u8..8, any::<u8>(), precondition.clone()).prop_map(|(k, v, p)| Op::Update(k, v, p)),
        2 => (0u8..8, precondition).prop_map(|(k, p)| Op::Delete(k, p)),
        2 => (0u8..8).prop_map(Op::Get),
        2 => (0u8..8, any::<u8>()).prop_map(|(k, r)| Op::GetAt(k, r)),
        1 => (0u8..5).prop_map(Op::List),
        1 => any::<u8>().prop_map(Op::Compact),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct Live {
    create: u64,
    modified: u64,
    version: u64,
    value: Bytes,
}

#[derive(Default)]
struct Model {
    live: BTreeMap<Bytes, Live>,
    /// Every change: (revision, kind, key, new value or None).
    history: Vec<(u64, EventType, Bytes, Option<Bytes>)>,
    revision: u64,
    compacted: u64,
}

impl Model {
    /// Replays history up to `revision` into the live map at that point.
    fn live_at(&self, revision: u64) -> BTreeMap<Bytes, Bytes> {
        let mut state = BTreeMap::new();
        for (rev, _, key, value) in self.history.iter().take_while(|h| h.0 <= revision) {
            let _ = rev;
            match value {
                Some(value) => state.insert(key.clone(), value.clone()),
                None => state.remove(key),
            };
        }
        state
    }
}

fn key(k: u8) -> Bytes {
    Bytes::from(format!("/m/{k}"))
}

fn expected_for(model: &Model, k: &Bytes, precondition: Precondition) -> Option<Revision> {
    match precondition {
        Precondition::None => None,
        Precondition::Current => Some(Revision(model.live.get(k).map_or(0, |l| l.modified))),
        Precondition::Stale => Some(Revision(model.live.get(k).map_or(0, |l| l.modified) + 1000)),
    }
}

fn run(store: &Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Create(k, v) => {
                let k = key(*k);
                let value = Bytes::from(vec![*v]);
                let result = store.create(k.clone(), value.clone()).wait();
                if model.live.contains_key(&k) {
                    prop_assert!(matches!(result, Err(StoreError::AlreadyExists { .. })), "{result:?}");
                } else {
                    model.revision += 1;
                    let outcome = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(outcome.revision, Revision(model.revision));
                    model.live.insert(
                        k.clone(),
                        Live { create: model.revision, modified: model.revision, version: 1, value: value.clone() },
                    );
                    model.history.push((model.revision, EventType::Added, k, Some(value)));
                }
            }
            Op::Update(k, v, precondition) => {
                let k = key(*k);
                let value = Bytes::from(vec![*v]);
                let expected = expected_for(&model, &k, *precondition);
                let result = store.update(k.clone(), value.clone(), expected).wait();
                match model.live.get_mut(&k) {
                    None => prop_assert!(matches!(result, Err(StoreError::NotFound { .. })), "{result:?}"),
                    Some(_) if matches!(precondition, Precondition::Stale) => {
                        prop_assert!(matches!(result, Err(StoreError::Conflict { .. })), "{result:?}")
                    }
                    Some(live) => {
                        model.revision += 1;
                        let outcome = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(outcome.revision, Revision(model.revision));
                        prop_assert_eq!(outcome.prev.and_then(|p| p.value), Some(live.value.clone()));
                        live.modified = model.revision;
                        live.version += 1;
                        live.value = value.clone();
                        prop_assert_eq!(outcome.record.version, live.version);
                        prop_assert_eq!(outcome.record.create_revision, Revision(live.create));
                        model.history.push((model.revision, EventType::Modified, k, Some(value)));
                    }
                }
            }
            Op::Delete(k, precondition) => {
                let k = key(*k);
                let expected = expected_for(&model, &k, *precondition);
                let result = store.delete(k.clone(), expected).wait();
                match model.live.get(&k) {
                    None => prop_assert!(matches!(result, Err(StoreError::NotFound { .. })), "{result:?}"),
                    Some(_) if matches!(precondition, Precondition::Stale) => {
                        prop_assert!(matches!(result, Err(StoreError::Conflict { .. })), "{result:?}")
                    }
                    Some(live) => {
                        model.revision += 1;
                        let outcome = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(outcome.prev.and_then(|p| p.value), Some(live.value.clone()));
                        model.live.remove(&k);
                        model.history.push((model.revision, EventType::Deleted, k, None));
                    }
                }
            }
            Op::Get(k) => {
                let k = key(*k);
                let got = store.get(&k, ReadAt::Latest).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let expected = model.live.get(&k);
                prop_assert_eq!(got.as_ref().and_then(|r| r.value.clone()), expected.map(|l| l.value.clone()));
                if let (Some(record), Some(live)) = (got, expected) {
                    prop_assert_eq!(record.mod_revision, Revision(live.modified));
                    prop_assert_eq!(record.create_revision, Revision(live.create));
                    prop_assert_eq!(record.version, live.version);
                }
            }
            Op::GetAt(k, r) => {
                let k = key(*k);
                let revision = u64::from(*r) % (model.revision + 2);
                let got = store.get(&k, ReadAt::Revision(Revision(revision)));
                if revision > model.revision {
                    prop_assert!(matches!(got, Err(StoreError::FutureRevision { .. })), "{got:?}");
                } else if revision < model.compacted {
                    prop_assert!(matches!(got, Err(StoreError::Compacted { .. })), "{got:?}");
                } else {
                    let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(got.and_then(|r| r.value), model.live_at(revision).get(&k).cloned());
                }
            }
            Op::List(limit) => {
                let limit = usize::from(*limit);
                let mut items = Vec::new();
                let mut options = ListOptions { limit, ..Default::default() };
                for _ in 0..100 {
                    let page = store.list(b"/m/", &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(page.revision, Revision(model.revision));
                    items.extend(page.items.into_iter().map(|(k, r)| (k, r.value.unwrap_or_default())));
                    match page.next_key {
                        Some(next) => {
                            options = ListOptions { at: ReadAt::Revision(page.revision), limit, after_key: Some(next) }
                        }
                        None => break,
                    }
                }
                let expected: Vec<_> = model.live.iter().map(|(k, l)| (k.clone(), l.value.clone())).collect();
                prop_assert_eq!(items, expected);
                prop_assert_eq!(store.count(b"/m/").unwrap(), model.live.len() as u64);
            }
            Op::Compact(r) => {
                let revision = u64::from(*r) % (model.revision + 1);
                store.compact(Revision(revision)).wait().map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.compacted = model.compacted.max(revision);
                prop_assert_eq!(store.compacted_revision(), Revision(model.compacted));
            }
        }
    }
    // The watch stream from the compacted revision replays exactly the model's history.
    let mut watcher = store.watch("/m/", Revision(model.compacted)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let expected: Vec<_> =
        model.history.iter().filter(|h| h.0 > model.compacted).map(|h| (h.0, h.1, h.2.clone(), h.3.clone())).collect();
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        match watcher.next_timeout(Duration::from_secs(5)).map_err(|e| TestCaseError::fail(e.to_string()))? {
            Some(WatchItem::Events(batch)) => {
                seen.extend(batch.iter().map(|e| (e.revision.get(), e.kind, e.key.clone(), e.value.clone())))
            }
            Some(WatchItem::Progress(_)) => {}
            None => break,
        }
    }
    prop_assert_eq!(seen, expected);
    Ok(())
}

/// A ring of two events, so the final watch replays history from the log on disk.
fn small_ring() -> StoreConfig {
    StoreConfig { ring: keelson_store::RingLimits { events: 2, bytes: usize::MAX }, ..StoreConfig::default() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let fixture = common::memory(small_ring());
        run(&fixture.store, &ops)?;
    }

    #[test]
    fn rocksdb_store_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let fixture = common::rocks(small_ring());
        run(&fixture.store, &ops)?;
    }
}
