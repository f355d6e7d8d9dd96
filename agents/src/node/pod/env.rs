//! A container's environment and command line, resolved as the kubelet resolves them:
//! `envFrom` first, then `env` in order (later entries may refer to earlier ones with
//! `$(VAR)`), values from the pod's own fields, its resources, ConfigMaps and Secrets;
//! then `$(VAR)` expanded in `command` and `args`.

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::ByteString;
use kube::{Api, Client};
use std::collections::BTreeMap;

/// Expands `$(NAME)` from `lookup`; `$$` is a literal `$`; a reference to an unknown
/// name, or an unterminated one, stays as written (Kubernetes' expansion rules).
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(close) = text[i + 2..].find(')') {
                        let name = &text[i + 2..i + 2 + close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => out.push_str(&text[i..i + 3 + close]),
                        }
                        i += close + 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = text[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Where the pod runs: what `status.hostIP`/`status.podIP` and `spec.nodeName` say.
pub struct Placement<'a> {
    pub node_name: &'a str,
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
}

/// A `fieldRef` path's value for this pod.
pub(crate) fn field_value(pod: &Pod, path: &str, placement: &Placement<'_>) -> Result<String, String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(value) =
        keyed("metadata.labels['", &meta.labels).or_else(|| keyed("metadata.annotations['", &meta.annotations))
    {
        return Ok(value);
    }
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => placement.node_name.to_owned(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => placement.host_ip.to_owned(),
        "status.podIP" | "status.podIPs" => placement.pod_ip.to_owned(),
        other => return Err(format!("unsupported fieldRef path {other:?}")),
    })
}

/// A `resourceFieldRef` value: the container's limit (or, without one, the node's
/// allocatable, as the kubelet does) or request, in units of `divisor` rounded up.
fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    allocatable: &BTreeMap<String, String>,
) -> Result<String, String> {
    let (kind, name) = resource.split_once('.').ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let resources = container.resources.as_ref();
    let from = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let quantity = from
        .and_then(|m| m.get(name))
        .map(|q| q.0.clone())
        .or_else(|| (kind == "limits").then(|| allocatable.get(name).cloned()).flatten())
        .unwrap_or_else(|| "0".into());
    let parse = |text: &str| {
        text.parse::<keelson_engine::Quantity>().map(|q| q.nanos()).map_err(|e| format!("quantity {text:?}: {e}"))
    };
    let value = parse(&quantity)?;
    let unit = parse(divisor.unwrap_or("1"))?.max(1);
    Ok(((value + unit - 1) / unit).to_string())
}

fn decode_secret(data: &ByteString) -> String {
    String::from_utf8_lossy(&data.0).into_owned()
}

/// Everything a container's env needs from the API, fetched once per start.
#[derive(Default)]
struct Sources {
    config_maps: BTreeMap<String, Option<ConfigMap>>,
    secrets: BTreeMap<String, Option<Secret>>,
}

impl Sources {
    async fn config_map(&mut self, api: &Api<ConfigMap>, name: &str) -> Result<Option<&ConfigMap>, String> {
        if !self.config_maps.contains_key(name) {
            let got = api.get_opt(name).await.map_err(|e| format!("configmap {name:?}: {e}"))?;
            self.config_maps.insert(name.to_owned(), got);
        }
        Ok(self.config_maps[name].as_ref())
    }

    async fn secret(&mut self, api: &Api<Secret>, name: &str) -> Result<Option<&Secret>, String> {
        if !self.secrets.contains_key(name) {
            let got = api.get_opt(name).await.map_err(|e| format!("secret {name:?}: {e}"))?;
            self.secrets.insert(name.to_owned(), got);
        }
        Ok(self.secrets[name].as_ref())
    }
}

