//! The `keelson` binary.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use keelson::agents::controllers::{ControllerManager, ManagerOptions};
use keelson::agents::leader::unique_identity;
use keelson::agents::node::hollow::{HollowFleet, HollowOptions};
use keelson::agents::node::kubelet::{AgentOptions, NodeAgent};
use keelson::agents::node::objects;
use keelson::agents::node::runtime::cri::CriRuntime;
use keelson::agents::node::runtime::process::ProcessRuntime;
use keelson::agents::scheduling::{RunnerOptions, SchedulerRunner};
use keelson::api::authz::node::NODES_GROUP;
use keelson::api::{Server, ServerConfig};
use keelson::scheduler::config::SchedulerConfig;
use keelson::store::{Store, StoreConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "keelson", version, about = "A Kubernetes-compatible control plane built for speed")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StoreKind {
    /// The embedded RocksDB registry (durable).
    Rocksdb,
    /// An in-memory registry: nothing survives a restart (tests and demos).
    Memory,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Runtime {
    /// Simulated nodes: nothing runs; pods go Running (and Succeeded on request).
    Hollow,
    /// Containers run as host processes (`command` + `args`; the image is not used).
    Process,
    /// Containers run through a CRI runtime (containerd).
    Cri,
}

/// The controllers' tunables (kube-controller-manager's flags of the same names).
#[derive(clap::Args)]
struct ControllerFlags {
    /// Workers per controller, `name=N,...` (e.g. `replicaset=10`).
    #[arg(long, default_value = "")]
    concurrent_syncs: String,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: Duration,
    /// How long a node's agent may stay silent before the node is Unknown.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// Nodes per second tainted for eviction in a healthy zone.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// Nodes per second in a partially disrupted large zone.
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f64,
    /// Zones larger than this use the secondary rate when partially disrupted.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// The share of not-ready nodes (and more than two) that makes a zone unhealthy.
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f64,
    /// Terminated pods kept before PodGC deletes the oldest (0: keep all).
    #[arg(long, default_value_t = 12_500)]
    terminated_pod_gc_threshold: usize,
    /// The longest lifetime `csrsigning` gives a certificate (nodes renew theirs at
    /// 70-90% of it).
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: Duration,
}

impl ControllerFlags {
    fn options(&self) -> Result<ManagerOptions> {
        use keelson::agents::controllers::nodelifecycle::zones::EvictionPolicy;
        let mut options = parse_concurrent_syncs(&self.concurrent_syncs)?;
        options.node_lifecycle.monitor_period = self.node_monitor_period;
        options.node_lifecycle.grace_period = self.node_monitor_grace_period;
        options.node_lifecycle.eviction = EvictionPolicy {
            node_eviction_rate: self.node_eviction_rate,
            secondary_node_eviction_rate: self.secondary_node_eviction_rate,
            large_cluster_size_threshold: self.large_cluster_size_threshold,
            unhealthy_zone_threshold: self.unhealthy_zone_threshold,
        };
        options.pod_gc.terminated_threshold = self.terminated_pod_gc_threshold;
        options.signing_duration = self.cluster_signing_duration;
        Ok(options)
    }
}

/// A duration as kube's flags write it: `500ms`, `40s`, `5m`, `1h` (bare: seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?}: expected a duration like 40s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Subcommand)]
enum Command {
    /// Starts the control plane: the Kubernetes API over HTTPS on the store.
    Server {
        #[arg(long, default_value = "./keelson-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        #[arg(long, value_enum, default_value = "rocksdb")]
        store: StoreKind,
        /// Static bearer tokens: CSV lines `token,user,uid,"group1,group2"`.
        #[arg(long)]
        token_auth_file: Option<PathBuf>,
        /// Encrypt Secrets at rest (AES-256-GCM) with the keys in this file: lines
        /// `NAME:BASE64` of 32 random bytes; the first key encrypts, all decrypt.
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
        /// Serve requests without credentials as `system:anonymous` (RBAC then lets
        /// them read only the public paths) instead of answering 401.
        #[arg(long)]
        anonymous_auth: bool,
        /// Write one audit line (kube's audit.k8s.io/v1 Event, Metadata level) per
        /// request to this file.
        #[arg(long)]
        audit_log_path: Option<PathBuf>,
        /// Rotate the audit log once it reaches this many megabytes.
        #[arg(long, default_value_t = 100)]
        audit_log_maxsize: u64,
        /// Rotated audit logs kept (FILE.1 is the newest).
        #[arg(long, default_value_t = 5)]
        audit_log_maxbackup: usize,
        /// Read-only requests in flight before 429.
        #[arg(long, default_value_t = 400)]
        max_requests_inflight: usize,
        /// Mutating requests in flight before 429.
        #[arg(long, default_value_t = 200)]
        max_mutating_requests_inflight: usize,
        /// Do not run the scheduler in this process.
        #[arg(long)]
        no_scheduler: bool,
        /// Do not run the controllers in this process.
        #[arg(long)]
        no_controllers: bool,
        /// The in-process scheduler's `KubeSchedulerConfiguration` file.
        #[arg(long)]
        scheduler_config: Option<PathBuf>,
        /// Also run a node agent for this host in this process (like a single-node
        /// k3s): pods run on containerd where its socket exists, else as processes.
        #[arg(long)]
        kubelet: bool,
        /// `--kubelet`: the CRI runtime's socket.
        #[arg(long, default_value = "unix:///run/containerd/containerd.sock")]
        container_runtime_endpoint: String,
        /// `--kubelet`: the node's name (default: the host name).
        #[arg(long)]
        node_name: Option<String>,
        /// `--kubelet`: the node agent's HTTPS port (container logs); 0 picks a free one.
        #[arg(long, default_value_t = 10250)]
        kubelet_port: u16,
        #[command(flatten)]
        controllers: ControllerFlags,
    },
    /// Runs the scheduler alone against a server.
    Scheduler {
        #[arg(long)]
        kubeconfig: PathBuf,
        /// A `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1) file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve `/metrics` and `/healthz` over HTTP here (e.g. 127.0.0.1:10251).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Schedule only while holding the `kube-system/kube-scheduler` Lease.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        leader_elect: bool,
    },
    /// Runs the controllers alone against a server.
    ControllerManager {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        controllers: ControllerFlags,
        /// Serve `/metrics` and `/healthz` over HTTP here (e.g. 127.0.0.1:10257).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Act only while holding the `kube-system/kube-controller-manager` Lease.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        leader_elect: bool,
        /// The CA certificate (PEM) `csrsigning` issues client certificates from (the
        /// server's `pki/ca.crt`); with `--cluster-signing-key-file`.
        #[arg(long, requires = "cluster_signing_key_file")]
        cluster_signing_cert_file: Option<PathBuf>,
        /// The CA's private key (PEM; the server's `pki/ca.key`).
        #[arg(long, requires = "cluster_signing_cert_file")]
        cluster_signing_key_file: Option<PathBuf>,
        /// The CA bundle (PEM) published to every namespace as the ConfigMap
        /// `kube-root-ca.crt` (default: the kubeconfig's certificate authority).
        #[arg(long)]
        root_ca_file: Option<PathBuf>,
    },
    /// Runs a node agent. `--runtime hollow`: `--nodes N` simulated nodes (named
    /// PREFIX0..PREFIX{N-1}, or `--node-name` for one) whose pods go Running without
    /// running anything. `--runtime process`: one node (`--node-name`, default the host
    /// name) whose containers run as host processes. The `cri` runtime is not built yet.
    Agent {
        /// The agent's credentials (default: ROOT_DIR/kubelet.kubeconfig). With
        /// `--token`, written by TLS bootstrap when missing; a node's own certificate
        /// is renewed there when little of its lifetime is left.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Join with a bootstrap token (`ID.SECRET`, a `bootstrap-token-ID` Secret in
        /// kube-system): the agent asks for its node's client certificate with it.
        #[arg(long, requires_all = ["server", "certificate_authority"])]
        token: Option<String>,
        /// The API server to join (`https://HOST:PORT`), with `--token`.
        #[arg(long)]
        server: Option<String>,
        /// The cluster CA certificate (PEM, the server's `pki/ca.crt`), with `--token`.
        #[arg(long)]
        certificate_authority: Option<PathBuf>,
        /// Default: `cri` where the CRI socket exists (one node), else `hollow`.
        #[arg(long, value_enum)]
        runtime: Option<Runtime>,
        /// The node's name (one node).
        #[arg(long, conflicts_with = "nodes")]
        node_name: Option<String>,
        /// Simulate this many nodes in this process.
        #[arg(long)]
        nodes: Option<usize>,
        #[arg(long, default_value = "hollow-")]
        node_name_prefix: String,
        /// Labels every node gets, `k=v,k2=v2`.
        #[arg(long, default_value = "")]
        node_labels: String,
        /// Taints every node registers with, `key=value:Effect,...`.
        #[arg(long, default_value = "")]
        register_with_taints: String,
        /// CPUs the node offers (hollow: 4; process: the host's).
        #[arg(long)]
        node_cpu: Option<String>,
        /// Memory the node offers (hollow: 32Gi; process: the host's).
        #[arg(long)]
        node_memory: Option<String>,
        #[arg(long, default_value_t = 110)]
        node_pods: u32,
        /// Milliseconds from bound to Running.
        #[arg(long, default_value_t = 0)]
        pod_startup_delay_ms: u64,
        /// Seconds between Lease renewals (the kubelet's 10 s).
        #[arg(long, default_value_t = 10)]
        lease_renew_seconds: u64,
        /// Where the agent keeps pods' logs (and, for the process runtime, their state).
        #[arg(long, default_value = "./keelson-agent")]
        root_dir: PathBuf,
        /// The node's address (InternalIP); with the process runtime, every pod's IP too.
        #[arg(long, default_value = "127.0.0.1")]
        node_ip: String,
        /// The agent's HTTPS port (container logs), published on the Node.
        #[arg(long, default_value_t = 10250)]
        kubelet_port: u16,
        /// The CRI runtime's socket (`scripts/containerd start DIR` prints a private one).
        #[arg(long, default_value = "unix:///run/containerd/containerd.sock")]
        container_runtime_endpoint: String,
        /// The range pod IPs come from (the CRI runtime's bridge network).
        #[arg(long, default_value = "10.244.0.0/24")]
        pod_cidr: String,
    },
    /// The process runtime's per-container shim (started by the agent, not by hand):
    /// `keelson shim --dir DIR --log FILE -- COMMAND...`.
    #[command(hide = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Prints a kubeconfig for a user, with a fresh client certificate from the cluster
    /// CA in DATA/pki: `--node NAME` gives a node agent its own identity
    /// (`system:node:NAME` in `system:nodes`, which the Node authorizer keeps to its
    /// own node); `--user U --group G...` any other.
    Kubeconfig {
        #[arg(long, default_value = "./keelson-data")]
        data_dir: PathBuf,
        /// The server's URL (default: the one in DATA/admin.kubeconfig).
        #[arg(long)]
        server: Option<String>,
        #[arg(long, conflicts_with_all = ["user", "groups"])]
        node: Option<String>,
        #[arg(long, required_unless_present = "node")]
        user: Option<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Writes a consistent copy of a (stopped or running) store's data to a new directory.
    Backup {
        #[arg(long, default_value = "./keelson-data")]
        data_dir: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// Creates a data directory from a backup.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long, default_value = "./keelson-data")]
        data_dir: PathBuf,
    },
    /// Builds the test images (`localhost/keelson/web:1`, `web:2` and the sandbox image
    /// `pause:1`) from the host's static busybox and imports them into containerd.
    TestImages {
        /// containerd's socket (`scripts/containerd start DIR` prints it).
        #[arg(long, default_value = "/run/containerd/containerd.sock")]
        containerd_socket: PathBuf,
        /// A statically linked busybox (Debian's `busybox-static`).
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// Also keep the OCI archive here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Prints a store's revisions and object count.
    Inspect {
        #[arg(long, default_value = "./keelson-data")]
        data_dir: PathBuf,
    },
}

/// The store lives in `DATA/store`, beside the PKI and the kubeconfig.
fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("store")
}

fn open(data_dir: &Path, config: StoreConfig) -> Result<std::sync::Arc<Store>> {
    let dir = store_dir(data_dir);
    Store::open(&dir, config).with_context(|| format!("opening the store in {}", dir.display()))
}

/// The server's store configuration: Secrets sealed at rest with the key file's keys.
fn store_config(encryption_key_file: Option<&Path>) -> Result<StoreConfig> {
    let mut config = StoreConfig::default();
    if let Some(path) = encryption_key_file {
        let secrets = keelson::api::resources::find("", "v1", "secrets").expect("secrets are served").prefix(None);
        let sealer = keelson::store::Sealer::from_key_file(path, vec![secrets.into_bytes()])
            .with_context(|| format!("encryption keys {}", path.display()))?;
        config.sealer = Some(std::sync::Arc::new(sealer));
    }
    Ok(config)
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `keelson server --kubelet ...`.
struct KubeletFlags {
    endpoint: String,
    node_name: Option<String>,
    port: u16,
}

/// `keelson server --kubelet`: this host's node agent, talking to the server in this
/// process over HTTPS like any agent. Its data (logs, volumes, process state) is in
/// `DATA/kubelet`.
async fn in_process_kubelet(data_dir: &Path, kubelet: KubeletFlags) -> Result<NodeAgent> {
    let KubeletFlags { endpoint, node_name, port } = kubelet;
    let root_dir = data_dir.join("kubelet");
    std::fs::create_dir_all(&root_dir).with_context(|| format!("creating {}", root_dir.display()))?;
    let root_dir = root_dir.canonicalize()?;
    let options = AgentOptions {
        node_name: node_name.map_or_else(host_name, Ok)?,
        shape: keelson::agents::node::kubelet::host_shape(&root_dir),
        host_ip: "127.0.0.1".into(),
        kubelet_port: port,
        pod_cidr: "10.244.0.0/24".into(),
        root_dir,
        renew_interval: std::time::Duration::from_secs(10),
        status_interval: std::time::Duration::from_secs(300),
    };
    let backend = if cri_socket_exists(&endpoint) { Backend::Cri { endpoint } } else { Backend::Process };
    // The agent's own identity, as a remote agent's: the Node authorizer keeps it to
    // its node's objects.
    let user = format!("system:node:{}", options.node_name);
    let config = keelson::api::pki::client_kubeconfig(data_dir, &admin_server_url(data_dir)?, &user, &[NODES_GROUP])?;
    let kubeconfig = options.root_dir.join("kubelet.kubeconfig");
    keelson::api::pki::write(&kubeconfig, &config, true)?;
    start_node(&kubeconfig, options, backend).await
}

/// The server URL the admin kubeconfig in `data_dir` points at.
fn admin_server_url(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("admin.kubeconfig");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("server: "))
        .map(str::to_string)
        .with_context(|| format!("no server in {}", path.display()))
}

/// The host's name, lower-cased: a node's default name.
fn host_name() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_lowercase())
}

