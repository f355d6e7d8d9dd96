//! `keelson server`'s HTTPS front: TLS with client certificates, HTTP/1.1 and
//! HTTP/2, authentication, overload limits, routing, and graceful shutdown.

use crate::auth::{self, Authenticator, User};
use crate::authz::Attributes;
use crate::batched_writes::{self, Flushed};
use crate::cache::WatchCache;
use crate::discovery::{self, Discovery, Format};
use crate::metrics::{self, Metrics};
use crate::object;
use crate::openapi::OpenApi;
use crate::patch::PatchType;
use crate::pki::{Pki, PkiError};
use crate::reply::{self, Body, Output, Wire};
use crate::resources;
use crate::rest::{self, Call, Change};
use crate::route::{Query, ResourceRoute, Route};
use crate::watch;
use ::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use ::http::{HeaderValue, Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use keelson_engine::{ApiError, StatusReason};
use keelson_store::Store;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch as signal, Semaphore};

/// The Kubernetes version keelson serves. kubectl's dispatcher picks the client by
/// this minor, so it decides which kubectl drives the server.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";
pub const GIT_VERSION: &str = "v1.33.0";

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub token_auth_file: Option<PathBuf>,
    /// Requests without credentials are `system:anonymous` (group
    /// `system:unauthenticated`, which RBAC lets read the public paths) instead of 401.
    pub anonymous_auth: bool,
    /// Read-only requests in flight before 429 (kube-apiserver's `--max-requests-inflight`).
    pub max_requests_inflight: usize,
    /// Mutating requests in flight before 429 (`--max-mutating-requests-inflight`).
    pub max_mutating_requests_inflight: usize,
    /// Where the audit log goes, if anywhere.
    pub audit: Option<crate::audit::AuditConfig>,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            data_dir,
            listen,
            token_auth_file: None,
            anonymous_auth: false,
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            audit: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    TokenFile(#[from] auth::TokenFileError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("opening the audit log: {0}")]
    Audit(std::io::Error),
    #[error("creating the system namespaces: {0}")]
    Bootstrap(String),
}

/// Everything a request handler may touch.
pub struct ApiState {
    pub store: Arc<Store>,
    /// Serves GET and LIST; kept current by the store's watch.
    pub cache: Arc<WatchCache>,
    pub discovery: Discovery,
    pub openapi: OpenApi,
    pub authenticator: Authenticator,
    /// The user of requests without credentials, when anonymous requests are allowed.
    anonymous: Option<Arc<User>>,
    pub metrics: Metrics,
    /// The audit log, when the server keeps one.
    pub audit: Option<crate::audit::AuditLog>,
    /// Reaches node agents (`pods/log`).
    pub kubelet: crate::kubelet::KubeletClient,
    /// Flips to `true` when the server shuts down; open watches end.
    pub shutdown: signal::Receiver<bool>,
    readonly: Semaphore,
    mutating: Semaphore,
    /// Components running in this process (the scheduler, the controllers): their
    /// health shows in `componentstatuses` and their metrics at `/metrics`.
    components: std::sync::RwLock<Vec<Component>>,
    /// Namespaces deleted through this server lately (NamespaceLifecycle reads them live).
    pub deleted_namespaces: crate::admission::DeletedNamespaces,
}

/// Appends a component's metrics, in the Prometheus text format, to the exposition.
pub type MetricsSource = Arc<dyn Fn(&mut String) + Send + Sync>;

struct Component {
    name: String,
    metrics: MetricsSource,
}

/// A bound, ready server.
pub struct Server {
    state: Arc<ApiState>,
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    shutdown: signal::Sender<bool>,
    local_addr: SocketAddr,
}

fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut pki.server_cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| tls(&e))?;
    let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
        .map_err(|e| tls(&e))?
        .ok_or_else(|| ServerError::Tls("no private key in server.key".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut pki.ca_cert_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Client certificates are optional at the TLS layer: token and anonymous requests
    // must reach the server to get their 401.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Server {
    /// Prepares certificates and the admin kubeconfig, binds the listener and creates
    /// the system namespaces.
    pub async fn bind(config: ServerConfig, store: Arc<Store>) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Listen { addr: config.listen, source })?;
        let pki = Pki::load_or_create(&config.data_dir, local_addr)?;
        let host = if local_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { local_addr.ip().to_string() };
        let server_url = match local_addr {
            SocketAddr::V6(_) if !local_addr.ip().is_unspecified() => format!("https://[{host}]:{}", local_addr.port()),
            _ => format!("https://{host}:{}", local_addr.port()),
        };
        pki.write_admin_kubeconfig(&config.data_dir.join("admin.kubeconfig"), &server_url)?;
        let authenticator = match &config.token_auth_file {
            Some(path) => Authenticator::with_token_file(path)?,
            None => Authenticator::default(),
        }
        .with_service_accounts(auth::service_account::Tokens::new(pki.service_account_signing_key()?));
        let (shutdown, shutdown_rx) = signal::channel(false);
        let cache = WatchCache::start(Arc::clone(&store));
        let state = Arc::new(ApiState {
            store,
            cache,
            discovery: Discovery::build(),
            openapi: OpenApi::build(),
            authenticator,
            anonymous: config.anonymous_auth.then(|| {
                // Not `User::new`: an anonymous user is not in `system:authenticated`.
                Arc::new(User {
                    name: "system:anonymous".into(),
                    uid: String::new(),
                    groups: vec!["system:unauthenticated".into()],
                    extra: Default::default(),
                })
            }),
            metrics: Metrics::default(),
            audit: config.audit.clone().map(crate::audit::AuditLog::open).transpose().map_err(ServerError::Audit)?,
            kubelet: crate::kubelet::KubeletClient::new(&pki.kubelet_client_cert_pem, &pki.kubelet_client_key_pem)
                .map_err(ServerError::Tls)?,
            shutdown: shutdown_rx,
            readonly: Semaphore::new(config.max_requests_inflight),
            mutating: Semaphore::new(config.max_mutating_requests_inflight),
            components: Default::default(),
            deleted_namespaces: Default::default(),
        });
        bootstrap(&state).await?;
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&pki)?));
        Ok(Server { state, listener, tls, shutdown, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// An in-process door to this server for components that run beside it: requests
    /// skip TCP and TLS but take every other step a remote client's would, as `user`.
    pub fn local_transport(&self, user: &str, groups: &[&str]) -> LocalTransport {
        let user = User::new(user.into(), String::new(), groups.iter().map(|g| g.to_string()).collect());
        LocalTransport { state: Arc::clone(&self.state), user: Arc::new(user) }
    }

    /// Registers a component running in this process: `componentstatuses` reports it
    /// healthy and `/metrics` includes what `metrics` appends.
    pub fn register_component(&self, name: &str, metrics: MetricsSource) {
        let mut components = self.state.components.write().unwrap_or_else(|e| e.into_inner());
        components.retain(|c| c.name != name);
        components.push(Component { name: name.into(), metrics });
    }

    /// Serves until `stop` completes, then stops accepting, ends watches and waits
    /// (bounded) for requests in flight.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = self.listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = self.tls.clone();
                    let state = self.state.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let identity = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|cert| auth::user_from_certificate(cert))
                            .map(|(user, not_after)| (Arc::new(user), not_after));
                        let service = hyper::service::service_fn(move |request| {
                            let state = state.clone();
                            // As kube's x509 authenticator checks the chain on every
                            // request: a long-lived connection stops authenticating
                            // when its certificate ends (a rotating client reconnects).
                            let user = identity
                                .as_ref()
                                .filter(|(_, not_after)| jiff::Timestamp::now().as_second() < *not_after)
                                .map(|(user, _)| Arc::clone(user));
                            async move { Ok::<_, Infallible>(handle(state, user, request).await) }
                        });
                        let builder = auto::Builder::new(TokioExecutor::new());
                        // Responses finished together leave in one socket write.
                        let (stream, flusher) = batched_writes::batched(tls);
                        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let _ = Flushed::new(watcher.watch(connection.into_owned()), flusher).await;
                    });
                }
            }
        }
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
        self.state.cache.stop();
    }
}

/// See [`Server::local_transport`]. Cheap to clone.
#[derive(Clone)]
pub struct LocalTransport {
    state: Arc<ApiState>,
    user: Arc<User>,
}

impl LocalTransport {
    pub async fn call<B: RequestBody>(&self, request: Request<B>) -> Response<Body> {
        handle(Arc::clone(&self.state), Some(Arc::clone(&self.user)), request).await
    }
}

/// Creates the namespaces every cluster has (idempotent).
async fn bootstrap(state: &Arc<ApiState>) -> Result<(), ServerError> {
    let info = resources::find("", "v1", "namespaces").expect("namespaces are served");
    for name in crate::admission::SYSTEM_NAMESPACES {
        let route = ResourceRoute { info, namespace: None, name: None, subresource: None, legacy_watch: false };
        let query = Query::default();
        let mut call = Call::new(state, &route, &query, Output::Json, "keelson");
        match call.create(json!({"metadata": {"name": name}})).await {
            Ok(_) => {}
            Err(e) if e.reason == StatusReason::AlreadyExists => {}
            Err(e) => return Err(ServerError::Bootstrap(e.message)),
        }
    }
    // The `kubernetes` service: in-cluster clients find the API at its first ClusterIP.
    let services = resources::find("", "v1", "services").expect("services are served");
    let exists = state
        .store
        .get(services.key(Some("default"), "kubernetes").as_bytes(), keelson_store::ReadAt::Latest)
        .map_err(|e| ServerError::Bootstrap(e.to_string()))?
        .is_some();
    if !exists {
        let route = ResourceRoute {
            info: services,
            namespace: Some("default".into()),
            name: None,
            subresource: None,
            legacy_watch: false,
        };
        let query = Query::default();
        let mut call = Call::new(state, &route, &query, Output::Json, "keelson");
        let service = json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": crate::service_alloc::API_SERVICE_IP.to_string(), "type": "ClusterIP",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
        call.create(service).await.map_err(|e| ServerError::Bootstrap(e.message))?;
    }
    bootstrap_rbac(state).await?;
    // Requests are authorized from the watch cache's policy: serve once it holds the
    // bootstrap roles, so the components started beside the server are not refused.
    if !state.cache.ready_for_current().await {
        tracing::warn!("the watch cache is not current yet: authorization may refuse requests until it is");
    }
    Ok(())
}

