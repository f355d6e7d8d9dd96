//! Service endpoints: which pods back a Service, at which addresses and ports.
//!
//! Two controllers publish the same answer in two shapes: [`subsets`] writes one
//! `Endpoints` object per Service (ready and not-ready addresses grouped into
//! subsets by port set), [`slices`] writes `EndpointSlice`s of at most 100 endpoints
//! each. Both follow only Services with a selector; a Service without one has its
//! endpoints written by whoever made it.

pub mod slices;
pub mod subsets;

use super::pods;
use super::runtime::queue::WorkQueue;
use super::runtime::{object_key, Cache};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The label a headless Service's endpoints carry.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The selector of a Service whose endpoints the controllers manage: one with a
/// non-empty selector that is not an ExternalName alias.
pub fn managed_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector.iter().all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
}

/// The pods in the Service's namespace its selector selects.
pub fn selected_pods(service: &Service, pods: &Cache<Pod>) -> Vec<std::sync::Arc<Pod>> {
    let Some(selector) = managed_selector(service) else { return Vec::new() };
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let mut selected: Vec<_> =
        pods.in_namespace(namespace).into_iter().filter(|p| selects(selector, p.metadata.labels.as_ref())).collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    selected
}

pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Whether a pod belongs among a Service's endpoints: it has an address and has not
/// finished; a terminating pod only where the caller lists terminating endpoints.
pub fn is_endpoint(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let has_ip = status.and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty());
    has_ip && !pods::is_finished(pod) && (include_terminating || pod.metadata.deletion_timestamp.is_none())
}

/// The port a Service port reaches on `pod`: its number, or the pod's container port
/// of that name and protocol. `None` when a named port is not on the pod.
pub fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            spec.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                (p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .then_some(p.container_port)
            })
        }
    }
}

/// The reference from an endpoint back to its pod.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The DNS hostname a pod has within the Service: set when the pod names the
/// Service as its subdomain.
pub fn hostname(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == service.metadata.name.as_deref()).then(|| hostname.to_string())
}

/// What of a pod its endpoints show: a change elsewhere (status of a container,
/// annotations) needs no endpoint update.
fn endpoint_view(pod: &Pod) -> impl PartialEq + '_ {
    let status = pod.status.as_ref();
    (
        pod.metadata.labels.as_ref(),
        status.and_then(|s| s.pod_ip.as_deref()),
        status.and_then(|s| s.phase.as_deref()),
        pods::is_ready(pod),
        pod.metadata.deletion_timestamp.is_some(),
        pod.spec.as_ref().map(|s| (s.node_name.as_deref(), s.hostname.as_deref(), s.subdomain.as_deref())),
    )
}

/// Whether a pod update changes what any Service's endpoints show.
pub fn endpoint_changed(old: &Pod, new: &Pod) -> bool {
    endpoint_view(old) != endpoint_view(new)
}

/// Enqueues every managed Service in the pod's namespace that selects it.
pub fn enqueue_services_of(services: &Cache<Service>, queue: &WorkQueue, pod: &Pod) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    for service in services.in_namespace(namespace) {
        if managed_selector(&service).is_some_and(|s| selects(s, pod.metadata.labels.as_ref())) {
            queue.add(&object_key(service.as_ref()));
        }
    }
}

/// The handler both controllers register on pods: a pod that appears, goes or
/// changes what endpoints show enqueues the Services selecting it, before and after.
pub fn on_pod_change(services: &Cache<Service>, queue: &WorkQueue, change: &super::runtime::Change<'_, Pod>) {
    use super::runtime::Change;
    match change {
        Change::Added(pod) | Change::Deleted(pod) => enqueue_services_of(services, queue, pod),
        Change::Updated { old, new } => {
            if endpoint_changed(old, new) {
                enqueue_services_of(services, queue, new);
                if old.metadata.labels != new.metadata.labels {
                    enqueue_services_of(services, queue, old);
                }
            }
        }
    }
}

/// The labels a Service's endpoints carry: the Service's own, plus the headless mark.
pub fn endpoint_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

#[cfg(test)]
pub(crate) mod testing {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodCondition, PodSpec, PodStatus, Service};
    use std::collections::BTreeMap;

    /// A running pod with label `app=web`, container port `http` = 8080.
    pub fn web_pod(name: &str, ip: &str, ready: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some(format!("uid-{name}"));
        pod.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
        pod.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "main".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        });
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    /// Service `web` selecting `app=web`, port 80 → the named port `http`.
    pub fn web_service() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.0.0.10",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}
        }))
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn named_target_ports_resolve_against_the_pods_containers() {
        let service = web_service();
        let pod = web_pod("a", "10.1.0.1", true);
        let port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(target_port(port, &pod), Some(8080));
        let mut udp = port.clone();
        udp.protocol = Some("UDP".into());
        assert_eq!(target_port(&udp, &pod), None, "a named port matches its protocol too");
        let numbered = ServicePort { port: 80, target_port: Some(IntOrString::Int(9090)), ..Default::default() };
        assert_eq!(target_port(&numbered, &pod), Some(9090));
    }

    #[test]
    fn finished_addressless_and_terminating_pods_are_not_endpoints() {
        let mut pod = web_pod("a", "10.1.0.1", true);
        assert!(is_endpoint(&pod, false));
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!is_endpoint(&pod, false));
        assert!(is_endpoint(&pod, true));
        pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!is_endpoint(&pod, true));
        let mut pending = web_pod("b", "", false);
        pending.status.as_mut().unwrap().pod_ip = None;
        assert!(!is_endpoint(&pending, true));
    }

    #[test]
    fn only_changes_endpoints_show_count() {
        let old = web_pod("a", "10.1.0.1", false);
        let mut annotated = old.clone();
        annotated.metadata.annotations = Some(BTreeMap::from([("x".into(), "y".into())]));
        assert!(!endpoint_changed(&old, &annotated));
        assert!(endpoint_changed(&old, &web_pod("a", "10.1.0.1", true)));
    }
}
