//! The server's certificates and the admin kubeconfig.
//!
//! On first start the data directory gets a CA, an admin client certificate (CN
//! `admin`, O `system:masters`) and the kubeconfig that uses it. The serving
//! certificate is signed again on every start, so its SANs always name the current
//! listen address; clients trust the CA, which never changes for a data directory.

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("pki/sa.key: {0}")]
    ServiceAccountKey(String),
}

/// The PEM material the server needs.
pub struct Pki {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The server's client certificate toward node agents (signed at every start).
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
    /// Signs ServiceAccount tokens (P-256, PKCS#8); kept across restarts so the tokens
    /// issued stay valid.
    pub service_account_key_pem: String,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io { action: "reading", path: path.into(), source }),
    }
}

/// Writes a file atomically (temp + rename) with owner-only permissions for keys.
pub fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let io = |action, source| PkiError::Io { action, path: path.into(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(|e| io("creating", e))?;
    file.write_all(text.as_bytes()).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming", e))
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "keelson-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// The addresses a client may dial: the listen address (or loopback when it listens
/// on all interfaces), loopback and `localhost`.
fn server_names(listen: SocketAddr) -> Vec<SanType> {
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if !listen.ip().is_unspecified() && !ips.contains(&listen.ip()) {
        ips.push(listen.ip());
    }
    let mut names: Vec<SanType> = ips.into_iter().map(SanType::IpAddress).collect();
    names.push(SanType::DnsName("localhost".try_into().expect("a valid DNS name")));
    names.push(SanType::DnsName("kubernetes.default.svc".try_into().expect("a valid DNS name")));
    names
}

impl Pki {
    /// Loads the CA and admin credentials from `dir/pki`, creating them on first start,
    /// and signs a fresh serving certificate for `listen`.
    pub fn load_or_create(data_dir: &Path, listen: SocketAddr) -> Result<Pki, PkiError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
            action: "creating",
            path: dir.clone(),
            source,
        })?;
        let (ca_cert_pem, ca_key) = match (read(&dir.join("ca.crt"))?, read(&dir.join("ca.key"))?) {
            (Some(cert), Some(key)) => (cert, KeyPair::from_pem(&key)?),
            _ => {
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write(&dir.join("ca.key"), &key.serialize_pem(), true)?;
                write(&dir.join("ca.crt"), &cert.pem(), false)?;
                (cert.pem(), key)
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "keelson-apiserver");
        params.subject_alt_names = server_names(listen);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let server_cert_pem = params.signed_by(&server_key, &issuer)?.pem();
        let server_key_pem = server_key.serialize_pem();
        write(&dir.join("server.crt"), &server_cert_pem, false)?;
        write(&dir.join("server.key"), &server_key_pem, true)?;

        let (admin_cert_pem, admin_key_pem) = match (read(&dir.join("admin.crt"))?, read(&dir.join("admin.key"))?) {
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                let (cert, key) = client_certificate(&issuer, "admin", &["system:masters"])?;
                write(&dir.join("admin.key"), &key, true)?;
                write(&dir.join("admin.crt"), &cert, false)?;
                (cert, key)
            }
        };
        let (kubelet_client_cert_pem, kubelet_client_key_pem) =
            client_certificate(&issuer, crate::kubelet::CLIENT_CN, &["system:masters"])?;
        let service_account_key_pem = match read(&dir.join("sa.key"))? {
            Some(key) => key,
            None => {
                let key = KeyPair::generate()?.serialize_pem();
                write(&dir.join("sa.key"), &key, true)?;
                key
            }
        };
        Ok(Pki {
            ca_cert_pem,
            server_cert_pem,
            server_key_pem,
            admin_cert_pem,
            admin_key_pem,
            kubelet_client_cert_pem,
            kubelet_client_key_pem,
            service_account_key_pem,
        })
    }

    /// The key that signs ServiceAccount tokens.
    pub fn service_account_signing_key(&self) -> Result<crate::auth::jwt::SigningKey, PkiError> {
        let pair = KeyPair::from_pem(&self.service_account_key_pem)?;
        crate::auth::jwt::SigningKey::from_pkcs8(
            &pair.serialize_der(),
            &rcgen::PublicKeyData::subject_public_key_info(&pair),
        )
        .map_err(|e| PkiError::ServiceAccountKey(e.to_string()))
    }

    /// The kubeconfig for the admin user, pointing at `server` (an `https://` URL).
    pub fn admin_kubeconfig(&self, server: &str) -> String {
        kubeconfig(server, &self.ca_cert_pem, "admin", &self.admin_cert_pem, &self.admin_key_pem)
    }

    /// Writes the admin kubeconfig to `path`.
    pub fn write_admin_kubeconfig(&self, path: &Path, server: &str) -> Result<(), PkiError> {
        write(path, &self.admin_kubeconfig(server), true)
    }
}

/// A kubeconfig for `server` (an `https://` URL) trusting the CA `ca_pem`, with a
/// client certificate as the user named `user`.
fn kubeconfig(server: &str, ca_pem: &str, user: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keelson\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user:?}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: keelson\n  context:\n    cluster: keelson\n    user: {user:?}\n    namespace: default\ncurrent-context: keelson\npreferences: {{}}\n",
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    )
}

/// A kubeconfig for `user` in `groups` (CN and O of a fresh client certificate signed
/// by the cluster CA in `data_dir/pki`), pointing at `server`: how a node agent gets
/// its own identity (`system:node:NAME` in `system:nodes`) from an operator.
pub fn client_kubeconfig(data_dir: &Path, server: &str, user: &str, groups: &[&str]) -> Result<String, PkiError> {
    let dir = data_dir.join("pki");
    let missing = |name: &str| PkiError::Io {
        action: "reading",
        path: dir.join(name),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "start the server once to create the CA"),
    };
    let ca_cert_pem = read(&dir.join("ca.crt"))?.ok_or_else(|| missing("ca.crt"))?;
    let ca_key = KeyPair::from_pem(&read(&dir.join("ca.key"))?.ok_or_else(|| missing("ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)?;
    let (cert, key) = client_certificate(&issuer, user, groups)?;
    Ok(kubeconfig(server, &ca_cert_pem, user, &cert, &key))
}

/// A client certificate: CN is the user name, each O a group (Kubernetes' convention).
pub fn client_certificate(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    for group in groups {
        params.distinguished_name.push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    Ok((params.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_survives_restarts_and_the_kubeconfig_embeds_it() {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let first = Pki::load_or_create(dir.path(), listen).unwrap();
        let second = Pki::load_or_create(dir.path(), listen).unwrap();
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
        // The token signing key too: tokens issued before a restart stay valid.
        let key_id = |pki: &Pki| pki.service_account_signing_key().unwrap().key_id().to_string();
        assert_eq!(key_id(&first), key_id(&second));
        let config = first.admin_kubeconfig("https://127.0.0.1:6443");
        assert!(config.contains("server: https://127.0.0.1:6443"));
        assert!(config.contains("client-certificate-data: "));
        // Other users' kubeconfigs, signed by the same CA.
        let node =
            client_kubeconfig(dir.path(), "https://127.0.0.1:6443", "system:node:n1", &["system:nodes"]).unwrap();
        assert!(node.contains("user: \"system:node:n1\""));
        let ca = base64::engine::general_purpose::STANDARD.encode(&first.ca_cert_pem);
        assert!(node.contains(&ca));
    }
}
