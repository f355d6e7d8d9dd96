//! Per-kind decoding, defaulting and validation.
//!
//! Every write passes through its kind's [`KindCodec`]: the JSON is decoded into the
//! typed `k8s-openapi` struct (which rejects wrong types and, by comparison with the
//! input, finds unknown fields), defaulted as kube-apiserver defaults it, validated
//! with Kubernetes' rules and messages, and handed on typed ([`Admitted`]). Only
//! that canonical form is stored, so what was stored always decodes.

mod apps;
mod core;
mod meta;
mod pod;

use crate::admitted::Admitted;
use keelson_engine::k8s_openapi;
use keelson_engine::k8s_openapi::api::{
    apps::v1 as apps_v1, authentication::v1 as authn_v1, authorization::v1 as authz_v1, batch::v1 as batch_v1,
    certificates::v1 as certificates_v1, coordination::v1 as coordination_v1, core::v1 as core_v1,
    discovery::v1 as discovery_v1, events::v1 as events_v1, policy::v1 as policy_v1, rbac::v1 as rbac_v1,
    scheduling::v1 as scheduling_v1,
};
use keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keelson_engine::k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use keelson_engine::{ApiError, FieldError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::marker::PhantomData;

pub use meta::NameRule;

/// What a write is: the object before it, for update validation.
#[derive(Clone, Copy)]
pub enum Write<'a> {
    Create,
    Update { old: &'a Value },
}

/// Sets what the server owns on a new object's metadata, or refuses the create.
pub type StampNew<'s> = &'s mut dyn FnMut(&mut ObjectMeta) -> Result<(), ApiError>;

/// Decodes, defaults and validates one kind's objects.
pub trait KindCodec: Send + Sync {
    /// Turns `input` into the canonical object to store, or the error to answer.
    /// Fields the typed struct does not know are dropped and reported in `unknown`
    /// (as `spec.foo` paths) when it is given.
    fn admit(&self, input: &Value, write: Write<'_>, unknown: Option<&mut Vec<String>>) -> Result<Admitted, ApiError>;

    /// [`admit`](KindCodec::admit) as a JSON value.
    fn admit_value(
        &self,
        input: &Value,
        write: Write<'_>,
        unknown: Option<&mut Vec<String>>,
    ) -> Result<Value, ApiError> {
        self.admit(input, write, unknown)?.into_value()
    }

    /// [`admit`](KindCodec::admit) for a create whose body is JSON, decoded straight
    /// into the kind instead of through a `serde_json::Value` tree; `stamp` first sets
    /// what the server owns in the new object's metadata. `None` when the body is not a
    /// clean encoding of the kind (a decode error, a field the kind does not know, type
    /// meta that differs): the caller then takes the general path, which reports it.
    fn admit_json_create(&self, _body: &[u8], _stamp: StampNew<'_>) -> Option<Result<Admitted, ApiError>> {
        None
    }

    /// The kind's name (`Pod`).
    fn kind(&self) -> &'static str;

    /// Registers the kind's OpenAPI schema (and everything it refers to) with
    /// `generator`; returns the schema's name (`io.k8s.api.core.v1.Pod`).
    fn schema(&self, generator: &mut SchemaGenerator) -> String;
}

/// The hooks a kind implements; everything has a sensible default.
pub trait Kind:
    k8s_openapi::Resource
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + JsonSchema
    + Send
    + Sync
    + 'static
{
    const NAME_RULE: NameRule = NameRule::Subdomain;
    /// Whether objects live in a namespace.
    const NAMESPACED: bool = true;

    fn apply_defaults(&mut self) {}
    fn validate(&self, _errors: &mut Vec<FieldError>) {}
    fn validate_update(&self, _old: &Self, _errors: &mut Vec<FieldError>) {}
}

/// The [`KindCodec`] of a typed kind.
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    pub const fn new() -> Self {
        Typed(PhantomData)
    }
}

impl<T> Default for Typed<T> {
    fn default() -> Self {
        Typed::new()
    }
}

impl<T: Kind> KindCodec for Typed<T> {
    fn admit(&self, input: &Value, write: Write<'_>, unknown: Option<&mut Vec<String>>) -> Result<Admitted, ApiError> {
        let object = match unknown {
            Some(unknown) => decode_noting_unknown::<T>(input, unknown)?,
            None => decode::<T>(input)?,
        };
        admit_decoded(object, write)
    }

    fn admit_json_create(&self, body: &[u8], stamp: StampNew<'_>) -> Option<Result<Admitted, ApiError>> {
        let mut object = decode_clean_json::<T>(body)?;
        Some(stamp(object.metadata_mut()).and_then(|()| admit_decoded(object, Write::Create)))
    }

    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn schema(&self, generator: &mut SchemaGenerator) -> String {
        generator.subschema_for::<T>();
        T::schema_name().into_owned()
    }
}

/// Defaults and validates a decoded object.
fn admit_decoded<T: Kind>(mut object: T, write: Write<'_>) -> Result<Admitted, ApiError> {
    object.apply_defaults();
    let mut errors = Vec::new();
    meta::validate(object.metadata(), T::NAME_RULE, T::NAMESPACED, &mut errors);
    object.validate(&mut errors);
    if let Write::Update { old } = write {
        let old = decode::<T>(old)?;
        meta::validate_update(object.metadata(), old.metadata(), &mut errors);
        object.validate_update(&old, &mut errors);
    }
    if !errors.is_empty() {
        let name = object.metadata().name.as_deref().unwrap_or("");
        return Err(ApiError::invalid(T::GROUP, T::KIND, name, errors));
    }
    Ok(Admitted::typed(object))
}

/// `body` decoded as a `T`, if it is a clean JSON encoding of one: it decodes, nothing
/// follows it, and it has no field `T` ignores (whether such a field is reported
/// depends on its value, which only the general path sees).
fn decode_clean_json<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    let mut ignored = false;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let object = serde_ignored::deserialize(&mut deserializer, |_| ignored = true).ok()?;
    deserializer.end().ok()?;
    (!ignored).then_some(object)
}

