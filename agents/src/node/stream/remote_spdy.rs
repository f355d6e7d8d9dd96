//! Remote command sessions over SPDY (`v4.channel.k8s.io`), both ways:
//!
//! - [`serve`]: the server side, for kubectl 1.27–1.29 (and newer clients' fallback).
//!   The client opens one stream per channel, named by its `streamtype` header
//!   (`error`, `stdin`, `stdout`, `stderr`, `resize`); this end accepts each, relays
//!   them, and at the end writes the `Status` on `error` and closes every stream.
//! - [`connect`]: the client side, to containerd's CRI streaming server, whose
//!   `Exec`/`Attach` answers are URLs speaking this same protocol. SPDY half-closes a
//!   stream, so stdin's end reaches the command.

use super::spdy::{self, Connection, Event, Handle, Headers, Role};
use super::{
    next_chunk, parse_sizes, relay_output, Client, Options, Outcome, Output, OutputSink, Session,
    STREAM_CREATION_TIMEOUT,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The only version spoken: every kubectl since 1.5 offers it, and containerd serves it.
pub const PROTOCOL: &str = "v4.channel.k8s.io";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Channel {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Error => "error",
            Channel::Stdin => "stdin",
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
            Channel::Resize => "resize",
        }
    }

    fn parse(name: &str) -> Option<Channel> {
        [Channel::Error, Channel::Stdin, Channel::Stdout, Channel::Stderr, Channel::Resize]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// The streams a session with these options has, in the order clients open them.
    fn expected(options: &Options) -> Vec<Channel> {
        let mut channels = vec![Channel::Error];
        let wanted = [
            (options.stdin, Channel::Stdin),
            (options.stdout, Channel::Stdout),
            (options.stderr, Channel::Stderr),
            (options.tty, Channel::Resize),
        ];
        channels.extend(wanted.into_iter().filter(|(on, _)| *on).map(|(_, c)| c));
        channels
    }
}

/// Serves a session over an upgraded SPDY connection: accepts the client's streams,
/// starts `run` once they are all open, relays, and reports the outcome.
pub async fn serve<S, F>(io: S, options: &Options, client: Client, run: F)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let (handle, mut events) = Connection::start(io, Role::Server);
    let expected = Channel::expected(options);
    let mut streams: HashMap<Channel, u32> = HashMap::new();
    let accepted = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while streams.len() < expected.len() {
            match events.recv().await {
                Some(Event::Opened { stream, headers, .. }) => {
                    let Some(channel) = spdy::header(&headers, "streamtype").and_then(Channel::parse) else {
                        let _ = handle.reset(stream, spdy::RST_PROTOCOL_ERROR).await;
                        continue;
                    };
                    if handle.reply(stream).await.is_err() {
                        return false;
                    }
                    streams.insert(channel, stream);
                }
                Some(_) => {}
                None => return false,
            }
        }
        true
    })
    .await;
    if accepted != Ok(true) {
        tracing::debug!(?streams, "spdy session: the client did not open its streams");
        handle.shutdown().await;
        return;
    }
    let Client { stdin, stdout, stderr, resize } = client;
    let input = tokio::spawn(relay_input(events, streams.clone(), stdin, resize));
    relay_output(stdout, stderr, run, &mut Streams { handle: handle.clone(), streams: &streams }).await;
    for channel in [Channel::Error, Channel::Stdout, Channel::Stderr] {
        if let Some(&stream) = streams.get(&channel) {
            let _ = handle.finish(stream).await;
        }
    }
    handle.shutdown().await;
    input.abort();
}

/// The client's side of the connection: each output on its own stream, the status on
/// `error`.
struct Streams<'a> {
    handle: Handle,
    streams: &'a HashMap<Channel, u32>,
}

impl OutputSink for Streams<'_> {
    async fn send(&mut self, output: Output, data: Bytes) -> bool {
        let channel = match output {
            Output::Stdout => Channel::Stdout,
            Output::Stderr => Channel::Stderr,
            Output::Status => Channel::Error,
        };
        match self.streams.get(&channel) {
            Some(&stream) => self.handle.data(stream, data).await.is_ok(),
            None => true,
        }
    }
}

