//! What each node's pods refer to, for the Node authorizer: a node may read a Secret,
//! ConfigMap, PersistentVolumeClaim or PersistentVolume, or ask a token for a
//! ServiceAccount, only if a pod bound to it uses that object (kube's node graph).
//!
//! The watch cache's applier is the only writer: it feeds every pod and claim change
//! here before it reports the batch applied, so a request that waited for a revision
//! sees the references of that revision. Readers take the read lock for one lookup.
//! Each pod is decoded once per change into the few names it refers to, with a
//! targeted decoder that skips the rest of the object.

use parking_lot::RwLock;
use serde::Deserialize;
use std::collections::HashMap;

/// What a node may be asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Referent {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

/// The names one pod refers to, in its namespace.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodRefs {
    namespace: Box<str>,
    service_account: Box<str>,
    secrets: Vec<Box<str>>,
    config_maps: Vec<Box<str>>,
    claims: Vec<Box<str>>,
}

impl PodRefs {
    fn names(&self, kind: Referent) -> &[Box<str>] {
        match kind {
            Referent::Secret => &self.secrets,
            Referent::ConfigMap => &self.config_maps,
            Referent::Claim => &self.claims,
            Referent::ServiceAccount => std::slice::from_ref(&self.service_account),
        }
    }
}

#[derive(Debug, Default)]
struct Graph {
    /// Pod key → its node: where to find it again when it changes.
    pod_node: HashMap<Box<[u8]>, Box<str>>,
    /// Node → its pods (by key) → what they refer to.
    by_node: HashMap<Box<str>, HashMap<Box<[u8]>, PodRefs>>,
    /// `namespace/claim` → the PersistentVolume it is bound to.
    claim_volume: HashMap<Box<str>, Box<str>>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct NodeGraph {
    graph: RwLock<Graph>,
}

impl NodeGraph {
    /// Records a pod's change (`None`: deleted). A pod not bound to a node is in no
    /// node's part of the graph.
    pub fn apply_pod(&self, key: &[u8], value: Option<&[u8]>) {
        let bound = value.and_then(pod_refs);
        let mut graph = self.graph.write();
        if let Some(node) = graph.pod_node.remove(key) {
            if let Some(pods) = graph.by_node.get_mut(&node) {
                pods.remove(key);
                if pods.is_empty() {
                    graph.by_node.remove(&node);
                }
            }
        }
        if let Some((node, refs)) = bound {
            graph.pod_node.insert(key.into(), node.clone());
            graph.by_node.entry(node).or_default().insert(key.into(), refs);
        }
    }

    /// Records a PersistentVolumeClaim's change: which volume it is bound to.
    pub fn apply_claim(&self, key: &[u8], value: Option<&[u8]>) {
        #[derive(Deserialize, Default)]
        struct Claim {
            #[serde(default)]
            spec: ClaimSpec,
        }
        #[derive(Deserialize, Default)]
        struct ClaimSpec {
            #[serde(default, rename = "volumeName")]
            volume_name: String,
        }
        let Some(name) = claim_name(key) else { return };
        let volume = value
            .and_then(|bytes| serde_json::from_slice::<Claim>(bytes).ok())
            .map(|claim| claim.spec.volume_name)
            .filter(|volume| !volume.is_empty());
        let mut graph = self.graph.write();
        match volume {
            Some(volume) => graph.claim_volume.insert(name.into(), volume.into()),
            None => graph.claim_volume.remove(name.as_str()),
        };
    }

    /// Replaces everything with these pods and claims (after the cache's load).
    pub fn rebuild<'a>(
        &self,
        pods: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        claims: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) {
        *self.graph.write() = Graph::default();
        for (key, value) in pods {
            self.apply_pod(key, Some(value));
        }
        for (key, value) in claims {
            self.apply_claim(key, Some(value));
        }
    }

    /// Whether a pod bound to `node` refers to the `kind` object `namespace/name`.
    pub fn refers(&self, node: &str, kind: Referent, namespace: &str, name: &str) -> bool {
        let graph = self.graph.read();
        let Some(pods) = graph.by_node.get(node) else { return false };
        pods.values().any(|pod| &*pod.namespace == namespace && pod.names(kind).iter().any(|n| &**n == name))
    }

