//! Latency ranking: the fastest healthy candidate first.
//!
//! # Why
//! The same model is often served by several providers, and their speed
//! drifts over the day. For routes with `strategy: "latency"`, this layer
//! orders candidates by a live p50 per target, estimated from a window of
//! recent successful attempts: a stream is ranked by the targets' time to
//! first token, a whole answer by their whole-response latency, each from
//! its own window (the two are different quantities, and one window of both
//! ranked a target by its traffic mix rather than its speed). A target is only ranked once it has
//! `min_samples` samples; until then it keeps its config place behind the
//! ranked ones. A small share of requests (`explore`) puts the least recently
//! measured other candidate first, so cold or recovered targets keep fresh estimates
//! instead of being judged forever on old numbers.
//!
//! Put it *outside* [`HealthScoreLayer`](crate::health::HealthScoreLayer):
//! health's reordering is stable, so the latency order survives among
//! healthy targets and an unhealthy target is never ranked ahead of a
//! healthy one. Routes with `strategy: "fallback"` keep config order, but
//! their attempts are still measured.

mod estimator;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

pub use estimator::{LatencyEstimate, LatencyRegistry, Measure};
pub use layer::LatencyRankLayer;

use crate::route::RouteRequest;

/// Estimator settings.
///
/// ```
/// use std::time::Duration;
/// use modelux::latency::{LatencyConfig, LatencyRegistry};
/// use modelux::provider::TargetId;
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
///
/// let registry = LatencyRegistry::new(LatencyConfig { max_samples: 3, ..Default::default() });
/// let id = TargetId::new("openai", "m");
/// for ms in [100, 200, 300, 400, 500] {
///     let latency = Duration::from_millis(ms);
///     registry.on_attempt(&AttemptReport { target: &id, result: Ok(()), latency, stream: false, phase: AttemptPhase::Whole });
/// }
/// let estimate = registry.estimate(&id).unwrap();
/// assert_eq!(estimate.samples, 3); // only the newest three are kept
/// assert_eq!(estimate.p50, Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyConfig {
    /// Samples older than this are ignored.
    pub window: Duration,
    /// Samples needed before a target's p50 is trusted for ranking.
    pub min_samples: usize,
    /// Share of requests (0..1) that explore a less-measured candidate first.
    pub explore: f64,
    /// Samples kept per target at most.
    pub max_samples: usize,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            window: Duration::from_secs(300),
            min_samples: 5,
            explore: 0.05,
            max_samples: 256,
        }
    }
}

/// Orders `latency` routes by live p50 and measures every attempt. See the
/// [module docs](self).
///
/// ```
/// # tokio_test::block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use modelux::latency::{LatencyConfig, LatencyRank, LatencyRegistry};
/// use modelux::provider::{Target, TargetId};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport, Candidate, Route, RouteRequest, Strategy};
/// use tower::{service_fn, ServiceExt};
///
/// let reg = LatencyRegistry::new(LatencyConfig { min_samples: 1, explore: 0.0, ..Default::default() });
/// for (p, ms) in [("slow", 900), ("fast", 100)] {
///     let id = TargetId::new(p, "m");
///     reg.on_attempt(&AttemptReport { target: &id, result: Ok(()), latency: Duration::from_millis(ms), stream: false, phase: AttemptPhase::Whole });
/// }
/// let mut route = Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("slow", "m")), Duration::from_secs(1)),
///     Candidate::new(Arc::new(Target::new("fast", "m")), Duration::from_secs(1)),
/// ]);
/// route.strategy = Strategy::Latency;
/// let order = service_fn(|req: RouteRequest| async move {
///     Ok::<_, std::convert::Infallible>(req.candidates[0].target.id.to_string())
/// });
/// let chat = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let first = LatencyRank::new(order, reg).oneshot(RouteRequest::new(chat, Arc::new(route))).await.unwrap();
/// assert_eq!(first, "fast/m");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct LatencyRank<S> {
    inner: S,
    /// Shared with every request as its observer (one `Arc`, not one per request).
    registry: Arc<LatencyRegistry>,
}

impl<S> LatencyRank<S> {
    /// Wraps `inner`, ranking with `registry`.
    ///
    /// The router below reports every attempt to the registry, whatever the
    /// route's strategy; successes feed the estimates:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::{sync::Arc, time::Duration};
    /// use modelux::api::{ChatCompletion, ChatRequest};
    /// use modelux::fallback::Fallback;
    /// use modelux::latency::{LatencyConfig, LatencyRank, LatencyRegistry};
    /// use modelux::provider::{AttemptRequest, ProviderError, ProviderResponse, Target, TargetId};
    /// use modelux::route::{Candidate, Route, RouteRequest};
    /// use tower::{service_fn, ServiceExt};
    ///
    /// let leaf = service_fn(|_: AttemptRequest| async {
    ///     Ok::<_, ProviderError>(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
    /// });
    /// let registry = LatencyRegistry::new(LatencyConfig::default());
    /// let svc = LatencyRank::new(Fallback::new(leaf), registry.clone());
    /// let route = Arc::new(Route::fallback("r", vec![
    ///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
    /// ]));
    /// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
    /// svc.oneshot(RouteRequest::new(chat, route)).await.unwrap();
    /// assert_eq!(registry.estimate(&TargetId::new("a", "m")).unwrap().samples, 1);
    /// # }
    /// ```
    pub fn new(inner: S, registry: LatencyRegistry) -> Self {
        LatencyRank {
            inner,
            registry: Arc::new(registry),
        }
    }
}

impl<S> Service<RouteRequest> for LatencyRank<S>
where
    S: Service<RouteRequest>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RouteRequest) -> Self::Future {
        self.registry.order(&mut req);
        req.ctx.observers.push(self.registry.clone());
        self.inner.call(req)
    }
}
