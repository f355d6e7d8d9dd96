//! A create's `FieldsV1`, read from a typed object as it serializes: the same set
//! [`walk::fields_v1`] finds in the object's JSON value, without building that value.
//!
//! A create records every field its writer set, and the fast create path holds the
//! object in its Rust type: turning it into a `serde_json::Value` only to walk it (and
//! then dropping that tree) cost more than the rest of the walk. Here the object's own
//! `Serialize` drives the walk: structs and maps report their fields, lists their
//! items, and whatever the types say is owned whole (an atomic list, a quantity, a
//! selector) is not looked into at all. Only key fields of keyed list items and
//! items of sets are turned into JSON values, to name them.
//!
//! What serialization can express but a kind never does (tuples, enum variants,
//! non-string map keys) is refused with an error, and the caller walks the JSON value
//! instead.

use super::fieldset;
use super::types::{Shape, StructFields, Types};
use super::walk::merge_fields_v1;
use super::{Writer, SERVER_METADATA};
use crate::serde_methods::methods;
use serde::ser::{self, Impossible, Serialize};
use serde_json::{Map, Value};

type Error = serde_json::Error;

/// The fields `writer` sets in `object` (of the kind whose definition is
/// `definition`), in the `FieldsV1` form [`super::record_update`] records for a
/// create; empty when it sets none.
pub fn create_fields_v1<T: Serialize>(
    types: &Types,
    definition: &str,
    writer: &Writer<'_>,
    object: &T,
) -> Result<Map<String, Value>, Error> {
    let top = Shape::Struct(definition.to_owned());
    let walker = Walker { types, shape: &top, scope: Scope::Top(writer), capture: None };
    Ok(match object.serialize(walker)? {
        Found::Fields(fields) => fields,
        Found::Null | Found::Nothing => Map::new(),
    })
}

/// What a value sets.
enum Found {
    /// A null: nothing, and not even an empty member of a map.
    Null,
    /// A struct, map or list with nothing set in it.
    Nothing,
    /// Its fields; empty for a leaf (a value owned whole).
    Fields(Map<String, Value>),
}

/// A value owned whole: a member with no fields of its own.
fn leaf() -> Result<Found, Error> {
    Ok(Found::Fields(Map::new()))
}

impl Found {
    /// As a member of a map or list: a node that is also a member itself.
    fn marked(self) -> Map<String, Value> {
        match self {
            Found::Fields(mut node) => {
                if !node.is_empty() {
                    node.entry(".").or_insert_with(|| Value::Object(Map::new()));
                }
                node
            }
            Found::Null | Found::Nothing => Map::new(),
        }
    }

    fn of(node: Map<String, Value>) -> Found {
        if node.is_empty() {
            Found::Nothing
        } else {
            Found::Fields(node)
        }
    }
}

/// Which fields count: at the top, those the writer owns; in the top-level metadata,
/// those the server does not own; below, all.
#[derive(Clone, Copy)]
enum Scope<'w> {
    Top(&'w Writer<'w>),
    Metadata,
    Inner,
}

impl Scope<'_> {
    /// The scope of field `name`'s value, or `None` when the field does not count.
    fn enter(self, name: &str) -> Option<Scope<'static>> {
        match self {
            Scope::Top(writer) if !writer.owns_top(name) => None,
            Scope::Top(_) if name == "metadata" => Some(Scope::Metadata),
            Scope::Metadata if SERVER_METADATA.contains(&name) => None,
            _ => Some(Scope::Inner),
        }
    }
}

/// The key fields of a keyed list's item, and the values it gave them.
type Capture<'a> = (&'a [String], &'a mut Map<String, Value>);

/// Walks one value of shape `shape`.
struct Walker<'a> {
    types: &'a Types,
    shape: &'a Shape,
    scope: Scope<'a>,
    /// Set for an item of a keyed list: where its key fields' values go.
    capture: Option<Capture<'a>>,
}

