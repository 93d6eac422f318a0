//! Behaviour of `TraceLayer`: request ids, what a stored trace says, how a
//! stream's trace is finished, privacy, and the bounded store.

mod layers;

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use layers::*;
use modelux::fallback::{Fallback, FallbackLayer};
use modelux::health::{HealthConfig, HealthScoreLayer};
use modelux::latency::{LatencyConfig, LatencyRankLayer};
use modelux::provider::{Failure, ProviderResponse};
use modelux::route::{RouteError, RouteRequest, RouteResponse, Strategy};
use modelux::trace::{Trace, TraceLayer, TraceStore};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceBuilder, ServiceExt};

type Stack = BoxCloneService<RouteRequest, RouteResponse, RouteError>;

/// TraceLayer over FallbackLayer over the script.
fn traced(s: &Script, store: &TraceStore) -> Stack {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(TraceLayer::new(store.clone()))
            .layer(FallbackLayer::new())
            .service(s.leaf()),
    )
}

fn decision_kinds(t: &Trace) -> Vec<&'static str> {
    t.decisions.iter().map(|d| d.kind).collect()
}

#[tokio::test(start_paused = true)]
async fn assigns_a_request_id_when_empty_and_keeps_a_given_one() {
    let s = Script::new();
    s.on("a", Act::Ok);
    let store = TraceStore::new(8);
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let fallback = Fallback::new(s.leaf());
    let spy = {
        let seen = seen.clone();
        tower::service_fn(move |r: RouteRequest| {
            seen.lock().unwrap().push(r.ctx.request_id.to_string());
            fallback.clone().oneshot(r)
        })
    };
    let svc = TraceLayer::new(store.clone()).layer(spy);
    let route = route(vec![cand("a", secs(1))]);

    svc.clone().oneshot(req(&route, false)).await.unwrap();
    svc.clone()
        .oneshot(req_id(&route, false, "client-given-id"))
        .await
        .unwrap();
    svc.clone().oneshot(req(&route, false)).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for generated in [&seen[0], &seen[2]] {
        assert_eq!(generated.len(), 16, "{generated}");
        assert!(
            generated.chars().all(|c| c.is_ascii_hexdigit()),
            "{generated}"
        );
        assert_eq!(store.get(generated).unwrap().request_id, *generated);
    }
    assert_ne!(seen[0], seen[2], "ids are unique");
    assert_eq!(seen[1], "client-given-id");
    assert_eq!(store.get("client-given-id").unwrap().route, "r");
    assert_eq!(store.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn stored_trace_records_candidates_attempts_decisions_and_outcome() {
    let s = Script::new();
    s.on("a", Act::Fail(e429(Some(ms(200)))));
    s.on("b", Act::Ok);
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);
    let route = route(vec![cand("a", secs(1)), cand("b", secs(2))]);

    svc.oneshot(req_id(&route, false, "t1")).await.unwrap();

    let t = store.get("t1").expect("stored once finished");
    assert_eq!(t.request_id, "t1");
    assert_eq!(t.route, "r");
    assert!(!t.stream);
    let cands: Vec<_> = t
        .candidates
        .iter()
        .map(|c| (c.target.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(cands, [("a/m", "config order"), ("b/m", "config order")]);

    assert_eq!(t.attempts.len(), 3);
    let [first, retry, fallback] = &t.attempts[..] else {
        unreachable!()
    };
    assert_eq!((first.target.as_str(), first.kind), ("a/m", "first"));
    assert_eq!(first.outcome, "429");
    assert_eq!(first.status, Some(429));
    assert_eq!(first.retry_after_ms, Some(200));
    assert_eq!(first.backoff_ms, None);
    assert_eq!(first.timeout_ms, 1000);
    assert_eq!(first.start_ms, 0);
    assert_eq!(first.message.as_deref(), Some("scripted failure"));

    assert_eq!((retry.target.as_str(), retry.kind), ("a/m", "retry"));
    assert_eq!(retry.backoff_ms, Some(200), "waited the Retry-After");
    assert_eq!(retry.start_ms, 200);
    assert_eq!(retry.outcome, "429");

    assert_eq!(
        (fallback.target.as_str(), fallback.kind),
        ("b/m", "fallback")
    );
    assert_eq!(fallback.outcome, "ok");
    assert_eq!(fallback.status, None);
    assert_eq!(fallback.message, None);
    assert_eq!(fallback.timeout_ms, 2000);

    assert_eq!(decision_kinds(&t), ["retry", "fallback", "commit"]);
    assert!(
        t.decisions[0].detail.contains("retry-after"),
        "{:?}",
        t.decisions
    );
    assert!(t.decisions[1].detail.contains("b/m"));
    assert_eq!(t.committed_at_ms, Some(200));

    let outcome = t.outcome.expect("finished");
    assert_eq!(outcome.status, 200);
    assert_eq!(outcome.class, "ok");
    assert_eq!(outcome.served_by.as_deref(), Some("b/m"));
    assert_eq!(outcome.stream_end, None);
    assert_eq!(t.duration_ms, Some(200));
}

#[tokio::test(start_paused = true)]
async fn a_sink_sees_the_finished_trace_with_its_candidates() {
    let s = Script::new();
    s.on("a", Act::Fail(e429(None)));
    s.on("b", Act::Ok);
    let store = TraceStore::new(8);
    let seen: Arc<Mutex<Vec<Trace>>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        Arc::new(move |t: &Trace| seen.lock().unwrap().push(t.clone()))
    };
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::with_sink(store.clone(), sink))
        .layer(FallbackLayer::new())
        .service(s.leaf());
    let route = route(vec![cand("a", secs(1)), cand("b", secs(2))]);

    svc.oneshot(req_id(&route, false, "s1")).await.unwrap();

    let seen = seen.lock().unwrap();
    let [t] = &seen[..] else {
        panic!("the sink saw {} traces", seen.len())
    };
    assert_eq!(t.request_id, "s1");
    let cands: Vec<_> = t.candidates.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(cands, ["a/m", "b/m"]);
    assert_eq!(t.outcome.as_ref().map(|o| o.status), Some(200));
    assert!(
        t.prompt_chars.is_some_and(|n| n > 0),
        "a sink's trace of an answer without usage carries prompt_chars"
    );
    assert_eq!(store.get("s1").unwrap().candidates.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn failed_request_trace_has_the_error_status_and_class() {
    let s = Script::new();
    s.on("a", Act::Fail(e429(Some(secs(60)))));
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);

    let e = svc
        .oneshot(req_id(&route(vec![cand("a", secs(1))]), false, "t2"))
        .await
        .unwrap_err();

    let t = store.get("t2").unwrap();
    let outcome = t.outcome.clone().unwrap();
    assert_eq!(outcome.status, 429);
    assert_eq!(outcome.status, e.status());
    assert_eq!(outcome.class, "rate_limited");
    assert_eq!(outcome.served_by, None);
    assert!(outcome.message.unwrap().contains("rate limited"));
    assert_eq!(decision_kinds(&t), ["advance"]);
}

#[tokio::test(start_paused = true)]
async fn stream_trace_is_finished_done_only_after_the_stream_ends() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            role("x"),
            text("x", "hi"),
            sleep(300),
            text("x", " there"),
            finish("x"),
        ]),
    );
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);

    let resp = svc
        .oneshot(req_id(&route(vec![cand("a", secs(1))]), true, "s1"))
        .await
        .unwrap();
    assert!(store.get("s1").is_none(), "not finished while streaming");
    let items = collect(resp.body).await;
    assert_eq!(stream_text(&items), "hi there");

    let t = store.get("s1").unwrap();
    assert!(t.stream);
    let outcome = t.outcome.clone().unwrap();
    assert_eq!(outcome.stream_end, Some("done"));
    assert_eq!(outcome.status, 200);
    assert_eq!(outcome.served_by.as_deref(), Some("a/m"));
    assert_eq!(t.committed_at_ms, Some(0));
    assert_eq!(t.duration_ms, Some(300));
}

