//! Shared helpers: each scenario runs against both backends.
#![allow(dead_code)]

use keelson_store::{Store, StoreConfig};
use std::sync::Arc;
use tempfile::TempDir;

/// A store and whatever keeps its files alive.
pub struct Fixture {
    pub store: Arc<Store>,
    pub dir: Option<TempDir>,
}

pub fn rocks(config: StoreConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), config).expect("open rocksdb store");
    Fixture { store, dir: Some(dir) }
}

pub fn memory(config: StoreConfig) -> Fixture {
    Fixture { store: Store::in_memory(config).expect("memory store"), dir: None }
}

/// Both backends, labelled for assertion messages.
pub fn both(config: StoreConfig) -> Vec<(&'static str, Fixture)> {
    vec![("rocksdb", rocks(config.clone())), ("memory", memory(config))]
}
