//! The fake provider, driven over real HTTP.
#![cfg(feature = "mock")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tower::ServiceExt;

use modelux::api::{ChatChunk, ChatCompletion};
use modelux::mock::{Behaviour, ErrorFlavor, Fault, MockProvider};
use modelux::sse::{SseDecoder, SseEvent};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn post(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
}

async fn get(client: &HttpClient, url: &str) -> Response<Incoming> {
    let req = Request::builder()
        .uri(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    client.request(req).await.unwrap()
}

/// The body's frames with their arrival times, and the error that ended it, if any.
async fn read_frames(resp: Response<Incoming>) -> (Vec<(Instant, Bytes)>, Option<hyper::Error>) {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    out.push((Instant::now(), data));
                }
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Reads a whole body that must end cleanly.
async fn body_bytes(resp: Response<Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

async fn body_json(resp: Response<Incoming>) -> Value {
    serde_json::from_slice(&body_bytes(resp).await).unwrap()
}

fn decode(bytes: &[u8]) -> Vec<SseEvent> {
    let mut d = SseDecoder::new();
    d.push(bytes);
    let mut events = Vec::new();
    while let Some(e) = d.next_event().unwrap() {
        events.push(e);
    }
    events.extend(d.finish());
    events
}

/// Reads a stream to its end (clean or not): its events and whether it broke.
async fn stream_events(resp: Response<Incoming>) -> (Vec<SseEvent>, bool) {
    let (frames, err) = read_frames(resp).await;
    let all: Vec<u8> = frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
    (decode(&all), err.is_some())
}

fn openai_body(stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hello world!"}],
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

fn anthropic_body(stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello world!"}],
        "stream": stream,
    })
}

const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("x-api-key", "ak-test"),
    ("anthropic-version", "2023-06-01"),
];

fn gemini_body() -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": "hello world!"}]}],
        "generationConfig": {"temperature": 0.5},
    })
}

fn gemini_url(mock: &MockProvider, model: &str, stream: bool) -> String {
    if stream {
        format!(
            "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
            mock.url()
        )
    } else {
        format!("{}/v1beta/models/{model}:generateContent", mock.url())
    }
}

/// The text of an OpenAI stream's chunks.
fn openai_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| serde_json::from_str::<ChatChunk>(&e.data).ok())
        .map(|c| c.text())
        .collect()
}

fn anthropic_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .map(|v| v["delta"]["text"].as_str().unwrap().to_owned())
        .collect()
}

fn gemini_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn openai_non_stream_shape() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!("{}/chat/completions", mock.openai_url());
    let resp = post(
        &client(),
        &url,
        &[("authorization", "Bearer sk-test")],
        &openai_body(false),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = body_json(resp).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], words(20));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // "hello world!" is 12 characters: 3 tokens.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 20, "total_tokens": 23})
    );
    let parsed: ChatCompletion = serde_json::from_value(v).unwrap();
    assert!(parsed.id.starts_with("chatcmpl-"));

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].format, "openai");
    assert_eq!(reqs[0].model, "gpt-test");
    assert!(!reqs[0].stream);
    assert_eq!(reqs[0].auth.as_deref(), Some("Bearer sk-test"));
    assert_eq!(reqs[0].body["messages"][0]["content"], "hello world!");
    assert_eq!(mock.request_count("gpt-test"), 1);
}

#[tokio::test]
async fn openai_stream_shape() {
    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "gpt-test",
        Behaviour {
            words: Some(5),
            ..Behaviour::default()
        },
    );
    let url = format!("{}/chat/completions", mock.openai_url());
    let resp = post(&client(), &url, &[], &openai_body(true))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (events, broke) = stream_events(resp).await;
    assert!(!broke);
    // role chunk, 5 words, finish chunk, usage chunk, [DONE]
    assert_eq!(events.len(), 9, "{events:?}");
    assert!(events.iter().all(|e| e.event.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");

    let chunks: Vec<ChatChunk> = events[..8]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    assert!(!chunks[0].has_content());
    let texts: Vec<String> = chunks[1..6].iter().map(|c| c.text()).collect();
    assert_eq!(texts, ["word0", " word1", " word2", " word3", " word4"]);
    assert_eq!(chunks[6].finish_reason(), Some("stop"));
    assert!(chunks[7].choices.is_empty());
    let usage = chunks[7].usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 5));
    // With include_usage, the other chunks carry "usage": null.
    let first: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert!(first["usage"].is_null() && first.get("usage").is_some());
    assert!(mock.requests()[0].stream);
}

