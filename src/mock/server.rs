//! The HTTP side: accept loop, per-connection kill switch, handlers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::Stream;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::wire::{self, Answer, Format, Parsed, StreamPlan};
use super::{
    AnswerEnd, AnswerGuard, Behaviour, ErrorFlavor, Fault, RecordedRequest, Shared, DEFAULT_WORDS,
};

/// Concurrent HTTP/2 streams allowed per connection by default (hyper's).
pub(crate) const DEFAULT_H2_STREAMS: u32 = 200;

/// The largest request body accepted.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long a cut waits so that the chunks before it reach the socket.
const CUT_GRACE: Duration = Duration::from_millis(10);

/// Accepts connections until the task is aborted. Connection tasks live in a
/// `JoinSet` owned by this task, so aborting it closes them all.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, h2_streams: Option<u32>) {
    let router = router(shared);
    let mut conns = JoinSet::new();
    let mut accepted_conns = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    accepted_conns += 1;
                    let conn = Conn { kill: Arc::new(Notify::new()), id: accepted_conns };
                    conns.spawn(serve_conn(stream, conn, router.clone(), h2_streams));
                }
                // E.g. out of file descriptors: wait instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A handle on the connection a request arrived on, put in the request's
/// extensions: a handler can close the connection without answering. `id`
/// numbers the connections from 1 in the order they were accepted.
#[derive(Clone)]
struct Conn {
    kill: Arc<Notify>,
    id: u64,
}

async fn serve_conn(stream: TcpStream, conn: Conn, router: Router, h2_streams: Option<u32>) {
    let kill = conn.kill.clone();
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(conn.clone());
            router.clone().oneshot(req)
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(h2_streams);
    let serving = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = serving => {}
        // Dropping the connection closes the socket with nothing written.
        _ = kill.notified() => {}
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1beta/models/{model_action}", post(gemini))
        .route("/v1/models/{model_action}", post(gemini))
        .route("/_mock/requests", get(list_requests))
        .route("/_mock/faults", post(set_faults))
        .route("/_mock/reset", post(reset))
        .fallback(not_found)
        .with_state(shared)
}

async fn openai(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    handle(&shared, Format::OpenAi, None, req).await
}

async fn anthropic(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    handle(&shared, Format::Anthropic, None, req).await
}

