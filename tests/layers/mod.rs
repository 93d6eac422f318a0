//! Shared fixtures for the layer behaviour tests: a scripted leaf provider
//! service that records every attempt it receives (with the virtual time it
//! arrived), stream builders, and route/request builders.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use modelux::api::{ChatChunk, ChatCompletion, ChatRequest, Delta, Message, RequestParams, Role};
use modelux::provider::{
    AttemptRequest, Chunk, ChunkStream, Failure, ProviderError, ProviderResponse, Target,
};
use modelux::route::{Candidate, Route, RoutePolicy, RouteRequest, Strategy};
use tokio::time::Instant;
use tower::Service;

/// The model name every test target uses.
pub const MODEL: &str = "m";

/// What a scripted target does with one attempt.
#[derive(Clone, Debug)]
pub enum Act {
    /// Answers at once with a completion whose text is `answer from <provider>`.
    Ok,
    /// Answers at once with a completion carrying this text.
    Text(String),
    /// Waits, then does the inner act.
    After(Duration, Box<Act>),
    /// Fails at once.
    Fail(ProviderError),
    /// Never answers.
    Hang,
    /// Answers at once with a stream made of these steps.
    Stream(Vec<Step>),
}

/// One step of a scripted stream.
#[derive(Clone, Debug)]
pub enum Step {
    /// Yields this chunk.
    Chunk(Chunk),
    /// Sleeps (virtual time).
    Sleep(Duration),
    /// Yields this error and ends the stream.
    Err(ProviderError),
    /// Never yields again.
    Hang,
}

/// One attempt the leaf received.
#[derive(Clone, Debug)]
pub struct Call {
    /// The target's provider name.
    pub provider: String,
    /// The prefill the router sent, if any.
    pub prefill: Option<String>,
    /// The prompt text of the last message.
    pub prompt: String,
    /// When the attempt reached the leaf (tokio's clock: virtual when paused).
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    defaults: HashMap<String, Act>,
    queues: HashMap<String, VecDeque<Act>>,
    calls: Vec<Call>,
}

/// A per-provider script: a queue of one-shot acts, then a default act.
#[derive(Clone, Default)]
pub struct Script {
    inner: Arc<Mutex<Inner>>,
}

impl Script {
    pub fn new() -> Self {
        Script::default()
    }

    /// Sets what `provider` does once its queue is empty.
    pub fn on(&self, provider: &str, act: Act) -> &Self {
        self.lock().defaults.insert(provider.to_owned(), act);
        self
    }

    /// Queues a one-shot act for `provider`'s next attempt.
    pub fn then(&self, provider: &str, act: Act) -> &Self {
        self.lock()
            .queues
            .entry(provider.to_owned())
            .or_default()
            .push_back(act);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every attempt so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The providers attempted so far, in order.
    pub fn providers(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .map(|c| c.provider.clone())
            .collect()
    }

    /// Attempts `provider` received so far.
    pub fn count(&self, provider: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.provider == provider)
            .count()
    }

    /// Total attempts so far.
    pub fn total(&self) -> usize {
        self.lock().calls.len()
    }

    /// Forgets the recorded attempts (the script stays).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    fn take(&self, req: &AttemptRequest) -> Act {
        let provider = req.target.id.provider.to_string();
        let mut g = self.lock();
        g.calls.push(Call {
            provider: provider.clone(),
            prefill: req.prefill.as_deref().map(str::to_owned),
            prompt: req
                .chat
                .messages
                .last()
                .map(|m| m.text_content())
                .unwrap_or_default(),
            at: Instant::now(),
        });
        if let Some(act) = g.queues.get_mut(&provider).and_then(|q| q.pop_front()) {
            return act;
        }
        match g.defaults.get(&provider) {
            Some(act) => act.clone(),
            None => panic!("unscripted attempt on provider {provider}"),
        }
    }

    /// The leaf provider service: `Service<AttemptRequest>` driven by this script.
    pub fn leaf(
        &self,
    ) -> impl Service<
        AttemptRequest,
        Response = ProviderResponse,
        Error = ProviderError,
        Future = BoxFuture<'static, Result<ProviderResponse, ProviderError>>,
    > + Clone
           + Send
           + 'static {
        let script = self.clone();
        tower::service_fn(move |req: AttemptRequest| {
            let act = script.take(&req);
            run(act, req.target.id.provider.to_string())
        })
    }
}

fn run(act: Act, provider: String) -> BoxFuture<'static, Result<ProviderResponse, ProviderError>> {
    Box::pin(async move {
        match act {
            Act::Ok => Ok(complete(&format!("answer from {provider}"))),
            Act::Text(t) => Ok(complete(&t)),
            Act::After(d, inner) => {
                tokio::time::sleep(d).await;
                run(*inner, provider).await
            }
            Act::Fail(e) => Err(e),
            Act::Hang => std::future::pending().await,
            Act::Stream(steps) => Ok(ProviderResponse::Stream(stream_of(steps))),
        }
    })
}

/// A completion answer.
pub fn complete(text: &str) -> ProviderResponse {
    ProviderResponse::Complete(ChatCompletion::text("cmpl", MODEL, text, "stop").into())
}

