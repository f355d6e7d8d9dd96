//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! foreground and orphan deletion policies.
//!
//! It keeps a graph of owner references across the kinds it watches (uid → the
//! object's kind, name, owners and deletion state; owner uid → dependents), built
//! from the shared informers. Work is keyed by uid:
//! - an object whose owners are all gone is deleted (in the foreground if an owner is
//!   itself waiting in the foreground); one with some owners left loses the
//!   references to the missing ones. An owner not in the graph is looked up through
//!   the API before it is declared gone, and the object's own references are read
//!   again before it is written, so a lagging watch never costs a live child;
//! - an owner deleted with `orphan` has its dependents' references to it removed, then
//!   the `orphan` finalizer;
//! - an owner deleted with `foregroundDeletion` has its dependents deleted, and keeps
//!   the finalizer until no dependent that blocks owner deletion remains.
//!
//! Background deletion needs no step of its own: the server deletes the owner at
//! once, and its dependents then have a missing owner.

use super::runtime::queue::WorkQueue;
use super::runtime::{ignore_not_found, Action, Change, Informers, ReconcileError, Reconciler, Watched};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// Kinds that are cluster-scoped, for looking up an owner the graph lacks.
const CLUSTER_SCOPED: &[&str] =
    &["Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"];

/// One object in the graph.
#[derive(Clone, Debug)]
struct Node {
    resource: Arc<ApiResource>,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn upsert(&mut self, uid: &str, node: Node) -> Option<Node> {
        let old = self.nodes.insert(uid.to_string(), node.clone());
        if let Some(old) = &old {
            self.unlink(uid, old);
        }
        for owner in &node.owners {
            self.dependents.entry(owner.uid.clone()).or_default().insert(uid.to_string());
        }
        old
    }

    fn unlink(&mut self, uid: &str, node: &Node) {
        for owner in &node.owners {
            if let Some(set) = self.dependents.get_mut(&owner.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
        }
    }

    fn remove(&mut self, uid: &str) -> Option<Node> {
        let node = self.nodes.remove(uid)?;
        self.unlink(uid, &node);
        Some(node)
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }
}

pub struct GarbageCollector {
    client: Client,
    graph: Arc<Mutex<Graph>>,
}

fn node_of(resource: &Arc<ApiResource>, meta: &ObjectMeta) -> Node {
    Node {
        resource: Arc::clone(resource),
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        owners: meta.owner_references.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    }
}

/// Feeds one kind's changes into the graph and the queue.
fn watch_kind<K: Watched>(informers: &Informers, graph: &Arc<Mutex<Graph>>, queue: &Arc<WorkQueue>) {
    let resource = Arc::new(ApiResource::erase::<K>(&()));
    let (graph, queue) = (Arc::clone(graph), Arc::clone(queue));
    informers.get::<K>().on_change(move |change| {
        let meta = change.object().meta();
        let Some(uid) = meta.uid.clone() else { return };
        let mut graph = graph.lock();
        if let Change::Deleted(_) = change {
            if let Some(node) = graph.remove(&uid) {
                // Its dependents lost an owner; a foreground owner may be unblocked.
                for (dependent, _) in graph.dependents_of(&uid) {
                    queue.add(&dependent);
                }
                for owner in node.owners {
                    queue.add(&owner.uid);
                }
            }
            return;
        }
        let node = node_of(&resource, meta);
        let pending = node.deleting && node.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND);
        let check_owners = node.owners.iter().any(|owner| match graph.nodes.get(&owner.uid) {
            None => true,
            Some(o) => o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND),
        });
        let old = graph.upsert(&uid, node);
        if pending || check_owners {
            queue.add(&uid);
        }
        // Owners it no longer names may be waiting for it in the foreground. (Only
        // those: a pod's status update must not send its ReplicaSet through the GC.)
        if let Some(old) = old {
            let current = &graph.nodes[&uid].owners;
            for owner in old.owners.iter().filter(|o| !current.iter().any(|c| c.uid == o.uid)) {
                queue.add(&owner.uid);
            }
        }
    });
}

