//! What VolumeBinding reads: PersistentVolumeClaims (by `namespace/name`) and the
//! PersistentVolumes they are bound to (by name), reduced to what decides placement: a
//! claim's volume and whether it is going away, a volume's required node affinity.

use keelson_engine::k8s_openapi::api::core::v1::{NodeSelector, PersistentVolume, PersistentVolumeClaim};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// `spec.volumeName`: the volume the claim is bound (or pre-bound) to.
    pub volume: Option<Box<str>>,
    pub deleting: bool,
    /// `ReadWriteOncePod`: one pod in the cluster at a time.
    pub one_pod: bool,
}

#[derive(Clone, Debug)]
pub struct Volume {
    /// `spec.nodeAffinity.required`: the nodes that can reach the volume.
    pub required: Option<Arc<NodeSelector>>,
}

#[derive(Debug, Default)]
pub struct Volumes {
    claims: HashMap<Box<str>, Claim>,
    volumes: HashMap<Box<str>, Volume>,
}

impl Volumes {
    pub fn upsert_claim(&mut self, claim: &PersistentVolumeClaim) {
        let key = format!(
            "{}/{}",
            claim.metadata.namespace.as_deref().unwrap_or("default"),
            claim.metadata.name.as_deref().unwrap_or("")
        );
        let volume =
            claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()).map(Into::into);
        let one_pod = claim
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.as_ref())
            .is_some_and(|modes| modes.iter().any(|m| m == "ReadWriteOncePod"));
        let deleting = claim.metadata.deletion_timestamp.is_some();
        self.claims.insert(key.into(), Claim { volume, deleting, one_pod });
    }

    pub fn remove_claim(&mut self, namespace: &str, name: &str) {
        self.claims.remove(format!("{namespace}/{name}").as_str());
    }

    pub fn claim(&self, namespace: &str, name: &str) -> Option<&Claim> {
        self.claim_by_key(&format!("{namespace}/{name}"))
    }

    /// The claim `namespace/name`.
    pub fn claim_by_key(&self, key: &str) -> Option<&Claim> {
        self.claims.get(key)
    }

    pub fn upsert_volume(&mut self, volume: &PersistentVolume) {
        let name = volume.metadata.name.as_deref().unwrap_or("");
        let required =
            volume.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.clone()).map(Arc::new);
        self.volumes.insert(name.into(), Volume { required });
    }

    pub fn remove_volume(&mut self, name: &str) {
        self.volumes.remove(name);
    }

    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.get(name)
    }
}
