//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`): request bodies decoded
//! into the JSON the rest of the server works with, and responses encoded from it
//! ([`encode`], for clients that ask for protobuf first).
//!
//! kubectl 1.32+ sends typed-client requests (`kubectl create namespace|deployment|
//! configmap|secret|job|cronjob|service`, `auth can-i|whoami`) as protobuf: the
//! magic `k8s\0`, then a `runtime.Unknown` carrying the apiVersion/kind and the
//! object's own encoding. Decoding is driven by the generated field table in
//! `schema.rs` (field numbers from k8s-pb, JSON names from k8s-openapi); the few
//! apimachinery types with a custom JSON form (Quantity, IntOrString, Time, ...) are
//! converted here. Every failure is an error, never a panic: the bytes are untrusted.

mod encode;
mod index;
mod schema;

pub use encode::{encodable, encode, encode_body, envelope, list, watch_frame};

use base64::Engine;
use serde_json::{Map, Number, Value};

/// The protobuf type of a field.
#[derive(Debug)]
pub enum Kind {
    String,
    Bytes,
    Int32,
    Int64,
    Bool,
    Double,
    /// A nested message, by full name (`io.k8s.api.core.v1.PodSpec`).
    Message(&'static str),
    /// `map<string, V>`.
    Map(&'static Kind),
}

#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    /// The JSON name; empty for a message embedded inline (its fields are the
    /// parent's in JSON).
    pub json: &'static str,
    pub repeated: bool,
    pub kind: Kind,
}

#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

const MAGIC: &[u8] = b"k8s\0";
/// Nesting deeper than any Kubernetes object is refused (a hostile body cannot
/// exhaust the stack).
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic")]
    NoMagic,
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    #[error("no protobuf type is known for {0}")]
    UnknownKind(String),
    #[error("content encoding {0:?} is not supported")]
    Encoding(String),
}

fn message(name: &str) -> Option<&'static Message> {
    index::position(name).map(|i| &schema::MESSAGES[i])
}

/// The table position of a Kubernetes kind's message (`apps/v1`, `Deployment` →
/// `io.k8s.api.apps.v1.Deployment`).
fn position_for(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    // Kubernetes sends its `Status` as core `v1`; the type lives in apimachinery.
    if group == "meta.k8s.io" || (api_version == "v1" && kind == "Status") {
        return index::position(&format!("io.k8s.apimachinery.pkg.apis.meta.{version}.{kind}"));
    }
    let package = match group {
        "" => "core",
        other => other.split('.').next().unwrap_or(other),
    };
    index::position(&format!("io.k8s.api.{package}.{version}.{kind}"))
}

fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    position_for(api_version, kind).map(|i| &schema::MESSAGES[i])
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.bytes.is_empty()
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.bytes.split_first().ok_or(ProtobufError::Malformed("truncated varint"))?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if n > self.bytes.len() {
            return Err(ProtobufError::Malformed("length past the end"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], ProtobufError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| ProtobufError::Malformed("length overflows"))?)
    }

    /// Skips a field of an unknown number.
    fn skip(&mut self, wire: u64) -> Result<(), ProtobufError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.length_delimited().map(drop),
            5 => self.take(4).map(drop),
            _ => Err(ProtobufError::Malformed("unsupported wire type")),
        }
    }
}

fn utf8(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::Malformed("string is not UTF-8"))
}

/// One scalar value of `kind` at wire type `wire`.
fn scalar(kind: &Kind, wire: u64, reader: &mut Reader<'_>, depth: usize) -> Result<Value, ProtobufError> {
    Ok(match (kind, wire) {
        (Kind::String, 2) => Value::String(utf8(reader.length_delimited()?)?),
        (Kind::Bytes, 2) => Value::String(base64::engine::general_purpose::STANDARD.encode(reader.length_delimited()?)),
        // int32 values are sign-extended to 64 bits on the wire.
        (Kind::Int32, 0) => Value::Number(Number::from(reader.varint()? as i64 as i32)),
        (Kind::Int64, 0) => Value::Number(Number::from(reader.varint()? as i64)),
        (Kind::Bool, 0) => Value::Bool(reader.varint()? != 0),
        (Kind::Double, 1) => {
            let bytes: [u8; 8] = reader.take(8)?.try_into().expect("took 8 bytes");
            Number::from_f64(f64::from_le_bytes(bytes)).map_or(Value::Null, Value::Number)
        }
        (Kind::Message(name), 2) => nested(name, reader.length_delimited()?, depth + 1)?,
        _ => return Err(ProtobufError::Malformed("wire type does not match the field")),
    })
}

