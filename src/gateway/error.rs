//! Errors in OpenAI's format, with the status a client and its SDK can act on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::edge::ErrorAnswer;

/// An error answer: status, OpenAI error body, extra headers. The
/// library's [`ErrorAnswer`], with the gateway's own helpers and axum's
/// `IntoResponse`.
///
/// ```
/// use axum::response::IntoResponse;
/// let resp = modelux::gateway::ApiError::model_not_found("gpt-9").into_response();
/// assert_eq!(resp.status(), 404);
/// assert_eq!(resp.headers()["content-type"], "application/json");
/// ```
pub type ApiError = ErrorAnswer;

impl ErrorAnswer {
    /// 400 `invalid_request_error`.
    ///
    /// ```
    /// let e = modelux::gateway::ApiError::bad_request("`messages` is empty");
    /// assert_eq!((e.status.as_u16(), e.body.error.kind.as_str()), (400, "invalid_request_error"));
    /// ```
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }

    /// 404 `model_not_found`.
    ///
    /// ```
    /// let e = modelux::gateway::ApiError::model_not_found("gpt-9");
    /// assert_eq!(e.status, 404);
    /// assert_eq!(e.body.error.code.as_deref(), Some("model_not_found"));
    /// ```
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

pub(crate) use crate::trace::truncate;