/// Writes the bootstrap roles and bindings ([`crate::authz::bootstrap`]): creates the
/// missing, and brings back to their definition those whose `autoupdate` annotation
/// an operator has not set to `"false"`.
async fn bootstrap_rbac(state: &Arc<ApiState>) -> Result<(), ServerError> {
    const FIELDS: [&str; 4] = ["rules", "aggregationRule", "roleRef", "subjects"];
    let failed = |e: ApiError| ServerError::Bootstrap(e.message);
    for object in crate::authz::bootstrap::objects() {
        let plural = if object["kind"] == "ClusterRole" { "clusterroles" } else { "clusterrolebindings" };
        let info = resources::find("rbac.authorization.k8s.io", "v1", plural).expect("RBAC is served");
        let name = object::name(&object).to_string();
        let stored = state
            .store
            .get(info.key(None, &name).as_bytes(), keelson_store::ReadAt::Latest)
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?
            .and_then(|record| Some((serde_json::from_slice::<Value>(&record.value?).ok()?, record.mod_revision)));
        let query = Query::default();
        match stored {
            None => {
                let route = ResourceRoute { info, namespace: None, name: None, subresource: None, legacy_watch: false };
                Call::new(state, &route, &query, Output::Json, "keelson").create(object).await.map_err(failed)?;
            }
            Some((current, revision)) => {
                let same = FIELDS.iter().all(|field| current.get(field) == object.get(field));
                if same || !crate::authz::bootstrap::may_update(&current) {
                    continue;
                }
                let mut updated = current.clone();
                for field in FIELDS {
                    match object.get(field) {
                        Some(value) => updated[field] = value.clone(),
                        None => {
                            updated.as_object_mut().map(|o| o.remove(field));
                        }
                    }
                }
                updated["metadata"]["resourceVersion"] = json!(revision.get().to_string());
                let route =
                    ResourceRoute { info, namespace: None, name: Some(name), subresource: None, legacy_watch: false };
                let mut call = Call::new(state, &route, &query, Output::Json, "keelson");
                call.update(Change::Replace(&updated)).await.map_err(failed)?;
            }
        }
    }
    Ok(())
}

/// keelson serves no CustomResourceDefinitions, but kubectl lists them to decide how
/// to validate a kind whose OpenAPI has no PATCH operation (the review kinds): a 404
/// there fails `kubectl create -f`, an empty list lets it validate from the schema.
const NO_CUSTOM_RESOURCES: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

fn no_custom_resources(state: &ApiState) -> Response<Body> {
    let revision = state.store.current_revision().get().to_string();
    let list = json!({"kind": "CustomResourceDefinitionList", "apiVersion": "apiextensions.k8s.io/v1",
        "metadata": {"resourceVersion": revision}, "items": []});
    reply::json(StatusCode::OK, serde_json::to_vec(&list).unwrap_or_default())
}

/// Paths anonymous clients may read (kube-apiserver's `system:public-info-viewer`).
fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// A request body the handler can read: hyper's, or an in-process caller's.
pub trait RequestBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}
impl<B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static> RequestBody for B {}
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn handle<B: RequestBody>(state: Arc<ApiState>, user: Option<Arc<User>>, request: Request<B>) -> Response<Body> {
    let started = Instant::now();
    let mut trace = Trace { verb: "GET", resource: None, wire: Wire::Json, audit: None };
    // What the audit line needs of the request itself, taken before dispatch consumes it.
    let audited = state.audit.as_ref().map(|_| {
        let uri = request.uri().path_and_query().map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
        let agent = header(&request, ::http::header::USER_AGENT).unwrap_or("").to_string();
        let verb = request.method().as_str().to_ascii_lowercase();
        (uri, agent, verb, jiff::Timestamp::now())
    });
    if audited.is_some() {
        trace.audit = Some(Audited::default());
    }
    let result = dispatch(&state, user, request, &mut trace).await;
    let mut response = result.unwrap_or_else(|e| reply::error(&e));
    // A watch streams and encodes its own events.
    if trace.wire == Wire::Protobuf && trace.verb != "WATCH" {
        response = reply::to_protobuf(response).await;
    }
    let code = response.status().as_u16();
    state.metrics.record(trace.resource, trace.verb, code, started.elapsed());
    if let (Some(log), Some((uri, agent, method, received)), Some(facts)) = (&state.audit, &audited, &trace.audit) {
        let object = facts.route.as_ref();
        log.record(&crate::audit::Entry {
            request_uri: uri,
            verb: facts.verb.unwrap_or(method),
            user: facts.user.as_deref(),
            user_agent: agent,
            group: object.map_or("", |r| r.info.group),
            version: object.map_or("", |r| r.info.version),
            resource: object.map_or("", |r| r.info.plural),
            subresource: object.and_then(|r| r.subresource.as_deref()).unwrap_or(""),
            namespace: object.and_then(|r| r.namespace.as_deref()).unwrap_or(""),
            name: object.and_then(|r| r.name.as_deref()).unwrap_or(""),
            code,
            received: *received,
            latency: started.elapsed(),
            annotations: &facts.annotations,
        });
    }
    response
}

