//! The agent's HTTPS endpoint for container logs, which the API server proxies
//! `pods/log` to: `GET /containerLogs/NS/POD/CONTAINER?follow=&tailLines=&sinceSeconds=
//! &sinceTime=&previous=&timestamps=&limitBytes=`; and for `pods/exec` and
//! `pods/attach` (`/exec/NS/POD/CONTAINER?command=...`, `/attach/...`) and
//! `pods/portforward` (`/portforward/NS/POD`): see [`super::stream`].
//!
//! Only the API server may ask: a client certificate signed by the cluster CA with the
//! common name [`APISERVER_CLIENT_CN`] is required. The serving certificate is
//! self-signed (the API server does not verify it, as kube-apiserver does not verify
//! kubelets by default).

use super::kubelet::PodDirectory;
use super::runtime::logs::{self, LogOptions};
use super::runtime::{ContainerState, Runtime};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

/// The common name of the API server's client certificate for node agents.
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

pub(super) type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum LogServerError {
    #[error("log server TLS: {0}")]
    Tls(String),
    #[error("log server listening on port {port}: {source}")]
    Listen { port: u16, source: std::io::Error },
}

fn tls_config(node_name: &str, host_ip: &str, cluster_ca: &[Vec<u8>]) -> Result<rustls::ServerConfig, LogServerError> {
    let tls = |e: &dyn std::fmt::Display| LogServerError::Tls(e.to_string());
    let mut names = vec![node_name.to_owned(), "localhost".to_owned()];
    names.push(host_ip.to_owned());
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| tls(&e))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let mut roots = rustls::RootCertStore::empty();
    for ca in cluster_ca {
        roots.add(ca.clone().into()).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls(&e))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|e| tls(&e))
}

/// Whether the peer's (already CA-verified) certificate is the API server's.
fn is_apiserver(certificates: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> bool {
    let Some(first) = certificates.and_then(|c| c.first()) else { return false };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(first) else { return false };
    let cn = parsed.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
    cn == Some(APISERVER_CLIENT_CN)
}

/// Binds the port (0: any free one); returns the port and a future that serves until
/// dropped.
pub async fn bind<R: Runtime>(
    port: u16,
    node_name: &str,
    host_ip: &str,
    cluster_ca: &[Vec<u8>],
    runtime: Arc<R>,
    pods: PodDirectory,
) -> Result<(u16, impl std::future::Future<Output = ()>), LogServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(node_name, host_ip, cluster_ca)?));
    let listener =
        TcpListener::bind(("0.0.0.0", port)).await.map_err(|source| LogServerError::Listen { port, source })?;
    let port = listener.local_addr().map_err(|source| LogServerError::Listen { port, source })?.port();
    Ok((port, async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let (acceptor, runtime, pods) = (acceptor.clone(), Arc::clone(&runtime), Arc::clone(&pods));
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(socket).await else { return };
                let allowed = is_apiserver(stream.get_ref().1.peer_certificates());
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (runtime, pods) = (Arc::clone(&runtime), Arc::clone(&pods));
                    async move {
                        if !allowed {
                            return Ok::<_, Infallible>(text(
                                StatusCode::FORBIDDEN,
                                "only the API server may use this endpoint",
                            ));
                        }
                        let path = request.uri().path();
                        if ["/exec/", "/attach/", "/portforward/"].iter().any(|p| path.starts_with(p)) {
                            return Ok(super::stream::serve::serve(runtime, &pods, request).await);
                        }
                        Ok(container_logs(runtime, &pods, &request).await)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await;
            });
        }
    }))
}

