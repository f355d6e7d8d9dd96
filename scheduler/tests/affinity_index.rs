//! Property: the snapshot's affinity index always holds what a scan of the placed pods
//! gives. A random cluster sees a random stream of events (pods with random inter-pod
//! affinity and topology spread constraints scheduled, their binds observed, pods deleted, nodes relabelled, removed and
//! re-added, namespace labels changed); after each, every kept selection's per-node
//! counts and every carried term's carriers per node are checked against a fresh count.

mod common;

use common::*;
use keelson_engine::k8s_openapi::api::core::v1::{Namespace, Pod};
use keelson_scheduler::snapshot::affinity_index::{CarriedTerm, PodView, Role};
use keelson_scheduler::snapshot::NO_NODE;
use keelson_scheduler::{Outcome, Profile, Scheduler, Snapshot};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Clone, Debug)]
struct TermSpec {
    app: u8,
    /// Zone (else hostname) topology.
    zone: bool,
    /// A namespace selector on `team` rather than the pod's own namespace.
    team: Option<u8>,
}

#[derive(Clone, Debug)]
struct ClassSpec {
    app: u8,
    namespace: u8,
    affinity: Option<TermSpec>,
    anti: Option<TermSpec>,
    preferred: Option<(i32, TermSpec)>,
    preferred_anti: Option<(i32, TermSpec)>,
    /// A spread constraint: hard, on zones (else hostnames), over pods of app `a{N}`.
    spread: Option<(bool, bool, u8)>,
}

#[derive(Clone, Debug)]
enum Event {
    Schedule(usize),
    ObserveBind(usize),
    DeletePod(usize),
    Relabel(usize, u8),
    RemoveNode(usize),
    Team(u8, u8),
}

fn term_strategy() -> impl Strategy<Value = TermSpec> {
    (0u8..3, any::<bool>(), proptest::option::weighted(0.3, 0u8..2)).prop_map(|(app, zone, team)| TermSpec {
        app,
        zone,
        team,
    })
}

fn class_strategy() -> impl Strategy<Value = ClassSpec> {
    (
        0u8..3,
        0u8..2,
        proptest::option::weighted(0.5, term_strategy()),
        proptest::option::weighted(0.3, term_strategy()),
        proptest::option::weighted(0.3, (1i32..100, term_strategy())),
        proptest::option::weighted(0.3, (1i32..100, term_strategy())),
        proptest::option::weighted(0.4, (any::<bool>(), any::<bool>(), 0u8..3)),
    )
        .prop_map(|(app, namespace, affinity, anti, preferred, preferred_anti, spread)| ClassSpec {
            app,
            namespace,
            affinity,
            anti,
            preferred,
            preferred_anti,
            spread,
        })
}

fn event_strategy(nodes: usize, classes: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (0..classes).prop_map(Event::Schedule),
        3 => any::<usize>().prop_map(Event::ObserveBind),
        2 => any::<usize>().prop_map(Event::DeletePod),
        1 => (0..nodes, 0u8..3).prop_map(|(n, zone)| Event::Relabel(n, zone)),
        1 => (0..nodes).prop_map(Event::RemoveNode),
        1 => (0u8..2, 0u8..2).prop_map(|(ns, team)| Event::Team(ns, team)),
    ]
}

fn wire_term(term: &TermSpec) -> Value {
    let mut wire = json!({
        "labelSelector": {"matchLabels": {"app": format!("a{}", term.app)}},
        "topologyKey": if term.zone { "zone" } else { "kubernetes.io/hostname" },
    });
    if let Some(team) = term.team {
        wire["namespaceSelector"] = json!({"matchLabels": {"team": format!("t{team}")}});
    }
    wire
}

