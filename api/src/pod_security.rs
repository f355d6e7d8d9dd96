//! PodSecurity admission: the Pod Security Standards, chosen per namespace by the
//! `pod-security.kubernetes.io/enforce`, `warn` and `audit` labels (`privileged`,
//! `baseline`, `restricted`). A pod that violates its namespace's enforced level is
//! refused with kube's message; one that violates the warned level gets kube's
//! warning; a workload (Deployment, Job, ...) whose pod template would be refused or
//! warned about gets the warning, since its pods will be judged when they are
//! created. What the audited level finds wrong is recorded on the request's audit
//! event (`pod-security.kubernetes.io/audit-violations`), next to the level a pod was
//! judged at (`.../enforce-policy`). Updates are judged when they change what could
//! matter: a pod's images or containers, a workload's template.
//!
//! The checks are kube's for the current policy version (`latest`; a `-version` label
//! only changes the level's name in messages), in kube's order (by check id),
//! including those for fields no keelson runtime acts on (AppArmor, SELinux options,
//! Windows host processes): a policy is about what the pod asks for.

use crate::admitted::AsValue;
use crate::resources::ResourceInfo;
use keelson_engine::k8s_openapi::api::core::v1::{
    Capabilities, PodSpec, SELinuxOptions, SecurityContext, WindowsSecurityContextOptions,
};
use keelson_engine::ApiError;
use serde::Deserialize;
use serde_json::Value;