/// What dispatching learned about a request, for its metrics and its encoding: known
/// even when the request fails.
struct Trace {
    verb: &'static str,
    resource: Option<usize>,
    wire: Wire,
    /// Filled in only when the server keeps an audit log.
    audit: Option<Audited>,
}

/// What the audit line records that dispatching learns: who asked, kube's verb, and
/// the object.
#[derive(Default)]
struct Audited {
    user: Option<Arc<User>>,
    verb: Option<&'static str>,
    route: Option<ResourceRoute>,
    /// What admission had to say (PodSecurity's levels and violations).
    annotations: crate::pod_security::AuditAnnotations,
}

fn header<B>(request: &Request<B>, name: ::http::header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn read_body<B: RequestBody>(request: Request<B>) -> Result<(Option<String>, Bytes), ApiError> {
    if header(&request, CONTENT_LENGTH).and_then(|l| l.parse::<usize>().ok()).is_some_and(|l| l > reply::MAX_BODY_BYTES)
    {
        return Err(ApiError::request_entity_too_large(reply::MAX_BODY_BYTES));
    }
    let content_type = header(&request, CONTENT_TYPE).map(String::from);
    let body = Limited::new(request.into_body(), reply::MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                ApiError::request_entity_too_large(reply::MAX_BODY_BYTES)
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            }
        })?
        .to_bytes();
    Ok((content_type, body))
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    reply::respond(code, "text/plain; charset=utf-8", body)
}

fn method_not_allowed() -> ApiError {
    ApiError::new(StatusReason::MethodNotAllowed, "the server does not allow this method on the requested resource")
}

