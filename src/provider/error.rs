//! How an attempt failed, as a typed value.
//!
//! The routing layers decide on these variants (retry the same target, move to
//! the next one, or give the answer to the client), so classification happens
//! once, here at the edge where the provider's own status codes and error
//! types are known, and never again by matching strings.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

/// What kind of failure an attempt met.
///
/// ```
/// use modelux::provider::Failure;
/// assert_eq!(Failure::Server { status: 503 }.class(), "5xx");
/// assert!(Failure::RateLimited.is_retryable_on_same_target());
/// assert!(!Failure::Timeout.is_retryable_on_same_target());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// 429: rate limit or quota.
    RateLimited,
    /// The provider said it is overloaded (Anthropic 529, `overloaded_error`).
    Overloaded,
    /// Any other 5xx.
    Server {
        /// The HTTP status.
        status: u16,
    },
    /// No answer (headers, or the first token of a stream) within the attempt's time.
    Timeout,
    /// Connection refused, reset or closed before a response arrived.
    Connect,
    /// The prompt does not fit the model's context window.
    ContextLength,
    /// The provider's safety system rejected the request.
    ContentPolicy,
    /// The model refused a trailing assistant message to continue from
    /// (a 400 saying it does not support prefill).
    PrefillUnsupported,
    /// The provider refused this target, not the request: the gateway's
    /// credentials (401, 403), the model or endpoint it is configured
    /// with (404), or the account behind the key (402, or a 400 the adapter
    /// recognises: credits run out, billing not enabled, a region the
    /// provider does not serve). Another target can serve the same request,
    /// so the router always moves on, and it counts against the target's
    /// health (a revoked key, an empty account or a retired model is an
    /// outage of that target).
    ///
    /// `status` says which: 401 or 403 for credentials (also a key the
    /// provider refused with a 400, as Gemini does), 404 for the model,
    /// anything else for the account.
    TargetRefused {
        /// The HTTP status (401 for a credentials refusal sent as a 400).
        status: u16,
    },
    /// Any other 4xx: the request itself is wrong for this provider.
    Client {
        /// The HTTP status.
        status: u16,
    },
    /// The provider answered something this crate cannot parse.
    Malformed,
    /// A stream ended (connection cut, or an error event) after content had been sent.
    StreamCut,
    /// A stream sent nothing for longer than the idle timeout after content had been sent.
    StreamStall,
    /// A stream ran longer than its route allows (`stream_max_ms`) and the
    /// gateway ended it: not the target's fault, and never continued
    /// elsewhere (that would start the generation, and its bill, again).
    StreamTimeLimit,
}