#[tokio::test(start_paused = true)]
async fn stream_ending_in_an_error_is_finished_error() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            text("x", "partial"),
            sleep(50),
            fail_in_stream(Failure::Connect),
        ]),
    );
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);

    let resp = svc
        .oneshot(req_id(&route(vec![cand("a", secs(1))]), true, "s2"))
        .await
        .unwrap();
    let items = collect(resp.body).await;
    assert!(items.last().unwrap().is_err());

    let t = store.get("s2").unwrap();
    let outcome = t.outcome.clone().unwrap();
    assert_eq!(outcome.stream_end, Some("error"));
    assert_eq!(outcome.class, "stream_cut");
    assert_eq!(outcome.status, 200, "headers were already sent");
    assert!(decision_kinds(&t).contains(&"stream_failed"));
    assert!(decision_kinds(&t).contains(&"continuation"));
}

#[tokio::test(start_paused = true)]
async fn dropped_stream_is_finished_client_disconnected_499() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            text("x", "one"),
            sleep(100),
            text("x", "two"),
            sleep(100),
            finish("x"),
        ]),
    );
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);

    let resp = svc
        .oneshot(req_id(&route(vec![cand("a", secs(1))]), true, "s3"))
        .await
        .unwrap();
    let ProviderResponse::Stream(mut stream) = resp.body else {
        panic!("expected a stream")
    };
    assert!(stream.next().await.unwrap().is_ok());
    assert!(store.get("s3").is_none());
    drop(stream);

    let t = store.get("s3").expect("finished on drop");
    let outcome = t.outcome.clone().unwrap();
    assert_eq!(outcome.status, 499);
    assert_eq!(outcome.class, "client_disconnected");
    assert_eq!(outcome.stream_end, Some("client_disconnected"));
    assert_eq!(outcome.served_by.as_deref(), Some("a/m"));
}

