//! Signed JSON Web Tokens in the compact form (`header.payload.signature`, each
//! base64url without padding), as ServiceAccount tokens use them. One algorithm:
//! ES256 (ECDSA P-256, SHA-256) with the server's service-account key; a token naming
//! any other (`none` included) is refused before its signature is looked at.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::Deserialize;

/// Tokens longer than this are refused unread (kube's tokens are about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

const ALGORITHM: &str = "ES256";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's signing algorithm is not {ALGORITHM}")]
    Algorithm,
    #[error("the token was signed by another key")]
    KeyId,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the service account key is invalid: {0}")]
    Key(String),
}

#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(default)]
    kid: Option<&'a str>,
}

/// The private half: signs tokens.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    key_id: String,
}

impl SigningKey {
    /// A P-256 key from its PKCS#8 DER and its SubjectPublicKeyInfo DER. The key id
    /// (`kid`) is kube's: the SHA-256 of the SubjectPublicKeyInfo, base64url.
    pub fn from_pkcs8(pkcs8: &[u8], spki: &[u8]) -> Result<SigningKey, JwtError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| JwtError::Key(e.to_string()))?;
        let key_id = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki));
        Ok(SigningKey { pair, rng, key_id })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The compact JWS of `claims`.
    pub fn sign(&self, claims: &impl serde::Serialize) -> String {
        let header = serde_json::json!({"alg": ALGORITHM, "kid": self.key_id});
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("a JSON header"));
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("serializable claims")));
        let signature = self.pair.sign(&self.rng, token.as_bytes()).expect("P-256 signing does not fail");
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        token
    }

    /// The public half, for checking what this key signed.
    pub fn verifier(&self) -> Verifier {
        Verifier { public: self.pair.public_key().as_ref().to_vec(), key_id: self.key_id.clone() }
    }
}

/// The public half: checks tokens.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// The uncompressed P-256 point.
    public: Vec<u8>,
    key_id: String,
}

impl Verifier {
    /// The payload (the claims, as JSON bytes) of a token this key signed.
    pub fn verify(&self, token: &str) -> Result<Vec<u8>, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        // The signed part: `header.payload`, up to the last dot.
        let signed = &token[..header.len() + 1 + payload.len()];
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed);
        let header_json = decode(header)?;
        let header: Header = serde_json::from_slice(&header_json).map_err(|_| JwtError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(JwtError::Algorithm);
        }
        if header.kid.is_some_and(|kid| kid != self.key_id) {
            return Err(JwtError::KeyId);
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(signed.as_bytes(), &decode(signature)?)
            .map_err(|_| JwtError::Signature)?;
        decode(payload)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh key, as the PKI makes one.
    pub(crate) fn key() -> SigningKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        SigningKey::from_pkcs8(&pair.serialize_der(), &rcgen::PublicKeyData::subject_public_key_info(&pair)).unwrap()
    }

    #[test]
    fn what_a_key_signs_it_verifies_and_nothing_else() {
        let key = key();
        let claims = serde_json::json!({"sub": "system:serviceaccount:team:builder", "exp": 1});
        let token = key.sign(&claims);
        assert_eq!(token.split('.').count(), 3);
        let payload: serde_json::Value = serde_json::from_slice(&key.verifier().verify(&token).unwrap()).unwrap();
        assert_eq!(payload, claims);
        // Another key's verifier refuses it, by key id and (without one) by signature.
        let other = super::tests::key();
        assert_eq!(other.verifier().verify(&token), Err(JwtError::KeyId));
        let mut anonymous = other.verifier();
        anonymous.key_id = key.key_id().to_string();
        assert_eq!(anonymous.verify(&token), Err(JwtError::Signature));
        // A changed payload breaks the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"system:admin","exp":1}"#);
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert_eq!(key.verifier().verify(&forged), Err(JwtError::Signature));
        // `alg: none` and other algorithms are refused outright.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(key.verifier().verify(&none), Err(JwtError::Algorithm));
        for malformed in ["", "a.b", "a.b.c.d", "!!.e30.e30", &"a".repeat(MAX_TOKEN_BYTES + 1)] {
            assert_eq!(key.verifier().verify(malformed), Err(JwtError::Malformed), "{malformed:.20}");
        }
    }
}
