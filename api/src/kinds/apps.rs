//! Workload kinds: Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob.

use super::pod::{check_enum, default_template, validate_template};
use super::{Kind, Path};
use keelson_engine::k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDaemonSet,
    RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetUpdateStrategy,
};
use keelson_engine::k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use keelson_engine::k8s_openapi::api::core::v1::PodTemplateSpec;
use keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_engine::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_engine::{FieldError, FieldErrorKind, Selector};
use std::collections::BTreeMap;

fn percent(text: &str) -> Option<IntOrString> {
    Some(IntOrString::String(text.into()))
}

/// The checks every selector-driven workload shares: a selector that is present, not
/// empty, and matches the template's labels.
fn validate_selector(
    selector: Option<&LabelSelector>,
    template: &PodTemplateSpec,
    path: &Path,
    errors: &mut Vec<FieldError>,
) {
    let selector_path = path.child("selector");
    let Some(selector) = selector else {
        errors.push(FieldError::required(selector_path.as_str(), ""));
        return;
    };
    let parsed = match Selector::from_label_selector(selector) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.push(FieldError::invalid(selector_path.as_str(), "", e.to_string()));
            return;
        }
    };
    if parsed.is_everything() {
        errors.push(FieldError::invalid(selector_path.as_str(), "", "empty selector is invalid for deployment"));
        return;
    }
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    if !parsed.matches(&labels) {
        errors.push(FieldError::new(
            FieldErrorKind::Invalid,
            path.child("template").child("metadata").child("labels").as_str(),
            Some(format!("map[string]string{labels:?}")),
            "`selector` does not match template `labels`",
        ));
    }
}

fn immutable<T: PartialEq + std::fmt::Debug>(new: &T, old: &T, path: &str, errors: &mut Vec<FieldError>) {
    if new != old {
        errors.push(FieldError::new(FieldErrorKind::Invalid, path, Some(format!("{new:?}")), "field is immutable"));
    }
}

fn non_negative(value: Option<i32>, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(value) = value.filter(|v| *v < 0) {
        errors.push(FieldError::new(
            FieldErrorKind::Invalid,
            path,
            Some(value.to_string()),
            "must be greater than or equal to 0",
        ));
    }
}

impl Kind for Deployment {
    fn apply_defaults(&mut self) {
        let Some(spec) = &mut self.spec else { return };
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
            if rolling.max_unavailable.is_none() {
                rolling.max_unavailable = percent("25%");
            }
            if rolling.max_surge.is_none() {
                rolling.max_surge = percent("25%");
            }
        }
        default_template(&mut spec.template);
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        let Some(spec) = &self.spec else { return errors.push(FieldError::required("spec", "")) };
        let path = Path::new("spec");
        non_negative(spec.replicas, "spec.replicas", errors);
        validate_selector(Some(&spec.selector), &spec.template, &path, errors);
        validate_template(&spec.template, &path.child("template"), errors);
        check_enum(
            spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
            &["Recreate", "RollingUpdate"],
            &path.child("strategy").child("type"),
            errors,
        );
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        if let (Some(new), Some(old)) = (&self.spec, &old.spec) {
            immutable(&new.selector, &old.selector, "spec.selector", errors);
        }
    }
}

impl Kind for ReplicaSet {
    fn apply_defaults(&mut self) {
        let Some(spec) = &mut self.spec else { return };
        spec.replicas.get_or_insert(1);
        if let Some(template) = &mut spec.template {
            default_template(template);
        }
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        let Some(spec) = &self.spec else { return errors.push(FieldError::required("spec", "")) };
        let path = Path::new("spec");
        non_negative(spec.replicas, "spec.replicas", errors);
        match &spec.template {
            Some(template) => {
                validate_selector(Some(&spec.selector), template, &path, errors);
                validate_template(template, &path.child("template"), errors);
            }
            None => errors.push(FieldError::required("spec.template", "")),
        }
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        if let (Some(new), Some(old)) = (&self.spec, &old.spec) {
            immutable(&new.selector, &old.selector, "spec.selector", errors);
        }
    }
}

