//! One recorded request.

use serde::{Deserialize, Serialize};

use crate::trace::{AttemptTrace, Trace};

/// One finished request as kept in the traffic log: what routing saw and
/// did, with timings and token counts. It never holds prompt or completion
/// text, nor any key.
///
/// ```
/// use modelux::traffic::{AttemptRecord, TrafficRecord};
/// let r = TrafficRecord {
///     at_ms: 1_700_000_000_000, request_id: "r1".into(), config_version: 3,
///     route: "default".into(), client: None, stream: false,
///     prompt_tokens: 12, completion_tokens: 40, tokens_estimated: false, max_tokens: Some(64),
///     attempts: vec![AttemptRecord::ok("oa", "gpt", 0, 180)],
///     outcome: "ok".into(), status: 200, latency_ms: 182, ttft_ms: None,
///     served_by: Some("oa/gpt".into()), cost_usd: Some(0.0001),
/// };
/// assert!(r.is_success());
/// assert!(!serde_json::to_string(&r).unwrap().contains("content"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficRecord {
    /// When the request started, Unix milliseconds.
    pub at_ms: u64,
    /// The request id.
    pub request_id: String,
    /// The config version that served it.
    pub config_version: u64,
    /// The route it resolved to.
    pub route: String,
    /// The authenticated client's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Prompt tokens (from usage, or estimated).
    pub prompt_tokens: u64,
    /// Completion tokens (from usage; estimated from the text streamed for
    /// a stream that ended without usage; 0 when the answer never started).
    pub completion_tokens: u64,
    /// Whether the token counts are estimates (no usage was reported):
    /// prompt ≈ characters of the request's messages / 4, completion ≈
    /// characters streamed / 4.
    pub tokens_estimated: bool,
    /// The output cap the client asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Every upstream attempt, in order.
    pub attempts: Vec<AttemptRecord>,
    /// `ok` or the final error class (as in traces).
    pub outcome: String,
    /// The HTTP status the client got.
    pub status: u16,
    /// End-to-end latency (for streams: until the stream ended), ms.
    pub latency_ms: u64,
    /// For streams: time to the first content token, ms from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// `provider/model` that served the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// Estimated cost in USD, when prices are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// One upstream attempt of a [`TrafficRecord`].