/// The namespace labels PodSecurity reads (only these are decoded from a namespace).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Labels {
    #[serde(rename = "pod-security.kubernetes.io/enforce")]
    enforce: Option<String>,
    #[serde(rename = "pod-security.kubernetes.io/enforce-version")]
    enforce_version: Option<String>,
    #[serde(rename = "pod-security.kubernetes.io/warn")]
    warn: Option<String>,
    #[serde(rename = "pod-security.kubernetes.io/warn-version")]
    warn_version: Option<String>,
    #[serde(rename = "pod-security.kubernetes.io/audit")]
    audit: Option<String>,
    #[serde(rename = "pod-security.kubernetes.io/audit-version")]
    audit_version: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// A label's level; an unknown value is the most restrictive, as kube reads it.
    fn of(label: Option<&str>) -> Level {
        match label {
            None | Some("privileged") => Level::Privileged,
            Some("baseline") => Level::Baseline,
            _ => Level::Restricted,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The capabilities baseline allows a container to add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The sysctls baseline allows (namespaced and safe).
const SAFE_SYSCTLS: [&str; 9] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
];

/// The volume types restricted allows.
const RESTRICTED_VOLUMES: [&str; 8] =
    ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

/// Where a kind keeps the pod (metadata and spec) it describes: a pod is its own,
/// a workload has a template.
fn template_path(info: &ResourceInfo) -> Option<&'static [&'static str]> {
    match (info.group, info.kind) {
        ("", "Pod") => Some(&[]),
        ("", "PodTemplate") => Some(&["template"]),
        ("", "ReplicationController") | ("apps", _) | ("batch", "Job") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// The audit annotation naming the level a pod was judged at.
pub const ENFORCE_POLICY_ANNOTATION: &str = "pod-security.kubernetes.io/enforce-policy";
/// The audit annotation listing what the `audit` level finds wrong.
pub const AUDIT_VIOLATIONS_ANNOTATION: &str = "pod-security.kubernetes.io/audit-violations";

/// Annotations PodSecurity adds to the request's audit event.
pub type AuditAnnotations = Vec<(&'static str, String)>;

/// Whether an update of `old` to `new` is judged: only a change to what PodSecurity
/// looks at is, as kube tells (so the namespace's labels are read only then).
pub fn judges_update(info: &ResourceInfo, new: &Value, old: &Value) -> bool {
    template_path(info).is_some_and(|path| significant_update(info.kind == "Pod", path, new, old))
}

/// Judges a pod, or a workload's pod template, against the namespace's levels: `Err`
/// refuses a pod; warnings go to `warnings`, and what the audit log should record to
/// `audit` when the server keeps one.
pub fn check(
    labels: &Labels,
    info: &ResourceInfo,
    object: &mut impl AsValue,
    warnings: &mut Vec<String>,
    mut audit: Option<&mut AuditAnnotations>,
) -> Result<(), ApiError> {
    let Some(path) = template_path(info) else { return Ok(()) };
    let is_pod = info.kind == "Pod";
    let version = |v: &Option<String>| v.clone().unwrap_or_else(|| "latest".into());
    let enforce = Level::of(labels.enforce.as_deref());
    let warn = Level::of(labels.warn.as_deref());
    let audited = Level::of(labels.audit.as_deref());
    if is_pod {
        if let Some(audit) = audit.as_deref_mut() {
            audit.push((ENFORCE_POLICY_ANNOTATION, format!("{}:{}", enforce.name(), version(&labels.enforce_version))));
        }
    }
    if enforce == Level::Privileged && warn == Level::Privileged && audited == Level::Privileged {
        return Ok(());
    }
    let object = object.as_value()?;
    let Some(template) = crate::object::get(object, path) else { return Ok(()) };
    let Some(spec) = template.get("spec") else { return Ok(()) };
    let spec: PodSpec = serde_json::from_value(spec.clone()).map_err(ApiError::internal)?;
    let annotations = template.pointer("/metadata/annotations").and_then(Value::as_object);
    let pod = Judged { spec: &spec, annotations };
    let policy = |level: Level, version_label: &Option<String>, found: &[String]| {
        format!("PodSecurity \"{}:{}\": {}", level.name(), version(version_label), found.join(", "))
    };
    if let Some(audit) = audit.filter(|_| audited != Level::Privileged) {
        let found = violations(&pod, audited);
        if !found.is_empty() {
            audit.push((
                AUDIT_VIOLATIONS_ANNOTATION,
                format!("would violate {}", policy(audited, &labels.audit_version, &found)),
            ));
        }
    }
    let enforced = violations(&pod, enforce);
    if !enforced.is_empty() {
        let policy = policy(enforce, &labels.enforce_version, &enforced);
        if is_pod {
            let why = format!("violates {policy}");
            return Err(ApiError::forbidden(info.group, info.plural, crate::object::name(object), &why));
        }
        warnings.push(format!("would violate {policy}"));
    }
    let warned = violations(&pod, warn);
    if !warned.is_empty() && (is_pod || warn != enforce) {
        warnings.push(format!("would violate {}", policy(warn, &labels.warn_version, &warned)));
    }
    Ok(())
}

/// Whether an update changes what PodSecurity judges, as kube tells: for a pod, a
/// container's image, the number of containers, a seccomp annotation or a new
/// ephemeral container (nothing else of a running pod's security can change); for a
/// workload, anything in its pod template.
fn significant_update(is_pod: bool, path: &[&str], new: &Value, old: &Value) -> bool {
    if !is_pod {
        return crate::object::get(new, path) != crate::object::get(old, path);
    }
    fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
        pod.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
    }
    fn containers<'a>(pod: &'a Value, list: &str) -> Vec<(&'a str, &'a str)> {
        let list = pod.get("spec").and_then(|s| s.get(list)).and_then(Value::as_array);
        let field = |c: &'a Value, f: &str| c.get(f).and_then(Value::as_str).unwrap_or("");
        list.into_iter().flatten().map(|c| (field(c, "name"), field(c, "image"))).collect()
    }
    if annotation(new, SECCOMP_POD_ANNOTATION) != annotation(old, SECCOMP_POD_ANNOTATION) {
        return true;
    }
    for list in ["containers", "initContainers"] {
        let (now, before) = (containers(new, list), containers(old, list));
        if now.len() != before.len() {
            return true;
        }
        for ((name, image), (_, old_image)) in now.iter().zip(&before) {
            let key = format!("{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{name}");
            if image != old_image || annotation(new, &key) != annotation(old, &key) {
                return true;
            }
        }
    }
    let before = containers(old, "ephemeralContainers");
    containers(new, "ephemeralContainers").iter().any(|c| !before.contains(c))
}

/// The legacy seccomp annotations kube still looks at on updates.
const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// What PodSecurity judges: the pod's spec and its annotations (AppArmor's legacy
/// profiles are annotations).
struct Judged<'a> {
    spec: &'a PodSpec,
    annotations: Option<&'a serde_json::Map<String, Value>>,
}

