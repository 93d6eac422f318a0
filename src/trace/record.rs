use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::api::Usage;
use crate::provider::TargetId;

/// At most this many attempts and this many decisions are kept per trace; a
/// request that somehow makes more is marked `truncated`.
///
/// ```
/// use modelux::trace::{TraceHandle, MAX_ENTRIES};
/// let t = TraceHandle::new("req-1");
/// for _ in 0..MAX_ENTRIES + 1 {
///     t.decision("retry", String::new());
/// }
/// let trace = t.snapshot().unwrap();
/// assert_eq!(trace.decisions.len(), MAX_ENTRIES);
/// assert!(trace.truncated);
/// ```
pub const MAX_ENTRIES: usize = 64;

/// The decision trace of one request: everything the stack decided and why.
/// It holds no prompt or completion text and no secret.
///
/// ```
/// use modelux::trace::{Trace, TraceStore};
/// let trace = Trace { request_id: "req-1".into(), route: "default".into(), stream: true, ..Trace::default() };
/// let json = serde_json::to_value(&trace).unwrap();
/// assert_eq!(json["route"], "default");
/// // Unset optional fields are left out.
/// assert!(json.get("outcome").is_none() && json.get("truncated").is_none());
/// let store = TraceStore::new(16);
/// store.insert(trace);
/// assert!(store.get("req-1").unwrap().stream);
/// ```
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
    /// Bytes of the request's prompt ([`ChatRequest::prompt_len`](crate::api::ChatRequest::prompt_len):
    /// messages, earlier tool calls, declared tools), to estimate its prompt
    /// tokens: set when the request ended without usage and a finish hook is
    /// installed (see [`TraceLayer::with_sink`](super::TraceLayer::with_sink)).
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
    /// Whether `usage` is the gateway's estimate (≈ 4 bytes a token of the
    /// messages and of the text streamed; tool-call arguments not counted)
    /// because the provider reported none: a stream that broke or whose
    /// client left before its usage chunk, or a provider that sends none.
    /// The provider still billed it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// Estimated cost in USD, when prices are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// More than [`MAX_ENTRIES`] attempts or decisions were dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One candidate's place in the order.
///
/// ```
/// use modelux::trace::CandidateTrace;
/// let c = CandidateTrace { target: "openai/gpt-4o-mini".into(), reason: "healthy".into() };
/// assert_eq!(
///     serde_json::to_value(&c).unwrap(),
///     serde_json::json!({"target": "openai/gpt-4o-mini", "reason": "healthy"}),
/// );
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct CandidateTrace {
    /// `provider/model`.
    pub target: String,
    /// Why it stands where it does (health state, p50, config order).
    pub reason: String,
}

/// Why a candidate stands where it does, as a ranking layer decided it:
/// numbers only, rendered to [`CandidateTrace::reason`] text when the trace
/// is read, not on the request path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reason {
    /// Nothing reordered the route.
    ConfigOrder,
    /// Health: never measured.
    Healthy,
    /// Health: measured and healthy.
    HealthyRate {
        /// Failure rate over the window.
        failure_rate: f64,
        /// Attempts in the window.
        attempts: usize,
    },
    /// Health: ejected.
    Ejected {
        /// Milliseconds of cool-down left.
        ms_left: u64,
        /// Ejections in a row.
        ejections: u32,
    },
    /// Health: admitted as the probe after a cool-down.
    Probe,
    /// Health: cool-down over but the probe slots are taken.
    ProbeInFlight,
    /// Health: cool-down over, in its place behind a candidate tried first;
    /// judged if the request reaches it, without taking a probe slot.
    ProbeIfReached,
    /// Health: restored a moment ago and in its slow start; this request
    /// was not among the share it is put first for.
    SlowStart {
        /// The share of requests it is put first for now, in percent.
        share_pct: u8,
    },
    /// Health: a `Retry-After` pause.
    Cooling {
        /// Milliseconds of the pause left.
        ms_left: u64,
    },
    /// Latency: the least recently measured candidate was put first.
    Exploration,
    /// Latency: ranked by its p50.
    Ranked {
        /// Median, ms.
        p50_ms: u128,
        /// 95th percentile, ms.
        p95_ms: u128,
        /// Samples in the window.
        samples: usize,
    },
    /// Latency: too few samples to rank.
    FewSamples {
        /// Samples in the window.
        samples: usize,
        /// Samples needed.
        min: usize,
    },
    /// Latency: no samples at all.
    NoSamples,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Reason::ConfigOrder => f.write_str("config order"),
            Reason::Healthy => f.write_str("healthy"),
            Reason::HealthyRate {
                failure_rate,
                attempts,
            } => write!(
                f,
                "healthy (failure rate {failure_rate:.2} over {attempts} attempts)"
            ),
            Reason::Ejected { ms_left, ejections } => write!(
                f,
                "ejected for {ms_left} ms more ({ejections} ejection(s) in a row)"
            ),
            Reason::Probe => f.write_str("probe after cool-down"),
            Reason::ProbeInFlight => f.write_str("cool-down over, probe in flight"),
            Reason::ProbeIfReached => {
                f.write_str("cool-down over, judged if reached (not first: no probe slot)")
            }
            Reason::SlowStart { share_pct } => write!(
                f,
                "restored, in its slow start: first for {share_pct} % of requests, not this one"
            ),
            Reason::Cooling { ms_left } => write!(f, "cooling for {ms_left} ms (retry-after)"),
            Reason::Exploration => f.write_str("exploration"),
            Reason::Ranked {
                p50_ms,
                p95_ms,
                samples,
            } => write!(f, "p50 {p50_ms} ms, p95 {p95_ms} ms over {samples} samples"),
            Reason::FewSamples { samples, min } => {
                write!(f, "{samples} samples, fewer than {min}: unranked")
            }
            Reason::NoSamples => f.write_str("no samples: unranked"),
        }
    }
}