#[tokio::test]
async fn openai_stream_without_include_usage_has_no_usage_chunk() {
    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "*",
        Behaviour {
            words: Some(2),
            ..Behaviour::default()
        },
    );
    let url = format!("{}/chat/completions", mock.openai_url());
    let mut body = openai_body(true);
    body.as_object_mut().unwrap().remove("stream_options");
    let (events, _) = stream_events(post(&client(), &url, &[], &body).await.unwrap()).await;
    // role, 2 words, finish, [DONE]
    assert_eq!(events.len(), 5);
    assert!(events
        .iter()
        .all(|e| !e.data.contains("\"usage\"") && !e.data.contains("total_tokens")));
}

#[tokio::test]
async fn anthropic_non_stream_shape() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!("{}/v1/messages", mock.url());
    let resp = post(&client(), &url, ANTHROPIC_HEADERS, &anthropic_body(false))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("request-id"));
    let v = body_json(resp).await;
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-test");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["content"], json!([{"type": "text", "text": words(20)}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    // "be brief" + "hello world!" = 20 characters: 5 tokens.
    assert_eq!(v["usage"], json!({"input_tokens": 5, "output_tokens": 20}));
    let reqs = mock.requests();
    assert_eq!(reqs[0].format, "anthropic");
    assert_eq!(reqs[0].auth.as_deref(), Some("ak-test"));
}

