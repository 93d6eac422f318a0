use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use tower::ServiceExt;

use super::body::{self, BodyBytes, BodyError};
use super::error::{cause, ApiError};
use super::stream_watch::{ClientStalled, CutHook, StreamWatch, WatchedStream};
use super::State;
use crate::api::{ChatChunk, ChatRequest, Usage};
use crate::provider::{Chunk, ChunkStream, ProviderError, ProviderResponse};
use crate::route::{RouteRequest, RouteResponse};
use crate::sse::{encode_done, encode_json};
use crate::trace::new_request_id;

type St = AxState<Arc<State>>;

// The gateway's own headers, named once: a `&str` name is parsed and checked
// again on every insert (about a thousand instructions each, six per answer).
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_MODELUX_REQUEST_ID: HeaderName = HeaderName::from_static("x-modelux-request-id");
static X_MODELUX_CONFIG_VERSION: HeaderName = HeaderName::from_static("x-modelux-config-version");
static X_MODELUX_ROUTE: HeaderName = HeaderName::from_static("x-modelux-route");
static X_MODELUX_MODEL: HeaderName = HeaderName::from_static("x-modelux-model");
static X_MODELUX_PROVIDER: HeaderName = HeaderName::from_static("x-modelux-provider");
static X_MODELUX_ATTEMPTS: HeaderName = HeaderName::from_static("x-modelux-attempts");
static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// A chat request admitted under `server.max_in_flight` once its body was
/// read and parsed, counted (in the gateway's count and in
/// `modelux_in_flight_requests`) for as long as it lives: to the end of the
/// handler for a complete answer, and with a stream's upstream (see
/// [`StreamWatch`]) for a stream, so until the provider's stream ended, was
/// cut by the watch, or its body was dropped.
/// It also holds the request's body bytes (see [`BodyBytes`]) for as long.
pub(crate) struct Admitted {
    count: Arc<AtomicUsize>,
    _body: Option<BodyBytes>,
}

impl Admitted {
    /// Counts one more request, unless `max` are in flight already.
    pub(crate) fn try_new(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        if count.fetch_add(1, Ordering::Relaxed) >= max {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Self::gauge(1.0);
        Some(Admitted {
            count: count.clone(),
            _body: None,
        })
    }

    /// The slot, holding the request's body bytes until it is dropped.
    fn holding(mut self, body: BodyBytes) -> Self {
        self._body = Some(body);
        self
    }

    /// Moves the gauge through a handle registered once per recorder.
    fn gauge(delta: f64) {
        static GAUGE: crate::handles::Cached<metrics::Gauge> = crate::handles::Cached::new();
        GAUGE.with(
            &[],
            || metrics::gauge!("modelux_in_flight_requests"),
            |g| g.increment(delta),
        );
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        Self::gauge(-1.0);
    }
}

/// At most one "in-flight limit reached" warning per this long.
const SHED_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Which of the gateway's limits a request met.
#[derive(Clone, Copy)]
enum Limit {
    /// `server.max_in_flight` requests.
    InFlight(usize),
    /// `server.max_body_bytes_in_flight` bytes of request bodies.
    BodyBytes(usize),
}

/// The answer to a request over `server.max_in_flight` or
/// `server.max_body_bytes_in_flight`: 503 with `Retry-After`, which
/// OpenAI's and Anthropic's SDKs retry after a pause. Shedding at once,
/// rather than queueing, keeps a burst from turning into memory growth and
/// answers that arrive after the client gave up.
fn shed(state: &State, limit: Limit) -> ApiError {
    static SHED: crate::handles::Cached<metrics::Counter> = crate::handles::Cached::new();
    SHED.with(
        &[],
        || metrics::counter!("modelux_requests_shed_total"),
        |c| c.increment(1),
    );
    {
        let mut warned = state.shed_warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.map_or(true, |at| at.elapsed() >= SHED_WARN_EVERY) {
            match limit {
                Limit::InFlight(max) => tracing::warn!(
                    max_in_flight = max,
                    "in-flight limit reached: answering 503 until requests finish (server.max_in_flight)"
                ),
                Limit::BodyBytes(max) => tracing::warn!(
                    max_body_bytes_in_flight = max,
                    "request body limit reached: answering 503 until requests finish (server.max_body_bytes_in_flight)"
                ),
            }
            *warned = Some(tokio::time::Instant::now());
        }
    }
    let message = match limit {
        Limit::InFlight(max) => {
            format!("The gateway is at its limit of requests in flight ({max}); retry shortly")
        }
        Limit::BodyBytes(max) => format!(
            "The gateway is at its limit of request body bytes in flight ({max}); retry shortly"
        ),
    };
    let mut err = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        Some("gateway_overloaded"),
        message,
    );
    err.headers
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    err.headers
        .insert("x-should-retry", HeaderValue::from_static("true"));
    err
}

