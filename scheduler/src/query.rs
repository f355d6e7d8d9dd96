//! A pod compiled once into what the plugins ask of each node: integer requests, node
//! selector and affinity terms resolved to label columns, tolerations, host ports, images
//! and spread/affinity terms resolved to ids. The cycle evaluates this per node with no
//! string in sight.

use crate::intern::{Interner, StrId, NONE};
use crate::matchers::{label_set, CompiledToleration, LabelMatcher, NodeMatcher, NodeTerm};
use crate::resources::pod_requests;
use crate::snapshot::affinity_index::{Targets, TargetsId};
use crate::snapshot::columns::ColId;
use crate::snapshot::{pod_key, HostPort, PodRecord, Snapshot};
use keelson_engine::k8s_openapi::api::core::v1::{
    NodeSelector, Pod, PodAffinityTerm, PodSpec, TopologySpreadConstraint,
};
use std::sync::Arc;

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Which namespaces an affinity term's selector looks at: the listed ones, plus those
/// whose labels match `selector`. No list and no selector means the pod's own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceFilter {
    names: Box<[StrId]>,
    selector: Option<LabelMatcher>,
}

impl NamespaceFilter {
    #[inline]
    pub fn matches(&self, namespace: StrId, snapshot: &Snapshot) -> bool {
        self.names.contains(&namespace)
            || self.selector.as_ref().is_some_and(|s| s.matches(snapshot.namespace_labels(namespace)))
    }

    /// [`NamespaceFilter::matches`], given the namespace's labels.
    #[inline]
    pub fn matches_labels(&self, namespace: StrId, namespace_labels: &[(StrId, StrId)]) -> bool {
        self.names.contains(&namespace) || self.selector.as_ref().is_some_and(|s| s.matches(namespace_labels))
    }

    /// Whether what it matches depends on namespaces' labels.
    pub fn reads_labels(&self) -> bool {
        self.selector.is_some()
    }
}

#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub selector: LabelMatcher,
    pub namespaces: NamespaceFilter,
    pub topology: ColId,
    /// `selector` and `namespaces` as interned in the snapshot's affinity index.
    pub targets: TargetsId,
}

impl AffinityTerm {
    /// Whether a pod (by namespace and labels) is one this term selects.
    #[inline]
    pub fn selects(&self, namespace: StrId, labels: &[(StrId, StrId)], snapshot: &Snapshot) -> bool {
        self.namespaces.matches(namespace, snapshot) && self.selector.matches(labels)
    }
}

#[derive(Clone, Debug)]
pub struct WeightedTerm {
    pub weight: i32,
    pub term: AffinityTerm,
}

/// A pod's inter-pod affinity, compiled. Kept in the snapshot for placed pods too: their
/// anti-affinity constrains where later pods may go.
#[derive(Clone, Debug, Default)]
pub struct AffinityTerms {
    pub required_affinity: Box<[AffinityTerm]>,
    pub required_anti_affinity: Box<[AffinityTerm]>,
    pub preferred_affinity: Box<[WeightedTerm]>,
    pub preferred_anti_affinity: Box<[WeightedTerm]>,
}

impl AffinityTerms {
    pub fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub topology: ColId,
    /// `DoNotSchedule` (a filter) rather than `ScheduleAnyway` (a score).
    pub hard: bool,
    pub selector: LabelMatcher,
    pub min_domains: u32,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node
    /// selector and required affinity count.
    pub honor_affinity: bool,
    /// `nodeTaintsPolicy: Honor`: only nodes whose taints the pod tolerates count.
    pub honor_taints: bool,
    /// `selector` over the pod's own namespace, as interned in the snapshot's index:
    /// the pods the constraint counts.
    pub targets: TargetsId,
}

/// How a profile defaults spread constraints for pods that have none.
#[derive(Clone, Debug, Default)]
pub enum DefaultSpread {
    /// kube's system defaults: zone (maxSkew 3) and hostname (maxSkew 5), ScheduleAnyway.
    #[default]
    System,
    List(Vec<TopologySpreadConstraint>),
    Disabled,
}

fn system_default_constraints() -> Vec<TopologySpreadConstraint> {
    let constraint = |key: &str, max_skew: i32| TopologySpreadConstraint {
        max_skew,
        topology_key: key.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        ..TopologySpreadConstraint::default()
    };
    vec![constraint(LABEL_ZONE, 3), constraint(LABEL_HOSTNAME, 5)]
}

