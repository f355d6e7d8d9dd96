//! `ObjectMeta` validation, as `ValidateObjectMeta` does it.

use keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keelson_engine::validation::{dns1123_label, dns1123_subdomain, label_value, qualified_name};
use keelson_engine::{FieldError, FieldErrorKind};
use std::collections::BTreeMap;

/// Kubernetes' limit on the total size of an object's annotations.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Which syntax an object's name must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain: most kinds.
    Subdomain,
    /// A DNS-1123 label: namespaces and services (they become DNS labels).
    Label,
    /// Anything usable as a URL path segment (RBAC kinds: `system:controller:x`).
    PathSegment,
}

pub fn check_name(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
        NameRule::PathSegment => path_segment(name),
    }
}

fn path_segment(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"].iter().filter(|bad| name.contains(*bad)).map(|bad| format!("may not contain '{bad}'")).collect()
}

pub fn validate(meta: &ObjectMeta, rule: NameRule, namespaced: bool, errors: &mut Vec<FieldError>) {
    match meta.name.as_deref() {
        None | Some("") => {
            if meta.generate_name.as_deref().unwrap_or("").is_empty() {
                errors.push(FieldError::required("metadata.name", "name or generateName is required"));
            }
        }
        Some(name) => {
            let problems = check_name(rule, name);
            if !problems.is_empty() {
                errors.push(FieldError::invalid("metadata.name", name, problems.join("; ")));
            }
        }
    }
    match (namespaced, meta.namespace.as_deref()) {
        (true, None | Some("")) => errors.push(FieldError::required("metadata.namespace", "")),
        (true, Some(namespace)) => {
            let problems = dns1123_label(namespace);
            if !problems.is_empty() {
                errors.push(FieldError::invalid("metadata.namespace", namespace, problems.join("; ")));
            }
        }
        (false, Some(namespace)) if !namespace.is_empty() => errors.push(FieldError::new(
            FieldErrorKind::Forbidden,
            "metadata.namespace",
            None,
            "not allowed on this type",
        )),
        (false, _) => {}
    }
    if let Some(labels) = &meta.labels {
        validate_labels(labels, "metadata.labels", errors);
    }
    if let Some(annotations) = &meta.annotations {
        validate_annotations(annotations, errors);
    }
    if let Some(finalizers) = &meta.finalizers {
        for (i, finalizer) in finalizers.iter().enumerate() {
            let problems = qualified_name(finalizer);
            if !problems.is_empty() {
                errors.push(FieldError::invalid(format!("metadata.finalizers[{i}]"), finalizer, problems.join("; ")));
            }
        }
    }
    if let Some(owners) = &meta.owner_references {
        let mut controllers = 0;
        for (i, owner) in owners.iter().enumerate() {
            let path = format!("metadata.ownerReferences[{i}]");
            for (field, value) in
                [("apiVersion", &owner.api_version), ("kind", &owner.kind), ("name", &owner.name), ("uid", &owner.uid)]
            {
                if value.is_empty() {
                    errors.push(FieldError::invalid(
                        format!("{path}.{field}"),
                        value,
                        format!("{field} must not be empty"),
                    ));
                }
            }
            if owner.controller == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            errors.push(FieldError::invalid(
                "metadata.ownerReferences",
                "",
                "Only one reference can have Controller set to true",
            ));
        }
    }
}

pub fn validate_labels(labels: &BTreeMap<String, String>, path: &str, errors: &mut Vec<FieldError>) {
    for (key, value) in labels {
        let problems = qualified_name(key);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(path, key, problems.join("; ")));
        }
        let problems = label_value(value);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(path, value, problems.join("; ")));
        }
    }
}

fn validate_annotations(annotations: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    let mut total = 0;
    for (key, value) in annotations {
        let problems = qualified_name(&key.to_lowercase());
        if !problems.is_empty() {
            errors.push(FieldError::invalid("metadata.annotations", key, problems.join("; ")));
        }
        total += key.len() + value.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errors.push(FieldError::too_long_bytes("metadata.annotations", ANNOTATIONS_MAX_BYTES));
    }
}

/// What may not change on update. The server copies uid and creationTimestamp from
/// the stored object before this runs; a client that changes the name or namespace
/// is told so.
pub fn validate_update(new: &ObjectMeta, old: &ObjectMeta, errors: &mut Vec<FieldError>) {
    for (field, new, old) in [
        ("metadata.name", &new.name, &old.name),
        ("metadata.namespace", &new.namespace, &old.namespace),
        ("metadata.uid", &new.uid, &old.uid),
    ] {
        if new != old {
            errors.push(FieldError::invalid(field, new.as_deref().unwrap_or(""), "field is immutable"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta { name: Some(name.into()), namespace: namespace.map(Into::into), ..Default::default() }
    }

    #[test]
    fn names_follow_the_kind_rule() {
        let mut errors = Vec::new();
        validate(&meta("Bad_Name", Some("default")), NameRule::Subdomain, true, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "metadata.name");
        assert!(errors[0].detail.starts_with("a lowercase RFC 1123 subdomain"));

        errors.clear();
        validate(&meta("a.b", None), NameRule::Label, false, &mut errors);
        assert_eq!(errors.len(), 1, "labels have no dots");

        errors.clear();
        validate(&meta("system:controller:x", None), NameRule::PathSegment, false, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(path_segment("a/b"), vec!["may not contain '/'"]);
    }

    #[test]
    fn scope_and_labels() {
        let mut errors = Vec::new();
        validate(&meta("n", Some("default")), NameRule::Subdomain, false, &mut errors);
        assert_eq!(errors[0].field, "metadata.namespace");

        errors.clear();
        let mut m = meta("n", Some("default"));
        m.labels = Some([("bad key!".to_string(), "v".to_string())].into());
        validate(&m, NameRule::Subdomain, true, &mut errors);
        assert_eq!(errors[0].field, "metadata.labels");

        errors.clear();
        validate(
            &ObjectMeta { namespace: Some("d".into()), ..Default::default() },
            NameRule::Subdomain,
            true,
            &mut errors,
        );
        assert_eq!(errors[0].detail, "name or generateName is required");
    }
}
