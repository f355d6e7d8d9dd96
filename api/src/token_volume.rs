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
use crate::object;
use keelson_engine::ApiError;
use serde_json::{json, Value};

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

/// Adds the API access volume and its mounts to `pod` (being created in
/// `namespace`, its `serviceAccountName` already defaulted) when it should have them.
pub fn add(
    cache: &WatchCache,
    namespace: &str,
    pod: &mut Value,
    suffix: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if pod.pointer("/metadata/annotations").and_then(|a| a.get(MIRROR_ANNOTATION)).is_some() {
        return Ok(());
    }
    let spec = object::entry(pod, &["spec"]);
    let automount = match spec.get("automountServiceAccountToken").and_then(Value::as_bool) {
        Some(automount) => automount,
        None => {
            let account = spec.get("serviceAccountName").and_then(Value::as_str).unwrap_or("default");
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
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|name| name.starts_with(VOLUME_PREFIX))
        .map(str::to_string);
    let volume_name = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", suffix()));
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for container in containers {
            let mounts = object::array_entry(container, &["volumeMounts"]);
            if mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH)) {
                continue;
            }
            mounts.push(json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH}));
            mounted = true;
        }
    }
    if mounted && existing.is_none() {
        object::array_entry(spec, &["volumes"]).push(volume(&volume_name));
    }
    Ok(())
}

fn volume(name: &str) -> Value {
    json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(cache: &WatchCache, pod: Value) -> Value {
        let mut pod = pod;
        add(cache, "team", &mut pod, || "abcde".into()).unwrap();
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