async fn dispatch<B: RequestBody>(
    state: &Arc<ApiState>,
    conn_user: Option<Arc<User>>,
    request: Request<B>,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    let user = conn_user
        .or_else(|| header(&request, AUTHORIZATION).and_then(|a| authenticate_bearer(state, a)))
        .or_else(|| state.anonymous.clone());
    if let (Some(audit), Some(user)) = (trace.audit.as_mut(), &user) {
        audit.user = Some(Arc::clone(user));
    }
    if user.is_none() && !is_public(&path) {
        return Err(ApiError::new(StatusReason::Unauthorized, "Unauthorized"));
    }
    if path == NO_CUSTOM_RESOURCES && request.method() == Method::GET {
        if let Some(user) = &user {
            let list = Attributes::resource("list", "apiextensions.k8s.io", "customresourcedefinitions", "");
            authorize(state, user, &list).await?;
        }
        return Ok(no_custom_resources(state));
    }
    let route = Route::parse(&path)?;
    let accept = header(&request, ::http::header::ACCEPT).unwrap_or("").to_string();
    let route = match route {
        Route::Resource(route) => route,
        other => {
            if let Some(user) = &user {
                let verb = match *request.method() {
                    Method::GET | Method::HEAD => "get".to_string(),
                    ref method => method.as_str().to_ascii_lowercase(),
                };
                authorize(state, user, &Attributes::non_resource(&verb, &path)).await?;
            }
            if request.method() != Method::GET && request.method() != Method::HEAD {
                return Err(method_not_allowed());
            }
            return non_resource(state, other, &accept);
        }
    };
    let Some(user) = user else {
        return Err(ApiError::new(StatusReason::Unauthorized, "Unauthorized"));
    };
    trace.resource = metrics::resource_index(route.info.plural, route.info.group);
    let query = Query::parse(request.uri().query());
    let user_agent = header(&request, ::http::header::USER_AGENT).unwrap_or("").to_string();
    let (output, wire) = Output::from_accept(Some(&accept).filter(|a| !a.is_empty()).map(String::as_str))?;
    trace.wire = wire;
    let method = request.method().clone();
    let is_watch = method == Method::GET && route.name.is_none() && (route.legacy_watch || query.flag("watch"));
    trace.verb = match (&method, route.name.is_some()) {
        (&Method::GET, _) if is_watch => "WATCH",
        (&Method::GET, _) if route.subresource.as_deref() == Some("log") => "CONNECT",
        (&Method::GET, true) => "GET",
        (&Method::GET, false) => "LIST",
        (&Method::POST, _) => "CREATE",
        (&Method::PUT, _) => "UPDATE",
        (&Method::PATCH, _)
            if header(&request, CONTENT_TYPE).is_some_and(|c| c.starts_with("application/apply-patch")) =>
        {
            "APPLY"
        }
        (&Method::PATCH, _) => "PATCH",
        (&Method::DELETE, true) => "DELETE",
        (&Method::DELETE, false) => "DELETECOLLECTION",
        _ => return Err(method_not_allowed()),
    };
    let k8s_verb = match trace.verb {
        "WATCH" => "watch",
        "GET" | "CONNECT" => "get",
        "LIST" => "list",
        "CREATE" => "create",
        "UPDATE" => "update",
        "PATCH" | "APPLY" => "patch",
        "DELETE" => "delete",
        _ => "deletecollection",
    };
    if let Some(audit) = trace.audit.as_mut() {
        audit.verb = Some(k8s_verb);
        audit.route = Some(route.clone());
    }
    authorize(state, &user, &request_attributes(&route, k8s_verb)).await?;
    if let Some(node) = crate::authz::node::node_name(&user) {
        let subresource = route.subresource.as_deref();
        let removal = (k8s_verb == "delete" && subresource.is_none()) || subresource == Some("eviction");
        if route.info.group.is_empty() && route.info.plural == "pods" && removal {
            let name = route.name.as_deref().unwrap_or("");
            let key = route.info.key(route.namespace.as_deref(), name);
            let graph = &state.cache.authorizer.graph;
            crate::node_restriction::check_pod_removal(node, graph, &key, name, subresource == Some("eviction"))?;
        }
    }
    if route.subresource.is_none() && !route.info.has_verb(k8s_verb) {
        return Err(method_not_allowed());
    }
    if route.info.namespaced && route.namespace.is_none() && route.name.is_some() {
        return Err(ApiError::new(StatusReason::NotFound, "the server could not find the requested resource"));
    }
    if is_watch {
        return watch::start(state.clone(), &route, &query, output, wire).await;
    }
    // Streaming sessions last as long as their command: like watches, they do not
    // count toward the bound on requests in flight.
    if let Some(subresource @ ("exec" | "attach" | "portforward")) = route.subresource.as_deref() {
        trace.verb = "CONNECT";
        let call = Call::new(state, &route, &query, output, &user_agent);
        return crate::kubelet::pod_stream(&call, subresource, request).await;
    }
    // Overload protection: bounded requests in flight, separately for writes.
    let semaphore = if matches!(trace.verb, "GET" | "LIST" | "CONNECT") { &state.readonly } else { &state.mutating };
    let Ok(_permit) = semaphore.try_acquire() else {
        state.metrics.rejected_overload.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::too_many_requests(1));
    };
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        Some(read_body(request).await?)
    } else {
        None
    };
    let mut call = Call::new(state, &route, &query, output, &user_agent);
    call.wire = wire;
    call.user = Some(&user);
    let result = resource_verb(&mut call, &method, body, Some(&user)).await;
    if let Some(audit) = trace.audit.as_mut() {
        if let (Some(route), Some(name)) = (audit.route.as_mut(), call.created.take()) {
            route.name.get_or_insert(name);
        }
        audit.annotations = call.audit_annotations.take().unwrap_or_default();
    }
    let mut response = result?;
    for warning in &call.warnings {
        let value = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append("Warning", value);
        }
    }
    Ok(response)
}

/// The user a bearer token speaks for; a ServiceAccount token's objects are looked up
/// in the watch cache.
pub(crate) fn authenticate_bearer(state: &ApiState, authorization: &str) -> Option<Arc<User>> {
    let lookup = |kind: &'static str, namespace: &str, name: &str| live_uid(&state.cache, kind, namespace, name);
    let now = jiff::Timestamp::now().as_second();
    if let Some(user) = state.authenticator.token(authorization, now, &lookup) {
        return Some(user);
    }
    let token = authorization.strip_prefix("Bearer ").or_else(|| authorization.strip_prefix("bearer "))?.trim();
    let (id, _) = auth::bootstrap_token::parse(token)?;
    let stored = state.cache.find(auth::bootstrap_token::secret_key(id).as_bytes()).ok()?;
    auth::bootstrap_token::authenticate(token, stored.as_deref(), now).map(Arc::new)
}