fn nested(name: &str, bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::Malformed("nested too deeply"));
    }
    if let Some(value) = special(name, bytes)? {
        return Ok(value);
    }
    let message = message(name).ok_or_else(|| ProtobufError::UnknownKind(name.to_string()))?;
    decode_message(message, bytes, depth)
}

fn decode_message(message: &Message, bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let mut object = Map::new();
    let mut reader = Reader { bytes };
    while !reader.done() {
        let key = reader.varint()?;
        let (tag, wire) = (key >> 3, key & 7);
        let Some(field) = message.fields.iter().find(|f| u64::from(f.tag) == tag) else {
            reader.skip(wire)?;
            continue;
        };
        match &field.kind {
            Kind::Map(value_kind) => {
                let entry = reader.length_delimited()?;
                let (key, value) = map_entry(value_kind, entry, depth)?;
                let map = object.entry(field.json).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
            kind if field.repeated => {
                let list = object.entry(field.json).or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = list else { continue };
                if wire == 2 && matches!(kind, Kind::Int32 | Kind::Int64 | Kind::Bool) {
                    // Packed scalars.
                    let mut packed = Reader { bytes: reader.length_delimited()? };
                    while !packed.done() {
                        list.push(scalar(kind, 0, &mut packed, depth)?);
                    }
                } else {
                    list.push(scalar(kind, wire, &mut reader, depth)?);
                }
            }
            // A Go struct embedded inline (Probe's handler, Volume's source): its
            // fields belong to this object's JSON.
            Kind::Message(_) if field.json.is_empty() => {
                if let Value::Object(inner) = scalar(&field.kind, wire, &mut reader, depth)? {
                    object.extend(inner);
                }
            }
            kind => {
                let value = scalar(kind, wire, &mut reader, depth)?;
                // Go writes unset strings as "": JSON omits them, and so do we. It
                // also writes its non-pointer numbers and booleans even when zero,
                // which its JSON omits: those are dropped too, so an object reads
                // the same however it was sent (and a template compares equal).
                let zero = value.as_str() == Some("")
                    || (matches!(value, Value::Bool(false)) || value.as_i64() == Some(0))
                        && omitted_when_zero(message.name, field.json);
                if !zero {
                    object.insert(field.json.to_string(), value);
                }
            }
        }
    }
    Ok(Value::Object(object))
}

/// The non-pointer `omitempty` numbers and booleans of the served kinds (Go's JSON
/// leaves them out when zero; pointer fields, where zero is a value, are not here).
const OMITTED_WHEN_ZERO: &[(&str, &[&str])] = &[
    ("io.k8s.api.apps.v1.DaemonSetSpec", &["minReadySeconds"]),
    ("io.k8s.api.apps.v1.DeploymentSpec", &["minReadySeconds", "paused"]),
    ("io.k8s.api.apps.v1.ReplicaSetSpec", &["minReadySeconds"]),
    ("io.k8s.api.apps.v1.StatefulSetSpec", &["minReadySeconds"]),
    ("io.k8s.api.core.v1.Container", &["stdin", "stdinOnce", "tty"]),
    ("io.k8s.api.core.v1.ContainerPort", &["hostPort"]),
    ("io.k8s.api.core.v1.NodeSpec", &["unschedulable"]),
    ("io.k8s.api.core.v1.PersistentVolumeClaimVolumeSource", &["readOnly"]),
    ("io.k8s.api.core.v1.PodSpec", &["hostNetwork", "hostPID", "hostIPC"]),
    (
        "io.k8s.api.core.v1.Probe",
        &["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"],
    ),
    ("io.k8s.api.core.v1.ServicePort", &["nodePort"]),
    ("io.k8s.api.core.v1.ServiceSpec", &["publishNotReadyAddresses", "healthCheckNodePort"]),
    ("io.k8s.api.core.v1.VolumeMount", &["readOnly"]),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", &["generation"]),
];

fn omitted_when_zero(message: &str, field: &str) -> bool {
    OMITTED_WHEN_ZERO.iter().any(|(m, fields)| *m == message && fields.contains(&field))
}

fn map_entry(value_kind: &Kind, bytes: &[u8], depth: usize) -> Result<(String, Value), ProtobufError> {
    let mut reader = Reader { bytes };
    let (mut key, mut value) = (String::new(), None);
    while !reader.done() {
        let tag = reader.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => key = utf8(reader.length_delimited()?)?,
            (2, wire) => value = Some(scalar(value_kind, wire, &mut reader, depth)?),
            (_, wire) => reader.skip(wire)?,
        }
    }
    let value = value.unwrap_or(match value_kind {
        Kind::String | Kind::Bytes => Value::String(String::new()),
        Kind::Message(_) => Value::Object(Map::new()),
        _ => Value::Null,
    });
    Ok((key, value))
}

