//! `csrsigning`: issues the certificates of approved requests for the API server's
//! client signers (`kubernetes.io/kube-apiserver-client-kubelet`,
//! `kubernetes.io/kube-apiserver-client`) from the cluster CA, as kube's signer with
//! `--cluster-signing-cert-file`/`--cluster-signing-key-file` does: the subject and
//! key are the request's, the usages are the spec's, the lifetime is
//! `spec.expirationSeconds` (at most the signing duration, a year by default), and the
//! certificate is backdated five minutes for clock skew. A node request that is not
//! a valid node client request fails (`Failed`, `SignerValidationFailure`).

use super::{condition, node_client_subject, CLIENT_SIGNER, KUBELET_CLIENT_SIGNER};
use crate::controllers::runtime::queue::WorkQueue;
use crate::controllers::runtime::{ignore_not_found, Action, Cache, Change, Informers, ReconcileError, Reconciler};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rcgen::{CertificateSigningRequestParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use std::sync::Arc;
use std::time::Duration;

/// The CA the signer issues from (PEM), and the longest lifetime it grants.
#[derive(Clone)]
pub struct SigningCa {
    pub cert_pem: String,
    pub key_pem: String,
    pub duration: Duration,
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCa").field("duration", &self.duration).finish_non_exhaustive()
    }
}

/// kube's default `--cluster-signing-duration`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back a certificate's validity starts, for clocks a little behind (less for
/// certificates shorter than ten times this).
const BACKDATE: Duration = Duration::from_secs(300);

pub struct CsrSigner {
    client: Client,
    requests: Arc<Cache<CertificateSigningRequest>>,
    ca: SigningCa,
}

impl CsrSigner {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>, ca: SigningCa) -> Arc<Self> {
        let requests = informers.get::<CertificateSigningRequest>();
        let q = Arc::clone(queue);
        requests.on_change(move |change| {
            if !matches!(change, Change::Deleted(_)) {
                q.add(change.object().metadata.name.as_deref().unwrap_or_default());
            }
        });
        Arc::new(CsrSigner { client: informers.client().clone(), requests: requests.cache(), ca })
    }
}

/// Signs `csr`'s request with `ca`; the certificate as PEM.
pub fn sign(csr: &CertificateSigningRequest, ca: &SigningCa, now: time::OffsetDateTime) -> Result<String, String> {
    let pem = std::str::from_utf8(&csr.spec.request.0).map_err(|_| "the request is not PEM text".to_string())?;
    let mut request = CertificateSigningRequestParams::from_pem(pem).map_err(|e| format!("the request: {e}"))?;
    let asked = csr.spec.expiration_seconds.map(|s| Duration::from_secs(s.max(600) as u64));
    let lifetime = asked.map_or(ca.duration, |asked| asked.min(ca.duration));
    let params = &mut request.params;
    // A short-lived certificate is backdated by at most a tenth of its life, so that
    // most of its validity lies ahead (its holder renews at 70-90% of it).
    params.not_before = now - BACKDATE.min(lifetime / 10);
    params.not_after = now + lifetime;
    params.subject_alt_names.clear();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages.clear();
    params.extended_key_usages.clear();
    for usage in csr.spec.usages.iter().flatten() {
        match usage.as_str() {
            "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "client auth" => params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth),
            other => return Err(format!("usage {other:?} is not allowed for this signer")),
        }
    }
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| format!("the CA key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| format!("the CA certificate: {e}"))?;
    let certificate = request.signed_by(&issuer).map_err(|e| format!("signing: {e}"))?;
    Ok(certificate.pem())
}

impl Reconciler for CsrSigner {
    async fn reconcile(&self, name: &str) -> Result<Action, ReconcileError> {
        let Some(csr) = self.requests.get(name) else { return Ok(Action::Done) };
        let signer = csr.spec.signer_name.as_str();
        let issued = csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty());
        if !(signer == KUBELET_CLIENT_SIGNER || signer == CLIENT_SIGNER)
            || issued
            || !condition(&csr, "Approved")
            || condition(&csr, "Denied")
            || condition(&csr, "Failed")
        {
            return Ok(Action::Done);
        }
        let checked = if signer == KUBELET_CLIENT_SIGNER { node_client_subject(&csr).map(|_| ()) } else { Ok(()) };
        let status = match checked.and_then(|()| sign(&csr, &self.ca, time::OffsetDateTime::now_utc())) {
            Ok(pem) => serde_json::json!({"status": {"certificate": k8s_openapi::ByteString(pem.into_bytes())}}),
            Err(why) => {
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let mut conditions: Vec<serde_json::Value> = csr
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .map(|c| serde_json::to_value(c).unwrap_or_default())
                    .collect();
                conditions.push(serde_json::json!({"type": "Failed", "status": "True",
                    "reason": "SignerValidationFailure", "message": why, "lastUpdateTime": now,
                    "lastTransitionTime": now}));
                serde_json::json!({"status": {"conditions": conditions}})
            }
        };
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        ignore_not_found(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await)?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::certificates::node_client_subject;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use rcgen::{CertificateParams, DnType, SanType};
    use x509_parser::prelude::FromDer;

    fn request(cn: &str, orgs: &[&str], san: bool, usages: &[&str]) -> CertificateSigningRequest {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        for org in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *org);
        }
        if san {
            params.subject_alt_names = vec![SanType::DnsName("evil.example".try_into().unwrap())];
        }
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: k8s_openapi::ByteString(pem.into_bytes()),
                signer_name: KUBELET_CLIENT_SIGNER.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_node_client_requests_count_as_such() {
        let usages = ["digital signature", "client auth"];
        assert_eq!(
            node_client_subject(&request("system:node:n1", &["system:nodes"], false, &usages)).unwrap(),
            "system:node:n1"
        );
        assert!(node_client_subject(&request("system:node:n1", &["system:masters"], false, &usages)).is_err());
        assert!(node_client_subject(&request("admin", &["system:nodes"], false, &usages)).is_err());
        assert!(node_client_subject(&request("system:node:n1", &["system:nodes"], true, &usages)).is_err());
        assert!(node_client_subject(&request("system:node:n1", &["system:nodes"], false, &["server auth"])).is_err());
    }

    #[test]
    fn the_certificate_has_the_requests_subject_the_specs_usages_and_a_bounded_life() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = SigningCa { cert_pem: ca_cert.pem(), key_pem: ca_key.serialize_pem(), duration: DEFAULT_DURATION };
        let now = time::OffsetDateTime::now_utc();
        let pem =
            sign(&request("system:node:n1", &["system:nodes"], false, &["digital signature", "client auth"]), &ca, now)
                .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&pem.contents).unwrap();
        assert_eq!(cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), "system:node:n1");
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300, "the asked hour, backdated five minutes");
        assert!(cert.extended_key_usage().unwrap().unwrap().value.client_auth);
        assert!(!cert.is_ca());
    }
}