/// The uid of a core object (`Pod`, `Secret`, `ServiceAccount`, `Node`) if it exists.
pub(crate) fn live_uid(cache: &WatchCache, kind: &str, namespace: &str, name: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Uid {
        metadata: UidMeta,
    }
    #[derive(serde::Deserialize)]
    struct UidMeta {
        uid: String,
    }
    let info = resources::RESOURCES.iter().find(|r| r.group.is_empty() && r.kind == kind)?;
    let key = info.key(Some(namespace).filter(|ns| !ns.is_empty()), name);
    let bytes = cache.find(key.as_bytes()).ok()??;
    serde_json::from_slice::<Uid>(&bytes).ok().map(|object| object.metadata.uid)
}

/// The authorizer's view of a resource request (kube's `RequestInfo`): a session
/// (`exec`, `attach`, `portforward`) is a `create` of its subresource whichever method
/// opens it, a log read a `get`; a request on a Namespace is in that namespace.
fn request_attributes<'a>(route: &'a ResourceRoute, verb: &'a str) -> Attributes<'a> {
    let subresource = route.subresource.as_deref().unwrap_or("");
    let verb = match subresource {
        "exec" | "attach" | "portforward" => "create",
        "log" => "get",
        _ => verb,
    };
    let name = route.name.as_deref().unwrap_or("");
    let namespace = match route.namespace.as_deref() {
        Some(namespace) => namespace,
        None if route.info.group.is_empty() && route.info.plural == "namespaces" => name,
        None => "",
    };
    Attributes { verb, path: "", group: route.info.group, resource: route.info.plural, subresource, namespace, name }
}

/// Asks the RBAC policy; a refusal is kube's 403.
async fn authorize(state: &ApiState, user: &User, request: &Attributes<'_>) -> Result<(), ApiError> {
    let mut decision = state.cache.authorizer.authorize(user, request);
    // The node graph follows the watch cache: an agent that has just seen its pod bound
    // may ask for the pod's Secret before the cache has applied the binding. Such a
    // refusal is decided again once the cache is current.
    let node_refused = !decision.allowed && decision.why.is_some() && crate::authz::node::node_name(user).is_some();
    if node_refused && state.cache.ready_for_current().await {
        decision = state.cache.authorizer.authorize(user, request);
    }
    if decision.allowed {
        return Ok(());
    }
    let mut why = crate::authz::forbidden_message(user, request);
    if let Some(reason) = decision.why {
        why = format!("{why}: {reason}");
    }
    // kube names the resource without its subresource: `pods "web" is forbidden: User
    // "x" cannot create resource "pods/exec" ...`.
    Err(ApiError::forbidden(request.group, request.resource, request.name, &why))
}

async fn resource_verb(
    call: &mut Call<'_>,
    method: &Method,
    body: Option<(Option<String>, Bytes)>,
    user: Option<&User>,
) -> Result<Response<Body>, ApiError> {
    let info = call.route.info;
    let sub = call.route.subresource.clone();
    let has_name = call.route.name.is_some();
    let parse = |body: &Option<(Option<String>, Bytes)>| match body {
        Some((content_type, bytes)) if !bytes.is_empty() => rest::parse_body(content_type.as_deref(), bytes),
        _ => Ok(Value::Object(Default::default())),
    };
    match (method, has_name, sub.as_deref()) {
        (&Method::GET, false, None) if info.kind == "ComponentStatus" => component_statuses(call),
        (&Method::GET, true, None) if info.kind == "ComponentStatus" => component_statuses(call),
        (&Method::GET, false, None) => call.list().await,
        (&Method::GET, true, None | Some("status" | "scale" | "approval")) => call.get().await,
        (&Method::GET, true, Some("log")) => crate::kubelet::pod_log(call).await,
        (&Method::POST, false, None) => match info.kind {
            "SelfSubjectAccessReview"
            | "SelfSubjectRulesReview"
            | "SelfSubjectReview"
            | "SubjectAccessReview"
            | "LocalSubjectAccessReview"
            | "TokenReview" => {
                crate::review::answer(call.state, info.kind, call.route.namespace.as_deref(), parse(&body)?, user)
            }
            "Binding" => {
                let input = parse(&body)?;
                let pod = object::name(&input).to_string();
                bind(call, &input, pod).await
            }
            _ => match &body {
                Some((content_type, bytes)) if !bytes.is_empty() && rest::is_json(content_type.as_deref()) => {
                    call.create_json(bytes).await
                }
                _ => call.create(parse(&body)?).await,
            },
        },
        (&Method::POST, true, Some("token")) => crate::token_request::create(call, &parse(&body)?),
        (&Method::POST, true, Some("binding")) => {
            let input = parse(&body)?;
            let pod = call.route.name.clone().unwrap_or_default();
            bind(call, &input, pod).await
        }
        (&Method::POST, true, Some("eviction")) => {
            let input = parse(&body)?;
            let options = input.get("deleteOptions").cloned().unwrap_or(json!({}));
            let pod = call.current_value()?;
            crate::eviction::admit(&call.state.store, call.route.namespace.as_deref().unwrap_or(""), &pod).await?;
            call.delete(&options).await?;
            Ok(reply::json(StatusCode::CREATED, rest::success_status(StatusCode::CREATED)))
        }
        (&Method::PUT, true, Some("scale")) => {
            let input = parse(&body)?;
            call.update(Change::Scale(None, &input)).await
        }
        (&Method::PUT, true, None | Some("status" | "finalize" | "approval")) => {
            let input = parse(&body)?;
            call.update(Change::Replace(&input)).await
        }
        (&Method::PATCH, true, sub @ (None | Some("status" | "scale" | "approval"))) => {
            let content_type = body.as_ref().and_then(|(c, _)| c.clone()).unwrap_or_default();
            let kind = PatchType::from_content_type(&content_type).ok_or_else(|| {
                ApiError::new(
                    StatusReason::UnsupportedMediaType,
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type:?}"),
                )
            })?;
            let patch = parse(&body)?;
            if kind == PatchType::Apply && call.query.get("fieldManager").unwrap_or("").is_empty() {
                return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
            }
            if kind != PatchType::Apply && call.query.flag("force") {
                return Err(ApiError::new(
                    StatusReason::Invalid,
                    "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
                ));
            }
            if sub == Some("scale") {
                return call.update(Change::Scale(Some(kind), &patch)).await;
            }
            call.update(Change::Patch(kind, &patch)).await
        }
        (&Method::DELETE, true, None) => {
            let options = parse(&body)?;
            call.delete(&options).await
        }
        (&Method::DELETE, false, None) => delete_collection(call).await,
        _ => Err(method_not_allowed()),
    }
}