/// Whether the CRI endpoint (`unix://PATH` or a path) names an existing socket.
fn cri_socket_exists(endpoint: &str) -> bool {
    Path::new(endpoint.trim_start_matches("unix://")).exists()
}

fn server(
    data_dir: PathBuf,
    config: ServerConfig,
    store: StoreKind,
    store_config: StoreConfig,
    scheduler: Option<SchedulerConfig>,
    controllers: Option<ManagerOptions>,
    kubelet: Option<KubeletFlags>,
) -> Result<()> {
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let store = match store {
        StoreKind::Rocksdb => open(&data_dir, store_config)?,
        StoreKind::Memory => Store::in_memory(store_config)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let server = Server::bind(config, store.clone()).await?;
        // The CA exists once the server has bound: the in-process signer issues from it.
        let mut controllers = controllers;
        if let Some(options) = controllers.as_mut() {
            let (cert, key) = (data_dir.join("pki").join("ca.crt"), data_dir.join("pki").join("ca.key"));
            let signing = signing_ca(&cert, &key, options.signing_duration)?;
            options.root_ca = Some(signing.cert_pem.clone());
            options.signing = Some(signing);
        }
        // The in-process components campaign as this host and data dir: after a crash,
        // the restarted server is the same candidate and takes its Leases back at once.
        let identity = format!("{}_{}", host_name().unwrap_or_default(), data_dir.canonicalize()?.display());
        let components = keelson::start_components(&server, scheduler, controllers, &identity);
        let kubeconfig = data_dir.join("admin.kubeconfig");
        let address = server.local_addr();
        let serving = tokio::spawn(server.serve(termination()));
        let agent = match kubelet {
            Some(flags) => match in_process_kubelet(&data_dir, flags).await {
                Ok(agent) => {
                    println!("keelson node agent: this host's node registered ({})", agent.runtime_version);
                    Some(agent)
                }
                Err(error) => {
                    serving.abort();
                    return Err(error.context("starting the in-process node agent"));
                }
            },
            None => None,
        };
        println!("keelson server ready on https://{address} (kubectl --kubeconfig {})", kubeconfig.display());
        let _ = serving.await;
        if let Some(agent) = agent {
            agent.stop();
        }
        for component in components {
            component.stop().await;
        }
        anyhow::Ok(())
    });
    // Every acknowledged write is already synced; closing flushes the rest.
    store.close();
    result
}

