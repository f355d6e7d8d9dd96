//! SPDY/3.1, as far as Kubernetes' streaming uses it: kubectl 1.27–1.29 run `exec` and
//! `attach` over it, every kubectl runs `port-forward` over it, and containerd's CRI
//! streaming server speaks it. One TCP connection carries many streams; each stream is
//! opened with a SYN_STREAM whose header block names its role (`streamtype: stdout`),
//! acknowledged with a SYN_REPLY, then carries DATA frames until a FIN each way.
//!
//! Header blocks are one zlib stream per direction, compressed with the protocol's
//! preset dictionary and sync-flushed per frame. Flow control is not kept: Go's
//! `spdystream`, the only peer here, neither sends nor honours WINDOW_UPDATE, so TCP
//! is the backpressure (as it is between kubectl and the kubelet).
//!
//! [`Connection::start`] splits the connection between two tasks: a reader that
//! decodes frames into [`Event`]s (answering PINGs itself) and a writer that owns the
//! compressor and the write half; callers send through a cloneable [`Handle`].

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// A frame longer than this is refused (the protocol's field allows 16 MiB; no peer
/// here sends more than 32 KiB at once).
const MAX_FRAME: usize = 1 << 20;
/// A decompressed header block larger than this is a protocol error (zip bombs).
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Frames queued for the writer, and events queued for the consumer.
const QUEUE: usize = 64;

const CONTROL_BIT: u8 = 0x80;
const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED: u32 = 3;
pub const RST_CANCEL: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("spdy protocol error: {0}")]
    Protocol(String),
    #[error("spdy connection closed")]
    Closed,
}

fn protocol(message: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(message.into())
}

/// Header names (lowercase, as SPDY requires) and values.
pub type Headers = Vec<(String, String)>;

/// The value of `name` in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        headers: Headers,
        fin: bool,
    },
    SynReply {
        stream: u32,
        headers: Headers,
        fin: bool,
    },
    Reset {
        stream: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        headers: Headers,
        fin: bool,
    },
    Data {
        stream: u32,
        data: Bytes,
        fin: bool,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control frames: read and dropped.
    Ignored,
}

/// SPDY/3's header compression dictionary (draft 3, section 2.6.10.1): these names,
/// each preceded by its length as four big-endian bytes, then a run of raw text.
fn dictionary() -> &'static [u8] {
    const NAMES: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct",
        " Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut bytes = Vec::with_capacity(1424);
        for name in NAMES {
            bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
        }
        bytes.extend_from_slice(TAIL.as_bytes());
        bytes
    })
}

/// Compresses outgoing header blocks: one zlib stream for the connection's life.
struct HeaderEncoder {
    deflate: Compress,
}

impl HeaderEncoder {
    fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream.
        let _ = deflate.set_dictionary(dictionary());
        HeaderEncoder { deflate }
    }

    fn encode(&mut self, headers: &Headers, out: &mut BytesMut) -> Result<(), SpdyError> {
        let mut plain = Vec::with_capacity(4 + headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum::<usize>());
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            plain.extend_from_slice(&(name.len() as u32).to_be_bytes());
            plain.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
            plain.extend_from_slice(&(value.len() as u32).to_be_bytes());
            plain.extend_from_slice(value.as_bytes());
        }
        let mut compressed = Vec::with_capacity(plain.len() + 64);
        let mut consumed = 0;
        loop {
            let before = self.deflate.total_in();
            compressed.reserve(64);
            self.deflate
                .compress_vec(&plain[consumed..], &mut compressed, FlushCompress::Sync)
                .map_err(|e| protocol(format!("compressing headers: {e}")))?;
            consumed += (self.deflate.total_in() - before) as usize;
            // Done once every byte went in and the flush fit in the buffer.
            if consumed == plain.len() && compressed.len() < compressed.capacity() {
                break;
            }
        }
        out.extend_from_slice(&compressed);
        Ok(())
    }
}

/// Decompresses incoming header blocks (the peer's one zlib stream).
struct HeaderDecoder {
    inflate: Decompress,
}

