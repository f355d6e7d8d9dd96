//! Walks over objects by their shape: the field set a value sets, what an update
//! changed, merging an applied configuration, and removing or reading one path.

use super::fieldset::{self, FieldSet};
use super::types::{Shape, Types};
use serde_json::{Map, Value};

/// The fields `value` sets: every atomic value, list item and map entry, as server-side
/// apply owns them. Struct fields are not members themselves; nulls set nothing. `node`
/// is the set's node at the value's path.
pub fn to_set(types: &Types, value: &Value, shape: &Shape, node: &mut FieldSet) {
    if value.is_null() {
        return;
    }
    match (shape, value) {
        (Shape::Struct(def), Value::Object(object)) if types.is_struct(def) => {
            for (name, child) in object {
                node.within(fieldset::field(name), |at| to_set(types, child, types.field(def, name), at));
            }
        }
        (Shape::Map(item), Value::Object(object)) => {
            for (name, child) in object.iter().filter(|(_, child)| !child.is_null()) {
                node.within(fieldset::field(name), |at| {
                    to_set(types, child, item, at);
                    at.mark();
                });
            }
        }
        (Shape::Set, Value::Array(items)) => {
            for item in items {
                node.within(fieldset::set_item(item), FieldSet::mark);
            }
        }
        (Shape::Keyed { keys, item: item_shape }, Value::Array(items)) => {
            for item in items {
                node.within(fieldset::key(item, keys), |at| {
                    to_set(types, item, item_shape, at);
                    at.mark();
                });
            }
        }
        _ => node.mark(),
    }
}

