//! Byte layouts of what the store persists.
//!
//! Tables (RocksDB column families):
//! - `objects`: key → [`Record`]: the latest state of each key, or a tombstone kept until
//!   compaction passes its revision (so reads at older revisions can walk back).
//! - `log`: revision (8 bytes, big-endian) → [`LogEntry`]: every committed change, in
//!   revision order, until compacted.
//! - `tombstones`: revision → key, so compaction finds the tombstones it may drop
//!   without scanning every object.
//! - `meta`: fixed keys → u64 (the current and the compacted revision).
//!
//! Each value is written once while it is current and once when it is superseded: a
//! log entry holds the state *before* its change in full, but the change's own value
//! only by reference. That value is in `objects` while it is the key's newest, and in
//! the next change's `prev` after. (Before this layout, log entries carried the new
//! value too; [`decode_log_entry`] still reads those.) Per placed pod (create, event,
//! bind) that is three pod-sized and one event-sized value written instead of five and
//! two.
//!
//! Layouts are little-endian fixed fields followed by length-prefixed byte strings; a
//! decoder checks every length and answers `Corrupt` rather than panicking.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keelson_engine::Revision;

/// The state of one key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Revision of the create that started this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last change (for a tombstone: of the delete).
    pub mod_revision: Revision,
    /// Number of changes since creation; 1 after create.
    pub version: u64,
    /// `None` for a tombstone: the key was deleted at `mod_revision`.
    pub value: Option<Bytes>,
}

impl Record {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// One committed change, as the committer writes it to the log (the new record's value
/// is left out: see the module's documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub key: Bytes,
    /// The state after the change (a tombstone for a delete).
    pub record: Record,
    /// The state before the change: `None` when the key had no history left (never
    /// existed, or its tombstone was compacted).
    pub prev: Option<Record>,
    /// Commit time, milliseconds since the Unix epoch (drives age-based compaction).
    pub committed_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt {what} in the store")]
pub struct Corrupt {
    pub what: &'static str,
}

const TAG_LIVE: u8 = 1;
const TAG_TOMBSTONE: u8 = 2;
/// A live record whose value is not stored with it (a log entry's new state).
const TAG_LIVE_UNLOGGED: u8 = 3;

/// One change read back from the log: the new state's header, and its value only if
/// the entry was written before values were left out of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    pub key: Bytes,
    pub record: RecordHeader,
    /// The new value, from an entry in the older layout; `None` otherwise (and for a
    /// delete). [`crate::read::change_values`] finds the value of the newer ones.
    pub value: Option<Bytes>,
    /// The state before the change, in full.
    pub prev: Option<Record>,
    pub committed_at_ms: u64,
}

pub fn encode_record(record: &Record, out: &mut BytesMut) {
    encode_fixed(record, if record.value.is_some() { TAG_LIVE } else { TAG_TOMBSTONE }, out);
    if let Some(value) = &record.value {
        out.put_u32_le(value.len() as u32);
        out.put_slice(value);
    }
}

/// A record's fixed fields (25 bytes), under `tag`.
fn encode_fixed(record: &Record, tag: u8, out: &mut BytesMut) {
    out.put_u8(tag);
    out.put_u64_le(record.create_revision.get());
    out.put_u64_le(record.mod_revision.get());
    out.put_u64_le(record.version);
}

/// Decodes a record; `value` bytes are sliced from `bytes` without copying.
pub fn decode_record(bytes: &mut Bytes) -> Result<Record, Corrupt> {
    let (header, value) = decode_header_and_value(bytes, false)?;
    Ok(Record {
        create_revision: header.create_revision,
        mod_revision: header.mod_revision,
        version: header.version,
        value,
    })
}

