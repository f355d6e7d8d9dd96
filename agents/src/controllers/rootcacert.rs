//! `root-ca-cert-publisher`: every active namespace has the ConfigMap
//! `kube-root-ca.crt` whose `ca.crt` is the cluster's CA, so that pods can trust the
//! API server they reach with their projected ServiceAccount token (the
//! `kube-api-access-*` volume ServiceAccount admission adds). A copy that is deleted
//! or changed is put back, as kube's publisher does.

use super::runtime::queue::WorkQueue;
use super::runtime::{namespace_terminating, Action, Cache, Change, Informers, ReconcileError, Reconciler};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ConfigMap's name, as pods' projected volumes name it.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The key holding the CA bundle.
const KEY: &str = "ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using \
                           internal endpoints such as the internal service IP or kubernetes.default.svc. No other \
                           usage is guaranteed across distributions of Kubernetes clusters.";

pub struct RootCaPublisher {
    client: Client,
    namespaces: Arc<Cache<Namespace>>,
    config_maps: Arc<Cache<ConfigMap>>,
    /// The CA bundle (PEM) to publish.
    root_ca: String,
}

impl RootCaPublisher {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>, root_ca: String) -> Arc<Self> {
        let namespaces = informers.get::<Namespace>();
        let config_maps = informers.get::<ConfigMap>();
        let q = Arc::clone(queue);
        namespaces.on_change(move |change| {
            if !matches!(change, Change::Deleted(_)) {
                q.add(change.object().metadata.name.as_deref().unwrap_or_default());
            }
        });
        let q = Arc::clone(queue);
        config_maps.on_change(move |change| {
            let map = change.object();
            if map.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
                q.add(map.metadata.namespace.as_deref().unwrap_or_default());
            }
        });
        Arc::new(RootCaPublisher {
            client: informers.client().clone(),
            namespaces: namespaces.cache(),
            config_maps: config_maps.cache(),
            root_ca,
        })
    }

    fn wanted_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(KEY.to_string(), self.root_ca.clone())])
    }
}

impl Reconciler for RootCaPublisher {
    async fn reconcile(&self, namespace: &str) -> Result<Action, ReconcileError> {
        let Some(ns) = self.namespaces.get(namespace) else { return Ok(Action::Done) };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let result = match self.config_maps.get_in(namespace, ROOT_CA_CONFIGMAP) {
            None => {
                let map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIGMAP.into()),
                        namespace: Some(namespace.into()),
                        annotations: Some(BTreeMap::from([("kubernetes.io/description".into(), DESCRIPTION.into())])),
                        ..Default::default()
                    },
                    data: Some(self.wanted_data()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &map).await.map(drop)
            }
            Some(map) if map.data.as_ref() == Some(&self.wanted_data()) && map.binary_data.is_none() => {
                return Ok(Action::Done)
            }
            Some(map) => {
                // Someone changed it: put the bundle back (the resourceVersion makes a
                // stale cache's write a conflict, retried from the fresher cache).
                let mut map = (*map).clone();
                map.data = Some(self.wanted_data());
                map.binary_data = None;
                api.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &map).await.map(drop)
            }
        };
        match result {
            Ok(()) => Ok(Action::Done),
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
    async fn every_namespace_gets_the_bundle_and_keeps_it() {
        let rig = Rig::new();
        let controller = RootCaPublisher::register(&rig.informers, &rig.queue, "PEM".into());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some("team".into());
        rig.fake.insert(&namespace);
        let pass = || {
            let (rig, controller) = (&rig, &controller);
            async move {
                rig.sync::<Namespace>();
                rig.sync::<ConfigMap>();
                controller.reconcile("team").await.expect("reconciled");
                rig.writes()
            }
        };
        assert_eq!(pass().await, ["create configmaps kube-root-ca.crt"]);
        assert!(pass().await.is_empty(), "already published");
        rig.fake.modify::<ConfigMap>("team", ROOT_CA_CONFIGMAP, |object| {
            object["data"]["ca.crt"] = serde_json::json!("tampered");
        });
        assert_eq!(pass().await, ["update configmaps kube-root-ca.crt"]);
        let published = rig.fake.get::<ConfigMap>("team", ROOT_CA_CONFIGMAP).expect("stored");
        assert_eq!(published.data.unwrap()["ca.crt"], "PEM");
    }
}
