use serde::{Deserialize, Serialize};

/// OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`.
///
/// Every error the gateway itself returns uses this shape, so OpenAI SDKs
/// surface the message instead of a parse failure.
///
/// ```
/// use modelux::api::ErrorBody;
/// let body = ErrorBody::new("no such route", "invalid_request_error", Some("model_not_found"));
/// let json = serde_json::to_string(&body).unwrap();
/// assert!(json.contains("\"code\":\"model_not_found\""));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
///
/// ```
/// use modelux::api::ErrorDetail;
/// let d: ErrorDetail = serde_json::from_str(
///     r#"{"message":"slow down","type":"rate_limit_error"}"#,
/// ).unwrap();
/// assert_eq!(d.kind, "rate_limit_error");
/// assert!(d.param.is_none() && d.code.is_none());
/// // `kind` is written as `type`.
/// assert!(serde_json::to_string(&d).unwrap().contains(r#""type":"rate_limit_error""#));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    /// A human-readable message.
    pub message: String,
    /// The error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending parameter, when there is one.
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code, e.g. `model_not_found`.
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    /// Builds an error body.
    ///
    /// ```
    /// use modelux::api::ErrorBody;
    /// let body = ErrorBody::new("slow down", "rate_limit_error", None);
    /// assert_eq!(body.error.code, None);
    /// assert_eq!(
    ///     serde_json::to_value(&body).unwrap(),
    ///     serde_json::json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": null}}),
    /// );
    /// ```
    pub fn new(message: impl Into<String>, kind: impl Into<String>, code: Option<&str>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: code.map(str::to_owned),
            },
        }
    }
}
