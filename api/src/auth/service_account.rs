//! ServiceAccount tokens, as kube's bound tokens are: JWTs the server signs with its
//! service-account key (`pki/sa.key`), naming the ServiceAccount (and the Pod, Secret
//! or Node the token is bound to) by name and uid, for a list of audiences, valid
//! until `exp`. `POST serviceaccounts/NAME/token` (a TokenRequest; `kubectl create
//! token`) issues them.
//!
//! A token authenticates as `system:serviceaccount:NS:NAME` (groups
//! `system:serviceaccounts` and `system:serviceaccounts:NS`) while its signature,
//! issuer, audience and lifetime hold and every object it names still exists with the
//! same uid: deleting the ServiceAccount or the pod revokes it. The signature check
//! (the expensive part) is remembered per token; the object checks run every time.

use super::jwt::{JwtError, SigningKey, Verifier};
use super::User;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// kube's conventional issuer, and the audience the API server accepts by default.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// A TokenRequest's lifetime, when it asks none (kube's default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// kube refuses shorter lifetimes...
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// ... and longer ones than 2^32 seconds.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// Verified tokens remembered at most; beyond, the memory starts over.
const REMEMBERED_TOKENS: usize = 4096;

/// An object a token names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// kube's private claims, under `kubernetes.io`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// The claims of a ServiceAccount token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

impl Claims {
    /// The user the token speaks for.
    pub fn user(&self) -> User {
        let namespace = &self.kubernetes.namespace;
        let mut user = User::new(
            super::super::authz::rbac::service_account_user(namespace, &self.kubernetes.serviceaccount.name),
            self.kubernetes.serviceaccount.uid.clone(),
            vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")],
        );
        // As kube tells an authorizer which pod (and node) a bound token came from, and
        // which credential it was (its `jti`).
        let mut extra = |key: &str, value: &str| {
            user.extra.insert(format!("authentication.kubernetes.io/{key}"), vec![value.to_string()]);
        };
        extra("credential-id", &format!("JTI={}", self.jti));
        if let Some(pod) = &self.kubernetes.pod {
            extra("pod-name", &pod.name);
            extra("pod-uid", &pod.uid);
        }
        if let Some(node) = &self.kubernetes.node {
            extra("node-name", &node.name);
            extra("node-uid", &node.uid);
        }
        user
    }
}

/// Why a token does not authenticate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("the token's claims are not a ServiceAccount token's")]
    Claims,
    #[error("the token was issued by {0:?}")]
    Issuer(String),
    #[error("the token is not for this server's audiences")]
    Audience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("{kind} {name:?} the token is bound to no longer exists")]
    Gone { kind: &'static str, name: String },
}

