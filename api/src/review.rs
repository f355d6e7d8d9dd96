//! The review kinds: questions answered from the authenticators and the policy, never
//! stored.
//!
//! - About the requester: whoami (SelfSubjectReview), may I (SelfSubjectAccessReview,
//!   `kubectl auth can-i`), what may I in a namespace (SelfSubjectRulesReview,
//!   `kubectl auth can-i --list`).
//! - About anyone, for components that delegate to the API server (kube's
//!   `system:auth-delegator`): may this user (SubjectAccessReview, and
//!   LocalSubjectAccessReview within one namespace), whose is this token (TokenReview).

use crate::auth::User;
use crate::authz::Attributes;
use crate::reply::{self, Body};
use crate::server::ApiState;
use ::http::{Response, StatusCode};
use keelson_engine::{ApiError, FieldError, FieldErrorKind, StatusReason};
use serde_json::{json, Value};

/// Answers a review `kind` posted by `requester` (in `namespace` for the local one).
pub fn answer(
    state: &ApiState,
    kind: &str,
    namespace: Option<&str>,
    mut input: Value,
    requester: Option<&User>,
) -> Result<Response<Body>, ApiError> {
    let requester = requester.ok_or_else(|| ApiError::new(StatusReason::Unauthorized, "Unauthorized"))?;
    let authorizer = &state.cache.authorizer;
    let group = match kind {
        "SelfSubjectReview" | "TokenReview" => "authentication.k8s.io/v1",
        _ => "authorization.k8s.io/v1",
    };
    input["apiVersion"] = json!(group);
    input["kind"] = json!(kind);
    input["status"] = match kind {
        "SelfSubjectAccessReview" => access(authorizer, requester, &input["spec"], kind)?,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            if let Some(namespace) = namespace {
                local_namespace(&mut input, namespace)?;
            }
            let subject = subject(&input["spec"], kind)?;
            access(authorizer, &subject, &input["spec"], kind)?
        }
        "SelfSubjectRulesReview" => {
            let namespace = input["spec"]["namespace"].as_str().unwrap_or("");
            let policy = authorizer.policy();
            match policy.rules_for(requester, namespace) {
                None => json!({
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    "incomplete": false,
                }),
                Some(rules) => {
                    let (urls, resources): (Vec<_>, Vec<_>) = rules.into_iter().partition(|r| r.is_non_resource());
                    json!({
                        "resourceRules": resources.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
                        "nonResourceRules": urls.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
                        "incomplete": false,
                    })
                }
            }
        }
        "TokenReview" => token(state, &input["spec"])?,
        _ => json!({"userInfo": user_info(requester)}),
    };
    Ok(reply::json(StatusCode::CREATED, serde_json::to_vec(&input).map_err(ApiError::internal)?))
}

fn user_info(user: &User) -> Value {
    let mut info = json!({"username": user.name, "uid": user.uid, "groups": user.groups});
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

fn required(kind: &str, field: &str, detail: &str) -> ApiError {
    ApiError::invalid(
        "authorization.k8s.io",
        kind,
        "",
        vec![FieldError::new(FieldErrorKind::Required, field, None, detail)],
    )
}

/// The decision on `spec`'s question for `user`.
fn access(authorizer: &crate::authz::Authorizer, user: &User, spec: &Value, kind: &str) -> Result<Value, ApiError> {
    let request = attributes(spec, kind)?;
    let decision = authorizer.authorize(user, &request);
    Ok(match decision.allowed {
        true => json!({"allowed": true, "reason": decision.reason(user)}),
        false => json!({"allowed": false}),
    })
}

/// The user a SubjectAccessReview asks about, exactly as given: kube adds no groups.
fn subject(spec: &Value, kind: &str) -> Result<User, ApiError> {
    let name = spec["user"].as_str().unwrap_or("").to_string();
    let groups: Vec<String> =
        spec["groups"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
    if name.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            kind,
            "",
            vec![FieldError::invalid("spec.user", "", "at least one of user or group must be specified")],
        ));
    }
    let extra = serde_json::from_value(spec["extra"].clone()).unwrap_or_default();
    Ok(User { name, uid: spec["uid"].as_str().unwrap_or("").to_string(), groups, extra })
}

/// A LocalSubjectAccessReview asks about its own namespace only: an empty namespace
/// in the question is filled in, another one refused.
fn local_namespace(input: &mut Value, namespace: &str) -> Result<(), ApiError> {
    let attributes = &mut input["spec"]["resourceAttributes"];
    if !attributes.is_object() {
        return Err(required(
            "LocalSubjectAccessReview",
            "spec.resourceAttributes",
            "disallowed on this kind of request",
        ));
    }
    match attributes["namespace"].as_str().unwrap_or("") {
        "" => attributes["namespace"] = json!(namespace),
        given if given != namespace => {
            return Err(ApiError::invalid(
                "authorization.k8s.io",
                "LocalSubjectAccessReview",
                "",
                vec![FieldError::invalid("spec.resourceAttributes.namespace", given, "must match metadata.namespace")],
            ))
        }
        _ => {}
    }
    Ok(())
}

/// An access review's question: `spec.resourceAttributes` or
/// `spec.nonResourceAttributes`.
fn attributes<'s>(spec: &'s Value, kind: &str) -> Result<Attributes<'s>, ApiError> {
    fn text<'v>(value: &'v Value, field: &str) -> &'v str {
        value[field].as_str().unwrap_or("")
    }
    if let Some(resource) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        return Ok(Attributes {
            verb: text(resource, "verb"),
            path: "",
            group: text(resource, "group"),
            resource: text(resource, "resource"),
            subresource: text(resource, "subresource"),
            namespace: text(resource, "namespace"),
            name: text(resource, "name"),
        });
    }
    if let Some(path) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        return Ok(Attributes::non_resource(text(path, "verb"), text(path, "path")));
    }
    Err(required(
        kind,
        "spec.resourceAttributes",
        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
    ))
}

/// Whose `spec.token` is, by the same authenticators as a request's bearer token.
fn token(state: &ApiState, spec: &Value) -> Result<Value, ApiError> {
    let token = spec["token"].as_str().unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenReview",
            "",
            vec![FieldError::new(FieldErrorKind::Required, "spec.token", None, "")],
        ));
    }
    let audiences = spec["audiences"].clone();
    Ok(match crate::server::authenticate_bearer(state, &format!("Bearer {token}")) {
        Some(user) => json!({"authenticated": true, "user": user_info(&user),
            "audiences": if audiences.is_array() { audiences } else { json!([]) }}),
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    })
}