#[tokio::test(start_paused = true)]
async fn dropped_request_before_an_answer_is_finished_client_disconnected() {
    let s = Script::new();
    s.on("a", Act::Hang);
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);

    let fut = svc.oneshot(req_id(&route(vec![cand("a", secs(10))]), false, "gone"));
    let _ = tokio::time::timeout(ms(100), fut).await;

    let t = store.get("gone").expect("finished on drop");
    let outcome = t.outcome.clone().unwrap();
    assert_eq!(outcome.status, 499);
    assert_eq!(outcome.stream_end, None);
    assert_eq!(outcome.served_by, None);
}

#[tokio::test(start_paused = true)]
async fn trace_never_contains_prompt_or_completion_text() {
    const PROMPT: &str = "ZEBRA-PROMPT-7731 my secret question";
    let s = Script::new();
    // A failover before the commit, then a mid-stream continuation that
    // carries the delivered text as a prefill.
    s.then("a", Act::Fail(e503()));
    s.on(
        "a",
        Act::Stream(vec![
            role("x"),
            text("x", "OCELOT-ANSWER-"),
            sleep(10),
            fail_in_stream(Failure::StreamCut),
        ]),
    );
    s.on(
        "b",
        Act::Stream(vec![text("y", "CONTINUED-9911"), finish("y")]),
    );
    let store = TraceStore::new(8);
    let svc: Stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(TraceLayer::new(store.clone()))
            .layer(LatencyRankLayer::new(LatencyConfig {
                explore: 0.0,
                ..LatencyConfig::default()
            }))
            .layer(HealthScoreLayer::new(HealthConfig::default()))
            .layer(FallbackLayer::new())
            .service(s.leaf()),
    );
    let route = route_strategy(
        vec![cand("a", secs(1)), prefill_cand("b", secs(1))],
        Strategy::Latency,
    );
    let mut r = RouteRequest::new(chat(PROMPT, true), route);
    r.ctx.request_id = "private".into();

    let resp = svc.oneshot(r).await.unwrap();
    let items = collect(resp.body).await;
    assert_eq!(stream_text(&items), "OCELOT-ANSWER-CONTINUED-9911");
    let calls = s.calls();
    assert!(
        calls.iter().all(|c| c.prompt == PROMPT),
        "the prompt did reach the leaf"
    );
    assert_eq!(
        calls.last().unwrap().prefill.as_deref(),
        Some("OCELOT-ANSWER-")
    );

    let t = store.get("private").unwrap();
    assert!(t.attempts.len() >= 3, "{:?}", t.attempts);
    let json = serde_json::to_string(&t).unwrap();
    for secret in ["ZEBRA", "secret question", "OCELOT", "CONTINUED-9911"] {
        assert!(
            !json.contains(secret),
            "trace JSON leaks {secret:?}: {json}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn trace_store_is_bounded_and_drops_the_oldest() {
    let s = Script::new();
    s.on("a", Act::Ok);
    let store = TraceStore::new(3);
    let svc = traced(&s, &store);
    let route = route(vec![cand("a", secs(1))]);
    for i in 0..10 {
        svc.clone()
            .oneshot(req_id(&route, false, &format!("id-{i}")))
            .await
            .unwrap();
        assert!(store.len() <= 3);
    }
    assert_eq!(store.len(), 3);
    for i in 0..7 {
        assert!(store.get(&format!("id-{i}")).is_none(), "id-{i} kept");
    }
    for i in 7..10 {
        assert!(store.get(&format!("id-{i}")).is_some(), "id-{i} dropped");
    }
}

#[tokio::test(start_paused = true)]
async fn trace_entries_are_bounded_per_request() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);
    let route = route_with(vec![cand("a", secs(1))], |p| {
        p.same_target_retries = 100;
        p.backoff_base = ms(1);
        p.backoff_max = ms(1);
    });

    let e = svc.oneshot(req_id(&route, false, "big")).await.unwrap_err();
    assert_eq!(e.attempts.len(), 101);

    let t = store.get("big").unwrap();
    assert_eq!(t.attempts.len(), modelux::trace::MAX_ENTRIES);
    assert!(t.decisions.len() <= modelux::trace::MAX_ENTRIES);
    assert!(t.truncated);
}