/// The prefix of the annotations that set a container's AppArmor profile.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
/// The SELinux types baseline allows (besides none).
const SELINUX_TYPES: [&str; 4] = ["container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// A container, with what PodSecurity reads of it.
struct Container<'a> {
    name: &'a str,
    security: Option<&'a SecurityContext>,
    host_ports: Vec<i32>,
}

fn capabilities<'a>(c: &Container<'a>) -> Option<&'a Capabilities> {
    c.security.and_then(|s| s.capabilities.as_ref())
}

fn container_seccomp<'a>(c: &Container<'a>) -> Option<&'a str> {
    c.security.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str())
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let noun = if names.len() == 1 { "container" } else { "containers" };
    format!("{noun} {}", quoted.join(", "))
}

fn quoted(values: &[&str]) -> String {
    values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
}

/// Every check of `level` the pod spec fails, as kube words them (`reason (detail)`).
fn violations(pod: &Judged<'_>, level: Level) -> Vec<String> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let spec = pod.spec;
    let restricted = level == Level::Restricted;
    let mut containers: Vec<Container<'_>> = Vec::new();
    let init = spec.init_containers.iter().flatten();
    for c in init.chain(&spec.containers) {
        let host_ports = c.ports.iter().flatten().filter_map(|p| p.host_port).filter(|p| *p != 0).collect();
        containers.push(Container { name: &c.name, security: c.security_context.as_ref(), host_ports });
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        let host_ports = c.ports.iter().flatten().filter_map(|p| p.host_port).filter(|p| *p != 0).collect();
        containers.push(Container { name: &c.name, security: c.security_context.as_ref(), host_ports });
    }
    let pod_security = spec.security_context.as_ref();
    let named = |keep: &dyn Fn(&Container<'_>) -> bool| -> Vec<&str> {
        containers.iter().filter(|c| keep(c)).map(|c| c.name).collect()
    };
    let mut out = Vec::new();
    let mut fail = |reason: &str, details: Vec<String>| {
        if !details.is_empty() {
            out.push(format!("{reason} ({})", details.join("; ")));
        }
    };

    // allowPrivilegeEscalation
    if restricted {
        let open = named(&|c| c.security.and_then(|s| s.allow_privilege_escalation) != Some(false));
        if !open.is_empty() {
            fail(
                "allowPrivilegeEscalation != false",
                vec![format!("{} must set securityContext.allowPrivilegeEscalation=false", containers_phrase(&open))],
            );
        }
    }
    // appArmorProfile: the field's type, or the legacy annotation's value
    let mut setters = Vec::new();
    let mut bad_types: Vec<&str> = Vec::new();
    let pod_apparmor = pod_security.and_then(|s| s.app_armor_profile.as_ref()).map(|p| p.type_.as_str());
    if let Some(kind) = pod_apparmor.filter(|t| !allowed_apparmor_type(t)) {
        setters.push("pod".to_string());
        bad_types.push(kind);
    }
    let mut bad = Vec::new();
    for c in &containers {
        let kind = c.security.and_then(|s| s.app_armor_profile.as_ref()).map(|p| p.type_.as_str());
        if let Some(kind) = kind.filter(|t| !allowed_apparmor_type(t)) {
            bad.push(c.name);
            bad_types.push(kind);
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    bad_types.sort_unstable();
    bad_types.dedup();
    let mut bad_values: Vec<String> = bad_types.iter().map(|t| format!("{t:?}")).collect();
    let mut annotations: Vec<String> = pod
        .annotations
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(APPARMOR_ANNOTATION_PREFIX))
        .filter_map(|(key, value)| value.as_str().map(|v| (key, v)))
        .filter(|(_, value)| !(value.is_empty() || *value == "runtime/default" || value.starts_with("localhost/")))
        .map(|(key, value)| format!("{key}={value:?}"))
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(if annotations.len() == 1 { "annotation" } else { "annotations" }.to_string());
        bad_values.extend(annotations.iter().map(|a| format!("{a:?}")));
    }
    if !setters.is_empty() {
        let reason = if bad_values.len() == 1 { "forbidden AppArmor profile" } else { "forbidden AppArmor profiles" };
        fail(
            reason,
            vec![format!("{} must not set AppArmor profile type to {}", setters.join(" and "), bad_values.join(", "))],
        );
    }
    // capabilities: baseline's list of additions, or restricted's drop-all
    let adds = |c: &Container<'_>, allowed: &dyn Fn(&str) -> bool| -> Vec<String> {
        let added = capabilities(c).and_then(|caps| caps.add.as_ref());
        added.into_iter().flatten().filter(|cap| !allowed(cap)).cloned().collect()
    };
    let mut details = Vec::new();
    if restricted {
        let undropped = named(&|c| {
            !capabilities(c).and_then(|caps| caps.drop.as_ref()).is_some_and(|d| d.iter().any(|x| x == "ALL"))
        });
        if !undropped.is_empty() {
            details.push(format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                containers_phrase(&undropped)
            ));
        }
    }
    for c in &containers {
        let forbidden: Vec<String> = if restricted {
            adds(c, &|cap| cap == "NET_BIND_SERVICE")
        } else {
            adds(c, &|cap| BASELINE_CAPABILITIES.contains(&cap))
        };
        if !forbidden.is_empty() {
            let caps: Vec<&str> = forbidden.iter().map(String::as_str).collect();
            details.push(format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_phrase(&[c.name]),
                quoted(&caps)
            ));
        }
    }
    fail(if restricted { "unrestricted capabilities" } else { "non-default capabilities" }, details);
    // hostNamespaces
    let mut hosts = Vec::new();
    for (set, name) in [(spec.host_network, "hostNetwork"), (spec.host_pid, "hostPID"), (spec.host_ipc, "hostIPC")] {
        if set == Some(true) {
            hosts.push(format!("{name}=true"));
        }
    }
    if !hosts.is_empty() {
        fail("host namespaces", vec![hosts.join(", ")]);
    }
    // hostPathVolumes
    let host_paths: Vec<&str> =
        spec.volumes.iter().flatten().filter(|v| v.host_path.is_some()).map(|v| v.name.as_str()).collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 { "volume" } else { "volumes" };
        fail("hostPath volumes", vec![format!("{noun} {}", quoted(&host_paths))]);
    }
    // hostPorts
    let mut details = Vec::new();
    for c in containers.iter().filter(|c| !c.host_ports.is_empty()) {
        let ports: Vec<String> = c.host_ports.iter().map(i32::to_string).collect();
        let noun = if ports.len() == 1 { "hostPort" } else { "hostPorts" };
        details.push(format!("{} uses {noun} {}", containers_phrase(&[c.name]), ports.join(", ")));
    }
    fail("hostPort", details);
    // privileged
    let privileged = named(&|c| c.security.and_then(|s| s.privileged) == Some(true));
    if !privileged.is_empty() {
        fail(
            "privileged",
            vec![format!("{} must not set securityContext.privileged=true", containers_phrase(&privileged))],
        );
    }
    // procMount
    let mut details = Vec::new();
    for c in &containers {
        if let Some(mount) = c.security.and_then(|s| s.proc_mount.as_deref()).filter(|m| *m != "Default") {
            details
                .push(format!("{} must not set securityContext.procMount to {mount:?}", containers_phrase(&[c.name])));
        }
    }
    fail("procMount", details);
    // restrictedVolumes
    if restricted {
        let mut details = Vec::new();
        for volume in spec.volumes.iter().flatten() {
            let source = serde_json::to_value(volume).unwrap_or(Value::Null);
            let kind = source.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned());
            if let Some(kind) = kind.filter(|k| !RESTRICTED_VOLUMES.contains(&k.as_str())) {
                details.push(format!("volume {:?} uses restricted volume type {kind:?}", volume.name));
            }
        }
        fail("restricted volume types", details);
    }
    // runAsNonRoot
    if restricted {
        let pod_value = pod_security.and_then(|s| s.run_as_non_root);
        let mut details = Vec::new();
        if pod_value == Some(false) {
            details.push("pod must not set securityContext.runAsNonRoot=false".to_string());
        }
        let explicit_false = named(&|c| c.security.and_then(|s| s.run_as_non_root) == Some(false));
        if !explicit_false.is_empty() {
            details.push(format!(
                "{} must not set securityContext.runAsNonRoot=false",
                containers_phrase(&explicit_false)
            ));
        }
        if pod_value != Some(true) {
            let unset = named(&|c| c.security.and_then(|s| s.run_as_non_root).is_none());
            if !unset.is_empty() {
                details
                    .push(format!("pod or {} must set securityContext.runAsNonRoot=true", containers_phrase(&unset)));
            }
        }
        fail("runAsNonRoot != true", details);
    }
    // runAsUser
    if restricted {
        let mut details = Vec::new();
        if pod_security.and_then(|s| s.run_as_user) == Some(0) {
            details.push("pod must not set runAsUser=0".to_string());
        }
        let root = named(&|c| c.security.and_then(|s| s.run_as_user) == Some(0));
        if !root.is_empty() {
            details.push(format!("{} must not set runAsUser=0", containers_phrase(&root)));
        }
        fail("runAsUser=0", details);
    }
    // seLinuxOptions: only the container types; no user or role
    let mut setters = Vec::new();
    let mut selinux = SelinuxFindings::default();
    if pod_security.and_then(|s| s.se_linux_options.as_ref()).is_some_and(|o| !selinux.judge(o)) {
        setters.push("pod".to_string());
    }
    let mut bad = Vec::new();
    for c in &containers {
        if c.security.and_then(|s| s.se_linux_options.as_ref()).is_some_and(|o| !selinux.judge(o)) {
            bad.push(c.name);
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if !setters.is_empty() {
        fail(
            "seLinuxOptions",
            vec![format!(
                "{} set forbidden securityContext.seLinuxOptions: {}",
                setters.join(" and "),
                selinux.detail()
            )],
        );
    }
    // seccompProfile: baseline forbids Unconfined; restricted requires RuntimeDefault or Localhost
    let pod_seccomp = pod_security.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
    let mut details = Vec::new();
    if pod_seccomp == Some("Unconfined") {
        details.push("pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string());
    }
    let unconfined = named(&|c| container_seccomp(c) == Some("Unconfined"));
    if !unconfined.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            containers_phrase(&unconfined)
        ));
    }
    if restricted && !matches!(pod_seccomp, Some("RuntimeDefault" | "Localhost")) {
        let unset = named(&|c| container_seccomp(c).is_none());
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&unset)
            ));
        }
    }
    fail("seccompProfile", details);
    // sysctls
    let sysctls: Vec<&str> = pod_security
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| s.name.as_str())
        .filter(|name| !SAFE_SYSCTLS.contains(name))
        .collect();
    if !sysctls.is_empty() {
        fail("forbidden sysctls", vec![sysctls.join(", ")]);
    }
    // windowsHostProcess
    let mut setters = Vec::new();
    let host_process = |w: Option<&WindowsSecurityContextOptions>| w.and_then(|w| w.host_process) == Some(true);
    if host_process(pod_security.and_then(|s| s.windows_options.as_ref())) {
        setters.push("pod".to_string());
    }
    let bad = named(&|c| host_process(c.security.and_then(|s| s.windows_options.as_ref())));
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if !setters.is_empty() {
        fail(
            "hostProcess",
            vec![format!("{} must not set securityContext.windowsOptions.hostProcess=true", setters.join(" and "))],
        );
    }
    out
}

