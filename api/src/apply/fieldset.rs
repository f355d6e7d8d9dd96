//! Sets of field paths, in the `FieldsV1` form `metadata.managedFields` stores them.
//!
//! A path is a list of elements: `f:<name>` (a struct field or map key),
//! `k:{"name":"web"}` (a list item by its key fields), `v:<json>` (an item of a set).
//! In `FieldsV1` the set is a tree of JSON objects keyed by those elements; a leaf
//! `{}` is a member, and `".": {}` marks an inner node that is a member itself (a list
//! item or map entry that is owned as well as its fields).

use serde_json::{Map, Value};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// A path element for a field or map key.
pub fn field(name: &str) -> String {
    // Built directly, not through `format!`: one per field of every object written.
    let mut element = String::with_capacity(name.len() + 2);
    element.push_str("f:");
    element.push_str(name);
    element
}

/// Key fields the schemas default: an item without one is the item with the default
/// (a port without `protocol` is the TCP port), so an applied configuration that leaves
/// it out still names the live, defaulted item.
const KEY_DEFAULTS: &[(&str, &str)] = &[("protocol", "TCP")];

/// A path element for the list item with these key fields (sorted by name).
pub fn key(item: &Value, keys: &[String]) -> String {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let fields: Vec<String> = sorted
        .iter()
        .filter_map(|k| {
            let value = item.get(k.as_str()).cloned().or_else(|| {
                KEY_DEFAULTS.iter().find(|(name, _)| name == k).map(|(_, default)| Value::from(*default))
            })?;
            Some(format!("{}:{value}", Value::String((*k).clone())))
        })
        .collect();
    format!("k:{{{}}}", fields.join(","))
}

/// A path element for an item of a set.
pub fn set_item(item: &Value) -> String {
    format!("v:{item}")
}

