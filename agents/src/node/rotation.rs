//! A node's client certificate, renewed while its agent runs, as the kubelet's
//! certificate manager does (`rotateCertificates`): at a random point between 70%
//! and 90% of the certificate's lifetime the agent asks for a new one with a
//! CertificateSigningRequest (authenticated by the current one), writes it to its
//! kubeconfig, presents it on every new connection, and closes the connections made
//! with the old one, since the server stops accepting a certificate on any
//! connection once it has expired.
//!
//! The client's TLS identity is a [`RotatingIdentity`] (a rustls client certificate
//! resolver read at each handshake); its connections are tracked by file descriptor
//! so that a rotation can shut them down (hyper then reconnects, with the new
//! certificate, on the next request; watches are restarted by their owners).

use super::bootstrap::{embedded_field, request_certificate, server_and_ca, validity, write_credentials};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::client::ConfigExt;
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// How long after a failed renewal the agent asks again.
const RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("reading {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("the client certificate or key: {0}")]
    Credentials(String),
    #[error("building the client: {0}")]
    Client(#[from] kube::Error),
}

/// The client certificate the agent presents, replaced on rotation, and the
/// connections made with the current one.
pub struct RotatingIdentity {
    current: RwLock<Arc<CertifiedKey>>,
    connections: Mutex<HashMap<u64, RawFd>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for RotatingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingIdentity").field("connections", &self.connections.lock().len()).finish()
    }
}

