//! Watch: replay from history, live delivery in order, lag, progress, prefixes.

mod common;

use keelson_engine::{EventType, Revision};
use keelson_store::{RingLimits, StoreConfig, StoreError, WatchItem, Watcher};
use std::time::Duration;

/// Collects `(revision, kind, key)` until `count` events arrived (bounded wait).
fn collect(watcher: &mut Watcher, count: usize) -> Vec<(u64, EventType, String)> {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        if seen.len() >= count {
            break;
        }
        match watcher.next_timeout(Duration::from_secs(5)).unwrap() {
            Some(WatchItem::Events(batch)) => {
                for event in batch.iter() {
                    seen.push((event.revision.get(), event.kind, String::from_utf8_lossy(&event.key).into_owned()));
                }
            }
            Some(WatchItem::Progress(_)) => {}
            None => panic!("timed out after {} of {count} events", seen.len()),
        }
    }
    seen
}

#[test]
fn replays_history_then_streams_live_changes() {
    for (backend, fixture) in common::both(StoreConfig::default()) {
        let store = &fixture.store;
        store.create("/registry/pods/a", "1").wait().unwrap();
        store.create("/registry/nodes/n", "1").wait().unwrap();
        store.update("/registry/pods/a", "2", None).wait().unwrap();
        let mut watcher = store.watch("/registry/pods/", Revision::ZERO).unwrap();
        let replayed = collect(&mut watcher, 2);
        assert_eq!(
            replayed,
            vec![(1, EventType::Added, "/registry/pods/a".into()), (3, EventType::Modified, "/registry/pods/a".into())],
            "{backend}"
        );
        store.delete("/registry/pods/a", None).wait().unwrap();
        store.create("/registry/nodes/m", "1").wait().unwrap();
        store.create("/registry/pods/b", "1").wait().unwrap();
        let live = collect(&mut watcher, 2);
        assert_eq!(
            live,
            vec![(4, EventType::Deleted, "/registry/pods/a".into()), (6, EventType::Added, "/registry/pods/b".into())]
        );
    }
}

#[test]
fn replay_from_the_log_carries_each_changes_value() {
    // A ring of two events: a watcher from the start replays everything from disk.
    let config = StoreConfig { ring: RingLimits { events: 2, bytes: usize::MAX }, ..StoreConfig::default() };
    for (backend, fixture) in common::both(config) {
        let store = &fixture.store;
        let mut live = [false; 7];
        let mut expected = Vec::new();
        // More changes than one replay reads at a time, so a key's next change (which
        // holds the value it replaced) is often in the next read, or not yet made.
        for i in 0..1500u64 {
            let slot = (i % 7) as usize;
            let key = format!("/v/k{slot}");
            let value = format!("value {i}");
            let kind = if !live[slot] {
                store.create(key.clone(), value.clone()).wait().unwrap();
                EventType::Added
            } else if i % 11 == 0 {
                store.delete(key.clone(), None).wait().unwrap();
                EventType::Deleted
            } else {
                store.update(key.clone(), value.clone(), None).wait().unwrap();
                EventType::Modified
            };
            live[slot] = kind != EventType::Deleted;
            let value = (kind != EventType::Deleted).then(|| bytes::Bytes::from(value));
            expected.push((i + 1, kind, key, value));
        }
        let mut watcher = store.watch("/v/", Revision::ZERO).unwrap();
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            match watcher.next_timeout(Duration::from_secs(5)).unwrap() {
                Some(WatchItem::Events(batch)) => seen.extend(batch.iter().map(|e| {
                    (e.revision.get(), e.kind, String::from_utf8_lossy(&e.key).into_owned(), e.value.clone())
                })),
                Some(WatchItem::Progress(_)) => {}
                None => panic!("{backend}: timed out after {} events", seen.len()),
            }
        }
        assert!(seen == expected, "{backend}: the replayed changes differ");
    }
}

