//! Sealed keys: plain to every reader (latest, history, watch replay from the log),
//! sealed on disk, and other keys untouched.

use bytes::Bytes;
use keelson_engine::Revision;
use keelson_store::{ReadAt, Sealer, Store, StoreConfig, WatchItem};
use std::sync::Arc;
use std::time::Duration;

fn on_disk(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            on_disk(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn sealed_values_read_plain_and_rest_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(vec![b"/registry/secrets/".to_vec()], vec![("k1".into(), [7; 32])]).unwrap();
    let config = StoreConfig { sealer: Some(Arc::new(sealer)), ..StoreConfig::default() };
    let store = Store::open(dir.path(), config).unwrap();
    let (secret, other) = (b"/registry/secrets/team/db".as_slice(), b"/registry/configmaps/team/c".as_slice());
    let first = store.create(Bytes::from_static(secret), Bytes::from_static(b"first-SECRET")).wait().unwrap();
    store.update(Bytes::from_static(secret), Bytes::from_static(b"second-SECRET"), None).wait().unwrap();
    store.create(Bytes::from_static(other), Bytes::from_static(b"plain-CONFIG")).wait().unwrap();

    let value = |at| store.get(secret, at).unwrap().and_then(|r| r.value);
    assert_eq!(value(ReadAt::Latest), Some(Bytes::from_static(b"second-SECRET")));
    assert_eq!(value(ReadAt::Revision(first.revision)), Some(Bytes::from_static(b"first-SECRET")), "history opens");
    let page = store.list(b"/registry/", &Default::default()).unwrap();
    let values: Vec<_> = page.items.iter().filter_map(|(_, r)| r.value.clone()).collect();
    assert!(
        values.contains(&Bytes::from_static(b"second-SECRET")) && values.contains(&Bytes::from_static(b"plain-CONFIG"))
    );

    // A watch from the start replays the log: plain values, previous ones too.
    let mut watcher = store.watch(Bytes::from_static(b"/registry/secrets/"), Revision(0)).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Some(WatchItem::Events(batch)) = watcher.next_timeout(Duration::from_secs(5)).unwrap() {
            seen.extend(batch.iter().map(|e| (e.value.clone(), e.prev_value.clone())));
        }
    }
    assert_eq!(seen[1], (Some(Bytes::from_static(b"second-SECRET")), Some(Bytes::from_static(b"first-SECRET"))));

    drop(watcher);
    drop(store);
    assert!(!on_disk(dir.path(), b"-SECRET"), "sealed values are never on disk in clear");
    assert!(on_disk(dir.path(), b"plain-CONFIG"), "the control: other keys are");
}
