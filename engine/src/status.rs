//! The Kubernetes `Status` error model.
//!
//! Every failure that reaches a client is one [`ApiError`]: a reason (which fixes the HTTP
//! code), a human message worded as kube-apiserver words it, and optional details (the
//! object's name and kind, field causes, a retry hint). Libraries return their own
//! `thiserror` enums; exactly one place per edge converts them into an `ApiError`, and
//! [`ApiError::to_status`] renders the wire object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use std::fmt;

/// `metav1.StatusReason`: why a request failed. Each maps to one HTTP status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusReason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    NotAcceptable,
    AlreadyExists,
    Conflict,
    /// The requested revision was compacted away (a watch or a continue token too old).
    Expired,
    /// The resource is gone; used for watch errors when history is unavailable.
    Gone,
    RequestEntityTooLarge,
    UnsupportedMediaType,
    Invalid,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
    Timeout,
}

impl StatusReason {
    /// The wire name, as in `metav1.StatusReason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StatusReason::BadRequest => "BadRequest",
            StatusReason::Unauthorized => "Unauthorized",
            StatusReason::Forbidden => "Forbidden",
            StatusReason::NotFound => "NotFound",
            StatusReason::MethodNotAllowed => "MethodNotAllowed",
            StatusReason::NotAcceptable => "NotAcceptable",
            StatusReason::AlreadyExists => "AlreadyExists",
            StatusReason::Conflict => "Conflict",
            StatusReason::Expired => "Expired",
            StatusReason::Gone => "Gone",
            StatusReason::RequestEntityTooLarge => "RequestEntityTooLarge",
            StatusReason::UnsupportedMediaType => "UnsupportedMediaType",
            StatusReason::Invalid => "Invalid",
            StatusReason::TooManyRequests => "TooManyRequests",
            StatusReason::InternalError => "InternalError",
            StatusReason::ServiceUnavailable => "ServiceUnavailable",
            StatusReason::Timeout => "Timeout",
        }
    }

    /// The HTTP status code kube-apiserver answers with for this reason.
    pub const fn code(self) -> u16 {
        match self {
            StatusReason::BadRequest => 400,
            StatusReason::Unauthorized => 401,
            StatusReason::Forbidden => 403,
            StatusReason::NotFound => 404,
            StatusReason::MethodNotAllowed => 405,
            StatusReason::NotAcceptable => 406,
            StatusReason::AlreadyExists | StatusReason::Conflict => 409,
            StatusReason::Expired | StatusReason::Gone => 410,
            StatusReason::RequestEntityTooLarge => 413,
            StatusReason::UnsupportedMediaType => 415,
            StatusReason::Invalid => 422,
            StatusReason::TooManyRequests => 429,
            StatusReason::InternalError => 500,
            StatusReason::ServiceUnavailable => 503,
            StatusReason::Timeout => 504,
        }
    }
}

/// `field.ErrorType`: what is wrong with one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    NotFound,
    Internal,
    /// Server-side apply would change a field another manager owns.
    ManagerConflict,
}

impl FieldErrorKind {
    /// The `StatusCause.reason` Kubernetes sends for this kind.
    pub const fn cause_reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::Internal => "InternalError",
            FieldErrorKind::ManagerConflict => "FieldManagerConflict",
        }
    }

    /// The phrase Kubernetes puts before the detail ("Required value", ...).
    pub const fn phrase(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::Internal => "Internal error",
            FieldErrorKind::ManagerConflict => "",
        }
    }
}

