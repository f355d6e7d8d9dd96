//! What every node agent does to stay a node: register its Node (taking an existing
//! one back after a restart) and Lease, renew the Lease every `renew_interval` and
//! re-post the node's conditions every `status_interval`, a bounded number of writes at
//! once however many nodes one process holds.

use super::objects::{node_conditions, node_lease, LEASE_NAMESPACE};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
}

/// How a set of nodes keeps its heartbeats.
#[derive(Clone, Copy, Debug)]
pub struct Heartbeat {
    pub renew_interval: Duration,
    pub status_interval: Duration,
    /// API writes in flight at once, at most.
    pub concurrency: usize,
}

impl Heartbeat {
    /// Registers `nodes` and their Leases, then starts renewing both; returns the tasks.
    pub async fn register_and_start(
        self,
        client: &Client,
        nodes: impl Iterator<Item = Node>,
        registered_at: Time,
    ) -> Result<Vec<JoinHandle<()>>, FleetError> {
        // In the order their Leases were written, which is the order they are renewed in.
        let registered: Vec<(Registered, Instant)> = futures::stream::iter(nodes)
            .map(|node| register(client, node))
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        let (registered, written): (Vec<Registered>, Vec<Instant>) = registered.into_iter().unzip();
        let registered = Arc::new(registered);
        Ok(vec![
            tokio::spawn(renew_leases(client.clone(), self, Arc::clone(&registered), written)),
            tokio::spawn(post_node_status(client.clone(), self, registered, registered_at)),
        ])
    }
}

/// A registered node: its name and uid.
type Registered = (String, Option<String>);

/// Creates the node (or, if it exists, posts its status and labels again) and its
/// Lease. Returns the node's name and uid, and when its Lease was written.
async fn register(client: &Client, node: Node) -> Result<(Registered, Instant), FleetError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let name = name.as_str();
    let failed = |source| FleetError::Register { node: name.to_owned(), source };
    let nodes: Api<Node> = Api::all(client.clone());
    let created = match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // A restarted agent: the node is ours again, as it says now.
            let labels = json!({"metadata": {"labels": node.metadata.labels}, "spec": {"taints": node.spec.as_ref().and_then(|s| s.taints.clone())}});
            nodes.patch(name, &PatchParams::default(), &Patch::Merge(labels)).await.map_err(failed)?;
            let status = json!({"status": node.status});
            nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.map_err(failed)?
        }
        Err(error) => return Err(failed(error)),
    };
    let uid = created.metadata.uid.clone();
    // A new node has no Lease yet: create first, and renew only one a restart left.
    write_lease(client, name, uid.as_deref(), LeaseWrite::CreateFirst).await.map_err(failed)?;
    Ok(((name.to_owned(), uid), Instant::now()))
}

/// Which write a Lease most likely needs; the other is the fallback.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LeaseWrite {
    CreateFirst,
    RenewFirst,
}

/// Renews a node's Lease, creating it if it is missing.
async fn write_lease(
    client: &Client,
    node: &str,
    node_uid: Option<&str>,
    first: LeaseWrite,
) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let renew = || async {
        let patch = json!({"spec": {"holderIdentity": node, "renewTime": now}});
        leases.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
    };
    let create = || async { leases.create(&PostParams::default(), &node_lease(node, node_uid, &now)).await.map(drop) };
    let missing = |error: &kube::Error| matches!(error, kube::Error::Api(status) if status.code == 404);
    let exists = |error: &kube::Error| matches!(error, kube::Error::Api(status) if status.code == 409);
    match first {
        LeaseWrite::RenewFirst => match renew().await {
            Err(error) if missing(&error) => match create().await {
                // Created meanwhile: it is fresh.
                Err(error) if exists(&error) => Ok(()),
                other => other,
            },
            other => other,
        },
        LeaseWrite::CreateFirst => match create().await {
            Err(error) if exists(&error) => renew().await,
            other => other,
        },
    }
}

/// Renews each Lease `renew_interval` after its last write, as each kubelet does its
/// own: a fleet that took longer to register than one interval still renews its first
/// Leases on time, not after the last one is written. Writes go in the order of
/// `written` (oldest first), a bounded number at once; a fleet that falls behind
/// renews at once what is due.
async fn renew_leases(client: Client, beat: Heartbeat, nodes: Arc<Vec<Registered>>, mut written: Vec<Instant>) {
    loop {
        // By index, not by reference: a closure taking borrowed items makes the
        // spawned future's type too general for the compiler to prove it Send.
        written = futures::stream::iter(written.into_iter().enumerate())
            .map(|(index, last)| {
                let (client, (node, uid)) = (&client, &nodes[index]);
                async move {
                    tokio::time::sleep_until((last + beat.renew_interval).into()).await;
                    if let Err(error) = write_lease(client, node, uid.as_deref(), LeaseWrite::RenewFirst).await {
                        tracing::warn!(%error, node, "renewing the node lease");
                    }
                    Instant::now()
                }
            })
            .buffered(beat.concurrency.max(1))
            .collect()
            .await;
    }
}

/// Every `status_interval`, re-posts every node's conditions with a fresh heartbeat.
async fn post_node_status(client: Client, beat: Heartbeat, names: Arc<Vec<(String, Option<String>)>>, since: Time) {
    let nodes: Api<Node> = Api::all(client);
    let mut ticks = tokio::time::interval(beat.status_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let conditions = node_conditions(&Time(Timestamp::now()), &since);
        let patch = Patch::Merge(json!({"status": {"conditions": conditions}}));
        futures::stream::iter(names.iter().map(|(name, _)| name))
            .for_each_concurrent(beat.concurrency.max(1), |node| {
                let (nodes, patch) = (&nodes, &patch);
                async move {
                    if let Err(error) = nodes.patch_status(node, &PatchParams::default(), patch).await {
                        tracing::warn!(%error, node, "posting node status");
                    }
                }
            })
            .await;
    }
}
