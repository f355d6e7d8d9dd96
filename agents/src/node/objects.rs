//! The API objects a node agent writes, built as the kubelet builds them: the Node
//! (capacity, labels, taints, addresses, nodeInfo, conditions), its Lease in
//! `kube-node-lease`, and pod statuses (Running, Succeeded). Pure functions, so the
//! shapes are unit-tested apart from any API traffic.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, DaemonEndpoint, Node,
    NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodIP,
    PodStatus, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use std::collections::BTreeMap;

/// The namespace node Leases live in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a Lease is valid without renewal (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// The kubelet version hollow nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0-keelson";

/// What a node offers and how it is labelled and tainted.
#[derive(Clone, Debug)]
pub struct NodeShape {
    pub cpu: String,
    pub memory: String,
    pub ephemeral_storage: String,
    pub pods: u32,
    /// Extra labels (`--node-labels`), beside hostname, os and arch.
    pub labels: BTreeMap<String, String>,
    /// `--register-with-taints`.
    pub taints: Vec<Taint>,
}

impl Default for NodeShape {
    fn default() -> Self {
        NodeShape {
            cpu: "4".into(),
            memory: "32Gi".into(),
            ephemeral_storage: "100Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }
}

/// Parses `key=value:Effect` or `key:Effect` (kubelet's `--register-with-taints` form).
pub fn parse_taint(text: &str) -> Result<Taint, String> {
    let (key_value, effect) = text.rsplit_once(':').ok_or_else(|| format!("taint {text:?}: want key=value:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("taint {text:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"));
    }
    let (key, value) = match key_value.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (key_value, None),
    };
    if key.is_empty() {
        return Err(format!("taint {text:?}: the key is empty"));
    }
    Ok(Taint { key: key.into(), value, effect: effect.into(), time_added: None })
}

/// Parses `k=v,k2=v2` (`--node-labels`).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("label {pair:?}: want key=value")),
        })
        .collect()
}

/// Node `index`'s addresses: a host IP, and the /24 its pods take addresses from.
/// Hollow nodes are numbered, so both follow from the index (65,536 nodes fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddressing {
    index: u32,
}

impl NodeAddressing {
    pub fn new(index: u32) -> NodeAddressing {
        NodeAddressing { index }
    }

    fn octets(&self) -> (u32, u32) {
        ((self.index >> 8) & 0xff, self.index & 0xff)
    }

    /// In 172.16.0.0/12: the node's InternalIP (node 0 takes 172.16.0.1).
    pub fn host_ip(&self) -> String {
        let host = self.index + 1;
        format!("172.{}.{}.{}", 16 + ((host >> 16) & 0x0f), (host >> 8) & 0xff, host & 0xff)
    }

    /// In 10.0.0.0/8: `10.HIGH.LOW.0/24`.
    pub fn pod_cidr(&self) -> String {
        let (high, low) = self.octets();
        format!("10.{high}.{low}.0/24")
    }

    /// The `n`th pod address on the node (cycling through .2 to .254).
    pub fn pod_ip(&self, n: u32) -> String {
        let (high, low) = self.octets();
        format!("10.{high}.{low}.{}", 2 + n % 253)
    }
}

/// A healthy node's conditions, heartbeat at `heartbeat`, in this state since `since`.
pub fn node_conditions(heartbeat: &Time, since: &Time) -> Vec<NodeCondition> {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(heartbeat.clone()),
        last_transition_time: Some(since.clone()),
    };
    vec![
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
}

/// How a node presents itself beyond its shape: where it is and what runs its pods.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub host_ip: String,
    pub pod_cidr: String,
    /// `hollow://1.0`, `process://0.1.0`, `containerd://1.7.24`.
    pub runtime_version: String,
    pub os_image: String,
    pub kernel_version: String,
    /// The agent's HTTPS port (logs), published as `daemonEndpoints.kubeletEndpoint`.
    pub kubelet_port: i32,
}

/// The Node a hollow agent registers.
pub fn hollow_node(name: &str, addressing: NodeAddressing, shape: &NodeShape, now: &Time) -> Node {
    let identity = NodeIdentity {
        host_ip: addressing.host_ip(),
        pod_cidr: addressing.pod_cidr(),
        runtime_version: "hollow://1.0".into(),
        os_image: "keelson hollow node".into(),
        kernel_version: "hollow".into(),
        kubelet_port: 0,
    };
    node_object(name, &identity, shape, now)
}

