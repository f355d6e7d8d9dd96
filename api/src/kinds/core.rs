//! Core kinds other than pods: namespaces, nodes, services, config maps, secrets, events.

use super::pod::{check_enum, check_port, parse_quantity};
use super::{Kind, NameRule, Path};
use keelson_engine::k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use keelson_engine::k8s_openapi::api::core::v1::{
    ConfigMap, Event, LimitRange, LimitRangeItem, Namespace, NamespaceSpec, Node, Secret, Service, ServiceSpec,
};
use keelson_engine::k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;
use keelson_engine::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_engine::{FieldError, FieldErrorKind};
use std::collections::{BTreeMap, HashSet};

/// The limit on a ConfigMap's or Secret's data (etcd's value limit leaves room for it).
const DATA_MAX_BYTES: usize = 1024 * 1024;

impl Kind for Namespace {
    const NAMESPACED: bool = false;
    const NAME_RULE: NameRule = NameRule::Label;

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(NamespaceSpec::default);
        spec.finalizers.get_or_insert_with(|| vec!["kubernetes".into()]);
        let labels = self.metadata.labels.get_or_insert_with(BTreeMap::new);
        if let Some(name) = &self.metadata.name {
            // Kubernetes labels every namespace with its own name (for namespace selectors).
            labels.insert("kubernetes.io/metadata.name".into(), name.clone());
        }
        let status = self.status.get_or_insert_with(Default::default);
        status.phase.get_or_insert_with(|| "Active".into());
    }
}

impl Kind for Node {
    const NAMESPACED: bool = false;

    fn validate(&self, errors: &mut Vec<FieldError>) {
        for (i, taint) in self.spec.iter().flat_map(|s| s.taints.iter().flatten()).enumerate() {
            let path = Path::new("spec").child("taints").index(i);
            check_enum(
                Some(&taint.effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                &path.child("effect"),
                errors,
            );
            let problems = keelson_engine::validation::qualified_name(&taint.key);
            if !problems.is_empty() {
                errors.push(FieldError::invalid(path.child("key").as_str(), &taint.key, problems.join("; ")));
            }
        }
    }
}

impl Kind for Service {
    const NAME_RULE: NameRule = NameRule::Label;

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(ServiceSpec::default);
        let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
        spec.session_affinity.get_or_insert_with(|| "None".into());
        if kind != "ExternalName" {
            spec.internal_traffic_policy.get_or_insert_with(|| "Cluster".into());
            spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
            spec.ip_family_policy.get_or_insert_with(|| "SingleStack".into());
        }
        if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
            spec.external_traffic_policy.get_or_insert_with(|| "Cluster".into());
        }
        for port in spec.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".into());
            port.target_port.get_or_insert(IntOrString::Int(port.port));
        }
        self.status.get_or_insert_with(Default::default).load_balancer.get_or_insert_with(Default::default);
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        let Some(spec) = &self.spec else { return };
        let path = Path::new("spec");
        check_enum(
            spec.type_.as_deref(),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
            &path.child("type"),
            errors,
        );
        check_enum(spec.session_affinity.as_deref(), &["ClientIP", "None"], &path.child("sessionAffinity"), errors);
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if ports.is_empty() && spec.type_.as_deref() != Some("ExternalName") && !headless {
            errors.push(FieldError::required("spec.ports", ""));
        }
        let mut names = HashSet::new();
        for (i, port) in ports.iter().enumerate() {
            let port_path = path.child("ports").index(i);
            check_port(port.port, &port_path.child("port"), errors);
            check_enum(port.protocol.as_deref(), &["TCP", "UDP", "SCTP"], &port_path.child("protocol"), errors);
            match port.name.as_deref().filter(|n| !n.is_empty()) {
                None if ports.len() > 1 => errors.push(FieldError::required(port_path.child("name").as_str(), "")),
                Some(name) if !names.insert(name) => errors.push(FieldError::new(
                    FieldErrorKind::Duplicate,
                    port_path.child("name").as_str(),
                    Some(format!("{name:?}")),
                    "",
                )),
                _ => {}
            }
            if let Some(IntOrString::Int(target)) = port.target_port {
                check_port(target, &port_path.child("targetPort"), errors);
            }
            let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
            if port.node_port.is_some_and(|p| p != 0) && matches!(service_type, "ClusterIP" | "ExternalName") {
                errors.push(FieldError::new(
                    FieldErrorKind::Forbidden,
                    port_path.child("nodePort").as_str(),
                    None,
                    format!("may not be used when `type` is '{service_type}'"),
                ));
            }
        }
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        let new_ip = self.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        let old_ip = old.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        if old_ip.is_some_and(|ip| !ip.is_empty()) && new_ip != old_ip {
            errors.push(FieldError::invalid("spec.clusterIPs[0]", new_ip.unwrap_or(""), "may not change once set"));
        }
    }
}

