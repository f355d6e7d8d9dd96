//! An in-memory fake of the Kubernetes API, for controller unit tests only.
//!
//! It answers the `kube` client the controllers use (through the in-process
//! transport) from a map of JSON objects: get, list, create (with `generateName`,
//! uids, resourceVersions, generations), replace and patch (JSON merge patch, and the
//! strategic-merge directives controllers send: merge keys on `ownerReferences`,
//! `conditions` and `containers`, `$patch: delete`, `$deleteFromPrimitiveList`) of an
//! object or its `status`, with resourceVersion and uid preconditions answered 409;
//! and delete (finalizers hold an object, marked deleting). Every write is recorded
//! for the test to assert on, and a test can make the next writes of a kind fail.
//!
//! There is no watch: a test hands the fake's state to the controller's informers
//! with [`FakeApi::sync`] (a re-list: the handlers hear what changed), calls
//! `reconcile`, and repeats — the steps an informer and a worker take, made
//! deterministic. The real server is exercised by the end-to-end tests.

use super::runtime::Informers;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kube::{Client, Resource};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One write the fake answered (or refused).
#[derive(Clone, Debug)]
pub struct Write {
    /// `create`, `update`, `patch`, `delete`.
    pub verb: &'static str,
    /// `pods`, `replicasets/status`, ...
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub body: Value,
    pub code: u16,
}

struct Failure {
    verb: &'static str,
    resource: String,
    code: u16,
    times: usize,
}

#[derive(Default)]
struct State {
    /// By `group/plural/namespace/name`.
    objects: BTreeMap<String, Value>,
    revision: u64,
    uids: u64,
    writes: Vec<Write>,
    failures: Vec<Failure>,
}

/// What a request path names.
#[derive(Clone)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => (String::new(), version.to_string(), rest),
            ["apis", group, version, rest @ ..] => (group.to_string(), version.to_string(), rest),
            _ => return None,
        };
        let namespace_subresource = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
        let (namespace, rest) = match rest {
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() && !namespace_subresource => {
                (namespace.to_string(), rest)
            }
            rest => (String::new(), rest),
        };
        let (plural, name, subresource) = match rest {
            [plural] => (plural, None, None),
            [plural, name] => (plural, Some(name.to_string()), None),
            [plural, name, sub] => (plural, Some(name.to_string()), Some(sub.to_string())),
            _ => return None,
        };
        Some(Target { group, version, plural: plural.to_string(), namespace, name, subresource })
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{}/{}/{name}", self.group, self.plural, self.namespace)
    }

    fn collection_prefix(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}/", self.group, self.plural)
        } else {
            format!("{}/{}/{}/", self.group, self.plural, self.namespace)
        }
    }

    fn resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.plural),
            None => self.plural.clone(),
        }
    }
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message}),
    )
}

