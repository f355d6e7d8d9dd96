//! Resource vectors as integers: milli-CPU, bytes, pod slots and a few extended
//! resources in fixed slots, so fit checks are integer compares with no map lookups.

use keelson_engine::k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use keelson_engine::k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;
use keelson_engine::Quantity;
use std::collections::BTreeMap;

/// How many distinct extended resources (`example.com/gpu`, `hugepages-2Mi`, ...) a
/// cluster may use. A fixed array keeps `Resources` `Copy` and the fit check branch-free;
/// eight is far more than real clusters advertise. A ninth name is not tracked: nodes'
/// capacity for it is ignored and pods requesting it fit nowhere, with a clear reason.
pub const MAX_SCALAR: usize = 8;

/// The CPU a container without a CPU request is assumed to use when scoring (kube's
/// `DefaultMilliCPURequest`), so that many request-less pods still spread out.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory assumed for a container without a memory request (`DefaultMemoryRequest`).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Pod slots (allocatable `pods`); zero in a pod's request, which always takes one.
    pub pods: i64,
    pub scalar: [i64; MAX_SCALAR],
}

impl Resources {
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (mine, theirs) in self.scalar.iter_mut().zip(other.scalar) {
            *mine += theirs;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (mine, theirs) in self.scalar.iter_mut().zip(other.scalar) {
            *mine -= theirs;
        }
    }

    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (mine, theirs) in self.scalar.iter_mut().zip(other.scalar) {
            *mine = (*mine).max(theirs);
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Resources::default()
    }
}

/// CPU and memory as the scoring plugins count them: a container without a request
/// counts the defaults above.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonZero {
    pub milli_cpu: i64,
    pub memory: i64,
}

/// Extended resource names and the slot each occupies, first come first served.
#[derive(Debug, Default)]
pub struct ScalarNames {
    names: Vec<String>,
}