/// Reads the scalar fields of a small message into (tag → value).
fn fields_of(bytes: &[u8]) -> Result<Vec<(u64, Value)>, ProtobufError> {
    let mut reader = Reader { bytes };
    let mut out = Vec::new();
    while !reader.done() {
        let key = reader.varint()?;
        let value = match key & 7 {
            0 => Value::from(reader.varint()? as i64),
            2 => Value::String(utf8(reader.length_delimited()?)?),
            wire => {
                reader.skip(wire)?;
                continue;
            }
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn timestamp(bytes: &[u8], micros: bool) -> Result<Value, ProtobufError> {
    // Go marshals its zero time as an empty message; its JSON form is null (a pod
    // template's `creationTimestamp`, not 1970).
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let fields = fields_of(bytes)?;
    let get = |tag| fields.iter().find(|(t, _)| *t == tag).and_then(|(_, v)| v.as_i64()).unwrap_or(0);
    let at = jiff::Timestamp::new(get(1), get(2) as i32).map_err(|_| ProtobufError::Malformed("time out of range"))?;
    let format = if micros { "%Y-%m-%dT%H:%M:%S%.6fZ" } else { "%Y-%m-%dT%H:%M:%SZ" };
    Ok(Value::String(at.strftime(format).to_string()))
}

/// Go's `time.Duration` text form (`1h2m3s`, `500ms`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        return match n {
            n if n % 1_000_000 == 0 => format!("{sign}{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{sign}{}µs", n / 1_000),
            n => format!("{sign}{n}ns"),
        };
    }
    let (h, m, s, frac) = (n / 3_600_000_000_000, n / 60_000_000_000 % 60, n / 1_000_000_000 % 60, n % 1_000_000_000);
    let seconds = if frac == 0 { s.to_string() } else { format!("{s}.{}", format!("{frac:09}").trim_end_matches('0')) };
    match (h, m) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// The apimachinery types whose JSON form is not their protobuf structure.
fn special(name: &str, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let first_string = |fields: Vec<(u64, Value)>, tag| fields.into_iter().find(|(t, _)| *t == tag).map(|(_, v)| v);
    Ok(Some(match name {
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            first_string(fields_of(bytes)?, 1).unwrap_or(Value::String("0".into()))
        }
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            let fields = fields_of(bytes)?;
            let get = |tag| fields.iter().find(|(t, _)| *t == tag).map(|(_, v)| v.clone());
            match get(1).and_then(|v| v.as_i64()).unwrap_or(0) {
                0 => Value::from(get(2).and_then(|v| v.as_i64()).unwrap_or(0) as i32),
                _ => get(3).unwrap_or(Value::String(String::new())),
            }
        }
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => timestamp(bytes, false)?,
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => timestamp(bytes, true)?,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => {
            let nanos = fields_of(bytes)?.into_iter().find(|(t, _)| *t == 1).and_then(|(_, v)| v.as_i64()).unwrap_or(0);
            Value::String(go_duration(nanos))
        }
        "io.k8s.apimachinery.pkg.runtime.RawExtension" | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let mut reader = Reader { bytes };
            let mut raw: &[u8] = b"{}";
            while !reader.done() {
                let key = reader.varint()?;
                match (key >> 3, key & 7) {
                    (1, 2) => raw = reader.length_delimited()?,
                    (_, wire) => reader.skip(wire)?,
                }
            }
            serde_json::from_slice(raw).map_err(|_| ProtobufError::Malformed("embedded object is not JSON"))?
        }
        _ => return Ok(None),
    }))
}

/// Decodes a Kubernetes protobuf body into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let mut reader = Reader { bytes: envelope };
    let (mut api_version, mut kind, mut raw, mut encoding) = (String::new(), String::new(), &b""[..], String::new());
    while !reader.done() {
        let key = reader.varint()?;
        match (key >> 3, key & 7) {
            (1, 2) => {
                for (tag, value) in fields_of(reader.length_delimited()?)? {
                    match (tag, value) {
                        (1, Value::String(v)) => api_version = v,
                        (2, Value::String(k)) => kind = k,
                        _ => {}
                    }
                }
            }
            (2, 2) => raw = reader.length_delimited()?,
            (3, 2) => encoding = utf8(reader.length_delimited()?)?,
            (_, wire) => reader.skip(wire)?,
        }
    }
    if !encoding.is_empty() {
        return Err(ProtobufError::Encoding(encoding));
    }
    let message =
        message_for(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownKind(format!("{api_version}/{kind}")))?;
    let mut object = decode_message(message, raw, 0)?;
    if let Value::Object(map) = &mut object {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind));
    }
    Ok(object)
}

