//! Bootstrap tokens, as kube-apiserver's `--enable-bootstrap-token-auth` reads them:
//! a bearer token `ID.SECRET` (6 and 16 characters of `[a-z0-9]`) is valid while the
//! Secret `kube-system/bootstrap-token-ID` of type `bootstrap.kubernetes.io/token`
//! holds that secret, allows authentication (`usage-bootstrap-authentication: "true"`)
//! and has not expired (`expiration`, RFC 3339). Its user is `system:bootstrap:ID` in
//! `system:bootstrappers` and any `auth-extra-groups` (each `system:bootstrappers:*`).
//!
//! A node agent joins with one: it may create a CertificateSigningRequest for its
//! node's client certificate and nothing else (the bindings at start give the
//! bootstrappers only that).

use super::User;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const GROUP: &str = "system:bootstrappers";

/// The Secret's fields that matter (data values are base64, as stored).
#[derive(Deserialize)]
struct TokenSecret {
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    metadata: Meta,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default, rename = "deletionTimestamp")]
    deletion_timestamp: Option<String>,
}

/// Splits `ID.SECRET`, checking kube's token format.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let valid = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (valid(id, 6) && valid(secret, 16)).then_some((id, secret))
}

/// The storage key of token `id`'s Secret.
pub fn secret_key(id: &str) -> String {
    keelson_store::object_key("secrets", Some("kube-system"), &format!("bootstrap-token-{id}"))
}

/// The user `token` speaks for, given its Secret as stored (`None` if there is none),
/// at `now` (Unix seconds).
pub fn authenticate(token: &str, stored: Option<&[u8]>, now: i64) -> Option<User> {
    let (id, secret) = parse(token)?;
    let object: TokenSecret = serde_json::from_slice(stored?).ok()?;
    if object.type_ != SECRET_TYPE || object.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        let encoded = object.data.get(name)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        String::from_utf8(bytes).ok()
    };
    let stored_secret = field("token-secret")?;
    // Compare without an early exit, so timing says nothing of how much matched.
    let same = stored_secret.len() == secret.len()
        && stored_secret.bytes().zip(secret.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !same
        || field("token-id").as_deref() != Some(id)
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(expiration) = field("expiration") {
        let at: jiff::Timestamp = expiration.parse().ok()?;
        if at.as_second() <= now {
            return None;
        }
    }
    let mut groups = vec![GROUP.to_string()];
    for extra in field("auth-extra-groups").unwrap_or_default().split(',').map(str::trim).filter(|g| !g.is_empty()) {
        // kube ignores a token whose extra groups leave the bootstrappers' namespace.
        if !extra.starts_with("system:bootstrappers:") {
            return None;
        }
        groups.push(extra.to_string());
    }
    Some(User::new(format!("system:bootstrap:{id}"), String::new(), groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(data: serde_json::Value) -> Vec<u8> {
        let encoded: BTreeMap<String, String> = data
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap())))
            .collect();
        serde_json::to_vec(&json!({"metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": SECRET_TYPE, "data": encoded}))
        .unwrap()
    }

    #[test]
    fn a_valid_token_is_a_bootstrapper_until_it_expires() {
        let stored = secret(json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true", "expiration": "2030-01-01T00:00:00Z",
            "auth-extra-groups": "system:bootstrappers:workers"}));
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap().as_second();
        let user = authenticate("abcdef.0123456789abcdef", Some(&stored), now).expect("valid");
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(user.groups, ["system:bootstrappers", "system:bootstrappers:workers", "system:authenticated"]);
        assert!(authenticate("abcdef.0123456789abcdee", Some(&stored), now).is_none(), "wrong secret");
        assert!(authenticate("abcdef.0123456789abcdef", None, now).is_none(), "no secret");
        let after = jiff::Timestamp::from_second(1_900_000_000).unwrap().as_second();
        assert!(authenticate("abcdef.0123456789abcdef", Some(&stored), after).is_none(), "expired");
        assert!(parse("ABCDEF.0123456789abcdef").is_none() && parse("abcdef.short").is_none());
    }

    #[test]
    fn tokens_not_for_authentication_or_with_foreign_groups_are_refused() {
        let no_auth = secret(json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
            "usage-bootstrap-signing": "true"}));
        assert!(authenticate("abcdef.0123456789abcdef", Some(&no_auth), 0).is_none());
        let foreign = secret(json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true", "auth-extra-groups": "system:masters"}));
        assert!(authenticate("abcdef.0123456789abcdef", Some(&foreign), 0).is_none());
    }
}
