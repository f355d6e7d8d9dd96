//! Building the `kube` client the agents share.
//!
//! Out of process, the client reads a kubeconfig (the server's `admin.kubeconfig`
//! works as it is). In process, it sends each request to a function, the server's
//! in-process door, so components beside the server skip TCP and TLS but go through
//! the same handler, and the agent code has one path either way.

use http::{Request, Response};
use kube::client::Body;
use std::future::Future;
use std::path::Path;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("building a client from {path}: {source}")]
    Build { path: String, source: kube::Error },
}

/// A client for the cluster `path`'s current context points at.
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, ClientError> {
    let display = path.display().to_string();
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|source| ClientError::Kubeconfig { path: display.clone(), source })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| ClientError::Kubeconfig { path: display.clone(), source })?;
    kube::Client::try_from(config).map_err(|source| ClientError::Build { path: display, source })
}

/// A client whose requests go to `call` (an in-process transport). Must be called
/// inside a tokio runtime.
pub fn in_process<F, Fut, B>(call: F) -> kube::Client
where
    F: Fn(Request<Body>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let service = tower::service_fn(move |request: Request<Body>| {
        let call = call.clone();
        async move { Ok::<_, std::convert::Infallible>(call(request).await) }
    });
    kube::Client::new(service, "default")
}
