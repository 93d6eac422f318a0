//! Health scoring: traffic shifts away from a degraded target, probes it, and
//! returns when it recovers.
//!
//! # Why
//! A fallback chain alone still sends every request to a dead primary first
//! and pays its timeout each time. The health layer remembers: each (provider,
//! model) target is scored on a sliding window of its attempts; one that
//! crosses a failure threshold (consecutive failures, or a failure rate over
//! a minimum number of requests; 429s count) is *ejected* for a cool-down
//! that doubles with each repeated ejection up to a cap.
//!
//! Ejected targets are moved behind the healthy ones, never dropped: when
//! every target is unhealthy, the request still tries the one that will be
//! back soonest instead of being refused. After the cool-down a bounded
//! number of requests probe the target in its normal place; a success
//! restores it, a failure ejects it again for longer. A target that answered
//! 429 with `Retry-After` is cooling until then.
//!
//! Ordering happens once per request, in [`HealthScore::call`]; measurement
//! happens once per attempt, through the
//! [`AttemptObserver`](crate::route::AttemptObserver) the layer puts in the
//! request context, which the fallback router calls after every attempt.

mod layer;
mod state;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

pub use layer::HealthScoreLayer;
pub(crate) use state::MAX_WINDOW;
pub use state::{HealthRegistry, TargetHealth, TargetStatus};

use crate::route::RouteRequest;

/// Health thresholds and timings.
///
/// ```
/// use std::time::Duration;
/// use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
/// use modelux::provider::{Failure, ProviderError, TargetId};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
///
/// let config = HealthConfig { consecutive_failures: 2, ..Default::default() };
/// let registry = HealthRegistry::new(config);
/// let id = TargetId::new("openai", "m");
/// let err = ProviderError::new(Failure::Server { status: 503 }, "");
/// let failed = AttemptReport { target: &id, result: Err(&err), latency: Duration::ZERO, stream: false, phase: AttemptPhase::Whole };
/// registry.on_attempt(&failed);
/// assert_eq!(registry.status(&id), TargetStatus::Healthy);
/// registry.on_attempt(&failed); // the second failure in a row ejects it
/// assert!(matches!(registry.status(&id), TargetStatus::Ejected { .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthConfig {
    /// Sliding window of attempts the failure rate is computed over.
    pub window: Duration,
    /// This many failures in a row eject a target.
    pub consecutive_failures: u32,
    /// A failure rate at or above this (over at least `min_requests`) ejects a target.
    pub failure_rate: f64,
    /// Attempts needed in the window before the failure rate counts.
    pub min_requests: u32,
    /// First ejection's cool-down; each repeated ejection doubles it.
    pub cooldown_base: Duration,
    /// Longest cool-down.
    pub cooldown_max: Duration,
    /// Concurrent probe requests allowed once a cool-down ends.
    pub probes: u32,
    /// How long a target restored by a probe takes to get its full share
    /// of traffic back: first for ≈ 10 % of requests, rising linearly to
    /// all of them at the end (zero: all at once). Ejected again meanwhile,
    /// its cool-down keeps doubling, as for ejections in a row.
    pub slow_start: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window: Duration::from_secs(30),
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 10,
            cooldown_base: Duration::from_secs(5),
            cooldown_max: Duration::from_secs(60),
            probes: 1,
            slow_start: Duration::from_secs(30),
        }
    }
}

/// Orders each request's candidates healthy-first and measures every attempt.
/// See the [module docs](self).
///
/// ```
/// # tokio_test::block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use modelux::health::{HealthConfig, HealthRegistry, HealthScore};
/// use modelux::provider::{Failure, ProviderError, Target, TargetId};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport, Candidate, Route, RouteRequest};
/// use tower::{service_fn, ServiceExt};
///
/// let registry = HealthRegistry::new(HealthConfig { consecutive_failures: 1, ..Default::default() });
/// let down = TargetId::new("a", "m");
/// let err = ProviderError::new(Failure::Server { status: 503 }, "");
/// registry.on_attempt(&AttemptReport { target: &down, result: Err(&err), latency: Duration::ZERO, stream: false, phase: AttemptPhase::Whole });
///
/// let order = service_fn(|req: RouteRequest| async move {
///     Ok::<_, std::convert::Infallible>(req.candidates.iter().map(|c| c.target.id.to_string()).collect::<Vec<_>>())
/// });
/// let route = Arc::new(Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
/// ]));
/// let chat = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let got = HealthScore::new(order, registry).oneshot(RouteRequest::new(chat, route)).await.unwrap();
/// assert_eq!(got, ["b/m", "a/m"]);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct HealthScore<S> {
    inner: S,
    /// Shared with every request as its observer (one `Arc`, not one per request).
    registry: Arc<HealthRegistry>,
}

impl<S> HealthScore<S> {
    /// Wraps `inner`, scoring targets in `registry`.
    ///
    /// Around a [`Fallback`](crate::fallback::Fallback) router, a target that
    /// failed enough is tried last from the next request on:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::{sync::Arc, time::Duration};
    /// use modelux::api::{ChatCompletion, ChatRequest};
    /// use modelux::fallback::Fallback;
    /// use modelux::health::{HealthConfig, HealthRegistry, HealthScore};
    /// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
    /// use modelux::route::{Candidate, Route, RouteRequest};
    /// use tower::{service_fn, Service, ServiceExt};
    ///
    /// // "a" is down, "b" answers.
    /// let leaf = service_fn(|req: AttemptRequest| async move {
    ///     if &*req.target.id.provider == "a" {
    ///         Err(ProviderError::new(Failure::Connect, "refused"))
    ///     } else {
    ///         Ok(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
    ///     }
    /// });
    /// let registry = HealthRegistry::new(HealthConfig { consecutive_failures: 1, ..Default::default() });
    /// let mut svc = HealthScore::new(Fallback::new(leaf), registry);
    /// let mut route = Route::fallback("r", vec![
    ///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
    ///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
    /// ]);
    /// route.policy.same_target_retries = 0;
    /// let route = Arc::new(route);
    /// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
    ///
    /// // The first request tries "a", which fails and is ejected, then "b".
    /// let req = RouteRequest::new(chat.clone(), route.clone());
    /// let first = svc.ready().await.unwrap().call(req).await.unwrap();
    /// assert_eq!(first.attempts, 2);
    /// // The next one goes to "b" first.
    /// let second = svc.ready().await.unwrap().call(RouteRequest::new(chat, route)).await.unwrap();
    /// assert_eq!((second.attempts, second.served_by.id.to_string()), (1, "b/m".to_string()));
    /// # }
    /// ```
    pub fn new(inner: S, registry: HealthRegistry) -> Self {
        HealthScore {
            inner,
            registry: Arc::new(registry),
        }
    }
}

impl<S> Service<RouteRequest> for HealthScore<S>
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
