use tower::Layer;

use super::Fallback;

/// Wraps a provider service in a [`Fallback`] router.
///
/// ```
/// use modelux::fallback::FallbackLayer;
/// use modelux::provider::Providers;
/// let router = tower::ServiceBuilder::new()
///     .layer(FallbackLayer::new())
///     .service(Providers::default());
/// # let _ = router;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct FallbackLayer {
    _priv: (),
}

impl FallbackLayer {
    /// A fallback layer. The policy comes with each request's route.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// # use std::{sync::Arc, time::Duration};
    /// # use modelux::api::{ChatCompletion, ChatRequest};
    /// # use modelux::route::{Candidate, Route, RouteRequest};
    /// # let candidate = |p: &str| Candidate::new(Arc::new(Target::new(p, "m")), Duration::from_secs(1));
    /// # let route = Arc::new(Route::fallback("r", vec![candidate("a"), candidate("b")]));
    /// # let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
    /// use modelux::fallback::FallbackLayer;
    /// use modelux::provider::{AttemptRequest, Failure, ProviderError, ProviderResponse, Target};
    /// use tower::{service_fn, Layer, ServiceExt};
    /// // Provider `a` refuses its key; `b` answers.
    /// let leaf = service_fn(|req: AttemptRequest| async move {
    ///     match req.target.id.provider.as_ref() {
    ///         "a" => Err(ProviderError::new(Failure::TargetRefused { status: 401 }, "bad key")),
    ///         _ => Ok(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into())),
    ///     }
    /// });
    /// let resp = FallbackLayer::new().layer(leaf).oneshot(RouteRequest::new(chat, route)).await.unwrap();
    /// assert_eq!(resp.served_by.id.to_string(), "b/m");
    /// # });
    /// ```
    pub fn new() -> Self {
        FallbackLayer { _priv: () }
    }
}

impl<S> Layer<S> for FallbackLayer {
    type Service = Fallback<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::new(inner)
    }
}
