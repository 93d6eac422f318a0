//! The request and response types that flow through the routing layers.
//!
//! A [`RouteRequest`] is a client request bound to a [`Route`]: the ordered
//! candidates to try and the policy for trying them. Layers above the
//! fallback router reorder `candidates` (health, latency) and attach
//! per-request hooks to the [`RequestContext`] (observers that measure every
//! attempt, the shared retry budget, the trace). The fallback router then
//! turns the request into attempts against the leaf provider service.
//!
//! Ordering happens once per request, measurement once per attempt, and no
//! layer loops over another's loop: retries and fallbacks are one sequence,
//! bounded by one budget.

mod policy;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use policy::{Continuation, RetryOn, RoutePolicy, Strategy};

use crate::api::ChatRequest;
use crate::provider::{Failure, ProviderError, ProviderResponse, Target, TargetId};
use crate::trace::TraceHandle;

/// A named route: candidates in config order and the policy for trying them.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use modelux::provider::Target;
/// use modelux::route::{Candidate, Route};
/// let route = Route::fallback("default", vec![
///     Candidate::new(Arc::new(Target::new("a", "m1")), Duration::from_secs(2)),
///     Candidate::new(Arc::new(Target::new("b", "m2")), Duration::from_secs(3)),
/// ]);
/// assert_eq!(route.candidates.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name (what clients put in `model`).
    pub name: Arc<str>,
    /// How candidates are ordered.
    pub strategy: Strategy,
    /// Candidates in config order.
    pub candidates: Vec<Candidate>,
    /// Retry, budget and timeout policy.
    pub policy: RoutePolicy,
    /// This route's metric handles, registered on first use.
    pub(crate) handles: crate::handles::RouteHandles,
}

impl Route {
    /// A `fallback` route with the default policy.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use modelux::provider::Target;
    /// use modelux::route::{Candidate, Route, RoutePolicy, Strategy};
    /// let route = Route::fallback("default", vec![
    ///     Candidate::new(Arc::new(Target::new("openai", "gpt-4o-mini")), Duration::from_secs(10)),
    /// ]);
    /// assert_eq!(&*route.name, "default");
    /// assert_eq!(route.strategy, Strategy::Fallback); // candidates keep config order
    /// assert_eq!(route.policy, RoutePolicy::default());
    /// ```
    pub fn fallback(name: &str, candidates: Vec<Candidate>) -> Self {
        Route {
            name: name.into(),
            strategy: Strategy::Fallback,
            candidates,
            policy: RoutePolicy::default(),
            handles: Default::default(),
        }
    }
}

/// One target of a route, with its per-attempt timeout.
///
/// A target that does not answer within its candidate's `timeout` counts as
/// a timed-out attempt:
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
/// // A provider that never answers.
/// let hang = service_fn(|_: AttemptRequest| {
///     std::future::pending::<Result<ProviderResponse, ProviderError>>()
/// });
/// let slow = Candidate::new(Arc::new(Target::new("slow", "m")), Duration::from_millis(20));
/// let route = Arc::new(Route::fallback("r", vec![slow]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let err = Fallback::new(hang).oneshot(RouteRequest::new(chat, route)).await.unwrap_err();
/// assert_eq!(err.attempts[0].error.failure, Failure::Timeout);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The target.
    pub target: Arc<Target>,
    /// How long one attempt may take: the whole response, or the time to the
    /// first content token of a stream.
    pub timeout: Duration,
}

impl Candidate {
    /// A candidate.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use modelux::provider::Target;
    /// use modelux::route::Candidate;
    /// let c = Candidate::new(Arc::new(Target::new("openai", "gpt-4o-mini")), Duration::from_secs(10));
    /// assert_eq!(c.target.id.to_string(), "openai/gpt-4o-mini");
    /// assert_eq!(c.timeout, Duration::from_secs(10));
    /// ```
    pub fn new(target: Arc<Target>, timeout: Duration) -> Self {
        Candidate { target, timeout }
    }
}

