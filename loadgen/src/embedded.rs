//! An embedded control plane for a benchmark: the `keelson` library's server on a
//! durable RocksDB store in a temp dir, serving HTTPS on a free loopback port, with the
//! scheduler (and optionally the controller manager) in process on the in-process
//! transport, exactly as `keelson server` runs them.

use anyhow::Result;
use keelson::agents::controllers::runtime::metrics::ControllerMetrics;
use keelson::agents::controllers::{ControllerManager, ManagerOptions};
use keelson::agents::scheduling::SchedulerRunner;
use keelson::api::Server;
use keelson::scheduler::config::SchedulerConfig;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub struct Embedded {
    dir: tempfile::TempDir,
    store: Arc<keelson::store::Store>,
    scheduler: SchedulerRunner,
    controllers: Option<ControllerManager>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: JoinHandle<()>,
}

impl Embedded {
    /// Must be called inside a multi-threaded tokio runtime.
    pub async fn boot(scheduler: SchedulerConfig, controllers: bool) -> Result<Embedded> {
        let plain = |server: &Server| keelson::in_process_client(server, "system:kube-controller-manager");
        Embedded::boot_with(scheduler, controllers.then_some(plain)).await
    }

    /// As `boot`, with the controller manager on the client `controllers` makes (e.g.
    /// one that counts its writes), if given.
    pub async fn boot_with(
        scheduler: SchedulerConfig,
        controllers: Option<impl FnOnce(&Server) -> keelson::agents::kube::Client>,
    ) -> Result<Embedded> {
        let dir = tempfile::tempdir()?;
        let store = keelson::store::Store::open(&dir.path().join("store"), Default::default())?;
        let config = keelson::api::ServerConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse()?);
        let server = Server::bind(config, store.clone()).await?;
        let scheduler = keelson::start_scheduler(&server, scheduler);
        let controllers = controllers.map(|client| {
            let client = client(&server);
            let metrics = Arc::new(ControllerMetrics::default());
            let render = Arc::clone(&metrics);
            server.register_component("controller-manager", Arc::new(move |out: &mut String| render.render(out)));
            ControllerManager::start(client, &ManagerOptions::default(), &metrics)
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Ok(Embedded { dir, store, scheduler, controllers, stop, serving })
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    pub async fn shutdown(self) {
        if let Some(controllers) = self.controllers {
            controllers.stop();
        }
        // Joining the scheduling thread blocks; the runtime's other workers go on.
        let scheduler = self.scheduler;
        tokio::task::block_in_place(|| scheduler.stop());
        let _ = self.stop.send(());
        let _ = self.serving.await;
        self.store.close();
    }
}
