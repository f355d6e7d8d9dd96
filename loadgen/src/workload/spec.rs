//! A workload file: default parameters, an optional scheduler configuration, and the
//! ops to run, in the shape of kube-scheduler's scheduler_perf (`opcode` plus fields,
//! with `$param` references in place of numbers or strings).
//!
//! `--set key=value` overrides a parameter when the workload declares `key`; any other
//! key is a path into the embedded scheduler's `KubeSchedulerConfiguration`:
//! `percentageOfNodesToScore=10`, `profiles[0].plugins.score.enabled[name=NodeResourcesFit].weight=5`
//! (a `[name=X]` step picks the list entry with that name, adding it if absent).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    params: Map<String, Value>,
    /// Run the controller manager beside the embedded scheduler (Deployments, ...).
    #[serde(default)]
    controllers: bool,
    #[serde(default)]
    scheduler_config: Option<Value>,
    ops: Vec<Value>,
}

/// A workload with its parameters applied.
#[derive(Debug)]
pub struct Workload {
    pub name: String,
    pub description: String,
    /// Every parameter's value after `--set`, plus the scheduler settings that were set.
    pub params: BTreeMap<String, Value>,
    pub controllers: bool,
    /// The embedded scheduler's configuration (YAML), if the workload or `--set` gave any.
    pub scheduler_config: Option<Value>,
    pub ops: Vec<Op>,
    /// Where templates are looked up (the workload file's folder).
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "opcode", rename_all = "camelCase")]
pub enum Op {
    CreateNodes(CreateNodes),
    CreateNamespaces(CreateNamespaces),
    CreatePods(CreatePods),
    CreateAny(CreateAny),
    Churn(Churn),
    Barrier(Barrier),
    Sleep(Sleep),
    DeletePods(DeletePods),
}