/// Serves `/metrics` for a component run alone, if asked to.
async fn serve_metrics(
    listen: Option<SocketAddr>,
    render: std::sync::Arc<dyn Fn(&mut String) + Send + Sync>,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = listen else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    println!("metrics on http://{}/metrics", listener.local_addr()?);
    Ok(Some(tokio::spawn(keelson::agents::metrics::serve(listener, render))))
}

/// `keelson scheduler`: the runner alone, over HTTPS, until SIGTERM.
fn scheduler(
    kubeconfig: &Path,
    config: Option<&Path>,
    metrics_listen: Option<SocketAddr>,
    leader_elect: bool,
) -> Result<()> {
    use keelson::agents::scheduling::metrics::SchedulerMetrics;
    let config = keelson::scheduler_config(config)?;
    let metrics = std::sync::Arc::new(SchedulerMetrics::default());
    let render = std::sync::Arc::clone(&metrics);
    run_component(
        kubeconfig,
        "scheduler",
        metrics_listen,
        std::sync::Arc::new(move |out: &mut String| render.render(out)),
        |client| {
            if leader_elect {
                Running::Elected(keelson::elected_scheduler(client, config, unique_identity(), metrics))
            } else {
                Running::Scheduler(SchedulerRunner::start_with_metrics(
                    client,
                    config,
                    RunnerOptions::default(),
                    metrics,
                ))
            }
        },
    )
}