/// The fake. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// A fake and a client that talks to it.
    pub fn new() -> (FakeApi, Client) {
        let fake = FakeApi::default();
        let serving = fake.clone();
        let client = crate::client::in_process(move |request: Request<kube::client::Body>| {
            let fake = serving.clone();
            async move { fake.serve(request).await }
        });
        (fake, client)
    }

    async fn serve(&self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let content_type =
            parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let (code, value) = match (discovery(parts.uri.path()), Target::parse(parts.uri.path())) {
            (Some(document), _) => (200, document),
            (None, Some(target)) => {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                self.handle(&parts.method, &target, &content_type, body)
            }
            (None, None) => status(404, "NotFound", format!("no such path {}", parts.uri.path())),
        };
        let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
        *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(http::header::CONTENT_TYPE, "application/json".parse().expect("a header"));
        response
    }

    fn handle(&self, method: &Method, target: &Target, content_type: &str, body: Value) -> (u16, Value) {
        let mut state = self.state.lock();
        let verb = match (method, &target.name) {
            (&Method::GET, Some(name)) => {
                return match state.objects.get(&target.key(name)) {
                    Some(object) => (200, object.clone()),
                    None => status(404, "NotFound", format!("{} \"{name}\" not found", target.plural)),
                };
            }
            (&Method::GET, None) => {
                let prefix = target.collection_prefix();
                let items: Vec<Value> = state
                    .objects
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v.clone())
                    .collect();
                let list = json!({"apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": state.revision.to_string()}, "items": items});
                return (200, list);
            }
            (&Method::POST, None) => "create",
            (&Method::PUT, Some(_)) => "update",
            (&Method::PATCH, Some(_)) => "patch",
            (&Method::DELETE, Some(_)) => "delete",
            (&Method::DELETE, None) => "deletecollection",
            _ => return status(405, "MethodNotAllowed", format!("{method} is not supported here")),
        };
        let resource = target.resource();
        let injected = state.failures.iter_mut().find(|f| f.verb == verb && f.resource == resource && f.times > 0);
        let (code, value) = match injected {
            Some(failure) => {
                failure.times -= 1;
                status(failure.code, "InternalError", format!("injected failure of {verb} {resource}"))
            }
            None => match verb {
                "create" => create(&mut state, target, body.clone()),
                "update" => update(&mut state, target, body.clone()),
                "patch" => patch(&mut state, target, content_type, &body),
                "deletecollection" => delete_collection(&mut state, target),
                _ => delete(&mut state, target),
            },
        };
        let name = target.name.clone().unwrap_or_else(|| value["metadata"]["name"].as_str().unwrap_or_default().into());
        state.writes.push(Write { verb, resource, namespace: target.namespace.clone(), name, body, code });
        (code, value)
    }

    /// Stores `object` as if created earlier (not recorded as a write); returns it as
    /// stored, with uid and resourceVersion.
    pub fn insert<K: Resource<DynamicType = ()> + serde::Serialize + DeserializeOwned>(&self, object: &K) -> K {
        let target = target_of::<K>(object.meta().namespace.as_deref().unwrap_or_default(), None);
        let (code, stored) =
            create(&mut self.state.lock(), &target, serde_json::to_value(object).expect("serializable"));
        assert_eq!(code, 201, "inserting: {stored}");
        serde_json::from_value(stored).expect("stored as it was given")
    }

    /// Every stored object of kind `K`.
    pub fn list<K: Resource<DynamicType = ()> + DeserializeOwned>(&self) -> Vec<K> {
        let prefix = format!("{}/{}/", K::group(&()), K::plural(&()));
        let state = self.state.lock();
        let matching = state.objects.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix));
        matching.map(|(_, v)| serde_json::from_value(v.clone()).expect("a stored object")).collect()
    }

    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(&self, namespace: &str, name: &str) -> Option<K> {
        let key = target_of::<K>(namespace, None).key(name);
        self.state.lock().objects.get(&key).map(|v| serde_json::from_value(v.clone()).expect("a stored object"))
    }

    /// Changes a stored object as another actor would (a node agent reporting a
    /// pod's status): not recorded as a write; the resourceVersion moves on.
    pub fn modify<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let key = target_of::<K>(namespace, None).key(name);
        let mut state = self.state.lock();
        let mut object = state.objects.get(&key).cloned().unwrap_or_else(|| panic!("{key} is stored"));
        change(&mut object);
        next_revision(&mut state, &mut object);
        state.objects.insert(key, object);
    }

    /// Removes a stored object as another actor would (not recorded as a write).
    pub fn remove<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) {
        let key = target_of::<K>(namespace, None).key(name);
        self.state.lock().objects.remove(&key);
    }

    /// The writes since the last call.
    pub fn take_writes(&self) -> Vec<Write> {
        std::mem::take(&mut self.state.lock().writes)
    }

    /// The next `times` writes of `verb` on `resource` (`pods`, `jobs/status`) fail
    /// with `code`.
    pub fn fail(&self, verb: &'static str, resource: &str, code: u16, times: usize) {
        self.state.lock().failures.push(Failure { verb, resource: resource.into(), code, times });
    }

    /// Hands the stored objects of kind `K` to `informers`, as a re-list would.
    pub fn sync<K: super::runtime::Watched>(&self, informers: &Informers) {
        informers.get::<K>().load(self.list::<K>());
    }
}

