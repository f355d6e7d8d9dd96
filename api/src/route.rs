//! URL paths and query strings, parsed into what a request is about.

use crate::resources::{self, ResourceInfo};
use keelson_engine::ApiError;

/// What a request path names.
#[derive(Debug)]
pub enum Route {
    /// `/`: the list of served paths.
    Root,
    Version,
    /// `/healthz`, `/livez`, `/readyz` (and their sub-checks).
    Health,
    Metrics,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`: the legacy resource list.
    GroupVersion {
        group: String,
        version: String,
    },
    OpenApiV3Index,
    /// `/openapi/v3/apis/<group>/<version>` or `/openapi/v3/api/v1`.
    OpenApiV3 {
        group: String,
        version: String,
    },
    OpenApiV2,
    Resource(ResourceRoute),
}

/// A resource path: a collection, an object, or an object's subresource.
#[derive(Clone, Debug)]
pub struct ResourceRoute {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path segment was used.
    pub legacy_watch: bool,
}

fn not_found() -> ApiError {
    ApiError::new(keelson_engine::StatusReason::NotFound, "the server could not find the requested resource")
}

impl Route {
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        let trimmed = path.trim_start_matches('/').trim_end_matches('/');
        let segments: Vec<&str> = if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() };
        if segments.iter().any(|s| s.is_empty()) {
            return Err(not_found());
        }
        match segments.as_slice() {
            [] => Ok(Route::Root),
            ["version"] => Ok(Route::Version),
            ["healthz" | "livez" | "readyz", ..] => Ok(Route::Health),
            ["metrics"] => Ok(Route::Metrics),
            ["api"] => Ok(Route::CoreVersions),
            ["apis"] => Ok(Route::Groups),
            ["apis", group] => Ok(Route::Group(group.to_string())),
            ["api", version] => Ok(Route::GroupVersion { group: String::new(), version: version.to_string() }),
            ["apis", group, version] => {
                Ok(Route::GroupVersion { group: group.to_string(), version: version.to_string() })
            }
            ["openapi", "v3"] => Ok(Route::OpenApiV3Index),
            ["openapi", "v3", "api", version] => {
                Ok(Route::OpenApiV3 { group: String::new(), version: version.to_string() })
            }
            ["openapi", "v3", "apis", group, version] => {
                Ok(Route::OpenApiV3 { group: group.to_string(), version: version.to_string() })
            }
            ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] => Ok(Route::OpenApiV2),
            ["api", version, rest @ ..] => resource_route("", version, rest),
            ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
            _ => Err(not_found()),
        }
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    // `namespaces/<ns>/<resource>...` unless the third segment is a namespace's own
    // subresource (`namespaces/<name>/status`).
    let (namespace, plural, name, subresource) = match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] => (None, "namespaces", Some(*ns), Some(*sub)),
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => {
            (Some(*ns), *plural, tail.first().copied(), tail.get(1).copied())
        }
        [plural, tail @ ..] if tail.len() <= 2 => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        _ => return Err(not_found()),
    };
    let info = resources::find(group, version, plural).ok_or_else(not_found)?;
    if namespace.is_some() && !info.namespaced {
        return Err(not_found());
    }
    if let Some(sub) = subresource {
        if info.subresource(sub).is_none() {
            return Err(not_found());
        }
    }
    Ok(Route::Resource(ResourceRoute {
        info,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        subresource: subresource.map(String::from),
        legacy_watch,
    }))
}

/// A decoded query string (form-urlencoded: `+` is a space).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    /// An integer parameter; a malformed one is a 400 as in Kubernetes.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {text:?} is not an integer"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourceRoute {
        match Route::parse(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let r = resource("/api/v1/namespaces/default/pods/web-1/status");
        assert_eq!(
            (r.info.plural, r.namespace.as_deref(), r.name.as_deref()),
            ("pods", Some("default"), Some("web-1"))
        );
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = resource("/api/v1/namespaces/kube-system");
        assert_eq!((r.info.plural, r.namespace, r.name.as_deref()), ("namespaces", None, Some("kube-system")));
        let r = resource("/api/v1/namespaces/kube-system/finalize");
        assert_eq!(r.subresource.as_deref(), Some("finalize"));
        let r = resource("/apis/apps/v1/watch/namespaces/default/deployments");
        assert!(r.legacy_watch && r.name.is_none());
        let r = resource("/api/v1/pods");
        assert!(r.namespace.is_none());
        assert!(Route::parse("/api/v1/namespaces/default/nodes").is_err(), "nodes are cluster-scoped");
        assert!(Route::parse("/api/v1/widgets").is_err());
        assert!(Route::parse("/api/v1/namespaces/d/pods/p/bogus").is_err());
        assert!(matches!(Route::parse("/apis/apps/v1").unwrap(), Route::GroupVersion { .. }));
        assert!(matches!(Route::parse("/openapi/v3/apis/apps/v1").unwrap(), Route::OpenApiV3 { .. }));
    }

    #[test]
    fn queries_are_form_decoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+notin+%28db%29&limit=500&watch=1"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier notin (db)"));
        assert_eq!(q.int("limit").unwrap(), Some(500));
        assert!(q.flag("watch"));
        assert_eq!(Query::parse(Some("limit=x")).int("limit").unwrap_err().code(), 400);
    }
}