// ---------------------------------------------------------------------------
// The active-streams gauge (recorded by the Finisher of each trace)
// ---------------------------------------------------------------------------

mod gauges {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    #[derive(Default)]
    pub struct Value(Mutex<f64>);

    impl GaugeFn for Value {
        fn increment(&self, value: f64) {
            *self.0.lock().unwrap() += value;
        }
        fn decrement(&self, value: f64) {
            *self.0.lock().unwrap() -= value;
        }
        fn set(&self, value: f64) {
            *self.0.lock().unwrap() = value;
        }
    }

    /// Records gauges (by name, labels ignored); counters and histograms are dropped.
    #[derive(Default)]
    pub struct GaugeRecorder {
        gauges: Mutex<HashMap<String, Arc<Value>>>,
    }

    impl GaugeRecorder {
        pub fn get(&self, name: &str) -> f64 {
            self.gauges
                .lock()
                .unwrap()
                .get(name)
                .map_or(0.0, |v| *v.0.lock().unwrap())
        }
    }

    impl Recorder for GaugeRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let v = self
                .gauges
                .lock()
                .unwrap()
                .entry(key.name().to_owned())
                .or_default()
                .clone();
            Gauge::from_arc(v)
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

/// Runs `f` on a paused current-thread runtime with `rec` as the metrics recorder.
fn with_gauges<F: std::future::Future<Output = ()>>(rec: &gauges::GaugeRecorder, f: F) {
    metrics::with_local_recorder(rec, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(f)
    });
}

