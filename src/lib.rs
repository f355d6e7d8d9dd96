//! The `keelson` library: composes a control plane from the workspace's crates.
//!
//! The server (`api`) on the store (`store`), with the components that run beside it
//! in the same process (the scheduler's runner from `agents`), each talking to the
//! server through its in-process transport: the same client code as when they run
//! alone against a remote server.

pub use keelson_agents as agents;
pub use keelson_api as api;
pub use keelson_engine as engine;
pub use keelson_scheduler as scheduler;
pub use keelson_store as store;

use agents::controllers::runtime::metrics::ControllerMetrics;
use agents::controllers::{ControllerManager, ManagerOptions};
use agents::leader::{Elected, ElectionConfig};
use agents::scheduling::metrics::SchedulerMetrics;
use agents::scheduling::{RunnerOptions, SchedulerRunner};
use scheduler::config::SchedulerConfig;
use std::path::Path;
use std::sync::Arc;

/// The version keelson reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Reads a `KubeSchedulerConfiguration` file, or the defaults without one.
pub fn scheduler_config(path: Option<&Path>) -> anyhow::Result<SchedulerConfig> {
    use anyhow::Context;
    let Some(path) = path else { return Ok(SchedulerConfig::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    SchedulerConfig::parse(&text).with_context(|| format!("scheduler configuration {}", path.display()))
}

/// A client that reaches `server` in process, as `user`. Its User-Agent names the
/// component as kube's do (`kube-scheduler/v1.33.0`), so the fields it writes are
/// recorded under that manager.
pub fn in_process_client(server: &api::Server, user: &str) -> agents::kube::Client {
    let transport = server.local_transport(user, &[]);
    let component = match user.strip_prefix("system:") {
        Some(node) if node.starts_with("node:") => "kubelet",
        Some(component) => component,
        None => user,
    };
    let agent = http::HeaderValue::from_str(&format!("{component}/v{VERSION} (keelson)"))
        .unwrap_or_else(|_| http::HeaderValue::from_static("keelson"));
    agents::client::in_process(move |mut request: http::Request<_>| {
        let transport = transport.clone();
        request.headers_mut().entry(http::header::USER_AGENT).or_insert_with(|| agent.clone());
        async move { transport.call(request).await }
    })
}

/// Starts the scheduler beside `server` (its metrics join the server's `/metrics`).
/// Must be called inside the tokio runtime that serves.
pub fn start_scheduler(server: &api::Server, config: SchedulerConfig) -> SchedulerRunner {
    let client = in_process_client(server, "system:kube-scheduler");
    let runner = SchedulerRunner::start(client, config, RunnerOptions::default());
    let metrics = runner.metrics();
    server.register_component("scheduler", Arc::new(move |out: &mut String| metrics.render(out)));
    runner
}

/// The scheduler under leader election (Lease `kube-system/kube-scheduler`), so a
/// `keelson scheduler` run beside it never schedules at the same time. `client`
/// reaches the server; `metrics` outlive each term as leader.
pub fn elected_scheduler(
    client: agents::kube::Client,
    config: SchedulerConfig,
    identity: String,
    metrics: Arc<SchedulerMetrics>,
) -> Elected {
    let election = ElectionConfig::new("kube-scheduler", identity);
    let run_client = client.clone();
    Elected::spawn(
        client,
        election,
        move || {
            SchedulerRunner::start_with_metrics(
                run_client.clone(),
                config.clone(),
                RunnerOptions::default(),
                Arc::clone(&metrics),
            )
        },
        // Joining the scheduling thread blocks; the runtime's other workers go on.
        |runner| tokio::task::block_in_place(|| runner.stop()),
    )
}

/// The controllers under leader election (Lease `kube-system/kube-controller-manager`).
pub fn elected_controllers(
    client: agents::kube::Client,
    options: ManagerOptions,
    identity: String,
    metrics: Arc<ControllerMetrics>,
) -> Elected {
    let election = ElectionConfig::new("kube-controller-manager", identity);
    let run_client = client.clone();
    Elected::spawn(
        client,
        election,
        move || ControllerManager::start(run_client.clone(), &options, &metrics),
        ControllerManager::stop,
    )
}

/// The scheduler and the controllers beside `server`, each under leader election as
/// `identity` (their metrics join the server's `/metrics`). Must be called inside the
/// tokio runtime that serves.
pub fn start_components(
    server: &api::Server,
    scheduler: Option<SchedulerConfig>,
    controllers: Option<ManagerOptions>,
    identity: &str,
) -> Vec<Elected> {
    let mut running = Vec::new();
    if let Some(config) = scheduler {
        let metrics = Arc::new(SchedulerMetrics::default());
        let render = Arc::clone(&metrics);
        server.register_component("scheduler", Arc::new(move |out: &mut String| render.render(out)));
        let client = in_process_client(server, "system:kube-scheduler");
        running.push(elected_scheduler(client, config, identity.to_string(), metrics));
    }
    if let Some(options) = controllers {
        let metrics = Arc::new(ControllerMetrics::default());
        let render = Arc::clone(&metrics);
        server.register_component("controller-manager", Arc::new(move |out: &mut String| render.render(out)));
        let client = in_process_client(server, "system:kube-controller-manager");
        running.push(elected_controllers(client, options, identity.to_string(), metrics));
    }
    running
}
