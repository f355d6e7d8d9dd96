//! keelson's core model and contracts, free of IO.
//!
//! Architecture invariant: this crate knows nothing of tokio, RocksDB, HTTP or rayon. It
//! holds what every other crate agrees on: revisions, the Kubernetes error model,
//! quantities, selectors, name rules, watch event types, and the Kubernetes object
//! types themselves (re-exported from `k8s-openapi`).

pub mod cron;
pub mod quantity;
pub mod quota;
pub mod revision;
pub mod selector;
pub mod status;
pub mod validation;
pub mod watch;

pub use k8s_openapi;
pub use quantity::{Quantity, QuantityError, QuantityFormat};
pub use revision::Revision;
pub use selector::{Labels, Operator, Requirement, Selector, SelectorError};
pub use status::{ApiError, FieldError, FieldErrorKind, StatusReason};
pub use watch::EventType;