/// Decodes a record's fixed fields and its value if it carries one. A live record
/// without its value is accepted only where `unlogged_allowed` (a log entry's new state).
fn decode_header_and_value(
    bytes: &mut Bytes,
    unlogged_allowed: bool,
) -> Result<(RecordHeader, Option<Bytes>), Corrupt> {
    const WHAT: Corrupt = Corrupt { what: "record" };
    if bytes.remaining() < 25 {
        return Err(WHAT);
    }
    let tag = bytes.get_u8();
    let create_revision = Revision(bytes.get_u64_le());
    let mod_revision = Revision(bytes.get_u64_le());
    let version = bytes.get_u64_le();
    let (tombstone, value) = match tag {
        TAG_LIVE => (false, Some(take_bytes(bytes).ok_or(WHAT)?)),
        TAG_TOMBSTONE => (true, None),
        TAG_LIVE_UNLOGGED if unlogged_allowed => (false, None),
        _ => return Err(WHAT),
    };
    Ok((RecordHeader { create_revision, mod_revision, version, tombstone }, value))
}

/// A record without its value: what the key index keeps and what counting needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: u64,
    pub tombstone: bool,
}

impl RecordHeader {
    pub fn of(record: &Record) -> RecordHeader {
        RecordHeader {
            create_revision: record.create_revision,
            mod_revision: record.mod_revision,
            version: record.version,
            tombstone: record.is_tombstone(),
        }
    }

    pub fn is_live(&self) -> bool {
        !self.tombstone
    }
}

/// Decodes a record's fixed fields, without touching its value.
pub fn decode_record_header(bytes: &[u8]) -> Result<RecordHeader, Corrupt> {
    const WHAT: Corrupt = Corrupt { what: "record" };
    let header: &[u8; 25] = bytes.get(..25).and_then(|h| h.try_into().ok()).ok_or(WHAT)?;
    let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
    let tombstone = match header[0] {
        TAG_LIVE => false,
        TAG_TOMBSTONE => true,
        _ => return Err(WHAT),
    };
    Ok(RecordHeader {
        create_revision: Revision(field(1)),
        mod_revision: Revision(field(9)),
        version: field(17),
        tombstone,
    })
}

/// Bytes [`encode_record`] writes for `record`.
pub fn record_len(record: &Record) -> usize {
    25 + record.value.as_ref().map_or(0, |v| 4 + v.len())
}

/// Bytes [`encode_log_entry`] writes for `entry`.
pub fn log_entry_len(entry: &LogEntry) -> usize {
    8 + 4 + entry.key.len() + 25 + 1 + entry.prev.as_ref().map_or(0, record_len)
}

fn take_bytes(bytes: &mut Bytes) -> Option<Bytes> {
    if bytes.remaining() < 4 {
        return None;
    }
    let len = bytes.get_u32_le() as usize;
    (bytes.remaining() >= len).then(|| bytes.split_to(len))
}

pub fn encode_log_entry(entry: &LogEntry, out: &mut BytesMut) {
    out.put_u64_le(entry.committed_at_ms);
    out.put_u32_le(entry.key.len() as u32);
    out.put_slice(&entry.key);
    let tag = if entry.record.value.is_some() { TAG_LIVE_UNLOGGED } else { TAG_TOMBSTONE };
    encode_fixed(&entry.record, tag, out);
    match &entry.prev {
        Some(prev) => {
            out.put_u8(1);
            encode_record(prev, out);
        }
        None => out.put_u8(0),
    }
}

pub fn decode_log_entry(mut bytes: Bytes) -> Result<LoggedChange, Corrupt> {
    const WHAT: Corrupt = Corrupt { what: "log entry" };
    if bytes.remaining() < 8 {
        return Err(WHAT);
    }
    let committed_at_ms = bytes.get_u64_le();
    let key = take_bytes(&mut bytes).ok_or(WHAT)?;
    let (record, value) = decode_header_and_value(&mut bytes, true)?;
    if bytes.remaining() < 1 {
        return Err(WHAT);
    }
    let prev = match bytes.get_u8() {
        0 => None,
        1 => Some(decode_record(&mut bytes)?),
        _ => return Err(WHAT),
    };
    Ok(LoggedChange { key, record, value, prev, committed_at_ms })
}

