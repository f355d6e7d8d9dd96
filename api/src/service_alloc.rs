//! Service ClusterIP and NodePort allocation.
//!
//! Each allocated address or node port is a reservation key in the store
//! (`/registry/serviceips/<ip>`, `/registry/servicenodeports/<port>` →
//! `<namespace>/<name>`). The store's create-if-absent makes a reservation atomic, so
//! two services can never share one, with no in-memory state that could disagree with
//! the store after a restart. A reservation is made before its Service is written and
//! released when the Service no longer holds it (deleted, or updated without it) or
//! when writing the Service fails.

use keelson_engine::{ApiError, FieldError, FieldErrorKind};
use keelson_store::{Store, StoreError};
use serde_json::Value;
use std::net::Ipv4Addr;

/// Kubernetes' default service range, 10.96.0.0/12.
const RANGE_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const RANGE_BITS: u32 = 12;
/// The first address belongs to the `kubernetes` service.
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Kubernetes' default `--service-node-port-range`.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
/// Random probes before a full scan (IPs) or giving up.
const ATTEMPTS: usize = 64;

fn ip_key(ip: Ipv4Addr) -> String {
    format!("/registry/serviceips/{ip}")
}

fn port_key(port: u16) -> String {
    format!("/registry/servicenodeports/{port}")
}

fn range_size() -> u32 {
    1 << (32 - RANGE_BITS)
}

fn in_range(ip: Ipv4Addr) -> bool {
    let value = u32::from(ip);
    value > RANGE_BASE && value < RANGE_BASE + range_size() - 1
}

fn random_below(n: u32) -> u32 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u32
}

fn random_ip() -> Ipv4Addr {
    // Skip the network address, the API service's address and broadcast.
    Ipv4Addr::from(RANGE_BASE + 2 + random_below(range_size() - 3))
}

fn invalid(path: &str, value: String, detail: &str) -> ApiError {
    ApiError::invalid("", "Service", "", vec![FieldError::new(FieldErrorKind::Invalid, path, Some(value), detail)])
}

