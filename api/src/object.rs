//! Objects as the server handles them: JSON values with Kubernetes metadata.
//!
//! The stored form of every object is its canonical JSON with `apiVersion`, `kind` and
//! `metadata` first and **no** `metadata.resourceVersion`: the revision is the store's
//! mod revision, known only after commit. Readers splice it in with
//! [`with_resource_version`] without parsing the object, which is what lets GET, LIST
//! and watch serve stored bytes as they are.

use serde_json::{Map, Value};

/// Encodes an object with `apiVersion`, `kind` and `metadata` leading (the layout
/// [`with_resource_version`] relies on). `metadata.resourceVersion` must be absent.
pub fn encode(object: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    encode_into(object, &mut out);
    out
}

/// The fields a stored object leads with, in this order; the rest follow sorted.
pub const HEAD: [&str; 3] = ["apiVersion", "kind", "metadata"];

pub fn encode_into(object: &Value, out: &mut Vec<u8>) {
    let Some(map) = object.as_object() else {
        // Not an object: only reachable through a bug; keep the bytes valid JSON.
        serde_json::to_writer(&mut *out, object).expect("writing to a Vec cannot fail");
        return;
    };
    out.push(b'{');
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, key: &str, value: &Value| {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, key).expect("writing to a Vec cannot fail");
        out.push(b':');
        serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
    };
    for key in HEAD {
        match (key, map.get(key)) {
            (_, Some(value)) => field(out, key, value),
            // Metadata is always present so the splice point always exists.
            ("metadata", None) => field(out, key, &Value::Object(Map::new())),
            _ => {}
        }
    }
    for (key, value) in map {
        if !HEAD.contains(&key.as_str()) {
            field(out, key, value);
        }
    }
    out.push(b'}');
}

const METADATA_OPEN: &[u8] = b"\"metadata\":{";

/// Appends the stored object `stored` to `out` with `metadata.resourceVersion` set to
/// `revision`. Stored objects come from [`encode`], so the first `"metadata":{` is the
/// top-level one (apiVersion and kind precede it and are plain strings).
pub fn with_resource_version(stored: &[u8], revision: u64, out: &mut Vec<u8>) {
    let Some(at) = find(stored, METADATA_OPEN) else {
        out.extend_from_slice(stored);
        return;
    };
    let split = at + METADATA_OPEN.len();
    out.extend_from_slice(&stored[..split]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(itoa::Buffer::new().format(revision).as_bytes());
    out.push(b'"');
    if stored.get(split) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&stored[split..]);
}

/// `with_resource_version` into a fresh buffer.
pub fn stamped(stored: &[u8], revision: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + 32);
    with_resource_version(stored, revision, &mut out);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    // Objects start `{"apiVersion":"…","kind":"…",`: the needle is within the first
    // few hundred bytes, so a plain scan is fastest.
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a stored object and sets its `resourceVersion` (for paths that edit it).
pub fn decode_stored(stored: &[u8], revision: u64) -> Result<Value, serde_json::Error> {
    let mut value: Value = serde_json::from_slice(stored)?;
    set_str(&mut value, &["metadata", "resourceVersion"], &revision.to_string());
    Ok(value)
}

/// The object at `path`, if every step is an object.
pub fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

pub fn get_str<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(value, path).and_then(Value::as_str)
}

/// The object at `path`, created (as empty objects) where missing or not an object.
pub fn entry<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Value {
    path.iter().fold(value, |v, key| {
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        v.as_object_mut().expect("made an object above").entry(key.to_string()).or_insert(Value::Null)
    })
}

/// The list at `path`, created empty where missing or not a list.
pub fn array_entry<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Vec<Value> {
    let list = entry(value, path);
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    list.as_array_mut().expect("made an array above")
}

pub fn set(value: &mut Value, path: &[&str], new: Value) {
    *entry(value, path) = new;
}

pub fn set_str(value: &mut Value, path: &[&str], new: &str) {
    set(value, path, Value::String(new.to_string()));
}

/// Removes the field at `path`, returning it.
pub fn remove(value: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut v = value;
    for key in parents {
        v = v.get_mut(key)?;
    }
    v.as_object_mut()?.remove(*last)
}

/// `metadata.name`, or "" when absent.
pub fn name(value: &Value) -> &str {
    get_str(value, &["metadata", "name"]).unwrap_or("")
}

pub fn namespace(value: &Value) -> Option<&str> {
    get_str(value, &["metadata", "namespace"]).filter(|s| !s.is_empty())
}

/// The current time as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encode_puts_the_head_first_and_splice_sets_the_revision() {
        let object = json!({"data": {"a": "\"metadata\":{"}, "kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "x"}});
        let stored = encode(&object);
        assert!(stored.starts_with(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}"#));
        let served: Value = serde_json::from_slice(&stamped(&stored, 42)).unwrap();
        assert_eq!(served["metadata"]["resourceVersion"], "42");
        assert_eq!(served["metadata"]["name"], "x");
        assert_eq!(served["data"]["a"], "\"metadata\":{");
    }

    #[test]
    fn splice_into_empty_metadata() {
        let stored = encode(&json!({"apiVersion": "v1", "kind": "Namespace"}));
        let served: Value = serde_json::from_slice(&stamped(&stored, 7)).unwrap();
        assert_eq!(served, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"resourceVersion": "7"}}));
    }

    #[test]
    fn paths() {
        let mut v = json!({"metadata": {"labels": {"a": "b"}}});
        assert_eq!(get_str(&v, &["metadata", "labels", "a"]), Some("b"));
        set_str(&mut v, &["spec", "nodeName"], "n1");
        assert_eq!(v["spec"]["nodeName"], "n1");
        assert_eq!(remove(&mut v, &["metadata", "labels", "a"]), Some(json!("b")));
        assert_eq!(remove(&mut v, &["nope", "x"]), None);
        assert!(now_rfc3339().ends_with('Z'));
    }
}