/// What every attempt of a request reports to the layers that measure.
///
/// The fallback router builds one per attempt; building one by hand is how
/// to feed an observer directly (in a test, say). Here a content-policy
/// rejection does not count against a target's health, but a 5xx does:
///
/// ```
/// use std::time::Duration;
/// use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
/// use modelux::provider::{Failure, ProviderError, TargetId};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
///
/// let registry = HealthRegistry::new(HealthConfig { consecutive_failures: 1, ..Default::default() });
/// let id = TargetId::new("openai", "m");
/// let refused = ProviderError::new(Failure::ContentPolicy, "refused");
/// let report = AttemptReport { target: &id, result: Err(&refused), latency: Duration::from_millis(30), stream: false, phase: AttemptPhase::Whole };
/// registry.on_attempt(&report);
/// assert_eq!(registry.status(&id), TargetStatus::Healthy);
///
/// let down = ProviderError::new(Failure::Server { status: 503 }, "");
/// registry.on_attempt(&AttemptReport { result: Err(&down), ..report });
/// assert!(matches!(registry.status(&id), TargetStatus::Ejected { .. }));
/// ```
#[derive(Debug, Clone)]
pub struct AttemptReport<'a> {
    /// The target tried.
    pub target: &'a TargetId,
    /// `Ok` or the failure.
    pub result: Result<(), &'a ProviderError>,
    /// Latency: time to first content token for streams, the whole response
    /// otherwise; for failures, the time until the failure was known. For
    /// [`AttemptPhase::StreamEnd`], the time since the stream's first
    /// content token. So `now - latency` is (about) when the attempt began,
    /// which health uses to tell an attempt in flight at an ejection.
    pub latency: Duration,
    /// Whether the attempt streamed.
    pub stream: bool,
    /// Which part of the attempt this report covers: a stream is reported
    /// twice, at its first content token (for latency) and at its end (for
    /// health: a stream cut mid-way is one failed attempt, not a success
    /// and a failure).
    pub phase: AttemptPhase,
}

/// Which part of an attempt an [`AttemptReport`] covers.
///
/// Latency ranking measures [`AttemptPhase::FirstToken`] and
/// [`AttemptPhase::Whole`] successes; health scoring judges
/// [`AttemptPhase::Whole`] and [`AttemptPhase::StreamEnd`], so a stream
/// that starts and is then cut counts once, as a failure, and a probe
/// restores a target only once its stream finished:
///
/// ```
/// use std::time::Duration;
/// use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
/// use modelux::provider::{Failure, ProviderError, TargetId};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
///
/// let registry = HealthRegistry::new(HealthConfig { consecutive_failures: 2, ..Default::default() });
/// let id = TargetId::new("anthropic", "m");
/// let cut = ProviderError::new(Failure::StreamCut, "overloaded_error");
/// for _ in 0..2 {
///     let first = AttemptReport { target: &id, result: Ok(()), latency: Duration::from_millis(300), stream: true, phase: AttemptPhase::FirstToken };
///     registry.on_attempt(&first);
///     registry.on_attempt(&AttemptReport { result: Err(&cut), phase: AttemptPhase::StreamEnd, ..first });
/// }
/// assert!(matches!(registry.status(&id), TargetStatus::Ejected { .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptPhase {
    /// The whole attempt: a complete answer, or a failure before a stream's
    /// first content token.
    Whole,
    /// A stream's first content token: the stream goes on, and how it ends
    /// is reported as [`AttemptPhase::StreamEnd`] (unless the client leaves
    /// first, which says nothing about the target).
    FirstToken,
    /// A stream that had started ended: `Ok` when it finished, `Err` when it
    /// was cut or stalled.
    StreamEnd,
}

