//! Watch streams: newline-framed JSON events over a chunked response, or, for a
//! client that asks for protobuf first, length-prefixed protobuf `WatchEvent`s.
//!
//! A watch starts from a resource version (or from the current state, sent as ADDED
//! events), then follows the store's watch. Frames go through a bounded channel; a
//! client that reads too slowly stops the pump, the store watcher then falls behind
//! its ring and the client gets an ERROR event with a 410 Status and re-lists.
//! Memory per watcher is bounded by the channel.

use crate::filter::Filter;
use crate::object::stamped;
use crate::reply::{self, Body, Output, Wire};
use crate::resources::ResourceInfo;
use crate::route::{Query, ResourceRoute};
use crate::server::ApiState;
use crate::table;
use ::http::StatusCode;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::Response;
use keelson_engine::{ApiError, EventType, Revision};
use keelson_store::{ListOptions, ReadAt, StoreError, WatchItem};
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// The content type of a protobuf watch: client-go picks its length-delimited
/// frame reader from it.
const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Frames buffered per watcher before the pump waits for the client.
const FRAMES_BUFFERED: usize = 256;

/// Events already waiting are sent together up to this size: HTTP/2's default largest
/// frame, so a burst of events (a commit batch) costs one DATA frame instead of one
/// each. (That the burst also leaves in one socket write is now the connection's doing,
/// `batched_writes`, for every response.)
const COALESCED_BYTES: usize = 16 * 1024;

/// What a watcher's channel carries.
enum Outgoing {
    /// A frame built for this watcher (initial state, bookmarks, errors, Tables,
    /// protobuf).
    Frame(Bytes),
    /// A store event in JSON, written from the stored bytes when the body is polled.
    /// The frame is not built ahead and shared through the event's memo: the memo
    /// lives as long as the store's ring holds the event, and an event-sized copy per
    /// event kept that long was most of a run's memory growth, which this machine
    /// pays for in page faults; a copy per watcher, made as it sends and freed once
    /// written, is cheaper.
    Event { kind: &'static str, stored: Bytes, revision: u64 },
}

impl Outgoing {
    /// Its bytes on the wire, appended to `out`.
    fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Outgoing::Frame(frame) => out.extend_from_slice(frame),
            Outgoing::Event { kind, stored, revision } => {
                write_frame(out, kind, |out| crate::object::with_resource_version(stored, *revision, out))
            }
        }
    }

    /// At least its size on the wire (an event's stamp and framing add under 96 bytes).
    fn size(&self) -> usize {
        match self {
            Outgoing::Frame(frame) => frame.len(),
            Outgoing::Event { stored, .. } => stored.len() + 96,
        }
    }
}

/// A response body fed by a channel of frames.
struct ChannelBody(mpsc::Receiver<Outgoing>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let Some(first) = std::task::ready!(self.0.poll_recv(cx)) else { return Poll::Ready(None) };
        Poll::Ready(Some(Ok(Frame::data(coalesce(first, &mut self.0)))))
    }
}

/// `first` followed by the frames already waiting in `rx`, while the total stays under
/// [`COALESCED_BYTES`] (the last frame joined may take it over; events are
/// self-delimiting, so any split of the stream is valid). A ready frame alone goes out
/// as it is.
fn coalesce(first: Outgoing, rx: &mut mpsc::Receiver<Outgoing>) -> Bytes {
    let first = match first {
        Outgoing::Frame(frame) if frame.len() >= COALESCED_BYTES || rx.is_empty() => return frame,
        first => first,
    };
    let mut joined = Vec::with_capacity(COALESCED_BYTES.max(first.size()));
    first.write_to(&mut joined);
    while joined.len() < COALESCED_BYTES {
        let Ok(next) = rx.try_recv() else { break };
        next.write_to(&mut joined);
    }
    Bytes::from(joined)
}

struct Stream {
    info: &'static ResourceInfo,
    filter: Filter,
    output: Output,
    wire: Wire,
    bookmarks: bool,
    tx: mpsc::Sender<Outgoing>,
}

/// What every watcher of one event shares, computed by the first watcher that needs
/// it and kept in the event's memo slot: what only some watchers need (protobuf, the
/// part of each state selectors read), derived once, not once per watcher.
#[derive(Default)]
struct Encoded {
    /// The event as a protobuf frame, for protobuf watchers (`None` if the object
    /// cannot be encoded).
    protobuf: OnceLock<Option<Bytes>>,
    /// What selectors see of the states (not the whole parsed objects), for watchers
    /// with selectors.
    now: OnceLock<Option<Value>>,
    before: OnceLock<Option<Value>>,
}

impl Encoded {
    fn of(event: &keelson_store::Event) -> Arc<Encoded> {
        event.memo.get_or_init(Encoded::default).unwrap_or_default()
    }
}

