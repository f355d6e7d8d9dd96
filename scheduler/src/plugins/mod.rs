//! The in-tree plugins, registered by name.

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_basics;
pub mod noderesources;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;
pub mod volume_restrictions;

/// One plugin the registry knows: whether it filters (PreFilter + Filter) and its default
/// score weight (0: it does not score; PreScore + Score + NormalizeScore otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: &'static str,
    pub filters: bool,
    pub weight: i64,
}

const fn plugin(name: &'static str, filters: bool, weight: i64) -> PluginInfo {
    PluginInfo { name, filters, weight }
}

/// Every plugin, in kube-scheduler's default order. All of them are in the default
/// profile; those that neither filter nor score are served by the framework or the runner
/// (queue sort, gates, preemption, binding).
pub const REGISTRY: &[PluginInfo] = &[
    plugin("PrioritySort", false, 0),
    plugin("SchedulingGates", false, 0),
    plugin("NodeUnschedulable", true, 0),
    plugin("NodeName", true, 0),
    plugin("TaintToleration", true, 3),
    plugin("NodeAffinity", true, 2),
    plugin("NodePorts", true, 0),
    plugin("NodeResourcesFit", true, 1),
    plugin("VolumeRestrictions", true, 0),
    plugin("VolumeBinding", true, 0),
    plugin("PodTopologySpread", true, 2),
    plugin("InterPodAffinity", true, 2),
    plugin("DefaultPreemption", false, 0),
    plugin("NodeResourcesBalancedAllocation", false, 1),
    plugin("ImageLocality", false, 1),
    plugin("DefaultBinder", false, 0),
];

pub fn info(name: &str) -> Option<&'static PluginInfo> {
    REGISTRY.iter().find(|p| p.name == name)
}
