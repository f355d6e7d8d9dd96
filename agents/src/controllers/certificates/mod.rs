//! CertificateSigningRequests for node client certificates, as kube-controller-manager
//! handles them: [`approver`] (`csrapproving`) approves a node's request once a
//! SubjectAccessReview says its requester may ask (a bootstrap token for a new node,
//! the node itself to renew), and [`signer`] (`csrsigning`) issues approved requests'
//! certificates from the cluster CA.

pub mod approver;
pub mod signer;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

/// The signer of node (kubelet) client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other client certificates for the API server.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

const NODE_USER_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";

/// Whether the request is decided (approved or denied) or has failed.
pub fn condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    let conditions = csr.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == kind && c.status != "False")
}

/// What a node client certificate request asks to be: `system:node:NAME` in exactly
/// `system:nodes`, no alternative names, client usages only (kube's
/// `ValidateKubeletClientCSR`). Returns the node user, or why the request is not one.
pub fn node_client_subject(csr: &CertificateSigningRequest) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(&csr.spec.request.0).map_err(|e| format!("PEM: {e}"))?;
    let (_, request) = X509CertificationRequest::from_der(&pem.contents).map_err(|e| format!("request: {e}"))?;
    let subject = &request.certification_request_info.subject;
    let names: Vec<&str> = subject.iter_common_name().filter_map(|n| n.as_str().ok()).collect();
    let organizations: Vec<&str> = subject.iter_organization().filter_map(|o| o.as_str().ok()).collect();
    let [user] = names.as_slice() else { return Err("the subject must have one common name".into()) };
    if !user.starts_with(NODE_USER_PREFIX) || user.len() == NODE_USER_PREFIX.len() {
        return Err(format!("the common name must begin with {NODE_USER_PREFIX:?}"));
    }
    if organizations != [NODES_GROUP] {
        return Err(format!("the organization must be [{NODES_GROUP:?}]"));
    }
    let has_alt_names = request
        .requested_extensions()
        .into_iter()
        .flatten()
        .any(|e| matches!(e, x509_parser::extensions::ParsedExtension::SubjectAlternativeName(_)));
    if has_alt_names {
        return Err("no subject alternative names are allowed".into());
    }
    let usages = csr.spec.usages.as_deref().unwrap_or_default();
    let allowed = ["digital signature", "key encipherment", "client auth"];
    if !usages.iter().any(|u| u == "client auth") || usages.iter().any(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("usages must include \"client auth\" and be among {allowed:?}"));
    }
    Ok((*user).to_string())
}