/// Which object a lookup asks about: `(kind, namespace, name)`; the answer is its uid
/// if it exists and is not being deleted.
pub type Lookup<'a> = &'a dyn Fn(&'static str, &str, &str) -> Option<String>;

/// What a TokenRequest asks for.
pub struct Request<'a> {
    pub namespace: &'a str,
    pub service_account: ObjectRef,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    /// `("Pod" | "Secret" | "Node", the object)`.
    pub bound: Option<(&'a str, ObjectRef)>,
    /// Unix seconds.
    pub now: i64,
}

/// Issues and checks ServiceAccount tokens.
pub struct Tokens {
    key: SigningKey,
    verifier: Verifier,
    issuer: String,
    /// The audiences the API server accepts (a token must name one).
    api_audiences: Vec<String>,
    verified: Mutex<HashMap<Box<str>, Arc<Claims>>>,
}

impl Tokens {
    pub fn new(key: SigningKey) -> Tokens {
        let verifier = key.verifier();
        Tokens {
            key,
            verifier,
            issuer: DEFAULT_ISSUER.into(),
            api_audiences: vec![DEFAULT_ISSUER.into()],
            verified: Mutex::default(),
        }
    }

    /// The audiences a token gets when its request names none.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// A signed token for `request`; returns it with its expiry (Unix seconds).
    pub fn issue(&self, request: Request<'_>) -> (String, i64) {
        let mut kubernetes = KubernetesClaims {
            namespace: request.namespace.into(),
            serviceaccount: request.service_account,
            ..KubernetesClaims::default()
        };
        match request.bound {
            Some(("Pod", object)) => kubernetes.pod = Some(object),
            Some(("Secret", object)) => kubernetes.secret = Some(object),
            Some(("Node", object)) => kubernetes.node = Some(object),
            _ => {}
        }
        let exp = request.now + request.expiration_seconds;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: super::super::authz::rbac::service_account_user(request.namespace, &kubernetes.serviceaccount.name),
            aud: request.audiences,
            exp,
            iat: request.now,
            nbf: request.now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes,
        };
        (self.key.sign(&claims), exp)
    }

    /// The user `token` authenticates as at `now` (Unix seconds), if it does.
    pub fn authenticate(&self, token: &str, now: i64, lookup: Lookup<'_>) -> Result<User, TokenError> {
        let claims = self.verified_claims(token)?;
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if now < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        let k8s = &claims.kubernetes;
        let namespace = k8s.namespace.as_str();
        let objects = [
            ("ServiceAccount", namespace, Some(&k8s.serviceaccount)),
            ("Pod", namespace, k8s.pod.as_ref()),
            ("Secret", namespace, k8s.secret.as_ref()),
            ("Node", "", k8s.node.as_ref()),
        ];
        for (kind, namespace, object) in objects {
            let Some(object) = object else { continue };
            if lookup(kind, namespace, &object.name).as_deref() != Some(object.uid.as_str()) {
                return Err(TokenError::Gone { kind, name: object.name.clone() });
            }
        }
        Ok(claims.user())
    }

    /// The claims of a token this server signed, for its issuer and audiences; the
    /// signature is checked once per token.
    fn verified_claims(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        if let Some(claims) = self.verified.lock().get(token) {
            return Ok(Arc::clone(claims));
        }
        let payload = self.verifier.verify(token)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Claims)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if !claims.aud.iter().any(|a| self.api_audiences.contains(a)) {
            return Err(TokenError::Audience);
        }
        let claims = Arc::new(claims);
        let mut verified = self.verified.lock();
        if verified.len() >= REMEMBERED_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), Arc::clone(&claims));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(now: i64) -> Request<'static> {
        Request {
            namespace: "team",
            service_account: ObjectRef { name: "builder".into(), uid: "sa-1".into() },
            audiences: vec![DEFAULT_ISSUER.into()],
            expiration_seconds: 600,
            bound: None,
            now,
        }
    }

    #[test]
    fn a_token_speaks_for_its_service_account_until_it_expires() {
        let tokens = Tokens::new(crate::auth::jwt::tests::key());
        let exists = |kind: &'static str, namespace: &str, name: &str| match (kind, namespace, name) {
            ("ServiceAccount", "team", "builder") => Some("sa-1".to_string()),
            ("Pod", "team", "web") => Some("pod-1".to_string()),
            _ => None,
        };
        let (token, exp) = tokens.issue(request(1_000));
        assert_eq!(exp, 1_600);
        let user = tokens.authenticate(&token, 1_000, &exists).unwrap();
        assert_eq!(user.name, "system:serviceaccount:team:builder");
        assert_eq!(user.uid, "sa-1");
        assert_eq!(user.groups, ["system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"]);
        // Valid up to, not at, its expiry; not before it was issued.
        assert!(tokens.authenticate(&token, 1_599, &exists).is_ok());
        assert_eq!(tokens.authenticate(&token, 1_600, &exists), Err(TokenError::Expired));
        assert_eq!(tokens.authenticate(&token, 999, &exists), Err(TokenError::NotYetValid));
        // A ServiceAccount deleted, or deleted and made again (a new uid), revokes it.
        let recreated = |kind: &'static str, _: &str, _: &str| (kind == "ServiceAccount").then(|| "sa-2".to_string());
        assert!(matches!(tokens.authenticate(&token, 1_000, &recreated), Err(TokenError::Gone { .. })));
    }

    #[test]
    fn bound_tokens_live_as_long_as_their_object_and_audiences_matter() {
        let tokens = Tokens::new(crate::auth::jwt::tests::key());
        let mut bound = request(0);
        bound.bound = Some(("Pod", ObjectRef { name: "web".into(), uid: "pod-1".into() }));
        let (token, _) = tokens.issue(bound);
        let with_pod = |kind: &'static str, _: &str, _: &str| match kind {
            "ServiceAccount" => Some("sa-1".to_string()),
            "Pod" => Some("pod-1".to_string()),
            _ => None,
        };
        let without_pod = |kind: &'static str, _: &str, _: &str| (kind == "ServiceAccount").then(|| "sa-1".to_string());
        let user = tokens.authenticate(&token, 10, &with_pod).unwrap();
        let extra = |key: &str| user.extra.get(&format!("authentication.kubernetes.io/{key}")).map(|v| v[0].clone());
        assert_eq!(extra("pod-name").as_deref(), Some("web"), "the pod is the user's extra, as in kube");
        assert_eq!(extra("pod-uid").as_deref(), Some("pod-1"));
        assert!(extra("credential-id").is_some_and(|id| id.starts_with("JTI=")));
        assert_eq!(
            tokens.authenticate(&token, 10, &without_pod),
            Err(TokenError::Gone { kind: "Pod", name: "web".into() })
        );
        // A token for another audience is not for the API server.
        let mut vault = request(0);
        vault.audiences = vec!["vault".into()];
        let (token, _) = tokens.issue(vault);
        assert_eq!(tokens.authenticate(&token, 10, &with_pod), Err(TokenError::Audience));
        // Another server's token is refused by its signature.
        let (foreign, _) = Tokens::new(crate::auth::jwt::tests::key()).issue(request(0));
        assert!(matches!(tokens.authenticate(&foreign, 10, &with_pod), Err(TokenError::Jwt(_))));
    }
}