fn two_chunk_stream(s: &Script) {
    s.on(
        "a",
        Act::Stream(vec![
            text("x", "one"),
            sleep(100),
            text("x", "two"),
            finish("x"),
        ]),
    );
}

#[test]
fn active_streams_gauge_counts_a_stream_until_it_ends() {
    let rec = gauges::GaugeRecorder::default();
    with_gauges(&rec, async {
        let s = Script::new();
        two_chunk_stream(&s);
        let store = TraceStore::new(8);
        let svc = traced(&s, &store);
        let resp = svc
            .oneshot(req(&route(vec![cand("a", secs(1))]), true))
            .await
            .unwrap();
        assert_eq!(rec.get("modelux_active_streams"), 1.0);
        collect(resp.body).await;
        assert_eq!(rec.get("modelux_active_streams"), 0.0);
    });
}

#[test]
fn active_streams_gauge_returns_to_zero_after_a_client_disconnect() {
    let rec = gauges::GaugeRecorder::default();
    with_gauges(&rec, async {
        let s = Script::new();
        two_chunk_stream(&s);
        let store = TraceStore::new(8);
        let svc = traced(&s, &store);
        let resp = svc
            .oneshot(req_id(&route(vec![cand("a", secs(1))]), true, "gone"))
            .await
            .unwrap();
        assert_eq!(rec.get("modelux_active_streams"), 1.0);
        let ProviderResponse::Stream(mut stream) = resp.body else {
            panic!("expected a stream")
        };
        stream.next().await.unwrap().unwrap();
        drop(stream);
        assert_eq!(store.get("gone").unwrap().outcome.unwrap().status, 499);
        assert_eq!(rec.get("modelux_active_streams"), 0.0, "gauge leaked");
    });
}

/// A stream that ends without usage is estimated from all of what was
/// billed: the tool calls it streamed and the tools the request declared,
/// not its text alone (a tool-calling answer has no text at all).
#[tokio::test(start_paused = true)]
async fn a_stream_without_usage_estimates_its_tool_calls_and_declared_tools() {
    use modelux::api::{ChatChunk, Delta, FunctionCallDelta, Tool, ToolCallDelta};
    let args = r#"{"city":"Paris","units":"metric","days":3}"#;
    let call = |name: Option<&str>, args: &str| {
        Step::Chunk(
            ChatChunk::with_delta(
                "x",
                MODEL,
                0,
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index: 0,
                        id: name.map(|_| "call_1".into()),
                        kind: name.map(|_| "function".into()),
                        function: Some(FunctionCallDelta {
                            name: name.map(Into::into),
                            arguments: Some(args.into()),
                        }),
                        extra: Default::default(),
                    }]),
                    ..Delta::default()
                },
            )
            .into(),
        )
    };
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            role("x"),
            call(Some("get_weather"), &args[..10]),
            call(None, &args[10..]),
            fail_in_stream(Failure::StreamCut),
        ]),
    );
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);
    let tool: Tool = serde_json::from_value(serde_json::json!({"type": "function", "function": {
        "name": "get_weather", "description": "The weather of a city for some days",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}))
    .unwrap();
    let mut r = req_id(&route(vec![cand("a", secs(1))]), true, "tc");
    let mut chat = (*r.chat).clone();
    chat.params.tools = Some(vec![tool.clone()]);
    r.chat = Arc::new(chat);
    let prompt = r.chat.prompt_len();
    let items = collect(svc.oneshot(r).await.unwrap().body).await;
    assert!(items.last().unwrap().is_err());

    let t = store.get("tc").unwrap();
    assert!(t.usage_estimated);
    let usage = t.usage.unwrap();
    let streamed = "get_weather".len() + args.len();
    assert_eq!(usage.completion_tokens, streamed.div_ceil(4) as u64);
    let tool_json = serde_json::to_string(&tool.function).unwrap().len();
    assert_eq!(prompt, "hello there".len() + tool_json);
    assert_eq!(usage.prompt_tokens, prompt.div_ceil(4) as u64);
}
