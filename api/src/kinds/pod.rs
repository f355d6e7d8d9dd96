//! Pods and pod templates: defaults and validation shared by every workload kind.

use super::{Kind, Path};
use keelson_engine::k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, ResourceRequirements};
use keelson_engine::k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;
use keelson_engine::validation::dns1123_label;
use keelson_engine::{FieldError, FieldErrorKind, Quantity};
use std::collections::{BTreeMap, HashSet};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

impl Kind for Pod {
    fn apply_defaults(&mut self) {
        if let Some(spec) = &mut self.spec {
            default_pod_spec(spec);
        }
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        match &self.spec {
            Some(spec) => validate_pod_spec(spec, &Path::new("spec"), errors),
            None => errors.push(FieldError::required("spec", "")),
        }
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        // Kubernetes lets a pod's spec change only in a few places.
        let (Some(new_spec), Some(old_spec)) = (&self.spec, &old.spec) else { return };
        let mut masked = new_spec.clone();
        for (container, old_container) in masked.containers.iter_mut().zip(&old_spec.containers) {
            container.image.clone_from(&old_container.image);
        }
        for (container, old_container) in
            masked.init_containers.iter_mut().flatten().zip(old_spec.init_containers.iter().flatten())
        {
            container.image.clone_from(&old_container.image);
        }
        masked.active_deadline_seconds = old_spec.active_deadline_seconds;
        masked.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
        if old_spec
            .tolerations
            .as_ref()
            .is_some_and(|old| new_spec.tolerations.as_ref().is_some_and(|new| old.iter().all(|t| new.contains(t))))
            || old_spec.tolerations.is_none()
        {
            masked.tolerations.clone_from(&old_spec.tolerations);
        }
        // The binding sets nodeName once, through pods/binding.
        if old_spec.node_name.is_none() {
            masked.node_name.clone_from(&old_spec.node_name);
        }
        if masked != *old_spec {
            errors.push(FieldError::new(
                FieldErrorKind::Forbidden,
                "spec",
                None,
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }
}

/// `SetDefaults_PodSpec` and the container defaults.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    if spec.host_network == Some(true) {
        // Host-network pods expose their container ports on the host.
        for container in &mut spec.containers {
            for port in container.ports.iter_mut().flatten() {
                port.host_port.get_or_insert(port.container_port);
            }
        }
    }
    for container in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_container(container);
    }
}

fn default_container(container: &mut Container) {
    container.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
    container.termination_message_policy.get_or_insert_with(|| "File".into());
    if container.image_pull_policy.is_none() {
        container.image_pull_policy = Some(default_pull_policy(container.image.as_deref().unwrap_or("")).into());
    }
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
    }
    let resources = container.resources.get_or_insert_with(Default::default);
    // Requests default to limits where only limits are given.
    if let Some(limits) = &resources.limits {
        let requests = resources.requests.get_or_insert_with(BTreeMap::new);
        for (name, limit) in limits {
            requests.entry(name.clone()).or_insert_with(|| limit.clone());
        }
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise.
fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        _ if image.contains('@') => "IfNotPresent",
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

pub fn validate_pod_spec(spec: &PodSpec, path: &Path, errors: &mut Vec<FieldError>) {
    let containers = path.child("containers");
    if spec.containers.is_empty() {
        errors.push(FieldError::required(containers.as_str(), ""));
    }
    let mut names = HashSet::new();
    for (i, container) in spec.containers.iter().enumerate() {
        validate_container(container, &containers.index(i), &mut names, errors);
    }
    let init = path.child("initContainers");
    for (i, container) in spec.init_containers.iter().flatten().enumerate() {
        validate_container(container, &init.index(i), &mut names, errors);
    }
    check_enum(spec.restart_policy.as_deref(), RESTART_POLICIES, &path.child("restartPolicy"), errors);
    check_enum(spec.dns_policy.as_deref(), DNS_POLICIES, &path.child("dnsPolicy"), errors);
    if let Some(grace) = spec.termination_grace_period_seconds {
        if grace < 0 {
            errors.push(FieldError::new(
                FieldErrorKind::Invalid,
                path.child("terminationGracePeriodSeconds").as_str(),
                Some(grace.to_string()),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        let problems = keelson_engine::validation::dns1123_subdomain(node);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(path.child("nodeName").as_str(), node, problems.join("; ")));
        }
    }
    if let Some(selector) = &spec.node_selector {
        super::meta::validate_labels(selector, path.child("nodeSelector").as_str(), errors);
    }
}

fn validate_container(container: &Container, path: &Path, names: &mut HashSet<String>, errors: &mut Vec<FieldError>) {
    let name_path = path.child("name");
    if container.name.is_empty() {
        errors.push(FieldError::required(name_path.as_str(), ""));
    } else {
        let problems = dns1123_label(&container.name);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(name_path.as_str(), &container.name, problems.join("; ")));
        } else if !names.insert(container.name.clone()) {
            errors.push(FieldError::new(
                FieldErrorKind::Duplicate,
                name_path.as_str(),
                Some(format!("{:?}", container.name)),
                "",
            ));
        }
    }
    if container.image.as_deref().unwrap_or("").trim().is_empty() {
        errors.push(FieldError::required(path.child("image").as_str(), ""));
    }
    check_enum(container.image_pull_policy.as_deref(), PULL_POLICIES, &path.child("imagePullPolicy"), errors);
    let mut port_names = HashSet::new();
    for (i, port) in container.ports.iter().flatten().enumerate() {
        let port_path = path.child("ports").index(i);
        check_port(port.container_port, &port_path.child("containerPort"), errors);
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            check_port(host_port, &port_path.child("hostPort"), errors);
        }
        check_enum(port.protocol.as_deref(), PROTOCOLS, &port_path.child("protocol"), errors);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            if !port_names.insert(name.to_string()) {
                errors.push(FieldError::new(
                    FieldErrorKind::Duplicate,
                    port_path.child("name").as_str(),
                    Some(format!("{name:?}")),
                    "",
                ));
            }
        }
    }
    if let Some(resources) = &container.resources {
        validate_resources(resources, &path.child("resources"), errors);
    }
}

