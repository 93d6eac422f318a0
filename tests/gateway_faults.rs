//! End-to-end fault injection: the fake provider misbehaves in each way the
//! gateway claims to handle, over real HTTP on loopback. Every test checks
//! what the client saw and reads the decision trace (by the response's
//! `x-modelux-request-id`) to check that it tells what happened.

mod common;

use std::time::{Duration, Instant};

use modelux::mock::{Behaviour, ErrorFlavor, Fault, MockProvider};
use serde_json::{json, Value};

use common::{chat, providers, Answer, Harness, Streamed};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `"word0 word1 … word{n-1}"`: the mock's deterministic answer.
fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The mock's default answer (20 words).
fn full() -> String {
    words(modelux::mock::DEFAULT_WORDS)
}

/// Models used by the route tests: an OpenAI-kind primary, an
/// Anthropic-kind secondary that accepts a prefill, a Gemini-kind tertiary
/// and an Anthropic-kind model without prefill.
fn models() -> Value {
    json!({
        "primary": {"provider": "oa", "upstream_model": "m-primary"},
        "secondary": {"provider": "an", "upstream_model": "m-secondary", "prefill": true},
        "tertiary": {"provider": "ge", "upstream_model": "m-tertiary"},
        "plain": {"provider": "an", "upstream_model": "m-plain"}
    })
}

/// A config with one route `r` over `attempts` (model, timeout_ms), small
/// backoffs, and the policy fields of `policy` on top.
fn config(mock: &MockProvider, attempts: &[(&str, u64)], policy: Value) -> Value {
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|(m, t)| json!({"model": m, "timeout_ms": t}))
        .collect();
    let mut route = json!({
        "attempts": attempts,
        "backoff_base_ms": 10,
        "backoff_max_ms": 40,
        "total_budget_ms": 5000
    });
    if let (Some(r), Some(p)) = (route.as_object_mut(), policy.as_object()) {
        for (k, v) in p {
            r.insert(k.clone(), v.clone());
        }
    }
    json!({"providers": providers(mock), "models": models(), "routes": {"r": route}})
}

fn status_fault(status: u16, retry_after_s: Option<u64>, retry_after_ms: Option<u64>) -> Fault {
    Fault::Status {
        status,
        retry_after_s,
        retry_after_ms,
        error: None,
    }
}

fn failing(fault: Fault) -> Behaviour {
    Behaviour {
        fault: Some(fault),
        ..Behaviour::default()
    }
}

async fn trace_of_answer(h: &Harness, a: &Answer) -> Value {
    let id = a.header("x-modelux-request-id");
    assert!(!id.is_empty(), "no x-modelux-request-id header");
    h.trace(&id).await
}

async fn trace_of_stream(h: &Harness, s: &Streamed) -> Value {
    let id = s.header("x-modelux-request-id");
    assert!(!id.is_empty(), "no x-modelux-request-id header");
    h.trace(&id).await
}

fn attempts(trace: &Value) -> Vec<Value> {
    trace["attempts"].as_array().cloned().unwrap_or_default()
}

