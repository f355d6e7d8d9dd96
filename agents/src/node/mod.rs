//! The node agent: registers a node, keeps its Lease and status fresh, and runs the
//! pods bound to it.
//!
//! - [`objects`]: the Node, Lease and pod statuses, built as the kubelet builds them.
//! - [`hollow`]: the hollow runtime, many simulated nodes in one process (for
//!   benchmarks); nothing runs, pods go Running and Succeeded on schedule.
//! - [`kubelet`]: one real node: its pods run through a [`runtime::Runtime`], one
//!   [`pod::worker::Worker`] each.

pub mod bootstrap;
mod heartbeat;
pub mod hollow;
pub mod kubelet;
pub mod logserver;
pub mod objects;
pub mod pod;
pub mod rotation;
pub mod runtime;
pub mod stream;
pub mod test_images;