fn target_of<K: Resource<DynamicType = ()>>(namespace: &str, name: Option<&str>) -> Target {
    Target {
        group: K::group(&()).to_string(),
        version: K::version(&()).to_string(),
        plural: K::plural(&()).to_string(),
        namespace: namespace.to_string(),
        name: name.map(str::to_string),
        subresource: None,
    }
}

fn next_revision(state: &mut State, object: &mut Value) {
    state.revision += 1;
    object["metadata"]["resourceVersion"] = json!(state.revision.to_string());
}

fn create(state: &mut State, target: &Target, mut object: Value) -> (u16, Value) {
    if !object.is_object() {
        return status(400, "BadRequest", "the body is not an object".into());
    }
    let meta = object["metadata"].as_object().cloned().unwrap_or_default();
    let name = match (meta.get("name").and_then(Value::as_str), meta.get("generateName").and_then(Value::as_str)) {
        (Some(name), _) if !name.is_empty() => name.to_string(),
        (_, Some(prefix)) => {
            state.uids += 1;
            format!("{prefix}{:05x}", state.uids)
        }
        _ => return status(422, "Invalid", "metadata.name: Required value".into()),
    };
    let key = target.key(&name);
    if state.objects.contains_key(&key) {
        return status(409, "AlreadyExists", format!("{} \"{name}\" already exists", target.plural));
    }
    state.uids += 1;
    let metadata = &mut object["metadata"];
    metadata["name"] = json!(name);
    if !target.namespace.is_empty() {
        metadata["namespace"] = json!(target.namespace);
    }
    metadata["uid"] = json!(format!("uid-{}", state.uids));
    metadata["generation"] = json!(1);
    metadata["creationTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
    if object.get("apiVersion").is_none() {
        let version = if target.group.is_empty() {
            target.version.clone()
        } else {
            format!("{}/{}", target.group, target.version)
        };
        object["apiVersion"] = json!(version);
    }
    next_revision(state, &mut object);
    state.objects.insert(key, object.clone());
    (201, object)
}

/// 409 unless `wanted` (a resourceVersion or uid precondition) is absent or matches.
fn precondition(stored: &Value, wanted: &Value, field: &str) -> Result<(), (u16, Value)> {
    match wanted["metadata"][field].as_str() {
        Some(want) if !want.is_empty() && stored["metadata"][field].as_str() != Some(want) => Err(status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version and try again".into(),
        )),
        _ => Ok(()),
    }
}

