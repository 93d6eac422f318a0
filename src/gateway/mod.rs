//! The reference HTTP gateway: the whole stack behind an OpenAI-compatible
//! API, served with axum.
//!
//! The live config sits behind one atomically swappable handle: each request
//! takes the version current when it arrives and finishes on it, while a new
//! version serves new requests. Runtime state (health, latency, retry budget,
//! traces) lives in [`SharedLayers`], keyed by target, and survives a swap.
//!
//! Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /healthz`,
//! `GET /v1/traces/{id}`, `GET /metrics`.

mod admin;
mod body;
mod error;
mod handlers;
mod log_format;
mod metrics;
mod server;
mod stack;
mod stream_watch;
mod sync;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use admin::AdminTokens;
pub use error::ApiError;
pub use log_format::{LogFields, LogTime};
pub use metrics::{prometheus, LATENCY_BUCKETS};
pub use server::{
    raise_open_files_limit, return_large_buffers, BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT,
    LARGE_BUFFER_BYTES, SEND_TIMEOUT,
};
pub use stack::{budget_config, health_config, latency_config, SharedLayers, Stack};
pub use sync::{rfc3339_now, StartError};

use crate::config::{Compiled, Config, ConfigError};
use crate::provider::HttpClient;

/// How long [`Gateway::serve`] waits, after the drain deadline closed the
/// remaining connections, for the requests they carried to end.
const REQUESTS_END_ON_EXIT: Duration = Duration::from_secs(1);

/// How long [`Gateway::serve`] waits, after draining, for the traffic
/// records still queued to be written.
const TRAFFIC_FLUSH_ON_EXIT: Duration = Duration::from_secs(5);

/// One config version, compiled, with the stack built for it.
///
/// A request takes the `Live` current when it arrives and keeps it to the
/// end, however many versions are applied meanwhile:
///
/// ```
/// use modelux::gateway::Gateway;
/// # let config = modelux::config::Config::from_json(r#"{
/// #     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
/// #     "models": {"llama": {"provider": "local"}}
/// # }"#).unwrap();
/// let gateway = Gateway::new(config.clone(), 1).unwrap();
/// let live = gateway.live();
/// assert_eq!(live.version, 1);
/// assert!(live.config.models.contains_key("llama"));
/// assert!(live.compiled.resolve("llama").is_some());
///
/// gateway.apply(config, 2).unwrap();
/// assert_eq!(live.version, 1); // still the version it was taken at
/// assert_eq!(gateway.live().version, 2);
/// ```
pub struct Live {
    /// The version number.
    pub version: u64,
    /// The config as loaded.
    pub config: Config,
    /// Routes and providers.
    pub compiled: Compiled,
    /// The routing service for this version.
    pub stack: Stack,
    /// `version` as the `x-modelux-config-version` header value, rendered once.
    pub(crate) version_header: http::HeaderValue,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

pub(crate) struct State {
    live: ArcSwap<Live>,
    /// Swapped under this lock when a version changes their settings.
    layers: std::sync::Mutex<SharedLayers>,
    /// The ring of `layers` (the same one for the gateway's life).
    traces: crate::trace::TraceStore,
    /// The recorder of `layers` (the same one for the gateway's life).
    traffic: Option<crate::traffic::TrafficRecorder>,
    client: HttpClient,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// `server.max_connections` of the config the gateway started with.
    max_connections: usize,
    /// `server.idle_timeout_ms` of the config the gateway started with.
    idle_timeout: Duration,
    /// Chat requests in flight, bounded by `server.max_in_flight`.
    pub(crate) in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes of request bodies held, bounded by
    /// `server.max_body_bytes_in_flight`.
    pub(crate) body_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// When the last "in-flight limit reached" warning was logged.
    pub(crate) shed_warned: std::sync::Mutex<Option<tokio::time::Instant>>,
    admin: ArcSwap<AdminTokens>,
    store: std::sync::OnceLock<Arc<dyn crate::store::ConfigStore>>,
    sync: std::sync::Mutex<sync::SyncStatus>,
    /// The open SSE bodies, cut when their client stops taking them.
    streams: stream_watch::StreamWatch,
    /// One admin dry-run at a time on this replica: a replay holds its
    /// records in memory (≈ 1.5 GB for a million) and two threads busy.
    pub(crate) dry_run: Arc<tokio::sync::Semaphore>,
}

impl State {
    pub(crate) fn store(&self) -> Option<Arc<dyn crate::store::ConfigStore>> {
        self.store.get().cloned()
    }