/// `{"type":"<kind>","object":<object>}\n` appended to `out`, where `write_object`
/// appends the object.
fn write_frame(out: &mut Vec<u8>, kind: &str, write_object: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    write_object(out);
    out.extend_from_slice(b"}\n");
}

/// One JSON watch frame for `object`.
fn frame(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + kind.len() + 32);
    write_frame(&mut out, kind, |out| out.extend_from_slice(object));
    Bytes::from(out)
}

/// The object an event carries (the new state, or the last state for a delete).
fn stored_object(event: &keelson_store::Event) -> Bytes {
    event.object().cloned().unwrap_or_else(|| Bytes::from_static(b"{}"))
}

/// [`stored_object`] stamped with the event's revision, for a watcher that converts it.
fn stamped_object(event: &keelson_store::Event) -> Vec<u8> {
    stamped(event.object().map_or(&b"{}"[..], |b| &b[..]), event.revision.get())
}

/// What selectors can see of a stored state ([`crate::filter::selectable`]).
fn parse_selectable(bytes: Option<&Bytes>) -> Option<Value> {
    serde_json::from_slice(bytes?).ok().map(|object: Value| crate::filter::selectable(&object))
}

/// One protobuf watch frame for a JSON object.
fn protobuf_frame(kind: &str, object: &[u8]) -> Option<Bytes> {
    let value: Value = serde_json::from_slice(object).ok()?;
    crate::protobuf::watch_frame(kind, &value).ok().map(Bytes::from)
}

impl Stream {
    /// Sends one frame; `false` when the client is gone.
    async fn send_frame(&self, frame: Bytes) -> bool {
        self.tx.send(Outgoing::Frame(frame)).await.is_ok()
    }

