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

/// The cluster CA certificates (DER) the kubeconfig at `path` trusts: the node agent
/// accepts the API server's client certificate only if one of them signed it.
pub async fn cluster_ca(path: &Path) -> Result<Vec<Vec<u8>>, ClientError> {
    let display = path.display().to_string();
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|source| ClientError::Kubeconfig { path: display.clone(), source })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| ClientError::Kubeconfig { path: display, source })?;
    Ok(config.root_cert.unwrap_or_default())
}

/// [`cluster_ca`] as PEM, for publishing it; `None` when the kubeconfig trusts none.
pub async fn cluster_ca_pem(path: &Path) -> Result<Option<String>, ClientError> {
    use base64::Engine;
    let certificates = cluster_ca(path).await?;
    let pem = certificates.iter().map(|der| {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64")).collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
    });
    Ok((!certificates.is_empty()).then(|| pem.collect()))
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

/// Throttled requests are retried at most this many times (client-go's limit).
const MAX_THROTTLE_RETRIES: usize = 10;

/// Runs `call`, and again while the server answers 429 Too Many Requests, waiting what
/// its Status asks (`details.retryAfterSeconds`, 1 s if unset) as client-go does, so a
/// busy server slows a component down instead of failing its writes.
pub async fn retry_throttled<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut retries = 0;
    loop {
        match call().await {
            Err(kube::Error::Api(status)) if status.code == 429 && retries < MAX_THROTTLE_RETRIES => {
                retries += 1;
                let seconds = status.details.as_ref().map_or(1, |d| d.retry_after_seconds.max(1));
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(seconds))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// The error a Status from the server becomes, as it comes over the wire.
    fn api_error(code: u16, retry_after: Option<u32>) -> kube::Error {
        let mut status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code});
        if let Some(seconds) = retry_after {
            status["details"] = serde_json::json!({"retryAfterSeconds": seconds});
        }
        kube::Error::Api(Box::new(serde_json::from_value(status).expect("a Status")))
    }

    #[tokio::test]
    async fn throttled_calls_are_retried_after_the_servers_delay_and_others_are_not() {
        let calls = Cell::new(0);
        let started = std::time::Instant::now();
        let answer = retry_throttled(|| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n == 1 {
                    Err(api_error(429, Some(1)))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(answer.ok(), Some(2));
        assert!(started.elapsed() >= std::time::Duration::from_secs(1), "waited the Retry-After");

        calls.set(0);
        let answer: Result<(), _> = retry_throttled(|| {
            calls.set(calls.get() + 1);
            async { Err(api_error(409, None)) }
        })
        .await;
        assert!(matches!(answer, Err(kube::Error::Api(s)) if s.code == 409));
        assert_eq!(calls.get(), 1, "a conflict is the caller's to handle");
    }

    #[tokio::test]
    async fn the_kubeconfigs_authority_comes_back_as_the_same_pem() {
        use base64::Engine;
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca".to_string()]).unwrap().self_signed(&key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let data = base64::engine::general_purpose::STANDARD.encode(&ca);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    \
                 certificate-authority-data: {data}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\n\
                 users:\n- name: u\n  user: {{token: t}}\ncurrent-context: c\n"
            ),
        )
        .unwrap();
        assert_eq!(cluster_ca_pem(&path).await.unwrap().as_deref().map(str::trim), Some(ca.trim()));
    }
}