/// The container's environment, in the order the kubelet builds it. An error is the
/// message of a `CreateContainerConfigError`.
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    container: &Container,
    placement: &Placement<'_>,
    allocatable: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut sources = Sources::default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set =
        |env: &mut Vec<(String, String)>, name: String, value: String| match env.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => env.push((name, value)),
        };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(source) = &from.config_map_ref {
            match sources.config_map(&config_maps, &source.name).await? {
                Some(map) => {
                    for (key, value) in map.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{key}"), value.clone());
                    }
                }
                None if source.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", source.name)),
            }
        }
        if let Some(source) = &from.secret_ref {
            match sources.secret(&secrets, &source.name).await? {
                Some(secret) => {
                    for (key, value) in secret.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{key}"), decode_secret(value));
                    }
                }
                None if source.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", source.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                expand(var.value.as_deref().unwrap_or(""), &lookup)
            }
            Some(from) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path, placement)?
                } else if let Some(resource) = &from.resource_field_ref {
                    let divisor = resource.divisor.as_ref().map(|q| q.0.as_str());
                    resource_value(container, &resource.resource, divisor, allocatable)?
                } else if let Some(key) = &from.config_map_key_ref {
                    let map = sources.config_map(&config_maps, &key.name).await?;
                    match map.and_then(|m| m.data.as_ref()).and_then(|d| d.get(&key.key)) {
                        Some(value) => value.clone(),
                        None if key.optional == Some(true) => continue,
                        None if map.is_none() => return Err(format!("configmap {:?} not found", key.name)),
                        None => {
                            return Err(format!("couldn't find key {} in ConfigMap {namespace}/{}", key.key, key.name))
                        }
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    let secret = sources.secret(&secrets, &key.name).await?;
                    match secret.and_then(|s| s.data.as_ref()).and_then(|d| d.get(&key.key)) {
                        Some(value) => decode_secret(value),
                        None if key.optional == Some(true) => continue,
                        None if secret.is_none() => return Err(format!("secret {:?} not found", key.name)),
                        None => {
                            return Err(format!("couldn't find key {} in Secret {namespace}/{}", key.key, key.name))
                        }
                    }
                } else {
                    return Err(format!("env {:?}: valueFrom names no source", var.name));
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// `command` + `args` with `$(VAR)` expanded from the container's environment.
pub fn command_and_args(container: &Container, env: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let expand_all = |parts: &Option<Vec<String>>| parts.iter().flatten().map(|part| expand(part, &lookup)).collect();
    (expand_all(&container.command), expand_all(&container.args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        assert_eq!(expand("x $(A) y", &lookup), "x alpha y");
        assert_eq!(expand("$(A)$(A)", &lookup), "alphaalpha");
        assert_eq!(expand("$(MISSING)", &lookup), "$(MISSING)");
        assert_eq!(expand("$$(A)", &lookup), "$(A)");
        assert_eq!(expand("$(A", &lookup), "$(A");
        assert_eq!(expand("cost $5 $(EMPTY)!", &lookup), "cost $5 !");
        assert_eq!(expand("é$(A)é", &lookup), "éalphaé");
    }

    #[test]
    fn fields_and_resources_resolve() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}]}
        }))
        .unwrap();
        let placement = Placement { node_name: "n1", host_ip: "10.0.0.1", pod_ip: "10.0.0.9" };
        assert_eq!(field_value(&pod, "metadata.labels['app']", &placement).unwrap(), "web");
        assert_eq!(field_value(&pod, "status.podIP", &placement).unwrap(), "10.0.0.9");
        assert!(field_value(&pod, "spec.nope", &placement).is_err());
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let allocatable = BTreeMap::from([("cpu".to_owned(), "4".to_owned())]);
        assert_eq!(resource_value(container, "limits.memory", Some("1Mi"), &allocatable).unwrap(), "64");
        assert_eq!(resource_value(container, "requests.cpu", Some("1m"), &allocatable).unwrap(), "250");
        assert_eq!(resource_value(container, "requests.cpu", None, &allocatable).unwrap(), "1", "rounded up");
        assert_eq!(resource_value(container, "limits.cpu", None, &allocatable).unwrap(), "4", "node allocatable");
    }
}