/// Stores `new` over `old` for `target`: a status write keeps everything but status,
/// any other keeps the status; a spec change bumps the generation.
fn store(state: &mut State, target: &Target, old: &Value, mut new: Value) -> (u16, Value) {
    let key = target.key(target.name.as_deref().unwrap_or_default());
    if target.subresource.as_deref() == Some("status") {
        let status = new["status"].take();
        new = old.clone();
        new["status"] = status;
    } else {
        new["status"] = old["status"].clone();
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        let changed = new["spec"] != old["spec"];
        new["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
    }
    for kept in ["uid", "creationTimestamp", "deletionTimestamp", "name", "namespace"] {
        new["metadata"][kept] = old["metadata"][kept].clone();
    }
    if new["metadata"]["deletionTimestamp"].is_null() {
        new["metadata"].as_object_mut().expect("an object").remove("deletionTimestamp");
    }
    next_revision(state, &mut new);
    // A deleting object whose last finalizer went is gone.
    if new["metadata"].get("deletionTimestamp").is_some() && !held(&new) {
        state.objects.remove(&key);
    } else {
        state.objects.insert(key, new.clone());
    }
    (200, new)
}

/// Whether finalizers hold the object: its own, or a Namespace's `spec.finalizers`.
fn held(object: &Value) -> bool {
    let any = |list: &Value| list.as_array().is_some_and(|f| !f.is_empty());
    any(&object["metadata"]["finalizers"]) || any(&object["spec"]["finalizers"])
}

fn update(state: &mut State, target: &Target, body: Value) -> (u16, Value) {
    let key = target.key(target.name.as_deref().unwrap_or_default());
    let Some(old) = state.objects.get(&key).cloned() else {
        return status(404, "NotFound", format!("{} not found", target.plural));
    };
    if let Err(refused) = precondition(&old, &body, "resourceVersion") {
        return refused;
    }
    store(state, target, &old, body)
}

fn patch(state: &mut State, target: &Target, content_type: &str, body: &Value) -> (u16, Value) {
    let key = target.key(target.name.as_deref().unwrap_or_default());
    let Some(old) = state.objects.get(&key).cloned() else {
        return status(404, "NotFound", format!("{} not found", target.plural));
    };
    for field in ["resourceVersion", "uid"] {
        if let Err(refused) = precondition(&old, body, field) {
            return refused;
        }
    }
    let strategic = content_type.starts_with("application/strategic-merge-patch");
    let patched = merge(&old, body, strategic, "");
    store(state, target, &old, patched)
}

fn delete(state: &mut State, target: &Target) -> (u16, Value) {
    let key = target.key(target.name.as_deref().unwrap_or_default());
    let Some(mut object) = state.objects.get(&key).cloned() else {
        return status(404, "NotFound", format!("{} not found", target.plural));
    };
    if held(&object) {
        if object["metadata"].get("deletionTimestamp").is_none() {
            object["metadata"]["deletionTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
            next_revision(state, &mut object);
            state.objects.insert(key, object.clone());
        }
    } else {
        state.objects.remove(&key);
    }
    (200, object)
}

/// Deletes every object of the collection (finalizers hold theirs, marked deleting).
fn delete_collection(state: &mut State, target: &Target) -> (u16, Value) {
    let prefix = target.collection_prefix();
    let keys: Vec<String> =
        state.objects.range(prefix.clone()..).map(|(k, _)| k.clone()).take_while(|k| k.starts_with(&prefix)).collect();
    for key in keys {
        let name = key.rsplit('/').next().unwrap_or_default().to_string();
        let one = Target { name: Some(name), subresource: None, ..target.clone() };
        delete(state, &one);
    }
    (200, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
}

/// The discovery documents: core/v1 with pods, configmaps and namespaces; no groups.
fn discovery(path: &str) -> Option<Value> {
    let resource = |name: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]})
    };
    match path.trim_end_matches('/') {
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})),
        "/apis" => Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})),
        "/api/v1" => Some(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource("pods", "Pod", true), resource("configmaps", "ConfigMap", true),
            resource("namespaces", "Namespace", false)]})),
        _ => None,
    }
}

/// The key a strategic merge matches list items of `field` by.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "containers" | "initContainers" | "ports" | "env" => Some("name"),
        _ => None,
    }
}

