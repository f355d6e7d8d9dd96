//! HTTP plumbing: body types, response builders, content negotiation, and the one
//! place where errors become Kubernetes `Status` responses.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use keelson_engine::{ApiError, StatusReason};
use keelson_store::StoreError;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub const JSON: &str = "application/json";
pub const TABLE_JSON: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Largest request body accepted, as kube-apiserver's limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub fn respond(code: StatusCode, content_type: &'static str, bytes: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = code;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn json(code: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    respond(code, JSON, bytes)
}

/// The response for a failed request: a `v1 Status` with the matching code.
pub fn error(error: &ApiError) -> Response<Body> {
    let body = serde_json::to_vec(&error.to_json()).expect("a Status serializes");
    let code = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(code, body);
    if let Some(seconds) = error.retry_after_seconds {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// What a client wants back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    /// A `meta.k8s.io/v1` Table (kubectl's human output).
    Table,
    /// Only the object's metadata, as a `meta.k8s.io` `PartialObjectMetadata` of this
    /// version (`v1` or `v1beta1`): what metadata-only clients (the garbage collector,
    /// the kube crate's `get_metadata`) ask for.
    Metadata(&'static str),
    /// A list as a `PartialObjectMetadataList`.
    MetadataList(&'static str),
}

/// How an `Output::Json` response is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Json,
    /// `application/vnd.kubernetes.protobuf`, for clients that list it first (Go's
    /// typed clients do, with JSON as the alternative). Handlers always build JSON;
    /// [`to_protobuf`] re-encodes it on the way out.
    Protobuf,
}

impl Output {
    /// Picks the first acceptable media type. Kubernetes clients offer protobuf with
    /// JSON as an alternative; a client that accepts nothing we serve gets 406.
    pub fn from_accept(accept: Option<&str>) -> Result<(Output, Wire), ApiError> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Ok((Output::Json, Wire::Json)) };
        for media in accept.split(',') {
            let mut parts = media.split(';').map(str::trim);
            let base = parts.next().unwrap_or("");
            let (mut as_kind, mut group, mut version) = (None, None, None);
            for (key, value) in parts.filter_map(|p| p.split_once('=')) {
                match key {
                    "as" => as_kind = Some(value),
                    "g" => group = Some(value),
                    "v" => version = Some(value),
                    _ => {}
                }
            }
            if let Some(as_kind) = as_kind {
                // Conversions are served in JSON only; a protobuf one is skipped for
                // the client's next choice.
                if base != JSON || group != Some("meta.k8s.io") {
                    continue;
                }
                let version = match version {
                    Some("v1") => "v1",
                    Some("v1beta1") => "v1beta1",
                    _ => continue,
                };
                match as_kind {
                    "Table" => return Ok((Output::Table, Wire::Json)),
                    "PartialObjectMetadata" => return Ok((Output::Metadata(version), Wire::Json)),
                    "PartialObjectMetadataList" => return Ok((Output::MetadataList(version), Wire::Json)),
                    _ => continue,
                }
            }
            match base {
                "application/json" | "*/*" | "application/*" | "application/yaml" => {
                    return Ok((Output::Json, Wire::Json))
                }
                PROTOBUF => return Ok((Output::Json, Wire::Protobuf)),
                _ => {}
            }
        }
        Err(ApiError::new(
            StatusReason::NotAcceptable,
            format!("only the following media types are accepted: {JSON}, {PROTOBUF}, {TABLE_JSON}"),
        ))
    }

    /// The content type of a response in this output.
    pub fn content_type(self) -> &'static str {
        match self {
            Output::Json => JSON,
            Output::Table => TABLE_JSON,
            Output::Metadata("v1beta1") => "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1",
            Output::Metadata(_) => "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            Output::MetadataList("v1beta1") => "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1",
            Output::MetadataList(_) => "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        }
    }

    /// The 406 for a conversion that does not fit the response: an object asked for
    /// as a list, or a list as an object. `go_type` names the response's type the way
    /// Kubernetes' message does (`*v1.Pod`).
    pub fn mismatch(self, go_type: &str) -> ApiError {
        let message = match self {
            Output::Metadata(_) => {
                format!("you requested PartialObjectMetadata, but the requested object is a list ({go_type})")
            }
            _ => format!("you requested PartialObjectMetadataList, but the requested object is not a list ({go_type})"),
        };
        ApiError::new(StatusReason::NotAcceptable, message)
    }
}

/// An object's `PartialObjectMetadata`: its metadata alone.
pub fn partial_metadata(object: &serde_json::Value, version: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
    })
}

