//! One entry point that feeds untrusted bytes to every decoder a request body, path or
//! query reaches before the store: body parsing (JSON and YAML), every kind's codec
//! (create and update), the three patch formats, paths, selectors and continue
//! tokens, and the protobuf encoding of what the codecs accept. The property: no
//! input panics. Used by `api/tests/fuzz.rs` (mutation fuzzing in the test suite)
//! and by the cargo-fuzz target in `fuzz/`.

use crate::filter::Filter;
use crate::kinds::Write;
use crate::patch;
use crate::resources::RESOURCES;
use crate::rest::parse_body;
use crate::route::{Query, Route};
use serde_json::Value;

/// Runs `data` through every decoder; returns how many accepted it (for coverage
/// statistics in tests). Panics only if a decoder has a bug.
pub fn exercise(data: &[u8]) -> usize {
    let mut accepted = 0;
    let text = String::from_utf8_lossy(data);
    if Route::parse(&text).is_ok() {
        accepted += 1;
    }
    let query = Query::parse(Some(&text));
    for info in RESOURCES.iter().take(12) {
        if Filter::parse(query.get("labelSelector").or(Some(&text)), query.get("fieldSelector"), info).is_ok() {
            accepted += 1;
        }
    }
    let mut bodies = Vec::new();
    for content_type in ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"] {
        if let Ok(value) = parse_body(Some(content_type), data) {
            bodies.push(value);
        }
    }
    for body in &bodies {
        accepted += admit_everywhere(body);
        let mut target = serde_json::json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}});
        patch::merge_patch(&mut target, body);
        if patch::strategic_merge(&mut target, body).is_ok() {
            accepted += 1;
        }
        if patch::json_patch(&mut target, body).is_ok() {
            accepted += 1;
        }
    }
    accepted
}

fn admit_everywhere(body: &Value) -> usize {
    let mut accepted = 0;
    for info in RESOURCES {
        let mut unknown = Vec::new();
        if let Ok(created) = info.codec.admit(body, Write::Create, Some(&mut unknown)) {
            accepted += 1;
            // What the server stores, it may answer in protobuf: encoding is total.
            let mut typed = created.clone();
            typed["apiVersion"] = info.api_version().into();
            typed["kind"] = info.kind.into();
            let _ = crate::protobuf::encode(&typed);
            // An accepted object must also be a valid "old" for itself.
            let _ = info.codec.admit(&created, Write::Update { old: &created }, None);
        }
        let _ = info.codec.admit(body, Write::Update { old: body }, None);
    }
    accepted
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_valid_pod_is_accepted_somewhere() {
        let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"d"},
            "spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        assert!(super::exercise(pod) > 0);
        super::exercise(b"\xff\xfe{[");
        super::exercise(b"");
    }
}
