//! Kubernetes protobuf responses: an object's JSON form encoded as the generated
//! protobuf of its kind, in the `k8s\0` + `runtime.Unknown` envelope, and watch
//! events in the raw, length-delimited form client-go's protobuf watch decoder reads.
//!
//! The walk is driven by the same field table the decoder uses, so the two are exact
//! inverses on everything the table describes: JSON presence becomes protobuf presence
//! (a pointer field set to `0` or `false` is written; an absent one is not), and the
//! apimachinery types with their own JSON form (Quantity, IntOrString, Time, Duration,
//! RawExtension, FieldsV1) are converted back here. A value the table cannot express
//! is an error, never a panic: the caller then answers in JSON, which every
//! Kubernetes client accepts as the alternative.

use super::index::{entries, Special};
use super::{position_for, Kind, ProtobufError, MAGIC, MAX_DEPTH};
use base64::Engine;
use serde_json::{Map, Value};

/// A protobuf byte writer.
#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    fn key(&mut self, tag: u32, wire: u8) {
        self.varint(u64::from(tag) << 3 | u64::from(wire));
    }

    fn length_delimited(&mut self, tag: u32, bytes: &[u8]) {
        self.key(tag, 2);
        self.varint(bytes.len() as u64);
        self.bytes.extend_from_slice(bytes);
    }

    /// Writes a nested message built by `build`, with its length before it.
    fn nested(
        &mut self,
        tag: u32,
        build: impl FnOnce(&mut Writer) -> Result<(), ProtobufError>,
    ) -> Result<(), ProtobufError> {
        self.key(tag, 2);
        // The length is not known until the message is written: write it into a
        // reserved one-byte slot, and widen the slot afterwards if it needs more.
        let slot = self.bytes.len();
        self.bytes.push(0);
        build(self)?;
        let len = self.bytes.len() - slot - 1;
        let mut prefix = Writer::default();
        prefix.varint(len as u64);
        self.bytes.splice(slot..slot + 1, prefix.bytes);
        Ok(())
    }
}

fn mismatch(what: &'static str) -> ProtobufError {
    ProtobufError::Malformed(what)
}

/// One value of `kind` as field `tag`; `child` is the message a message kind holds.
fn field_value(
    w: &mut Writer,
    tag: u32,
    kind: &Kind,
    child: Option<usize>,
    value: &Value,
    depth: usize,
) -> Result<(), ProtobufError> {
    match kind {
        Kind::String => w.length_delimited(tag, value.as_str().ok_or(mismatch("expected a string"))?.as_bytes()),
        Kind::Bytes => {
            let text = value.as_str().ok_or(mismatch("expected base64 bytes"))?;
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| mismatch("bytes are not base64"))?;
            w.length_delimited(tag, &bytes);
        }
        Kind::Int32 | Kind::Int64 => {
            let n = value.as_i64().ok_or(mismatch("expected an integer"))?;
            if matches!(kind, Kind::Int32) && i32::try_from(n).is_err() {
                return Err(mismatch("integer out of int32 range"));
            }
            w.key(tag, 0);
            // Negative values go on the wire sign-extended to 64 bits, as Go writes them.
            w.varint(n as u64);
        }
        Kind::Bool => {
            w.key(tag, 0);
            w.varint(u64::from(value.as_bool().ok_or(mismatch("expected a boolean"))?));
        }
        Kind::Double => {
            w.key(tag, 1);
            w.bytes.extend_from_slice(&value.as_f64().ok_or(mismatch("expected a number"))?.to_le_bytes());
        }
        Kind::Message(name) => {
            let child = child.ok_or_else(|| ProtobufError::UnknownKind(name.to_string()))?;
            w.nested(tag, |w| message_value(w, child, value, depth + 1))?
        }
        Kind::Map(_) => return Err(mismatch("a map inside a map")),
    }
    Ok(())
}

/// The body of the message at table position `at` for `value`.
fn message_value(w: &mut Writer, at: usize, value: &Value, depth: usize) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(mismatch("nested too deeply"));
    }
    if let Some(special) = entries()[at].special {
        return special_value(w, special, value);
    }
    fields(w, at, value.as_object().ok_or(mismatch("expected an object"))?, depth)
}