fn attempt_field(trace: &Value, field: &str) -> Vec<String> {
    attempts(trace)
        .iter()
        .map(|a| match &a[field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The details of every decision of `kind`.
fn decisions(trace: &Value, kind: &str) -> Vec<String> {
    trace["decisions"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter(|d| d["kind"] == kind)
                .map(|d| d["detail"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn decision_kinds(trace: &Value) -> Vec<String> {
    trace["decisions"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| d["kind"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The text of a message's `content` (a string, or a list of text blocks).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// Checks that a stream is one clean answer: the full text once, one normal
/// finish, `[DONE]` last, one chunk id, no error event.
fn assert_clean_stream(s: &Streamed, text: &str) {
    assert_eq!(s.status, 200);
    assert!(
        s.error().is_none(),
        "unexpected error event: {:?}",
        s.error()
    );
    assert_eq!(s.text(), text, "the client's text");
    assert_eq!(s.finish_reasons(), ["stop"], "exactly one normal finish");
    assert!(s.done(), "the stream must end with [DONE]");
    let ids: Vec<String> = s
        .events
        .iter()
        .filter_map(|e| e.json())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    assert!(!ids.is_empty());
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one answer carries one chunk id: {ids:?}"
    );
    let roles = s
        .events
        .iter()
        .filter_map(|e| e.json())
        .filter(|v| v["choices"][0]["delta"]["role"].is_string())
        .count();
    assert!(roles <= 1, "at most one role chunk, got {roles}");
}

fn stream_body(model: &str) -> Value {
    chat(model, true)
}

fn ms(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a number of ms, got {v}"))
}

// ---------------------------------------------------------------------------
// 1. Rate limits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rate_limited_with_retry_after_waits_and_retries_same_target() {
    let h = common::start(|m| {
        config(
            m,
            &[("primary", 800), ("secondary", 800)],
            json!({"retry_after_cap_ms": 1000}),
        )
    })
    .await;
    h.mock.push("m-primary", status_fault(429, None, Some(200)));

    let t0 = Instant::now();
    let a = h.post(&chat("r", false)).await;
    let elapsed = t0.elapsed();

    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "oa");
    assert_eq!(a.header("x-modelux-attempts"), "2");
    assert!(
        elapsed >= Duration::from_millis(190),
        "the retry must wait the Retry-After of 200 ms, took {elapsed:?}"
    );
    assert_eq!(h.mock.request_count("m-primary"), 2);
    assert_eq!(h.mock.request_count("m-secondary"), 0);

    let t = trace_of_answer(&h, &a).await;
    let at = attempts(&t);
    assert_eq!(at.len(), 2, "{t:#}");
    assert_eq!(at[0]["outcome"], "429");
    assert_eq!(at[0]["status"], 429);
    assert_eq!(at[0]["retry_after_ms"], 200);
    assert_eq!(at[1]["kind"], "retry");
    assert_eq!(at[1]["target"], "oa/primary");
    assert_eq!(at[1]["outcome"], "ok");
    assert_eq!(at[1]["backoff_ms"], 200);
    assert!(
        ms(&at[1]["start_ms"]) >= ms(&at[0]["start_ms"]) + 190,
        "the retry started before the Retry-After ran out: {t:#}"
    );
    let retries = decisions(&t, "retry");
    assert_eq!(retries.len(), 1, "{t:#}");
    assert!(
        retries[0].contains("200 ms") && retries[0].contains("retry-after"),
        "{}",
        retries[0]
    );
    assert!(decisions(&t, "fallback").is_empty());
    assert_eq!(t["outcome"]["status"], 200);
    assert_eq!(t["outcome"]["served_by"], "oa/primary");
}

#[tokio::test]
async fn rate_limited_without_retry_after_backs_off_and_retries() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.push("m-primary", Fault::status(429));

    let a = h.post(&chat("r", false)).await;

    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "oa");
    assert_eq!(a.header("x-modelux-attempts"), "2");
    assert_eq!(h.mock.request_count("m-secondary"), 0);

    let t = trace_of_answer(&h, &a).await;
    let at = attempts(&t);
    assert_eq!(at.len(), 2, "{t:#}");
    assert_eq!(at[0]["outcome"], "429");
    assert!(at[0].get("retry_after_ms").is_none(), "{t:#}");
    assert_eq!(at[1]["kind"], "retry");
    assert_eq!(at[1]["outcome"], "ok");
    // Full jitter over [0, backoff_base_ms = 10].
    assert!(ms(&at[1]["backoff_ms"]) <= 10, "{t:#}");
    let retries = decisions(&t, "retry");
    assert_eq!(retries.len(), 1, "{t:#}");
    assert!(retries[0].contains("backoff"), "{}", retries[0]);
}

#[tokio::test]
async fn rate_limited_with_retry_after_over_cap_advances_at_once() {
    let h = common::start(|m| {
        config(
            m,
            &[("primary", 800), ("secondary", 800)],
            json!({"retry_after_cap_ms": 1000}),
        )
    })
    .await;
    // Retry-After: 5 (seconds), far over the 1 s cap.
    h.mock.push("m-primary", status_fault(429, Some(5), None));

    let t0 = Instant::now();
    let a = h.post(&chat("r", false)).await;
    let elapsed = t0.elapsed();

    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "an");
    assert_eq!(a.header("x-modelux-model"), "secondary");
    assert!(
        elapsed < Duration::from_millis(2500),
        "the router must not wait for a Retry-After over the cap, took {elapsed:?}"
    );
    assert_eq!(h.mock.request_count("m-primary"), 1);
    assert_eq!(h.mock.request_count("m-secondary"), 1);

    let t = trace_of_answer(&h, &a).await;
    let at = attempts(&t);
    assert_eq!(at.len(), 2, "{t:#}");
    assert_eq!(at[0]["outcome"], "429");
    assert_eq!(at[0]["retry_after_ms"], 5000);
    assert_eq!(at[1]["kind"], "fallback");
    assert_eq!(at[1]["target"], "an/secondary");
    let advance = decisions(&t, "advance");
    assert_eq!(advance.len(), 1, "{t:#}");
    assert!(advance[0].contains("over the cap"), "{}", advance[0]);
    assert!(decisions(&t, "retry").is_empty(), "{t:#}");
    assert_eq!(decisions(&t, "fallback").len(), 1);
}

// ---------------------------------------------------------------------------
// 2–5. Server errors, resets, hangs
// ---------------------------------------------------------------------------

#[tokio::test]
async fn server_error_once_is_retried_on_same_target() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.push("m-primary", Fault::status(500));

    let a = h.post(&chat("r", false)).await;

    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "oa");
    assert_eq!(a.header("x-modelux-attempts"), "2");
    assert_eq!(h.mock.request_count("m-primary"), 2);
    assert_eq!(h.mock.request_count("m-secondary"), 0);

    let t = trace_of_answer(&h, &a).await;
    assert_eq!(attempt_field(&t, "kind"), ["first", "retry"], "{t:#}");
    assert_eq!(attempt_field(&t, "outcome"), ["5xx", "ok"]);
    assert_eq!(attempts(&t)[0]["status"], 500);
    assert_eq!(decisions(&t, "retry").len(), 1);
    assert_eq!(t["outcome"]["served_by"], "oa/primary");
}

#[tokio::test]
async fn persistent_503_falls_back_to_other_provider_kind() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.set("m-primary", failing(Fault::status(503)));

    let a = h.post(&chat("r", false)).await;

    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full(), "the whole answer, from the secondary");
    assert_eq!(a.header("x-modelux-provider"), "an");
    assert_eq!(a.header("x-modelux-model"), "secondary");
    assert_eq!(a.header("x-modelux-route"), "r");
    assert_eq!(a.header("x-modelux-attempts"), "3");
    assert_eq!(h.mock.request_count("m-primary"), 2);
    assert_eq!(h.mock.request_count("m-secondary"), 1);
    assert_eq!(h.mock.requests_for("m-secondary")[0].format, "anthropic");

    let t = trace_of_answer(&h, &a).await;
    assert_eq!(
        attempt_field(&t, "kind"),
        ["first", "retry", "fallback"],
        "{t:#}"
    );
    assert_eq!(attempt_field(&t, "outcome"), ["5xx", "5xx", "ok"]);
    assert_eq!(
        attempt_field(&t, "target"),
        ["oa/primary", "oa/primary", "an/secondary"]
    );
    let fb = decisions(&t, "fallback");
    assert_eq!(fb.len(), 1);
    assert!(
        fb[0].contains("an/secondary") && fb[0].contains("503"),
        "{}",
        fb[0]
    );
    assert_eq!(decisions(&t, "commit").len(), 1);
    assert_eq!(t["outcome"]["served_by"], "an/secondary");
}

#[tokio::test]
async fn reset_before_headers_is_a_connect_failure_and_recovers() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.set("m-primary", failing(Fault::ResetBeforeHeaders));

    // Non-stream.
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "an");
    let t = trace_of_answer(&h, &a).await;
    assert_eq!(
        attempt_field(&t, "outcome"),
        ["connect", "connect", "ok"],
        "{t:#}"
    );
    assert_eq!(attempt_field(&t, "kind"), ["first", "retry", "fallback"]);
    assert_eq!(decisions(&t, "retry").len(), 1);
    assert_eq!(decisions(&t, "fallback").len(), 1);

    // Stream: the reset happens before the commit point, so it is invisible.
    let s = h.stream(&stream_body("r")).await;
    assert_clean_stream(&s, &full());
    assert_eq!(s.header("x-modelux-provider"), "an");
    let t = trace_of_stream(&h, &s).await;
    assert_eq!(
        attempt_field(&t, "outcome"),
        ["connect", "connect", "ok"],
        "{t:#}"
    );
    assert_eq!(t["outcome"]["stream_end"], "done");
}