/// A `PartialObjectMetadataList` body of these objects.
pub fn partial_metadata_list<'a>(
    objects: impl Iterator<Item = &'a serde_json::Value>,
    version: &str,
    resource_version: &str,
    next_continue: Option<&str>,
) -> Vec<u8> {
    let mut metadata = serde_json::json!({"resourceVersion": resource_version});
    if let Some(token) = next_continue {
        metadata["continue"] = token.into();
    }
    let items: Vec<serde_json::Value> = objects.map(|o| partial_metadata(o, version)).collect();
    let list = serde_json::json!({"kind": "PartialObjectMetadataList", "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": metadata, "items": items});
    serde_json::to_vec(&list).expect("a list serializes")
}

/// Re-encodes a JSON response as Kubernetes protobuf. Anything else (Tables, logs,
/// upgrades) and any object the protobuf table cannot express stay as they are:
/// clients that ask for protobuf accept JSON too.
pub async fn to_protobuf(response: Response<Body>) -> Response<Body> {
    if response.headers().get(CONTENT_TYPE).is_none_or(|c| c != JSON) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error(&ApiError::internal(e)),
    };
    let encoded =
        serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|value| crate::protobuf::encode(&value).ok());
    let body = match encoded {
        Some(encoded) => {
            parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
            full(encoded)
        }
        None => full(bytes),
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// How a store failure reaches the client.
pub fn store_error(error: StoreError, group_resource: (&str, &str), name: &str) -> ApiError {
    let (group, resource) = group_resource;
    match error {
        StoreError::AlreadyExists { .. } => ApiError::already_exists(group, resource, name),
        StoreError::NotFound { .. } => ApiError::not_found(group, resource, name),
        StoreError::Conflict { .. } => ApiError::stale_object(group, resource, name),
        StoreError::Compacted { requested, compacted } => ApiError::gone_too_old(requested.get(), compacted.get()),
        StoreError::WatcherLagged { .. } => {
            ApiError::expired("the watch fell behind the event buffer; re-list to continue")
        }
        StoreError::FutureRevision { requested, current } => ApiError::new(
            StatusReason::Timeout,
            format!("Too large resource version: {requested}, current resource version: {current}"),
        ),
        StoreError::Busy => ApiError::too_many_requests(1),
        StoreError::ValueTooLarge { limit, .. } => ApiError::request_entity_too_large(limit),
        StoreError::Closed => ApiError::new(StatusReason::ServiceUnavailable, "the server is shutting down"),
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(Output::from_accept(Some(table)).unwrap(), (Output::Table, Wire::Json));
        assert_eq!(
            Output::from_accept(Some("application/vnd.kubernetes.protobuf,application/json")).unwrap(),
            (Output::Json, Wire::Protobuf)
        );
        assert_eq!(
            Output::from_accept(Some("application/json, application/vnd.kubernetes.protobuf")).unwrap(),
            (Output::Json, Wire::Json)
        );
        assert_eq!(
            Output::from_accept(Some(
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"
            ))
            .unwrap(),
            (Output::Json, Wire::Json)
        );
        assert_eq!(Output::from_accept(None).unwrap(), (Output::Json, Wire::Json));
        // What client-go's metadata client and the kube crate send.
        let metadata = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(Output::from_accept(Some(metadata)).unwrap(), (Output::Metadata("v1"), Wire::Json));
        let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1";
        assert_eq!(Output::from_accept(Some(list)).unwrap(), (Output::MetadataList("v1beta1"), Wire::Json));
        let unknown_version = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v2,application/json";
        assert_eq!(Output::from_accept(Some(unknown_version)).unwrap(), (Output::Json, Wire::Json));
        assert_eq!(Output::from_accept(Some("text/html")).unwrap_err().code(), 406);
    }

    #[tokio::test]
    async fn json_responses_become_protobuf_and_others_stay() {
        let object = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}"#;
        let response = to_protobuf(json(StatusCode::CREATED, &object[..])).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[CONTENT_TYPE], PROTOBUF);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(crate::protobuf::decode(&body).unwrap()["data"]["k"], "v");

        let widget = br#"{"apiVersion":"example.com/v1","kind":"Widget"}"#;
        let response = to_protobuf(json(StatusCode::OK, &widget[..])).await;
        assert_eq!(response.headers()[CONTENT_TYPE], JSON);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), &widget[..]);

        let table = to_protobuf(respond(StatusCode::OK, TABLE_JSON, "{}")).await;
        assert_eq!(table.headers()[CONTENT_TYPE], TABLE_JSON);
    }
}