/// Measures attempts: health scoring and latency ranking implement this, and
/// the fallback router calls every observer a request carries after each
/// attempt.
///
/// An observer a request carries in [`RequestContext::observers`] sees every
/// attempt, retries and fallbacks included:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use modelux::api::{ChatCompletion, ChatRequest};
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport, Candidate, Route, RouteRequest};
/// use tower::{service_fn, ServiceExt};
///
/// /// Logs each attempt's target and outcome class.
/// #[derive(Default)]
/// struct Log(Mutex<Vec<String>>);
/// impl AttemptObserver for Log {
///     fn on_attempt(&self, r: &AttemptReport<'_>) {
///         let outcome = r.result.map_or_else(|e| e.failure.class(), |()| "ok");
///         self.0.lock().unwrap().push(format!("{} {outcome}", r.target));
///     }
/// }
///
/// // "a" is down, "b" answers.
/// let leaf = service_fn(|req: AttemptRequest| async move {
///     if &*req.target.id.provider == "a" {
///         Err(ProviderError::new(Failure::Server { status: 503 }, "down"))
///     } else {
///         Ok(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
///     }
/// });
/// let route = Arc::new(Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let log = Arc::new(Log::default());
/// let mut req = RouteRequest::new(chat, route);
/// req.ctx.observers.push(log.clone());
/// Fallback::new(leaf).oneshot(req).await.unwrap();
/// // The first attempt, its same-target retry, then the fallback.
/// assert_eq!(*log.0.lock().unwrap(), ["a/m 5xx", "a/m 5xx", "b/m ok"]);
/// # }
/// ```
pub trait AttemptObserver: Send + Sync {
    /// Called once per attempt, when its outcome is known.
    ///
    /// The latency registry, for one, keeps the latency of successes only:
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::latency::{LatencyConfig, LatencyRegistry};
    /// use modelux::provider::{Failure, ProviderError, TargetId};
    /// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    ///
    /// let registry = LatencyRegistry::new(LatencyConfig::default());
    /// let id = TargetId::new("openai", "m");
    /// let ok = AttemptReport { target: &id, result: Ok(()), latency: Duration::from_millis(80), stream: false, phase: AttemptPhase::Whole };
    /// registry.on_attempt(&ok);
    /// let timeout = ProviderError::new(Failure::Timeout, "");
    /// registry.on_attempt(&AttemptReport { result: Err(&timeout), latency: Duration::from_secs(5), ..ok });
    /// let estimate = registry.estimate(&id).unwrap();
    /// assert_eq!((estimate.samples, estimate.p50), (1, Duration::from_millis(80)));
    /// ```
    fn on_attempt(&self, report: &AttemptReport<'_>);
}

/// A retry budget shared across requests (tower's `TpsBudget` implements it).
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use modelux::route::{RequestContext, SharedBudget};
/// use tower::retry::budget::{Budget, TpsBudget};
/// // One retry per two requests, with no floor.
/// let budget: SharedBudget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.5));
/// assert!(!budget.withdraw());
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());
/// // A request's context carries it to the router.
/// let mut ctx = RequestContext::default();
/// ctx.retry_budget = Some(budget.clone());
/// ```
pub type SharedBudget = Arc<dyn tower::retry::budget::Budget + Send + Sync>;

/// Per-request state the layers attach for the router.
///
/// A new request's context has no hooks; each layer adds its own, and the
/// services below see them:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use modelux::health::{HealthConfig, HealthScoreLayer};
/// use modelux::route::{RequestContext, Route, RouteRequest};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let ctx = RequestContext::default();
/// assert!(ctx.observers.is_empty() && ctx.retry_budget.is_none());
///
/// let inner = service_fn(|req: RouteRequest| async move {
///     Ok::<_, std::convert::Infallible>(req.ctx.observers.len())
/// });
/// let svc = HealthScoreLayer::new(HealthConfig::default()).layer(inner);
/// let chat = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let req = RouteRequest::new(chat, Arc::new(Route::fallback("r", vec![])));
/// assert_eq!(svc.oneshot(req).await.unwrap(), 1); // the health registry
/// # }
/// ```
pub struct RequestContext {
    /// The request id (from `x-request-id` or generated).
    pub request_id: Arc<str>,
    /// The decision trace; a disabled handle when no `TraceLayer` is present.
    pub trace: TraceHandle,
    /// Called after every attempt.
    pub observers: Vec<Arc<dyn AttemptObserver>>,
    /// When set, every retry and fallback withdraws from it.
    pub retry_budget: Option<SharedBudget>,
    /// Values kept alive until the response (including its stream) is done,
    /// such as health probe permits.
    pub guards: Vec<Box<dyn Any + Send + Sync>>,
    /// The config version that built this request's route.
    pub config_version: u64,
    /// The authenticated client's name, when clients are configured.
    pub client: Option<Arc<str>>,
    /// When the request entered the stack.
    pub started: Instant,
}

