//! Placeholder being replaced by the Gemini adapter.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::client::HttpClient;
use super::{AttemptRequest, BoxFuture, Failure, ProviderError, ProviderResponse};
use crate::Secret;

/// The Gemini provider.
#[derive(Clone)]
pub struct Gemini {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    key: Option<Secret>,
    client: HttpClient,
}

impl std::fmt::Debug for Gemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemini").field("base", &self.inner.base).finish_non_exhaustive()
    }
}

impl Gemini {
    /// A provider at `base_url`.
    pub fn new(base_url: &str, key: Option<Secret>, client: HttpClient) -> Self {
        Gemini { inner: Arc::new(Inner { base: base_url.to_owned(), key, client }) }
    }
}

impl tower::Service<AttemptRequest> for Gemini {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = BoxFuture<Result<ProviderResponse, ProviderError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: AttemptRequest) -> Self::Future {
        let _ = (&self.inner.key, &self.inner.client);
        Box::pin(async { Err(ProviderError::new(Failure::Malformed, "not yet")) })
    }
}
