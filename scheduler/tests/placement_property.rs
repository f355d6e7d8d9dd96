//! Property: a scheduling decision never violates a filter. Random nodes (sizes, zones,
//! taints, cordons) and random pods (requests, node selectors, tolerations, host ports,
//! anti-affinity) are scheduled one by one; every placement is re-checked by a naive
//! oracle written here from the raw objects, independent of the scheduler's compiled
//! structures.

mod common;

use common::*;
use keelson_engine::k8s_openapi::api::core::v1::{Node, Pod};
use keelson_scheduler::Outcome;
use proptest::prelude::*;
use serde_json::json;

#[derive(Clone, Debug)]
struct NodeSpec {
    cpu_m: u32,
    zone: u8,
    taint: Option<u8>,
    cordoned: bool,
}

#[derive(Clone, Debug)]
struct PodSpec {
    cpu_m: u32,
    zone: Option<u8>,
    tolerate: Option<u8>,
    host_port: Option<u16>,
    app: u8,
    anti_affinity: bool,
}

fn node_strategy() -> impl Strategy<Value = NodeSpec> {
    (100u32..4000, 0u8..3, proptest::option::of(0u8..2), proptest::bool::weighted(0.1))
        .prop_map(|(cpu_m, zone, taint, cordoned)| NodeSpec { cpu_m, zone, taint, cordoned })
}

fn pod_strategy() -> impl Strategy<Value = PodSpec> {
    (
        0u32..1500,
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..2),
        proptest::option::of(8000u16..8003),
        0u8..3,
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(cpu_m, zone, tolerate, host_port, app, anti_affinity)| PodSpec {
            cpu_m,
            zone,
            tolerate,
            host_port,
            app,
            anti_affinity,
        })
}

fn build_node(i: usize, spec: &NodeSpec) -> Node {
    let mut node_spec = json!({"unschedulable": spec.cordoned});
    if let Some(t) = spec.taint {
        node_spec["taints"] = json!([{"key": format!("t{t}"), "value": "x", "effect": "NoSchedule"}]);
    }
    node_with(
        &format!("n{i}"),
        &format!("{}m", spec.cpu_m),
        "64Gi",
        json!({"zone": format!("z{}", spec.zone)}),
        node_spec,
    )
}

fn build_pod(i: usize, spec: &PodSpec) -> Pod {
    let mut extra = json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": format!("{}m", spec.cpu_m)}},
        "ports": spec.host_port.map(|p| vec![json!({"containerPort": 80, "hostPort": p})]).unwrap_or_default()}]});
    if let Some(zone) = spec.zone {
        extra["nodeSelector"] = json!({"zone": format!("z{zone}")});
    }
    if let Some(t) = spec.tolerate {
        extra["tolerations"] = json!([{"key": format!("t{t}"), "operator": "Exists"}]);
    }
    if spec.anti_affinity {
        extra["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": format!("a{}", spec.app)}}, "topologyKey": "kubernetes.io/hostname"}]}});
    }
    pod_with(&format!("p{i}"), "0", "0", json!({"app": format!("a{}", spec.app)}), extra)
}

/// The oracle: may `pod` go on `node` given the pods already there?
fn allowed(node: &NodeSpec, pod: &PodSpec, on_node: &[&PodSpec]) -> Result<(), String> {
    let used: u32 = on_node.iter().map(|p| p.cpu_m).sum();
    if used + pod.cpu_m > node.cpu_m {
        return Err(format!("cpu {used}+{} > {}", pod.cpu_m, node.cpu_m));
    }
    if node.cordoned {
        return Err("cordoned".into());
    }
    if node.taint.is_some() && node.taint != pod.tolerate {
        return Err("untolerated taint".into());
    }
    if pod.zone.is_some_and(|z| z != node.zone) {
        return Err("node selector".into());
    }
    if pod.host_port.is_some() && on_node.iter().any(|p| p.host_port == pod.host_port) {
        return Err("host port taken".into());
    }
    if pod.anti_affinity && on_node.iter().any(|p| p.app == pod.app) {
        return Err("anti-affinity".into());
    }
    if on_node.iter().any(|p| p.anti_affinity && p.app == pod.app) {
        return Err("existing pod's anti-affinity".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn placements_satisfy_every_filter(
        nodes in proptest::collection::vec(node_strategy(), 1..24),
        pods in proptest::collection::vec(pod_strategy(), 1..60),
    ) {
        let built: Vec<Node> = nodes.iter().enumerate().map(|(i, n)| build_node(i, n)).collect();
        let mut scheduler = scheduler(&built);
        let mut placed: Vec<Vec<&PodSpec>> = vec![Vec::new(); nodes.len()];
        for (i, spec) in pods.iter().enumerate() {
            match scheduler.schedule(&build_pod(i, spec), 0) {
                Outcome::Scheduled(decision) => {
                    let n: usize = decision.node[1..].parse().unwrap();
                    if let Err(why) = allowed(&nodes[n], spec, &placed[n]) {
                        prop_assert!(false, "pod {i} {spec:?} placed on {} {:?}: {why}", decision.node, nodes[n]);
                    }
                    placed[n].push(spec);
                }
                Outcome::Unschedulable(_) => {
                    // And when it says no, no node was allowed.
                    let fits = (0..nodes.len()).find(|&n| allowed(&nodes[n], spec, &placed[n]).is_ok());
                    prop_assert!(fits.is_none(), "pod {i} {spec:?} refused but node n{} fits", fits.unwrap_or(0));
                }
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