/// `x-request-id` when it is a sane id (visible ASCII, at most 128 bytes).
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Counts and logs a chat request refused before it was routed (no client
/// key, a body that is too large, late or not a chat request, an unknown
/// model, the in-flight limit): no trace exists for it, and without this an
/// operator would not see a client sending only bad requests. The reason is
/// one of a fixed set, from the status; the message, which may quote the
/// client's input, is not logged.
fn refused(id: &str, e: &ApiError) {
    let reason = match e.status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::NOT_FOUND => "unknown_model",
        StatusCode::REQUEST_TIMEOUT => "body_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::SERVICE_UNAVAILABLE => "overloaded",
        _ => "other",
    };
    metrics::counter!("modelux_requests_refused_total", "reason" => reason).increment(1);
    macro_rules! refusal {
        ($level:expr) => {
            tracing::event!(
                target: "modelux::request",
                $level,
                request_id = %id,
                status = e.status.as_u16(),
                reason,
                "request refused before routing"
            )
        };
    }
    // Shed requests come in floods, when the gateway is busiest: one line
    // each would add to the load (the in-flight limit warns once per 10 s).
    if e.status == StatusCode::SERVICE_UNAVAILABLE {
        refusal!(tracing::Level::DEBUG);
    } else {
        refusal!(tracing::Level::INFO);
    }
}

/// 413 for a body over `server.max_body_bytes`.
fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        Some("request_too_large"),
        format!("The request body is larger than {max} bytes"),
    )
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(AxState(state): St, req: Request) -> Response {
    // The request's own header map, not a copy (axum's `HeaderMap`
    // extractor clones it).
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let live = state.live.load_full();
    let id = request_id(&headers);
    let max = live.config.server.max_in_flight;
    // Full already: shed before reading a body that could not be served.
    // The slot itself is taken once the body is in (see `handle`).
    let result = if state.in_flight.load(Ordering::Relaxed) >= max {
        Err(shed(&state, Limit::InFlight(max)))
    } else {
        handle(&state, &live, &id, &headers, body).await
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            refused(&id, &e);
            e.into_response()
        }
    };
    let h = resp.headers_mut();
    let id = header_value(&id);
    // Also as `x-request-id`, where the OpenAI SDKs read a request's id
    // (`_request_id`) for support tickets and logs.
    h.insert(X_REQUEST_ID.clone(), id.clone());
    h.insert(X_MODELUX_REQUEST_ID.clone(), id);
    h.insert(
        X_MODELUX_CONFIG_VERSION.clone(),
        live.version_header.clone(),
    );
    resp
}

/// `n` as a header value; the counts an answer reports (attempts) are
/// small, and those need no allocation.
fn count_header(n: u64) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match usize::try_from(n).ok().and_then(|i| SMALL.get(i)) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// An answer's header map with room for the gateway's own headers, so it
/// is allocated once instead of grown while they are inserted.
fn with_header_room(mut resp: Response) -> Response {
    *resp.headers_mut() = HeaderMap::with_capacity(10);
    resp
}

