//! Ordered, cross-provider attempts under per-attempt timeouts and one total
//! latency budget.
//!
//! # Why
//! Providers fail in many ways (429s, 5xx, stalls, cut streams), and a client
//! should see none of them while some other target can answer. The router
//! walks the request's candidates in order (the order the ranking layers
//! above produced), retries the same target a bounded number of times for
//! transient failures, and moves on for everything listed in the route's
//! `retry_on`. Every retry and every fallback draws on the request's retry
//! budget when a [`RetryBudgetLayer`](crate::retry_budget::RetryBudgetLayer)
//! put one there, so a provider outage cannot turn into a retry storm.
//!
//! # Deadlines
//! Each attempt runs under `min(candidate timeout, what is left of the total
//! budget)`; no attempt starts once the budget is spent, so the client always
//! gets an answer (or a clear error) inside the budget. For a stream the
//! attempt timeout bounds the time to the first *content* token, not just the
//! headers: a provider that sends headers and then nothing is as dead as one
//! that never answers.
//!
//! # Commit point
//! A non-streaming response is committed when it arrives whole. A stream is
//! committed at its first content token: anything that goes wrong before it
//! (an error event inside a 200 stream included) still fails over invisibly.
//! After the commit, a failure (cut, error event, stall past
//! `stream_idle_timeout`) is recovered by the route's continuation
//! strategies in order: `prefill` (the next candidate whose model accepts a
//! trailing assistant message continues the delivered text) and
//! `regenerate` (the next candidate answers the original request, and its
//! output is spliced in once it has reproduced the delivered text); when
//! nothing can continue, the stream ends with an in-band error, never with
//! a normal finish.
//!
//! # Readiness
//! `poll_ready` forwards the inner service's readiness. No fallback target is
//! reserved there: which targets a request will need is only known once its
//! attempts fail. Before each attempt the inner service's readiness is
//! waited for again, within the request's total budget but outside the
//! attempt's timeout: a leaf that is slow to be ready (a rate limit) is not
//! the target's fault, and charged as its timeout it ejected healthy targets.

mod backoff;
mod future;
mod layer;
mod stream;

use std::task::{Context, Poll};

use tower::{BoxError, Service};

pub use future::ResponseFuture;
pub use layer::FallbackLayer;
pub use stream::MAX_KEPT_BYTES;

use crate::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse};
use crate::route::{RouteError, RouteErrorKind, RouteRequest, RouteResponse};

/// The fallback router. See the [module docs](self).
///
/// ```
/// # tokio_test::block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::{ChatCompletion, ChatRequest};
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
/// use modelux::route::{Candidate, Route, RouteRequest};
/// use tower::{service_fn, ServiceExt};
///
/// // A primary that is down and a fallback that answers.
/// let leaf = service_fn(|req: AttemptRequest| async move {
///     if &*req.target.id.provider == "primary" {
///         Err(ProviderError::new(Failure::Server { status: 503 }, "down"))
///     } else {
///         Ok(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
///     }
/// });
/// let route = Arc::new(Route::fallback("default", vec![
///     Candidate::new(Arc::new(Target::new("primary", "m")), Duration::from_secs(1)),
///     Candidate::new(Arc::new(Target::new("backup", "m")), Duration::from_secs(1)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"default","messages":[]}"#).unwrap();
/// let resp = Fallback::new(leaf).oneshot(RouteRequest::new(chat, route)).await.unwrap();
/// assert_eq!(&*resp.served_by.id.provider, "backup");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Fallback<S> {
    inner: S,
}

impl<S> Fallback<S> {
    /// Wraps the leaf provider service.
    ///
    /// The leaf answers one [`AttemptRequest`] per attempt. When the first
    /// target rejects the request itself (content policy or another 4xx
    /// whose status the route's `retry_on` does not list), no other target
    /// is tried and the client gets the provider's status and message. A
    /// context-length error and a refused target (401, 402, 403, 404) always
    /// move on, and so does a 4xx from a fallback after an earlier target
    /// failed (it may be that target's translation or limits):
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::{sync::Arc, time::Duration};
    /// use modelux::api::ChatRequest;
    /// use modelux::fallback::Fallback;
    /// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
    /// use modelux::route::{Candidate, Route, RouteRequest};
    /// use tower::{service_fn, ServiceExt};
    ///
    /// let leaf = service_fn(|_: AttemptRequest| async {
    ///     Err::<ProviderResponse, _>(ProviderError::new(Failure::Client { status: 422 }, "bad tool schema"))
    /// });
    /// let route = Arc::new(Route::fallback("r", vec![
    ///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
    ///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
    /// ]));
    /// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
    /// let err = Fallback::new(leaf).oneshot(RouteRequest::new(chat, route)).await.unwrap_err();
    /// assert_eq!(err.status(), 422);
    /// assert_eq!(err.to_string(), "bad tool schema");
    /// assert_eq!(err.attempts.len(), 1); // "b" was never tried
    /// # }
    /// ```
    pub fn new(inner: S) -> Self {
        Fallback { inner }
    }
}

impl<S> Service<RouteRequest> for Fallback<S>
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = RouteResponse;
    type Error = RouteError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| RouteError {
            kind: RouteErrorKind::AllFailed,
            attempts: vec![crate::route::FailedAttempt {
                target: crate::provider::TargetId::new("-", "-"),
                error: classify(e.into()),
            }],
            retry_budget_exhausted: false,
        })
    }

    fn call(&mut self, req: RouteRequest) -> Self::Future {
        // The ready service handles this request; a fresh clone takes its
        // place for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(inner, req)
    }
}

/// Turns whatever the leaf service failed with into a [`ProviderError`]:
/// adapters return one already, and a user's own error type may carry one
/// as its `source()` (searched down the chain); tower's timeout error is a
/// timeout; anything else is a transport failure.
pub(crate) fn classify(err: BoxError) -> ProviderError {
    let err = match err.downcast::<ProviderError>() {
        Ok(e) => return *e,
        Err(err) => err,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    while let Some(e) = cause {
        if let Some(p) = e.downcast_ref::<ProviderError>() {
            return p.clone();
        }
        if e.is::<tower::timeout::error::Elapsed>() {
            return ProviderError::new(Failure::Timeout, "timed out");
        }
        cause = e.source();
    }
    ProviderError::new(Failure::Connect, err.to_string())
}