/// The first key after every key that starts with `prefix` (`None`: no upper bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(value: &'static [u8]) -> Record {
        Record {
            create_revision: Revision(3),
            mod_revision: Revision(9),
            version: 4,
            value: Some(Bytes::from_static(value)),
        }
    }

    #[test]
    fn records_round_trip() {
        for record in [live(b"hello"), live(b""), Record { value: None, ..live(b"") }] {
            let mut out = BytesMut::new();
            encode_record(&record, &mut out);
            assert_eq!(decode_record(&mut out.freeze()).unwrap(), record);
        }
    }

    #[test]
    fn meta_decoding_and_lengths_agree_with_encoding() {
        let record = live(b"hello");
        let mut out = BytesMut::new();
        encode_record(&record, &mut out);
        assert_eq!(out.len(), record_len(&record));
        let header = decode_record_header(&out).unwrap();
        assert_eq!(header, RecordHeader::of(&record));
        assert!(header.is_live());
        let entry =
            LogEntry { key: Bytes::from_static(b"/k"), record: record.clone(), prev: Some(record), committed_at_ms: 1 };
        let mut out = BytesMut::new();
        encode_log_entry(&entry, &mut out);
        assert_eq!(out.len(), log_entry_len(&entry));
    }

    #[test]
    fn log_entries_round_trip_without_the_new_value() {
        let entry = LogEntry {
            key: Bytes::from_static(b"/registry/pods/a"),
            record: live(b"new"),
            prev: Some(live(b"old")),
            committed_at_ms: 77,
        };
        let mut out = BytesMut::new();
        encode_log_entry(&entry, &mut out);
        let change = decode_log_entry(out.freeze()).unwrap();
        let expected = LoggedChange {
            key: entry.key.clone(),
            record: RecordHeader::of(&entry.record),
            value: None,
            prev: entry.prev.clone(),
            committed_at_ms: 77,
        };
        assert_eq!(change, expected);
        // A delete's entry: the tombstone, and the last state in full.
        let delete = LogEntry { record: Record { value: None, ..live(b"") }, ..entry };
        let mut out = BytesMut::new();
        encode_log_entry(&delete, &mut out);
        let change = decode_log_entry(out.freeze()).unwrap();
        assert!(change.record.tombstone);
        assert_eq!(change.prev.and_then(|p| p.value).as_deref(), Some(&b"old"[..]));
    }

    #[test]
    fn log_entries_in_the_older_layout_still_carry_their_value() {
        let (record, prev) = (live(b"new"), live(b"old"));
        let mut out = BytesMut::new();
        out.put_u64_le(5);
        out.put_u32_le(2);
        out.put_slice(b"/k");
        encode_record(&record, &mut out);
        out.put_u8(1);
        encode_record(&prev, &mut out);
        let change = decode_log_entry(out.freeze()).unwrap();
        assert_eq!(change.record, RecordHeader::of(&record));
        assert_eq!(change.value.as_deref(), Some(&b"new"[..]));
        assert_eq!(change.prev, Some(prev));
    }

    #[test]
    fn only_a_log_entry_may_leave_its_value_out() {
        let entry = LogEntry { key: Bytes::from_static(b"k"), record: live(b"v"), prev: None, committed_at_ms: 1 };
        let mut out = BytesMut::new();
        encode_log_entry(&entry, &mut out);
        // The new state's bytes start after the time, the key's length and the key.
        let mut record = out.freeze().slice(8 + 4 + 1..8 + 4 + 1 + 25);
        assert!(decode_record(&mut record.clone()).is_err());
        assert!(decode_record_header(&record).is_err());
        assert_eq!(record.get_u8(), TAG_LIVE_UNLOGGED);
    }

    #[test]
    fn truncated_input_is_corrupt_not_a_panic() {
        let entry = LogEntry { key: Bytes::from_static(b"k"), record: live(b"value"), prev: None, committed_at_ms: 1 };
        let mut out = BytesMut::new();
        encode_log_entry(&entry, &mut out);
        let full = out.freeze();
        for len in 0..full.len() {
            assert!(decode_log_entry(full.slice(..len)).is_err(), "prefix of {len} bytes decoded");
        }
    }

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
