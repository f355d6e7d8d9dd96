//! `kubectl port-forward`: SPDY with the `portforward.k8s.io` protocol, both ways.
//!
//! For each local connection kubectl opens two streams with the same `requestid`
//! header: `error` and then `data`, each naming the pod's `port`. The data stream
//! carries the connection's bytes both ways; when it has ended both ways the error
//! stream carries the failure, if any (kubectl prints it), and closes. kubectl 1.31+
//! tunnels the same SPDY connection through a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`, binary messages carrying the raw byte stream);
//! older clients upgrade straight to SPDY.
//!
//! [`serve`] is the agent's side: each stream pair becomes a byte pipe handed to the
//! runtime, which joins it to the pod's port. [`forward`] is the client side, to
//! containerd's streaming server (whose `PortForward` answer is a URL speaking this).

use super::feed;
use super::remote_spdy::{await_replies, upgrade};
use super::spdy::{self, Connection, Event, Handle, Role};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{Message, Role as WsRole};
use tokio_tungstenite::WebSocketStream;

pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of kubectl 1.31+: SPDY tunnelled through a WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Bytes in flight inside one forwarded connection's pipe.
const PIPE: usize = 64 * 1024;
const CHUNK: usize = 32 * 1024;
/// Chunks from the client queued for one forwarded connection.
const INPUT_DEPTH: usize = 16;

/// One side of a forwarded connection, as the runtime gets it: read what the client
/// sent, write what the pod answers; shutting down the write half ends the client's
/// read side.
pub type Pipe = DuplexStream;

/// A stream pair being assembled from the client's SYN_STREAMs.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<String>,
}

/// Serves port forwarding on an upgraded SPDY connection: every complete stream pair
/// is joined by `connect(port, pipe)`, the runtime's way to the pod's port.
pub async fn serve<S, F, Fut>(io: S, connect: F)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    F: Fn(u16, Pipe) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let connect = Arc::new(connect);
    let (handle, mut events) = Connection::start(io, Role::Server);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Data stream → its forwarded connection's input.
    let mut inputs: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Opened { stream, headers, .. } => {
                let kind = spdy::header(&headers, "streamtype").unwrap_or_default().to_owned();
                let request = spdy::header(&headers, "requestid").unwrap_or_default().to_owned();
                if !matches!(kind.as_str(), "error" | "data") || handle.reply(stream).await.is_err() {
                    let _ = handle.reset(stream, spdy::RST_PROTOCOL_ERROR).await;
                    continue;
                }
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = spdy::header(&headers, "port").map(str::to_owned).or(pair.port.take());
                if kind == "error" {
                    pair.error = Some(stream);
                } else {
                    pair.data = Some(stream);
                }
                if let (Some(error), Some(data)) = (pair.error, pair.data) {
                    let port = pair.port.take().unwrap_or_default();
                    pairs.remove(&request);
                    let (input, receiver) = mpsc::channel(INPUT_DEPTH);
                    inputs.insert(data, input);
                    let port = port
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("invalid port header {port:?}"));
                    let connect = Arc::clone(&connect);
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        // The data stream ends first, then the error stream says why
                        // (kubectl reads the error once the data is done).
                        let result = match port {
                            Ok(port) => join(handle.clone(), data, receiver, |pipe| connect(port, pipe)).await,
                            Err(message) => {
                                let _ = handle.finish(data).await;
                                Err(message)
                            }
                        };
                        if let Err(message) = result {
                            let _ = handle.data(error, Bytes::from(message)).await;
                        }
                        let _ = handle.finish(error).await;
                    });
                }
            }
            Event::Data { stream, data } => {
                if let Some(input) = inputs.get(&stream) {
                    if input.send(data).await.is_err() {
                        inputs.remove(&stream);
                    }
                }
            }
            // The client's end of a connection: the pod sees end of input.
            Event::Finished { stream } | Event::Reset { stream } => {
                inputs.remove(&stream);
            }
            Event::Replied { .. } => {}
        }
    }
}

/// Joins a SPDY data stream (its input arriving on `input`, its output sent through
/// `handle`) to the pipe given to `connect`; returns once both directions have ended.
async fn join<C, Fut>(handle: Handle, data: u32, input: mpsc::Receiver<Bytes>, connect: C) -> Result<(), String>
where
    C: FnOnce(Pipe) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (from_pod, to_pod) = tokio::io::split(ours);
    let upstream = tokio::spawn(feed(input, to_pod));
    let down = handle.clone();
    let downstream = tokio::spawn(async move {
        if drain_to(from_pod, &down, data).await {
            let _ = down.finish(data).await;
        }
    });
    let result = connect(theirs).await;
    let _ = downstream.await;
    upstream.abort();
    result
}

