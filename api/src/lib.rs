//! keelson's API server: the Kubernetes REST API over the store.
//!
//! - [`server`]: TLS, HTTP/1.1 + HTTP/2, authentication, overload limits, routing.
//! - [`route`] parses paths; [`rest`] implements the verbs; [`watch`] streams events.
//! - [`kinds`] decodes, defaults and validates each kind; [`admission`] applies the
//!   checks that need cluster state; [`patch`] implements the three patch formats.
//! - [`discovery`], [`openapi`] and [`table`] serve what kubectl reads to know the API
//!   and to print it.
//!
//! Architecture invariant: this is the only crate that knows the HTTP wire format on
//! the server side, and the only client of the store.

pub mod admission;
pub mod admitted;
pub mod apply;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod batched_writes;
pub mod binding;
pub mod cache;
pub mod certificates;
pub mod discovery;
pub mod event_view;
pub mod eviction;
pub mod filter;
pub mod fuzz;
pub mod head_first;
pub mod kinds;
pub mod kubelet;
pub mod limit_ranger;
pub mod markers;
pub mod metrics;
pub mod node_restriction;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod pod_security;
pub mod protobuf;
pub mod reply;
pub mod resource_quota;
pub mod resources;
pub mod rest;
pub mod review;
pub mod route;
mod serde_methods;
pub mod server;
pub mod service_alloc;
pub mod table;
pub mod token_request;
pub mod token_volume;
pub mod watch;

pub use server::{LocalTransport, MetricsSource, Server, ServerConfig, ServerError};
