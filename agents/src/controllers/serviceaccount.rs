//! The ServiceAccount controller: every active namespace has a `default`
//! ServiceAccount, recreated if deleted.

use super::runtime::queue::WorkQueue;
use super::runtime::{namespace_terminating, Action, Cache, Change, Informers, ReconcileError, Reconciler};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use std::sync::Arc;

const DEFAULT: &str = "default";

pub struct ServiceAccountController {
    client: Client,
    namespaces: Arc<Cache<Namespace>>,
    accounts: Arc<Cache<ServiceAccount>>,
}

impl ServiceAccountController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let namespaces = informers.get::<Namespace>();
        let accounts = informers.get::<ServiceAccount>();
        let q = Arc::clone(queue);
        namespaces.on_change(move |change| {
            if !matches!(change, Change::Deleted(_)) {
                q.add(change.object().metadata.name.as_deref().unwrap_or_default());
            }
        });
        let q = Arc::clone(queue);
        accounts.on_change(move |change| {
            let account = change.object();
            if matches!(change, Change::Deleted(_)) && account.metadata.name.as_deref() == Some(DEFAULT) {
                q.add(account.metadata.namespace.as_deref().unwrap_or_default());
            }
        });
        Arc::new(ServiceAccountController {
            client: informers.client().clone(),
            namespaces: namespaces.cache(),
            accounts: accounts.cache(),
        })
    }
}

impl Reconciler for ServiceAccountController {
    async fn reconcile(&self, namespace: &str) -> Result<Action, ReconcileError> {
        let Some(ns) = self.namespaces.get(namespace) else { return Ok(Action::Done) };
        if ns.metadata.deletion_timestamp.is_some() || self.accounts.get_in(namespace, DEFAULT).is_some() {
            return Ok(Action::Done);
        }
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => Ok(Action::Done),
            // Already there (the cache lagged), or the namespace started terminating.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::Done),
            Err(error) if namespace_terminating(&error) => Ok(Action::Done),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::Rig;

    #[tokio::test]
    async fn active_namespaces_get_a_default_account_once() {
        let rig = Rig::new();
        let controller = ServiceAccountController::register(&rig.informers, &rig.queue);
        for (name, terminating) in [("team", false), ("leaving", true)] {
            let mut namespace = Namespace::default();
            namespace.metadata.name = Some(name.into());
            rig.fake.insert(&namespace);
            if terminating {
                rig.fake.modify::<Namespace>("", name, |object| {
                    object["metadata"]["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
                });
            }
        }
        let pass = |namespace: &'static str| {
            let (rig, controller) = (&rig, &controller);
            async move {
                rig.sync::<Namespace>();
                rig.sync::<ServiceAccount>();
                controller.reconcile(namespace).await.expect("reconciled");
                rig.writes()
            }
        };
        assert_eq!(pass("team").await, ["create serviceaccounts default"]);
        assert!(pass("team").await.is_empty(), "already there");
        assert!(pass("leaving").await.is_empty(), "a terminating namespace gets none");
    }
}