/// A component run against a server until SIGTERM: under leader election, or not.
enum Running {
    Elected(keelson::agents::leader::Elected),
    Scheduler(SchedulerRunner),
    Controllers(ControllerManager),
}

impl Running {
    async fn stop(self) {
        match self {
            Running::Elected(elected) => elected.stop().await,
            Running::Scheduler(runner) => tokio::task::block_in_place(|| runner.stop()),
            Running::Controllers(manager) => manager.stop(),
        }
    }
}

/// `keelson scheduler` and `keelson controller-manager`: connects with `kubeconfig`
/// (failing fast on a wrong address or credentials rather than retrying quietly),
/// serves `render` at `metrics_listen`, prints the ready line, runs what `start`
/// starts until SIGTERM, then stops it.
fn run_component(
    kubeconfig: &Path,
    name: &str,
    metrics_listen: Option<SocketAddr>,
    render: std::sync::Arc<dyn Fn(&mut String) + Send + Sync>,
    start: impl FnOnce(keelson::agents::kube::Client) -> Running,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = keelson::agents::client::from_kubeconfig(kubeconfig).await?;
        let version = client.apiserver_version().await.context("reaching the API server")?;
        let metrics_server = serve_metrics(metrics_listen, render).await?;
        println!("keelson {name} ready (server {})", version.git_version);
        let running = start(client);
        termination().await;
        running.stop().await;
        if let Some(task) = metrics_server {
            task.abort();
        }
        anyhow::Ok(())
    })
}