impl GarbageCollector {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let graph = Arc::new(Mutex::new(Graph::default()));
        watch_kind::<Pod>(informers, &graph, queue);
        watch_kind::<ReplicaSet>(informers, &graph, queue);
        watch_kind::<Deployment>(informers, &graph, queue);
        watch_kind::<StatefulSet>(informers, &graph, queue);
        watch_kind::<DaemonSet>(informers, &graph, queue);
        watch_kind::<ControllerRevision>(informers, &graph, queue);
        watch_kind::<Job>(informers, &graph, queue);
        watch_kind::<CronJob>(informers, &graph, queue);
        watch_kind::<EndpointSlice>(informers, &graph, queue);
        watch_kind::<ConfigMap>(informers, &graph, queue);
        watch_kind::<Secret>(informers, &graph, queue);
        watch_kind::<Service>(informers, &graph, queue);
        watch_kind::<ServiceAccount>(informers, &graph, queue);
        watch_kind::<PersistentVolumeClaim>(informers, &graph, queue);
        Arc::new(GarbageCollector { client: informers.client().clone(), graph })
    }

    fn api(&self, node: &Node) -> Api<DynamicObject> {
        match &node.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, node.resource.as_ref()),
            None => Api::all_with(self.client.clone(), node.resource.as_ref()),
        }
    }

    /// Whether the owner `reference` (named by a dependent in `namespace`) exists,
    /// asking the API when the graph does not know it.
    async fn owner_exists(&self, reference: &OwnerReference, namespace: Option<&str>) -> Result<bool, kube::Error> {
        if self.graph.lock().nodes.contains_key(&reference.uid) {
            return Ok(true);
        }
        let (group, version) = match reference.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", reference.api_version.as_str()),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &reference.kind));
        let api: Api<DynamicObject> = match namespace {
            Some(ns) if !CLUSTER_SCOPED.contains(&reference.kind.as_str()) => {
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
            _ => Api::all_with(self.client.clone(), &resource),
        };
        match api.get_opt(&reference.name).await {
            Ok(found) => Ok(found.is_some_and(|o| o.metadata.uid.as_deref() == Some(reference.uid.as_str()))),
            // A kind the server does not serve: its objects cannot exist.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn delete(&self, node: &Node, policy: PropagationPolicy) -> Result<(), kube::Error> {
        let params = DeleteParams { propagation_policy: Some(policy), ..Default::default() };
        ignore_not_found(self.api(node).delete(&node.name, &params).await).map(|_| ())
    }

    async fn remove_owner_refs(&self, uid: &str, node: &Node, owners: &[String]) -> Result<(), kube::Error> {
        let refs: Vec<_> = owners.iter().map(|o| json!({"$patch": "delete", "uid": o})).collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": uid}});
        match self.api(node).patch(&node.name, &PatchParams::default(), &Patch::Strategic(patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [finalizer]}});
        ignore_not_found(self.api(node).patch(&node.name, &PatchParams::default(), &Patch::Strategic(patch)).await)
            .map(|_| ())
    }

    /// An owner being deleted with a policy: orphan its dependents, or delete them
    /// before it.
    async fn finalize_owner(&self, uid: &str, node: &Node) -> Result<Action, ReconcileError> {
        let dependents = self.graph.lock().dependents_of(uid);
        if node.finalizers.iter().any(|f| f == ORPHAN) {
            for (dependent_uid, dependent) in &dependents {
                self.remove_owner_refs(dependent_uid, dependent, &[uid.to_string()]).await?;
            }
            self.remove_finalizer(node, ORPHAN).await?;
            return Ok(Action::Done);
        }
        if node.finalizers.iter().any(|f| f == FOREGROUND) {
            let mut blocking = 0;
            for (_, dependent) in &dependents {
                let blocks = dependent.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                if !dependent.deleting {
                    let policy = if blocks { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
                    self.delete(dependent, policy).await?;
                }
            }
            if blocking == 0 {
                self.remove_finalizer(node, FOREGROUND).await?;
            }
        }
        Ok(Action::Done)
    }
}

impl Reconciler for GarbageCollector {
    async fn reconcile(&self, uid: &str) -> Result<Action, ReconcileError> {
        let Some(node) = self.graph.lock().nodes.get(uid).cloned() else { return Ok(Action::Done) };
        if node.deleting {
            return self.finalize_owner(uid, &node).await;
        }
        if node.owners.is_empty() {
            return Ok(Action::Done);
        }
        let mut verdict = self.classify(&node.owners, node.namespace.as_deref()).await?;
        if verdict.needs_write() {
            // Decide on the object as it is now, as kube's collector reads the latest
            // before it acts: the graph may not have seen an orphaning owner remove its
            // reference yet (its own deletion can arrive first, on another watch), and a
            // reference already gone must not doom the object.
            let latest = self.api(&node).get_opt(&node.name).await?;
            let Some(latest) = latest.filter(|o| o.metadata.uid.as_deref() == Some(uid)) else {
                return Ok(Action::Done);
            };
            let owners = latest.metadata.owner_references.unwrap_or_default();
            if owners.is_empty() {
                return Ok(Action::Done);
            }
            verdict = self.classify(&owners, node.namespace.as_deref()).await?;
        }
        let Verdict { solid, dangling, waiting } = verdict;
        if solid > 0 {
            if !dangling.is_empty() {
                self.remove_owner_refs(uid, &node, &dangling).await?;
            }
            return Ok(Action::Done);
        }
        // No owner left standing: the dependent goes, before its owner if one waits.
        let policy = if waiting.is_empty() { PropagationPolicy::Background } else { PropagationPolicy::Foreground };
        self.delete(&node, policy).await?;
        Ok(Action::Done)
    }
}

/// A dependent's owner references, sorted by what became of each owner.
struct Verdict {
    /// Owners that stand.
    solid: usize,
    /// Owners that are gone.
    dangling: Vec<String>,
    /// Owners deleting in the foreground, waiting for their dependents.
    waiting: Vec<String>,
}

impl Verdict {
    /// Whether the dependent must be written: references dropped, or itself deleted.
    fn needs_write(&self) -> bool {
        self.solid == 0 || !self.dangling.is_empty()
    }
}

impl GarbageCollector {
    async fn classify(&self, owners: &[OwnerReference], namespace: Option<&str>) -> Result<Verdict, kube::Error> {
        let mut verdict = Verdict { solid: 0, dangling: Vec::new(), waiting: Vec::new() };
        for owner in owners {
            let known = self.graph.lock().nodes.get(&owner.uid).cloned();
            match known {
                Some(o) if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) => {
                    verdict.waiting.push(owner.uid.clone())
                }
                Some(_) => verdict.solid += 1,
                None if self.owner_exists(owner, namespace).await? => verdict.solid += 1,
                None => verdict.dangling.push(owner.uid.clone()),
            }
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;
    use kube::ResourceExt;

    fn owned_pod(name: &str, owner: &ReplicaSet, block: bool) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner.name_any(), "uid": owner.uid(),
            "controller": true, "blockOwnerDeletion": block}]}, "spec": {"containers": []}}))
        .expect("a pod")
    }

    fn sync(rig: &Rig) {
        rig.sync::<ReplicaSet>();
        rig.sync::<Pod>();
    }

    #[tokio::test]
    async fn dependents_of_a_missing_owner_go_and_a_foreground_owner_waits_for_them() {
        let rig = Rig::new();
        let gc = GarbageCollector::register(&rig.informers, &rig.queue);
        let set: ReplicaSet =
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}})).expect("a set");
        let set = rig.fake.insert(&set);
        let pods: Vec<Pod> = ["a", "b"].iter().map(|n| rig.fake.insert(&owned_pod(n, &set, true))).collect();
        sync(&rig);
        for pod in &pods {
            gc.reconcile(&pod.uid().expect("a uid")).await.expect("reconciled");
        }
        assert!(rig.writes().is_empty(), "the owner stands: nothing to do");

        // Foreground deletion: the owner waits with its finalizer while its blocking
        // dependents are deleted, then lets go.
        rig.fake.modify::<ReplicaSet>("default", "web", |object| {
            object["metadata"]["deletionTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
            object["metadata"]["finalizers"] = json!([FOREGROUND]);
        });
        sync(&rig);
        let set_uid = set.uid().expect("a uid");
        gc.reconcile(&set_uid).await.expect("reconciled");
        let mut writes = rig.writes();
        writes.sort();
        assert_eq!(writes, ["delete pods a", "delete pods b"]);
        assert!(rig.fake.get::<ReplicaSet>("default", "web").is_some(), "held while dependents remain");
        sync(&rig);
        gc.reconcile(&set_uid).await.expect("reconciled");
        assert_eq!(rig.writes(), ["patch replicasets web"], "the finalizer removed");
        assert!(rig.fake.get::<ReplicaSet>("default", "web").is_none(), "gone with its finalizer");

        // Background: a pod whose owner is gone (looked up, 404) is deleted.
        let orphaned = rig.fake.insert(&owned_pod("c", &set, false));
        sync(&rig);
        gc.reconcile(&orphaned.uid().expect("a uid")).await.expect("reconciled");
        assert_eq!(rig.writes(), ["delete pods c"]);

        // An orphaning owner removed its reference before the graph heard of it (its own
        // deletion can arrive first): the object as it is now decides, and it stays.
        let released = rig.fake.insert(&owned_pod("d", &set, false));
        sync(&rig);
        rig.fake.modify::<Pod>("default", "d", |object| object["metadata"]["ownerReferences"] = json!([]));
        gc.reconcile(&released.uid().expect("a uid")).await.expect("reconciled");
        assert_eq!(rig.writes(), Vec::<String>::new());
        assert!(rig.fake.get::<Pod>("default", "d").is_some());
    }
}