#[tokio::test]
async fn hang_times_out_and_falls_back_within_the_attempt_timeout() {
    let h = common::start(|m| config(m, &[("primary", 300), ("secondary", 800)], json!({}))).await;
    h.mock.set("m-primary", failing(Fault::Hang));

    let t0 = Instant::now();
    let a = h.post(&chat("r", false)).await;
    let elapsed = t0.elapsed();

    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "an");
    assert!(
        elapsed >= Duration::from_millis(290),
        "answered before the primary's timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(300 + 1500),
        "took {elapsed:?}: more than the primary's timeout plus a generous margin"
    );
    // A timeout is never retried on the same target.
    assert_eq!(h.mock.request_count("m-primary"), 1);

    let t = trace_of_answer(&h, &a).await;
    let at = attempts(&t);
    assert_eq!(at.len(), 2, "{t:#}");
    assert_eq!(at[0]["outcome"], "timeout");
    assert_eq!(at[0]["timeout_ms"], 300);
    assert!(ms(&at[0]["duration_ms"]) >= 290, "{t:#}");
    assert_eq!(at[1]["kind"], "fallback");
    assert_eq!(at[1]["outcome"], "ok");
    assert!(decisions(&t, "retry").is_empty());
    let fb = decisions(&t, "fallback");
    assert_eq!(fb.len(), 1);
    assert!(fb[0].contains("timeout"), "{}", fb[0]);
}

// ---------------------------------------------------------------------------
// 6–12. Streams
// ---------------------------------------------------------------------------