async fn handle(
    state: &State,
    live: &super::Live,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = authenticate(live, headers)?;
    let max_body = live.config.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        // Refused before a byte is read (nor `100 Continue` sent).
        return Err(too_large(max_body));
    }
    let max_total = live.config.server.max_body_bytes_in_flight;
    let mut held = BodyBytes::new(&state.body_bytes);
    let declared = declared.map(|n| n as usize);
    let chat: ChatRequest = {
        let bytes = body::read(body, declared, (max_body, max_total), &mut held)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => too_large(max_body),
                BodyError::OverBudget => shed(state, Limit::BodyBytes(max_total)),
                BodyError::Read(e) if cause::<super::server::BodyReadTimedOut>(&e).is_some() => {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "invalid_request_error",
                        Some("request_timeout"),
                        format!(
                            "The request body stopped arriving: nothing was received for {} s",
                            super::BODY_READ_TIMEOUT.as_secs()
                        ),
                    )
                }
                BodyError::Read(_) => ApiError::bad_request("Could not read the request body"),
            })?;
        // The raw bytes go once parsed: the request holds the parsed form
        // (and the upstream body) for as long as its answer lasts.
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?
    };
    if chat.messages.is_empty() {
        return Err(ApiError::bad_request(
            "'messages' must contain at least one message",
        ));
    }
    // OpenAI refuses a tool result that names no call; Anthropic and Gemini
    // cannot pair it with one, and Anthropic's translation would fold it
    // into the user's text.
    if let Some(i) = chat
        .messages
        .iter()
        .position(|m| m.role == crate::api::Role::Tool && m.tool_call_id.is_none())
    {
        return Err(ApiError::bad_request(format!(
            "'messages[{i}].tool_call_id' is required for a message with role 'tool'"
        )));
    }
    // OpenAI's own range: more would be forwarded as asked, for as many
    // paid answers as the provider allows.
    if chat.params.n.is_some_and(|n| !(1..=128).contains(&n)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("invalid_value"),
            "'n' must be between 1 and 128",
        ));
    }
    let Some(route) = live.compiled.resolve(&chat.model) else {
        return Err(ApiError::model_not_found(&chat.model));
    };
    // Admitted only now, with the whole request in hand: a client that
    // sends its body a byte at a time holds a connection, never one of
    // `max_in_flight`'s slots.
    let max = live.config.server.max_in_flight;
    let admitted = Admitted::try_new(&state.in_flight, max)
        .ok_or_else(|| shed(state, Limit::InFlight(max)))?
        .holding(held);
    let stream = chat.is_stream();
    let chat = Arc::new(chat);
    let mut req = RouteRequest {
        chat: chat.clone(),
        candidates: route.candidates.clone(),
        route: route.clone(),
        ctx: Default::default(),
    };
    req.ctx.request_id = id.into();
    req.ctx.config_version = live.version;
    req.ctx.client = client;
    let result = live.stack.clone().oneshot(req).await;
    let route_name = route.handles.name_header.get(&route.name);
    match result {
        // Routed: the trace layer logged, counted and traced it. `Err` is
        // left for the refusals before routing (see `refused`).
        Err(e) => {
            let mut err = ApiError::from_route(&e);
            err.headers.insert(X_MODELUX_ROUTE.clone(), route_name);
            err.headers.insert(
                X_MODELUX_ATTEMPTS.clone(),
                count_header(e.attempts.len() as u64),
            );
            Ok(err.into_response())
        }
        Ok(RouteResponse {
            body,
            served_by,
            attempts,
        }) => {
            let mut resp = match body {
                ProviderResponse::Complete(c) => {
                    // The provider's body as it arrived (OpenAI-kind), or
                    // the translated completion serialised.
                    let mut r = with_header_room(Response::new(Body::from(c.to_json())));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                ProviderResponse::Stream(s) => {
                    debug_assert!(stream);
                    let (body, hook) = sse_body(s, chat, &state.streams, admitted);
                    let mut r = with_header_room(Response::new(body));
                    // For the server, which takes it out (see `CutHook`).
                    r.extensions_mut().insert(hook);
                    let h = r.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    );
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    h.insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
                    r
                }
            };
            let h = resp.headers_mut();
            h.insert(X_MODELUX_ROUTE.clone(), route_name);
            let names = &served_by.handles;
            h.insert(
                X_MODELUX_MODEL.clone(),
                names.model_header.get(&served_by.id.model),
            );
            h.insert(
                X_MODELUX_PROVIDER.clone(),
                names.provider_header.get(&served_by.id.provider),
            );
            h.insert(
                X_MODELUX_ATTEMPTS.clone(),
                count_header(u64::from(attempts)),
            );
            Ok(resp)
        }
    }
}

/// The SSE body: each chunk is sent as it arrives, as the provider's bytes
/// when the chunk kept them (see [`Chunk`]) and encoded otherwise. A stream
/// that ends normally gets `data: [DONE]` (and a usage chunk first when the
/// client asked for one); a stream that failed ends with an in-band error
/// event and no `[DONE]`, so no client mistakes it for a complete answer.
///
/// The gateway always asks OpenAI-kind providers for usage; a client that did
/// not ask gets no usage chunk, and a content chunk that carries usage is
/// rewritten without it.
///
/// The upstream stream is registered with the gateway's [`StreamWatch`],
/// which drops it if the client takes nothing for `SEND_TIMEOUT` while its
/// connection stays up (an HTTP/2 stream whose window stays shut).
fn sse_body(
    stream: ChunkStream,
    chat: Arc<ChatRequest>,
    watch: &StreamWatch,
    admitted: Admitted,
) -> (Body, CutHook) {
    let stream = watch.watch(stream, Some(admitted));
    let hook = stream.cut_hook();
    let body = Body::new(SseBody {
        wants_usage: chat.wants_stream_usage(),
        stream,
        chat,
        saw_usage: false,
        completion_chars: 0,
        first: None,
        state: SseState::Chunks,
    });
    (body, hook)
}

