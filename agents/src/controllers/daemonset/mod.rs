//! The DaemonSet controller: one pod on every node the template admits (node
//! selector, required node affinity, taints against the template's tolerations plus
//! the daemon ones). A pod is pinned to its node by node affinity and placed by the
//! scheduler, as kube does.
//!
//! Each reconcile: claim pods; record the template as a ControllerRevision (what
//! `kubectl rollout history daemonset` lists); per node create the missing pod,
//! delete failed, surplus (the newest) and misplaced ones; then, with
//! `RollingUpdate`, replace pods of an old template while at most `maxUnavailable`
//! nodes lack an available daemon; `OnDelete` replaces a pod only once someone
//! deletes it. Pods carry `controller-revision-hash` (the template's hash) and
//! `pod-template-generation`.

pub mod placement;

use super::batch::{slow_start, BURST};
use super::deployment::revision::template_hash;
use super::deployment::rollout::scaled_value;
use super::history::History;
use super::ownership::{controller_key, enqueue_selecting, Claimer};
use super::pods::{self, controller_reference};
use super::runtime::expectations::Expectations;
use super::runtime::queue::WorkQueue;
use super::runtime::{
    ignore_not_found, object_key, split_key, status_patch, Action, Cache, Change, Informers, ReconcileError, Reconciler,
};
use crate::events::Recorder;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use keelson_engine::Selector;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use placement::{daemon_tolerations, pin_to_node, placement, target_node};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub use super::history::REVISION_HASH_LABEL;
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

pub struct DaemonSetController {
    client: Client,
    sets: Arc<Cache<DaemonSet>>,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
    revisions: Arc<Cache<ControllerRevision>>,
    expectations: Arc<Expectations>,
    events: Recorder,
}

fn selector_of(set: &DaemonSet) -> Option<Selector> {
    set.spec.as_ref().and_then(|s| Selector::from_label_selector(&s.selector).ok())
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(REVISION_HASH_LABEL).map(String::as_str)
}

impl DaemonSetController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let sets = informers.get::<DaemonSet>();
        let pods = informers.get::<Pod>();
        let nodes = informers.get::<Node>();
        let controller = Arc::new(DaemonSetController {
            client: informers.client().clone(),
            sets: sets.cache(),
            pods: pods.cache(),
            nodes: nodes.cache(),
            revisions: informers.get::<ControllerRevision>().cache(),
            expectations: Arc::new(Expectations::default()),
            events: informers.recorder("daemonset-controller"),
        });
        let (q, expectations) = (Arc::clone(queue), Arc::clone(&controller.expectations));
        sets.on_change(move |change| {
            let key = object_key(change.object().as_ref());
            if let Change::Deleted(_) = change {
                expectations.forget(&key);
            }
            q.add(&key);
        });
        let (q, owners, expectations) = (Arc::clone(queue), sets.cache(), Arc::clone(&controller.expectations));
        pods.on_change(move |change| {
            let pod = change.object();
            let owner = controller_key(&owners, "DaemonSet", &pod.metadata);
            match (change, &owner) {
                (Change::Added(_), Some(key)) if pod.metadata.deletion_timestamp.is_none() => {
                    expectations.creation_observed(key)
                }
                (Change::Deleted(_), Some(key)) => {
                    expectations.deletion_observed(key, pod.metadata.uid.as_deref().unwrap_or_default())
                }
                (Change::Updated { old, new }, Some(key))
                    if old.metadata.deletion_timestamp.is_none() && new.metadata.deletion_timestamp.is_some() =>
                {
                    expectations.deletion_observed(key, new.metadata.uid.as_deref().unwrap_or_default())
                }
                _ => {}
            }
            match owner {
                Some(key) => q.add(&key),
                None if pods::controller_of(&pod.metadata).is_none() => {
                    enqueue_selecting(&owners, &q, &pod.metadata, selector_of)
                }
                None => {}
            }
        });
        // A node added, relabelled or retainted may change where daemons belong.
        let (q, owners) = (Arc::clone(queue), sets.cache());
        nodes.on_change(move |change| {
            let relevant = match change {
                Change::Updated { old, new } => {
                    old.metadata.labels != new.metadata.labels
                        || old.spec.as_ref().map(|s| &s.taints) != new.spec.as_ref().map(|s| &s.taints)
                }
                _ => true,
            };
            if relevant {
                for set in owners.list() {
                    q.add(&object_key(set.as_ref()));
                }
            }
        });
        controller
    }
}

