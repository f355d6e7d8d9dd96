//! The REST verbs on resources: get, list, create, update, patch, delete,
//! deletecollection, and the subresources (status, scale, binding, eviction, log).
//!
//! Every write follows one path: build the candidate object, restore what the server
//! owns (uid, creation time, status on the main resource, ...), let the kind's codec
//! decode, default and validate it, then commit it with a precondition on the mod
//! revision it was computed from. A conflict caused by another writer is retried from
//! fresh state unless the client pinned a `resourceVersion`, as kube-apiserver's
//! `GuaranteedUpdate` does. A write that changes nothing is not written.

use crate::admission;
use crate::admitted::{Admitted, AsValue};
use crate::apply;
use crate::auth::User;
use crate::authz::escalation;
use crate::binding;
use crate::certificates;
use crate::filter::Filter;
use crate::kinds::Write;
use crate::limit_ranger;
use crate::object::{self, stamped};
use crate::patch::{self, PatchType};
use crate::pod_security;
use crate::reply::{self, Body, Output, Wire};
use crate::resource_quota;
use crate::resources::ResourceInfo;
use crate::route::{Query, ResourceRoute};
use crate::server::ApiState;
use crate::service_alloc;
use crate::table;
use ::http::StatusCode;
use base64::Engine;
use bytes::Bytes;
use hyper::Response;
use keelson_engine::k8s_openapi::api::core::v1::{Pod, PodStatus};
use keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use keelson_engine::{ApiError, Revision, StatusReason};
use keelson_store::{ListOptions, ReadAt, StoreError};
use serde_json::{json, Value};

/// Attempts at a write that keeps losing races before the client gets 409.
const UPDATE_ATTEMPTS: usize = 16;
/// Items fetched from the store per round when a list filters by selector.
const LIST_CHUNK: usize = 500;

/// Where the first page of a list reads.
enum ListAt {
    /// The state at exactly this revision (from the store's history).
    Exact(Revision),
    /// Any state at or after this revision (`None`: any state at all).
    Recent(Option<Revision>),
}

/// `fieldValidation`: what to do with fields the kind does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

/// One request on a resource.
pub struct Call<'a> {
    pub state: &'a ApiState,
    pub route: &'a ResourceRoute,
    pub query: &'a Query,
    pub output: Output,
    /// The encoding asked for. Responses are built as JSON and re-encoded on the way
    /// out, except reads the watch cache can answer from its protobuf memo.
    pub wire: Wire,
    /// `Warning` headers to send back.
    pub warnings: Vec<String>,
    /// The name a create stored its object under (the audit log names it).
    pub created: Option<String>,
    /// What admission adds to the request's audit event; `None` when the server keeps
    /// no audit log, so nothing is gathered for it.
    pub audit_annotations: Option<pod_security::AuditAnnotations>,
    /// The client's `User-Agent`: the default field manager is its product name.
    pub user_agent: &'a str,
    /// Set while server-side apply creates an object: its managed fields are the apply's.
    applying: bool,
    /// Who asks; `None` for the server's own writes (bootstrap), which nothing limits.
    /// RBAC writes are checked against what this user holds.
    pub user: Option<&'a User>,
}

type Reply = Result<Response<Body>, ApiError>;

/// A create ready to commit: the bytes to store, the object's name, the admitted object.
type Prepared = (Vec<u8>, String, Admitted);

impl<'a> Call<'a> {
    pub fn new(
        state: &'a ApiState,
        route: &'a ResourceRoute,
        query: &'a Query,
        output: Output,
        user_agent: &'a str,
    ) -> Call<'a> {
        Call {
            state,
            route,
            query,
            output,
            wire: Wire::Json,
            warnings: Vec::new(),
            created: None,
            audit_annotations: state.audit.as_ref().map(|_| Vec::new()),
            user_agent,
            applying: false,
            user: None,
        }
    }

    fn info(&self) -> &'static ResourceInfo {
        self.route.info
    }

    fn namespace(&self) -> Option<&str> {
        self.route.namespace.as_deref()
    }

    fn name(&self) -> &str {
        self.route.name.as_deref().unwrap_or("")
    }

    /// `fieldManager`, or like kube-apiserver the user agent's product (`kubectl/v1.33 ...` → `kubectl`).
    fn field_manager(&self) -> String {
        match self.query.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(manager) => manager.to_owned(),
            None => self.user_agent.split('/').next().unwrap_or_default().chars().take(128).collect(),
        }
    }

    /// Runs `f` with the field-ownership context of this request: the kind's schema and
    /// the writer (manager, API version, subresource, time).
    fn with_writer<R>(
        &self,
        f: impl FnOnce(&apply::types::Types, &str, &apply::Writer<'_>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let info = self.info();
        let types = &self.state.openapi.types;
        let definition = types
            .kind(info.group, info.kind)
            .ok_or_else(|| ApiError::internal(format!("no schema for {}", info.kind)))?;
        let manager = self.field_manager();
        let now = object::now_rfc3339();
        let api_version = info.api_version();
        let writer = apply::Writer {
            manager: &manager,
            api_version: &api_version,
            subresource: self.route.subresource.as_deref(),
            has_status: info.has_status(),
            now: &now,
        };
        f(types, definition, &writer)
    }

    /// Records in `object`'s managedFields what this write changed (`old`: before it).
    fn record_managed_fields(&self, old: Option<&Value>, object: &mut Value) -> Result<(), ApiError> {
        self.with_writer(|types, definition, writer| {
            apply::record_update(types, definition, writer, old, object);
            Ok(())
        })
    }

    /// Server-side apply of `config` onto `live` (`None`: create).
    fn server_side_apply(&self, live: Option<&Value>, config: &Value) -> Result<Value, ApiError> {
        let force = self.query.flag("force");
        self.with_writer(|types, definition, writer| apply::apply(types, definition, writer, live, config, force))
    }

    fn key(&self) -> String {
        self.info().key(self.namespace(), self.name())
    }

    fn group_resource(&self) -> (&'static str, &'static str) {
        (self.info().group, self.info().plural)
    }

    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.query.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("unsupported dry run value: {other:?}"))),
        }
    }

    fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.query.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other:?}; supported values are Ignore, Warn, Strict"
            ))),
        }
    }

    fn not_found(&self) -> ApiError {
        ApiError::not_found(self.info().group, self.info().plural, self.name())
    }

    fn store_error(&self, error: StoreError) -> ApiError {
        reply::store_error(error, self.group_resource(), self.name())
    }

    /// Runs the kind's codec and applies `fieldValidation` to unknown fields.
    fn admit(&mut self, input: &Value, write: Write<'_>) -> Result<Admitted, ApiError> {
        let validation = self.field_validation()?;
        let mut unknown = Vec::new();
        let mut out =
            self.info().codec.admit(input, write, (validation != FieldValidation::Ignore).then_some(&mut unknown))?;
        self.check_admitted(&mut out, write)?;
        if !unknown.is_empty() {
            let described: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
            if validation == FieldValidation::Strict {
                let kind = self.info().kind;
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
                    self.info().version,
                    described.join(", ")
                )));
            }
            self.warnings.extend(described);
        }
        Ok(out)
    }

    /// What an object the kind's codec admitted must also pass, by who writes it: RBAC
    /// escalation, a CertificateSigningRequest's signer, NodeRestriction.
    fn check_admitted(&self, out: &mut Admitted, write: Write<'_>) -> Result<(), ApiError> {
        if let Some(user) = self.user.filter(|_| self.info().group == escalation::RBAC_GROUP) {
            let old = match write {
                Write::Create => None,
                Write::Update { old } => Some(old),
            };
            let namespace = self.namespace().unwrap_or("");
            let out = out.as_value()?;
            escalation::check(&self.state.cache.authorizer, user, self.info().plural, namespace, out, old)?;
        }
        if let (Some(user), Write::Update { old }) = (self.user, write) {
            if self.info().group == certificates::GROUP && self.info().kind == certificates::KIND {
                certificates::check_signer(&self.state.cache.authorizer, user, out.as_value()?, old)?;
            }
        }
        let restricted = crate::node_restriction::restricts(self.info());
        if let Some(node) = self.user.and_then(crate::authz::node::node_name).filter(|_| restricted) {
            let old = match write {
                Write::Create => None,
                Write::Update { old } => Some(old),
            };
            let subresource = self.route.subresource.as_deref();
            crate::node_restriction::check_write(node, self.info(), subresource, out.as_value()?, old)?;
        }
        Ok(())
    }

    /// Renders one stored object for the client.
    fn object_response(&self, code: StatusCode, stored: &[u8], revision: u64) -> Reply {
        let bytes = self.served(stamped(stored, revision))?;
        let output = self.output;
        let parsed = || serde_json::from_slice::<Value>(&bytes).map_err(ApiError::internal);
        let body = match output {
            Output::Json => return Ok(reply::json(code, bytes)),
            Output::Table => table::render(self.info(), std::slice::from_ref(&parsed()?), &revision.to_string(), None),
            Output::Metadata(version) => {
                serde_json::to_vec(&reply::partial_metadata(&parsed()?, version)).map_err(ApiError::internal)?
            }
            Output::MetadataList(_) => return Err(output.mismatch(&self.go_type(""))),
        };
        Ok(reply::respond(code, output.content_type(), body))
    }

    /// Stamped stored bytes in the form this resource serves (unchanged unless the
    /// resource is a view of another's storage).
    fn served(&self, bytes: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        if self.info().view.is_none() {
            return Ok(bytes);
        }
        let mut value: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        self.info().to_served(&mut value);
        serde_json::to_vec(&value).map_err(ApiError::internal)
    }

    /// The bytes to store for an object in the served form.
    fn storage_bytes(&self, object: &Value) -> Vec<u8> {
        if self.info().view.is_none() {
            return object::encode(object);
        }
        let mut stored = object.clone();
        self.info().to_stored(&mut stored);
        object::encode(&stored)
    }

    /// [`storage_bytes`](Call::storage_bytes) of an admitted object: encoded from its
    /// type when it is typed and the resource is not a view.
    fn admitted_bytes(&self, object: &mut Admitted) -> Result<Vec<u8>, ApiError> {
        if self.info().view.is_none() {
            return object.encode();
        }
        Ok(self.storage_bytes(object.value()?))
    }

    /// How Kubernetes' messages name the Go type of this resource's objects
    /// (`*v1.Pod`), or of its lists with `suffix` `"List"`.
    fn go_type(&self, suffix: &str) -> String {
        format!("*{}.{}{suffix}", self.info().version, self.info().kind)
    }

    /// The object's stored bytes and revision, read from the store: the state a write
    /// is computed from must be the latest.
    fn stored(&self) -> Result<Option<(Bytes, Revision)>, ApiError> {
        let record = self.state.store.get(self.key().as_bytes(), ReadAt::Latest).map_err(|e| self.store_error(e))?;
        match record {
            Some(record) => {
                let bytes = record.value.ok_or_else(|| ApiError::internal("live record without a value"))?;
                Ok(Some((bytes, record.mod_revision)))
            }
            None => Ok(None),
        }
    }

    fn current(&self) -> Result<Option<(Value, Bytes, Revision)>, ApiError> {
        let Some((bytes, revision)) = self.stored()? else { return Ok(None) };
        let mut value = object::decode_stored(&bytes, revision.get()).map_err(ApiError::internal)?;
        self.info().to_served(&mut value);
        Ok(Some((value, bytes, revision)))
    }
}

