//! A lookup index over the generated schema, built once on first use: each message's
//! fields in JSON-name order, so an object's (sorted) keys meet their fields in one
//! merge pass, and every message-typed field resolved to its message, so encoding
//! never searches the table by name.

use super::{schema, Field, Kind, Message};
use std::sync::OnceLock;

/// The apimachinery types whose JSON form is not their protobuf structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Special {
    Quantity,
    IntOrString,
    Time,
    Duration,
    /// RawExtension and FieldsV1: embedded JSON bytes.
    RawJson,
}

pub(super) struct Entry {
    /// Fields with a JSON name, sorted by it, with the message a message-typed field
    /// (or a map of messages) holds.
    pub named: Vec<(&'static Field, Option<usize>)>,
    /// Go structs embedded inline: their fields are this object's.
    pub inline: Vec<(&'static Field, usize)>,
    pub special: Option<Special>,
}

/// Position of a message in the (name-sorted) table.
pub(super) fn position(name: &str) -> Option<usize> {
    schema::MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok()
}

fn special(name: &str) -> Option<Special> {
    Some(match name {
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => Special::Quantity,
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" | "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => Special::Time,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
        "io.k8s.apimachinery.pkg.runtime.RawExtension" | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            Special::RawJson
        }
        _ => return None,
    })
}

fn child(kind: &Kind) -> Option<usize> {
    match kind {
        Kind::Message(name) => position(name),
        Kind::Map(value) => child(value),
        _ => None,
    }
}

fn entry(message: &'static Message) -> Entry {
    let mut named = Vec::new();
    let mut inline = Vec::new();
    for field in message.fields {
        match (field.json.is_empty(), child(&field.kind)) {
            (true, Some(target)) => inline.push((field, target)),
            (true, None) => {}
            (false, target) => named.push((field, target)),
        }
    }
    named.sort_by(|a, b| a.0.json.cmp(b.0.json));
    Entry { named, inline, special: special(message.name) }
}

/// The index entry of every message, in table order.
pub(super) fn entries() -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| schema::MESSAGES.iter().map(entry).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_in_json_order_and_targets_resolve() {
        let pod_spec = &entries()[position("io.k8s.api.core.v1.PodSpec").unwrap()];
        assert!(pod_spec.named.windows(2).all(|w| w[0].0.json < w[1].0.json));
        let (_, containers) = pod_spec.named.iter().find(|(f, _)| f.json == "containers").unwrap();
        assert_eq!(schema::MESSAGES[containers.unwrap()].name, "io.k8s.api.core.v1.Container");
        let probe = &entries()[position("io.k8s.api.core.v1.Probe").unwrap()];
        assert_eq!(schema::MESSAGES[probe.inline[0].1].name, "io.k8s.api.core.v1.ProbeHandler");
        let time = &entries()[position("io.k8s.apimachinery.pkg.apis.meta.v1.Time").unwrap()];
        assert_eq!(time.special, Some(Special::Time));
    }
}