fn build_pod(i: usize, class: &ClassSpec) -> Pod {
    let mut pod_affinity = json!({});
    let mut anti_affinity = json!({});
    if let Some(term) = &class.affinity {
        pod_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = json!([wire_term(term)]);
    }
    if let Some((weight, term)) = &class.preferred {
        pod_affinity["preferredDuringSchedulingIgnoredDuringExecution"] =
            json!([{"weight": weight, "podAffinityTerm": wire_term(term)}]);
    }
    if let Some(term) = &class.anti {
        anti_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = json!([wire_term(term)]);
    }
    if let Some((weight, term)) = &class.preferred_anti {
        anti_affinity["preferredDuringSchedulingIgnoredDuringExecution"] =
            json!([{"weight": weight, "podAffinityTerm": wire_term(term)}]);
    }
    let mut spec = json!({"affinity": {"podAffinity": pod_affinity, "podAntiAffinity": anti_affinity}});
    if let Some((hard, zone, app)) = class.spread {
        spec["topologySpreadConstraints"] = json!([{
            "maxSkew": 2,
            "topologyKey": if zone { "zone" } else { "kubernetes.io/hostname" },
            "whenUnsatisfiable": if hard { "DoNotSchedule" } else { "ScheduleAnyway" },
            "labelSelector": {"matchLabels": {"app": format!("a{app}")}},
        }]);
    }
    let mut pod = pod_with(&format!("p{i}"), "10m", "10Mi", json!({"app": format!("a{}", class.app)}), spec);
    pod.metadata.namespace = Some(format!("ns{}", class.namespace));
    pod
}

fn namespace(ns: u8, team: u8) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": format!("ns{ns}"), "labels": {"team": format!("t{team}")}}}))
        .unwrap()
}

fn zone_node(i: usize, zone: u8) -> keelson_engine::k8s_openapi::api::core::v1::Node {
    node(&format!("n{i}"), "64", "64Gi", json!({"zone": format!("z{zone}")}))
}

/// The index against a fresh count of the placed pods.
fn check(snapshot: &Snapshot) -> Result<(), TestCaseError> {
    let pods = &snapshot.pods;
    let placed: Vec<usize> = (0..pods.rows()).filter(|&row| pods.node[row] != NO_NODE).collect();
    let view = |row: usize| PodView {
        namespace: pods.namespace[row],
        labels: &pods.labels[row],
        namespace_labels: snapshot.namespace_labels(pods.namespace[row]),
        affinity: None,
    };
    for (targets, per_node) in snapshot.affinity.selections() {
        let mut expected = vec![0u32; snapshot.nodes.rows()];
        for &row in &placed {
            let pod = view(row);
            let all = targets
                .iter()
                .all(|&t| snapshot.affinity.targets(t).selects(pod.namespace, pod.labels, pod.namespace_labels));
            if all {
                expected[pods.node[row] as usize] += 1;
            }
        }
        for (node, &want) in expected.iter().enumerate() {
            let have = per_node.get(node).copied().unwrap_or(0);
            prop_assert_eq!(have, want, "selection {:?} on node {}", targets, node);
        }
    }
    let mut expected: HashMap<CarriedTerm, HashMap<u32, u32>> = HashMap::new();
    for &row in &placed {
        let Some(terms) = pods.affinity[row].as_deref() else { continue };
        let roles = terms
            .required_affinity
            .iter()
            .map(|t| (Role::RequiredAffinity, t))
            .chain(terms.required_anti_affinity.iter().map(|t| (Role::RequiredAnti, t)))
            .chain(terms.preferred_affinity.iter().map(|w| (Role::Preferred(w.weight), &w.term)))
            .chain(terms.preferred_anti_affinity.iter().map(|w| (Role::PreferredAnti(w.weight), &w.term)));
        for (role, term) in roles {
            let key = CarriedTerm { role, targets: term.targets, topology: term.topology };
            *expected.entry(key).or_default().entry(pods.node[row]).or_default() += 1;
        }
    }
    let have: HashMap<CarriedTerm, HashMap<u32, u32>> =
        snapshot.affinity.carried().map(|(term, carriers)| (*term, carriers.clone())).collect();
    prop_assert_eq!(have, expected);
    Ok(())
}