/// Sends everything read from `from` on a stream; false if the connection is gone.
async fn drain_to(mut from: impl AsyncRead + Unpin, handle: &Handle, stream: u32) -> bool {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if handle.data(stream, Bytes::copy_from_slice(&buffer[..n])).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// The byte stream inside a tunnelling WebSocket: each binary message is the next
/// piece of it, each write becomes one message.
pub fn untunnel<S>(io: S) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(PIPE);
    tokio::spawn(async move {
        let socket = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
        let (mut sink, mut stream) = socket.split();
        let (mut from_spdy, mut to_spdy) = tokio::io::split(ours);
        let inbound = async move {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Binary(data) if to_spdy.write_all(&data).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = to_spdy.shutdown().await;
        };
        let outbound = async move {
            let mut buffer = vec![0u8; CHUNK];
            while let Ok(n @ 1..) = from_spdy.read(&mut buffer).await {
                if sink.send(Message::Binary(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(Message::Close(None)).await;
        };
        tokio::join!(inbound, outbound);
    });
    theirs
}

/// Forwards one connection (`pipe`) to `port` through a runtime's streaming URL.
pub async fn forward(url: &str, port: u16, pipe: Pipe) -> Result<(), String> {
    let (handle, mut events) = upgrade(url, PROTOCOL).await?;
    let headers = |kind: &str| {
        vec![
            ("streamtype".to_owned(), kind.to_owned()),
            ("port".to_owned(), port.to_string()),
            ("requestid".to_owned(), "0".to_owned()),
        ]
    };
    let opened = async {
        let error = handle.open(headers("error")).await.map_err(|e| e.to_string())?;
        let data = handle.open(headers("data")).await.map_err(|e| e.to_string())?;
        await_replies(&mut events, 2).await?;
        Ok::<_, String>((error, data))
    };
    let (error, data) = match opened.await {
        Ok(streams) => streams,
        Err(message) => {
            handle.shutdown().await;
            return Err(message);
        }
    };
    let (from_client, mut to_client) = tokio::io::split(pipe);
    let up = handle.clone();
    let upstream = tokio::spawn(async move {
        if drain_to(from_client, &up, data).await {
            let _ = up.finish(data).await;
        }
    });
    let mut message = Vec::new();
    let (mut data_done, mut error_done) = (false, false);
    while !(data_done && error_done) {
        match events.recv().await {
            Some(Event::Data { stream, data: chunk }) if stream == data => {
                if to_client.write_all(&chunk).await.is_err() {
                    data_done = true;
                }
            }
            Some(Event::Data { stream, data: chunk }) if stream == error => message.extend_from_slice(&chunk),
            Some(Event::Finished { stream } | Event::Reset { stream }) if stream == data => {
                let _ = to_client.shutdown().await;
                data_done = true;
            }
            Some(Event::Finished { stream } | Event::Reset { stream }) if stream == error => error_done = true,
            Some(_) => {}
            None => break,
        }
    }
    upstream.abort();
    handle.shutdown().await;
    if message.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&message).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side against the server side, as the agent runs against containerd,
    /// with an echo "pod": bytes go through both ways and the end of input reaches it.
    #[tokio::test]
    async fn a_forwarded_connection_reaches_the_port_and_reports_failures() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut reader = tokio::io::BufReader::new(&mut socket);
                let mut line = String::new();
                while tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line).await.unwrap() > 0 && line != "\r\n"
                {
                    line.clear();
                }
                socket.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").await.unwrap();
                tokio::spawn(serve(socket, |port, mut pipe: Pipe| async move {
                    if port != 80 {
                        return Err(format!("nothing listens on {port}"));
                    }
                    // An echo server that upper-cases, and closes after its input ends.
                    let mut all = Vec::new();
                    pipe.read_to_end(&mut all).await.map_err(|e| e.to_string())?;
                    pipe.write_all(&all.to_ascii_uppercase()).await.map_err(|e| e.to_string())?;
                    pipe.shutdown().await.map_err(|e| e.to_string())
                }));
            }
        });
        let url = format!("http://{address}/portforward/token");
        let (mut client, pipe) = tokio::io::duplex(1024);
        let forwarding = tokio::spawn({
            let url = url.clone();
            async move { forward(&url, 80, pipe).await }
        });
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"HELLO");
        assert_eq!(forwarding.await.unwrap(), Ok(()));

        let (_client, pipe) = tokio::io::duplex(1024);
        assert_eq!(forward(&url, 81, pipe).await, Err("nothing listens on 81".to_owned()));
    }
}