///
/// ```
/// use modelux::traffic::AttemptRecord;
/// let a = AttemptRecord::failed("oa", "gpt", 0, 120, "429", Some(429));
/// let json = serde_json::to_value(&a).unwrap();
/// assert_eq!(json["outcome"], "429");
/// // Absent fields are left out, and read back as `None`.
/// assert!(json.get("retry_after_ms").is_none());
/// assert_eq!(serde_json::from_value::<AttemptRecord>(json).unwrap(), a);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The provider's name in config.
    pub provider: String,
    /// The model's name in config.
    pub model: String,
    /// Start, ms from the request's start.
    pub start_ms: u64,
    /// Until the outcome was known (first content token for streams), ms.
    pub duration_ms: u64,
    /// For a stream that committed on this attempt: time to first token, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// `ok` or the failure class (`429`, `5xx`, `timeout`, `connect`, ...).
    pub outcome: String,
    /// The provider's HTTP status, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The `Retry-After` the provider gave, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl AttemptRecord {
    /// A successful attempt.
    ///
    /// ```
    /// use modelux::traffic::AttemptRecord;
    /// let a = AttemptRecord::ok("oa", "gpt", 5, 180);
    /// assert_eq!((a.outcome.as_str(), a.start_ms, a.duration_ms), ("ok", 5, 180));
    /// assert_eq!((a.status, a.ttft_ms), (None, None));
    /// ```
    pub fn ok(provider: &str, model: &str, start_ms: u64, duration_ms: u64) -> Self {
        AttemptRecord {
            provider: provider.into(),
            model: model.into(),
            start_ms,
            duration_ms,
            ttft_ms: None,
            outcome: "ok".into(),
            status: None,
            retry_after_ms: None,
        }
    }

    /// A failed attempt of class `outcome` (`5xx`, `429`, `timeout`, ...).
    ///
    /// ```
    /// use modelux::traffic::AttemptRecord;
    /// let a = AttemptRecord::failed("oa", "gpt", 0, 3000, "timeout", None);
    /// assert_eq!((a.outcome.as_str(), a.status), ("timeout", None));
    /// let b = AttemptRecord::failed("oa", "gpt", 0, 40, "5xx", Some(503));
    /// assert_eq!(b.status, Some(503));
    /// ```
    pub fn failed(
        provider: &str,
        model: &str,
        start_ms: u64,
        duration_ms: u64,
        outcome: &str,
        status: Option<u16>,
    ) -> Self {
        AttemptRecord {
            outcome: outcome.into(),
            status,
            ..AttemptRecord::ok(provider, model, start_ms, duration_ms)
        }
    }

    /// `provider/model`.
    ///
    /// ```
    /// use modelux::traffic::AttemptRecord;
    /// assert_eq!(AttemptRecord::ok("anthropic", "claude", 0, 10).target(), "anthropic/claude");
    /// ```
    pub fn target(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

impl TrafficRecord {
    /// Whether the client got a full answer.
    ///
    /// ```
    /// use modelux::traffic::TrafficRecord;
    /// let mut r: TrafficRecord = serde_json::from_str(r#"{"at_ms":0,"request_id":"r","config_version":1,
    ///     "route":"d","stream":true,"prompt_tokens":0,"completion_tokens":0,"tokens_estimated":false,
    ///     "attempts":[],"outcome":"ok","status":200,"latency_ms":5}"#).unwrap();
    /// assert!(r.is_success());
    /// // A stream that broke after its 200 still failed.
    /// r.outcome = "stream_error".into();
    /// assert!(!r.is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        self.outcome == "ok"
    }

    /// The record of a finished trace. Without usage, the prompt tokens are
    /// estimated from the request's characters (÷ 4, rounded up) and the
    /// record says so.
    ///
    /// ```
    /// use modelux::trace::{AttemptTrace, Outcome, Trace};
    /// use modelux::traffic::TrafficRecord;
    /// let t = Trace {
    ///     request_id: "r".into(), route: "default".into(), prompt_chars: Some(41),
    ///     attempts: vec![AttemptTrace {
    ///         target: "oa/m".into(), kind: "first", start_ms: 0, duration_ms: 30, timeout_ms: 1000,
    ///         outcome: "ok", status: None, retry_after_ms: None, backoff_ms: None, message: None,
    ///     }],
    ///     outcome: Some(Outcome { status: 200, class: "ok".into(), served_by: Some("oa/m".into()), stream_end: None, message: None }),
    ///     duration_ms: Some(31),
    ///     ..Trace::default()
    /// };
    /// let r = TrafficRecord::from_trace(&t);
    /// assert_eq!((r.prompt_tokens, r.tokens_estimated, r.latency_ms), (11, true, 31));
    /// assert_eq!(r.attempts[0].provider, "oa");
    /// ```
    pub fn from_trace(t: &Trace) -> TrafficRecord {
        RecordView::of_trace(t).to_record()
    }
}

/// A record borrowed from a [`Trace`] or a [`TrafficRecord`]: what
/// [`TrafficRecord::from_trace`] and the stored encoding
/// ([`EncodedRecord`](super::EncodedRecord)) share, so a finished request
/// is encoded straight from its trace without building an owned record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordView<'a> {
    pub at_ms: u64,
    pub request_id: &'a str,
    pub config_version: u64,
    pub route: &'a str,
    pub client: Option<&'a str>,
    pub stream: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub tokens_estimated: bool,
    pub max_tokens: Option<u32>,
    pub attempts: AttemptsView<'a>,
    pub outcome: &'a str,
    pub status: u16,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub served_by: Option<&'a str>,
    pub cost_usd: Option<f64>,
}

/// The attempts of a [`RecordView`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttemptsView<'a> {
    Records(&'a [AttemptRecord]),
    /// A trace's attempts; `committing` is the one whose duration is the
    /// stream's time to first token.
    Trace {
        list: &'a [AttemptTrace],
        committing: Option<usize>,
    },
}

/// One attempt of a [`RecordView`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptView<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub start_ms: u64,
    pub duration_ms: u64,
    pub ttft_ms: Option<u64>,
    pub outcome: &'a str,
    pub status: Option<u16>,
    pub retry_after_ms: Option<u64>,
}

