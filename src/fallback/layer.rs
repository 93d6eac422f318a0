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