#[tokio::test]
async fn slow_first_token_falls_back_to_one_clean_stream() {
    let h = common::start(|m| config(m, &[("primary", 300), ("secondary", 800)], json!({}))).await;
    h.mock.push("m-primary", Fault::SlowFirstChunk { ms: 2000 });

    let s = h.stream(&stream_body("r")).await;

    assert_clean_stream(&s, &full());
    assert_eq!(s.header("x-modelux-provider"), "an");
    assert_eq!(s.header("x-modelux-attempts"), "2");
    assert!(
        s.events[0].at >= Duration::from_millis(290),
        "nothing may reach the client before the primary's timeout"
    );

    let t = trace_of_stream(&h, &s).await;
    let at = attempts(&t);
    assert_eq!(at.len(), 2, "{t:#}");
    assert_eq!(at[0]["outcome"], "timeout");
    assert!(
        at[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no content token within 300 ms"),
        "{t:#}"
    );
    assert_eq!(at[1]["target"], "an/secondary");
    assert_eq!(at[1]["outcome"], "ok");
    assert_eq!(
        decision_kinds(&t)
            .into_iter()
            .filter(|k| k != "reorder")
            .collect::<Vec<_>>(),
        ["fallback", "commit"],
        "{t:#}"
    );
    assert_eq!(t["outcome"]["stream_end"], "done");
    assert_eq!(t["outcome"]["served_by"], "an/secondary");
}

#[tokio::test]
async fn error_event_before_content_fails_over_invisibly() {
    let h = common::start(|m| {
        config(
            m,
            &[("primary", 800), ("secondary", 800)],
            json!({"same_target_retries": 0}),
        )
    })
    .await;
    h.mock
        .push("m-primary", Fault::ErrorEventAfter { chunks: 0 });

    let s = h.stream(&stream_body("r")).await;

    assert_clean_stream(&s, &full());
    assert_eq!(s.header("x-modelux-provider"), "an");

    let t = trace_of_stream(&h, &s).await;
    let at = attempts(&t);
    assert_eq!(at.len(), 2, "{t:#}");
    assert_eq!(at[0]["target"], "oa/primary");
    assert_eq!(at[0]["outcome"], "5xx");
    assert!(
        at[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("overloaded"),
        "{t:#}"
    );
    assert_eq!(at[1]["outcome"], "ok");
    assert_eq!(decisions(&t, "fallback").len(), 1);
    assert!(decisions(&t, "stream_failed").is_empty(), "{t:#}");
    assert_eq!(t["outcome"]["stream_end"], "done");
}

#[tokio::test]
async fn cut_mid_stream_is_continued_by_prefill_fallback() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.push("m-primary", Fault::CutAfter { chunks: 8 });

    let s = h.stream(&stream_body("r")).await;

    assert_clean_stream(&s, &full());
    assert_eq!(
        s.header("x-modelux-provider"),
        "oa",
        "served by the first target"
    );
    assert_eq!(s.header("x-modelux-attempts"), "1");

    // The continuation was asked to continue exactly the delivered text.
    let cont = h.mock.requests_for("m-secondary");
    assert_eq!(cont.len(), 1);
    assert_eq!(cont[0].format, "anthropic");
    let messages = cont[0].body["messages"].as_array().expect("messages");
    let last = messages.last().expect("a message");
    assert_eq!(last["role"], "assistant", "{:#}", cont[0].body);
    assert_eq!(content_text(&last["content"]), words(8));

    let t = trace_of_stream(&h, &s).await;
    let failed = decisions(&t, "stream_failed");
    assert_eq!(failed.len(), 1, "{t:#}");
    assert!(failed[0].contains("oa/primary"), "{}", failed[0]);
    assert!(failed[0].contains("stream cut"), "{}", failed[0]);
    let cont = decisions(&t, "continuation");
    assert!(
        cont.iter().any(|d| d.contains("continuing on an/secondary")
            && d.contains(&format!("{} delivered", words(8).len()))),
        "{cont:?}"
    );
    assert_eq!(
        attempt_field(&t, "kind"),
        ["first", "continuation"],
        "{t:#}"
    );
    assert_eq!(attempt_field(&t, "outcome"), ["ok", "ok"]);
    assert_eq!(t["outcome"]["stream_end"], "done");
    assert_eq!(t["outcome"]["class"], "ok");
}

#[tokio::test]
async fn cut_mid_stream_without_prefill_candidate_ends_with_in_band_error() {
    // `plain` is an Anthropic-kind model without prefill and the route allows
    // only prefill continuation: nothing can continue.
    let h = common::start(|m| {
        config(
            m,
            &[("primary", 800), ("plain", 800)],
            json!({"continuation": ["prefill"]}),
        )
    })
    .await;
    h.mock.push("m-primary", Fault::CutAfter { chunks: 8 });

    let s = h.stream(&stream_body("r")).await;

    assert_eq!(s.status, 200);
    assert_eq!(s.text(), words(8), "what was delivered before the cut");
    assert!(!s.done(), "a broken stream must not end with [DONE]");
    assert!(
        s.events.iter().all(|e| e.data != "[DONE]"),
        "no [DONE] anywhere"
    );
    let last = s
        .events
        .last()
        .and_then(|e| e.json())
        .expect("a last event");
    assert!(last.get("error").is_some(), "last event: {last}");
    assert_eq!(last["error"]["code"], "stream_cut", "{last}");
    assert!(
        s.finish_reasons().is_empty(),
        "no normal finish: {:?}",
        s.finish_reasons()
    );
    assert_eq!(h.mock.request_count("m-plain"), 0);

    let t = trace_of_stream(&h, &s).await;
    assert_eq!(decisions(&t, "stream_failed").len(), 1, "{t:#}");
    let cont = decisions(&t, "continuation");
    assert!(
        cont.iter()
            .any(|d| d.contains("an/plain") && d.contains("does not accept a prefill")),
        "{cont:?}"
    );
    assert!(
        cont.iter().any(|d| d.contains("no candidate left")),
        "{cont:?}"
    );
    assert_eq!(t["outcome"]["stream_end"], "error");
    assert_eq!(t["outcome"]["class"], "stream_cut");
    // The provider billed the eight words it sent; no usage chunk came, so
    // the gateway estimates them (≈ 4 characters a token) and says so,
    // in the trace and in the token counter, rather than count nothing.
    assert_eq!(t["usage_estimated"], true, "{t:#}");
    assert_eq!(
        t["usage"]["completion_tokens"],
        words(8).len().div_ceil(4) as u64,
        "{t:#}"
    );
    assert!(t["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{t:#}");
}

/// The estimate of a stream cut before its usage reaches the token counter
/// and the cost (on a model no other test uses: the recorder is shared).
#[tokio::test]
async fn a_cut_stream_s_estimated_tokens_are_counted_and_priced() {
    let h = common::start(|m| {
        json!({
            "providers": providers(m),
            "models": {"est-cut": {"provider": "oa", "upstream_model": "m-est-cut",
                                   "price": {"input_per_mtok": 1.0, "output_per_mtok": 1000000.0}}},
            "routes": {"est": {"attempts": [{"model": "est-cut", "timeout_ms": 2000}], "continuation": []}}
        })
    })
    .await;
    h.mock.push("m-est-cut", Fault::CutAfter { chunks: 8 });
    let s = h.stream(&stream_body("est")).await;
    assert_eq!(s.text(), words(8));
    assert!(!s.done());
    let (_, metrics) = h.get("/metrics").await;
    let series = |kind: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("modelux_tokens_total{")
                    && l.contains("model=\"est-cut\"")
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {kind} tokens for est-cut:\n{metrics}"))
    };
    let completion = words(8).len().div_ceil(4) as u64;
    assert_eq!(series("completion"), completion);
    assert!(series("prompt") > 0);
    // $1 per completion token: the cost counter (in micro-USD) says so.
    let cost = metrics
        .lines()
        .find(|l| {
            l.starts_with("modelux_cost_usd_micros_total{") && l.contains("model=\"est-cut\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no cost for est-cut:\n{metrics}"));
    assert!(cost >= completion * 1_000_000, "{cost}");
}

#[tokio::test]
async fn stall_mid_stream_is_continued_by_prefill_fallback() {
    let h = common::start(|m| {
        config(
            m,
            &[("primary", 800), ("secondary", 800)],
            json!({"stream_idle_timeout_ms": 300}),
        )
    })
    .await;
    h.mock.push(
        "m-primary",
        Fault::StallAfter {
            chunks: 5,
            ms: 2000,
        },
    );

    let s = h.stream(&stream_body("r")).await;

    assert_clean_stream(&s, &full());
    let cont = h.mock.requests_for("m-secondary");
    assert_eq!(cont.len(), 1);
    let last = cont[0].body["messages"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .expect("a message");
    assert_eq!(last["role"], "assistant");
    assert_eq!(content_text(&last["content"]), words(5));

    let t = trace_of_stream(&h, &s).await;
    let failed = decisions(&t, "stream_failed");
    assert_eq!(failed.len(), 1, "{t:#}");
    assert!(
        failed[0].contains("stalled") && failed[0].contains("300 ms"),
        "{}",
        failed[0]
    );
    assert!(
        decisions(&t, "continuation")
            .iter()
            .any(|d| d.contains("continuing on an/secondary")),
        "{t:#}"
    );
    assert_eq!(attempt_field(&t, "kind"), ["first", "continuation"]);
    assert_eq!(t["outcome"]["stream_end"], "done");
}

/// The sum of a Prometheus counter over all its label sets.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn malformed_event_mid_stream_is_skipped_and_counted() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    let (status, before) = h.get("/metrics").await;
    assert_eq!(status, 200);
    let before = metric_sum(&before, "modelux_stream_malformed_events_total");
    h.mock
        .push("m-primary", Fault::MalformedEventAfter { chunks: 5 });

    let s = h.stream(&stream_body("r")).await;

    assert_clean_stream(&s, &full());
    assert_eq!(s.header("x-modelux-provider"), "oa");
    assert_eq!(h.mock.request_count("m-secondary"), 0);
    let (_, text) = h.get("/metrics").await;
    let after = metric_sum(&text, "modelux_stream_malformed_events_total");
    assert!(
        after >= before + 1.0 && after >= 1.0,
        "modelux_stream_malformed_events_total: {before} -> {after}"
    );
    // Labelled with the provider's name in the config, as every metric is,
    // not with its kind (`openai`).
    assert!(
        metric_sum(
            &text,
            "modelux_stream_malformed_events_total{provider=\"oa\"}"
        ) >= 1.0,
        "{text}"
    );

    let t = trace_of_stream(&h, &s).await;
    assert_eq!(attempt_field(&t, "outcome"), ["ok"], "{t:#}");
    assert!(decisions(&t, "stream_failed").is_empty());
    assert_eq!(t["outcome"]["stream_end"], "done");
}

#[tokio::test]
async fn missing_done_on_openai_upstream_still_ends_with_done() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.push("m-primary", Fault::NoDone);

    let s = h.stream(&stream_body("r")).await;

    assert_clean_stream(&s, &full());
    assert_eq!(s.header("x-modelux-provider"), "oa");
    let last_content = s
        .events
        .iter()
        .rfind(|e| {
            e.json()
                .is_some_and(|v| v["choices"][0]["delta"]["content"].is_string())
        })
        .expect("content events")
        .at;
    let done = s.events.last().expect("events").at;
    assert!(
        done.saturating_sub(last_content) < Duration::from_millis(1000),
        "[DONE] came {:?} after the last content",
        done.saturating_sub(last_content)
    );
    assert_eq!(h.mock.request_count("m-secondary"), 0);

    let t = trace_of_stream(&h, &s).await;
    assert_eq!(attempt_field(&t, "outcome"), ["ok"], "{t:#}");
    assert!(decisions(&t, "stream_failed").is_empty());
    assert_eq!(t["outcome"]["stream_end"], "done");
    assert_eq!(t["outcome"]["class"], "ok");
}

// ---------------------------------------------------------------------------
// 13. Client errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn context_length_400_advances_to_next_attempt() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.push(
        "m-primary",
        Fault::Status {
            status: 400,
            retry_after_s: None,
            retry_after_ms: None,
            error: Some(ErrorFlavor::ContextLength),
        },
    );

    let a = h.post(&chat("r", false)).await;

    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "an");
    assert_eq!(h.mock.request_count("m-primary"), 1, "never retried as is");
    assert_eq!(h.mock.request_count("m-secondary"), 1);

    let t = trace_of_answer(&h, &a).await;
    let at = attempts(&t);
    assert_eq!(at.len(), 2, "{t:#}");
    assert_eq!(at[0]["outcome"], "context_length");
    assert_eq!(at[1]["kind"], "fallback");
    assert!(decisions(&t, "retry").is_empty());
    let fb = decisions(&t, "fallback");
    assert_eq!(fb.len(), 1);
    assert!(fb[0].contains("context length"), "{}", fb[0]);
}

