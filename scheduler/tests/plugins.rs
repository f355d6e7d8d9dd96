//! Plugin semantics, table-driven, through the scheduler's public face: each case builds
//! a snapshot, schedules a pod, and checks where it went or the FailedScheduling text.

mod common;

use common::*;
use keelson_scheduler::cycle::feasible_nodes_to_find;
use keelson_scheduler::Outcome;
use serde_json::json;

#[test]
fn feasible_nodes_to_find_follows_kube_scheduler() {
    // (percentage, nodes, expected), from kube-scheduler's numFeasibleNodesToFind.
    let cases = [
        (0, 10, 10),
        (0, 100, 100),
        (0, 1000, 420),
        (0, 5000, 500),
        (0, 6000, 300),
        (40, 1000, 400),
        (0, 50000, 2500),
        (1, 1000, 100),
        (100, 5000, 5000),
    ];
    for (percentage, nodes, expected) in cases {
        assert_eq!(feasible_nodes_to_find(percentage, nodes), expected, "{percentage}% of {nodes}");
    }
}

#[test]
fn a_pod_lands_on_the_only_node_that_fits() {
    let mut s = scheduler(&[
        node("small", "1", "1Gi", json!({})),
        node("big", "8", "32Gi", json!({})),
        node("mid", "2", "1Gi", json!({})),
    ]);
    assert_eq!(place(&mut s, &pod("p", "4", "2Gi")).unwrap(), "big");
}

#[test]
fn insufficient_resources_are_counted_per_resource() {
    let mut s = scheduler(&[
        node("a", "1", "1Gi", json!({})),
        node("b", "1", "64Gi", json!({})),
        node("c", "8", "1Gi", json!({})),
    ]);
    let message = place(&mut s, &pod("p", "2", "2Gi")).unwrap_err();
    assert!(message.starts_with("0/3 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."), "{message}");
}

#[test]
fn assumed_pods_use_up_room() {
    let mut s = scheduler(&[node("a", "1", "4Gi", json!({}))]);
    assert_eq!(place(&mut s, &pod("p1", "600m", "1Gi")).unwrap(), "a");
    let message = place(&mut s, &pod("p2", "600m", "1Gi")).unwrap_err();
    assert!(message.contains("1 Insufficient cpu"), "{message}");
}

#[test]
fn too_many_pods() {
    let mut n = node("a", "4", "4Gi", json!({}));
    n.status
        .as_mut()
        .unwrap()
        .allocatable
        .as_mut()
        .unwrap()
        .insert("pods".into(), keelson_engine::k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()));
    let mut s = scheduler(&[n]);
    place(&mut s, &pod("p1", "0", "0")).unwrap();
    assert!(place(&mut s, &pod("p2", "0", "0")).unwrap_err().contains("1 Too many pods"));
}

#[test]
fn taints_filter_and_tolerations_admit() {
    let tainted = |name: &str| {
        node_with(
            name,
            "4",
            "8Gi",
            json!({}),
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        )
    };
    let mut s = scheduler(&[tainted("a"), tainted("b")]);
    let message = place(&mut s, &pod("p", "1", "1Gi")).unwrap_err();
    assert!(
        message.starts_with("0/2 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}."),
        "{message}"
    );
    assert!(
        message.contains("preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."),
        "{message}"
    );
    let tolerant = pod_with(
        "q",
        "1",
        "1Gi",
        json!({}),
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
    );
    assert!(place(&mut s, &tolerant).is_ok());
}

#[test]
fn prefer_no_schedule_taints_are_avoided_when_possible() {
    let soft = node_with(
        "soft",
        "4",
        "8Gi",
        json!({}),
        json!({"taints": [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]}),
    );
    let mut s = scheduler(&[soft, node("clean", "4", "8Gi", json!({}))]);
    for i in 0..4 {
        assert_eq!(place(&mut s, &pod(&format!("p{i}"), "100m", "100Mi")).unwrap(), "clean");
    }
}

#[test]
fn cordoned_nodes_are_skipped_unless_tolerated() {
    let cordoned = node_with("a", "4", "8Gi", json!({}), json!({"unschedulable": true}));
    let mut s = scheduler(&[cordoned]);
    assert!(place(&mut s, &pod("p", "1", "1Gi")).unwrap_err().contains("1 node(s) were unschedulable"));
    let tolerant = pod_with(
        "q",
        "1",
        "1Gi",
        json!({}),
        json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
    );
    assert_eq!(place(&mut s, &tolerant).unwrap(), "a");
}

#[test]
fn node_name_pins_the_pod() {
    let mut s = scheduler(&[node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({}))]);
    let pinned = pod_with("p", "1", "1Gi", json!({}), json!({"nodeName": "b"}));
    assert_eq!(place(&mut s, &pinned).unwrap(), "b");
}

