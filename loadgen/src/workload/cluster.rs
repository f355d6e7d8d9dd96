//! The API server a workload drives, over HTTPS with the kubeconfig's client
//! certificate: object URLs found through discovery, creates at a bounded concurrency
//! and an optional rate, deletes, and the server's `/metrics`.

use crate::api_bench::{client, read_kubeconfig, Target};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub server: String,
    pub kubeconfig: PathBuf,
    /// For single requests.
    pub http: reqwest::Client,
    /// The tracker's long watch has a connection of its own.
    pub watch_http: reqwest::Client,
    /// One connection per concurrent creator, as separate clients would have.
    creators: Vec<reqwest::Client>,
    /// (apiVersion, kind) → (plural, namespaced).
    resources: Mutex<HashMap<(String, String), (String, bool)>>,
}

/// How an object is reached.
#[derive(Clone, Debug)]
pub struct Resource {
    pub plural: String,
    pub namespaced: bool,
    pub api_version: String,
}

impl Resource {
    /// The collection URL (in `namespace` if namespaced).
    pub fn collection(&self, server: &str, namespace: &str) -> String {
        let base = if self.api_version.contains('/') {
            format!("{server}/apis/{}", self.api_version)
        } else {
            format!("{server}/api/{}", self.api_version)
        };
        if self.namespaced {
            format!("{base}/namespaces/{namespace}/{}", self.plural)
        } else {
            format!("{base}/{}", self.plural)
        }
    }
}

impl Cluster {
    pub fn connect(kubeconfig: &Path, clients: usize) -> Result<Cluster> {
        let target: Target = read_kubeconfig(kubeconfig)?;
        Ok(Cluster {
            server: target.server.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            http: client(&target)?,
            watch_http: client(&target)?,
            creators: (0..clients.max(1)).map(|_| client(&target)).collect::<Result<_>>()?,
            resources: Mutex::new(HashMap::new()),
        })
    }

    /// The plural and scope of a kind, from the server's discovery (cached).
    pub async fn resource(&self, api_version: &str, kind: &str) -> Result<Resource> {
        let key = (api_version.to_string(), kind.to_string());
        let known = self.resources.lock().expect("discovery cache").get(&key).cloned();
        let (plural, namespaced) = match known {
            Some(found) => found,
            None => {
                let url = if api_version.contains('/') {
                    format!("{}/apis/{api_version}", self.server)
                } else {
                    format!("{}/api/{api_version}", self.server)
                };
                let list: Value = self.http.get(&url).send().await?.error_for_status()?.json().await?;
                let found = list["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["kind"] == kind && !r["name"].as_str().unwrap_or("/").contains('/'))
                    .and_then(|r| Some((r["name"].as_str()?.to_string(), r["namespaced"].as_bool()?)))
                    .with_context(|| format!("the server serves no {kind} in {api_version}"))?;
                self.resources.lock().expect("discovery cache").insert(key, found.clone());
                found
            }
        };
        Ok(Resource { plural, namespaced, api_version: api_version.to_string() })
    }

    pub async fn ensure_namespace(&self, name: &str) -> Result<()> {
        crate::api_bench::ensure_namespace(&self.http, &self.server, name).await
    }

    /// POSTs `body`, waiting out 429s; returns the status code (201, or 409 when it
    /// exists and `exists_ok`).
    /// Creates `body` at `url`, waiting out 429s; 409 is success when `exists_ok`. A
    /// hot caller passes a parsed [`reqwest::Url`]: parsing a string each time was 1%
    /// of a SchedulingBasic run's samples.
    pub async fn create<U>(http: &reqwest::Client, url: U, body: &Value, exists_ok: bool) -> Result<u16>
    where
        U: reqwest::IntoUrl + Clone + std::fmt::Display,
    {
        for attempt in 0..200 {
            let response = http.post(url.clone()).json(body).send().await?;
            match response.status().as_u16() {
                code @ 200..=299 => return Ok(code),
                409 if exists_ok => return Ok(409),
                429 => {
                    let wait = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map_or(Duration::from_millis(10 * (attempt + 1).min(10)), Duration::from_secs);
                    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                }
                code => {
                    let name = body["metadata"]["name"].as_str().unwrap_or("?");
                    bail!("creating {name} at {url}: HTTP {code}: {}", response.text().await?)
                }
            }
        }
        bail!("creating at {url}: still 429 after 200 tries")
    }

    /// Creates `count` objects at `url` across the creators, object `i` made by
    /// `make(i)` and not sent before `i / rate` seconds in when a rate is given; counts
    /// each create in `created`.
    pub async fn create_many(
        self: &Arc<Self>,
        url: String,
        count: usize,
        rate: Option<f64>,
        make: Arc<dyn Fn(usize) -> Result<Value> + Send + Sync>,
        created: Arc<AtomicUsize>,
    ) -> Result<()> {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers = self.creators.len().min(count.max(1));
        let url = reqwest::Url::parse(&url).with_context(|| format!("the URL {url}"))?;
        let mut tasks = Vec::with_capacity(workers);
        for w in 0..workers {
            let (cluster, next, make, url, created) =
                (Arc::clone(self), next.clone(), make.clone(), url.clone(), created.clone());
            tasks.push(tokio::spawn(async move {
                let http = &cluster.creators[w];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(());
                    }
                    if let Some(rate) = rate.filter(|r| *r > 0.0) {
                        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                    }
                    Cluster::create(http, url.clone(), &make(i)?, false).await?;
                    created.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    /// Deletes the object at `url` at once (grace period 0); a 404 is fine.
    pub async fn delete_now(&self, url: &str) -> Result<()> {
        let body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
        for _ in 0..200 {
            let response = self.http.delete(url).json(&body).send().await?;
            match response.status().as_u16() {
                200..=299 | 404 => return Ok(()),
                429 => tokio::time::sleep(Duration::from_millis(50)).await,
                code => bail!("deleting {url}: HTTP {code}: {}", response.text().await?),
            }
        }
        bail!("deleting {url}: still 429 after 200 tries")
    }

    /// LISTs `path` 5,000 items a page, handing each page's body to `page`, which
    /// returns the page's `continue` token (none or empty: the last page).
    pub async fn list_paged(&self, path: &str, mut page: impl FnMut(&[u8]) -> Result<Option<String>>) -> Result<()> {
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}{path}?limit=5000", self.server);
            if let Some(token) = &token {
                url.push_str(&format!("&continue={token}"));
            }
            let response = self.http.get(&url).send().await?;
            if !response.status().is_success() {
                bail!("listing {path}: HTTP {}", response.status());
            }
            match page(&response.bytes().await?)?.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// The server's metrics exposition text (empty if it is not reachable).
    pub async fn metrics(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.server)).send().await;
        match response {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => String::new(),
        }
    }
}
