//! Node labels as columns: one dense array per label key, holding each node's value as a
//! small integer (its *domain* within that key). Node affinity and topology spread read a
//! node's value with one index, and a topology key's domains number `0..n`, so per-domain
//! counts are plain vectors.

use super::NodeIx;
use std::collections::HashMap;

/// A column: a label key seen on nodes or asked for by a pod.
pub type ColId = u32;
/// A value's index within one column.
pub type Domain = u32;
/// The domain of a node that lacks the label.
pub const ABSENT: Domain = u32::MAX;

#[derive(Debug)]
pub struct Column {
    pub key: Box<str>,
    /// Indexed by node; `ABSENT` for nodes without the label (and for free rows).
    pub domain_of_node: Vec<Domain>,
    values: Vec<Box<str>>,
    /// Each value parsed as an integer, for the `Gt`/`Lt` operators.
    ints: Vec<Option<i64>>,
    index: HashMap<Box<str>, Domain>,
}

impl Column {
    fn new(key: &str, rows: usize) -> Column {
        Column {
            key: key.into(),
            domain_of_node: vec![ABSENT; rows],
            values: Vec::new(),
            ints: Vec::new(),
            index: HashMap::new(),
        }
    }

    #[inline]
    pub fn domain(&self, node: NodeIx) -> Domain {
        self.domain_of_node[node as usize]
    }

    /// How many distinct values this key has had; domains are `0..domain_count()`.
    pub fn domain_count(&self) -> usize {
        self.values.len()
    }

    pub fn lookup(&self, value: &str) -> Domain {
        self.index.get(value).copied().unwrap_or(ABSENT)
    }

    pub fn value(&self, domain: Domain) -> &str {
        self.values.get(domain as usize).map_or("", |v| v)
    }

    #[inline]
    pub fn int(&self, domain: Domain) -> Option<i64> {
        self.ints.get(domain as usize).copied().flatten()
    }

    fn intern(&mut self, value: &str) -> Domain {
        if let Some(&domain) = self.index.get(value) {
            return domain;
        }
        let domain = Domain::try_from(self.values.len()).expect("fewer than 2^32 values per key");
        self.values.push(value.into());
        self.ints.push(value.parse().ok());
        self.index.insert(value.into(), domain);
        domain
    }
}

#[derive(Debug, Default)]
pub struct Columns {
    columns: Vec<Column>,
    index: HashMap<Box<str>, ColId>,
    rows: usize,
}

impl Columns {
    /// The column of `key`, created (every node absent) if no node has had it yet, so a
    /// compiled query can hold column ids that stay valid as nodes come and go.
    pub fn column_for(&mut self, key: &str) -> ColId {
        if let Some(&id) = self.index.get(key) {
            return id;
        }
        let id = ColId::try_from(self.columns.len()).expect("fewer than 2^32 label keys");
        self.columns.push(Column::new(key, self.rows));
        self.index.insert(key.into(), id);
        id
    }

    pub fn find(&self, key: &str) -> Option<ColId> {
        self.index.get(key).copied()
    }

    #[inline]
    pub fn get(&self, id: ColId) -> &Column {
        &self.columns[id as usize]
    }

    /// The domain `value` has in column `id`, created if new (compiled queries use it to
    /// resolve `In` values; an unseen value gets a domain no node is in).
    pub fn domain_for(&mut self, id: ColId, value: &str) -> Domain {
        self.columns[id as usize].intern(value)
    }

    pub fn grow(&mut self, rows: usize) {
        self.rows = rows;
        for column in &mut self.columns {
            column.domain_of_node.resize(rows, ABSENT);
        }
    }

    /// Replaces a node's labels: absent from every column, then set for each label.
    pub fn set_row<'a>(&mut self, node: NodeIx, labels: impl Iterator<Item = (&'a str, &'a str)>) {
        self.clear_row(node);
        for (key, value) in labels {
            let id = self.column_for(key);
            let column = &mut self.columns[id as usize];
            let domain = column.intern(value);
            column.domain_of_node[node as usize] = domain;
        }
    }

    pub fn clear_row(&mut self, node: NodeIx) {
        for column in &mut self.columns {
            column.domain_of_node[node as usize] = ABSENT;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter()
    }
}
