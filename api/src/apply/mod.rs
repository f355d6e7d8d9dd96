//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write records which manager set which fields: an `Update` entry per manager
//! (and subresource) for creates, PUTs and PATCHes, an `Apply` entry for server-side
//! apply. Applying a configuration merges it into the live object by the types' list
//! and map semantics ([`types`]), fails with 409 when it would change a value another
//! manager owns (unless forced, which takes the field over), and removes the fields the
//! manager applied before but no longer does, unless someone else still owns them.

pub mod fieldset;
pub mod typed;
pub mod types;
pub mod walk;

use fieldset::FieldSet;
use keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use keelson_engine::{ApiError, FieldError, FieldErrorKind, StatusReason};
use serde_json::{json, Map, Value};
use types::{Shape, Types};

/// Metadata the server owns: never part of a manager's fields.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Who writes, and to which part of the object.
pub struct Writer<'a> {
    pub manager: &'a str,
    /// `apps/v1`, as the entries record it.
    pub api_version: &'a str,
    /// `status` for the status subresource.
    pub subresource: Option<&'a str>,
    /// Whether the kind has a status subresource (then the main resource does not own status).
    pub has_status: bool,
    /// RFC 3339, for the entries' `time`.
    pub now: &'a str,
}

impl Writer<'_> {
    /// Whether a top-level field counts toward this writer's ownership: the status
    /// subresource owns only status; the main resource owns everything else, and status
    /// too when the kind has no status subresource.
    fn owns_top(&self, name: &str) -> bool {
        match name {
            "apiVersion" | "kind" => false,
            "status" => self.subresource == Some("status") || !self.has_status,
            _ => self.subresource != Some("status"),
        }
    }
}

/// Where a top-level owned field sits: `["spec", ""]` or `["metadata", "labels"]`.
type TopKey<'k> = [&'k str; 2];

/// What [`visit_owned`] calls: path so far, where the field sits, its value and shape.
type Visitor<'f, 'v> = dyn FnMut(&mut Vec<String>, TopKey<'_>, &'v Value, &Shape) + 'f;

fn lookup<'v>(object: &'v Value, key: TopKey<'_>) -> Option<&'v Value> {
    let value = object.get(key[0])?;
    if key[1].is_empty() {
        Some(value)
    } else {
        value.get(key[1])
    }
}

/// Calls `visit` for each top-level field `writer` owns in `object` (metadata field by
/// field, without the server's), with its path pushed. Nothing is cloned.
fn visit_owned<'v>(
    types: &Types,
    definition: &str,
    writer: &Writer<'_>,
    object: &'v Value,
    visit: &mut Visitor<'_, 'v>,
) {
    let Some(top) = object.as_object() else { return };
    let mut path = Vec::with_capacity(16);
    for (name, value) in top {
        if !writer.owns_top(name) {
            continue;
        }
        let shape = types.field(definition, name);
        path.push(fieldset::field(name));
        match (name.as_str(), value.as_object(), shape) {
            ("metadata", Some(fields), Shape::Struct(meta)) => {
                for (field, v) in fields.iter().filter(|(f, _)| !SERVER_METADATA.contains(&f.as_str())) {
                    path.push(fieldset::field(field));
                    visit(&mut path, [name, field], v, types.field(meta, field));
                    path.pop();
                }
            }
            _ => visit(&mut path, [name, ""], value, shape),
        }
        path.pop();
    }
}

/// The fields `object` sets, as `writer` would own them.
fn field_set(types: &Types, definition: &str, writer: &Writer<'_>, object: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    visit_owned(types, definition, writer, object, &mut |path, _, value, shape| {
        set.within_path(path, |at| walk::to_set(types, value, shape, at))
    });
    set
}

/// What `writer` set anew or differently in `new` compared with `old`.
fn changed_fields(types: &Types, definition: &str, writer: &Writer<'_>, old: Option<&Value>, new: &Value) -> FieldSet {
    let mut changed = FieldSet::default();
    visit_owned(types, definition, writer, new, &mut |path, key, value, shape| {
        changed.within_path(path, |at| walk::changed(types, old.and_then(|o| lookup(o, key)), value, shape, at))
    });
    changed
}