impl Failure {
    /// The outcome class used in metrics and traces: one of `429`, `5xx`,
    /// `timeout`, `connect`, `context_length`, `content_policy`,
    /// `target_refused`, `client_error`, `malformed`, `stream_cut`,
    /// `stream_stall`, `stream_time_limit`.
    ///
    /// ```
    /// use modelux::provider::Failure;
    /// assert_eq!(Failure::RateLimited.class(), "429");
    /// // Anthropic's 529 and any other 5xx share a class.
    /// assert_eq!(Failure::Overloaded.class(), Failure::Server { status: 502 }.class());
    /// assert_eq!(Failure::TargetRefused { status: 401 }.class(), "target_refused");
    /// ```
    pub fn class(&self) -> &'static str {
        match self {
            Failure::RateLimited => "429",
            Failure::Overloaded | Failure::Server { .. } => "5xx",
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::ContextLength => "context_length",
            Failure::ContentPolicy => "content_policy",
            Failure::PrefillUnsupported => "prefill_unsupported",
            Failure::TargetRefused { .. } => "target_refused",
            Failure::Client { .. } => "client_error",
            Failure::Malformed => "malformed",
            Failure::StreamCut => "stream_cut",
            Failure::StreamStall => "stream_stall",
            Failure::StreamTimeLimit => "stream_time_limit",
        }
    }

    /// The HTTP status the provider gave, if the failure came with one.
    ///
    /// ```
    /// use modelux::provider::Failure;
    /// assert_eq!(Failure::Overloaded.status(), Some(529));
    /// assert_eq!(Failure::Client { status: 422 }.status(), Some(422));
    /// assert_eq!(Failure::Timeout.status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::RateLimited => Some(429),
            Failure::Overloaded => Some(529),
            Failure::PrefillUnsupported => Some(400),
            Failure::Server { status }
            | Failure::TargetRefused { status }
            | Failure::Client { status } => Some(*status),
            _ => None,
        }
    }

    /// Whether the same target may be tried again after a backoff: rate
    /// limits, overload, 5xx and connection failures are transient; a timeout
    /// is not (the target is slow now, so the router moves on).
    ///
    /// ```
    /// use modelux::provider::Failure;
    /// assert!(Failure::Server { status: 503 }.is_retryable_on_same_target());
    /// assert!(Failure::Connect.is_retryable_on_same_target());
    /// assert!(!Failure::Timeout.is_retryable_on_same_target());
    /// assert!(!Failure::ContextLength.is_retryable_on_same_target());
    /// ```
    pub fn is_retryable_on_same_target(&self) -> bool {
        matches!(
            self,
            Failure::RateLimited | Failure::Overloaded | Failure::Server { .. } | Failure::Connect
        )
    }

    /// Whether the failure says something about the provider's health (as
    /// opposed to the request's content): these feed health scores.
    ///
    /// ```
    /// use modelux::provider::Failure;
    /// assert!(Failure::Timeout.counts_against_target());
    /// // A revoked key is the target's problem, an oversized prompt the request's.
    /// assert!(Failure::TargetRefused { status: 401 }.counts_against_target());
    /// assert!(!Failure::ContextLength.counts_against_target());
    /// assert!(!Failure::Client { status: 400 }.counts_against_target());
    /// ```
    pub fn counts_against_target(&self) -> bool {
        !matches!(
            self,
            Failure::ContextLength
                | Failure::ContentPolicy
                | Failure::PrefillUnsupported
                | Failure::Client { .. }
                | Failure::StreamTimeLimit
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::RateLimited => f.write_str("rate limited (429)"),
            Failure::Overloaded => f.write_str("overloaded"),
            Failure::Server { status } => write!(f, "server error ({status})"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Connect => f.write_str("connection failed"),
            Failure::ContextLength => f.write_str("context length exceeded"),
            Failure::ContentPolicy => f.write_str("content policy rejection"),
            Failure::PrefillUnsupported => f.write_str("prefill not supported"),
            Failure::TargetRefused {
                status: status @ (401 | 403),
            } => write!(
                f,
                "the provider refused the gateway's credentials ({status})"
            ),
            Failure::TargetRefused { status: 404 } => {
                f.write_str("the provider refused this target's model or endpoint (404)")
            }
            Failure::TargetRefused { status } => write!(
                f,
                "the provider refused this target's account: credits, billing or region ({status})"
            ),
            Failure::Client { status } => write!(f, "client error ({status})"),
            Failure::Malformed => f.write_str("malformed response"),
            Failure::StreamCut => f.write_str("stream cut"),
            Failure::StreamStall => f.write_str("stream stalled"),
            Failure::StreamTimeLimit => f.write_str("stream time limit reached"),
        }
    }
}

/// A failed attempt: its [`Failure`], the provider's own message, and the
/// `Retry-After` it was given.
///
/// ```
/// use modelux::provider::{Failure, ProviderError};
/// let e = ProviderError::new(Failure::RateLimited, "slow down");
/// assert_eq!(e.to_string(), "rate limited (429): slow down");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// The failure class.
    pub failure: Failure,
    /// The provider's message (never contains request headers or keys).
    pub message: String,
    /// How long the provider asked us to wait, from `retry-after-ms` or `retry-after`.
    pub retry_after: Option<Duration>,
    /// The provider's HTTP status, when the failure came with one.
    pub status: Option<u16>,
}