#[tokio::test]
async fn content_policy_400_is_returned_without_trying_others() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.push(
        "m-primary",
        Fault::Status {
            status: 400,
            retry_after_s: None,
            retry_after_ms: None,
            error: Some(ErrorFlavor::ContentPolicy),
        },
    );

    let a = h.post(&chat("r", false)).await;

    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "content_policy_violation");
    assert_eq!(
        a.body["error"]["message"], "Your request was rejected as a result of our safety system.",
        "the provider's reason"
    );
    assert!(a.headers.get("x-should-retry").is_none());
    assert_eq!(h.mock.request_count("m-primary"), 1);
    assert_eq!(h.mock.request_count("m-secondary"), 0);

    let t = trace_of_answer(&h, &a).await;
    assert_eq!(attempt_field(&t, "outcome"), ["content_policy"], "{t:#}");
    assert_eq!(decisions(&t, "reject").len(), 1);
    assert!(decisions(&t, "fallback").is_empty());
    assert_eq!(t["outcome"]["status"], 400);
    assert_eq!(t["outcome"]["class"], "content_policy");
}

#[tokio::test]
async fn client_errors_from_anthropic_and_gemini_primaries() {
    let h = common::start(|m| {
        let mut c = config(m, &[("primary", 800)], json!({}));
        c["models"]["p-an"] = json!({"provider": "an", "upstream_model": "m-p-an"});
        c["models"]["p-ge"] = json!({"provider": "ge", "upstream_model": "m-p-ge"});
        for (route, model) in [("r-an", "p-an"), ("r-ge", "p-ge")] {
            c["routes"][route] = json!({
                "attempts": [{"model": model, "timeout_ms": 800}, {"model": "primary", "timeout_ms": 800}],
                "backoff_base_ms": 10
            });
        }
        c
    })
    .await;
    let flavored = |flavor| Fault::Status {
        status: 400,
        retry_after_s: None,
        retry_after_ms: None,
        error: Some(flavor),
    };
    let mut served_by_fallback = 0;
    for (route, upstream, target, policy_message) in [
        (
            "r-an",
            "m-p-an",
            "an/p-an",
            "Output blocked by content filtering policy",
        ),
        (
            "r-ge",
            "m-p-ge",
            "ge/p-ge",
            "The request was blocked because it violates the safety policy.",
        ),
    ] {
        // Context length: the next attempt answers.
        h.mock.push(upstream, flavored(ErrorFlavor::ContextLength));
        let a = h.post(&chat(route, false)).await;
        assert_eq!(a.status, 200, "{route}: {}", a.body);
        assert_eq!(a.content(), full());
        assert_eq!(a.header("x-modelux-provider"), "oa", "{route}");
        served_by_fallback += 1;
        assert_eq!(h.mock.request_count("m-primary"), served_by_fallback);
        let t = trace_of_answer(&h, &a).await;
        assert_eq!(
            attempt_field(&t, "outcome"),
            ["context_length", "ok"],
            "{route}: {t:#}"
        );
        assert_eq!(attempts(&t)[0]["target"], target);

        // Content policy: the provider's status and reason, nothing else tried.
        h.mock.push(upstream, flavored(ErrorFlavor::ContentPolicy));
        let a = h.post(&chat(route, false)).await;
        assert_eq!(a.status, 400, "{route}: {}", a.body);
        assert_eq!(a.body["error"]["message"], policy_message, "{route}");
        assert_eq!(
            h.mock.request_count("m-primary"),
            served_by_fallback,
            "{route}: the next target must not be called"
        );
        let t = trace_of_answer(&h, &a).await;
        assert_eq!(attempts(&t).len(), 1, "{route}: {t:#}");
        assert_eq!(decisions(&t, "reject").len(), 1, "{route}: {t:#}");
        assert_eq!(t["outcome"]["status"], 400);
    }
}

