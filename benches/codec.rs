//! Wire-format costs: SSE decode and encode, per-chunk parse and translation
//! of each provider's stream, and the client request's parse and serialise.
//!
//! ```text
//! cargo bench --bench codec
//! ```
//!
//! The Anthropic and Gemini stream translators are private to their adapters,
//! so they are measured two ways:
//!
//! * `proxy_*`: what is public and dominates the translator: `SseDecoder`
//!   over the provider's real stream, then `serde_json` of each event's data
//!   into a `serde_json::Value` (the adapters parse into private typed structs,
//!   usually cheaper than a `Value`, and then build one `ChatChunk`).
//! * `adapter_*`: the real adapters (`OpenAi`, `Anthropic`, `Gemini` from
//!   `modelux::provider`) driven through their public `Service` against a
//!   canned HTTP/1.1 response on loopback (keep-alive, a 200-word stream sent
//!   in one write), draining the `Chunk` stream. This is the
//!   whole per-event path of a real upstream stream: hyper body frames, SSE
//!   decode, parse, translation, the async stream; the request and the HTTP
//!   exchange are spread over the 200 events.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use futures::StreamExt;
use modelux::api::{ChatChunk, ChatRequest};
use modelux::provider::{
    http_client, Anthropic, AttemptRequest, Gemini, OpenAi, ProviderResponse, Target,
};
use modelux::sse::{encode_json, SseDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

/// Content events in the adapters' canned streams.
const ADAPTER_WORDS: usize = 200;
/// Content events in the decode benches' OpenAI stream.
const DECODE_WORDS: usize = 18;

/// Odd read sizes the decode benches split streams into, in turn.
const READS: &[usize] = &[37, 5, 211, 1, 97, 13, 509, 61];

/// The words the canned answers are made of, in turn.
const ANSWER: &str =
    " The second volume, The Confusion, is in stock in paperback; delivery to Lyon takes three to five working days.";

fn word(i: usize) -> String {
    let words: Vec<&str> = ANSWER.split_whitespace().collect();
    // Each word with its leading space, as a model streams it.
    format!(" {}", words[i % words.len()])
}

/// A realistic ~2 KB Chat Completions request: system prompt, a tool round
/// trip, content parts, a tool declaration, sampling parameters and fields
/// the gateway does not model (kept in `extra`).
const REQUEST_2K: &str = r#"{
  "model": "default",
  "messages": [
    {"role": "system", "content": "You are the order assistant of an online bookshop. Answer briefly and precisely. When the customer asks about stock or delivery, call the lookup_stock tool first; never guess prices. Quote delivery times in working days and mention the carrier when known."},
    {"role": "user", "content": [{"type": "text", "text": "Hello! Do you have the second volume of the Baroque Cycle in paperback? And how long would delivery to Lyon take if I order today before noon?"}]},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_Qw3rTy8uIo", "type": "function", "function": {"name": "lookup_stock", "arguments": "{\"title\":\"The Confusion\",\"format\":\"paperback\",\"destination\":\"Lyon, FR\"}"}}]},
    {"role": "tool", "tool_call_id": "call_Qw3rTy8uIo", "content": "{\"in_stock\":true,\"quantity\":7,\"price_eur\":14.9,\"carrier\":\"Colissimo\",\"delivery_days\":[3,5]}"},
    {"role": "assistant", "content": "Yes: The Confusion is in stock in paperback (7 copies, 14.90 EUR). Delivery to Lyon with Colissimo takes 3 to 5 working days."},
    {"role": "user", "content": "Great. Could you also check whether the third volume, The System of the World, is available in the same format, and whether both can ship together?"}
  ],
  "tools": [{"type": "function", "function": {"name": "lookup_stock", "description": "Stock, price and delivery estimate of a book in a given format.", "parameters": {"type": "object", "properties": {"title": {"type": "string"}, "format": {"type": "string", "enum": ["paperback", "hardcover", "ebook"]}, "destination": {"type": "string"}}, "required": ["title", "format"]}}}],
  "tool_choice": "auto",
  "temperature": 0.2,
  "top_p": 0.95,
  "max_tokens": 400,
  "stream": false,
  "user": "customer-4812",
  "seed": 42,
  "metadata": {"session": "a81f3c2e", "channel": "web"}
}"#;

