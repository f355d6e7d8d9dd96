//! The in-tree plugins, registered by name.

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_basics;
pub mod noderesources;
pub mod pod_topology_spread;
pub mod taint_toleration;

/// kube-scheduler's default profile: the plugins in the order they run, with the weight of
/// each scoring one (0: does not score).
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
];

/// Plugins that take part in filtering (PreFilter + Filter).
pub const FILTER_PLUGINS: &[&str] = &[
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
];

/// Plugins that score (PreScore + Score + NormalizeScore).
pub const SCORE_PLUGINS: &[&str] = &[
    "TaintToleration",
    "NodeAffinity",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
    "NodeResourcesBalancedAllocation",
    "ImageLocality",
];

/// Every plugin name the registry knows, including those the framework itself provides
/// at other extension points (queue sort, gates, binding, preemption).
pub const KNOWN_PLUGINS: &[&str] = &[
    "PrioritySort",
    "SchedulingGates",
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
    "NodeResourcesBalancedAllocation",
    "ImageLocality",
    "DefaultPreemption",
    "DefaultBinder",
];
