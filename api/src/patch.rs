//! The three patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! Kubernetes' strategic merge patch with the merge keys of the built-in types.

use keelson_engine::ApiError;
use serde_json::{Map, Value};

/// Patch content types, as sent in `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn patch_error(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message.into())
}

/// Splits an RFC 6901 pointer into unescaped tokens.
fn pointer_tokens(pointer: &str) -> Result<Vec<String>, ApiError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| patch_error(format!("invalid JSON pointer {pointer:?}")))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, ApiError> {
    let mut v = doc;
    for token in tokens {
        v = match v {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(move |i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| patch_error(format!("doc is missing path: /{}", tokens.join("/"))))?;
    }
    Ok(v)
}

fn json_remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let tokens = pointer_tokens(path)?;
    let (last, parents) = tokens.split_last().ok_or_else(|| patch_error("cannot remove the whole document"))?;
    let missing = || patch_error(format!("doc is missing key: {path}"));
    match parent_mut(doc, parents)? {
        Value::Object(map) => map.remove(last).ok_or_else(missing),
        Value::Array(items) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < items.len()).ok_or_else(missing)?;
            Ok(items.remove(i))
        }
        _ => Err(missing()),
    }
}

fn json_add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    let tokens = pointer_tokens(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let i = if last == "-" { items.len() } else { last.parse::<usize>().unwrap_or(usize::MAX) };
            if i > items.len() {
                return Err(patch_error(format!("add operation index out of bounds: {path}")));
            }
            items.insert(i, value);
            Ok(())
        }
        _ => Err(patch_error(format!("doc is missing path: {path}"))),
    }
}

/// RFC 6902 operations applied in order; any failure rejects the whole patch.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch.as_array().ok_or_else(|| patch_error("a JSON patch must be an array of operations"))?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).ok_or_else(|| patch_error("operation has no \"op\""))?;
        let path = op.get("path").and_then(Value::as_str).ok_or_else(|| patch_error("operation has no \"path\""))?;
        let value = || op.get("value").cloned().ok_or_else(|| patch_error(format!("{name} operation has no value")));
        let from = || op.get("from").and_then(Value::as_str).ok_or_else(|| patch_error("operation has no \"from\""));
        match name {
            "add" => json_add(doc, path, value()?)?,
            "remove" => {
                json_remove(doc, path)?;
            }
            "replace" => {
                json_remove(doc, path)?;
                json_add(doc, path, value()?)?;
            }
            "move" => {
                let moved = json_remove(doc, from()?)?;
                json_add(doc, path, moved)?;
            }
            "copy" => {
                let copied = doc.pointer(from()?).cloned().ok_or_else(|| patch_error("copy from a missing path"))?;
                json_add(doc, path, copied)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(patch_error(format!("testing value {path} failed")));
                }
            }
            other => return Err(patch_error(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(())
}

/// How a list field merges in a strategic merge patch.
enum ListStrategy {
    /// Elements are objects matched by this key.
    MergeByKey(&'static str),
    /// A set of primitives (`finalizers`).
    MergePrimitives,
    Replace,
}

/// The patch strategy of the built-in types' list fields, by field name (the names
/// are unambiguous across the built-in kinds except `ports`, told apart by content).
fn list_strategy(field: &str, sample: Option<&Value>) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "secrets" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "conditions" | "addresses" => ListStrategy::MergeByKey("type"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "finalizers" => ListStrategy::MergePrimitives,
        "ports" => match sample {
            Some(element) if element.get("containerPort").is_some() => ListStrategy::MergeByKey("containerPort"),
            Some(element) if element.get("port").is_some() => ListStrategy::MergeByKey("port"),
            _ => ListStrategy::Replace,
        },
        _ => ListStrategy::Replace,
    }
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch to `target` (in place).
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(&Value::Object(patch.clone()));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => return Err(patch_error(format!("Unknown patch type: {other}"))),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("made an object above");
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        map.retain(|k, _| keep.contains(&k.as_str()) || patch.contains_key(k));
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(remove)) = (map.get_mut(field), value) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            map.remove(key);
            continue;
        }
        match (map.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => strategic_merge(existing, value)?,
            (Some(Value::Array(existing)), Value::Array(items)) => merge_list(key, existing, items)?,
            _ => {
                map.insert(key.clone(), strip_directives(value));
            }
        }
    }
    for (key, order) in patch {
        if let (Some(field), Value::Array(order)) = (key.strip_prefix("$setElementOrder/"), order) {
            if let Some(Value::Array(items)) = map.get_mut(field) {
                reorder(field, items, order);
            }
        }
    }
    Ok(())
}

fn merge_list(field: &str, existing: &mut Vec<Value>, patch: &[Value]) -> Result<(), ApiError> {
    match list_strategy(field, patch.first().or(existing.first())) {
        ListStrategy::Replace => {
            *existing = patch.iter().map(strip_directives).collect();
        }
        ListStrategy::MergePrimitives => {
            for item in patch {
                if !existing.contains(item) {
                    existing.push(item.clone());
                }
            }
        }
        ListStrategy::MergeByKey(merge_key) => {
            for item in patch {
                let key = item.get(merge_key);
                let position = key.and_then(|k| existing.iter().position(|e| e.get(merge_key) == Some(k)));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        existing.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => strategic_merge(&mut existing[i], item)?,
                    (None, false) => existing.push(strip_directives(item)),
                }
            }
        }
    }
    Ok(())
}

/// `$setElementOrder`: listed elements first, in the given order; the rest after.
fn reorder(field: &str, items: &mut [Value], order: &[Value]) {
    let ListStrategy::MergeByKey(key) = list_strategy(field, items.first()) else {
        return;
    };
    let rank = |item: &Value| {
        order.iter().position(|o| o.get(key).is_some() && o.get(key) == item.get(key)).unwrap_or(usize::MAX)
    };
    items.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"spec": {"replicas": 1, "list": [1, 2]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "remove", "path": "/spec/list/0"},
                {"op": "test", "path": "/spec/replicas", "value": 3},
                {"op": "copy", "from": "/spec/replicas", "path": "/spec/copy"},
                {"op": "move", "from": "/spec/copy", "path": "/moved"},
            ]),
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"replicas": 3, "list": [2, 3]}, "moved": 3}));
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut doc, &json!([{"op": "test", "path": "/moved", "value": 4}])).is_err());
    }

    #[test]
    fn strategic_merge_as_kubectl_sends_it() {
        let mut deployment = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"unschedulable": true, "template": {"spec": {"containers": [
                {"name": "main", "image": "nginx:1.26", "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "busybox"}]}}}});
        strategic_merge(
            &mut deployment,
            &json!({"metadata": {"finalizers": ["y"]}, "spec": {"unschedulable": null, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "side"}, {"name": "main"}],
                "containers": [{"name": "main", "image": "nginx:1.27"}]}}}}),
        )
        .unwrap();
        let containers = &deployment["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["name"], "side");
        assert_eq!(containers[1]["image"], "nginx:1.27");
        assert_eq!(containers[1]["ports"][0]["containerPort"], 80, "merged, not replaced");
        assert!(deployment["spec"].get("unschedulable").is_none());
        assert_eq!(deployment["metadata"]["finalizers"], json!(["x", "y"]));

        strategic_merge(
            &mut deployment,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}),
        )
        .unwrap();
        assert_eq!(deployment["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        strategic_merge(&mut deployment, &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}})).unwrap();
        assert_eq!(deployment["metadata"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchType::from_content_type("application/merge-patch+json"), Some(PatchType::Merge));
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml; charset=utf-8"), Some(PatchType::Apply));
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }
}