fn openai_event(i: usize, n: usize) -> String {
    let head = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":"#;
    let body = if i == 0 {
        r#"[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#.to_owned()
    } else if i <= n {
        format!(
            r#"[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#,
            serde_json::to_string(&word(i - 1)).expect("json")
        )
    } else if i == n + 1 {
        r#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#
            .to_owned()
    } else {
        format!(
            r#"[],"usage":{{"prompt_tokens":412,"completion_tokens":{n},"total_tokens":{}}}}}"#,
            412 + n
        )
    };
    format!("{head}{body}")
}

/// An OpenAI stream of `n` words: role chunk, words, finish, usage, `[DONE]`.
fn openai_stream(n: usize) -> (Vec<u8>, usize) {
    let mut s = String::new();
    for i in 0..n + 3 {
        s.push_str("data: ");
        s.push_str(&openai_event(i, n));
        s.push_str("\n\n");
    }
    s.push_str("data: [DONE]\n\n");
    (s.into_bytes(), n + 4)
}

/// A non-streaming OpenAI completion of `n` words, with the fields OpenAI
/// sends today (`refusal`, `annotations`, `logprobs`, usage details).
fn openai_completion(n: usize) -> String {
    let text: String = (0..n).map(word).collect();
    format!(
        r#"{{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":{},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":412,"completion_tokens":{n},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"service_tier":"default","system_fingerprint":"fp_eb9dce56a8"}}"#,
        serde_json::to_string(text.trim_start()).expect("json"),
        412 + n
    )
}

/// An Anthropic Messages stream of `n` words.
fn anthropic_stream(n: usize) -> (Vec<u8>, usize) {
    let mut s = String::new();
    let mut ev = |name: &str, data: String| {
        s.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    ev("message_start", r#"{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":412,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#.to_owned());
    ev(
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
            .to_owned(),
    );
    ev("ping", r#"{"type": "ping"}"#.to_owned());
    for i in 0..n {
        ev(
            "content_block_delta",
            format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                serde_json::to_string(&word(i)).expect("json")
            ),
        );
    }
    ev(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#.to_owned(),
    );
    ev(
        "message_delta",
        format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{n}}}}}"#
        ),
    );
    ev("message_stop", r#"{"type":"message_stop"}"#.to_owned());
    (s.into_bytes(), n + 6)
}

/// A Gemini `streamGenerateContent?alt=sse` stream of `n` words (CRLF, usage
/// on every event, the finish on the last one).
fn gemini_stream(n: usize) -> (Vec<u8>, usize) {
    let mut s = String::new();
    for i in 0..n {
        let finish = if i + 1 == n {
            r#","finishReason":"STOP""#
        } else {
            ""
        };
        s.push_str(&format!(
            "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": {}}}],\"role\": \"model\"}}{finish},\"index\": 0}}],\"usageMetadata\": {{\"promptTokenCount\": 412,\"candidatesTokenCount\": {},\"totalTokenCount\": {}}},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mSFjaOXbN8GB7dcPp5ap6Ac\"}}\r\n\r\n",
            serde_json::to_string(&word(i)).expect("json"),
            i + 1,
            413 + i
        ));
    }
    (s.into_bytes(), n)
}

fn split_reads(bytes: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < bytes.len() {
        let n = READS[k % READS.len()].min(bytes.len() - at);
        out.push(Bytes::copy_from_slice(&bytes[at..at + n]));
        at += n;
        k += 1;
    }
    out
}

/// Decodes `reads` and hands each event's data to `f`; returns the events.
fn decode(reads: &[Bytes], mut f: impl FnMut(&str)) -> usize {
    let mut d = SseDecoder::new();
    let mut n = 0;
    for r in reads {
        d.push(r);
        while let Some(ev) = d.next_event().expect("framing") {
            f(&ev.data);
            n += 1;
        }
    }
    n
}