impl Kind for StatefulSet {
    fn apply_defaults(&mut self) {
        let Some(spec) = &mut self.spec else { return };
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.pod_management_policy.get_or_insert_with(|| "OrderedReady".into());
        let strategy = spec.update_strategy.get_or_insert_with(StatefulSetUpdateStrategy::default);
        if strategy.type_.get_or_insert_with(|| "RollingUpdate".into()) == "RollingUpdate" {
            strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
                .partition
                .get_or_insert(0);
        }
        let retention = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
        retention.when_deleted.get_or_insert_with(|| "Retain".into());
        retention.when_scaled.get_or_insert_with(|| "Retain".into());
        default_template(&mut spec.template);
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        let Some(spec) = &self.spec else { return errors.push(FieldError::required("spec", "")) };
        let path = Path::new("spec");
        non_negative(spec.replicas, "spec.replicas", errors);
        validate_selector(Some(&spec.selector), &spec.template, &path, errors);
        validate_template(&spec.template, &path.child("template"), errors);
        check_enum(
            spec.pod_management_policy.as_deref(),
            &["OrderedReady", "Parallel"],
            &path.child("podManagementPolicy"),
            errors,
        );
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        if let (Some(new), Some(old)) = (&self.spec, &old.spec) {
            immutable(&new.selector, &old.selector, "spec.selector", errors);
            immutable(&new.service_name, &old.service_name, "spec.serviceName", errors);
        }
    }
}

impl Kind for DaemonSet {
    fn apply_defaults(&mut self) {
        let Some(spec) = &mut self.spec else { return };
        spec.revision_history_limit.get_or_insert(10);
        let strategy = spec.update_strategy.get_or_insert_with(DaemonSetUpdateStrategy::default);
        if strategy.type_.get_or_insert_with(|| "RollingUpdate".into()) == "RollingUpdate" {
            let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDaemonSet::default);
            rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
            rolling.max_surge.get_or_insert(IntOrString::Int(0));
        }
        default_template(&mut spec.template);
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        let Some(spec) = &self.spec else { return errors.push(FieldError::required("spec", "")) };
        let path = Path::new("spec");
        validate_selector(Some(&spec.selector), &spec.template, &path, errors);
        validate_template(&spec.template, &path.child("template"), errors);
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        if let (Some(new), Some(old)) = (&self.spec, &old.spec) {
            immutable(&new.selector, &old.selector, "spec.selector", errors);
        }
    }
}

/// The label the Job controller selects its pods by.
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

fn default_job_spec(spec: &mut JobSpec, uid: Option<&str>, name: Option<&str>) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
        spec.parallelism = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode.get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    spec.pod_replacement_policy.get_or_insert_with(|| "TerminatingOrFailed".into());
    // The server generates the selector from the Job's uid (unless manualSelector).
    if spec.manual_selector != Some(true) && spec.selector.is_none() {
        if let Some(uid) = uid {
            spec.selector = Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(JOB_CONTROLLER_UID.to_string(), uid.to_string())])),
                ..Default::default()
            });
            let labels =
                spec.template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new);
            labels.insert(JOB_CONTROLLER_UID.into(), uid.into());
            labels.insert("controller-uid".into(), uid.into());
            if let Some(name) = name {
                labels.insert(JOB_NAME.into(), name.into());
                labels.insert("job-name".into(), name.into());
            }
        }
    }
    default_template(&mut spec.template);
}

fn validate_job_spec(spec: &JobSpec, path: &Path, errors: &mut Vec<FieldError>) {
    non_negative(spec.parallelism, path.child("parallelism").as_str(), errors);
    non_negative(spec.completions, path.child("completions").as_str(), errors);
    non_negative(spec.backoff_limit, path.child("backoffLimit").as_str(), errors);
    validate_selector(spec.selector.as_ref(), &spec.template, path, errors);
    validate_template(&spec.template, &path.child("template"), errors);
    let restart = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
    if let Some(restart) = restart.filter(|r| !matches!(*r, "OnFailure" | "Never")) {
        errors.push(FieldError::new(
            FieldErrorKind::NotSupported,
            path.child("template").child("spec").child("restartPolicy").as_str(),
            Some(format!("{restart:?}")),
            "supported values: \"OnFailure\", \"Never\"",
        ));
    }
}

