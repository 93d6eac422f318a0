use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::api::Usage;

/// At most this many attempts and this many decisions are kept per trace; a
/// request that somehow makes more is marked `truncated`.
pub const MAX_ENTRIES: usize = 64;

/// The decision trace of one request: everything the stack decided and why.
/// It holds no prompt or completion text and no secret.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Trace {
    /// The request id.
    pub request_id: String,
    /// The route the request resolved to.
    pub route: String,
    /// The config version that served it.
    pub config_version: u64,
    /// The authenticated client's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The output cap the client asked for (`max_tokens` or
    /// `max_completion_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Characters of the request's message text, to estimate prompt tokens
    /// when a provider reports no usage (set only when a finish hook is
    /// installed, see [`TraceLayer::with_sink`](super::TraceLayer::with_sink)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_chars: Option<u64>,
    /// Wall-clock start, Unix milliseconds.
    pub started_at_unix_ms: u64,
    /// Candidate order after every ranking layer, with the reasons.
    pub candidates: Vec<CandidateTrace>,
    /// Routing decisions in the order they were taken.
    pub decisions: Vec<Decision>,
    /// Every upstream attempt.
    pub attempts: Vec<AttemptTrace>,
    /// When the response was committed to a provider (ms from start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_at_ms: Option<u64>,
    /// How the request ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// End-to-end duration (ms), set when the request (or its stream) ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Usage of the attempts that produced the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Estimated cost in USD, when prices are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// More than [`MAX_ENTRIES`] attempts or decisions were dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One candidate's place in the order.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateTrace {
    /// `provider/model`.
    pub target: String,
    /// Why it stands where it does (health state, p50, config order).
    pub reason: String,
}

/// One routing decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Milliseconds from the request's start.
    pub at_ms: u64,
    /// What was decided: `retry`, `fallback`, `retry_budget_exhausted`,
    /// `budget_exhausted`, `commit`, `continuation`, `reorder`, ...
    pub kind: &'static str,
    /// Details for a reader.
    pub detail: String,
}

/// One upstream attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptTrace {
    /// `provider/model`.
    pub target: String,
    /// `first`, `retry` (same target), `fallback` or `continuation`.
    pub kind: &'static str,
    /// Start, ms from the request's start.
    pub start_ms: u64,
    /// Duration until the outcome was known (first content token for streams).
    pub duration_ms: u64,
    /// The timeout the attempt ran under.
    pub timeout_ms: u64,
    /// `ok` or the failure class.
    pub outcome: &'static str,
    /// The provider's HTTP status, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The `Retry-After` the provider gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Backoff waited before this attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// The failure message (the provider's words, truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a request ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The HTTP status the client got.
    pub status: u16,
    /// `ok` or the error class.
    pub class: String,
    /// `provider/model` that served the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// For streams: `done`, `error`, or `client_disconnected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_end: Option<&'static str>,
    /// The error message the client saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A cheap, cloneable handle to a request's [`Trace`]. A disabled handle
/// (no `TraceLayer` in the stack) makes every call a no-op.
///
/// ```
/// use modelux::trace::TraceHandle;
/// let t = TraceHandle::new("req-1");
/// t.decision("retry", "same target after 429".into());
/// assert_eq!(t.snapshot().unwrap().decisions.len(), 1);
/// assert!(TraceHandle::disabled().snapshot().is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct TraceHandle {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    trace: Mutex<Trace>,
}

impl TraceHandle {
    /// A handle that records nothing.
    pub fn disabled() -> Self {
        TraceHandle { inner: None }
    }

    /// A new trace for `request_id`, starting now.
    pub fn new(request_id: &str) -> Self {
        let started_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        TraceHandle {
            inner: Some(Arc::new(Inner {
                started: Instant::now(),
                trace: Mutex::new(Trace {
                    request_id: request_id.to_owned(),
                    started_at_unix_ms,
                    ..Trace::default()
                }),
            })),
        }
    }

    /// Whether this handle records.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Milliseconds since the trace started.
    pub fn elapsed_ms(&self) -> u64 {
        self.inner
            .as_ref()
            .map(|i| i.started.elapsed().as_millis() as u64)
            .unwrap_or(0)
    }

    /// Milliseconds from the trace's start to `at`.
    pub fn offset_ms(&self, at: Instant) -> u64 {
        self.inner
            .as_ref()
            .map(|i| at.saturating_duration_since(i.started).as_millis() as u64)
            .unwrap_or(0)
    }

    /// Edits the trace in place.
    pub fn with(&self, f: impl FnOnce(&mut Trace)) {
        if let Some(i) = &self.inner {
            if let Ok(mut t) = i.trace.lock() {
                f(&mut t);
            }
        }
    }

    /// Records a decision.
    pub fn decision(&self, kind: &'static str, detail: String) {
        let at_ms = self.elapsed_ms();
        self.with(|t| {
            if t.decisions.len() < MAX_ENTRIES {
                t.decisions.push(Decision {
                    at_ms,
                    kind,
                    detail,
                });
            } else {
                t.truncated = true;
            }
        });
    }

    /// Records an attempt.
    pub fn attempt(&self, a: AttemptTrace) {
        self.with(|t| {
            if t.attempts.len() < MAX_ENTRIES {
                t.attempts.push(a);
            } else {
                t.truncated = true;
            }
        });
    }

    /// Records the final outcome and the end-to-end duration; the first call wins.
    pub fn finish(&self, outcome: Outcome) {
        let d = self.elapsed_ms();
        self.with(|t| {
            if t.outcome.is_none() {
                t.outcome = Some(outcome);
                t.duration_ms = Some(d);
            }
        });
    }

    /// A copy of the trace as it stands.
    pub fn snapshot(&self) -> Option<Trace> {
        let i = self.inner.as_ref()?;
        i.trace.lock().ok().map(|t| t.clone())
    }
}

/// Milliseconds of a duration, for trace fields.
pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
