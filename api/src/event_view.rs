//! `events.k8s.io/v1` Events are a second view of core `v1` Events, as in Kubernetes:
//! one storage (`/registry/events/`), so an event written through either API is read
//! through both (`kubectl get events` shows what a controller recorded with the events
//! API). Objects are stored in the core form; the events API converts on the way in
//! and out. The mapping is kube's conversion: the events API's `regarding`, `note`,
//! `reportingController` and `deprecated*` fields are core's `involvedObject`,
//! `message`, `reportingComponent`, `count`, `firstTimestamp`, `lastTimestamp` and
//! `source`; everything else has the same name in both.

use serde_json::Value;

/// (events.k8s.io/v1 name, core/v1 name).
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
];

/// How a resource's objects differ from the form they are stored in.
pub struct StorageView {
    /// The served form → the stored form.
    pub to_storage: fn(&mut Value),
    /// The stored form → the served form.
    pub from_storage: fn(&mut Value),
}

/// The view `events.k8s.io/v1` Events have of core Events.
pub static EVENTS_V1: StorageView = StorageView { to_storage: to_core, from_storage: from_core };

/// Renames each `(from, to)` field present.
fn rename(event: &mut Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) {
    let Some(map) = event.as_object_mut() else { return };
    for (from, to) in pairs {
        if let Some(value) = map.remove(from) {
            map.insert(to.to_string(), value);
        }
    }
}

/// An events.k8s.io/v1 Event in the core v1 form.
pub fn to_core(event: &mut Value) {
    rename(event, RENAMED.iter().copied());
    if let Some(map) = event.as_object_mut() {
        map.insert("apiVersion".into(), "v1".into());
    }
}

/// A core v1 Event in the events.k8s.io/v1 form.
pub fn from_core(event: &mut Value) {
    rename(event, RENAMED.iter().map(|&(events, core)| (core, events)));
    if let Some(map) = event.as_object_mut() {
        map.insert("apiVersion".into(), "events.k8s.io/v1".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_two_forms_convert_both_ways() {
        let events_v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "eventTime": "2026-11-23T00:00:00.000000Z", "reportingController": "example.com/ctl",
            "reportingInstance": "ctl-1", "action": "Scale", "reason": "Scaled", "type": "Normal",
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"},
            "note": "scaled to 3", "deprecatedCount": 2, "deprecatedSource": {"component": "ctl"},
            "series": {"count": 2, "lastObservedTime": "2026-11-23T00:00:01.000000Z"}});
        let mut core = events_v1.clone();
        to_core(&mut core);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "scaled to 3");
        assert_eq!(core["reportingComponent"], "example.com/ctl");
        assert_eq!((core["count"].as_i64(), core["source"]["component"].as_str()), (Some(2), Some("ctl")));
        assert_eq!(core["series"], events_v1["series"]);
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        let mut back = core;
        from_core(&mut back);
        assert_eq!(back, events_v1);
    }
}
