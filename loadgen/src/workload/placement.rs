//! Placement quality after a run: how evenly the scheduler spread CPU requests over
//! the nodes (the fraction of each node's allocatable CPU its pods request), read from
//! paged LISTs of nodes and pods. Together with the scheduler's own audit (the score
//! of the chosen node against the best feasible node's) it is what a
//! `percentageOfNodesToScore` sweep trades against throughput.

use super::cluster::Cluster;
use anyhow::{Context, Result};
use keelson::engine::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Per-node CPU allocation (requested / allocatable), over every node.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Balance {
    pub nodes: usize,
    pub mean: f64,
    /// Standard deviation: lower is a more even spread.
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Deserialize)]
struct List<T> {
    metadata: ListMeta,
    items: Vec<T>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct NodeLite {
    metadata: Named,
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize, Default)]
struct NodeStatus {
    #[serde(default)]
    allocatable: HashMap<String, String>,
}

#[derive(Deserialize)]
struct PodLite {
    #[serde(default)]
    spec: PodSpec,
}

#[derive(Deserialize, Default)]
struct PodSpec {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
    #[serde(default)]
    containers: Vec<Container>,
}

#[derive(Deserialize, Default)]
struct Container {
    #[serde(default)]
    resources: Resources,
}

#[derive(Deserialize, Default)]
struct Resources {
    #[serde(default)]
    requests: HashMap<String, String>,
}

fn milli_cpu(text: Option<&String>) -> i64 {
    text.and_then(|t| t.parse::<Quantity>().ok()).map_or(0, Quantity::milli_value)
}

async fn list_all<T: for<'de> Deserialize<'de>>(cluster: &Cluster, path: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    cluster
        .list_paged(path, |body| {
            let list: List<T> = serde_json::from_slice(body).with_context(|| format!("a list of {path}"))?;
            out.extend(list.items);
            Ok(list.metadata.continue_token)
        })
        .await?;
    Ok(out)
}

pub async fn cpu_balance(cluster: &Cluster) -> Result<Option<Balance>> {
    let nodes: Vec<NodeLite> = list_all(cluster, "/api/v1/nodes").await?;
    let mut requested: HashMap<String, i64> = nodes.iter().map(|n| (n.metadata.name.clone(), 0)).collect();
    for pod in list_all::<PodLite>(cluster, "/api/v1/pods").await? {
        let Some(node) = pod.spec.node_name.as_ref().and_then(|n| requested.get_mut(n)) else { continue };
        *node += pod.spec.containers.iter().map(|c| milli_cpu(c.resources.requests.get("cpu"))).sum::<i64>();
    }
    let fractions: Vec<f64> = nodes
        .iter()
        .filter_map(|n| {
            let allocatable = milli_cpu(n.status.allocatable.get("cpu"));
            (allocatable > 0).then(|| requested[&n.metadata.name] as f64 / allocatable as f64)
        })
        .collect();
    Ok(balance(&fractions))
}

fn balance(fractions: &[f64]) -> Option<Balance> {
    if fractions.is_empty() {
        return None;
    }
    let n = fractions.len() as f64;
    let mean = fractions.iter().sum::<f64>() / n;
    let variance = fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n;
    Some(Balance {
        nodes: fractions.len(),
        mean,
        stddev: variance.sqrt(),
        min: fractions.iter().copied().fold(f64::INFINITY, f64::min),
        max: fractions.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_is_the_spread_of_allocations() {
        let b = balance(&[0.25, 0.75]).unwrap();
        assert_eq!((b.nodes, b.mean, b.stddev, b.min, b.max), (2, 0.5, 0.25, 0.25, 0.75));
        assert!(balance(&[]).is_none());
        assert_eq!(milli_cpu(Some(&"100m".to_string())), 100);
        assert_eq!(milli_cpu(Some(&"4".to_string())), 4000);
    }
}