/// What of `old` is gone from `new`.
fn removed_fields(types: &Types, definition: &str, writer: &Writer<'_>, old: &Value, new: &Value) -> FieldSet {
    let mut gone = FieldSet::default();
    visit_owned(types, definition, writer, old, &mut |path, key, value, shape| {
        gone.within_path(path, |at| walk::removed(types, value, lookup(new, key), shape, at))
    });
    gone
}

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    fn read(value: &Value) -> Option<Entry> {
        Some(Entry {
            manager: value["manager"].as_str()?.to_owned(),
            operation: value["operation"].as_str().unwrap_or("Update").to_owned(),
            api_version: value["apiVersion"].as_str().unwrap_or_default().to_owned(),
            time: value["time"].as_str().unwrap_or_default().to_owned(),
            subresource: value["subresource"].as_str().unwrap_or_default().to_owned(),
            fields: FieldSet::from_fields_v1(&value["fieldsV1"]),
        })
    }

    fn write(self) -> Value {
        let fields = self.fields.into_fields_v1();
        entry_value(self.manager, self.operation, self.api_version, self.time, self.subresource, fields)
    }

    /// How a conflict names the entry (kube's `printManager`): the manager, its
    /// subresource, and for an Update the version and time it wrote with.
    fn describe(&self) -> String {
        let mut text = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            text.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            text.push_str(&format!(" using {}", self.api_version));
            if !self.time.is_empty() {
                text.push_str(&format!(" at {}", self.time));
            }
        }
        text
    }

    fn is(&self, writer: &Writer<'_>, operation: &str) -> bool {
        self.manager == writer.manager
            && self.operation == operation
            && self.subresource == writer.subresource.unwrap_or_default()
    }
}

fn read_entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"].as_array().into_iter().flatten().filter_map(Entry::read).collect()
}

fn write_entries(object: &mut Value, entries: Vec<Entry>) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let kept: Vec<Value> = entries.into_iter().filter(|e| !e.fields.is_empty()).map(Entry::write).collect();
    if kept.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".into(), Value::Array(kept));
    }
}

/// The entry for this writer and operation, created if missing.
fn entry_for<'e>(entries: &'e mut Vec<Entry>, writer: &Writer<'_>, operation: &str) -> &'e mut Entry {
    match entries.iter().position(|e| e.is(writer, operation)) {
        Some(i) => &mut entries[i],
        None => {
            entries.push(Entry {
                manager: writer.manager.to_owned(),
                operation: operation.to_owned(),
                api_version: writer.api_version.to_owned(),
                time: String::new(),
                subresource: writer.subresource.unwrap_or_default().to_owned(),
                fields: FieldSet::default(),
            });
            entries.last_mut().expect("just pushed")
        }
    }
}

/// A `managedFields` entry as stored.
fn entry_value(
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields_v1: Value,
) -> Value {
    let mut entry = Map::new();
    entry.insert("manager".into(), Value::String(manager));
    entry.insert("operation".into(), Value::String(operation));
    entry.insert("apiVersion".into(), Value::String(api_version));
    if !time.is_empty() {
        entry.insert("time".into(), Value::String(time));
    }
    entry.insert("fieldsType".into(), json!("FieldsV1"));
    entry.insert("fieldsV1".into(), fields_v1);
    if !subresource.is_empty() {
        entry.insert("subresource".into(), Value::String(subresource));
    }
    Value::Object(entry)
}

/// Records a create, PUT or PATCH by `writer`: what it changed becomes its own (and no
/// longer anyone else's). Sets `metadata.managedFields` on `new`.
pub fn record_update(types: &Types, definition: &str, writer: &Writer<'_>, old: Option<&Value>, new: &mut Value) {
    match old {
        None => record_create(types, definition, writer, new),
        Some(_) => record_change(types, definition, writer, old, new),
    }
}

/// [`record_update`] for a create: every field `writer` owns in `new` is its own and
/// nobody else's. The same entry [`record_change`] makes from no old object, written
/// in one walk (a create is most writes, and the field set's trees cost twice).
fn record_create(types: &Types, definition: &str, writer: &Writer<'_>, new: &mut Value) {
    let mut fields = Map::new();
    visit_owned(types, definition, writer, new, &mut |path, _, value, shape| {
        if let Some(node) = walk::fields_v1(types, value, shape) {
            insert_fields_v1(&mut fields, path, node);
        }
    });
    let Some(metadata) = new.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    if fields.is_empty() {
        metadata.remove("managedFields");
        return;
    }
    let entry = entry_value(
        writer.manager.to_owned(),
        "Update".to_owned(),
        writer.api_version.to_owned(),
        writer.now.to_owned(),
        writer.subresource.unwrap_or_default().to_owned(),
        Value::Object(fields),
    );
    metadata.insert("managedFields".into(), Value::Array(vec![entry]));
}