    /// Sends one event built for this watcher alone (initial state, Table output,
    /// selector transitions).
    async fn send(&self, kind: &str, object: &[u8]) -> bool {
        let object = &*self.served(object);
        match self.output {
            Output::Json if self.wire == Wire::Protobuf => match protobuf_frame(kind, object) {
                Some(frame) => self.send_frame(frame).await,
                None => self.unencodable().await,
            },
            Output::Json => self.send_frame(frame(kind, object)).await,
            Output::Table => {
                let Ok(value) = serde_json::from_slice::<Value>(object) else { return true };
                let rv = value["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
                self.send_frame(frame(kind, &table::render(self.info, &[value], &rv, None))).await
            }
            Output::Metadata(version) | Output::MetadataList(version) => {
                let Ok(value) = serde_json::from_slice::<Value>(object) else { return true };
                self.send_value(kind, &reply::partial_metadata(&value, version)).await
            }
        }
    }

    async fn bookmark(&self, revision: Revision, initial_events_end: bool) -> bool {
        let mut metadata = json!({"resourceVersion": revision.get().to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut object = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": metadata});
        if let Output::Metadata(version) = self.output {
            object = reply::partial_metadata(&object, version);
        }
        self.send_value("BOOKMARK", &object).await
    }

    async fn error(&self, error: &ApiError) {
        let _ = self.send_value("ERROR", &error.to_json()).await;
    }

    /// Sends an event whose object the server made (a bookmark, an error Status).
    async fn send_value(&self, kind: &str, object: &Value) -> bool {
        let frame = match self.wire {
            Wire::Json => Some(Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n"))),
            Wire::Protobuf => crate::protobuf::watch_frame(kind, object).ok().map(Bytes::from),
        };
        match frame {
            Some(frame) => self.send_frame(frame).await,
            None => self.unencodable().await,
        }
    }

    /// An object protobuf cannot carry (the kind is checked before the watch starts,
    /// so only a stored object that breaks its own schema gets here): the stream
    /// ends with an internal error rather than skipping the event.
    async fn unencodable(&self) -> bool {
        let error = ApiError::internal("an object of the watched collection cannot be encoded as protobuf");
        if let Ok(frame) = crate::protobuf::watch_frame("ERROR", &error.to_json()) {
            let _ = self.send_frame(Bytes::from(frame)).await;
        }
        false
    }

    fn matches(&self, bytes: &[u8]) -> bool {
        self.filter.is_everything() || self.parse_served(Some(bytes)).is_some_and(|v| self.filter.matches(&v))
    }

    /// Stored bytes parsed in the form this resource serves.
    fn parse_served(&self, bytes: Option<&[u8]>) -> Option<Value> {
        let mut value = serde_json::from_slice(bytes?).ok()?;
        self.info.to_served(&mut value);
        Some(value)
    }

    /// Stored bytes in the form this resource serves (a copy only for a view; bytes
    /// that do not parse are passed on as they are).
    fn served<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let converted = match self.info.view {
            None => None,
            Some(_) => self.parse_served(Some(bytes)).and_then(|v| serde_json::to_vec(&v).ok()),
        };
        converted.map_or(std::borrow::Cow::Borrowed(bytes), std::borrow::Cow::Owned)
    }

    /// Translates one store event into what this watcher sees: with a selector, an
    /// object that starts or stops matching appears as ADDED or DELETED.
    async fn event(&self, event: &keelson_store::Event) -> bool {
        let (now, before) = if self.filter.is_everything() {
            (event.value.is_some(), event.prev_value.is_some())
        } else if self.info.view.is_some() {
            // A view's selectors read the served form; the shared parse is the stored one.
            let matches = |bytes: Option<&Bytes>| {
                self.parse_served(bytes.map(|b| &b[..])).is_some_and(|v| self.filter.matches(&v))
            };
            (matches(event.value.as_ref()), matches(event.prev_value.as_ref()))
        } else {
            let encoded = Encoded::of(event);
            let now = encoded.now.get_or_init(|| parse_selectable(event.value.as_ref()));
            let before = encoded.before.get_or_init(|| parse_selectable(event.prev_value.as_ref()));
            (
                now.as_ref().is_some_and(|v| self.filter.matches(v)),
                before.as_ref().is_some_and(|v| self.filter.matches(v)),
            )
        };
        let kind = match (event.kind, now, before) {
            (EventType::Added, true, _) | (EventType::Modified, true, true) | (EventType::Deleted, _, true) => {
                match (self.output, self.wire) {
                    // A view's watchers each convert the stored form (below).
                    _ if self.info.view.is_some() => {}
                    (Output::Json, Wire::Json) => {
                        let (kind, stored, revision) =
                            (event.kind.as_str(), stored_object(event), event.revision.get());
                        return self.tx.send(Outgoing::Event { kind, stored, revision }).await.is_ok();
                    }
                    (Output::Json, Wire::Protobuf) => {
                        let encoded = Encoded::of(event);
                        let frame = encoded
                            .protobuf
                            .get_or_init(|| protobuf_frame(event.kind.as_str(), &stamped_object(event)));
                        return match frame {
                            Some(frame) => self.send_frame(frame.clone()).await,
                            None => self.unencodable().await,
                        };
                    }
                    (Output::Table | Output::Metadata(_) | Output::MetadataList(_), _) => {}
                }
                event.kind.as_str()
            }
            (EventType::Modified, true, false) => "ADDED",
            (EventType::Modified, false, true) => "DELETED",
            _ => return true,
        };
        self.send(kind, &stamped_object(event)).await
    }
}

/// Starts a watch and returns the streaming response.
pub async fn start(
    state: Arc<ApiState>,
    route: &ResourceRoute,
    query: &Query,
    output: Output,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let info = route.info;
    // Watch events carry single objects.
    if let Output::MetadataList(_) = output {
        return Err(output.mismatch(&format!("*{}.{}", info.version, info.kind)));
    }
    // A kind protobuf cannot carry is watched in JSON, which the client also accepts.
    let wire = match wire {
        Wire::Protobuf if output == Output::Json && crate::protobuf::encodable(&info.api_version(), info.kind) => {
            Wire::Protobuf
        }
        _ => Wire::Json,
    };
    let filter = Filter::parse(query.get("labelSelector"), query.get("fieldSelector"), info)?;
    let prefix = info.prefix(route.namespace.as_deref());
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.get("sendInitialEvents").map(|v| v == "true");
    let rv = query.int("resourceVersion")?.filter(|rv| *rv > 0);
    if send_initial == Some(true) && query.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::bad_request(
            "sendInitialEvents is only supported with resourceVersionMatch=NotOlderThan",
        ));
    }
    // Kubernetes closes watches after a random 30-60 minutes unless told otherwise.
    let timeout = match query.int("timeoutSeconds")? {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds as u64),
        _ => Duration::from_secs(1800 + (uuid::Uuid::new_v4().as_u128() % 1800) as u64),
    };
    let initial = send_initial.unwrap_or(rv.is_none());
    let (tx, rx) = mpsc::channel(FRAMES_BUFFERED);
    let stream = Stream { info, filter, output, wire, bookmarks, tx };
    // Resolve the start point before answering, so a bad revision is a clean error.
    let (initial_items, start) = if initial {
        current_state(&state, info, &prefix).await?
    } else {
        (Vec::new(), Revision(rv.unwrap_or(0) as u64))
    };
    let watcher = state.store.watch(prefix.clone(), start);
    state.metrics.watches.fetch_add(1, Ordering::Relaxed);
    let pump_state = state.clone();
    tokio::spawn(async move {
        pump(pump_state.clone(), stream, watcher, initial_items, start, initial && send_initial == Some(true), timeout)
            .await;
        pump_state.metrics.watches.fetch_sub(1, Ordering::Relaxed);
    });
    let content_type = match (output, wire) {
        (Output::Json, Wire::Protobuf) => PROTOBUF_WATCH,
        (output, _) => output.content_type(),
    };
    let mut response = Response::new(ChannelBody(rx).boxed());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(::http::header::CONTENT_TYPE, ::http::HeaderValue::from_static(content_type));
    Ok(response)
}