/// Per node: what to create and delete, and the counts status reports.
#[derive(Debug, Default)]
struct NodePlan {
    create_on: Vec<String>,
    delete: Vec<Arc<Pod>>,
    /// Old-template pods by node, for the rolling update.
    outdated: Vec<Arc<Pod>>,
    desired: i32,
    scheduled: i32,
    misscheduled: i32,
    ready: i32,
    available: i32,
    updated: i32,
}

fn plan_nodes(set: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>], hash: &str, now: Timestamp) -> NodePlan {
    let spec = set.spec.as_ref().expect("checked by the caller");
    let template = spec.template.spec.clone().unwrap_or_default();
    let tolerations = daemon_tolerations(&template);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: HashMap<&str, Vec<&Arc<Pod>>> = HashMap::new();
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        if let Some(node) = target_node(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    let mut plan = NodePlan::default();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let here = by_node.remove(name).unwrap_or_default();
        let placement = placement(&template, &tolerations, node);
        if placement.should_run {
            plan.desired += 1;
        }
        if placement.should_run || (placement.may_continue && !here.is_empty()) {
            // Failed pods go (and come back); of several, the oldest stays.
            let (failed, mut running): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
                here.into_iter().partition(|p| pods::phase(p) == "Failed");
            plan.delete.extend(failed.into_iter().cloned());
            running.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.metadata.name.clone()));
            if running.len() > 1 {
                plan.delete.extend(running.drain(1..).cloned());
            }
            match running.first() {
                None if placement.should_run => plan.create_on.push(name.to_string()),
                None => {}
                Some(pod) => {
                    if placement.should_run {
                        plan.scheduled += 1;
                    } else {
                        plan.misscheduled += 1;
                    }
                    if pods::is_ready(pod) {
                        plan.ready += 1;
                    }
                    if pods::is_available(pod, min_ready, now) {
                        plan.available += 1;
                    }
                    if pod_hash(pod) == Some(hash) {
                        plan.updated += 1;
                    } else {
                        plan.outdated.push(Arc::clone(pod));
                    }
                }
            }
        } else if !here.is_empty() {
            plan.misscheduled += 1;
            plan.delete.extend(here.into_iter().cloned());
        }
    }
    // Pods for nodes that no longer exist.
    plan.delete.extend(by_node.into_values().flatten().cloned());
    plan
}

/// Of the outdated pods, those a rolling update replaces now: every unavailable one
/// (replacing it costs nothing), then available ones while the unavailable count
/// stays within `max_unavailable`.
fn rolling_replacements(plan: &NodePlan, max_unavailable: i32, min_ready: i32, now: Timestamp) -> Vec<Arc<Pod>> {
    let unavailable = plan.desired - plan.available;
    let (down, up): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
        plan.outdated.iter().partition(|p| !pods::is_available(p, min_ready, now));
    let budget = (max_unavailable - unavailable).max(0) as usize;
    down.into_iter().chain(up.into_iter().take(budget)).cloned().collect()
}

