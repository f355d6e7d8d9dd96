//! Property: memoising node-local results changes nothing. Two schedulers, one with the
//! memo and one without, see the same random cluster and the same random stream of
//! events (pods of a few classes scheduled, pods deleted, nodes cordoned, resized,
//! tainted, removed and re-added) and must make the same decision every time: the same
//! node, or the same FailedScheduling text. Pods come from a handful of classes so the
//! memo is hit often, and there are more nodes than the cycle scores, so the rotating
//! window brings memoised rows back.

mod common;

use common::*;
use keelson_engine::k8s_openapi::api::core::v1::{Node, Pod};
use keelson_scheduler::{Outcome, Profile, Scheduler};
use proptest::prelude::*;
use serde_json::json;

#[derive(Clone, Debug)]
struct NodeSpec {
    cpu_m: u32,
    zone: u8,
    /// 0: none, 1: NoSchedule, 2: PreferNoSchedule.
    taint: u8,
    cordoned: bool,
}

#[derive(Clone, Debug)]
struct ClassSpec {
    cpu_m: u32,
    memory_mi: u32,
    preferred_zone: Option<u8>,
    tolerate: bool,
    host_port: bool,
    app: u8,
}

#[derive(Clone, Debug)]
enum Event {
    Schedule(usize),
    DeletePod(usize),
    UpdateNode(usize, NodeSpec),
    RemoveNode(usize),
}

fn node_strategy() -> impl Strategy<Value = NodeSpec> {
    (500u32..4000, 0u8..3, 0u8..3, proptest::bool::weighted(0.05)).prop_map(|(cpu_m, zone, taint, cordoned)| NodeSpec {
        cpu_m,
        zone,
        taint,
        cordoned,
    })
}

fn class_strategy() -> impl Strategy<Value = ClassSpec> {
    (0u32..900, 0u32..2048, proptest::option::of(0u8..3), any::<bool>(), proptest::bool::weighted(0.2), 0u8..2)
        .prop_map(|(cpu_m, memory_mi, preferred_zone, tolerate, host_port, app)| ClassSpec {
            cpu_m,
            memory_mi,
            preferred_zone,
            tolerate,
            host_port,
            app,
        })
}

fn event_strategy(nodes: usize, classes: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (0..classes).prop_map(Event::Schedule),
        2 => any::<usize>().prop_map(Event::DeletePod),
        1 => (0..nodes, node_strategy()).prop_map(|(n, spec)| Event::UpdateNode(n, spec)),
        1 => (0..nodes).prop_map(Event::RemoveNode),
    ]
}

fn build_node(i: usize, spec: &NodeSpec) -> Node {
    let mut node_spec = json!({"unschedulable": spec.cordoned});
    let effect = match spec.taint {
        1 => Some("NoSchedule"),
        2 => Some("PreferNoSchedule"),
        _ => None,
    };
    if let Some(effect) = effect {
        node_spec["taints"] = json!([{"key": "dedicated", "value": "x", "effect": effect}]);
    }
    node_with(
        &format!("n{i}"),
        &format!("{}m", spec.cpu_m),
        "16Gi",
        json!({"zone": format!("z{}", spec.zone)}),
        node_spec,
    )
}

fn build_pod(i: usize, class: &ClassSpec) -> Pod {
    let ports = if class.host_port { vec![json!({"containerPort": 80, "hostPort": 8080})] } else { vec![] };
    let mut extra = json!({"containers": [{"name": "c", "image": "pause", "ports": ports, "resources": {"requests": {
        "cpu": format!("{}m", class.cpu_m), "memory": format!("{}Mi", class.memory_mi)}}}]});
    if let Some(zone) = class.preferred_zone {
        extra["affinity"] = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": [format!("z{zone}")]}]}}]}});
    }
    if class.tolerate {
        extra["tolerations"] = json!([{"key": "dedicated", "operator": "Exists"}]);
    }
    pod_with(&format!("p{i}"), "0", "0", json!({"app": format!("a{}", class.app)}), extra)
}

fn decision(outcome: Outcome) -> Result<String, String> {
    match outcome {
        Outcome::Scheduled(d) => Ok(d.node),
        Outcome::Unschedulable(f) => Err(f.message),
        other => Err(format!("{other:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn memoised_and_plain_cycles_decide_alike(
        (nodes, classes, events) in (120usize..200, 1usize..4).prop_flat_map(|(n, c)| (
            proptest::collection::vec(node_strategy(), n),
            proptest::collection::vec(class_strategy(), c),
            proptest::collection::vec(event_strategy(n, c), 50..150),
        ))
    ) {
        let mut schedulers: Vec<Scheduler> = [true, false].iter().map(|&memoise| {
            let mut s = Scheduler::new(vec![Profile::default_profile()], 2);
            s.set_memoise(memoise);
            s.set_percentage_of_nodes_to_score(20);
            for (i, spec) in nodes.iter().enumerate() {
                s.snapshot.upsert_node(&build_node(i, spec));
            }
            s
        }).collect();
        let mut placed: Vec<String> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match event {
                Event::Schedule(class) => {
                    let pod = build_pod(i, &classes[*class]);
                    let [memoised, plain] = [0, 1].map(|k| decision(schedulers[k].schedule(&pod, 0)));
                    prop_assert_eq!(&memoised, &plain, "event {}: {:?}", i, event);
                    if memoised.is_ok() {
                        placed.push(format!("default/p{i}"));
                    }
                }
                Event::DeletePod(k) if !placed.is_empty() => {
                    let key = placed.swap_remove(k % placed.len());
                    schedulers.iter_mut().for_each(|s| s.snapshot.remove_pod(&key));
                }
                Event::DeletePod(_) => {}
                Event::UpdateNode(n, spec) => {
                    let node = build_node(*n, spec);
                    schedulers.iter_mut().for_each(|s| s.snapshot.upsert_node(&node));
                }
                Event::RemoveNode(n) => {
                    let name = format!("n{n}");
                    schedulers.iter_mut().for_each(|s| s.snapshot.remove_node(&name));
                }
            }
        }
    }
}