/// The body [`sse_body`] returns, written out rather than as an
/// `async_stream` generator wrapped in `Body::from_stream`: one lives as
/// long as each open stream, and the generator and its wrappers took
/// ≈ 0.8 KB against ≈ 0.25 KB here.
struct SseBody {
    /// The upstream stream, with the request's `max_in_flight` slot: both
    /// go when it ends, when the watch cuts it, or with the body.
    stream: WatchedStream,
    chat: Arc<ChatRequest>,
    wants_usage: bool,
    saw_usage: bool,
    completion_chars: usize,
    /// The first chunk, whose id, model and created an estimated usage
    /// chunk repeats (kept only when the client asked for usage; boxed so
    /// the streams that do not ask carry 8 bytes, not a whole chunk).
    first: Option<Box<Chunk>>,
    state: SseState,
}

/// Where an [`SseBody`] is.
#[derive(Clone, Copy, PartialEq)]
enum SseState {
    /// Forwarding the answer's chunks.
    Chunks,
    /// The answer ended: an estimated usage chunk if one is owed, then
    /// `[DONE]`.
    Usage,
    /// `[DONE]` is next.
    Done,
    /// Nothing more.
    End,
}

impl SseBody {
    /// What the next chunk becomes on the wire, or `None` for a chunk the
    /// client does not get (a usage-only chunk it did not ask for).
    fn encode(&mut self, chunk: Chunk) -> Option<Bytes> {
        // Usage on a content or finish chunk counts too: no estimate follows.
        self.saw_usage |= chunk.usage().is_some();
        let chunk = crate::edge::for_client(chunk, self.wants_usage)?;
        if self.wants_usage {
            self.completion_chars += chunk.output_len();
            if self.first.is_none() {
                self.first = Some(Box::new(chunk.clone()));
            }
        }
        Some(chunk.to_sse())
    }

    /// Drops the upstream stream (and what it holds: the connection's
    /// stream, the request's trace and permits) as soon as it has ended,
    /// not when hyper drops the body.
    fn release(&mut self) {
        self.stream.release();
    }

    /// The upstream's next chunk; an error once the [`StreamWatch`] cut the
    /// stream because the client took nothing for `SEND_TIMEOUT`.
    fn next_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Result<Chunk, ProviderError>>, ClientStalled>> {
        match self.stream.stream() {
            Ok(mut s) => s.poll_next_unpin(cx).map(Ok),
            Err(e) => {
                self.state = SseState::End;
                Poll::Ready(Err(e))
            }
        }
    }