#[test]
fn node_affinity_operators() {
    let nodes = [
        node("a", "4", "8Gi", json!({"zone": "z1", "gen": "3"})),
        node("b", "4", "8Gi", json!({"zone": "z2", "gen": "5"})),
        node("c", "4", "8Gi", json!({"zone": "z3"})),
    ];
    let term = |expr: serde_json::Value| json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [expr]}}}});
    let cases = [
        (json!({"nodeSelector": {"zone": "z2"}}), Some("b")),
        (term(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z3"]}]})), Some("c")),
        (term(json!({"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]})), Some("b")),
        (term(json!({"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["4"]}]})), Some("a")),
        (term(json!({"matchExpressions": [{"key": "gen", "operator": "DoesNotExist"}]})), Some("c")),
        (term(json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1", "z2"]}]})), Some("c")),
        (term(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]})), Some("a")),
        (term(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["nowhere"]}]})), None),
        (term(json!({})), None),
    ];
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let mut s = scheduler(&nodes);
        let got = place(&mut s, &pod_with(&format!("p{i}"), "1", "1Gi", json!({}), spec.clone()));
        match expected {
            Some(node) => assert_eq!(got.as_deref(), Ok(node), "case {i}: {spec}"),
            None => {
                assert!(got.unwrap_err().contains("3 node(s) didn't match Pod's node affinity/selector"), "case {i}")
            }
        }
    }
}

#[test]
fn preferred_node_affinity_wins_by_weight() {
    let nodes = [node("a", "4", "8Gi", json!({"disk": "hdd"})), node("b", "4", "8Gi", json!({"disk": "ssd"}))];
    let mut s = scheduler(&nodes);
    let spec = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}},
        {"weight": 80, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
    ]}}});
    assert_eq!(place(&mut s, &pod_with("p", "1", "1Gi", json!({}), spec)).unwrap(), "b");
}

#[test]
fn host_ports_conflict() {
    let mut s = scheduler(&[node("a", "4", "8Gi", json!({}))]);
    let with_port = |name: &str| {
        pod_with(
            name,
            "100m",
            "10Mi",
            json!({}),
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        )
    };
    place(&mut s, &with_port("p1")).unwrap();
    let message = place(&mut s, &with_port("p2")).unwrap_err();
    assert!(message.contains("1 node(s) didn't have free ports for the requested pod ports"), "{message}");
}

#[test]
fn least_allocated_spreads_and_most_allocated_packs() {
    let nodes = [node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({}))];
    let mut s = scheduler(&nodes);
    s.snapshot.upsert_pod(&bound(pod("existing", "2", "4Gi"), "a"));
    assert_eq!(place(&mut s, &pod("p", "1", "1Gi")).unwrap(), "b", "LeastAllocated prefers the emptier node");

    use keelson_scheduler::plugins::noderesources::Strategy;
    use keelson_scheduler::profile::PluginArgs;
    let args = PluginArgs { fit_strategy: Strategy::MostAllocated, ..PluginArgs::default() };
    let profile = keelson_scheduler::Profile::build(
        "default-scheduler",
        &["NodeResourcesFit"],
        &[("NodeResourcesFit", 1)],
        false,
        &args,
    )
    .unwrap();
    let mut packing = keelson_scheduler::Scheduler::new(vec![profile], 1);
    for n in &nodes {
        packing.snapshot.upsert_node(n);
    }
    packing.snapshot.upsert_pod(&bound(pod("existing", "2", "4Gi"), "a"));
    assert_eq!(place(&mut packing, &pod("p", "1", "1Gi")).unwrap(), "a", "MostAllocated packs");
}

/// Enough nodes that the score pass runs in parallel chunks, with only scorers that
/// keep their raw scores (none normalizes) or with one that normalizes beside them:
/// the one emptier node must win either way.
#[test]
fn parallel_score_passes_add_up_every_scorer() {
    use keelson_scheduler::profile::PluginArgs;
    let mut nodes: Vec<_> = (0..6000).map(|i| node(&format!("n{i}"), "4", "8Gi", json!({}))).collect();
    nodes.push(node("roomy", "64", "256Gi", json!({})));
    for scorers in [&[("NodeResourcesFit", 1)][..], &[("NodeResourcesFit", 1), ("TaintToleration", 3)]] {
        let profile = keelson_scheduler::Profile::build(
            "default-scheduler",
            &["NodeResourcesFit"],
            scorers,
            false,
            &PluginArgs::default(),
        )
        .unwrap();
        let mut s = keelson_scheduler::Scheduler::new(vec![profile], 2);
        s.set_percentage_of_nodes_to_score(100);
        for n in &nodes {
            s.snapshot.upsert_node(n);
        }
        assert_eq!(place(&mut s, &pod("p", "1", "1Gi")).unwrap(), "roomy", "{scorers:?}");
    }
}

fn zones(per_zone: usize) -> Vec<keelson_engine::k8s_openapi::api::core::v1::Node> {
    let mut nodes = Vec::new();
    for zone in ["z1", "z2", "z3"] {
        for i in 0..per_zone {
            nodes.push(node(&format!("{zone}-{i}"), "8", "32Gi", json!({"topology.kubernetes.io/zone": zone})));
        }
    }
    nodes
}