fn bench_sse(c: &mut Criterion) {
    let (openai, openai_events) = openai_stream(DECODE_WORDS);
    let (anthropic, anthropic_events) = anthropic_stream(DECODE_WORDS);
    let (gemini, gemini_events) = gemini_stream(DECODE_WORDS);
    let openai_reads = split_reads(&openai);
    let anthropic_reads = split_reads(&anthropic);
    let gemini_reads = split_reads(&gemini);
    assert_eq!(decode(&openai_reads, |_| {}), openai_events);
    assert_eq!(decode(&anthropic_reads, |_| {}), anthropic_events);
    assert_eq!(decode(&gemini_reads, |_| {}), gemini_events);

    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Elements(openai_events as u64));
    g.bench_function("decode_openai", |b| {
        b.iter(|| decode(&openai_reads, |d| _ = std::hint::black_box(d)))
    });
    g.bench_function("decode_parse_openai", |b| {
        b.iter(|| {
            decode(&openai_reads, |d| {
                if d != "[DONE]" {
                    let c: ChatChunk = serde_json::from_str(d).expect("chunk");
                    std::hint::black_box(c);
                }
            })
        })
    });
    g.throughput(Throughput::Elements(anthropic_events as u64));
    g.bench_function("proxy_anthropic", |b| {
        b.iter(|| {
            decode(&anthropic_reads, |d| {
                let v: serde_json::Value = serde_json::from_str(d).expect("event");
                std::hint::black_box(v);
            })
        })
    });
    g.throughput(Throughput::Elements(gemini_events as u64));
    g.bench_function("proxy_gemini", |b| {
        b.iter(|| {
            decode(&gemini_reads, |d| {
                let v: serde_json::Value = serde_json::from_str(d).expect("event");
                std::hint::black_box(v);
            })
        })
    });

    // One content chunk as the adapters produce it, and its encoding.
    let data = openai_event(3, DECODE_WORDS);
    let chunk: ChatChunk = serde_json::from_str(&data).expect("chunk");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_chunk", |b| b.iter(|| encode_json(&chunk)));
    g.bench_function("parse_chunk", |b| {
        b.iter(|| serde_json::from_str::<ChatChunk>(std::hint::black_box(&data)).expect("chunk"))
    });
    g.bench_function("parse_chunk_as_value", |b| {
        b.iter(|| {
            serde_json::from_str::<serde_json::Value>(std::hint::black_box(&data)).expect("json")
        })
    });
    g.finish();
}

fn bench_request(c: &mut Criterion) {
    let bytes = REQUEST_2K.as_bytes();
    let req: ChatRequest = serde_json::from_slice(bytes).expect("request");
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("parse_2k", |b| {
        b.iter(|| serde_json::from_slice::<ChatRequest>(std::hint::black_box(bytes)).expect("ok"))
    });
    g.bench_function("parse_2k_as_value", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde_json::Value>(std::hint::black_box(bytes)).expect("ok")
        })
    });
    g.bench_function("serialize_2k", |b| {
        b.iter(|| serde_json::to_vec(std::hint::black_box(&req)).expect("ok"))
    });
    g.finish();
}

/// Canned responses, by path.
struct Canned {
    openai: Vec<u8>,
    /// A non-streaming completion, for paths under `/complete/`.
    openai_complete: Vec<u8>,
    anthropic: Vec<u8>,
    gemini: Vec<u8>,
}

fn http_response(body: &[u8]) -> Vec<u8> {
    http_response_as(body, "text/event-stream")
}

fn http_response_as(body: &[u8], content_type: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncache-control: no-cache\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A keep-alive HTTP/1.1 connection answering every request with the canned
/// stream for its path.
async fn serve_conn(mut s: TcpStream, canned: Arc<Canned>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        buf.drain(..head_end + len);
        let resp = if path.contains("/complete/") {
            &canned.openai_complete
        } else if path.contains("/chat/completions") {
            &canned.openai
        } else if path.contains("/messages") {
            &canned.anthropic
        } else {
            &canned.gemini
        };
        if s.write_all(resp).await.is_err() {
            return;
        }
    }
}

async fn canned_server(canned: Arc<Canned>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(serve_conn(s, canned.clone()));
        }
    });
    addr
}

async fn run_adapter<S>(svc: &mut S, req: AttemptRequest) -> usize
where
    S: Service<AttemptRequest, Response = ProviderResponse>,
    S::Error: std::fmt::Debug,
{
    let resp = svc
        .ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("stream");
    let ProviderResponse::Stream(mut s) = resp else {
        panic!("asked for a stream");
    };
    let mut n = 0;
    while let Some(c) = s.next().await {
        c.expect("chunk");
        n += 1;
    }
    n
}

