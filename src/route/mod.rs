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
    pub fn new(target: Arc<Target>, timeout: Duration) -> Self {
        Candidate { target, timeout }
    }
}

/// What every attempt of a request reports to the layers that measure.
#[derive(Debug, Clone)]
pub struct AttemptReport<'a> {
    /// The target tried.
    pub target: &'a TargetId,
    /// `Ok` or the failure.
    pub result: Result<(), &'a ProviderError>,
    /// Latency: time to first content token for streams, the whole response
    /// otherwise; for failures, the time until the failure was known.
    pub latency: Duration,
    /// Whether the attempt streamed.
    pub stream: bool,
}

/// Measures attempts: health scoring and latency ranking implement this, and
/// the fallback router calls every observer a request carries after each
/// attempt.
pub trait AttemptObserver: Send + Sync {
    /// Called once per attempt, when its outcome is known.
    fn on_attempt(&self, report: &AttemptReport<'_>);
}

/// A retry budget shared across requests (tower's `TpsBudget` implements it).
pub type SharedBudget = Arc<dyn tower::retry::budget::Budget + Send + Sync>;

/// Per-request state the layers attach for the router.
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    /// The target tried.
    pub target: TargetId,
    /// What happened.
    pub error: ProviderError,
}

/// A request that could not be served.
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
    /// The HTTP status a gateway should answer with: the provider's own for a
    /// rejection, 429 when everything was rate limited, 504 when the budget
    /// ran out, 502 otherwise.
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
