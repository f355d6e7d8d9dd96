//! `Revision`: the position of a change in the registry's single, global history.
//!
//! Every committed mutation gets the next revision; revisions are consecutive (no gaps)
//! and never reused, so "the state at revision R" is well defined: every change with a
//! revision ≤ R applied, none after. A Kubernetes `resourceVersion` is the decimal form
//! of a revision, so clients may compare them only for equality, as Kubernetes asks,
//! while keelson itself relies on the order.
//!
//! The byte encoding is big-endian, so byte order equals numeric order: a RocksDB range
//! over encoded revisions walks history in commit order.

use std::fmt;
use std::str::FromStr;

/// A point in the registry's history. `Revision::ZERO` means "before anything".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

impl Revision {
    /// Before the first write; the revision of an empty registry.
    pub const ZERO: Revision = Revision(0);
    /// Length of [`Revision::to_bytes`].
    pub const ENCODED_LEN: usize = 8;

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The revision that follows this one.
    pub const fn next(self) -> Revision {
        Revision(self.0 + 1)
    }

    /// Order-preserving encoding: `a < b` ⇔ `a.to_bytes() < b.to_bytes()`.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Decodes [`Revision::to_bytes`]; `None` unless `bytes` is exactly 8 long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Revision> {
        let array: [u8; 8] = bytes.try_into().ok()?;
        Some(Revision(u64::from_be_bytes(array)))
    }
}

impl fmt::Display for Revision {
    /// The `resourceVersion` form: plain decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A `resourceVersion` that is not a revision keelson issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource version {0:?}: expected a non-negative decimal integer")]
pub struct InvalidRevision(pub String);

impl FromStr for Revision {
    type Err = InvalidRevision;

    /// Parses a `resourceVersion`. Only plain ASCII digits are accepted (no sign, no
    /// spaces), so every revision has exactly one textual form besides leading zeros.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidRevision(text.to_owned()));
        }
        text.parse::<u64>().map(Revision).map_err(|_| InvalidRevision(text.to_owned()))
    }
}

impl From<u64> for Revision {
    fn from(value: u64) -> Self {
        Revision(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_round_trip() {
        for value in [0u64, 1, 42, u64::MAX] {
            let rev = Revision(value);
            assert_eq!(rev.to_string().parse::<Revision>(), Ok(rev));
        }
    }

    #[test]
    fn rejects_non_decimal() {
        for text in ["", "-1", "+1", " 1", "1a", "0x10", "18446744073709551616"] {
            assert!(text.parse::<Revision>().is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn bytes_round_trip_and_length() {
        assert_eq!(Revision::from_bytes(&Revision(7).to_bytes()), Some(Revision(7)));
        assert_eq!(Revision::from_bytes(&[1, 2, 3]), None);
    }

    proptest! {
        #[test]
        fn encoding_preserves_order(a: u64, b: u64) {
            prop_assert_eq!(a.cmp(&b), Revision(a).to_bytes().cmp(&Revision(b).to_bytes()));
        }
    }
}