/// The compiled pod.
#[derive(Clone, Debug)]
pub struct PodQuery {
    /// What the snapshot holds once the pod is placed.
    pub record: PodRecord,
    pub scheduler_name: Box<str>,
    pub uid: Box<str>,
    /// Extended resources requested that the scheduler cannot track: fits nowhere.
    pub untracked: Box<[String]>,
    /// Whether any extended resource is requested (most pods: no, and fit skips them).
    pub scalar_requests: bool,
    pub node_name: Option<Box<str>>,
    pub node_selector: Option<NodeTerm>,
    pub required_node_affinity: Option<NodeMatcher>,
    pub preferred_node_affinity: Box<[(i32, NodeTerm)]>,
    pub tolerations: Box<[CompiledToleration]>,
    pub images: Box<[StrId]>,
    pub spread: Box<[SpreadConstraint]>,
    /// The spread constraints came from the profile's defaults, not the pod: nodes
    /// missing a topology key are then not ignored when scoring.
    pub spread_defaulted: bool,
    pub scheduling_gates: usize,
    /// `preemptionPolicy: Never`: the pod waits instead of evicting others.
    pub never_preempts: bool,
    /// What the pod's PersistentVolumeClaims ask of a node (VolumeBinding).
    pub volumes: VolumeAffinity,
}

/// VolumeBinding's view of a pod: its claims, resolved to their volumes.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum VolumeAffinity {
    /// No claims, or none bound to a volume with node affinity.
    #[default]
    Anywhere,
    /// A claim is missing or going away: no node can take the pod until the claims
    /// change (kube's PreFilter message).
    Blocked(Box<str>),
    /// A claim is bound to a volume that does not exist.
    MissingVolume,
    /// Each bound volume's required node affinity: a node must match every one.
    Required(Box<[NodeMatcher]>),
}

impl PodQuery {
    pub fn key(&self) -> &str {
        &self.record.key
    }

    /// Whether two pods ask the same of a node's own row: the inputs node-local plugins
    /// (see [`crate::framework::Plugin::node_local`]) may read. Pods that agree here get
    /// the same node-local filter verdicts and raw scores on every node, so the cycle
    /// memoises them per node. Priority counts because room held for nominated pods is
    /// held against pods of no higher priority. Labels, namespace, inter-pod affinity
    /// and spreading are not compared: only plugins that look beyond the node read them.
    pub fn same_node_inputs(&self, other: &PodQuery) -> bool {
        let (a, b) = (&self.record, &other.record);
        a.requests == b.requests
            && a.priority == b.priority
            && a.non_zero == b.non_zero
            && a.ports == b.ports
            && self.scalar_requests == other.scalar_requests
            && self.untracked == other.untracked
            && self.node_name == other.node_name
            && self.node_selector == other.node_selector
            && self.required_node_affinity == other.required_node_affinity
            && self.preferred_node_affinity == other.preferred_node_affinity
            && self.tolerations == other.tolerations
            && self.images == other.images
            && self.volumes == other.volumes
    }

    /// Whether the node passes the pod's `nodeSelector` and required node affinity.
    #[inline]
    pub fn node_affinity_matches(&self, snapshot: &Snapshot, node: u32) -> bool {
        let columns = &snapshot.nodes.columns;
        self.node_selector.as_ref().is_none_or(|t| t.matches(columns, node))
            && self.required_node_affinity.as_ref().is_none_or(|m| m.matches(columns, node))
    }
}

/// What the snapshot keeps of a pod once placed, and the extended resources it requests
/// that the scheduler cannot track. Shared by `compile` and the snapshot's watch path.
pub fn pod_record(pod: &Pod, snapshot: &mut Snapshot) -> (PodRecord, Vec<String>) {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let namespace = snapshot.strings.intern(pod.metadata.namespace.as_deref().unwrap_or("default"));
    let labels = label_set(&mut snapshot.strings, pod.metadata.labels.iter().flatten());
    let requests = pod_requests(spec, &mut snapshot.scalars);
    let affinity = compile_affinity_terms(spec, namespace, snapshot).map(Arc::new);
    let record = PodRecord {
        key: pod_key(pod).into(),
        namespace,
        labels,
        requests: requests.requests,
        non_zero: requests.non_zero,
        ports: host_ports(spec, &mut snapshot.strings),
        priority: spec.priority.unwrap_or(0),
        affinity,
        assumed_at_ms: None,
        claims: claim_names(pod, spec).map(|name| format!("{}/{name}", pod_namespace(pod)).into()).collect(),
    };
    (record, requests.untracked)
}

