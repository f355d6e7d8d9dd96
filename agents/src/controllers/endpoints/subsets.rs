//! The Endpoints controller: one `Endpoints` object per selecting Service, named
//! after it, listing the ready and not-ready addresses of the pods it selects,
//! grouped into subsets of addresses that share the same ports.
//!
//! At most [`MAX_ADDRESSES`] addresses are written (ready ones first), with the
//! `endpoints.kubernetes.io/over-capacity: truncated` annotation, as kube does;
//! EndpointSlices carry the full list.

use super::{endpoint_labels, hostname, is_endpoint, is_headless, managed_selector, pod_reference, target_port};
use crate::controllers::pods;
use crate::controllers::runtime::queue::WorkQueue;
use crate::controllers::runtime::{
    ignore_not_found, namespace_terminating, object_key, Action, Cache, Informers, ReconcileError, Reconciler,
};
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Addresses one Endpoints object holds at most.
pub const MAX_ADDRESSES: usize = 1000;
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

pub struct EndpointsController {
    client: Client,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    endpoints: Arc<Cache<Endpoints>>,
}

impl EndpointsController {
    pub fn register(informers: &Informers, queue: &Arc<WorkQueue>) -> Arc<Self> {
        let services = informers.get::<Service>();
        let pods = informers.get::<Pod>();
        let endpoints = informers.get::<Endpoints>();
        let q = Arc::clone(queue);
        services.on_change(move |change| q.add(&object_key(change.object().as_ref())));
        let (q, service_cache) = (Arc::clone(queue), services.cache());
        pods.on_change(move |change| super::on_pod_change(&service_cache, &q, change));
        // Someone else changed or deleted an Endpoints object: put it back.
        let q = Arc::clone(queue);
        endpoints.on_change(move |change| q.add(&object_key(change.object().as_ref())));
        Arc::new(EndpointsController {
            client: informers.client().clone(),
            services: services.cache(),
            pods: pods.cache(),
            endpoints: endpoints.cache(),
        })
    }
}

/// The subsets a Service's endpoints should hold, and whether the list was cut short.
pub fn desired_subsets(service: &Service, selected: &[Arc<Pod>]) -> (Vec<EndpointSubset>, bool) {
    let spec = service.spec.as_ref();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let service_ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    // Port set (as written) → (ports, ready addresses, not-ready addresses).
    type Group = (Vec<EndpointPort>, Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Group> = BTreeMap::new();
    for pod in selected.iter().filter(|p| is_endpoint(p, publish_not_ready)) {
        let mut ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|port| {
                Some(EndpointPort {
                    name: port.name.clone(),
                    port: target_port(port, pod)?,
                    protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: port.app_protocol.clone(),
                })
            })
            .collect();
        // A pod with none of the Service's ports has no endpoint, unless the Service
        // is headless and has no ports at all (DNS-only).
        if ports.is_empty() && !(service_ports.is_empty() && is_headless(service)) {
            continue;
        }
        ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let key = ports
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_default()))
            .collect();
        let address = EndpointAddress {
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
            hostname: hostname(pod, service),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_reference(pod)),
        };
        let group = groups.entry(key).or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish_not_ready || pods::is_ready(pod) {
            group.1.push(address);
        } else {
            group.2.push(address);
        }
    }
    let by_address = |a: &EndpointAddress, b: &EndpointAddress| {
        (&a.ip, a.target_ref.as_ref().and_then(|r| r.uid.as_ref()))
            .cmp(&(&b.ip, b.target_ref.as_ref().and_then(|r| r.uid.as_ref())))
    };
    let mut room = MAX_ADDRESSES;
    let mut truncated = false;
    let mut subsets = Vec::new();
    // Ready addresses take the room first.
    let mut groups: Vec<Group> = groups.into_values().collect();
    for (_, ready, _) in &mut groups {
        ready.sort_by(by_address);
        truncated |= ready.len() > room;
        ready.truncate(room);
        room -= ready.len();
    }
    for (ports, ready, mut not_ready) in groups {
        not_ready.sort_by(by_address);
        truncated |= not_ready.len() > room;
        not_ready.truncate(room);
        room -= not_ready.len();
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    (subsets, truncated)
}