/// InterPodAffinity's PreFilter may name the only nodes its Filter can pass (the cycle
/// then scans those alone): every node the Filter passes must be among them.
fn check_candidates(snapshot: &mut Snapshot, pod: &Pod) -> Result<(), String> {
    use keelson_scheduler::framework::Plugin;
    use keelson_scheduler::plugins::inter_pod_affinity::InterPodAffinity;
    use keelson_scheduler::query::{compile, DefaultSpread};
    let query = compile(pod, snapshot, &DefaultSpread::Disabled);
    snapshot.track_selections(&query);
    let plugin = InterPodAffinity::default();
    let prepared = plugin.pre_filter(&query, snapshot).map_err(|e| e.to_string())?;
    let Some(candidates) = prepared.candidates else { return Ok(()) };
    if prepared.skip {
        return Err("a skipped PreFilter named candidates".into());
    }
    if !candidates.windows(2).all(|w| w[0] < w[1]) {
        return Err(format!("candidates not ascending: {candidates:?}"));
    }
    for node in 0..snapshot.nodes.rows() as u32 {
        let passes = plugin.filter(&prepared.state, &query, snapshot, node).is_ok();
        if snapshot.nodes.live[node as usize] && passes && !candidates.contains(&node) {
            return Err(format!("node {node} passes the filter but is not a candidate ({candidates:?})"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn the_affinity_index_matches_a_scan(
        (zones, classes, events) in (4usize..12, 1usize..5).prop_flat_map(|(n, c)| (
            proptest::collection::vec(0u8..3, n),
            proptest::collection::vec(class_strategy(), c),
            proptest::collection::vec(event_strategy(n, c), 30..120),
        ))
    ) {
        let mut scheduler = Scheduler::new(vec![Profile::default_profile()], 1);
        for ns in 0..2 {
            scheduler.snapshot.upsert_namespace(&namespace(ns, ns));
        }
        for (i, &zone) in zones.iter().enumerate() {
            scheduler.snapshot.upsert_node(&zone_node(i, zone));
        }
        let mut placed: Vec<(Pod, String)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match event {
                Event::Schedule(class) => {
                    let pod = build_pod(i, &classes[*class]);
                    check_candidates(&mut scheduler.snapshot, &pod)
                        .map_err(|e| TestCaseError::fail(format!("before event {i} {event:?}: {e}")))?;
                    if let Outcome::Scheduled(decision) = scheduler.schedule(&pod, 0) {
                        placed.push((pod, decision.node));
                    }
                }
                Event::ObserveBind(k) if !placed.is_empty() => {
                    let (pod, node) = &placed[k % placed.len()];
                    scheduler.snapshot.upsert_pod(&bound(pod.clone(), node));
                }
                Event::DeletePod(k) if !placed.is_empty() => {
                    let (pod, _) = placed.swap_remove(k % placed.len());
                    let key = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap(), pod.metadata.name.as_deref().unwrap());
                    scheduler.snapshot.remove_pod(&key);
                }
                Event::ObserveBind(_) | Event::DeletePod(_) => {}
                Event::Relabel(n, zone) => scheduler.snapshot.upsert_node(&zone_node(*n, *zone)),
                Event::RemoveNode(n) => {
                    let name = format!("n{n}");
                    scheduler.snapshot.remove_node(&name);
                    placed.retain(|(_, node)| *node != name);
                    // Back at once, empty (a node agent re-registering).
                    scheduler.snapshot.upsert_node(&zone_node(*n, zones[*n]));
                }
                Event::Team(ns, team) => scheduler.snapshot.upsert_namespace(&namespace(*ns, *team)),
            }
            check(&scheduler.snapshot).map_err(|e| TestCaseError::fail(format!("after event {i} {event:?}: {e}")))?;
        }
    }
}