/// A provider that refuses the gateway's key (a revoked or rotated key:
/// 401 from OpenAI, Anthropic's `authentication_error`), no longer knows
/// the model (404) or answers with a redirect (an `http://` base URL):
/// the request falls back to the next provider and the client gets its
/// answer. Before, the 401 came back as a 502 `upstream_auth_failed`, the
/// 404 as a 404 and the redirect as a bare 301, with the fallback never tried.
#[tokio::test]
async fn a_refused_key_a_missing_model_or_a_redirect_falls_back_to_the_next_provider() {
    let h = common::start(|m| config(m, &[("secondary", 800), ("primary", 800)], json!({}))).await;
    let mut served = 0;
    for (status, class) in [
        (401, "target_refused"),
        (403, "target_refused"),
        (404, "target_refused"),
        (301, "malformed"),
    ] {
        h.mock.push("m-secondary", Fault::status(status));
        let a = h.post(&chat("r", false)).await;
        assert_eq!(a.status, 200, "{status}: {}", a.body);
        assert_eq!(a.content(), full());
        assert_eq!(a.header("x-modelux-provider"), "oa", "{status}");
        served += 1;
        assert_eq!(h.mock.request_count("m-primary"), served);
        let t = trace_of_answer(&h, &a).await;
        assert_eq!(
            attempt_field(&t, "outcome"),
            [class, "ok"],
            "{status}: {t:#}"
        );
        assert_eq!(attempts(&t)[0]["status"], status, "{t:#}");
    }
}

/// Gemini refuses a bad or expired key with a 400 `INVALID_ARGUMENT` (its
/// `ErrorInfo` reason `API_KEY_INVALID`), and Anthropic an account out of
/// credits with a 400 `invalid_request_error`: both refuse the target, not
/// the request, so the router moves on to the OpenAI target and the client
/// gets its answer. Before, both were the client's 400: nothing else was
/// tried and the client read "API key not valid" or "Your credit balance is
/// too low". The key refusal's text is replaced, as a 401's is, and when
/// every target refuses the key the client gets 502 `upstream_auth_failed`.
#[tokio::test]
async fn a_key_or_account_refused_with_a_400_falls_back_to_the_next_provider() {
    let refused = |status| Fault::Status {
        status,
        retry_after_s: None,
        retry_after_ms: None,
        error: Some(ErrorFlavor::AccountRefused),
    };
    let h = common::start(|m| {
        config(
            m,
            &[("tertiary", 800), ("secondary", 800), ("primary", 800)],
            json!({}),
        )
    })
    .await;
    h.mock.push("m-tertiary", refused(400));
    h.mock.push("m-secondary", refused(400));
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "oa");
    assert_eq!(h.mock.request_count("m-primary"), 1);
    let t = trace_of_answer(&h, &a).await;
    assert_eq!(
        attempt_field(&t, "outcome"),
        ["target_refused", "target_refused", "ok"],
        "{t:#}"
    );
    assert_eq!(attempt_field(&t, "status")[..2], ["400", "400"], "{t:#}");
    let trace = t.to_string();
    for quoted in ["API key not valid", "gm-test-SECRET", "sk-ant-test-SECRET"] {
        assert!(!trace.contains(quoted), "{quoted} in the trace: {t:#}");
        assert!(
            !a.body.to_string().contains(quoted),
            "{quoted} in the answer"
        );
    }
    assert!(
        trace.contains("refused the gateway's credentials (HTTP 400)"),
        "{t:#}"
    );

    // Every target refuses the key: the operator's problem, said so.
    let h = common::start(|m| config(m, &[("tertiary", 800)], json!({}))).await;
    h.mock.push("m-tertiary", refused(400));
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(
        a.body["error"]["code"], "upstream_auth_failed",
        "{}",
        a.body
    );
    let answer = a.body.to_string();
    assert!(!answer.contains("API key not valid"), "{answer}");
    assert!(!answer.contains("gm-test-SECRET"), "{answer}");
    let t = trace_of_answer(&h, &a).await;
    assert!(!t.to_string().contains("API key not valid"), "{t:#}");
}

#[tokio::test]
async fn client_error_attempts_record_the_provider_status() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    for flavor in [ErrorFlavor::ContextLength, ErrorFlavor::ContentPolicy] {
        h.mock.push(
            "m-primary",
            Fault::Status {
                status: 400,
                retry_after_s: None,
                retry_after_ms: None,
                error: Some(flavor),
            },
        );
        let a = h.post(&chat("r", false)).await;
        let t = trace_of_answer(&h, &a).await;
        // AttemptTrace::status: "The provider's HTTP status, when there was one."
        assert_eq!(attempts(&t)[0]["status"], 400, "{flavor:?}: {t:#}");
    }
}

// ---------------------------------------------------------------------------
// 14. Everything fails
// ---------------------------------------------------------------------------

#[tokio::test]
async fn all_rate_limited_returns_429_with_smallest_retry_after() {
    let h = common::start(|m| {
        config(
            m,
            &[("primary", 800), ("secondary", 800)],
            json!({"retry_after_cap_ms": 1000}),
        )
    })
    .await;
    h.mock
        .set("m-primary", failing(status_fault(429, Some(3), None)));
    h.mock
        .set("m-secondary", failing(status_fault(429, Some(2), None)));

    let a = h.post(&chat("r", false)).await;

    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.header("retry-after"), "2", "the smallest Retry-After");
    assert_eq!(a.header("retry-after-ms"), "2000");
    assert_eq!(a.body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(a.header("x-modelux-attempts"), "2");

    let t = trace_of_answer(&h, &a).await;
    assert_eq!(attempt_field(&t, "outcome"), ["429", "429"], "{t:#}");
    assert_eq!(attempt_field(&t, "retry_after_ms"), ["3000", "2000"]);
    assert_eq!(decisions(&t, "advance").len(), 2);
    assert_eq!(t["outcome"]["status"], 429);
    assert_eq!(t["outcome"]["class"], "rate_limited");
}