impl Reconciler for DaemonSetController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(set) = self.sets.get(key) else { return Ok(Action::Done) };
        let Some(spec) = set.spec.as_ref() else { return Ok(Action::Done) };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(selector) = selector_of(&set) else { return Ok(Action::Done) };
        let (namespace, name) = split_key(key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let claimer = Claimer { owner: &set.metadata, api_version: "apps/v1", kind: "DaemonSet", selector: &selector };
        let owned = claimer.claim_from(&api, &self.pods).await?;
        let hash = template_hash(&spec.template, set.status.as_ref().and_then(|s| s.collision_count));
        let history = History {
            client: &self.client,
            revisions: &self.revisions,
            owner: &set.metadata,
            kind: "DaemonSet",
            limit: spec.revision_history_limit.unwrap_or(10).max(0) as usize,
        };
        let live: Vec<&str> = owned.iter().filter_map(|p| pod_hash(p)).collect();
        history.record(&spec.template, &hash, &live).await?;

        let now = Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let mut nodes = self.nodes.list();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let plan = plan_nodes(&set, &nodes, &owned, &hash, now);
        if self.expectations.satisfied(key) {
            let mut delete = plan.delete.clone();
            let strategy = spec.update_strategy.as_ref();
            if strategy.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate" {
                let max_unavailable = strategy
                    .and_then(|s| s.rolling_update.as_ref()?.max_unavailable.as_ref())
                    .map_or(1, |m| scaled_value(m, plan.desired, true))
                    .max(1);
                delete.extend(rolling_replacements(&plan, max_unavailable, min_ready, now));
            }
            self.create_pods(key, &set, &hash, &plan.create_on).await?;
            self.delete_pods(key, &set, &api, &delete).await?;
        }
        let generation = set.metadata.generation;
        let status = DaemonSetStatus {
            collision_count: set.status.as_ref().and_then(|s| s.collision_count),
            conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
            current_number_scheduled: plan.scheduled,
            desired_number_scheduled: plan.desired,
            number_available: (plan.available > 0).then_some(plan.available),
            number_misscheduled: plan.misscheduled,
            number_ready: plan.ready,
            number_unavailable: (plan.desired - plan.available > 0).then_some(plan.desired - plan.available),
            observed_generation: generation,
            updated_number_scheduled: (plan.updated > 0).then_some(plan.updated),
        };
        if set.status.as_ref() != Some(&status) {
            let sets: Api<DaemonSet> = Api::namespaced(self.client.clone(), namespace);
            let patch = status_patch(set.status.as_ref(), &status);
            ignore_not_found(sets.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await)?;
        }
        // Ready pods become available minReadySeconds later.
        if min_ready > 0 && plan.ready > plan.available {
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        }
        Ok(Action::Done)
    }
}

impl DaemonSetController {
    async fn create_pods(&self, key: &str, set: &DaemonSet, hash: &str, nodes: &[String]) -> Result<(), kube::Error> {
        let nodes = &nodes[..nodes.len().min(BURST)];
        if nodes.is_empty() {
            return Ok(());
        }
        let (namespace, name) = split_key(key);
        let spec = set.spec.as_ref().expect("checked by the caller");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let owner = controller_reference("apps/v1", "DaemonSet", &set.metadata);
        let mut base = pods::pod_from_template(&spec.template, namespace, name, owner);
        let labels = base.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(REVISION_HASH_LABEL.into(), hash.into());
        if let Some(generation) = set.metadata.generation {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
        }
        self.expectations.expect(key, nodes.len(), []);
        let (created, error) = slow_start(nodes.len(), |i| {
            let mut pod = base.clone();
            pin_to_node(pod.spec.get_or_insert_with(Default::default), &nodes[i]);
            let api = &api;
            async move { pods::create_for(api, &pod, set, &self.events).await }
        })
        .await;
        for _ in created..nodes.len() {
            self.expectations.creation_observed(key);
        }
        error.map_or(Ok(()), Err)
    }

