use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::provider::{Failure, ProviderError};

/// How a route orders its candidates.
///
/// ```
/// use modelux::route::{Route, Strategy};
/// assert_eq!(Strategy::default(), Strategy::Fallback);
/// let s: Strategy = serde_json::from_str(r#""latency""#).unwrap();
/// assert_eq!(s, Strategy::Latency);
/// assert_eq!(serde_json::to_string(&Strategy::Fallback).unwrap(), r#""fallback""#);
/// assert_eq!(Route::fallback("r", vec![]).strategy, Strategy::Fallback);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Config order.
    #[default]
    Fallback,
    /// Fastest healthy candidate first, by live p50.
    Latency,
}

/// A mid-stream recovery strategy.
///
/// ```
/// use modelux::route::{Continuation, RoutePolicy};
/// let c: Vec<Continuation> = serde_json::from_str(r#"["regenerate"]"#).unwrap();
/// assert_eq!(c, [Continuation::Regenerate]);
/// // By default a broken stream is continued by prefill first, then regenerated.
/// assert_eq!(RoutePolicy::default().continuation, [Continuation::Prefill, Continuation::Regenerate]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Continuation {
    /// Send the delivered text as a trailing assistant message to a model
    /// with `prefill: true` and stream its continuation.
    Prefill,
    /// Re-send the original request and splice in the regenerated answer
    /// after the already-delivered prefix, when it matches.
    Regenerate,
}

/// Which failures move the router on (to a retry or the next candidate).
///
/// ```
/// use modelux::route::RetryOn;
/// use modelux::provider::{Failure, ProviderError};
/// let r = RetryOn::parse(["429", "529"]).unwrap();
/// assert!(r.matches(&ProviderError::new(Failure::RateLimited, "")));
/// assert!(r.matches(&ProviderError::new(Failure::Overloaded, "")));
/// assert!(!r.matches(&ProviderError::new(Failure::Server { status: 500 }, "")));
/// assert!(RetryOn::parse(["teapot"]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    rate_limited: bool,
    server: bool,
    timeout: bool,
    connect: bool,
    statuses: Vec<u16>,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            rate_limited: true,
            server: true,
            timeout: true,
            connect: true,
            statuses: Vec::new(),
        }
    }
}

impl RetryOn {
    /// Parses `retry_on` tokens: `429`, `5xx`, `timeout`, `connect`, or an
    /// exact status. Returns the first unknown token as the error.
    ///
    /// ```
    /// use modelux::route::RetryOn;
    /// assert_eq!(RetryOn::parse(["429", "5xx", "timeout", "connect"]), Ok(RetryOn::default()));
    /// assert!(RetryOn::parse(["5xx", "409"]).is_ok());
    /// // Only 4xx and 5xx statuses are accepted.
    /// assert_eq!(RetryOn::parse(["5xx", "200", "teapot"]), Err("200".to_string()));
    /// ```
    pub fn parse<I, S>(tokens: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut r = RetryOn {
            rate_limited: false,
            server: false,
            timeout: false,
            connect: false,
            statuses: Vec::new(),
        };
        for t in tokens {
            match t.as_ref() {
                "429" => r.rate_limited = true,
                "5xx" => r.server = true,
                "timeout" => r.timeout = true,
                "connect" => r.connect = true,
                other => match other.parse::<u16>() {
                    Ok(s) if (400..=599).contains(&s) => r.statuses.push(s),
                    _ => return Err(other.to_owned()),
                },
            }
        }
        Ok(r)
    }

    /// Whether `err` moves the router on. An exact status listed moves on
    /// whatever its class; context-length errors always do (a later candidate
    /// may have a larger window), and so does a provider refusing the target
    /// itself (a revoked key, a retired model); content-policy and other
    /// client errors do only when their status is listed.
    ///
    /// ```
    /// use http::{HeaderMap, StatusCode};
    /// use modelux::provider::{Failure, ProviderError};
    /// use modelux::route::RetryOn;
    /// let r = RetryOn::default();
    /// assert!(r.matches(&ProviderError::new(Failure::ContextLength, "too long")));
    /// assert!(!r.matches(&ProviderError::new(Failure::ContentPolicy, "refused")));
    /// let conflict = ProviderError::from_status(StatusCode::CONFLICT, &HeaderMap::new(), "busy");
    /// assert!(!r.matches(&conflict));
    /// assert!(RetryOn::parse(["409"]).unwrap().matches(&conflict));
    /// ```
    pub fn matches(&self, err: &ProviderError) -> bool {
        if err.status.is_some_and(|s| self.statuses.contains(&s)) {
            return true;
        }
        match err.failure {
            Failure::ContextLength | Failure::TargetRefused { .. } => true,
            Failure::ContentPolicy | Failure::PrefillUnsupported | Failure::Client { .. } => false,
            Failure::RateLimited => self.rate_limited,
            Failure::Overloaded | Failure::Server { .. } => self.server,
            Failure::Timeout | Failure::StreamStall => self.timeout,
            Failure::Connect | Failure::StreamCut | Failure::Malformed => self.connect,
            // The route's own limit: nothing to move on to.
            Failure::StreamTimeLimit => false,
        }
    }
}

/// How a route tries its candidates.
///
/// ```
/// use std::time::Duration;
/// use modelux::route::{Route, RoutePolicy};
/// let policy = RoutePolicy::default();
/// assert_eq!(policy.total_budget, Duration::from_secs(30));
/// assert_eq!(policy.same_target_retries, 1);
/// // A route's policy can be tuned in code.
/// let mut route = Route::fallback("r", vec![]);
/// route.policy.same_target_retries = 0;
/// assert_eq!(route.policy, RoutePolicy { same_target_retries: 0, ..RoutePolicy::default() });
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    /// Which failures move on.
    pub retry_on: RetryOn,
    /// The whole request's budget, up to the point the response is committed.
    pub total_budget: Duration,
    /// Same-target retries for 429, 5xx and connection failures before advancing.
    pub same_target_retries: u32,
    /// First backoff step (full jitter: a random wait in `[0, base * 2^n]`).
    pub backoff_base: Duration,
    /// Largest backoff step.
    pub backoff_max: Duration,
    /// A `Retry-After` longer than this makes the router advance instead of waiting.
    pub retry_after_cap: Duration,
    /// Longest silence allowed inside a committed stream.
    pub stream_idle_timeout: Duration,
    /// Longest a committed stream may last from its first token, whatever
    /// it sends: past it the stream ends with [`Failure::StreamTimeLimit`].
    pub stream_max: Duration,
    /// Mid-stream recovery strategies, in order.
    pub continuation: Vec<Continuation>,
    /// Longest delivered text that `regenerate` will try to reproduce.
    pub regenerate_max_chars: usize,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            retry_on: RetryOn::default(),
            total_budget: Duration::from_secs(30),
            same_target_retries: 1,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            retry_after_cap: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(30),
            stream_max: Duration::from_secs(30 * 60),
            continuation: vec![Continuation::Prefill, Continuation::Regenerate],
            regenerate_max_chars: 8000,
        }
    }
}