pub fn compile(pod: &Pod, snapshot: &mut Snapshot, default_spread: &DefaultSpread) -> PodQuery {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let (record, untracked) = pod_record(pod, snapshot);
    let namespace = record.namespace;
    let scalar_requests = record.requests.scalar.iter().any(|&n| n > 0);
    let node_selector = spec
        .node_selector
        .as_ref()
        .filter(|m| !m.is_empty())
        .map(|m| NodeTerm::from_map(m, &mut snapshot.nodes.columns));
    let node_affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
    let mut columns = std::mem::take(&mut snapshot.nodes.columns);
    let nodes = &snapshot.nodes;
    let find_node = |name: &str| nodes.find(name);
    let required_node_affinity = node_affinity
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|s| NodeMatcher {
            terms: s.node_selector_terms.iter().map(|t| NodeTerm::from_wire(t, &mut columns, &find_node)).collect(),
        });
    let preferred_node_affinity = node_affinity
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.weight != 0)
        .map(|p| (p.weight, NodeTerm::from_wire(&p.preference, &mut columns, &find_node)))
        .collect();
    let volumes = match claimed_volumes(pod, spec, snapshot) {
        Ok(selectors) if selectors.is_empty() => VolumeAffinity::Anywhere,
        Ok(selectors) => VolumeAffinity::Required(
            selectors
                .iter()
                .map(|s| NodeMatcher {
                    terms: s
                        .node_selector_terms
                        .iter()
                        .map(|t| NodeTerm::from_wire(t, &mut columns, &find_node))
                        .collect(),
                })
                .collect(),
        ),
        Err(blocked) => blocked,
    };
    snapshot.nodes.columns = columns;
    let tolerations =
        spec.tolerations.iter().flatten().map(|t| CompiledToleration::compile(t, &mut snapshot.strings)).collect();
    let images = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(|c| c.image.as_deref())
        .map(|image| snapshot.strings.intern(&normalize_image(image)))
        .collect();
    let spread = compile_spread(pod, spec, namespace, snapshot, default_spread);
    let spread_defaulted = spec.topology_spread_constraints.as_ref().is_none_or(Vec::is_empty) && !spread.is_empty();
    PodQuery {
        record,
        scheduler_name: spec.scheduler_name.as_deref().unwrap_or("default-scheduler").into(),
        uid: pod.metadata.uid.as_deref().unwrap_or("").into(),
        scalar_requests,
        untracked: untracked.into(),
        node_name: spec.node_name.as_deref().filter(|n| !n.is_empty()).map(Into::into),
        node_selector,
        required_node_affinity,
        preferred_node_affinity,
        tolerations,
        images,
        spread,
        spread_defaulted,
        scheduling_gates: spec.scheduling_gates.as_ref().map_or(0, Vec::len),
        never_preempts: spec.preemption_policy.as_deref() == Some("Never"),
        volumes,
    }
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The names of the PersistentVolumeClaims a pod uses: its `persistentVolumeClaim`
/// volumes, and its generic ephemeral volumes' claims (named `POD-VOLUME`).
fn claim_names<'a>(pod: &'a Pod, spec: &'a PodSpec) -> impl Iterator<Item = String> + 'a {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    spec.volumes.iter().flatten().filter_map(move |volume| match (&volume.persistent_volume_claim, &volume.ephemeral) {
        (Some(source), _) => Some(source.claim_name.clone()),
        (None, Some(_)) => Some(format!("{pod_name}-{}", volume.name)),
        (None, None) => None,
    })
}

/// The required node affinity of every volume the pod's claims are bound to, or why
/// the claims block the pod, in kube's order: a missing or deleted claim first, then a
/// volume that does not exist. A generic ephemeral volume's claim is named
/// `POD-VOLUME`. An unbound claim does not constrain the pod: keelson has no
/// StorageClasses or volume binder, so a claim behaves as one of a
/// `WaitForFirstConsumer` class (kind's and k3s's default), which kube schedules
/// first and binds on the chosen node after.
fn claimed_volumes(pod: &Pod, spec: &PodSpec, snapshot: &Snapshot) -> Result<Vec<Arc<NodeSelector>>, VolumeAffinity> {
    let namespace = pod_namespace(pod);
    let (mut selectors, mut missing) = (Vec::new(), false);
    for claim_name in claim_names(pod, spec) {
        let Some(claim) = snapshot.volumes.claim(namespace, &claim_name) else {
            return Err(VolumeAffinity::Blocked(format!("persistentvolumeclaim \"{claim_name}\" not found").into()));
        };
        if claim.deleting {
            return Err(VolumeAffinity::Blocked(
                format!("persistentvolumeclaim \"{claim_name}\" is being deleted").into(),
            ));
        }
        match claim.volume.as_deref().map(|name| snapshot.volumes.volume(name)) {
            None => {}
            Some(None) => missing = true,
            Some(Some(volume)) => selectors.extend(volume.required.clone()),
        }
    }
    if missing {
        return Err(VolumeAffinity::MissingVolume);
    }
    Ok(selectors)
}

