//! Values sealed at rest: AES-256-GCM for the keys under chosen prefixes (the API
//! server seals `/registry/secrets/`), so what the store writes to disk (the objects
//! table, the history log, backups) never holds them in clear. In memory (the watch
//! ring, the caches above) they stay plain.
//!
//! A sealed value is `k8s:enc:aesgcm:v1:NAME:` + a 12-byte random nonce + ciphertext
//! and tag, with the storage key as associated data (a sealed value copied under
//! another key does not open). Keys come from a file of `NAME:BASE64` lines (32 bytes
//! each; `#` comments): the first seals, every one opens. Rotating: put the new key
//! first, rewrite every sealed value (a write under the old key is stale:
//! [`Sealer::is_current`]), then drop the old key. Values stored before sealing was
//! turned on read as they are and are sealed when next written.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

const MARK: &[u8] = b"k8s:enc:aesgcm:v1:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("reading {path}: {why}")]
    Read { path: String, why: String },
    #[error("encryption key file line {line}: {why}")]
    KeyFile { line: usize, why: &'static str },
    #[error("the encryption key file names no key")]
    NoKeys,
    #[error("value of {key} was sealed with key {name:?}, which the key file does not hold")]
    UnknownKey { key: String, name: String },
    #[error("value of {key} does not open (corrupt, or sealed for another key)")]
    Open { key: String },
}

/// See the module documentation.
pub struct Sealer {
    prefixes: Vec<Vec<u8>>,
    /// The first seals; all open.
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Sealer").field("keys", &names).finish_non_exhaustive()
    }
}

impl Sealer {
    /// Seals the keys under `prefixes` with `keys` (name, 32 bytes); the first seals.
    pub fn new(prefixes: Vec<Vec<u8>>, keys: Vec<(String, [u8; 32])>) -> Result<Sealer, SealError> {
        if keys.is_empty() {
            return Err(SealError::NoKeys);
        }
        let keys = keys
            .into_iter()
            .map(|(name, bytes)| {
                let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes make an AES-256 key");
                (name, LessSafeKey::new(key))
            })
            .collect();
        Ok(Sealer { prefixes, keys, rng: SystemRandom::new() })
    }

    /// The keys of a `NAME:BASE64` file (see the module documentation).
    pub fn from_key_file(path: &Path, prefixes: Vec<Vec<u8>>) -> Result<Sealer, SealError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SealError::Read { path: path.display().to_string(), why: e.to_string() })?;
        Sealer::new(prefixes, parse_key_file(&text)?)
    }

    /// Whether values of `key` are sealed.
    pub fn applies(&self, key: &[u8]) -> bool {
        self.prefixes.iter().any(|prefix| key.starts_with(prefix))
    }

    /// `plain` sealed with the first key, bound to `key`.
    pub fn seal(&self, key: &[u8], plain: &[u8]) -> Bytes {
        let (name, sealing) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system's random source works");
        let mut sealed = plain.to_vec();
        sealing
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key), &mut sealed)
            .expect("AES-GCM sealing does not fail on values this size");
        let mut out = BytesMut::with_capacity(MARK.len() + name.len() + 1 + NONCE_LEN + sealed.len());
        out.put_slice(MARK);
        out.put_slice(name.as_bytes());
        out.put_u8(b':');
        out.put_slice(&nonce);
        out.put_slice(&sealed);
        out.freeze()
    }

    /// The plain value of a stored one (unsealed values are returned as they are).
    pub fn open(&self, key: &[u8], stored: Bytes) -> Result<Bytes, SealError> {
        let Some(rest) = stored.strip_prefix(MARK) else { return Ok(stored) };
        let key_text = || String::from_utf8_lossy(key).into_owned();
        let colon = rest.iter().position(|b| *b == b':').ok_or_else(|| SealError::Open { key: key_text() })?;
        let (name, body) = (&rest[..colon], &rest[colon + 1..]);
        let Some((_, opening)) = self.keys.iter().find(|(n, _)| n.as_bytes() == name) else {
            return Err(SealError::UnknownKey { key: key_text(), name: String::from_utf8_lossy(name).into_owned() });
        };
        if body.len() < NONCE_LEN {
            return Err(SealError::Open { key: key_text() });
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&body[..NONCE_LEN]).map_err(|_| SealError::Open { key: key_text() })?;
        let mut sealed = body[NONCE_LEN..].to_vec();
        let plain = opening
            .open_in_place(nonce, Aad::from(key), &mut sealed)
            .map_err(|_| SealError::Open { key: key_text() })?;
        Ok(Bytes::copy_from_slice(plain))
    }

    /// Whether a stored value of a sealed key is sealed with the current (first) key;
    /// if not, rewriting it re-seals it.
    pub fn is_current(&self, stored: &[u8]) -> bool {
        let current = [MARK, self.keys[0].0.as_bytes(), b":"].concat();
        stored.starts_with(&current)
    }
}