fn allowed_apparmor_type(kind: &str) -> bool {
    matches!(kind, "RuntimeDefault" | "Localhost")
}

/// What the SELinux check found wrong, across the pod and its containers.
#[derive(Default)]
struct SelinuxFindings {
    types: Vec<String>,
    user: bool,
    role: bool,
}

impl SelinuxFindings {
    /// Whether `options` pass; what fails is noted.
    fn judge(&mut self, options: &SELinuxOptions) -> bool {
        let mut allowed = true;
        let kind = options.type_.as_deref().unwrap_or("");
        if !kind.is_empty() && !SELINUX_TYPES.contains(&kind) {
            allowed = false;
            if !self.types.iter().any(|t| t == kind) {
                self.types.push(kind.to_string());
            }
        }
        if options.user.as_deref().is_some_and(|u| !u.is_empty()) {
            allowed = false;
            self.user = true;
        }
        if options.role.as_deref().is_some_and(|r| !r.is_empty()) {
            allowed = false;
            self.role = true;
        }
        allowed
    }

    /// kube's wording: `type "x"; user may not be set; role may not be set`.
    fn detail(&self) -> String {
        let mut parts = Vec::new();
        if !self.types.is_empty() {
            let mut types: Vec<&str> = self.types.iter().map(String::as_str).collect();
            types.sort_unstable();
            let noun = if types.len() == 1 { "type" } else { "types" };
            parts.push(format!("{noun} {}", quoted(&types)));
        }
        if self.user {
            parts.push("user may not be set".to_string());
        }
        if self.role {
            parts.push("role may not be set".to_string());
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: Value) -> Value {
        json!({"spec": value})
    }

    /// What `level` finds wrong with the pod `{metadata, spec}`.
    fn violations(pod: &Value, level: Level) -> Vec<String> {
        let spec: PodSpec = serde_json::from_value(pod["spec"].clone()).expect("a pod spec");
        let annotations = pod.pointer("/metadata/annotations").and_then(Value::as_object);
        super::violations(&Judged { spec: &spec, annotations }, level)
    }

    #[test]
    fn a_bare_pod_passes_baseline_and_fails_restricted_in_kubes_words() {
        let bare = spec(json!({"containers": [{"name": "app", "image": "web"}]}));
        assert!(violations(&bare, Level::Baseline).is_empty());
        assert_eq!(
            violations(&bare, Level::Restricted).join(", "),
            "allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let hardened =
            spec(json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}));
        assert!(violations(&hardened, Level::Restricted).is_empty());
    }