async fn relay_input(
    mut events: mpsc::Receiver<Event>,
    streams: HashMap<Channel, u32>,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    resize: mpsc::Sender<super::TerminalSize>,
) {
    let stdin_stream = streams.get(&Channel::Stdin).copied();
    let resize_stream = streams.get(&Channel::Resize).copied();
    while let Some(event) = events.recv().await {
        match event {
            Event::Data { stream, data } if Some(stream) == stdin_stream => {
                if let Some(sender) = &stdin {
                    if sender.send(data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Event::Data { stream, data } if Some(stream) == resize_stream => {
                for size in parse_sizes(&data) {
                    let _ = resize.try_send(size);
                }
            }
            Event::Finished { stream } | Event::Reset { stream } if Some(stream) == stdin_stream => stdin = None,
            _ => {}
        }
    }
}

/// Runs a session against a streaming URL (`http://127.0.0.1:PORT/exec/TOKEN`) from
/// containerd's `Exec` or `Attach`: upgrades to SPDY, opens the session's streams,
/// and relays until the server reports the outcome.
pub async fn connect(url: &str, session: Session) -> Outcome {
    match run_client(url, session).await {
        Ok(outcome) => outcome,
        Err(message) => Outcome::Failed(message),
    }
}

/// Opens a SPDY connection to a streaming URL (`http://HOST:PORT/PATH`): the upgrade
/// request, with `protocol` as the stream protocol, then the connection's two ends.
pub async fn upgrade(url: &str, protocol: &str) -> Result<(Handle, mpsc::Receiver<Event>), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("unsupported streaming URL {url:?}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let socket = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to the runtime's streaming server {authority}: {e}"))?;
    let mut io = tokio::io::BufReader::new(socket);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    io.get_mut().write_all(request.as_bytes()).await.map_err(|e| format!("streaming request: {e}"))?;
    // The response head, line by line; what follows it is already SPDY.
    let mut status_line = String::new();
    io.read_line(&mut status_line).await.map_err(|e| format!("streaming response: {e}"))?;
    loop {
        let mut line = String::new();
        let read = io.read_line(&mut line).await.map_err(|e| format!("streaming response: {e}"))?;
        if read == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    if status_line.split_whitespace().nth(1) != Some("101") {
        return Err(format!("the runtime refused the stream: {}", status_line.trim()));
    }
    Ok(Connection::start(io, Role::Client))
}

/// Waits until the peer has accepted `count` streams this end opened.
pub async fn await_replies(events: &mut mpsc::Receiver<Event>, count: usize) -> Result<(), String> {
    let mut replies = 0;
    let replied = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while replies < count {
            match events.recv().await {
                Some(Event::Replied { .. }) => replies += 1,
                Some(_) => {}
                None => return false,
            }
        }
        true
    })
    .await;
    if replied != Ok(true) {
        return Err("the runtime's streaming server did not accept the session's streams".into());
    }
    Ok(())
}

async fn run_client(url: &str, session: Session) -> Result<Outcome, String> {
    let (handle, mut events) = upgrade(url, PROTOCOL).await?;
    let options = Options {
        command: Vec::new(),
        stdin: session.stdin.is_some(),
        stdout: session.stdout.is_some(),
        stderr: session.stderr.is_some(),
        tty: session.tty,
    };
    let mut streams: HashMap<u32, Channel> = HashMap::new();
    for channel in Channel::expected(&options) {
        let headers: Headers = vec![("streamtype".into(), channel.name().into())];
        let stream = handle.open(headers).await.map_err(|e| e.to_string())?;
        streams.insert(stream, channel);
    }
    // Data sent before the server's reply would be dropped: wait for every reply.
    if let Err(message) = await_replies(&mut events, streams.len()).await {
        handle.shutdown().await;
        return Err(message);
    }
    let id_of = |wanted: Channel| streams.iter().find(|(_, c)| **c == wanted).map(|(id, _)| *id);
    let Session { stdin, mut stdout, mut stderr, resize, .. } = session;
    let input = tokio::spawn(send_input(handle.clone(), id_of(Channel::Stdin), id_of(Channel::Resize), stdin, resize));
    let mut status = Vec::new();
    let mut error_done = false;
    while let Some(event) = events.recv().await {
        match event {
            Event::Data { stream, data } => match streams.get(&stream) {
                Some(Channel::Stdout) => forward(&mut stdout, data).await,
                Some(Channel::Stderr) => forward(&mut stderr, data).await,
                Some(Channel::Error) => status.extend_from_slice(&data),
                _ => {}
            },
            Event::Finished { stream } | Event::Reset { stream } => match streams.get(&stream) {
                Some(Channel::Stdout) => stdout = None,
                Some(Channel::Stderr) => stderr = None,
                Some(Channel::Error) => error_done = true,
                _ => {}
            },
            _ => {}
        }
        if error_done && stdout.is_none() && stderr.is_none() {
            break;
        }
    }
    input.abort();
    handle.shutdown().await;
    if !error_done {
        return Err("the runtime's streaming connection ended without a status".into());
    }
    Ok(outcome_of(&status))
}

