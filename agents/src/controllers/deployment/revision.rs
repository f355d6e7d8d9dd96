//! A Deployment's ReplicaSets by template: the pod-template hash that names them, the
//! template comparison that finds the current one, and the revision annotations that
//! `kubectl rollout history` and `undo` read.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use std::collections::BTreeMap;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations of a Deployment that are not copied to its ReplicaSets (kube's list).
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// The alphabet kube's `SafeEncodeString` maps digits onto: no vowels (no words) and
/// no look-alike characters.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template hash: FNV-1a (32 bit) of the template's canonical JSON and the
/// collision count, its decimal digits mapped onto [`SAFE_ALPHABET`].
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let bytes = serde_json::to_vec(template).expect("a template serializes");
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |byte: u8| {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    };
    bytes.iter().copied().for_each(&mut feed);
    if let Some(count) = collision_count {
        count.to_le_bytes().into_iter().for_each(&mut feed);
    }
    hash.to_string().bytes().map(|digit| SAFE_ALPHABET[usize::from(digit) % SAFE_ALPHABET.len()] as char).collect()
}

/// Whether two templates are equal but for the pod-template-hash label.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(HASH_LABEL);
        }
        // An empty label map and none are the same template.
        if let Some(meta) = t.metadata.as_mut() {
            if meta.labels.as_ref().is_some_and(BTreeMap::is_empty) {
                meta.labels = None;
            }
        }
        t
    };
    strip(a) == strip(b)
}

pub fn revision_of(set: &ReplicaSet) -> i64 {
    annotation(set, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

pub fn annotation<'a>(set: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    set.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn int_annotation(set: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(set, key)?.parse().ok()
}

/// The highest revision among `sets`.
pub fn max_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    sets.into_iter().map(revision_of).max().unwrap_or(0)
}

/// Sets a ReplicaSet's annotations from its Deployment's (kube's
/// `SetNewReplicaSetAnnotations`): the copied ones, `revision` (recording the one it
/// replaces in `revision-history`), and the replica counts. Returns whether any
/// changed.
pub fn set_annotations(deployment: &Deployment, set: &mut ReplicaSet, revision: i64, max_surge: i32) -> bool {
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let annotations = set.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let before = annotations.clone();
    for (key, value) in deployment.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&key.as_str()) {
            annotations.insert(key.clone(), value.clone());
        }
    }
    let old: i64 = annotations.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0);
    if old < revision {
        if old > 0 {
            let history = match annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old.to_string(),
            };
            annotations.insert(REVISION_HISTORY.into(), history);
        }
        annotations.insert(REVISION.into(), revision.to_string());
    }
    annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS.into(), (desired + max_surge).to_string());
    *annotations != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn hashes_are_stable_safe_and_change_with_template_and_collisions() {
        let a = template_hash(&template("web:1"), None);
        assert_eq!(a, template_hash(&template("web:1"), None));
        assert_ne!(a, template_hash(&template("web:2"), None));
        assert_ne!(a, template_hash(&template("web:1"), Some(1)));
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{a}");
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut labeled = template("web:1");
        labeled.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert(HASH_LABEL.into(), "x".into());
        assert!(equal_ignoring_hash(&labeled, &template("web:1")));
        assert!(!equal_ignoring_hash(&labeled, &template("web:2")));
    }

    #[test]
    fn annotations_record_revision_history_and_replica_counts() {
        let deployment = Deployment {
            metadata: ObjectMeta {
                annotations: Some([("team".to_string(), "a".to_string()), (REVISION.into(), "9".into())].into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec { replicas: Some(4), ..Default::default() }),
            ..Default::default()
        };
        let mut set = ReplicaSet::default();
        assert!(set_annotations(&deployment, &mut set, 1, 1));
        assert!(set_annotations(&deployment, &mut set, 3, 1));
        let a = set.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[REVISION], "3");
        assert_eq!(a[REVISION_HISTORY], "1");
        assert_eq!(a[DESIRED_REPLICAS], "4");
        assert_eq!(a[MAX_REPLICAS], "5");
        assert_eq!(a["team"], "a");
        assert!(!set_annotations(&deployment, &mut set, 3, 1), "nothing new");
    }
}
