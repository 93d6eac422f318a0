//! OpenAI-kind answers reach the client as the provider's bytes: every
//! stream chunk's JSON and a whole completion's body go through unchanged,
//! unknown fields included, except where the gateway must rewrite a chunk.
//!
//! The upstream here is a canned HTTP/1.1 server, so the exact bytes it sends
//! are known.

mod common;

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Chunks as a vLLM-like provider writes them: fields the gateway does not
/// model, at every level, and a key order of its own.
const CHUNKS: &[&str] = &[
    r#"{"id":"up-1","object":"chat.completion.chunk","created":1741570283,"model":"up-model","choices":[{"index":0,"delta":{"role":"assistant","content":"","x_delta":{"k":[1,2]}},"logprobs":null,"finish_reason":null,"x_choice":true}],"x_top":"v","usage":null}"#,
    r#"{"model":"up-model","id":"up-1","created":1741570283,"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hello \"there\"\n"},"logprobs":{"content":[{"token":"Hello","logprob":-0.1,"bytes":[72],"top_logprobs":[]}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"up-1","object":"chat.completion.chunk","created":1741570283,"model":"up-model","choices":[{"index":0,"delta":{"content":"world"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"up-1","object":"chat.completion.chunk","created":1741570283,"model":"up-model","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":null}"#,
    r#"{"id":"up-1","object":"chat.completion.chunk","created":1741570283,"model":"up-model","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":4}}}"#,
];

/// A completion with fields the gateway does not model.
const COMPLETION: &str = r#"{"id":"up-2","object":"chat.completion","created":1741570283,"model":"up-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null,"annotations":[],"reasoning_content":"think"},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"completion_tokens_details":{"reasoning_tokens":0}},"service_tier":"default","system_fingerprint":"fp_x","prompt_logprobs":null}"#;

fn sse(chunks: &[&str]) -> String {
    let mut s = String::new();
    for c in chunks {
        s.push_str("data: ");
        s.push_str(c);
        s.push_str("\n\n");
    }
    s.push_str("data: [DONE]\n\n");
    s
}

/// Serves `stream` to streaming requests and `complete` to the others, on
/// keep-alive HTTP/1.1 connections. Returns the base URL.
async fn canned(stream: String, complete: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let answers = Arc::new((stream, complete));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let answers = answers.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match s.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                    let body: Value =
                        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
                    buf.drain(..head_end + len);
                    let (ct, answer) = if body["stream"] == true {
                        ("text/event-stream", &answers.0)
                    } else {
                        ("application/json", &answers.1)
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

async fn gateway(url: String) -> common::Harness {
    common::start(move |_| {
        json!({
            "providers": {"up": {"kind": "openai", "base_url": url}},
            "models": {"m": {"provider": "up", "upstream_model": "up-model"}},
            "routes": {"default": {"attempts": [{"model": "m", "timeout_ms": 5000}]}}
        })
    })
    .await
}

#[tokio::test]
async fn stream_chunks_reach_the_client_byte_for_byte() {
    let h = gateway(canned(sse(CHUNKS), COMPLETION.to_owned()).await).await;
    let mut body = common::chat("default", true);
    body["stream_options"] = json!({"include_usage": true});
    let s = h.stream(&body).await;
    assert_eq!(s.status, 200);
    let data: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
    let mut want: Vec<&str> = CHUNKS.to_vec();
    want.push("[DONE]");
    assert_eq!(data, want, "every chunk exactly as the provider sent it");
    assert_eq!(s.text(), "Hello \"there\"\nworld");
}

#[tokio::test]
async fn usage_the_client_did_not_ask_for_is_dropped() {
    let h = gateway(canned(sse(CHUNKS), COMPLETION.to_owned()).await).await;
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.status, 200);
    assert!(s.usage().is_none(), "usage was not asked for");
    let data: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
    let mut want: Vec<&str> = CHUNKS[..4].to_vec();
    want.push("[DONE]");
    assert_eq!(data, want);
}

#[tokio::test]
async fn usage_inside_content_chunks_is_removed_from_those_chunks_only() {
    // A provider that reports usage on every chunk (vLLM's
    // continuous_usage_stats): those chunks are rewritten without it.
    let with_usage = CHUNKS[2].replace(
        r#""usage":null"#,
        r#""usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#,
    );
    let chunks = [
        CHUNKS[0],
        CHUNKS[1],
        with_usage.as_str(),
        CHUNKS[3],
        CHUNKS[4],
    ];
    let h = gateway(canned(sse(&chunks), COMPLETION.to_owned()).await).await;
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.events[0].data, CHUNKS[0]);
    assert_eq!(s.events[1].data, CHUNKS[1]);
    let rewritten = s.events[2].json().unwrap();
    assert!(rewritten.get("usage").is_none(), "{rewritten}");
    assert_eq!(rewritten["choices"][0]["delta"]["content"], "world");
    assert_eq!(rewritten["id"], "up-1");
    assert_eq!(s.events[3].data, CHUNKS[3]);
    assert!(s.done());
    assert_eq!(s.events.len(), 5, "no usage chunk: {:?}", s.events);
}

