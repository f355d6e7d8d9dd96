//! Leader election on a `coordination.k8s.io/v1` Lease (client-go's leaderelection).
//!
//! Candidates share one Lease. The holder renews it every `retry_period`; the others
//! check as often, and take it over only once it has gone unrenewed for
//! `lease_duration`, measured on their own clock from when they last saw it change
//! (so clocks need not agree). Every write carries the Lease's resourceVersion, so of
//! two candidates taking it at once, one wins and the other gets 409. A holder that
//! cannot renew for `renew_deadline` (shorter than `lease_duration`) stops acting
//! before anyone else may start; one that shuts down cleanly hands the Lease back so a
//! successor starts at once.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// client-go's defaults, as kube-controller-manager and kube-scheduler use them.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per candidate process.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// A Lease in `kube-system` named `name`, held as `identity`.
    pub fn new(name: &str, identity: String) -> Self {
        ElectionConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A candidate identity unique to this process: `HOST_UUID`, as client-go's.
pub fn unique_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}_{}", host.trim(), uuid::Uuid::new_v4())
}

/// What a candidate last saw of the Lease, and when (on its own clock).
#[derive(Default)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    lease_duration: Option<Duration>,
    at: Option<Instant>,
}

pub struct Candidate {
    config: ElectionConfig,
    leases: Api<Lease>,
}

impl Candidate {
    pub fn new(client: Client, config: ElectionConfig) -> Self {
        let leases = Api::namespaced(client, &config.namespace);
        Candidate { config, leases }
    }

    /// One attempt to take or renew the Lease; `Ok(true)` when this candidate holds it.
    async fn try_acquire_or_renew(&self, observed: &mut Observed) -> Result<bool, kube::Error> {
        let config = &self.config;
        let now = MicroTime(Timestamp::now());
        let duration_seconds = config.lease_duration.as_secs() as i32;
        let Some(mut lease) = self.leases.get_opt(&config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(config.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder != observed.holder || spec.renew_time != observed.renew_time || observed.at.is_none() {
            observed.holder = holder.clone();
            observed.renew_time = spec.renew_time.clone();
            observed.lease_duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .or(Some(config.lease_duration));
            observed.at = Some(Instant::now());
        }
        let ours = holder.as_deref() == Some(config.identity.as_str());
        if let (Some(_), false) = (&holder, ours) {
            let expires = observed.at.expect("set above") + observed.lease_duration.unwrap_or(config.lease_duration);
            if Instant::now() < expires {
                return Ok(false);
            }
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(config.identity.clone());
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(now);
        match self.leases.replace(&config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(self) -> Leader {
        let mut observed = Observed::default();
        loop {
            match self.try_acquire_or_renew(&mut observed).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => tracing::warn!(lease = %self.config.name, %error, "leader election: acquiring"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
        let (lost_tx, lost) = oneshot::channel();
        let candidate = std::sync::Arc::new(self);
        let renewing = std::sync::Arc::clone(&candidate);
        let task = tokio::spawn(async move {
            let config = &renewing.config;
            let mut last_renewed = Instant::now();
            let mut observed = Observed::default();
            loop {
                tokio::time::sleep(config.retry_period).await;
                let attempt = tokio::time::timeout(config.retry_period, renewing.try_acquire_or_renew(&mut observed));
                match attempt.await {
                    Ok(Ok(true)) => last_renewed = Instant::now(),
                    Ok(Ok(false)) => {}
                    Ok(Err(error)) => tracing::warn!(lease = %config.name, %error, "leader election: renewing"),
                    Err(_) => tracing::warn!(lease = %config.name, "leader election: renewing timed out"),
                }
                if last_renewed.elapsed() > config.renew_deadline {
                    tracing::error!(lease = %config.name, "leader election: lost the lease");
                    let _ = lost_tx.send(());
                    return;
                }
            }
        });
        Leader { candidate, lost, task }
    }
}

/// The Lease held; renewed in the background until lost or released.
pub struct Leader {
    candidate: std::sync::Arc<Candidate>,
    lost: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

impl Leader {
    /// Resolves when renewing has failed for longer than the renew deadline.
    pub async fn lost(&mut self) {
        let _ = (&mut self.lost).await;
    }

    /// Stops renewing and hands the Lease back (empty holder), so a successor need
    /// not wait out the lease duration.
    pub async fn release(self) {
        self.task.abort();
        let config = &self.candidate.config;
        let Ok(Some(mut lease)) = self.candidate.leases.get_opt(&config.name).await else { return };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(error) = self.candidate.leases.replace(&config.name, &PostParams::default(), &lease).await {
            tracing::warn!(lease = %config.name, %error, "leader election: releasing");
        }
    }
}

/// Runs a component only while this process leads: `start` when the Lease is won,
/// `stop` when it is lost (then campaigns again) or when `shutdown` resolves (then
/// releases the Lease and returns).
pub async fn run_while_leader<T>(
    client: Client,
    config: ElectionConfig,
    shutdown: impl Future<Output = ()>,
    mut start: impl FnMut() -> T,
    mut stop: impl FnMut(T),
) {
    tokio::pin!(shutdown);
    loop {
        let candidate = Candidate::new(client.clone(), config.clone());
        let mut leader = tokio::select! {
            leader = candidate.acquire() => leader,
            _ = &mut shutdown => return,
        };
        let running = start();
        let shutting_down = tokio::select! {
            _ = leader.lost() => false,
            _ = &mut shutdown => true,
        };
        stop(running);
        if shutting_down {
            leader.release().await;
            return;
        }
    }
}

/// A component run under [`run_while_leader`] on its own task.
pub struct Elected {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Elected {
    /// Campaigns for `config`'s Lease and runs the component while leading. Must be
    /// called inside a tokio runtime.
    pub fn spawn<T: Send + 'static>(
        client: Client,
        config: ElectionConfig,
        start: impl FnMut() -> T + Send + 'static,
        stop: impl FnMut(T) + Send + 'static,
    ) -> Elected {
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async move {
                let _ = signal.await;
            };
            run_while_leader(client, config, signal, start, stop).await;
        });
        Elected { shutdown: Some(shutdown), task }
    }

    /// Stops the component and releases the Lease if held.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.task).await;
    }
}