#[tokio::test]
async fn all_503_returns_502_with_should_retry_false() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.set("m-primary", failing(Fault::status(503)));
    h.mock.set("m-secondary", failing(Fault::status(503)));

    let a = h.post(&chat("r", false)).await;

    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.header("x-should-retry"), "false");
    assert_eq!(a.body["error"]["code"], "all_attempts_failed");
    assert_eq!(a.header("x-modelux-attempts"), "4");
    assert_eq!(h.mock.request_count("m-primary"), 2);
    assert_eq!(h.mock.request_count("m-secondary"), 2);

    let t = trace_of_answer(&h, &a).await;
    assert_eq!(
        attempt_field(&t, "outcome"),
        ["5xx", "5xx", "5xx", "5xx"],
        "{t:#}"
    );
    assert_eq!(
        attempt_field(&t, "kind"),
        ["first", "retry", "fallback", "retry"]
    );
    assert_eq!(t["outcome"]["status"], 502);
    assert_eq!(t["outcome"]["class"], "all_failed");
}

#[tokio::test]
async fn total_budget_exhausted_returns_504_within_budget() {
    let h = common::start(|m| {
        config(
            m,
            &[("primary", 400), ("secondary", 400), ("tertiary", 400)],
            json!({"total_budget_ms": 600}),
        )
    })
    .await;
    for m in ["m-primary", "m-secondary", "m-tertiary"] {
        h.mock.set(m, failing(Fault::Hang));
    }

    let t0 = Instant::now();
    let a = h.post(&chat("r", false)).await;
    let elapsed = t0.elapsed();

    assert_eq!(a.status, 504, "{}", a.body);
    assert_eq!(a.header("x-should-retry"), "false");
    assert_eq!(a.body["error"]["code"], "budget_exhausted");
    assert!(
        elapsed >= Duration::from_millis(580),
        "gave up before the budget ran out: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(600 + 1500),
        "took {elapsed:?}: far beyond the 600 ms budget"
    );
    assert_eq!(h.mock.request_count("m-tertiary"), 0);

    let t = trace_of_answer(&h, &a).await;
    let at = attempts(&t);
    assert_eq!(at.len(), 2, "{t:#}");
    assert_eq!(attempt_field(&t, "outcome"), ["timeout", "timeout"]);
    assert_eq!(at[0]["timeout_ms"], 400);
    assert!(
        ms(&at[1]["timeout_ms"]) <= 200,
        "the second attempt gets only what is left of the budget: {t:#}"
    );
    let be = decisions(&t, "budget_exhausted");
    assert_eq!(be.len(), 1, "{t:#}");
    assert!(be[0].contains("ge/tertiary"), "{}", be[0]);
    assert_eq!(t["outcome"]["status"], 504);
    assert_eq!(t["outcome"]["class"], "budget_exhausted");
}

// ---------------------------------------------------------------------------
// 15. Each provider kind as primary
// ---------------------------------------------------------------------------

/// A direct model route on `provider` (of `format`): non-stream, stream with
/// usage and stream without usage all answer the mock's text.
async fn kind_as_primary(provider: &str, format: &str) {
    let model = format!("m-{provider}");
    let h = {
        let model = model.clone();
        let provider = provider.to_owned();
        common::start(move |m| {
            json!({
                "providers": providers(m),
                "models": {model: {"provider": provider, "timeout_ms": 2000}}
            })
        })
        .await
    };
    let target = format!("{provider}/{model}");

    // Non-stream.
    let a = h.post(&chat(&model, false)).await;
    assert_eq!(a.status, 200, "{format}: {}", a.body);
    assert_eq!(a.content(), full(), "{format}");
    assert_eq!(a.body["choices"][0]["finish_reason"], "stop", "{format}");
    assert_eq!(a.header("x-modelux-provider"), provider);
    assert_eq!(a.header("x-modelux-model"), model);
    assert_eq!(a.header("x-modelux-attempts"), "1");
    let usage = &a.body["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().unwrap_or(0) > 0,
        "{format}: {}",
        a.body
    );
    assert_eq!(usage["completion_tokens"], 20, "{format}: {}", a.body);
    let last = h.mock.requests().pop().expect("a recorded request");
    assert_eq!(last.format, format);
    assert_eq!(last.model, model);
    assert!(!last.stream);
    let t = trace_of_answer(&h, &a).await;
    assert_eq!(attempt_field(&t, "outcome"), ["ok"], "{format}: {t:#}");
    assert_eq!(t["outcome"]["served_by"], target);
    assert_eq!(t["stream"], false);

    // Stream with usage.
    let mut body = chat(&model, true);
    body["stream_options"] = json!({"include_usage": true});
    let s = h.stream(&body).await;
    assert_clean_stream(&s, &full());
    let usage = s
        .usage()
        .unwrap_or_else(|| panic!("{format}: no usage chunk"));
    assert!(
        usage["prompt_tokens"].as_u64().unwrap_or(0) > 0,
        "{format}: {usage}"
    );
    assert_eq!(usage["completion_tokens"], 20, "{format}: {usage}");
    let last = h.mock.requests().pop().expect("a recorded request");
    assert_eq!(last.format, format);
    assert!(last.stream);
    let t = trace_of_stream(&h, &s).await;
    assert_eq!(attempt_field(&t, "outcome"), ["ok"], "{format}: {t:#}");
    assert_eq!(t["outcome"]["served_by"], target);
    assert_eq!(t["outcome"]["stream_end"], "done");
    assert_eq!(t["usage"]["completion_tokens"], 20, "{format}: {t:#}");

    // Stream without usage: none is sent.
    let s = h.stream(&chat(&model, true)).await;
    assert_clean_stream(&s, &full());
    assert!(s.usage().is_none(), "{format}: usage was not asked for");
}

#[tokio::test]
async fn openai_kind_primary_stream_and_non_stream() {
    kind_as_primary("oa", "openai").await;
}

#[tokio::test]
async fn anthropic_kind_primary_stream_and_non_stream() {
    kind_as_primary("an", "anthropic").await;
}

#[tokio::test]
async fn gemini_kind_primary_stream_and_non_stream() {
    kind_as_primary("ge", "gemini").await;
}

