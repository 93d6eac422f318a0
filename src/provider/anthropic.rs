//! Placeholder being replaced by the Anthropic adapter.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::client::HttpClient;
use super::{AttemptRequest, BoxFuture, Failure, ProviderError, ProviderResponse};
use crate::Secret;

/// The Anthropic provider.
#[derive(Clone)]
pub struct Anthropic {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    key: Option<Secret>,
    client: HttpClient,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic").field("base", &self.inner.base).finish_non_exhaustive()
    }
}

impl Anthropic {
    /// A provider at `base_url`.
    pub fn new(base_url: &str, key: Option<Secret>, client: HttpClient) -> Self {
        Anthropic { inner: Arc::new(Inner { base: base_url.to_owned(), key, client }) }
    }
}

impl tower::Service<AttemptRequest> for Anthropic {
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