fn compile_spread(
    pod: &Pod,
    spec: &PodSpec,
    namespace: StrId,
    snapshot: &mut Snapshot,
    default_spread: &DefaultSpread,
) -> Box<[SpreadConstraint]> {
    let explicit = spec.topology_spread_constraints.as_deref().unwrap_or_default();
    let empty_labels = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty_labels);
    if !explicit.is_empty() {
        return explicit
            .iter()
            .map(|c| {
                let mut selector = LabelMatcher::from_wire(c.label_selector.as_ref(), &mut snapshot.strings);
                for key in c.match_label_keys.iter().flatten() {
                    if let Some(value) = labels.get(key) {
                        let (key, value) = (snapshot.strings.intern(key), snapshot.strings.intern(value));
                        if !selector.is_nothing() {
                            selector.and_equals(key, value);
                        }
                    }
                }
                spread_constraint(c, selector, namespace, snapshot)
            })
            .collect();
    }
    let defaults = match default_spread {
        DefaultSpread::System => system_default_constraints(),
        DefaultSpread::List(list) => list.clone(),
        DefaultSpread::Disabled => return Box::new([]),
    };
    let Some(selector) = snapshot.default_selector(namespace, labels) else {
        return Box::new([]);
    };
    let matcher = LabelMatcher::compile(&selector, &mut snapshot.strings);
    defaults.iter().map(|c| spread_constraint(c, matcher.clone(), namespace, snapshot)).collect()
}

fn spread_constraint(
    c: &TopologySpreadConstraint,
    selector: LabelMatcher,
    namespace: StrId,
    snapshot: &mut Snapshot,
) -> SpreadConstraint {
    let namespaces = NamespaceFilter { names: Box::new([namespace]), selector: None };
    let targets = snapshot.affinity.intern(Targets { selector: selector.clone(), namespaces });
    SpreadConstraint {
        targets,
        max_skew: c.max_skew.max(1),
        topology: snapshot.nodes.columns.column_for(&c.topology_key),
        hard: c.when_unsatisfiable == "DoNotSchedule",
        selector,
        min_domains: c.min_domains.unwrap_or(1).max(1) as u32,
        honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
    }
}

/// Compiles a pod's inter-pod affinity terms; `None` when it has none.
pub fn compile_affinity_terms(spec: &PodSpec, own_namespace: StrId, snapshot: &mut Snapshot) -> Option<AffinityTerms> {
    let affinity = spec.affinity.as_ref()?;
    let mut compile = |term: &PodAffinityTerm| compile_term(term, own_namespace, snapshot);
    let pod_affinity = affinity.pod_affinity.as_ref();
    let anti = affinity.pod_anti_affinity.as_ref();
    let mut terms = AffinityTerms::default();
    if let Some(a) = pod_affinity {
        terms.required_affinity =
            a.required_during_scheduling_ignored_during_execution.iter().flatten().map(&mut compile).collect();
        terms.preferred_affinity = a
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .map(|w| WeightedTerm { weight: w.weight, term: compile(&w.pod_affinity_term) })
            .collect();
    }
    if let Some(a) = anti {
        terms.required_anti_affinity =
            a.required_during_scheduling_ignored_during_execution.iter().flatten().map(&mut compile).collect();
        terms.preferred_anti_affinity = a
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .map(|w| WeightedTerm { weight: w.weight, term: compile(&w.pod_affinity_term) })
            .collect();
    }
    (!terms.is_empty()).then_some(terms)
}

fn compile_term(term: &PodAffinityTerm, own_namespace: StrId, snapshot: &mut Snapshot) -> AffinityTerm {
    let strings = &mut snapshot.strings;
    let mut names: Vec<StrId> = term.namespaces.iter().flatten().map(|n| strings.intern(n)).collect();
    let namespace_selector = term.namespace_selector.as_ref().map(|s| LabelMatcher::from_wire(Some(s), strings));
    if names.is_empty() && namespace_selector.is_none() {
        names.push(own_namespace);
    }
    let selector = LabelMatcher::from_wire(term.label_selector.as_ref(), strings);
    let namespaces = NamespaceFilter { names: names.into(), selector: namespace_selector };
    let targets = snapshot.affinity.intern(Targets { selector: selector.clone(), namespaces: namespaces.clone() });
    AffinityTerm { selector, namespaces, targets, topology: snapshot.nodes.columns.column_for(&term.topology_key) }
}

/// Host ports of the pod's containers (and sidecars), the only ports that occupy a node.
pub fn host_ports(spec: &PodSpec, strings: &mut Interner) -> Box<[HostPort]> {
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = u16::try_from(p.host_port?).ok().filter(|&p| p > 0)?;
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => 1,
                Some("SCTP") => 2,
                _ => 0,
            };
            let ip = match p.host_ip.as_deref() {
                None | Some("") | Some("0.0.0.0") => NONE,
                Some(ip) => strings.intern(ip),
            };
            Some(HostPort { protocol, ip, port })
        })
        .collect()
}

/// kube's image name normalisation for ImageLocality: an image without a tag or digest is
/// `:latest`.
pub fn normalize_image(image: &str) -> String {
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last_segment.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}
