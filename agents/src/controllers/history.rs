//! ControllerRevisions: the template history of a DaemonSet or StatefulSet, which
//! `kubectl rollout history` lists and `kubectl rollout undo` restores from.
//!
//! A revision is named `OWNER-HASH`, labelled with the template hash, and holds the
//! template as the patch kubectl applies to roll back (`{"spec": {"template": ...,
//! "$patch": "replace"}}`). The current template's revision is always the newest: a
//! rollback renumbers the old revision instead of copying it.

use super::pods::controller_reference;
use super::runtime::{ignore_not_found, namespace_terminating, Cache};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The revision history of one owner.
pub struct History<'a> {
    pub client: &'a Client,
    pub revisions: &'a Cache<ControllerRevision>,
    pub owner: &'a ObjectMeta,
    pub kind: &'static str,
    /// Old revisions kept (`revisionHistoryLimit`).
    pub limit: usize,
}

/// The template a revision recorded.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    template.as_object_mut()?.remove("$patch");
    serde_json::from_value(template).ok()
}

impl History<'_> {
    fn api(&self) -> Api<ControllerRevision> {
        Api::namespaced(self.client.clone(), self.owner.namespace.as_deref().unwrap_or_default())
    }

    /// The owner's revisions, oldest first.
    pub fn revisions(&self) -> Vec<std::sync::Arc<ControllerRevision>> {
        let mut owned = self.revisions.owned_by(self.owner.uid.as_deref().unwrap_or_default());
        owned.sort_by_key(|r| r.revision);
        owned
    }

    pub fn name(&self, hash: &str) -> String {
        format!("{}-{hash}", self.owner.name.as_deref().unwrap_or_default())
    }

    /// Records `template` (hash `hash`) as the newest revision, then deletes old
    /// revisions beyond the limit whose hash is not in `live` (templates pods still
    /// run). Returns the current revision's number.
    pub async fn record(&self, template: &PodTemplateSpec, hash: &str, live: &[&str]) -> Result<i64, kube::Error> {
        let owned = self.revisions();
        let newest = owned.last().map_or(0, |r| r.revision);
        let name = self.name(hash);
        let api = self.api();
        let number = match owned.iter().find(|r| r.metadata.name.as_deref() == Some(name.as_str())) {
            Some(current) if current.revision == newest => newest,
            Some(_) => {
                let patch = serde_json::json!({"revision": newest + 1});
                ignore_not_found(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await)?;
                newest + 1
            }
            None => {
                let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
                labels.insert(REVISION_HASH_LABEL.into(), hash.into());
                let mut data = serde_json::to_value(template).unwrap_or_default();
                data["$patch"] = "replace".into();
                let revision = ControllerRevision {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: self.owner.namespace.clone(),
                        labels: Some(labels),
                        owner_references: Some(vec![controller_reference("apps/v1", self.kind, self.owner)]),
                        ..Default::default()
                    },
                    data: Some(RawExtension(serde_json::json!({"spec": {"template": data}}))),
                    revision: newest + 1,
                };
                match api.create(&PostParams::default(), &revision).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(error) if namespace_terminating(&error) => {}
                    Err(error) => return Err(error),
                }
                newest + 1
            }
        };
        let in_use = |r: &ControllerRevision| {
            let revision_hash = r.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH_LABEL));
            revision_hash.is_some_and(|h| h == hash || live.contains(&h.as_str()))
        };
        let old: Vec<_> = owned.iter().filter(|r| !in_use(r)).collect();
        for revision in old.iter().take(old.len().saturating_sub(self.limit)) {
            let name = revision.metadata.name.as_deref().unwrap_or_default();
            ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
        }
        Ok(number)
    }
}