/// The first page of cached `entries` at `revision`: what `select` makes of each
/// entry it keeps (`None`: left out), at most `limit` of them, and the continue token
/// when a kept entry follows the page.
fn cached_page<T>(
    limit: usize,
    prefix: &str,
    entries: &[(Bytes, crate::cache::Cached)],
    revision: Revision,
    select: &mut dyn FnMut(&crate::cache::Cached) -> Result<Option<T>, ApiError>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let mut items = Vec::new();
    let mut last_key: &[u8] = b"";
    for (key, cached) in entries {
        let Some(item) = select(cached)? else { continue };
        if limit > 0 && items.len() == limit {
            return Ok((items, Some(encode_continue(revision, last_key, prefix))));
        }
        items.push(item);
        last_key = key;
    }
    Ok((items, None))
}

/// What was reserved for a Service about to be created.
#[derive(Default)]
struct Reserved {
    ip: Option<String>,
    node_ports: Vec<u16>,
}

/// The media type of a `Content-Type` (no parameters); JSON when none is given.
fn media_type(content_type: Option<&str>) -> &str {
    content_type.unwrap_or("application/json").split(';').next().unwrap_or("").trim()
}

/// Whether a body of this `Content-Type` is a plain JSON object (not a patch).
pub fn is_json(content_type: Option<&str>) -> bool {
    matches!(media_type(content_type), "application/json" | "")
}

/// Parses a request body (JSON or YAML) into an object.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let media = media_type(content_type);
    let value: Value = match media {
        "application/json" | "" | "application/merge-patch+json" | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded: {e}")))?,
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded: {e}")))?,
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded as YAML: {e}")))?,
        _ => {
            return Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, not {media}"
                ),
            ))
        }
    };
    Ok(value)
}

/// `apiVersion`/`kind` in a body must match the endpoint; missing ones are filled in.
fn check_type_meta(value: &mut Value, info: &ResourceInfo) -> Result<(), ApiError> {
    let Some(map) = value.as_object_mut() else {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    };
    let expected = info.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != expected => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version ({expected})"
            )))
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({given}) does not match the expected kind ({})",
                info.kind
            )))
        }
        _ => {}
    }
    map.insert("apiVersion".into(), Value::String(expected));
    map.insert("kind".into(), Value::String(info.kind.into()));
    Ok(())
}

/// What the server sets on a new object's metadata, typed: the namespace of the request,
/// a generated name, a fresh uid and creation time, `generation` 1 where counted, and
/// nothing of what a client may not set. The same rules as `Call::create` and
/// `Call::prepare_create` apply to a JSON value (`typed_creates_store_what_general_creates_store`
/// holds them equal). Returns whether the name was generated.
fn stamp_new_metadata(meta: &mut ObjectMeta, info: &ResourceInfo, namespace: Option<&str>) -> Result<bool, ApiError> {
    if let Some(ns) = namespace {
        match meta.namespace.as_deref() {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => meta.namespace = Some(ns.to_string()),
        }
    }
    if meta.resource_version.as_deref().is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
    }
    let prefix = meta.generate_name.as_deref().filter(|g| !g.is_empty());
    let generated = meta.name.as_deref().unwrap_or("").is_empty() && prefix.is_some();
    if let Some(prefix) = prefix.filter(|_| generated) {
        meta.name = Some(format!("{prefix}{}", random_suffix()));
    }
    meta.resource_version = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.managed_fields = None;
    meta.self_link = None;
    meta.uid = Some(uuid::Uuid::new_v4().to_string());
    meta.creation_timestamp = Some(Time(jiff::Timestamp::now()));
    meta.generation = tracks_generation(info).then_some(1);
    Ok(generated)
}

/// Whether create attempt `attempt` (from 0) should be tried again under another
/// generated name: the name it drew is taken, and it has been retried fewer than
/// `GENERATED_NAME_RETRIES` times.
fn retry_generated_name(error: &ApiError, generated: bool, attempt: usize) -> bool {
    const GENERATED_NAME_RETRIES: usize = 8;
    generated && error.reason == StatusReason::AlreadyExists && attempt < GENERATED_NAME_RETRIES
}

/// Kinds whose `metadata.generation` counts spec changes.
fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(info.group, "apps" | "batch" | "policy") && info.kind != "ControllerRevision"
        || matches!(info.kind, "PriorityClass")
}

/// Everything but metadata and status: what a generation counts.
fn spec_part(value: &Value) -> Vec<(&String, &Value)> {
    value.as_object().map_or_else(Vec::new, |m| {
        m.iter().filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")).collect()
    })
}

