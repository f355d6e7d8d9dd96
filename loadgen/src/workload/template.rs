//! Object templates: real Kubernetes YAML, read once, stamped out per object.
//!
//! A string that is exactly `$name`, for a parameter of the workload, becomes the
//! parameter's value (`replicas: $replicas`). A string in a template may hold `{{index}}` (the object's number within its op) or
//! `{{node}}` (the name of node `index mod N` of the most recent createNodes, for pods
//! pinned one per node). Where those strings sit is found once, so stamping an object
//! is a clone and a few string writes, not a YAML parse.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct Template {
    object: Value,
    /// JSON pointers of strings holding a placeholder.
    placeholders: Vec<String>,
    pub api_version: String,
    pub kind: String,
}

/// What a template's placeholders stand for, for one object.
pub struct Stamp<'a> {
    pub index: usize,
    /// The nodes `{{node}}` cycles over.
    pub nodes: &'a [String],
}

impl Template {
    pub fn load(dir: &Path, path: &Path, params: &BTreeMap<String, Value>) -> Result<Template> {
        let full = dir.join(path);
        let text = std::fs::read_to_string(&full).with_context(|| format!("reading template {}", full.display()))?;
        let mut object: Value =
            serde_yaml::from_str(&text).with_context(|| format!("template {} is not YAML", full.display()))?;
        fill_params(&mut object, params);
        Template::new(object).with_context(|| format!("template {}", full.display()))
    }

    pub fn new(object: Value) -> Result<Template> {
        let field = |name: &str| object[name].as_str().map(str::to_owned);
        let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
            bail!("a template needs apiVersion and kind");
        };
        let mut placeholders = Vec::new();
        find_placeholders(&object, String::new(), &mut placeholders);
        Ok(Template { object, placeholders, api_version, kind })
    }

    /// The name the template gives, if any (placeholders not yet filled in).
    pub fn name(&self) -> Option<&str> {
        self.object["metadata"]["name"].as_str()
    }

    pub fn stamp(&self, stamp: &Stamp) -> Result<Value> {
        let mut object = self.object.clone();
        for pointer in &self.placeholders {
            let slot = object.pointer_mut(pointer).expect("found at load");
            let text = slot.as_str().expect("a string at load");
            let mut filled = text.replace("{{index}}", &stamp.index.to_string());
            if filled.contains("{{node}}") {
                if stamp.nodes.is_empty() {
                    bail!("{{{{node}}}} in a template, but no nodes were created before");
                }
                filled = filled.replace("{{node}}", &stamp.nodes[stamp.index % stamp.nodes.len()]);
            }
            *slot = Value::String(filled);
        }
        Ok(object)
    }
}

fn fill_params(value: &mut Value, params: &BTreeMap<String, Value>) {
    match value {
        Value::String(s) => {
            if let Some(found) = s.strip_prefix('$').and_then(|name| params.get(name)) {
                *value = found.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill_params(v, params)),
        Value::Object(map) => map.values_mut().for_each(|v| fill_params(v, params)),
        _ => {}
    }
}

fn find_placeholders(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.contains("{{") => out.push(at),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_placeholders(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                find_placeholders(item, format!("{at}/{escaped}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_filled_per_object() {
        let template = Template::new(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-{{index}}", "labels": {"a/b": "{{index}}"}},
            "spec": {"affinity": {"nodeAffinity": {"values": ["{{node}}"]}}}}))
        .unwrap();
        let nodes = vec!["node-0".to_string(), "node-1".to_string()];
        let pod = template.stamp(&Stamp { index: 3, nodes: &nodes }).unwrap();
        assert_eq!(pod["metadata"]["name"], "web-3");
        assert_eq!(pod["metadata"]["labels"]["a/b"], "3");
        assert_eq!(pod["spec"]["affinity"]["nodeAffinity"]["values"][0], "node-1");
        assert!(template.stamp(&Stamp { index: 0, nodes: &[] }).is_err());
        assert!(Template::new(json!({"kind": "Pod"})).is_err());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("d.yaml"),
            "apiVersion: apps/v1\nkind: Deployment\nspec: {replicas: $replicas, x: $other}\n",
        )
        .unwrap();
        let params = BTreeMap::from([("replicas".to_string(), json!(30))]);
        let deployment = Template::load(dir.path(), Path::new("d.yaml"), &params).unwrap();
        let object = deployment.stamp(&Stamp { index: 0, nodes: &[] }).unwrap();
        assert_eq!(object["spec"], json!({"replicas": 30, "x": "$other"}));
    }
}