fn parse_key_file(text: &str) -> Result<Vec<(String, [u8; 32])>, SealError> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |why| SealError::KeyFile { line: index + 1, why };
        let (name, secret) = line.split_once(':').ok_or_else(|| error("expected NAME:BASE64"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(error("a key's name is letters, digits, '-' and '_'"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|_| error("the key is not base64"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| error("a key is 32 bytes (AES-256)"))?;
        if keys.iter().any(|(n, _)| n == name) {
            return Err(error("two keys have this name"));
        }
        keys.push((name.to_string(), bytes));
    }
    if keys.is_empty() {
        return Err(SealError::NoKeys);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(keys: &[(&str, u8)]) -> Sealer {
        let keys = keys.iter().map(|(name, fill)| (name.to_string(), [*fill; 32])).collect();
        Sealer::new(vec![b"/registry/secrets/".to_vec()], keys).unwrap()
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_under_their_storage_key() {
        let first = sealer(&[("k1", 1)]);
        let key = b"/registry/secrets/team/db";
        assert!(first.applies(key) && !first.applies(b"/registry/configmaps/team/db"));
        let sealed = first.seal(key, b"hunter2");
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "no plain text at rest");
        assert_ne!(first.seal(key, b"hunter2"), sealed, "a fresh nonce each time");
        assert_eq!(first.open(key, sealed.clone()).unwrap(), Bytes::from_static(b"hunter2"));
        // Moved under another key, or tampered with, it does not open.
        assert!(matches!(first.open(b"/registry/secrets/team/other", sealed.clone()), Err(SealError::Open { .. })));
        let mut tampered = sealed.to_vec();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(first.open(key, tampered.into()).is_err());
        // Plain values (stored before sealing) read as they are.
        assert_eq!(first.open(key, Bytes::from_static(b"{}")).unwrap(), Bytes::from_static(b"{}"));

        // Rotation: the new key seals; the old still opens what it sealed, which is stale.
        let rotated = sealer(&[("k2", 2), ("k1", 1)]);
        assert_eq!(rotated.open(key, sealed.clone()).unwrap(), Bytes::from_static(b"hunter2"));
        assert!(!rotated.is_current(&sealed) && first.is_current(&sealed));
        assert!(rotated.is_current(&rotated.seal(key, b"x")));
        // Once the old key is dropped, what it sealed is unreadable, and says why.
        let dropped = sealer(&[("k2", 2)]);
        assert_eq!(
            dropped.open(key, sealed).unwrap_err(),
            SealError::UnknownKey { key: "/registry/secrets/team/db".into(), name: "k1".into() }
        );
    }

    #[test]
    fn key_files_name_32_byte_keys() {
        let b64 = |fill: u8| base64::engine::general_purpose::STANDARD.encode([fill; 32]);
        let keys = parse_key_file(&format!("# rotation: new first\nnew:{}\n\nold: {}\n", b64(2), b64(1))).unwrap();
        assert_eq!(keys, vec![("new".to_string(), [2; 32]), ("old".to_string(), [1; 32])]);
        assert_eq!(parse_key_file(""), Err(SealError::NoKeys));
        assert_eq!(parse_key_file("k:AAAA"), Err(SealError::KeyFile { line: 1, why: "a key is 32 bytes (AES-256)" }));
        assert!(parse_key_file(&format!("a b:{}", b64(1))).is_err());
        assert!(parse_key_file(&format!("k:{}\nk:{}", b64(1), b64(2))).is_err());
    }
}
