//! The `keelson` library: composes a control plane from the workspace's crates.
//!
//! Today it holds the store's operator commands (backup, restore, inspect) and the API
//! server; the scheduler runner and controllers join it as their issues land.

pub use keelson_api as api;
pub use keelson_engine as engine;
pub use keelson_store as store;

/// The version keelson reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
