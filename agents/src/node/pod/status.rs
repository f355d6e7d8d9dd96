//! A pod's status from what its worker knows of each container, computed as the
//! kubelet computes it: phase, conditions, container statuses. Pure, so the rules are
//! unit-tested without a runtime.

use crate::node::runtime::Exit;
use k8s_openapi::api::core::v1::{
    ContainerState as KubeState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::{SystemTime, UNIX_EPOCH};

/// One container as its worker sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: SystemTime },
    Terminated(Exit),
}

#[derive(Clone, Debug)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub id: Option<String>,
    pub state: Observed,
    pub last: Option<Exit>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    /// Whether, once terminated, it will run again (restart policy).
    pub will_restart: bool,
    /// An init container with `restartPolicy: Always`, running beside the others.
    pub sidecar: bool,
}

impl ContainerView {
    /// Done as an init container: a regular one succeeded, a sidecar has started (and
    /// counts as done from then on, even while it restarts).
    fn initialized(&self) -> bool {
        if self.sidecar {
            return self.started || self.restart_count > 0 || matches!(self.state, Observed::Terminated(_));
        }
        matches!(&self.state, Observed::Terminated(e) if e.exit_code == 0)
    }
}

/// Everything the status is computed from.
pub struct PodView<'a> {
    pub init: &'a [ContainerView],
    pub containers: &'a [ContainerView],
    pub sandbox_ready: bool,
    pub host_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    pub start_time: SystemTime,
    /// The init container that failed for good (restartPolicy Never).
    pub init_failed: bool,
    /// The status the API holds now: its conditions keep their transition times.
    pub previous: Option<&'a PodStatus>,
}

pub fn time(at: SystemTime) -> Time {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    // API times are whole seconds.
    Time(jiff::Timestamp::from_second(since.as_secs() as i64).unwrap_or_default())
}

fn state(observed: &Observed, id: Option<&str>) -> KubeState {
    match observed {
        Observed::Waiting { reason, message } => KubeState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
            ..Default::default()
        },
        Observed::Running { started_at } => KubeState {
            running: Some(ContainerStateRunning { started_at: Some(time(*started_at)) }),
            ..Default::default()
        },
        Observed::Terminated(exit) => terminated(exit, id),
    }
}