/// A candidate's place and the reasons of every layer that ranked it, kept
/// typed until the trace is read.
#[derive(Debug, Clone)]
pub(crate) struct CandidateNote {
    pub(crate) target: TargetId,
    pub(crate) reasons: Vec<Reason>,
}

impl CandidateNote {
    /// A note with one reason.
    pub(crate) fn new(target: &TargetId, reason: Reason) -> Self {
        let mut reasons = Vec::with_capacity(2);
        reasons.push(reason);
        CandidateNote {
            target: target.clone(),
            reasons,
        }
    }

    fn render(&self) -> CandidateTrace {
        use std::fmt::Write;
        let mut reason = String::new();
        for (i, r) in self.reasons.iter().enumerate() {
            if i > 0 {
                reason.push_str("; ");
            }
            let _ = write!(reason, "{r}");
        }
        CandidateTrace {
            target: self.target.to_string(),
            reason,
        }
    }
}

/// A finished trace as the trace layer hands it to the store: the candidate
/// notes are rendered only if someone reads it.
#[derive(Debug, Default)]
pub(crate) struct Finished {
    pub(crate) trace: Trace,
    pub(crate) notes: Vec<CandidateNote>,
    /// The target that took a committed stream over mid-way (a
    /// continuation): the usage the provider reports at the end is its own,
    /// so its tokens and cost are counted under it.
    pub(crate) continued_by: Option<Arc<crate::provider::Target>>,
}

impl Finished {
    /// Renders the candidate notes into the trace (once).
    pub(crate) fn render(&mut self) {
        if !self.notes.is_empty() {
            let notes = std::mem::take(&mut self.notes);
            render_into(&mut self.trace.candidates, &notes);
        }
    }

    /// A rendered copy.
    pub(crate) fn rendered(&self) -> Trace {
        let mut t = self.trace.clone();
        if !self.notes.is_empty() {
            render_into(&mut t.candidates, &self.notes);
        }
        t
    }
}

/// The notes' order replaces `candidates`; a reason some other layer wrote
/// as text (through [`TraceHandle::with`]) for the same target stays first.
fn render_into(candidates: &mut Vec<CandidateTrace>, notes: &[CandidateNote]) {
    let old = std::mem::take(candidates);
    for n in notes {
        let mut c = n.render();
        if let Some(prev) = old.iter().find(|o| o.target == c.target) {
            c.reason = format!("{}; {}", prev.reason, c.reason);
        }
        candidates.push(c);
    }
}

