//! Per-request decision traces.
//!
//! When a request fails over three times at 2 am, the on-call engineer needs
//! to know what the router saw and decided without grepping logs: which
//! candidates it had and why they were ordered so, every attempt with its
//! outcome, every retry, backoff and budget decision, where the response was
//! committed and how its stream ended. The [`TraceHandle`] collects that as
//! the layers decide; the [`TraceLayer`] gives each request one, keeps
//! finished traces in a bounded [`TraceStore`], emits one structured
//! `tracing` event per request (target `modelux::request`; `info` when the
//! request succeeded, `warn` when it did not) and records the
//! request-level metrics (requests, duration, time to first token, tokens,
//! cost, active streams).
//!
//! A trace never holds prompt or completion text, and never a key: only
//! names, timings, statuses and the providers' error messages (truncated).

mod layer;
mod record;
mod store;

pub use layer::{TraceLayer, TraceSink, TraceSinkFn};
pub(crate) use record::{ms, push_small, CandidateNote, Finished, Reason};
pub use record::{
    AttemptTrace, CandidateTrace, Decision, Outcome, Trace, TraceHandle, MAX_ENTRIES,
};
pub use store::TraceStore;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::time::Instant;
use tower::Service;

use crate::api::Usage;
use crate::handles::Cached;
use crate::provider::{Chunk, ChunkStream, ProviderError, ProviderResponse, Target};
use crate::route::{Route, RouteError, RouteRequest, RouteResponse};
use layer::Sink;

/// The service [`TraceLayer`] produces.
///
/// ```
/// # tokio_test::block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::{ChatCompletion, ChatRequest};
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, ProviderError, ProviderResponse, Target};
/// use modelux::route::{Candidate, Route, RouteRequest};
/// use modelux::trace::{TraceLayer, TraceStore};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let leaf = service_fn(|_: AttemptRequest| async {
///     Ok::<_, ProviderError>(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
/// });
/// let store = TraceStore::new(16);
/// let traced = TraceLayer::new(store.clone()).layer(Fallback::new(leaf));
/// let route = Arc::new(Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("p", "m")), Duration::from_secs(1)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let mut req = RouteRequest::new(chat, route);
/// req.ctx.request_id = "req-1".into();
/// traced.oneshot(req).await.unwrap();
/// let trace = store.get("req-1").unwrap();
/// assert_eq!(trace.route, "r");
/// assert_eq!((trace.attempts[0].target.as_str(), trace.attempts[0].outcome), ("p/m", "ok"));
/// assert_eq!(trace.outcome.unwrap().status, 200);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Traced<S> {
    inner: S,
    store: TraceStore,
    sink: Option<Sink>,
}

impl<S> Traced<S> {
    fn new(inner: S, store: TraceStore, sink: Option<Sink>) -> Self {
        Traced { inner, store, sink }
    }
}

/// The future of [`Traced`].
///
/// ```
/// # tokio_test::block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::{ChatCompletion, ChatRequest};
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, ProviderError, ProviderResponse, Target};
/// use modelux::route::{Candidate, Route, RouteRequest};
/// use modelux::trace::{TraceLayer, TraceStore, TracedFuture};
/// use tower::{service_fn, Layer, Service, ServiceExt};
///
/// let leaf = service_fn(|_: AttemptRequest| async {
///     Ok::<_, ProviderError>(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
/// });
/// let mut traced = TraceLayer::new(TraceStore::new(16)).layer(Fallback::new(leaf));
/// let route = Arc::new(Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("p", "m")), Duration::from_secs(1)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let fut: TracedFuture = traced.ready().await.unwrap().call(RouteRequest::new(chat, route));
/// assert_eq!(fut.await.unwrap().served_by.id.to_string(), "p/m");
/// # });
/// ```
pub type TracedFuture = Pin<Box<dyn Future<Output = Result<RouteResponse, RouteError>> + Send>>;