pub fn check_port(port: i32, path: &Path, errors: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&port) {
        errors.push(FieldError::new(
            FieldErrorKind::Invalid,
            path.as_str(),
            Some(port.to_string()),
            "must be between 1 and 65535, inclusive",
        ));
    }
}

pub fn check_enum(value: Option<&str>, allowed: &[&str], path: &Path, errors: &mut Vec<FieldError>) {
    if let Some(value) = value {
        if !allowed.contains(&value) {
            let supported = allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
            errors.push(FieldError::new(
                FieldErrorKind::NotSupported,
                path.as_str(),
                Some(format!("{value:?}")),
                format!("supported values: {supported}"),
            ));
        }
    }
}

/// Parses one resource quantity, reporting it at `path` when malformed or negative.
pub fn parse_quantity(value: &WireQuantity, path: &Path, errors: &mut Vec<FieldError>) -> Option<Quantity> {
    match value.0.parse::<Quantity>() {
        Ok(q) if q.nanos() < 0 => {
            errors.push(FieldError::invalid(path.as_str(), &value.0, "must be greater than or equal to 0"));
            None
        }
        Ok(q) => Some(q),
        Err(_) => {
            errors.push(FieldError::invalid(
                path.as_str(),
                &value.0,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ));
            None
        }
    }
}

fn validate_resources(resources: &ResourceRequirements, path: &Path, errors: &mut Vec<FieldError>) {
    let mut limits = BTreeMap::new();
    for (name, value) in resources.limits.iter().flatten() {
        if let Some(q) = parse_quantity(value, &path.child("limits").key(name), errors) {
            limits.insert(name.as_str(), q);
        }
    }
    for (name, value) in resources.requests.iter().flatten() {
        let Some(request) = parse_quantity(value, &path.child("requests").key(name), errors) else { continue };
        if let Some(limit) = limits.get(name.as_str()) {
            if request.nanos() > limit.nanos() {
                errors.push(FieldError::invalid(
                    path.child("requests").key(name).as_str(),
                    &value.0,
                    format!("must be less than or equal to {name} limit of {limit}"),
                ));
            }
        }
    }
}

/// Defaults and validates a workload's pod template.
pub fn default_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = &mut template.spec {
        default_pod_spec(spec);
    }
}

pub fn validate_template(template: &PodTemplateSpec, path: &Path, errors: &mut Vec<FieldError>) {
    if let Some(labels) = template.metadata.as_ref().and_then(|m| m.labels.as_ref()) {
        super::meta::validate_labels(labels, path.child("metadata").child("labels").as_str(), errors);
    }
    match &template.spec {
        Some(spec) => validate_pod_spec(spec, &path.child("spec"), errors),
        None => errors.push(FieldError::required(path.child("spec").as_str(), "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{KindCodec, Write, POD};
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn defaults_match_kubernetes() {
        let out = POD
            .admit_value(
                &pod(json!({"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "1"}}}]})),
                Write::Create,
                None,
            )
            .unwrap();
        let spec = &out["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(default_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(default_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn invalid_pods_name_their_fields() {
        let error = POD
            .admit_value(
                &pod(json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 70000}]},
                    {"name": "c", "image": "", "resources": {"requests": {"cpu": "2", "memory": "lots"},
                    "limits": {"cpu": "1"}}}], "restartPolicy": "Sometimes"})),
                Write::Create,
                None,
            )
            .unwrap_err();
        let fields: Vec<_> = error.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[1].name",
                "spec.containers[1].image",
                "spec.containers[1].resources.requests[cpu]",
                "spec.containers[1].resources.requests[memory]",
                "spec.restartPolicy",
            ]
        );
        assert_eq!(error.code(), 422);
    }

    #[test]
    fn only_images_change_on_update() {
        let old =
            POD.admit_value(&pod(json!({"containers": [{"name": "c", "image": "a"}]})), Write::Create, None).unwrap();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("b");
        POD.admit_value(&new, Write::Update { old: &old }, None).unwrap();
        new["spec"]["restartPolicy"] = json!("Never");
        let error = POD.admit_value(&new, Write::Update { old: &old }, None).unwrap_err();
        assert_eq!(error.causes[0].field, "spec");
    }
}
