//! Assembling the layers into one routing service.

use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::config::{Config, HealthSettings, LatencySettings, RetryBudgetSettings};
use crate::fallback::FallbackLayer;
use crate::health::{HealthConfig, HealthScoreLayer};
use crate::latency::{LatencyConfig, LatencyRankLayer};
use crate::provider::Providers;
use crate::retry_budget::{RetryBudgetConfig, RetryBudgetLayer};
use crate::route::{RouteError, RouteRequest, RouteResponse};
use crate::trace::{TraceLayer, TraceStore};
use crate::traffic::TrafficRecorder;

/// The assembled routing service.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use modelux::{gateway::{SharedLayers, Stack}, provider::Providers, route::{Route, RouteRequest}};
/// use tower::ServiceExt;
/// # let base = serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"m": {"provider": "p"}},
/// # });
/// let config = modelux::config::Config::from_value(base).unwrap();
/// let stack: Stack = SharedLayers::new(&config).stack(Providers::new([]));
/// let chat = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// // A route with no candidates fails, but the stack still answers.
/// let req = RouteRequest::new(chat, Arc::new(Route::fallback("r", vec![])));
/// assert!(stack.oneshot(req).await.is_err());
/// # }
/// ```
pub type Stack = BoxCloneSyncService<RouteRequest, RouteResponse, RouteError>;

/// The state that outlives a config version: health, latency estimates, the
/// retry budget and the trace ring, keyed by target so a new config picks up
/// where the old one left off.
///
/// ```
/// use modelux::{config::Config, gateway::SharedLayers};
/// # let base = serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"m": {"provider": "p"}},
/// # });
/// let layers = SharedLayers::new(&Config::from_value(base).unwrap());
/// // Clones share the same state: a trace stored through one is seen by the other.
/// let copy = layers.clone();
/// copy.traces.insert(modelux::trace::Trace { request_id: "r1".into(), ..Default::default() });
/// assert!(layers.traces.get("r1").is_some());
/// ```
#[derive(Clone, Debug)]
pub struct SharedLayers {
    /// Finished traces.
    pub traces: TraceStore,
    /// Health scores.
    pub health: HealthScoreLayer,
    /// Latency estimates.
    pub latency: LatencyRankLayer,
    /// The retry budget.
    pub budget: RetryBudgetLayer,
    /// The traffic log writer, when the gateway has a store: every finished
    /// request is handed to it by the trace layer's finish hook.
    pub traffic: Option<TrafficRecorder>,
}

impl SharedLayers {
    /// Fresh state sized by `config`.
    ///
    /// ```
    /// use modelux::{config::Config, gateway::SharedLayers};
    /// # let base = serde_json::json!({
    /// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    /// #     "models": {"m": {"provider": "p"}},
    /// # });
    /// let mut config = base;
    /// config["health"] = serde_json::json!({"consecutive_failures": 4});
    /// let layers = SharedLayers::new(&Config::from_value(config).unwrap());
    /// assert_eq!(layers.health.registry().config().consecutive_failures, 4);
    /// assert!(layers.traces.is_empty() && layers.traffic.is_none());
    /// ```
    pub fn new(config: &Config) -> Self {
        SharedLayers {
            traces: TraceStore::new(config.traces.capacity),
            health: HealthScoreLayer::new(health_config(&config.health)),
            latency: LatencyRankLayer::new(latency_config(&config.latency)),
            budget: RetryBudgetLayer::new(budget_config(&config.retry_budget)),
            traffic: None,
        }
    }

    /// Applies a new config version's `health`, `latency`, `retry_budget`
    /// and `traces` settings, keeping what was learnt: health and latency
    /// keep every target's state under the new settings, the trace ring
    /// keeps its traces (the oldest go if it shrank). A changed retry budget
    /// starts afresh: tower's budget cannot change its rates in place. Stacks
    /// built before keep the settings they were built with, so requests in
    /// flight finish under the version they started on.
    ///
    /// ```
    /// use modelux::config::Config;
    /// use modelux::gateway::SharedLayers;
    /// use serde_json::json;
    /// let config = |failures: u32| {
    ///     Config::from_value(json!({
    ///         "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    ///         "models": {"m": {"provider": "p"}},
    ///         "health": {"consecutive_failures": failures},
    ///     }))
    ///     .unwrap()
    /// };
    /// let mut layers = SharedLayers::new(&config(3));
    /// let registry = layers.health.registry();
    /// layers.reconfigure(&config(7));
    /// assert_eq!(layers.health.registry().config().consecutive_failures, 7);
    /// // The old registry, still used by stacks built before, keeps its settings.
    /// assert_eq!(registry.config().consecutive_failures, 3);
    /// ```
    pub fn reconfigure(&mut self, config: &Config) {
        let health = health_config(&config.health);
        if *self.health.registry().config() != health {
            self.health =
                HealthScoreLayer::from_registry(self.health.registry().with_config(health));
        }
        let latency = latency_config(&config.latency);
        if *self.latency.registry().config() != latency {
            self.latency =
                LatencyRankLayer::from_registry(self.latency.registry().with_config(latency));
        }
        let budget = budget_config(&config.retry_budget);
        if self.budget.config() != Some(budget) {
            self.budget = RetryBudgetLayer::new(budget);
        }
        self.traces.set_capacity(config.traces.capacity);
    }

