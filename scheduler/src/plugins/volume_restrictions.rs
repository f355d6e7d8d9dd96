//! VolumeRestrictions, for `ReadWriteOncePod` claims: only one pod in the cluster may
//! use such a claim, so a pod asking for one another placed pod already uses fits on
//! no node (Unschedulable, as in kube: evicting that pod would free the claim).
//!
//! The inline disk volumes kube also checks here (GCE PD, AWS EBS, RBD, iSCSI) have no
//! plugin left in Kubernetes 1.33 and are not checked.
//!
//! The conflict is decided once per cycle in PreFilter; a preemption what-if does not
//! re-decide it, so the claim's holder is not evicted to free it.

use crate::framework::{Plugin, PluginState, Prepared, Rejection, Status};
use crate::query::PodQuery;
use crate::snapshot::{NodeIx, Snapshot};

pub struct VolumeRestrictions;

impl Plugin for VolumeRestrictions {
    fn name(&self) -> &'static str {
        "VolumeRestrictions"
    }

    fn pre_filter(&self, pod: &PodQuery, snapshot: &Snapshot) -> Result<Prepared, Status> {
        let conflict = pod.record.claims.iter().any(|claim| {
            snapshot.volumes.claim_by_key(claim).is_some_and(|c| c.one_pod) && snapshot.claim_users(claim) > 0
        });
        Ok(if conflict { Prepared::run() } else { Prepared::skip() })
    }

    /// Runs only when PreFilter found the conflict: every node is refused.
    #[inline]
    fn filter(&self, _: &PluginState, _: &PodQuery, _: &Snapshot, _: NodeIx) -> Result<(), Rejection> {
        Err(Rejection::unschedulable(0))
    }

    fn explain(&self, _: Rejection, _: &PodQuery, _: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        out.push("node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode".into());
    }
}