/// A chunk stream that plays `steps`.
pub fn stream_of(steps: Vec<Step>) -> ChunkStream {
    Box::pin(async_stream::stream! {
        for step in steps {
            match step {
                Step::Chunk(c) => yield Ok(c),
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Err(e) => {
                    yield Err(e);
                    return;
                }
                Step::Hang => std::future::pending::<()>().await,
            }
        }
    })
}

/// A role-only first chunk (`delta.role = "assistant"`, no content).
pub fn role(id: &str) -> Step {
    Step::Chunk(
        ChatChunk::with_delta(
            id,
            MODEL,
            0,
            Delta {
                role: Some("assistant".into()),
                ..Delta::default()
            },
        )
        .into(),
    )
}

/// A content chunk.
pub fn text(id: &str, t: &str) -> Step {
    Step::Chunk(ChatChunk::content(id, MODEL, 0, t).into())
}

/// The final chunk with `finish_reason = "stop"`.
pub fn finish(id: &str) -> Step {
    Step::Chunk(ChatChunk::finish(id, MODEL, 0, "stop").into())
}

/// A sleep inside a stream.
pub fn sleep(ms: u64) -> Step {
    Step::Sleep(Duration::from_millis(ms))
}

/// An in-stream error.
pub fn fail_in_stream(f: Failure) -> Step {
    Step::Err(err(f))
}

/// A provider error with a neutral message.
pub fn err(f: Failure) -> ProviderError {
    ProviderError::new(f, "scripted failure")
}

/// A 503.
pub fn e503() -> ProviderError {
    err(Failure::Server { status: 503 })
}

/// A 429 with an optional `Retry-After`.
pub fn e429(retry_after: Option<Duration>) -> ProviderError {
    err(Failure::RateLimited).with_retry_after(retry_after)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A target without prefill.
pub fn target(provider: &str) -> Arc<Target> {
    Arc::new(Target::new(provider, MODEL))
}

/// A candidate without prefill and with the given attempt timeout.
pub fn cand(provider: &str, timeout: Duration) -> Candidate {
    Candidate::new(target(provider), timeout)
}

/// A candidate whose model accepts a prefill.
pub fn prefill_cand(provider: &str, timeout: Duration) -> Candidate {
    let mut t = Target::new(provider, MODEL);
    t.prefill = true;
    Candidate::new(Arc::new(t), timeout)
}

/// A fallback route with the default policy.
pub fn route(cands: Vec<Candidate>) -> Arc<Route> {
    Arc::new(Route::fallback("r", cands))
}

/// A route with an edited policy.
pub fn route_with(cands: Vec<Candidate>, edit: impl FnOnce(&mut RoutePolicy)) -> Arc<Route> {
    let mut r = Route::fallback("r", cands);
    edit(&mut r.policy);
    Arc::new(r)
}

/// A route with the given strategy and default policy.
pub fn route_strategy(cands: Vec<Candidate>, strategy: Strategy) -> Arc<Route> {
    let mut r = Route::fallback("r", cands);
    r.strategy = strategy;
    Arc::new(r)
}

/// A chat request with one user message.
pub fn chat(prompt: &str, stream: bool) -> ChatRequest {
    ChatRequest {
        model: "r".into(),
        messages: vec![Message::text(Role::User, prompt)],
        stream: stream.then_some(true),
        stream_options: None,
        params: RequestParams::default(),
    }
}

/// A request for `route`.
pub fn req(route: &Arc<Route>, stream: bool) -> RouteRequest {
    RouteRequest::new(chat("hello there", stream), route.clone())
}

/// A request for `route` with a fixed request id.
pub fn req_id(route: &Arc<Route>, stream: bool, id: &str) -> RouteRequest {
    let mut r = req(route, stream);
    r.ctx.request_id = id.into();
    r
}

/// Awaits `f`, failing the test if it has not finished within an hour of
/// virtual time (so a missing timeout fails fast instead of hanging).
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(3600), f).await {
        Ok(out) => out,
        Err(_) => panic!("did not finish within an hour of virtual time"),
    }
}

/// Every item of a streamed answer. Panics on a complete answer.
pub async fn collect(body: ProviderResponse) -> Vec<Result<Chunk, ProviderError>> {
    match body {
        ProviderResponse::Stream(s) => within(s.collect()).await,
        ProviderResponse::Complete(c) => panic!("expected a stream, got {c:?}"),
    }
}

/// The text of a complete answer. Panics on a stream.
pub fn completion_text(body: &ProviderResponse) -> String {
    match body {
        ProviderResponse::Complete(c) => c.to_chat_completion().expect("a completion").choices[0]
            .message
            .content
            .clone()
            .unwrap_or_default(),
        ProviderResponse::Stream(_) => panic!("expected a complete answer, got a stream"),
    }
}

/// The concatenated text of the `Ok` items of a stream.
pub fn stream_text(items: &[Result<Chunk, ProviderError>]) -> String {
    items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(|c| c.text())
        .collect()
}

/// What a test's `tracing` subscriber wrote, as text.
#[derive(Clone, Default)]
pub struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    /// A plain-text fmt subscriber filtered by `filter` (an `EnvFilter`
    /// directive), and the buffer it writes into.
    pub fn subscriber(filter: &str) -> (LogBuf, impl tracing::Subscriber + Send + Sync) {
        let buf = LogBuf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        (buf, subscriber)
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