#[tokio::test]
async fn anthropic_stream_event_sequence() {
    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "claude-test",
        Behaviour {
            answer: Some("Hello there, friend.".into()),
            ..Behaviour::default()
        },
    );
    let url = format!("{}/v1/messages", mock.url());
    let resp = post(&client(), &url, ANTHROPIC_HEADERS, &anthropic_body(true))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (events, broke) = stream_events(resp).await;
    assert!(!broke);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for e in &events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["type"], e.event.as_deref().unwrap());
    }
    let start: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(start["message"]["usage"]["input_tokens"], 5);
    assert_eq!(start["message"]["model"], "claude-test");
    let block: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(block["content_block"], json!({"type": "text", "text": ""}));
    let delta: Value = serde_json::from_str(&events[3].data).unwrap();
    assert_eq!(
        delta["delta"],
        json!({"type": "text_delta", "text": "Hello"})
    );
    assert_eq!(anthropic_text(&events), "Hello there, friend.");
    let md: Value = serde_json::from_str(&events[7].data).unwrap();
    assert_eq!(md["delta"]["stop_reason"], "end_turn");
    assert_eq!(md["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn anthropic_rejects_what_the_real_api_rejects() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!("{}/v1/messages", mock.url());
    let c = client();
    // No anthropic-version header.
    let resp = post(&c, &url, &[("x-api-key", "k")], &anthropic_body(false))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = body_json(resp).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // No max_tokens.
    let mut body = anthropic_body(false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let resp = post(&c, &url, ANTHROPIC_HEADERS, &body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A system role inside messages.
    let mut body = anthropic_body(false);
    body["messages"] =
        json!([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]);
    let resp = post(&c, &url, ANTHROPIC_HEADERS, &body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Requests are recorded (and counted) even when rejected.
    assert_eq!(mock.request_count("claude-test"), 3);
}

#[tokio::test]
async fn gemini_non_stream_shape() {
    let mock = MockProvider::start().await.unwrap();
    let resp = post(
        &client(),
        &gemini_url(&mock, "gemini-test", false),
        &[("x-goog-api-key", "gk-test")],
        &gemini_body(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body_json(resp).await;
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(cand["content"]["parts"][0]["text"], words(20));
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 3, "candidatesTokenCount": 20, "totalTokenCount": 23})
    );
    assert_eq!(v["modelVersion"], "gemini-test");
    let reqs = mock.requests();
    assert_eq!(
        (reqs[0].format, reqs[0].model.as_str(), reqs[0].stream),
        ("gemini", "gemini-test", false)
    );
    assert_eq!(reqs[0].auth.as_deref(), Some("gk-test"));
}

#[tokio::test]
async fn gemini_stream_shape() {
    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "gemini-test",
        Behaviour {
            words: Some(4),
            ..Behaviour::default()
        },
    );
    let resp = post(
        &client(),
        &gemini_url(&mock, "gemini-test", true),
        &[],
        &gemini_body(),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (events, broke) = stream_events(resp).await;
    assert!(!broke);
    assert_eq!(events.len(), 4);
    let objs: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    for (i, v) in objs.iter().enumerate() {
        let last = i == 3;
        assert_eq!(v["candidates"][0]["content"]["role"], "model");
        assert_eq!(v["candidates"][0].get("finishReason").is_some(), last);
        assert_eq!(v.get("usageMetadata").is_some(), last);
    }
    assert_eq!(objs[3]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(objs[3]["usageMetadata"]["candidatesTokenCount"], 4);
    assert_eq!(gemini_text(&events), words(4));
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    assert!(mock.requests()[0].stream);
}

#[tokio::test]
async fn gemini_stream_without_alt_sse_is_one_json_array() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!(
        "{}/v1beta/models/gemini-test:streamGenerateContent",
        mock.url()
    );
    let resp = post(&client(), &url, &[], &gemini_body()).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = body_json(resp).await;
    assert_eq!(v.as_array().unwrap().len(), 20);
    let unknown = format!("{}/v1beta/models/gemini-test:countTokens", mock.url());
    let resp = post(&client(), &unknown, &[], &gemini_body())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_json(resp).await["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn status_fault_with_retry_after() {
    let mock = MockProvider::start().await.unwrap();
    let c = client();
    mock.push(
        "gpt-test",
        Fault::Status {
            status: 429,
            retry_after_s: Some(2),
            retry_after_ms: Some(1500),
            error: None,
        },
    );
    let url = format!("{}/chat/completions", mock.openai_url());
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["retry-after-ms"], "1500");
    let v = body_json(resp).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"].get("type").is_some());

    // Anthropic: 529 overloaded, with its own error shape.
    mock.push(
        "claude-test",
        Fault::Status {
            status: 529,
            retry_after_s: Some(1),
            retry_after_ms: None,
            error: None,
        },
    );
    let url = format!("{}/v1/messages", mock.url());
    let resp = post(&c, &url, ANTHROPIC_HEADERS, &anthropic_body(true))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 529);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        body_json(resp).await,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    // Gemini: 503 UNAVAILABLE.
    mock.push("gemini-test", Fault::status(503));
    let resp = post(
        &c,
        &gemini_url(&mock, "gemini-test", true),
        &[],
        &gemini_body(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!resp.headers().contains_key("retry-after"));
    let v = body_json(resp).await;
    assert_eq!(v["error"]["code"], 503);
    assert_eq!(v["error"]["status"], "UNAVAILABLE");

    // Error flavors.
    mock.push(
        "gpt-test",
        Fault::Status {
            status: 400,
            retry_after_s: None,
            retry_after_ms: None,
            error: Some(ErrorFlavor::ContextLength),
        },
    );
    let url = format!("{}/chat/completions", mock.openai_url());
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_json(resp).await["error"]["code"],
        "context_length_exceeded"
    );
    mock.push(
        "claude-test",
        Fault::Status {
            status: 400,
            retry_after_s: None,
            retry_after_ms: None,
            error: Some(ErrorFlavor::PrefillUnsupported),
        },
    );
    let url = format!("{}/v1/messages", mock.url());
    let resp = post(&c, &url, ANTHROPIC_HEADERS, &anthropic_body(false))
        .await
        .unwrap();
    let v = body_json(resp).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("prefill"));
}

#[tokio::test]
async fn reset_before_headers_gives_a_connection_error() {
    let mock = MockProvider::start().await.unwrap();
    let c = client();
    let url = format!("{}/chat/completions", mock.openai_url());
    // Warm a pooled connection first, so the reset hits a reused one too.
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    body_bytes(resp).await;

    mock.push("gpt-test", Fault::ResetBeforeHeaders);
    let err = post(&c, &url, &[], &openai_body(false))
        .await
        .expect_err("the connection must close without a response");
    let hyper_err = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .expect("a hyper error underneath");
    assert!(
        hyper_err.is_incomplete_message() || hyper_err.is_closed(),
        "{hyper_err:?}"
    );

    // On a fresh client too (no pooled connection).
    mock.push("gpt-test", Fault::ResetBeforeHeaders);
    assert!(post(&client(), &url, &[], &openai_body(true))
        .await
        .is_err());

    // The server keeps serving.
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(mock.request_count("gpt-test"), 4);
}

#[tokio::test]
async fn cut_after_ends_the_stream_without_a_finish() {
    let mock = MockProvider::start().await.unwrap();
    let c = client();

    mock.push("gpt-test", Fault::CutAfter { chunks: 3 });
    let url = format!("{}/chat/completions", mock.openai_url());
    let resp = post(&c, &url, &[], &openai_body(true)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (events, broke) = stream_events(resp).await;
    assert!(broke, "the body must end with an error, not cleanly");
    assert_eq!(openai_text(&events), "word0 word1 word2");
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    assert!(events
        .iter()
        .filter_map(|e| serde_json::from_str::<ChatChunk>(&e.data).ok())
        .all(|c| c.finish_reason().is_none() && c.usage.is_none()));

    mock.push("claude-test", Fault::CutAfter { chunks: 2 });
    let url = format!("{}/v1/messages", mock.url());
    let resp = post(&c, &url, ANTHROPIC_HEADERS, &anthropic_body(true))
        .await
        .unwrap();
    let (events, broke) = stream_events(resp).await;
    assert!(broke);
    assert_eq!(anthropic_text(&events), "word0 word1");
    assert!(events.iter().all(|e| !matches!(
        e.event.as_deref(),
        Some("message_delta" | "message_stop" | "content_block_stop")
    )));

    mock.push("gemini-test", Fault::CutAfter { chunks: 1 });
    let resp = post(
        &c,
        &gemini_url(&mock, "gemini-test", true),
        &[],
        &gemini_body(),
    )
    .await
    .unwrap();
    let (events, broke) = stream_events(resp).await;
    assert!(broke);
    assert_eq!(gemini_text(&events), "word0");
    assert!(events.iter().all(|e| !e.data.contains("finishReason")));

    // A non-stream answer is cut half-way through its body.
    mock.push("gpt-test", Fault::CutAfter { chunks: 0 });
    let url = format!("{}/chat/completions", mock.openai_url());
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.into_body().collect().await.is_err());
}

#[tokio::test]
async fn prefill_continuation_answers_the_remainder() {
    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "*",
        Behaviour {
            words: Some(10),
            ..Behaviour::default()
        },
    );
    let c = client();
    let rest = " word3 word4 word5 word6 word7 word8 word9";

    // OpenAI, non-stream and stream.
    let url = format!("{}/chat/completions", mock.openai_url());
    for stream in [false, true] {
        let mut body = openai_body(stream);
        body["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "assistant", "content": "word0 word1 word2"}));
        let resp = post(&c, &url, &[], &body).await.unwrap();
        if stream {
            let (events, broke) = stream_events(resp).await;
            assert!(!broke);
            assert_eq!(openai_text(&events), rest);
            let usage = serde_json::from_str::<ChatChunk>(&events[events.len() - 2].data)
                .unwrap()
                .usage
                .unwrap();
            assert_eq!(usage.completion_tokens, 7);
        } else {
            let v = body_json(resp).await;
            assert_eq!(v["choices"][0]["message"]["content"], rest);
            assert_eq!(v["usage"]["completion_tokens"], 7);
        }
    }

    // Anthropic, content as blocks.
    let url = format!("{}/v1/messages", mock.url());
    let mut body = anthropic_body(true);
    body["messages"].as_array_mut().unwrap().push(
        json!({"role": "assistant", "content": [{"type": "text", "text": "word0 word1 word2"}]}),
    );
    let (events, _) = stream_events(post(&c, &url, ANTHROPIC_HEADERS, &body).await.unwrap()).await;
    assert_eq!(anthropic_text(&events), rest);

    // Gemini: a trailing `model` content.
    let mut body = gemini_body();
    body["contents"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "model", "parts": [{"text": "word0 word1 word2"}]}));
    let resp = post(&c, &gemini_url(&mock, "gemini-test", true), &[], &body)
        .await
        .unwrap();
    let (events, _) = stream_events(resp).await;
    assert_eq!(gemini_text(&events), rest);

    // A trailing assistant message that is not a prefix: the full answer.
    let mut body = openai_body(false);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": "something else"}));
    let v = body_json(
        post(
            &c,
            &format!("{}/chat/completions", mock.openai_url()),
            &[],
            &body,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], words(10));
}