/// [`to_set`] of `value` written straight in the `FieldsV1` form, without building a
/// [`FieldSet`] first: what a create records, once per object created. `None` is the
/// empty set; an empty map is a member leaf (`{}`); a member with fields has `"."`.
pub fn fields_v1(types: &Types, value: &Value, shape: &Shape) -> Option<Map<String, Value>> {
    if value.is_null() {
        return None;
    }
    let mut node = Map::new();
    match (shape, value) {
        (Shape::Struct(def), Value::Object(object)) if types.is_struct(def) => {
            for (name, child) in object {
                if let Some(fields) = fields_v1(types, child, types.field(def, name)) {
                    node.insert(fieldset::field(name), Value::Object(fields));
                }
            }
        }
        (Shape::Map(item), Value::Object(object)) => {
            for (name, child) in object.iter().filter(|(_, child)| !child.is_null()) {
                node.insert(fieldset::field(name), Value::Object(marked(fields_v1(types, child, item))));
            }
        }
        (Shape::Set, Value::Array(items)) => {
            for item in items {
                node.insert(fieldset::set_item(item), Value::Object(Map::new()));
            }
        }
        (Shape::Keyed { keys, item: item_shape }, Value::Array(items)) => {
            for item in items {
                let fields = marked(fields_v1(types, item, item_shape));
                match node.entry(fieldset::key(item, keys)) {
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
        _ => return Some(node),
    }
    (!node.is_empty()).then_some(node)
}

/// A `FieldsV1` node made a member itself.
fn marked(node: Option<Map<String, Value>>) -> Map<String, Value> {
    let mut node = node.unwrap_or_default();
    if !node.is_empty() {
        node.entry(".").or_insert_with(|| Value::Object(Map::new()));
    }
    node
}

/// Whether a `FieldsV1` node is a member itself: a leaf (`{}`), or a node with `"."`.
fn is_member(node: &Map<String, Value>) -> bool {
    node.is_empty() || node.contains_key(".")
}

/// The union of two `FieldsV1` nodes, into `into`.
pub fn merge_fields_v1(into: &mut Map<String, Value>, from: Map<String, Value>) {
    let member = is_member(into) || is_member(&from);
    for (element, child) in from {
        if element == "." {
            continue;
        }
        match (into.get_mut(&element), child) {
            (Some(Value::Object(existing)), Value::Object(child)) => merge_fields_v1(existing, child),
            (_, child) => {
                into.insert(element, child);
            }
        }
    }
    into.remove(".");
    if member && !into.is_empty() {
        into.insert(".".into(), Value::Object(Map::new()));
    }
}

/// What an update set: the values that are new or different in `new`, and the list
/// items and map entries that did not exist in `old`. `node` is the set's node at the
/// values' path.
pub fn changed(types: &Types, old: Option<&Value>, new: &Value, shape: &Shape, node: &mut FieldSet) {
    if new.is_null() || old == Some(new) {
        return;
    }
    match (shape, new) {
        (Shape::Struct(def), Value::Object(object)) if types.is_struct(def) => {
            for (name, child) in object {
                let before = old.and_then(|o| o.get(name));
                node.within(fieldset::field(name), |at| changed(types, before, child, types.field(def, name), at));
            }
        }
        (Shape::Map(item), Value::Object(object)) => {
            for (name, child) in object {
                let before = old.and_then(|o| o.get(name));
                node.within(fieldset::field(name), |at| {
                    changed(types, before, child, item, at);
                    if before.is_none() && !child.is_null() {
                        at.mark();
                    }
                });
            }
        }
        (Shape::Set, Value::Array(items)) => {
            let before = old.and_then(Value::as_array);
            for item in items.iter().filter(|i| !before.is_some_and(|b| b.contains(i))) {
                node.within(fieldset::set_item(item), FieldSet::mark);
            }
        }
        (Shape::Keyed { keys, item: item_shape }, Value::Array(items)) => {
            let before = old.and_then(Value::as_array);
            for item in items {
                let element = fieldset::key(item, keys);
                let previous = before.and_then(|b| b.iter().find(|o| fieldset::key(o, keys) == element));
                node.within(element, |at| {
                    changed(types, previous, item, item_shape, at);
                    if previous.is_none() {
                        at.mark();
                    }
                });
            }
        }
        _ => node.mark(),
    }
}

/// What `new` no longer has of `old`: the fields, list items and map entries gone.
/// (A value replaced by another is not gone: its path still exists.) `node` is the
/// set's node at the values' path.
pub fn removed(types: &Types, old: &Value, new: Option<&Value>, shape: &Shape, node: &mut FieldSet) {
    let Some(new) = new.filter(|n| !n.is_null()) else {
        to_set(types, old, shape, node);
        return;
    };
    if old == new {
        return;
    }
    match (shape, old) {
        (Shape::Struct(def), Value::Object(object)) if types.is_struct(def) && new.is_object() => {
            for (name, child) in object {
                node.within(fieldset::field(name), |at| {
                    removed(types, child, new.get(name), types.field(def, name), at)
                });
            }
        }
        (Shape::Map(item), Value::Object(object)) if new.is_object() => {
            for (name, child) in object {
                let after = new.get(name).filter(|v| !v.is_null());
                node.within(fieldset::field(name), |at| {
                    removed(types, child, after, item, at);
                    if after.is_none() && !child.is_null() {
                        at.mark();
                    }
                });
            }
        }
        (Shape::Set, Value::Array(items)) => {
            let after = new.as_array();
            for item in items.iter().filter(|i| !after.is_some_and(|a| a.contains(i))) {
                node.within(fieldset::set_item(item), FieldSet::mark);
            }
        }
        (Shape::Keyed { keys, item: item_shape }, Value::Array(items)) => {
            let after = new.as_array();
            for item in items {
                let element = fieldset::key(item, keys);
                let current = after.and_then(|a| a.iter().find(|n| fieldset::key(n, keys) == element));
                node.within(element, |at| {
                    removed(types, item, current, item_shape, at);
                    if current.is_none() {
                        at.mark();
                    }
                });
            }
        }
        _ => {}
    }
}

/// Merges an applied configuration into the live object: atomic values are replaced,
/// structs and maps merge field by field, keyed lists merge item by item (new items go
/// last), sets gain the missing items. Nulls in the configuration change nothing.
pub fn merge(types: &Types, live: &mut Value, config: &Value, shape: &Shape) {
    match (shape, config) {
        (Shape::Struct(_) | Shape::Map(_), Value::Object(fields)) if live.is_object() => {
            for (name, child) in fields {
                if child.is_null() {
                    continue;
                }
                let child_shape = match shape {
                    Shape::Struct(def) => types.field(def, name),
                    Shape::Map(item) => item,
                    _ => unreachable!("matched above"),
                };
                let target = live.as_object_mut().expect("checked above");
                match target.get_mut(name) {
                    Some(existing) if !existing.is_null() => merge(types, existing, child, child_shape),
                    _ => {
                        target.insert(name.clone(), child.clone());
                    }
                }
            }
        }
        (Shape::Set, Value::Array(items)) if live.is_array() => {
            let target = live.as_array_mut().expect("checked above");
            for item in items {
                if !target.contains(item) {
                    target.push(item.clone());
                }
            }
        }
        (Shape::Keyed { keys, item: item_shape }, Value::Array(items)) if live.is_array() => {
            let target = live.as_array_mut().expect("checked above");
            for item in items {
                let element = fieldset::key(item, keys);
                match target.iter_mut().find(|t| fieldset::key(t, keys) == element) {
                    Some(existing) => merge(types, existing, item, item_shape),
                    None => target.push(item.clone()),
                }
            }
        }
        _ => *live = config.clone(),
    }
}

/// Whether a list item or map value is the one a path element names.
fn names(element: &str, candidate: &Value, shape: &Shape) -> bool {
    match shape {
        Shape::Keyed { keys, .. } => fieldset::key(candidate, keys) == element,
        _ => fieldset::set_item(candidate) == element,
    }
}

/// The shape one step down `element` from a value of `shape`.
fn step<'t>(types: &'t Types, shape: &'t Shape, element: &str) -> &'t Shape {
    match shape {
        Shape::Struct(def) => types.field(def, element.get(2..).unwrap_or_default()),
        Shape::Map(item) | Shape::Keyed { item, .. } => item,
        _ => &Shape::Atomic,
    }
}

/// Removes the value a path names, if it is there.
pub fn remove(types: &Types, value: &mut Value, path: &[String], shape: &Shape) {
    let Some((element, rest)) = path.split_first() else { return };
    let next = step(types, shape, element);
    match value {
        Value::Object(object) => {
            let name = element.get(2..).unwrap_or_default();
            if rest.is_empty() {
                object.remove(name);
            } else if let Some(child) = object.get_mut(name) {
                remove(types, child, rest, next);
            }
        }
        Value::Array(items) => {
            if rest.is_empty() {
                items.retain(|item| !names(element, item, shape));
            } else if let Some(item) = items.iter_mut().find(|item| names(element, item, shape)) {
                remove(types, item, rest, next);
            }
        }
        _ => {}
    }
}

/// The value a path names.
pub fn get<'v>(types: &Types, value: &'v Value, path: &[String], shape: &Shape) -> Option<&'v Value> {
    let Some((element, rest)) = path.split_first() else { return Some(value) };
    let next = step(types, shape, element);
    let child = match value {
        Value::Object(object) => object.get(element.get(2..).unwrap_or_default())?,
        Value::Array(items) => items.iter().find(|item| names(element, item, shape))?,
        _ => return None,
    };
    get(types, child, rest, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn types() -> Types {
        let defs = json!({
            "Obj": {"type": "object", "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "replicas": {"type": "integer"},
                "containers": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"], "items": {"$ref": "#/components/schemas/C"}},
                "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            }},
            "C": {"type": "object", "properties": {"name": {"type": "string"}, "image": {"type": "string"}}},
        });
        Types::from_definitions(defs.as_object().unwrap())
    }

    fn set_of(types: &Types, value: &Value) -> Vec<String> {
        let mut set = FieldSet::default();
        to_set(types, value, &Shape::Struct("Obj".into()), &mut set);
        set.members().iter().map(|p| fieldset::render(p)).collect()
    }

    #[test]
    fn sets_list_items_and_map_entries() {
        let t = types();
        let v = json!({"labels": {"a": "1"}, "replicas": 2, "containers": [{"name": "web", "image": "x"}],
            "finalizers": ["f"]});
        assert_eq!(
            set_of(&t, &v),
            vec![
                ".containers[name=\"web\"]",
                ".containers[name=\"web\"].image",
                ".containers[name=\"web\"].name",
                ".finalizers[=\"f\"]",
                ".labels.a",
                ".replicas"
            ]
        );
    }

    #[test]
    fn changes_merge_remove_and_get() {
        let t = types();
        let shape = Shape::Struct("Obj".into());
        let old = json!({"replicas": 1, "containers": [{"name": "web", "image": "x"}]});
        let new = json!({"replicas": 1, "containers": [{"name": "web", "image": "y"}, {"name": "side", "image": "z"}]});
        let mut set = FieldSet::default();
        changed(&t, Some(&old), &new, &shape, &mut set);
        let rendered: Vec<String> = set.members().iter().map(|p| fieldset::render(p)).collect();
        assert_eq!(
            rendered,
            vec![
                ".containers[name=\"side\"]",
                ".containers[name=\"side\"].image",
                ".containers[name=\"side\"].name",
                ".containers[name=\"web\"].image"
            ]
        );

        let mut live = old.clone();
        merge(&t, &mut live, &json!({"containers": [{"name": "side", "image": "z"}], "labels": {"b": "2"}}), &shape);
        assert_eq!(live["containers"][0]["image"], "x");
        assert_eq!(live["containers"][1]["name"], "side");
        assert_eq!(live["labels"]["b"], "2");

        let path: Vec<String> = vec!["f:containers".into(), "k:{\"name\":\"web\"}".into(), "f:image".into()];
        assert_eq!(get(&t, &live, &path, &shape), Some(&json!("x")));
        let before = live.clone();
        remove(&t, &mut live, &path[..2], &shape);
        assert_eq!(live["containers"].as_array().unwrap().len(), 1);
        let mut gone = FieldSet::default();
        removed(&t, &before, Some(&live), &shape, &mut gone);
        let rendered: Vec<String> = gone.members().iter().map(|p| fieldset::render(p)).collect();
        assert_eq!(
            rendered,
            vec![".containers[name=\"web\"]", ".containers[name=\"web\"].image", ".containers[name=\"web\"].name"]
        );
        assert_eq!(get(&t, &live, &path, &shape), None);
    }
}
