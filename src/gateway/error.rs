//! Errors in OpenAI's format, with the status a client and its SDK can act on.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::ErrorBody;
use crate::edge::ErrorAnswer;
use crate::route::RouteError;

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

    /// Maps a routing failure (see [`ErrorAnswer::from_route`]).
    pub fn from_route(e: &RouteError) -> Self {
        let ErrorAnswer {
            status,
            headers,
            body,
        } = ErrorAnswer::from_route(e);
        ApiError {
            status,
            body,
            headers,
        }
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