impl Default for RequestContext {
    fn default() -> Self {
        RequestContext {
            request_id: Arc::from(""),
            trace: TraceHandle::disabled(),
            observers: Vec::new(),
            retry_budget: None,
            guards: Vec::new(),
            config_version: 0,
            client: None,
            started: Instant::now(),
        }
    }
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("request_id", &self.request_id)
            .field("observers", &self.observers.len())
            .field("retry_budget", &self.retry_budget.is_some())
            .field("config_version", &self.config_version)
            .finish_non_exhaustive()
    }
}

/// A client request bound to a route.
///
/// `candidates` is the request's own copy: layers reorder it without
/// touching the shared route.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::ChatRequest;
/// use modelux::provider::Target;
/// use modelux::route::{Candidate, Route, RouteRequest};
/// let route = Arc::new(Route::fallback("default", vec![
///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"default","messages":[]}"#).unwrap();
/// let mut req = RouteRequest::new(chat, route.clone());
/// req.candidates.reverse();
/// assert_eq!(req.candidates[0].target.id.to_string(), "b/m");
/// assert_eq!(req.route.candidates[0].target.id.to_string(), "a/m");
/// ```
#[derive(Debug)]
pub struct RouteRequest {
    /// The client's request.
    pub chat: Arc<ChatRequest>,
    /// The route it resolved to.
    pub route: Arc<Route>,
    /// Candidates in the order they will be tried.
    pub candidates: Vec<Candidate>,
    /// Hooks and ids attached by the layers.
    pub ctx: RequestContext,
}

impl RouteRequest {
    /// A request for `route`, with candidates in config order.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use modelux::api::ChatRequest;
    /// use modelux::provider::Target;
    /// use modelux::route::{Candidate, Route, RouteRequest};
    /// let route = Arc::new(Route::fallback("default", vec![
    ///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
    ///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
    /// ]));
    /// let chat: ChatRequest = serde_json::from_str(
    ///     r#"{"model":"default","messages":[{"role":"user","content":"hi"}]}"#,
    /// ).unwrap();
    /// let req = RouteRequest::new(chat, route);
    /// assert_eq!(req.chat.model, "default");
    /// let order: Vec<_> = req.candidates.iter().map(|c| c.target.id.to_string()).collect();
    /// assert_eq!(order, ["a/m", "b/m"]);
    /// assert!(req.ctx.observers.is_empty());
    /// ```
    pub fn new(chat: ChatRequest, route: Arc<Route>) -> Self {
        RouteRequest {
            chat: Arc::new(chat),
            candidates: route.candidates.clone(),
            route,
            ctx: RequestContext::default(),
        }
    }
}

/// The routed answer.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::{ChatCompletion, ChatRequest};
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
/// use modelux::route::{Candidate, Route, RouteRequest};
/// use tower::{service_fn, ServiceExt};
///
/// // "a" asks for a minute's pause (over the route's cap), so "b" answers.
/// let leaf = service_fn(|req: AttemptRequest| async move {
///     if &*req.target.id.provider == "a" {
///         Err(ProviderError::new(Failure::RateLimited, "quota")
///             .with_retry_after(Some(Duration::from_secs(60))))
///     } else {
///         Ok(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
///     }
/// });
/// let route = Arc::new(Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let resp = Fallback::new(leaf).oneshot(RouteRequest::new(chat, route)).await.unwrap();
/// assert_eq!(resp.served_by.id.to_string(), "b/m");
/// assert_eq!(resp.attempts, 2);
/// let ProviderResponse::Complete(body) = resp.body else { panic!("not a stream") };
/// assert_eq!(body.to_chat_completion().unwrap().choices[0].message.content.as_deref(), Some("hi"));
/// # }
/// ```
#[derive(Debug)]
pub struct RouteResponse {
    /// The completion or the stream.
    pub body: ProviderResponse,
    /// The target whose answer this is (for a continued stream, the first one).
    pub served_by: Arc<Target>,
    /// How many upstream attempts the request made before committing.
    pub attempts: u32,
}

