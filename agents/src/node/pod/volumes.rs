//! A pod's volumes, made ready on the node before its containers start, and each
//! container's mounts of them, as the kubelet's volume manager prepares them:
//!
//! - `emptyDir`: a fresh directory that lives as long as the pod;
//! - `hostPath`: the node's own path, checked (or created) per its `type`;
//! - `configMap`, `secret`, `downwardAPI` and `projected`: files written from the API
//!   (keys or `items`, modes, `optional`), rewritten atomically when their content
//!   changes while the pod runs; a projected `serviceAccountToken` is a TokenRequest
//!   bound to the pod, asked again once 80% of its lifetime has passed.
//!
//! Volumes live in `POD_DIR/volumes/KIND/NAME`, removed with the pod.

use super::env::{field_value, Placement};
use crate::node::runtime::Mount;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume, VolumeProjection,
};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// A file of a projected volume: its path inside the volume, content and mode.
type File = (String, Vec<u8>, u32);

/// Why a volume could not be set up: the pod waits (`ContainerCreating`) and the
/// worker tries again.
pub type VolumeError = String;

/// Prepares every volume of `pod` under `pod_dir`; returns each volume's directory
/// (or file, for a `hostPath` file) on the node.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    placement: &Placement<'_>,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut paths = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = prepare_one(client, namespace, pod, volume, pod_dir, placement)
            .await
            .map_err(|message| format!("MountVolume.SetUp failed for volume {:?}: {message}", volume.name))?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

async fn prepare_one(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    volume: &Volume,
    pod_dir: &Path,
    placement: &Placement<'_>,
) -> Result<PathBuf, VolumeError> {
    let dir = |kind: &str| pod_dir.join("volumes").join(kind).join(&volume.name);
    if volume.empty_dir.is_some() {
        let path = dir("empty-dir");
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        // Any user of the pod may write to it, as with the kubelet's emptyDir.
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777));
        return Ok(path);
    }
    if let Some(host) = &volume.host_path {
        return host_path(&host.path, host.type_.as_deref().unwrap_or(""));
    }
    let files = if let Some(source) = &volume.config_map {
        let optional = source.optional.unwrap_or(false);
        keyed_source_files::<ConfigMap>(client, namespace, &source.name, &source.items, source.default_mode, optional)
            .await?
    } else if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let optional = source.optional.unwrap_or(false);
        keyed_source_files::<Secret>(client, namespace, &name, &source.items, source.default_mode, optional).await?
    } else if let Some(source) = &volume.downward_api {
        downward_files(pod, source.items.iter().flatten(), source.default_mode, placement)?
    } else if let Some(source) = &volume.projected {
        let mut files = Vec::new();
        let written = dir("projected");
        for projection in source.sources.iter().flatten() {
            let found = projection_files(client, namespace, pod, projection, source.default_mode, placement, &written);
            files.extend(found.await?);
        }
        files
    } else {
        return Err("unsupported volume type (keelson's node agent mounts emptyDir, hostPath, configMap, secret, \
                    downwardAPI and projected volumes)"
            .into());
    };
    let kind = match () {
        _ if volume.config_map.is_some() => "configmap",
        _ if volume.secret.is_some() => "secret",
        _ if volume.downward_api.is_some() => "downward-api",
        _ => "projected",
    };
    let path = dir(kind);
    write_files(&path, &files)?;
    Ok(path)
}

/// A `hostPath` volume's path, checked or created per its type.
fn host_path(path: &str, kind: &str) -> Result<PathBuf, VolumeError> {
    let path = PathBuf::from(path);
    let meta = std::fs::metadata(&path);
    let missing = |what: &str| format!("hostPath type check failed: {} is not a {what}", path.display());
    match kind {
        "DirectoryOrCreate" if meta.is_err() => {
            std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
        }
        "FileOrCreate" if meta.is_err() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            std::fs::write(&path, b"").map_err(|e| format!("creating {}: {e}", path.display()))?;
        }
        "Directory" | "DirectoryOrCreate" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => {
            return Err(missing("directory"))
        }
        "File" | "FileOrCreate" if !meta.as_ref().is_ok_and(|m| m.is_file()) => return Err(missing("file")),
        "Socket" | "CharDevice" | "BlockDevice" if meta.is_err() => return Err(missing(kind)),
        _ => {}
    }
    Ok(path)
}

/// A key-to-path mapping's files: every key, or only `items` (a missing item key is
/// an error unless the source is optional).
fn keyed_files(
    data: BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<Vec<File>, VolumeError> {
    let mode = default_mode.map_or(0o644, |m| m as u32);
    match items {
        None => Ok(data.into_iter().map(|(key, bytes)| (key, bytes, mode)).collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                let bytes = data.get(&item.key).cloned().ok_or_else(|| format!("{what} has no key {:?}", item.key))?;
                Ok((item.path.clone(), bytes, item.mode.map_or(mode, |m| m as u32)))
            })
            .collect(),
    }
}

