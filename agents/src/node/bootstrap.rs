//! TLS bootstrap, as the kubelet's `--bootstrap-kubeconfig` does it: a node that has
//! no credentials of its own (or whose certificate is near its end) makes a key,
//! asks for a client certificate for `system:node:NAME` in `system:nodes` with a
//! CertificateSigningRequest, waits for the controllers to approve and sign it, and
//! writes its own kubeconfig (owner-only). It asks with a bootstrap token the first
//! time and with its current certificate to renew.
//!
//! Certificates are renewed when an agent starts with less than a fifth of its
//! certificate's lifetime left; a running agent renews its own ([`super::rotation`]).

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::Api;
use rcgen::{CertificateParams, DnType, KeyPair};
use std::path::Path;
use std::time::{Duration, Instant};

/// How a node without credentials proves it may join.
#[derive(Clone)]
pub struct Bootstrap {
    /// `https://HOST:PORT`.
    pub server: String,
    /// A bootstrap token, `ID.SECRET`.
    pub token: String,
    /// The cluster CA (PEM) the server's certificate must chain to.
    pub ca_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0}")]
    Key(#[from] rcgen::Error),
    #[error("building a client: {0}")]
    Client(String),
    #[error("asking for a certificate: {0}")]
    Api(#[from] kube::Error),
    #[error("certificate request {name} was {outcome}: {message}")]
    Refused { name: String, outcome: String, message: String },
    #[error(
        "certificate request {0} was not issued within {1:?} (is the controller manager running with a signing CA?)"
    )]
    Timeout(String, Duration),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{0} has no credentials of its own and no bootstrap token was given (--token)")]
    NoCredentials(String),
}

/// How long an agent waits for its certificate.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(250);
/// Renew once less than this share of the certificate's lifetime is left.
const RENEW_AT_REMAINING: f64 = 0.2;

/// The text of an embedded (base64) field of a kubeconfig this module wrote, such
/// as `client-certificate-data`.
pub(crate) fn embedded_field(text: &str, field: &str) -> Option<String> {
    use base64::Engine;
    let value = text.lines().find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim().trim_matches('"')).ok()?;
    String::from_utf8(bytes).ok()
}

/// The client certificate a kubeconfig holds (`client-certificate-data`), as DER.
fn kubeconfig_certificate(text: &str) -> Option<Vec<u8>> {
    let pem = embedded_field(text, "client-certificate-data")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(pem.contents)
}

