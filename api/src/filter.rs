//! Label and field selectors applied to objects (for list, watch and deletecollection).
//!
//! Field selectors follow Kubernetes: `metadata.name` and `metadata.namespace` for
//! every kind, plus a short per-kind list (`spec.nodeName`, `status.phase`, ...);
//! operators `=`, `==` and `!=`; anything else is a 400.

use crate::object;
use crate::resources::ResourceInfo;
use keelson_engine::{ApiError, Labels, Selector};
use serde_json::Value;

/// The labels of a JSON object, for [`Selector::matches`].
pub struct ObjectLabels<'a>(Option<&'a serde_json::Map<String, Value>>);

impl<'a> ObjectLabels<'a> {
    pub fn of(object: &'a Value) -> ObjectLabels<'a> {
        ObjectLabels(object::get(object, &["metadata", "labels"]).and_then(Value::as_object))
    }
}

impl Labels for ObjectLabels<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.0?.get(key)?.as_str()
    }
}

/// An object's `spec.selector` (a `metav1.LabelSelector`), parsed; `None` when absent
/// or malformed.
pub fn spec_selector(object: &Value) -> Option<Selector> {
    let selector = object::get(object, &["spec", "selector"])?;
    let selector = serde_json::from_value(selector.clone()).ok()?;
    Selector::from_label_selector(&selector).ok()
}

/// `spec.selector` in the query syntax (`app=web`), as Scale and Tables show it.
pub fn spec_selector_text(object: &Value) -> String {
    spec_selector(object).map(|s| s.to_string()).unwrap_or_default()
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldRequirement {
    path: Vec<&'static str>,
    value: String,
    equal: bool,
}

/// A parsed `fieldSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// The field paths a kind can be selected by, besides `metadata.name|namespace`.
fn kind_fields(info: &ResourceInfo) -> &'static [&'static str] {
    match (info.group, info.kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        // The events API's names for the same fields (its objects are core Events).
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("", "PersistentVolume") => &["name"],
        _ => &[],
    }
}

/// Fields whose selector path differs from their location in the object.
fn object_path(field: &'static str) -> Vec<&'static str> {
    match field {
        "source" => vec!["source", "component"],
        other => other.split('.').collect(),
    }
}

impl FieldSelector {
    pub fn parse(text: &str, info: &ResourceInfo) -> Result<FieldSelector, ApiError> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{text}'; can't understand '{term}'")));
            };
            let field = field.trim();
            let known = ["metadata.name", "metadata.namespace"]
                .into_iter()
                .chain(kind_fields(info).iter().copied())
                .find(|known| *known == field)
                .ok_or_else(|| ApiError::bad_request(format!("field label not supported: {field}")))?;
            requirements.push(FieldRequirement { path: object_path(known), value: value.trim().to_string(), equal });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The name this selector pins (`metadata.name=x`), which turns a list into a get.
    pub fn name(&self) -> Option<&str> {
        self.requirements.iter().find(|r| r.equal && r.path == ["metadata", "name"]).map(|r| r.value.as_str())
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = match object::get(object, &r.path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                // Absent fields compare as their zero value, as Kubernetes' field sets do.
                None if r.path == ["spec", "unschedulable"] || r.path == ["spec", "hostNetwork"] => "false".into(),
                _ => String::new(),
            };
            (actual == r.value) == r.equal
        })
    }
}

/// Every path a selector can read of an object of any kind: `metadata.labels`,
/// `metadata.name|namespace` and each kind's selectable fields.
static SELECTABLE_PATHS: std::sync::LazyLock<Vec<Vec<&'static str>>> = std::sync::LazyLock::new(|| {
    let mut paths = vec![vec!["metadata", "labels"], vec!["metadata", "name"], vec!["metadata", "namespace"]];
    let every_kind = crate::resources::RESOURCES.iter().flat_map(|info| kind_fields(info).iter().copied());
    for path in every_kind.map(object_path) {
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths
});