/// The CA the CSR signer issues from, read from its PEM files.
fn signing_ca(
    cert: &Path,
    key: &Path,
    duration: Duration,
) -> Result<keelson::agents::controllers::certificates::signer::SigningCa> {
    let read = |path: &Path| std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
    Ok(keelson::agents::controllers::certificates::signer::SigningCa {
        cert_pem: read(cert)?,
        key_pem: read(key)?,
        duration,
    })
}

/// `--concurrent-syncs name=N,...`.
fn parse_concurrent_syncs(text: &str) -> Result<ManagerOptions> {
    let mut options = ManagerOptions::default();
    for item in text.split(',').filter(|i| !i.is_empty()) {
        let (name, count) = item.split_once('=').with_context(|| format!("{item:?}: expected name=N"))?;
        anyhow::ensure!(
            keelson::agents::controllers::CONTROLLERS.contains(&name),
            "{name:?}: not a controller (one of {:?})",
            keelson::agents::controllers::CONTROLLERS
        );
        let count: usize = count.parse().with_context(|| format!("{item:?}: N must be a number"))?;
        options.workers.insert(name.to_string(), count.max(1));
    }
    Ok(options)
}

/// `keelson controller-manager`: the controllers alone, over HTTPS, until SIGTERM.
fn controller_manager(
    kubeconfig: &Path,
    options: ManagerOptions,
    metrics_listen: Option<SocketAddr>,
    leader_elect: bool,
) -> Result<()> {
    use keelson::agents::controllers::runtime::metrics::ControllerMetrics;
    let metrics = std::sync::Arc::new(ControllerMetrics::default());
    let render = std::sync::Arc::clone(&metrics);
    let render = std::sync::Arc::new(move |out: &mut String| render.render(out));
    run_component(kubeconfig, "controller-manager", metrics_listen, render, |client| {
        if leader_elect {
            Running::Elected(keelson::elected_controllers(client, options, unique_identity(), metrics))
        } else {
            Running::Controllers(ControllerManager::start(client, &options, &metrics))
        }
    })
}