#[test]
fn hard_topology_spread_keeps_skew() {
    let mut s = scheduler(&zones(2));
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
    let mut per_zone = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..9 {
        let node =
            place(&mut s, &pod_with(&format!("w{i}"), "100m", "10Mi", json!({"app": "web"}), spread.clone())).unwrap();
        *per_zone.entry(node[..2].to_owned()).or_default() += 1;
        let (max, min) =
            (per_zone.values().max().unwrap(), if per_zone.len() < 3 { &0 } else { per_zone.values().min().unwrap() });
        assert!(max - min <= 1, "after {i}: {per_zone:?}");
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), vec![3, 3, 3]);
}

#[test]
fn hard_spread_reports_missing_labels_and_skew() {
    let mut s = scheduler(&[
        node("bare", "8", "8Gi", json!({})),
        node("z1", "8", "8Gi", json!({"topology.kubernetes.io/zone": "z1"})),
        node("z2", "1", "8Gi", json!({"topology.kubernetes.io/zone": "z2"})),
    ]);
    s.snapshot.upsert_pod(&bound(pod_with("old", "100m", "1Mi", json!({"app": "web"}), json!({})), "z1"));
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
    let message = place(&mut s, &pod_with("new", "2", "1Gi", json!({"app": "web"}), spread)).unwrap_err();
    assert!(message.contains("1 Insufficient cpu"), "{message}");
    assert!(
        message.contains("1 node(s) didn't match pod topology spread constraints (missing required label)"),
        "{message}"
    );
    assert!(message.contains("1 node(s) didn't match pod topology spread constraints, "), "{message}");
}

#[test]
fn soft_spread_prefers_emptier_domains() {
    let mut s = scheduler(&zones(1));
    for zone in ["z1", "z2"] {
        s.snapshot.upsert_pod(&bound(
            pod_with(&format!("old-{zone}"), "100m", "1Mi", json!({"app": "web"}), json!({})),
            &format!("{zone}-0"),
        ));
    }
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]});
    assert_eq!(place(&mut s, &pod_with("new", "100m", "1Mi", json!({"app": "web"}), spread)).unwrap(), "z3-0");
}

#[test]
fn system_default_spreading_uses_workload_selectors() {
    let mut s = scheduler(&zones(1));
    let selector = keelson_engine::Selector::parse("app=web").unwrap();
    s.snapshot.set_workload_selector("ReplicaSet", "default", "web", selector);
    for zone in ["z1", "z2"] {
        s.snapshot.upsert_pod(&bound(
            pod_with(&format!("old-{zone}"), "100m", "1Mi", json!({"app": "web"}), json!({})),
            &format!("{zone}-0"),
        ));
    }
    assert_eq!(place(&mut s, &pod_with("new", "100m", "1Mi", json!({"app": "web"}), json!({}))).unwrap(), "z3-0");
}

fn anti_affinity(key: &str) -> serde_json::Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": key}]}}})
}

#[test]
fn required_anti_affinity_puts_replicas_apart() {
    let mut s = scheduler(&zones(1));
    let mut used = std::collections::BTreeSet::new();
    for i in 0..3 {
        let node = place(
            &mut s,
            &pod_with(&format!("db{i}"), "100m", "1Mi", json!({"app": "db"}), anti_affinity("kubernetes.io/hostname")),
        )
        .unwrap();
        assert!(used.insert(node), "two replicas on one node");
    }
    let message =
        place(&mut s, &pod_with("db3", "100m", "1Mi", json!({"app": "db"}), anti_affinity("kubernetes.io/hostname")))
            .unwrap_err();
    assert!(message.contains("3 node(s) didn't match pod anti-affinity rules"), "{message}");
}

#[test]
fn existing_pods_anti_affinity_repels_the_incoming_pod() {
    let mut s = scheduler(&zones(1));
    // A placed pod that refuses to share its zone with app=db.
    s.snapshot.upsert_pod(&bound(
        pod_with("guard", "100m", "1Mi", json!({"app": "guard"}), anti_affinity("topology.kubernetes.io/zone")),
        "z1-0",
    ));
    let mut s2_nodes = std::collections::BTreeSet::new();
    for i in 0..6 {
        s2_nodes.insert(
            place(&mut s, &pod_with(&format!("db{i}"), "100m", "1Mi", json!({"app": "db"}), json!({}))).unwrap(),
        );
    }
    assert!(!s2_nodes.contains("z1-0"), "{s2_nodes:?}");
}

#[test]
fn required_affinity_follows_the_group_and_lets_the_first_one_start() {
    let mut s = scheduler(&zones(2));
    let affinity = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}});
    let first = place(&mut s, &pod_with("c0", "100m", "1Mi", json!({"app": "cache"}), affinity.clone())).unwrap();
    for i in 1..5 {
        let node = place(&mut s, &pod_with(&format!("c{i}"), "100m", "1Mi", json!({"app": "cache"}), affinity.clone()))
            .unwrap();
        assert_eq!(node[..2], first[..2], "same zone as the first");
    }
    // A pod with affinity to a group that does not exist and that it is not part of.
    let lonely = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "ghost"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}});
    let message = place(&mut s, &pod_with("x", "100m", "1Mi", json!({}), lonely)).unwrap_err();
    assert!(message.contains("6 node(s) didn't match pod affinity rules"), "{message}");
}