/// What any selector can see of `object`: the object with everything else left out, on
/// which every [`Filter`] decides as on the whole object. A watch keeps this, not the
/// parsed object, in an event's memo for the watchers with selectors: the memo lives as
/// long as the store's ring holds the event, and a whole parsed pod is tens of
/// kilobytes of small allocations.
pub fn selectable(object: &Value) -> Value {
    let mut out = Value::Object(serde_json::Map::new());
    for path in SELECTABLE_PATHS.iter() {
        if let Some(value) = object::get(object, path) {
            object::set(&mut out, path, value.clone());
        }
    }
    out
}

/// Label and field selectors together.
#[derive(Clone, Debug)]
pub struct Filter {
    pub labels: Selector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn everything() -> Filter {
        Filter { labels: Selector::everything(), fields: FieldSelector::default() }
    }

    pub fn parse(
        label_selector: Option<&str>,
        field_selector: Option<&str>,
        info: &ResourceInfo,
    ) -> Result<Filter, ApiError> {
        let labels = match label_selector {
            Some(text) if !text.trim().is_empty() => {
                Selector::parse(text).map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?
            }
            _ => Selector::everything(),
        };
        let fields = match field_selector {
            Some(text) => FieldSelector::parse(text, info)?,
            None => FieldSelector::default(),
        };
        Ok(Filter { labels, fields })
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_everything() && self.fields.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&ObjectLabels::of(object)) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn selectors_decide_on_the_selectable_part_as_on_the_whole_object() {
        let pods = find("", "v1", "pods").unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": {"app": "web", "tier": "front"},
                "annotations": {"a": "b"}, "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n1", "hostNetwork": true, "schedulerName": "default-scheduler",
                "containers": [{"name": "c", "image": "i", "env": [{"name": "X", "value": "y"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7", "conditions": [{"type": "Ready"}]}});
        let part = selectable(&pod);
        assert!(part.get("spec").unwrap().get("containers").is_none(), "{part}");
        assert!(part["metadata"].get("managedFields").is_none(), "{part}");
        let cases = [
            (None, Some("spec.nodeName=n1")),
            (None, Some("spec.nodeName!=")),
            (None, Some("spec.nodeName=n2")),
            (None, Some("status.phase=Running,spec.hostNetwork=true")),
            (None, Some("spec.restartPolicy=Always")),
            (None, Some("metadata.name=p,metadata.namespace=d")),
            (Some("app=web,tier in (front)"), None),
            (Some("app!=web"), Some("status.podIP=10.0.0.7")),
        ];
        for (labels, fields) in cases {
            let filter = Filter::parse(labels, fields, pods).unwrap();
            assert_eq!(filter.matches(&part), filter.matches(&pod), "{labels:?} {fields:?}");
        }
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}, "spec": {"unschedulable": true}});
        for fields in ["spec.unschedulable=true", "spec.unschedulable=false", "metadata.name=n1"] {
            let filter = Filter::parse(Some("zone=a"), Some(fields), nodes).unwrap();
            assert_eq!(filter.matches(&selectable(&node)), filter.matches(&node), "{fields}");
        }
    }

    #[test]
    fn pod_field_selectors() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = Filter::parse(Some("app=web"), Some("spec.nodeName=n1,status.phase!=Succeeded"), pods).unwrap();
        assert!(f.matches(&pod));
        let f = Filter::parse(None, Some("spec.nodeName="), pods).unwrap();
        assert!(!f.matches(&pod));
        assert!(f.matches(&json!({"metadata": {"name": "q"}})));
        assert_eq!(FieldSelector::parse("metadata.name=p", pods).unwrap().name(), Some("p"));
        assert_eq!(Filter::parse(None, Some("spec.bogus=1"), pods).unwrap_err().code(), 400);
        assert_eq!(Filter::parse(Some("a in (b"), None, pods).unwrap_err().code(), 400);
    }

    #[test]
    fn node_unschedulable_defaults_to_false() {
        let nodes = find("", "v1", "nodes").unwrap();
        let f = Filter::parse(None, Some("spec.unschedulable=false"), nodes).unwrap();
        assert!(f.matches(&json!({"metadata": {"name": "n"}, "spec": {}})));
        assert!(!f.matches(&json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}})));
    }
}
