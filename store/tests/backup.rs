//! Backup to a directory (RocksDB checkpoint) and restore from it.

use keelson_engine::Revision;
use keelson_store::{ListOptions, ReadAt, Store, StoreConfig};

#[test]
fn backup_and_restore_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let (data, backup, restored) = (root.path().join("data"), root.path().join("backup"), root.path().join("restored"));
    let store = Store::open(&data, StoreConfig::default()).unwrap();
    for i in 0..200 {
        store.create(format!("/b/{i:03}"), format!("value-{i}")).wait().unwrap();
    }
    store.update("/b/007", "changed", None).wait().unwrap();
    let backed_up_at = store.backup(&backup).unwrap();
    assert_eq!(backed_up_at, Revision(201));
    // Writes after the backup must not appear in the restored copy.
    store.create("/b/after", "x").wait().unwrap();
    drop(store);

    Store::restore(&backup, &restored).unwrap();
    assert!(Store::restore(&backup, &restored).is_err(), "restore refuses to overwrite");
    let copy = Store::open(&restored, StoreConfig::default()).unwrap();
    assert_eq!(copy.current_revision(), Revision(201));
    let page = copy.list(b"/b/", &ListOptions::default()).unwrap();
    assert_eq!(page.items.len(), 200);
    assert_eq!(copy.get(b"/b/007", ReadAt::Latest).unwrap().unwrap().value.unwrap(), "changed");
    assert_eq!(copy.get(b"/b/007", ReadAt::Revision(Revision(8))).unwrap().unwrap().value.unwrap(), "value-7");
    assert!(copy.get(b"/b/after", ReadAt::Latest).unwrap().is_none());
    // The copy is a working store: revisions continue.
    assert_eq!(copy.create("/b/new", "x").wait().unwrap().revision, Revision(202));
}

#[test]
fn memory_backend_has_no_backup() {
    let store = Store::in_memory(StoreConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(store.backup(&dir.path().join("b")).is_err());
}