fn fields(w: &mut Writer, at: usize, object: &Map<String, Value>, depth: usize) -> Result<(), ProtobufError> {
    let entry = &entries()[at];
    for &(field, inner) in &entry.inline {
        // Embedded inline: the nested message is made of this object's fields.
        if entries()[inner].named.iter().any(|(f, _)| object.contains_key(f.json)) {
            w.nested(field.tag, |w| fields(w, inner, object, depth + 1))?;
        }
    }
    // The object's keys and the named fields are both sorted: one merge pass.
    let mut named = entry.named.iter().peekable();
    for (key, value) in object {
        while named.next_if(|(field, _)| field.json < key.as_str()).is_some() {}
        let Some(&(field, child)) = named.next_if(|(field, _)| field.json == key) else { continue };
        if value.is_null() {
            continue;
        }
        match &field.kind {
            Kind::Map(value_kind) => {
                for (key, entry) in value.as_object().ok_or(mismatch("expected a map"))? {
                    w.nested(field.tag, |w| {
                        w.length_delimited(1, key.as_bytes());
                        if !entry.is_null() {
                            field_value(w, 2, value_kind, child, entry, depth)?;
                        }
                        Ok(())
                    })?;
                }
            }
            kind if field.repeated => {
                for item in value.as_array().ok_or(mismatch("expected a list"))? {
                    field_value(w, field.tag, kind, child, item, depth)?;
                }
            }
            kind => field_value(w, field.tag, kind, child, value, depth)?,
        }
    }
    Ok(())
}

/// The apimachinery types whose JSON form is not their protobuf structure.
fn special_value(w: &mut Writer, special: Special, value: &Value) -> Result<(), ProtobufError> {
    match special {
        Special::Quantity => match value {
            Value::String(s) => w.length_delimited(1, s.as_bytes()),
            Value::Number(n) => w.length_delimited(1, n.to_string().as_bytes()),
            _ => return Err(mismatch("a quantity must be a string or a number")),
        },
        Special::IntOrString => match value {
            Value::String(s) => {
                w.key(1, 0);
                w.varint(1);
                w.length_delimited(3, s.as_bytes());
            }
            Value::Number(n) => {
                let n = n.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or(mismatch("int-or-string out of range"))?;
                w.key(1, 0);
                w.varint(0);
                w.key(2, 0);
                w.varint(n as i64 as u64);
            }
            _ => return Err(mismatch("expected an int or a string")),
        },
        Special::Time => {
            let text = value.as_str().ok_or(mismatch("a time must be a string"))?;
            let (seconds, nanos) = match utc_seconds(text) {
                Some(seconds) => (seconds, 0),
                None => {
                    let at: jiff::Timestamp = text.parse().map_err(|_| mismatch("a time is not RFC 3339"))?;
                    (at.as_second(), at.subsec_nanosecond())
                }
            };
            if seconds != 0 {
                w.key(1, 0);
                w.varint(seconds as u64);
            }
            if nanos != 0 {
                w.key(2, 0);
                w.varint(nanos as i64 as u64);
            }
        }
        Special::Duration => {
            let nanos = parse_go_duration(value.as_str().ok_or(mismatch("a duration must be a string"))?)
                .ok_or(mismatch("a duration is not in Go's form"))?;
            w.key(1, 0);
            w.varint(nanos as u64);
        }
        Special::RawJson => {
            let raw = serde_json::to_vec(value).map_err(|_| mismatch("embedded object"))?;
            w.length_delimited(1, &raw);
        }
    }
    Ok(())
}

/// Seconds since the epoch of a time in the form the server writes
/// (`2026-11-23T00:00:00Z`); `None` for any other form (parsed in full instead).
fn utc_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |n, d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days from the civil date (the proleptic Gregorian calendar), counted from a
    // March-based year so that the leap day falls at its end.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Parses Go's `time.Duration` text form (`1h2m3.5s`, `500ms`, `-3µs`) into nanoseconds.
fn parse_go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let nanos = total.round() as i64;
    Some(if negative { -nanos } else { nanos })
}

/// The table position of an object's message, from its `apiVersion`/`kind`.
fn message_of(value: &Value) -> Result<(&str, &str, usize), ProtobufError> {
    let api_version = value["apiVersion"].as_str().ok_or(mismatch("the object has no apiVersion"))?;
    let kind = value["kind"].as_str().ok_or(mismatch("the object has no kind"))?;
    let at =
        position_for(api_version, kind).ok_or_else(|| ProtobufError::UnknownKind(format!("{api_version}/{kind}")))?;
    Ok((api_version, kind, at))
}

