//! `loadgen run` and `loadgen sweep`: workloads from files (`loadgen/workloads/`),
//! against an embedded control plane (the default) or a remote one.

pub mod cluster;
pub mod exec;
pub mod placement;
pub mod result;
pub mod spec;
pub mod template;
pub mod tracker;

use crate::embedded::Embedded;
use crate::report;
use anyhow::{bail, Context, Result};
use cluster::Cluster;
use result::RunResult;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spec::{Setting, Workload};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The workload file (e.g. loadgen/workloads/scheduling-basic.yaml).
    pub workload: PathBuf,
    /// `key=value`: a workload parameter, or a path into the embedded scheduler's
    /// KubeSchedulerConfiguration (`percentageOfNodesToScore=10`,
    /// `profiles[0].plugins.score.enabled[name=NodeResourcesFit].weight=5`). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The embedded scheduler's base configuration (instead of the workload's).
    #[arg(long)]
    pub scheduler_config: Option<PathBuf>,
    /// Drive an existing control plane (its scheduler and controllers) instead of
    /// booting one.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Write the result JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Concurrent creating clients (each with its own connection).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds any one wait may take (pods scheduled, a barrier ...).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Audit every Nth scheduling decision against all feasible nodes (placement
    /// quality; costs a full score pass each time). 0: off. `sweep` defaults to 10.
    #[arg(long)]
    pub audit_every: Option<u64>,
    /// Skip the per-node CPU allocation figures (a LIST of every pod after the run).
    #[arg(long)]
    pub no_balance: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The plot (SVG) of throughput against placement quality; default: beside --out.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// A sweep's file: one run per combination of the swept values.