/// Why a routed request failed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::ChatRequest;
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
/// use modelux::route::{Candidate, Route, RouteErrorKind, RouteRequest};
/// use tower::{service_fn, ServiceExt};
///
/// // Both targets are rate limited, asking for different pauses.
/// let leaf = service_fn(|req: AttemptRequest| async move {
///     let secs = if &*req.target.id.provider == "a" { 60 } else { 30 };
///     Err::<ProviderResponse, _>(ProviderError::new(Failure::RateLimited, "quota")
///         .with_retry_after(Some(Duration::from_secs(secs))))
/// });
/// let route = Arc::new(Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let err = Fallback::new(leaf).oneshot(RouteRequest::new(chat, route)).await.unwrap_err();
/// assert_eq!(err.kind, RouteErrorKind::RateLimited { retry_after: Some(Duration::from_secs(30)) });
/// assert_eq!(err.status(), 429);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RouteErrorKind {
    /// Every attempt was rate limited; the smallest `Retry-After` seen.
    RateLimited {
        /// The smallest `Retry-After` any target gave.
        retry_after: Option<Duration>,
    },
    /// The route's total latency budget ran out.
    BudgetExhausted,
    /// Every attempt failed in some other way.
    AllFailed,
    /// The provider rejected the request itself (4xx that no other target
    /// would answer differently): the client gets the provider's status and reason.
    Rejected(ProviderError),
    /// The route has no candidates.
    NoCandidates,
}

/// One failed attempt, as listed in a [`RouteError`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::ChatRequest;
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target, TargetId};
/// use modelux::route::{Candidate, FailedAttempt, Route, RouteRequest};
/// use tower::{service_fn, ServiceExt};
///
/// let leaf = service_fn(|req: AttemptRequest| async move {
///     Err::<ProviderResponse, _>(match &*req.target.id.provider {
///         "a" => ProviderError::new(Failure::Server { status: 503 }, "down"),
///         _ => ProviderError::new(Failure::Connect, "refused"),
///     })
/// });
/// let mut route = Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
///     Candidate::new(Arc::new(Target::new("b", "m")), Duration::from_secs(1)),
/// ]);
/// route.policy.same_target_retries = 0;
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let err = Fallback::new(leaf).oneshot(RouteRequest::new(chat, Arc::new(route))).await.unwrap_err();
/// assert_eq!(err.attempts.len(), 2);
/// assert_eq!(err.attempts[0], FailedAttempt {
///     target: TargetId::new("a", "m"),
///     error: ProviderError::new(Failure::Server { status: 503 }, "down"),
/// });
/// assert_eq!(err.attempts[1].error.failure, Failure::Connect);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    /// The target tried.
    pub target: TargetId,
    /// What happened.
    pub error: ProviderError,
}

/// A request that could not be served.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::ChatRequest;
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
/// use modelux::route::{Candidate, Route, RouteErrorKind, RouteRequest};
/// use tower::{service_fn, ServiceExt};
///
/// let down = service_fn(|_: AttemptRequest| async {
///     Err::<ProviderResponse, _>(ProviderError::new(Failure::Server { status: 503 }, "down"))
/// });
/// let mut route = Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("a", "m")), Duration::from_secs(1)),
/// ]);
/// route.policy.same_target_retries = 0;
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let err = Fallback::new(down).oneshot(RouteRequest::new(chat, Arc::new(route))).await.unwrap_err();
/// assert_eq!(err.kind, RouteErrorKind::AllFailed);
/// assert!(!err.retry_budget_exhausted);
/// assert_eq!(err.to_string(), "every attempt failed: a/m -> server error (503)");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RouteError {
    /// Why.
    pub kind: RouteErrorKind,
    /// Each attempt's outcome, in order.
    pub attempts: Vec<FailedAttempt>,
    /// Whether the retry budget cut retries short.
    pub retry_budget_exhausted: bool,
}

