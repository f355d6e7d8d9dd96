//! Compaction drops history; reads and watches before it fail with `Compacted`.

mod common;

use keelson_engine::Revision;
use keelson_store::{ListOptions, ReadAt, Retention, StoreConfig, StoreError};
use std::time::Duration;

#[test]
fn compaction_expires_old_reads_and_watches_but_keeps_latest_state() {
    for (backend, fixture) in common::both(StoreConfig::default()) {
        let store = &fixture.store;
        store.create("/c/a", "a1").wait().unwrap(); // 1
        store.create("/c/b", "b1").wait().unwrap(); // 2
        store.update("/c/a", "a2", None).wait().unwrap(); // 3
        store.delete("/c/b", None).wait().unwrap(); // 4
        store.update("/c/a", "a3", None).wait().unwrap(); // 5
        store.compact(Revision(3)).wait().unwrap();
        assert_eq!(store.compacted_revision(), Revision(3));

        let old = store.get(b"/c/a", ReadAt::Revision(Revision(2)));
        assert!(matches!(old, Err(StoreError::Compacted { .. })), "{backend}: {old:?}");
        assert!(store.watch("/c/", Revision(2)).is_err());
        // At and after the compacted revision, history is intact.
        let at3 = store.get(b"/c/a", ReadAt::Revision(Revision(3))).unwrap().unwrap();
        assert_eq!(at3.value.unwrap(), "a2", "{backend}");
        let at4 = store.list(b"/c/", &ListOptions { at: ReadAt::Revision(Revision(4)), ..Default::default() }).unwrap();
        assert_eq!(at4.items.len(), 1);
        let mut watcher = store.watch("/c/", Revision(3)).unwrap();
        let mut revisions: Vec<u64> = Vec::new();
        while revisions.len() < 2 {
            match watcher.next_timeout(Duration::from_secs(5)).unwrap() {
                Some(keelson_store::WatchItem::Events(batch)) => {
                    revisions.extend(batch.iter().map(|e| e.revision.get()))
                }
                Some(keelson_store::WatchItem::Progress(_)) => {}
                None => panic!("{backend}: expected events after the compacted revision"),
            }
        }
        assert_eq!(revisions, vec![4, 5], "{backend}");
        // Latest state is untouched.
        assert_eq!(store.get(b"/c/a", ReadAt::Latest).unwrap().unwrap().value.unwrap(), "a3");
        assert_eq!(store.count(b"/c/").unwrap(), 1);

        // Compacting past the delete drops its tombstone; re-creating still works.
        store.compact(Revision(5)).wait().unwrap();
        assert_eq!(store.create("/c/b", "b2").wait().unwrap().record.version, 1);
        assert!(matches!(store.compact(Revision(100)).wait(), Err(StoreError::FutureRevision { .. })));
    }
}

#[test]
fn compaction_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = keelson_store::Store::open(dir.path(), StoreConfig::default()).unwrap();
        for i in 0..10 {
            store.create(format!("/x/{i}"), "v").wait().unwrap();
        }
        store.compact(Revision(6)).wait().unwrap();
    }
    let store = keelson_store::Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(store.compacted_revision(), Revision(6));
    assert_eq!(store.current_revision(), Revision(10));
    assert!(store.watch("/x/", Revision(5)).is_err());
    assert!(store.watch("/x/", Revision(6)).is_ok());
}

#[test]
fn retention_by_count_compacts_automatically() {
    let retention =
        Retention { age: Duration::from_secs(3600), revisions: 10, check_every: Some(Duration::from_millis(20)) };
    let config = StoreConfig { retention, progress_interval: Duration::from_millis(20), ..StoreConfig::default() };
    for (backend, fixture) in common::both(config) {
        let store = &fixture.store;
        for i in 0..50 {
            store.create(format!("/auto/{i}"), "v").wait().unwrap();
        }
        let mut compacted = Revision::ZERO;
        for _ in 0..200 {
            compacted = store.compacted_revision();
            if compacted == Revision(40) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(compacted, Revision(40), "{backend}: keeps the newest 10 revisions");
    }
}

#[test]
fn retention_by_age_compacts_old_history() {
    let fixture = common::memory(StoreConfig {
        retention: Retention { age: Duration::from_millis(100), revisions: u64::MAX, check_every: None },
        ..StoreConfig::default()
    });
    let store = &fixture.store;
    for i in 0..5 {
        store.create(format!("/age/{i}"), "v").wait().unwrap();
    }
    std::thread::sleep(Duration::from_millis(250));
    store.create("/age/young", "v").wait().unwrap();
    assert_eq!(store.compact_by_retention().unwrap(), Some(Revision(5)));
    assert_eq!(store.compact_by_retention().unwrap(), None, "nothing more is old enough");
}