/// A provider that puts `usage` on its finish chunk and sends no usage-only
/// chunk (older llama.cpp, Mistral-style servers): a client that asked for
/// usage gets that usage once, not the real one followed by an estimate.
#[tokio::test]
async fn usage_on_the_finish_chunk_is_the_only_usage_the_client_gets() {
    let fin = CHUNKS[3].replace(
        r#""usage":null"#,
        r#""usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}"#,
    );
    let chunks = [CHUNKS[0], CHUNKS[1], CHUNKS[2], fin.as_str()];
    let h = gateway(canned(sse(&chunks), COMPLETION.to_owned()).await).await;
    let mut body = common::chat("default", true);
    body["stream_options"] = json!({"include_usage": true});
    let s = h.stream(&body).await;
    assert_eq!(s.status, 200);
    let with_usage = s
        .events
        .iter()
        .filter(|e| e.json().is_some_and(|v| v["usage"].is_object()))
        .count();
    assert_eq!(
        with_usage, 1,
        "one usage, no estimate after it: {:?}",
        s.events
    );
    let usage = s.usage().unwrap();
    assert_eq!(
        (&usage["prompt_tokens"], &usage["completion_tokens"]),
        (&json!(9), &json!(3))
    );
    let data: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, [CHUNKS[0], CHUNKS[1], CHUNKS[2], &fin, "[DONE]"]);
}

/// OpenRouter sends a failure mid-generation as an ordinary chunk with a
/// top-level `error` and `finish_reason: "error"`. After content, with
/// nothing to continue on, the stream ends with an error event and no
/// `[DONE]`, not as a finished answer.
#[tokio::test]
async fn a_chunk_carrying_an_error_ends_the_stream_with_an_error() {
    const OPENROUTER_ERR: &str = r#"{"id":"up-1","object":"chat.completion.chunk","created":1741570283,"model":"up-model","error":{"code":"server_error","message":"Provider disconnected unexpectedly"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
    let chunks = [CHUNKS[0], CHUNKS[1], OPENROUTER_ERR];
    let h = gateway(canned(sse(&chunks), COMPLETION.to_owned()).await).await;
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.text(), "Hello \"there\"\n");
    assert!(
        !s.done(),
        "a failed stream ends without [DONE]: {:?}",
        s.events
    );
    assert!(
        s.finish_reasons().is_empty(),
        "no finish reaches the client: {:?}",
        s.events
    );
    let err = s.error().expect("an error event");
    assert_eq!(err["error"]["code"], "5xx", "{err}");
    let last = s.events.last().unwrap().json().unwrap();
    assert_eq!(last, err, "the error event is the last");
    let t = h.trace(&s.header("x-modelux-request-id")).await;
    assert_ne!(t["outcome"]["class"], "ok", "{t:#}");
}

#[tokio::test]
async fn a_completion_reaches_the_client_byte_for_byte() {
    let h = gateway(canned(sse(CHUNKS), COMPLETION.to_owned()).await).await;
    let resp = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&common::chat("default", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(resp.text().await.unwrap(), COMPLETION);
}

#[tokio::test]
async fn the_trace_counts_usage_of_a_kept_completion() {
    let h = gateway(canned(sse(CHUNKS), COMPLETION.to_owned()).await).await;
    let a = h.post(&common::chat("default", false)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content(), "Hi");
    let t = h.trace(&a.header("x-modelux-request-id")).await;
    assert_eq!(t["usage"]["total_tokens"], 10, "{t:#}");
}

#[tokio::test]
async fn incomplete_provider_json_is_completed_as_before() {
    // No `object` and no `created`: the gateway fills them in, as it
    // always did, so the client still gets the full OpenAI format.
    let bare = [
        r#"{"id":"b","model":"up-model","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#,
        r#"{"id":"b","model":"up-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ];
    let completion = r#"{"id":"b","model":"up-model","choices":[{"message":{"content":"x"}}]}"#;
    let h = gateway(canned(sse(&bare), completion.to_owned()).await).await;
    let s = h.stream(&common::chat("default", true)).await;
    let first = s.events[0].json().unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["created"], 0);
    assert_eq!(s.text(), "x");
    let a = h.post(&common::chat("default", false)).await;
    assert_eq!(a.body["object"], "chat.completion");
    assert_eq!(a.body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(a.content(), "x");
}