    /// The full stack around `providers`, outermost first: trace, latency
    /// ranking, health ordering, retry budget, fallback router.
    ///
    /// Latency sits outside health so health's stable reordering keeps the
    /// latency order among healthy targets and never ranks an unhealthy
    /// target first; the retry budget sits right outside the router it
    /// feeds; the trace is outermost so it sees every decision.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use modelux::{config::Config, gateway::SharedLayers, mock::MockProvider, route::RouteRequest};
    /// use tower::ServiceExt;
    /// // Provider `p` is an in-process mock; model `m` is served by it.
    /// let mock = MockProvider::start().await.unwrap();
    /// # let config = Config::from_value(serde_json::json!({
    /// #     "providers": {"p": {"kind": "openai", "base_url": mock.openai_url()}},
    /// #     "models": {"m": {"provider": "p"}},
    /// # })).unwrap();
    /// let compiled = config.compile(modelux::provider::http_client(), &|_| None).unwrap();
    /// let layers = SharedLayers::new(&config);
    /// # let chat = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    /// let mut req = RouteRequest::new(chat, compiled.resolve("m").unwrap());
    /// req.ctx.request_id = "req-1".into();
    /// let resp = layers.stack(compiled.providers.clone()).oneshot(req).await.unwrap();
    /// assert_eq!((resp.served_by.id.to_string().as_str(), resp.attempts), ("p/m", 1));
    /// // The trace layer kept the request's trace.
    /// assert_eq!(layers.traces.get("req-1").unwrap().attempts.len(), 1);
    /// # }
    /// ```
    pub fn stack(&self, providers: Providers) -> Stack {
        let trace = match &self.traffic {
            // The recorder does not keep the candidates' reasons.
            Some(t) => TraceLayer::with_sink_without_candidates(self.traces.clone(), t.sink()),
            None => TraceLayer::new(self.traces.clone()),
        };
        let svc = ServiceBuilder::new()
            .layer(trace)
            .layer(self.latency.clone())
            .layer(self.health.clone())
            .layer(self.budget.clone())
            .layer(FallbackLayer::new())
            .service(providers);
        BoxCloneSyncService::new(svc)
    }
}

/// Health settings from config.
///
/// ```
/// use modelux::config::Config;
/// # let base = serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"m": {"provider": "p"}},
/// # });
/// let mut v = base;
/// v["health"] = serde_json::json!({"consecutive_failures": 9});
/// let config = Config::from_value(v).unwrap();
/// let health = modelux::gateway::health_config(&config.health);
/// assert_eq!(health.consecutive_failures, 9);
/// ```
pub fn health_config(s: &HealthSettings) -> HealthConfig {
    s.layer_config()
}

/// Latency settings from config.
///
/// ```
/// use modelux::config::Config;
/// # let base = serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"m": {"provider": "p"}},
/// # });
/// let mut v = base;
/// v["latency"] = serde_json::json!({"window_ms": 60000, "min_samples": 3});
/// let config = Config::from_value(v).unwrap();
/// let latency = modelux::gateway::latency_config(&config.latency);
/// assert_eq!(latency.window, std::time::Duration::from_secs(60));
/// assert_eq!(latency.min_samples, 3);
/// ```
pub fn latency_config(s: &LatencySettings) -> LatencyConfig {
    s.layer_config()
}

/// Retry budget settings from config.
///
/// ```
/// use modelux::config::Config;
/// # let base = serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"m": {"provider": "p"}},
/// # });
/// let mut v = base;
/// v["retry_budget"] = serde_json::json!({"ttl_ms": 5000, "retry_percent": 0.5});
/// let config = Config::from_value(v).unwrap();
/// let budget = modelux::gateway::budget_config(&config.retry_budget);
/// assert_eq!(budget.ttl, std::time::Duration::from_secs(5));
/// assert_eq!(budget.retry_percent, 0.5);
/// ```
pub fn budget_config(s: &RetryBudgetSettings) -> RetryBudgetConfig {
    s.layer_config()
}