/// One invalid field: `spec.containers[0].name: Invalid value: "Web": a lowercase RFC 1123 label ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// The field path, e.g. `metadata.name` or `spec.containers[1].ports[0].containerPort`.
    pub field: String,
    /// The offending value, already rendered as Kubernetes shows it (strings quoted).
    pub bad_value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorKind::Required, field: field.into(), bad_value: None, detail: detail.into() }
    }

    /// An invalid string value; it is shown quoted.
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            bad_value: Some(format!("{value:?}")),
            detail: detail.into(),
        }
    }

    /// A field over a size limit: `Too long: must have at most N bytes`.
    pub fn too_long_bytes(field: impl Into<String>, max_bytes: usize) -> Self {
        FieldError {
            kind: FieldErrorKind::TooLong,
            field: field.into(),
            bad_value: None,
            detail: format!("must have at most {max_bytes} bytes"),
        }
    }

    pub fn new(
        kind: FieldErrorKind,
        field: impl Into<String>,
        bad_value: Option<String>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError { kind, field: field.into(), bad_value, detail: detail.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.kind.phrase())?;
        if let Some(value) = &self.bad_value {
            write!(f, ": {value}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// The object a failed request was about, for `Status.details`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectRef {
    pub group: String,
    /// The resource (`pods`) or kind (`Pod`), as kube-apiserver puts in `details.kind`.
    pub kind: String,
    pub name: String,
}

/// A failed API request, ready to become a Kubernetes `Status`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: StatusReason,
    pub message: String,
    pub object: Option<Box<ObjectRef>>,
    pub causes: Vec<FieldError>,
    pub retry_after_seconds: Option<u32>,
}

/// `pods` or `deployments.apps`: how kube-apiserver names a resource in messages.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    pub fn new(reason: StatusReason, message: impl Into<String>) -> Self {
        ApiError { reason, message: message.into(), object: None, causes: Vec::new(), retry_after_seconds: None }
    }

    fn about(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.object =
            Some(Box::new(ObjectRef { group: group.to_owned(), kind: kind.to_owned(), name: name.to_owned() }));
        self
    }

    pub fn code(&self) -> u16 {
        self.reason.code()
    }

    /// `pods "web" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(StatusReason::NotFound, format!("{} {name:?} not found", qualified(group, resource)))
            .about(group, resource, name)
    }

    /// `pods "web" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(StatusReason::AlreadyExists, format!("{} {name:?} already exists", qualified(group, resource)))
            .about(group, resource, name)
    }

    /// A 403, as kube words it: `pods "web" is forbidden: <why>`, `pods is forbidden:
    /// <why>` for a collection, `forbidden: <why>` outside any resource.
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let message = match (resource.is_empty(), name.is_empty()) {
            (true, _) => format!("forbidden: {why}"),
            (false, true) => format!("{} is forbidden: {why}", qualified(group, resource)),
            (false, false) => format!("{} {name:?} is forbidden: {why}", qualified(group, resource)),
        };
        let error = ApiError::new(StatusReason::Forbidden, message);
        if resource.is_empty() {
            error
        } else {
            error.about(group, resource, name)
        }
    }

    /// `Operation cannot be fulfilled on pods "web": <why>`.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        ApiError::new(
            StatusReason::Conflict,
            format!("Operation cannot be fulfilled on {} {name:?}: {why}", qualified(group, resource)),
        )
        .about(group, resource, name)
    }

    /// The optimistic-concurrency conflict, worded as Kubernetes words it.
    pub fn stale_object(group: &str, resource: &str, name: &str) -> Self {
        ApiError::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `Pod "web" is invalid: spec.containers: Required value`, `Deployment.apps "web" is
    /// invalid: ...` (several causes are bracketed).
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let listed = match causes.as_slice() {
            [] => String::from("invalid object"),
            [one] => one.to_string(),
            many => format!("[{}]", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        };
        let qualified_kind = qualified(group, kind);
        let mut error = ApiError::new(StatusReason::Invalid, format!("{qualified_kind} {name:?} is invalid: {listed}"))
            .about(group, kind, name);
        error.causes = causes;
        error
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusReason::BadRequest, message)
    }

    /// A revision older than the retained history (`410`, reason `Expired`).
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(StatusReason::Expired, message)
    }

    /// A watch asked for history that is gone: `too old resource version: 5 (10)`.
    pub fn gone_too_old(requested: u64, oldest: u64) -> Self {
        ApiError::new(StatusReason::Gone, format!("too old resource version: {requested} ({oldest})"))
    }

    pub fn too_many_requests(retry_after_seconds: u32) -> Self {
        let mut error = ApiError::new(StatusReason::TooManyRequests, "Too many requests, please try again later.");
        error.retry_after_seconds = Some(retry_after_seconds);
        error
    }

    pub fn request_entity_too_large(limit_bytes: usize) -> Self {
        ApiError::new(StatusReason::RequestEntityTooLarge, format!("Request entity too large: limit is {limit_bytes}"))
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        ApiError::new(StatusReason::InternalError, format!("Internal error occurred: {message}"))
    }

    /// The wire object: `{"kind":"Status","apiVersion":"v1","status":"Failure",...}`.
    pub fn to_status(&self) -> Status {
        let has_details = self.object.is_some() || !self.causes.is_empty() || self.retry_after_seconds.is_some();
        let details = has_details.then(|| {
            let object = self.object.as_deref().cloned().unwrap_or_default();
            StatusDetails {
                group: (!object.group.is_empty()).then_some(object.group),
                kind: (!object.kind.is_empty()).then_some(object.kind),
                name: (!object.name.is_empty()).then_some(object.name),
                causes: (!self.causes.is_empty()).then(|| self.causes.iter().map(to_cause).collect()),
                retry_after_seconds: self.retry_after_seconds.map(|s| s as i32),
                uid: None,
            }
        });
        Status {
            code: Some(i32::from(self.code())),
            details,
            message: Some(self.message.clone()),
            metadata: Default::default(),
            reason: Some(self.reason.as_str().to_owned()),
            status: Some("Failure".to_owned()),
        }
    }

    /// The `Status` as JSON with `kind` and `apiVersion`, as sent on the wire.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self.to_status()).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("kind".into(), "Status".into());
            map.insert("apiVersion".into(), "v1".into());
        }
        value
    }
}