fn terminated(exit: &Exit, id: Option<&str>) -> KubeState {
    KubeState {
        terminated: Some(ContainerStateTerminated {
            exit_code: exit.exit_code,
            reason: Some(exit.reason.clone()),
            message: exit.message.clone(),
            started_at: exit.started_at.map(time),
            finished_at: Some(time(exit.finished_at)),
            container_id: id.map(str::to_owned),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_status(view: &ContainerView) -> ContainerStatus {
    ContainerStatus {
        name: view.name.clone(),
        image: view.image.clone(),
        image_id: view.image_id.clone(),
        container_id: view.id.clone(),
        ready: view.ready,
        started: Some(view.started),
        restart_count: view.restart_count,
        state: Some(state(&view.state, view.id.as_deref())),
        last_state: Some(view.last.as_ref().map(|e| terminated(e, None)).unwrap_or_default()),
        ..Default::default()
    }
}

/// The pod phase, by the kubelet's rules.
pub fn phase(view: &PodView<'_>) -> &'static str {
    if view.init_failed {
        return "Failed";
    }
    let init_done = view.init.iter().all(ContainerView::initialized);
    if !init_done {
        return "Pending";
    }
    let never_ran = |c: &&ContainerView| matches!(c.state, Observed::Waiting { .. }) && c.last.is_none();
    if view.containers.iter().any(|c| never_ran(&c)) {
        return "Pending";
    }
    let active = |c: &&ContainerView| match &c.state {
        Observed::Running { .. } | Observed::Waiting { .. } => true,
        Observed::Terminated(_) => c.will_restart,
    };
    // Sidecars still being stopped keep the pod Running until they are gone.
    let sidecar_running = view.init.iter().any(|c| c.sidecar && matches!(c.state, Observed::Running { .. }));
    if sidecar_running || view.containers.iter().any(|c| active(&c)) {
        return "Running";
    }
    let failed = view.containers.iter().any(|c| matches!(&c.state, Observed::Terminated(e) if e.exit_code != 0));
    if failed {
        "Failed"
    } else {
        "Succeeded"
    }
}

fn condition(
    previous: Option<&PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let before = previous.and_then(|p| p.conditions.iter().flatten().find(|c| c.type_ == type_));
    let since = before.filter(|c| c.status == status).and_then(|c| c.last_transition_time.clone());
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: Some(since.unwrap_or_else(|| now.clone())),
        ..Default::default()
    }
}

fn names_where(views: &[ContainerView], keep: impl Fn(&ContainerView) -> bool) -> Vec<&str> {
    views.iter().filter(|c| keep(c)).map(|c| c.name.as_str()).collect()
}

pub fn pod_status(view: &PodView<'_>, now: SystemTime) -> PodStatus {
    let now = time(now);
    let phase = phase(view);
    let previous = view.previous;
    let incomplete = names_where(view.init, |c| !c.initialized());
    // Sidecars count toward readiness like the pod's own containers.
    let mut unready = names_where(view.init, |c| c.sidecar && !c.ready);
    unready.extend(names_where(view.containers, |c| !c.ready));
    let completed = matches!(phase, "Succeeded" | "Failed");
    let (ready_reason, ready_message) = match (completed, unready.is_empty()) {
        (true, _) => (Some("PodCompleted"), None),
        (false, false) => {
            (Some("ContainersNotReady"), Some(format!("containers with unready status: [{}]", unready.join(" "))))
        }
        (false, true) => (None, None),
    };
    let ready = !completed && unready.is_empty();
    let initialized = incomplete.is_empty();
    let mut conditions = vec![
        condition(previous, "PodReadyToStartContainers", view.sandbox_ready && !completed, None, None, &now),
        condition(
            previous,
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            (!initialized).then(|| format!("containers with incomplete status: [{}]", incomplete.join(" "))),
            &now,
        ),
        condition(previous, "Ready", ready, ready_reason, ready_message.clone(), &now),
        condition(previous, "ContainersReady", ready, ready_reason, ready_message, &now),
    ];
    if let Some(scheduled) = previous.and_then(|p| p.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled")) {
        conditions.push(scheduled.clone());
    }
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.into()),
        host_ips: Some(vec![HostIP { ip: view.host_ip.into() }]),
        pod_ip: view.pod_ip.map(str::to_owned),
        pod_ips: view.pod_ip.map(|ip| vec![PodIP { ip: ip.into() }]),
        start_time: Some(time(view.start_time)),
        init_container_statuses: (!view.init.is_empty()).then(|| view.init.iter().map(container_status).collect()),
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, state: Observed, will_restart: bool) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "img".into(),
            image_id: String::new(),
            id: None,
            ready: matches!(state, Observed::Running { .. }),
            started: matches!(state, Observed::Running { .. }),
            state,
            last: None,
            restart_count: 0,
            will_restart,
            sidecar: false,
        }
    }

    fn exit(code: i32) -> Observed {
        Observed::Terminated(Exit {
            exit_code: code,
            reason: Exit::reason_for(code).into(),
            message: None,
            started_at: Some(UNIX_EPOCH),
            finished_at: UNIX_EPOCH,
        })
    }

    fn pod<'a>(init: &'a [ContainerView], containers: &'a [ContainerView]) -> PodView<'a> {
        PodView {
            init,
            containers,
            sandbox_ready: true,
            host_ip: "10.0.0.1",
            pod_ip: Some("10.0.0.1"),
            start_time: UNIX_EPOCH,
            init_failed: false,
            previous: None,
        }
    }

    #[test]
    fn sidecars_initialize_once_started_and_do_not_decide_the_phase() {
        let running = || Observed::Running { started_at: UNIX_EPOCH };
        let sidecar = |state: Observed, started: bool| ContainerView {
            started,
            ready: started,
            sidecar: true,
            ..view("side", state, true)
        };
        let condition = |status: &PodStatus, type_: &str| {
            status.conditions.iter().flatten().find(|c| c.type_ == type_).map(|c| c.status.clone()).unwrap()
        };
        let init = [sidecar(running(), false), view("setup", exit(0), false)];
        let main = [view("main", Observed::Waiting { reason: "PodInitializing".into(), message: None }, true)];
        let status = pod_status(&pod(&init, &main), UNIX_EPOCH);
        assert_eq!(status.phase.as_deref(), Some("Pending"), "a sidecar that has not started holds the pod");
        assert_eq!(condition(&status, "Initialized"), "False");

        let init = [sidecar(running(), true), view("setup", exit(0), false)];
        let main = [view("main", running(), true)];
        let status = pod_status(&pod(&init, &main), UNIX_EPOCH);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&status, "Initialized"), "True");
        assert_eq!(condition(&status, "Ready"), "True");
        let unready = [sidecar(running(), false), view("setup", exit(0), false)];
        let unready = [ContainerView { restart_count: 1, ..unready[0].clone() }, unready[1].clone()];
        assert_eq!(condition(&pod_status(&pod(&unready, &main), UNIX_EPOCH), "Ready"), "False", "sidecars count");

        // The main container finished for good: Running until the sidecar is stopped,
        // then Succeeded.
        let init = [sidecar(running(), true), view("setup", exit(0), false)];
        let main = [view("main", exit(0), false)];
        assert_eq!(pod_status(&pod(&init, &main), UNIX_EPOCH).phase.as_deref(), Some("Running"));
        let init = [sidecar(exit(143), false), view("setup", exit(0), false)];
        let main = [view("main", exit(0), false)];
        assert_eq!(pod_status(&pod(&init, &main), UNIX_EPOCH).phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn phases_follow_the_kubelets_rules() {
        let waiting = || Observed::Waiting { reason: "ContainerCreating".into(), message: None };
        let running = || Observed::Running { started_at: UNIX_EPOCH };
        assert_eq!(phase(&pod(&[view("i", running(), false)], &[view("c", waiting(), false)])), "Pending");
        assert_eq!(phase(&pod(&[view("i", exit(0), false)], &[view("c", running(), false)])), "Running");
        assert_eq!(phase(&pod(&[], &[view("c", exit(0), false)])), "Succeeded");
        assert_eq!(phase(&pod(&[], &[view("c", exit(3), false), view("d", exit(0), false)])), "Failed");
        assert_eq!(phase(&pod(&[], &[view("c", exit(3), true)])), "Running", "a container that will restart");
        let mut backing_off = view("c", Observed::Waiting { reason: "CrashLoopBackOff".into(), message: None }, true);
        backing_off.last = Some(Exit {
            exit_code: 1,
            reason: "Error".into(),
            message: None,
            started_at: None,
            finished_at: UNIX_EPOCH,
        });
        assert_eq!(phase(&pod(&[], std::slice::from_ref(&backing_off))), "Running");
        let (init, containers) = ([view("i", exit(1), false)], [view("c", waiting(), false)]);
        let mut failed_init = pod(&init, &containers);
        failed_init.init_failed = true;
        assert_eq!(phase(&failed_init), "Failed");
    }

    #[test]
    fn conditions_name_what_is_missing_and_keep_transition_times() {
        let containers = [view("a", Observed::Running { started_at: UNIX_EPOCH }, false), view("b", exit(0), true)];
        let init = [view("setup", Observed::Running { started_at: UNIX_EPOCH }, false)];
        let status = pod_status(&pod(&init, &containers), UNIX_EPOCH + std::time::Duration::from_secs(100));
        let conditions = status.conditions.clone().unwrap();
        let get = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(get("Initialized").message.as_deref(), Some("containers with incomplete status: [setup]"));
        assert_eq!(get("Ready").message.as_deref(), Some("containers with unready status: [b]"));
        let mut next = pod(&init, &containers);
        next.previous = Some(&status);
        let later = pod_status(&next, UNIX_EPOCH + std::time::Duration::from_secs(500));
        let ready = later.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time, get("Ready").last_transition_time, "unchanged status keeps its time");
        assert_eq!(status.init_container_statuses.unwrap().len(), 1);
    }
}