#[derive(Debug, Serialize, Deserialize)]
pub struct SweepResult {
    pub kind: String,
    pub workload: String,
    /// The swept keys, in `--set` order.
    pub keys: Vec<String>,
    pub commit: String,
    pub date: String,
    pub machine: report::Machine,
    pub points: Vec<SweepPoint>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SweepPoint {
    pub settings: BTreeMap<String, Value>,
    pub result: RunResult,
}

pub fn run(args: &RunArgs) -> Result<RunResult> {
    let mut settings = Vec::new();
    for text in &args.set {
        let (key, values) = spec::parse_set(text)?;
        let [value] = <[Value; 1]>::try_from(values)
            .ok()
            .with_context(|| format!("--set {key}: one value for run (a list of values is for loadgen sweep)"))?;
        settings.push(Setting { key, value });
    }
    let workload = Workload::load(&args.workload, &settings, args.scheduler_config.as_deref())?;
    run_workload(&workload, args, args.audit_every.unwrap_or(0))
}

pub fn sweep(args: &SweepArgs) -> Result<SweepResult> {
    let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
    for text in &args.run.set {
        axes.push(spec::parse_set(text)?);
    }
    let swept: Vec<String> = axes.iter().filter(|(_, v)| v.len() > 1).map(|(k, _)| k.clone()).collect();
    if swept.is_empty() {
        bail!("nothing to sweep: give at least one --set key=v1,v2,...");
    }
    let mut points = Vec::new();
    let combinations = combinations(&axes);
    for (i, combination) in combinations.iter().enumerate() {
        let label: Vec<String> = combination.iter().map(|s| format!("{}={}", s.key, s.value)).collect();
        eprintln!("== sweep {}/{}: {}", i + 1, combinations.len(), label.join(" "));
        let workload = Workload::load(&args.run.workload, combination, args.run.scheduler_config.as_deref())?;
        let result = run_workload(&workload, &args.run, args.run.audit_every.unwrap_or(10))?;
        result.print_table();
        let settings = combination.iter().map(|s| (s.key.clone(), s.value.clone())).collect();
        points.push(SweepPoint { settings, result });
    }
    let name = points.first().map_or_else(String::new, |p| p.result.workload.clone());
    Ok(SweepResult {
        kind: "sweep".into(),
        workload: name,
        keys: swept,
        commit: report::commit(),
        date: report::today(),
        machine: report::Machine::detect(),
        points,
    })
}

/// The sweep as a table: one row per point.
pub fn print_sweep(sweep: &SweepResult) {
    println!("sweep of {} over {}", sweep.workload, sweep.keys.join(", "));
    println!(
        "{:<28} {:>14} {:>14} {:>16} {:>10}",
        "setting", "pods/s avg", "score regret", "CPU alloc stddev", "complete"
    );
    for point in &sweep.points {
        let r = &point.result;
        println!(
            "{:<28} {:>14.0} {:>14} {:>16} {:>10}",
            point_label(sweep, point),
            r.scheduling_throughput.average,
            r.placement.score_regret.map_or("-".into(), |v| format!("{v:.4}")),
            r.placement.cpu_allocation.map_or("-".into(), |b| format!("{:.4}", b.stddev)),
            r.complete
        );
    }
}

/// The point's value of each swept key, in key order.
pub fn point_values(sweep: &SweepResult, point: &SweepPoint) -> Vec<String> {
    sweep.keys.iter().map(|k| point.settings.get(k).unwrap_or(&Value::Null).to_string()).collect()
}

/// `key=value` of the swept keys of a point.
pub fn point_label(sweep: &SweepResult, point: &SweepPoint) -> String {
    let values = point_values(sweep, point);
    sweep.keys.iter().zip(values).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

pub fn plot_sweep(sweep: &SweepResult, path: &Path) -> Result<()> {
    let points: Vec<crate::plot::SweepPoint> = sweep
        .points
        .iter()
        .map(|p| crate::plot::SweepPoint {
            // The keys are in the title; each point says its values.
            label: point_values(sweep, p).join(", "),
            throughput: p.result.scheduling_throughput.average,
            score_regret: p.result.placement.score_regret,
            cpu_stddev: p.result.placement.cpu_allocation.map(|b| b.stddev),
        })
        .collect();
    let title = format!("{}: throughput against placement quality, by {}", sweep.workload, sweep.keys.join(", "));
    crate::plot::sweep(path, &title, &points)
}

/// Every combination of the axes' values, the first axis slowest.
fn combinations(axes: &[(String, Vec<Value>)]) -> Vec<Vec<Setting>> {
    axes.iter().fold(vec![Vec::new()], |done, (key, values)| {
        done.iter()
            .flat_map(|prefix| {
                values.iter().map(move |value| {
                    let mut next = prefix.clone();
                    next.push(Setting { key: key.clone(), value: value.clone() });
                    next
                })
            })
            .collect()
    })
}

fn run_workload(workload: &Workload, args: &RunArgs, audit_every: u64) -> Result<RunResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    report::reset_peak_rss();
    let cpu_at_start = report::own_usage().1;
    runtime.block_on(async {
        let began = Instant::now();
        let (embedded, kubeconfig, target) = match &args.kubeconfig {
            Some(path) => {
                if workload.scheduler_config.is_some() || audit_every > 0 {
                    eprintln!("note: scheduler settings and the audit apply to the embedded scheduler only");
                }
                (None, path.clone(), format!("kubeconfig {}", path.display()))
            }
            None => {
                let config = scheduler_config(workload.scheduler_config.clone(), audit_every)?;
                let embedded = Embedded::boot(config, workload.controllers).await?;
                let kubeconfig = embedded.kubeconfig();
                let components = if workload.controllers { "scheduler and controllers" } else { "scheduler" };
                (Some(embedded), kubeconfig, format!("embedded keelson (RocksDB, durable) + in-process {components}"))
            }
        };
        let outcome = measure(workload, args, &kubeconfig, target, audit_every, cpu_at_start, began).await;
        if let Some(embedded) = embedded {
            embedded.shutdown().await;
        }
        outcome
    })
}

async fn measure(
    workload: &Workload,
    args: &RunArgs,
    kubeconfig: &Path,
    target: String,
    audit_every: u64,
    cpu_at_start: f64,
    began: Instant,
) -> Result<RunResult> {
    let cluster = Arc::new(Cluster::connect(kubeconfig, args.clients)?);
    let options =
        exec::RunOptions { clients: args.clients, timeout: Duration::from_secs(args.timeout), progress: !args.quiet };
    let executed = exec::execute(workload, Arc::clone(&cluster), &options).await?;
    let balance = if args.no_balance { None } else { placement::cpu_balance(&cluster).await? };
    let context = result::Context {
        workload: workload.name.clone(),
        description: workload.description.clone(),
        params: workload.params.clone(),
        target,
        expected_pods: workload.measured_pods(),
        balance,
        audited: audit_every > 0,
        duration_s: began.elapsed().as_secs_f64(),
        cpu_at_start,
    };
    Ok(RunResult::new(context, &executed))
}

/// The embedded scheduler's configuration: the workload's (or the defaults), with the
/// audit period set.
fn scheduler_config(config: Option<Value>, audit_every: u64) -> Result<keelson::scheduler::config::SchedulerConfig> {
    let mut config = config.unwrap_or_else(
        || serde_json::json!({"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration"}),
    );
    if audit_every > 0 {
        config["placementAuditEvery"] = audit_every.into();
    }
    let text = serde_yaml::to_string(&config)?;
    keelson::scheduler::config::SchedulerConfig::parse(&text).context("the scheduler configuration")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn combinations_cover_every_pair() {
        let axes = vec![("a".to_string(), vec![json!(1), json!(2)]), ("b".to_string(), vec![json!("x"), json!("y")])];
        let all = combinations(&axes);
        let labels: Vec<String> = all
            .iter()
            .map(|c| c.iter().map(|s| format!("{}={}", s.key, s.value)).collect::<Vec<_>>().join(","))
            .collect();
        assert_eq!(labels, ["a=1,b=\"x\"", "a=1,b=\"y\"", "a=2,b=\"x\"", "a=2,b=\"y\""]);
    }

    #[test]
    fn scheduler_settings_reach_the_configuration() {
        let config = scheduler_config(
            Some(json!({"apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration", "percentageOfNodesToScore": 10})),
            5,
        )
        .unwrap();
        assert_eq!(config.placement_audit_every, 5);
        let bad = json!({"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
            "percentageOfNodesToScore": 300});
        assert!(scheduler_config(Some(bad), 0).is_err(), "invalid settings fail before the run");
    }
}