// ---------------------------------------------------------------------------
// 16. Client disconnect
// ---------------------------------------------------------------------------

#[tokio::test]
async fn client_disconnect_is_recorded_in_the_trace() {
    let h = common::start(|m| config(m, &[("primary", 800), ("secondary", 800)], json!({}))).await;
    h.mock.set(
        "m-primary",
        Behaviour {
            chunk_interval_ms: 200,
            ..Behaviour::default()
        },
    );

    let resp = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&chat("r", true))
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status().as_u16(), 200);
    let id = resp
        .headers()
        .get("x-modelux-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id")
        .to_owned();
    let mut body = resp.bytes_stream();
    let seen = common::read_until(&mut body, "word0").await;
    assert!(!seen.contains("word19"), "the answer was not complete yet");
    drop(body);
    let dropped = Instant::now();

    // The trace is stored when the request ends, here when the gateway notices
    // the client went away.
    let trace = loop {
        let (status, text) = h.get(&format!("/v1/traces/{id}")).await;
        if status == 200 {
            let t: Value = serde_json::from_str(&text).unwrap();
            if t["outcome"].is_object() {
                break t;
            }
        }
        assert!(
            dropped.elapsed() < Duration::from_millis(1500),
            "no finished trace {:?} after the client went away",
            dropped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        trace["outcome"]["stream_end"], "client_disconnected",
        "{trace:#}"
    );
    assert_eq!(trace["outcome"]["class"], "client_disconnected");
    assert_eq!(trace["outcome"]["status"], 499);
    assert_eq!(trace["outcome"]["served_by"], "oa/primary");
    assert_eq!(attempt_field(&trace, "outcome"), ["ok"]);
    assert!(decisions(&trace, "stream_failed").is_empty(), "{trace:#}");
    assert_eq!(h.mock.request_count("m-secondary"), 0);
    // What was streamed before the client left is counted, as an estimate.
    assert_eq!(trace["usage_estimated"], true, "{trace:#}");
    assert!(
        trace["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{trace:#}"
    );
}

// ---------------------------------------------------------------------------
// Stream faults on every provider kind as the primary
// ---------------------------------------------------------------------------

/// Routes `r-oa`, `r-an`, `r-ge`: a primary of each kind, then the
/// Anthropic-kind `secondary` (prefill) as the fallback.
fn kinds_config(mock: &MockProvider) -> Value {
    let mut c = config(mock, &[("primary", 800), ("secondary", 800)], json!({}));
    c["models"]["p-an"] = json!({"provider": "an", "upstream_model": "m-p-an"});
    c["models"]["p-ge"] = json!({"provider": "ge", "upstream_model": "m-p-ge"});
    for (route, model) in [("r-oa", "primary"), ("r-an", "p-an"), ("r-ge", "p-ge")] {
        c["routes"][route] = json!({
            "attempts": [{"model": model, "timeout_ms": 800}, {"model": "secondary", "timeout_ms": 800}],
            "backoff_base_ms": 10,
            "same_target_retries": 0,
            "stream_idle_timeout_ms": 300
        });
    }
    c
}

const KINDS: [(&str, &str, &str); 3] = [
    ("r-oa", "m-primary", "oa/primary"),
    ("r-an", "m-p-an", "an/p-an"),
    ("r-ge", "m-p-ge", "ge/p-ge"),
];

#[tokio::test]
async fn mid_stream_cut_and_stall_are_continued_for_every_primary_kind() {
    let h = common::start(kinds_config).await;
    let mut continuations = 0;
    for (route, upstream, target) in KINDS {
        for (fault, delivered) in [
            (Fault::CutAfter { chunks: 8 }, 8),
            (
                Fault::StallAfter {
                    chunks: 5,
                    ms: 2000,
                },
                5,
            ),
        ] {
            let what = format!("{route} {fault:?}");
            h.mock.push(upstream, fault);
            let s = h.stream(&stream_body(route)).await;
            assert_clean_stream(&s, &full());
            continuations += 1;
            let cont = h.mock.requests_for("m-secondary");
            assert_eq!(cont.len(), continuations, "{what}");
            let last = cont[continuations - 1].body["messages"]
                .as_array()
                .and_then(|m| m.last().cloned())
                .expect("a message");
            assert_eq!(last["role"], "assistant", "{what}");
            assert_eq!(content_text(&last["content"]), words(delivered), "{what}");
            let t = trace_of_stream(&h, &s).await;
            let failed = decisions(&t, "stream_failed");
            assert_eq!(failed.len(), 1, "{what}: {t:#}");
            assert!(failed[0].contains(target), "{what}: {}", failed[0]);
            assert_eq!(
                attempt_field(&t, "kind"),
                ["first", "continuation"],
                "{what}: {t:#}"
            );
            assert_eq!(t["outcome"]["stream_end"], "done", "{what}");
            assert_eq!(t["outcome"]["served_by"], target, "{what}");
        }
    }
}

#[tokio::test]
async fn harmless_stream_faults_for_every_primary_kind() {
    let h = common::start(kinds_config).await;
    for (route, upstream, target) in KINDS {
        for fault in [
            Fault::MalformedEventAfter { chunks: 5 },
            Fault::NoDone,
            Fault::ErrorEventAfter { chunks: 0 },
        ] {
            let what = format!("{route} {fault:?}");
            let before_error = matches!(fault, Fault::ErrorEventAfter { .. });
            h.mock.push(upstream, fault);
            let s = h.stream(&stream_body(route)).await;
            assert_clean_stream(&s, &full());
            let t = trace_of_stream(&h, &s).await;
            assert!(decisions(&t, "stream_failed").is_empty(), "{what}: {t:#}");
            assert_eq!(t["outcome"]["stream_end"], "done", "{what}");
            if before_error {
                // Failed over before the commit point: invisible.
                assert_eq!(attempt_field(&t, "outcome"), ["5xx", "ok"], "{what}: {t:#}");
                assert_eq!(t["outcome"]["served_by"], "an/secondary", "{what}");
            } else {
                assert_eq!(attempt_field(&t, "outcome"), ["ok"], "{what}: {t:#}");
                assert_eq!(t["outcome"]["served_by"], target, "{what}");
            }
        }
    }
}