fn bench_adapters(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let canned = Arc::new(Canned {
        openai: http_response(&openai_stream(ADAPTER_WORDS).0),
        openai_complete: http_response_as(
            openai_completion(ADAPTER_WORDS).as_bytes(),
            "application/json",
        ),
        anthropic: http_response(&anthropic_stream(ADAPTER_WORDS).0),
        gemini: http_response(&gemini_stream(ADAPTER_WORDS).0),
    });
    let addr = rt.block_on(canned_server(canned));
    let base = format!("http://{addr}");
    let client = http_client();
    let mut openai = OpenAi::new(&format!("{base}/v1"), None, client.clone());
    let mut anthropic = Anthropic::new(&base, None, client.clone());
    let mut gemini = Gemini::new(&base, None, client);

    let mut chat: ChatRequest = serde_json::from_str(
        r#"{"model":"default","messages":[{"role":"user","content":"Is the second volume of the Baroque Cycle in stock?"}],"max_tokens":400}"#,
    )
    .expect("chat");
    chat.stream = Some(true);
    let chat = Arc::new(chat);
    let req = |p: &str, m: &str| AttemptRequest::new(Arc::new(Target::new(p, m)), chat.clone());
    let (ro, ra, rg) = (
        req("openai", "gpt-4o-mini"),
        req("anthropic", "claude-haiku-4-5"),
        req("google", "gemini-2.5-flash"),
    );
    // Sanity: every stream translates into the words plus its framing chunks.
    rt.block_on(async {
        assert!(run_adapter(&mut openai, ro.clone()).await >= ADAPTER_WORDS);
        assert!(run_adapter(&mut anthropic, ra.clone()).await >= ADAPTER_WORDS);
        assert!(run_adapter(&mut gemini, rg.clone()).await >= ADAPTER_WORDS);
    });

    let mut g = c.benchmark_group("adapter");
    g.throughput(Throughput::Elements(ADAPTER_WORDS as u64));
    g.bench_function("openai_stream_200", |b| {
        b.to_async(&rt)
            .iter(|| run_adapter_owned(openai.clone(), ro.clone()))
    });
    g.bench_function("anthropic_stream_200", |b| {
        b.to_async(&rt)
            .iter(|| run_adapter_owned(anthropic.clone(), ra.clone()))
    });
    g.bench_function("gemini_stream_200", |b| {
        b.to_async(&rt)
            .iter(|| run_adapter_owned(gemini.clone(), rg.clone()))
    });
    g.finish();
}

async fn run_adapter_owned<S>(mut svc: S, req: AttemptRequest) -> usize
where
    S: Service<AttemptRequest, Response = ProviderResponse>,
    S::Error: std::fmt::Debug,
{
    run_adapter(&mut svc, req).await
}

/// The summary's rows: label | group/bench | what one iteration is divided
/// by (`openai`, `anthropic`, `gemini`: events of the decode benches'
/// streams; `adapter`: content events of the canned streams; `1`).
const SUMMARY: &str = "\
SSE decode, OpenAI stream, per event                 | sse/decode_openai            | openai
SSE decode + ChatChunk parse, per event              | sse/decode_parse_openai      | openai
proxy: Anthropic decode + Value parse, per event     | sse/proxy_anthropic          | anthropic
proxy: Gemini decode + Value parse, per event        | sse/proxy_gemini             | gemini
encode_json(ChatChunk)                               | sse/encode_chunk             | 1
ChatChunk parse                                      | sse/parse_chunk              | 1
same chunk as serde_json::Value                      | sse/parse_chunk_as_value     | 1
OpenAi adapter, canned stream, per content event     | adapter/openai_stream_200    | adapter
Anthropic adapter, canned stream, per content event  | adapter/anthropic_stream_200 | adapter
Gemini adapter, canned stream, per content event     | adapter/gemini_stream_200    | adapter
ChatRequest parse, 2 KB                              | request/parse_2k             | 1
same request as serde_json::Value                    | request/parse_2k_as_value    | 1
ChatRequest serialise, 2 KB                          | request/serialize_2k         | 1";

fn summary() {
    let per = |what: &str| match what {
        "openai" => openai_stream(DECODE_WORDS).1,
        "anthropic" => anthropic_stream(DECODE_WORDS).1,
        "gemini" => gemini_stream(DECODE_WORDS).1,
        "adapter" => ADAPTER_WORDS,
        _ => 1,
    };
    println!();
    println!(
        "modelux codec costs: mean per operation in this run (request: {} bytes)",
        REQUEST_2K.len()
    );
    for line in SUMMARY.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let [label, id, div] = cols[..] else {
            continue;
        };
        let Some((g, n)) = id.split_once('/') else {
            continue;
        };
        if let Some(m) = common::mean_ns(g, n) {
            println!("{label:<55} {:>12}", common::fmt_ns(m / per(div) as f64));
        }
    }
}

