//! VolumeBinding, for claims that are already bound: a pod whose PersistentVolumeClaims
//! are bound to volumes with node affinity (local volumes, zonal disks) may only go to
//! nodes every one of those volumes allows. A claim that is missing or being deleted
//! blocks the pod on every node until it changes; a claim bound to a volume that does
//! not exist rejects every node. Messages are kube's.
//!
//! A claim not bound yet does not constrain the pod, as for a `WaitForFirstConsumer`
//! class: keelson has no StorageClasses, and nothing provisions or binds at scheduling
//! time (see [`crate::query::VolumeAffinity`]).

use crate::framework::{Plugin, PluginState, Prepared, Rejection, Status};
use crate::query::{PodQuery, VolumeAffinity};
use crate::snapshot::{NodeIx, Snapshot};

const NODE_CONFLICT: u32 = 0;
const VOLUME_MISSING: u32 = 1;

pub struct VolumeBinding;

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }

    fn node_local(&self) -> bool {
        true
    }

    fn pre_filter(&self, pod: &PodQuery, _: &Snapshot) -> Result<Prepared, Status> {
        match &pod.volumes {
            VolumeAffinity::Anywhere => Ok(Prepared::skip()),
            VolumeAffinity::Blocked(reason) => Err(Status::unresolvable(self.name(), reason.to_string())),
            VolumeAffinity::MissingVolume | VolumeAffinity::Required(_) => Ok(Prepared::run()),
        }
    }

    #[inline]
    fn filter(&self, _: &PluginState, pod: &PodQuery, snapshot: &Snapshot, node: NodeIx) -> Result<(), Rejection> {
        match &pod.volumes {
            VolumeAffinity::Required(matchers) => {
                let columns = &snapshot.nodes.columns;
                if matchers.iter().all(|m| m.matches(columns, node)) {
                    Ok(())
                } else {
                    Err(Rejection::unresolvable(NODE_CONFLICT))
                }
            }
            VolumeAffinity::MissingVolume => Err(Rejection::unresolvable(VOLUME_MISSING)),
            VolumeAffinity::Anywhere | VolumeAffinity::Blocked(_) => Ok(()),
        }
    }

    fn explain(&self, rejection: Rejection, _: &PodQuery, _: &Snapshot, _: NodeIx, out: &mut Vec<String>) {
        out.push(match rejection.reason {
            VOLUME_MISSING => "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)".into(),
            _ => "node(s) had volume node affinity conflict".into(),
        });
    }
}