/// Reserves `key` for `owner`: `false` if someone holds it already.
async fn reserve(store: &Store, key: String, owner: &str) -> Result<bool, ApiError> {
    match store.create(key, owner.to_string()).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Reserves `requested` (when given) or a free address for `owner`.
pub async fn allocate(store: &Store, requested: Option<&str>, owner: &str) -> Result<Ipv4Addr, ApiError> {
    let invalid_ip = |text: &str, detail: &str| invalid("spec.clusterIPs[0]", format!("{text:?}"), detail);
    if let Some(text) = requested {
        let ip: Ipv4Addr = text.parse().map_err(|_| invalid_ip(text, "must be a valid IP address"))?;
        if !in_range(ip) && ip != API_SERVICE_IP {
            return Err(invalid_ip(
                text,
                "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
            ));
        }
        return match reserve(store, ip_key(ip), owner).await? {
            true => Ok(ip),
            false => Err(invalid_ip(text, "provided IP is already allocated")),
        };
    }
    for _ in 0..ATTEMPTS {
        let ip = random_ip();
        if reserve(store, ip_key(ip), owner).await? {
            return Ok(ip);
        }
    }
    Err(ApiError::internal("no free ClusterIP found in 10.96.0.0/12"))
}

/// Releases an address (idempotent).
pub async fn release(store: &Store, ip: &str) {
    if let Ok(ip) = ip.parse::<Ipv4Addr>() {
        let _ = store.delete(ip_key(ip), None).await;
    }
}

/// Reserves node port `requested` for `owner`; `path` names the field for errors.
pub async fn reserve_node_port(store: &Store, requested: i64, owner: &str, path: &str) -> Result<u16, ApiError> {
    let port = u16::try_from(requested).ok().filter(|p| NODE_PORTS.contains(p)).ok_or_else(|| {
        invalid(
            path,
            requested.to_string(),
            &format!(
                "provided port is not in the valid range. The range of valid ports is {}-{}",
                NODE_PORTS.start(),
                NODE_PORTS.end()
            ),
        )
    })?;
    match reserve(store, port_key(port), owner).await? {
        true => Ok(port),
        false => Err(invalid(path, requested.to_string(), "provided port is already allocated")),
    }
}

/// Reserves a free node port for `owner`: random probes first, then a scan, so a
/// nearly full range still finds its last free port.
pub async fn allocate_node_port(store: &Store, owner: &str) -> Result<u16, ApiError> {
    let size = u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
    let start = random_below(size);
    let candidates = (0..ATTEMPTS as u32).map(|_| random_below(size)).chain((0..size).map(|i| (start + i) % size));
    for offset in candidates {
        let port = NODE_PORTS.start() + offset as u16;
        if reserve(store, port_key(port), owner).await? {
            return Ok(port);
        }
    }
    Err(ApiError::internal(format!("no free node port left in {}-{}", NODE_PORTS.start(), NODE_PORTS.end())))
}

/// Releases node ports (idempotent).
pub async fn release_node_ports(store: &Store, ports: &[u16]) {
    for port in ports {
        let _ = store.delete(port_key(*port), None).await;
    }
}

/// Whether a Service of this type is reachable on node ports.
fn exposes_node_ports(service: &Value) -> bool {
    matches!(service.pointer("/spec/type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"))
}

/// The node ports a Service object holds.
pub fn node_ports_of(service: &Value) -> Vec<u16> {
    let ports = service.pointer("/spec/ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut held: Vec<u16> =
        ports.iter().filter_map(|p| p.get("nodePort")?.as_u64()?.try_into().ok()).filter(|p| *p != 0).collect();
    held.sort_unstable();
    held.dedup();
    held
}

/// Gives every port of a NodePort or LoadBalancer Service its node port: one it asks
/// for is reserved unless the Service already holds it (`held`, from its previous
/// state); one without is allocated. Two ports may share a node port (TCP and UDP on
/// the same number). Returns what was newly reserved, for the caller to release if the
/// write fails; on an error, nothing stays reserved.
pub async fn assign_node_ports(
    store: &Store,
    service: &mut Value,
    held: &[u16],
    owner: &str,
) -> Result<Vec<u16>, ApiError> {
    let mut reserved = Vec::new();
    if !exposes_node_ports(service) {
        return Ok(reserved);
    }
    let count = service.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
    for i in 0..count {
        let path = format!("spec.ports[{i}].nodePort");
        let requested = service.pointer(&format!("/spec/ports/{i}/nodePort")).and_then(Value::as_i64).unwrap_or(0);
        let mine = |port: u16| held.contains(&port) || reserved.contains(&port);
        let result = match requested {
            0 => allocate_node_port(store, owner).await,
            port if u16::try_from(port).is_ok_and(mine) => continue,
            port => reserve_node_port(store, port, owner, &path).await,
        };
        match result {
            Ok(port) => {
                reserved.push(port);
                service["spec"]["ports"][i]["nodePort"] = port.into();
            }
            Err(error) => {
                release_node_ports(store, &reserved).await;
                return Err(error);
            }
        }
    }
    Ok(reserved)
}

/// What an update keeps of a Service's node ports, as Kubernetes does: a port that
/// leaves its node port out keeps the one it had (matched by port and protocol), and
/// a Service that stops exposing node ports drops the ones it still carries over.
pub fn carry_node_ports(new: &mut Value, old: &Value) {
    let old_ports = old.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    // Protocol defaults to TCP after this runs: an unset one is TCP.
    let key = |p: &Value| {
        (p.get("port").and_then(Value::as_i64), p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string())
    };
    let exposes = exposes_node_ports(new);
    let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else { return };
    for port in ports.iter_mut() {
        let previous = old_ports.iter().find(|o| key(o) == key(port)).and_then(|o| o.get("nodePort")).cloned();
        let given = port.get("nodePort").and_then(Value::as_i64).filter(|p| *p != 0);
        match (exposes, given, previous) {
            (true, None, Some(previous)) => port["nodePort"] = previous,
            (false, Some(given), Some(previous)) if previous.as_i64() == Some(given) => {
                port.as_object_mut().map(|p| p.remove("nodePort"));
            }
            _ => {}
        }
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

    #[tokio::test]
    async fn node_ports_are_unique_in_range_and_reusable_after_release() {
        let store = Store::in_memory(Default::default()).unwrap();
        let a = allocate_node_port(&store, "d/a").await.unwrap();
        assert!(NODE_PORTS.contains(&a));
        let error = reserve_node_port(&store, a.into(), "d/b", "spec.ports[0].nodePort").await.unwrap_err();
        assert_eq!((error.code(), error.causes[0].field.as_str()), (422, "spec.ports[0].nodePort"));
        assert!(error.causes[0].detail.contains("already allocated"));
        let error = reserve_node_port(&store, 80, "d/b", "spec.ports[1].nodePort").await.unwrap_err();
        assert!(error.causes[0].detail.contains("The range of valid ports is 30000-32767"), "{error:?}");
        release_node_ports(&store, &[a]).await;
        assert_eq!(reserve_node_port(&store, a.into(), "d/b", "p").await.unwrap(), a);
        store.close();
    }

    #[tokio::test]
    async fn services_get_node_ports_and_updates_keep_them() {
        let store = Store::in_memory(Default::default()).unwrap();
        let mut service = serde_json::json!({"spec": {"type": "NodePort", "ports": [
            {"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP", "nodePort": 30053},
            {"port": 53, "protocol": "TCP", "nodePort": 30053}]}});
        let reserved = assign_node_ports(&store, &mut service, &[], "d/a").await.unwrap();
        assert_eq!(reserved.len(), 2, "30053 is reserved once for both protocols");
        let held = node_ports_of(&service);
        assert!(held.contains(&30053) && held.len() == 2);

        // An update that leaves node ports out keeps them, and needs no new reservation.
        let mut updated = serde_json::json!({"spec": {"type": "NodePort", "ports": [
            {"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}});
        carry_node_ports(&mut updated, &service);
        assert_eq!(node_ports_of(&updated), held);
        assert!(assign_node_ports(&store, &mut updated, &held, "d/a").await.unwrap().is_empty());

        // Another service cannot take a held port; a failed assignment keeps nothing.
        let mut other = serde_json::json!({"spec": {"type": "LoadBalancer", "ports": [
            {"port": 81}, {"port": 82, "nodePort": 30053}]}});
        let error = assign_node_ports(&store, &mut other, &[], "d/b").await.unwrap_err();
        assert_eq!(error.causes[0].field, "spec.ports[1].nodePort");
        let first = other["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
        assert!(reserve_node_port(&store, first.into(), "d/c", "p").await.is_ok(), "released after the failure");

        // Back to ClusterIP: the carried-over node ports are dropped.
        let mut cluster_ip = service.clone();
        cluster_ip["spec"]["type"] = "ClusterIP".into();
        carry_node_ports(&mut cluster_ip, &service);
        assert!(node_ports_of(&cluster_ip).is_empty());
        store.close();
    }
}