/// One routing decision.
///
/// ```
/// use modelux::trace::TraceHandle;
/// let t = TraceHandle::new("req-1");
/// t.decision("fallback", "openai/gpt-4o-mini timed out, trying anthropic/claude".into());
/// let trace = t.snapshot().unwrap();
/// let d = &trace.decisions[0];
/// assert_eq!(d.kind, "fallback");
/// assert!(d.at_ms < 60_000);
/// assert_eq!(serde_json::to_value(d).unwrap()["kind"], "fallback");
/// ```
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
///
/// ```
/// use modelux::trace::{AttemptTrace, TraceHandle};
/// let t = TraceHandle::new("req-1");
/// t.attempt(AttemptTrace {
///     target: "openai/gpt-4o-mini".into(),
///     kind: "first",
///     start_ms: 0,
///     duration_ms: 120,
///     timeout_ms: 3000,
///     outcome: "429",
///     status: Some(429),
///     retry_after_ms: Some(1000),
///     backoff_ms: None,
///     message: None,
/// });
/// let trace = t.snapshot().unwrap();
/// assert_eq!(trace.attempts[0].status, Some(429));
/// // Absent fields are left out of the JSON.
/// let json = serde_json::to_value(&trace.attempts[0]).unwrap();
/// assert_eq!(json["retry_after_ms"], 1000);
/// assert!(json.get("backoff_ms").is_none());
/// ```
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
///
/// ```
/// use modelux::trace::{Outcome, TraceHandle};
/// let t = TraceHandle::new("req-1");
/// t.finish(Outcome {
///     status: 200,
///     class: "ok".into(),
///     served_by: Some("openai/m".into()),
///     stream_end: Some("done"),
///     message: None,
/// });
/// // The first outcome wins.
/// t.finish(Outcome { status: 499, class: "client_disconnected".into(), served_by: None, stream_end: None, message: None });
/// let trace = t.snapshot().unwrap();
/// let o = trace.outcome.as_ref().unwrap();
/// assert_eq!((o.status, o.stream_end), (200, Some("done")));
/// assert!(trace.duration_ms.is_some());
/// assert_eq!(
///     serde_json::to_value(o).unwrap(),
///     serde_json::json!({"status": 200, "class": "ok", "served_by": "openai/m", "stream_end": "done"}),
/// );
/// ```
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
    trace: Mutex<Finished>,
}

impl TraceHandle {
    /// A handle that records nothing.
    ///
    /// ```
    /// use modelux::trace::TraceHandle;
    /// let t = TraceHandle::disabled();
    /// t.decision("retry", "ignored".into());
    /// assert!(!t.is_enabled());
    /// assert!(t.snapshot().is_none());
    /// assert_eq!(t.elapsed_ms(), 0);
    /// ```
    pub fn disabled() -> Self {
        TraceHandle { inner: None }
    }

    /// A new trace for `request_id`, starting now.
    ///
    /// ```
    /// let t = modelux::trace::TraceHandle::new("req-1");
    /// let trace = t.snapshot().unwrap();
    /// assert_eq!(trace.request_id, "req-1");
    /// assert!(trace.started_at_unix_ms > 0);
    /// assert!(trace.attempts.is_empty() && trace.outcome.is_none());
    /// ```
    pub fn new(request_id: &str) -> Self {
        let started_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        TraceHandle {
            inner: Some(Arc::new(Inner {
                started: Instant::now(),
                trace: Mutex::new(Finished {
                    trace: Trace {
                        request_id: request_id.to_owned(),
                        started_at_unix_ms,
                        ..Trace::default()
                    },
                    notes: Vec::new(),
                    continued_by: None,
                }),
            })),
        }
    }

    /// Whether this handle records.
    ///
    /// ```
    /// use modelux::trace::TraceHandle;
    /// assert!(TraceHandle::new("req-1").is_enabled());
    /// assert!(!TraceHandle::disabled().is_enabled());
    /// // The default handle is the disabled one.
    /// assert!(!TraceHandle::default().is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Milliseconds since the trace started.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// let t = modelux::trace::TraceHandle::new("req-1");
    /// tokio::time::advance(Duration::from_millis(250)).await;
    /// assert_eq!(t.elapsed_ms(), 250);
    /// # }
    /// ```
    pub fn elapsed_ms(&self) -> u64 {
        self.inner
            .as_ref()
            .map(|i| i.started.elapsed().as_millis() as u64)
            .unwrap_or(0)
    }

    /// Milliseconds from the trace's start to `at`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// let before = Instant::now();
    /// let t = modelux::trace::TraceHandle::new("req-1");
    /// assert_eq!(t.offset_ms(Instant::now() + Duration::from_millis(40)), 40);
    /// // An instant before the start counts as 0.
    /// assert_eq!(t.offset_ms(before - Duration::from_millis(5)), 0);
    /// # }
    /// ```
    pub fn offset_ms(&self, at: Instant) -> u64 {
        self.inner
            .as_ref()
            .map(|i| at.saturating_duration_since(i.started).as_millis() as u64)
            .unwrap_or(0)
    }

    /// Edits the trace in place.
    ///
    /// ```
    /// let t = modelux::trace::TraceHandle::new("req-1");
    /// t.with(|trace| {
    ///     trace.route = "chat".into();
    ///     trace.stream = true;
    /// });
    /// let trace = t.snapshot().unwrap();
    /// assert_eq!((trace.route.as_str(), trace.stream), ("chat", true));
    /// ```
    pub fn with(&self, f: impl FnOnce(&mut Trace)) {
        self.with_state(|s| f(&mut s.trace));
    }

