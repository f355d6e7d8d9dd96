//! The API through the `kube` crate, a client other than kubectl: typed reads and
//! writes, and metadata-only reads (`PartialObjectMetadata`), which metadata clients
//! such as garbage collectors use, for an object, a list and a watch.

mod common;

use common::TestServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use std::collections::BTreeMap;
use std::time::Duration;

async fn client(server: &TestServer) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

fn configmap(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
    cm.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
    cm
}

#[tokio::test]
async fn the_kube_crate_reads_objects_and_their_metadata_alone() {
    let mut server = TestServer::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");

    let created = api.create(&PostParams::default(), &configmap("first")).await.unwrap();
    let fetched = api.get("first").await.unwrap();
    assert_eq!(fetched.data, created.data);

    // One object's metadata: labels and resourceVersion, no data.
    let meta = api.get_metadata("first").await.unwrap();
    assert_eq!(meta.types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
    assert_eq!(meta.metadata.labels, created.metadata.labels);
    assert_eq!(meta.metadata.resource_version, created.metadata.resource_version);

    // A list of metadata, paged. The selector leaves out the namespace's own
    // kube-root-ca.crt, which the root-ca-cert-publisher creates when it gets to it.
    api.create(&PostParams::default(), &configmap("second")).await.unwrap();
    let ours = ListParams::default().labels("app=web");
    let page = api.list_metadata(&ours.clone().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.metadata.continue_.is_some());
    let all = api.list_metadata(&ours).await.unwrap();
    let names: Vec<_> = all.items.iter().filter_map(|m| m.metadata.name.clone()).collect();
    assert_eq!(names, ["first", "second"]);

    // A metadata watch from the list's revision sees the next create.
    let version = all.metadata.resource_version.clone().unwrap();
    let mut events = api.watch_metadata(&WatchParams::default().labels("app=web"), &version).await.unwrap().boxed();
    api.create(&PostParams::default(), &configmap("third")).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap();
    match event {
        Some(WatchEvent::Added(meta)) => {
            assert_eq!(meta.metadata.name.as_deref(), Some("third"));
            assert_eq!(meta.types.map(|t| t.kind), Some("PartialObjectMetadata".to_string()));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    drop(events);

    // A missing object is still a 404 Status.
    let missing = api.get_metadata("nope").await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(ref s) if s.code == 404), "{missing:?}");
    server.stop();
}