impl Op {
    pub fn opcode(&self) -> &'static str {
        match self {
            Op::CreateNodes(_) => "createNodes",
            Op::CreateNamespaces(_) => "createNamespaces",
            Op::CreatePods(_) => "createPods",
            Op::CreateAny(_) => "createAny",
            Op::Churn(_) => "churn",
            Op::Barrier(_) => "barrier",
            Op::Sleep(_) => "sleep",
            Op::DeletePods(_) => "deletePods",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateNodes {
    pub count: usize,
    pub node_template_path: PathBuf,
    /// Nodes are named `PREFIX-N`.
    #[serde(default = "node_prefix")]
    pub prefix: String,
    /// Label node N with `labelValues[N % len]` under `labelKey` (zones, racks ...).
    pub label_node_prepare_strategy: Option<LabelValues>,
    /// Label each node with its own name under `labelKey`.
    pub unique_node_label_strategy: Option<UniqueLabel>,
    /// Hollow node agents (run in this process) instead of bare Node objects: they
    /// heartbeat and take their pods to Running.
    #[serde(default)]
    pub hollow: bool,
}

fn node_prefix() -> String {
    "node".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelValues {
    pub label_key: String,
    pub label_values: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UniqueLabel {
    pub label_key: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateNamespaces {
    pub prefix: String,
    pub count: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePods {
    pub count: usize,
    pub pod_template_path: PathBuf,
    /// Default: `loadgen-OP` (one namespace per op), created if missing.
    pub namespace: Option<String>,
    /// Pods per second (default: as fast as the clients go).
    pub rate: Option<f64>,
    /// These are the measured pods.
    #[serde(default)]
    pub collect_metrics: bool,
    /// Go on without waiting for these pods to be scheduled (e.g. unschedulable ones).
    #[serde(default)]
    pub skip_wait_to_completion: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAny {
    pub template_path: PathBuf,
    #[serde(default = "one")]
    pub count: usize,
    /// For namespaced kinds (default: `loadgen-OP`).
    pub namespace: Option<String>,
    /// The pods these objects lead to (e.g. a Deployment's) are the measured pods;
    /// the op then waits until they are all scheduled (and Running on hollow nodes).
    #[serde(default)]
    pub collect_metrics: bool,
    /// With `collectMetrics`: how many pods to wait for.
    pub expected_pods: Option<usize>,
}

fn one() -> usize {
    1
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ChurnMode {
    /// Each interval, every template's object is deleted and created again.
    Recreate,
    /// Each interval, one new object per template; beyond `number` alive, the oldest goes.
    Create,
}

/// Runs in the background from its place in the op list to the end of the workload.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Churn {
    pub mode: ChurnMode,
    pub template_paths: Vec<PathBuf>,
    pub interval_milliseconds: u64,
    /// `create` mode: objects kept alive per template, at most (0: no limit).
    #[serde(default)]
    pub number: usize,
    /// For namespaced kinds (default: `loadgen-OP`).
    pub namespace: Option<String>,
}

/// Waits until every pod created so far in `namespaces` (default: every namespace a
/// waiting createPods wrote to) is scheduled.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Barrier {
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sleep {
    pub duration: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeletePods {
    pub namespace: String,
    /// Deletes per second (default: all at once).
    pub delete_pods_per_second: Option<f64>,
    /// Wait until the deleted pods are gone.
    #[serde(default)]
    pub wait: bool,
}

/// `500ms`, `2s`, `1m`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let value: f64 = number.trim().parse().with_context(|| format!("duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("duration {text:?}: unknown unit {other:?} (ms, s, m, h)"),
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        bail!("duration {text:?} is not a non-negative time");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// One `--set` assignment; a value is a YAML scalar (`10`, `0.5`, `true`, `zone1`).
#[derive(Clone, Debug)]
pub struct Setting {
    pub key: String,
    pub value: Value,
}

/// `key=value` (or `key=v1,v2,...` for sweeps: each value in turn).
pub fn parse_set(text: &str) -> Result<(String, Vec<Value>)> {
    let (key, values) = text.split_once('=').with_context(|| format!("--set {text:?}: expected key=value"))?;
    let key = key.trim();
    if key.is_empty() {
        bail!("--set {text:?}: empty key");
    }
    let values = values
        .split(',')
        .map(|v| serde_yaml::from_str::<Value>(v.trim()).with_context(|| format!("--set {key}: value {v:?}")))
        .collect::<Result<Vec<_>>>()?;
    Ok((key.to_string(), values))
}

impl Workload {
    pub fn load(path: &Path, settings: &[Setting], scheduler_config: Option<&Path>) -> Result<Workload> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: WorkloadFile = serde_yaml::from_str(&text).with_context(|| format!("workload {}", path.display()))?;
        let mut params: BTreeMap<String, Value> = file.params.into_iter().collect();
        let mut config = match scheduler_config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                Some(serde_yaml::from_str::<Value>(&text).with_context(|| format!("{}", path.display()))?)
            }
            None => file.scheduler_config,
        };
        for setting in settings {
            if let Some(slot) = params.get_mut(&setting.key) {
                *slot = setting.value.clone();
                continue;
            }
            let base = config.get_or_insert_with(|| {
                serde_json::json!({"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration"})
            });
            let refused =
                || format!("--set {}: not a parameter of {}, nor a scheduler setting", setting.key, file.name);
            set_path(base, &setting.key, setting.value.clone()).with_context(refused)?;
            // The scheduler's own validation says whether the path and the value are right.
            let text = serde_yaml::to_string(base)?;
            keelson::scheduler::config::SchedulerConfig::parse(&text).with_context(refused)?;
            params.insert(setting.key.clone(), setting.value.clone());
        }
        let ops = file
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let resolved = substitute(raw, &params).with_context(|| format!("op {i}"))?;
                serde_json::from_value::<Op>(resolved).with_context(|| format!("op {i}"))
            })
            .collect::<Result<Vec<_>>>()?;
        for (i, op) in ops.iter().enumerate() {
            if let Op::Sleep(sleep) = op {
                parse_duration(&sleep.duration).with_context(|| format!("op {i}"))?;
            }
        }
        Ok(Workload {
            name: file.name,
            description: file.description,
            params,
            controllers: file.controllers,
            scheduler_config: config,
            ops,
            dir: path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        })
    }

    /// The measured pods the ops create (createPods with collectMetrics, plus the
    /// expected pods of measured createAny ops).
    pub fn measured_pods(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::CreatePods(p) if p.collect_metrics => p.count,
                Op::CreateAny(a) if a.collect_metrics => a.expected_pods.unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
}

/// Replaces every string that is exactly `$name` with the parameter's value.
fn substitute(value: Value, params: &BTreeMap<String, Value>) -> Result<Value> {
    Ok(match value {
        Value::String(s) if s.starts_with('$') => {
            params.get(&s[1..]).cloned().with_context(|| format!("unknown parameter {s}"))?
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| substitute(v, params)).collect::<Result<_>>()?),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| Ok((k, substitute(v, params)?))).collect::<Result<Map<_, _>>>()?)
        }
        other => other,
    })
}

/// One step of a `--set` path.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Field(&'a str),
    Index(usize),
    /// The list entry whose `name` is this.
    Named(&'a str),
}

fn steps(path: &str) -> Result<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (field, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if field.is_empty() && out.is_empty() {
            bail!("path {path:?} starts with an index");
        }
        if !field.is_empty() {
            out.push(Step::Field(field));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let (selector, after) = inner.split_once(']').with_context(|| format!("path {path:?}: unclosed ["))?;
            out.push(match selector.strip_prefix("name=") {
                Some(name) => Step::Named(name),
                None => Step::Index(selector.parse().with_context(|| format!("path {path:?}: index {selector:?}"))?),
            });
            rest = after;
        }
        if !rest.is_empty() {
            bail!("path {path:?}: unexpected {rest:?}");
        }
    }
    if out.is_empty() {
        bail!("empty path");
    }
    Ok(out)
}