impl ProviderError {
    /// An error with no `Retry-After`.
    ///
    /// A message longer than [`MAX_MESSAGE_BYTES`] is cut there.
    ///
    /// ```
    /// use modelux::provider::{Failure, ProviderError};
    /// let e = ProviderError::new(Failure::Overloaded, "try later");
    /// // The status follows the failure.
    /// assert_eq!((e.status, e.retry_after), (Some(529), None));
    /// assert_eq!(e.to_string(), "overloaded: try later");
    /// ```
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        ProviderError {
            failure,
            message: capped(message.into()),
            retry_after: None,
            status: failure.status(),
        }
    }

    /// Sets the `Retry-After`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::provider::{Failure, ProviderError};
    /// let e = ProviderError::new(Failure::RateLimited, "slow down")
    ///     .with_retry_after(Some(Duration::from_secs(3)));
    /// assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    /// assert_eq!(e.with_retry_after(None).retry_after, None);
    /// ```
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Classifies a non-success HTTP answer by status alone. Adapters refine
    /// the result with the provider's error type (context length, content
    /// policy, overload) before returning it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::{HeaderMap, StatusCode};
    /// use modelux::provider::{Failure, ProviderError};
    /// let mut headers = HeaderMap::new();
    /// headers.insert("retry-after", "7".parse().unwrap());
    /// let e = ProviderError::from_status(StatusCode::TOO_MANY_REQUESTS, &headers, "quota");
    /// assert_eq!((e.failure, e.retry_after), (Failure::RateLimited, Some(Duration::from_secs(7))));
    /// let e = ProviderError::from_status(StatusCode::NOT_FOUND, &HeaderMap::new(), "no such model");
    /// assert_eq!((e.failure, e.status), (Failure::TargetRefused { status: 404 }, Some(404)));
    /// ```
    pub fn from_status(
        status: StatusCode,
        headers: &HeaderMap,
        message: impl Into<String>,
    ) -> Self {
        let code = status.as_u16();
        let failure = match code {
            429 => Failure::RateLimited,
            529 => Failure::Overloaded,
            408 => Failure::Timeout,
            // 402 Payment Required: the account behind the key has no
            // credits left (Anthropic's `billing_error`, OpenRouter).
            401..=404 => Failure::TargetRefused { status: code },
            500..=599 => Failure::Server { status: code },
            // A redirect (an `http://` base URL answered with a move to
            // `https://`, a retired endpoint): nothing the gateway can use,
            // and never the client's to follow.
            300..=399 => Failure::Malformed,
            _ => Failure::Client { status: code },
        };
        let mut e = ProviderError::new(failure, message).with_retry_after(retry_after(headers));
        e.status = Some(code);
        e
    }
}

/// The longest provider message kept, in bytes. A provider's error text
/// reaches the client, the trace ring and the logs: an in-stream error event
/// may be megabytes long, and the ring keeps a thousand traces.
///
/// ```
/// use modelux::provider::{Failure, ProviderError, MAX_MESSAGE_BYTES};
/// let e = ProviderError::new(Failure::Server { status: 500 }, "x".repeat(1 << 20));
/// assert!(e.message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
/// assert!(e.message.ends_with('…'));
/// ```
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// `message` cut to [`MAX_MESSAGE_BYTES`] on a character boundary, with `…`.
pub(crate) fn capped(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.failure)
        } else {
            write!(f, "{}: {}", self.failure, self.message)
        }
    }
}

impl std::error::Error for ProviderError {}

/// Reads `retry-after-ms` (OpenAI) or `retry-after` in seconds.
///
/// ```
/// use http::HeaderMap;
/// use std::time::Duration;
/// let mut h = HeaderMap::new();
/// h.insert("retry-after", "2".parse().unwrap());
/// assert_eq!(modelux::provider::retry_after(&h), Some(Duration::from_secs(2)));
/// h.insert("retry-after-ms", "150".parse().unwrap());
/// assert_eq!(modelux::provider::retry_after(&h), Some(Duration::from_millis(150)));
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let parse = |name: &str| -> Option<f64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(ms) = parse("retry-after-ms") {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    parse("retry-after").map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}