    fn sync_status(&self) -> std::sync::MutexGuard<'_, sync::SyncStatus> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compiles and swaps in `config` as `version`, unless it is already
    /// served. A config that does not compile here (an unset key variable on
    /// this replica) is refused and recorded; the current one keeps serving.
    pub(crate) fn apply_version(&self, version: u64, config: Config) -> bool {
        if self.live.load().version == version {
            return true;
        }
        match config.compile(self.client.clone(), &env_var) {
            Ok(compiled) => {
                // Held until the new version is live: two versions applied at
                // once cannot leave one's settings under the other's routes.
                let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(t) = &layers.traffic {
                    t.update(&config.traffic);
                }
                layers.reconfigure(&config);
                // Targets this version no longer has: their health and
                // latency would otherwise be kept (and an ejected one
                // reported as ejected) until a restart.
                let kept =
                    |id: &crate::provider::TargetId| compiled.targets.iter().any(|t| t.id == *id);
                layers.health.registry().retain(kept);
                layers.latency.registry().retain(kept);
                let stack = layers.stack(compiled.providers.clone());
                self.live.store(Arc::new(Live {
                    version,
                    config,
                    compiled,
                    stack,
                    version_header: version.into(),
                }));
                drop(layers);
                ::metrics::gauge!("modelux_config_version").set(version as f64);
                let mut st = self.sync_status();
                st.applied_version = version;
                st.applied_at = rfc3339_now();
                st.apply_error = None;
                st.failed_version = None;
                ::metrics::gauge!("modelux_config_apply_failed").set(0.0);
                tracing::info!(version, "config version activated");
                true
            }
            Err(e) => {
                tracing::error!(version, error = %e, "config version cannot be served here; keeping the current one");
                let mut st = self.sync_status();
                st.apply_error = Some(format!("version {version}: {e}"));
                st.failed_version = Some(version);
                ::metrics::gauge!("modelux_config_apply_failed").set(1.0);
                false
            }
        }
    }