/// A plain-text answer, sent as given (the API server trims error messages it relays).
pub(super) fn text(status: StatusCode, message: &str) -> Response<Body> {
    let body = http_body_util::Full::new(Bytes::from(message.to_owned())).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// The query of a logs request.
struct LogQuery {
    options: LogOptions,
    follow: bool,
    previous: bool,
}

fn parse_query(query: &str) -> Result<LogQuery, String> {
    let mut parsed = LogQuery { options: LogOptions::default(), follow: false, previous: false };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let number = |what: &str| value.parse::<i64>().map_err(|_| format!("{what} must be an integer, not {value:?}"));
        match key.as_ref() {
            "follow" => parsed.follow = value == "true" || value == "1",
            "previous" => parsed.previous = value == "true" || value == "1",
            "timestamps" => parsed.options.timestamps = value == "true" || value == "1",
            "tailLines" => parsed.options.tail_lines = Some(number("tailLines")?.max(0) as usize),
            "limitBytes" => parsed.options.limit_bytes = Some(number("limitBytes")?.max(1) as usize),
            "sinceSeconds" => {
                let seconds = number("sinceSeconds")?.max(0) as u64;
                parsed.options.since = SystemTime::now().checked_sub(Duration::from_secs(seconds));
            }
            "sinceTime" => {
                let at: jiff::Timestamp = value.parse().map_err(|e| format!("sinceTime {value:?}: {e}"))?;
                let nanos = u64::try_from(at.as_nanosecond()).unwrap_or(0);
                parsed.options.since = Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos));
            }
            _ => {}
        }
    }
    Ok(parsed)
}

async fn container_logs<R: Runtime>(
    runtime: Arc<R>,
    pods: &PodDirectory,
    request: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = request.uri().path();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, container] = parts[..] else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let query = match parse_query(request.uri().query().unwrap_or("")) {
        Ok(query) => query,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    let Some(uid) = pods.read().get(&(namespace.to_owned(), pod.to_owned())).cloned() else {
        return text(StatusCode::NOT_FOUND, &format!("pod {namespace}/{pod} is not on this node"));
    };
    let mut runs: Vec<_> = match runtime.list().await {
        Ok(records) => records.into_iter().filter(|r| r.pod_uid == uid && r.name == container).collect(),
        Err(error) => return text(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    };
    runs.sort_by_key(|r| r.attempt);
    let chosen = if query.previous { runs.iter().rev().nth(1) } else { runs.last() };
    let Some(run) = chosen.cloned() else {
        let message = if query.previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found\n")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating\n")
        };
        return text(StatusCode::BAD_REQUEST, &message);
    };
    let path = runtime.log_path(&uid, container, run.attempt);
    let contents = tokio::fs::read(&path).await.unwrap_or_default();
    let whole = String::from_utf8_lossy(&contents).into_owned();
    let first = logs::render(&whole, &query.options);
    let follow = query.follow && !query.previous && matches!(run.state, ContainerState::Running { .. });
    if !follow {
        return text(StatusCode::OK, &first);
    }
    // Following: what is there now, then each new complete line until the container
    // ends (or the client goes away and the channel closes).
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let _ = sender.try_send(Ok(Frame::data(Bytes::from(first))));
    let offset = whole.rfind('\n').map_or(0, |i| i + 1);
    tokio::spawn(follow_log(runtime, run.id, path, offset, query.options.timestamps, sender));
    let stream = futures::stream::unfold(receiver, |mut r| async move { r.recv().await.map(|item| (item, r)) });
    Response::new(StreamBody::new(stream).boxed())
}

/// Sends each new complete line of the log at `path` (from byte `offset`) until the
/// container is no longer running and its last lines are out.
async fn follow_log<R: Runtime>(
    runtime: Arc<R>,
    id: String,
    path: std::path::PathBuf,
    offset: usize,
    timestamps: bool,
    sender: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) {
    let options = LogOptions { timestamps, ..LogOptions::default() };
    let (lines, mut batches) = tokio::sync::mpsc::channel(4);
    let running = move || {
        let (runtime, id) = (Arc::clone(&runtime), id.clone());
        async move { matches!(runtime.state(&id).await, Ok(ContainerState::Running { .. })) }
    };
    let follower = tokio::spawn(logs::follow(path, offset, running, lines));
    while let Some(batch) = batches.recv().await {
        if sender.send(Ok(Frame::data(Bytes::from(logs::render(&batch, &options))))).await.is_err() {
            break;
        }
    }
    follower.abort();
}