/// The collection's current objects (stored bytes and revision) and the revision they
/// are the state at: from the watch cache, or the store if the cache cannot serve.
async fn current_state(
    state: &ApiState,
    info: &ResourceInfo,
    prefix: &str,
) -> Result<(Vec<(Bytes, Revision)>, Revision), ApiError> {
    if state.cache.ready_for_current().await {
        if let Some((entries, revision)) = state.cache.list(prefix.as_bytes(), 0) {
            return Ok((entries.into_iter().map(|(_, c)| (c.value, c.mod_revision)).collect(), revision));
        }
    }
    let page = state
        .store
        .list(prefix.as_bytes(), &ListOptions { at: ReadAt::Latest, limit: 0, after_key: None })
        .map_err(|e| reply::store_error(e, (info.group, info.plural), ""))?;
    let items = page.items.into_iter().filter_map(|(_, r)| Some((r.value?, r.mod_revision))).collect();
    Ok((items, page.revision))
}

async fn pump(
    state: Arc<ApiState>,
    stream: Stream,
    watcher: Result<keelson_store::Watcher, StoreError>,
    initial_items: Vec<(Bytes, Revision)>,
    start: Revision,
    initial_events_end: bool,
    timeout: Duration,
) {
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(e) => {
            stream.error(&reply::store_error(e, (stream.info.group, stream.info.plural), "")).await;
            return;
        }
    };
    for (value, revision) in &initial_items {
        if stream.matches(value) && !stream.send("ADDED", &stamped(value, revision.get())).await {
            return;
        }
    }
    drop(initial_items);
    if initial_events_end && stream.bookmarks && !stream.bookmark(start, true).await {
        return;
    }
    let mut shutdown = state.shutdown.clone();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = shutdown.changed() => return,
            _ = stream.tx.closed() => return,
            item = watcher.next() => match item {
                Ok(WatchItem::Events(batch)) => {
                    for event in batch.iter() {
                        if !stream.event(event).await {
                            return;
                        }
                    }
                }
                Ok(WatchItem::Progress(revision)) => {
                    if stream.bookmarks && !stream.bookmark(revision, false).await {
                        return;
                    }
                }
                Err(e) => {
                    let error = if e.is_expired() {
                        ApiError::expired(format!("too old resource version: {e}"))
                    } else {
                        reply::store_error(e, (stream.info.group, stream.info.plural), "")
                    };
                    stream.error(&error).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_frames_go_out_together_up_to_the_limit() {
        let (tx, mut rx) = mpsc::channel(16);
        let text = |s: String| Outgoing::Frame(Bytes::from(s));
        for i in 0..3 {
            tx.try_send(text(format!("event {i}\n"))).unwrap();
        }
        let first = rx.try_recv().unwrap();
        assert_eq!(coalesce(first, &mut rx), "event 0\nevent 1\nevent 2\n");

        tx.try_send(text("alone\n".into())).unwrap();
        let first = rx.try_recv().unwrap();
        assert_eq!(coalesce(first, &mut rx), "alone\n");

        let half = Bytes::from(vec![b'a'; COALESCED_BYTES / 2]);
        for _ in 0..4 {
            tx.try_send(Outgoing::Frame(half.clone())).unwrap();
        }
        let first = rx.try_recv().unwrap();
        assert_eq!(coalesce(first, &mut rx).len(), COALESCED_BYTES);
        assert_eq!(rx.len(), 2, "what did not fit waits for the next frame");
    }

    #[test]
    fn a_store_event_is_written_as_its_stamped_frame() {
        let stored = Bytes::from_static(br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{}}"#);
        let expected = frame("MODIFIED", &stamped(&stored, 42));
        assert_eq!(
            &expected[..],
            &br#"{"type":"MODIFIED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"resourceVersion":"42","name":"a"},"spec":{}}}
"#[..]
        );
        let event = || Outgoing::Event { kind: "MODIFIED", stored: stored.clone(), revision: 42 };
        assert!(event().size() >= expected.len());

        let (tx, mut rx) = mpsc::channel(16);
        tx.try_send(event()).unwrap();
        assert_eq!(coalesce(rx.try_recv().unwrap(), &mut rx), expected, "alone");
        tx.try_send(Outgoing::Frame(Bytes::from_static(b"bookmark\n"))).unwrap();
        tx.try_send(event()).unwrap();
        let joined = coalesce(rx.try_recv().unwrap(), &mut rx);
        assert_eq!(joined, [&b"bookmark\n"[..], &expected].concat(), "after a frame");
    }
}