    /// Whether a pod bound to `node` uses a claim bound to PersistentVolume `volume`.
    pub fn uses_volume(&self, node: &str, volume: &str) -> bool {
        let graph = self.graph.read();
        let Some(pods) = graph.by_node.get(node) else { return false };
        pods.values().any(|pod| {
            pod.claims.iter().any(|claim| {
                let key = format!("{}/{claim}", pod.namespace);
                graph.claim_volume.get(key.as_str()).is_some_and(|v| &**v == volume)
            })
        })
    }

    /// The node a pod (by namespace and name) is bound to, if any.
    pub fn node_of(&self, key: &[u8]) -> Option<Box<str>> {
        self.graph.read().pod_node.get(key).cloned()
    }
}

/// `namespace/name` from a claim's storage key (`/registry/<segment>/<ns>/<name>`).
fn claim_name(key: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.rsplitn(3, '/');
    let (name, namespace) = (parts.next()?, parts.next()?);
    Some(format!("{namespace}/{name}"))
}

// The parts of a pod that refer to other objects; everything else is skipped unread.

#[derive(Deserialize, Default)]
struct Pod {
    #[serde(default)]
    metadata: PodMeta,
    #[serde(default)]
    spec: PodSpec,
}

#[derive(Deserialize, Default)]
struct PodMeta {
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    node_name: String,
    #[serde(default)]
    service_account_name: String,
    #[serde(default)]
    image_pull_secrets: Vec<Named>,
    #[serde(default)]
    volumes: Vec<Volume>,
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    ephemeral_containers: Vec<Container>,
}

