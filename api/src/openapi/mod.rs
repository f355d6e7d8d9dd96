//! The OpenAPI documents, built once from the resource table: v3 (one per group
//! version, JSON) and v2 (all groups, protobuf; see [`v2`]).
//!
//! kubectl (1.29+) reads v3 before `apply` and `create -f`: a PATCH operation with
//! `x-kubernetes-group-version-kind` and a `fieldValidation` parameter tells it to
//! rely on server-side field validation. The schemas carry the Go types' list and
//! patch markers (see [`crate::markers`]), which client-side apply computes strategic
//! merge patches from.

pub mod v2;

use crate::resources::{self, ResourceInfo};
use bytes::Bytes;
use keelson_engine::k8s_openapi::schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Every document, serialized once, keyed by `api/v1` or `apis/<group>/<version>`.
pub struct OpenApi {
    documents: BTreeMap<String, (Bytes, String)>,
    index: Bytes,
    v2: Bytes,
    /// The types' shapes for server-side apply, read from the same schemas.
    pub types: crate::apply::types::Types,
}

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn operation(info: &ResourceInfo, schema: &str, verb: &str, extra_params: &[&str], body_types: &[&str]) -> Value {
    let mut params: Vec<Value> = ["dryRun", "fieldManager"]
        .iter()
        .chain(extra_params)
        .map(|name| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    params.push(json!({"name": "pretty", "in": "query", "schema": {"type": "string"}}));
    let mut op = json!({
        "operationId": format!("{verb}{}", info.kind),
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
            "201": {"description": "Created", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
        },
    });
    if !body_types.is_empty() {
        let content: Map<String, Value> =
            body_types.iter().map(|t| (t.to_string(), json!({"schema": {"type": "object"}}))).collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

fn document(group: &str, version: &str) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    let mut paths = Map::new();
    for info in resources::in_group_version(group, version) {
        let schema = info.codec.schema(&mut generator);
        kinds.push((schema.clone(), info));
        let base = format!("/{}", group_version_path(group, version));
        let collection = if info.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", info.plural)
        } else {
            format!("{base}/{}", info.plural)
        };
        let item = format!("{collection}/{{name}}");
        if info.has_verb("create") {
            paths.insert(
                collection,
                json!({"post": operation(info, &schema, "post", &["fieldValidation"], &["application/json", "application/yaml"])}),
            );
        }
        if info.has_verb("patch") {
            paths.insert(
                item,
                json!({
                    "put": operation(info, &schema, "put", &["fieldValidation"], &["application/json", "application/yaml"]),
                    "patch": operation(info, &schema, "patch", &["fieldValidation", "force"], &[
                        "application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml",
                    ]),
                }),
            );
        }
    }
    let mut schemas = generator.take_definitions(true);
    for (name, schema) in schemas.iter_mut() {
        add_markers(name, schema);
    }
    // `kubectl explain` finds a kind's schema by this extension.
    for (name, info) in kinds {
        if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": info.group, "version": info.version, "kind": info.kind}]),
            );
            // The typed structs always carry metadata, but a client may leave it out
            // (a review has none): kube's schemas never require it.
            if let Some(Value::Array(required)) = schema.get_mut("required") {
                required.retain(|field| field != "metadata");
                if required.is_empty() {
                    schema.remove("required");
                }
            }
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::server::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Publishes a definition's field markers as the `x-kubernetes-*` extensions.
fn add_markers(definition: &str, schema: &mut Value) {
    if crate::markers::is_atomic_type(definition) {
        schema["x-kubernetes-map-type"] = "atomic".into();
    }
    for marked in crate::markers::of_definition(definition) {
        let Some(Value::Object(property)) = schema.pointer_mut(&format!("/properties/{}", marked.field)) else {
            continue;
        };
        if let Some(strategy) = marked.patch_strategy {
            property.insert("x-kubernetes-patch-strategy".into(), strategy.into());
        }
        if let Some(key) = marked.patch_merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), key.into());
        }
        if let Some(list_type) = marked.list_type {
            property.insert("x-kubernetes-list-type".into(), list_type.into());
        }
        if !marked.list_map_keys.is_empty() {
            property.insert("x-kubernetes-list-map-keys".into(), marked.list_map_keys.into());
        }
        if marked.atomic {
            property.insert("x-kubernetes-map-type".into(), "atomic".into());
        }
    }
}

/// A short content hash for the index's `?hash=` (clients cache by it).
fn hash(bytes: &[u8]) -> String {
    // FNV-1a: stable across runs, enough to tell documents apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

impl OpenApi {
    pub fn build() -> OpenApi {
        let mut documents = BTreeMap::new();
        let mut values = Vec::new();
        for group in resources::groups() {
            let version = resources::RESOURCES.iter().find(|r| r.group == group).map_or("v1", |r| r.version);
            let value = document(group, version);
            let bytes = serde_json::to_vec(&value).expect("documents serialize");
            let h = hash(&bytes);
            documents.insert(group_version_path(group, version), (Bytes::from(bytes), h));
            values.push(value);
        }
        let v2 = Bytes::from(v2::encode(&values));
        let mut definitions = Map::new();
        for value in &values {
            if let Some(schemas) = value["components"]["schemas"].as_object() {
                for (name, schema) in schemas {
                    // A kind's definition also appears in other groups' documents (a
                    // StatefulSet embeds PersistentVolumeClaims) without its GVK;
                    // keep the copy that says which kind it is.
                    let kinded = |s: &Value| s.get("x-kubernetes-group-version-kind").is_some();
                    if definitions.get(name).is_some_and(|known| kinded(known) && !kinded(schema)) {
                        continue;
                    }
                    definitions.insert(name.clone(), schema.clone());
                }
            }
        }
        let types = crate::apply::types::Types::from_definitions(&definitions);
        let index_paths: Map<String, Value> = documents
            .iter()
            .map(|(path, (_, h))| (path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={h}")})))
            .collect();
        let index = Bytes::from(serde_json::to_vec(&json!({"paths": index_paths})).expect("the index serializes"));
        OpenApi { documents, index, v2, types }
    }

    pub fn index(&self) -> Bytes {
        self.index.clone()
    }

    pub fn document(&self, group: &str, version: &str) -> Option<Bytes> {
        self.documents.get(&group_version_path(group, version)).map(|(bytes, _)| bytes.clone())
    }

    /// The v2 document, protobuf-encoded ([`v2::CONTENT_TYPE`]).
    pub fn v2(&self) -> Bytes {
        self.v2.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_has_a_schema_for_field_ownership() {
        let openapi = OpenApi::build();
        for info in resources::RESOURCES.iter() {
            assert!(openapi.types.kind(info.group, info.kind).is_some(), "{}/{}", info.group, info.kind);
        }
    }

    #[test]
    fn patch_operations_carry_the_gvk_and_field_validation() {
        let openapi = OpenApi::build();
        let index: Value = serde_json::from_slice(&openapi.index()).unwrap();
        assert!(index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc: Value = serde_json::from_slice(&openapi.document("apps", "v1").unwrap()).unwrap();
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        let core: Value = serde_json::from_slice(&openapi.document("", "v1").unwrap()).unwrap();
        assert!(core["paths"]["/api/v1/nodes/{name}"]["patch"].is_object());
        let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert_eq!(pod["properties"]["spec"]["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.core.v1.PodSpec");
        assert!(core["components"]["schemas"]["io.k8s.api.core.v1.Container"].is_object());
        let containers = &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        assert!(!openapi.v2().is_empty());
        assert_eq!(openapi.types.kind("apps", "Deployment"), Some("io.k8s.api.apps.v1.Deployment"));
    }
}