/// A certificate chain and its key (PEM), ready for rustls.
fn certified_key(certificate: &str, key: &str) -> Result<Arc<CertifiedKey>, RotationError> {
    let invalid = |e: &dyn std::fmt::Display| RotationError::Credentials(e.to_string());
    let chain = CertificateDer::pem_slice_iter(certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    if chain.is_empty() {
        return Err(RotationError::Credentials("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| invalid(&e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| invalid(&e))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

impl RotatingIdentity {
    pub fn new(certificate: &str, key: &str) -> Result<RotatingIdentity, RotationError> {
        Ok(RotatingIdentity {
            current: RwLock::new(certified_key(certificate, key)?),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Presents `certificate` from now on and closes the connections made before.
    pub fn install(&self, certificate: &str, key: &str) -> Result<(), RotationError> {
        *self.current.write() = certified_key(certificate, key)?;
        let connections = self.connections.lock();
        for fd in connections.values() {
            // The descriptor is still open: a connection leaves the table (under this
            // lock) before its socket is closed. Shutting it down wakes its reader.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
        tracing::info!(closed = connections.len(), "closed the connections made with the previous certificate");
        Ok(())
    }

    /// How many connections are open (for tests).
    pub fn open_connections(&self) -> usize {
        self.connections.lock().len()
    }
}

impl rustls::client::ResolvesClientCert for RotatingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Connects over TCP as hyper's connector does, and records each connection.
#[derive(Clone)]
struct TrackedConnector {
    inner: HttpConnector,
    identity: Arc<RotatingIdentity>,
}

impl tower::Service<http::Uri> for TrackedConnector {
    type Response = Tracked;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Tracked, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let identity = Arc::clone(&self.identity);
        Box::pin(async move {
            let io = connecting.await?;
            let id = identity.next_id.fetch_add(1, Ordering::Relaxed);
            identity.connections.lock().insert(id, io.inner().as_raw_fd());
            Ok(Tracked { io, id, identity })
        })
    }
}

/// A TCP connection in the identity's table while it is open.
struct Tracked {
    io: TokioIo<TcpStream>,
    id: u64,
    identity: Arc<RotatingIdentity>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Runs before `io` (and so the descriptor) is dropped.
        self.identity.connections.lock().remove(&self.id);
    }
}

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// The client certificate and key (PEM) a kubeconfig embeds.
fn embedded_credentials(text: &str) -> Option<(String, String)> {
    Some((embedded_field(text, "client-certificate-data")?, embedded_field(text, "client-key-data")?))
}

/// A client for the agent of `node`. When `kubeconfig` holds the node's own
/// certificate (TLS bootstrap wrote it), the client rotates it: a task renews it
/// before it expires for as long as the runtime runs. Other credentials (an
/// admin's, a shared fleet identity) give a plain client.
pub async fn node_client(kubeconfig: &Path, node: Option<&str>) -> Result<kube::Client, RotationError> {
    let failed = |message: String| RotationError::Kubeconfig { path: kubeconfig.display().to_string(), message };
    let text = std::fs::read_to_string(kubeconfig).map_err(|e| failed(e.to_string()))?;
    let parsed = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| failed(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let own = node.filter(|node| validity(&text, &format!("system:node:{node}")).is_some());
    let (Some(node), Some((certificate, key))) = (own, embedded_credentials(&text)) else {
        return Ok(kube::Client::try_from(config)?);
    };
    let identity = Arc::new(RotatingIdentity::new(&certificate, &key)?);
    let client = rotating_client(&config, &identity)?;
    tokio::spawn(keep_renewed(client.clone(), Arc::clone(&identity), kubeconfig.to_path_buf(), node.to_string()));
    Ok(client)
}

/// A client for `config`'s cluster that presents `identity`'s current certificate.
pub fn rotating_client(config: &kube::Config, identity: &Arc<RotatingIdentity>) -> Result<kube::Client, RotationError> {
    let mut tls = config.rustls_client_config()?;
    tls.client_auth_cert_resolver = Arc::clone(identity) as Arc<dyn rustls::client::ResolvesClientCert>;
    // A resumed TLS session carries the certificate of the handshake it resumes: every
    // connection makes a full handshake, so a new one presents the current certificate.
    tls.resumption = rustls::client::Resumption::disabled();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let tracked = TrackedConnector { inner: http, identity: Arc::clone(identity) };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tracked);
    let transport = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(|e: hyper_util::client::legacy::Error| BoxError::from(e))
        .service(transport);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// When to renew a certificate valid from `from` to `to` (Unix seconds): at
/// `share` (0.7 to 0.9, drawn at random) of its lifetime.
fn renewal_due(from: i64, to: i64, share: f64) -> i64 {
    from + ((to - from) as f64 * share) as i64
}

/// A random share of the lifetime between 70% and 90%.
fn jittered_share() -> f64 {
    let random = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().expect("two bytes"));
    0.7 + 0.2 * f64::from(random) / f64::from(u16::MAX)
}

/// Renews node `node`'s certificate in `kubeconfig` whenever it is due, for as long
/// as the kubeconfig holds it.
async fn keep_renewed(client: kube::Client, identity: Arc<RotatingIdentity>, kubeconfig: PathBuf, node: String) {
    let user = format!("system:node:{node}");
    loop {
        let Ok(text) = std::fs::read_to_string(&kubeconfig) else { return };
        let (Some((from, to)), Some((server, ca))) = (validity(&text, &user), server_and_ca(&text)) else { return };
        let due = renewal_due(from, to, jittered_share());
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        if due > now {
            tracing::debug!(node, in_seconds = due - now, "certificate renewal scheduled");
            tokio::time::sleep(Duration::from_secs((due - now) as u64)).await;
        }
        let renewed = match request_certificate(&client, &node).await {
            Ok((certificate, key)) => write_credentials(&kubeconfig, &server, &ca, &node, &certificate, &key)
                .map_err(|e| e.to_string())
                .and_then(|()| identity.install(&certificate, &key).map_err(|e| e.to_string())),
            Err(error) => Err(error.to_string()),
        };
        match renewed {
            Ok(()) => tracing::info!(node, "rotated the node's client certificate"),
            Err(error) => {
                tracing::warn!(node, %error, "renewing the node's client certificate; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_seventy_and_ninety_percent_of_the_lifetime() {
        assert_eq!(renewal_due(1000, 2000, 0.7), 1700);
        assert_eq!(renewal_due(1000, 2000, 0.9), 1900);
        for _ in 0..100 {
            let share = jittered_share();
            assert!((0.7..=0.9).contains(&share), "{share}");
        }
    }

    #[test]
    fn credentials_are_read_from_the_kubeconfig_and_replaced_whole() {
        let issue = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
        };
        let (cert, key) = issue("first");
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "users:\n- user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&cert),
            b64(&key)
        );
        assert_eq!(embedded_credentials(&text), Some((cert.clone(), key.clone())));
        let identity = RotatingIdentity::new(&cert, &key).unwrap();
        let first = Arc::clone(&identity.current.read());
        let (cert2, key2) = issue("second");
        identity.install(&cert2, &key2).unwrap();
        assert_ne!(identity.current.read().cert, first.cert);
        assert!(matches!(identity.install("junk", &key2), Err(RotationError::Credentials(_))));
    }
}
