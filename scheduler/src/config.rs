//! `KubeSchedulerConfiguration` (`kubescheduler.config.k8s.io/v1`): profiles, plugin sets
//! per extension point, score weights, plugin arguments, `percentageOfNodesToScore` and
//! `parallelism`. Decoded strictly (an unknown field is an error, as in kube-scheduler)
//! and validated; every problem names the field.
//!
//! Plugin sets follow kube-scheduler's merge: start from the default plugins, remove what
//! `multiPoint.disabled` names (`*`: all defaults), add `multiPoint.enabled`, then apply the
//! per-point `disabled`/`enabled` lists (an enabled score plugin's weight overrides). In
//! keelson PreFilter belongs to the Filter contract and PreScore to the Score contract, so
//! `preFilter`/`preScore` lists may only name plugins that are known.
//!
//! One keelson extension: `placementAuditEvery: N` audits one decision in N (see
//! `cycle::AuditSample`).

use crate::plugins::noderesources::{ResourceWeight, ShapePoint, Strategy};
use crate::plugins::{info, REGISTRY};
use crate::profile::{PluginArgs, Profile, ProfileError, DEFAULT_SCHEDULER_NAME};
use crate::query::DefaultSpread;
use keelson_engine::k8s_openapi::api::core::v1::TopologySpreadConstraint;
use serde::Deserialize;

pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("decoding the scheduler configuration: {0}")]
    Decode(#[from] serde_yaml::Error),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

#[derive(Deserialize, Default)]
// Some fields are accepted only so kube-scheduler files decode strictly.
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    api_version: Option<String>,
    kind: Option<String>,
    parallelism: Option<i64>,
    percentage_of_nodes_to_score: Option<i64>,
    #[serde(default)]
    profiles: Vec<WireProfile>,
    placement_audit_every: Option<u64>,
    // Accepted for compatibility with kube-scheduler files; keelson's runner has its own.
    leader_election: Option<serde_yaml::Value>,
    client_connection: Option<serde_yaml::Value>,
    pod_initial_backoff_seconds: Option<i64>,
    pod_max_backoff_seconds: Option<i64>,
    #[serde(default)]
    extenders: Vec<serde_yaml::Value>,
    delay_cache_until_active: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireProfile {
    scheduler_name: Option<String>,
    percentage_of_nodes_to_score: Option<i64>,
    #[serde(default)]
    plugins: WirePlugins,
    #[serde(default)]
    plugin_config: Vec<WirePluginConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WirePlugins {
    #[serde(default)]
    multi_point: WireSet,
    #[serde(default)]
    queue_sort: WireSet,
    #[serde(default)]
    pre_enqueue: WireSet,
    #[serde(default)]
    pre_filter: WireSet,
    #[serde(default)]
    filter: WireSet,
    #[serde(default)]
    post_filter: WireSet,
    #[serde(default)]
    pre_score: WireSet,
    #[serde(default)]
    score: WireSet,
    #[serde(default)]
    reserve: WireSet,
    #[serde(default)]
    permit: WireSet,
    #[serde(default)]
    pre_bind: WireSet,
    #[serde(default)]
    bind: WireSet,
    #[serde(default)]
    post_bind: WireSet,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WireSet {
    #[serde(default)]
    enabled: Vec<WirePlugin>,
    #[serde(default)]
    disabled: Vec<WirePlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePlugin {
    name: String,
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePluginConfig {
    name: String,
    #[serde(default)]
    args: serde_yaml::Value,
}

#[derive(Deserialize, Default)]
// Some fields are accepted only so kube-scheduler files decode strictly.
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FitArgs {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    ignored_resources: Vec<String>,
    #[serde(default)]
    ignored_resource_groups: Vec<String>,
    scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScoringStrategy {
    #[serde(rename = "type")]
    kind: Option<String>,
    resources: Option<Vec<WireResource>>,
    requested_to_capacity_ratio: Option<RatioArgs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireResource {
    name: String,
    weight: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RatioArgs {
    #[serde(default)]
    shape: Vec<WireShapePoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireShapePoint {
    utilization: i64,
    score: i64,
}

#[derive(Deserialize, Default)]
// Some fields are accepted only so kube-scheduler files decode strictly.
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpreadArgs {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    default_constraints: Vec<TopologySpreadConstraint>,
    defaulting_type: Option<String>,
}

#[derive(Deserialize, Default)]
// Some fields are accepted only so kube-scheduler files decode strictly.
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AffinityArgs {
    api_version: Option<String>,
    kind: Option<String>,
    hard_pod_affinity_weight: Option<i32>,
    ignore_preferred_terms_of_existing_pods: Option<bool>,
}

#[derive(Deserialize, Default)]
// Some fields are accepted only so kube-scheduler files decode strictly.
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BalancedArgs {
    api_version: Option<String>,
    kind: Option<String>,
    resources: Option<Vec<WireResource>>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub profiles: Vec<Profile>,
    pub parallelism: usize,
    /// 0: adaptive.
    pub percentage_of_nodes_to_score: u32,
    /// 0: no audit.
    pub placement_audit_every: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            profiles: vec![Profile::default_profile()],
            parallelism: 16,
            percentage_of_nodes_to_score: 0,
            placement_audit_every: 0,
        }
    }
}

fn percentage(value: Option<i64>, field: &str) -> Result<Option<u32>, ConfigError> {
    match value {
        None => Ok(None),
        Some(p @ 0..=100) => Ok(Some(p as u32)),
        Some(p) => Err(invalid(field, format!("{p} not in valid range [0-100]"))),
    }
}

impl SchedulerConfig {
    pub fn parse(text: &str) -> Result<SchedulerConfig, ConfigError> {
        let wire: Wire = serde_yaml::from_str(text)?;
        if let Some(version) = wire.api_version.as_deref().filter(|v| *v != API_VERSION) {
            return Err(invalid("apiVersion", format!("unsupported version {version:?}; keelson reads {API_VERSION}")));
        }
        if let Some(kind) = wire.kind.as_deref().filter(|k| *k != "KubeSchedulerConfiguration") {
            return Err(invalid("kind", format!("expected KubeSchedulerConfiguration, got {kind:?}")));
        }
        if !wire.extenders.is_empty() {
            return Err(invalid("extenders", "scheduler extenders are not supported"));
        }
        let parallelism = match wire.parallelism {
            None => 16,
            Some(p) if p > 0 => p as usize,
            Some(p) => Err(invalid("parallelism", format!("should be an integer value greater than zero, got {p}")))?,
        };
        let percentage_of_nodes_to_score =
            percentage(wire.percentage_of_nodes_to_score, "percentageOfNodesToScore")?.unwrap_or(0);
        let mut profiles = Vec::new();
        let wire_profiles = if wire.profiles.is_empty() { vec![WireProfile::default()] } else { wire.profiles };
        for (i, wire_profile) in wire_profiles.into_iter().enumerate() {
            let profile = build_profile(wire_profile, &format!("profiles[{i}]"))?;
            if profiles.iter().any(|p: &Profile| p.scheduler_name == profile.scheduler_name) {
                return Err(invalid(
                    format!("profiles[{i}].schedulerName"),
                    format!("duplicate value {:?}", profile.scheduler_name),
                ));
            }
            profiles.push(profile);
        }
        Ok(SchedulerConfig {
            profiles,
            parallelism,
            percentage_of_nodes_to_score,
            placement_audit_every: wire.placement_audit_every.unwrap_or(0),
        })
    }
}

fn check_known(set: &WireSet, field: &str) -> Result<(), ConfigError> {
    for (list, plugins) in [("enabled", &set.enabled), ("disabled", &set.disabled)] {
        for (j, plugin) in plugins.iter().enumerate() {
            if plugin.name != "*" && info(&plugin.name).is_none() {
                return Err(invalid(format!("{field}.{list}[{j}].name"), format!("unknown plugin {:?}", plugin.name)));
            }
        }
    }
    Ok(())
}

fn disables(set: &WireSet, name: &str) -> bool {
    set.disabled.iter().any(|p| p.name == "*" || p.name == name)
}

fn weight_of(plugin: &WirePlugin, default: i64) -> i64 {
    match plugin.weight {
        None | Some(0) => default.max(1),
        Some(w) => w,
    }
}

fn build_profile(wire: WireProfile, field: &str) -> Result<Profile, ConfigError> {
    let plugins = &wire.plugins;
    let sets = [
        ("multiPoint", &plugins.multi_point),
        ("queueSort", &plugins.queue_sort),
        ("preEnqueue", &plugins.pre_enqueue),
        ("preFilter", &plugins.pre_filter),
        ("filter", &plugins.filter),
        ("postFilter", &plugins.post_filter),
        ("preScore", &plugins.pre_score),
        ("score", &plugins.score),
        ("reserve", &plugins.reserve),
        ("permit", &plugins.permit),
        ("preBind", &plugins.pre_bind),
        ("bind", &plugins.bind),
        ("postBind", &plugins.post_bind),
    ];
    for (point, set) in sets {
        check_known(set, &format!("{field}.plugins.{point}"))?;
    }
    let multi = &plugins.multi_point;
    // Filters: defaults, minus disabled, plus enabled, in order.
    let mut filters: Vec<&str> = REGISTRY
        .iter()
        .filter(|p| p.filters && !disables(multi, p.name) && !disables(&plugins.filter, p.name))
        .map(|p| p.name)
        .collect();
    for plugin in multi.enabled.iter().chain(&plugins.filter.enabled) {
        let known = info(&plugin.name).expect("checked");
        if known.filters && !filters.contains(&known.name) {
            filters.push(known.name);
        }
    }
    // Scorers: defaults with weights, minus disabled, plus enabled (weights override).
    let mut scorers: Vec<(&str, i64)> = REGISTRY
        .iter()
        .filter(|p| p.weight > 0 && !disables(multi, p.name) && !disables(&plugins.score, p.name))
        .map(|p| (p.name, p.weight))
        .collect();
    for plugin in multi.enabled.iter().chain(&plugins.score.enabled) {
        let known = info(&plugin.name).expect("checked");
        if known.weight == 0 {
            if plugins.score.enabled.iter().any(|p| p.name == known.name) {
                return Err(invalid(
                    format!("{field}.plugins.score"),
                    format!("plugin {:?} does not score", known.name),
                ));
            }
            continue;
        }
        let weight = weight_of(plugin, known.weight);
        match scorers.iter_mut().find(|(n, _)| *n == known.name) {
            Some(existing) => existing.1 = weight,
            None => scorers.push((known.name, weight)),
        }
    }
    let preemption = !disables(multi, "DefaultPreemption") && !disables(&plugins.post_filter, "DefaultPreemption")
        || plugins.post_filter.enabled.iter().any(|p| p.name == "DefaultPreemption");
    let args = plugin_args(&wire.plugin_config, field)?;
    let name = wire.scheduler_name.as_deref().unwrap_or(DEFAULT_SCHEDULER_NAME);
    let mut profile = Profile::build(name, &filters, &scorers, preemption, &args)?;
    profile.percentage_of_nodes_to_score =
        percentage(wire.percentage_of_nodes_to_score, &format!("{field}.percentageOfNodesToScore"))?;
    Ok(profile)
}

fn decode<T: for<'de> Deserialize<'de> + Default>(value: &serde_yaml::Value, field: &str) -> Result<T, ConfigError> {
    if value.is_null() {
        return Ok(T::default());
    }
    serde_yaml::from_value(value.clone()).map_err(|e| invalid(field, e.to_string()))
}

fn resources(wire: Option<Vec<WireResource>>, field: &str) -> Result<Option<Vec<ResourceWeight>>, ConfigError> {
    let Some(list) = wire else { return Ok(None) };
    let mut out = Vec::new();
    for (i, r) in list.into_iter().enumerate() {
        let weight = r.weight.unwrap_or(1);
        if !(1..=100).contains(&weight) {
            return Err(invalid(format!("{field}[{i}].weight"), format!("{weight} not in valid range [1-100]")));
        }
        out.push(ResourceWeight { name: r.name, weight });
    }
    Ok(Some(out))
}

fn plugin_args(configs: &[WirePluginConfig], field: &str) -> Result<PluginArgs, ConfigError> {
    let mut args = PluginArgs::default();
    for (i, config) in configs.iter().enumerate() {
        let at = format!("{field}.pluginConfig[{i}].args");
        match config.name.as_str() {
            "NodeResourcesFit" => {
                let fit: FitArgs = decode(&config.args, &at)?;
                if !fit.ignored_resources.is_empty() || !fit.ignored_resource_groups.is_empty() {
                    return Err(invalid(format!("{at}.ignoredResources"), "ignoring resources is not supported"));
                }
                let strategy = fit.scoring_strategy.unwrap_or_default();
                if let Some(list) = resources(strategy.resources, &format!("{at}.scoringStrategy.resources"))? {
                    args.fit_resources = list;
                }
                args.fit_strategy = match strategy.kind.as_deref().unwrap_or("LeastAllocated") {
                    "LeastAllocated" => Strategy::LeastAllocated,
                    "MostAllocated" => Strategy::MostAllocated,
                    "RequestedToCapacityRatio" => {
                        let shape = strategy.requested_to_capacity_ratio.unwrap_or_default().shape;
                        Strategy::RequestedToCapacityRatio(validate_shape(
                            shape,
                            &format!("{at}.scoringStrategy.requestedToCapacityRatio.shape"),
                        )?)
                    }
                    other => {
                        return Err(invalid(
                            format!("{at}.scoringStrategy.type"),
                            format!("unsupported value {other:?}"),
                        ))
                    }
                };
            }
            "NodeResourcesBalancedAllocation" => {
                let balanced: BalancedArgs = decode(&config.args, &at)?;
                if let Some(list) = resources(balanced.resources, &format!("{at}.resources"))? {
                    args.balanced_resources = list;
                }
            }
            "InterPodAffinity" => {
                let affinity: AffinityArgs = decode(&config.args, &at)?;
                let weight = affinity.hard_pod_affinity_weight.unwrap_or(1);
                if !(0..=100).contains(&weight) {
                    return Err(invalid(
                        format!("{at}.hardPodAffinityWeight"),
                        format!("{weight} not in valid range [0-100]"),
                    ));
                }
                args.hard_pod_affinity_weight = weight;
            }
            "PodTopologySpread" => {
                let spread: SpreadArgs = decode(&config.args, &at)?;
                args.default_spread = match spread.defaulting_type.as_deref().unwrap_or("System") {
                    "System" if !spread.default_constraints.is_empty() => {
                        return Err(invalid(
                            format!("{at}.defaultConstraints"),
                            "must be empty when defaultingType is System",
                        ));
                    }
                    "System" => DefaultSpread::System,
                    "List" if spread.default_constraints.is_empty() => DefaultSpread::Disabled,
                    "List" => {
                        for (j, c) in spread.default_constraints.iter().enumerate() {
                            if c.label_selector.is_some() {
                                return Err(invalid(
                                    format!("{at}.defaultConstraints[{j}].labelSelector"),
                                    "not supported (the selector comes from the pod's workload)",
                                ));
                            }
                            if c.max_skew <= 0 {
                                return Err(invalid(
                                    format!("{at}.defaultConstraints[{j}].maxSkew"),
                                    "must be greater than zero",
                                ));
                            }
                        }
                        DefaultSpread::List(spread.default_constraints)
                    }
                    other => {
                        return Err(invalid(format!("{at}.defaultingType"), format!("unsupported value {other:?}")))
                    }
                };
            }
            other if info(other).is_some() => {}
            other => {
                return Err(invalid(format!("{field}.pluginConfig[{i}].name"), format!("unknown plugin {other:?}")))
            }
        }
    }
    Ok(args)
}

/// Shapes are given on a 0..=10 score scale; the scorer works on 0..=100.
fn validate_shape(shape: Vec<WireShapePoint>, field: &str) -> Result<Vec<ShapePoint>, ConfigError> {
    if shape.is_empty() {
        return Err(invalid(field, "at least one point must be specified"));
    }
    let mut out: Vec<ShapePoint> = Vec::new();
    for (i, point) in shape.into_iter().enumerate() {
        if !(0..=100).contains(&point.utilization) {
            return Err(invalid(format!("{field}[{i}].utilization"), "must be in the range [0, 100]"));
        }
        if !(0..=10).contains(&point.score) {
            return Err(invalid(format!("{field}[{i}].score"), "must be in the range [0, 10]"));
        }
        if out.last().is_some_and(|last| last.utilization >= point.utilization) {
            return Err(invalid(format!("{field}[{i}].utilization"), "values must be sorted in increasing order"));
        }
        out.push(ShapePoint { utilization: point.utilization, score: point.score * 10 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(profile: &Profile) -> (Vec<&'static str>, Vec<(&'static str, i64)>) {
        (
            profile.filters.iter().map(|&i| profile.plugins[i].name()).collect(),
            profile.scorers.iter().map(|&(i, w)| (profile.plugins[i].name(), w)).collect(),
        )
    }

    #[test]
    fn an_empty_file_is_the_default_profile() {
        let config =
            SchedulerConfig::parse("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n")
                .unwrap();
        assert_eq!(config.profiles.len(), 1);
        let (filters, scorers) = names(&config.profiles[0]);
        assert_eq!(filters.len(), 10);
        assert!(filters.contains(&"VolumeBinding") && filters.contains(&"VolumeRestrictions"));
        assert!(scorers.contains(&("TaintToleration", 3)) && scorers.contains(&("NodeAffinity", 2)));
        assert_eq!(config.parallelism, 16);
        assert!(config.profiles[0].preemption);
    }

    #[test]
    fn profiles_enable_disable_and_weigh_plugins() {
        let config = SchedulerConfig::parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
parallelism: 4
placementAuditEvery: 100
profiles:
- schedulerName: default-scheduler
- schedulerName: packer
  percentageOfNodesToScore: 100
  plugins:
    score:
      disabled: [{name: ImageLocality}, {name: NodeResourcesBalancedAllocation}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
    postFilter:
      disabled: [{name: DefaultPreemption}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 2}, {name: memory, weight: 1}]
  - name: PodTopologySpread
    args:
      defaultingType: List
- schedulerName: minimal
  plugins:
    multiPoint:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 3}, {name: NodeName}]
"#,
        )
        .unwrap();
        assert_eq!(
            (config.parallelism, config.percentage_of_nodes_to_score, config.placement_audit_every),
            (4, 30, 100)
        );
        let packer = &config.profiles[1];
        assert_eq!(packer.percentage_of_nodes_to_score, Some(100));
        assert!(!packer.preemption);
        let (_, scorers) = names(packer);
        assert!(scorers.contains(&("NodeResourcesFit", 5)));
        assert!(!scorers.iter().any(|(n, _)| *n == "ImageLocality"));
        assert!(matches!(packer.default_spread, DefaultSpread::Disabled));
        let (filters, scorers) = names(&config.profiles[2]);
        assert_eq!(filters, vec!["NodeResourcesFit", "NodeName"]);
        assert_eq!(scorers, vec![("NodeResourcesFit", 3)]);
    }

    #[test]
    fn invalid_configurations_name_the_field() {
        let cases = [
            ("percentageOfNodesToScore: 120", "percentageOfNodesToScore: 120 not in valid range [0-100]"),
            ("parallelism: 0", "parallelism: should be an integer value greater than zero, got 0"),
            (
                "profiles: [{plugins: {score: {enabled: [{name: NoSuchPlugin}]}}}]",
                "profiles[0].plugins.score.enabled[0].name: unknown plugin \"NoSuchPlugin\"",
            ),
            ("profiles: [{schedulerName: a}, {schedulerName: a}]", "profiles[1].schedulerName: duplicate value \"a\""),
            (
                "profiles: [{plugins: {score: {enabled: [{name: NodeResourcesFit, weight: 101}]}}}]",
                "weights must be 1..=100",
            ),
            (
                "profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Random}}}]}]",
                "profiles[0].pluginConfig[0].args.scoringStrategy.type: unsupported value \"Random\"",
            ),
            ("bogusField: 1", "unknown field `bogusField`"),
            ("apiVersion: kubescheduler.config.k8s.io/v1beta1", "apiVersion: unsupported version"),
        ];
        for (text, expected) in cases {
            let error = SchedulerConfig::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn requested_to_capacity_ratio_shapes_scale_to_one_hundred() {
        let config = SchedulerConfig::parse(
            "profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: RequestedToCapacityRatio, requestedToCapacityRatio: {shape: [{utilization: 0, score: 0}, {utilization: 100, score: 10}]}}}}]}]",
        )
        .unwrap();
        assert_eq!(config.profiles.len(), 1);
        assert!(SchedulerConfig::parse(
            "profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: RequestedToCapacityRatio, requestedToCapacityRatio: {shape: [{utilization: 50, score: 1}, {utilization: 10, score: 2}]}}}}]}]"
        )
        .unwrap_err()
        .to_string()
        .contains("sorted in increasing order"));
    }
}
