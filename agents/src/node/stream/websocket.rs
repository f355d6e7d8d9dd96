//! The WebSocket transport of a remote command session (kubectl 1.30+).
//!
//! Every binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the
//! final `Status` (JSON), 4 terminal resizes (JSON). `v5.channel.k8s.io` adds message
//! 255 followed by a channel number: the client closed that channel (stdin at EOF).
//! `v4` has no such signal, so stdin ends only with the connection. A normal close
//! frame ends the session.

use super::{parse_sizes, relay_output, Client, Outcome, Output, OutputSink};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

/// The channel protocols served, best first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Serves a session over an upgraded connection: starts `run` (the runtime's side),
/// relays the channels both ways, and sends the outcome when the output is complete.
pub async fn serve<S, F>(io: S, protocol: &str, client: Client, run: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, stream) = socket.split();
    let Client { stdin, stdout, stderr, resize } = client;
    let closes_stdin = protocol.starts_with("v5.");
    // Input runs on its own task: a command that is blocked writing output must not
    // stop its stdin from being delivered (or the other way round).
    let input = tokio::spawn(relay_input(stream, stdin, resize, closes_stdin));
    let mut sink = Channels(sink);
    relay_output(stdout, stderr, run, &mut sink).await;
    // A normal closure (1000) ends every stream for the client; a close without a code
    // reads as an error.
    let _ = sink.0.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
    input.abort();
}

/// The client's side of the WebSocket, each output on its channel.
struct Channels<S>(futures::stream::SplitSink<WebSocketStream<S>, Message>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> OutputSink for Channels<S> {
    async fn send(&mut self, output: Output, data: Bytes) -> bool {
        let channel = match output {
            Output::Stdout => STDOUT,
            Output::Stderr => STDERR,
            Output::Status => STATUS,
        };
        self.0.send(Message::Binary(framed(channel, &data))).await.is_ok()
    }
}

async fn relay_input<S>(
    mut stream: futures::stream::SplitStream<WebSocketStream<S>>,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    resize: mpsc::Sender<super::TerminalSize>,
    closes_stdin: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        match data.first() {
            Some(&STDIN) => {
                if let Some(sender) = &stdin {
                    if sender.send(data.slice(1..)).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Some(&RESIZE) => {
                for size in parse_sizes(&data[1..]) {
                    // A resize the command has not taken yet is superseded by this one.
                    let _ = resize.try_send(size);
                }
            }
            Some(&CLOSE) if closes_stdin && data.get(1) == Some(&STDIN) => stdin = None,
            _ => {}
        }
    }
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
    use crate::node::stream::{session, Options};

    #[tokio::test]
    async fn a_session_echoes_stdin_until_the_client_closes_it() {
        let (server_io, client_io) = tokio::io::duplex(1 << 16);
        let options = Options::parse("command=cat&stdin=true&stdout=true&stderr=true");
        let (client, mut session) = session(&options);
        // The "runtime": echo stdin to stdout until it closes, then exit 3.
        let run = async move {
            let (mut stdin, stdout) = (session.stdin.take().unwrap(), session.stdout.take().unwrap());
            drop(session.stderr.take());
            while let Some(chunk) = stdin.recv().await {
                let _ = stdout.send(chunk).await;
            }
            Outcome::Exited(3)
        };
        tokio::spawn(serve(server_io, "v5.channel.k8s.io", client, run));
        let mut socket = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        socket.send(Message::Binary(framed(STDIN, b"hello"))).await.unwrap();
        socket.send(Message::Binary(Bytes::from_static(&[CLOSE, STDIN]))).await.unwrap();
        let mut seen = Vec::new();
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Binary(data) => seen.push(data),
                Message::Close(frame) => {
                    assert_eq!(frame.unwrap().code, CloseCode::Normal);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(&seen[0][..], b"\x01hello");
        assert_eq!(seen[1][0], STATUS);
        let status: serde_json::Value = serde_json::from_slice(&seen[1][1..]).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }
}