/// The cycle scans only the group's domains for a pod with required affinity, but a pod
/// that fits nowhere is explained over every node, each by its first failing filter.
#[test]
fn required_affinity_that_fits_nowhere_is_explained_over_every_node() {
    let mut s = scheduler(&zones(2));
    for node in ["z1-0", "z1-1"] {
        s.snapshot.upsert_pod(&bound(
            pod_with(&format!("on-{node}"), "7900m", "1Mi", json!({"app": "cache"}), json!({})),
            node,
        ));
    }
    let affinity = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}});
    let message = place(&mut s, &pod_with("big", "1", "1Mi", json!({"app": "cache"}), affinity.clone())).unwrap_err();
    assert!(
        message.starts_with("0/6 nodes are available: 2 Insufficient cpu, 4 node(s) didn't match pod affinity rules"),
        "{message}"
    );
    assert_eq!(&place(&mut s, &pod_with("small", "50m", "1Mi", json!({"app": "cache"}), affinity)).unwrap()[..2], "z1");
}

#[test]
fn preferred_pod_affinity_attracts() {
    let mut s = scheduler(&zones(1));
    s.snapshot.upsert_pod(&bound(pod_with("web", "100m", "1Mi", json!({"app": "web"}), json!({})), "z2-0"));
    let spec = json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}}]}}});
    assert_eq!(place(&mut s, &pod_with("p", "100m", "1Mi", json!({}), spec)).unwrap(), "z2-0");
}

#[test]
fn image_locality_prefers_nodes_with_the_image() {
    let mut with_image = node("cached", "4", "8Gi", json!({}));
    with_image.status.as_mut().unwrap().images =
        Some(vec![serde_json::from_value(json!({"names": ["registry/big:1"], "sizeBytes": 900_000_000})).unwrap()]);
    let mut s = scheduler(&[node("a", "4", "8Gi", json!({})), with_image, node("b", "4", "8Gi", json!({}))]);
    let spec = json!({"containers": [{"name": "c", "image": "registry/big:1"}]});
    assert_eq!(place(&mut s, &pod_with("p", "0", "0", json!({}), spec)).unwrap(), "cached");
}

#[test]
fn scheduling_gates_hold_the_pod() {
    let mut s = scheduler(&[node("a", "4", "8Gi", json!({}))]);
    let gated = pod_with("p", "1", "1Gi", json!({}), json!({"schedulingGates": [{"name": "example.com/wait"}]}));
    assert!(matches!(s.schedule(&gated, 0), Outcome::Gated));
}

#[test]
fn preemption_picks_the_least_important_victims() {
    let mut s = scheduler(&[node("a", "2", "8Gi", json!({})), node("b", "2", "8Gi", json!({}))]);
    let with_priority =
        |name: &str, cpu: &str, priority: i32| pod_with(name, cpu, "1Mi", json!({}), json!({"priority": priority}));
    s.snapshot.upsert_pod(&bound(with_priority("a-high", "1", 1000), "a"));
    s.snapshot.upsert_pod(&bound(with_priority("a-low", "1", 10), "a"));
    s.snapshot.upsert_pod(&bound(with_priority("b-mid1", "1", 100), "b"));
    s.snapshot.upsert_pod(&bound(with_priority("b-mid2", "1", 100), "b"));
    let Outcome::Unschedulable(failure) = s.schedule(&with_priority("urgent", "1", 500), 0) else {
        panic!("should not fit")
    };
    assert_eq!(failure.nomination, Some(("a".to_string(), vec!["default/a-low".to_string()])), "{}", failure.message);
    // The what-if left the snapshot as it was.
    assert_eq!(s.snapshot.pods.len(), 4);
    assert_eq!(s.snapshot.nodes.requested[s.snapshot.nodes.find("a").unwrap() as usize].milli_cpu, 2000);

    let never = pod_with("polite", "1", "1Mi", json!({}), json!({"priority": 500, "preemptionPolicy": "Never"}));
    let Outcome::Unschedulable(failure) = s.schedule(&never, 0) else { panic!() };
    assert!(failure.nomination.is_none());
    assert!(
        failure.message.ends_with("preemption: not eligible due to preemptionPolicy=Never."),
        "{}",
        failure.message
    );
}

#[test]
fn preemption_avoids_breaking_disruption_budgets() {
    let mut s = scheduler(&[node("a", "1", "8Gi", json!({})), node("b", "1", "8Gi", json!({}))]);
    s.snapshot.upsert_pod(&bound(pod_with("protected", "1", "1Mi", json!({"app": "db"}), json!({"priority": 1})), "a"));
    s.snapshot.upsert_pod(&bound(pod_with("free", "1", "1Mi", json!({"app": "batch"}), json!({"priority": 5})), "b"));
    s.snapshot.set_budget(
        "default",
        "db",
        Some(&serde_json::from_value(json!({"matchLabels": {"app": "db"}})).unwrap()),
        0,
    );
    let Outcome::Unschedulable(failure) =
        s.schedule(&pod_with("urgent", "1", "1Mi", json!({}), json!({"priority": 100})), 0)
    else {
        panic!()
    };
    assert_eq!(failure.nomination, Some(("b".to_string(), vec!["default/free".to_string()])));
}