/// A JSON merge patch of `patch` onto `old`; with `strategic`, kube's merge keys and
/// directives too.
fn merge(old: &Value, patch: &Value, strategic: bool, field: &str) -> Value {
    match (old, patch) {
        (Value::Object(old), Value::Object(patch)) => {
            let mut out: Map<String, Value> = old.clone();
            for (key, value) in patch {
                if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/").filter(|_| strategic) {
                    let doomed = value.as_array().cloned().unwrap_or_default();
                    if let Some(Value::Array(items)) = out.get_mut(list) {
                        items.retain(|item| !doomed.contains(item));
                    }
                } else if key.starts_with('$') && strategic {
                    continue;
                } else if value.is_null() {
                    out.remove(key);
                } else {
                    let merged = match out.get(key) {
                        Some(previous) => merge(previous, value, strategic, key),
                        None => strip_directives(value),
                    };
                    out.insert(key.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (Value::Array(old), Value::Array(patch)) if strategic && merge_key(field).is_some() => {
            let key = merge_key(field).expect("checked");
            let mut out = old.clone();
            for item in patch {
                let position = out.iter().position(|o| o[key] == item[key]);
                let delete = item["$patch"] == "delete";
                match (position, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (Some(i), false) => out[i] = merge(&out[i], item, strategic, ""),
                    (None, false) => out.push(strip_directives(item)),
                    (None, true) => {}
                }
            }
            Value::Array(out)
        }
        (_, patch) => strip_directives(patch),
    }
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        other => other.clone(),
    }
}

/// A controller's surroundings in a unit test: the fake, informers on it (events
/// discarded) and a work queue.
pub struct Rig {
    pub fake: FakeApi,
    pub informers: Informers,
    pub queue: Arc<super::runtime::queue::WorkQueue>,
}

impl Default for Rig {
    fn default() -> Rig {
        let (fake, client) = FakeApi::new();
        let metrics = super::runtime::metrics::ControllerMetrics::default().queue("test");
        Rig { fake, informers: Informers::new(client), queue: super::runtime::queue::WorkQueue::new(metrics) }
    }
}

impl Rig {
    pub fn new() -> Rig {
        Rig::default()
    }

    /// Hands the fake's objects of kind `K` to the informers.
    pub fn sync<K: super::runtime::Watched>(&self) {
        self.fake.sync::<K>(&self.informers);
    }

    /// The writes since the last call, as `verb resource name` with a failure's code.
    pub fn writes(&self) -> Vec<String> {
        let describe = |w: Write| match w.code {
            200..=299 => format!("{} {} {}", w.verb, w.resource, w.name),
            code => format!("{} {} {} -> {code}", w.verb, w.resource, w.name),
        };
        self.fake.take_writes().into_iter().map(describe).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

    #[tokio::test]
    async fn the_fake_creates_patches_and_deletes_like_the_api() {
        let (fake, client) = FakeApi::new();
        let api: Api<Pod> = Api::namespaced(client, "default");
        let mut pod = Pod::default();
        pod.metadata.generate_name = Some("web-".into());
        pod.metadata.finalizers = Some(vec!["keep".into()]);
        let created = api.create(&PostParams::default(), &pod).await.expect("created");
        let name = created.metadata.name.clone().expect("a generated name");
        assert!(name.starts_with("web-") && created.metadata.uid.is_some());

        let stale = json!({"metadata": {"resourceVersion": "0", "labels": {"a": "b"}}});
        let refused = api.patch(&name, &PatchParams::default(), &Patch::Merge(&stale)).await;
        assert!(matches!(refused, Err(kube::Error::Api(s)) if s.code == 409));

        let drop_finalizer = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["keep"]}});
        api.delete(&name, &DeleteParams::default()).await.expect("marked deleting");
        assert!(fake.get::<Pod>("default", &name).expect("held").metadata.deletion_timestamp.is_some());
        api.patch(&name, &PatchParams::default(), &Patch::Strategic(&drop_finalizer)).await.expect("patched");
        assert!(fake.get::<Pod>("default", &name).is_none(), "gone with its last finalizer");

        let writes: Vec<(&str, String, u16)> =
            fake.take_writes().into_iter().map(|w| (w.verb, w.resource, w.code)).collect();
        assert_eq!(
            writes,
            [
                ("create", "pods".into(), 201),
                ("patch", "pods".into(), 409),
                ("delete", "pods".into(), 200),
                ("patch", "pods".into(), 200)
            ]
        );
    }

    #[test]
    fn strategic_merges_follow_merge_keys() {
        let old = json!({"metadata": {"ownerReferences": [{"uid": "a", "name": "x"}, {"uid": "b", "name": "y"}]}});
        let patch =
            json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": "a"}, {"uid": "c", "name": "z"}]}});
        assert_eq!(
            merge(&old, &patch, true, ""),
            json!({"metadata": {"ownerReferences": [{"uid": "b", "name": "y"}, {"uid": "c", "name": "z"}]}})
        );
    }
}