/// A path as kube-apiserver prints it in conflicts: `.spec.containers[name="web"].image`.
pub fn render(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        match element.split_at(2) {
            ("f:", name) => {
                out.push('.');
                out.push_str(name);
            }
            ("k:", keys) => {
                let parsed: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
                let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            (_, value) => out.push_str(&format!("[={value}]")),
        }
    }
    out
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Marks this node itself a member.
    pub fn mark(&mut self) {
        self.member = true;
    }

    /// Runs `fill` on the child at `element` (a new, empty one if missing) and keeps the
    /// child only if it ends up non-empty. A walk that descends with this touches each
    /// node once, where inserting whole paths from the root looks every ancestor up
    /// again for every leaf.
    pub fn within(&mut self, element: String, fill: impl FnOnce(&mut FieldSet)) {
        match self.children.entry(element) {
            Entry::Vacant(vacant) => {
                let mut child = FieldSet::default();
                fill(&mut child);
                if !child.is_empty() {
                    vacant.insert(child);
                }
            }
            Entry::Occupied(mut occupied) => {
                fill(occupied.get_mut());
                if occupied.get().is_empty() {
                    occupied.remove();
                }
            }
        }
    }

    /// [`FieldSet::within`] along a whole path.
    pub fn within_path(&mut self, path: &[String], fill: impl FnOnce(&mut FieldSet)) {
        match path.split_first() {
            None => fill(self),
            Some((first, rest)) => self.within(first.clone(), |child| child.within_path(rest, fill)),
        }
    }

    pub fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for element in path {
            // Look up before inserting: the element is only cloned for a new node.
            if !node.children.contains_key(element) {
                node.children.insert(element.clone(), FieldSet::default());
            }
            node = node.children.get_mut(element).expect("present or just inserted");
        }
        node.member = true;
    }

    pub fn contains(&self, path: &[String]) -> bool {
        let mut node = self;
        for element in path {
            match node.children.get(element) {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.member
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (element, child) in &other.children {
            self.children.entry(element.clone()).or_default().union(child);
        }
    }

    /// Removes every member of `other`.
    pub fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (element, child) in &other.children {
            if let Some(mine) = self.children.get_mut(element) {
                mine.subtract(child);
                if mine.is_empty() {
                    self.children.remove(element);
                }
            }
        }
    }

    /// Keeps only the members `other` also has.
    pub fn intersect(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersect(theirs);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// Every member's path, parents before their children.
    pub fn members(&self) -> Vec<Vec<String>> {
        fn walk(node: &FieldSet, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            if node.member {
                out.push(path.clone());
            }
            for (element, child) in &node.children {
                path.push(element.clone());
                walk(child, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// Members without member descendants: the fields whose values are compared.
    pub fn leaves(&self) -> Vec<Vec<String>> {
        self.members().into_iter().filter(|p| self.node(p).is_some_and(|n| n.children.is_empty())).collect()
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut node = self;
        for element in path {
            node = node.children.get(element)?;
        }
        Some(node)
    }

    /// The set as `FieldsV1`, its path elements moved into the keys.
    pub fn into_fields_v1(self) -> Value {
        let mut object = Map::new();
        if self.member && !self.children.is_empty() {
            object.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in self.children {
            object.insert(element, child.into_fields_v1());
        }
        Value::Object(object)
    }

    /// Reads `FieldsV1`; anything malformed is left out.
    pub fn from_fields_v1(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        let Some(object) = value.as_object() else { return set };
        if object.is_empty() {
            set.member = true;
        }
        for (element, child) in object {
            if element == "." {
                set.member = true;
            } else if element.len() > 2 && matches!(&element[..2], "f:" | "k:" | "v:" | "i:") {
                set.children.insert(element.clone(), FieldSet::from_fields_v1(child));
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(elements: &[&str]) -> Vec<String> {
        elements.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trip() {
        let v1 = json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}});
        let set = FieldSet::from_fields_v1(&v1);
        assert!(set.contains(&path(&["f:spec", "f:replicas"])));
        assert!(set.contains(&path(&["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"web\"}"])));
        assert!(!set.contains(&path(&["f:spec"])));
        assert_eq!(set.clone().into_fields_v1(), v1);
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::default();
        a.insert(&path(&["f:spec", "f:replicas"]));
        a.insert(&path(&["f:spec", "f:paused"]));
        let mut b = FieldSet::default();
        b.insert(&path(&["f:spec", "f:replicas"]));
        assert_eq!(a.intersect(&b), b);
        a.subtract(&b);
        assert_eq!(a.members(), vec![path(&["f:spec", "f:paused"])]);
        a.subtract(&a.clone());
        assert!(a.is_empty());
    }

    #[test]
    fn a_walk_within_keeps_only_what_it_filled() {
        let mut set = FieldSet::default();
        set.within_path(&path(&["f:spec", "f:template"]), |_| {});
        assert!(set.is_empty(), "an empty child is not kept: {set:?}");
        set.within_path(&path(&["f:spec", "f:replicas"]), FieldSet::mark);
        set.within("f:spec".into(), |spec| spec.within("f:paused".into(), FieldSet::mark));
        let mut inserted = FieldSet::default();
        inserted.insert(&path(&["f:spec", "f:replicas"]));
        inserted.insert(&path(&["f:spec", "f:paused"]));
        assert_eq!(set, inserted);
    }

    #[test]
    fn keys_and_rendering() {
        let item = json!({"name": "web", "containerPort": 80, "protocol": "TCP"});
        let element = key(&item, &["protocol".into(), "containerPort".into()]);
        assert_eq!(element, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        let rendered = render(&path(&["f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:image"]));
        assert_eq!(rendered, ".spec.containers[name=\"web\"].image");
        assert_eq!(set_item(&json!("x")), "v:\"x\"");
        let defaulted = key(&json!({"containerPort": 80}), &["containerPort".into(), "protocol".into()]);
        assert_eq!(defaulted, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
    }
}