/// Sets `path` in `root`, creating objects, list entries and named entries on the way.
pub fn set_path(root: &mut Value, path: &str, value: Value) -> Result<()> {
    let steps = steps(path)?;
    let mut at = root;
    for (i, step) in steps.iter().enumerate() {
        let next_is_list = matches!(steps.get(i + 1), Some(Step::Index(_) | Step::Named(_)));
        let empty = || if next_is_list { Value::Array(Vec::new()) } else { Value::Object(Map::new()) };
        at = match step {
            Step::Field(name) => {
                let map = at.as_object_mut().with_context(|| format!("{path}: {name} is not inside an object"))?;
                map.entry(name.to_string()).or_insert_with(empty)
            }
            Step::Index(index) => {
                let list = at.as_array_mut().with_context(|| format!("{path}: [{index}] is not inside a list"))?;
                while list.len() <= *index {
                    list.push(empty());
                }
                &mut list[*index]
            }
            Step::Named(name) => {
                let list = at.as_array_mut().with_context(|| format!("{path}: [name={name}] is not inside a list"))?;
                let found = list.iter().position(|e| e["name"].as_str() == Some(name));
                let index = found.unwrap_or_else(|| {
                    list.push(serde_json::json!({ "name": name }));
                    list.len() - 1
                });
                &mut list[index]
            }
        };
    }
    *at = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_path_creates_profiles_and_named_plugin_entries() {
        let mut config = json!({"kind": "KubeSchedulerConfiguration"});
        set_path(&mut config, "percentageOfNodesToScore", json!(10)).unwrap();
        set_path(&mut config, "profiles[0].plugins.score.enabled[name=NodeResourcesFit].weight", json!(5)).unwrap();
        set_path(&mut config, "profiles[0].plugins.score.enabled[name=ImageLocality].weight", json!(0)).unwrap();
        set_path(&mut config, "profiles[0].plugins.score.enabled[name=NodeResourcesFit].weight", json!(7)).unwrap();
        assert_eq!(
            config,
            json!({"kind": "KubeSchedulerConfiguration", "percentageOfNodesToScore": 10,
                "profiles": [{"plugins": {"score": {"enabled": [
                    {"name": "NodeResourcesFit", "weight": 7}, {"name": "ImageLocality", "weight": 0}]}}}]})
        );
        assert!(set_path(&mut config, "percentageOfNodesToScore.deeper", json!(1)).is_err());
        assert!(set_path(&mut config, "profiles[x]", json!(1)).is_err());
    }

    #[test]
    fn params_are_substituted_and_set_overrides_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(
            &path,
            "name: w\nparams: {nodes: 10, pods: 5}\nops:\n\
             - {opcode: createNodes, count: $nodes, nodeTemplatePath: n.yaml}\n\
             - {opcode: createPods, count: $pods, podTemplatePath: p.yaml, collectMetrics: true}\n\
             - {opcode: sleep, duration: 1500ms}\n",
        )
        .unwrap();
        let set = |k: &str, v: Value| Setting { key: k.into(), value: v };
        let workload = Workload::load(&path, &[set("pods", json!(7)), set("parallelism", json!(4))], None).unwrap();
        let error = format!("{:#}", Workload::load(&path, &[set("parallelizm", json!(4))], None).unwrap_err());
        assert!(error.contains("not a parameter of w, nor a scheduler setting"), "{error}");
        assert!(Workload::load(&path, &[set("percentageOfNodesToScore", json!(101))], None).is_err());
        assert!(matches!(&workload.ops[0], Op::CreateNodes(n) if n.count == 10 && n.prefix == "node"));
        assert_eq!(workload.measured_pods(), 7);
        assert_eq!(workload.scheduler_config.as_ref().unwrap()["parallelism"], json!(4));
        assert_eq!(workload.params["parallelism"], json!(4));

        std::fs::write(&path, "name: w\nops:\n- {opcode: createPods, count: $missing, podTemplatePath: p}\n").unwrap();
        let error = format!("{:#}", Workload::load(&path, &[], None).unwrap_err());
        assert!(error.contains("unknown parameter $missing"), "{error}");
        std::fs::write(&path, "name: w\nops:\n- {opcode: sleep, duration: 1s, extra: 1}\n").unwrap();
        assert!(Workload::load(&path, &[], None).is_err(), "unknown op fields are refused");
    }

    #[test]
    fn durations_and_sets_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3 parsecs").is_err());
        let (key, values) = parse_set("percentageOfNodesToScore=5,10,50").unwrap();
        assert_eq!(key, "percentageOfNodesToScore");
        assert_eq!(values, vec![json!(5), json!(10), json!(50)]);
        assert!(parse_set("novalue").is_err());
    }
}