/// The managed fields [`record_update`] records for a create that set `fields` (as
/// [`typed::create_fields_v1`] finds them), for a typed object; `None` when the writer
/// set nothing.
pub fn create_entries(writer: &Writer<'_>, fields: Map<String, Value>) -> Option<Vec<ManagedFieldsEntry>> {
    if fields.is_empty() {
        return None;
    }
    // As `entry_value` writes it: a time and a subresource only when there are ones.
    Some(vec![ManagedFieldsEntry {
        manager: Some(writer.manager.to_owned()),
        operation: Some("Update".to_owned()),
        api_version: Some(writer.api_version.to_owned()),
        time: writer.now.parse().ok().map(Time),
        fields_type: Some("FieldsV1".to_owned()),
        fields_v1: Some(FieldsV1(Value::Object(fields))),
        subresource: writer.subresource.filter(|s| !s.is_empty()).map(str::to_owned),
    }])
}

/// Puts `node` at `path` (not empty) under `root`, with the nodes on the way.
fn insert_fields_v1(root: &mut Map<String, Value>, path: &[String], node: Map<String, Value>) {
    let (last, parents) = path.split_last().expect("a top-level field's path");
    let mut at = root;
    for element in parents {
        let next = at.entry(element.clone()).or_insert_with(|| Value::Object(Map::new()));
        at = next.as_object_mut().expect("inner FieldsV1 nodes are objects");
    }
    match at.get_mut(last) {
        Some(Value::Object(existing)) => walk::merge_fields_v1(existing, node),
        _ => {
            at.insert(last.clone(), Value::Object(node));
        }
    }
}

/// [`record_update`] for an update of `old` (also correct, but slower, for a create).
fn record_change(types: &Types, definition: &str, writer: &Writer<'_>, old: Option<&Value>, new: &mut Value) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let changed = changed_fields(types, definition, writer, old, new);
    let gone = old.map(|old| removed_fields(types, definition, writer, old, new)).unwrap_or_default();
    for entry in entries.iter_mut() {
        entry.fields.subtract(&changed);
        entry.fields.subtract(&gone);
    }
    if !changed.is_empty() {
        let mine = entry_for(&mut entries, writer, "Update");
        if mine.fields.is_empty() {
            // A create, or this manager's first write: nothing to merge with.
            mine.fields = changed;
        } else {
            mine.fields.union(&changed);
        }
        mine.api_version = writer.api_version.to_owned();
        mine.time = writer.now.to_owned();
    }
    write_entries(new, entries);
}

