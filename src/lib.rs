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

/// A client that reaches `server` in process, as `user`.
pub fn in_process_client(server: &api::Server, user: &str) -> agents::kube::Client {
    let transport = server.local_transport(user, &[]);
    agents::client::in_process(move |request| {
        let transport = transport.clone();
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
