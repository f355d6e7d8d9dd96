//! keelson's agents: everything that acts on the cluster as an API client.
//!
//! - [`client`]: the one `kube` client every agent uses, over HTTPS from a kubeconfig
//!   or over an in-process transport when the agent runs inside the server.
//! - [`scheduling`]: the scheduler's runner. It feeds the pure-CPU scheduler
//!   (`keelson-scheduler`) from watches, runs its cycles on one thread, and binds,
//!   reports and preempts through the API.
//! - [`node`]: the node agent (registration, Lease, node status, pods); for now its
//!   hollow runtime, many simulated nodes in one process.
//! - [`controllers`]: the controller manager (ReplicaSet, ...) on a shared
//!   informer/work-queue runtime.
//! - [`events`]: Events about the objects agents act on, correlated and rate-limited
//!   like kube's, written in the background.
//! - [`leader`]: leader election on a Lease, so two replicas never act at once.
//! - [`metrics`]: Prometheus counters, gauges and histograms the agents expose.
//!
//! Architecture invariant: agents never reach into the store or the server; they are
//! API clients, so each also runs as a separate process against a remote server.

pub use kube;

pub mod client;
pub mod controllers;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod node;
pub mod scheduling;