/// The number of items in a protobuf-encoded list (`<Kind>List`: items are field 2),
/// counted without decoding them.
pub fn list_item_count(body: &[u8]) -> Result<usize, ProtobufError> {
    let mut envelope = Reader { bytes: body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)? };
    let mut count = 0;
    while !envelope.done() {
        let key = envelope.varint()?;
        match (key >> 3, key & 7) {
            (2, 2) => {
                let mut list = Reader { bytes: envelope.length_delimited()? };
                while !list.done() {
                    let key = list.varint()?;
                    count += usize::from(key == 2 << 3 | 2);
                    list.skip(key & 7)?;
                }
            }
            (_, wire) => envelope.skip(wire)?,
        }
    }
    Ok(count)
}

/// Decodes one protobuf watch event (a frame's bytes after its length prefix): the
/// event type and the object.
pub fn decode_watch_event(bytes: &[u8]) -> Result<(String, Value), ProtobufError> {
    let mut reader = Reader { bytes };
    let (mut kind, mut object) = (String::new(), None);
    while !reader.done() {
        let key = reader.varint()?;
        match (key >> 3, key & 7) {
            (1, 2) => kind = utf8(reader.length_delimited()?)?,
            (2, 2) => {
                let mut raw_extension = Reader { bytes: reader.length_delimited()? };
                while !raw_extension.done() {
                    let key = raw_extension.varint()?;
                    match (key >> 3, key & 7) {
                        (1, 2) => object = Some(decode(raw_extension.length_delimited()?)?),
                        (_, wire) => raw_extension.skip(wire)?,
                    }
                }
            }
            (_, wire) => reader.skip(wire)?,
        }
    }
    Ok((kind, object.ok_or(ProtobufError::Malformed("a watch event without an object"))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(tag << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut out = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut out);
        bytes_field(2, raw, &mut out);
        out
    }

    #[test]
    fn a_namespace_and_a_configmap() {
        // Namespace{metadata: ObjectMeta{name: "team-a"}}
        let mut meta = Vec::new();
        bytes_field(1, b"team-a", &mut meta);
        let mut ns = Vec::new();
        bytes_field(1, &meta, &mut ns);
        let value = decode(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(value, serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));

        // ConfigMap{metadata{name}, data{"k": "v"}}; data is field 2, a map entry.
        let mut entry = Vec::new();
        bytes_field(1, b"k", &mut entry);
        bytes_field(2, b"v", &mut entry);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry, &mut cm);
        let value = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(value["data"]["k"], "v");
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert_eq!(decode(b"{}"), Err(ProtobufError::NoMagic));
        assert!(decode(b"k8s\0\x0a\xff").is_err());
        assert!(matches!(decode(&envelope("v1", "Widget", b"")), Err(ProtobufError::UnknownKind(_))));
        // Nesting past the limit is refused instead of recursing further.
        assert_eq!(
            nested("io.k8s.api.core.v1.Pod", b"", MAX_DEPTH + 1),
            Err(ProtobufError::Malformed("nested too deeply"))
        );
    }

    #[test]
    fn go_zero_values_of_non_pointer_fields_are_left_out() {
        // Container{name: "c", stdin: false, tty: true}: tags 1, 16 and 18.
        let mut container = Vec::new();
        bytes_field(1, b"c", &mut container);
        // Keys are varints of tag << 3 (wire type 0): 128 and 144.
        container.extend_from_slice(&[0x80, 0x01, 0x00, 0x90, 0x01, 0x01]);
        let value = nested("io.k8s.api.core.v1.Container", &container, 0).unwrap();
        assert_eq!(value, serde_json::json!({"name": "c", "tty": true}));
    }

    #[test]
    fn go_zero_times_are_null_and_others_are_rfc3339() {
        assert_eq!(timestamp(b"", false), Ok(Value::Null));
        let mut seconds = Vec::new();
        // Field 1 (seconds), varint 86400.
        seconds.extend_from_slice(&[0x08, 0x80, 0xa3, 0x05]);
        assert_eq!(timestamp(&seconds, false), Ok(Value::String("1970-01-02T00:00:00Z".into())));
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(3_600_000_000_000 + 120_000_000_000 + 3_000_000_000), "1h2m3s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(0), "0s");
    }

    #[test]
    fn the_table_is_sorted_and_knows_the_served_kinds() {
        assert!(schema::MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
        for (api_version, kind) in [
            ("v1", "Pod"),
            ("apps/v1", "Deployment"),
            ("batch/v1", "CronJob"),
            ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ] {
            assert!(message_for(api_version, kind).is_some(), "{api_version} {kind}");
        }
        let service_spec = message("io.k8s.api.core.v1.ServiceSpec").unwrap();
        assert!(service_spec.fields.iter().any(|f| f.json == "clusterIPs"));
    }
}
