//! Service ClusterIP allocation.
//!
//! Each allocated address is a reservation key in the store
//! (`/registry/serviceips/<ip>` → `<namespace>/<name>`). The store's create-if-absent
//! makes the reservation atomic, so two services can never share an address, with no
//! in-memory state that could disagree with the store after a restart. An address is
//! reserved before its Service is written and released when the Service is deleted
//! (or when writing it fails).

use keelson_engine::{ApiError, FieldError, FieldErrorKind};
use keelson_store::{Store, StoreError};
use std::net::Ipv4Addr;

/// Kubernetes' default service range, 10.96.0.0/12.
const RANGE_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const RANGE_BITS: u32 = 12;
/// The first address belongs to the `kubernetes` service.
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Random probes before giving up (the range holds a million addresses).
const ATTEMPTS: usize = 64;

fn key(ip: Ipv4Addr) -> String {
    format!("/registry/serviceips/{ip}")
}

fn range_size() -> u32 {
    1 << (32 - RANGE_BITS)
}

fn in_range(ip: Ipv4Addr) -> bool {
    let value = u32::from(ip);
    value > RANGE_BASE && value < RANGE_BASE + range_size() - 1
}

fn random_ip() -> Ipv4Addr {
    // Skip the network address, the API service's address and broadcast.
    let offset = 2 + (uuid::Uuid::new_v4().as_u128() % u128::from(range_size() - 3)) as u32;
    Ipv4Addr::from(RANGE_BASE + offset)
}

fn invalid(ip: &str, detail: &str) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        "",
        vec![FieldError::new(FieldErrorKind::Invalid, "spec.clusterIPs[0]", Some(format!("{ip:?}")), detail)],
    )
}

/// Reserves `requested` (when given) or a free address for `owner`.
pub async fn allocate(store: &Store, requested: Option<&str>, owner: &str) -> Result<Ipv4Addr, ApiError> {
    if let Some(text) = requested {
        let ip: Ipv4Addr = text.parse().map_err(|_| invalid(text, "must be a valid IP address"))?;
        if !in_range(ip) && ip != API_SERVICE_IP {
            return Err(invalid(text, "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"));
        }
        return match store.create(key(ip), owner.to_string()).await {
            Ok(_) => Ok(ip),
            Err(StoreError::AlreadyExists { .. }) => Err(invalid(text, "provided IP is already allocated")),
            Err(e) => Err(ApiError::internal(e)),
        };
    }
    for _ in 0..ATTEMPTS {
        let ip = random_ip();
        match store.create(key(ip), owner.to_string()).await {
            Ok(_) => return Ok(ip),
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::internal("no free ClusterIP found in 10.96.0.0/12"))
}

/// Releases an address (idempotent).
pub async fn release(store: &Store, ip: &str) {
    if let Ok(ip) = ip.parse::<Ipv4Addr>() {
        let _ = store.delete(key(ip), None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_unique_and_reusable_after_release() {
        let store = Store::in_memory(Default::default()).unwrap();
        let a = allocate(&store, None, "d/a").await.unwrap();
        assert!(in_range(a) && a != API_SERVICE_IP);
        let error = allocate(&store, Some(&a.to_string()), "d/b").await.unwrap_err();
        assert_eq!(error.code(), 422);
        assert!(error.causes[0].detail.contains("already allocated"));
        release(&store, &a.to_string()).await;
        assert_eq!(allocate(&store, Some(&a.to_string()), "d/b").await.unwrap(), a);
        assert_eq!(allocate(&store, Some("192.168.0.1"), "d/c").await.unwrap_err().code(), 422);
        assert_eq!(allocate(&store, Some("bogus"), "d/c").await.unwrap_err().code(), 422);
        store.close();
    }
}