/// Decodes a JSON value into a kind, with kube-apiserver's wording for failures.
pub fn decode<T: k8s_openapi::Resource + DeserializeOwned>(input: &Value) -> Result<T, ApiError> {
    T::deserialize(input).map_err(|e| decode_error::<T>(&e))
}

fn decode_error<T: k8s_openapi::Resource>(error: &serde_json::Error) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: {error}",
        kind = T::KIND,
        version = T::VERSION
    ))
}

/// [`decode`], noting in `unknown` the path (`spec.containers[0].foo`) of every field
/// the typed struct has no place for, as kube's decoder finds them for
/// `fieldValidation`. Nulls count as absent (Kubernetes treats them so).
fn decode_noting_unknown<T: k8s_openapi::Resource + DeserializeOwned>(
    input: &Value,
    unknown: &mut Vec<String>,
) -> Result<T, ApiError> {
    let mut ignored = Vec::new();
    let object =
        serde_ignored::deserialize(input, |path| ignored.push(elements(&path))).map_err(|e| decode_error::<T>(&e))?;
    for path in ignored {
        if !lookup(input, &path).is_none_or(Value::is_null) {
            unknown.push(render(&path));
        }
    }
    Ok(object)
}

/// A path segment of a field the decoder ignored.
enum Element {
    Key(String),
    Index(usize),
}

fn elements(path: &serde_ignored::Path<'_>) -> Vec<Element> {
    use serde_ignored::Path;
    let mut out = Vec::new();
    let mut at = path;
    loop {
        at = match at {
            Path::Root => break,
            Path::Seq { parent, index } => {
                out.push(Element::Index(*index));
                parent
            }
            Path::Map { parent, key } => {
                out.push(Element::Key(key.clone()));
                parent
            }
            Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => parent,
        };
    }
    out.reverse();
    out
}

fn lookup<'v>(input: &'v Value, path: &[Element]) -> Option<&'v Value> {
    path.iter().try_fold(input, |value, element| match element {
        Element::Key(key) => value.get(key),
        Element::Index(index) => value.get(index),
    })
}

