//! Compiled matchers: label selectors over interned pod labels, node selector terms over
//! the label columns, tolerations over interned taints. Built once per pod; evaluated per
//! node or per existing pod with integer compares only.

use crate::intern::{Interner, StrId, NONE};
use crate::snapshot::columns::{ColId, Columns, Domain, ABSENT};
use crate::snapshot::NodeIx;
use keelson_engine::k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use keelson_engine::{Operator, Selector};

/// A pod's or namespace's labels: `(key, value)` ids sorted by key.
pub type LabelSet = Box<[(StrId, StrId)]>;

pub fn label_set<'a>(interner: &mut Interner, labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> LabelSet {
    let mut set: Vec<(StrId, StrId)> =
        labels.into_iter().map(|(k, v)| (interner.intern(k), interner.intern(v))).collect();
    set.sort_unstable();
    set.into_boxed_slice()
}

#[inline]
fn label_value(labels: &[(StrId, StrId)], key: StrId) -> Option<StrId> {
    labels.binary_search_by_key(&key, |&(k, _)| k).ok().map(|i| labels[i].1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SetOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LabelRequirement {
    key: StrId,
    op: SetOp,
    values: Box<[StrId]>,
}

/// A label selector over interned labels. `LabelMatcher::nothing()` is what a nil
/// `metav1.LabelSelector` means in affinity terms and spread constraints.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelMatcher {
    requirements: Box<[LabelRequirement]>,
    nothing: bool,
}

impl LabelMatcher {
    pub fn nothing() -> LabelMatcher {
        LabelMatcher { requirements: Box::new([]), nothing: true }
    }

    pub fn everything() -> LabelMatcher {
        LabelMatcher { requirements: Box::new([]), nothing: false }
    }

    /// Compiles a parsed selector. Operators a `metav1.LabelSelector` cannot express
    /// (`Gt`/`Lt`) match nothing.
    pub fn compile(selector: &Selector, interner: &mut Interner) -> LabelMatcher {
        let mut requirements = Vec::with_capacity(selector.requirements().len());
        for requirement in selector.requirements() {
            let op = match requirement.operator() {
                Operator::Equals | Operator::In => SetOp::In,
                Operator::NotEquals | Operator::NotIn => SetOp::NotIn,
                Operator::Exists => SetOp::Exists,
                Operator::DoesNotExist => SetOp::DoesNotExist,
                Operator::GreaterThan | Operator::LessThan => return LabelMatcher::nothing(),
            };
            let mut values: Vec<StrId> = requirement.values().iter().map(|v| interner.intern(v)).collect();
            values.sort_unstable();
            requirements.push(LabelRequirement { key: interner.intern(requirement.key()), op, values: values.into() });
        }
        LabelMatcher { requirements: requirements.into(), nothing: false }
    }

    /// Compiles an optional `metav1.LabelSelector`; nil and invalid selectors match nothing.
    pub fn from_wire(
        selector: Option<&keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
        interner: &mut Interner,
    ) -> LabelMatcher {
        match selector.map(Selector::from_label_selector) {
            Some(Ok(selector)) => LabelMatcher::compile(&selector, interner),
            _ => LabelMatcher::nothing(),
        }
    }

    /// Adds `key In (value)`; used for `matchLabelKeys`.
    pub fn and_equals(&mut self, key: StrId, value: StrId) {
        let mut requirements = self.requirements.to_vec();
        requirements.push(LabelRequirement { key, op: SetOp::In, values: Box::new([value]) });
        self.requirements = requirements.into();
    }

    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    #[inline]
    pub fn matches(&self, labels: &[(StrId, StrId)]) -> bool {
        if self.nothing {
            return false;
        }
        self.requirements.iter().all(|r| {
            let value = label_value(labels, r.key);
            match r.op {
                SetOp::In => value.is_some_and(|v| r.values.contains(&v)),
                SetOp::NotIn => !value.is_some_and(|v| r.values.contains(&v)),
                SetOp::Exists => value.is_some(),
                SetOp::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// One requirement of a node selector term, resolved to a column.
#[derive(Clone, Debug, PartialEq)]
enum NodeRequirement {
    In(ColId, Box<[Domain]>),
    NotIn(ColId, Box<[Domain]>),
    Exists(ColId),
    DoesNotExist(ColId),
    Gt(ColId, i64),
    Lt(ColId, i64),
    NameIn(Box<[NodeIx]>),
    NameNotIn(Box<[NodeIx]>),
    Never,
}

/// A conjunction of node requirements: one `nodeSelectorTerm`, or a `nodeSelector` map.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTerm {
    requirements: Box<[NodeRequirement]>,
}

impl NodeTerm {
    /// `spec.nodeSelector`: every key must have exactly that value.
    pub fn from_map<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>, columns: &mut Columns) -> NodeTerm {
        let requirements = map
            .into_iter()
            .map(|(key, value)| {
                let column = columns.column_for(key);
                NodeRequirement::In(column, Box::new([columns.domain_for(column, value)]))
            })
            .collect();
        NodeTerm { requirements }
    }

    /// A `nodeSelectorTerm`. A term with no requirements matches no node, as in Kubernetes.
    pub fn from_wire(
        term: &NodeSelectorTerm,
        columns: &mut Columns,
        node_ix: &dyn Fn(&str) -> Option<NodeIx>,
    ) -> NodeTerm {
        let expressions = term.match_expressions.iter().flatten();
        let fields = term.match_fields.iter().flatten();
        let mut requirements: Vec<NodeRequirement> = expressions.map(|r| label_requirement(r, columns)).collect();
        requirements.extend(fields.map(|r| field_requirement(r, node_ix)));
        if requirements.is_empty() {
            requirements.push(NodeRequirement::Never);
        }
        NodeTerm { requirements: requirements.into() }
    }

    #[inline]
    pub fn matches(&self, columns: &Columns, node: NodeIx) -> bool {
        self.requirements.iter().all(|r| match r {
            NodeRequirement::In(c, domains) => domains.contains(&columns.get(*c).domain(node)),
            NodeRequirement::NotIn(c, domains) => !domains.contains(&columns.get(*c).domain(node)),
            NodeRequirement::Exists(c) => columns.get(*c).domain(node) != ABSENT,
            NodeRequirement::DoesNotExist(c) => columns.get(*c).domain(node) == ABSENT,
            NodeRequirement::Gt(c, bound) => {
                let column = columns.get(*c);
                column.int(column.domain(node)).is_some_and(|v| v > *bound)
            }
            NodeRequirement::Lt(c, bound) => {
                let column = columns.get(*c);
                column.int(column.domain(node)).is_some_and(|v| v < *bound)
            }
            NodeRequirement::NameIn(nodes) => nodes.contains(&node),
            NodeRequirement::NameNotIn(nodes) => !nodes.contains(&node),
            NodeRequirement::Never => false,
        })
    }
}

fn label_requirement(r: &NodeSelectorRequirement, columns: &mut Columns) -> NodeRequirement {
    let column = columns.column_for(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    let domains =
        |columns: &mut Columns| -> Box<[Domain]> { values.iter().map(|v| columns.domain_for(column, v)).collect() };
    let bound = || values.first().and_then(|v| v.parse::<i64>().ok());
    match r.operator.as_str() {
        "In" => NodeRequirement::In(column, domains(columns)),
        "NotIn" => NodeRequirement::NotIn(column, domains(columns)),
        "Exists" => NodeRequirement::Exists(column),
        "DoesNotExist" => NodeRequirement::DoesNotExist(column),
        "Gt" => bound().map_or(NodeRequirement::Never, |b| NodeRequirement::Gt(column, b)),
        "Lt" => bound().map_or(NodeRequirement::Never, |b| NodeRequirement::Lt(column, b)),
        _ => NodeRequirement::Never,
    }
}

/// `matchFields` supports only `metadata.name` with `In`/`NotIn`, as Kubernetes does.
fn field_requirement(r: &NodeSelectorRequirement, node_ix: &dyn Fn(&str) -> Option<NodeIx>) -> NodeRequirement {
    if r.key != "metadata.name" {
        return NodeRequirement::Never;
    }
    let nodes: Box<[NodeIx]> = r.values.iter().flatten().filter_map(|name| node_ix(name)).collect();
    match r.operator.as_str() {
        "In" => NodeRequirement::NameIn(nodes),
        "NotIn" => NodeRequirement::NameNotIn(nodes),
        _ => NodeRequirement::Never,
    }
}

/// A disjunction of terms: `requiredDuringSchedulingIgnoredDuringExecution`. No terms
/// matches no node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeMatcher {
    pub terms: Box<[NodeTerm]>,
}

impl NodeMatcher {
    #[inline]
    pub fn matches(&self, columns: &Columns, node: NodeIx) -> bool {
        self.terms.iter().any(|t| t.matches(columns, node))
    }

    /// The only nodes that can match, when every term names its nodes (`matchFields`
    /// `metadata.name In`, as a DaemonSet's pods do): the union over terms of each
    /// term's named nodes (their intersection, if a term names several sets). `None`
    /// when some term could match nodes it does not name.
    pub fn named_nodes(&self) -> Option<Vec<NodeIx>> {
        let mut all = Vec::new();
        for term in self.terms.iter() {
            let mut named: Option<Vec<NodeIx>> = None;
            for requirement in term.requirements.iter() {
                if let NodeRequirement::NameIn(nodes) = requirement {
                    named = Some(match named {
                        None => nodes.to_vec(),
                        Some(before) => before.into_iter().filter(|n| nodes.contains(n)).collect(),
                    });
                }
            }
            all.extend(named?);
        }
        all.sort_unstable();
        all.dedup();
        Some(all)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl Effect {
    pub fn parse(text: &str) -> Option<Effect> {
        match text {
            "NoSchedule" => Some(Effect::NoSchedule),
            "PreferNoSchedule" => Some(Effect::PreferNoSchedule),
            "NoExecute" => Some(Effect::NoExecute),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompiledTaint {
    pub key: StrId,
    pub value: StrId,
    pub effect: Effect,
}

impl CompiledTaint {
    pub fn compile(taint: &Taint, interner: &mut Interner) -> Option<CompiledTaint> {
        Some(CompiledTaint {
            key: interner.intern(&taint.key),
            value: interner.intern(taint.value.as_deref().unwrap_or("")),
            effect: Effect::parse(&taint.effect)?,
        })
    }

    /// `{key: value}`, as kube-scheduler prints an untolerated taint.
    pub fn describe(&self, interner: &Interner) -> String {
        format!("{{{}: {}}}", interner.resolve(self.key), interner.resolve(self.value))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompiledToleration {
    /// `NONE`: the empty key, which with `Exists` tolerates every taint.
    key: StrId,
    exists: bool,
    value: StrId,
    effect: Option<Effect>,
}

impl CompiledToleration {
    pub fn compile(toleration: &Toleration, interner: &mut Interner) -> CompiledToleration {
        let key = toleration.key.as_deref().filter(|k| !k.is_empty()).map_or(NONE, |k| interner.intern(k));
        CompiledToleration {
            key,
            exists: toleration.operator.as_deref() == Some("Exists"),
            value: interner.intern(toleration.value.as_deref().unwrap_or("")),
            effect: toleration.effect.as_deref().and_then(Effect::parse),
        }
    }

    pub fn effect(&self) -> Option<Effect> {
        self.effect
    }

    /// kube's `ToleratesTaint`.
    #[inline]
    pub fn tolerates(&self, taint: &CompiledTaint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if self.key != NONE && self.key != taint.key {
            return false;
        }
        self.exists || self.value == taint.value
    }
}

#[inline]
pub fn tolerated(tolerations: &[CompiledToleration], taint: &CompiledTaint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_matcher_follows_selector_semantics() {
        let mut interner = Interner::default();
        let selector = Selector::parse("app in (web,api),!canary,tier!=db").unwrap();
        let matcher = LabelMatcher::compile(&selector, &mut interner);
        let mut set = |pairs: &[(&str, &str)]| {
            let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            label_set(&mut interner, owned.iter().map(|(k, v)| (k, v)))
        };
        let web = set(&[("app", "web")]);
        let canary = set(&[("app", "web"), ("canary", "")]);
        let db = set(&[("app", "api"), ("tier", "db")]);
        let other = set(&[("app", "batch")]);
        assert!(matcher.matches(&web));
        assert!(!matcher.matches(&canary));
        assert!(!matcher.matches(&db));
        assert!(!matcher.matches(&other));
        assert!(!LabelMatcher::nothing().matches(&web));
        assert!(LabelMatcher::everything().matches(&[]));
    }

    #[test]
    fn tolerations_follow_kubernetes() {
        let mut interner = Interner::default();
        let taint: Taint =
            serde_json::from_value(serde_json::json!({"key": "gpu", "value": "a", "effect": "NoSchedule"})).unwrap();
        let taint = CompiledTaint::compile(&taint, &mut interner).unwrap();
        let tol = |v: serde_json::Value, interner: &mut Interner| {
            CompiledToleration::compile(&serde_json::from_value(v).unwrap(), interner)
        };
        assert!(tol(serde_json::json!({"key": "gpu", "value": "a"}), &mut interner).tolerates(&taint));
        assert!(!tol(serde_json::json!({"key": "gpu", "value": "b"}), &mut interner).tolerates(&taint));
        assert!(tol(serde_json::json!({"key": "gpu", "operator": "Exists"}), &mut interner).tolerates(&taint));
        assert!(tol(serde_json::json!({"operator": "Exists"}), &mut interner).tolerates(&taint));
        assert!(!tol(serde_json::json!({"operator": "Exists", "effect": "NoExecute"}), &mut interner).tolerates(&taint));
    }
}
