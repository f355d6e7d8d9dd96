//! The list and patch semantics of the built-in types' fields, as the Go types declare
//! them with markers (`+patchStrategy`, `+patchMergeKey`, `+listType`, `+listMapKey`,
//! `+mapType`, `+structType`).
//!
//! They are what the OpenAPI documents publish as `x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`: kubectl computes strategic
//! merge patches from them, and server-side apply tracks field ownership by them.

mod fields;

/// One field's markers; absent markers are `None` (or an empty key list).
#[derive(Debug, PartialEq, Eq)]
pub struct FieldMarkers {
    /// The OpenAPI definition name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub definition: &'static str,
    /// The field's JSON name.
    pub field: &'static str,
    pub patch_strategy: Option<&'static str>,
    pub patch_merge_key: Option<&'static str>,
    pub list_type: Option<&'static str>,
    pub list_map_keys: &'static [&'static str],
    /// `+mapType=atomic` or `+structType=atomic` on the field: replaced as a whole.
    pub atomic: bool,
}

/// Whether a type is marked `+structType=atomic` (owned and replaced as a whole).
pub fn is_atomic_type(definition: &str) -> bool {
    fields::ATOMIC_TYPES.binary_search(&definition).is_ok()
}

/// Every marked field of one definition (a contiguous run of the sorted table).
pub fn of_definition(definition: &str) -> &'static [FieldMarkers] {
    let start = fields::FIELDS.partition_point(|f| f.definition < definition);
    let len = fields::FIELDS[start..].partition_point(|f| f.definition == definition);
    &fields::FIELDS[start..start + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(fields::FIELDS.windows(2).all(|w| (w[0].definition, w[0].field) < (w[1].definition, w[1].field)));
        assert!(fields::ATOMIC_TYPES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn pod_spec_containers_merge_by_name() {
        let spec = of_definition("io.k8s.api.core.v1.PodSpec");
        let containers = spec.iter().find(|f| f.field == "containers").unwrap();
        assert_eq!(containers.patch_strategy, Some("merge"));
        assert_eq!(containers.patch_merge_key, Some("name"));
        assert_eq!(containers.list_map_keys, &["name"]);
        let ports = of_definition("io.k8s.api.core.v1.Container").iter().find(|f| f.field == "ports").unwrap();
        assert_eq!(ports.list_map_keys, &["containerPort", "protocol"]);
        assert!(of_definition("io.k8s.api.core.v1.NoSuchThing").is_empty());
        assert!(is_atomic_type("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"));
        assert!(!is_atomic_type("io.k8s.api.core.v1.PodSpec"));
    }
}