impl Kind for Job {
    fn apply_defaults(&mut self) {
        let uid = self.metadata.uid.clone();
        let name = self.metadata.name.clone();
        if let Some(spec) = &mut self.spec {
            default_job_spec(spec, uid.as_deref(), name.as_deref());
        }
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        match &self.spec {
            Some(spec) => validate_job_spec(spec, &Path::new("spec"), errors),
            None => errors.push(FieldError::required("spec", "")),
        }
    }

    fn validate_update(&self, old: &Self, errors: &mut Vec<FieldError>) {
        if let (Some(new), Some(old)) = (&self.spec, &old.spec) {
            immutable(&new.selector, &old.selector, "spec.selector", errors);
            immutable(&new.completions, &old.completions, "spec.completions", errors);
        }
    }
}

impl Kind for CronJob {
    fn apply_defaults(&mut self) {
        let Some(spec) = &mut self.spec else { return };
        spec.concurrency_policy.get_or_insert_with(|| "Allow".into());
        spec.suspend.get_or_insert(false);
        spec.successful_jobs_history_limit.get_or_insert(3);
        spec.failed_jobs_history_limit.get_or_insert(1);
        if let Some(job) = &mut spec.job_template.spec {
            default_template(&mut job.template);
        }
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        let Some(spec) = &self.spec else { return errors.push(FieldError::required("spec", "")) };
        if spec.schedule.trim().is_empty() {
            errors.push(FieldError::required("spec.schedule", ""));
        } else if spec.schedule.contains("TZ") {
            errors.push(FieldError::invalid(
                "spec.schedule",
                &spec.schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        } else if let Err(error) = keelson_engine::cron::Schedule::parse(&spec.schedule) {
            errors.push(FieldError::invalid("spec.schedule", &spec.schedule, error.to_string()));
        }
        if let Some(zone) = spec.time_zone.as_deref() {
            if jiff::tz::TimeZone::get(zone).is_err() {
                errors.push(FieldError::invalid("spec.timeZone", zone, format!("unknown time zone {zone}")));
            }
        }
        check_enum(
            spec.concurrency_policy.as_deref(),
            &["Allow", "Forbid", "Replace"],
            &Path::new("spec").child("concurrencyPolicy"),
            errors,
        );
        if let Some(job) = &spec.job_template.spec {
            let path = Path::new("spec").child("jobTemplate").child("spec");
            validate_template(&job.template, &path.child("template"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::{KindCodec, Write, DEPLOYMENT, JOB};
    use serde_json::json;

    fn deployment(labels: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "main", "image": "nginx"}]}}}})
    }

    #[test]
    fn deployment_defaults_and_selector() {
        let out = DEPLOYMENT.admit_value(&deployment(json!({"app": "web"})), Write::Create, None).unwrap();
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(out["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(out["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(out["spec"]["progressDeadlineSeconds"], 600);
        let error = DEPLOYMENT.admit_value(&deployment(json!({"app": "db"})), Write::Create, None).unwrap_err();
        assert_eq!(error.causes[0].field, "spec.template.metadata.labels");
        let mut changed = out.clone();
        changed["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        changed["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        let error = DEPLOYMENT.admit_value(&changed, Write::Update { old: &out }, None).unwrap_err();
        assert_eq!(error.causes[0].field, "spec.selector");
    }

    #[test]
    fn job_selector_is_generated_from_the_uid() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "hello", "namespace": "d",
            "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
        let out = JOB.admit_value(&job, Write::Create, None).unwrap();
        assert_eq!(out["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(out["spec"]["template"]["metadata"]["labels"]["job-name"], "hello");
        assert_eq!(out["spec"]["backoffLimit"], 6);
        let mut bad = job.clone();
        bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let error = JOB.admit_value(&bad, Write::Create, None).unwrap_err();
        assert_eq!(error.causes[0].field, "spec.template.spec.restartPolicy");
    }
}