/// `{model}:generateContent` and `{model}:streamGenerateContent`: the whole
/// path segment is captured and split on its last `:`.
async fn gemini(
    State(shared): State<Arc<Shared>>,
    Path(model_action): Path<String>,
    req: Request,
) -> Response {
    let target = model_action
        .rsplit_once(':')
        .and_then(|(model, action)| match action {
            "generateContent" => Some((model.to_owned(), false)),
            "streamGenerateContent" => Some((model.to_owned(), true)),
            _ => None,
        });
    match target {
        Some(target) => handle(&shared, Format::Gemini, Some(target), req).await,
        None => json_response(
            StatusCode::NOT_FOUND,
            &wire::status_body(
                Format::Gemini,
                404,
                &format!("models/{model_action} is not found or is not a supported method"),
            ),
        ),
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Serves one model request in any format. `gemini` carries the model and
/// stream flag taken from a Gemini path.
async fn handle(
    shared: &Arc<Shared>,
    format: Format,
    gemini: Option<(String, bool)>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let conn = parts.extensions.get::<Conn>().cloned();
    let query = parts.uri.query();
    let raw = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(raw) => raw,
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &wire::status_body(format, 413, "request body too large or unreadable"),
            )
        }
    };
    let json: Option<Value> = serde_json::from_slice(&raw).ok();
    let (model, stream) = match gemini {
        Some(target) => target,
        None => json
            .as_ref()
            .map(wire::model_and_stream)
            .unwrap_or_default(),
    };
    let auth = match format {
        Format::OpenAi => header_string(&parts.headers, "authorization"),
        // API keys go in `x-api-key`; the official SDKs since 2.x send them
        // as `Authorization: Bearer` (as they always did OAuth tokens).
        Format::Anthropic => header_string(&parts.headers, "x-api-key")
            .or_else(|| header_string(&parts.headers, "authorization")),
        Format::Gemini => header_string(&parts.headers, "x-goog-api-key")
            .or_else(|| query_param(query, "key").map(str::to_owned)),
    };
    // streamGenerateContent without alt=sse answers one JSON array.
    let sse = stream && (format != Format::Gemini || query_param(query, "alt") == Some("sse"));

    let parsed: Result<Parsed, String> = match &json {
        None => Err("the request body is not valid JSON".into()),
        Some(v) => match format {
            Format::OpenAi => wire::parse_openai(v),
            Format::Anthropic => {
                wire::parse_anthropic(v, parts.headers.contains_key("anthropic-version"))
            }
            Format::Gemini => wire::parse_gemini(v, &model),
        },
    };
    let prompt_tokens = parsed
        .as_ref()
        .map(|p| p.prompt_chars.div_ceil(4) as u64)
        .unwrap_or(0);

    // OpenAI's 401 quotes the key it refused, masked ("sk-proj-****abcd").
    let key_hint = auth.as_deref().map(masked_key);
    let recorded = RecordedRequest {
        format: format.as_str(),
        model: model.clone(),
        stream,
        body: json.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&raw).into_owned())),
        auth,
        version: parts.version,
        connection: conn.as_ref().map_or(0, |c| c.id),
        at: SystemTime::now(),
        id: 0,
        end: AnswerEnd::Open,
        chunks_sent: 0,
        headers: parts.headers.clone(),
    };
    let (behaviour, fault, request_no) = shared.admit(recorded);
    // Dropped with this future (the client went away first) or the stream.
    let mut guard = Some(AnswerGuard::new(Arc::clone(shared), request_no));
    let request_id = HeaderValue::from_str(&format!("req_mock{request_no}")).ok();

    let mut response = respond(
        format,
        conn,
        &model,
        stream,
        sse,
        parsed,
        prompt_tokens,
        behaviour,
        fault,
        request_no,
        key_hint,
        &mut guard,
    )
    .await;
    // A whole answer, handed to the server in one piece (a stream took the guard).
    ended(&mut guard);
    if let Some(id) = request_id {
        let name = match format {
            Format::Anthropic => "request-id",
            Format::OpenAi | Format::Gemini => "x-request-id",
        };
        response.headers_mut().insert(name, id);
    }
    response
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    format: Format,
    conn: Option<Conn>,
    model: &str,
    stream: bool,
    sse: bool,
    parsed: Result<Parsed, String>,
    prompt_tokens: u64,
    behaviour: Behaviour,
    fault: Option<Fault>,
    request_no: u64,
    key_hint: Option<String>,
    guard: &mut Option<AnswerGuard>,
) -> Response {
    sleep_ms(behaviour.latency_ms).await;
    match &fault {
        Some(Fault::Status {
            status,
            retry_after_s,
            retry_after_ms,
            error,
        }) => {
            let flavor = error.unwrap_or(ErrorFlavor::Plain);
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut body = wire::error_body(format, code.as_u16(), flavor, prompt_tokens);
            if let (Format::OpenAi, 401, ErrorFlavor::Plain, Some(key)) =
                (format, *status, flavor, key_hint)
            {
                body["error"]["message"] = Value::String(format!(
                    "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."
                ));
            }
            let mut resp = json_response(code, &body);
            let h = resp.headers_mut();
            if let Some(s) = retry_after_s {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*s));
            }
            if let Some(ms) = retry_after_ms {
                h.insert("retry-after-ms", HeaderValue::from(*ms));
            }
            return resp;
        }
        Some(Fault::DelayHeaders { ms }) => sleep_ms(*ms).await,
        Some(Fault::Hang) => return std::future::pending().await,
        Some(Fault::ResetBeforeHeaders) => {
            if let Some(conn) = conn {
                ended(guard);
                conn.kill.notify_one();
                // The connection task drops this handler with the connection.
                return std::future::pending().await;
            }
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &wire::status_body(format, 500, "mock: no connection to reset"),
            );
        }
        _ => {}
    }

    let parsed = match parsed {
        Ok(p) => p,
        Err(message) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &wire::invalid_body(format, &message),
            )
        }
    };
    let full = behaviour.answer.clone().unwrap_or_else(|| {
        (0..behaviour.words.unwrap_or(DEFAULT_WORDS))
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let answer = Answer::new(format, request_no, model, &full, &parsed);

    if sse {
        let plan = answer.stream_plan(format);
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(drive(
                plan,
                format,
                &behaviour,
                fault,
                guard.take(),
            )))
            .unwrap_or_default();
    }

    // Non-stream answers: stream faults act as their closest equivalent.
    match &fault {
        Some(Fault::SlowFirstChunk { ms }) | Some(Fault::StallAfter { ms, .. }) => {
            sleep_ms(*ms).await
        }
        Some(Fault::ErrorEventAfter { .. }) => {
            let status = wire::overloaded_status(format);
            let body = wire::error_body(format, status, ErrorFlavor::Overloaded, prompt_tokens);
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return json_response(code, &body);
        }
        _ => {}
    }
    let body = if stream {
        // Gemini's streamGenerateContent without alt=sse.
        Value::Array(answer.gemini_chunks())
    } else {
        answer.complete_body(format)
    };
    let bytes = Bytes::from(body.to_string());
    match fault {
        Some(Fault::MalformedEventAfter { .. }) => {
            let half = bytes.slice(..bytes.len() / 2);
            json_bytes_response(StatusCode::OK, Body::from(half))
        }
        Some(Fault::CutAfter { .. }) => {
            let half = bytes.slice(..bytes.len() / 2);
            let body = async_stream::stream! {
                yield Ok(half);
                tokio::time::sleep(CUT_GRACE).await;
                yield Err(cut_error());
            };
            json_bytes_response(StatusCode::OK, Body::from_stream(body))
        }
        _ => json_bytes_response(StatusCode::OK, Body::from(bytes)),
    }
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "mock fault: connection cut",
    )
}