/// `keelson agent --runtime hollow`: registers the fleet, keeps it alive until SIGTERM.
fn hollow_agent(kubeconfig: &Path, options: HollowOptions, own_node: Option<&str>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = keelson::agents::node::rotation::node_client(kubeconfig, own_node).await?;
        client.apiserver_version().await.context("reaching the API server")?;
        let count = options.names.len();
        let fleet = HollowFleet::start(client, options).await?;
        println!("keelson agent ready: {count} hollow node(s) registered");
        termination().await;
        fleet.stop();
        anyhow::Ok(())
    })
}

/// Where one real node's containers run.
enum Backend {
    Process,
    Cri { endpoint: String },
}

/// Registers one node whose pods really run on `backend`, and starts its agent.
async fn start_node(kubeconfig: &Path, options: AgentOptions, backend: Backend) -> Result<NodeAgent> {
    let client = keelson::agents::node::rotation::node_client(kubeconfig, Some(&options.node_name)).await?;
    client.apiserver_version().await.context("reaching the API server")?;
    let cluster_ca = keelson::agents::client::cluster_ca(kubeconfig).await?;
    let root_dir = options.root_dir.clone();
    Ok(match backend {
        Backend::Process => {
            let shim = std::env::current_exe().context("locating the keelson binary (the shim)")?;
            let containers = ProcessRuntime::new(root_dir, shim, options.host_ip.clone())?;
            NodeAgent::start(client, options, std::sync::Arc::new(containers), &cluster_ca).await?
        }
        Backend::Cri { endpoint } => {
            let containers = CriRuntime::connect(&endpoint, root_dir, &options.node_name).await?;
            NodeAgent::start(client, options, std::sync::Arc::new(containers), &cluster_ca).await?
        }
    })
}

/// `keelson agent --runtime process|cri`: one node whose pods really run, until SIGTERM.
fn node_agent(kubeconfig: &Path, options: AgentOptions, backend: Backend) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let name = options.node_name.clone();
        let agent = start_node(kubeconfig, options, backend).await?;
        println!("keelson agent ready: node {name} registered ({})", agent.runtime_version);
        termination().await;
        agent.stop();
        anyhow::Ok(())
    })
}

/// `--register-with-taints key=value:Effect,...`.
fn parse_taints(text: &str) -> Result<Vec<keelson::engine::k8s_openapi::api::core::v1::Taint>> {
    text.split(',').filter(|t| !t.is_empty()).map(|t| objects::parse_taint(t).map_err(anyhow::Error::msg)).collect()
}