    /// The usage chunk for a provider that reported none: estimated at
    /// ~4 characters a token, rather than leave a client that asked without
    /// one.
    fn estimated_usage(&self) -> Bytes {
        let (id, model, created) = self
            .first
            .as_ref()
            .and_then(|c| c.to_chat_chunk().ok())
            .map(|c| (c.id.clone(), c.model.clone(), c.created))
            .unwrap_or_default();
        let usage = Usage::new(
            self.chat.prompt_len().div_ceil(4) as u64,
            self.completion_chars.div_ceil(4) as u64,
        );
        encode_json(&ChatChunk::usage_only(&id, &model, created, usage))
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = ClientStalled;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ClientStalled>>> {
        let this = &mut *self;
        let data = loop {
            match this.state {
                SseState::Chunks => match std::task::ready!(this.next_chunk(cx)) {
                    Ok(Some(Ok(chunk))) => {
                        if let Some(bytes) = this.encode(chunk) {
                            break bytes;
                        }
                    }
                    Ok(Some(Err(e))) => {
                        this.release();
                        this.state = SseState::End;
                        break crate::edge::stream_error_event(&e);
                    }
                    Ok(None) => {
                        this.release();
                        this.state = SseState::Usage;
                    }
                    Err(stalled) => return Poll::Ready(Some(Err(stalled))),
                },
                SseState::Usage => {
                    this.state = SseState::Done;
                    if this.wants_usage && !this.saw_usage {
                        break this.estimated_usage();
                    }
                }
                SseState::Done => {
                    this.state = SseState::End;
                    break encode_done();
                }
                SseState::End => return Poll::Ready(None),
            }
        };
        this.stream.handed_over();
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.state == SseState::End
    }
}

/// `GET /v1/models`: every route and model a request may name.
pub(crate) async fn models(AxState(state): St, headers: HeaderMap) -> Response {
    let live = state.live.load();
    if let Err(e) = authenticate(&live, &headers) {
        return ApiError::from(e).into_response();
    }
    let mut names: Vec<&str> = live.compiled.route_names().collect();
    names.extend(live.compiled.models.keys().map(|k| &**k));
    names.sort_unstable();
    names.dedup();
    let data: Vec<_> = names.iter().map(|n| model_object(n)).collect();
    Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// One entry of `/v1/models`: a route or model name clients can send.
fn model_object(name: &str) -> serde_json::Value {
    serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "modelux"})
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`): the entry, or 404
/// in OpenAI's format when no route or model has that name.
pub(crate) async fn model(
    AxState(state): St,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    let live = state.live.load();
    if let Err(e) = authenticate(&live, &headers) {
        return ApiError::from(e).into_response();
    }
    let Ok(Path(id)) = id else {
        return ApiError::bad_request("The model id is not valid UTF-8 once percent-decoded")
            .into_response();
    };
    match live.compiled.resolve(&id) {
        Some(_) => Json(model_object(&id)).into_response(),
        None => ApiError::model_not_found(&id).into_response(),
    }
}

/// `GET /healthz`: always 200 while the process serves; `status` is
/// `degraded` (with the store error) when the config store is unreachable
/// and the gateway keeps serving its last active version.
pub(crate) async fn healthz(AxState(state): St) -> Response {
    let st = state.status_json();
    // Also degraded when the store's active version cannot be applied here
    // (a key variable set on other replicas only): this replica serves an
    // older version than the rest of the fleet.
    // And when the store answers reads but refuses the traffic log's
    // writes (a locked SQLite file, a PostgreSQL standby after a failover).
    let degraded = st["store_ok"] == serde_json::Value::Bool(false)
        || st["store_writable"] == serde_json::Value::Bool(false)
        || !st["apply_error"].is_null();
    Json(serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "config_version": state.live.load().version,
        "store_ok": st["store_ok"],
        "last_store_error": st["last_store_error"],
        "store_writable": st["store_writable"],
        "last_write_error": st["last_write_error"],
        "apply_error": st["apply_error"],
    }))
    .into_response()
}

/// A `/v1` call without a known client key, where client keys are configured.
struct Unauthenticated;

impl From<Unauthenticated> for ApiError {
    fn from(_: Unauthenticated) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Missing or unknown client key: send Authorization: Bearer <your gateway key>",
        )
    }
}

/// The client a `/v1` call comes from: `None` when no client keys are
/// configured, else the name of the key in `Authorization: Bearer`.
fn authenticate(
    live: &super::Live,
    headers: &HeaderMap,
) -> Result<Option<Arc<str>>, Unauthenticated> {
    if live.compiled.clients.is_empty() {
        return Ok(None);
    }
    let key = super::bearer(headers);
    match key.and_then(|k| live.compiled.client_for(k)) {
        Some(name) => Ok(Some(name)),
        None => Err(Unauthenticated),
    }
}

/// `GET /v1/traces/{id}`: with client keys configured, the caller's own
/// traces only (the same key as for `/v1/chat/completions`).
pub(crate) async fn trace(
    AxState(state): St,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(id)) = id else {
        return ApiError::bad_request("The trace id is not valid UTF-8 once percent-decoded")
            .into_response();
    };
    let client = match authenticate(&state.live.load(), &headers) {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match state.traces.get_for(&id, client.as_deref()) {
        Some(t) => Json(t).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("trace_not_found"),
            "No trace with that id (traces are kept in a bounded ring)",
        )
        .into_response(),
    }
}

/// `GET /metrics` in Prometheus text format.
pub(crate) async fn metrics(AxState(state): St) -> Response {
    match &state.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("metrics_unavailable"),
            "Another metrics recorder is installed in this process",
        )
        .into_response(),
    }
}

pub(crate) async fn not_found(uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("not_found"),
        format!("Unknown path {}", super::error::truncate(uri.path(), 200)),
    )
    .into_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        Some("method_not_allowed"),
        "Method not allowed on this path",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of these lives (boxed) as long as each open stream; the load
    /// test's RSS target counts it. A chunk kept inline for the usage
    /// estimate made it ≈ 190 bytes for every stream.
    #[test]
    fn the_per_stream_state_stays_small() {
        let size = std::mem::size_of::<SseBody>();
        assert!(size <= 64, "SseBody is {size} bytes");
    }
}