impl<'a> AttemptsView<'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            AttemptsView::Records(l) => l.len(),
            AttemptsView::Trace { list, .. } => list.len(),
        }
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = AttemptView<'a>> {
        (0..self.len()).map(move |i| match self {
            AttemptsView::Records(l) => {
                let a = &l[i];
                AttemptView {
                    provider: &a.provider,
                    model: &a.model,
                    start_ms: a.start_ms,
                    duration_ms: a.duration_ms,
                    ttft_ms: a.ttft_ms,
                    outcome: &a.outcome,
                    status: a.status,
                    retry_after_ms: a.retry_after_ms,
                }
            }
            AttemptsView::Trace { list, committing } => {
                let a = &list[i];
                let (provider, model) = a.target.split_once('/').unwrap_or((&a.target, ""));
                AttemptView {
                    provider,
                    model,
                    start_ms: a.start_ms,
                    duration_ms: a.duration_ms,
                    ttft_ms: (committing == Some(i)).then_some(a.duration_ms),
                    outcome: a.outcome,
                    status: a.status,
                    retry_after_ms: a.retry_after_ms,
                }
            }
        })
    }
}

impl<'a> RecordView<'a> {
    /// The record of a finished trace (see [`TrafficRecord::from_trace`]).
    pub(crate) fn of_trace(t: &'a Trace) -> Self {
        let (prompt_tokens, completion_tokens, tokens_estimated) = match &t.usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens, t.usage_estimated),
            None => (t.prompt_chars.unwrap_or(0).div_ceil(4), 0, true),
        };
        let committed = t.committed_at_ms;
        // For a stream, the committing attempt is the last successful one
        // that started before the commit.
        let committing = if t.stream {
            t.attempts
                .iter()
                .rposition(|a| a.outcome == "ok" && committed.map_or(true, |c| a.start_ms <= c))
        } else {
            None
        };
        let (outcome, status) = match &t.outcome {
            Some(o) => (o.class.as_str(), o.status),
            None => ("unknown", 0),
        };
        RecordView {
            at_ms: t.started_at_unix_ms,
            request_id: &t.request_id,
            config_version: t.config_version,
            route: &t.route,
            client: t.client.as_deref(),
            stream: t.stream,
            prompt_tokens,
            completion_tokens,
            tokens_estimated,
            max_tokens: t.max_tokens,
            attempts: AttemptsView::Trace {
                list: &t.attempts,
                committing,
            },
            outcome,
            status,
            latency_ms: t.duration_ms.unwrap_or(0),
            ttft_ms: if t.stream { committed } else { None },
            served_by: t.outcome.as_ref().and_then(|o| o.served_by.as_deref()),
            cost_usd: t.cost_usd,
        }
    }

    /// A view of an owned record.
    pub(crate) fn of_record(r: &'a TrafficRecord) -> Self {
        RecordView {
            at_ms: r.at_ms,
            request_id: &r.request_id,
            config_version: r.config_version,
            route: &r.route,
            client: r.client.as_deref(),
            stream: r.stream,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            tokens_estimated: r.tokens_estimated,
            max_tokens: r.max_tokens,
            attempts: AttemptsView::Records(&r.attempts),
            outcome: &r.outcome,
            status: r.status,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            served_by: r.served_by.as_deref(),
            cost_usd: r.cost_usd,
        }
    }

    /// The owned record.
    pub(crate) fn to_record(self) -> TrafficRecord {
        TrafficRecord {
            at_ms: self.at_ms,
            request_id: self.request_id.to_owned(),
            config_version: self.config_version,
            route: self.route.to_owned(),
            client: self.client.map(str::to_owned),
            stream: self.stream,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            tokens_estimated: self.tokens_estimated,
            max_tokens: self.max_tokens,
            attempts: self
                .attempts
                .iter()
                .map(|a| AttemptRecord {
                    provider: a.provider.to_owned(),
                    model: a.model.to_owned(),
                    start_ms: a.start_ms,
                    duration_ms: a.duration_ms,
                    ttft_ms: a.ttft_ms,
                    outcome: a.outcome.to_owned(),
                    status: a.status,
                    retry_after_ms: a.retry_after_ms,
                })
                .collect(),
            outcome: self.outcome.to_owned(),
            status: self.status,
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            served_by: self.served_by.map(str::to_owned),
            cost_usd: self.cost_usd,
        }
    }
}
