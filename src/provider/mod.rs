//! Provider adapters: one module per wire format, each a
//! `tower::Service<AttemptRequest>` that speaks OpenAI's format to the layers
//! above and its provider's own format on the wire.
//!
//! An adapter does three things and nothing else: translate the request,
//! translate the answer (a whole completion, or a stream of chunks forwarded
//! as each one arrives), and classify every failure into a [`Failure`]. All
//! routing decisions live in the layers; an adapter never retries.

mod answer;
mod anthropic;
mod client;
mod error;
mod gemini;
mod http2;
mod openai;
mod translated;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::{Deserialize, Serialize};

pub use answer::{Chunk, Completion, RawJsonError};
pub use anthropic::Anthropic;
pub use client::{
    http_client, HttpClient, ResponseFuture, UpstreamBody, CONNECT_TIMEOUT,
    DEFAULT_HTTP2_MAX_STREAMS, MAX_RESPONSE_BYTES,
};
pub use error::{retry_after, Failure, ProviderError};
pub use gemini::Gemini;
pub use http2::MAX_CONNECTIONS as MAX_HTTP2_CONNECTIONS;
pub use openai::OpenAi;

use crate::api::ChatRequest;

/// A boxed stream of OpenAI chunks, as every adapter returns for streams.
///
/// Adapters end it with `None` after the chunk that carries `finish_reason`
/// (and a usage-only chunk when the provider reported usage). A stream that
/// breaks before that yields an `Err` and then ends; it never ends silently as
/// if it had succeeded.
///
/// An OpenAI-kind provider's chunks keep its bytes, which the gateway sends
/// on unchanged (see [`Chunk`]).
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// A boxed future, as adapters return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions (OpenAI, vLLM, Ollama, other gateways).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
}

impl ProviderKind {
    /// The kind's name as it appears in config and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

/// A (provider, model) pair: the unit health, latency and traces are kept by.
///
/// ```
/// use modelux::provider::TargetId;
/// let t = TargetId::new("openai", "gpt-4o-mini");
/// assert_eq!(t.to_string(), "openai/gpt-4o-mini");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId {
    /// The provider's name in config.
    pub provider: Arc<str>,
    /// The model's name in config.
    pub model: Arc<str>,
}

impl TargetId {
    /// A target id.
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        TargetId {
            provider: provider.into(),
            model: model.into(),
        }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Price {
    /// Input (prompt) tokens.
    #[serde(default)]
    pub input_per_mtok: f64,
    /// Output (completion) tokens.
    #[serde(default)]
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of a usage in USD.
    pub fn cost(&self, usage: &crate::api::Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_mtok
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// Everything the layers and adapters know about one model on one provider.
///
/// ```
/// use modelux::provider::Target;
/// let t = Target::new("openai", "fast");
/// assert_eq!(&*t.upstream_model, "fast");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Provider and model names.
    pub id: TargetId,
    /// The model name sent to the provider.
    pub upstream_model: Arc<str>,
    /// Whether the model continues a trailing assistant message (prefill).
    pub prefill: bool,
    /// Prices, when configured.
    pub price: Option<Price>,
    /// This target's metric handles, registered on first use.
    pub(crate) handles: crate::handles::TargetHandles,
}

impl Target {
    /// A target whose upstream model is its config name, without prefill or price.
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        let model: Arc<str> = model.into();
        Target {
            id: TargetId::new(provider, model.clone()),
            upstream_model: model,
            prefill: false,
            price: None,
            handles: Default::default(),
        }
    }
}

/// One attempt: a request for one target.
#[derive(Debug, Clone)]
pub struct AttemptRequest {
    /// Where to send it.
    pub target: Arc<Target>,
    /// The client's request, shared by every attempt.
    pub chat: Arc<ChatRequest>,
    /// Text already delivered to the client, sent as a trailing assistant
    /// message for the model to continue (mid-stream continuation).
    pub prefill: Option<Arc<str>>,
}

impl AttemptRequest {
    /// A plain attempt with no prefill.
    pub fn new(target: Arc<Target>, chat: Arc<ChatRequest>) -> Self {
        AttemptRequest {
            target,
            chat,
            prefill: None,
        }
    }
}

/// An adapter's answer.
pub enum ProviderResponse {
    /// A whole completion (the provider's body for OpenAI-kind providers,
    /// see [`Completion`]).
    Complete(Completion),
    /// A stream of chunks, forwarded as they arrive.
    Stream(ChunkStream),
}

impl fmt::Debug for ProviderResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderResponse::Complete(c) => f.debug_tuple("Complete").field(c).finish(),
            ProviderResponse::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// A configured provider of any kind.
#[derive(Clone, Debug)]
pub enum Provider {
    /// OpenAI-compatible.
    OpenAi(OpenAi),
    /// Anthropic Messages.
    Anthropic(Anthropic),
    /// Google Gemini.
    Gemini(Gemini),
}

impl Provider {
    /// Builds a provider of `kind`.
    pub fn new(
        kind: ProviderKind,
        base_url: &str,
        api_key: Option<crate::Secret>,
        client: HttpClient,
    ) -> Self {
        match kind {
            ProviderKind::OpenAi => Provider::OpenAi(OpenAi::new(base_url, api_key, client)),
            ProviderKind::Anthropic => {
                Provider::Anthropic(Anthropic::new(base_url, api_key, client))
            }
            ProviderKind::Gemini => Provider::Gemini(Gemini::new(base_url, api_key, client)),
        }
    }
}

impl tower::Service<AttemptRequest> for Provider {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = BoxFuture<Result<ProviderResponse, ProviderError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pooled client has no readiness of its own: it queues on the pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AttemptRequest) -> Self::Future {
        match self {
            Provider::OpenAi(p) => p.call(req),
            Provider::Anthropic(p) => p.call(req),
            Provider::Gemini(p) => p.call(req),
        }
    }
}

/// The leaf service of the stack: sends each attempt to the provider its
/// target names.
///
/// ```
/// use modelux::provider::{http_client, Provider, ProviderKind, Providers};
/// let client = http_client();
/// let providers = Providers::new([(
///     "local".into(),
///     Provider::new(ProviderKind::OpenAi, "http://127.0.0.1:9/v1", None, client),
/// )]);
/// assert!(providers.get("local").is_some());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Providers {
    map: Arc<HashMap<Arc<str>, Provider>>,
}

impl Providers {
    /// A set of named providers.
    pub fn new(providers: impl IntoIterator<Item = (Arc<str>, Provider)>) -> Self {
        Providers {
            map: Arc::new(providers.into_iter().collect()),
        }
    }

    /// The provider named `name`.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.map.get(name)
    }
}

impl tower::Service<AttemptRequest> for Providers {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = BoxFuture<Result<ProviderResponse, ProviderError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AttemptRequest) -> Self::Future {
        match self.map.get(&req.target.id.provider) {
            Some(p) => p.clone().call(req),
            None => {
                let msg = format!("no provider named '{}'", req.target.id.provider);
                Box::pin(
                    async move { Err(ProviderError::new(Failure::Client { status: 404 }, msg)) },
                )
            }
        }
    }
}