fn to_cause(error: &FieldError) -> StatusCause {
    let mut parts: Vec<&str> = vec![error.kind.phrase()];
    parts.extend(error.bad_value.as_deref());
    parts.push(&error.detail);
    parts.retain(|p| !p.is_empty());
    let message = parts.join(": ");
    StatusCause {
        field: Some(error.field.clone()),
        message: Some(message),
        reason: Some(error.kind.cause_reason().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_kubernetes() {
        let cases = [
            (ApiError::not_found("", "pods", "x"), 404, "pods \"x\" not found"),
            (ApiError::not_found("apps", "deployments", "x"), 404, "deployments.apps \"x\" not found"),
            (ApiError::already_exists("", "configmaps", "c"), 409, "configmaps \"c\" already exists"),
            (ApiError::bad_request("nope"), 400, "nope"),
            (ApiError::gone_too_old(5, 10), 410, "too old resource version: 5 (10)"),
            (ApiError::too_many_requests(1), 429, "Too many requests, please try again later."),
            (ApiError::request_entity_too_large(3 << 20), 413, "Request entity too large: limit is 3145728"),
        ];
        for (error, code, message) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(error.message, message);
        }
    }

    #[test]
    fn conflict_message() {
        let error = ApiError::stale_object("", "pods", "web");
        assert_eq!(error.code(), 409);
        assert_eq!(
            error.message,
            "Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn invalid_lists_causes_like_kubernetes() {
        let one = ApiError::invalid("", "Pod", "web", vec![FieldError::required("spec.containers", "")]);
        assert_eq!(one.message, "Pod \"web\" is invalid: spec.containers: Required value");
        let two = ApiError::invalid(
            "",
            "Pod",
            "Web",
            vec![
                FieldError::invalid(
                    "metadata.name",
                    "Web",
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
                ),
                FieldError::required("spec.containers", ""),
            ],
        );
        assert_eq!(
            two.message,
            "Pod \"Web\" is invalid: [metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, spec.containers: Required value]"
        );
        let json = two.to_json();
        assert_eq!(json["kind"], "Status");
        assert_eq!(json["code"], 422);
        assert_eq!(json["reason"], "Invalid");
        assert_eq!(json["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(json["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(json["details"]["causes"][1]["message"], "Required value");
    }

    #[test]
    fn retry_after_is_in_details() {
        let json = ApiError::too_many_requests(2).to_json();
        assert_eq!(json["details"]["retryAfterSeconds"], 2);
        assert_eq!(json["status"], "Failure");
    }
}
