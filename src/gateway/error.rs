//! Errors in OpenAI's format, with the status a client and its SDK can act on.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::ErrorBody;
use crate::provider::Failure;
use crate::route::{RouteError, RouteErrorKind};

/// An error answer: status, OpenAI error body, extra headers.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// Extra headers (`retry-after`, `x-should-retry`).
    pub headers: HeaderMap,
}

impl ApiError {
    /// An error with a message, an OpenAI error type and an optional code.
    pub fn new(
        status: StatusCode,
        kind: &str,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            body: ErrorBody::new(message, kind, code),
            headers: HeaderMap::new(),
        }
    }

    /// 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }

    /// 404 `model_not_found`.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!(
                "The model or route '{}' does not exist",
                truncate(model, 100)
            ),
        )
    }

    /// Maps a routing failure: the provider's own status for a rejection,
    /// 429 (with the smallest `Retry-After`) when everything was rate
    /// limited, 504 when the budget ran out, 502 otherwise. The gateway
    /// already tried everything it could, so 502/504 tell SDKs not to retry.
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
                ApiError::new(status, kind, code, message)
            }
            RouteErrorKind::RateLimited { retry_after } => {
                let mut err = ApiError::new(
                    status,
                    "rate_limit_error",
                    Some("rate_limit_exceeded"),
                    message,
                );
                if let Some(ra) = retry_after {
                    let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
                    err.headers
                        .insert("retry-after", HeaderValue::from(secs.max(1)));
                    err.headers
                        .insert("retry-after-ms", HeaderValue::from(ra.as_millis() as u64));
                }
                err
            }
            RouteErrorKind::BudgetExhausted => {
                ApiError::new(status, "upstream_error", Some("budget_exhausted"), message)
            }
            // Every target refused the gateway's credentials: say so, so
            // the operator looks at keys rather than at the providers.
            RouteErrorKind::AllFailed
                if e.attempts.iter().all(|a| {
                    matches!(
                        a.error.failure,
                        Failure::TargetRefused { status: 401 | 403 }
                    )
                }) =>
            {
                ApiError::new(
                    status,
                    "upstream_auth_error",
                    Some("upstream_auth_failed"),
                    message,
                )
            }
            RouteErrorKind::AllFailed | RouteErrorKind::NoCandidates => ApiError::new(
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
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        resp.headers_mut().extend(self.headers);
        resp
    }
}

/// The first error of type `T` in the chain of `err` and its sources.
pub(crate) fn cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
