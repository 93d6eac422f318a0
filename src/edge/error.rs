//! A routing failure as an HTTP error answer in OpenAI's format.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::api::ErrorBody;
use crate::provider::Failure;
use crate::route::{RouteError, RouteErrorKind};

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// An error answer: the status, the headers an SDK acts on (`retry-after`,
/// `retry-after-ms`, `x-should-retry`) and OpenAI's error body.
///
/// ```
/// use modelux::edge::ErrorAnswer;
/// let e = ErrorAnswer::new(http::StatusCode::BAD_REQUEST, "invalid_request_error", None, "no messages");
/// assert_eq!(e.status, 400);
/// assert_eq!(e.body.error.message, "no messages");
/// ```
#[derive(Debug, Clone)]
pub struct ErrorAnswer {
    /// The HTTP status.
    pub status: StatusCode,
    /// Extra headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: ErrorBody,
}

impl ErrorAnswer {
    /// An error with a message, an OpenAI error type and an optional code.
    ///
    /// ```
    /// let e = modelux::edge::ErrorAnswer::new(http::StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found"), "no such route");
    /// assert_eq!(e.body.error.code.as_deref(), Some("model_not_found"));
    /// ```
    pub fn new(
        status: StatusCode,
        kind: &str,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ErrorAnswer {
            status,
            headers: HeaderMap::new(),
            body: ErrorBody::new(message, kind, code),
        }
    }

    /// Maps a routing failure: the provider's own status for a rejection of
    /// the request (a context too long, a content policy), 429 with the
    /// smallest `Retry-After` when every target was rate limited, 504 when
    /// the budget ran out, 502 otherwise. The router already tried
    /// everything it could, so a 502 or 504 carries `x-should-retry: false`
    /// and the official SDKs do not retry it (a retry storm through every
    /// provider again). A target the provider refused (its key, its model)
    /// is the gateway's problem, never answered as the client's 401 or 404.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::edge::ErrorAnswer;
    /// use modelux::route::{RouteError, RouteErrorKind};
    /// let error = |kind| RouteError { kind, attempts: vec![], retry_budget_exhausted: false };
    /// let e = error(RouteErrorKind::RateLimited { retry_after: Some(Duration::from_millis(1500)) });
    /// let a = ErrorAnswer::from_route(&e);
    /// assert_eq!(a.status, 429);
    /// assert_eq!(a.headers["retry-after"], "2");
    /// assert_eq!(a.headers["retry-after-ms"], "1500");
    /// assert_eq!(a.body.error.code.as_deref(), Some("rate_limit_exceeded"));
    ///
    /// let e = error(RouteErrorKind::BudgetExhausted);
    /// let a = ErrorAnswer::from_route(&e);
    /// assert_eq!(a.status, 504);
    /// assert_eq!(a.headers["x-should-retry"], "false");
    /// ```
    pub fn from_route(e: &RouteError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let message = e.to_string();
        let mut err = match &e.kind {
            RouteErrorKind::Rejected(pe) => {
                let (kind, code) = match pe.failure {
                    Failure::ContextLength => {
                        ("invalid_request_error", Some("context_length_exceeded"))
                    }
                    Failure::ContentPolicy => {
                        ("invalid_request_error", Some("content_policy_violation"))
                    }
                    Failure::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
                    Failure::TargetRefused { status: 401 | 403 } => {
                        ("upstream_auth_error", Some("upstream_auth_failed"))
                    }
                    Failure::Client { .. } => ("invalid_request_error", None),
                    _ => ("upstream_error", Some(pe.failure.class())),
                };
                // A target the provider refused (its key, its model) is the
                // gateway's problem, not the client's: never answer the
                // client with an auth error or a 404. (The router moves on
                // from these unless a policy is written by hand to stop.)
                let status = match pe.failure {
                    Failure::TargetRefused { .. } => StatusCode::BAD_GATEWAY,
                    _ => status,
                };
                ErrorAnswer::new(status, kind, code, message)
            }
            RouteErrorKind::RateLimited { retry_after } => {
                let mut err = ErrorAnswer::new(
                    status,
                    "rate_limit_error",
                    Some("rate_limit_exceeded"),
                    message,
                );
                if let Some(ra) = retry_after {
                    let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
                    err.headers
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                    err.headers.insert(
                        RETRY_AFTER_MS.clone(),
                        HeaderValue::from(ra.as_millis() as u64),
                    );
                }
                err
            }
            RouteErrorKind::BudgetExhausted => {
                ErrorAnswer::new(status, "upstream_error", Some("budget_exhausted"), message)
            }
            // Every target refused the gateway's credentials: say so, so
            // the operator looks at keys rather than at the providers.
            RouteErrorKind::AllFailed
                if !e.attempts.is_empty()
                    && e.attempts.iter().all(|a| {
                        matches!(
                            a.error.failure,
                            Failure::TargetRefused { status: 401 | 403 }
                        )
                    }) =>
            {
                ErrorAnswer::new(
                    status,
                    "upstream_auth_error",
                    Some("upstream_auth_failed"),
                    message,
                )
            }
            RouteErrorKind::AllFailed | RouteErrorKind::NoCandidates => ErrorAnswer::new(
                status,
                "upstream_error",
                Some("all_attempts_failed"),
                message,
            ),
        };
        if matches!(
            err.status,
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
        ) {
            err.headers
                .insert(X_SHOULD_RETRY.clone(), HeaderValue::from_static("false"));
        }
        err
    }
}
