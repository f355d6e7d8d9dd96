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

/// One committed change, as kept in the log.
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

pub fn encode_record(record: &Record, out: &mut BytesMut) {
    out.put_u8(if record.value.is_some() { TAG_LIVE } else { TAG_TOMBSTONE });
    out.put_u64_le(record.create_revision.get());
    out.put_u64_le(record.mod_revision.get());
    out.put_u64_le(record.version);
    if let Some(value) = &record.value {
        out.put_u32_le(value.len() as u32);
        out.put_slice(value);
    }
}

/// Decodes a record; `value` bytes are sliced from `bytes` without copying.
pub fn decode_record(bytes: &mut Bytes) -> Result<Record, Corrupt> {
    const WHAT: Corrupt = Corrupt { what: "record" };
    if bytes.remaining() < 25 {
        return Err(WHAT);
    }
    let tag = bytes.get_u8();
    let create_revision = Revision(bytes.get_u64_le());
    let mod_revision = Revision(bytes.get_u64_le());
    let version = bytes.get_u64_le();
    let value = match tag {
        TAG_LIVE => Some(take_bytes(bytes).ok_or(WHAT)?),
        TAG_TOMBSTONE => None,
        _ => return Err(WHAT),
    };
    Ok(Record { create_revision, mod_revision, version, value })
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
    8 + 4 + entry.key.len() + record_len(&entry.record) + 1 + entry.prev.as_ref().map_or(0, record_len)
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
    encode_record(&entry.record, out);
    match &entry.prev {
        Some(prev) => {
            out.put_u8(1);
            encode_record(prev, out);
        }
        None => out.put_u8(0),
    }
}

pub fn decode_log_entry(mut bytes: Bytes) -> Result<LogEntry, Corrupt> {
    const WHAT: Corrupt = Corrupt { what: "log entry" };
    if bytes.remaining() < 8 {
        return Err(WHAT);
    }
    let committed_at_ms = bytes.get_u64_le();
    let key = take_bytes(&mut bytes).ok_or(WHAT)?;
    let record = decode_record(&mut bytes)?;
    if bytes.remaining() < 1 {
        return Err(WHAT);
    }
    let prev = match bytes.get_u8() {
        0 => None,
        1 => Some(decode_record(&mut bytes)?),
        _ => return Err(WHAT),
    };
    Ok(LogEntry { key, record, prev, committed_at_ms })
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
    fn log_entries_round_trip() {
        let entry = LogEntry {
            key: Bytes::from_static(b"/registry/pods/a"),
            record: live(b"new"),
            prev: Some(live(b"old")),
            committed_at_ms: 77,
        };
        let mut out = BytesMut::new();
        encode_log_entry(&entry, &mut out);
        assert_eq!(decode_log_entry(out.freeze()).unwrap(), entry);
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