fn validate_data_keys<'a>(keys: impl Iterator<Item = &'a String>, path: &str, errors: &mut Vec<FieldError>) {
    for key in keys {
        let valid =
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            errors.push(FieldError::invalid(
                path,
                key,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
    }
}

fn check_data_size(total: usize, errors: &mut Vec<FieldError>) {
    if total > DATA_MAX_BYTES {
        errors.push(FieldError::too_long_bytes("data", DATA_MAX_BYTES));
    }
}

impl Kind for ConfigMap {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        validate_data_keys(self.data.iter().flat_map(|d| d.keys()), "data", errors);
        validate_data_keys(self.binary_data.iter().flat_map(|d| d.keys()), "binaryData", errors);
        let total = self.data.iter().flatten().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + self.binary_data.iter().flatten().map(|(k, v)| k.len() + v.0.len()).sum::<usize>();
        check_data_size(total, errors);
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        if old.immutable == Some(true) {
            if self.data != old.data || self.binary_data != old.binary_data {
                errors.push(FieldError::new(
                    FieldErrorKind::Forbidden,
                    "data",
                    None,
                    "field is immutable when `immutable` is set",
                ));
            }
            if self.immutable != Some(true) {
                errors.push(FieldError::new(
                    FieldErrorKind::Forbidden,
                    "immutable",
                    None,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
}

impl Kind for Secret {
    fn apply_defaults(&mut self) {
        self.type_.get_or_insert_with(|| "Opaque".into());
        // stringData is write-only: it is merged into data and never stored.
        if let Some(string_data) = self.string_data.take() {
            let data = self.data.get_or_insert_with(BTreeMap::new);
            for (key, value) in string_data {
                data.insert(key, keelson_engine::k8s_openapi::ByteString(value.into_bytes()));
            }
        }
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        validate_data_keys(self.data.iter().flat_map(|d| d.keys()), "data", errors);
        check_data_size(self.data.iter().flatten().map(|(k, v)| k.len() + v.0.len()).sum(), errors);
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        if self.type_ != old.type_ {
            errors.push(FieldError::invalid("type", self.type_.as_deref().unwrap_or(""), "field is immutable"));
        }
        if old.immutable == Some(true) && self.data != old.data {
            errors.push(FieldError::new(
                FieldErrorKind::Forbidden,
                "data",
                None,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

impl Kind for LimitRange {
    /// kube's defaulting of Container items: the default limit from `max`, the
    /// default request from the default limit, then from `min`.
    fn apply_defaults(&mut self) {
        for item in self.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
            if item.type_ != "Container" {
                continue;
            }
            let default = item.default.get_or_insert_with(BTreeMap::new);
            for (name, max) in item.max.iter().flatten() {
                default.entry(name.clone()).or_insert_with(|| max.clone());
            }
            let request = item.default_request.get_or_insert_with(BTreeMap::new);
            for (name, value) in default.iter().chain(item.min.iter().flatten()) {
                request.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        let items = self.spec.iter().flat_map(|s| s.limits.iter());
        for (i, item) in items.enumerate() {
            validate_limit_range_item(item, &Path::new("spec.limits").index(i), errors);
        }
    }
}

/// kube's checks of one LimitRange item: quantities parse, and min ≤ default request
/// ≤ default ≤ max, with ratios of at least 1.
fn validate_limit_range_item(item: &LimitRangeItem, path: &Path, errors: &mut Vec<FieldError>) {
    if item.type_.is_empty() {
        errors.push(FieldError::required(path.child("type").as_str(), ""));
    }
    let parsed = |list: &Option<BTreeMap<String, WireQuantity>>, field: &str, errors: &mut Vec<FieldError>| {
        let mut out = BTreeMap::new();
        for (name, value) in list.iter().flatten() {
            if let Some(q) = parse_quantity(value, &path.child(field).key(name), errors) {
                out.insert(name.clone(), q);
            }
        }
        out
    };
    let max = parsed(&item.max, "max", errors);
    let min = parsed(&item.min, "min", errors);
    let default = parsed(&item.default, "default", errors);
    let default_request = parsed(&item.default_request, "defaultRequest", errors);
    let ratio = parsed(&item.max_limit_request_ratio, "maxLimitRequestRatio", errors);
    if item.type_ == "Pod" {
        for (field, list) in [("default", &default), ("defaultRequest", &default_request)] {
            if !list.is_empty() {
                errors.push(FieldError::new(
                    FieldErrorKind::Forbidden,
                    path.child(field).as_str(),
                    None,
                    "may not be specified when `type` is 'Pod'",
                ));
            }
        }
    }
    // Each pair must be in order; the error sits at `field`, which holds the smaller
    // (`at_small`) or the larger value of the pair.
    let orders = [
        ("min", true, &min, &max, "min value", "max value"),
        ("defaultRequest", true, &default_request, &default, "default request value", "default limit value"),
        ("defaultRequest", false, &min, &default_request, "min value", "default request value"),
        ("defaultRequest", true, &default_request, &max, "default request value", "max value"),
        ("default", false, &min, &default, "min value", "default value"),
        ("default", true, &default, &max, "default value", "max value"),
    ];
    for (field, at_small, small, large, small_name, large_name) in orders {
        for (name, low) in small {
            let Some(high) = large.get(name) else { continue };
            if low.nanos() > high.nanos() {
                let shown = if at_small { low } else { high };
                errors.push(FieldError::invalid(
                    path.child(field).key(name).as_str(),
                    &shown.to_string(),
                    format!("{small_name} {low} is greater than {large_name} {high}"),
                ));
            }
        }
    }
    for (name, r) in &ratio {
        if r.nanos() < 1_000_000_000 {
            let at = path.child("maxLimitRequestRatio").key(name);
            errors.push(FieldError::invalid(at.as_str(), &r.to_string(), format!("ratio {r} is less than 1")));
        }
    }
}

impl Kind for CertificateSigningRequest {
    const NAMESPACED: bool = false;

    /// kube's checks: a PEM certificate request that parses, a signer, usages, and
    /// a lifetime of at least ten minutes if one is asked for.
    fn validate(&self, errors: &mut Vec<FieldError>) {
        let pem = x509_parser::pem::parse_x509_pem(&self.spec.request.0);
        match pem {
            Ok((_, pem)) if pem.label == "CERTIFICATE REQUEST" => {
                use x509_parser::prelude::FromDer;
                if x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents).is_err() {
                    errors.push(FieldError::new(
                        FieldErrorKind::Invalid,
                        "spec.request",
                        None,
                        "invalid certificate request: the request does not parse",
                    ));
                }
            }
            _ => errors.push(FieldError::new(
                FieldErrorKind::Invalid,
                "spec.request",
                None,
                "PEM block type must be CERTIFICATE REQUEST",
            )),
        }
        if self.spec.signer_name.is_empty() {
            errors.push(FieldError::required("spec.signerName", ""));
        }
        if self.spec.usages.as_ref().is_none_or(Vec::is_empty) {
            errors.push(FieldError::required("spec.usages", ""));
        }
        if let Some(seconds) = self.spec.expiration_seconds.filter(|s| *s < 600) {
            errors.push(FieldError::invalid(
                "spec.expirationSeconds",
                &seconds.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
}

impl Kind for Event {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.involved_object.namespace.as_deref().is_some_and(|ns| Some(ns) != self.metadata.namespace.as_deref())
            && self.involved_object.kind.as_deref() != Some("Namespace")
        {
            errors.push(FieldError::invalid(
                "involvedObject.namespace",
                self.involved_object.namespace.as_deref().unwrap_or(""),
                "does not match event.namespace",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::{KindCodec, Write, CONFIG_MAP, LIMIT_RANGE, NAMESPACE, SECRET, SERVICE};
    use serde_json::json;

    #[test]
    fn namespace_and_service_defaults() {
        let ns = NAMESPACE
            .admit_value(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
                Write::Create,
                None,
            )
            .unwrap();
        assert_eq!(ns["spec"]["finalizers"][0], "kubernetes");
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "team-a");

        let svc = SERVICE
            .admit_value(
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
            "namespace": "d"}, "spec": {"ports": [{"port": 80}]}}),
                Write::Create,
                None,
            )
            .unwrap();
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        let bad = SERVICE
            .admit_value(
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web.x",
            "namespace": "d"}, "spec": {}}),
                Write::Create,
                None,
            )
            .unwrap_err();
        let fields: Vec<_> = bad.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "spec.ports"]);
        let node_port_on_cluster_ip = SERVICE
            .admit_value(
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "d"},
                    "spec": {"ports": [{"port": 80, "nodePort": 30080}]}}),
                Write::Create,
                None,
            )
            .unwrap_err();
        assert_eq!(
            node_port_on_cluster_ip.message,
            "Service \"web\" is invalid: spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        );
    }

    #[test]
    fn config_data_rules() {
        let bad = CONFIG_MAP
            .admit_value(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c",
            "namespace": "d"}, "data": {"bad key": "v"}}),
                Write::Create,
                None,
            )
            .unwrap_err();
        assert_eq!(bad.causes[0].field, "data");
        let secret = SECRET
            .admit_value(
                &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s",
            "namespace": "d"}, "stringData": {"k": "v"}}),
                Write::Create,
                None,
            )
            .unwrap();
        assert_eq!(secret["data"]["k"], "dg==");
        assert_eq!(secret["type"], "Opaque");
        assert!(secret.get("stringData").is_none());
    }

    #[test]
    fn limit_ranges_default_container_items_and_keep_their_bounds_in_order() {
        let lr = |limits: serde_json::Value| {
            json!({"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": "lr", "namespace": "d"}, "spec": {"limits": limits}})
        };
        let out = LIMIT_RANGE
            .admit_value(
                &lr(json!([{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}])),
                Write::Create,
                None,
            )
            .unwrap();
        let item = &out["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(item["defaultRequest"], json!({"cpu": "2", "memory": "64Mi"}));
        let error = LIMIT_RANGE
            .admit_value(
                &lr(json!([{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}},
                    {"type": "Pod", "default": {"cpu": "1"}, "maxLimitRequestRatio": {"cpu": "500m"}}])),
                Write::Create,
                None,
            )
            .unwrap_err();
        assert_eq!(error.code(), 422);
        for expected in [
            "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1",
            "spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'",
            "spec.limits[1].maxLimitRequestRatio[cpu]: Invalid value: \"500m\": ratio 500m is less than 1",
        ] {
            assert!(error.message.contains(expected), "{expected} in {}", error.message);
        }
    }
}