/// Encodes an object (with `apiVersion` and `kind`) as a Kubernetes protobuf body:
/// the magic, then a `runtime.Unknown` holding the type and the object's encoding.
pub fn encode(value: &Value) -> Result<Vec<u8>, ProtobufError> {
    let (api_version, kind, _) = message_of(value)?;
    Ok(envelope(api_version, kind, &encode_body(value)?))
}

/// An object's own message, without the envelope: what a list holds per item, and
/// what the watch cache keeps for protobuf readers.
pub fn encode_body(value: &Value) -> Result<Vec<u8>, ProtobufError> {
    let (_, _, at) = message_of(value)?;
    let object = value.as_object().ok_or(mismatch("expected an object"))?;
    let mut w = Writer::default();
    fields(&mut w, at, object, 0)?;
    Ok(w.bytes)
}

/// The Kubernetes envelope around an encoded message of `api_version`/`kind`.
pub fn envelope(api_version: &str, kind: &str, body: &[u8]) -> Vec<u8> {
    let mut w = Writer { bytes: Vec::with_capacity(body.len() + api_version.len() + kind.len() + 16) };
    w.bytes.extend_from_slice(MAGIC);
    let mut type_meta = Writer::default();
    type_meta.length_delimited(1, api_version.as_bytes());
    type_meta.length_delimited(2, kind.as_bytes());
    w.length_delimited(1, &type_meta.bytes);
    w.length_delimited(2, body);
    w.bytes
}

/// A `<Kind>List` of items already encoded (their bodies), in its envelope.
pub fn list<'a>(
    api_version: &str,
    list_kind: &str,
    resource_version: &str,
    next_continue: Option<&str>,
    items: impl Iterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut body = Writer::default();
    let mut meta = Writer::default();
    meta.length_delimited(2, resource_version.as_bytes());
    if let Some(token) = next_continue {
        meta.length_delimited(3, token.as_bytes());
    }
    body.length_delimited(1, &meta.bytes);
    for item in items {
        body.length_delimited(2, item);
    }
    envelope(api_version, list_kind, &body.bytes)
}

/// Whether objects of this `apiVersion`/`kind` can be encoded at all.
pub fn encodable(api_version: &str, kind: &str) -> bool {
    position_for(api_version, kind).is_some()
}

/// One watch event as client-go's protobuf watch stream carries it: a big-endian
/// 32-bit length, then a `WatchEvent` (raw, no envelope) whose object is the
/// enveloped encoding of the object.
pub fn watch_frame(event_type: &str, object: &Value) -> Result<Vec<u8>, ProtobufError> {
    let envelope = encode(object)?;
    let mut w = Writer { bytes: vec![0; 4] };
    w.length_delimited(1, event_type.as_bytes());
    w.nested(2, |w| {
        w.length_delimited(1, &envelope);
        Ok(())
    })?;
    let len = u32::try_from(w.bytes.len() - 4).map_err(|_| mismatch("event too large"))?;
    w.bytes[..4].copy_from_slice(&len.to_be_bytes());
    Ok(w.bytes)
}

#[cfg(test)]
mod tests {
    use super::super::{decode, decode_watch_event, go_duration};
    use super::*;
    use serde_json::json;

    fn round_trip(value: Value) {
        let encoded = encode(&value).unwrap();
        assert!(encoded.starts_with(MAGIC));
        assert_eq!(decode(&encoded).unwrap(), value);
    }

