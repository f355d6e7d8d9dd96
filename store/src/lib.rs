//! keelson's registry engine: a versioned key-value store with one global revision,
//! group commit, history, and watch.
//!
//! - [`Store`] is the interface: create/update/delete with optimistic concurrency, get
//!   and paged list at a revision, count, watch from a revision, compaction, backup.
//! - [`backend`] hides the storage engine (RocksDB; in-memory for tests).
//! - `commit` is the single writer: batches, one WAL sync per batch, consecutive revisions.
//! - `hub` + [`Watcher`]: a bounded ring of recent commits shared by every watcher.
//!
//! Architecture invariant: the store knows nothing about Kubernetes objects or HTTP;
//! values are opaque bytes and keys are `/registry/<resource>/[<namespace>/]<name>`
//! by convention of its callers.

pub mod backend;
pub mod codec;
mod commit;
mod error;
mod event;
mod hub;
mod index;
mod meta;
mod read;
pub mod seal;
mod store;
mod watch;

pub use codec::Record;
pub use commit::{Mutation, WriteOutcome, COMMIT_LATENCY_BOUNDS_US};
pub use error::StoreError;
pub use event::{CommitBatch, Event, EventBatch, Memo, WatchItem};
pub use hub::RingLimits;
pub use read::{ListOptions, ListPage, ReadAt};
pub use seal::{SealError, Sealer};
pub use store::{Pending, Retention, Store, StoreConfig, StoreStats};
pub use watch::Watcher;

/// The registry key of an object: `/registry/<resource>/<namespace>/<name>`, or without
/// the namespace segment for cluster-scoped resources.
pub fn object_key(resource: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("/registry/{resource}/{namespace}/{name}"),
        None => format!("/registry/{resource}/{name}"),
    }
}

/// The prefix under which every object of a resource (optionally in one namespace) lives.
pub fn resource_prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("/registry/{resource}/{namespace}/"),
        None => format!("/registry/{resource}/"),
    }
}
