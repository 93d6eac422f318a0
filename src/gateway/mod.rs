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
mod error;
mod handlers;
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
pub use metrics::{prometheus, LATENCY_BUCKETS};
pub use server::{raise_open_files_limit, BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT, SEND_TIMEOUT};
pub use stack::{budget_config, health_config, latency_config, SharedLayers, Stack};
pub use sync::rfc3339_now;

use crate::config::{Compiled, Config, ConfigError};
use crate::provider::{http_client, HttpClient};

/// How long [`Gateway::serve`] waits, after draining, for the traffic
/// records still queued to be written.
const TRAFFIC_FLUSH_ON_EXIT: Duration = Duration::from_secs(5);

/// One config version, compiled, with the stack built for it.
pub struct Live {
    /// The version number.
    pub version: u64,
    /// The config as loaded.
    pub config: Config,
    /// Routes and providers.
    pub compiled: Compiled,
    /// The routing service for this version.
    pub stack: Stack,
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
    layers: SharedLayers,
    client: HttpClient,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    max_body_bytes: usize,
    /// `server.max_connections` of the config the gateway started with.
    max_connections: usize,
    admin: ArcSwap<AdminTokens>,
    store: std::sync::OnceLock<Arc<dyn crate::store::ConfigStore>>,
    sync: std::sync::Mutex<sync::SyncStatus>,
    /// The open SSE bodies, cut when their client stops taking them.
    streams: stream_watch::StreamWatch,
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
                if let Some(t) = &self.layers.traffic {
                    t.update(&config.traffic);
                }
                let stack = self.layers.stack(compiled.providers.clone());
                self.live.store(Arc::new(Live {
                    version,
                    config,
                    compiled,
                    stack,
                }));
                ::metrics::gauge!("modelux_config_version").set(version as f64);
                let mut st = self.sync_status();
                st.applied_version = version;
                st.applied_at = rfc3339_now();
                st.apply_error = None;
                tracing::info!(version, "config version activated");
                true
            }
            Err(e) => {
                tracing::error!(version, error = %e, "config version cannot be served here; keeping the current one");
                self.sync_status().apply_error = Some(format!("version {version}: {e}"));
                false
            }
        }
    }

    pub(crate) fn status_json(&self) -> serde_json::Value {
        let st = self.sync_status();
        serde_json::json!({
            "version": self.live.load().version,
            "applied_at": st.applied_at,
            "store": st.store_url,
            "store_ok": st.store_ok,
            "last_store_error": st.last_store_error,
            "last_store_error_at": st.last_store_error_at,
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

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Gateway {
    /// A gateway serving `config` as `version`, with provider keys read from
    /// the environment.
    pub fn new(config: Config, version: u64) -> Result<Self, ConfigError> {
        Self::build(config, version, None)
    }

    fn build(
        config: Config,
        version: u64,
        traffic: Option<crate::traffic::TrafficRecorder>,
    ) -> Result<Self, ConfigError> {
        let client = http_client();
        let compiled = config.compile(client.clone(), &env_var)?;
        let mut layers = SharedLayers::new(&config);
        layers.traffic = traffic;
        let stack = layers.stack(compiled.providers.clone());
        let max_body_bytes = config.server.max_body_bytes;
        let max_connections = config.server.max_connections;
        ::metrics::gauge!("modelux_config_version").set(version as f64);
        Ok(Gateway {
            state: Arc::new(State {
                live: ArcSwap::from_pointee(Live {
                    version,
                    config,
                    compiled,
                    stack,
                }),
                layers,
                client,
                metrics: prometheus(),
                max_body_bytes,
                max_connections,
                admin: ArcSwap::from_pointee(AdminTokens::from_env()),
                store: std::sync::OnceLock::new(),
                sync: std::sync::Mutex::new(sync::SyncStatus::new(version)),
                streams: stream_watch::StreamWatch::default(),
            }),
        })
    }

    /// Replaces the admin tokens (by default read from the environment).
    pub fn set_admin_tokens(&self, tokens: AdminTokens) {
        self.state.admin.store(Arc::new(tokens));
    }

    /// Swaps in a new config version. Requests in flight finish on the
    /// version they started with; health, latency and the retry budget carry
    /// over. A config that does not compile leaves the current one serving.
    pub fn apply(&self, config: Config, version: u64) -> Result<(), ConfigError> {
        config.compile(self.state.client.clone(), &env_var)?;
        self.state.apply_version(version, config);
        Ok(())
    }

    /// The status an operator sees at `GET /admin/status`.
    pub fn status(&self) -> serde_json::Value {
        self.state.status_json()
    }

    /// The version being served.
    pub fn version(&self) -> u64 {
        self.state.live.load().version
    }

    /// The live config.
    pub fn live(&self) -> Arc<Live> {
        self.state.live.load_full()
    }

    /// The traffic log writer, when the gateway runs with a store.
    pub fn traffic(&self) -> Option<&crate::traffic::TrafficRecorder> {
        self.state.layers.traffic.as_ref()
    }

    /// The shared layer state (health, latency, budget, traces).
    pub fn layers(&self) -> &SharedLayers {
        &self.state.layers
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(handlers::chat_completions))
            .route("/v1/models", get(handlers::models))
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
    /// send a request's headers within [`HEADER_READ_TIMEOUT`] (75 s, which
    /// also closes kept-alive connections idle that long), and idle HTTP/2
    /// connections are pinged every 30 s.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<()> {
        let traffic = self.state.layers.traffic.clone();
        let max_connections = self.state.max_connections;
        server::serve(listener, self.router(), shutdown, grace, max_connections).await;
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