/// Applies `config` to `live` (`None`: the object does not exist yet) as `writer`.
/// Returns the new object, with its `managedFields`, or the 409 listing the conflicts.
pub fn apply(
    types: &Types,
    definition: &str,
    writer: &Writer<'_>,
    live: Option<&Value>,
    config: &Value,
    force: bool,
) -> Result<Value, ApiError> {
    let shape = Shape::Struct(definition.to_owned());
    let mut entries = live.map(read_entries).unwrap_or_default();
    let applied = field_set(types, definition, writer, config);
    let empty = json!({});
    let before = live.unwrap_or(&empty);
    let mut merged = before.clone();
    // A managedFields in the configuration is merged too, but `write_entries` below
    // replaces it, and no manager owns server metadata.
    walk::merge(types, &mut merged, config, &shape);

    // Conflicts: fields another manager owns whose value the apply would change.
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for entry in entries.iter_mut().filter(|e| !e.is(writer, "Apply")) {
        let mut taken = FieldSet::default();
        for path in entry.fields.intersect(&applied).leaves() {
            if walk::get(types, before, &path, &shape) != walk::get(types, &merged, &path, &shape) {
                taken.insert(&path);
                conflicts.push((entry.describe(), fieldset::render(&path)));
            }
        }
        if force {
            entry.fields.subtract(&taken);
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }

    // What this manager applied before and dropped now goes, unless others own it.
    let mine = entry_for(&mut entries, writer, "Apply");
    let mut dropped = std::mem::take(&mut mine.fields);
    dropped.subtract(&applied);
    mine.fields = applied;
    mine.api_version = writer.api_version.to_owned();
    mine.time = writer.now.to_owned();
    for entry in entries.iter().filter(|e| !e.is(writer, "Apply")) {
        dropped.subtract(&entry.fields);
    }
    // Parents first: removing an item removes what it holds.
    for path in dropped.members() {
        walk::remove(types, &mut merged, &path, &shape);
    }
    // Whatever is gone from the object is nobody's any more.
    if let Some(live) = live {
        let gone = removed_fields(types, definition, writer, live, &merged);
        for entry in entries.iter_mut() {
            entry.fields.subtract(&gone);
        }
    }
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// kube-apiserver's wording: `Apply failed with 1 conflict: conflict with "kubectl"
/// with subresource "scale" using apps/v1 at 2026-01-01T00:00:00Z: .spec.replicas`;
/// several conflicts are listed by manager, in the order of their descriptions.
fn conflict_error(conflicts: &[(String, String)]) -> ApiError {
    let count = conflicts.len();
    let message = if let [(manager, path)] = conflicts {
        format!("Apply failed with 1 conflict: conflict with {manager}: {path}")
    } else {
        let mut by_manager: Vec<(&str, Vec<&str>)> = Vec::new();
        for (manager, path) in conflicts {
            match by_manager.iter_mut().find(|(m, _)| m == manager) {
                Some((_, paths)) => paths.push(path),
                None => by_manager.push((manager, vec![path])),
            }
        }
        by_manager.sort_by(|a, b| a.0.cmp(b.0));
        let parts: Vec<String> = by_manager
            .iter()
            .map(|(manager, paths)| {
                let list: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with {manager}:\n{}", list.join("\n"))
            })
            .collect();
        format!("Apply failed with {count} conflicts: {}", parts.join("\n"))
    };
    let mut error = ApiError::new(StatusReason::Conflict, message);
    error.causes = conflicts
        .iter()
        .map(|(manager, path)| {
            FieldError::new(FieldErrorKind::ManagerConflict, path.clone(), None, format!("conflict with {manager}"))
        })
        .collect();
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Types {
        let defs = json!({
            "D": {"type": "object", "properties": {
                "metadata": {"$ref": "#/components/schemas/Meta"},
                "spec": {"$ref": "#/components/schemas/Spec"},
                "status": {"$ref": "#/components/schemas/Status"},
            }},
            "Meta": {"type": "object", "properties": {
                "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
            "Spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "paused": {"type": "boolean"},
                "containers": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"], "items": {"$ref": "#/components/schemas/C"}},
            }},
            "C": {"type": "object", "properties": {"name": {"type": "string"}, "image": {"type": "string"}}},
            "Status": {"type": "object", "properties": {"ready": {"type": "integer"}}},
        });
        Types::from_definitions(defs.as_object().unwrap())
    }

    fn writer(manager: &str) -> Writer<'_> {
        Writer { manager, api_version: "apps/v1", subresource: None, has_status: true, now: "2026-11-22T00:00:00Z" }
    }

    fn managers(object: &Value) -> Vec<String> {
        read_entries(object).iter().map(|e| format!("{}/{}", e.manager, e.operation)).collect()
    }

    /// A create's entry, written in one walk, is the one the general update path makes
    /// from no old object: for the real kinds' schemas, and for list items that share
    /// a key (one item to a field set).
    #[test]
    fn a_create_records_what_an_update_from_nothing_records() {
        let real = crate::openapi::OpenApi::build().types;
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "labels": {"app": "web", "gone": null},
                "annotations": {"a": "b"}, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "rs", "uid": "r1", "controller": true}], "finalizers": ["x/y"]},
            "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80},
                    {"containerPort": 53, "protocol": "UDP"}], "env": [{"name": "A", "value": "1"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}, "securityContext": {}},
                    {"name": "side", "image": "busybox", "command": ["sleep", "1"]}],
                "nodeSelector": {"zone": "a"}, "tolerations": [{"key": "k", "operator": "Exists"}],
                "volumes": [{"name": "data", "emptyDir": {}}], "schedulerName": "default-scheduler",
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}},
            "status": {"phase": "Pending"}});
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Scheduled", "type": "Normal", "count": 1});
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "4"}, "conditions": [{"type": "Ready", "status": "True"}]}});
        let small = types();
        let cases = [
            (&real, real.kind("", "Pod").unwrap().to_owned(), pod, true),
            (&real, real.kind("apps", "Deployment").unwrap().to_owned(), deployment, true),
            (&real, real.kind("", "Event").unwrap().to_owned(), event, false),
            (&real, real.kind("", "Node").unwrap().to_owned(), node, true),
            (
                &small,
                "D".to_owned(),
                json!({"metadata": {"name": "d", "labels": {}},
                "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a"}, {"name": "b", "image": null}]}}),
                true,
            ),
            (&small, "D".to_owned(), json!({"metadata": {"name": "only-server-fields"}}), true),
        ];
        for (types, definition, object, has_status) in cases {
            let writer = Writer { has_status, ..writer("kubectl") };
            let mut created = object.clone();
            record_create(types, &definition, &writer, &mut created);
            let mut changed = object.clone();
            record_change(types, &definition, &writer, None, &mut changed);
            assert_eq!(created, changed, "{definition}");
            let recorded = created["metadata"].get("managedFields").is_some();
            assert_eq!(recorded, object["metadata"]["name"] != "only-server-fields", "{created}");
        }
    }

    #[test]
    fn apply_creates_then_removes_what_it_no_longer_applies() {
        let t = types();
        let config = json!({"apiVersion": "apps/v1", "kind": "D", "metadata": {"name": "web", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "containers": [{"name": "web", "image": "x"}, {"name": "side", "image": "y"}]}});
        let created = apply(&t, "D", &writer("ci"), None, &config, false).unwrap();
        assert_eq!(managers(&created), vec!["ci/Apply"]);
        let fields = &created["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(fields["f:spec"]["f:containers"]["k:{\"name\":\"side\"}"]["."], json!({}));
        assert!(fields["f:metadata"].get("f:name").is_none(), "the name is the server's");

        let smaller = json!({"apiVersion": "apps/v1", "kind": "D", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "containers": [{"name": "web", "image": "x"}]}});
        let applied = apply(&t, "D", &writer("ci"), Some(&created), &smaller, false).unwrap();
        assert_eq!(applied["spec"]["containers"].as_array().unwrap().len(), 1);
        assert!(applied["metadata"].get("labels").and_then(|l| l.get("a")).is_none(), "{applied}");
    }

    #[test]
    fn a_different_value_for_another_managers_field_conflicts_unless_forced() {
        let t = types();
        let mut live = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "paused": false}});
        record_update(&t, "D", &writer("kubectl-scale"), None, &mut live);
        assert_eq!(managers(&live), vec!["kubectl-scale/Update"]);

        let config = json!({"metadata": {"name": "web"}, "spec": {"replicas": 5}});
        let error = apply(&t, "D", &writer("ci"), Some(&live), &config, false).unwrap_err();
        assert_eq!(error.reason, StatusReason::Conflict);
        assert_eq!(
            error.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1 at 2026-11-22T00:00:00Z: \
             .spec.replicas"
        );
        assert_eq!(error.causes[0].field, ".spec.replicas");

        // The same value is shared ownership, not a conflict.
        let same = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let shared = apply(&t, "D", &writer("ci"), Some(&live), &same, false).unwrap();
        assert_eq!(managers(&shared), vec!["kubectl-scale/Update", "ci/Apply"]);

        let forced = apply(&t, "D", &writer("ci"), Some(&live), &config, true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let scale = read_entries(&forced).into_iter().find(|e| e.manager == "kubectl-scale").unwrap();
        assert!(!scale.fields.contains(&["f:spec".into(), "f:replicas".into()]));
    }

    #[test]
    fn updates_take_over_what_they_change_and_status_is_separate() {
        let t = types();
        let mut live = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "paused": false}});
        record_update(&t, "D", &writer("create"), None, &mut live);
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(4);
        record_update(&t, "D", &writer("scaler"), Some(&live), &mut new);
        let entries = read_entries(&new);
        assert!(entries[0].fields.contains(&["f:spec".into(), "f:paused".into()]));
        assert!(!entries[0].fields.contains(&["f:spec".into(), "f:replicas".into()]));
        assert!(entries[1].fields.contains(&["f:spec".into(), "f:replicas".into()]));

        let mut with_status = new.clone();
        with_status["status"] = json!({"ready": 4});
        let status_writer = Writer { subresource: Some("status"), ..writer("controller") };
        record_update(&t, "D", &status_writer, Some(&new), &mut with_status);
        let entries = read_entries(&with_status);
        let status = entries.iter().find(|e| e.manager == "controller").unwrap();
        assert_eq!(status.subresource, "status");
        assert!(status.fields.contains(&["f:status".into(), "f:ready".into()]));
        assert_eq!(entries.len(), 3, "{entries:?}");
    }
}
