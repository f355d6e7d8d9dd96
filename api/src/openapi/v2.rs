//! OpenAPI v2 (Swagger 2.0) in gnostic's protobuf encoding (kubectl asks for
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
//!
//! kubectl 1.27 and 1.28 read only this document before `apply`, `create -f` and
//! `replace`: a PATCH operation whose `x-kubernetes-group-version-kind` names the
//! object's kind and which lists a `fieldValidation` query parameter tells them the
//! server validates fields itself; the definitions (with their patch markers) are what
//! client-side apply computes strategic merge patches from.
//!
//! The document is derived from the v3 documents, so both always describe the same
//! API: `$ref`s move from `#/components/schemas/` to `#/definitions/`, request bodies
//! become `body` parameters and response contents become response schemas. Vendor
//! extensions and defaults travel as YAML, as gnostic keeps them; JSON text is YAML.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The content type of the answer. kubectl's Accept spells it with `@v1.0`, but Go's
/// media-type parser rejects the `@` in a response, so the server answers with `.v1.0`
/// as kube-apiserver does.
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Builds the protobuf document from the v3 documents (one per group version).
pub fn encode(v3_documents: &[Value]) -> Vec<u8> {
    let mut paths: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut definitions: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut version = "";
    for doc in v3_documents {
        version = doc["info"]["version"].as_str().unwrap_or_default();
        if let Some(doc_paths) = doc["paths"].as_object() {
            paths.extend(doc_paths.iter().map(|(k, v)| (k.as_str(), v)));
        }
        if let Some(schemas) = doc["components"]["schemas"].as_object() {
            definitions.extend(schemas.iter().map(|(k, v)| (k.as_str(), v)));
        }
    }
    let mut w = Writer::default();
    w.string(1, "2.0");
    w.message(2, |info| {
        info.string(1, "Kubernetes");
        info.string(2, version);
    });
    w.message(8, |p| {
        for (path, item) in &paths {
            p.message(2, |named| {
                named.string(1, path);
                named.message(2, |w| path_item(w, item));
            });
        }
    });
    w.message(9, |d| {
        for (name, schema) in &definitions {
            d.message(1, |named| {
                named.string(1, name);
                named.message(2, |w| self::schema(w, schema));
            });
        }
    });
    w.0
}

fn path_item(w: &mut Writer, item: &Value) {
    for (method, field) in
        [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("options", 6), ("head", 7), ("patch", 8)]
    {
        if let Some(op) = item.get(method) {
            w.message(field, |w| operation(w, op));
        }
    }
}

fn operation(w: &mut Writer, op: &Value) {
    w.string(5, op["operationId"].as_str().unwrap_or_default());
    w.string(6, "application/json");
    let body = op["requestBody"]["content"].as_object();
    for content_type in body.into_iter().flat_map(Map::keys) {
        w.string(7, content_type);
    }
    for param in op["parameters"].as_array().into_iter().flatten() {
        // ParametersItem.parameter → Parameter.non_body_parameter → query sub-schema.
        w.message(8, |item| {
            item.message(1, |p| {
                p.message(2, |non_body| {
                    non_body.message(3, |q| {
                        q.bool(1, param["required"].as_bool().unwrap_or(false));
                        q.string(2, "query");
                        q.string(3, param["description"].as_str().unwrap_or_default());
                        q.string(4, param["name"].as_str().unwrap_or_default());
                        q.string(6, param["schema"]["type"].as_str().unwrap_or("string"));
                        q.bool(20, param["schema"]["uniqueItems"].as_bool().unwrap_or(false));
                    });
                });
            });
        });
    }
    if let Some((_, media)) = body.and_then(|content| content.iter().next()) {
        // ParametersItem.parameter → Parameter.body_parameter.
        w.message(8, |item| {
            item.message(1, |p| {
                p.message(1, |b| {
                    b.string(2, "body");
                    b.string(3, "body");
                    b.bool(4, op["requestBody"]["required"].as_bool().unwrap_or(false));
                    b.message(5, |s| schema(s, &media["schema"]));
                });
            });
        });
    }
    w.message(9, |responses| {
        for (code, response) in op["responses"].as_object().into_iter().flatten() {
            responses.message(1, |named| {
                named.string(1, code);
                named.message(2, |value| {
                    value.message(1, |r| {
                        r.string(1, response["description"].as_str().unwrap_or_default());
                        if let Some(s) = response["content"]["application/json"].get("schema") {
                            r.message(2, |item| item.message(1, |w| schema(w, s)));
                        }
                    });
                });
            });
        }
    });
    extensions(w, 13, op);
}