    pub(crate) fn status_json(&self) -> serde_json::Value {
        let st = self.sync_status();
        let write_error = self.traffic.as_ref().and_then(|t| t.write_error());
        serde_json::json!({
            "version": self.live.load().version,
            "applied_at": st.applied_at,
            "store": st.store_url,
            "store_ok": st.store_ok,
            "last_store_error": st.last_store_error,
            "last_store_error_at": st.last_store_error_at,
            "store_writable": write_error.is_none(),
            "last_write_error": write_error,
            "apply_error": st.apply_error,
        })
    }
}

/// A gateway: config handle, shared layer state and the HTTP router.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = modelux::config::Config::from_json(&std::fs::read_to_string("modelux.json")?)?;
/// let gateway = modelux::gateway::Gateway::new(config, 1)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// gateway.serve(listener, std::future::pending(), std::time::Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Gateway {
    state: Arc<State>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

/// The credentials of an `Authorization: Bearer <token>` header; the
/// scheme's name is case-insensitive (RFC 9110), so `bearer` works too.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The variable naming a PEM file of extra root certificates the gateway
/// trusts for providers and an `https://` egress proxy.
///
/// ```
/// use modelux::gateway::{upstream_client, CA_FILE_VAR};
/// let file = std::env::temp_dir().join(format!("modelux-doc-ca-{}.pem", std::process::id()));
/// std::fs::write(&file, "not a certificate").unwrap();
/// std::env::set_var(CA_FILE_VAR, &file);
/// // A file without a certificate is refused, not ignored.
/// let err = upstream_client().unwrap_err();
/// assert_eq!(err.problems[0].path, "MODELUX_CA_FILE");
/// assert!(err.problems[0].message.contains("no certificate found"));
/// # std::fs::remove_file(file).unwrap();
/// ```
pub const CA_FILE_VAR: &str = "MODELUX_CA_FILE";

/// The client the gateway reaches providers with: the egress proxy the
/// environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`),
/// refused when it cannot be used rather than ignored, and the Mozilla roots
/// plus those in [`CA_FILE_VAR`]'s file.
///
/// ```
/// std::env::set_var("MODELUX_CA_FILE", "/nonexistent/ca.pem");
/// let err = modelux::gateway::upstream_client().unwrap_err();
/// assert_eq!(err.problems[0].path, "MODELUX_CA_FILE");
/// std::env::remove_var("MODELUX_CA_FILE");
/// assert!(modelux::gateway::upstream_client().is_ok() || std::env::var_os("HTTPS_PROXY").is_some());
/// ```
pub fn upstream_client() -> Result<HttpClient, ConfigError> {
    let problem = |path: &str, message: String| ConfigError {
        problems: vec![crate::config::Problem {
            path: path.into(),
            message,
        }],
    };
    let mut builder = HttpClient::builder();
    if let Some(path) = std::env::var_os(CA_FILE_VAR).filter(|p| !p.is_empty()) {
        let shown = path.to_string_lossy().into_owned();
        let pem = std::fs::read(&path)
            .map_err(|e| problem(CA_FILE_VAR, format!("cannot read {shown}: {e}")))?;
        builder = builder
            .add_root_certificates_pem(&pem)
            .map_err(|e| problem(CA_FILE_VAR, format!("{shown}: {e}")))?;
    }
    let client = builder
        .build()
        .map_err(|e| problem(e.setting(), e.problem().to_owned()))?;
    Ok(client)
}

impl Gateway {
    /// A gateway serving `config` as `version`, with provider keys read from
    /// the environment.
    ///
    /// ```
    /// use modelux::config::Config;
    /// use modelux::gateway::Gateway;
    /// let config = Config::from_json(r#"{
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    ///     "models": {"llama": {"provider": "local"}},
    ///     "routes": {"default": {"attempts": [{"model": "llama", "timeout_ms": 3000}]}}
    /// }"#).unwrap();
    /// let gateway = Gateway::new(config, 1).unwrap();
    /// assert_eq!(gateway.version(), 1);
    /// assert!(gateway.live().compiled.resolve("default").is_some());
    /// ```
    pub fn new(config: Config, version: u64) -> Result<Self, ConfigError> {
        Self::build(config, version, None)
    }

    fn build(
        config: Config,
        version: u64,
        traffic: Option<crate::traffic::TrafficRecorder>,
    ) -> Result<Self, ConfigError> {
        let client = upstream_client()?;
        let compiled = config.compile(client.clone(), &env_var)?;
        let mut layers = SharedLayers::new(&config);
        layers.traffic = traffic;
        let stack = layers.stack(compiled.providers.clone());
        let max_connections = config.server.max_connections;
        let idle_timeout = Duration::from_millis(config.server.idle_timeout_ms);
        // The exporter first: a gauge set before it is installed is lost,
        // and this one is set again only when the version changes.
        let metrics = prometheus();
        ::metrics::gauge!("modelux_config_version").set(version as f64);
        ::metrics::gauge!("modelux_config_apply_failed").set(0.0);
        Ok(Gateway {
            state: Arc::new(State {
                live: ArcSwap::from_pointee(Live {
                    version,
                    config,
                    compiled,
                    stack,
                    version_header: version.into(),
                }),
                traces: layers.traces.clone(),
                traffic: layers.traffic.clone(),
                layers: std::sync::Mutex::new(layers),
                client,
                metrics,
                max_connections,
                idle_timeout,
                in_flight: Default::default(),
                body_bytes: Default::default(),
                shed_warned: std::sync::Mutex::new(None),
                admin: ArcSwap::from_pointee(AdminTokens::from_env()),
                store: std::sync::OnceLock::new(),
                sync: std::sync::Mutex::new(sync::SyncStatus::new(version)),
                streams: stream_watch::StreamWatch::default(),
                dry_run: Arc::new(tokio::sync::Semaphore::new(1)),
            }),
        })
    }