impl HeaderDecoder {
    fn new() -> Self {
        HeaderDecoder { inflate: Decompress::new(true) }
    }

    fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            if plain.len() == plain.capacity() {
                plain.reserve(plain.len().max(256));
            }
            match self.inflate.decompress_vec(&block[consumed..], &mut plain, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(error) if error.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| protocol(format!("header dictionary: {e}")))?;
                }
                Err(error) => return Err(protocol(format!("decompressing headers: {error}"))),
            }
            consumed += (self.inflate.total_in() - in_before) as usize;
            if plain.len() > MAX_HEADER_BLOCK {
                return Err(protocol("header block too large"));
            }
            let progressed = self.inflate.total_in() != in_before || self.inflate.total_out() != out_before;
            if consumed == block.len() && (plain.len() < plain.capacity() || !progressed) {
                break;
            }
        }
        parse_header_block(&plain)
    }
}

fn parse_header_block(plain: &[u8]) -> Result<Headers, SpdyError> {
    let mut at = 0;
    let take_u32 = |at: &mut usize| -> Result<usize, SpdyError> {
        let bytes = plain.get(*at..*at + 4).ok_or_else(|| protocol("truncated header block"))?;
        *at += 4;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    };
    let count = take_u32(&mut at)?;
    if count > plain.len() / 8 {
        return Err(protocol("header count exceeds the block"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let field = |at: &mut usize| -> Result<String, SpdyError> {
            let length = take_u32(at)?;
            let bytes = plain.get(*at..*at + length).ok_or_else(|| protocol("truncated header block"))?;
            *at += length;
            String::from_utf8(bytes.to_vec()).map_err(|_| protocol("header is not UTF-8"))
        };
        let name = field(&mut at)?;
        let value = field(&mut at)?;
        // Several values of one name travel NUL-separated.
        for value in value.split('\0') {
            headers.push((name.to_ascii_lowercase(), value.to_owned()));
        }
    }
    Ok(headers)
}

fn stream_id(bytes: &[u8]) -> Result<u32, SpdyError> {
    let id = bytes.get(..4).ok_or_else(|| protocol("control frame too short"))?;
    Ok(u32::from_be_bytes([id[0], id[1], id[2], id[3]]) & 0x7fff_ffff)
}

fn word(bytes: &[u8], at: usize) -> Result<u32, SpdyError> {
    let w = bytes.get(at..at + 4).ok_or_else(|| protocol("control frame too short"))?;
    Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// Reads frames from one direction of a connection.
pub struct FrameReader<R> {
    io: R,
    headers: HeaderDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        FrameReader { io, headers: HeaderDecoder::new() }
    }

    /// The next frame, or `None` at a clean end of the connection.
    pub async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if length > MAX_FRAME {
            return Err(protocol(format!("frame of {length} bytes is too large")));
        }
        let mut payload = vec![0u8; length];
        self.io.read_exact(&mut payload).await?;
        let fin = flags & FLAG_FIN != 0;
        if head[0] & CONTROL_BIT == 0 {
            let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data { stream, data: Bytes::from(payload), fin }));
        }
        let version = u16::from_be_bytes([head[0] & !CONTROL_BIT, head[1]]);
        if version != VERSION {
            return Err(protocol(format!("unsupported SPDY version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let frame = match kind {
            SYN_STREAM => {
                let block = payload.get(10..).ok_or_else(|| protocol("SYN_STREAM too short"))?;
                Frame::SynStream { stream: stream_id(&payload)?, headers: self.headers.decode(block)?, fin }
            }
            SYN_REPLY | HEADERS => {
                let stream = stream_id(&payload)?;
                let headers = self.headers.decode(&payload[4..])?;
                if kind == SYN_REPLY {
                    Frame::SynReply { stream, headers, fin }
                } else {
                    Frame::Headers { stream, headers, fin }
                }
            }
            RST_STREAM => Frame::Reset { stream: stream_id(&payload)?, status: word(&payload, 4)? },
            PING => Frame::Ping { id: word(&payload, 0)? },
            GOAWAY => Frame::GoAway { last_stream: stream_id(&payload)?, status: word(&payload, 4).unwrap_or(0) },
            _ => Frame::Ignored,
        };
        Ok(Some(frame))
    }
}

/// Writes frames to one direction of a connection.
pub struct FrameWriter<W> {
    io: W,
    headers: HeaderEncoder,
    buffer: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        FrameWriter { io, headers: HeaderEncoder::new(), buffer: BytesMut::with_capacity(4096) }
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<(), SpdyError> {
        self.buffer.clear();
        encode(frame, &mut self.headers, &mut self.buffer)?;
        self.io.write_all(&self.buffer).await?;
        self.io.flush().await?;
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

fn encode(frame: &Frame, headers: &mut HeaderEncoder, out: &mut BytesMut) -> Result<(), SpdyError> {
    let control = |out: &mut BytesMut, kind: u16, flags: u8| {
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u8(flags);
        out.put_slice(&[0, 0, 0]); // length, patched below
    };
    let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match frame {
        Frame::Data { stream, data, fin } => {
            out.put_u32(stream & 0x7fff_ffff);
            out.put_u8(fin_flag(*fin));
            out.put_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.put_slice(data);
            return Ok(());
        }
        Frame::SynStream { stream, headers: list, fin } => {
            control(out, SYN_STREAM, fin_flag(*fin));
            out.put_u32(*stream);
            out.put_u32(0); // associated stream
            out.put_u16(0); // priority, slot
            headers.encode(list, out)?;
        }
        Frame::SynReply { stream, headers: list, fin } | Frame::Headers { stream, headers: list, fin } => {
            let kind = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
            control(out, kind, fin_flag(*fin));
            out.put_u32(*stream);
            headers.encode(list, out)?;
        }
        Frame::Reset { stream, status } => {
            control(out, RST_STREAM, 0);
            out.put_u32(*stream);
            out.put_u32(*status);
        }
        Frame::Ping { id } => {
            control(out, PING, 0);
            out.put_u32(*id);
        }
        Frame::GoAway { last_stream, status } => {
            control(out, GOAWAY, 0);
            out.put_u32(*last_stream);
            out.put_u32(*status);
        }
        Frame::Ignored => return Ok(()),
    }
    let length = (out.len() - 8) as u32;
    out[5..8].copy_from_slice(&length.to_be_bytes()[1..]);
    Ok(())
}

/// Which end of the connection this is: clients open odd streams, servers even ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// What the peer did.
#[derive(Debug)]
pub enum Event {
    /// The peer opened a stream.
    Opened {
        stream: u32,
        headers: Headers,
        fin: bool,
    },
    /// The peer accepted a stream this end opened.
    Replied {
        stream: u32,
    },
    Data {
        stream: u32,
        data: Bytes,
    },
    /// The peer will send nothing more on the stream.
    Finished {
        stream: u32,
    },
    Reset {
        stream: u32,
    },
}

enum Outgoing {
    Frame(Frame),
    /// Close the write half: the peer sees the end of the connection.
    Shutdown,
}

/// Sends on a connection; clones share it.
#[derive(Clone)]
pub struct Handle {
    out: mpsc::Sender<Outgoing>,
    next_stream: Arc<AtomicU32>,
}

impl Handle {
    async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.out.send(Outgoing::Frame(frame)).await.map_err(|_| SpdyError::Closed)
    }

    /// Opens a stream with these headers; the peer answers with [`Event::Replied`].
    pub async fn open(&self, headers: Headers) -> Result<u32, SpdyError> {
        let stream = self.next_stream.fetch_add(2, Ordering::Relaxed);
        self.send(Frame::SynStream { stream, headers, fin: false }).await?;
        Ok(stream)
    }

    /// Accepts a stream the peer opened.
    pub async fn reply(&self, stream: u32) -> Result<(), SpdyError> {
        self.send(Frame::SynReply { stream, headers: Vec::new(), fin: false }).await
    }

    pub async fn data(&self, stream: u32, data: Bytes) -> Result<(), SpdyError> {
        self.send(Frame::Data { stream, data, fin: false }).await
    }

    /// Half-closes a stream: this end sends nothing more on it.
    pub async fn finish(&self, stream: u32) -> Result<(), SpdyError> {
        self.send(Frame::Data { stream, data: Bytes::new(), fin: true }).await
    }

    pub async fn reset(&self, stream: u32, status: u32) -> Result<(), SpdyError> {
        self.send(Frame::Reset { stream, status }).await
    }

    /// Ends the connection once every frame sent before has been written.
    pub async fn shutdown(&self) {
        let _ = self.out.send(Outgoing::Shutdown).await;
    }
}

pub struct Connection;

impl Connection {
    /// Runs a SPDY connection over `io` (already upgraded). Events arrive on the
    /// receiver until the peer closes the connection.
    pub fn start<IO>(io: IO, role: Role) -> (Handle, mpsc::Receiver<Event>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(QUEUE);
        let (events_tx, events_rx) = mpsc::channel(QUEUE);
        let first = if role == Role::Client { 1 } else { 2 };
        let handle = Handle { out: out_tx.clone(), next_stream: Arc::new(AtomicU32::new(first)) };
        tokio::spawn(write_frames(FrameWriter::new(write), out_rx));
        tokio::spawn(read_frames(FrameReader::new(read), events_tx, out_tx));
        (handle, events_rx)
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(mut writer: FrameWriter<W>, mut out: mpsc::Receiver<Outgoing>) {
    while let Some(outgoing) = out.recv().await {
        match outgoing {
            Outgoing::Frame(frame) => {
                if let Err(error) = writer.send(&frame).await {
                    tracing::debug!(%error, "spdy write failed");
                    break;
                }
            }
            Outgoing::Shutdown => break,
        }
    }
    writer.shutdown().await;
}

async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    events: mpsc::Sender<Event>,
    out: mpsc::Sender<Outgoing>,
) {
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(%error, "spdy read failed");
                break;
            }
        };
        let event = match frame {
            Frame::SynStream { stream, headers, fin } => Event::Opened { stream, headers, fin },
            Frame::SynReply { stream, fin, .. } => {
                if events.send(Event::Replied { stream }).await.is_err() {
                    break;
                }
                if !fin {
                    continue;
                }
                Event::Finished { stream }
            }
            Frame::Data { stream, data, fin } => {
                if !data.is_empty() && events.send(Event::Data { stream, data }).await.is_err() {
                    break;
                }
                if !fin {
                    continue;
                }
                Event::Finished { stream }
            }
            Frame::Headers { stream, fin: true, .. } => Event::Finished { stream },
            Frame::Reset { stream, .. } => Event::Reset { stream },
            Frame::Ping { id } => {
                // Answer the peer's pings; this end sends none of its own.
                let _ = out.send(Outgoing::Frame(Frame::Ping { id })).await;
                continue;
            }
            Frame::GoAway { .. } | Frame::Headers { .. } | Frame::Ignored => continue,
        };
        if events.send(event).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_has_the_specified_size() {
        // 1,423 bytes in the draft; its Adler-32 is the DICTID in every peer's header.
        assert_eq!(dictionary().len(), 1423);
        assert!(dictionary().starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dictionary().ends_with(b"utf-,*,enq=0."));
    }

    #[tokio::test]
    async fn frames_round_trip_through_one_compression_stream() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(a);
        let mut reader = FrameReader::new(b);
        let frames = vec![
            Frame::SynStream { stream: 1, headers: vec![("streamtype".into(), "error".into())], fin: false },
            Frame::SynStream { stream: 3, headers: vec![("streamtype".into(), "stdout".into())], fin: true },
            Frame::SynReply { stream: 2, headers: Vec::new(), fin: false },
            Frame::Data { stream: 3, data: Bytes::from_static(b"hello"), fin: false },
            Frame::Data { stream: 3, data: Bytes::new(), fin: true },
            Frame::Reset { stream: 5, status: RST_CANCEL },
            Frame::Ping { id: 7 },
            Frame::GoAway { last_stream: 3, status: 0 },
            Frame::Headers { stream: 1, headers: vec![("a".into(), "b".into())], fin: true },
        ];
        for frame in &frames {
            writer.send(frame).await.unwrap();
        }
        for frame in &frames {
            assert_eq!(reader.next().await.unwrap().as_ref(), Some(frame));
        }
        writer.shutdown().await;
        assert_eq!(reader.next().await.unwrap(), None);
    }

    #[test]
    fn header_blocks_compressed_with_the_dictionary_are_read() {
        // What Go's framer sends: a zlib stream whose header asks for the dictionary.
        let mut encoder = HeaderEncoder::new();
        let mut decoder = HeaderDecoder::new();
        for round in 0..3 {
            let headers: Headers = vec![
                ("streamtype".into(), "data".into()),
                ("port".into(), format!("80{round}")),
                ("requestid".into(), round.to_string()),
            ];
            let mut block = BytesMut::new();
            encoder.encode(&headers, &mut block).unwrap();
            if round == 0 {
                assert_eq!(block[1] & 0x20, 0x20, "FDICT is set on the first block");
            }
            assert_eq!(decoder.decode(&block).unwrap(), headers);
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(parse_header_block(&[0, 0, 0, 9]).is_err());
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 200, b'a']).is_err());
        assert!(HeaderDecoder::new().decode(b"not zlib at all").is_err());
        let values = parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 3, b'x', 0, b'y']).unwrap();
        assert_eq!(values, vec![("a".to_owned(), "x".to_owned()), ("a".to_owned(), "y".to_owned())]);
    }

    /// Random and mutated byte streams: every one ends in a frame, an error or the
    /// end, never a panic (the bytes come from whoever can reach the agent's port).
    #[tokio::test]
    async fn arbitrary_bytes_never_panic_the_reader() {
        let mut valid = BytesMut::new();
        let mut encoder = HeaderEncoder::new();
        for frame in [
            Frame::SynStream { stream: 1, headers: vec![("streamtype".into(), "data".into())], fin: false },
            Frame::SynReply { stream: 1, headers: Vec::new(), fin: true },
            Frame::Data { stream: 1, data: Bytes::from_static(b"payload"), fin: true },
            Frame::GoAway { last_stream: 1, status: 0 },
        ] {
            encode(&frame, &mut encoder, &mut valid).unwrap();
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let mut mutated = valid.to_vec();
                for _ in 0..1 + random() % 4 {
                    let at = (random() as usize) % mutated.len();
                    mutated[at] = random() as u8;
                }
                mutated.truncate(mutated.len() - (random() as usize) % 8);
                mutated
            } else {
                (0..random() % 64).map(|_| random() as u8).collect()
            };
            let mut reader = FrameReader::new(&bytes[..]);
            for _ in 0..16 {
                match reader.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    #[tokio::test]
    async fn a_connection_delivers_streams_and_answers_pings() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let (client, mut client_events) = Connection::start(client_io, Role::Client);
        let (server, mut server_events) = Connection::start(server_io, Role::Server);
        let stream = client.open(vec![("streamtype".into(), "stdin".into())]).await.unwrap();
        assert_eq!(stream, 1);
        let Some(Event::Opened { stream: opened, headers, .. }) = server_events.recv().await else { panic!() };
        assert_eq!((opened, header(&headers, "streamtype")), (1, Some("stdin")));
        server.reply(opened).await.unwrap();
        assert!(matches!(client_events.recv().await, Some(Event::Replied { stream: 1 })));
        client.data(1, Bytes::from_static(b"abc")).await.unwrap();
        client.finish(1).await.unwrap();
        assert!(matches!(server_events.recv().await, Some(Event::Data { stream: 1, data }) if &data[..] == b"abc"));
        assert!(matches!(server_events.recv().await, Some(Event::Finished { stream: 1 })));
        client.shutdown().await;
        assert!(server_events.recv().await.is_none());
    }
}