/// The Node an agent registers.
pub fn node_object(name: &str, identity: &NodeIdentity, shape: &NodeShape, now: &Time) -> Node {
    let mut labels = shape.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert("beta.kubernetes.io/os".into(), "linux".into());
    labels.insert("beta.kubernetes.io/arch".into(), "amd64".into());
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", shape.cpu.clone()),
        ("memory", shape.memory.clone()),
        ("ephemeral-storage", shape.ephemeral_storage.clone()),
        ("pods", shape.pods.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v)))
    .collect();
    Node {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
        spec: Some(NodeSpec {
            pod_cidr: Some(identity.pod_cidr.clone()),
            pod_cidrs: Some(vec![identity.pod_cidr.clone()]),
            taints: (!shape.taints.is_empty()).then(|| shape.taints.clone()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(node_conditions(now, now)),
            addresses: Some(vec![
                NodeAddress { type_: "InternalIP".into(), address: identity.host_ip.clone() },
                NodeAddress { type_: "Hostname".into(), address: name.into() },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: (identity.kubelet_port > 0).then_some(DaemonEndpoint { port: identity.kubelet_port }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: format!("keelson-{name}"),
                container_runtime_version: identity.runtime_version.clone(),
                kernel_version: identity.kernel_version.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: KUBELET_VERSION.into(),
                machine_id: format!("keelson-{name}"),
                operating_system: "linux".into(),
                os_image: identity.os_image.clone(),
                system_uuid: format!("keelson-{name}"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The node's Lease, owned by the Node (so it goes when the Node goes), as the
/// kubelet writes it.
pub fn node_lease(node: &str, node_uid: Option<&str>, now: &MicroTime) -> Lease {
    let owner = node_uid.map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: uid.into(),
        ..Default::default()
    });
    Lease {
        metadata: ObjectMeta {
            name: Some(node.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.into()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now.clone()),
            ..Default::default()
        }),
    }
}

fn pod_condition(type_: &str, now: &Time) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    }
}

fn container_status(pod: &Pod, state: ContainerState, ready: bool) -> Vec<ContainerStatus> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: format!("hollow://{}", c.image.as_deref().unwrap_or("")),
            container_id: Some(format!("hollow://{uid}/{}", c.name)),
            ready,
            started: Some(ready),
            restart_count: 0,
            state: Some(state.clone()),
            ..Default::default()
        })
        .collect()
}

/// A pod whose containers all started: Running and Ready, as the kubelet reports it.
pub fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str, started: &Time) -> PodStatus {
    let running = ContainerState {
        running: Some(ContainerStateRunning { started_at: Some(started.clone()) }),
        ..Default::default()
    };
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(
            ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
                .iter()
                .map(|t| pod_condition(t, started))
                .collect(),
        ),
        host_ip: Some(host_ip.into()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP { ip: host_ip.into() }]),
        pod_ip: Some(pod_ip.into()),
        pod_ips: Some(vec![PodIP { ip: pod_ip.into() }]),
        start_time: Some(started.clone()),
        container_statuses: Some(container_status(pod, running, true)),
        qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        ..Default::default()
    }
}

/// A pod whose containers all exited with `exit_code`: Succeeded for 0, else Failed.
pub fn exited_status(
    pod: &Pod,
    host_ip: &str,
    pod_ip: &str,
    (started, finished): (&Time, &Time),
    exit_code: i32,
) -> PodStatus {
    let terminated = ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
            started_at: Some(started.clone()),
            finished_at: Some(finished.clone()),
            container_id: None,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut status = running_status(pod, host_ip, pod_ip, started);
    status.phase = Some(if exit_code == 0 { "Succeeded" } else { "Failed" }.into());
    status.container_statuses = Some(container_status(pod, terminated, false));
    let not_ready = |type_: &str| PodCondition {
        type_: type_.into(),
        status: "False".into(),
        reason: Some("PodCompleted".into()),
        last_transition_time: Some(finished.clone()),
        ..Default::default()
    };
    status.conditions = Some(vec![
        not_ready("PodReadyToStartContainers"),
        pod_condition("Initialized", started),
        not_ready("Ready"),
        not_ready("ContainersReady"),
        pod_condition("PodScheduled", started),
    ]);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn taints_and_labels_parse_as_the_kubelet_flags_do() {
        let taint = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(
            (taint.key.as_str(), taint.value.as_deref(), taint.effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        assert_eq!(parse_taint("spot:PreferNoSchedule").unwrap().value, None);
        assert!(parse_taint("x=y:Sometimes").is_err());
        assert!(parse_taint("novalue").is_err());
        let labels = parse_labels("zone=a,tier=web").unwrap();
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        assert!(parse_labels("zone").is_err());
    }

    #[test]
    fn addresses_follow_the_node_index_without_overlap() {
        let a = NodeAddressing::new(0);
        let b = NodeAddressing::new(257);
        assert_eq!(a.pod_cidr(), "10.0.0.0/24");
        assert_eq!(b.pod_cidr(), "10.1.1.0/24");
        assert_eq!(a.host_ip(), "172.16.0.1");
        assert_eq!(b.host_ip(), "172.16.1.2");
        assert_eq!(b.pod_ip(0), "10.1.1.2");
        assert_eq!(b.pod_ip(253), "10.1.1.2", "addresses cycle within the node's /24");
    }

    #[test]
    fn a_hollow_node_is_ready_and_labelled() {
        let now = Time(Timestamp::now());
        let shape = NodeShape { taints: vec![parse_taint("a=b:NoExecute").unwrap()], ..NodeShape::default() };
        let node = hollow_node("h-1", NodeAddressing::new(1), &shape, &now);
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "h-1");
        let status = node.status.as_ref().unwrap();
        assert_eq!(status.allocatable.as_ref().unwrap()["pods"].0, "110");
        let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(node.spec.as_ref().unwrap().taints.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn pod_statuses_look_like_the_kubelets() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "web:1"}]}
        }))
        .unwrap();
        let now = Time(Timestamp::now());
        let running = running_status(&pod, "172.16.0.1", "10.0.0.2", &now);
        assert_eq!(running.phase.as_deref(), Some("Running"));
        let statuses = running.container_statuses.as_ref().unwrap();
        assert!(statuses[0].ready && statuses[0].state.as_ref().unwrap().running.is_some());
        let done = exited_status(&pod, "172.16.0.1", "10.0.0.2", (&now, &now), 0);
        assert_eq!(done.phase.as_deref(), Some("Succeeded"));
        let terminated = done.container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
        assert_eq!((terminated.exit_code, terminated.reason.as_deref()), (0, Some("Completed")));
    }
}