    /// Replaces the admin tokens (by default read from the environment).
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use tower::ServiceExt;
    /// use modelux::gateway::{AdminTokens, Gateway};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let config = modelux::config::Config::from_json(r#"{
    /// #     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    /// #     "models": {"llama": {"provider": "local"}}
    /// # }"#).unwrap();
    /// let gateway = Gateway::new(config, 1).unwrap();
    /// gateway.set_admin_tokens(AdminTokens::single("alice", "t-alice"));
    /// let status = |token: &str| {
    ///     let req = http::Request::get("/admin/status")
    ///         .header("authorization", format!("Bearer {token}"))
    ///         .body(Empty::<bytes::Bytes>::new())
    ///         .unwrap();
    ///     gateway.router().oneshot(req)
    /// };
    /// assert_eq!(status("t-alice").await.unwrap().status(), 200);
    /// assert_eq!(status("t-wrong").await.unwrap().status(), 401);
    /// # }
    /// ```
    pub fn set_admin_tokens(&self, tokens: AdminTokens) {
        self.state.admin.store(Arc::new(tokens));
    }

    /// Swaps in a new config version. Requests in flight finish on the
    /// version they started with; health, latency and the retry budget carry
    /// over. A config that does not compile leaves the current one serving.
    ///
    /// ```
    /// use modelux::config::Config;
    /// use modelux::gateway::Gateway;
    /// # let config = modelux::config::Config::from_json(r#"{
    /// #     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    /// #     "models": {"llama": {"provider": "local"}}
    /// # }"#).unwrap();
    /// let gateway = Gateway::new(config, 1).unwrap();
    /// let v2 = Config::from_json(r#"{
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    ///     "models": {"llama": {"provider": "local"}, "qwen": {"provider": "local"}}
    /// }"#).unwrap();
    /// gateway.apply(v2, 2).unwrap();
    /// assert_eq!(gateway.version(), 2);
    /// assert!(gateway.live().compiled.resolve("qwen").is_some());
    ///
    /// // A key variable that is not set here: refused, version 2 keeps serving.
    /// let v3 = Config::from_json(r#"{
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1",
    ///                             "api_key_env": "MODELUX_EXAMPLE_UNSET_KEY"}},
    ///     "models": {"llama": {"provider": "local"}}
    /// }"#).unwrap();
    /// let err = gateway.apply(v3, 3).unwrap_err();
    /// assert!(err.to_string().contains("MODELUX_EXAMPLE_UNSET_KEY is not set"));
    /// assert_eq!(gateway.version(), 2);
    /// ```
    pub fn apply(&self, config: Config, version: u64) -> Result<(), ConfigError> {
        config.compile(self.state.client.clone(), &env_var)?;
        self.state.apply_version(version, config);
        Ok(())
    }

    /// The status an operator sees at `GET /admin/status`.
    ///
    /// ```
    /// # use modelux::gateway::Gateway;
    /// # let config = modelux::config::Config::from_json(r#"{
    /// #     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    /// #     "models": {"llama": {"provider": "local"}}
    /// # }"#).unwrap();
    /// let gateway = Gateway::new(config, 1).unwrap();
    /// let status = gateway.status();
    /// assert_eq!(status["version"], 1);
    /// assert_eq!(status["store_ok"], true);
    /// assert!(status["store"].is_null()); // started without a config store
    /// assert!(status["apply_error"].is_null());
    /// ```
    pub fn status(&self) -> serde_json::Value {
        self.state.status_json()
    }

    /// The version being served.
    ///
    /// ```
    /// # use modelux::gateway::Gateway;
    /// # let config = modelux::config::Config::from_json(r#"{
    /// #     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    /// #     "models": {"llama": {"provider": "local"}}
    /// # }"#).unwrap();
    /// let gateway = Gateway::new(config.clone(), 7).unwrap();
    /// assert_eq!(gateway.version(), 7);
    /// gateway.apply(config, 8).unwrap();
    /// assert_eq!(gateway.version(), 8);
    /// ```
    pub fn version(&self) -> u64 {
        self.state.live.load().version
    }