impl<S> Service<RouteRequest> for Traced<S>
where
    S: Service<RouteRequest, Response = RouteResponse, Error = RouteError>,
    S::Future: Send + 'static,
{
    type Response = RouteResponse;
    type Error = RouteError;
    type Future = TracedFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RouteRequest) -> Self::Future {
        if req.ctx.request_id.is_empty() {
            req.ctx.request_id = new_request_id().into();
        }
        let trace = TraceHandle::new(&req.ctx.request_id);
        let stream = req.chat.is_stream();
        trace.with(|t| {
            t.route = req.route.name.to_string();
            t.config_version = req.ctx.config_version;
            t.client = req.ctx.client.as_deref().map(str::to_owned);
            t.stream = stream;
            t.max_tokens = req.chat.max_output_tokens();
        });
        req.ctx.trace = trace.clone();
        let finisher = Finisher {
            trace,
            store: self.store.clone(),
            sink: self.sink.clone(),
            route: req.route.clone(),
            started: Instant::now(),
            done: false,
            stream,
            streaming: false,
            served_by: None,
            usage: None,
            chat: req.chat.clone(),
            completion_chars: 0,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut finisher = finisher;
            match fut.await {
                Ok(mut resp) => {
                    finisher.served_by = Some(resp.served_by.clone());
                    match resp.body {
                        ProviderResponse::Complete(c) => {
                            finisher.usage = c.usage();
                            finisher.finish_ok(None);
                            resp.body = ProviderResponse::Complete(c);
                        }
                        ProviderResponse::Stream(s) => {
                            active_streams(1.0);
                            finisher.streaming = true;
                            let committed = finisher.trace.elapsed_ms();
                            let route = &finisher.route;
                            route.handles.ttft.with(
                                &[&route.name],
                                || metrics::histogram!("modelux_time_to_first_token_seconds", "route" => route.name.clone()),
                                |h| h.record(committed as f64 / 1000.0),
                            );
                            resp.body = ProviderResponse::Stream(Box::pin(TracedStream {
                                inner: s,
                                finisher,
                            }));
                        }
                    }
                    Ok(resp)
                }
                Err(e) => {
                    finisher.finish_err(&e);
                    Err(e)
                }
            }
        })
    }
}

/// Moves `modelux_active_streams` by `delta`.
fn active_streams(delta: f64) {
    static GAUGE: Cached<metrics::Gauge> = Cached::new();
    GAUGE.with(
        &[],
        || metrics::gauge!("modelux_active_streams"),
        |g| g.increment(delta),
    );
}

/// A request id: 16 random hex digits.
///
/// ```
/// use modelux::trace::new_request_id;
/// let id = new_request_id();
/// assert_eq!(id.len(), 16);
/// assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
/// assert_ne!(id, new_request_id());
/// ```
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Finishes a trace exactly once: stores it, emits the per-request event and
/// the request metrics. Dropped unfinished, it records a client that went away.
struct Finisher {
    trace: TraceHandle,
    store: TraceStore,
    sink: Option<Sink>,
    route: Arc<Route>,
    started: Instant,
    done: bool,
    stream: bool,
    /// A committed stream is being served (counted in `modelux_active_streams`).
    streaming: bool,
    served_by: Option<Arc<Target>>,
    usage: Option<Usage>,
    /// The request, whose characters estimate the prompt tokens of a
    /// stream that ends without usage.
    chat: Arc<crate::api::ChatRequest>,
    /// Characters of the text streamed so far.
    completion_chars: u64,
}

impl Finisher {
    fn finish_ok(&mut self, stream_end: Option<&'static str>) {
        let served = self.served_by.as_ref().map(|t| t.id.to_string());
        self.finish(Outcome {
            status: 200,
            class: "ok".into(),
            served_by: served,
            stream_end,
            message: None,
        });
    }

    fn finish_err(&mut self, e: &RouteError) {
        self.finish(Outcome {
            status: e.status(),
            class: e.class().into(),
            served_by: None,
            stream_end: None,
            message: Some(e.to_string()),
        });
    }

