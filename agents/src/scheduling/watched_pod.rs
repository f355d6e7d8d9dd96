//! The Pod as the scheduler's watch decodes it: only the fields the scheduler reads.
//!
//! Every pod event (two or more per placed pod) is decoded by the scheduler's watch,
//! and `k8s-openapi`'s full decode builds everything: `metadata.managedFields` (each
//! entry's `fieldsV1` a `serde_json::Value` tree as deep as the pod), the projected API
//! access volume every pod gets, each container's command, environment, mounts and
//! probes, the status's container statuses. The scheduler reads none of it (kube's
//! informers drop managed fields too), so here those bytes are only tokenized.
//!
//! What is decoded, and the only pod fields the scheduler and its runner may read:
//! - `metadata`: all but `managedFields`;
//! - `spec`: `affinity`, `containers` and `initContainers` (each only `name`, `image`,
//!   `ports`, `resources` and `restartPolicy`), `nodeName`, `nodeSelector`,
//!   `overhead`, `preemptionPolicy`, `priority`, `priorityClassName`, `schedulerName`,
//!   `schedulingGates`, `tolerations`, `topologySpreadConstraints` and `volumes` (each
//!   only `name`, `persistentVolumeClaim` and `ephemeral`);
//! - `status`: `phase`, `conditions` and `nominatedNodeName`.
//!
//! Everything else is left at its default (`None`, empty).

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EphemeralVolumeSource, PersistentVolumeClaimVolumeSource, Pod, PodCondition,
    PodSchedulingGate, PodSpec, PodStatus, ResourceRequirements, Toleration, TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A [`Pod`] decoded with only the fields the scheduler reads (see the module).
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
    spec: Option<Spec>,
    status: Option<Status>,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    affinity: Option<Affinity>,
    #[serde(default)]
    containers: Vec<SchedulingContainer>,
    init_containers: Option<Vec<SchedulingContainer>>,
    node_name: Option<String>,
    node_selector: Option<BTreeMap<String, String>>,
    overhead: Option<BTreeMap<String, Quantity>>,
    preemption_policy: Option<String>,
    priority: Option<i32>,
    priority_class_name: Option<String>,
    scheduler_name: Option<String>,
    scheduling_gates: Option<Vec<PodSchedulingGate>>,
    tolerations: Option<Vec<Toleration>>,
    topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    volumes: Option<Vec<ClaimVolume>>,
}

/// A container as far as placing it goes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchedulingContainer {
    #[serde(default)]
    name: String,
    image: Option<String>,
    ports: Option<Vec<ContainerPort>>,
    resources: Option<ResourceRequirements>,
    restart_policy: Option<String>,
}

/// A volume as far as placing the pod goes: the claims it names.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimVolume {
    #[serde(default)]
    name: String,
    persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    ephemeral: Option<EphemeralVolumeSource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    conditions: Option<Vec<PodCondition>>,
    nominated_node_name: Option<String>,
    phase: Option<String>,
}

impl From<SchedulingContainer> for Container {
    fn from(c: SchedulingContainer) -> Container {
        Container {
            name: c.name,
            image: c.image,
            ports: c.ports,
            resources: c.resources,
            restart_policy: c.restart_policy,
            ..Container::default()
        }
    }
}

impl From<Spec> for PodSpec {
    fn from(s: Spec) -> PodSpec {
        let containers = |list: Vec<SchedulingContainer>| list.into_iter().map(Container::from).collect();
        PodSpec {
            affinity: s.affinity,
            containers: containers(s.containers),
            init_containers: s.init_containers.map(containers),
            node_name: s.node_name,
            node_selector: s.node_selector,
            overhead: s.overhead,
            preemption_policy: s.preemption_policy,
            priority: s.priority,
            priority_class_name: s.priority_class_name,
            scheduler_name: s.scheduler_name,
            scheduling_gates: s.scheduling_gates,
            tolerations: s.tolerations,
            topology_spread_constraints: s.topology_spread_constraints,
            volumes: s.volumes.map(|list| {
                list.into_iter()
                    .map(|v| Volume {
                        name: v.name,
                        persistent_volume_claim: v.persistent_volume_claim,
                        ephemeral: v.ephemeral,
                        ..Volume::default()
                    })
                    .collect()
            }),
            ..PodSpec::default()
        }
    }
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
        let status = status.map(|s| PodStatus {
            conditions: s.conditions,
            nominated_node_name: s.nominated_node_name,
            phase: s.phase,
            ..PodStatus::default()
        });
        Ok(WatchedPod(Pod { metadata, spec: spec.map(PodSpec::from), status }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skips_managed_fields_and_keeps_the_rest_of_the_metadata() {
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

    /// A pod as the server stores it, with what the scheduler does not read: decoding
    /// it gives what decoding only the read fields (written out) does.
    #[test]
    fn decodes_the_fields_the_scheduler_reads_and_no_others() {
        let read = json!({
            "metadata": {"name": "web-1", "namespace": "team", "uid": "u1", "labels": {"app": "web"}},
            "spec": {
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                "containers": [{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80, "hostPort": 8080,
                    "protocol": "TCP"}], "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}],
                "initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "50m"}}}],
                "nodeSelector": {"disk": "ssd"},
                "overhead": {"cpu": "10m"},
                "preemptionPolicy": "PreemptLowerPriority",
                "priority": 7,
                "priorityClassName": "high",
                "schedulerName": "default-scheduler",
                "schedulingGates": [{"name": "wait"}],
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 300}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "web"}}}],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}},
                    {"name": "kube-api-access-abcde"}
                ]
            },
            "status": {"phase": "Pending", "nominatedNodeName": "n2", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}
        });
        let mut stored = read.clone();
        stored["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {}}}}]);
        let spec = &mut stored["spec"];
        for (field, value) in [
            ("dnsPolicy", json!("ClusterFirst")),
            ("enableServiceLinks", json!(true)),
            ("restartPolicy", json!("Always")),
            ("securityContext", json!({})),
            ("serviceAccountName", json!("default")),
            ("terminationGracePeriodSeconds", json!(30)),
        ] {
            spec[field] = value;
        }
        let web = &mut spec["containers"][0];
        web["command"] = json!(["nginx", "-g", "daemon off;"]);
        web["env"] = json!([{"name": "MODE", "value": "prod"}]);
        web["imagePullPolicy"] = json!("IfNotPresent");
        web["terminationMessagePath"] = json!("/dev/termination-log");
        web["volumeMounts"] = json!([{"name": "kube-api-access-abcde", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
        spec["volumes"][2]["projected"] = json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]});
        stored["status"]["qosClass"] = json!("Burstable");
        stored["status"]["containerStatuses"] = json!([{"name": "web", "image": "nginx:1", "imageID": "",
            "ready": false, "restartCount": 0}]);

        let watched: WatchedPod = serde_json::from_value(stored.clone()).unwrap();
        let expected: Pod = serde_json::from_value(read).unwrap();
        assert_eq!(watched.0, expected);
        let full: Pod = serde_json::from_value(stored).unwrap();
        assert_ne!(full, expected, "the full decode keeps what this one skips");
    }
}