async fn bind(call: &mut Call<'_>, binding: &Value, pod: String) -> Result<Response<Body>, ApiError> {
    let node = object::get_str(binding, &["target", "name"]).unwrap_or("").to_string();
    let kind = object::get_str(binding, &["target", "kind"]).unwrap_or("");
    let mut errors = Vec::new();
    if node.is_empty() {
        errors.push(keelson_engine::FieldError::required("target.name", ""));
    }
    if !kind.is_empty() && kind != "Node" {
        errors.push(keelson_engine::FieldError::new(
            keelson_engine::FieldErrorKind::NotSupported,
            "target.kind",
            Some(kind.to_owned()),
            "supported values: \"Node\", \"<empty>\"",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid("", "Binding", &pod, errors));
    }
    let pods = resources::find("", "v1", "pods").expect("pods are served");
    let route = ResourceRoute {
        info: pods,
        namespace: call.route.namespace.clone(),
        name: Some(pod),
        subresource: Some("binding".into()),
        legacy_watch: false,
    };
    let mut pod_call = Call::new(call.state, &route, call.query, Output::Json, call.user_agent);
    let preconditions = rest::BindPreconditions {
        uid: object::get_str(binding, &["metadata", "uid"]),
        resource_version: object::get_str(binding, &["metadata", "resourceVersion"]),
    };
    pod_call.bind(&node, preconditions).await
}

async fn delete_collection(call: &mut Call<'_>) -> Result<Response<Body>, ApiError> {
    let listed = call.list_values()?;
    for name in listed {
        let route = ResourceRoute {
            info: call.route.info,
            namespace: call.route.namespace.clone(),
            name: Some(name),
            subresource: None,
            legacy_watch: false,
        };
        let mut one = Call::new(call.state, &route, call.query, Output::Json, call.user_agent);
        match one.delete(&json!({})).await {
            Ok(_) => {}
            Err(e) if e.reason == StatusReason::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reply::json(StatusCode::OK, rest::success_status(StatusCode::OK)))
}

fn status_item(name: &str, status: &str, message: &str) -> Value {
    json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name},
        "conditions": [{"type": "Healthy", "status": status, "message": message}]})
}

/// A component is healthy when it runs in this process; one run elsewhere is not probed.
fn component_item(state: &ApiState, name: &str) -> Value {
    let running = state.components.read().unwrap_or_else(|e| e.into_inner()).iter().any(|c| c.name == name);
    match running {
        true => status_item(name, "True", "ok"),
        false => status_item(name, "Unknown", "not running in this server's process"),
    }
}