/// `MODELUX_PROFILE=request_parse|request_parse_value`: `MODELUX_PROFILE_N`
/// parses of the 2 KB request, typed or as a `Value`.
///
/// `MODELUX_PROFILE=openai_stream|openai_complete`: `MODELUX_PROFILE_N`
/// (default 100) requests through the real `OpenAi` adapter against the
/// canned server, each answer turned into the bytes the gateway handler
/// sends (every chunk as an SSE event; the completion as its JSON body),
/// without criterion, for `valgrind --tool=callgrind`. Subtract an N=0 run
/// for the setup.
fn profile(what: &str) {
    let n: usize = std::env::var("MODELUX_PROFILE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    if let Some(kind) = what.strip_prefix("request_parse") {
        // `request_parse` (typed) or `request_parse_value`: N parses of the 2 KB request.
        let bytes = REQUEST_2K.as_bytes();
        for _ in 0..n {
            if kind.is_empty() {
                std::hint::black_box(serde_json::from_slice::<ChatRequest>(bytes).expect("ok"));
            } else {
                std::hint::black_box(
                    serde_json::from_slice::<serde_json::Value>(bytes).expect("ok"),
                );
            }
        }
        eprintln!("profiled {n} × {what}");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let canned = Arc::new(Canned {
        openai: http_response(&openai_stream(ADAPTER_WORDS).0),
        openai_complete: http_response_as(
            openai_completion(ADAPTER_WORDS).as_bytes(),
            "application/json",
        ),
        anthropic: Vec::new(),
        gemini: Vec::new(),
    });
    let addr = rt.block_on(canned_server(canned));
    let stream = what == "openai_stream";
    let path = if stream { "v1" } else { "complete/v1" };
    let openai = OpenAi::new(&format!("http://{addr}/{path}"), None, http_client());
    let mut chat: ChatRequest = serde_json::from_str(
        r#"{"model":"default","messages":[{"role":"user","content":"Is the second volume of the Baroque Cycle in stock?"}],"max_tokens":400}"#,
    )
    .expect("chat");
    chat.stream = Some(stream);
    let req = AttemptRequest::new(
        Arc::new(Target::new("openai", "gpt-4o-mini")),
        Arc::new(chat),
    );
    let mut bytes = 0usize;
    rt.block_on(async {
        for _ in 0..n {
            match openai.clone().oneshot(req.clone()).await.expect("answer") {
                ProviderResponse::Stream(mut s) => {
                    while let Some(c) = s.next().await {
                        bytes += handler_chunk_bytes(c.expect("chunk")).len();
                    }
                }
                ProviderResponse::Complete(c) => bytes += handler_body_bytes(c).len(),
            }
        }
    });
    eprintln!("profiled {n} × {what}: {bytes} bytes sent");
}

/// What the gateway handler sends for one chunk.
fn handler_chunk_bytes(c: modelux::provider::Chunk) -> Bytes {
    c.to_sse()
}

/// What the gateway handler sends for a completion.
fn handler_body_bytes(c: modelux::provider::Completion) -> Bytes {
    c.to_json()
}

/// `MODELUX_PROFILE=sse`: decodes the OpenAI stream `MODELUX_PROFILE_N`
/// times (default 2,000) without criterion, for `valgrind --tool=callgrind`.
fn profile_sse() {
    let n: usize = std::env::var("MODELUX_PROFILE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let (openai, events) = openai_stream(DECODE_WORDS);
    let reads = split_reads(&openai);
    for _ in 0..n {
        std::hint::black_box(decode(&reads, |d| _ = std::hint::black_box(d)));
    }
    eprintln!("profiled {n} × {events} events");
}

fn main() {
    if let Ok(what) = std::env::var("MODELUX_PROFILE") {
        if what == "sse" {
            profile_sse();
        } else {
            profile(&what);
        }
        return;
    }
    let mut c = common::criterion();
    bench_sse(&mut c);
    bench_request(&mut c);
    bench_adapters(&mut c);
    c.final_summary();
    summary();
}
