//! CertificateSigningRequests (`certificates.k8s.io/v1`), the server's part: the
//! requester's identity is stamped on a new request; the `approval` subresource
//! changes only the Approved/Denied conditions and the `status` subresource
//! everything else; approving needs `approve`, and issuing a certificate `sign`, on
//! the request's signer (`signers`, by name or `domain/*`), as kube's
//! CertificateApproval and CertificateSigning admission plugins require.
//!
//! Approving and signing themselves are controllers (`agents`'s `csrapproving` and
//! `csrsigning`).

use crate::auth::User;
use crate::authz::{Attributes, Authorizer};
use crate::object;
use keelson_engine::{ApiError, StatusReason};
use serde_json::{json, Value};

pub const GROUP: &str = "certificates.k8s.io";
pub const KIND: &str = "CertificateSigningRequest";

/// The conditions only the `approval` subresource may set.
fn is_approval(condition: &Value) -> bool {
    matches!(condition["type"].as_str(), Some("Approved" | "Denied"))
}

fn conditions(object: &Value) -> Vec<Value> {
    object::get(object, &["status", "conditions"]).and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Records who asked: kube sets these from the request, whatever the body says.
pub fn stamp_requester(candidate: &mut Value, user: &User) {
    let spec = object::entry(candidate, &["spec"]);
    spec["username"] = json!(user.name);
    spec["uid"] = json!(user.uid);
    spec["groups"] = json!(user.groups);
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("extra");
    }
}

/// What an update of `subresource` makes of `old`: the spec never changes; `approval`
/// sets only the approval conditions, `status` all the rest; the main resource keeps
/// its status.
pub fn update(old: &Value, candidate: &Value, subresource: Option<&str>) -> Value {
    let mut new = old.clone();
    match subresource {
        Some("approval") => {
            let mut list: Vec<Value> = conditions(old).into_iter().filter(|c| !is_approval(c)).collect();
            list.extend(conditions(candidate).into_iter().filter(is_approval));
            object::set(&mut new, &["status", "conditions"], Value::Array(list));
        }
        Some("status") => {
            let mut status = candidate.get("status").cloned().unwrap_or_else(|| json!({}));
            let mut list: Vec<Value> = conditions(candidate).into_iter().filter(|c| !is_approval(c)).collect();
            list.extend(conditions(old).into_iter().filter(is_approval));
            status["conditions"] = Value::Array(list);
            object::set(&mut new, &["status"], status);
        }
        _ => {
            // Metadata (labels, annotations, finalizers) only.
            if let Some(metadata) = candidate.get("metadata") {
                new["metadata"] = metadata.clone();
            }
        }
    }
    new
}

/// Whether `user` may `verb` (approve, sign) requests for `signer`: on the signer by
/// name, or on every signer of its domain (`example.com/*`).
fn may(authorizer: &Authorizer, user: &User, verb: &str, signer: &str) -> bool {
    let wildcard = signer.split_once('/').map(|(domain, _)| format!("{domain}/*"));
    [Some(signer.to_string()), wildcard].into_iter().flatten().any(|name| {
        let mut request = Attributes::resource(verb, GROUP, "signers", "");
        request.name = &name;
        authorizer.authorize(user, &request).allowed
    })
}

/// CertificateApproval and CertificateSigning: an update that changes the approval
/// conditions needs `approve` on the signer, one that sets or changes the
/// certificate needs `sign`.
pub fn check_signer(authorizer: &Authorizer, user: &User, new: &Value, old: &Value) -> Result<(), ApiError> {
    let signer = object::get_str(new, &["spec", "signerName"]).unwrap_or("");
    let name = object::name(new);
    let approvals = |o: &Value| conditions(o).into_iter().filter(is_approval).collect::<Vec<_>>();
    let refuse = |verb: &str| {
        ApiError::new(
            StatusReason::Forbidden,
            format!(
                "certificatesigningrequests.certificates.k8s.io \"{name}\" is forbidden: user not permitted to {verb} requests with signerName \"{signer}\""
            ),
        )
    };
    if approvals(new) != approvals(old) && !may(authorizer, user, "approve", signer) {
        return Err(refuse("approve"));
    }
    let certificate = |o: &Value| object::get(o, &["status", "certificate"]).cloned();
    if certificate(new).is_some() && certificate(new) != certificate(old) && !may(authorizer, user, "sign", signer) {
        return Err(refuse("sign"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_and_status_each_change_only_their_own_conditions() {
        let old = json!({"metadata": {"name": "c"}, "spec": {"signerName": "kubernetes.io/kube-apiserver-client"},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        let approve = json!({"spec": {"signerName": "forged"}, "status": {"certificate": "Zm9v",
            "conditions": [{"type": "Approved", "status": "True"}]}});
        let approved = update(&old, &approve, Some("approval"));
        assert_eq!(approved["spec"], old["spec"], "the spec never changes");
        assert!(approved["status"].get("certificate").is_none(), "approval does not issue");
        assert_eq!(conditions(&approved).len(), 2);
        let signed = update(&approved, &json!({"status": {"certificate": "Zm9v", "conditions": []}}), Some("status"));
        assert_eq!(signed["status"]["certificate"], "Zm9v");
        assert_eq!(conditions(&signed), [json!({"type": "Approved", "status": "True"})], "status keeps the approval");
    }
}
