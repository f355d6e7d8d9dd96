//! Discovery documents, built once from the resource table.
//!
//! kubectl asks for aggregated discovery (`apidiscovery.k8s.io` v2, or v2beta1 before
//! 1.30) and parses the body by its Content-Type, so the exact media type matters;
//! the legacy documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`) are still used
//! directly by `drain` and `auth can-i`.

use crate::resources::{self, ResourceInfo};
use bytes::Bytes;
use serde_json::{json, Value};

pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub const AGGREGATED_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which discovery format an `Accept` header asks for first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Legacy,
    AggregatedV2,
    AggregatedV2Beta1,
}

impl Format {
    pub fn from_accept(accept: &str) -> Format {
        for media in accept.split(',') {
            let media = media.replace(' ', "");
            if media.contains("as=APIGroupDiscoveryList") {
                if media.contains("v=v2beta1") {
                    return Format::AggregatedV2Beta1;
                }
                if media.contains("v=v2") {
                    return Format::AggregatedV2;
                }
            } else if media.starts_with("application/json") || media.starts_with("*/*") {
                return Format::Legacy;
            }
        }
        Format::Legacy
    }
}

/// Every discovery body, serialized once at start-up.
pub struct Discovery {
    pub core_aggregated_v2: Bytes,
    pub core_aggregated_v2beta1: Bytes,
    pub groups_aggregated_v2: Bytes,
    pub groups_aggregated_v2beta1: Bytes,
    pub core_versions: Bytes,
    pub group_list: Bytes,
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("discovery documents serialize"))
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
        "subresources": r.subresources.iter().map(|s| json!({
            "subresource": s.name,
            "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
            "verbs": s.verbs,
        })).collect::<Vec<_>>(),
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    entry
}

fn aggregated_group(group: &str) -> Value {
    let version = resources::in_group_version(group, "v1").next().map_or("v1", |r| r.version);
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": [{
            "version": version,
            "freshness": "Current",
            "resources": resources::in_group_version(group, version).map(aggregated_resource).collect::<Vec<_>>(),
        }],
    })
}

fn aggregated_list(api_version: &str, groups: &[&str]) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": groups.iter().map(|g| aggregated_group(g)).collect::<Vec<_>>(),
    })
}

/// `/api/<v>` or `/apis/<g>/<v>`: the legacy `APIResourceList`.
pub fn resource_list(group: &str, version: &str) -> Option<Bytes> {
    let mut resources = Vec::new();
    for r in resources::in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for s in r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                sub["group"] = json!(s.group);
                sub["version"] = json!(s.version);
            }
            resources.push(sub);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(to_bytes(&json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })))
}

fn api_group(group: &str) -> Value {
    let version = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [version.clone()], "preferredVersion": version})
}

/// `/apis/<group>`: the legacy `APIGroup`.
pub fn group(group: &str) -> Option<Bytes> {
    if group.is_empty() || !resources::groups().contains(&group) {
        return None;
    }
    let mut body = api_group(group);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Some(to_bytes(&body))
}

impl Discovery {
    pub fn build() -> Discovery {
        let named: Vec<&str> = resources::groups().into_iter().filter(|g| !g.is_empty()).collect();
        Discovery {
            core_aggregated_v2: to_bytes(&aggregated_list("apidiscovery.k8s.io/v2", &[""])),
            core_aggregated_v2beta1: to_bytes(&aggregated_list("apidiscovery.k8s.io/v2beta1", &[""])),
            groups_aggregated_v2: to_bytes(&aggregated_list("apidiscovery.k8s.io/v2", &named)),
            groups_aggregated_v2beta1: to_bytes(&aggregated_list("apidiscovery.k8s.io/v2beta1", &named)),
            core_versions: to_bytes(&json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
            })),
            group_list: to_bytes(&json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": named.iter().map(|g| api_group(g)).collect::<Vec<_>>(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(Format::from_accept(kubectl), Format::AggregatedV2);
        assert_eq!(Format::from_accept(&kubectl.replace("v=v2;", "v=v9;")), Format::AggregatedV2Beta1);
        assert_eq!(Format::from_accept("application/json, */*"), Format::Legacy);
    }

    #[test]
    fn eviction_is_listed_with_its_group() {
        let list: Value = serde_json::from_slice(&resource_list("", "v1").unwrap()).unwrap();
        let eviction = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/eviction").unwrap();
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["version"], "v1");
        let aggregated: Value = serde_json::from_slice(&Discovery::build().groups_aggregated_v2).unwrap();
        let apps = aggregated["items"].as_array().unwrap().iter().find(|g| g["metadata"]["name"] == "apps").unwrap();
        let deploy = &apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["shortNames"][0], "deploy");
        assert_eq!(deploy["subresources"][0]["responseKind"]["kind"], "Scale");
        assert!(group("apps").is_some() && group("nope").is_none());
    }
}