fn component_statuses(call: &mut Call<'_>) -> Result<Response<Body>, ApiError> {
    let backend = call.state.store.backend_name();
    let store_status = if backend.is_empty() { "False" } else { "True" };
    let items = vec![
        status_item("store", store_status, &format!("ok ({backend} backend)")),
        component_item(call.state, "scheduler"),
        component_item(call.state, "controller-manager"),
    ];
    let items: Vec<Value> = match call.route.name.as_deref() {
        Some(name) => items.into_iter().filter(|i| i["metadata"]["name"] == name).collect(),
        None => items,
    };
    call.warnings.push("v1 ComponentStatus is deprecated in v1.19+".into());
    let output = call.output;
    if let Some(name) = call.route.name.as_deref() {
        let found = items.into_iter().next().ok_or_else(|| ApiError::not_found("", "componentstatuses", name))?;
        let found = match output {
            Output::Metadata(version) => reply::partial_metadata(&found, version),
            Output::MetadataList(_) => return Err(output.mismatch("*v1.ComponentStatus")),
            Output::Json | Output::Table => found,
        };
        let content_type = if output == Output::Table { reply::JSON } else { output.content_type() };
        return Ok(reply::respond(
            StatusCode::OK,
            content_type,
            serde_json::to_vec(&found).map_err(ApiError::internal)?,
        ));
    }
    let rv = call.state.store.current_revision().get().to_string();
    let body = match output {
        Output::Table => crate::table::render(call.route.info, &items, &rv, None),
        Output::Json => serde_json::to_vec(&json!({"kind": "ComponentStatusList", "apiVersion": "v1",
            "metadata": {"resourceVersion": rv}, "items": items}))
        .map_err(ApiError::internal)?,
        Output::MetadataList(version) => reply::partial_metadata_list(items.iter(), version, &rv, None),
        Output::Metadata(_) => return Err(output.mismatch("*v1.ComponentStatusList")),
    };
    Ok(reply::respond(StatusCode::OK, output.content_type(), body))
}

fn non_resource(state: &ApiState, route: Route, accept: &str) -> Result<Response<Body>, ApiError> {
    let not_found = || ApiError::new(StatusReason::NotFound, "the server could not find the requested resource");
    let aggregated = |v2: &Bytes, v2beta1: &Bytes, legacy: &Bytes| match Format::from_accept(accept) {
        Format::AggregatedV2 => reply::respond(StatusCode::OK, discovery::AGGREGATED_V2, v2.clone()),
        Format::AggregatedV2Beta1 => reply::respond(StatusCode::OK, discovery::AGGREGATED_V2BETA1, v2beta1.clone()),
        Format::Legacy => reply::json(StatusCode::OK, legacy.clone()),
    };
    let d = &state.discovery;
    Ok(match route {
        Route::Root => {
            let mut paths = vec!["/api".to_string(), "/api/v1".into(), "/apis".into(), "/healthz".into(), "/livez".into(),
                "/metrics".into(), "/openapi/v3".into(), "/readyz".into(), "/version".into()];
            for group in resources::groups().into_iter().filter(|g| !g.is_empty()) {
                paths.push(format!("/apis/{group}"));
                paths.push(format!("/apis/{group}/v1"));
            }
            paths.sort();
            reply::json(StatusCode::OK, serde_json::to_vec(&json!({"paths": paths})).map_err(ApiError::internal)?)
        }
        Route::Version => reply::json(
            StatusCode::OK,
            serde_json::to_vec(&json!({
                "major": MAJOR, "minor": MINOR, "gitVersion": GIT_VERSION,
                "gitCommit": "keelson", "gitTreeState": "clean", "buildDate": "2026-11-22T00:00:00Z",
                "goVersion": "rust", "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
            }))
            .map_err(ApiError::internal)?,
        ),
        Route::Health => text(StatusCode::OK, "ok"),
        Route::Metrics => {
            let mut text = state.metrics.render(&state.store.stats());
            state.cache.render_metrics(&mut text);
            if let Some(audit) = &state.audit {
                text.push_str("# HELP apiserver_audit_event_dropped_total Audit lines dropped because the writer fell behind.\n");
                text.push_str("# TYPE apiserver_audit_event_dropped_total counter\n");
                text.push_str(&format!("apiserver_audit_event_dropped_total {}\n", audit.dropped()));
            }
            for component in state.components.read().unwrap_or_else(|e| e.into_inner()).iter() {
                (component.metrics)(&mut text);
            }
            reply::respond(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        Route::CoreVersions => aggregated(&d.core_aggregated_v2, &d.core_aggregated_v2beta1, &d.core_versions),
        Route::Groups => aggregated(&d.groups_aggregated_v2, &d.groups_aggregated_v2beta1, &d.group_list),
        Route::Group(group) => reply::json(StatusCode::OK, discovery::group(&group).ok_or_else(not_found)?),
        Route::GroupVersion { group, version } => {
            reply::json(StatusCode::OK, discovery::resource_list(&group, &version).ok_or_else(not_found)?)
        }
        Route::OpenApiV3Index => reply::json(StatusCode::OK, state.openapi.index()),
        Route::OpenApiV3 { group, version } => {
            reply::json(StatusCode::OK, state.openapi.document(&group, &version).ok_or_else(not_found)?)
        }
        Route::OpenApiV2 => reply::respond(StatusCode::OK, crate::openapi::v2::CONTENT_TYPE, state.openapi.v2()),
        Route::Resource(_) => unreachable!("handled by the caller"),
    })
}
