//! The shape of every built-in type, as server-side apply needs it: which values are
//! owned as a whole, which are structs or maps owned field by field, and how list items
//! are told apart. Read once from the OpenAPI schemas (which carry the Go markers).

use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Scalars, and whatever is owned and replaced whole: atomic lists, maps and
    /// structs, and values without a schema (quantities, int-or-string, raw JSON).
    Atomic,
    /// A struct by definition name; its fields are owned one by one.
    Struct(String),
    /// A string-keyed map whose entries are owned one by one.
    Map(Box<Shape>),
    /// A list of scalars owned item by item (`listType=set`).
    Set,
    /// A list of objects owned item by item, told apart by these key fields.
    Keyed { keys: Vec<String>, item: Box<Shape> },
}

/// A struct definition's fields by name.
pub type StructFields = HashMap<String, Shape>;

/// The fields of every struct definition, and each kind's definition.
#[derive(Debug, Default)]
pub struct Types {
    structs: HashMap<String, StructFields>,
    /// (group, kind, definition), sorted: looked up on every write without allocating.
    kinds: Vec<(String, String, String)>,
}

const REF_PREFIX: &str = "#/components/schemas/";

fn reference(schema: &Value) -> Option<&str> {
    let direct = schema["$ref"].as_str();
    let wrapped = schema["allOf"].as_array().and_then(|all| all.first()).and_then(|s| s["$ref"].as_str());
    direct.or(wrapped).and_then(|r| r.strip_prefix(REF_PREFIX))
}

fn is_atomic(schema: &Value) -> bool {
    schema["x-kubernetes-map-type"] == "atomic"
}

fn shape(schema: &Value, definitions: &Map<String, Value>) -> Shape {
    if is_atomic(schema) {
        return Shape::Atomic;
    }
    if let Some(name) = reference(schema) {
        return match definitions.get(name) {
            Some(def) if def["properties"].is_object() && !is_atomic(def) => Shape::Struct(name.to_owned()),
            Some(def) if def.get("additionalProperties").is_some_and(Value::is_object) => shape(def, definitions),
            _ => Shape::Atomic,
        };
    }
    match schema["type"].as_str() {
        Some("array") => match schema["x-kubernetes-list-type"].as_str() {
            Some("map") => Shape::Keyed {
                keys: schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect(),
                item: Box::new(shape(&schema["items"], definitions)),
            },
            Some("set") => Shape::Set,
            _ => Shape::Atomic,
        },
        Some("object") => match schema.get("additionalProperties") {
            Some(item @ Value::Object(_)) => Shape::Map(Box::new(shape(item, definitions))),
            _ => Shape::Atomic,
        },
        _ => Shape::Atomic,
    }
}

impl Types {
    /// Reads the struct definitions of an OpenAPI v3 `components.schemas` map.
    pub fn from_definitions(definitions: &Map<String, Value>) -> Types {
        let mut structs = HashMap::new();
        let mut kinds = Vec::new();
        for (name, def) in definitions {
            for gvk in def["x-kubernetes-group-version-kind"].as_array().into_iter().flatten() {
                let group = gvk["group"].as_str().unwrap_or_default().to_owned();
                let kind = gvk["kind"].as_str().unwrap_or_default().to_owned();
                kinds.push((group, kind, name.clone()));
            }
            let Some(properties) = def["properties"].as_object() else { continue };
            if is_atomic(def) {
                continue;
            }
            let fields = properties.iter().map(|(field, schema)| (field.clone(), shape(schema, definitions))).collect();
            structs.insert(name.clone(), fields);
        }
        kinds.sort();
        kinds.dedup_by(|a, b| (&a.0, &a.1) == (&b.0, &b.1));
        Types { structs, kinds }
    }

    /// The definition a kind's objects follow, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub fn kind(&self, group: &str, kind: &str) -> Option<&str> {
        let at = self.kinds.binary_search_by(|(g, k, _)| (g.as_str(), k.as_str()).cmp(&(group, kind))).ok()?;
        Some(&self.kinds[at].2)
    }

    /// A field's shape; unknown fields are owned whole.
    pub fn field(&self, definition: &str, field: &str) -> &Shape {
        self.struct_fields(definition).and_then(|fields| fields.get(field)).unwrap_or(&Shape::Atomic)
    }

    /// A struct definition's fields, to look several up.
    pub fn struct_fields(&self, definition: &str) -> Option<&StructFields> {
        self.structs.get(definition)
    }

    pub fn is_struct(&self, definition: &str) -> bool {
        self.structs.contains_key(definition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_follow_the_markers() {
        let defs = json!({
            "Pod": {"type": "object", "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Pod"}],
                "properties": {
                "spec": {"allOf": [{"$ref": "#/components/schemas/PodSpec"}]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "selector": {"$ref": "#/components/schemas/Selector"},
                "qty": {"$ref": "#/components/schemas/Quantity"},
            }},
            "PodSpec": {"type": "object", "properties": {
                "containers": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"], "items": {"$ref": "#/components/schemas/Container"}},
                "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "args": {"type": "array", "items": {"type": "string"}},
            }},
            "Container": {"type": "object", "properties": {"name": {"type": "string"}}},
            "Selector": {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {"a": {"type": "string"}}},
            "Quantity": {"x-kubernetes-int-or-string": true},
        });
        let types = Types::from_definitions(defs.as_object().unwrap());
        assert_eq!(types.kind("", "Pod"), Some("Pod"));
        assert_eq!(types.field("Pod", "spec"), &Shape::Struct("PodSpec".into()));
        assert_eq!(types.field("Pod", "labels"), &Shape::Map(Box::new(Shape::Atomic)));
        assert_eq!(types.field("Pod", "selector"), &Shape::Atomic);
        assert_eq!(types.field("Pod", "qty"), &Shape::Atomic);
        assert_eq!(types.field("Pod", "nope"), &Shape::Atomic);
        assert_eq!(
            types.field("PodSpec", "containers"),
            &Shape::Keyed { keys: vec!["name".into()], item: Box::new(Shape::Struct("Container".into())) }
        );
        assert_eq!(types.field("PodSpec", "finalizers"), &Shape::Set);
        assert_eq!(types.field("PodSpec", "args"), &Shape::Atomic);
    }
}
