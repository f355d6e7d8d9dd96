//! A profile: the plugins one `schedulerName` runs, at which extension points, with which
//! score weights and arguments.

use crate::framework::Plugin;
use crate::plugins::image_locality::ImageLocality;
use crate::plugins::inter_pod_affinity::InterPodAffinity;
use crate::plugins::node_affinity::NodeAffinity;
use crate::plugins::node_basics::{NodeName, NodePorts, NodeUnschedulable};
use crate::plugins::noderesources::{
    default_resources, BalancedAllocation, NodeResourcesFit, ResourceWeight, Strategy,
};
use crate::plugins::pod_topology_spread::PodTopologySpread;
use crate::plugins::taint_toleration::TaintToleration;
use crate::plugins::volume_binding::VolumeBinding;
use crate::plugins::volume_restrictions::VolumeRestrictions;
use crate::plugins::{info, REGISTRY};
use crate::query::DefaultSpread;
use keelson_engine::k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// The profile a pod asks for: its `schedulerName`, defaulted.
pub fn scheduler_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(DEFAULT_SCHEDULER_NAME)
}

/// The plugins' arguments (`pluginConfig`), defaulted as kube-scheduler does.
#[derive(Clone, Debug)]
pub struct PluginArgs {
    pub fit_strategy: Strategy,
    pub fit_resources: Vec<ResourceWeight>,
    pub balanced_resources: Vec<ResourceWeight>,
    pub hard_pod_affinity_weight: i32,
    pub default_spread: DefaultSpread,
}

impl Default for PluginArgs {
    fn default() -> Self {
        PluginArgs {
            fit_strategy: Strategy::LeastAllocated,
            fit_resources: default_resources(),
            balanced_resources: default_resources(),
            hard_pod_affinity_weight: 1,
            default_spread: DefaultSpread::System,
        }
    }
}

#[derive(Clone)]
pub struct Profile {
    pub scheduler_name: String,
    pub plugins: Vec<Arc<dyn Plugin>>,
    /// Indexes into `plugins`, in the order they filter.
    pub filters: Vec<usize>,
    /// Indexes into `plugins` with their weights.
    pub scorers: Vec<(usize, i64)>,
    /// Whether DefaultPreemption runs as PostFilter.
    pub preemption: bool,
    pub default_spread: DefaultSpread,
    /// Overrides the scheduler-wide `percentageOfNodesToScore` (0 = adaptive).
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |ix: &[usize]| ix.iter().map(|&i| self.plugins[i].name()).collect::<Vec<_>>();
        f.debug_struct("Profile")
            .field("scheduler_name", &self.scheduler_name)
            .field("filters", &names(&self.filters))
            .field("scorers", &self.scorers.iter().map(|&(i, w)| (self.plugins[i].name(), w)).collect::<Vec<_>>())
            .field("preemption", &self.preemption)
            .finish()
    }
}

fn instantiate(name: &str, args: &PluginArgs) -> Option<Arc<dyn Plugin>> {
    Some(match name {
        "NodeUnschedulable" => Arc::new(NodeUnschedulable),
        "NodeName" => Arc::new(NodeName),
        "TaintToleration" => Arc::new(TaintToleration),
        "NodeAffinity" => Arc::new(NodeAffinity),
        "NodePorts" => Arc::new(NodePorts),
        "NodeResourcesFit" => {
            Arc::new(NodeResourcesFit { strategy: args.fit_strategy.clone(), resources: args.fit_resources.clone() })
        }
        "PodTopologySpread" => Arc::new(PodTopologySpread),
        "InterPodAffinity" => Arc::new(InterPodAffinity { hard_pod_affinity_weight: args.hard_pod_affinity_weight }),
        "NodeResourcesBalancedAllocation" => {
            Arc::new(BalancedAllocation { resources: args.balanced_resources.clone() })
        }
        "ImageLocality" => Arc::new(ImageLocality),
        "VolumeBinding" => Arc::new(VolumeBinding),
        "VolumeRestrictions" => Arc::new(VolumeRestrictions),
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("profile {profile:?}: plugin {plugin:?} does not implement {point}")]
    NotAt { profile: String, plugin: String, point: &'static str },
    #[error("profile {profile:?}: score plugin {plugin:?} has weight {weight}; weights must be 1..=100")]
    Weight { profile: String, plugin: String, weight: i64 },
}

impl Profile {
    /// kube-scheduler's default profile.
    pub fn default_profile() -> Profile {
        let filters: Vec<&str> = REGISTRY.iter().filter(|p| p.filters).map(|p| p.name).collect();
        let scorers: Vec<(&str, i64)> = REGISTRY.iter().filter(|p| p.weight > 0).map(|p| (p.name, p.weight)).collect();
        Profile::build(DEFAULT_SCHEDULER_NAME, &filters, &scorers, true, &PluginArgs::default())
            .expect("the default profile is valid")
    }

    /// A profile from plugin names. Each plugin is instantiated once and shared by the
    /// extension points it serves.
    pub fn build(
        scheduler_name: &str,
        filters: &[&str],
        scorers: &[(&str, i64)],
        preemption: bool,
        args: &PluginArgs,
    ) -> Result<Profile, ProfileError> {
        let mut profile = Profile {
            scheduler_name: scheduler_name.to_owned(),
            plugins: Vec::new(),
            filters: Vec::new(),
            scorers: Vec::new(),
            preemption,
            default_spread: args.default_spread.clone(),
            percentage_of_nodes_to_score: None,
        };
        let not_at = |plugin: &str, point| ProfileError::NotAt {
            profile: scheduler_name.to_owned(),
            plugin: plugin.to_owned(),
            point,
        };
        for name in filters {
            if info(name).is_none_or(|p| !p.filters) {
                return Err(not_at(name, "Filter"));
            }
            let ix = profile.instance(name, args).ok_or_else(|| not_at(name, "Filter"))?;
            profile.filters.push(ix);
        }
        for &(name, weight) in scorers {
            if info(name).is_none_or(|p| p.weight == 0) {
                return Err(not_at(name, "Score"));
            }
            if !(1..=100).contains(&weight) {
                return Err(ProfileError::Weight {
                    profile: scheduler_name.to_owned(),
                    plugin: name.to_owned(),
                    weight,
                });
            }
            let ix = profile.instance(name, args).ok_or_else(|| not_at(name, "Score"))?;
            profile.scorers.push((ix, weight));
        }
        Ok(profile)
    }

    fn instance(&mut self, name: &str, args: &PluginArgs) -> Option<usize> {
        if let Some(ix) = self.plugins.iter().position(|p| p.name() == name) {
            return Some(ix);
        }
        self.plugins.push(instantiate(name, args)?);
        Some(self.plugins.len() - 1)
    }
}
