//! `csrapproving`: approves node client certificate requests that their requester is
//! allowed to make, as kube's approver does. A request whose requester is the node it
//! names is a renewal (`certificatesigningrequests/selfnodeclient`); any other (a
//! bootstrap token's) is a new node (`certificatesigningrequests/nodeclient`). A
//! SubjectAccessReview of `create` on that subresource, for the requester recorded on
//! the request, decides; a request not allowed is left for someone else, never denied.

use super::{condition, node_client_subject, KUBELET_CLIENT_SIGNER};
use crate::controllers::runtime::queue::WorkQueue;
use crate::controllers::runtime::{ignore_not_found, Action, Cache, Change, Informers, ReconcileError, Reconciler};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::sync::Arc;

pub struct CsrApprover {
    client: Client,
    requests: Arc<Cache<CertificateSigningRequest>>,
}

impl CsrApprover {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let requests = informers.get::<CertificateSigningRequest>();
        let q = Arc::clone(queue);
        requests.on_change(move |change| {
            if !matches!(change, Change::Deleted(_)) {
                q.add(change.object().metadata.name.as_deref().unwrap_or_default());
            }
        });
        Arc::new(CsrApprover { client: informers.client().clone(), requests: requests.cache() })
    }

    /// Whether the request's recorded requester may `create` `subresource`.
    async fn allowed(&self, csr: &CertificateSigningRequest, subresource: &str) -> Result<bool, kube::Error> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: csr.spec.username.clone(),
                uid: csr.spec.uid.clone(),
                groups: csr.spec.groups.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("certificates.k8s.io".into()),
                    resource: Some("certificatesigningrequests".into()),
                    subresource: Some(subresource.into()),
                    verb: Some("create".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

impl Reconciler for CsrApprover {
    async fn reconcile(&self, name: &str) -> Result<Action, ReconcileError> {
        let Some(csr) = self.requests.get(name) else { return Ok(Action::Done) };
        if csr.spec.signer_name != KUBELET_CLIENT_SIGNER
            || ["Approved", "Denied", "Failed"].iter().any(|kind| condition(&csr, kind))
        {
            return Ok(Action::Done);
        }
        // Not a node client request: another approver's business (kube ignores it too).
        let Ok(node_user) = node_client_subject(&csr) else { return Ok(Action::Done) };
        let renewal = csr.spec.username.as_deref() == Some(node_user.as_str());
        let (subresource, message) = if renewal {
            ("selfnodeclient", "Auto approving self kubelet client certificate after SubjectAccessReview.")
        } else {
            ("nodeclient", "Auto approving kubelet client certificate after SubjectAccessReview.")
        };
        if !self.allowed(&csr, subresource).await? {
            return Ok(Action::Done);
        }
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let approval = serde_json::json!({"status": {"conditions": [{"type": "Approved", "status": "True",
            "reason": "AutoApproved", "message": message, "lastUpdateTime": now, "lastTransitionTime": now}]}});
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        let result = api.patch_approval(name, &PatchParams::default(), &Patch::Merge(&approval)).await;
        ignore_not_found(result.map(|_| ()))?;
        Ok(Action::Done)
    }
}