/// What an object's fields or entries are, by its shape.
enum ObjectRule<'a> {
    /// A struct: each field by its own shape (owned whole when the struct's
    /// definition does not know it).
    Fields(&'a StructFields),
    /// A map: each entry by the item shape, and a member itself.
    Entries(&'a Shape),
    /// Owned whole.
    Leaf,
}

impl<'a> Walker<'a> {
    fn object(self) -> ObjectWalker<'a> {
        let rule = match self.shape {
            Shape::Struct(definition) => match self.types.struct_fields(definition) {
                Some(fields) => ObjectRule::Fields(fields),
                None => ObjectRule::Leaf,
            },
            Shape::Map(item) => ObjectRule::Entries(item),
            _ => ObjectRule::Leaf,
        };
        ObjectWalker { types: self.types, rule, scope: self.scope, capture: self.capture, node: Map::new(), key: None }
    }
}

fn unsupported(what: &str) -> Error {
    ser::Error::custom(format!("{what} has no field set of its own"))
}

impl<'a> ser::Serializer for Walker<'a> {
    type Ok = Found;
    type Error = Error;
    type SerializeSeq = SeqWalker<'a>;
    type SerializeTuple = Impossible<Found, Error>;
    type SerializeTupleStruct = Impossible<Found, Error>;
    type SerializeTupleVariant = Impossible<Found, Error>;
    type SerializeMap = ObjectWalker<'a>;
    type SerializeStruct = ObjectWalker<'a>;
    type SerializeStructVariant = Impossible<Found, Error>;

    // Scalars (and enum names, which are strings) are leaves.
    methods!(leaf(); serialize_bool serialize_i8 serialize_i16 serialize_i32 serialize_i64 serialize_u8
        serialize_u16 serialize_u32 serialize_u64 serialize_char serialize_str serialize_unit_variant);
    methods!(Err(unsupported("a tuple")); serialize_tuple serialize_tuple_struct);
    methods!(Err(unsupported("an enum variant")); serialize_newtype_variant serialize_tuple_variant
        serialize_struct_variant);

    fn serialize_f32(self, v: f32) -> Result<Found, Error> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Found, Error> {
        // A JSON value has no non-finite numbers: they become null.
        if v.is_finite() {
            leaf()
        } else {
            Ok(Found::Null)
        }
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Found, Error> {
        // An array of numbers in a JSON value: a list, owned by its shape.
        Err(unsupported("a byte string"))
    }
    fn serialize_none(self) -> Result<Found, Error> {
        Ok(Found::Null)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<Found, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Found, Error> {
        Ok(Found::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Found, Error> {
        Ok(Found::Null)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<Found, Error> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<SeqWalker<'a>, Error> {
        let rule = match self.shape {
            Shape::Set => SeqRule::Set,
            Shape::Keyed { keys, item } => SeqRule::Keyed { keys, item },
            _ => SeqRule::Leaf,
        };
        Ok(SeqWalker { types: self.types, rule, node: Map::new() })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<ObjectWalker<'a>, Error> {
        Ok(self.object())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<ObjectWalker<'a>, Error> {
        Ok(self.object())
    }
}

/// Walks a struct's fields or a map's entries.
struct ObjectWalker<'a> {
    types: &'a Types,
    rule: ObjectRule<'a>,
    scope: Scope<'a>,
    capture: Option<Capture<'a>>,
    node: Map<String, Value>,
    /// A map entry's key, until its value comes.
    key: Option<String>,
}

impl ObjectWalker<'_> {
    fn field<T: ?Sized + Serialize>(&mut self, name: &str, value: &T) -> Result<(), Error> {
        if let Some((keys, captured)) = self.capture.as_mut() {
            if keys.iter().any(|key| key == name) {
                captured.insert(name.to_owned(), serde_json::to_value(value)?);
            }
        }
        match self.rule {
            ObjectRule::Leaf => {}
            ObjectRule::Fields(fields) => {
                let Some(scope) = self.scope.enter(name) else { return Ok(()) };
                let shape = fields.get(name).unwrap_or(&Shape::Atomic);
                let walker = Walker { types: self.types, shape, scope, capture: None };
                if let Found::Fields(fields) = value.serialize(walker)? {
                    self.node.insert(fieldset::field(name), Value::Object(fields));
                }
            }
            ObjectRule::Entries(item) => {
                let walker = Walker { types: self.types, shape: item, scope: Scope::Inner, capture: None };
                match value.serialize(walker)? {
                    Found::Null => {}
                    found => {
                        self.node.insert(fieldset::field(name), Value::Object(found.marked()));
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Found {
        match self.rule {
            ObjectRule::Leaf => Found::Fields(Map::new()),
            _ => Found::of(self.node),
        }
    }
}

impl ser::SerializeStruct for ObjectWalker<'_> {
    type Ok = Found;
    type Error = Error;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, name: &'static str, value: &T) -> Result<(), Error> {
        self.field(name, value)
    }
    fn end(self) -> Result<Found, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeMap for ObjectWalker<'_> {
    type Ok = Found;
    type Error = Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(key.serialize(KeyName)?);
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        let key = self.key.take().ok_or_else(|| ser::Error::custom("a map value without its key"))?;
        self.field(&key, value)
    }
    fn end(self) -> Result<Found, Error> {
        Ok(self.finish())
    }
}

/// What a list's items are, by its shape.
enum SeqRule<'a> {
    /// Scalars, each a member named by its value.
    Set,
    /// Objects, each a member named by its key fields.
    Keyed { keys: &'a [String], item: &'a Shape },
    /// Owned whole.
    Leaf,
}

/// Walks a list's items.
struct SeqWalker<'a> {
    types: &'a Types,
    rule: SeqRule<'a>,
    node: Map<String, Value>,
}

impl ser::SerializeSeq for SeqWalker<'_> {
    type Ok = Found;
    type Error = Error;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, item: &T) -> Result<(), Error> {
        match self.rule {
            SeqRule::Leaf => {}
            SeqRule::Set => {
                let item = serde_json::to_value(item)?;
                self.node.insert(fieldset::set_item(&item), Value::Object(Map::new()));
            }
            SeqRule::Keyed { keys, item: shape } => {
                let mut captured = Map::new();
                let walker =
                    Walker { types: self.types, shape, scope: Scope::Inner, capture: Some((keys, &mut captured)) };
                let fields = item.serialize(walker)?.marked();
                match self.node.entry(fieldset::key(&Value::Object(captured), keys)) {
                    serde_json::map::Entry::Vacant(vacant) => {
                        vacant.insert(Value::Object(fields));
                    }
                    // Two items with one key are one item, as a field set sees them.
                    serde_json::map::Entry::Occupied(mut occupied) => {
                        if let Value::Object(existing) = occupied.get_mut() {
                            merge_fields_v1(existing, fields);
                        }
                    }
                }
            }
        }
        Ok(())
    }
    fn end(self) -> Result<Found, Error> {
        Ok(match self.rule {
            SeqRule::Leaf => Found::Fields(Map::new()),
            _ => Found::of(self.node),
        })
    }
}