impl RouteError {
    /// The status the failure carries: the provider's own for a rejection,
    /// 429 when everything was rate limited, 504 when the budget ran out, 502
    /// otherwise. (The reference gateway answers a rejection by a refused
    /// target, 401/403/404 from the provider about its own key or model,
    /// with a 502 instead: the client's credentials were not the problem.)
    ///
    /// ```
    /// use modelux::provider::{Failure, ProviderError};
    /// use modelux::route::{RouteError, RouteErrorKind};
    /// let error = |kind| RouteError { kind, attempts: vec![], retry_budget_exhausted: false };
    /// assert_eq!(error(RouteErrorKind::RateLimited { retry_after: None }).status(), 429);
    /// assert_eq!(error(RouteErrorKind::BudgetExhausted).status(), 504);
    /// assert_eq!(error(RouteErrorKind::AllFailed).status(), 502);
    /// let rejected = ProviderError::new(Failure::Client { status: 422 }, "bad schema");
    /// assert_eq!(error(RouteErrorKind::Rejected(rejected)).status(), 422);
    /// let too_long = ProviderError::new(Failure::ContextLength, "too long");
    /// assert_eq!(error(RouteErrorKind::Rejected(too_long)).status(), 400);
    /// ```
    pub fn status(&self) -> u16 {
        match &self.kind {
            RouteErrorKind::RateLimited { .. } => 429,
            RouteErrorKind::BudgetExhausted => 504,
            RouteErrorKind::AllFailed | RouteErrorKind::NoCandidates => 502,
            RouteErrorKind::Rejected(e) => match e.failure {
                Failure::ContextLength | Failure::ContentPolicy | Failure::PrefillUnsupported => {
                    400
                }
                Failure::Timeout | Failure::StreamStall => 504,
                f => f.status().unwrap_or(502),
            },
        }
    }

    /// The outcome class for metrics and traces.
    ///
    /// ```
    /// use modelux::provider::{Failure, ProviderError};
    /// use modelux::route::{RouteError, RouteErrorKind};
    /// let error = |kind| RouteError { kind, attempts: vec![], retry_budget_exhausted: false };
    /// assert_eq!(error(RouteErrorKind::RateLimited { retry_after: None }).class(), "rate_limited");
    /// assert_eq!(error(RouteErrorKind::BudgetExhausted).class(), "budget_exhausted");
    /// assert_eq!(error(RouteErrorKind::NoCandidates).class(), "all_failed");
    /// // A rejection is classed by the provider's failure.
    /// let refused = ProviderError::new(Failure::ContentPolicy, "refused");
    /// assert_eq!(error(RouteErrorKind::Rejected(refused)).class(), "content_policy");
    /// ```
    pub fn class(&self) -> &'static str {
        match &self.kind {
            RouteErrorKind::RateLimited { .. } => "rate_limited",
            RouteErrorKind::BudgetExhausted => "budget_exhausted",
            RouteErrorKind::AllFailed | RouteErrorKind::NoCandidates => "all_failed",
            RouteErrorKind::Rejected(e) => e.failure.class(),
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RouteErrorKind::Rejected(e) => return write!(f, "{}", e.message),
            RouteErrorKind::RateLimited { .. } => f.write_str("every target is rate limited")?,
            RouteErrorKind::BudgetExhausted => f.write_str("the route's latency budget ran out")?,
            RouteErrorKind::AllFailed => f.write_str("every attempt failed")?,
            RouteErrorKind::NoCandidates => f.write_str("the route has no candidates")?,
        }
        if self.retry_budget_exhausted {
            f.write_str(" (retry budget exhausted)")?;
        }
        if !self.attempts.is_empty() {
            f.write_str(": ")?;
            for (i, a) in self.attempts.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "{} -> {}", a.target, a.error.failure)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RouteError {}

/// `now + d`, or a point about 30 years away when that overflows: a library
/// user may give `Duration::MAX` for "no limit", and `Instant + Duration`
/// panics past the clock's range.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}
