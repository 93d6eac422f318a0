//! The per-request log line of `TraceLayer`, and the gateway's line for a
//! request refused before routing. Alone in its test binary:
//! `tracing`'s per-callsite interest is process-wide, and subscribers set
//! per thread by tests running in parallel make it racy.

mod common;
mod layers;

use layers::*;
use modelux::fallback::FallbackLayer;
use modelux::route::{RouteError, RouteRequest, RouteResponse};
use modelux::trace::{TraceLayer, TraceStore};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

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

/// The per-request `modelux::request` line: `info` for a success, `warn` for
/// a failure, so the default `info` filter logs every request and `warn`
/// only the failures.
#[tokio::test(start_paused = true)]
async fn request_events_are_info_for_successes_and_warn_for_failures() {
    let s = Script::new();
    s.on("ok", Act::Ok);
    s.on("bad", Act::Fail(e503()));
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);
    let good = route(vec![cand("ok", secs(1))]);
    let bad = route(vec![cand("bad", secs(1))]);
    for (filter, expect_ok_line) in [("warn", false), ("info", true)] {
        let (buf, subscriber) = LogBuf::subscriber(filter);
        let _guard = tracing::subscriber::set_default(subscriber);
        let ok_id = format!("ok-{filter}");
        let bad_id = format!("bad-{filter}");
        svc.clone()
            .oneshot(req_id(&good, false, &ok_id))
            .await
            .unwrap();
        svc.clone()
            .oneshot(req_id(&bad, false, &bad_id))
            .await
            .unwrap_err();
        let logs = buf.text();
        let bad_line = logs
            .lines()
            .find(|l| l.contains(&bad_id))
            .unwrap_or_else(|| panic!("no line for the failure in:\n{logs}"));
        assert!(bad_line.contains(" WARN "), "{bad_line}");
        assert!(bad_line.contains("request finished"), "{bad_line}");
        assert!(bad_line.contains("status=502"), "{bad_line}");
        // The cause, in the failed attempt's own words.
        assert!(
            bad_line.contains("cause=\"scripted failure\""),
            "{bad_line}"
        );
        assert!(
            !bad_line.contains("client="),
            "empty fields are left out: {bad_line}"
        );
        let ok_line = logs.lines().find(|l| l.contains(&ok_id));
        assert_eq!(ok_line.is_some(), expect_ok_line, "{filter}:\n{logs}");
        if let Some(l) = ok_line {
            assert!(l.contains(" INFO ") && l.contains("outcome=ok"), "{l}");
            assert!(!l.contains("cause="), "a success has no cause: {l}");
        }
    }
}

/// A stream continued on another target after a break names it on its
/// line: the cost is priced at it from then on.
#[tokio::test(start_paused = true)]
async fn a_continued_stream_s_line_names_the_target_that_continued_it() {
    use modelux::provider::Failure;
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            role("a-id"),
            text("a-id", "Hello "),
            fail_in_stream(Failure::Connect),
        ]),
    );
    s.on(
        "b",
        Act::Stream(vec![role("b-id"), text("b-id", "world"), finish("b-id")]),
    );
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);
    let r = route(vec![cand("a", secs(1)), prefill_cand("b", secs(1))]);
    let line = streamed_line(&svc, &r, "cont-1").await;
    assert!(
        line.contains("served_by=\"a/m\"") || line.contains("served_by=a/m"),
        "{line}"
    );
    assert!(line.contains("continued_by=b/m"), "{line}");
}

/// A stream that broke after its commit names the break as its cause, not
/// the error of a target tried before the one that committed.
#[tokio::test(start_paused = true)]
async fn a_broken_stream_s_cause_is_the_break() {
    use modelux::provider::Failure;
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on(
        "b",
        Act::Stream(vec![
            role("b-id"),
            text("b-id", "Hello "),
            fail_in_stream(Failure::Connect),
        ]),
    );
    let store = TraceStore::new(8);
    let svc = traced(&s, &store);
    let r = route_with(vec![cand("a", secs(1)), cand("b", secs(1))], |p| {
        p.same_target_retries = 0
    });
    let line = streamed_line(&svc, &r, "cut-1").await;
    assert!(line.contains("outcome=stream_cut"), "{line}");
    assert!(line.contains("cause=\"stream cut"), "{line}");
}

/// Streams a request to its end with an `info` subscriber on this thread,
/// and returns the request's log line.
async fn streamed_line(svc: &Stack, r: &std::sync::Arc<modelux::route::Route>, id: &str) -> String {
    let (buf, subscriber) = LogBuf::subscriber("info");
    let _guard = tracing::subscriber::set_default(subscriber);
    let resp = svc.clone().oneshot(req_id(r, true, id)).await.unwrap();
    drop(collect(resp.body).await);
    let logs = buf.text();
    logs.lines()
        .find(|l| l.contains(id))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no line for {id} in:\n{logs}"))
}

/// A request that was routed and failed (every target down: a 502) is a
/// finished request, logged with its cause, not a refusal: only what never
/// reached routing counts in `modelux_requests_refused_total`, or the
/// refusals would rise with every provider outage and hide bad clients.
#[tokio::test]
async fn a_routed_502_is_a_finished_request_not_a_refusal() {
    let (buf, subscriber) = LogBuf::subscriber("info");
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = common::start(|_| {
        serde_json::json!({
            "providers": {"dead": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-test-000000"}},
            "models": {"gone": {"provider": "dead"}},
            "routes": {"default": {"attempts": [{"model": "gone", "timeout_ms": 2000}]}}
        })
    })
    .await;
    let send = |id: &'static str, body: &'static str| {
        h.client
            .post(format!("{}/v1/chat/completions", h.url))
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let routed = send(
        "routed-502",
        r#"{"model":"default","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(routed.status(), 502);
    let refused = send("refused-400", r#"{"model":"default","messages":"#)
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let logs = buf.text();
    let lines = |id: &str| -> Vec<&str> { logs.lines().filter(|l| l.contains(id)).collect() };
    let routed = lines("routed-502");
    assert!(
        routed
            .iter()
            .any(|l| l.contains("request finished") && l.contains("status=502")),
        "{logs}"
    );
    assert!(
        !routed.iter().any(|l| l.contains("refused before routing")),
        "{logs}"
    );
    // The same capture sees a real refusal, so the absence above is real.
    assert!(
        lines("refused-400")
            .iter()
            .any(|l| l.contains("refused before routing")
                && l.contains("reason=\"invalid_request\"")),
        "{logs}"
    );
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("modelux_requests_refused_total{reason=\"invalid_request\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("modelux_requests_refused_total{reason=\"other\"}"),
        "{metrics}"
    );
}
