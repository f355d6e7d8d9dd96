//! The API server's client for node agents, and `pods/log` proxied through it.
//!
//! The server presents its own client certificate (CN `kube-apiserver-kubelet-client`,
//! signed by the cluster CA), which is what agents accept. Like kube-apiserver without
//! `--kubelet-certificate-authority`, it does not verify the agent's serving
//! certificate: agents sign their own.

use crate::reply::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use keelson_engine::{ApiError, StatusReason};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// The common name node agents expect on the API server's client certificate.
pub const CLIENT_CN: &str = "kube-apiserver-kubelet-client";
/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub struct KubeletClient {
    connector: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<KubeletClient, String> {
        let certs: Vec<_> =
            rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| e.to_string())?
            .ok_or("no private key for the kubelet client")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
            .with_client_auth_cert(certs, key)
            .map_err(|e| e.to_string())?;
        Ok(KubeletClient { connector: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }

    /// `GET path_and_query` on the agent at `host:port`; the answer streams through.
    pub async fn get(&self, host: &str, port: u16, path_and_query: &str) -> Result<Response<Body>, ApiError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            ApiError::new(StatusReason::ServiceUnavailable, format!("node agent {host}:{port}: {e}"))
        };
        let connect = tokio::net::TcpStream::connect((host, port));
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => return Err(unreachable(&error)),
            Err(_) => return Err(unreachable(&"timed out connecting")),
        };
        let name = ServerName::try_from(host.to_owned()).map_err(|e| unreachable(&e))?;
        let tls = self.connector.connect(name, tcp).await.map_err(|e| unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(connection);
        let request = Request::get(path_and_query)
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(ApiError::internal)?;
        let response = sender.send_request(request).await.map_err(|e| unreachable(&e))?;
        let (parts, body) = response.into_parts();
        let body = body.map_err(std::io::Error::other).boxed();
        Ok(Response::from_parts(parts, body))
    }
}

/// The agent's answer as the API's: success streams through as text; an error becomes
/// a Status with the agent's message.
pub async fn relay(response: Response<Body>) -> Result<Response<Body>, ApiError> {
    if response.status() == StatusCode::OK {
        let (mut parts, body) = response.into_parts();
        parts.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        return Ok(Response::from_parts(parts, body));
    }
    let status = response.status();
    let collected = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
    let text = match collected {
        Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).trim().to_owned(),
        _ => status.to_string(),
    };
    let reason = match status {
        StatusCode::NOT_FOUND => StatusReason::NotFound,
        StatusCode::BAD_REQUEST => StatusReason::BadRequest,
        StatusCode::FORBIDDEN => StatusReason::Forbidden,
        _ => StatusReason::InternalError,
    };
    Err(ApiError::new(reason, text))
}