    #[test]
    fn baseline_refuses_host_access_and_privilege() {
        let risky = spec(json!({"hostNetwork": true, "hostPID": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
            "containers": [
                {"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}},
                 "ports": [{"containerPort": 80, "hostPort": 8080}]},
                {"name": "b", "securityContext": {"privileged": true, "seccompProfile": {"type": "Unconfined"}}}]}));
        assert_eq!(
            violations(&risky, Level::Baseline),
            [
                "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
                "host namespaces (hostNetwork=true, hostPID=true)",
                "hostPath volumes (volume \"root\")",
                "hostPort (container \"a\" uses hostPort 8080)",
                "privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)",
                "seccompProfile (container \"b\" must not set securityContext.seccompProfile.type to \"Unconfined\")",
                "forbidden sysctls (kernel.msgmax)",
            ]
        );
        assert!(violations(&risky, Level::Restricted).contains(
            &"restricted volume types (volume \"root\" uses restricted volume type \"hostPath\")".to_string()
        ));
    }

    #[test]
    fn baseline_judges_apparmor_selinux_and_windows_host_processes_too() {
        let pod = json!({
            "metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/a": "unconfined",
                "container.apparmor.security.beta.kubernetes.io/b": "localhost/custom"}},
            "spec": {
                "securityContext": {"appArmorProfile": {"type": "Unconfined"},
                    "seLinuxOptions": {"type": "spc_t"}, "windowsOptions": {"hostProcess": true}},
                "containers": [
                    {"name": "a", "securityContext": {"seLinuxOptions": {"user": "root", "type": "container_t"}}},
                    {"name": "b", "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"},
                        "windowsOptions": {"hostProcess": true}}}]}});
        assert_eq!(
            violations(&pod, Level::Baseline),
            [
                "forbidden AppArmor profiles (pod and annotation must not set AppArmor profile type to \"Unconfined\", \
                 \"container.apparmor.security.beta.kubernetes.io/a=\\\"unconfined\\\"\")",
                "seLinuxOptions (pod and container \"a\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; \
                 user may not be set)",
                "hostProcess (pod and container \"b\" must not set securityContext.windowsOptions.hostProcess=true)",
            ]
        );
        let allowed = json!({"spec": {"securityContext": {"seLinuxOptions": {"type": "container_init_t", "level": "s0:c1"}},
            "containers": [{"name": "a", "securityContext": {"appArmorProfile": {"type": "Localhost",
                "localhostProfile": "p"}, "windowsOptions": {"hostProcess": false}}}]}});
        assert!(violations(&allowed, Level::Baseline).is_empty());
    }
}
