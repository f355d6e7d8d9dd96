//! Create, update, delete, get, list and count, with preconditions and revisions.

mod common;

use keelson_engine::Revision;
use keelson_store::{ListOptions, ReadAt, StoreConfig, StoreError};

#[test]
fn create_update_delete_assign_consecutive_revisions() {
    for (backend, fixture) in common::both(StoreConfig::default()) {
        let store = &fixture.store;
        let created = store.create("/registry/pods/ns/a", "v1").wait().unwrap();
        assert_eq!(created.revision, Revision(1), "{backend}");
        assert_eq!(created.record.create_revision, Revision(1));
        assert_eq!(created.record.version, 1);
        assert!(created.prev.is_none());

        let updated = store.update("/registry/pods/ns/a", "v2", Some(Revision(1))).wait().unwrap();
        assert_eq!(updated.revision, Revision(2));
        assert_eq!(updated.record.create_revision, Revision(1));
        assert_eq!(updated.record.version, 2);
        assert_eq!(updated.prev.unwrap().value.unwrap(), "v1");

        let deleted = store.delete("/registry/pods/ns/a", None).wait().unwrap();
        assert_eq!(deleted.revision, Revision(3));
        assert_eq!(deleted.prev.unwrap().value.unwrap(), "v2", "{backend}: delete returns the deleted object");
        assert!(store.get(b"/registry/pods/ns/a", ReadAt::Latest).unwrap().is_none());
        assert_eq!(store.current_revision(), Revision(3));
    }
}

#[test]
fn errors_consume_no_revision() {
    for (backend, fixture) in common::both(StoreConfig::default()) {
        let store = &fixture.store;
        store.create("/k/a", "1").wait().unwrap();
        assert!(matches!(store.create("/k/a", "2").wait(), Err(StoreError::AlreadyExists { .. })), "{backend}");
        assert!(matches!(store.update("/k/missing", "2", None).wait(), Err(StoreError::NotFound { .. })));
        assert!(matches!(store.delete("/k/missing", None).wait(), Err(StoreError::NotFound { .. })));
        let conflict = store.update("/k/a", "2", Some(Revision(99))).wait();
        assert!(matches!(conflict, Err(StoreError::Conflict { found: Revision(1), .. })), "{backend}: {conflict:?}");
        assert!(matches!(store.delete("/k/a", Some(Revision(7))).wait(), Err(StoreError::Conflict { .. })));
        assert!(matches!(store.create("", "x").wait(), Err(StoreError::InvalidKey(_))));
        assert_eq!(store.current_revision(), Revision(1), "{backend}: failed writes took no revision");
        assert_eq!(store.create("/k/b", "1").wait().unwrap().revision, Revision(2));
    }
}

#[test]
fn recreate_after_delete_starts_a_new_incarnation() {
    for (backend, fixture) in common::both(StoreConfig::default()) {
        let store = &fixture.store;
        store.create("/k/a", "first").wait().unwrap();
        store.delete("/k/a", None).wait().unwrap();
        let again = store.create("/k/a", "second").wait().unwrap();
        assert_eq!(again.record.create_revision, Revision(3), "{backend}");
        assert_eq!(again.record.version, 1);
        assert!(again.prev.is_none(), "a tombstone is not a previous object");
    }
}

#[test]
fn reads_at_older_revisions_walk_history() {
    for (backend, fixture) in common::both(StoreConfig::default()) {
        let store = &fixture.store;
        store.create("/k/a", "a1").wait().unwrap(); // 1
        store.create("/k/b", "b1").wait().unwrap(); // 2
        store.update("/k/a", "a2", None).wait().unwrap(); // 3
        store.delete("/k/b", None).wait().unwrap(); // 4
        store.create("/k/b", "b2").wait().unwrap(); // 5
        let value_at =
            |key: &[u8], rev: u64| store.get(key, ReadAt::Revision(Revision(rev))).unwrap().map(|r| r.value.unwrap());
        assert_eq!(value_at(b"/k/a", 1).unwrap(), "a1", "{backend}");
        assert_eq!(value_at(b"/k/a", 2).unwrap(), "a1");
        assert_eq!(value_at(b"/k/a", 3).unwrap(), "a2");
        assert_eq!(value_at(b"/k/b", 1), None);
        assert_eq!(value_at(b"/k/b", 3).unwrap(), "b1");
        assert_eq!(value_at(b"/k/b", 4), None);
        assert_eq!(value_at(b"/k/b", 5).unwrap(), "b2");

        let at3 = store.list(b"/k/", &ListOptions { at: ReadAt::Revision(Revision(3)), ..Default::default() }).unwrap();
        let keys: Vec<_> = at3.items.iter().map(|(k, r)| (k.clone(), r.value.clone().unwrap())).collect();
        assert_eq!(keys, vec![("/k/a".into(), "a2".into()), ("/k/b".into(), "b1".into())]);
        assert_eq!(at3.revision, Revision(3));

        let future = store.get(b"/k/a", ReadAt::Revision(Revision(6)));
        assert!(matches!(future, Err(StoreError::FutureRevision { .. })), "{backend}");
    }
}