/// What a stream fault does once its chunk count is reached.
enum Inject {
    Cut,
    Stall(u64),
    Malformed,
    Error,
}

/// Plays a stream plan, with the behaviour's timings and the fault.
fn drive(
    plan: StreamPlan,
    format: Format,
    behaviour: &Behaviour,
    fault: Option<Fault>,
    mut guard: Option<AnswerGuard>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut first_delay = behaviour.first_chunk_delay_ms;
    let interval = behaviour.chunk_interval_ms;
    let mut inject = None;
    let mut no_done = false;
    match fault {
        Some(Fault::SlowFirstChunk { ms }) => first_delay += ms,
        Some(Fault::CutAfter { chunks }) => inject = Some((chunks, Inject::Cut)),
        Some(Fault::StallAfter { chunks, ms }) => inject = Some((chunks, Inject::Stall(ms))),
        Some(Fault::MalformedEventAfter { chunks }) => inject = Some((chunks, Inject::Malformed)),
        Some(Fault::ErrorEventAfter { chunks }) => inject = Some((chunks, Inject::Error)),
        Some(Fault::NoDone) => no_done = true,
        _ => {}
    }
    async_stream::stream! {
        for event in plan.preamble {
            yield Ok(event);
        }
        let total = plan.contents.len();
        let mut contents = plan.contents.into_iter();
        for i in 0..=total {
            if let Some((at, inject)) = &inject {
                if (*at).min(total) == i {
                    match inject {
                        Inject::Cut => {
                            tokio::time::sleep(CUT_GRACE).await;
                            ended(&mut guard);
                            yield Err(cut_error());
                            return;
                        }
                        Inject::Stall(ms) => sleep_ms(*ms).await,
                        Inject::Malformed => yield Ok(wire::malformed_event(format)),
                        Inject::Error => {
                            ended(&mut guard);
                            yield Ok(wire::error_event(format));
                            return;
                        }
                    }
                }
            }
            let delay = if i == 0 {
                first_delay
            } else if i < total || plan.finish_has_content {
                interval
            } else {
                0
            };
            sleep_ms(delay).await;
            if let Some(event) = contents.next() {
                if let Some(guard) = guard.as_mut() {
                    guard.chunks += 1;
                }
                yield Ok(event);
            }
        }
        // Every content chunk is out; what follows carries no tokens.
        ended(&mut guard);
        for event in plan.finish {
            yield Ok(event);
        }
        if !no_done {
            if let Some(done) = plan.done {
                yield Ok(done);
            }
        }
    }
}

/// Marks the answer as ended by the mock itself.
fn ended(guard: &mut Option<AnswerGuard>) {
    if let Some(guard) = guard.as_mut() {
        guard.ended();
    }
}

fn json_bytes_response(status: StatusCode, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    json_bytes_response(status, Body::from(body.to_string()))
}

/// `GET /_mock/requests[?model=NAME]`.
async fn list_requests(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let model = query.get("model");
    let list: Vec<Value> = shared
        .lock()
        .requests
        .iter()
        .filter(|r| model.map_or(true, |m| *m == r.model))
        .map(|r| {
            let at_ms =
                r.at.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
            json!({
                "format": r.format,
                "model": r.model,
                "stream": r.stream,
                "body": r.body,
                "auth": r.auth,
                "at_ms": at_ms,
                "version": format!("{:?}", r.version),
                "connection": r.connection,
                "id": r.id,
                "end": r.end,
                "chunks_sent": r.chunks_sent,
            })
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    model: String,
    #[serde(default, alias = "behavior")]
    behaviour: Option<Behaviour>,
    #[serde(default)]
    push: Option<OneOrMany<Fault>>,
}

/// `POST /_mock/faults`.
async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let bad = |msg: String| json_response(StatusCode::BAD_REQUEST, &json!({ "error": msg }));
    let req: FaultsBody = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return bad(format!("invalid fault request: {e}")),
    };
    if req.behaviour.is_none() && req.push.is_none() {
        return bad("give \"behaviour\" or \"push\"".into());
    }
    if let Some(b) = req.behaviour {
        shared.set(&req.model, b);
    }
    match req.push {
        Some(OneOrMany::One(f)) => shared.push(&req.model, f),
        Some(OneOrMany::Many(fs)) => fs.into_iter().for_each(|f| shared.push(&req.model, f)),
        None => {}
    }
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// `POST /_mock/reset`.
async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

async fn not_found(req: Request) -> Result<Response, Infallible> {
    let msg = format!("mock: no route for {} {}", req.method(), req.uri().path());
    Ok(json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": {"message": msg, "type": "invalid_request_error", "param": null, "code": "not_found"}}),
    ))
}

/// A key as OpenAI's 401 message quotes it: its first characters (up to 8)
/// and its last 4, the rest as `*`.
fn masked_key(auth: &str) -> String {
    let key = auth.strip_prefix("Bearer ").unwrap_or(auth);
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head = (chars.len() / 4).min(8);
    let tail = 4;
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(chars.len() - head - tail));
    out.extend(&chars[chars.len() - tail..]);
    out
}