/// A ConfigMap's or a Secret's keys and their bytes.
trait KeyedData:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
{
    /// How errors name the kind (`configmap`, `secret`).
    const KIND: &'static str;
    fn into_data(self) -> BTreeMap<String, Vec<u8>>;
}

impl KeyedData for ConfigMap {
    const KIND: &'static str = "configmap";
    fn into_data(self) -> BTreeMap<String, Vec<u8>> {
        let mut data: BTreeMap<String, Vec<u8>> =
            self.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        data.extend(self.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        data
    }
}

impl KeyedData for Secret {
    const KIND: &'static str = "secret";
    fn into_data(self) -> BTreeMap<String, Vec<u8>> {
        let mut data: BTreeMap<String, Vec<u8>> =
            self.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        data.extend(self.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
        data
    }
}

/// The files of a ConfigMap or Secret source (a missing object is no files when the
/// source is optional).
async fn keyed_source_files<K: KeyedData>(
    client: &Client,
    namespace: &str,
    name: &str,
    items: &Option<Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Vec<File>, VolumeError> {
    let what = format!("{} {name:?}", K::KIND);
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let found = api.get_opt(name).await.map_err(|e| format!("{what}: {e}"))?;
    match found {
        Some(object) => keyed_files(object.into_data(), items, default_mode, &what),
        None if optional => Ok(Vec::new()),
        None => Err(format!("{what} not found")),
    }
}

/// Downward API files: pod fields (labels and annotations as `key="value"` lines).
fn downward_files<'a>(
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    default_mode: Option<i32>,
    placement: &Placement<'_>,
) -> Result<Vec<File>, VolumeError> {
    let mode = default_mode.map_or(0o644, |m| m as u32);
    let pairs = |map: &Option<BTreeMap<String, String>>| -> String {
        map.iter().flatten().map(|(k, v)| format!("{k}={v:?}\n")).collect()
    };
    let mut files = Vec::new();
    for item in items {
        let Some(field) = &item.field_ref else {
            // resourceFieldRef needs a container; the kubelet resolves it against the
            // named one. keelson writes the fields it can and says which it cannot.
            return Err(format!("downwardAPI item {:?}: only fieldRef is supported", item.path));
        };
        let content = match field.field_path.as_str() {
            "metadata.labels" => pairs(&pod.metadata.labels),
            "metadata.annotations" => pairs(&pod.metadata.annotations),
            path => field_value(pod, path, placement)?,
        };
        files.push((item.path.clone(), content.into_bytes(), item.mode.map_or(mode, |m| m as u32)));
    }
    Ok(files)
}

async fn projection_files(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    projection: &VolumeProjection,
    default_mode: Option<i32>,
    placement: &Placement<'_>,
    written: &Path,
) -> Result<Vec<File>, VolumeError> {
    if let Some(source) = &projection.config_map {
        let optional = source.optional.unwrap_or(false);
        return keyed_source_files::<ConfigMap>(client, namespace, &source.name, &source.items, default_mode, optional)
            .await;
    }
    if let Some(source) = &projection.secret {
        let optional = source.optional.unwrap_or(false);
        return keyed_source_files::<Secret>(client, namespace, &source.name, &source.items, default_mode, optional)
            .await;
    }
    if let Some(source) = &projection.downward_api {
        return downward_files(pod, source.items.iter().flatten(), default_mode, placement);
    }
    if let Some(source) = &projection.service_account_token {
        let mode = default_mode.map_or(0o644, |m| m as u32);
        let current = std::fs::read(written.join(&source.path)).ok();
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let token = match current.filter(|token| fresh(token, now)) {
            Some(token) => token,
            None => service_account_token(client, namespace, pod, source).await?.into_bytes(),
        };
        return Ok(vec![(source.path.clone(), token, mode)]);
    }
    Ok(Vec::new())
}

/// Whether a token written before is still good to keep: less than 80% of its
/// lifetime gone (the kubelet's refresh point). Its claims are read, not verified:
/// the server that issued it checks them on every use.
fn fresh(token: &[u8], now: i64) -> bool {
    use base64::Engine;
    let claims = std::str::from_utf8(token).ok().and_then(|t| t.split('.').nth(1)).and_then(|payload| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    });
    let Some(claims) = claims else { return false };
    let (Some(issued), Some(expires)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else { return false };
    now < issued + (expires - issued) * 4 / 5
}

/// A token for the pod's ServiceAccount, bound to the pod (it dies with it), with the
/// projection's audience and lifetime: TokenRequest, which the Node authorizer grants
/// a node for its own pods only.
async fn service_account_token(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    source: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> Result<String, VolumeError> {
    use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: source.audience.iter().filter(|a| !a.is_empty()).cloned().collect(),
            expiration_seconds: Some(source.expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let issued = api
        .create_token_request(&account, &kube::api::PostParams::default(), &request)
        .await
        .map_err(|e| format!("requesting a token for serviceaccount {account:?}: {e}"))?;
    issued.status.map(|s| s.token).filter(|t| !t.is_empty()).ok_or_else(|| "the token request returned no token".into())
}

/// A relative path that stays inside its volume.
fn safe_relative(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
}

/// Writes the volume's files; a file whose content and mode are unchanged is left
/// alone, a changed one is replaced atomically (readers see old or new, never half).
fn write_files(dir: &Path, files: &[File]) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (relative, bytes, mode) in files {
        if !safe_relative(relative) {
            return Err(format!("invalid path {relative:?}: must be relative and may not contain '..'"));
        }
        let path = dir.join(relative);
        if std::fs::read(&path).is_ok_and(|current| &current == bytes) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let temp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
        std::fs::write(&temp, bytes).map_err(|e| format!("writing {}: {e}", temp.display()))?;
        let _ = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode & 0o7777));
        std::fs::rename(&temp, &path).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A container's mounts: each `volumeMount` of a prepared volume (with `subPath`).
pub fn mounts(container: &Container, volumes: &BTreeMap<String, PathBuf>) -> Result<Vec<Mount>, VolumeError> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&mount.name)
            .ok_or_else(|| format!("volumeMount {:?}: the pod has no volume of that name", mount.name))?;
        let host_path = match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
            None => base.clone(),
            Some(sub) if safe_relative(sub) => {
                let path = base.join(sub);
                if !path.exists() {
                    std::fs::create_dir_all(&path).map_err(|e| format!("creating subPath {sub:?}: {e}"))?;
                }
                path
            }
            Some(sub) => return Err(format!("volumeMount {:?}: invalid subPath {sub:?}", mount.name)),
        };
        mounts.push(Mount {
            host_path,
            container_path: mount.mount_path.clone(),
            read_only: mount.read_only.unwrap_or(false),
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_kept_until_four_fifths_of_its_life() {
        use base64::Engine;
        let token = |claims: serde_json::Value| {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
            format!("header.{payload}.signature").into_bytes()
        };
        let hour = token(serde_json::json!({"iat": 1000, "exp": 4600}));
        assert!(fresh(&hour, 1000));
        assert!(fresh(&hour, 3879));
        assert!(!fresh(&hour, 3880), "80% of 3600 s gone");
        assert!(!fresh(&token(serde_json::json!({"exp": 4600})), 1000), "no issue time: ask again");
        assert!(!fresh(b"not a token", 1000));
    }

    #[test]
    fn items_pick_keys_and_modes() {
        let data: BTreeMap<String, Vec<u8>> =
            [("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())].into_iter().collect();
        let all = keyed_files(data.clone(), &None, Some(0o600), "cm").unwrap();
        assert_eq!(all, vec![("a".into(), b"1".to_vec(), 0o600), ("b".into(), b"2".to_vec(), 0o600)]);
        let items = Some(vec![KeyToPath { key: "b".into(), path: "dir/b.txt".into(), mode: Some(0o400) }]);
        assert_eq!(
            keyed_files(data.clone(), &items, None, "cm").unwrap(),
            vec![("dir/b.txt".into(), b"2".to_vec(), 0o400)]
        );
        let missing = Some(vec![KeyToPath { key: "c".into(), path: "c".into(), mode: None }]);
        assert!(keyed_files(data, &missing, None, "cm").unwrap_err().contains("no key \"c\""));
    }

    #[test]
    fn files_stay_inside_their_volume_and_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let escape = vec![("../x".to_string(), b"no".to_vec(), 0o644)];
        assert!(write_files(dir.path(), &escape).is_err());
        write_files(dir.path(), &[("sub/key".into(), b"one".to_vec(), 0o640)]).unwrap();
        write_files(dir.path(), &[("sub/key".into(), b"two".to_vec(), 0o640)]).unwrap();
        let path = dir.path().join("sub/key");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn host_paths_are_checked_or_created_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let created = dir.path().join("made/here");
        assert_eq!(host_path(created.to_str().unwrap(), "DirectoryOrCreate").unwrap(), created);
        assert!(created.is_dir());
        assert!(host_path(dir.path().join("nope").to_str().unwrap(), "Directory")
            .unwrap_err()
            .contains("not a directory"));
        let file = dir.path().join("f");
        host_path(file.to_str().unwrap(), "FileOrCreate").unwrap();
        assert!(file.is_file());
        assert!(host_path(file.to_str().unwrap(), "Directory").is_err());
    }
}