#[test]
fn paged_list_is_consistent_at_one_revision() {
    for (backend, fixture) in common::both(StoreConfig::default()) {
        let store = &fixture.store;
        for i in 0..25 {
            store.create(format!("/registry/cm/ns/{i:03}"), format!("v{i}")).wait().unwrap();
        }
        store.create("/registry/cm/other/x", "outside the prefix").wait().unwrap();
        let prefix = b"/registry/cm/ns/";
        let first = store.list(prefix, &ListOptions { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(first.items.len(), 10, "{backend}");
        let revision = first.revision;
        // Changes after the first page must not show in the following pages.
        store.delete("/registry/cm/ns/015", None).wait().unwrap();
        store.create("/registry/cm/ns/999", "late").wait().unwrap();
        let mut keys: Vec<_> = first.items.iter().map(|(k, _)| k.clone()).collect();
        let mut after = first.next_key;
        while let Some(key) = after {
            let page = store
                .list(prefix, &ListOptions { at: ReadAt::Revision(revision), limit: 10, after_key: Some(key) })
                .unwrap();
            assert_eq!(page.revision, revision);
            keys.extend(page.items.iter().map(|(k, _)| k.clone()));
            after = page.next_key;
        }
        let expected: Vec<_> = (0..25).map(|i| bytes::Bytes::from(format!("/registry/cm/ns/{i:03}"))).collect();
        assert_eq!(keys, expected, "{backend}");
        assert_eq!(store.count(prefix).unwrap(), 25, "24 old + 1 late");
        assert_eq!(store.count(b"/registry/cm/").unwrap(), 26);
        let exact = store.list(prefix, &ListOptions { limit: 25, ..Default::default() }).unwrap();
        assert!(exact.next_key.is_none(), "{backend}: a page that ends exactly at the last key has no continuation");
    }
}

#[test]
fn concurrent_writers_share_syncs() {
    let fixture = common::rocks(StoreConfig::default());
    let store = &fixture.store;
    std::thread::scope(|scope| {
        for writer in 0..32 {
            scope.spawn(move || {
                for i in 0..50 {
                    store.create(format!("/w/{writer}/{i}"), vec![7u8; 256]).wait().unwrap();
                }
            });
        }
    });
    let stats = store.stats();
    assert_eq!(stats.current_revision, Revision(1600));
    assert_eq!(stats.writes, 1600);
    assert!(stats.syncs <= stats.batches && stats.syncs > 0);
    assert_eq!(store.count(b"/w/").unwrap(), 1600);
}

#[test]
fn full_queue_answers_busy_instead_of_growing() {
    let fixture = common::memory(StoreConfig { queue_capacity: 4, ..StoreConfig::default() });
    let store = &fixture.store;
    let pending: Vec<_> = (0..10_000).map(|i| store.create(format!("/q/{i}"), "x")).collect();
    let results: Vec<_> = pending.into_iter().map(|p| p.wait()).collect();
    let busy = results.iter().filter(|r| matches!(r, Err(StoreError::Busy))).count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(busy + ok, 10_000);
    assert!(busy > 0, "a 4-deep queue must push back on 10,000 immediate writes");
    assert_eq!(store.current_revision().get(), ok as u64);
}

#[test]
fn closed_store_rejects_writes() {
    let fixture = common::memory(StoreConfig::default());
    fixture.store.create("/a", "1").wait().unwrap();
    fixture.store.close();
    assert!(matches!(fixture.store.create("/b", "1").wait(), Err(StoreError::Closed)));
}
