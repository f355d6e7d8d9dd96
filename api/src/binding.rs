//! `pods/binding` as an edit of the stored pod's bytes.
//!
//! Binding is the scheduler's hot path: one write per placed pod. It changes two
//! things, `spec.nodeName` and the `PodScheduled` condition, yet decoding the whole pod
//! into a `serde_json::Value` tree, cloning it and encoding it again cost more than the
//! rest of the request. Here only the three levels the edit touches are split into
//! their fields (the object, its `spec` and its `metadata`), each field kept as the raw
//! bytes it was stored as; only `status` (a handful of fields) is decoded. The stored
//! layout (see [`crate::object`]) keeps `apiVersion`, `kind` and `metadata` first, and
//! the edit keeps that; for a pod whose other keys are sorted, the result is byte for
//! byte what encoding the edited `Value` would give.

use crate::object;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Why a pod cannot be bound.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `spec.nodeName` is already set, to this node.
    AlreadyAssigned(String),
    /// The pod has a deletion timestamp.
    Terminating,
    /// The Binding names a pod UID (as the scheduler's do) that is not the stored
    /// pod's: the pod was deleted and created again under the same name.
    UidMismatch { expected: String, actual: String },
    /// The stored bytes are not an object of the stored layout.
    Malformed(String),
}

/// The stored pod `stored` bound to `node`, its `PodScheduled` condition (any earlier
/// one replaced) stamped `now`; `uid`, when the Binding gives one, must be the pod's.
pub fn bind_stored(stored: &[u8], node: &str, now: &str, uid: Option<&str>) -> Result<Vec<u8>, Refusal> {
    let top = fields(stored)?;
    let metadata = field(&top, "metadata").map(|raw| fields(raw.get().as_bytes())).transpose()?.unwrap_or_default();
    let string = |raw: Option<&RawValue>| -> String {
        raw.and_then(|raw| serde_json::from_str(raw.get()).ok()).unwrap_or_default()
    };
    if let Some(expected) = uid.filter(|u| !u.is_empty()) {
        let actual = string(field(&metadata, "uid"));
        if actual != expected {
            return Err(Refusal::UidMismatch { expected: expected.to_owned(), actual });
        }
    }
    let spec = field(&top, "spec").map(|raw| fields(raw.get().as_bytes())).transpose()?.unwrap_or_default();
    let current = string(field(&spec, "nodeName"));
    if !current.is_empty() {
        return Err(Refusal::AlreadyAssigned(current));
    }
    if field(&metadata, "deletionTimestamp").is_some_and(|raw| raw.get() != "null") {
        return Err(Refusal::Terminating);
    }
    let mut status = match field(&top, "status") {
        Some(raw) => serde_json::from_str::<Value>(raw.get()).map_err(|e| Refusal::Malformed(e.to_string()))?,
        None => Value::Object(Map::new()),
    };
    let list = object::array_entry(&mut status, &["conditions"]);
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
    list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));

    let node = serde_json::to_string(node).expect("a string encodes");
    let mut new_spec = Vec::with_capacity(stored.len());
    write_object(&mut new_spec, &spec, &[], &[("nodeName", node.as_bytes())]);
    let status = serde_json::to_vec(&status).expect("a value encodes");
    let mut out = Vec::with_capacity(stored.len() + 128);
    write_object(&mut out, &top, &object::HEAD, &[("spec", &new_spec), ("status", &status)]);
    Ok(out)
}

/// The raw value of the field `name`, if present.
fn field<'a>(fields: &[(Cow<'_, str>, &'a RawValue)], name: &str) -> Option<&'a RawValue> {
    fields.iter().find(|(key, _)| key == name).map(|(_, raw)| *raw)
}

/// An object's fields in stored order, each value as its raw bytes.
fn fields(bytes: &[u8]) -> Result<Vec<(Cow<'_, str>, &RawValue)>, Refusal> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_map(FieldsVisitor).map_err(|e| Refusal::Malformed(e.to_string()))
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            out.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(out)
    }
}