    /// The live config.
    ///
    /// ```
    /// # use modelux::gateway::Gateway;
    /// # let config = modelux::config::Config::from_json(r#"{
    /// #     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    /// #     "models": {"llama": {"provider": "local"}}
    /// # }"#).unwrap();
    /// let gateway = Gateway::new(config, 1).unwrap();
    /// let live = gateway.live();
    /// assert_eq!(live.version, 1);
    /// assert_eq!(live.config.providers["local"].base_url, "http://127.0.0.1:8000/v1");
    /// assert!(live.compiled.resolve("llama").is_some());
    /// assert!(live.compiled.resolve("gpt-5").is_none());
    /// ```
    pub fn live(&self) -> Arc<Live> {
        self.state.live.load_full()
    }

    /// The traffic log writer, when the gateway runs with a store.
    ///
    /// ```
    /// use http_body_util::Full;
    /// use tower::ServiceExt;
    /// use modelux::gateway::Gateway;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// # let config = modelux::config::Config::from_value(serde_json::json!({
    /// #     "providers": {"mock": {"kind": "openai", "base_url": mock.openai_url()}},
    /// #     "models": {"gpt-test": {"provider": "mock"}}
    /// # })).unwrap();
    /// // Without a store there is no traffic log.
    /// assert!(Gateway::new(config.clone(), 1).unwrap().traffic().is_none());
    ///
    /// let store = modelux::store::open("memory").await.unwrap();
    /// let gateway = Gateway::with_store(store, "memory", Some((config, "modelux.json"))).await.unwrap();
    /// let req = http::Request::post("/v1/chat/completions")
    ///     .header("content-type", "application/json")
    ///     .body(Full::from(r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// assert_eq!(gateway.router().oneshot(req).await.unwrap().status(), 200);
    /// let traffic = gateway.traffic().unwrap();
    /// traffic.flush().await;
    /// assert_eq!(traffic.written(), 1);
    /// # }
    /// ```
    pub fn traffic(&self) -> Option<&crate::traffic::TrafficRecorder> {
        self.state.traffic.as_ref()
    }

