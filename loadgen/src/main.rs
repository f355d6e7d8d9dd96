//! `loadgen`: keelson's load generator.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod api_bench;
mod controllers_bench;
mod embedded;
mod git_head;
mod index;
mod plot;
mod podlite;
mod report;
mod scheduling_bench;
mod scrape;
mod store_bench;
mod workload;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "loadgen", version, about = "Benchmarks for keelson: the store, the API, whole clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Durable write throughput and watch fan-out of the registry (keelson's RocksDB store, or etcd).
    Store(store_bench::StoreArgs),
    /// Creates, GETs, LISTs and watch fan-out through the API server over HTTPS.
    Api(api_bench::ApiArgs),
    /// SchedulingBasic end to end: nodes and pods created through the API, binds watched.
    Scheduling(scheduling_bench::SchedulingArgs),
    /// A large Deployment through the controllers onto hollow nodes: scale-up to all
    /// available, then a rolling update; times and the API writes per pod.
    Controllers(controllers_bench::ControllersArgs),
    /// Runs a workload file (loadgen/workloads/*.yaml): prints progress and a summary
    /// table, writes the result JSON; exits non-zero unless every measured pod was
    /// scheduled.
    Run(workload::RunArgs),
    /// Runs a workload once per value (or combination) of `--set key=v1,v2,...`, with
    /// a table and a plot of throughput against placement quality.
    Sweep(workload::SweepArgs),
    /// Regenerates results/README.md and the plots from the result files.
    Report(index::ReportArgs),
}

/// Writes the result to `out` (if given) and prints it as the last line: one JSON
/// object, for scripts.
fn emit(result: &impl serde::Serialize, out: Option<&std::path::Path>) -> Result<()> {
    let json = serde_json::to_string(result)?;
    if let Some(out) = out {
        std::fs::write(out, format!("{json}\n"))?;
    }
    println!("{json}");
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Store(args) => {
            let result = store_bench::run(&args)?;
            store_bench::print_table(&result);
            emit(&result, args.out.as_deref())?;
            if result.watchers > 0 && !result.watch_complete_in_order {
                anyhow::bail!("a watcher missed events or saw them out of order");
            }
        }
        Command::Api(args) => {
            let result = api_bench::run(&args)?;
            api_bench::print_table(&result);
            emit(&result, args.out.as_deref())?;
            let failed = [&result.creates, &result.gets, &result.lists].iter().any(|p| p.ops == 0);
            if failed || result.watch.as_ref().is_some_and(|w| !w.complete) {
                anyhow::bail!("a phase completed no operations or a watcher missed events");
            }
        }
        Command::Scheduling(args) => {
            let result = scheduling_bench::run(&args)?;
            scheduling_bench::print_table(&result);
            emit(&result, args.out.as_deref())?;
            if result.bound < result.pods {
                anyhow::bail!("only {} of {} pods were scheduled in time", result.bound, result.pods);
            }
        }
        Command::Controllers(args) => {
            let result = controllers_bench::run(&args)?;
            controllers_bench::print_table(&result);
            emit(&result, args.out.as_deref())?;
            if !(result.scale_up.completed && result.rolling_update.completed) {
                anyhow::bail!("the Deployment did not finish both phases in time");
            }
        }
        Command::Run(args) => {
            let result = workload::run(&args)?;
            result.print_table();
            emit(&result, args.out.as_deref())?;
            if let Some(why) = &result.shortfall {
                anyhow::bail!("{}: {why}", result.workload);
            }
        }
        Command::Sweep(args) => {
            let result = workload::sweep(&args)?;
            workload::print_sweep(&result);
            emit(&result, args.run.out.as_deref())?;
            let plot = args.plot.clone().or_else(|| args.run.out.as_ref().map(|o| o.with_extension("svg")));
            if let Some(plot) = plot {
                workload::plot_sweep(&result, &plot)?;
                eprintln!("plot: {}", plot.display());
            }
            let incomplete = result.points.iter().filter(|p| !p.result.complete).count();
            if incomplete > 0 {
                anyhow::bail!("{incomplete} of the sweep's runs did not schedule every measured pod");
            }
        }
        Command::Report(args) => {
            let readme = index::regenerate(&args)?;
            println!("wrote {}", readme.display());
        }
    }
    Ok(())
}
