//! One entry point that feeds untrusted bytes to every decoder a request body, path or
//! query reaches before the store: body parsing (JSON and YAML), every kind's codec
//! (create and update), the three patch formats, paths, selectors and continue
//! tokens, the protobuf encoding of what the codecs accept, and the credentials a
//! request presents (client certificates, the token file, ServiceAccount JWTs and
//! their claims). The property: no input panics. Used by `api/tests/fuzz.rs` (mutation fuzzing in the test suite)
//! and by the cargo-fuzz target in `fuzz/`.

use crate::auth::{self, jwt::SigningKey, jwt::Verifier, service_account::Claims};
use crate::filter::Filter;
use crate::kinds::Write;
use crate::patch;
use crate::resources::RESOURCES;
use crate::rest::parse_body;
use crate::route::{Query, Route};
use serde_json::Value;
use std::sync::OnceLock;

/// Runs `data` through every decoder; returns how many accepted it (for coverage
/// statistics in tests). Panics only if a decoder has a bug.
pub fn exercise(data: &[u8]) -> usize {
    let mut accepted = 0;
    let text = String::from_utf8_lossy(data);
    accepted += credentials(data, &text);
    if Route::parse(&text).is_ok() {
        accepted += 1;
    }
    let query = Query::parse(Some(&text));
    for info in RESOURCES.iter().take(12) {
        if Filter::parse(query.get("labelSelector").or(Some(&text)), query.get("fieldSelector"), info).is_ok() {
            accepted += 1;
        }
    }
    let mut bodies = Vec::new();
    for content_type in ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"] {
        if let Ok(value) = parse_body(Some(content_type), data) {
            bodies.push(value);
        }
    }
    for body in &bodies {
        accepted += admit_everywhere(body);
        let mut target = serde_json::json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}});
        patch::merge_patch(&mut target, body);
        if patch::strategic_merge(&mut target, body).is_ok() {
            accepted += 1;
        }
        if patch::json_patch(&mut target, body).is_ok() {
            accepted += 1;
        }
    }
    accepted
}

/// The key the fuzzed JWTs are checked against (and the seeds signed with).
fn fuzz_key() -> &'static (SigningKey, Verifier) {
    static KEY: OnceLock<(SigningKey, Verifier)> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = rcgen::KeyPair::generate().expect("a P-256 key");
        let key = SigningKey::from_pkcs8(&pair.serialize_der(), &rcgen::PublicKeyData::subject_public_key_info(&pair))
            .expect("rcgen's PKCS#8 is ring's");
        let verifier = key.verifier();
        (key, verifier)
    })
}

/// Credentials as a request carries them: a client certificate (DER, or PEM), a token
/// file, a bearer JWT and the claims inside one.
fn credentials(data: &[u8], text: &str) -> usize {
    let mut accepted = 0;
    accepted += usize::from(auth::user_from_certificate(data).is_some());
    for der in rustls_pemfile::certs(&mut &data[..]).flatten() {
        accepted += usize::from(auth::user_from_certificate(&der).is_some());
    }
    accepted += usize::from(auth::Authenticator::parse_token_file(text).is_ok());
    accepted += usize::from(fuzz_key().1.verify(text).is_ok());
    accepted += usize::from(serde_json::from_slice::<Claims>(data).is_ok());
    accepted
}

/// Valid credentials to mutate: a signed ServiceAccount token, its claims, a client
/// certificate in PEM and DER, and a token file.
pub fn credential_seeds() -> Vec<Vec<u8>> {
    let claims = serde_json::json!({"iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:team:builder", "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": 1_700_000_600, "iat": 1_700_000_000, "nbf": 1_700_000_000, "jti": "j",
        "kubernetes.io": {"namespace": "team", "serviceaccount": {"name": "builder", "uid": "u"},
            "pod": {"name": "web", "uid": "p"}}});
    let token = fuzz_key().0.sign(&claims);
    let ca = rcgen::KeyPair::generate().expect("a P-256 key");
    let issuer = rcgen::Issuer::new(rcgen::CertificateParams::default(), ca);
    let (pem, _) = crate::pki::client_certificate(&issuer, "jane", &["devs", "ops"]).expect("a certificate");
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).flatten().next().expect("one certificate").to_vec();
    vec![
        token.into_bytes(),
        serde_json::to_vec(&claims).expect("claims serialize"),
        pem.into_bytes(),
        der,
        b"s3cret,alice,u-1,\"dev,ops\"\n# comment\nt2,bob,u2\n".to_vec(),
    ]
}

fn admit_everywhere(body: &Value) -> usize {
    let mut accepted = 0;
    for info in RESOURCES {
        let mut unknown = Vec::new();
        if let Ok(created) = info.codec.admit_value(body, Write::Create, Some(&mut unknown)) {
            accepted += 1;
            // What the server stores, it may answer in protobuf: encoding is total.
            let mut typed = created.clone();
            typed["apiVersion"] = info.api_version().into();
            typed["kind"] = info.kind.into();
            let _ = crate::protobuf::encode(&typed);
            // An accepted object must also be a valid "old" for itself.
            let _ = info.codec.admit_value(&created, Write::Update { old: &created }, None);
        }
        let _ = info.codec.admit_value(body, Write::Update { old: body }, None);
    }
    accepted
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_valid_pod_is_accepted_somewhere() {
        let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"d"},
            "spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        assert!(super::exercise(pod) > 0);
        super::exercise(b"\xff\xfe{[");
        super::exercise(b"");
        // Each credential seed is accepted by its decoder.
        for seed in super::credential_seeds() {
            assert!(super::credentials(&seed, &String::from_utf8_lossy(&seed)) > 0, "{seed:?}");
        }
    }
}