#[tokio::test]
async fn pushed_faults_are_consumed_in_order() {
    let mock = MockProvider::start().await.unwrap();
    let c = client();
    let url = format!("{}/chat/completions", mock.openai_url());
    mock.set(
        "gpt-test",
        Behaviour {
            fault: Some(Fault::status(500)),
            fault_rate: Some(0.0),
            ..Behaviour::default()
        },
    );
    mock.push("gpt-test", Fault::status(429));
    mock.push("gpt-test", Fault::status(503));
    mock.push("*", Fault::status(502));
    mock.push("gpt-test", Fault::status(404));
    // Another model's queue is untouched by these requests.
    mock.push("other", Fault::status(401));

    let mut seen = Vec::new();
    for _ in 0..5 {
        let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
        seen.push(resp.status().as_u16());
        body_bytes(resp).await;
    }
    // The model's own queue first, then "*"'s, then the behaviour (rate 0: no fault).
    assert_eq!(seen, [429, 503, 404, 502, 200]);
    assert_eq!(mock.request_count("gpt-test"), 5);

    let mut body = openai_body(false);
    body["model"] = json!("other");
    let resp = post(&c, &url, &[], &body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(resp).await["error"]["code"], "invalid_api_key");

    // A behaviour fault with no rate applies to every request.
    mock.set(
        "gpt-test",
        Behaviour {
            fault: Some(Fault::status(500)),
            ..Behaviour::default()
        },
    );
    for _ in 0..2 {
        let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        body_bytes(resp).await;
    }
    mock.reset();
    assert_eq!(mock.request_count("gpt-test"), 0);
    assert!(mock.requests().is_empty());
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn stream_faults_stall_malformed_error_and_no_done() {
    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "*",
        Behaviour {
            words: Some(4),
            ..Behaviour::default()
        },
    );
    let c = client();
    let oa = format!("{}/chat/completions", mock.openai_url());
    let an = format!("{}/v1/messages", mock.url());

    // StallAfter: a gap, then the rest.
    mock.push("gpt-test", Fault::StallAfter { chunks: 2, ms: 300 });
    let start = Instant::now();
    let resp = post(&c, &oa, &[], &openai_body(true)).await.unwrap();
    let (frames, err) = read_frames(resp).await;
    assert!(err.is_none());
    let all: Vec<u8> = frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
    let events = decode(&all);
    assert_eq!(openai_text(&events), words(4));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(start.elapsed() >= Duration::from_millis(300));
    let at = |needle: &str| {
        frames
            .iter()
            .find(|(_, b)| std::str::from_utf8(b).unwrap().contains(needle))
            .unwrap()
            .0
    };
    // The stall sits between the second and the third word.
    let gap = at("\" word2\"").duration_since(at("\" word1\""));
    assert!(gap >= Duration::from_millis(250), "{gap:?}");

    // MalformedEventAfter: one event that is not JSON, then a normal stream.
    mock.push("gpt-test", Fault::MalformedEventAfter { chunks: 1 });
    let (events, broke) =
        stream_events(post(&c, &oa, &[], &openai_body(true)).await.unwrap()).await;
    assert!(!broke);
    let bad: Vec<_> = events
        .iter()
        .filter(|e| e.data != "[DONE]" && serde_json::from_str::<Value>(&e.data).is_err())
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(openai_text(&events), words(4));
    assert_eq!(events.last().unwrap().data, "[DONE]");

    // ErrorEventAfter: the in-band error ends the stream.
    mock.push("gpt-test", Fault::ErrorEventAfter { chunks: 2 });
    let (events, broke) =
        stream_events(post(&c, &oa, &[], &openai_body(true)).await.unwrap()).await;
    assert!(!broke);
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert!(last["error"]["message"].is_string());
    assert_eq!(openai_text(&events), "word0 word1");

    mock.push("claude-test", Fault::ErrorEventAfter { chunks: 1 });
    let (events, _) = stream_events(
        post(&c, &an, ANTHROPIC_HEADERS, &anthropic_body(true))
            .await
            .unwrap(),
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");

    mock.push("gemini-test", Fault::ErrorEventAfter { chunks: 0 });
    let (events, _) = stream_events(
        post(
            &c,
            &gemini_url(&mock, "gemini-test", true),
            &[],
            &gemini_body(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(events.len(), 1);
    let v: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(v["error"]["code"], 503);
    assert_eq!(v["error"]["status"], "UNAVAILABLE");

    // NoDone: finish and usage, no end marker.
    mock.push("gpt-test", Fault::NoDone);
    let (events, broke) =
        stream_events(post(&c, &oa, &[], &openai_body(true)).await.unwrap()).await;
    assert!(!broke);
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    let usage_chunk: ChatChunk = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert!(usage_chunk.usage.is_some());

    mock.push("claude-test", Fault::NoDone);
    let (events, _) = stream_events(
        post(&c, &an, ANTHROPIC_HEADERS, &anthropic_body(true))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("message_delta")
    );
}

#[tokio::test]
async fn timings_latency_first_chunk_and_interval() {
    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "gpt-test",
        Behaviour {
            words: Some(5),
            latency_ms: 100,
            first_chunk_delay_ms: 100,
            chunk_interval_ms: 60,
            ..Behaviour::default()
        },
    );
    let url = format!("{}/chat/completions", mock.openai_url());
    let start = Instant::now();
    let resp = post(&client(), &url, &[], &openai_body(true))
        .await
        .unwrap();
    let headers_at = start.elapsed();
    assert!(headers_at >= Duration::from_millis(100), "{headers_at:?}");
    let (frames, _) = read_frames(resp).await;
    // The role chunk comes with the headers, each word in its own frame as produced.
    let at = |needle: &str| {
        frames
            .iter()
            .find(|(_, b)| std::str::from_utf8(b).unwrap().contains(needle))
            .map(|(t, _)| t.duration_since(start))
            .unwrap()
    };
    let role = at("\"role\"");
    let w0 = at("\"word0\"");
    let w4 = at("\" word4\"");
    // first_chunk_delay_ms separates the role chunk from the first word...
    assert!(w0 >= role + Duration::from_millis(80), "{role:?} {w0:?}");
    // ...and the words arrive one by one, chunk_interval_ms apart, not buffered.
    assert!(
        w4 >= w0 + Duration::from_millis(200),
        "chunks must not be buffered: {w0:?} {w4:?}"
    );

    // DelayHeaders and SlowFirstChunk.
    mock.set("gpt-test", Behaviour::default());
    mock.push("gpt-test", Fault::DelayHeaders { ms: 150 });
    let start = Instant::now();
    let resp = post(&client(), &url, &[], &openai_body(false))
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
    body_bytes(resp).await;
    mock.push("gpt-test", Fault::SlowFirstChunk { ms: 150 });
    let resp = post(&client(), &url, &[], &openai_body(true))
        .await
        .unwrap();
    let headers_at = Instant::now();
    let (frames, _) = read_frames(resp).await;
    let w0 = frames
        .iter()
        .find(|(_, b)| std::str::from_utf8(b).unwrap().contains("\"word0\""))
        .unwrap()
        .0;
    // The delay comes after the headers, before the first word.
    assert!(w0.duration_since(headers_at) >= Duration::from_millis(120));
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let mock = MockProvider::start().await.unwrap();
    let h2: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let url = format!("{}/chat/completions", mock.openai_url());
    let resp = post(&h2, &url, &[], &openai_body(true)).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (events, broke) = stream_events(resp).await;
    assert!(!broke);
    assert_eq!(openai_text(&events), words(20));
    // A cut on HTTP/2 resets the stream: the body ends with an error.
    mock.push("gpt-test", Fault::CutAfter { chunks: 1 });
    let resp = post(&h2, &url, &[], &openai_body(true)).await.unwrap();
    let (events, broke) = stream_events(resp).await;
    assert!(broke);
    assert_eq!(openai_text(&events), "word0");
}

#[tokio::test]
async fn hang_never_answers() {
    let mock = MockProvider::start().await.unwrap();
    mock.push("gpt-test", Fault::Hang);
    let url = format!("{}/chat/completions", mock.openai_url());
    let c = client();
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        post(&c, &url, &[], &openai_body(false)),
    )
    .await;
    assert!(r.is_err(), "no answer expected");
    // Only that request hangs.
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn max_tokens_truncates_with_a_length_finish() {
    let mock = MockProvider::start().await.unwrap();
    let c = client();
    let mut body = openai_body(false);
    body["max_tokens"] = json!(3);
    let url = format!("{}/chat/completions", mock.openai_url());
    let v = body_json(post(&c, &url, &[], &body).await.unwrap()).await;
    assert_eq!(v["choices"][0]["message"]["content"], words(3));
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let mut body = anthropic_body(false);
    body["max_tokens"] = json!(2);
    let url = format!("{}/v1/messages", mock.url());
    let v = body_json(post(&c, &url, ANTHROPIC_HEADERS, &body).await.unwrap()).await;
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 2);

    let mut body = gemini_body();
    body["generationConfig"]["maxOutputTokens"] = json!(1);
    let v = body_json(
        post(&c, &gemini_url(&mock, "g", false), &[], &body)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
}

#[tokio::test]
async fn control_api_over_http() {
    let mock = MockProvider::start().await.unwrap();
    let c = client();
    let faults = format!("{}/_mock/faults", mock.url());
    let resp = post(
        &c,
        &faults,
        &[],
        &json!({"model": "gpt-test", "behaviour": {"answer": "one two three"}}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = post(
        &c,
        &faults,
        &[],
        &json!({"model": "gpt-test", "push": [
            {"kind": "status", "status": 429, "retry_after_ms": 20},
            {"kind": "cut_after", "chunks": 1},
        ]}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Typos are refused rather than ignored.
    for bad in [
        json!({"model": "x", "behaviour": {"latency": 5}}),
        json!({"model": "x", "push": {"kind": "explode"}}),
        json!({"model": "x"}),
    ] {
        let resp = post(&c, &faults, &[], &bad).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    let url = format!("{}/chat/completions", mock.openai_url());
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after-ms"], "20");
    body_bytes(resp).await;
    let (events, broke) =
        stream_events(post(&c, &url, &[], &openai_body(true)).await.unwrap()).await;
    assert!(broke);
    assert_eq!(openai_text(&events), "one");
    let v = body_json(post(&c, &url, &[], &openai_body(false)).await.unwrap()).await;
    assert_eq!(v["choices"][0]["message"]["content"], "one two three");

    let list = body_json(get(&c, &format!("{}/_mock/requests", mock.url())).await).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["format"], "openai");
    assert_eq!(list[0]["model"], "gpt-test");
    assert_eq!(list[1]["stream"], true);
    assert!(list[0]["at_ms"].as_u64().unwrap() > 0);
    // The 429, the cut stream and the whole answer were all ended by the mock.
    for (r, chunks) in list.iter().zip([0, 1, 0]) {
        assert_eq!(r["end"], "ended", "{r}");
        assert_eq!(r["chunks_sent"], chunks, "{r}");
    }
    assert_eq!(
        list[2]["id"].as_u64(),
        list[0]["id"].as_u64().map(|i| i + 2)
    );
    let filtered =
        body_json(get(&c, &format!("{}/_mock/requests?model=nope", mock.url())).await).await;
    assert_eq!(filtered, json!([]));

    let resp = post(&c, &format!("{}/_mock/reset", mock.url()), &[], &json!({}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(mock.requests().is_empty());
    let v = body_json(post(&c, &url, &[], &openai_body(false)).await.unwrap()).await;
    assert_eq!(v["choices"][0]["message"]["content"], words(20));
}

#[tokio::test]
async fn answers_record_whether_the_client_stayed() {
    use modelux::mock::AnswerEnd;
    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "slow",
        Behaviour {
            latency_ms: 2000,
            ..Behaviour::default()
        },
    );
    mock.set(
        "drip",
        Behaviour {
            words: Some(30),
            chunk_interval_ms: 50,
            ..Behaviour::default()
        },
    );
    let c = client();
    let url = format!("{}/chat/completions", mock.openai_url());
    let body = |model: &str, stream: bool| {
        let mut b = openai_body(stream);
        b["model"] = json!(model);
        b
    };
    let ends = |model: &str| {
        mock.requests_for(model)
            .into_iter()
            .map(|r| (r.end, r.chunks_sent))
            .collect::<Vec<_>>()
    };
    let settle = || tokio::time::sleep(Duration::from_millis(200));

    // Read to the end: ended, every chunk produced.
    let (events, broke) =
        stream_events(post(&c, &url, &[], &body("drip", true)).await.unwrap()).await;
    assert!(!broke);
    assert_eq!(openai_text(&events), words(30));
    settle().await;
    assert_eq!(ends("drip"), [(AnswerEnd::Ended, 30)]);

    // Leave after two chunks: abandoned, and the mock stopped producing.
    let resp = post(&c, &url, &[], &body("drip", true)).await.unwrap();
    let mut incoming = resp.into_body();
    let mut seen = 0;
    while seen < 2 {
        let frame = incoming.frame().await.unwrap().unwrap();
        if frame
            .data_ref()
            .is_some_and(|d| d.windows(4).any(|w| w == b"word"))
        {
            seen += 1;
        }
    }
    drop(incoming);
    settle().await;
    let (end, chunks) = ends("drip")[1];
    assert_eq!(end, AnswerEnd::Abandoned);
    assert!((2..10).contains(&chunks), "{chunks} of 30 chunks");
    // It stays that way: nothing is produced after the client left.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ends("drip")[1], (AnswerEnd::Abandoned, chunks));

    // Give up on a non-stream answer during its latency: open, then abandoned.
    let pending = tokio::spawn({
        let (c, url, body) = (c.clone(), url.clone(), body("slow", false));
        async move { post(&c, &url, &[], &body).await.map(|r| r.status()) }
    });
    settle().await;
    assert_eq!(ends("slow"), [(AnswerEnd::Open, 0)]);
    pending.abort();
    settle().await;
    assert_eq!(ends("slow"), [(AnswerEnd::Abandoned, 0)]);
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!("{}/chat/completions", mock.openai_url());
    let c = client();
    let resp = post(&c, &url, &[], &openai_body(false)).await.unwrap();
    body_bytes(resp).await;
    mock.shutdown();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(post(&client(), &url, &[], &openai_body(false))
        .await
        .is_err());
}

/// The crate's own OpenAI adapter reads the mock's answers and faults.
#[tokio::test]
async fn the_openai_adapter_understands_the_mock() {
    use futures_util::StreamExt;
    use modelux::provider::{
        http_client, AttemptRequest, Failure, OpenAi, ProviderResponse, Target,
    };

    let mock = MockProvider::start().await.unwrap();
    mock.set(
        "gpt-test",
        Behaviour {
            words: Some(6),
            ..Behaviour::default()
        },
    );
    let adapter = OpenAi::new(
        &mock.openai_url(),
        Some(modelux::Secret::new("sk-adapter")),
        http_client(),
    );
    let target = Arc::new(Target::new("mock", "gpt-test"));
    let chat = Arc::new(
        serde_json::from_value(json!({
            "model": "route",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
        }))
        .unwrap(),
    );

    let attempt = AttemptRequest::new(target.clone(), chat);
    let ProviderResponse::Stream(mut stream) =
        adapter.clone().oneshot(attempt.clone()).await.unwrap()
    else {
        panic!("expected a stream");
    };
    let mut text = String::new();
    let mut finish = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        text.push_str(&chunk.text());
        finish = finish.or(chunk.finish_reason().map(str::to_owned));
    }
    assert_eq!(text, words(6));
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(
        mock.requests()[0].auth.as_deref(),
        Some("Bearer sk-adapter")
    );
    assert_eq!(
        mock.requests()[0].body["stream_options"]["include_usage"],
        true
    );

    // Mid-stream continuation: the prefill is continued.
    let mut cont = attempt.clone();
    cont.prefill = Some("word0 word1".into());
    let ProviderResponse::Stream(stream) = adapter.clone().oneshot(cont).await.unwrap() else {
        panic!("expected a stream");
    };
    let text: String = stream
        .map(|c| c.unwrap().text().into_owned())
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(text, " word2 word3 word4 word5");

    // A cut stream is a StreamCut.
    mock.push("gpt-test", Fault::CutAfter { chunks: 2 });
    let ProviderResponse::Stream(stream) = adapter.clone().oneshot(attempt.clone()).await.unwrap()
    else {
        panic!("expected a stream");
    };
    let items: Vec<_> = stream.collect().await;
    assert_eq!(
        items.last().unwrap().as_ref().unwrap_err().failure,
        Failure::StreamCut
    );

    // A 429 with retry-after-ms is RateLimited with the hint.
    mock.push(
        "gpt-test",
        Fault::Status {
            status: 429,
            retry_after_s: None,
            retry_after_ms: Some(250),
            error: None,
        },
    );
    let err = adapter.clone().oneshot(attempt.clone()).await.unwrap_err();
    assert_eq!(err.failure, Failure::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_millis(250)));

    // A reset before headers is a connection failure.
    mock.push("gpt-test", Fault::ResetBeforeHeaders);
    let err = adapter.clone().oneshot(attempt).await.unwrap_err();
    assert_eq!(err.failure, Failure::Connect, "{err}");
}
