//! Keys of the `meta` table. Values are u64 little-endian.

/// The revision of the last commit; written in the same batch as the commit itself.
pub const CURRENT: &[u8] = b"current_revision";
/// History at and before this revision has been compacted away.
pub const COMPACTED: &[u8] = b"compacted_revision";

pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}