    /// The shared layer state (health, latency, budget, traces) of the
    /// version being served: handles to it, cheap to clone.
    ///
    /// ```
    /// use http_body_util::Full;
    /// use tower::ServiceExt;
    /// use modelux::gateway::Gateway;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// # let config = modelux::config::Config::from_value(serde_json::json!({
    /// #     "providers": {"mock": {"kind": "openai", "base_url": mock.openai_url()}},
    /// #     "models": {"gpt-test": {"provider": "mock"}}
    /// # })).unwrap();
    /// let gateway = Gateway::new(config.clone(), 1).unwrap();
    /// let req = http::Request::post("/v1/chat/completions")
    ///     .header("content-type", "application/json")
    ///     .body(Full::from(r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// let resp = gateway.router().oneshot(req).await.unwrap();
    /// let id = resp.headers()["x-modelux-request-id"].to_str().unwrap().to_owned();
    /// assert!(gateway.layers().traces.get(&id).is_some());
    ///
    /// // The state outlives a config version.
    /// gateway.apply(config, 2).unwrap();
    /// assert!(gateway.layers().traces.get(&id).is_some());
    /// # }
    /// ```
    pub fn layers(&self) -> SharedLayers {
        self.state
            .layers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The HTTP routes.
    ///
    /// An axum [`Router`], to serve with [`Gateway::serve`] or to call in
    /// process:
    ///
    /// ```
    /// use http_body_util::{BodyExt, Empty};
    /// use tower::ServiceExt;
    /// use modelux::gateway::Gateway;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let config = modelux::config::Config::from_json(r#"{
    /// #     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    /// #     "models": {"llama": {"provider": "local"}}
    /// # }"#).unwrap();
    /// let gateway = Gateway::new(config, 1).unwrap();
    /// let get = |path: &str| http::Request::get(path).body(Empty::<bytes::Bytes>::new()).unwrap();
    /// let resp = gateway.router().oneshot(get("/v1/models")).await.unwrap();
    /// assert_eq!(resp.status(), 200);
    /// let body = resp.into_body().collect().await.unwrap().to_bytes();
    /// let models: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// assert_eq!(models["data"][0]["id"], "llama");
    /// assert_eq!(gateway.router().oneshot(get("/nowhere")).await.unwrap().status(), 404);
    /// # }
    /// ```
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(handlers::chat_completions))
            .route("/v1/models", get(handlers::models))
            .route("/v1/models/{id}", get(handlers::model))
            .route("/v1/traces/{id}", get(handlers::trace))
            .route("/healthz", get(handlers::healthz))
            .route("/metrics", get(handlers::metrics))
            .merge(admin::router(self.state.clone()))
            .fallback(handlers::not_found)
            .method_not_allowed_fallback(handlers::method_not_allowed)
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting
    /// and lets requests and streams in flight finish for up to `grace`,
    /// then writes the traffic records still queued (for up to 5 s).
    /// `TCP_NODELAY` is set on every accepted socket; HTTP/1.1 clients must
    /// send a request's headers within `server.idle_timeout_ms`
    /// ([`HEADER_READ_TIMEOUT`], 75 s, by default), which also closes
    /// kept-alive connections idle that long; HTTP/2 connections are pinged
    /// every 30 s and closed once no request has been open on them that long.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_body_util::{BodyExt, Full};
    /// use modelux::config::Config;
    /// use modelux::gateway::Gateway;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let config = Config::from_value(serde_json::json!({
    ///     "providers": {"mock": {"kind": "openai", "base_url": mock.openai_url()}},
    ///     "models": {"gpt-test": {"provider": "mock"}}
    /// })).unwrap();
    /// let gateway = Gateway::new(config, 1).unwrap();
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// let url = format!("http://{}", listener.local_addr().unwrap());
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let shutdown = async move {
    ///     let _ = stopped.await;
    /// };
    /// let server = tokio::spawn(gateway.serve(listener, shutdown, Duration::from_secs(5)));
    ///
    /// let req = http::Request::post(format!("{url}/v1/chat/completions"))
    ///     .header("content-type", "application/json")
    ///     .body(Full::from(r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// let resp = modelux::provider::http_client().request(req).await.unwrap();
    /// assert_eq!(resp.status(), 200);
    /// let body = resp.into_body().collect().await.unwrap().to_bytes();
    /// let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().starts_with("word0"));
    ///
    /// stop.send(()).unwrap();
    /// server.await.unwrap().unwrap();
    /// # }
    /// ```
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<()> {
        let traffic = self.state.traffic.clone();
        let limits = server::Limits {
            grace,
            max_connections: self.state.max_connections,
            idle_timeout: self.state.idle_timeout,
        };
        server::serve(listener, self.router(), shutdown, limits).await;
        // An HTTP/2 request runs in a task of its own, which ends only after
        // its connection was dropped: a stream cut at the drain deadline
        // records itself (`client_disconnected`) a moment later. Wait for the
        // requests in flight to end, briefly, so those records are queued
        // before the flush below.
        let in_flight = &self.state.in_flight;
        let ended = async {
            // The count drops after the record is queued: a stream's body
            // drops its traced stream before its admission.
            while in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let _ = tokio::time::timeout(REQUESTS_END_ON_EXIT, ended).await;
        // The records of the requests just drained are still queued (the
        // writer writes once a second): write them before returning.
        if let Some(t) = traffic {
            if tokio::time::timeout(TRAFFIC_FLUSH_ON_EXIT, t.flush())
                .await
                .is_err()
            {
                tracing::warn!(
                    timeout_ms = TRAFFIC_FLUSH_ON_EXIT.as_millis() as u64,
                    "traffic log not written before exit: the store did not answer in time"
                );
            }
        }
        Ok(())
    }
}
