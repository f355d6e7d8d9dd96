//! Watch streams: newline-framed JSON events over a chunked response.
//!
//! A watch starts from a resource version (or from the current state, sent as ADDED
//! events), then follows the store's watch. Frames go through a bounded channel; a
//! client that reads too slowly stops the pump, the store watcher then falls behind
//! its ring and the client gets an ERROR event with a 410 Status and re-lists.
//! Memory per watcher is bounded by the channel.

use crate::filter::Filter;
use crate::object::stamped;
use crate::reply::{self, Body, Output};
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
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Frames buffered per watcher before the pump waits for the client.
const FRAMES_BUFFERED: usize = 256;

/// A response body fed by a channel of frames.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(|bytes| Ok(Frame::data(bytes))))
    }
}

struct Stream {
    info: &'static ResourceInfo,
    filter: Filter,
    output: Output,
    bookmarks: bool,
    tx: mpsc::Sender<Bytes>,
}

impl Stream {
    /// Sends one event; `false` when the client is gone.
    async fn send(&self, kind: &str, object: &[u8]) -> bool {
        let mut frame = Vec::with_capacity(object.len() + 32);
        frame.extend_from_slice(b"{\"type\":\"");
        frame.extend_from_slice(kind.as_bytes());
        frame.extend_from_slice(b"\",\"object\":");
        match self.output {
            Output::Json => frame.extend_from_slice(object),
            Output::Table => {
                let Ok(value) = serde_json::from_slice::<Value>(object) else { return true };
                let rv = value["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
                frame.extend_from_slice(&table::render(self.info, &[value], &rv, None));
            }
        }
        frame.extend_from_slice(b"}\n");
        self.tx.send(Bytes::from(frame)).await.is_ok()
    }

    async fn bookmark(&self, revision: Revision, initial_events_end: bool) -> bool {
        let mut metadata = json!({"resourceVersion": revision.get().to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": metadata});
        let frame = format!("{{\"type\":\"BOOKMARK\",\"object\":{object}}}\n");
        self.tx.send(Bytes::from(frame)).await.is_ok()
    }

    async fn error(&self, error: &ApiError) {
        let frame = format!("{{\"type\":\"ERROR\",\"object\":{}}}\n", error.to_json());
        let _ = self.tx.send(Bytes::from(frame)).await;
    }

    fn matches(&self, bytes: &[u8]) -> bool {
        self.filter.is_everything() || serde_json::from_slice::<Value>(bytes).is_ok_and(|v| self.filter.matches(&v))
    }

    /// Translates one store event into what this watcher sees: with a selector, an
    /// object that starts or stops matching appears as ADDED or DELETED.
    async fn event(&self, event: &keelson_store::Event) -> bool {
        let revision = event.revision.get();
        let now = event.value.as_ref().filter(|v| self.matches(v));
        let before = event.prev_value.as_ref().filter(|v| self.matches(v));
        match (event.kind, now, before) {
            (EventType::Added, Some(value), _) => self.send("ADDED", &stamped(value, revision)).await,
            (EventType::Modified, Some(value), Some(_)) => self.send("MODIFIED", &stamped(value, revision)).await,
            (EventType::Modified, Some(value), None) => self.send("ADDED", &stamped(value, revision)).await,
            (EventType::Modified, None, Some(_)) => {
                let value = event.value.as_ref().expect("a modified event has a value");
                self.send("DELETED", &stamped(value, revision)).await
            }
            (EventType::Deleted, _, Some(prev)) => self.send("DELETED", &stamped(prev, revision)).await,
            _ => true,
        }
    }
}

/// Starts a watch and returns the streaming response.
pub fn start(
    state: Arc<ApiState>,
    route: &ResourceRoute,
    query: &Query,
    output: Output,
) -> Result<Response<Body>, ApiError> {
    let info = route.info;
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
    let stream = Stream { info, filter, output, bookmarks, tx };
    // Resolve the start point before answering, so a bad revision is a clean error.
    let (initial_items, start) = if initial {
        let page = state
            .store
            .list(prefix.as_bytes(), &ListOptions { at: ReadAt::Latest, limit: 0, after_key: None })
            .map_err(|e| reply::store_error(e, (info.group, info.plural), ""))?;
        let revision = page.revision;
        (page.items, revision)
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
    let content_type = match output {
        Output::Json => reply::JSON,
        Output::Table => reply::TABLE_JSON,
    };
    let mut response = Response::new(ChannelBody(rx).boxed());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(::http::header::CONTENT_TYPE, ::http::HeaderValue::from_static(content_type));
    Ok(response)
}

async fn pump(
    state: Arc<ApiState>,
    stream: Stream,
    watcher: Result<keelson_store::Watcher, StoreError>,
    initial_items: Vec<(Bytes, keelson_store::Record)>,
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
    for (_, record) in &initial_items {
        let Some(value) = &record.value else { continue };
        if stream.matches(value) && !stream.send("ADDED", &stamped(value, record.mod_revision.get())).await {
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