impl Reconciler for EndpointsController {
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let (namespace, name) = crate::controllers::runtime::split_key(key);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        let current = self.endpoints.get(key);
        let Some(service) = self.services.get(key) else {
            // The Service is gone; so are its endpoints.
            if current.is_some() {
                ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
            }
            return Ok(Action::Done);
        };
        if managed_selector(&service).is_none() || service.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let (subsets, truncated) = desired_subsets(&service, &super::selected_pods(&service, &self.pods));
        let labels = endpoint_labels(&service);
        let mut annotations = current.as_ref().and_then(|e| e.metadata.annotations.clone()).unwrap_or_default();
        if truncated {
            annotations.insert(OVER_CAPACITY.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY);
        }
        let subsets = (!subsets.is_empty()).then_some(subsets);
        if let Some(current) = &current {
            let same_subsets = current.subsets.as_ref().filter(|s| !s.is_empty()) == subsets.as_ref();
            let same_labels = current.metadata.labels.clone().unwrap_or_default() == labels;
            let same_annotations = current.metadata.annotations.clone().unwrap_or_default() == annotations;
            if same_subsets && same_labels && same_annotations {
                return Ok(Action::Done);
            }
        }
        let endpoints = Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: (!labels.is_empty()).then_some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                resource_version: current.as_ref().and_then(|c| c.metadata.resource_version.clone()),
                ..Default::default()
            },
            subsets,
        };
        let written = match current {
            Some(_) => api.replace(name, &PostParams::default(), &endpoints).await,
            None => api.create(&PostParams::default(), &endpoints).await,
        };
        match written {
            Ok(_) => Ok(Action::Done),
            // The namespace is terminating: nothing to publish.
            Err(error) if namespace_terminating(&error) => Ok(Action::Done),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn subsets_split_ready_from_not_ready_and_resolve_named_ports() {
        let service = web_service();
        let pods = vec![
            Arc::new(web_pod("b", "10.1.0.2", true)),
            Arc::new(web_pod("a", "10.1.0.1", true)),
            Arc::new(web_pod("c", "10.1.0.3", false)),
        ];
        let (subsets, truncated) = desired_subsets(&service, &pods);
        assert!(!truncated);
        assert_eq!(subsets.len(), 1);
        let subset = &subsets[0];
        let ips = |a: &Option<Vec<EndpointAddress>>| a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>();
        assert_eq!(ips(&subset.addresses), ["10.1.0.1", "10.1.0.2"], "sorted by address");
        assert_eq!(ips(&subset.not_ready_addresses), ["10.1.0.3"]);
        let ports = subset.ports.as_ref().unwrap();
        assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("http"), 8080));
        assert_eq!(subset.addresses.as_ref().unwrap()[0].target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    }

    #[test]
    fn pods_without_the_named_port_are_left_out_and_capacity_truncates() {
        let service = web_service();
        let mut portless = web_pod("x", "10.1.0.9", true);
        portless.spec.as_mut().unwrap().containers[0].ports = None;
        let (subsets, _) = desired_subsets(&service, &[Arc::new(portless)]);
        assert!(subsets.is_empty());

        let many: Vec<_> = (0..MAX_ADDRESSES + 5)
            .map(|i| Arc::new(web_pod(&format!("p{i}"), &format!("10.2.{}.{}", i / 250, i % 250), i % 2 == 0)))
            .collect();
        let (subsets, truncated) = desired_subsets(&service, &many);
        assert!(truncated);
        let ready = subsets[0].addresses.as_ref().unwrap().len();
        let not_ready = subsets[0].not_ready_addresses.as_ref().map_or(0, |a| a.len());
        assert_eq!(ready, many.iter().filter(|p| pods::is_ready(p)).count(), "every ready address fits first");
        assert_eq!(ready + not_ready, MAX_ADDRESSES);
    }

    #[tokio::test]
    async fn reconcile_writes_the_endpoints_then_deletes_them_with_the_service() {
        use crate::controllers::fake::Rig;
        let rig = Rig::new();
        let controller = EndpointsController::register(&rig.informers, &rig.queue);
        rig.fake.insert(&web_service());
        rig.fake.insert(&web_pod("a", "10.1.0.1", true));
        let pass = || async {
            rig.sync::<Service>();
            rig.sync::<Pod>();
            rig.sync::<Endpoints>();
            controller.reconcile("default/web").await.expect("reconciled");
            rig.writes()
        };
        assert_eq!(pass().await, ["create endpoints web"]);
        assert!(pass().await.is_empty(), "up to date");
        let endpoints = rig.fake.get::<Endpoints>("default", "web").expect("stored");
        let addresses = endpoints.subsets.unwrap_or_default()[0].addresses.clone().unwrap_or_default();
        assert_eq!(addresses.iter().map(|a| a.ip.as_str()).collect::<Vec<_>>(), ["10.1.0.1"]);
        rig.fake.remove::<Service>("default", "web");
        assert_eq!(pass().await, ["delete endpoints web"]);
    }
}