async fn forward(output: &mut Option<mpsc::Sender<Bytes>>, data: Bytes) {
    if let Some(sender) = output {
        if sender.send(data).await.is_err() {
            *output = None;
        }
    }
}

async fn send_input(
    handle: Handle,
    stdin_stream: Option<u32>,
    resize_stream: Option<u32>,
    mut stdin: Option<mpsc::Receiver<Bytes>>,
    mut resize: mpsc::Receiver<super::TerminalSize>,
) {
    loop {
        tokio::select! {
            chunk = next_chunk(&mut stdin) => match (chunk, stdin_stream) {
                (Some(data), Some(stream)) => { let _ = handle.data(stream, data).await; }
                (None, Some(stream)) => { let _ = handle.finish(stream).await; stdin = None; }
                _ => stdin = None,
            },
            size = resize.recv() => match (size, resize_stream) {
                (Some(size), Some(stream)) => {
                    let json = serde_json::to_vec(&size).unwrap_or_default();
                    let _ = handle.data(stream, Bytes::from(json)).await;
                }
                (Some(_), None) => {}
                (None, _) => return,
            },
        }
    }
}

/// The outcome a v4 status message reports.
fn outcome_of(status: &[u8]) -> Outcome {
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(status) else {
        return Outcome::Failed(String::from_utf8_lossy(status).trim().to_owned());
    };
    if status["status"] == "Success" {
        return Outcome::Exited(0);
    }
    if status["reason"] == "NonZeroExitCode" {
        let causes = status["details"]["causes"].as_array().cloned().unwrap_or_default();
        let code = causes
            .iter()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok());
        if let Some(code) = code {
            return Outcome::Exited(code);
        }
    }
    Outcome::Failed(status["message"].as_str().unwrap_or("the command failed").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::stream::{drain, session};

    #[test]
    fn statuses_become_outcomes() {
        for outcome in [Outcome::Exited(0), Outcome::Exited(7), Outcome::Failed("no such container".into())] {
            let status = serde_json::to_vec(&outcome.status()).unwrap();
            assert_eq!(outcome_of(&status), outcome);
        }
    }

    /// Both ends of this module against each other: what kubectl does to the agent,
    /// and what the agent does to containerd.
    #[tokio::test]
    async fn a_client_session_runs_against_a_served_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let options = Options::parse("command=cat&stdin=true&stdout=true&stderr=true");
        let served = options.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // Skip the request head, then switch protocols.
            let mut reader = tokio::io::BufReader::new(&mut socket);
            let mut line = String::new();
            while reader.read_line(&mut line).await.unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            socket.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n").await.unwrap();
            let (client, mut session) = session(&served);
            let run = async move {
                let (mut stdin, stdout) = (session.stdin.take().unwrap(), session.stdout.take().unwrap());
                let stderr = session.stderr.take().unwrap();
                stderr.send(Bytes::from_static(b"warming up\n")).await.unwrap();
                while let Some(chunk) = stdin.recv().await {
                    stdout.send(chunk).await.unwrap();
                }
                Outcome::Exited(4)
            };
            serve(socket, &served, client, run).await;
        });
        let (client, session) = session(&options);
        let url = format!("http://{address}/exec/token");
        let outcome = tokio::spawn(async move { connect(&url, session).await });
        let Client { stdin, stdout, stderr, .. } = client;
        let stdin = stdin.unwrap();
        stdin.send(Bytes::from_static(b"one ")).await.unwrap();
        stdin.send(Bytes::from_static(b"two")).await.unwrap();
        drop(stdin);
        let (out, err) = tokio::join!(drain(stdout), drain(stderr));
        assert_eq!(out, b"one two");
        assert_eq!(err, b"warming up\n");
        assert_eq!(outcome.await.unwrap(), Outcome::Exited(4));
    }
}