    fn finish_stream_err(&mut self, e: &ProviderError) {
        let served = self.served_by.as_ref().map(|t| t.id.to_string());
        self.finish(Outcome {
            status: 200,
            class: e.failure.class().into(),
            served_by: served,
            stream_end: Some("error"),
            message: Some(e.to_string()),
        });
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.started.elapsed();
        // A stream that ended without usage (cut, its client gone, or a
        // provider that reports none) was still billed: estimated at ≈ 4
        // characters a token rather than counted as nothing.
        let estimated = self.usage.is_none() && self.streaming;
        if estimated {
            self.usage = Some(Usage::new(
                (self.chat.prompt_len() as u64).div_ceil(4),
                self.completion_chars.div_ceil(4),
            ));
        }
        let usage = self.usage;
        let status = outcome.status;
        let ok = outcome.class == "ok";
        // The usage a stream reports at its end is that of the target
        // serving it then: the committed one, or the one a continuation
        // moved it to.
        let mut continued = None;
        let mut cost = None;
        // For the traffic record of a request without usage (a failure):
        // its tokens are estimated from the prompt's size. Counted only
        // then, since it serialises the declared tools.
        let prompt_chars =
            (usage.is_none() && self.sink.is_some()).then(|| self.chat.prompt_len() as u64);
        self.trace.with_continued(|t, c| {
            continued = c.cloned();
            t.prompt_chars = prompt_chars;
            let billed = c.map(|c| &**c).or(self.served_by.as_deref());
            cost = cost_of(billed, usage.as_ref());
            t.usage = usage;
            t.usage_estimated = estimated;
            t.cost_usd = cost;
        });
        let billed = continued.as_deref().or(self.served_by.as_deref());
        // (A disabled trace never ran the closure.)
        let cost = cost.or_else(|| cost_of(billed, usage.as_ref()));
        self.record_metrics(&outcome.class, elapsed.as_secs_f64(), billed, cost);
        self.trace.finish(outcome);
        // The request is over: the trace moves to the ring instead of being
        // copied (nothing reads it through the handle after this).
        let Some(mut finished) = self.trace.take() else {
            return;
        };
        let t = &finished.trace;
        let o = t.outcome.as_ref();
        // A failure's line names its cause, the last failed attempt's own
        // words (scrubbed of credentials by the adapters, cut short): an
        // operator reading the log sees "refused the gateway's credentials"
        // or "the egress proxy refused the tunnel" without fetching the trace.
        // A stream that broke after its commit failed after its attempts
        // did: its own message (the break) is the cause, not an earlier
        // target's error.
        let cause = if ok {
            None
        } else if o.is_some_and(|o| o.stream_end == Some("error")) {
            o.and_then(|o| o.message.as_deref())
                .map(|m| truncate(m, MAX_CAUSE_BYTES))
        } else {
            t.attempts
                .iter()
                .rev()
                .find_map(|a| a.message.as_deref())
                .map(|m| truncate(m, MAX_CAUSE_BYTES))
        };
        // One line per request: `info` when it succeeded, `warn` when the
        // client got an error, a broken stream or went away, so `RUST_LOG=warn`
        // keeps the failures and drops the per-request cost of the rest.
        // Empty fields are left out.
        macro_rules! request_event {
            ($level:expr) => {
                tracing::event!(
                    target: "modelux::request",
                    $level,
                    request_id = %t.request_id,
                    route = %t.route,
                    config_version = t.config_version,
                    client = t.client.as_deref(),
                    status,
                    outcome = o.map(|o| tracing::field::display(&o.class)),
                    stream_end = o.and_then(|o| o.stream_end),
                    served_by = o.and_then(|o| o.served_by.as_deref()),
                    // A stream continued elsewhere after a break: billed
                    // (and priced) at this target from then on.
                    continued_by = continued.as_ref().map(|t| tracing::field::display(&t.id)),
                    attempts = t.attempts.len(),
                    duration_ms = elapsed.as_millis() as u64,
                    prompt_tokens = usage.map(|u| u.prompt_tokens),
                    completion_tokens = usage.map(|u| u.completion_tokens),
                    cause,
                    "request finished"
                )
            };
        }
        if ok {
            request_event!(tracing::Level::INFO);
        } else {
            request_event!(tracing::Level::WARN);
        }
        if let Some(sink) = &self.sink {
            if sink.candidates {
                finished.render();
            }
            (sink.hook.0)(&finished.trace);
        }
        self.store.insert_finished(finished);
    }