/// A map key, which must be a string (as every kind's are).
struct KeyName;

impl ser::Serializer for KeyName {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = Impossible<String, Error>;
    type SerializeTuple = Impossible<String, Error>;
    type SerializeTupleStruct = Impossible<String, Error>;
    type SerializeTupleVariant = Impossible<String, Error>;
    type SerializeMap = Impossible<String, Error>;
    type SerializeStruct = Impossible<String, Error>;
    type SerializeStructVariant = Impossible<String, Error>;

    methods!(Err(not_a_string()); serialize_bool serialize_i8 serialize_i16 serialize_i32 serialize_i64 serialize_u8
        serialize_u16 serialize_u32 serialize_u64 serialize_f32 serialize_f64 serialize_char serialize_bytes
        serialize_none serialize_some serialize_unit serialize_unit_struct serialize_unit_variant
        serialize_newtype_variant serialize_seq serialize_tuple serialize_tuple_struct serialize_tuple_variant
        serialize_map serialize_struct serialize_struct_variant);

    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_owned())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<String, Error> {
        value.serialize(self)
    }
}

fn not_a_string() -> Error {
    ser::Error::custom("a map key that is not a string")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::create_entries;
    use crate::openapi::OpenApi;
    use keelson_engine::k8s_openapi::api::apps::v1::Deployment;
    use keelson_engine::k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
    use serde::de::DeserializeOwned;
    use serde_json::json;

    /// What the JSON value walk records for a create of `object`.
    fn walked(types: &Types, definition: &str, writer: &Writer<'_>, object: &Value) -> Map<String, Value> {
        let mut object = object.clone();
        super::super::record_update(types, definition, writer, None, &mut object);
        match object.pointer("/metadata/managedFields/0/fieldsV1") {
            Some(Value::Object(fields)) => fields.clone(),
            _ => Map::new(),
        }
    }

    fn same_as_the_value_walk<T: Serialize + DeserializeOwned>(types: &Types, group: &str, kind: &str, json: Value) {
        let definition = types.kind(group, kind).unwrap();
        let typed: T = serde_json::from_value(json).unwrap();
        // The value the walk would otherwise build: exactly what the typed object serializes.
        let value = serde_json::to_value(&typed).unwrap();
        for (subresource, has_status) in [(None, true), (None, false), (Some("status"), true)] {
            let writer =
                Writer { manager: "m", api_version: "v1", subresource, has_status, now: "2026-11-24T00:00:00Z" };
            let expected = walked(types, definition, &writer, &value);
            assert!(subresource.is_some() || !expected.is_empty(), "{kind}: the writer sets something");
            let found = create_fields_v1(types, definition, &writer, &typed).unwrap();
            assert_eq!(Value::Object(found), Value::Object(expected), "{kind} {subresource:?} {has_status}");
        }
    }

    #[test]
    fn a_typed_walk_finds_what_the_value_walk_finds() {
        let types = OpenApi::build().types;
        let meta = json!({"name": "x", "namespace": "ns", "uid": "u", "generation": 3,
            "creationTimestamp": "2026-11-24T00:00:00Z", "labels": {"app": "web", "tier": ""},
            "annotations": {"a/b": "c"}, "finalizers": ["f1", "f2"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "ru",
                "controller": true}]});
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [
                {"name": "app", "image": "nginx", "args": ["-v"], "env": [{"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP", "name": "dns"}],
                 "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                 "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": true}],
                 "securityContext": {}},
                {"name": "side", "image": "busybox", "command": ["sh"]}],
             "initContainers": [{"name": "init", "image": "busybox"}],
             "volumes": [{"name": "v", "emptyDir": {}},
                {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
             "nodeSelector": {"zone": "a"}, "tolerations": [{"key": "k", "operator": "Exists"}],
             "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms":
                [{"matchExpressions": [{"key": "k", "operator": "In", "values": ["a", "b"]}]}]}}},
             "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "web"}}}],
             "priority": 0, "enableServiceLinks": true, "securityContext": {}, "schedulingGates": [{"name": "g"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}});
        same_as_the_value_walk::<Pod>(&types, "", "Pod", pod);
        let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "ns", "uid": "u"},
            "reason": "Scheduled", "message": "m", "type": "Normal", "source": {"component": "s"}, "count": 1,
            "firstTimestamp": "2026-11-24T00:00:00Z", "lastTimestamp": "2026-11-24T00:00:00Z"});
        same_as_the_value_walk::<Event>(&types, "", "Event", event);
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
            "status": {"replicas": 2}});
        same_as_the_value_walk::<Deployment>(&types, "apps", "Deployment", deployment);
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": "http"}, {"port": 53, "protocol": "UDP"}],
                "selector": {"app": "web"}, "clusterIPs": ["10.0.0.1"], "ipFamilies": ["IPv4"]}});
        same_as_the_value_walk::<Service>(&types, "", "Service", service);
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "podCIDRs": ["10.1.0.0/24"]},
            "status": {"capacity": {"cpu": "4"}, "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        same_as_the_value_walk::<Node>(&types, "", "Node", node);
        // Nothing the writer owns: no fields at all.
        let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        let writer = Writer { manager: "m", api_version: "v1", subresource: None, has_status: true, now: "" };
        let definition = types.kind("", "Pod").unwrap();
        assert!(create_fields_v1(&types, definition, &writer, &bare).unwrap().is_empty());
    }

    #[test]
    fn an_entry_records_the_writer() {
        let writer = Writer {
            manager: "kubectl",
            api_version: "v1",
            subresource: None,
            has_status: true,
            now: "2026-11-24T10:00:00Z",
        };
        assert!(create_entries(&writer, Map::new()).is_none());
        let mut fields = Map::new();
        fields.insert("f:spec".into(), json!({}));
        let entries = create_entries(&writer, fields).unwrap();
        let value = serde_json::to_value(&entries[0]).unwrap();
        assert_eq!(
            value,
            json!({"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "time": "2026-11-24T10:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}})
        );
    }
}
