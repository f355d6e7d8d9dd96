//! The agent's streaming endpoints, which the API server relays `pods/exec` and
//! `pods/attach` to: `/exec/NS/POD/CONTAINER?command=...&stdin=&stdout=&stderr=&tty=`
//! and `/attach/NS/POD/CONTAINER?...`, upgraded to a WebSocket
//! ([`super::websocket`]) or to SPDY ([`super::remote_spdy`]).
//!
//! Everything that can be refused is refused before the upgrade, with a plain-text
//! error the API server turns into a `Status`: an unknown pod, a container that is not
//! running, a session with no channels, a protocol neither side speaks.

use super::{remote_spdy, session, websocket, Options};
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

fn header<'a>(request: &'a Request<hyper::body::Incoming>, name: &str) -> &'a str {
    request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn transport(request: &Request<hyper::body::Incoming>) -> Result<Transport, String> {
    let upgrade = header(request, "upgrade");
    if upgrade.eq_ignore_ascii_case("websocket") {
        let offered = header(request, "sec-websocket-protocol");
        let protocol = websocket::negotiate(offered)
            .ok_or_else(|| format!("no supported WebSocket protocol offered; use one of {:?}", websocket::PROTOCOLS))?;
        return Ok(Transport::WebSocket { protocol, key: header(request, "sec-websocket-key").as_bytes().to_vec() });
    }
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        let offered = request.headers().get_all("x-stream-protocol-version").iter().filter_map(|v| v.to_str().ok());
        if !remote_spdy::negotiate(offered) {
            return Err(format!("no supported stream protocol offered; use {}", remote_spdy::PROTOCOL));
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
    let transport = match transport(&request) {
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
    let upgrade = hyper::upgrade::on(&mut request);
    let mut response = Response::new(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match transport {
        Transport::WebSocket { protocol, key } => {
            headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
            if let Ok(accept) = HeaderValue::from_str(&accept) {
                headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
            }
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                websocket::serve(hyper_util::rt::TokioIo::new(upgraded), protocol, client, run).await;
            });
        }
        Transport::Spdy => {
            headers.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            headers.insert("x-stream-protocol-version", HeaderValue::from_static(remote_spdy::PROTOCOL));
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                remote_spdy::serve(hyper_util::rt::TokioIo::new(upgraded), &options, client, run).await;
            });
        }
    }
    response
}
