//! Running pods on a real node: one [`worker::Worker`] per pod, its container
//! environment ([`env`]), volumes ([`volumes`]), restart backoff ([`backoff`]), probes
//! ([`probe`]) and the status it reports ([`status`]).

pub mod backoff;
pub mod env;
pub mod probe;
pub mod status;
pub mod volumes;
pub mod worker;