/// Writes `fields` as an object with each of `sets` (sorted by name) put in: in place
/// of the field of its name wherever that is, or else inserted where sorted order puts
/// it among the fields not in `head` (which stay first, in their order). Stored keys
/// are sorted when the object was encoded from a JSON value, and in its type's field
/// order when it was encoded typed: mostly, but not necessarily, sorted too.
fn write_object(out: &mut Vec<u8>, fields: &[(Cow<'_, str>, &RawValue)], head: &[&str], sets: &[(&str, &[u8])]) {
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, key: &str, raw: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).expect("writing to a Vec cannot fail");
        out.push(b':');
        out.extend_from_slice(raw);
    };
    let present = |name: &str| fields.iter().any(|(key, _)| key == name);
    let mut inserted = sets.iter().filter(|(name, _)| !present(name)).peekable();
    out.push(b'{');
    for (key, raw) in fields {
        let key = key.as_ref();
        if let Some((_, value)) = sets.iter().find(|(name, _)| *name == key) {
            put(out, key, value);
            continue;
        }
        if !head.contains(&key) {
            while let Some((name, value)) = inserted.next_if(|(name, _)| *name < key) {
                put(out, name, value);
            }
        }
        put(out, key, raw.get().as_bytes());
    }
    for (name, value) in inserted {
        put(out, name, value);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What binding does to a decoded pod: the edit the byte path must reproduce.
    fn bind_value(stored: &[u8], node: &str, now: &str) -> Vec<u8> {
        let mut pod: Value = serde_json::from_slice(stored).unwrap();
        object::set_str(&mut pod, &["spec", "nodeName"], node);
        let list = object::array_entry(&mut pod, &["status", "conditions"]);
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        object::encode(&pod)
    }

    fn stored(pod: Value) -> Vec<u8> {
        object::encode(&pod)
    }

    #[test]
    fn the_edit_is_what_editing_the_decoded_pod_gives() {
        let now = "2026-11-23T10:00:00Z";
        let pods = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "d",
                "labels": {"app.kubernetes.io/\"q\"": "x"}},
                "spec": {"containers": [{"name": "c", "image": "i"}], "schedulerName": "default-scheduler"},
                "status": {"phase": "Pending", "qosClass": "BestEffort"}}),
            // No status; a spec whose keys all sort after nodeName.
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"},
                "spec": {"priority": 0, "tolerations": []}}),
            // An earlier PodScheduled=False condition is replaced; an empty nodeName set.
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"},
                "spec": {"affinity": {}, "nodeName": ""},
                "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
                    {"type": "Other", "status": "True"}]}}),
            // No spec at all, and fields sorting after status.
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d"}, "zz": 1}),
        ];
        for pod in pods {
            let bytes = stored(pod);
            let edited = bind_stored(&bytes, "node-7", now, None).unwrap();
            assert_eq!(
                String::from_utf8(edited).unwrap(),
                String::from_utf8(bind_value(&bytes, "node-7", now)).unwrap()
            );
        }
    }

    #[test]
    fn fields_out_of_sorted_order_are_replaced_where_they_are() {
        // As a typed encoding may lay a pod out: spec's nodeName after a later key,
        // status before spec.
        let stored = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"status":{"phase":"Pending"},"spec":{"priority":0,"nodeName":"","containers":[]}}"#;
        let edited = bind_stored(stored, "node-7", "2026-11-24T00:00:00Z", None).unwrap();
        let text = String::from_utf8(edited.clone()).unwrap();
        assert_eq!(text.matches("nodeName").count(), 1, "{text}");
        assert_eq!(text.matches("\"status\"").count(), 2, "the pod's status and its condition's: {text}");
        let pod: Value = serde_json::from_slice(&edited).unwrap();
        assert_eq!(pod["spec"]["nodeName"], "node-7");
        assert_eq!(pod["spec"]["priority"], 0);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
        assert!(text.starts_with(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}"#), "{text}");
    }

    #[test]
    fn an_assigned_or_terminating_pod_is_refused() {
        let assigned = stored(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"nodeName": "n1"}}));
        assert_eq!(bind_stored(&assigned, "n2", "t", None), Err(Refusal::AlreadyAssigned("n1".into())));
        let deleting = stored(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "deletionTimestamp": "2026-11-23T10:00:00Z"}, "spec": {}}));
        assert_eq!(bind_stored(&deleting, "n2", "t", None), Err(Refusal::Terminating));
        let deletion_null = stored(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "deletionTimestamp": null}, "spec": {}}));
        assert!(bind_stored(&deletion_null, "n2", "t", None).is_ok());
        assert!(matches!(bind_stored(b"[1]", "n", "t", None), Err(Refusal::Malformed(_))));
        // A Binding for another pod of the same name.
        let pod =
            stored(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "uid": "u-2"}, "spec": {}}));
        assert!(bind_stored(&pod, "n", "t", Some("u-2")).is_ok());
        assert_eq!(
            bind_stored(&pod, "n", "t", Some("u-1")),
            Err(Refusal::UidMismatch { expected: "u-1".into(), actual: "u-2".into() })
        );
    }
}
