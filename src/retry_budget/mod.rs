//! Retries bounded by a budget shared across requests.
//!
//! # Why
//! When a provider goes down, every request it fails wants a retry. Per-request
//! retry limits multiply the load on whatever is still up by the retry count,
//! exactly when it can least take it. A budget shared across requests, in the
//! spirit of Finagle's and tower's `TpsBudget`, caps retries (same-target
//! retries, fallbacks and continuations alike) at a percentage of recent
//! traffic plus a small floor: under a total upstream outage, upstream
//! attempts per client request stay at `1 + retry_percent` in steady state.
//!
//! The layer does not retry anything itself: it deposits one token per request
//! and hands the budget to the [`Fallback`](crate::fallback::Fallback) router
//! through the request context; the router withdraws before each retry and
//! stops, saying so in the trace, when the budget is empty.

mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::retry::budget::TpsBudget;
use tower::Service;

pub use layer::RetryBudgetLayer;

use crate::route::{RouteRequest, SharedBudget};

/// Settings of the shared budget.
///
/// Without a per-second floor, retries are earned by traffic alone: at the
/// default 20 %, five requests earn one retry.
///
/// ```
/// use modelux::retry_budget::RetryBudgetConfig;
/// use tower::retry::budget::Budget;
/// let budget = RetryBudgetConfig { min_per_sec: 0, ..Default::default() }.build();
/// assert!(!budget.withdraw()); // nothing earned yet
/// for _ in 0..5 {
///     budget.deposit(); // what `RetryBudget` does for every request
/// }
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// How long a deposit stays in the budget.
    pub ttl: Duration,
    /// Retries allowed per second regardless of traffic.
    pub min_per_sec: u32,
    /// Retries allowed as a share of requests (0.2 = 20%).
    pub retry_percent: f32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_percent: 0.2,
        }
    }
}

impl RetryBudgetConfig {
    /// Builds tower's `TpsBudget` from these settings.
    ///
    /// ```
    /// use modelux::retry_budget::RetryBudgetConfig;
    /// use tower::retry::budget::Budget;
    /// let budget = RetryBudgetConfig::default().build();
    /// // With no traffic yet, only the floor is available:
    /// // 10 retries per second over the 10 s the budget remembers.
    /// let allowed = (0..1000).take_while(|_| budget.withdraw()).count();
    /// assert_eq!(allowed, 100);
    /// ```
    pub fn build(&self) -> SharedBudget {
        let ttl = self
            .ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        // tower's `TpsBudget` asserts its bounds: a NaN share or a floor of
        // `i32::MAX` retries per second would panic there.
        let pct = if self.retry_percent.is_nan() {
            0.0
        } else {
            self.retry_percent.clamp(0.0, 1000.0)
        };
        let min_per_sec = self.min_per_sec.min(i32::MAX as u32 - 1);
        Arc::new(TpsBudget::new(ttl, min_per_sec, pct))
    }
}

/// Attaches the shared retry budget to every request. See the
/// [module docs](self).
///
/// ```
/// # tokio_test::block_on(async {
/// use modelux::retry_budget::{RetryBudget, RetryBudgetConfig};
/// use modelux::route::{Route, RouteRequest};
/// use tower::{service_fn, ServiceExt};
/// let inner = service_fn(|req: RouteRequest| async move {
///     Ok::<_, std::convert::Infallible>(req.ctx.retry_budget.is_some())
/// });
/// let svc = RetryBudget::new(inner, RetryBudgetConfig::default().build());
/// let chat = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let req = RouteRequest::new(chat, std::sync::Arc::new(Route::fallback("r", vec![])));
/// assert!(svc.oneshot(req).await.unwrap());
/// # });
/// ```
#[derive(Clone)]
pub struct RetryBudget<S> {
    inner: S,
    budget: SharedBudget,
}

impl<S> RetryBudget<S> {
    /// Wraps `inner`, sharing `budget` with every request.
    ///
    /// Around a [`Fallback`](crate::fallback::Fallback) router, an empty
    /// budget stops retries and fallbacks, and the error says so:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::{sync::Arc, time::Duration};
    /// use modelux::api::ChatRequest;
    /// use modelux::fallback::Fallback;
    /// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
    /// use modelux::retry_budget::{RetryBudget, RetryBudgetConfig};
    /// use modelux::route::{Candidate, Route, RouteRequest};
    /// use tower::{service_fn, ServiceExt};
    ///
    /// let down = service_fn(|_: AttemptRequest| async {
    ///     Err::<ProviderResponse, _>(ProviderError::new(Failure::Server { status: 503 }, "down"))
    /// });
    /// // No floor and no share of traffic: no retries at all.
    /// let budget = RetryBudgetConfig { min_per_sec: 0, retry_percent: 0.0, ..Default::default() }.build();
    /// let svc = RetryBudget::new(Fallback::new(down), budget);
    /// let route = Arc::new(Route::fallback("r", vec![
    ///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
    ///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
    /// ]));
    /// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
    /// let err = svc.oneshot(RouteRequest::new(chat, route)).await.unwrap_err();
    /// assert!(err.retry_budget_exhausted);
    /// assert_eq!(err.attempts.len(), 1); // no retry of "a", no fallback to "b"
    /// # }
    /// ```
    pub fn new(inner: S, budget: SharedBudget) -> Self {
        RetryBudget { inner, budget }
    }
}

impl<S> std::fmt::Debug for RetryBudget<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget").finish_non_exhaustive()
    }
}

impl<S> Service<RouteRequest> for RetryBudget<S>
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
        self.budget.deposit();
        req.ctx.retry_budget = Some(self.budget.clone());
        self.inner.call(req)
    }
}