fn render(path: &[Element]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            Element::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Element::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

macro_rules! plain_kind {
    ($($ty:ty),* $(,)?) => { $(impl Kind for $ty {})* };
}
macro_rules! cluster_kind {
    ($($ty:ty),* $(,)?) => { $(impl Kind for $ty { const NAMESPACED: bool = false; })* };
}
macro_rules! cluster_kind_path_names {
    ($($ty:ty),* $(,)?) => {
        $(impl Kind for $ty { const NAMESPACED: bool = false; const NAME_RULE: NameRule = NameRule::PathSegment; })*
    };
}

plain_kind!(
    core_v1::Endpoints,
    core_v1::ResourceQuota,
    core_v1::ServiceAccount,
    core_v1::PersistentVolumeClaim,
    apps_v1::ControllerRevision,
    coordination_v1::Lease,
    discovery_v1::EndpointSlice,
    policy_v1::PodDisruptionBudget,
    policy_v1::Eviction,
);
cluster_kind!(core_v1::ComponentStatus, core_v1::PersistentVolume, scheduling_v1::PriorityClass);
cluster_kind_path_names!(
    rbac_v1::ClusterRole,
    rbac_v1::ClusterRoleBinding,
    authn_v1::SelfSubjectReview,
    authn_v1::TokenReview,
    authz_v1::SelfSubjectAccessReview,
    authz_v1::SelfSubjectRulesReview,
    authz_v1::SubjectAccessReview,
);
impl Kind for authz_v1::LocalSubjectAccessReview {
    const NAME_RULE: NameRule = NameRule::PathSegment;
}
impl Kind for rbac_v1::Role {
    const NAME_RULE: NameRule = NameRule::PathSegment;
}
impl Kind for rbac_v1::RoleBinding {
    const NAME_RULE: NameRule = NameRule::PathSegment;
}
impl Kind for core_v1::Binding {
    const NAME_RULE: NameRule = NameRule::PathSegment;
}
impl Kind for events_v1::Event {
    const NAME_RULE: NameRule = NameRule::PathSegment;
}

pub static BINDING: Typed<core_v1::Binding> = Typed::new();
pub static COMPONENT_STATUS: Typed<core_v1::ComponentStatus> = Typed::new();
pub static CONFIG_MAP: Typed<core_v1::ConfigMap> = Typed::new();
pub static ENDPOINTS: Typed<core_v1::Endpoints> = Typed::new();
pub static EVENT: Typed<core_v1::Event> = Typed::new();
pub static LIMIT_RANGE: Typed<core_v1::LimitRange> = Typed::new();
pub static NAMESPACE: Typed<core_v1::Namespace> = Typed::new();
pub static NODE: Typed<core_v1::Node> = Typed::new();
pub static PERSISTENT_VOLUME_CLAIM: Typed<core_v1::PersistentVolumeClaim> = Typed::new();
pub static PERSISTENT_VOLUME: Typed<core_v1::PersistentVolume> = Typed::new();
pub static POD: Typed<core_v1::Pod> = Typed::new();
pub static RESOURCE_QUOTA: Typed<core_v1::ResourceQuota> = Typed::new();
pub static SECRET: Typed<core_v1::Secret> = Typed::new();
pub static SERVICE_ACCOUNT: Typed<core_v1::ServiceAccount> = Typed::new();
pub static SERVICE: Typed<core_v1::Service> = Typed::new();
pub static CONTROLLER_REVISION: Typed<apps_v1::ControllerRevision> = Typed::new();
pub static DAEMON_SET: Typed<apps_v1::DaemonSet> = Typed::new();
pub static DEPLOYMENT: Typed<apps_v1::Deployment> = Typed::new();
pub static REPLICA_SET: Typed<apps_v1::ReplicaSet> = Typed::new();
pub static STATEFUL_SET: Typed<apps_v1::StatefulSet> = Typed::new();
pub static SELF_SUBJECT_REVIEW: Typed<authn_v1::SelfSubjectReview> = Typed::new();
pub static SELF_SUBJECT_ACCESS_REVIEW: Typed<authz_v1::SelfSubjectAccessReview> = Typed::new();
pub static SELF_SUBJECT_RULES_REVIEW: Typed<authz_v1::SelfSubjectRulesReview> = Typed::new();
pub static SUBJECT_ACCESS_REVIEW: Typed<authz_v1::SubjectAccessReview> = Typed::new();
pub static LOCAL_SUBJECT_ACCESS_REVIEW: Typed<authz_v1::LocalSubjectAccessReview> = Typed::new();
pub static TOKEN_REVIEW: Typed<authn_v1::TokenReview> = Typed::new();
pub static CERTIFICATE_SIGNING_REQUEST: Typed<certificates_v1::CertificateSigningRequest> = Typed::new();
pub static CRON_JOB: Typed<batch_v1::CronJob> = Typed::new();
pub static JOB: Typed<batch_v1::Job> = Typed::new();
pub static LEASE: Typed<coordination_v1::Lease> = Typed::new();
pub static ENDPOINT_SLICE: Typed<discovery_v1::EndpointSlice> = Typed::new();
pub static EVENTS_V1_EVENT: Typed<events_v1::Event> = Typed::new();
pub static POD_DISRUPTION_BUDGET: Typed<policy_v1::PodDisruptionBudget> = Typed::new();
pub static EVICTION: Typed<policy_v1::Eviction> = Typed::new();
pub static CLUSTER_ROLE_BINDING: Typed<rbac_v1::ClusterRoleBinding> = Typed::new();
pub static CLUSTER_ROLE: Typed<rbac_v1::ClusterRole> = Typed::new();
pub static ROLE_BINDING: Typed<rbac_v1::RoleBinding> = Typed::new();
pub static ROLE: Typed<rbac_v1::Role> = Typed::new();
pub static PRIORITY_CLASS: Typed<scheduling_v1::PriorityClass> = Typed::new();

/// A field path under construction: `spec.containers[0].name`.
#[derive(Clone, Debug)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Path {
        Path(root.to_string())
    }

    // Paths are built for every field validated, valid or not: put together by hand,
    // which costs a fraction of `format!`.
    fn extended(&self, parts: &[&str]) -> Path {
        let mut path = String::with_capacity(self.0.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        path.push_str(&self.0);
        for part in parts {
            path.push_str(part);
        }
        Path(path)
    }

    pub fn child(&self, name: &str) -> Path {
        self.extended(&[".", name])
    }

    pub fn index(&self, i: usize) -> Path {
        self.extended(&["[", itoa::Buffer::new().format(i), "]"])
    }

    pub fn key(&self, key: &str) -> Path {
        self.extended(&["[", key, "]"])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_by_path() {
        let input = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "d", "bogus": 1,
            "creationTimestamp": null, "nothing": null}, "data": {"k": "v"}, "extra": {"x": 1}});
        let mut unknown = Vec::new();
        let out = CONFIG_MAP.admit_value(&input, Write::Create, Some(&mut unknown)).unwrap();
        assert_eq!(unknown, vec!["extra".to_string(), "metadata.bogus".to_string()]);
        assert_eq!(out["data"]["k"], "v");
        assert!(out.get("extra").is_none());

        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x", "imagePullPolicy": "Always",
                "ports": [{"containerPort": 80, "hostPot": 80}], "colour": "red"}], "nodeName": null}});
        let mut unknown = Vec::new();
        POD.admit_value(&pod, Write::Create, Some(&mut unknown)).unwrap();
        assert_eq!(
            unknown,
            vec!["spec.containers[1].colour".to_string(), "spec.containers[1].ports[0].hostPot".into()]
        );
    }

    #[test]
    fn json_creates_decode_straight_into_the_kind_unless_the_body_is_not_clean() {
        let mut stamped = 0;
        let mut stamp = |meta: &mut ObjectMeta| {
            stamped += 1;
            meta.namespace = Some("d".into());
            Ok(())
        };
        let pod = br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": null},
            "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running"}}"#;
        let out = POD.admit_json_create(pod, &mut stamp).expect("clean JSON").unwrap().into_value().unwrap();
        assert_eq!(
            (out["metadata"]["namespace"].as_str(), out["spec"]["restartPolicy"].as_str()),
            (Some("d"), Some("Always"))
        );
        let invalid = br#"{"metadata": {"name": "Not_Valid"}}"#;
        let refused = CONFIG_MAP.admit_json_create(invalid, &mut stamp).expect("clean JSON");
        assert_eq!(refused.err().map(|e| e.code()), Some(422));
        for unclean in [
            &br#"{"metadata": {"name": "p"}, "extra": null}"#[..],
            br#"{"apiVersion": "apps/v1", "metadata": {"name": "p"}}"#,
            br#"{"metadata": {"name": 5}}"#,
            br#"{"metadata": {"name": "p"}} trailing"#,
            b"[]",
        ] {
            assert!(
                CONFIG_MAP.admit_json_create(unclean, &mut stamp).is_none(),
                "{}",
                String::from_utf8_lossy(unclean)
            );
        }
        assert_eq!(stamped, 2, "only clean bodies are stamped");
    }

    #[test]
    fn wrong_types_are_bad_requests() {
        let input = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 5}});
        let error = CONFIG_MAP.admit_value(&input, Write::Create, None).unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(error.message.starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: "));
    }
}