#[test]
fn a_nominated_preemptor_keeps_the_room_it_made() {
    let mut s = scheduler(&[node("a", "2", "8Gi", json!({})), node("b", "2", "8Gi", json!({}))]);
    let with_priority =
        |name: &str, cpu: &str, priority: i32| pod_with(name, cpu, "1Mi", json!({}), json!({"priority": priority}));
    s.snapshot.upsert_pod(&bound(with_priority("a-low", "2", 1), "a"));
    s.snapshot.upsert_pod(&bound(with_priority("b-high", "2", 1000), "b"));
    let urgent = with_priority("urgent", "2", 500);
    let Outcome::Unschedulable(failure) = s.schedule(&urgent, 0) else { panic!("should not fit") };
    assert_eq!(failure.nomination, Some(("a".to_string(), vec!["default/a-low".to_string()])));
    let a = s.snapshot.nodes.find("a").unwrap();
    assert_eq!(s.snapshot.nomination("default/urgent"), Some(a));
    // The victim goes: the room is held for the preemptor against pods of no higher
    // priority, while a more important pod may still take it.
    s.snapshot.remove_pod("default/a-low");
    let Outcome::Unschedulable(_) = s.schedule(&with_priority("peer", "2", 500), 0) else {
        panic!("a pod of equal priority must not take the nominated room")
    };
    assert_eq!(s.snapshot.nomination("default/urgent"), Some(a), "a failed peer does not move the nomination");
    let Outcome::Scheduled(decision) = s.schedule(&urgent, 0) else { panic!("the preemptor fits on its node") };
    assert_eq!((decision.node.as_str(), decision.evaluated_nodes), ("a", 1), "its nominated node is tried first");
    assert_eq!(s.snapshot.nomination("default/urgent"), None, "placed: the nomination is spent");
}

#[test]
fn a_restarted_scheduler_takes_back_the_nominations_pods_carry() {
    // A fresh scheduler (after a restart) sees the preemptor with its
    // `status.nominatedNodeName`, while the victim's room on "a" is already free.
    let mut s = scheduler(&[node("a", "2", "8Gi", json!({})), node("b", "2", "8Gi", json!({}))]);
    let with_priority =
        |name: &str, cpu: &str, priority: i32| pod_with(name, cpu, "1Mi", json!({}), json!({"priority": priority}));
    s.snapshot.upsert_pod(&bound(with_priority("b-high", "2", 1000), "b"));
    let mut urgent = with_priority("urgent", "2", 500);
    urgent.status = Some(serde_json::from_value(json!({"nominatedNodeName": "a"})).unwrap());
    assert!(s.restore_nomination(&urgent));
    assert!(!s.restore_nomination(&urgent), "restored once");
    assert_eq!(s.snapshot.nomination("default/urgent"), s.snapshot.nodes.find("a"));
    // The room is held against a pod of no higher priority that comes first...
    let Outcome::Unschedulable(_) = s.schedule(&with_priority("peer", "2", 500), 0) else {
        panic!("a pod of equal priority must not take the room held for the preemptor")
    };
    // ...and the preemptor takes it.
    let Outcome::Scheduled(decision) = s.schedule(&urgent, 0) else { panic!("the preemptor fits on its node") };
    assert_eq!(decision.node, "a");
    // A nomination to an unknown node restores nothing.
    let mut lost = with_priority("lost", "1", 500);
    lost.status = Some(serde_json::from_value(json!({"nominatedNodeName": "gone"})).unwrap());
    assert!(!s.restore_nomination(&lost));
}

#[test]
fn a_nomination_holds_the_host_ports_of_its_preemptor() {
    let mut s = scheduler(&[node("a", "4", "8Gi", json!({}))]);
    let with_port = |name: &str, priority: i32| {
        let containers = json!([{"name": "c", "image": "pause", "ports": [{"containerPort": 80, "hostPort": 8080}],
            "resources": {"requests": {"cpu": "100m"}}}]);
        pod_with(name, "100m", "1Mi", json!({}), json!({"priority": priority, "containers": containers}))
    };
    let mut preemptor = with_port("preemptor", 500);
    preemptor.status = Some(serde_json::from_value(json!({"nominatedNodeName": "a"})).unwrap());
    assert!(s.restore_nomination(&preemptor));
    // Plenty of CPU is left, but the port is held for the preemptor...
    let Err(message) = place(&mut s, &with_port("peer", 500)) else { panic!("the held port must not be taken") };
    assert!(message.contains("didn't have free ports"), "{message}");
    // ...against pods of no higher priority only.
    assert_eq!(place(&mut s, &with_port("urgent", 1000)), Ok("a".to_string()));
}