    async fn delete_pods(
        &self,
        key: &str,
        set: &DaemonSet,
        api: &Api<Pod>,
        doomed: &[Arc<Pod>],
    ) -> Result<(), kube::Error> {
        let doomed = &doomed[..doomed.len().min(BURST)];
        if doomed.is_empty() {
            return Ok(());
        }
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        self.expectations.expect(key, 0, doomed.iter().map(|p| uid(p)));
        let mut first_error = None;
        for pod in doomed {
            if let Err(error) = pods::delete_for(api, pod, set, &self.events).await {
                self.expectations.deletion_observed(key, &uid(pod));
                if super::runtime::api_code(&error) != Some(404) {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn set() -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "ds", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}
        }))
        .unwrap()
    }

    fn node(name: &str, taint: Option<&str>) -> Arc<Node> {
        let taints = taint.map(|effect| serde_json::json!([{"key": "k", "effect": effect}])).unwrap_or_default();
        Arc::new(
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {"taints": taints}}))
                .unwrap(),
        )
    }

    fn daemon(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.labels = Some(BTreeMap::from([(REVISION_HASH_LABEL.to_string(), hash.to_string())]));
        let mut spec = k8s_openapi::api::core::v1::PodSpec::default();
        pin_to_node(&mut spec, node);
        pod.spec = Some(spec);
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(pod)
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let nodes = [node("a", None), node("b", None), node("c", Some("NoSchedule")), node("d", Some("NoExecute"))];
        let pods = [
            daemon("p1", "a", "h", true),
            daemon("p2", "a", "h", true),
            daemon("p3", "d", "h", true),
            daemon("p4", "gone", "h", true),
        ];
        let plan = plan_nodes(&set(), &nodes, &pods, "h", Timestamp::now());
        assert_eq!(plan.create_on, ["b"]);
        let deleted: Vec<_> = plan.delete.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(deleted, ["p2", "p3", "p4"], "a surplus pod, one on a NoExecute node, one on a deleted node");
        assert_eq!((plan.desired, plan.scheduled, plan.misscheduled, plan.ready), (2, 1, 1, 1));
    }

    #[test]
    fn rolling_updates_replace_within_max_unavailable() {
        let nodes: Vec<_> = ["a", "b", "c", "d"].iter().map(|n| node(n, None)).collect();
        let pods = [
            daemon("p1", "a", "old", true),
            daemon("p2", "b", "old", true),
            daemon("p3", "c", "old", false),
            daemon("p4", "d", "new", true),
        ];
        let plan = plan_nodes(&set(), &nodes, &pods, "new", Timestamp::now());
        assert_eq!((plan.updated, plan.outdated.len()), (1, 3));
        // One node already unavailable (c): with maxUnavailable 2, c's pod and one more go.
        let replaced: Vec<_> = rolling_replacements(&plan, 2, 0, Timestamp::now())
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(replaced, ["p3", "p1"]);
        assert_eq!(rolling_replacements(&plan, 1, 0, Timestamp::now()).len(), 1, "only the unavailable one");
    }

    #[tokio::test]
    async fn reconcile_places_one_pinned_pod_per_eligible_node() {
        use crate::controllers::fake::Rig;
        let rig = Rig::new();
        let controller = DaemonSetController::register(&rig.informers, &rig.queue);
        let mut daemon = set();
        daemon.metadata.uid = None;
        rig.fake.insert(&daemon);
        for (name, taint) in [("n1", None), ("n2", Some("NoSchedule")), ("n3", None)] {
            rig.fake.insert(&*node(name, taint));
        }
        rig.sync::<DaemonSet>();
        rig.sync::<Node>();
        rig.sync::<Pod>();
        rig.sync::<ControllerRevision>();
        controller.reconcile("kube-system/agent").await.expect("reconciled");
        let writes = rig.writes();
        assert!(writes.iter().any(|w| w.starts_with("create controllerrevisions agent-")), "{writes:?}");
        let mut pinned: Vec<String> =
            rig.fake.list::<Pod>().iter().filter_map(|p| target_node(p).map(str::to_string)).collect();
        pinned.sort();
        assert_eq!(pinned, ["n1", "n3"], "the NoSchedule-tainted node is not eligible");
        let status = rig.fake.get::<DaemonSet>("kube-system", "agent").and_then(|d| d.status).expect("a status");
        assert_eq!(status.desired_number_scheduled, 2);
    }
}