    /// The request metrics: the hot ones through handles cached on the route
    /// and the target, the rare ones (errors) through the macros.
    fn record_metrics(&self, class: &str, secs: f64, billed: Option<&Target>, cost: Option<f64>) {
        let route = &self.route;
        let name = &route.name;
        if class == "ok" {
            route.handles.requests_ok.with(
                &[name],
                || metrics::counter!("modelux_requests_total", "route" => name.clone(), "outcome" => "ok"),
                |c| c.increment(1),
            );
        } else {
            metrics::counter!("modelux_requests_total", "route" => name.clone(), "outcome" => class.to_owned())
                .increment(1);
        }
        route.handles.duration.with(
            &[name],
            || metrics::histogram!("modelux_request_duration_seconds", "route" => name.clone()),
            |h| h.record(secs),
        );
        if let (Some(t), Some(u)) = (billed, &self.usage) {
            let (p, m) = (&t.id.provider, &t.id.model);
            let h = &t.handles;
            h.prompt_tokens.with(
                &[p, m],
                || metrics::counter!("modelux_tokens_total", "provider" => p.clone(), "model" => m.clone(), "kind" => "prompt"),
                |c| c.increment(u.prompt_tokens),
            );
            h.completion_tokens.with(
                &[p, m],
                || metrics::counter!("modelux_tokens_total", "provider" => p.clone(), "model" => m.clone(), "kind" => "completion"),
                |c| c.increment(u.completion_tokens),
            );
            let cached = u.cached_tokens();
            if cached > 0 {
                h.cached_tokens.with(
                    &[p, m],
                    || metrics::counter!("modelux_tokens_total", "provider" => p.clone(), "model" => m.clone(), "kind" => "cached_prompt"),
                    |c| c.increment(cached),
                );
            }
            if let Some(c) = cost {
                h.cost.with(
                    &[p, m],
                    || metrics::counter!("modelux_cost_usd_micros_total", "provider" => p.clone(), "model" => m.clone()),
                    |k| k.increment((c * 1e6).round() as u64),
                );
            }
        }
        if self.streaming {
            active_streams(-1.0);
        }
    }
}

/// The most of a failure's cause the request line carries.
const MAX_CAUSE_BYTES: usize = 300;

/// `s`, cut to at most `max` bytes at a character boundary (the gateway's
/// error messages use it too).
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

/// What `usage` costs at `target`'s configured price, if it has one.
fn cost_of(target: Option<&Target>, usage: Option<&Usage>) -> Option<f64> {
    match (target, usage) {
        (Some(t), Some(u)) => t.price.map(|p| p.cost(u)),
        _ => None,
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        if !self.done {
            let served = self.served_by.as_ref().map(|t| t.id.to_string());
            self.finish(Outcome {
                status: 499,
                class: "client_disconnected".into(),
                served_by: served,
                stream_end: self.stream.then_some("client_disconnected"),
                message: None,
            });
        }
    }
}

/// Watches a committed stream: captures usage, and finishes the trace when
/// the stream ends, fails, or is dropped by a client that went away.
struct TracedStream {
    inner: ChunkStream,
    finisher: Finisher,
}

impl Stream for TracedStream {
    type Item = Result<Chunk, ProviderError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                self.finisher.completion_chars += chunk.output_len() as u64;
                if let Some(u) = chunk.usage() {
                    self.finisher.usage = Some(u);
                }
            }
            Some(Err(e)) => self.finisher.finish_stream_err(e),
            None => self.finisher.finish_ok(Some("done")),
        }
        Poll::Ready(item)
    }
}