/// A pod nominated for `node` at `priority`, with `labels` and `spec` extras.
fn nominee(
    name: &str,
    node: &str,
    priority: i32,
    labels: serde_json::Value,
    mut spec: serde_json::Value,
) -> keelson_engine::k8s_openapi::api::core::v1::Pod {
    spec["priority"] = json!(priority);
    let mut pod = pod_with(name, "100m", "1Mi", labels, spec);
    pod.status = Some(serde_json::from_value(json!({"nominatedNodeName": node})).unwrap());
    pod
}

#[test]
fn a_nomination_counts_toward_hard_topology_spread() {
    let mut s = scheduler(&zones(1));
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
    assert!(s.restore_nomination(&nominee("preemptor", "z1-0", 500, json!({"app": "web"}), json!({}))));
    let web = |name: &str| pod_with(name, "100m", "1Mi", json!({"app": "web"}), spread.clone());
    // Zone 1 counts the preemptor waiting there: the next two web pods go elsewhere...
    let first = place(&mut s, &web("w1")).unwrap();
    let second = place(&mut s, &web("w2")).unwrap();
    let mut zones_taken = [first[..2].to_owned(), second[..2].to_owned()];
    zones_taken.sort();
    assert_eq!(zones_taken, ["z2", "z3"]);
    // ...until the other zones have caught up with it: then the skew with the nominee
    // (1 + 1 - 1) is allowed as well as without it.
    assert_eq!(place(&mut s, &web("w3")).unwrap(), "z1-0");
}

#[test]
fn a_nomination_counts_toward_required_anti_affinity_both_ways() {
    let hosts = [node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({}))];
    let anti = |label: serde_json::Value| {
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": label}, "topologyKey": "kubernetes.io/hostname"}]}}})
    };
    // The incoming pod's anti-affinity toward the nominee waiting on `a`.
    let mut s = scheduler(&hosts);
    assert!(s.restore_nomination(&nominee("db", "a", 500, json!({"app": "db"}), json!({}))));
    for i in 0..3 {
        assert_eq!(
            place(&mut s, &pod_with(&format!("x{i}"), "100m", "1Mi", json!({}), anti(json!({"app": "db"})))).unwrap(),
            "b"
        );
    }
    // An anti-affinity the nominee does not match leaves `a` open (and emptier).
    assert_eq!(place(&mut s, &pod_with("other", "100m", "1Mi", json!({}), anti(json!({"app": "x"})))).unwrap(), "a");
    // The nominee's anti-affinity toward the incoming pod (which has a required term of
    // its own, so InterPodAffinity runs for it, as kube's PreFilter would).
    let mut s = scheduler(&hosts);
    assert!(s.restore_nomination(&nominee("loner", "a", 500, json!({}), anti(json!({"app": "web"})))));
    for i in 0..3 {
        let web = pod_with(&format!("w{i}"), "100m", "1Mi", json!({"app": "web"}), anti(json!({"app": "none"})));
        assert_eq!(place(&mut s, &web).unwrap(), "b");
    }
    // The nomination does not hold against a pod of higher priority: `a` is emptier.
    let mut urgent = pod_with("urgent", "100m", "1Mi", json!({"app": "web"}), anti(json!({"app": "none"})));
    urgent.spec.as_mut().unwrap().priority = Some(1000);
    assert_eq!(place(&mut s, &urgent).unwrap(), "a");
}

