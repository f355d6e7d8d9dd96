//! The API server's client for node agents, and the pod subresources proxied through
//! it: `pods/log` (a plain GET relayed as text), and `pods/exec`, `pods/attach` and
//! `pods/portforward` (a WebSocket or SPDY upgrade relayed byte for byte, as kube-apiserver's upgrade-aware
//! proxy does; the agent speaks the stream protocols).
//!
//! The server presents its own client certificate (CN `kube-apiserver-kubelet-client`,
//! signed by the cluster CA), which is what agents accept. Like kube-apiserver without
//! `--kubelet-certificate-authority`, it does not verify the agent's serving
//! certificate: agents sign their own.

use crate::object;
use crate::reply::Body;
use crate::rest::Call;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use keelson_engine::{ApiError, StatusReason};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
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

    /// `GET path_and_query` on the agent at `host:port`, with `headers`; the answer
    /// streams through. The connection allows an upgrade (`hyper::upgrade::on` on the
    /// response).
    pub async fn get(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
        headers: HeaderMap,
    ) -> Result<Response<hyper::body::Incoming>, ApiError> {
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
        tokio::spawn(connection.with_upgrades());
        let mut request = Request::get(path_and_query)
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(ApiError::internal)?;
        request.headers_mut().extend(headers);
        sender.send_request(request).await.map_err(|e| unreachable(&e))
    }
}

/// Where a pod's container runs: the container's name and its node agent's endpoint.
struct AgentTarget {
    namespace: String,
    pod: String,
    container: String,
    host: String,
    port: u16,
}

/// Resolves the container the request names (or the pod's only one) and the agent of
/// the pod's node (its InternalIP and the port it publishes as
/// `daemonEndpoints.kubeletEndpoint`).
fn target(call: &Call<'_>, needs_container: bool) -> Result<AgentTarget, ApiError> {
    let pod = call.current_value()?;
    let name = object::name(&pod).to_string();
    let namespace = object::get_str(&pod, &["metadata", "namespace"]).unwrap_or("default").to_string();
    let containers: Vec<String> = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| object::get(&pod, &["spec", list]).and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let regular = object::get(&pod, &["spec", "containers"]).and_then(Value::as_array).map_or(0, Vec::len);
    let container = match call.query.get("container") {
        _ if !needs_container => String::new(),
        Some(wanted) if containers.iter().any(|c| c == wanted) => wanted.to_owned(),
        Some(wanted) => {
            return Err(ApiError::bad_request(format!("container {wanted} is not valid for pod {name}")));
        }
        None if regular == 1 => containers[containers.len() - 1].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let Some(node) = object::get_str(&pod, &["spec", "nodeName"]).filter(|n| !n.is_empty()).map(str::to_owned) else {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    };
    let key = keelson_store::object_key("nodes", None, &node);
    let node_object: Value = match call.state.cache.find(key.as_bytes()).map_err(ApiError::internal)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(ApiError::internal)?,
        None => return Err(ApiError::new(StatusReason::NotFound, format!("nodes \"{node}\" not found"))),
    };
    let host = object::get(&node_object, &["status", "addresses"])
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .map(str::to_owned);
    let port = object::get(&node_object, &["status", "daemonEndpoints", "kubeletEndpoint", "Port"])
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0);
    let (Some(host), Some(port)) = (host, port) else {
        return Err(ApiError::new(
            StatusReason::ServiceUnavailable,
            format!("node \"{node}\" publishes no agent endpoint"),
        ));
    };
    Ok(AgentTarget { namespace, pod: name, container, host, port })
}

/// `pods/log`, with the query kubectl sent.
pub async fn pod_log(call: &mut Call<'_>) -> Result<Response<Body>, ApiError> {
    let target = target(call, true)?;
    let query = {
        let mut forwarded = form_urlencoded::Serializer::new(String::new());
        for key in ["follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes"] {
            if let Some(value) = call.query.get(key) {
                forwarded.append_pair(key, value);
            }
        }
        forwarded.finish()
    };
    let AgentTarget { namespace, pod, container, host, port } = target;
    let path = format!("/containerLogs/{namespace}/{pod}/{container}?{query}");
    let response = call.state.kubelet.get(&host, port, &path, HeaderMap::new()).await?;
    relay(response).await
}

/// The headers of a WebSocket or SPDY handshake, which pass through the proxy both ways.
const UPGRADE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "x-stream-protocol-version",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
];

fn upgrade_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for &name in UPGRADE_HEADERS {
        for value in from.get_all(name) {
            headers.append(http::header::HeaderName::from_static(name), value.clone());
        }
    }
    headers
}

/// `pods/exec`, `pods/attach` and `pods/portforward`: the client's upgrade (a
/// WebSocket for kubectl 1.30+, SPDY/3.1 for older clients and the fallback) goes to
/// the agent, which speaks the stream protocols; once the agent switches protocols,
/// the two upgraded connections are joined.
pub async fn pod_stream<B: Send + 'static>(
    call: &Call<'_>,
    subresource: &str,
    mut request: Request<B>,
) -> Result<Response<Body>, ApiError> {
    // The agent's query: the client's, less the container (it goes in the path).
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
            if key != "container" {
                query.append_pair(&key, &value);
            }
        }
        query.finish()
    };
    if !request.headers().contains_key(http::header::UPGRADE) {
        return Err(ApiError::bad_request(format!(
            "pods/{subresource} needs a connection upgrade (WebSocket or SPDY/3.1)"
        )));
    }
    // Forwarding is to the pod's network, not to a container.
    let forwarding = subresource == "portforward";
    let AgentTarget { namespace, pod, container, host, port } = target(call, !forwarding)?;
    let path = if forwarding {
        format!("/portforward/{namespace}/{pod}?{query}")
    } else {
        format!("/{subresource}/{namespace}/{pod}/{container}?{query}")
    };
    let mut response = call.state.kubelet.get(&host, port, &path, upgrade_headers(request.headers())).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return relay(response).await;
    }
    let agent = hyper::upgrade::on(&mut response);
    let client = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let (Ok(client), Ok(agent)) = tokio::join!(client, agent) else { return };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut agent = hyper_util::rt::TokioIo::new(agent);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
    });
    let mut switching = Response::new(crate::reply::full(Bytes::new()));
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *switching.headers_mut() = upgrade_headers(response.headers());
    Ok(switching)
}

/// The agent's answer as the API's: success streams through as text; an error becomes
/// a Status with the agent's message.
pub async fn relay(response: Response<hyper::body::Incoming>) -> Result<Response<Body>, ApiError> {
    if response.status() == StatusCode::OK {
        let (mut parts, body) = response.into_parts();
        parts.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        return Ok(Response::from_parts(parts, body.map_err(std::io::Error::other).boxed()));
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