#[test]
fn delete_events_carry_the_last_state() {
    let fixture = common::memory(StoreConfig::default());
    let store = &fixture.store;
    store.create("/p/a", "first").wait().unwrap();
    store.update("/p/a", "last", None).wait().unwrap();
    let mut watcher = store.watch("/p/", Revision(2)).unwrap();
    store.delete("/p/a", None).wait().unwrap();
    let Some(WatchItem::Events(batch)) = watcher.next_timeout(Duration::from_secs(5)).unwrap() else {
        panic!("no event")
    };
    let event = batch.iter().next().unwrap();
    assert_eq!(event.kind, EventType::Deleted);
    assert_eq!(event.value, None);
    assert_eq!(event.prev_value.as_deref(), Some(&b"last"[..]));
    assert_eq!(event.object().map(|b| b.as_ref()), Some(&b"last"[..]));
}

#[test]
fn watch_resumes_from_disk_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = keelson_store::Store::open(dir.path(), StoreConfig::default()).unwrap();
        for i in 0..100 {
            store.create(format!("/r/{i}"), "x").wait().unwrap();
        }
    }
    let store = keelson_store::Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(store.current_revision(), Revision(100));
    let mut watcher = store.watch("/r/", Revision(40)).unwrap();
    let events = collect(&mut watcher, 60);
    let revisions: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(revisions, (41..=100).collect::<Vec<_>>());
    store.create("/r/new", "x").wait().unwrap();
    assert_eq!(collect(&mut watcher, 1)[0].0, 101);
}

#[test]
fn lagging_watcher_is_expired_and_memory_stays_bounded() {
    let config = StoreConfig { ring: RingLimits { events: 50, bytes: usize::MAX }, ..StoreConfig::default() };
    for (backend, fixture) in common::both(config) {
        let store = &fixture.store;
        let mut watcher = store.watch("/l/", Revision::ZERO).unwrap();
        store.create("/l/0", "x").wait().unwrap();
        assert_eq!(collect(&mut watcher, 1).len(), 1, "{backend}: the watcher is live");
        for i in 1..500 {
            store.create(format!("/l/{i}"), "x").wait().unwrap();
        }
        let error = watcher.try_next().unwrap_err();
        assert!(matches!(error, StoreError::WatcherLagged { .. }), "{backend}: {error}");
        assert!(error.is_expired());
        // A new watcher from an old revision still replays from the log on disk.
        let mut fresh = store.watch("/l/", Revision(1)).unwrap();
        assert_eq!(collect(&mut fresh, 499).len(), 499);
    }
}

#[test]
fn idle_watchers_get_progress_notifications() {
    let config = StoreConfig { progress_interval: Duration::from_millis(50), ..StoreConfig::default() };
    let fixture = common::memory(config);
    let store = &fixture.store;
    store.create("/other/x", "1").wait().unwrap();
    let mut watcher = store.watch("/quiet/", Revision::ZERO).unwrap();
    let item = watcher.next_timeout(Duration::from_secs(5)).unwrap();
    match item {
        Some(WatchItem::Progress(revision)) => assert_eq!(revision, Revision(1)),
        other => panic!("expected progress, got {other:?}"),
    }
}

#[test]
fn async_watch_wakes_on_commit() {
    let fixture = common::memory(StoreConfig::default());
    let store = fixture.store.clone();
    let mut watcher = store.watch("/a/", Revision::ZERO).unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        store.create("/a/x", "1").wait().unwrap();
    });
    // A minimal executor: block on the future with a thread-parking waker.
    let item = block_on(watcher.next()).unwrap();
    writer.join().unwrap();
    assert!(matches!(item, WatchItem::Events(_)));
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    for _ in 0..1_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    panic!("future did not complete");
}

#[test]
fn many_watchers_see_every_event_in_order() {
    let fixture = common::rocks(StoreConfig::default());
    let store = &fixture.store;
    let watchers: Vec<Watcher> = (0..50).map(|_| store.watch("/m/", Revision::ZERO).unwrap()).collect();
    std::thread::scope(|scope| {
        for writer in 0..8 {
            scope.spawn(move || {
                for i in 0..100 {
                    store.create(format!("/m/{writer}/{i}"), "v").wait().unwrap();
                }
            });
        }
        for mut watcher in watchers {
            scope.spawn(move || {
                let revisions: Vec<u64> = collect(&mut watcher, 800).into_iter().map(|e| e.0).collect();
                assert_eq!(revisions, (1..=800).collect::<Vec<_>>());
            });
        }
    });
}