#[test]
fn node_affinity_naming_its_nodes_narrows_the_cycle() {
    let nodes: Vec<_> = (0..500).map(|i| node(&format!("n{i:03}"), "4", "8Gi", json!({}))).collect();
    let mut s = scheduler(&nodes);
    let pinned = |name: &str, terms: serde_json::Value| {
        pod_with(
            name,
            "1",
            "1Mi",
            json!({}),
            json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
        )
    };
    let one = json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n123"]}]}]);
    let Outcome::Scheduled(decision) = s.schedule(&pinned("daemon", one), 0) else { panic!() };
    assert_eq!((decision.node.as_str(), decision.evaluated_nodes), ("n123", 1));
    // A term without named nodes could match any node: no narrowing.
    let open = json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n007"]}]},
                      {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n009"]}]}]);
    let Outcome::Scheduled(decision) = s.schedule(&pinned("either", open), 0) else { panic!() };
    assert!(["n007", "n009"].contains(&decision.node.as_str()));
    assert!(decision.evaluated_nodes > 2, "{}", decision.evaluated_nodes);
    let missing = json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gone"]}]}]);
    assert!(matches!(s.schedule(&pinned("nowhere", missing), 0), Outcome::Unschedulable(_)));
}

#[test]
fn start_index_rotates_between_cycles() {
    // 1000 identical empty nodes: adaptive sampling looks at 420 per cycle, and the
    // start moves on, so successive pods see different nodes.
    let nodes: Vec<_> = (0..1000).map(|i| node(&format!("n{i:04}"), "64", "256Gi", json!({}))).collect();
    let mut s = scheduler(&nodes);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..10 {
        let Outcome::Scheduled(decision) = s.schedule(&pod(&format!("p{i}"), "1", "1Gi"), 0) else { panic!() };
        assert_eq!(decision.evaluated_nodes, 420, "every node fits: the scan stops at the 420th");
        assert_eq!(decision.feasible_nodes, 420);
        seen.insert(decision.node);
    }
    assert!(seen.len() >= 5, "{seen:?}");
}

/// The scan stops right after the node that completes the feasible nodes wanted, with
/// the memo (which takes whole words of rows known to pass) and without it alike: every
/// third node is too small, so 420 feasible nodes take 629 to 631 nodes to find (631
/// across the wrap from n0999 to n0000, both too small).
#[test]
fn the_filter_pass_stops_at_the_node_that_completes_the_feasible_nodes() {
    let nodes: Vec<_> = (0..1000)
        .map(|i| node(&format!("n{i:04}"), if i % 3 == 0 { "500m" } else { "64" }, "256Gi", json!({})))
        .collect();
    let runs: Vec<Vec<(String, usize)>> = [true, false]
        .iter()
        .map(|&memoise| {
            let mut s = scheduler(&nodes);
            s.set_memoise(memoise);
            (0..12)
                .map(|i| {
                    let Outcome::Scheduled(decision) = s.schedule(&pod(&format!("p{i}"), "1", "1Gi"), 0) else {
                        panic!()
                    };
                    assert_eq!(decision.feasible_nodes, 420);
                    assert!((629..=631).contains(&decision.evaluated_nodes), "{}", decision.evaluated_nodes);
                    (decision.node, decision.evaluated_nodes)
                })
                .collect()
        })
        .collect();
    assert_eq!(runs[0].iter().map(|r| r.1).collect::<Vec<_>>(), runs[1].iter().map(|r| r.1).collect::<Vec<_>>());
}

/// Enough feasible nodes wanted that the filter pass runs in parallel chunks, each
/// taking words of rows the memo knows to pass: every pod gets as many feasible nodes
/// as wanted, and a node it fits on.
#[test]
fn parallel_filter_passes_find_the_feasible_nodes_wanted() {
    let nodes: Vec<_> = (0..3000)
        .map(|i| node(&format!("n{i:04}"), if i % 10 == 0 { "500m" } else { "64" }, "256Gi", json!({})))
        .collect();
    let mut s = scheduler(&nodes);
    s.set_percentage_of_nodes_to_score(50);
    for i in 0..20 {
        let Outcome::Scheduled(decision) = s.schedule(&pod(&format!("p{i}"), "1", "1Gi"), 0) else { panic!() };
        assert_eq!(decision.feasible_nodes, 1500);
        assert!((1666..=3000).contains(&decision.evaluated_nodes), "{}", decision.evaluated_nodes);
        assert_ne!(decision.node_ix % 10, 0, "{} is too small", decision.node);
    }
}

#[test]
fn audit_compares_the_choice_with_the_best() {
    let nodes: Vec<_> =
        (0..1000).map(|i| node(&format!("n{i:04}"), if i == 999 { "64" } else { "4" }, "256Gi", json!({}))).collect();
    let mut s = scheduler(&nodes);
    s.set_audit_every(1);
    s.set_percentage_of_nodes_to_score(10);
    let Outcome::Scheduled(decision) = s.schedule(&pod("p", "1", "1Gi"), 0) else { panic!() };
    let audit = decision.audit.expect("audited");
    assert_eq!(audit.feasible_nodes, 1000);
    assert!(audit.best_score >= audit.chosen_score);
    assert!(audit.quality() > 0.0 && audit.quality() <= 1.0);
}

#[test]
fn bound_volumes_pin_their_pods_to_the_nodes_they_allow() {
    use keelson_engine::k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let zone = |name: &str, zone: &str| node(name, "4", "8Gi", json!({"topology.kubernetes.io/zone": zone}));
    let mut s = scheduler(&[zone("a1", "a"), zone("b1", "b"), zone("b2", "b"), zone("c1", "c")]);
    let claim = |name: &str, volume: Option<&str>| -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"volumeName": volume, "accessModes": ["ReadWriteOnce"]}
        }))
        .unwrap()
    };
    let volume = |name: &str, zones: &[&str]| -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones}]}
            ]}}}
        }))
        .unwrap()
    };
    let using = |name: &str, claims: &[&str]| {
        let volumes: Vec<_> =
            claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect();
        pod_with(name, "100m", "100Mi", json!({}), json!({"volumes": volumes}))
    };
    s.snapshot.upsert_volume(&volume("in-b", &["b"]));
    s.snapshot.upsert_volume(&volume("in-b-or-c", &["b", "c"]));
    s.snapshot.upsert_claim(&claim("data", Some("in-b")));
    s.snapshot.upsert_claim(&claim("cache", Some("in-b-or-c")));
    // Every volume's affinity holds on the chosen node.
    for name in ["p1", "p2", "p3"] {
        let placed = place(&mut s, &using(name, &["data", "cache"])).unwrap();
        assert!(placed.starts_with('b'), "{name} went to {placed}");
    }
    // A volume that allows no node of the cluster.
    s.snapshot.upsert_volume(&volume("in-z", &["z"]));
    s.snapshot.upsert_claim(&claim("far", Some("in-z")));
    let message = place(&mut s, &using("far-away", &["far"])).unwrap_err();
    assert!(message.starts_with("0/4 nodes are available: 4 node(s) had volume node affinity conflict."), "{message}");
    // Claims that block the pod everywhere, with kube's words.
    let message = place(&mut s, &using("nothing", &["absent"])).unwrap_err();
    assert!(message.contains("persistentvolumeclaim \"absent\" not found"), "{message}");
    // A claim not bound yet does not constrain the pod (no StorageClasses here: it is
    // treated as of a WaitForFirstConsumer class, bound after scheduling).
    s.snapshot.upsert_claim(&claim("pending", None));
    place(&mut s, &using("unbound", &["pending"])).unwrap();
    let deleting: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {
        "name": "leaving", "namespace": "default", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x"]
    }}))
    .unwrap();
    s.snapshot.upsert_claim(&deleting);
    let message = place(&mut s, &using("leaving", &["leaving"])).unwrap_err();
    assert!(message.contains("persistentvolumeclaim \"leaving\" is being deleted"), "{message}");
    s.snapshot.upsert_claim(&claim("dangling", Some("never-made")));
    let message = place(&mut s, &using("dangling", &["dangling"])).unwrap_err();
    assert!(
        message.contains("4 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"),
        "{message}"
    );
    // Once its volume exists, the pod fits; a volume without affinity allows every node.
    s.snapshot.upsert_volume(&serde_json::from_value(json!({"metadata": {"name": "never-made"}})).unwrap());
    place(&mut s, &using("dangling", &["dangling"])).unwrap();
}