    #[test]
    fn a_pod_round_trips_through_the_decoder() {
        round_trip(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "default", "uid": "3f1c", "resourceVersion": "42", "generation": 1,
                "creationTimestamp": "2026-11-23T00:00:00Z",
                "labels": {"app": "web"}, "annotations": {"note": ""},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "9a",
                    "controller": true, "blockOwnerDeletion": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                    "time": "2026-11-23T00:00:01Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}}]
            },
            "spec": {
                "containers": [{
                    "name": "web", "image": "nginx:1.27", "command": ["nginx", "-g", "daemon off;"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "MODE", "value": "fast"},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
                    "volumeMounts": [{"name": "creds", "mountPath": "/creds", "readOnly": true}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 3},
                    "securityContext": {"runAsUser": 0, "privileged": false}
                }],
                "volumes": [{"name": "creds", "secret": {"secretName": "creds", "defaultMode": 420}}],
                "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "priority": 0,
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 300}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}}
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "startTime": "2026-11-23T00:00:02Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-23T00:00:03Z"}],
                "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "nginx:1.27",
                    "started": true,
                    "state": {"running": {"startedAt": "2026-11-23T00:00:02Z"}}}]
            }
        }));
    }

    #[test]
    fn special_types_round_trip() {
        round_trip(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}));
        round_trip(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}));
        round_trip(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                "renewTime": "2026-11-23T00:00:00.123456Z"}}));
        round_trip(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": "pods \"x\" not found", "reason": "NotFound",
            "details": {"name": "x", "kind": "pods"}, "code": 404}));
    }

    #[test]
    fn a_list_round_trips_without_its_items_type_meta() {
        let item = json!({"metadata": {"name": "a", "namespace": "default"}, "data": {"k": "v"}});
        let mut typed = item.clone();
        typed["apiVersion"] = json!("v1");
        typed["kind"] = json!("ConfigMap");
        let list = json!({"apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "7", "continue": "abc"}, "items": [typed]});
        let encoded = encode(&list).unwrap();
        assert_eq!(super::super::list_item_count(&encoded), Ok(1));
        let decoded = decode(&encoded).unwrap();
        assert_eq!(decoded["items"], json!([item]));
        assert_eq!(decoded["metadata"], list["metadata"]);
    }

    #[test]
    fn lists_assembled_from_item_bodies_match_an_encoded_list() {
        let item = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let body = encode_body(&item).unwrap();
        let assembled = list("v1", "ConfigMapList", "7", Some("next"), [&body[..], &body[..]].into_iter());
        let whole = json!({"apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "7", "continue": "next"}, "items": [item.clone(), item]});
        // Field order may differ (the encoder follows JSON names); the content may not.
        assert_eq!(decode(&assembled).unwrap(), decode(&encode(&whole).unwrap()).unwrap());
        assert_eq!(super::super::list_item_count(&assembled), Ok(2));
    }

    #[test]
    fn watch_frames_are_length_prefixed_raw_events_around_an_enveloped_object() {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}});
        let frame = watch_frame("ADDED", &object).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        // The event itself is raw: no magic, field 1 (type) first.
        assert_eq!(frame[4], 1 << 3 | 2);
        assert_eq!(decode_watch_event(&frame[4..]).unwrap(), ("ADDED".to_string(), object));
    }

    #[test]
    fn what_the_table_cannot_express_is_an_error() {
        assert!(matches!(encode(&json!({"apiVersion": "v1", "kind": "Widget"})), Err(ProtobufError::UnknownKind(_))));
        assert!(encode(&json!({"kind": "Pod"})).is_err());
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "nope"}});
        assert!(matches!(encode(&bad), Err(ProtobufError::Malformed(_))));
        let bad = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "not base64!"}});
        assert!(encode(&bad).is_err());
        let deep = (0..100).fold(json!({}), |inner, _| json!({"spec": {"template": inner}}));
        let mut deep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": deep}}});
        deep["metadata"] = json!({"name": "d"});
        assert!(encode(&deep).is_ok(), "unknown fields are skipped, not followed");
    }

    #[test]
    fn the_fast_time_path_agrees_with_a_full_parse() {
        for text in ["1970-01-01T00:00:00Z", "2000-02-29T23:59:59Z", "2026-11-23T00:44:40Z", "2100-03-01T12:00:00Z"] {
            let at: jiff::Timestamp = text.parse().unwrap();
            assert_eq!(utc_seconds(text), Some(at.as_second()), "{text}");
        }
        assert_eq!(utc_seconds("2026-11-23T00:44:40.5Z"), None);
        assert_eq!(utc_seconds("2026-13-23T00:44:40Z"), None);
        assert_eq!(utc_seconds("2026-11-23T00:44:4xZ"), None);
    }

    #[test]
    fn go_durations_parse_back() {
        for nanos in [0, 1, 1_500, 500_000_000, 1_500_000_000, 3_723_000_000_000, -2_000_000_000] {
            assert_eq!(parse_go_duration(&go_duration(nanos)), Some(nanos), "{}", go_duration(nanos));
        }
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("3days"), None);
    }

    #[test]
    fn long_messages_get_multi_byte_lengths() {
        let value = "x".repeat(300);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": value}});
        round_trip(cm);
    }
}
