//! Watch event types shared by the store, the API and every client.

/// What happened to an object, as in a Kubernetes watch event's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// A progress notification: no object changed, but history up to the given revision
    /// has been delivered.
    Bookmark,
}

impl EventType {
    /// The wire name (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        }
    }
}
