//! ServiceAccount admission's API access volume: a new pod whose ServiceAccount
//! token is automounted gets the projected volume `kube-api-access-XXXXX` (a token
//! bound to the pod that the node agent refreshes, the cluster CA from the ConfigMap
//! `kube-root-ca.crt`, and the pod's namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container and init
//! container, as kube's ServiceAccount admission plugin adds it.
//!
//! Not added when the pod (or, if the pod does not say, its ServiceAccount) sets
//! `automountServiceAccountToken: false`, to mirror pods (their node made them), or
//! to containers that already mount something at that path.

use crate::cache::WatchCache;
use keelson_engine::k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, PodSpec,
    ProjectedVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keelson_engine::ApiError;

/// Where containers find the token, the CA and the namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The volume's name before its random suffix.
const VOLUME_PREFIX: &str = "kube-api-access-";
/// The token's lifetime kube asks for: an hour and a few seconds, so that a token
/// that old is recognisably a projected one.
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The annotation that marks a mirror pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The one field of a ServiceAccount this reads.
#[derive(serde::Deserialize)]
struct Automount {
    #[serde(default, rename = "automountServiceAccountToken")]
    automount: Option<bool>,
}

/// Adds the API access volume and its mounts to the pod of `metadata` and `spec`
/// (being created in `namespace`, its `serviceAccountName` already defaulted) when it
/// should have them.
pub fn add(
    cache: &WatchCache,
    namespace: &str,
    metadata: &ObjectMeta,
    spec: &mut PodSpec,
    suffix: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
        return Ok(());
    }
    let automount = match spec.automount_service_account_token {
        Some(automount) => automount,
        None => {
            let account = spec.service_account_name.as_deref().unwrap_or("default");
            let key = keelson_store::object_key("serviceaccounts", Some(namespace), account);
            match cache.find(key.as_bytes()).map_err(ApiError::internal)? {
                Some(bytes) => serde_json::from_slice::<Automount>(&bytes).map_err(ApiError::internal)?.automount,
                None => None,
            }
            .unwrap_or(true)
        }
    };
    if !automount {
        return Ok(());
    }
    let existing = spec.volumes.iter().flatten().map(|v| &v.name).find(|name| name.starts_with(VOLUME_PREFIX)).cloned();
    let volume_name = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", suffix()));
    let mut mounted = false;
    for containers in [spec.init_containers.as_mut(), Some(&mut spec.containers)].into_iter().flatten() {
        for container in containers {
            let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
            if mounts.iter().any(|m| m.mount_path == MOUNT_PATH) {
                continue;
            }
            mounts.push(VolumeMount {
                name: volume_name.clone(),
                read_only: Some(true),
                mount_path: MOUNT_PATH.to_owned(),
                ..Default::default()
            });
            mounted = true;
        }
    }
    if mounted && existing.is_none() {
        spec.volumes.get_or_insert_with(Vec::new).push(volume(volume_name));
    }
    Ok(())
}

fn volume(name: String) -> Volume {
    let token = ServiceAccountTokenProjection {
        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
        path: "token".to_owned(),
        audience: None,
    };
    let ca = ConfigMapProjection {
        name: "kube-root-ca.crt".to_owned(),
        items: Some(vec![KeyToPath { key: "ca.crt".to_owned(), path: "ca.crt".to_owned(), mode: None }]),
        optional: None,
    };
    let namespace = DownwardAPIProjection {
        items: Some(vec![DownwardAPIVolumeFile {
            path: "namespace".to_owned(),
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: "metadata.namespace".to_owned(),
            }),
            ..Default::default()
        }]),
    };
    let sources = vec![
        VolumeProjection { service_account_token: Some(token), ..Default::default() },
        VolumeProjection { config_map: Some(ca), ..Default::default() },
        VolumeProjection { downward_api: Some(namespace), ..Default::default() },
    ];
    Volume {
        name,
        projected: Some(ProjectedVolumeSource { default_mode: Some(420), sources: Some(sources) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_engine::k8s_openapi::api::core::v1::Pod;
    use serde_json::{json, Value};

    /// `pod` after the volume is added, as JSON.
    fn admitted(cache: &WatchCache, pod: Value) -> Value {
        let mut pod: Pod = serde_json::from_value(pod).unwrap();
        add(cache, "team", &pod.metadata, pod.spec.as_mut().unwrap(), || "abcde".into()).unwrap();
        let mut pod = serde_json::to_value(&pod).unwrap();
        // The type's own, which the inputs leave out.
        pod.as_object_mut().unwrap().retain(|field, _| field != "apiVersion" && field != "kind");
        pod
    }

    #[test]
    fn containers_mount_the_api_access_volume_unless_told_not_to() {
        let store = keelson_store::Store::in_memory(Default::default()).unwrap();
        let cache = WatchCache::start(store.clone());
        let pod = admitted(
            &cache,
            json!({"metadata": {"name": "p"}, "spec": {"serviceAccountName": "default",
                "initContainers": [{"name": "init"}],
                "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["volumes"][0]["name"], "kube-api-access-abcde");
        let sources = &spec["volumes"][0]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[2]["downwardAPI"]["items"][0]["path"], "namespace");
        let mount = json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][1]["volumeMounts"][0]["name"], "own", "an existing mount stays");
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);

        let opted_out = json!({"metadata": {"name": "p"},
            "spec": {"automountServiceAccountToken": false, "containers": [{"name": "a"}]}});
        assert_eq!(admitted(&cache, opted_out.clone()), opted_out);
        let mirror = json!({"metadata": {"name": "p", "annotations": {MIRROR_ANNOTATION: "x"}},
            "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(admitted(&cache, mirror.clone()), mirror);

        // The ServiceAccount decides when the pod does not; the pod overrides it.
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "quiet", "namespace": "team"}, "automountServiceAccountToken": false});
        let key = keelson_store::object_key("serviceaccounts", Some("team"), "quiet");
        store.create(key.into_bytes(), serde_json::to_vec(&account).unwrap()).wait().unwrap();
        let quiet =
            json!({"metadata": {"name": "p"}, "spec": {"serviceAccountName": "quiet", "containers": [{"name": "a"}]}});
        assert_eq!(admitted(&cache, quiet.clone()), quiet);
        let mut insisting = quiet.clone();
        insisting["spec"]["automountServiceAccountToken"] = json!(true);
        assert_eq!(admitted(&cache, insisting)["spec"]["volumes"][0]["name"], "kube-api-access-abcde");
        cache.stop();
        store.close();
    }
}