fn main() -> Result<()> {
    // Warnings and errors go to stderr (stdout carries the ready line); RUST_LOG widens it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match Cli::parse().command {
        Command::Server {
            data_dir,
            listen,
            store,
            token_auth_file,
            encryption_key_file,
            anonymous_auth,
            audit_log_path,
            audit_log_maxsize,
            audit_log_maxbackup,
            max_requests_inflight,
            max_mutating_requests_inflight,
            no_scheduler,
            no_controllers,
            scheduler_config,
            kubelet,
            container_runtime_endpoint,
            node_name,
            kubelet_port,
            controllers,
        } => {
            // A bad scheduler configuration fails the start, before anything listens.
            let scheduler =
                if no_scheduler { None } else { Some(keelson::scheduler_config(scheduler_config.as_deref())?) };
            let mut config = ServerConfig::new(data_dir.clone(), listen);
            config.token_auth_file = token_auth_file;
            config.anonymous_auth = anonymous_auth;
            config.audit = audit_log_path.map(|path| keelson_api::audit::AuditConfig {
                path,
                max_bytes: audit_log_maxsize.max(1) * 1024 * 1024,
                backups: audit_log_maxbackup,
            });
            config.max_requests_inflight = max_requests_inflight;
            config.max_mutating_requests_inflight = max_mutating_requests_inflight;
            let kubelet =
                kubelet.then_some(KubeletFlags { endpoint: container_runtime_endpoint, node_name, port: kubelet_port });
            let controllers = if no_controllers { None } else { Some(controllers.options()?) };
            let store_config = store_config(encryption_key_file.as_deref())?;
            server(data_dir, config, store, store_config, scheduler, controllers, kubelet)?;
        }
        Command::Scheduler { kubeconfig, config, metrics_listen, leader_elect } => {
            scheduler(&kubeconfig, config.as_deref(), metrics_listen, leader_elect)?
        }
        Command::ControllerManager {
            kubeconfig,
            controllers,
            metrics_listen,
            leader_elect,
            cluster_signing_cert_file,
            cluster_signing_key_file,
            root_ca_file,
        } => {
            let mut options = controllers.options()?;
            if let (Some(cert), Some(key)) = (cluster_signing_cert_file, cluster_signing_key_file) {
                options.signing = Some(signing_ca(&cert, &key, options.signing_duration)?);
            }
            options.root_ca = match root_ca_file {
                Some(path) => {
                    Some(std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)
                }
                None => {
                    tokio::runtime::Runtime::new()?.block_on(keelson::agents::client::cluster_ca_pem(&kubeconfig))?
                }
            };
            controller_manager(&kubeconfig, options, metrics_listen, leader_elect)?
        }
        Command::TestImages { containerd_socket, busybox, out } => {
            use keelson::agents::node::test_images;
            let archive = test_images::build_archive(&busybox)?;
            let keep = out.is_some();
            let path =
                out.unwrap_or_else(|| std::env::temp_dir().join(format!("keelson-images-{}.tar", std::process::id())));
            std::fs::write(&path, &archive).with_context(|| format!("writing {}", path.display()))?;
            let imported = test_images::import(&path, &containerd_socket);
            if !keep {
                let _ = std::fs::remove_file(&path);
            }
            imported?;
            for image in [test_images::WEB_1, test_images::WEB_2, test_images::PAUSE] {
                println!("imported {image}");
            }
        }
        Command::Shim { args } => {
            let Some((dir, log, argv)) = keelson::agents::node::runtime::shim::parse_args(&args) else {
                anyhow::bail!("usage: keelson shim --dir DIR --log FILE -- COMMAND...");
            };
            std::process::exit(keelson::agents::node::runtime::shim::run(&dir, &log, &argv));
        }
        Command::Agent {
            kubeconfig,
            token,
            server,
            certificate_authority,
            runtime,
            node_name,
            nodes,
            node_name_prefix,
            node_labels,
            register_with_taints,
            node_cpu,
            node_memory,
            node_pods,
            pod_startup_delay_ms,
            lease_renew_seconds,
            root_dir,
            node_ip,
            kubelet_port,
            container_runtime_endpoint,
            pod_cidr,
        } => {
            // Simulated fleets are hollow; one node runs containers where a CRI socket is.
            let runtime = runtime.unwrap_or_else(|| {
                if nodes.is_none() && cri_socket_exists(&container_runtime_endpoint) {
                    Runtime::Cri
                } else {
                    Runtime::Hollow
                }
            });
            let labels = objects::parse_labels(&node_labels).map_err(anyhow::Error::msg)?;
            let taints = parse_taints(&register_with_taints)?;
            let renew_interval = std::time::Duration::from_secs(lease_renew_seconds.max(1));
            let kubeconfig = kubeconfig.unwrap_or_else(|| root_dir.join("kubelet.kubeconfig"));
            // One node's own credentials (a fleet shares one identity, as kubemark's).
            let own_node = match (nodes, &node_name) {
                (Some(_), _) => None,
                (None, Some(name)) => Some(name.clone()),
                (None, None) if matches!(runtime, Runtime::Hollow) => Some(format!("{node_name_prefix}0")),
                (None, None) => Some(host_name()?),
            };
            let bootstrap = match (token, server, certificate_authority) {
                (Some(token), Some(server), Some(ca)) => {
                    let ca_pem = std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
                    Some(keelson::agents::node::bootstrap::Bootstrap { server, token, ca_pem })
                }
                _ => None,
            };
            match &own_node {
                Some(node) => tokio::runtime::Runtime::new()?.block_on(
                    keelson::agents::node::bootstrap::ensure_credentials(&kubeconfig, node, bootstrap.as_ref()),
                )?,
                None if bootstrap.is_some() => anyhow::bail!("--token joins one node: give --node-name, not --nodes"),
                None => {}
            }
            if let Runtime::Hollow = runtime {
                let mut options = HollowOptions::numbered(&node_name_prefix, nodes.unwrap_or(1));
                if let Some(name) = node_name {
                    options.names = vec![name];
                }
                options.shape.labels = labels;
                options.shape.taints = taints;
                options.shape.cpu = node_cpu.unwrap_or(options.shape.cpu);
                options.shape.memory = node_memory.unwrap_or(options.shape.memory);
                options.shape.pods = node_pods;
                options.startup_delay = std::time::Duration::from_millis(pod_startup_delay_ms);
                options.renew_interval = renew_interval;
                return hollow_agent(&kubeconfig, options, own_node.as_deref());
            }
            std::fs::create_dir_all(&root_dir).with_context(|| format!("creating {}", root_dir.display()))?;
            let root_dir = root_dir.canonicalize()?;
            let mut shape = keelson::agents::node::kubelet::host_shape(&root_dir);
            shape.labels = labels;
            shape.taints = taints;
            shape.cpu = node_cpu.unwrap_or(shape.cpu);
            shape.memory = node_memory.unwrap_or(shape.memory);
            shape.pods = node_pods;
            let node_name = node_name.map_or_else(host_name, Ok)?;
            let options = AgentOptions {
                node_name,
                shape,
                host_ip: node_ip,
                kubelet_port,
                pod_cidr,
                root_dir,
                renew_interval,
                status_interval: std::time::Duration::from_secs(300),
            };
            let backend = match runtime {
                Runtime::Cri => Backend::Cri { endpoint: container_runtime_endpoint },
                _ => Backend::Process,
            };
            node_agent(&kubeconfig, options, backend)?
        }
        Command::Kubeconfig { data_dir, server, node, user, groups } => {
            let server = match server {
                Some(server) => server,
                None => admin_server_url(&data_dir)?,
            };
            let (user, groups) = match node {
                Some(node) => (format!("system:node:{node}"), vec![NODES_GROUP.to_string()]),
                None => (user.unwrap_or_default(), groups),
            };
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            print!("{}", keelson::api::pki::client_kubeconfig(&data_dir, &server, &user, &groups)?);
        }
        Command::Backup { data_dir, to } => {
            let revision = open(&data_dir, StoreConfig::default())?.backup(&to)?;
            println!("backed up {} at revision {revision} to {}", data_dir.display(), to.display());
        }
        Command::Restore { from, data_dir } => {
            Store::restore(&from, &store_dir(&data_dir))?;
            println!("restored {} into {}", from.display(), data_dir.display());
        }
        Command::Inspect { data_dir } => {
            let store = open(&data_dir, StoreConfig::default())?;
            let stats = store.stats();
            println!("current revision   {}", stats.current_revision);
            println!("compacted revision {}", stats.compacted_revision);
            println!("objects            {}", store.count(b"/registry/")?);
        }
    }
    Ok(())
}