fn random_suffix() -> String {
    // Kubernetes' alphabet for generated names: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let uuid = uuid::Uuid::new_v4();
    uuid.as_bytes()[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Whether the resource is core's pods.
fn is_pod(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "Pod"
}

/// Whether a new object of the resource gets the status it starts with: clients may
/// not create objects with status (a Node's is its agent's to report).
fn starts_with_status(info: &ResourceInfo) -> bool {
    info.has_status() && info.kind != "Node"
}

/// The status each kind starts with, on a JSON value; a pod's is set on the typed
/// pod after admission ([`pod_initial_status`]), so here it is only cleared.
fn initial_status(info: &ResourceInfo, object: &mut Value) {
    if !starts_with_status(info) {
        return;
    }
    let status = match info.kind {
        "PersistentVolume" | "PersistentVolumeClaim" => json!({"phase": "Pending"}),
        "Namespace" => json!({"phase": "Active"}),
        _ => {
            object::remove(object, &["status"]);
            return;
        }
    };
    object::set(object, &["status"], status);
}

/// A new pod's status: `Pending`, with its QoS class.
fn pod_initial_status(pod: &Pod) -> PodStatus {
    PodStatus { phase: Some("Pending".to_owned()), qos_class: Some(qos_class(pod).to_owned()), ..Default::default() }
}

/// `Guaranteed` when every container has equal cpu and memory requests and limits,
/// `BestEffort` when none has any, `Burstable` otherwise.
fn qos_class(pod: &Pod) -> &'static str {
    let containers = pod.spec.as_ref().map(|spec| spec.containers.as_slice()).unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for container in containers {
        let requests = container.resources.as_ref().and_then(|r| r.requests.as_ref());
        let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
        any |= requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty());
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Restores on `new` the metadata only the server may set, from `old`.
fn keep_server_metadata(new: &mut Value, old: &Value) {
    for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match object::get(old, &["metadata", field]) {
            Some(value) => object::set(new, &["metadata", field], value.clone()),
            None => {
                object::remove(new, &["metadata", field]);
            }
        }
    }
    for field in ["name", "namespace"] {
        if object::get_str(new, &["metadata", field]).unwrap_or("").is_empty() {
            if let Some(value) = object::get(old, &["metadata", field]) {
                object::set(new, &["metadata", field], value.clone());
            }
        }
    }
    object::remove(new, &["metadata", "managedFields"]);
    object::remove(new, &["metadata", "selfLink"]);
}

fn finalizers_empty(value: &Value) -> bool {
    object::get(value, &["metadata", "finalizers"]).and_then(Value::as_array).is_none_or(Vec::is_empty)
}

fn is_terminating(value: &Value) -> bool {
    object::get(value, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null())
}

/// What a Binding's metadata asks of the pod it binds (kube's storage preconditions).
#[derive(Clone, Copy, Default)]
pub struct BindPreconditions<'a> {
    pub uid: Option<&'a str>,
    pub resource_version: Option<&'a str>,
}