impl ScalarNames {
    /// The slot of `name`, claiming a free one if there is one.
    pub fn slot(&mut self, name: &str) -> Option<usize> {
        if let Some(slot) = self.find(name) {
            return Some(slot);
        }
        if self.names.len() == MAX_SCALAR {
            return None;
        }
        self.names.push(name.to_owned());
        Some(self.names.len() - 1)
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|known| known == name)
    }

    pub fn name(&self, slot: usize) -> &str {
        &self.names[slot]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A quantity as an integer in the resource's unit: milli-units for CPU, whole units for
/// everything else. Malformed quantities count as zero (the API server rejects them).
fn amount(name: &str, quantity: &WireQuantity) -> i64 {
    let Ok(parsed) = quantity.0.parse::<Quantity>() else {
        return 0;
    };
    if name == "cpu" {
        parsed.milli_value()
    } else {
        parsed.value()
    }
}

/// A resource list (node allocatable or container requests) as a vector. Names that do
/// not fit in a scalar slot are returned in `untracked`.
pub fn resource_list(
    list: &BTreeMap<String, WireQuantity>,
    names: &mut ScalarNames,
    untracked: &mut Vec<String>,
) -> Resources {
    let mut out = Resources::default();
    for (name, quantity) in list {
        let value = amount(name, quantity);
        match name.as_str() {
            "cpu" => out.milli_cpu = value,
            "memory" => out.memory = value,
            "ephemeral-storage" => out.ephemeral_storage = value,
            "pods" => out.pods = value,
            other if is_extended(other) => match names.slot(other) {
                Some(slot) => out.scalar[slot] = value,
                None if value > 0 => untracked.push(other.to_owned()),
                None => {}
            },
            _ => {}
        }
    }
    out
}

/// Resources the fit plugin checks beyond cpu/memory/ephemeral-storage/pods: extended
/// resources (`vendor/name`) and huge pages. Attachable-volume counts are a CSI concern.
fn is_extended(name: &str) -> bool {
    (name.contains('/') && !name.starts_with("kubernetes.io/") && !name.starts_with("requests."))
        || name.starts_with("hugepages-")
}

/// What a pod asks of a node: kube's `PodRequests`. Regular containers run together, so
/// they add up; init containers run one at a time before them, so the pod needs the
/// larger of the two; restartable init containers (sidecars) keep running and add to both;
/// the pod overhead comes on top.
pub struct PodRequests {
    pub requests: Resources,
    pub non_zero: NonZero,
    /// Requested resources with no free scalar slot: the pod fits nowhere.
    pub untracked: Vec<String>,
}

pub fn pod_requests(spec: &PodSpec, names: &mut ScalarNames) -> PodRequests {
    let mut untracked = Vec::new();
    let mut sum = Resources::default();
    let mut sum_non_zero = NonZero::default();
    for container in &spec.containers {
        let (requests, non_zero) = container_requests(container, names, &mut untracked);
        sum.add(&requests);
        sum_non_zero.milli_cpu += non_zero.milli_cpu;
        sum_non_zero.memory += non_zero.memory;
    }
    let mut sidecars = Resources::default();
    let mut sidecars_non_zero = NonZero::default();
    let mut init_peak = Resources::default();
    let mut init_peak_non_zero = NonZero::default();
    for container in spec.init_containers.iter().flatten() {
        let (requests, non_zero) = container_requests(container, names, &mut untracked);
        let (mut during, mut during_non_zero) = (requests, non_zero);
        if container.restart_policy.as_deref() == Some("Always") {
            sum.add(&requests);
            sum_non_zero.milli_cpu += non_zero.milli_cpu;
            sum_non_zero.memory += non_zero.memory;
            sidecars.add(&requests);
            sidecars_non_zero.milli_cpu += non_zero.milli_cpu;
            sidecars_non_zero.memory += non_zero.memory;
            during = sidecars;
            during_non_zero = sidecars_non_zero;
        } else {
            during.add(&sidecars);
            during_non_zero.milli_cpu += sidecars_non_zero.milli_cpu;
            during_non_zero.memory += sidecars_non_zero.memory;
        }
        init_peak.max_with(&during);
        init_peak_non_zero.milli_cpu = init_peak_non_zero.milli_cpu.max(during_non_zero.milli_cpu);
        init_peak_non_zero.memory = init_peak_non_zero.memory.max(during_non_zero.memory);
    }
    sum.max_with(&init_peak);
    sum_non_zero.milli_cpu = sum_non_zero.milli_cpu.max(init_peak_non_zero.milli_cpu);
    sum_non_zero.memory = sum_non_zero.memory.max(init_peak_non_zero.memory);
    if let Some(overhead) = &spec.overhead {
        let overhead = resource_list(overhead, names, &mut untracked);
        sum.add(&overhead);
        sum_non_zero.milli_cpu += overhead.milli_cpu;
        sum_non_zero.memory += overhead.memory;
    }
    sum.pods = 0;
    untracked.sort();
    untracked.dedup();
    PodRequests { requests: sum, non_zero: sum_non_zero, untracked }
}

fn container_requests(
    container: &Container,
    names: &mut ScalarNames,
    untracked: &mut Vec<String>,
) -> (Resources, NonZero) {
    let empty = BTreeMap::new();
    let requests_map = match &container.resources {
        Some(ResourceRequirements { requests: Some(requests), .. }) => requests,
        _ => &empty,
    };
    let requests = resource_list(requests_map, names, untracked);
    let non_zero = NonZero {
        milli_cpu: if requests_map.contains_key("cpu") { requests.milli_cpu } else { DEFAULT_MILLI_CPU_REQUEST },
        memory: if requests_map.contains_key("memory") { requests.memory } else { DEFAULT_MEMORY_REQUEST },
    };
    (requests, non_zero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn containers_add_up_and_init_containers_take_the_peak() {
        let spec = spec(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
            ],
            "overhead": {"cpu": "10m"}
        }));
        let mut names = ScalarNames::default();
        let got = pod_requests(&spec, &mut names);
        assert_eq!(got.requests.milli_cpu, 1010);
        assert_eq!(got.requests.memory, 500 << 20);
        assert_eq!(got.requests.scalar[names.find("example.com/gpu").unwrap()], 1);
        // b has no memory request: 200MiB is assumed for scoring.
        assert_eq!(got.non_zero, NonZero { milli_cpu: 1010, memory: (500 << 20) + DEFAULT_MEMORY_REQUEST });
    }

    #[test]
    fn sidecars_run_alongside_later_init_containers_and_the_main_ones() {
        let spec = spec(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "setup", "resources": {"requests": {"cpu": "500m"}}}
            ]
        }));
        let got = pod_requests(&spec, &mut ScalarNames::default());
        assert_eq!(got.requests.milli_cpu, 550);
    }

    #[test]
    fn a_container_without_requests_scores_as_the_defaults() {
        let spec = spec(json!({"containers": [{"name": "a"}]}));
        let got = pod_requests(&spec, &mut ScalarNames::default());
        assert!(got.requests.is_zero());
        assert_eq!(got.non_zero, NonZero { milli_cpu: 100, memory: 200 << 20 });
    }

    #[test]
    fn extended_resources_beyond_the_slots_are_reported() {
        let mut names = ScalarNames::default();
        let mut untracked = Vec::new();
        let list: BTreeMap<String, WireQuantity> =
            (0..=MAX_SCALAR).map(|i| (format!("example.com/r{i}"), WireQuantity("1".into()))).collect();
        resource_list(&list, &mut names, &mut untracked);
        assert_eq!(names.len(), MAX_SCALAR);
        assert_eq!(untracked, vec![format!("example.com/r{MAX_SCALAR}")]);
    }
}
