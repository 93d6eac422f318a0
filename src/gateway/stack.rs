//! Assembling the layers into one routing service.

use std::time::Duration;

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

/// The assembled routing service.
pub type Stack = BoxCloneSyncService<RouteRequest, RouteResponse, RouteError>;

/// The state that outlives a config version: health, latency estimates, the
/// retry budget and the trace ring, keyed by target so a new config picks up
/// where the old one left off.
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
}

impl SharedLayers {
    /// Fresh state sized by `config`.
    pub fn new(config: &Config) -> Self {
        SharedLayers {
            traces: TraceStore::new(config.traces.capacity),
            health: HealthScoreLayer::new(health_config(&config.health)),
            latency: LatencyRankLayer::new(latency_config(&config.latency)),
            budget: RetryBudgetLayer::new(budget_config(&config.retry_budget)),
        }
    }

    /// The full stack around `providers`, outermost first: trace, latency
    /// ranking, health ordering, retry budget, fallback router.
    ///
    /// Latency sits outside health so health's stable reordering keeps the
    /// latency order among healthy targets and never ranks an unhealthy
    /// target first; the retry budget sits right outside the router it
    /// feeds; the trace is outermost so it sees every decision.
    pub fn stack(&self, providers: Providers) -> Stack {
        let svc = ServiceBuilder::new()
            .layer(TraceLayer::new(self.traces.clone()))
            .layer(self.latency.clone())
            .layer(self.health.clone())
            .layer(self.budget.clone())
            .layer(FallbackLayer::new())
            .service(providers);
        BoxCloneSyncService::new(svc)
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Health settings from config.
pub fn health_config(s: &HealthSettings) -> HealthConfig {
    HealthConfig {
        window: ms(s.window_ms),
        consecutive_failures: s.consecutive_failures,
        failure_rate: s.failure_rate,
        min_requests: s.min_requests,
        cooldown_base: ms(s.cooldown_base_ms),
        cooldown_max: ms(s.cooldown_max_ms),
        probes: s.probes,
    }
}

/// Latency settings from config.
pub fn latency_config(s: &LatencySettings) -> LatencyConfig {
    LatencyConfig {
        window: ms(s.window_ms),
        min_samples: s.min_samples,
        explore: s.explore,
        max_samples: s.max_samples,
    }
}

/// Retry budget settings from config.
pub fn budget_config(s: &RetryBudgetSettings) -> RetryBudgetConfig {
    RetryBudgetConfig {
        ttl: ms(s.ttl_ms),
        min_per_sec: s.min_per_sec,
        retry_percent: s.retry_percent as f32,
    }
}