/// How an update computes the new object from the current one.
pub enum Change<'a> {
    /// PUT of a whole object (on the resource or its status).
    Replace(&'a Value),
    Patch(PatchType, &'a Value),
    /// PUT/PATCH on `scale`: the new replica count comes from the patched Scale.
    Scale(Option<PatchType>, &'a Value),
    /// Start graceful deletion: set the deletion timestamp and finalizers.
    MarkDeleted {
        grace_seconds: i64,
        add_finalizer: Option<&'static str>,
    },
}

fn rfc3339_after(seconds: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds.max(0));
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The `autoscaling/v1 Scale` view of a scalable object.
pub fn scale_of(object: &Value) -> Value {
    let selector = crate::filter::spec_selector_text(object);
    let metadata = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"], "namespace": metadata["namespace"], "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"], "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": object::get(object, &["spec", "replicas"]).cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object::get(object, &["status", "replicas"]).cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

impl Call<'_> {
    /// The current object, or 404.
    pub fn current_value(&self) -> Result<Value, ApiError> {
        self.current()?.map(|(value, _, _)| value).ok_or_else(|| self.not_found())
    }

    /// Names of the collection's objects that match the request's selectors.
    pub fn list_values(&self) -> Result<Vec<String>, ApiError> {
        let info = self.info();
        let filter = Filter::parse(self.query.get("labelSelector"), self.query.get("fieldSelector"), info)?;
        let prefix = info.prefix(self.namespace());
        let page =
            self.state.store.list(prefix.as_bytes(), &ListOptions::default()).map_err(|e| self.store_error(e))?;
        let mut names = Vec::new();
        for (_, record) in page.items {
            let Some(bytes) = record.value else { continue };
            let mut value: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
            info.to_served(&mut value);
            if filter.matches(&value) {
                names.push(object::name(&value).to_string());
            }
        }
        Ok(names)
    }

    /// GET of one object (or its status or scale), from the watch cache: current unless
    /// `resourceVersion` says an older state will do.
    pub async fn get(&mut self) -> Reply {
        let min = match self.query.int("resourceVersion")? {
            Some(0) => None,
            Some(rv) => Some(self.not_future(rv)?),
            None => Some(self.state.store.current_revision()),
        };
        let key = self.key();
        let found = match self.state.cache.ready_for(min).await {
            true => self.state.cache.get(key.as_bytes()),
            false => None,
        };
        if let (Some(Some(cached)), true, None) = (&found, self.protobuf_from_cache(), &self.route.subresource) {
            if let Some(body) = cached.protobuf() {
                let info = self.info();
                let envelope = crate::protobuf::envelope(&info.api_version(), info.kind, &body);
                return Ok(reply::respond(StatusCode::OK, reply::PROTOBUF, envelope));
            }
        }
        let (stored, revision) = match found {
            Some(cached) => cached.map(|c| (c.value, c.mod_revision)),
            None => self.stored()?,
        }
        .ok_or_else(|| self.not_found())?;
        match self.route.subresource.as_deref() {
            Some("scale") => {
                let value = object::decode_stored(&stored, revision.get()).map_err(ApiError::internal)?;
                Ok(reply::json(StatusCode::OK, serde_json::to_vec(&scale_of(&value)).map_err(ApiError::internal)?))
            }
            _ => self.object_response(StatusCode::OK, &stored, revision.get()),
        }
    }

    /// `rv` as a revision the store has reached, or the "too large resource version" error.
    fn not_future(&self, rv: i64) -> Result<Revision, ApiError> {
        let current = self.state.store.current_revision();
        if rv as u64 > current.get() {
            return Err(self.store_error(StoreError::FutureRevision { requested: Revision(rv as u64), current }));
        }
        Ok(Revision(rv as u64))
    }

    /// Lists a collection: consistent at one revision, filtered, paged. The first page
    /// comes from the watch cache; later pages (and exact-revision lists) read the
    /// store at the revision the first page was.
    pub async fn list(&mut self) -> Reply {
        let info = self.info();
        if let Output::Metadata(_) = self.output {
            return Err(self.output.mismatch(&self.go_type("List")));
        }
        let filter = Filter::parse(self.query.get("labelSelector"), self.query.get("fieldSelector"), info)?;
        let limit = self.query.int("limit")?.filter(|l| *l > 0).map_or(0, |l| l as usize);
        let prefix = info.prefix(self.namespace());
        let (at, after_key) = match self.query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (revision, key) = decode_continue(token, &prefix)?;
                (ReadAt::Revision(revision), Some(key))
            }
            None => match self.list_read_at()? {
                ListAt::Exact(revision) => (ReadAt::Revision(revision), None),
                ListAt::Recent(min) => {
                    if let Some(listed) = self.list_cached(&filter, limit, &prefix, min).await? {
                        return listed;
                    }
                    (ReadAt::Latest, None)
                }
            },
        };
        self.list_stored(&filter, limit, &prefix, at, after_key)
    }

    /// The first page of a list from the watch cache; `None` if the cache cannot serve it.
    async fn list_cached(
        &self,
        filter: &Filter,
        limit: usize,
        prefix: &str,
        min: Option<Revision>,
    ) -> Result<Option<Reply>, ApiError> {
        if !self.state.cache.ready_for(min).await {
            return Ok(None);
        }
        // Without a selector, one entry past the page tells whether another page follows.
        let want = if limit > 0 && filter.is_everything() { limit + 1 } else { 0 };
        let Some((entries, revision)) = self.state.cache.list(prefix.as_bytes(), want) else { return Ok(None) };
        if self.protobuf_from_cache() {
            // Each kept object's memoised encoding (`None`: it has none).
            let (bodies, next_continue) = cached_page(limit, prefix, &entries, revision, &mut |cached| {
                let kept =
                    filter.is_everything() || self.list_item(filter, &cached.value, cached.mod_revision)?.is_some();
                Ok(kept.then(|| cached.protobuf()))
            })?;
            if let Some(bodies) = bodies.into_iter().collect::<Option<Vec<Bytes>>>() {
                return Ok(Some(Ok(self.protobuf_list(&bodies, revision, next_continue))));
            }
        }
        let (items, next_continue) = cached_page(limit, prefix, &entries, revision, &mut |cached| {
            self.list_item(filter, &cached.value, cached.mod_revision)
        })?;
        Ok(Some(Ok(self.list_response(items, revision, next_continue))))
    }

    /// Whether this read can be answered from the watch cache's protobuf memo: the
    /// client asked for protobuf objects, and the resource serves what it stores.
    fn protobuf_from_cache(&self) -> bool {
        self.wire == Wire::Protobuf && self.output == Output::Json && self.info().view.is_none()
    }

    /// A protobuf list of objects' memoised encodings.
    fn protobuf_list(&self, bodies: &[Bytes], revision: Revision, next_continue: Option<String>) -> Response<Body> {
        let info = self.info();
        let list = crate::protobuf::list(
            &info.api_version(),
            &format!("{}List", info.kind),
            &revision.get().to_string(),
            next_continue.as_deref(),
            bodies.iter().map(|b| &b[..]),
        );
        reply::respond(StatusCode::OK, reply::PROTOBUF, list)
    }

    /// One stored object as a list item (stamped bytes, and the parsed object when a
    /// selector or Table output needs it); `None` if the selectors exclude it.
    fn list_item(
        &self,
        filter: &Filter,
        stored: &[u8],
        revision: Revision,
    ) -> Result<Option<(Vec<u8>, Value)>, ApiError> {
        let bytes = self.served(stamped(stored, revision.get()))?;
        if filter.is_everything() && self.output == Output::Json {
            return Ok(Some((bytes, Value::Null)));
        }
        let parsed: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        Ok(filter.matches(&parsed).then_some((bytes, parsed)))
    }

    /// A list read from the store at `at`, from `after_key` on.
    fn list_stored(
        &self,
        filter: &Filter,
        limit: usize,
        prefix: &str,
        mut at: ReadAt,
        mut after_key: Option<Bytes>,
    ) -> Reply {
        let mut items: Vec<(Vec<u8>, Value)> = Vec::new();
        let mut next_continue = None;
        let revision = loop {
            let want = if limit == 0 {
                0
            } else if filter.is_everything() {
                limit - items.len()
            } else {
                LIST_CHUNK
            };
            let options = ListOptions { at, limit: want, after_key: after_key.clone() };
            let page = self.state.store.list(prefix.as_bytes(), &options).map_err(|e| match e {
                StoreError::Compacted { .. } if self.query.get("continue").is_some() => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => self.store_error(other),
            })?;
            at = ReadAt::Revision(page.revision);
            let mut stopped_at = None;
            for (key, record) in &page.items {
                let Some(value) = &record.value else { continue };
                let Some(item) = self.list_item(filter, value, record.mod_revision)? else { continue };
                items.push(item);
                if limit > 0 && items.len() == limit {
                    stopped_at = Some(key.clone());
                    break;
                }
            }
            match (stopped_at, page.next_key) {
                (Some(key), _) => {
                    // Full: there is a next page if anything follows this key.
                    let more = self
                        .state
                        .store
                        .list(prefix.as_bytes(), &ListOptions { at, limit: 1, after_key: Some(key.clone()) })
                        .map_err(|e| self.store_error(e))?;
                    if !more.items.is_empty() {
                        next_continue = Some(encode_continue(page.revision, &key, prefix));
                    }
                    break page.revision;
                }
                (None, Some(next)) => after_key = Some(next),
                (None, None) => break page.revision,
            }
        };
        Ok(self.list_response(items, revision, next_continue))
    }

    /// The list body: a `<Kind>List` built from the items' bytes, or a Table.
    fn list_response(
        &self,
        items: Vec<(Vec<u8>, Value)>,
        revision: Revision,
        next_continue: Option<String>,
    ) -> Response<Body> {
        let info = self.info();
        let rv = revision.get().to_string();
        match self.output {
            Output::Table => {
                let values: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
                reply::respond(
                    StatusCode::OK,
                    reply::TABLE_JSON,
                    table::render(info, &values, &rv, next_continue.as_deref()),
                )
            }
            Output::Metadata(version) | Output::MetadataList(version) => reply::respond(
                StatusCode::OK,
                self.output.content_type(),
                reply::partial_metadata_list(items.iter().map(|(_, v)| v), version, &rv, next_continue.as_deref()),
            ),
            Output::Json => {
                let mut body = Vec::with_capacity(items.iter().map(|(b, _)| b.len() + 1).sum::<usize>() + 256);
                body.extend_from_slice(b"{\"kind\":\"");
                body.extend_from_slice(info.kind.as_bytes());
                body.extend_from_slice(b"List\",\"apiVersion\":\"");
                body.extend_from_slice(info.api_version().as_bytes());
                body.extend_from_slice(b"\",\"metadata\":{\"resourceVersion\":\"");
                body.extend_from_slice(rv.as_bytes());
                body.push(b'"');
                if let Some(token) = &next_continue {
                    body.extend_from_slice(b",\"continue\":\"");
                    body.extend_from_slice(token.as_bytes());
                    body.push(b'"');
                }
                body.extend_from_slice(b"},\"items\":[");
                for (i, (bytes, _)) in items.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(bytes);
                }
                body.extend_from_slice(b"]}");
                reply::json(StatusCode::OK, body)
            }
        }
    }

    /// Where a first list page reads, from `resourceVersion` and `resourceVersionMatch`.
    fn list_read_at(&self) -> Result<ListAt, ApiError> {
        let rv = self.query.int("resourceVersion")?;
        match (self.query.get("resourceVersionMatch").unwrap_or(""), rv) {
            ("", None) => Ok(ListAt::Recent(Some(self.state.store.current_revision()))),
            ("", Some(0)) => Ok(ListAt::Recent(None)),
            ("Exact", Some(rv)) if rv > 0 => Ok(ListAt::Exact(Revision(rv as u64))),
            ("Exact", _) => Err(ApiError::bad_request(
                "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\" or unset",
            )),
            ("NotOlderThan" | "", Some(rv)) => Ok(ListAt::Recent(Some(self.not_future(rv)?))),
            ("NotOlderThan", None) => {
                Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided"))
            }
            (other, _) => Err(ApiError::bad_request(format!(
                "unsupported resourceVersionMatch value: {other:?}; supported values: Exact, NotOlderThan"
            ))),
        }
    }

    /// POST on a collection.
    pub async fn create(&mut self, mut input: Value) -> Reply {
        let info = self.info();
        check_type_meta(&mut input, info)?;
        if let Some(ns) = self.namespace() {
            match object::namespace(&input) {
                Some(given) if given != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => object::set_str(&mut input, &["metadata", "namespace"], ns),
            }
        } else if info.namespaced {
            return Err(ApiError::new(StatusReason::NotFound, "the server could not find the requested resource"));
        }
        if object::get_str(&input, &["metadata", "resourceVersion"]).is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        let generate = object::name(&input)
            .is_empty()
            .then(|| object::get_str(&input, &["metadata", "generateName"]).unwrap_or("").to_string())
            .filter(|g| !g.is_empty());
        let dry_run = self.dry_run()?;
        for attempt in 0.. {
            // Only a generated name is ever tried again: otherwise the input is used once.
            let mut candidate = if generate.is_some() { input.clone() } else { std::mem::take(&mut input) };
            if let Some(prefix) = &generate {
                object::set_str(&mut candidate, &["metadata", "name"], &format!("{prefix}{}", random_suffix()));
            }
            let reserved =
                if dry_run { Reserved::default() } else { self.reserve_service_addresses(&mut candidate).await? };
            let result = self.create_once(candidate, dry_run).await;
            if result.is_err() {
                self.release_reserved(reserved).await;
            }
            match result {
                Ok(reply) => return Ok(reply),
                Err(error) if retry_generated_name(&error, generate.is_some(), attempt) => continue,
                Err(error) => return Err(error),
            }
        }
        unreachable!("the loop returns")
    }

    /// One create attempt.
    async fn create_once(&mut self, candidate: Value, dry_run: bool) -> Reply {
        let prepared = self.prepare_create(candidate)?;
        self.commit_create(prepared, dry_run).await
    }

    /// POST on a collection with a JSON body. When the body is a clean encoding of the
    /// kind it is decoded straight into its typed form (`KindCodec::admit_json_create`):
    /// no `serde_json::Value` tree is built from it, the costliest part of a create.
    /// Anything else (unknown fields, type meta to check, a kind whose create reserves
    /// addresses or records its requester) takes [`create`](Call::create); both store the
    /// same object (`typed_creates_store_what_general_creates_store`).
    pub async fn create_json(&mut self, body: &[u8]) -> Reply {
        let info = self.info();
        let general = self.applying
            || self.is_service()
            || (info.group == certificates::GROUP && info.kind == certificates::KIND)
            || (info.namespaced && self.namespace().is_none());
        if !general {
            self.field_validation()?;
            let dry_run = self.dry_run()?;
            for attempt in 0.. {
                let Some((prepared, generated)) = self.prepare_json_create(body)? else { break };
                match self.commit_create(prepared, dry_run).await {
                    Err(error) if retry_generated_name(&error, generated, attempt) => continue,
                    reply => return reply,
                }
            }
        }
        self.create(parse_body(Some("application/json"), body)?).await
    }

    /// [`prepare_create`](Call::prepare_create) for a JSON body decoded straight into
    /// the kind, with whether its name was generated; `None` when the body needs the
    /// general path.
    fn prepare_json_create(&mut self, body: &[u8]) -> Result<Option<(Prepared, bool)>, ApiError> {
        let info = self.info();
        let (state, namespace) = (self.state, self.route.namespace.as_deref());
        let mut named: Option<(String, bool, pod_security::Labels)> = None;
        let mut stamp = |meta: &mut ObjectMeta| -> Result<(), ApiError> {
            let generated = stamp_new_metadata(meta, info, namespace)?;
            let name = meta.name.clone().unwrap_or_default();
            let labels = match namespace {
                Some(ns) => admission::check_namespace(&state.cache, &state.deleted_namespaces, info, ns, &name)?,
                None => Default::default(),
            };
            named = Some((name, generated, labels));
            Ok(())
        };
        let Some(out) = info.codec.admit_json_create(body, &mut stamp) else { return Ok(None) };
        let mut out = out?;
        let (name, generated, pod_security) = named.expect("stamped before admission");
        // No kind validates its status and only Service's defaults (never here) add
        // one, so the status a create starts with can be set after admission (a pod's
        // in `finish_create`).
        if !is_pod(info) && starts_with_status(info) {
            initial_status(info, out.value()?);
        }
        self.check_admitted(&mut out, Write::Create)?;
        Ok(Some((self.finish_create(out, name, &pod_security)?, generated)))
    }

    /// Commits a prepared create (or, dry run, only answers with it).
    async fn commit_create(&mut self, (stored, name, mut admitted): Prepared, dry_run: bool) -> Reply {
        if let Some(ns) = self.namespace() {
            let state = &self.state;
            resource_quota::admit(&state.store, &state.cache, self.info(), ns, &mut admitted, None, dry_run).await?;
        }
        if dry_run {
            return self.object_response(StatusCode::CREATED, &stored, 0);
        }
        let key = self.info().key(self.namespace(), &name);
        let stored = Bytes::from(stored);
        match self.state.store.create(key, stored.clone()).await {
            Ok(outcome) => {
                self.created = Some(name);
                self.object_response(StatusCode::CREATED, &stored, outcome.revision.get())
            }
            Err(e) => Err(reply::store_error(e, self.group_resource(), &name)),
        }
    }

    fn is_service(&self) -> bool {
        self.info().group.is_empty() && self.info().kind == "Service"
    }

    /// `namespace/name` of the object, as the owner of what is reserved for it.
    fn owner(&self, object: &Value) -> String {
        format!("{}/{}", self.namespace().unwrap_or(""), object::name(object))
    }

    /// Reserves a new Service's ClusterIP and node ports before it is written.
    async fn reserve_service_addresses(&mut self, candidate: &mut Value) -> Result<Reserved, ApiError> {
        let mut reserved = Reserved::default();
        if !self.is_service() || object::get_str(candidate, &["spec", "type"]) == Some("ExternalName") {
            return Ok(reserved);
        }
        let owner = self.owner(candidate);
        let requested =
            object::get_str(candidate, &["spec", "clusterIP"]).filter(|ip| !ip.is_empty()).map(String::from);
        if requested.as_deref() == Some("None") {
            object::set(candidate, &["spec", "clusterIPs"], json!(["None"]));
        } else {
            let ip = service_alloc::allocate(&self.state.store, requested.as_deref(), &owner).await?.to_string();
            object::set_str(candidate, &["spec", "clusterIP"], &ip);
            object::set(candidate, &["spec", "clusterIPs"], json!([ip]));
            reserved.ip = Some(ip);
        }
        match service_alloc::assign_node_ports(&self.state.store, candidate, &[], &owner).await {
            Ok(ports) => reserved.node_ports = ports,
            Err(error) => {
                self.release_reserved(reserved).await;
                return Err(error);
            }
        }
        Ok(reserved)
    }

    /// Releases what was reserved for a write that did not happen.
    async fn release_reserved(&self, reserved: Reserved) {
        if let Some(ip) = &reserved.ip {
            service_alloc::release(&self.state.store, ip).await;
        }
        service_alloc::release_node_ports(&self.state.store, &reserved.node_ports).await;
    }

    /// What a deletion frees besides the object (a Service's ClusterIP and node ports).
    async fn release_owned(&self, deleted: &Value) {
        if self.is_service() {
            if let Some(ip) = object::get_str(deleted, &["spec", "clusterIP"]).filter(|ip| *ip != "None") {
                service_alloc::release(&self.state.store, ip).await;
            }
            service_alloc::release_node_ports(&self.state.store, &service_alloc::node_ports_of(deleted)).await;
        }
    }

    /// Metadata, status, admission and validation for a new object; returns the bytes
    /// to store, the final name and the admitted object. (`stamp_new_metadata` is the
    /// typed twin of the metadata rules here and in `create`.)
    fn prepare_create(&mut self, mut candidate: Value) -> Result<Prepared, ApiError> {
        let info = self.info();
        let metadata = object::entry(&mut candidate, &["metadata"]);
        if !metadata.is_object() {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"]
        {
            if field == "managedFields" && self.applying {
                continue;
            }
            metadata.as_object_mut().expect("checked above").remove(field);
        }
        metadata["uid"] = json!(uuid::Uuid::new_v4().to_string());
        metadata["creationTimestamp"] = json!(object::now_rfc3339());
        if tracks_generation(info) {
            metadata["generation"] = json!(1);
        } else {
            metadata.as_object_mut().expect("checked above").remove("generation");
        }
        initial_status(info, &mut candidate);
        let name = object::name(&candidate).to_string();
        let pod_security = match self.namespace() {
            Some(ns) => admission::check_namespace(&self.state.cache, &self.state.deleted_namespaces, info, ns, &name)?,
            None => Default::default(),
        };
        if let Some(user) = self.user.filter(|_| info.group == certificates::GROUP && info.kind == certificates::KIND) {
            certificates::stamp_requester(&mut candidate, user);
        }
        // The client's object, defaulted and validated, is what its manager owns: as in
        // kube, whose field manager runs before admission, what the admission plugins
        // add below (the API access volume, tolerations, priority, LimitRanger's
        // defaults) belongs to no manager.
        let out = self.admit(&candidate, Write::Create)?;
        self.finish_create(out, name, &pod_security)
    }

    /// A create's steps after the kind's codec: the writer's managed fields, the pod
    /// admission plugins, LimitRanger, PodSecurity; returns the bytes to store, the
    /// name and the admitted object.
    fn finish_create(
        &mut self,
        mut out: Admitted,
        name: String,
        pod_security: &pod_security::Labels,
    ) -> Result<Prepared, ApiError> {
        let info = self.info();
        if !self.applying {
            self.record_create_fields(&mut out)?;
        }
        let namespace = self.namespace();
        if is_pod(info) {
            // Typed again if a check before (NodeRestriction, for a node's mirror pod)
            // read it as a value.
            let pod = out.typed_as::<Pod>()?;
            admission::admit_pod(&self.state.cache, namespace.unwrap_or("default"), pod, random_suffix)?;
            pod.status = Some(pod_initial_status(pod));
        }
        if let Some(ns) = namespace {
            let ranges = limit_ranger::limit_ranges(&self.state.cache, info, ns)?;
            if is_pod(info) && !ranges.is_empty() && limit_ranger::default_pod(&ranges, out.value()?) {
                // A default limit can contradict a request the client gave: validated
                // again, as kube validates after admission. What the other plugins add
                // is valid as they build it.
                out = info.codec.admit(out.value()?, Write::Create, None)?;
            }
            if !ranges.is_empty() {
                limit_ranger::check(&ranges, info, out.value()?)?;
            }
        }
        pod_security::check(pod_security, info, &mut out, &mut self.warnings, self.audit_annotations.as_mut())?;
        Ok((self.admitted_bytes(&mut out)?, name, out))
    }

    /// Records a create's managed fields on `object`: walked in its type when it is
    /// typed (the JSON value walk if that cannot be done).
    fn record_create_fields(&self, object: &mut Admitted) -> Result<(), ApiError> {
        if let Admitted::Typed(typed) = object {
            let walked = self.with_writer(|types, definition, writer| {
                Ok(typed
                    .create_fields_v1(types, definition, writer)
                    .ok()
                    .map(|fields| apply::create_entries(writer, fields)))
            })?;
            if let Some(entries) = walked {
                typed.metadata_mut().managed_fields = entries;
                return Ok(());
            }
        }
        self.record_managed_fields(None, object.value()?)
    }

    /// PUT, PATCH and the update-shaped subresources, with `GuaranteedUpdate` retries.
    pub async fn update(&mut self, change: Change<'_>) -> Reply {
        let info = self.info();
        let subresource = self.route.subresource.clone();
        // A PUT's resourceVersion is a precondition; so is one a merge patch sets, as
        // in Kubernetes, where it makes the patch an optimistic-concurrency update.
        let precondition = match &change {
            Change::Replace(input) | Change::Patch(PatchType::Merge | PatchType::Strategic, input) => {
                object::get_str(input, &["metadata", "resourceVersion"])
                    .filter(|rv| !rv.is_empty())
                    .map(|rv| {
                        rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))
                    })
                    .transpose()?
            }
            _ => None,
        };
        if let Change::Replace(input) = &change {
            let body_name = object::name(input);
            if !body_name.is_empty() && body_name != self.name() {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({})",
                    self.name()
                )));
            }
        }
        // What admission says of an attempt that loses a conflict is not said twice.
        let said = (self.warnings.len(), self.audit_annotations.as_ref().map_or(0, Vec::len));
        for _ in 0..UPDATE_ATTEMPTS {
            self.warnings.truncate(said.0);
            if let Some(annotations) = self.audit_annotations.as_mut() {
                annotations.truncate(said.1);
            }
            let Some((old, old_bytes, old_revision)) = self.current()? else {
                if let Change::Patch(PatchType::Apply, input) = change {
                    // Server-side apply creates what does not exist yet.
                    let mut input = input.clone();
                    check_type_meta(&mut input, info)?;
                    object::set_str(&mut input, &["metadata", "name"], self.name());
                    let created = self.server_side_apply(None, &input)?;
                    self.applying = true;
                    let reply = self.create(created).await;
                    self.applying = false;
                    return reply;
                }
                return Err(self.not_found());
            };
            if let Some(expected) = precondition {
                if expected != old_revision.get() {
                    return Err(ApiError::stale_object(info.group, info.plural, self.name()));
                }
            }
            let new = self.apply_change(&change, &old, subresource.as_deref())?;
            let Some(mut new) = new else {
                // Nothing to change (binding rejected earlier returns an error instead).
                return self.object_response(StatusCode::OK, &old_bytes, old_revision.get());
            };
            if matches!(change, Change::Patch(..) | Change::Scale(..)) {
                if let Some(rv) = object::get_str(&new, &["metadata", "resourceVersion"]) {
                    if !rv.is_empty() && rv != old_revision.get().to_string() {
                        return Err(ApiError::stale_object(info.group, info.plural, self.name()));
                    }
                }
            }
            object::remove(&mut new, &["metadata", "resourceVersion"]);
            let mut old_plain = old.clone();
            object::remove(&mut old_plain, &["metadata", "resourceVersion"]);
            let mut out = self.admit(&new, Write::Update { old: &old })?.into_value()?;
            let route = self.route;
            // LimitRanger bounds a claim that asks for more (a pod's resources do not
            // change on update).
            if let Some(ns) = route.namespace.as_deref().filter(|_| subresource.is_none() && info.kind != "Pod") {
                let ranges = limit_ranger::limit_ranges(&self.state.cache, info, ns)?;
                limit_ranger::check(&ranges, info, &out)?;
            }
            let judged = subresource.as_deref().is_none_or(|s| s == "ephemeralcontainers")
                && pod_security::judges_update(info, &out, &old);
            if let Some(ns) = route.namespace.as_deref().filter(|_| judged) {
                let labels = admission::pod_security_labels(&self.state.cache, ns)?;
                let audit = self.audit_annotations.as_mut();
                pod_security::check(&labels, info, &mut out, &mut self.warnings, audit)?;
            }
            if !matches!(change, Change::Patch(PatchType::Apply, _)) {
                self.record_managed_fields(Some(&old), &mut out)?;
            }
            if tracks_generation(info) && spec_part(&out) != spec_part(&old_plain) {
                let generation = object::get(&old, &["metadata", "generation"]).and_then(Value::as_i64).unwrap_or(0);
                object::set(&mut out, &["metadata", "generation"], json!(generation + 1));
            }
            let dry_run = self.dry_run()?;
            if let Some(ns) = self.namespace().filter(|_| subresource.is_none()) {
                let state = &self.state;
                resource_quota::admit(&state.store, &state.cache, info, ns, &mut out, Some(&old), dry_run).await?;
            }
            // A Service that now exposes node ports gets them before it is written.
            let held = if self.is_service() { service_alloc::node_ports_of(&old) } else { Vec::new() };
            let reserved = match (self.is_service(), dry_run) {
                (true, false) => {
                    let owner = self.owner(&out);
                    service_alloc::assign_node_ports(&self.state.store, &mut out, &held, &owner).await?
                }
                _ => Vec::new(),
            };
            let bytes = self.storage_bytes(&out);
            // An unchanged object is not written again, unless its stored form is sealed
            // with a retired key: rewriting re-seals it (how keys are rotated).
            // Equal bytes, or (the stored bytes' layout below the top level being the
            // type's field order when they were encoded typed) an equal object.
            let unchanged = bytes == old_bytes.as_ref() || (self.info().view.is_none() && out == old_plain);
            if unchanged && !self.state.store.needs_reseal(self.key().as_bytes()).unwrap_or(false) {
                return self.update_response(&change, &old_bytes, old_revision.get());
            }
            if dry_run {
                return self.update_response(&change, &bytes, old_revision.get());
            }
            let key = self.key();
            // An object being deleted goes once its last finalizer is removed.
            let result = if is_terminating(&out) && finalizers_empty(&out) && !self.deletion_waits(&out) {
                self.state.store.delete(key, Some(old_revision)).await
            } else {
                self.state.store.update(key, bytes.clone(), Some(old_revision)).await
            };
            if result.is_err() {
                service_alloc::release_node_ports(&self.state.store, &reserved).await;
            }
            match result {
                Ok(outcome) => {
                    if outcome.record.is_tombstone() {
                        self.release_owned(&out).await;
                    } else if !held.is_empty() {
                        let kept = service_alloc::node_ports_of(&out);
                        let dropped: Vec<u16> = held.into_iter().filter(|p| !kept.contains(p)).collect();
                        service_alloc::release_node_ports(&self.state.store, &dropped).await;
                    }
                    return self.update_response(&change, &bytes, outcome.revision.get());
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(StoreError::NotFound { .. }) => return Err(self.not_found()),
                Err(e) => return Err(self.store_error(e)),
            }
        }
        Err(ApiError::conflict(info.group, info.plural, self.name(), "too many concurrent updates; please retry"))
    }

    /// `pods/binding`: kube's `assignPod`. The binding storage sets `spec.nodeName` and
    /// the `PodScheduled` condition straight on the stored pod in a guaranteed update,
    /// as kube-apiserver's does: the pod itself is not re-admitted (nothing else of it
    /// changes) and no managedFields entry is recorded for the node name. This is the
    /// scheduler's hot path, one write per placed pod.
    pub async fn bind(&mut self, node: &str, preconditions: BindPreconditions<'_>) -> Reply {
        let dry_run = self.dry_run()?;
        for attempt in 0..UPDATE_ATTEMPTS {
            // The first attempt edits the watch cache's copy, as kube's guaranteed
            // update starts from its cached object: the write is conditional on that
            // revision, so a stale copy only costs a retry from the store. A refusal is
            // confirmed against the store too (the name may be a recreated pod's).
            let cached = if attempt == 0 { self.state.cache.get(self.key().as_bytes()).flatten() } else { None };
            let from_cache = cached.is_some();
            let (bytes, old_revision) = match cached {
                Some(cached) => (cached.value, cached.mod_revision),
                None => self.stored()?.ok_or_else(|| self.not_found())?,
            };
            if let Some(expected) = preconditions.resource_version.filter(|rv| !rv.is_empty()) {
                if expected != old_revision.get().to_string() {
                    if from_cache {
                        continue;
                    }
                    let actual = old_revision.get().to_string();
                    return Err(precondition_failed(self.info(), self.name(), "ResourceVersion", expected, &actual));
                }
            }
            let bound = match binding::bind_stored(&bytes, node, &object::now_rfc3339(), preconditions.uid) {
                Ok(bound) => bound,
                Err(_) if from_cache => continue,
                Err(refusal) => return Err(self.binding_refused(refusal)),
            };
            if dry_run {
                return Ok(reply::json(StatusCode::CREATED, success_status(StatusCode::CREATED)));
            }
            match self.state.store.update(self.key(), bound, Some(old_revision)).await {
                Ok(_) => return Ok(reply::json(StatusCode::CREATED, success_status(StatusCode::CREATED))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(self.not_found()),
                Err(e) => return Err(self.store_error(e)),
            }
        }
        let info = self.info();
        Err(ApiError::conflict(info.group, info.plural, self.name(), "too many concurrent updates; please retry"))
    }

    /// kube's answers to a binding the pod refuses.
    fn binding_refused(&self, refusal: binding::Refusal) -> ApiError {
        let name = self.name();
        match refusal {
            binding::Refusal::AlreadyAssigned(current) => ApiError::new(
                StatusReason::Conflict,
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
                ),
            ),
            binding::Refusal::Terminating => {
                ApiError::conflict("", "pods", name, "pod is being deleted, cannot be assigned to a host")
            }
            binding::Refusal::UidMismatch { expected, actual } => {
                precondition_failed(self.info(), name, "UID", &expected, &actual)
            }
            binding::Refusal::Malformed(error) => ApiError::internal(error),
        }
    }

    fn update_response(&self, change: &Change<'_>, stored: &[u8], revision: u64) -> Reply {
        let code = StatusCode::OK;
        match change {
            Change::Scale(..) => {
                let value = object::decode_stored(stored, revision).map_err(ApiError::internal)?;
                Ok(reply::json(code, serde_json::to_vec(&scale_of(&value)).map_err(ApiError::internal)?))
            }
            _ => self.object_response(code, stored, revision),
        }
    }

    /// A bound pod being deleted gracefully waits for its node agent to confirm.
    /// Whether a terminating object must stay: a bound pod until its node agent has
    /// stopped it; a namespace until the namespace controller has emptied it and
    /// cleared `spec.finalizers`.
    fn deletion_waits(&self, value: &Value) -> bool {
        if self.info().kind == "Namespace" && self.info().group.is_empty() {
            return object::get(value, &["spec", "finalizers"])
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        }
        self.info().kind == "Pod"
            && self.info().group.is_empty()
            && object::get_str(value, &["spec", "nodeName"]).is_some_and(|n| !n.is_empty())
            && object::get(value, &["metadata", "deletionGracePeriodSeconds"]).and_then(Value::as_i64).unwrap_or(0) > 0
    }

    /// Computes the candidate object; `None` means "leave it as it is".
    fn apply_change(
        &self,
        change: &Change<'_>,
        old: &Value,
        subresource: Option<&str>,
    ) -> Result<Option<Value>, ApiError> {
        let info = self.info();
        let mut candidate = match change {
            Change::Replace(input) => {
                let mut input = (*input).clone();
                check_type_meta(&mut input, info)?;
                input
            }
            Change::Patch(kind, patch) => {
                let mut doc = old.clone();
                match kind {
                    PatchType::Json => patch::json_patch(&mut doc, patch)?,
                    PatchType::Merge => patch::merge_patch(&mut doc, patch),
                    PatchType::Strategic => patch::strategic_merge(&mut doc, patch)?,
                    PatchType::Apply => {
                        let mut config = (*patch).clone();
                        check_type_meta(&mut config, info)?;
                        doc = self.server_side_apply(Some(old), &config)?;
                    }
                }
                check_type_meta(&mut doc, info)?;
                doc
            }
            Change::Scale(kind, input) => {
                let mut scale = scale_of(old);
                match kind {
                    None => scale = (*input).clone(),
                    Some(PatchType::Json) => patch::json_patch(&mut scale, input)?,
                    Some(_) => patch::merge_patch(&mut scale, input),
                }
                let replicas = object::get(&scale, &["spec", "replicas"]).and_then(Value::as_i64).unwrap_or(0);
                if replicas < 0 {
                    return Err(ApiError::invalid(
                        "autoscaling",
                        "Scale",
                        self.name(),
                        vec![keelson_engine::FieldError::new(
                            keelson_engine::FieldErrorKind::Invalid,
                            "spec.replicas",
                            Some(replicas.to_string()),
                            "must be greater than or equal to 0",
                        )],
                    ));
                }
                let mut new = old.clone();
                object::set(&mut new, &["spec", "replicas"], json!(replicas));
                return Ok(Some(new));
            }
            Change::MarkDeleted { grace_seconds, add_finalizer } => {
                let mut new = old.clone();
                if !is_terminating(old) {
                    object::set_str(&mut new, &["metadata", "deletionTimestamp"], &rfc3339_after(*grace_seconds));
                    object::set(&mut new, &["metadata", "deletionGracePeriodSeconds"], json!(grace_seconds));
                } else if let Some(current) =
                    object::get(old, &["metadata", "deletionGracePeriodSeconds"]).and_then(Value::as_i64)
                {
                    // A shorter grace period may replace a longer one, never the reverse.
                    if *grace_seconds < current {
                        object::set_str(&mut new, &["metadata", "deletionTimestamp"], &rfc3339_after(*grace_seconds));
                        object::set(&mut new, &["metadata", "deletionGracePeriodSeconds"], json!(grace_seconds));
                    }
                }
                if let Some(finalizer) = add_finalizer {
                    let list = object::array_entry(&mut new, &["metadata", "finalizers"]);
                    if !list.iter().any(|f| f == finalizer) {
                        list.push(json!(finalizer));
                    }
                }
                if info.kind == "Namespace" {
                    object::set_str(&mut new, &["status", "phase"], "Terminating");
                }
                return Ok(Some(new));
            }
        };
        let is_csr = info.group == certificates::GROUP && info.kind == certificates::KIND;
        match subresource {
            _ if is_csr => candidate = certificates::update(old, &candidate, subresource),
            Some("status") => {
                // Only status changes through the status subresource.
                let mut new = old.clone();
                match candidate.get("status") {
                    Some(status) => object::set(&mut new, &["status"], status.clone()),
                    None => {
                        object::remove(&mut new, &["status"]);
                    }
                }
                candidate = new;
            }
            Some("finalize") => {
                let mut new = old.clone();
                let finalizers = object::get(&candidate, &["spec", "finalizers"]).cloned().unwrap_or(json!([]));
                object::set(&mut new, &["spec", "finalizers"], finalizers);
                candidate = new;
            }
            _ => {
                if info.has_status() {
                    match old.get("status") {
                        Some(status) => object::set(&mut candidate, &["status"], status.clone()),
                        None => {
                            object::remove(&mut candidate, &["status"]);
                        }
                    }
                }
            }
        }
        let applied_fields = object::get(&candidate, &["metadata", "managedFields"]).cloned();
        keep_server_metadata(&mut candidate, old);
        if let (Change::Patch(PatchType::Apply, _), Some(fields)) = (change, applied_fields) {
            object::set(&mut candidate, &["metadata", "managedFields"], fields);
        }
        if info.group.is_empty() && info.kind == "Service" {
            service_alloc::carry_node_ports(&mut candidate, old);
            // An update that leaves the ClusterIP out keeps the allocated one.
            if object::get_str(&candidate, &["spec", "clusterIP"]).unwrap_or("").is_empty() {
                for field in ["clusterIP", "clusterIPs"] {
                    if let Some(value) = object::get(old, &["spec", field]) {
                        object::set(&mut candidate, &["spec", field], value.clone());
                    }
                }
            }
        }
        Ok(Some(candidate))
    }

    /// DELETE of one object.
    pub async fn delete(&mut self, options: &Value) -> Reply {
        let info = self.info();
        let (current, _, revision) = self.current()?.ok_or_else(|| self.not_found())?;
        if info.kind == "Namespace" && admission::SYSTEM_NAMESPACES.contains(&self.name()) {
            return Err(ApiError::new(
                StatusReason::Forbidden,
                format!("namespaces \"{}\" is forbidden: this namespace may not be deleted", self.name()),
            ));
        }
        check_delete_preconditions(options, &current, revision, info, self.name())?;
        let grace =
            self.query.int("gracePeriodSeconds")?.or_else(|| options.get("gracePeriodSeconds").and_then(Value::as_i64));
        let policy = self
            .query
            .get("propagationPolicy")
            .map(String::from)
            .or_else(|| options.get("propagationPolicy").and_then(Value::as_str).map(String::from))
            .or_else(|| match options.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some("Orphan".into()),
                _ => None,
            });
        let add_finalizer = match policy.as_deref() {
            Some("Orphan") => Some("orphan"),
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Background") | None => None,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                )))
            }
        };
        // An unbound pod has nothing running: it goes at once, as in Kubernetes.
        let bound_pod = info.kind == "Pod"
            && info.group.is_empty()
            && object::get_str(&current, &["spec", "nodeName"]).is_some_and(|n| !n.is_empty());
        let pod_grace = if bound_pod {
            grace.unwrap_or_else(|| {
                object::get(&current, &["spec", "terminationGracePeriodSeconds"]).and_then(Value::as_i64).unwrap_or(30)
            })
        } else {
            0
        };
        let graceful = pod_grace > 0 || info.kind == "Namespace";
        if graceful || add_finalizer.is_some() || !finalizers_empty(&current) {
            if info.kind == "Namespace" && info.group.is_empty() && !self.dry_run()? {
                self.state.deleted_namespaces.note(self.name());
            }
            let change = Change::MarkDeleted { grace_seconds: pod_grace, add_finalizer };
            return self.update(change).await;
        }
        if self.dry_run()? {
            return Ok(reply::json(StatusCode::OK, self.deleted_body(&current)?));
        }
        match self.state.store.delete(self.key(), Some(revision)).await {
            Ok(_) => {
                self.release_owned(&current).await;
                Ok(reply::json(StatusCode::OK, self.deleted_body(&current)?))
            }
            Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(
                info.group,
                info.plural,
                self.name(),
                "the object has been modified; please apply your changes to the latest version and try again",
            )),
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// Pods come back as the deleted object; other kinds as a Success Status.
    fn deleted_body(&self, current: &Value) -> Result<Vec<u8>, ApiError> {
        let info = self.info();
        if info.kind == "Pod" {
            return serde_json::to_vec(current).map_err(ApiError::internal);
        }
        serde_json::to_vec(&json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": self.name(), "group": info.group, "kind": info.plural,
                "uid": object::get_str(current, &["metadata", "uid"]).unwrap_or("")},
        }))
        .map_err(ApiError::internal)
    }
}

