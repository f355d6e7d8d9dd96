//! `kubectl exec` on the agent: `GET /exec/NS/POD/CONTAINER?command=...&stdout=&stderr=`
//! upgraded to a WebSocket that speaks Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, or `v4`), which the API server relays byte for byte.
//!
//! Every binary message starts with its channel: 1 is stdout, 2 stderr, 3 the final
//! `Status` (JSON); a close frame ends the session. The command runs to completion
//! through the runtime (CRI `ExecSync`, or a host process for the process runtime) and
//! its output is sent when it ends, so `kubectl exec POD -- CMD` prints what `CMD`
//! printed and exits with its code. Interactive sessions (`stdin`, `tty`) need the
//! runtime's streaming exec and are refused with 400 before the upgrade.

use super::kubelet::PodDirectory;
use super::logserver::{text, Body};
use super::runtime::{ContainerState, ExecResult, Runtime};
use bytes::Bytes;
use futures::SinkExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

/// The channel protocols served, best first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// How long one command may run (the kubelet's default streaming idle timeout).
const COMMAND_LIMIT: Duration = Duration::from_secs(4 * 3600);

const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;

/// What the query asks to run.
#[derive(Debug, PartialEq, Eq)]
pub struct ExecQuery {
    pub command: Vec<String>,
    pub stdout: bool,
    pub stderr: bool,
}

pub fn parse_query(query: &str) -> Result<ExecQuery, String> {
    let mut parsed = ExecQuery { command: Vec::new(), stdout: false, stderr: false };
    let flag = |value: &str| value == "true" || value == "1";
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "command" => parsed.command.push(value.into_owned()),
            "stdout" => parsed.stdout = flag(&value),
            "stderr" => parsed.stderr = flag(&value),
            "stdin" | "tty" if flag(&value) => {
                return Err(format!(
                    "{key}=true: interactive exec is not supported by this node agent; run a command without -i/-t"
                ))
            }
            _ => {}
        }
    }
    if parsed.command.is_empty() {
        return Err("you must specify at least 1 command".into());
    }
    Ok(parsed)
}

/// The final message on the status channel, as the kubelet writes it.
pub fn status_message(command: &[String], result: &ExecResult) -> serde_json::Value {
    match result {
        ExecResult::Exited { code: 0, .. } => serde_json::json!({"metadata": {}, "status": "Success"}),
        ExecResult::Exited { code, .. } => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        ExecResult::TimedOut => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command {command:?} timed out after {COMMAND_LIMIT:?}"),
            "reason": "InternalError",
        }),
    }
}

fn header<'a>(request: &'a Request<hyper::body::Incoming>, name: &str) -> &'a str {
    request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Serves one exec request: checks it, answers `101 Switching Protocols`, then runs the
/// command and streams its result over the WebSocket.
pub async fn serve<R: Runtime>(
    runtime: Arc<R>,
    pods: &PodDirectory,
    mut request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let parts: Vec<&str> = request.uri().path().trim_start_matches('/').split('/').collect();
    let ["exec", namespace, pod, container] = parts[..] else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let (namespace, pod, container) = (namespace.to_owned(), pod.to_owned(), container.to_owned());
    let query = match parse_query(request.uri().query().unwrap_or("")) {
        Ok(query) => query,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    if !header(&request, "upgrade").eq_ignore_ascii_case("websocket") {
        return text(StatusCode::BAD_REQUEST, "exec needs a WebSocket upgrade (v5.channel.k8s.io)");
    }
    let offered: Vec<&str> = header(&request, "sec-websocket-protocol").split(',').map(str::trim).collect();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("no supported WebSocket protocol offered; use one of {PROTOCOLS:?}"),
        );
    };
    let key = header(&request, "sec-websocket-key").as_bytes().to_vec();
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
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let result = runtime.exec(&record.id, &query.command, COMMAND_LIMIT).await;
        let _ = send_result(&mut socket, &query, &result).await;
        // A normal closure (1000) is the end of every stream to the client; a close
        // without a code reads as an error.
        let _ = socket.close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let mut response = Response::new(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

async fn send_result<S>(
    socket: &mut WebSocketStream<S>,
    query: &ExecQuery,
    result: &ExecResult,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let ExecResult::Exited { stdout, stderr, .. } = result {
        for (wanted, channel, data) in [(query.stdout, STDOUT, stdout), (query.stderr, STDERR, stderr)] {
            if wanted && !data.is_empty() {
                socket.send(Message::Binary(framed(channel, data))).await?;
            }
        }
    }
    let status = serde_json::to_vec(&status_message(&query.command, result)).unwrap_or_default();
    socket.send(Message::Binary(framed(STATUS, &status))).await
}

fn framed(channel: u8, data: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    Bytes::from(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_statuses() {
        let query = parse_query("command=sh&command=-c&command=exit+3&stdout=true&stderr=true").unwrap();
        assert_eq!(query.command, ["sh", "-c", "exit 3"]);
        assert!(query.stdout && query.stderr);
        assert!(parse_query("command=sh&stdin=true").unwrap_err().contains("interactive"));
        assert!(parse_query("stdout=true").is_err());

        let failed = ExecResult::Exited { code: 3, stdout: Vec::new(), stderr: Vec::new() };
        let status = status_message(&query.command, &failed);
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let ok = ExecResult::Exited { code: 0, stdout: b"hi".to_vec(), stderr: Vec::new() };
        assert_eq!(status_message(&query.command, &ok)["status"], "Success");
        assert_eq!(&framed(STDOUT, b"hi")[..], b"\x01hi");
    }
}