#[test]
fn a_read_write_once_pod_claim_serves_one_pod_at_a_time() {
    use keelson_engine::k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let mut s = scheduler(&[node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({}))]);
    let claim = |name: &str, mode: &str| -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"accessModes": [mode]}}),
        )
        .unwrap()
    };
    s.snapshot.upsert_claim(&claim("solo", "ReadWriteOncePod"));
    s.snapshot.upsert_claim(&claim("shared", "ReadWriteOnce"));
    let using = |name: &str, claim: &str| {
        let volumes = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
        pod_with(name, "100m", "100Mi", json!({}), json!({"volumes": volumes}))
    };
    place(&mut s, &using("first", "solo")).unwrap();
    let message = place(&mut s, &using("second", "solo")).unwrap_err();
    assert!(
        message.starts_with(
            "0/2 nodes are available: 2 node has pod using PersistentVolumeClaim with the same name and \
             ReadWriteOncePod access mode."
        ),
        "{message}"
    );
    // Other access modes are not limited to one pod.
    place(&mut s, &using("one", "shared")).unwrap();
    place(&mut s, &using("two", "shared")).unwrap();
    // Once the holder is gone, the claim is free again.
    s.snapshot.remove_pod("default/first");
    place(&mut s, &using("second", "solo")).unwrap();
}

#[test]
fn sampled_cycles_time_each_plugin_call() {
    use keelson_scheduler::framework::Code;
    use keelson_scheduler::timing::Point;
    let mut s = scheduler(&[node("small", "1", "1Gi", json!({})), node("big", "8", "32Gi", json!({}))]);
    s.set_plugin_sample_every(2);
    let name_of = |s: &keelson_scheduler::Scheduler, plugin: u16| {
        s.profiles().next().expect("a profile").plugins[usize::from(plugin)].name()
    };
    // The first cycle is sampled: every filter and scorer that ran is timed once.
    assert!(place(&mut s, &pod("p1", "100m", "100Mi")).is_ok());
    let samples = s.last_points.plugins().to_vec();
    let timed = |point: Point, plugin: &str| {
        samples
            .iter()
            .filter(|x| x.point == point && name_of(&s, x.plugin) == plugin)
            .map(|x| x.code)
            .collect::<Vec<_>>()
    };
    assert_eq!(timed(Point::PreFilter, "NodeResourcesFit"), [Code::Success]);
    assert_eq!(timed(Point::Filter, "NodeResourcesFit"), [Code::Success]);
    assert_eq!(timed(Point::PreScore, "NodeResourcesBalancedAllocation"), [Code::Success]);
    assert_eq!(timed(Point::Score, "NodeResourcesBalancedAllocation"), [Code::Success]);
    // A pod without tolerations or affinity skips those plugins' PreFilter.
    assert_eq!(timed(Point::PreFilter, "InterPodAffinity"), [Code::Skip]);
    assert!(timed(Point::Filter, "InterPodAffinity").is_empty(), "a skipped filter is not called");
    // The second is not sampled; the third is, and a pod that fits nowhere has its
    // filters timed on a node they reject.
    assert!(place(&mut s, &pod("p2", "100m", "100Mi")).is_ok());
    assert!(s.last_points.plugins().is_empty());
    assert!(place(&mut s, &pod("p3", "64", "100Mi")).is_err());
    let samples = s.last_points.plugins().to_vec();
    let fit = samples.iter().find(|x| x.point == Point::Filter && name_of(&s, x.plugin) == "NodeResourcesFit");
    assert_eq!(fit.map(|x| x.code), Some(Code::Unschedulable));
    assert!(samples.iter().all(|x| x.point != Point::Score), "nothing to score");
}