fn check_delete_preconditions(
    options: &Value,
    current: &Value,
    revision: Revision,
    info: &ResourceInfo,
    name: &str,
) -> Result<(), ApiError> {
    let Some(pre) = options.get("preconditions") else { return Ok(()) };
    if let Some(uid) = pre.get("uid").and_then(Value::as_str) {
        let actual = object::get_str(current, &["metadata", "uid"]).unwrap_or("");
        if uid != actual {
            return Err(precondition_failed(info, name, "UID", uid, actual));
        }
    }
    if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str) {
        if rv != revision.get().to_string() {
            return Err(precondition_failed(info, name, "ResourceVersion", rv, &revision.get().to_string()));
        }
    }
    Ok(())
}

/// kube's 409 for a write whose precondition (`what`: `UID` or `ResourceVersion`) the
/// stored object fails.
fn precondition_failed(info: &ResourceInfo, name: &str, what: &str, expected: &str, actual: &str) -> ApiError {
    let why = format!("Precondition failed: {what} in precondition: {expected}, {what} in object meta: {actual}");
    ApiError::conflict(info.group, info.plural, name, &why)
}

pub fn success_status(code: StatusCode) -> Vec<u8> {
    serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "code": code.as_u16()}))
    .expect("a Status serializes")
}

/// A continue token: the revision of the first page and the last key returned, so
/// every page reads the same snapshot (as kube-apiserver's tokens do).
fn encode_continue(revision: Revision, last_key: &[u8], prefix: &str) -> String {
    let start = String::from_utf8_lossy(&last_key[prefix.len().min(last_key.len())..]).into_owned();
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision.get(), "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(Revision, Bytes), ApiError> {
    let invalid = || ApiError::bad_request("continue key is not valid: invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| invalid())?;
    let rv = value.get("rv").and_then(Value::as_u64).filter(|rv| *rv > 0).ok_or_else(invalid)?;
    let start = value.get("start").and_then(Value::as_str).ok_or_else(invalid)?;
    if start.contains("..") {
        return Err(invalid());
    }
    Ok((Revision(rv), Bytes::from(format!("{prefix}{start}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(Revision(42), b"/registry/pods/default/web-3", "/registry/pods/default/");
        let (rv, key) = decode_continue(&token, "/registry/pods/default/").unwrap();
        assert_eq!(rv, Revision(42));
        assert_eq!(&key[..], b"/registry/pods/default/web-3");
        assert_eq!(decode_continue("garbage!", "/p/").unwrap_err().code(), 400);
    }

    #[test]
    fn qos_classes() {
        let pod = |resources: Value| -> Pod {
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "resources": resources}]}})).unwrap()
        };
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))), "Guaranteed");
        assert_eq!(qos_class(&pod(json!({"requests": {"cpu": "1"}}))), "Burstable");
    }

    #[test]
    fn bodies_and_type_meta() {
        assert_eq!(parse_body(Some(reply::PROTOBUF), b"k8s\0\x0a\xff").unwrap_err().code(), 400);
        assert_eq!(parse_body(Some("application/cbor"), b"").unwrap_err().code(), 415);
        let mut v = parse_body(Some("application/yaml"), b"metadata:\n  name: x\n").unwrap();
        let info = crate::resources::find("", "v1", "configmaps").unwrap();
        check_type_meta(&mut v, info).unwrap();
        assert_eq!(v["kind"], "ConfigMap");
        let mut wrong = json!({"apiVersion": "apps/v1", "kind": "ConfigMap"});
        assert_eq!(check_type_meta(&mut wrong, info).unwrap_err().code(), 400);
    }
}
