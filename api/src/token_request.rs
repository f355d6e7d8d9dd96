//! `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: a TokenRequest
//! (`authentication.k8s.io/v1`, what `kubectl create token` sends) answered with a
//! signed token for the ServiceAccount, as kube's token subresource answers it.

use crate::auth::service_account::{
    ObjectRef, Request, DEFAULT_EXPIRATION_SECONDS, MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS,
};
use crate::object;
use crate::reply::{self, Body};
use crate::rest::Call;
use crate::server::live_uid;
use ::http::StatusCode;
use hyper::Response;
use keelson_engine::{ApiError, FieldError, FieldErrorKind};
use serde_json::{json, Value};

const GROUP: &str = "authentication.k8s.io";

/// The object kinds a token may be bound to, with their resources.
const BINDABLE: [(&str, &str); 3] = [("Pod", "pods"), ("Secret", "secrets"), ("Node", "nodes")];

pub fn create(call: &Call<'_>, input: &Value) -> Result<Response<Body>, ApiError> {
    let state = call.state;
    let tokens = state
        .authenticator
        .service_accounts()
        .ok_or_else(|| ApiError::internal("this server issues no ServiceAccount tokens"))?;
    let namespace = call.route.namespace.as_deref().unwrap_or("");
    let name = call.route.name.as_deref().unwrap_or("");
    let account = call.current_value()?;
    let spec = input.get("spec").cloned().unwrap_or_else(|| json!({}));
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => tokens.api_audiences().to_vec(),
    };
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(value) => {
            value.as_i64().ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?
        }
    };
    let too = |detail: &str| {
        let error =
            FieldError::new(FieldErrorKind::Invalid, "spec.expirationSeconds", Some(expiration.to_string()), detail);
        ApiError::invalid(GROUP, "TokenRequest", name, vec![error])
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(too("may not specify a duration less than 10 minutes"));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(too("may not specify a duration larger than 2^32 seconds"));
    }
    let bound_ref = spec.get("boundObjectRef").filter(|r| !r.is_null());
    let bound = bound_ref.map(|reference| bound_object(call, reference, namespace, name)).transpose()?;
    // NodeRestriction: a node asks tokens only for the pods it runs.
    if let Some(node) = call.user.and_then(crate::authz::node::node_name) {
        let forbidden = |why: &str| ApiError::forbidden("", "serviceaccounts", name, why);
        let Some(("Pod", pod)) = &bound else {
            return Err(forbidden("node requested token not bound to a pod"));
        };
        let key = crate::resources::find("", "v1", "pods").expect("pods are served").key(Some(namespace), &pod.name);
        if state.cache.authorizer.graph.node_of(key.as_bytes()).as_deref() != Some(node) {
            return Err(forbidden("node requested token bound to a pod scheduled on a different node"));
        }
    }
    let now = jiff::Timestamp::now();
    let service_account = ObjectRef {
        name: name.to_string(),
        uid: object::get_str(&account, &["metadata", "uid"]).unwrap_or("").to_string(),
    };
    let (token, expires) = tokens.issue(Request {
        namespace,
        service_account,
        audiences: audiences.clone(),
        expiration_seconds: expiration,
        bound,
        now: now.as_second(),
    });
    let expires = jiff::Timestamp::from_second(expires).map_err(ApiError::internal)?;
    let mut spec = json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null});
    if let Some(reference) = bound_ref {
        spec["boundObjectRef"] = reference.clone();
    }
    let response = json!({
        "kind": "TokenRequest",
        "apiVersion": format!("{GROUP}/v1"),
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": object::now_rfc3339()},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
    });
    Ok(reply::json(StatusCode::CREATED, serde_json::to_vec(&response).map_err(ApiError::internal)?))
}

/// The object a token is to be bound to, which must exist (with the uid given, if
/// one is), and for a pod, run as this ServiceAccount.
fn bound_object(
    call: &Call<'_>,
    reference: &Value,
    namespace: &str,
    account: &str,
) -> Result<(&'static str, ObjectRef), ApiError> {
    let field = |name: &str| reference.get(name).and_then(Value::as_str).unwrap_or("");
    let (kind, name, uid) = (field("kind"), field("name"), field("uid"));
    let Some((kind, resource)) = BINDABLE.iter().copied().find(|(k, _)| *k == kind) else {
        return Err(ApiError::bad_request(format!("cannot bind token to object of type {kind:?}")));
    };
    let namespace = if kind == "Node" { "" } else { namespace };
    let cache = &call.state.cache;
    let actual = live_uid(cache, kind, namespace, name).ok_or_else(|| ApiError::not_found("", resource, name))?;
    if !uid.is_empty() && uid != actual {
        let why = format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated"
        );
        return Err(ApiError::conflict("", resource, name, &why));
    }
    if kind == "Pod" {
        let key = crate::resources::find("", "v1", "pods").expect("pods are served").key(Some(namespace), name);
        let pod: Value = cache
            .find(key.as_bytes())
            .map_err(ApiError::internal)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let runs_as = object::get_str(&pod, &["spec", "serviceAccountName"]).unwrap_or("default");
        if runs_as != account {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {account:?} to pod running with different serviceaccount name."
            )));
        }
    }
    Ok((kind, ObjectRef { name: name.to_string(), uid: actual }))
}
