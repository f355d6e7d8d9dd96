//! keelson's scheduler: kube-scheduler's framework and plugins over a struct-of-arrays
//! node snapshot, with a parallel filter/score cycle.
//!
//! Architecture invariant: this crate is pure CPU. It knows nothing of HTTP, tokio or
//! RocksDB; the runner in `agents` feeds it watch events and binds what it decides.
//!
//! - [`snapshot`]: nodes and placed pods, updated incrementally.
//! - [`query`]: a pod compiled once into ids and integers.
//! - [`framework`]: extension points, outcomes, cycle state.
//! - [`plugins`]: the in-tree plugins.
//! - [`profile`]: which plugins run where, with which weights.
//! - [`cycle`]: the scheduling cycle (the hot path).
//! - [`timing`]: per-cycle extension point durations, for the runner's metrics.
//! - [`memo`]: node-local results memoised across pods that ask nodes the same.

pub mod config;
pub mod cycle;
pub mod framework;
pub mod intern;
pub mod matchers;
pub mod memo;
pub mod plugins;
pub mod preemption;
pub mod profile;
pub mod query;
pub mod queue;
pub mod resources;
pub mod snapshot;
pub mod timing;

pub use cycle::{Decision, Failure, Outcome, Scheduler};
pub use profile::Profile;
pub use snapshot::Snapshot;
