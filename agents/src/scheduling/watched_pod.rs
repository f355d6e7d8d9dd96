//! The Pod as the scheduler's watch decodes it: every field but
//! `metadata.managedFields`.
//!
//! The scheduler never reads field ownership (kube-scheduler's informers drop it too),
//! and it is the costliest part of a pod to decode: `k8s-openapi` holds each entry's
//! `fieldsV1` as a `serde_json::Value`, a tree of maps as deep as the pod, built for
//! every pod event (two or more per placed pod). Skipping it while decoding only
//! tokenizes those bytes.

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A [`Pod`] decoded without `metadata.managedFields` (always `None`).
#[derive(Clone, Debug)]
pub struct WatchedPod(pub Pod);

impl k8s_openapi::Resource for WatchedPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for WatchedPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// The pod's fields; `apiVersion` and `kind` are known and skipped.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: Meta,
    spec: Option<PodSpec>,
    status: Option<PodStatus>,
}

/// [`ObjectMeta`] but `managedFields`, which is skipped unread.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl<'de> Deserialize<'de> for WatchedPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Wire { metadata: m, spec, status } = Wire::deserialize(deserializer)?;
        let metadata = ObjectMeta {
            annotations: m.annotations,
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            generate_name: m.generate_name,
            generation: m.generation,
            labels: m.labels,
            managed_fields: None,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references,
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
        };
        Ok(WatchedPod(Pod { metadata, spec, status }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_everything_but_managed_fields() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "team", "uid": "u1", "resourceVersion": "7",
                "generateName": "web-", "generation": 1, "labels": {"app": "web"},
                "annotations": {"a": "b"}, "finalizers": ["f"], "deletionGracePeriodSeconds": 30,
                "creationTimestamp": "2026-11-24T00:00:00Z", "deletionTimestamp": "2026-11-24T00:01:00Z",
                "selfLink": "/api/v1/namespaces/team/pods/web",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u0"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"}});
        let expected: Pod = serde_json::from_value(pod.clone()).unwrap();
        pod["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {}}}}]);
        let watched: WatchedPod = serde_json::from_value(pod.clone()).unwrap();
        assert_eq!(watched.0, expected);
        let full: Pod = serde_json::from_value(pod).unwrap();
        assert!(full.metadata.managed_fields.is_some(), "the full decode keeps what this one skips");
    }
}