fn definition_ref(reference: &str) -> String {
    match reference.strip_prefix("#/components/schemas/") {
        Some(name) => format!("#/definitions/{name}"),
        None => reference.to_owned(),
    }
}

/// A JSON schema (as the v3 documents hold it) as a gnostic `Schema` message.
fn schema(w: &mut Writer, s: &Value) {
    let all_of = s["allOf"].as_array().map(Vec::as_slice).unwrap_or_default();
    // v3 wraps a described reference in a one-element allOf; v2 puts it beside.
    let single_ref = match all_of {
        [only] if only.as_object().is_some_and(|o| o.len() == 1) => only["$ref"].as_str(),
        _ => None,
    };
    if let Some(reference) = s["$ref"].as_str().or(single_ref) {
        w.string(1, &definition_ref(reference));
    }
    w.string(2, s["format"].as_str().unwrap_or_default());
    w.string(3, s["title"].as_str().unwrap_or_default());
    w.string(4, s["description"].as_str().unwrap_or_default());
    if let Some(default) = s.get("default") {
        w.message(5, |any| any.string(2, &default.to_string()));
    }
    for (key, field) in [("multipleOf", 6), ("maximum", 7), ("minimum", 9)] {
        if let Some(n) = s[key].as_f64() {
            w.double(field, n);
        }
    }
    for (key, field) in [("exclusiveMaximum", 8), ("exclusiveMinimum", 10), ("uniqueItems", 16), ("readOnly", 27)] {
        w.bool(field, s[key].as_bool().unwrap_or(false));
    }
    for (key, field) in [
        ("maxLength", 11),
        ("minLength", 12),
        ("maxItems", 14),
        ("minItems", 15),
        ("maxProperties", 17),
        ("minProperties", 18),
    ] {
        if let Some(n) = s[key].as_i64() {
            w.int64(field, n);
        }
    }
    w.string(13, s["pattern"].as_str().unwrap_or_default());
    for name in s["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        w.string(19, name);
    }
    for value in s["enum"].as_array().into_iter().flatten() {
        w.message(20, |any| any.string(2, &value.to_string()));
    }
    match &s["additionalProperties"] {
        Value::Bool(allowed) => w.message(21, |item| item.bool_always(2, *allowed)),
        additional @ Value::Object(_) => w.message(21, |item| item.message(1, |w| schema(w, additional))),
        _ => {}
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        w.message(22, |item| types.iter().for_each(|t| item.string(1, t)));
    }
    match &s["items"] {
        items @ Value::Object(_) => w.message(23, |item| item.message(1, |w| schema(w, items))),
        Value::Array(items) => w.message(23, |item| items.iter().for_each(|i| item.message(1, |w| schema(w, i)))),
        _ => {}
    }
    if single_ref.is_none() {
        for part in all_of {
            w.message(24, |w| schema(w, part));
        }
    }
    if let Some(properties) = s["properties"].as_object() {
        w.message(25, |props| {
            for (name, property) in properties {
                props.message(1, |named| {
                    named.string(1, name);
                    named.message(2, |w| schema(w, property));
                });
            }
        });
    }
    extensions(w, 31, s);
}

/// Every `x-` key as a `NamedAny` whose value is YAML text.
fn extensions(w: &mut Writer, field: u32, object: &Value) {
    for (name, value) in object.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("x-")) {
        w.message(field, |named| {
            named.string(1, name);
            named.message(2, |any| any.string(2, &value.to_string()));
        });
    }
}

