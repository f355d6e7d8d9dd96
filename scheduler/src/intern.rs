//! String interning: every label key and value, taint, image and namespace the
//! scheduler sees becomes a `u32`, so the hot path compares integers, never strings.
//!
//! Ids are never recycled: the set of distinct strings in a cluster is small next to
//! the number of objects, and stable ids let compiled pod queries outlive updates.

use std::collections::HashMap;

/// An interned string's id. [`NONE`] is the id of no string at all.
pub type StrId = u32;

/// The id no interned string has: a compiled query uses it for a string the cluster has
/// never seen, which therefore matches nothing.
pub const NONE: StrId = u32::MAX;

#[derive(Default, Debug)]
pub struct Interner {
    ids: HashMap<Box<str>, StrId>,
    strings: Vec<Box<str>>,
}

impl Interner {
    /// The id of `text`, adding it if new.
    pub fn intern(&mut self, text: &str) -> StrId {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = StrId::try_from(self.strings.len()).expect("fewer than 2^32 distinct strings");
        self.strings.push(text.into());
        self.ids.insert(text.into(), id);
        id
    }

    /// The id of `text` if it was ever interned, else [`NONE`].
    pub fn lookup(&self, text: &str) -> StrId {
        self.ids.get(text).copied().unwrap_or(NONE)
    }

    pub fn resolve(&self, id: StrId) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_unknown_strings_are_none() {
        let mut interner = Interner::default();
        let zone = interner.intern("zone");
        assert_eq!(interner.intern("zone"), zone);
        assert_ne!(interner.intern("region"), zone);
        assert_eq!(interner.lookup("zone"), zone);
        assert_eq!(interner.lookup("rack"), NONE);
        assert_eq!(interner.resolve(zone), "zone");
    }
}
