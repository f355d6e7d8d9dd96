//! Streaming sessions: `kubectl exec`, `attach` and `port-forward` on the agent.
//!
//! A remote command session has up to five channels: stdin from the client; stdout
//! and stderr to it; terminal resizes from it (with a TTY); and one final status. The
//! client reaches them over one of two transports, both served here:
//!
//! - [`websocket`]: kubectl 1.30+ (`v5.channel.k8s.io`, or `v4`): one WebSocket,
//!   each message tagged with its channel.
//! - [`spdy`] (via [`remote_spdy`]): kubectl 1.27–1.29 and the SPDY fallback: one SPDY
//!   stream per channel.
//!
//! The transport turns the client's side into a [`Session`], which a runtime serves
//! (a host process, or containerd's streaming server, reached over SPDY as the kubelet
//! reaches it). The two halves meet only through bounded channels, so a slow client
//! slows the command's output rather than growing a buffer.

pub mod portforward;
pub mod remote_spdy;
pub mod serve;
pub mod spdy;
pub mod websocket;

use bytes::Bytes;
use std::future::Future;
use tokio::sync::mpsc;

/// Chunks of output or input in flight between a transport and a runtime.
const CHANNEL_DEPTH: usize = 16;
/// How long a client has to open its streams after the upgrade (the kubelet's
/// stream creation timeout).
pub const STREAM_CREATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the client asked for: `?command=...&stdin=&stdout=&stderr=&tty=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Empty for `attach`.
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    pub fn parse(query: &str) -> Options {
        let mut options = Options::default();
        let flag = |value: &str| value == "true" || value == "1";
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "command" => options.command.push(value.into_owned()),
                "stdin" => options.stdin = flag(&value),
                "stdout" => options.stdout = flag(&value),
                "stderr" => options.stderr = flag(&value),
                "tty" => options.tty = flag(&value),
                _ => {}
            }
        }
        // A terminal merges stderr into stdout, as the kubelet does.
        if options.tty {
            options.stderr = false;
        }
        options
    }

    /// The kubelet's check: something must flow.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.stdin || self.stdout || self.stderr) {
            return Err("you must specify at least one of stdin, stdout, stderr".into());
        }
        Ok(())
    }
}

/// A terminal size, as clients send it on the resize channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Decodes resize messages: one or more JSON objects back to back.
pub fn parse_sizes(data: &[u8]) -> Vec<TerminalSize> {
    serde_json::Deserializer::from_slice(data).into_iter::<TerminalSize>().map_while(Result::ok).collect()
}

/// The runtime's end of a session. Dropping `stdout` and `stderr` tells the
/// transport the output is complete; `stdin` ends when the client closes it.
pub struct Session {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: mpsc::Receiver<TerminalSize>,
    pub tty: bool,
}

/// The transport's end of a session.
pub struct Client {
    pub stdin: Option<mpsc::Sender<Bytes>>,
    pub stdout: Option<mpsc::Receiver<Bytes>>,
    pub stderr: Option<mpsc::Receiver<Bytes>>,
    pub resize: mpsc::Sender<TerminalSize>,
}

/// The two ends of a session with the channels `options` asks for.
pub fn session(options: &Options) -> (Client, Session) {
    fn pipe(wanted: bool) -> (Option<mpsc::Sender<Bytes>>, Option<mpsc::Receiver<Bytes>>) {
        if !wanted {
            return (None, None);
        }
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        (Some(tx), Some(rx))
    }
    let (stdin_tx, stdin_rx) = pipe(options.stdin);
    let (stdout_tx, stdout_rx) = pipe(options.stdout);
    let (stderr_tx, stderr_rx) = pipe(options.stderr);
    let (resize_tx, resize_rx) = mpsc::channel(CHANNEL_DEPTH);
    (
        Client { stdin: stdin_tx, stdout: stdout_rx, stderr: stderr_rx, resize: resize_tx },
        Session { stdin: stdin_rx, stdout: stdout_tx, stderr: stderr_tx, resize: resize_rx, tty: options.tty },
    )
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    /// The command could not run, or the runtime failed.
    Failed(String),
}

impl Outcome {
    /// The final message on the status channel (`v4.channel.k8s.io` and later), as
    /// the kubelet writes it: kubectl exits with the code in the `ExitCode` cause.
    pub fn status(&self) -> serde_json::Value {
        match self {
            Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(message) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "code": 500,
            }),
        }
    }
}

/// Where a chunk of a session's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
    /// The final `Status` (JSON).
    Status,
}

/// A transport's way to the client, for [`relay_output`].
pub trait OutputSink {
    /// Sends one chunk; false once the client is gone.
    fn send(&mut self, output: Output, data: Bytes) -> impl Future<Output = bool> + Send;
}

/// The next chunk of a channel; never resolves for a channel not asked for.
pub(crate) async fn next_chunk(receiver: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes the client's chunks to `to` until the client ends its input, then shuts
/// `to` down: the end of the command's (or the forwarded connection's) input.
pub(crate) async fn feed(mut input: mpsc::Receiver<Bytes>, mut to: impl tokio::io::AsyncWrite + Unpin) {
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = input.recv().await {
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Starts `run` (the runtime's side of a session), relays its stdout and stderr to
/// `sink` until both are complete and the command has ended, then sends the outcome
/// as the final status. Stops early, sending nothing more, once the client is gone.
pub async fn relay_output<F, S>(
    mut stdout: Option<mpsc::Receiver<Bytes>>,
    mut stderr: Option<mpsc::Receiver<Bytes>>,
    run: F,
    sink: &mut S,
) where
    F: Future<Output = Outcome> + Send + 'static,
    S: OutputSink,
{
    let mut running = tokio::spawn(run);
    let mut outcome = None;
    while outcome.is_none() || stdout.is_some() || stderr.is_some() {
        tokio::select! {
            chunk = next_chunk(&mut stdout) => match chunk {
                Some(data) => if !sink.send(Output::Stdout, data).await { return },
                None => stdout = None,
            },
            chunk = next_chunk(&mut stderr) => match chunk {
                Some(data) => if !sink.send(Output::Stderr, data).await { return },
                None => stderr = None,
            },
            ended = &mut running, if outcome.is_none() => {
                outcome = Some(ended.unwrap_or_else(|e| Outcome::Failed(format!("session task failed: {e}"))));
            }
        }
    }
    if let Some(outcome) = outcome {
        let status = serde_json::to_vec(&outcome.status()).unwrap_or_default();
        sink.send(Output::Status, Bytes::from(status)).await;
    }
}

/// Collects a session's output until the runtime closes it; for tests and for
/// callers that want the whole result.
#[cfg(test)]
pub async fn drain(mut receiver: Option<mpsc::Receiver<Bytes>>) -> Vec<u8> {
    let mut all = Vec::new();
    if let Some(receiver) = receiver.as_mut() {
        while let Some(chunk) = receiver.recv().await {
            all.extend_from_slice(&chunk);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_statuses() {
        let options = Options::parse("command=sh&command=-c&command=exit+3&stdin=true&stdout=true&stderr=true");
        assert_eq!(options.command, ["sh", "-c", "exit 3"]);
        assert!(options.stdin && options.stdout && options.stderr && !options.tty);
        let tty = Options::parse("command=sh&stdin=1&stdout=1&stderr=1&tty=1");
        assert!(tty.tty && !tty.stderr, "a terminal has no separate stderr");
        assert!(Options::parse("command=ls").validate().is_err());

        let failed = Outcome::Exited(3).status();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(Outcome::Exited(0).status()["status"], "Success");
        assert_eq!(Outcome::Failed("boom".into()).status()["message"], "boom");
    }

    #[test]
    fn resize_messages_may_hold_several_sizes() {
        let sizes = parse_sizes(br#"{"Width":80,"Height":24}{"Width":120,"Height":40}"#);
        assert_eq!(sizes, [TerminalSize { width: 80, height: 24 }, TerminalSize { width: 120, height: 40 }]);
        assert!(parse_sizes(b"garbage").is_empty());
    }
}
