//! What can go wrong in the store. The API server maps each variant to a Kubernetes
//! `Status` at its edge; the store itself knows nothing of HTTP.

use crate::backend::BackendError;
use crate::codec::Corrupt;
use keelson_engine::Revision;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    /// The precondition on the key's mod revision did not hold (optimistic concurrency).
    #[error("conflict on {key}: expected mod revision {expected}, found {found}")]
    Conflict { key: String, expected: Revision, found: Revision },
    /// History at or before `requested` is gone: compacted (`410 Gone` at the API).
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted { requested: Revision, compacted: Revision },
    /// A live watcher fell further behind than the in-memory ring holds; it must re-list.
    #[error("watcher fell behind: next revision {cursor} is older than the oldest buffered {oldest}")]
    WatcherLagged { cursor: Revision, oldest: Revision },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    /// The commit queue is full: the caller should retry later (`429` at the API).
    #[error("the store's commit queue is full")]
    Busy,
    #[error("the store is closed")]
    Closed,
    #[error("invalid key {0:?}: keys are non-empty and at most 8 KiB")]
    InvalidKey(String),
    #[error("value of {len} bytes exceeds the limit of {limit}")]
    ValueTooLarge { len: usize, limit: usize },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// A sealed value does not open (see `seal`).
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
}

impl StoreError {
    /// Whether this error means "your revision is too old; re-list" (`410` at the API).
    pub fn is_expired(&self) -> bool {
        matches!(self, StoreError::Compacted { .. } | StoreError::WatcherLagged { .. })
    }
}

/// A failure of the whole commit (the disk), shared by every write in the batch.
pub(crate) fn batch_failure(error: &BackendError) -> StoreError {
    StoreError::Backend(BackendError::Io(std::io::Error::other(error.to_string())))
}
