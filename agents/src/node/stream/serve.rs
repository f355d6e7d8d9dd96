//! The agent's streaming endpoints, which the API server relays `pods/exec`,
//! `pods/attach` and `pods/portforward` to:
//! `/exec/NS/POD/CONTAINER?command=...&stdin=&stdout=&stderr=&tty=` and
//! `/attach/NS/POD/CONTAINER?...`, upgraded to a WebSocket ([`super::websocket`]) or
//! to SPDY ([`super::remote_spdy`]); `/portforward/NS/POD`, upgraded to SPDY or to a
//! WebSocket tunnelling SPDY ([`super::portforward`]).
//!
//! Everything that can be refused is refused before the upgrade, with a plain-text
//! error the API server turns into a `Status`: an unknown pod, a container that is not
//! running, a session with no channels, a protocol neither side speaks.

use super::{portforward, remote_spdy, session, websocket, Options};
use crate::node::kubelet::PodDirectory;
use crate::node::logserver::{text, Body};
use crate::node::runtime::{ContainerState, Runtime};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
}

enum Transport {
    WebSocket { protocol: &'static str, key: Vec<u8> },
    Spdy,
}

impl Transport {
    /// The `101 Switching Protocols` answer for this transport, with `spdy_protocol`
    /// as the stream protocol of a SPDY upgrade.
    fn switching(&self, spdy_protocol: &'static str) -> Response<Body> {
        let mut response = Response::new(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
        match self {
            Transport::WebSocket { protocol, key } => {
                headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
                let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
                if let Ok(accept) = HeaderValue::from_str(&accept) {
                    headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
                }
            }
            Transport::Spdy => {
                headers.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
                headers.insert("x-stream-protocol-version", HeaderValue::from_static(spdy_protocol));
            }
        }
        response
    }
}

fn header<'a>(request: &'a Request<hyper::body::Incoming>, name: &str) -> &'a str {
    request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The transport the client asks for: a WebSocket with one of `websocket_protocols`
/// (best first), or SPDY offering `spdy_protocol` in `X-Stream-Protocol-Version`.
fn transport(
    request: &Request<hyper::body::Incoming>,
    websocket_protocols: &[&'static str],
    spdy_protocol: &str,
) -> Result<Transport, String> {
    let upgrade = header(request, "upgrade");
    if upgrade.eq_ignore_ascii_case("websocket") {
        let offered: Vec<&str> = header(request, "sec-websocket-protocol").split(',').map(str::trim).collect();
        let protocol =
            websocket_protocols.iter().copied().find(|p| offered.contains(p)).ok_or_else(|| {
                format!("no supported WebSocket protocol offered; use one of {websocket_protocols:?}")
            })?;
        return Ok(Transport::WebSocket { protocol, key: header(request, "sec-websocket-key").as_bytes().to_vec() });
    }
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        // Clients send one header per protocol, or one comma-separated list.
        let mut offered = request.headers().get_all("x-stream-protocol-version").iter();
        if !offered.any(|v| v.to_str().unwrap_or("").split(',').any(|p| p.trim() == spdy_protocol)) {
            return Err(format!("unable to upgrade connection: the client does not offer {spdy_protocol}"));
        }
        return Ok(Transport::Spdy);
    }
    Err("unable to upgrade connection: the request must upgrade to a WebSocket or SPDY/3.1".into())
}

/// Serves one exec or attach request: checks it, answers `101 Switching Protocols`,
/// then runs the session on the upgraded connection.
pub async fn serve<R: Runtime>(
    runtime: Arc<R>,
    pods: &PodDirectory,
    mut request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let parts: Vec<&str> = request.uri().path().trim_start_matches('/').split('/').collect();
    if let ["portforward", namespace, pod] = parts[..] {
        let pod = (namespace.to_owned(), pod.to_owned());
        return port_forward(runtime, pods, pod, request);
    }
    let (kind, namespace, pod, container) = match parts[..] {
        ["exec", namespace, pod, container] => (Kind::Exec, namespace, pod, container),
        ["attach", namespace, pod, container] => (Kind::Attach, namespace, pod, container),
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    };
    let (namespace, pod, container) = (namespace.to_owned(), pod.to_owned(), container.to_owned());
    let options = Options::parse(request.uri().query().unwrap_or(""));
    if kind == Kind::Exec && options.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 command");
    }
    if let Err(message) = options.validate() {
        return text(StatusCode::BAD_REQUEST, &message);
    }
    let transport = match transport(&request, websocket::PROTOCOLS, remote_spdy::PROTOCOL) {
        Ok(transport) => transport,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    let Some(uid) = pods.read().get(&(namespace.clone(), pod.clone())).cloned() else {
        return text(StatusCode::NOT_FOUND, &format!("pod {namespace}/{pod} is not on this node"));
    };
    let records = match runtime.list().await {
        Ok(records) => records,
        Err(error) => return text(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    };
    let running = records
        .into_iter()
        .filter(|r| r.pod_uid == uid && r.name == container)
        .max_by_key(|r| r.attempt)
        .filter(|r| matches!(r.state, ContainerState::Running { .. }));
    let Some(record) = running else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("unable to upgrade connection: container not found (\"{container}\")"),
        );
    };
    let (client, session) = session(&options);
    let (id, command) = (record.id, options.command.clone());
    let run = async move {
        match kind {
            Kind::Exec => runtime.exec_stream(&id, &command, session).await,
            Kind::Attach => runtime.attach(&id, session).await,
        }
    };
    let response = transport.switching(remote_spdy::PROTOCOL);
    once_upgraded(&mut request, move |io| async move {
        match transport {
            Transport::WebSocket { protocol, .. } => websocket::serve(io, protocol, client, run).await,
            Transport::Spdy => remote_spdy::serve(io, &options, client, run).await,
        }
    });
    response
}

/// Runs `session` on the connection once the client has switched protocols (after
/// the `101` answer has gone out).
fn once_upgraded<F, Fut>(request: &mut Request<hyper::body::Incoming>, session: F)
where
    F: FnOnce(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            session(hyper_util::rt::TokioIo::new(upgraded)).await;
        }
    });
}

/// `/portforward/NS/POD`: every forwarded connection goes to the runtime, which joins
/// it to the port in the pod's network.
fn port_forward<R: Runtime>(
    runtime: Arc<R>,
    pods: &PodDirectory,
    (namespace, pod): (String, String),
    mut request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let transport = match transport(&request, &[portforward::TUNNEL_PROTOCOL], portforward::PROTOCOL) {
        Ok(transport) => transport,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    let Some(uid) = pods.read().get(&(namespace.clone(), pod.clone())).cloned() else {
        return text(StatusCode::NOT_FOUND, &format!("pod {namespace}/{pod} is not on this node"));
    };
    let connect = move |port: u16, pipe: portforward::Pipe| {
        let (runtime, uid, pod) = (Arc::clone(&runtime), uid.clone(), pod.clone());
        async move {
            // kube's wording, which kubectl prints as it is.
            runtime
                .port_forward(&uid, port, pipe)
                .await
                .map_err(|e| format!("error forwarding port {port} to pod {pod}, uid {uid}: {e}"))
        }
    };
    let response = transport.switching(portforward::PROTOCOL);
    once_upgraded(&mut request, move |io| async move {
        match transport {
            Transport::WebSocket { .. } => portforward::serve(portforward::untunnel(io), connect).await,
            Transport::Spdy => portforward::serve(io, connect).await,
        }
    });
    response
}