    fn with_state(&self, f: impl FnOnce(&mut Finished)) {
        if let Some(i) = &self.inner {
            if let Ok(mut t) = i.trace.lock() {
                f(&mut t);
            }
        }
    }

    /// Edits the typed candidate notes (rendered into
    /// [`Trace::candidates`] when the trace is read); `f` also sees the
    /// trace, for candidates written as text.
    pub(crate) fn with_notes(&self, f: impl FnOnce(&mut Vec<CandidateNote>, &Trace)) {
        self.with_state(|s| f(&mut s.notes, &s.trace));
    }

    /// Records that `target` took the committed stream over (a continuation).
    pub(crate) fn continued_by(&self, target: Arc<crate::provider::Target>) {
        self.with_state(|s| s.continued_by = Some(target));
    }

    /// Edits the trace in place, also given the target that took the stream
    /// over, if one did.
    pub(crate) fn with_continued(
        &self,
        f: impl FnOnce(&mut Trace, Option<&Arc<crate::provider::Target>>),
    ) {
        self.with_state(|s| f(&mut s.trace, s.continued_by.as_ref()));
    }

    /// Records a decision.
    ///
    /// ```
    /// let t = modelux::trace::TraceHandle::new("req-1");
    /// t.decision("retry", "same target after 429".into());
    /// t.decision("fallback", "to anthropic/claude".into());
    /// let kinds: Vec<_> = t.snapshot().unwrap().decisions.iter().map(|d| d.kind).collect();
    /// assert_eq!(kinds, ["retry", "fallback"]);
    /// ```
    pub fn decision(&self, kind: &'static str, detail: String) {
        let at_ms = self.elapsed_ms();
        self.with(|t| {
            if t.decisions.len() < MAX_ENTRIES {
                push_small(
                    &mut t.decisions,
                    Decision {
                        at_ms,
                        kind,
                        detail,
                    },
                );
            } else {
                t.truncated = true;
            }
        });
    }

    /// Records an attempt.
    ///
    /// ```
    /// use modelux::trace::{AttemptTrace, TraceHandle};
    /// let t = TraceHandle::new("req-1");
    /// t.attempt(AttemptTrace {
    ///     target: "openai/m".into(), kind: "first", start_ms: 0, duration_ms: 80,
    ///     timeout_ms: 3000, outcome: "ok", status: Some(200),
    ///     retry_after_ms: None, backoff_ms: None, message: None,
    /// });
    /// let trace = t.snapshot().unwrap();
    /// assert_eq!((trace.attempts.len(), trace.attempts[0].outcome), (1, "ok"));
    /// ```
    pub fn attempt(&self, a: AttemptTrace) {
        self.with(|t| {
            if t.attempts.len() < MAX_ENTRIES {
                push_small(&mut t.attempts, a);
            } else {
                t.truncated = true;
            }
        });
    }

    /// Records the final outcome and the end-to-end duration; the first call wins.
    ///
    /// ```
    /// use modelux::trace::{Outcome, TraceHandle};
    /// let t = TraceHandle::new("req-1");
    /// let outcome = |status, class: &str| Outcome {
    ///     status, class: class.into(), served_by: None, stream_end: None, message: None,
    /// };
    /// t.finish(outcome(502, "upstream_error"));
    /// t.finish(outcome(200, "ok"));
    /// let trace = t.snapshot().unwrap();
    /// assert_eq!(trace.outcome.unwrap().status, 502);
    /// assert!(trace.duration_ms.is_some());
    /// ```
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
    ///
    /// ```
    /// let t = modelux::trace::TraceHandle::new("req-1");
    /// let before = t.snapshot().unwrap();
    /// t.decision("commit", String::new());
    /// // The copy does not follow later edits.
    /// assert!(before.decisions.is_empty());
    /// assert_eq!(t.snapshot().unwrap().decisions.len(), 1);
    /// ```
    pub fn snapshot(&self) -> Option<Trace> {
        let i = self.inner.as_ref()?;
        i.trace.lock().ok().map(|t| t.rendered())
    }

    /// Moves the trace out (the request is finished; nothing reads it
    /// through the handle any more), leaving an empty one behind.
    pub(crate) fn take(&self) -> Option<Finished> {
        let i = self.inner.as_ref()?;
        i.trace.lock().ok().map(|mut t| std::mem::take(&mut *t))
    }
}

/// Milliseconds of a duration, for trace fields.
pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Pushes onto one of a trace's lists, which usually hold one entry: the
/// first push allocates room for one, not the four `Vec` starts with. A
/// trace lives as long as its request, streams included.
pub(crate) fn push_small<T>(v: &mut Vec<T>, item: T) {
    if v.capacity() == 0 {
        v.reserve_exact(1);
    }
    v.push(item);
}
