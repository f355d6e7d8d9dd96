//! The few fields of a pod (and of a watch event carrying one) that the load
//! generator reads, decoded without building the whole object.

use serde::Deserialize;
use std::collections::HashMap;

#[derive(Deserialize)]
pub struct WatchLine<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    pub object: PodLite,
}

#[derive(Deserialize, Default)]
pub struct PodLite {
    #[serde(default)]
    pub metadata: MetaLite,
    #[serde(default)]
    pub spec: SpecLite,
    #[serde(default)]
    pub status: StatusLite,
    /// An ERROR event's Status code.
    #[serde(default)]
    pub code: Option<u16>,
}

impl PodLite {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// Bound to a node.
    pub fn bound(&self) -> bool {
        self.spec.node_name.as_deref().is_some_and(|n| !n.is_empty())
    }

    pub fn running(&self) -> bool {
        self.status.phase.as_deref() == Some("Running")
    }
}

#[derive(Deserialize, Default)]
pub struct MetaLite {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(rename = "resourceVersion", default)]
    pub resource_version: String,
}

#[derive(Deserialize, Default)]
pub struct SpecLite {
    #[serde(rename = "nodeName", default)]
    pub node_name: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct StatusLite {
    #[serde(default)]
    pub phase: Option<String>,
}