#[derive(Deserialize, Default)]
struct Named {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Volume {
    #[serde(default)]
    secret: Option<SecretVolume>,
    #[serde(default)]
    config_map: Option<Named>,
    #[serde(default)]
    persistent_volume_claim: Option<ClaimVolume>,
    #[serde(default)]
    projected: Option<Projected>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SecretVolume {
    #[serde(default)]
    secret_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ClaimVolume {
    #[serde(default)]
    claim_name: String,
}

#[derive(Deserialize, Default)]
struct Projected {
    #[serde(default)]
    sources: Vec<Projection>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Projection {
    #[serde(default)]
    secret: Option<Named>,
    #[serde(default)]
    config_map: Option<Named>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default)]
    env: Vec<Env>,
    #[serde(default)]
    env_from: Vec<EnvFrom>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Env {
    #[serde(default)]
    value_from: Option<EnvSource>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnvSource {
    #[serde(default)]
    secret_key_ref: Option<Named>,
    #[serde(default)]
    config_map_key_ref: Option<Named>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnvFrom {
    #[serde(default)]
    secret_ref: Option<Named>,
    #[serde(default)]
    config_map_ref: Option<Named>,
}

/// The node a stored pod is bound to and what it refers to; `None` if it is not bound
/// (a quick scan for `"nodeName"` spares decoding pods the scheduler has not placed).
/// The scan runs on the watch cache's thread for every pod event, over the whole pod
/// when it is not bound: `memmem`'s vectorised search, not a byte-by-byte window
/// compare, which was about half of this graph's samples in a SchedulingBasic profile.
fn pod_refs(bytes: &[u8]) -> Option<(Box<str>, PodRefs)> {
    static NODE_NAME: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"nodeName\""));
    NODE_NAME.find(bytes)?;
    let pod: Pod = serde_json::from_slice(bytes).ok()?;
    let spec = pod.spec;
    if spec.node_name.is_empty() {
        return None;
    }
    let mut refs = PodRefs {
        namespace: pod.metadata.namespace.into(),
        service_account: if spec.service_account_name.is_empty() {
            "default".into()
        } else {
            spec.service_account_name.into()
        },
        ..PodRefs::default()
    };
    let add = |list: &mut Vec<Box<str>>, name: String| {
        if !name.is_empty() && !list.iter().any(|n| **n == *name) {
            list.push(name.into());
        }
    };
    for secret in spec.image_pull_secrets {
        add(&mut refs.secrets, secret.name);
    }
    for volume in spec.volumes {
        if let Some(secret) = volume.secret {
            add(&mut refs.secrets, secret.secret_name);
        }
        if let Some(config_map) = volume.config_map {
            add(&mut refs.config_maps, config_map.name);
        }
        if let Some(claim) = volume.persistent_volume_claim {
            add(&mut refs.claims, claim.claim_name);
        }
        for source in volume.projected.map(|p| p.sources).unwrap_or_default() {
            if let Some(secret) = source.secret {
                add(&mut refs.secrets, secret.name);
            }
            if let Some(config_map) = source.config_map {
                add(&mut refs.config_maps, config_map.name);
            }
        }
    }
    let containers = spec.containers.into_iter().chain(spec.init_containers).chain(spec.ephemeral_containers);
    for container in containers {
        for source in container.env.into_iter().filter_map(|e| e.value_from) {
            if let Some(secret) = source.secret_key_ref {
                add(&mut refs.secrets, secret.name);
            }
            if let Some(config_map) = source.config_map_key_ref {
                add(&mut refs.config_maps, config_map.name);
            }
        }
        for source in container.env_from {
            if let Some(secret) = source.secret_ref {
                add(&mut refs.secrets, secret.name);
            }
            if let Some(config_map) = source.config_map_ref {
                add(&mut refs.config_maps, config_map.name);
            }
        }
    }
    Some((spec.node_name.into(), refs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn a_nodes_pods_make_what_they_use_readable_to_it() {
        let graph = NodeGraph::default();
        let pod = json!({"metadata": {"name": "web", "namespace": "team"}, "spec": {
            "nodeName": "n1", "serviceAccountName": "builder", "imagePullSecrets": [{"name": "pull"}],
            "volumes": [{"name": "a", "secret": {"secretName": "tls"}}, {"name": "b", "configMap": {"name": "conf"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "d", "projected": {"sources": [{"secret": {"name": "proj"}}, {"serviceAccountToken": {"path": "t"}}]}}],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "init-env"}}]}],
            "containers": [{"name": "c", "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}]}]}});
        graph.apply_pod(b"/registry/pods/team/web", Some(&bytes(pod.clone())));
        graph.apply_claim(
            b"/registry/persistentvolumeclaims/team/data",
            Some(&bytes(json!({"metadata": {"name": "data", "namespace": "team"}, "spec": {"volumeName": "pv-1"}}))),
        );
        for secret in ["pull", "tls", "proj", "db"] {
            assert!(graph.refers("n1", Referent::Secret, "team", secret), "{secret}");
        }
        assert!(graph.refers("n1", Referent::ConfigMap, "team", "conf"));
        assert!(graph.refers("n1", Referent::ConfigMap, "team", "init-env"));
        assert!(graph.refers("n1", Referent::Claim, "team", "data"));
        assert!(graph.refers("n1", Referent::ServiceAccount, "team", "builder"));
        assert!(graph.uses_volume("n1", "pv-1"));
        // Not another node, another namespace, or anything the pod does not use.
        assert!(!graph.refers("n2", Referent::Secret, "team", "tls"));
        assert!(!graph.refers("n1", Referent::Secret, "other", "tls"));
        assert!(!graph.refers("n1", Referent::Secret, "team", "conf"));
        assert!(!graph.uses_volume("n2", "pv-1"));
        assert_eq!(graph.node_of(b"/registry/pods/team/web").as_deref(), Some("n1"));

        // Moving, unbinding and deleting the pod move what is readable with it.
        let mut moved = pod.clone();
        moved["spec"]["nodeName"] = json!("n2");
        graph.apply_pod(b"/registry/pods/team/web", Some(&bytes(moved)));
        assert!(!graph.refers("n1", Referent::Secret, "team", "tls"));
        assert!(graph.refers("n2", Referent::Secret, "team", "tls"));
        graph.apply_pod(b"/registry/pods/team/web", None);
        assert!(!graph.refers("n2", Referent::Secret, "team", "tls"));
        let mut pending = pod;
        pending["spec"].as_object_mut().unwrap().remove("nodeName");
        graph.apply_pod(b"/registry/pods/team/web", Some(&bytes(pending)));
        assert!(graph.node_of(b"/registry/pods/team/web").is_none());
        // A pod without a ServiceAccount name runs as `default`.
        let plain = json!({"metadata": {"name": "p", "namespace": "team"}, "spec": {"nodeName": "n3"}});
        graph.apply_pod(b"/registry/pods/team/p", Some(&bytes(plain)));
        assert!(graph.refers("n3", Referent::ServiceAccount, "team", "default"));
        // A claim's binding going away takes its volume with it.
        graph.apply_claim(b"/registry/persistentvolumeclaims/team/data", None);
        graph.apply_pod(
            b"/registry/pods/team/web",
            Some(&bytes(json!({"metadata": {"namespace": "team"},
            "spec": {"nodeName": "n1", "volumes": [{"name": "c", "persistentVolumeClaim": {"claimName": "data"}}]}}))),
        );
        assert!(!graph.uses_volume("n1", "pv-1"));
    }
}