/// When the kubeconfig's certificate for `user` starts and ends (Unix seconds), if it
/// holds one.
pub(crate) fn validity(text: &str, user: &str) -> Option<(i64, i64)> {
    use x509_parser::prelude::FromDer;
    let der = kubeconfig_certificate(text)?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).ok()?;
    let named = cert.subject().iter_common_name().filter_map(|n| n.as_str().ok()).any(|n| n == user);
    named.then(|| (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

/// The share of its lifetime the kubeconfig's certificate for `user` has left at
/// `now` (Unix seconds): `None` if there is no such certificate or it is not valid.
fn lifetime_left(text: &str, user: &str, now: i64) -> Option<f64> {
    let (from, to) = validity(text, user)?;
    (from <= now && now < to).then(|| (to - now) as f64 / ((to - from).max(1)) as f64)
}

/// Whether the certificate can be used as it is (more than a fifth of its life left).
fn still_good(text: &str, user: &str, now: i64) -> bool {
    lifetime_left(text, user, now).is_some_and(|left| left > RENEW_AT_REMAINING)
}

/// Whether the certificate can still authenticate (to ask for its own renewal).
fn still_valid(text: &str, user: &str, now: i64) -> bool {
    lifetime_left(text, user, now).is_some()
}

/// A kubeconfig for `user` at `server`, with its credentials embedded.
fn render_kubeconfig(server: &str, ca_pem: &str, user: &str, credentials: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keelson\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: \"{user}\"\n  user:\n{credentials}contexts:\n- name: keelson\n  context:\n    cluster: keelson\n    user: \"{user}\"\n\
         current-context: keelson\n"
    )
}

/// The server and CA a kubeconfig names (for renewing with it).
pub(crate) fn server_and_ca(text: &str) -> Option<(String, String)> {
    let server = text.lines().find_map(|l| l.trim().strip_prefix("server:"))?.trim().to_string();
    Some((server, embedded_field(text, "certificate-authority-data")?))
}

async fn client_for(kubeconfig: &str) -> Result<kube::Client, BootstrapError> {
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| BootstrapError::Client(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| BootstrapError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| BootstrapError::Client(e.to_string()))
}

/// Makes sure `kubeconfig` holds node `node`'s own, current credentials: keeps them
/// if they are good, renews them with themselves when near their end, or asks for
/// them with `bootstrap` when there are none (or they have expired). A kubeconfig
/// with other credentials (an admin's) is left as it is unless `bootstrap` is given.
pub async fn ensure_credentials(
    kubeconfig: &Path,
    node: &str,
    bootstrap: Option<&Bootstrap>,
) -> Result<(), BootstrapError> {
    let user = format!("system:node:{node}");
    let existing = std::fs::read_to_string(kubeconfig).ok();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    if existing.as_deref().is_some_and(|text| still_good(text, &user, now)) {
        return Ok(());
    }
    // Renew with the node's own certificate while it is still valid; else bootstrap.
    let own = existing.as_deref().filter(|text| still_valid(text, &user, now)).and_then(|text| {
        let (server, ca) = server_and_ca(text)?;
        Some((text.to_string(), server, ca))
    });
    let (asking, server, ca_pem) = match (own, bootstrap) {
        (Some(own), _) => own,
        (None, Some(b)) => {
            let credentials = format!("    token: {}\n", b.token);
            let text = render_kubeconfig(&b.server, &b.ca_pem, &format!("bootstrap-{node}"), &credentials);
            (text, b.server.clone(), b.ca_pem.clone())
        }
        // Credentials that are not this node's own (an admin's, a token): not ours to renew.
        (None, None) if existing.is_some() => return Ok(()),
        (None, None) => return Err(BootstrapError::NoCredentials(kubeconfig.display().to_string())),
    };
    let client = client_for(&asking).await?;
    let (certificate, key) = request_certificate(&client, node).await?;
    write_credentials(kubeconfig, &server, &ca_pem, node, &certificate, &key)
}

/// Asks for a new client certificate for node `node` with a CertificateSigningRequest
/// made with `client`, and waits until it is issued; returns the certificate and its
/// private key (PEM).
pub async fn request_certificate(client: &kube::Client, node: &str) -> Result<(String, String), BootstrapError> {
    let user = format!("system:node:{node}");
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user.as_str());
    params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let name = format!("node-csr-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(request.into_bytes()),
            signer_name: "kubernetes.io/kube-apiserver-client-kubelet".into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    api.create(&PostParams::default(), &csr).await?;
    tracing::info!(csr = %name, node, "asked for the node's client certificate");
    let started = Instant::now();
    loop {
        let current = api.get(&name).await?;
        let status = current.status.unwrap_or_default();
        if let Some(decided) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| matches!(c.type_.as_str(), "Denied" | "Failed") && c.status != "False")
        {
            return Err(BootstrapError::Refused {
                name,
                outcome: decided.type_.to_lowercase(),
                message: decided.message.clone().unwrap_or_default(),
            });
        }
        if let Some(certificate) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok((String::from_utf8_lossy(&certificate.0).into_owned(), key.serialize_pem()));
        }
        if started.elapsed() > ISSUE_TIMEOUT {
            return Err(BootstrapError::Timeout(name, ISSUE_TIMEOUT));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Writes node `node`'s kubeconfig at `path` with its certificate and key embedded.
pub fn write_credentials(
    path: &Path,
    server: &str,
    ca_pem: &str,
    node: &str,
    certificate: &str,
    key: &str,
) -> Result<(), BootstrapError> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let credentials = format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64(certificate), b64(key));
    write_private(path, &render_kubeconfig(server, ca_pem, &format!("system:node:{node}"), &credentials))?;
    tracing::info!(node, path = %path.display(), "wrote the node's credentials");
    Ok(())
}

/// Writes `text` to `path` readable by its owner only, replacing it atomically.
fn write_private(path: &Path, text: &str) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| BootstrapError::Write { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}