/// A minimal protobuf writer: proto3 semantics, so empty strings, zeros and `false`
/// are left out, while messages are always written (their presence matters).
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn bool(&mut self, field: u32, b: bool) {
        if b {
            self.bool_always(field, b);
        }
    }

    /// A bool inside a `oneof`, where `false` is a value and must be written.
    fn bool_always(&mut self, field: u32, b: bool) {
        self.key(field, 0);
        self.varint(u64::from(b));
    }

    fn int64(&mut self, field: u32, n: i64) {
        if n != 0 {
            self.key(field, 0);
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u32, n: f64) {
        if n != 0.0 {
            self.key(field, 1);
            self.0.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn message(&mut self, field: u32, build: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        build(&mut inner);
        self.bytes(field, &inner.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads one level of a protobuf message: (field, wire type, bytes or varint).
    fn fields(mut buf: &[u8]) -> Vec<(u32, Vec<u8>)> {
        fn varint(buf: &mut &[u8]) -> u64 {
            let mut v = 0u64;
            for shift in (0..).step_by(7) {
                let b = buf[0];
                *buf = &buf[1..];
                v |= u64::from(b & 0x7f) << shift;
                if b < 0x80 {
                    break;
                }
            }
            v
        }
        let mut out = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf);
            let value = match key & 7 {
                0 => varint(&mut buf).to_le_bytes().to_vec(),
                1 => {
                    let (v, rest) = buf.split_at(8);
                    buf = rest;
                    v.to_vec()
                }
                2 => {
                    let len = varint(&mut buf) as usize;
                    let (v, rest) = buf.split_at(len);
                    buf = rest;
                    v.to_vec()
                }
                other => panic!("wire type {other}"),
            };
            out.push(((key >> 3) as u32, value));
        }
        out
    }

    fn field(buf: &[u8], number: u32) -> Vec<Vec<u8>> {
        fields(buf).into_iter().filter(|(n, _)| *n == number).map(|(_, v)| v).collect()
    }

    fn text(buf: &[u8], number: u32) -> String {
        String::from_utf8(field(buf, number).pop().unwrap_or_default()).unwrap()
    }

    #[test]
    fn patch_operations_carry_the_gvk_and_field_validation() {
        let v3 = json!({
            "info": {"version": "v1.33.0"},
            "paths": {"/apis/apps/v1/namespaces/{namespace}/deployments/{name}": {"patch": {
                "operationId": "patchDeployment",
                "x-kubernetes-group-version-kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/D"}}}}},
            }}},
            "components": {"schemas": {"D": {"type": "object", "properties": {
                "spec": {"allOf": [{"$ref": "#/components/schemas/S"}], "description": "the spec"},
                "open": {"type": "object", "additionalProperties": false},
            }}}},
        });
        let doc = encode(&[v3]);
        assert_eq!(text(&doc, 1), "2.0");
        assert_eq!(text(&field(&doc, 2)[0], 2), "v1.33.0");

        let paths = &field(&doc, 8)[0];
        let named = &field(paths, 2)[0];
        assert_eq!(text(named, 1), "/apis/apps/v1/namespaces/{namespace}/deployments/{name}");
        let patch = &field(&field(named, 2)[0], 8)[0];
        assert_eq!(text(patch, 5), "patchDeployment");
        let extension = &field(patch, 13)[0];
        assert_eq!(text(extension, 1), "x-kubernetes-group-version-kind");
        let yaml: Value = serde_json::from_str(&text(&field(extension, 2)[0], 2)).unwrap();
        assert_eq!(yaml["kind"], "Deployment");
        let params = field(patch, 8);
        assert_eq!(params.len(), 2, "one query parameter and the body");
        let query = &field(&field(&field(&params[0], 1)[0], 2)[0], 3)[0];
        assert_eq!((text(query, 2).as_str(), text(query, 4).as_str()), ("query", "fieldValidation"));
        let body = &field(&field(&params[1], 1)[0], 1)[0];
        assert_eq!(text(body, 3), "body");

        let definitions = &field(&doc, 9)[0];
        let d = &field(definitions, 1)[0];
        assert_eq!(text(d, 1), "D");
        let d_schema = &field(d, 2)[0];
        let properties = field(&field(d_schema, 25)[0], 1);
        let open = properties.iter().find(|p| text(p, 1) == "open").unwrap();
        let additional = &field(&field(open, 2)[0], 21)[0];
        assert_eq!(fields(additional), vec![(2, 0u64.to_le_bytes().to_vec())], "false is written inside the oneof");
        let spec = properties.iter().find(|p| text(p, 1) == "spec").unwrap();
        let spec_schema = &field(spec, 2)[0];
        assert_eq!(text(spec_schema, 1), "#/definitions/S");
        assert_eq!(text(spec_schema, 4), "the spec");
        assert!(field(spec_schema, 24).is_empty(), "the one-element allOf became the reference");
    }
}
