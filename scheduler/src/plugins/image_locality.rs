//! ImageLocality: favours nodes that already hold the pod's images, weighted by image size
//! and scaled down for images present everywhere (so it does not herd pods).

use crate::framework::{Plugin, PluginState, Prepared, Status, MAX_NODE_SCORE};
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, Snapshot};

const MB: i64 = 1024 * 1024;
/// Below this an image is too small to matter (kube's `minThreshold`).
const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container, above this the score is full (kube's `maxContainerThreshold`).
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub struct ImageLocality;

/// Per pod image, the share of nodes holding it.
struct Spread {
    images: Vec<(crate::intern::StrId, f64)>,
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }

    fn pre_score(&self, pod: &PodQuery, snapshot: &Snapshot, _: &[NodeIx]) -> Result<Prepared, Status> {
        let total = snapshot.nodes.live_count().max(1) as f64;
        let images: Vec<_> = pod
            .images
            .iter()
            .filter_map(|image| {
                snapshot.image_nodes.get(image).filter(|&&n| n > 0).map(|&n| (*image, f64::from(n) / total))
            })
            .collect();
        if images.is_empty() {
            // Still scores: every node gets the same (zero) score.
            return Ok(Prepared::skip());
        }
        Ok(Prepared::with_state(Spread { images }))
    }

    #[inline]
    fn score(&self, state: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> i64 {
        let spread = crate::framework::state::<Spread>(state);
        let held = &snapshot.nodes.images[node as usize];
        let mut sum = 0i64;
        for &(image, share) in &spread.images {
            if let Ok(at) = held.binary_search_by_key(&image, |&(id, _)| id) {
                sum += (held[at].1 as f64 * share) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * pod.images.len().max(1) as i64;
        let clamped = sum.clamp(MIN_THRESHOLD, max);
        MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}
