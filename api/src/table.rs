//! Server-side printing: `meta.k8s.io/v1 Table` with the columns kubectl shows
//! against Kubernetes (kubectl prints only NAME and AGE from a plain list).

use crate::filter::spec_selector_text;
use crate::object;
use crate::resources::ResourceInfo;
use serde_json::{json, Value};

/// One column: name, type, and priority (0 = default output, 1 = `-o wide`).
struct Column(&'static str, &'static str, u8);

type Cells = fn(&Value) -> Vec<Value>;

fn str_at(v: &Value, path: &[&str]) -> String {
    object::get_str(v, path).unwrap_or("").to_string()
}

fn int_at(v: &Value, path: &[&str]) -> i64 {
    object::get(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn none_if_empty(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

/// Kubernetes' `HumanDuration` ("45s", "3m20s", "5h", "12d", ...).
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age_of(timestamp: &str) -> String {
    match timestamp.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration((jiff::Timestamp::now() - t).get_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn age(v: &Value) -> Value {
    json!(age_of(&str_at(v, &["metadata", "creationTimestamp"])))
}

fn name(v: &Value) -> Value {
    json!(object::name(v))
}

fn containers_images(template_spec: Option<&Value>) -> (String, String) {
    let containers = template_spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    let names: Vec<&str> = containers.into_iter().flatten().filter_map(|c| c.get("name")?.as_str()).collect();
    let images: Vec<&str> = containers.into_iter().flatten().filter_map(|c| c.get("image")?.as_str()).collect();
    (names.join(","), images.join(","))
}

fn pod_cells(v: &Value) -> Vec<Value> {
    let statuses = object::get(v, &["status", "containerStatuses"]).and_then(Value::as_array);
    let total = object::get(v, &["spec", "containers"]).and_then(Value::as_array).map_or(0, Vec::len);
    let ready = statuses.into_iter().flatten().filter(|s| s.get("ready") == Some(&json!(true))).count();
    let restarts: i64 = statuses.into_iter().flatten().filter_map(|s| s.get("restartCount")?.as_i64()).sum();
    let mut status = str_at(v, &["status", "reason"]);
    if status.is_empty() {
        status = str_at(v, &["status", "phase"]);
    }
    for s in statuses.into_iter().flatten() {
        if let Some(reason) = object::get_str(s, &["state", "waiting", "reason"]).filter(|r| !r.is_empty()) {
            status = reason.to_string();
        } else if let Some(reason) = object::get_str(s, &["state", "terminated", "reason"]).filter(|r| !r.is_empty()) {
            status = reason.to_string();
        }
    }
    if object::get(v, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null()) {
        status = "Terminating".into();
    }
    vec![
        name(v),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        age(v),
        json!(none_if_empty(str_at(v, &["status", "podIP"]))),
        json!(none_if_empty(str_at(v, &["spec", "nodeName"]))),
        json!(none_if_empty(str_at(v, &["status", "nominatedNodeName"]))),
        json!("<none>"),
    ]
}

fn node_cells(v: &Value) -> Vec<Value> {
    let conditions = object::get(v, &["status", "conditions"]).and_then(Value::as_array);
    let ready = conditions
        .into_iter()
        .flatten()
        .find(|c| c.get("type") == Some(&json!("Ready")))
        .and_then(|c| c.get("status")?.as_str().map(String::from));
    let mut status = match ready.as_deref() {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if object::get(v, &["spec", "unschedulable"]) == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let labels = object::get(v, &["metadata", "labels"]).and_then(Value::as_object);
    let mut roles: Vec<String> = labels
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    let address = |kind: &str| {
        object::get(v, &["status", "addresses"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|a| a.get("type") == Some(&json!(kind)))
            .and_then(|a| a.get("address")?.as_str().map(String::from))
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        name(v),
        json!(status),
        json!(none_if_empty(roles.join(","))),
        age(v),
        json!(str_at(v, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(str_at(v, &["status", "nodeInfo", "osImage"])),
        json!(str_at(v, &["status", "nodeInfo", "kernelVersion"])),
        json!(str_at(v, &["status", "nodeInfo", "containerRuntimeVersion"])),
    ]
}

fn deployment_cells(v: &Value) -> Vec<Value> {
    let (containers, images) = containers_images(object::get(v, &["spec", "template", "spec"]));
    vec![
        name(v),
        json!(format!("{}/{}", int_at(v, &["status", "readyReplicas"]), int_at(v, &["spec", "replicas"]))),
        json!(int_at(v, &["status", "updatedReplicas"])),
        json!(int_at(v, &["status", "availableReplicas"])),
        age(v),
        json!(containers),
        json!(images),
        json!(spec_selector_text(v)),
    ]
}

fn replica_set_cells(v: &Value) -> Vec<Value> {
    let (containers, images) = containers_images(object::get(v, &["spec", "template", "spec"]));
    vec![
        name(v),
        json!(int_at(v, &["spec", "replicas"])),
        json!(int_at(v, &["status", "replicas"])),
        json!(int_at(v, &["status", "readyReplicas"])),
        age(v),
        json!(containers),
        json!(images),
        json!(spec_selector_text(v)),
    ]
}

fn stateful_set_cells(v: &Value) -> Vec<Value> {
    let (containers, images) = containers_images(object::get(v, &["spec", "template", "spec"]));
    vec![
        name(v),
        json!(format!("{}/{}", int_at(v, &["status", "readyReplicas"]), int_at(v, &["spec", "replicas"]))),
        age(v),
        json!(containers),
        json!(images),
    ]
}

fn daemon_set_cells(v: &Value) -> Vec<Value> {
    let selector = object::get(v, &["spec", "template", "spec", "nodeSelector"])
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let (containers, images) = containers_images(object::get(v, &["spec", "template", "spec"]));
    vec![
        name(v),
        json!(int_at(v, &["status", "desiredNumberScheduled"])),
        json!(int_at(v, &["status", "currentNumberScheduled"])),
        json!(int_at(v, &["status", "numberReady"])),
        json!(int_at(v, &["status", "updatedNumberScheduled"])),
        json!(int_at(v, &["status", "numberAvailable"])),
        json!(none_if_empty(selector)),
        age(v),
        json!(containers),
        json!(images),
    ]
}

fn job_cells(v: &Value) -> Vec<Value> {
    let conditions = object::get(v, &["status", "conditions"]).and_then(Value::as_array);
    let has = |kind: &str| {
        conditions
            .into_iter()
            .flatten()
            .any(|c| c.get("type") == Some(&json!(kind)) && c.get("status") == Some(&json!("True")))
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if object::get(v, &["spec", "suspend"]) == Some(&json!(true)) {
        "Suspended"
    } else {
        "Running"
    };
    let completions = match object::get(v, &["spec", "completions"]).and_then(Value::as_i64) {
        Some(c) => format!("{}/{c}", int_at(v, &["status", "succeeded"])),
        None => format!("{}/1 of {}", int_at(v, &["status", "succeeded"]), int_at(v, &["spec", "parallelism"])),
    };
    let duration = match (
        object::get_str(v, &["status", "startTime"]).and_then(|t| t.parse::<jiff::Timestamp>().ok()),
        object::get_str(v, &["status", "completionTime"]).and_then(|t| t.parse::<jiff::Timestamp>().ok()),
    ) {
        (Some(start), Some(end)) => human_duration((end - start).get_seconds()),
        (Some(start), None) => human_duration((jiff::Timestamp::now() - start).get_seconds()),
        _ => String::new(),
    };
    let (containers, images) = containers_images(object::get(v, &["spec", "template", "spec"]));
    vec![
        name(v),
        json!(status),
        json!(completions),
        json!(duration),
        age(v),
        json!(containers),
        json!(images),
        json!(spec_selector_text(v)),
    ]
}

fn cron_job_cells(v: &Value) -> Vec<Value> {
    let last = str_at(v, &["status", "lastScheduleTime"]);
    vec![
        name(v),
        json!(str_at(v, &["spec", "schedule"])),
        json!(none_if_empty(str_at(v, &["spec", "timeZone"]))),
        json!(object::get(v, &["spec", "suspend"])
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()
            .replace("false", "False")
            .replace("true", "True")),
        json!(object::get(v, &["status", "active"]).and_then(Value::as_array).map_or(0, Vec::len)),
        json!(if last.is_empty() { "<none>".to_string() } else { age_of(&last) }),
        age(v),
    ]
}

fn service_cells(v: &Value) -> Vec<Value> {
    let kind = str_at(v, &["spec", "type"]);
    let ports = object::get(v, &["spec", "ports"]).and_then(Value::as_array);
    let ports_text: Vec<String> = ports
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let external = match kind.as_str() {
        "ExternalName" => str_at(v, &["spec", "externalName"]),
        "LoadBalancer" => "<pending>".into(),
        _ => "<none>".into(),
    };
    let selector = object::get(v, &["spec", "selector"])
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    vec![
        name(v),
        json!(kind),
        json!(none_if_empty(str_at(v, &["spec", "clusterIP"]))),
        json!(external),
        json!(none_if_empty(ports_text.join(","))),
        age(v),
        json!(none_if_empty(selector)),
    ]
}

fn namespace_cells(v: &Value) -> Vec<Value> {
    vec![name(v), json!(str_at(v, &["status", "phase"])), age(v)]
}

fn count_of(v: &Value, field: &str) -> usize {
    v.get(field).and_then(Value::as_object).map_or(0, |m| m.len())
}

fn config_map_cells(v: &Value) -> Vec<Value> {
    vec![name(v), json!(count_of(v, "data") + count_of(v, "binaryData")), age(v)]
}

fn secret_cells(v: &Value) -> Vec<Value> {
    vec![name(v), json!(str_at(v, &["type"])), json!(count_of(v, "data")), age(v)]
}

const EVENT_COLUMNS: &[Column] = &[
    Column("Last Seen", "string", 0),
    Column("Type", "string", 0),
    Column("Reason", "string", 0),
    Column("Object", "string", 0),
    Column("Message", "string", 0),
];

fn event_cells(v: &Value) -> Vec<Value> {
    let last = [&["lastTimestamp"][..], &["eventTime"], &["metadata", "creationTimestamp"]]
        .iter()
        .map(|p| str_at(v, p))
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let object_ref =
        format!("{}/{}", str_at(v, &["involvedObject", "kind"]).to_lowercase(), str_at(v, &["involvedObject", "name"]));
    vec![
        json!(age_of(&last)),
        json!(str_at(v, &["type"])),
        json!(str_at(v, &["reason"])),
        json!(object_ref),
        json!(str_at(v, &["message"])),
    ]
}

fn lease_cells(v: &Value) -> Vec<Value> {
    vec![name(v), json!(none_if_empty(str_at(v, &["spec", "holderIdentity"]))), age(v)]
}

/// kube's CSR columns: the condition is the true Approved/Denied/Failed conditions,
/// then `Issued` once a certificate is there, or `Pending`.
fn csr_cells(v: &Value) -> Vec<Value> {
    let mut states: Vec<&str> = v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .filter_map(|c| c["type"].as_str())
        .collect();
    if v["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()) {
        states.push("Issued");
    }
    let condition = if states.is_empty() { "Pending".to_string() } else { states.join(",") };
    let duration = v["spec"]["expirationSeconds"].as_i64().map_or_else(|| "<none>".to_string(), human_duration);
    vec![
        name(v),
        age(v),
        json!(str_at(v, &["spec", "signerName"])),
        json!(str_at(v, &["spec", "username"])),
        json!(duration),
        json!(condition),
    ]
}

/// kubectl's componentstatuses columns: the `Healthy` condition read as a status.
fn component_status_cells(v: &Value) -> Vec<Value> {
    let healthy = v["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Healthy");
    let status = match healthy.and_then(|c| c["status"].as_str()) {
        Some("True") => "Healthy",
        Some("False") => "Unhealthy",
        _ => "Unknown",
    };
    let field = |key: &str| json!(healthy.and_then(|c| c[key].as_str()).unwrap_or(""));
    vec![name(v), json!(status), field("message"), field("error")]
}

fn generic_cells(v: &Value) -> Vec<Value> {
    vec![name(v), age(v)]
}

fn layout(info: &ResourceInfo) -> (&'static [Column], Cells) {
    const NAME: Column = Column("Name", "string", 0);
    const AGE: Column = Column("Age", "string", 0);
    match (info.group, info.kind) {
        ("", "Pod") => (
            &[
                NAME,
                Column("Ready", "string", 0),
                Column("Status", "string", 0),
                Column("Restarts", "string", 0),
                AGE,
                Column("IP", "string", 1),
                Column("Node", "string", 1),
                Column("Nominated Node", "string", 1),
                Column("Readiness Gates", "string", 1),
            ],
            pod_cells,
        ),
        ("", "Node") => (
            &[
                NAME,
                Column("Status", "string", 0),
                Column("Roles", "string", 0),
                AGE,
                Column("Version", "string", 0),
                Column("Internal-IP", "string", 1),
                Column("External-IP", "string", 1),
                Column("OS-Image", "string", 1),
                Column("Kernel-Version", "string", 1),
                Column("Container-Runtime", "string", 1),
            ],
            node_cells,
        ),
        ("apps", "Deployment") => (
            &[
                NAME,
                Column("Ready", "string", 0),
                Column("Up-to-date", "integer", 0),
                Column("Available", "integer", 0),
                AGE,
                Column("Containers", "string", 1),
                Column("Images", "string", 1),
                Column("Selector", "string", 1),
            ],
            deployment_cells,
        ),
        ("apps", "ReplicaSet") => (
            &[
                NAME,
                Column("Desired", "integer", 0),
                Column("Current", "integer", 0),
                Column("Ready", "integer", 0),
                AGE,
                Column("Containers", "string", 1),
                Column("Images", "string", 1),
                Column("Selector", "string", 1),
            ],
            replica_set_cells,
        ),
        ("apps", "StatefulSet") => (
            &[
                NAME,
                Column("Ready", "string", 0),
                AGE,
                Column("Containers", "string", 1),
                Column("Images", "string", 1),
            ],
            stateful_set_cells,
        ),
        ("apps", "DaemonSet") => (
            &[
                NAME,
                Column("Desired", "integer", 0),
                Column("Current", "integer", 0),
                Column("Ready", "integer", 0),
                Column("Up-to-date", "integer", 0),
                Column("Available", "integer", 0),
                Column("Node Selector", "string", 0),
                AGE,
                Column("Containers", "string", 1),
                Column("Images", "string", 1),
            ],
            daemon_set_cells,
        ),
        ("batch", "Job") => (
            &[
                NAME,
                Column("Status", "string", 0),
                Column("Completions", "string", 0),
                Column("Duration", "string", 0),
                AGE,
                Column("Containers", "string", 1),
                Column("Images", "string", 1),
                Column("Selector", "string", 1),
            ],
            job_cells,
        ),
        ("batch", "CronJob") => (
            &[
                NAME,
                Column("Schedule", "string", 0),
                Column("Timezone", "string", 0),
                Column("Suspend", "boolean", 0),
                Column("Active", "integer", 0),
                Column("Last Schedule", "string", 0),
                AGE,
            ],
            cron_job_cells,
        ),
        ("", "Service") => (
            &[
                NAME,
                Column("Type", "string", 0),
                Column("Cluster-IP", "string", 0),
                Column("External-IP", "string", 0),
                Column("Port(s)", "string", 0),
                AGE,
                Column("Selector", "string", 1),
            ],
            service_cells,
        ),
        ("", "Namespace") => (&[NAME, Column("Status", "string", 0), AGE], namespace_cells),
        ("", "ConfigMap") => (&[NAME, Column("Data", "integer", 0), AGE], config_map_cells),
        ("", "Secret") => (&[NAME, Column("Type", "string", 0), Column("Data", "integer", 0), AGE], secret_cells),
        ("", "Event") => (EVENT_COLUMNS, event_cells),
        // The events API serves core Events: the same columns, read from its names.
        ("events.k8s.io", "Event") => (EVENT_COLUMNS, |v| {
            let mut core = v.clone();
            crate::event_view::to_core(&mut core);
            event_cells(&core)
        }),
        ("coordination.k8s.io", "Lease") => (&[NAME, Column("Holder", "string", 0), AGE], lease_cells),
        ("certificates.k8s.io", "CertificateSigningRequest") => (
            &[
                NAME,
                AGE,
                Column("SignerName", "string", 0),
                Column("Requestor", "string", 0),
                Column("RequestedDuration", "string", 0),
                Column("Condition", "string", 0),
            ],
            csr_cells,
        ),
        ("", "ComponentStatus") => (
            &[NAME, Column("Status", "string", 0), Column("Message", "string", 0), Column("Error", "string", 0)],
            component_status_cells,
        ),
        _ => (&[NAME, AGE], generic_cells),
    }
}

/// Renders objects as a Table. Each row carries the object's metadata (kubectl needs
/// it for NAMESPACE and LABELS columns).
pub fn render(info: &ResourceInfo, objects: &[Value], resource_version: &str, continue_token: Option<&str>) -> Vec<u8> {
    let (columns, cells) = layout(info);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|Column(name, kind, priority)| {
            json!({"name": name, "type": kind, "format": if *name == "Name" { "name" } else { "" },
                "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            json!({"cells": cells(o), "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}})
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    serde_json::to_vec(&json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
        "columnDefinitions": definitions, "rows": rows}))
    .expect("a Table serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
        assert_eq!(human_duration(400 * 86400), "400d");
    }

    #[test]
    fn pod_and_node_rows() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let table: Value = serde_json::from_slice(&render(pods, &[pod], "5", None)).unwrap();
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], 2);
        assert_eq!(cells[6], "n1");
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "p");

        let nodes = crate::resources::find("", "v1", "nodes").unwrap();
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let table: Value = serde_json::from_slice(&render(nodes, &[node], "5", None)).unwrap();
        assert_eq!(table["rows"][0]["cells"][1], "Ready,SchedulingDisabled");
        assert_eq!(table["rows"][0]["cells"][2], "control-plane");
    }

    #[test]
    fn component_status_rows_read_the_healthy_condition() {
        let info = crate::resources::find("", "v1", "componentstatuses").unwrap();
        let item = json!({"metadata": {"name": "scheduler"},
            "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]});
        let table: Value = serde_json::from_slice(&render(info, &[item], "5", None)).unwrap();
        assert_eq!(table["rows"][0]["cells"], json!(["scheduler", "Healthy", "ok", ""]));
        assert_eq!(table["columnDefinitions"][1]["name"], "Status");
    }
}
