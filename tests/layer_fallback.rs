//! Behaviour of `FallbackLayer`: retries, fallbacks, deadlines, commit-late
//! streams and mid-stream continuation, on virtual time.

mod layers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use layers::*;
use modelux::fallback::{Fallback, FallbackLayer};
use modelux::provider::{Failure, ProviderError};
use modelux::route::{RetryOn, RouteErrorKind};
use modelux::trace::{TraceLayer, TraceStore};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};

fn a_b(timeout: Duration) -> Vec<modelux::route::Candidate> {
    vec![cand("a", timeout), cand("b", timeout)]
}

// ---------------------------------------------------------------------------
// Retries and fallbacks
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn server_error_on_primary_is_served_by_secondary_after_one_same_target_retry() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::Text("from b".into()));
    let store = TraceStore::new(8);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(store.clone()))
        .layer(FallbackLayer::new())
        .service(s.leaf());
    let route = route(a_b(secs(1)));

    let resp = within(svc.oneshot(req_id(&route, false, "r1")))
        .await
        .unwrap();

    assert_eq!(resp.served_by.id.to_string(), "b/m");
    assert_eq!(resp.attempts, 3, "primary, primary retry, secondary");
    assert_eq!(s.providers(), ["a", "a", "b"]);
    assert_eq!(completion_text(&resp.body), "from b");
    let t = store.get("r1").expect("trace stored");
    let outcome = t.outcome.expect("finished");
    assert_eq!(outcome.status, 200);
    assert_eq!(outcome.served_by.as_deref(), Some("b/m"));
    let kinds: Vec<_> = t.attempts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, ["first", "retry", "fallback"]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_under_the_cap_is_waited_before_the_same_target_retry() {
    let s = Script::new();
    s.then("a", Act::Fail(e429(Some(ms(300)))));
    s.on("a", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let route = route(a_b(secs(1)));

    let resp = within(svc.oneshot(req(&route, false))).await.unwrap();

    assert_eq!(resp.served_by.id.to_string(), "a/m");
    let calls = s.calls();
    assert_eq!(s.providers(), ["a", "a"]);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= ms(300),
        "retry started {gap:?} after the first attempt"
    );
    assert!(
        gap <= ms(301),
        "retry waited longer than Retry-After: {gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_over_the_cap_advances_at_once() {
    let s = Script::new();
    s.on("a", Act::Fail(e429(Some(secs(10)))));
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let route = route_with(a_b(secs(1)), |p| p.retry_after_cap = secs(5));
    let t0 = Instant::now();

    let resp = within(svc.oneshot(req(&route, false))).await.unwrap();

    assert_eq!(resp.served_by.id.to_string(), "b/m");
    assert_eq!(s.providers(), ["a", "b"], "no same-target retry");
    let calls = s.calls();
    assert_eq!(calls[1].at, calls[0].at, "no wait before the next target");
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_that_does_not_fit_the_total_budget_advances_at_once() {
    let s = Script::new();
    s.on("a", Act::Fail(e429(Some(secs(2)))));
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let route = route_with(a_b(secs(1)), |p| {
        p.retry_after_cap = secs(5);
        p.total_budget = ms(1500);
    });

    let resp = within(svc.oneshot(req(&route, false))).await.unwrap();

    assert_eq!(resp.served_by.id.to_string(), "b/m");
    assert_eq!(s.providers(), ["a", "b"]);
    let calls = s.calls();
    assert_eq!(calls[1].at, calls[0].at);
}

#[tokio::test(start_paused = true)]
async fn backoff_without_retry_after_is_full_jitter_up_to_the_base() {
    let base = ms(100);
    let store = TraceStore::new(256);
    let mut gaps = Vec::new();
    for i in 0..60 {
        let s = Script::new();
        s.then("a", Act::Fail(e503()));
        s.on("a", Act::Ok);
        let svc = ServiceBuilder::new()
            .layer(TraceLayer::new(store.clone()))
            .layer(FallbackLayer::new())
            .service(s.leaf());
        let route = route_with(a_b(secs(1)), |p| {
            p.backoff_base = base;
            p.backoff_max = secs(2);
        });
        let id = format!("bk-{i}");
        within(svc.oneshot(req_id(&route, false, &id)))
            .await
            .unwrap();
        let calls = s.calls();
        assert_eq!(s.providers(), ["a", "a"]);
        let gap = calls[1].at - calls[0].at;
        // The timer wheel has millisecond resolution: allow rounding up by 1 ms.
        assert!(gap <= base + ms(1), "first retry waited {gap:?} > base");
        let t = store.get(&id).unwrap();
        let backoff = t.attempts[1].backoff_ms.expect("retry records its backoff");
        assert!(backoff <= 100);
        let gap_ms = gap.as_millis() as u64;
        assert!(
            gap_ms == backoff || gap_ms == backoff + 1,
            "measured wait {gap_ms} ms, trace says {backoff} ms"
        );
        gaps.push(gap);
    }
    // Full jitter: spread over [0, base], not a fixed wait and not zero.
    assert!(gaps.iter().any(|g| *g < ms(40)), "no short waits: {gaps:?}");
    assert!(gaps.iter().any(|g| *g > ms(60)), "no long waits: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn backoff_ceiling_doubles_with_each_retry_and_is_capped() {
    // With three same-target retries the n-th wait is in [0, min(max, base * 2^n)].
    let mut max_second = Duration::ZERO;
    for _ in 0..40 {
        let s = Script::new();
        s.on("a", Act::Fail(e503()));
        let svc = Fallback::new(s.leaf());
        let route = route_with(vec![cand("a", secs(1))], |p| {
            p.same_target_retries = 3;
            p.backoff_base = ms(100);
            p.backoff_max = ms(300);
        });
        let e = within(svc.oneshot(req(&route, false))).await.unwrap_err();
        assert_eq!(e.kind, RouteErrorKind::AllFailed);
        let calls = s.calls();
        assert_eq!(calls.len(), 4);
        let g: Vec<_> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
        assert!(g[0] <= ms(101), "{g:?}");
        assert!(g[1] <= ms(201), "{g:?}");
        assert!(g[2] <= ms(301), "capped at backoff_max: {g:?}");
        max_second = max_second.max(g[1]);
    }
    assert!(
        max_second > ms(101),
        "second retry never waited beyond the base"
    );
}

// ---------------------------------------------------------------------------
// Timeouts and the total budget
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn hanging_target_times_out_and_falls_back_without_same_target_retry() {
    let s = Script::new();
    s.on("a", Act::Hang);
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let route = route(a_b(ms(250)));

    let resp = within(svc.oneshot(req(&route, false))).await.unwrap();

    assert_eq!(resp.served_by.id.to_string(), "b/m");
    assert_eq!(resp.attempts, 2);
    assert_eq!(s.providers(), ["a", "b"]);
    let calls = s.calls();
    assert_eq!(calls[1].at - calls[0].at, ms(250));
}

#[tokio::test(start_paused = true)]
async fn every_target_hanging_yields_timeouts_each_tried_once() {
    let s = Script::new();
    s.on("a", Act::Hang);
    s.on("b", Act::Hang);
    let svc = Fallback::new(s.leaf());
    let route = route(a_b(ms(250)));
    let t0 = Instant::now();

    let e = within(svc.oneshot(req(&route, false))).await.unwrap_err();

    assert_eq!(s.providers(), ["a", "b"]);
    assert_eq!(t0.elapsed(), ms(500));
    assert_eq!(e.kind, RouteErrorKind::AllFailed);
    assert_eq!(e.status(), 502);
    let failures: Vec<_> = e.attempts.iter().map(|a| a.error.failure).collect();
    assert_eq!(failures, [Failure::Timeout, Failure::Timeout]);
}

#[tokio::test(start_paused = true)]
async fn total_budget_clamps_attempt_timeouts_and_ends_with_budget_exhausted() {
    let s = Script::new();
    for p in ["a", "b", "c"] {
        s.on(p, Act::Hang);
    }
    let store = TraceStore::new(8);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(store.clone()))
        .layer(FallbackLayer::new())
        .service(s.leaf());
    let route = route_with(
        vec![cand("a", ms(800)), cand("b", ms(800)), cand("c", ms(800))],
        |p| p.total_budget = secs(1),
    );
    let t0 = Instant::now();

    let e = within(svc.oneshot(req_id(&route, false, "budget")))
        .await
        .unwrap_err();

    let elapsed = t0.elapsed();
    assert_eq!(e.kind, RouteErrorKind::BudgetExhausted);
    assert_eq!(e.status(), 504);
    assert!(elapsed <= secs(1) + ms(5), "took {elapsed:?}");
    assert!(elapsed >= secs(1));
    assert_eq!(s.providers(), ["a", "b"], "c would start after the budget");
    assert!(s.calls().iter().all(|c| c.at - t0 < secs(1)));
    let t = store.get("budget").unwrap();
    let timeouts: Vec<_> = t.attempts.iter().map(|a| a.timeout_ms).collect();
    assert_eq!(
        timeouts,
        [800, 200],
        "second attempt clamped to what is left"
    );
    assert!(t.decisions.iter().any(|d| d.kind == "budget_exhausted"));
    assert_eq!(t.outcome.unwrap().status, 504);
}

// ---------------------------------------------------------------------------
// Failure classes
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn context_length_advances_without_same_target_retry() {
    let s = Script::new();
    s.on("a", Act::Fail(err(Failure::ContextLength)));
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());

    let resp = within(svc.oneshot(req(&route(a_b(secs(1))), false)))
        .await
        .unwrap();

    assert_eq!(resp.served_by.id.to_string(), "b/m");
    assert_eq!(s.providers(), ["a", "b"]);
    assert_eq!(resp.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn content_policy_is_rejected_and_the_next_target_never_called() {
    let s = Script::new();
    s.on("a", Act::Fail(err(Failure::ContentPolicy)));
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());

    let e = svc
        .oneshot(req(&route(a_b(secs(1))), false))
        .await
        .unwrap_err();

    assert_eq!(
        e.kind,
        RouteErrorKind::Rejected(err(Failure::ContentPolicy))
    );
    assert_eq!(e.status(), 400);
    assert_eq!(s.providers(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn client_error_is_rejected_with_its_status() {
    let s = Script::new();
    let bad = err(Failure::Client { status: 400 });
    s.on("a", Act::Fail(bad.clone()));
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());

    let e = svc
        .oneshot(req(&route(a_b(secs(1))), false))
        .await
        .unwrap_err();

    assert_eq!(e.kind, RouteErrorKind::Rejected(bad));
    assert_eq!(e.status(), 400);
    assert_eq!(e.class(), "client_error");
    assert_eq!(s.providers(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn all_rate_limited_reports_the_smallest_retry_after() {
    let s = Script::new();
    s.on("a", Act::Fail(e429(Some(secs(10)))));
    s.on("b", Act::Fail(e429(Some(secs(7)))));
    s.on("c", Act::Fail(e429(None)));
    let svc = Fallback::new(s.leaf());
    let route = route(vec![
        cand("a", secs(1)),
        cand("b", secs(1)),
        cand("c", secs(1)),
    ]);

    let e = within(svc.oneshot(req(&route, false))).await.unwrap_err();

    assert_eq!(
        e.kind,
        RouteErrorKind::RateLimited {
            retry_after: Some(secs(7))
        }
    );
    assert_eq!(e.status(), 429);
    // a and b are over the 5 s cap (advance), c has no Retry-After (backoff retry).
    assert_eq!(s.providers(), ["a", "b", "c", "c"]);
}

#[tokio::test(start_paused = true)]
async fn mixed_failures_are_all_failed_502() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::Fail(e429(Some(secs(60)))));
    s.on("c", Act::Hang);
    let svc = Fallback::new(s.leaf());
    let route = route(vec![
        cand("a", secs(1)),
        cand("b", secs(1)),
        cand("c", secs(1)),
    ]);

    let e = within(svc.oneshot(req(&route, false))).await.unwrap_err();

    assert_eq!(e.kind, RouteErrorKind::AllFailed);
    assert_eq!(e.status(), 502);
    let failures: Vec<_> = e.attempts.iter().map(|a| a.error.failure).collect();
    assert_eq!(
        failures,
        [
            Failure::Server { status: 503 },
            Failure::Server { status: 503 },
            Failure::RateLimited,
            Failure::Timeout
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn failure_not_in_retry_on_is_returned_as_rejected() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let route = route_with(a_b(secs(1)), |p| {
        p.retry_on = RetryOn::parse(["429", "timeout", "connect"]).unwrap();
    });

    let e = within(svc.oneshot(req(&route, false))).await.unwrap_err();

    assert_eq!(e.kind, RouteErrorKind::Rejected(e503()));
    assert_eq!(e.status(), 503, "the provider's own status");
    assert_eq!(s.providers(), ["a"], "neither retried nor failed over");
}

#[tokio::test(start_paused = true)]
async fn exact_status_in_retry_on_moves_on_but_other_5xx_do_not() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::Fail(err(Failure::Server { status: 500 })));
    s.on("c", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let route = route_with(
        vec![cand("a", secs(1)), cand("b", secs(1)), cand("c", secs(1))],
        |p| p.retry_on = RetryOn::parse(["503"]).unwrap(),
    );

    let e = within(svc.oneshot(req(&route, false))).await.unwrap_err();

    assert_eq!(
        e.kind,
        RouteErrorKind::Rejected(err(Failure::Server { status: 500 }))
    );
    assert_eq!(s.providers(), ["a", "a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn timeout_outside_retry_on_is_not_reported_as_a_client_error() {
    let s = Script::new();
    s.on("a", Act::Hang);
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let route = route_with(a_b(ms(200)), |p| {
        p.retry_on = RetryOn::parse(["5xx"]).unwrap();
    });

    let e = within(svc.oneshot(req(&route, false))).await.unwrap_err();

    assert_eq!(s.providers(), ["a"]);
    assert_eq!(e.status(), 504, "an upstream timeout is a gateway timeout");
}

#[tokio::test(start_paused = true)]
async fn no_candidates_is_an_error() {
    let s = Script::new();
    let svc = Fallback::new(s.leaf());
    let e = within(svc.oneshot(req(&route(vec![]), false)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, RouteErrorKind::NoCandidates);
    assert_eq!(e.status(), 502);
    assert_eq!(s.total(), 0);
}

// ---------------------------------------------------------------------------
// Streams: commit late
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn in_band_error_before_content_fails_over_invisibly() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            role("a-id"),
            sleep(10),
            fail_in_stream(Failure::Overloaded),
        ]),
    );
    s.on(
        "b",
        Act::Stream(vec![role("b-id"), text("b-id", "from b"), finish("b-id")]),
    );
    let svc = Fallback::new(s.leaf());
    let route = route_with(a_b(secs(1)), |p| p.same_target_retries = 0);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    assert_eq!(resp.served_by.id.to_string(), "b/m");
    let items = collect(resp.body).await;

    assert_eq!(s.providers(), ["a", "b"]);
    assert!(items.iter().all(|i| i.is_ok()), "{items:?}");
    assert!(
        items
            .iter()
            .all(|i| i.as_ref().unwrap().id().as_deref() == Some("b-id")),
        "nothing of the failed attempt reached the client: {items:?}"
    );
    assert_eq!(stream_text(&items), "from b");
    assert_eq!(items.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn stream_cut_before_content_is_a_connect_failure_retried_then_failed_over() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![role("a-id"), fail_in_stream(Failure::StreamCut)]),
    );
    s.on("b", Act::Stream(vec![text("b-id", "ok"), finish("b-id")]));
    let svc = Fallback::new(s.leaf());

    let resp = svc.oneshot(req(&route(a_b(secs(1))), true)).await.unwrap();
    let items = collect(resp.body).await;

    assert_eq!(s.providers(), ["a", "a", "b"]);
    assert_eq!(stream_text(&items), "ok");
}

#[tokio::test(start_paused = true)]
async fn slow_first_content_token_is_a_timeout_even_with_headers_sent() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            role("a-id"),
            sleep(5_000),
            text("a-id", "too late"),
            finish("a-id"),
        ]),
    );
    s.on(
        "b",
        Act::Stream(vec![text("b-id", "in time"), finish("b-id")]),
    );
    let store = TraceStore::new(8);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(store.clone()))
        .layer(FallbackLayer::new())
        .service(s.leaf());

    let resp = svc
        .oneshot(req_id(&route(a_b(secs(1))), true, "slow"))
        .await
        .unwrap();
    let items = collect(resp.body).await;

    assert_eq!(stream_text(&items), "in time");
    assert_eq!(
        s.providers(),
        ["a", "b"],
        "a timeout is not retried on the same target"
    );
    let calls = s.calls();
    assert_eq!(calls[1].at - calls[0].at, secs(1));
    let t = store.get("slow").unwrap();
    assert_eq!(t.attempts[0].outcome, "timeout");
}

// ---------------------------------------------------------------------------
// Streams: mid-stream recovery
// ---------------------------------------------------------------------------

fn cut_after_hello(then: Step) -> Act {
    Act::Stream(vec![
        role("a-id"),
        text("a-id", "Hel"),
        sleep(10),
        text("a-id", "lo "),
        sleep(10),
        then,
    ])
}

fn continuation_stream() -> Act {
    Act::Stream(vec![
        role("b-id"),
        sleep(5),
        text("b-id", "wor"),
        text("b-id", "ld"),
        finish("b-id"),
    ])
}

fn assert_one_continued_answer(
    items: &[Result<modelux::provider::Chunk, modelux::provider::ProviderError>],
) {
    assert!(items.iter().all(|i| i.is_ok()), "{items:?}");
    let chunks: Vec<_> = items
        .iter()
        .map(|i| i.as_ref().unwrap().to_chat_chunk().unwrap().into_owned())
        .collect();
    assert_eq!(stream_text(items), "Hello world");
    assert!(
        chunks.iter().all(|c| c.id == "a-id"),
        "every chunk carries the first attempt's id: {chunks:?}"
    );
    let roles = chunks
        .iter()
        .filter(|c| c.choices.iter().any(|ch| ch.delta.role.is_some()))
        .count();
    assert_eq!(roles, 1, "one role, on the very first chunk only");
    assert!(chunks[0].choices[0].delta.role.is_some());
    assert_eq!(
        chunks.last().unwrap().finish_reason(),
        Some("stop"),
        "ends with a normal finish"
    );
}

#[tokio::test(start_paused = true)]
async fn mid_stream_cut_continues_on_a_prefill_capable_target() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::Connect)));
    s.on("b", continuation_stream());
    let svc = Fallback::new(s.leaf());
    let route = route(vec![cand("a", secs(1)), prefill_cand("b", secs(1))]);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    assert_eq!(resp.served_by.id.to_string(), "a/m");
    assert_eq!(resp.attempts, 1);
    let mut stream = match resp.body {
        modelux::provider::ProviderResponse::Stream(s) => s,
        _ => panic!("expected a stream"),
    };
    let mut items = Vec::new();
    use futures_util::StreamExt;
    while let Some(i) = stream.next().await {
        items.push(i);
    }
    assert!(stream.next().await.is_none(), "stays ended");

    assert_one_continued_answer(&items);
    let calls = s.calls();
    assert_eq!(s.providers(), ["a", "b"]);
    assert_eq!(calls[0].prefill, None);
    assert_eq!(calls[1].prefill.as_deref(), Some("Hello "));
}

/// The total budget bounds the wait for the first token; a stream that
/// breaks after it has run out (most long answers) is still continued, with
/// the candidate's own timeout.
#[tokio::test(start_paused = true)]
async fn a_stream_cut_after_the_total_budget_is_still_continued() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            role("a-id"),
            text("a-id", "Hel"),
            sleep(3_000),
            text("a-id", "lo "),
            sleep(3_000),
            fail_in_stream(Failure::Connect),
        ]),
    );
    s.on("b", continuation_stream());
    let svc = Fallback::new(s.leaf());
    let route = route_with(
        vec![cand("a", secs(60)), prefill_cand("b", secs(60))],
        |p| p.total_budget = secs(5),
    );

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;
    // Before the fix `b` was called with a timeout of 0 and the client got
    // the original `stream_cut`.
    assert_one_continued_answer(&items);
    assert_eq!(s.providers(), ["a", "b"]);
    assert_eq!(s.calls()[1].prefill.as_deref(), Some("Hello "));
}

#[tokio::test(start_paused = true)]
async fn continuation_skips_targets_that_cannot_prefill() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::StreamCut)));
    s.on("x", Act::Ok);
    s.on("b", continuation_stream());
    let svc = Fallback::new(s.leaf());
    let route = route_with(
        vec![
            cand("a", secs(1)),
            cand("x", secs(1)),
            prefill_cand("b", secs(1)),
        ],
        prefill_only,
    );

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_one_continued_answer(&items);
    assert_eq!(
        s.providers(),
        ["a", "b"],
        "x cannot prefill and is never called"
    );
}

#[tokio::test(start_paused = true)]
async fn mid_stream_cut_without_a_prefill_target_ends_in_the_original_error() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::Connect)));
    s.on("b", continuation_stream());
    let svc = Fallback::new(s.leaf());
    let route = route_with(vec![cand("a", secs(1)), cand("b", secs(1))], prefill_only);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_eq!(s.providers(), ["a"]);
    let (last, rest) = items.split_last().unwrap();
    assert!(rest.iter().all(|i| i.is_ok()));
    assert_eq!(stream_text(rest), "Hello ");
    assert!(
        rest.iter()
            .all(|i| i.as_ref().unwrap().finish_reason().is_none()),
        "never a normal finish"
    );
    let e = last.as_ref().expect_err("the last item is the error");
    assert_eq!(e.failure, Failure::StreamCut);
}

#[tokio::test(start_paused = true)]
async fn in_band_error_after_content_is_kept_when_nothing_can_continue() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::Overloaded)));
    let svc = Fallback::new(s.leaf());
    let route = route(vec![cand("a", secs(1))]);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_eq!(stream_text(&items), "Hello ");
    let e = items.last().unwrap().as_ref().expect_err("ends in error");
    assert_eq!(e.failure, Failure::Overloaded);
}

#[tokio::test(start_paused = true)]
async fn mid_stream_stall_continues_on_a_prefill_capable_target() {
    let s = Script::new();
    s.on("a", cut_after_hello(Step::Hang));
    s.on("b", continuation_stream());
    let svc = Fallback::new(s.leaf());
    let route = route_with(vec![cand("a", secs(1)), prefill_cand("b", secs(1))], |p| {
        p.stream_idle_timeout = secs(2)
    });

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_one_continued_answer(&items);
    let calls = s.calls();
    assert_eq!(s.providers(), ["a", "b"]);
    assert_eq!(calls[1].prefill.as_deref(), Some("Hello "));
    // "lo " arrived at 10 ms; the stall is declared stream_idle_timeout later.
    assert_eq!(calls[1].at - calls[0].at, ms(10) + secs(2));
}

#[tokio::test(start_paused = true)]
async fn mid_stream_stall_without_a_prefill_target_ends_in_stream_stall() {
    let s = Script::new();
    s.on("a", cut_after_hello(Step::Hang));
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let route = route_with(a_b(secs(1)), |p| {
        p.stream_idle_timeout = secs(2);
        prefill_only(p);
    });
    let t0 = Instant::now();

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_eq!(t0.elapsed(), ms(10) + secs(2));
    assert_eq!(s.providers(), ["a"]);
    assert_eq!(stream_text(&items), "Hello ");
    let e = items.last().unwrap().as_ref().expect_err("ends in error");
    assert_eq!(e.failure, Failure::StreamStall);
}

#[tokio::test(start_paused = true)]
async fn slow_but_steady_stream_is_not_a_stall() {
    // Gaps shorter than stream_idle_timeout, total longer than it.
    let s = Script::new();
    let mut steps = vec![role("a-id")];
    for _ in 0..5 {
        steps.push(text("a-id", "x"));
        steps.push(sleep(1_500));
    }
    steps.push(finish("a-id"));
    s.on("a", Act::Stream(steps));
    let svc = Fallback::new(s.leaf());
    let route = route_with(vec![cand("a", secs(1))], |p| {
        p.stream_idle_timeout = secs(2)
    });

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert!(items.iter().all(|i| i.is_ok()));
    assert_eq!(stream_text(&items), "xxxxx");
}

/// A stream that keeps sending is still ended at the route's `stream_max`:
/// the chunk in hand is delivered, then a `StreamTimeLimit` error, with no
/// continuation elsewhere (a new generation, billed again) and nothing
/// charged to the target. A stream that waits at the limit is ended then too.
#[tokio::test(start_paused = true)]
async fn a_stream_longer_than_stream_max_is_ended_without_a_continuation() {
    use modelux::health::{HealthConfig, HealthScoreLayer, TargetStatus};
    use modelux::provider::TargetId;
    for (gap, expect_text, expect_elapsed) in [
        // Steady: a chunk every 400 ms; the one at 2,000 ms is the last.
        (ms(400), "xxxxxx", ms(2_000)),
        // Slow: a chunk every 1,500 ms; the wait at 2,000 ms is cut.
        (ms(1_500), "xx", ms(2_000)),
    ] {
        let s = Script::new();
        let mut steps = vec![role("a-id"), text("a-id", "x")];
        for _ in 0..20 {
            steps.push(Step::Sleep(gap));
            steps.push(text("a-id", "x"));
        }
        steps.push(finish("a-id"));
        s.on("a", Act::Stream(steps));
        s.on("b", Act::Ok);
        let health = HealthScoreLayer::new(HealthConfig {
            consecutive_failures: 1,
            ..Default::default()
        });
        let reg = health.registry();
        let svc = health.layer(Fallback::new(s.leaf()));
        let route = route_with(a_b(secs(1)), |p| {
            p.stream_idle_timeout = secs(10);
            p.stream_max = secs(2);
        });
        let t0 = Instant::now();
        let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
        let items = collect(resp.body).await;

        assert_eq!(stream_text(&items), expect_text, "gap {gap:?}");
        assert_eq!(t0.elapsed(), expect_elapsed, "gap {gap:?}");
        let e = items.last().unwrap().as_ref().expect_err("ends in error");
        assert_eq!(e.failure, Failure::StreamTimeLimit);
        assert_eq!(e.failure.class(), "stream_time_limit");
        assert_eq!(s.providers(), ["a"], "no continuation");
        assert_eq!(
            reg.status(&TargetId::new("a", MODEL)),
            TargetStatus::Healthy,
            "not the target's fault"
        );
    }
}

/// A recovery counts against `stream_max` too: one still under way when
/// the limit comes is dropped (its attempt with it), and the stream ends
/// with its own failure, not with a continuation that runs on.
#[tokio::test(start_paused = true)]
async fn a_recovery_still_running_at_stream_max_is_dropped() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            role("a-id"),
            text("a-id", "Hello "),
            sleep(1_900),
            fail_in_stream(Failure::StreamCut),
        ]),
    );
    s.on(
        "b",
        Act::After(
            secs(1),
            Box::new(Act::Stream(vec![
                role("b-id"),
                text("b-id", "world"),
                finish("b-id"),
            ])),
        ),
    );
    let svc = Fallback::new(s.leaf());
    let route = route_with(vec![cand("a", secs(1)), prefill_cand("b", secs(5))], |p| {
        p.stream_max = secs(2);
        prefill_only(p);
    });
    let t0 = Instant::now();
    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_eq!(t0.elapsed(), secs(2));
    assert_eq!(stream_text(&items), "Hello ");
    let e = items.last().unwrap().as_ref().expect_err("ends in error");
    assert_eq!(e.failure, Failure::StreamCut);
    assert_eq!(s.providers(), ["a", "b"]);
}

// ---------------------------------------------------------------------------
// Budget accounting when the total budget cuts a fallback short
// ---------------------------------------------------------------------------

struct CountingBudget {
    withdrawals: AtomicUsize,
}

impl tower::retry::budget::Budget for CountingBudget {
    fn deposit(&self) {}
    fn withdraw(&self) -> bool {
        self.withdrawals.fetch_add(1, Ordering::SeqCst);
        true
    }
}

#[tokio::test(start_paused = true)]
async fn fallback_that_cannot_start_costs_no_retry_token() {
    let s = Script::new();
    for p in ["a", "b", "c"] {
        s.on(p, Act::Hang);
    }
    let budget = Arc::new(CountingBudget {
        withdrawals: AtomicUsize::new(0),
    });
    let store = TraceStore::new(8);
    let svc = TraceLayer::new(store.clone()).layer(Fallback::new(s.leaf()));
    let route = route_with(
        vec![cand("a", ms(800)), cand("b", ms(800)), cand("c", ms(800))],
        |p| p.total_budget = secs(1),
    );
    let mut r = req_id(&route, false, "cut");
    r.ctx.retry_budget = Some(budget.clone() as modelux::route::SharedBudget);

    let e = within(svc.oneshot(r)).await.unwrap_err();

    assert_eq!(e.kind, RouteErrorKind::BudgetExhausted);
    assert_eq!(s.providers(), ["a", "b"]);
    let t = store.get("cut").unwrap();
    let fallbacks: Vec<_> = t
        .decisions
        .iter()
        .filter(|d| d.kind == "fallback")
        .map(|d| d.detail.clone())
        .collect();
    assert_eq!(
        fallbacks.len(),
        1,
        "only the fallback to b happened: {fallbacks:?}"
    );
    assert_eq!(
        budget.withdrawals.load(Ordering::SeqCst),
        1,
        "one token for the one fallback that started"
    );
}

#[tokio::test(start_paused = true)]
async fn continuation_moves_past_a_prefill_target_that_fails_before_content() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::StreamCut)));
    s.on("b", Act::Fail(e503()));
    s.on("c", continuation_stream());
    let svc = Fallback::new(s.leaf());
    let route = route(vec![
        cand("a", secs(1)),
        prefill_cand("b", secs(1)),
        prefill_cand("c", secs(1)),
    ]);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_one_continued_answer(&items);
    let calls = s.calls();
    assert_eq!(s.providers(), ["a", "b", "c"]);
    assert_eq!(calls[1].prefill.as_deref(), Some("Hello "));
    assert_eq!(calls[2].prefill.as_deref(), Some("Hello "));
}

// ---------------------------------------------------------------------------
// The leaf seen through tower-test's mock: readiness and error classification
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn readiness_is_forwarded_from_the_leaf() {
    let (mut svc, mut handle) = tower_test::mock::spawn_with::<
        modelux::provider::AttemptRequest,
        modelux::provider::ProviderResponse,
        _,
        _,
    >(Fallback::new);
    handle.allow(0);
    tokio_test::assert_pending!(svc.poll_ready::<modelux::route::RouteRequest>());
    handle.allow(1);
    assert!(svc.is_woken());
    tokio_test::assert_ready_ok!(svc.poll_ready::<modelux::route::RouteRequest>());
}

#[tokio::test(start_paused = true)]
async fn a_leaf_readiness_error_is_a_route_error() {
    let (mock, mut handle) = tower_test::mock::pair::<
        modelux::provider::AttemptRequest,
        modelux::provider::ProviderResponse,
    >();
    handle.send_error("connection pool closed");
    let e = within(Fallback::new(mock).oneshot(req(&route(a_b(secs(1))), false)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, RouteErrorKind::AllFailed);
    assert_eq!(e.attempts[0].error.failure, Failure::Connect);
}

#[tokio::test(start_paused = true)]
async fn leaf_errors_of_any_type_are_classified() {
    let (mock, mut handle) = tower_test::mock::pair::<
        modelux::provider::AttemptRequest,
        modelux::provider::ProviderResponse,
    >();
    let svc = Fallback::new(mock);
    let task = tokio::spawn(svc.oneshot(req(&route(a_b(secs(1))), false)));

    let (r, send) = within(handle.next_request()).await.unwrap();
    assert_eq!(&*r.target.id.provider, "a");
    // A foreign error: a transport failure, retried on the same target.
    send.send_error("connection reset by peer");
    let (r, send) = within(handle.next_request()).await.unwrap();
    assert_eq!(&*r.target.id.provider, "a");
    // tower's own timeout error: a timeout, not retried on the same target.
    send.send_error(tower::timeout::error::Elapsed::new());
    let (r, send) = within(handle.next_request()).await.unwrap();
    assert_eq!(&*r.target.id.provider, "b");
    // A ProviderError passes through as it is.
    send.send_error(err(Failure::ContentPolicy));

    let e = task.await.unwrap().unwrap_err();
    assert_eq!(
        e.kind,
        RouteErrorKind::Rejected(err(Failure::ContentPolicy))
    );
    let failures: Vec<_> = e.attempts.iter().map(|a| a.error.failure).collect();
    assert_eq!(
        failures,
        [Failure::Connect, Failure::Timeout, Failure::ContentPolicy]
    );
}

/// A user's own leaf error that carries a `ProviderError` as its source is
/// classified by it, not as a transport failure (which counted a content
/// policy refusal against the target and failed over).
#[tokio::test(start_paused = true)]
async fn a_provider_error_wrapped_in_a_user_error_is_found_by_its_source() {
    #[derive(Debug)]
    struct Wrapped(ProviderError);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "my client failed: {}", self.0)
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let (mock, mut handle) = tower_test::mock::pair::<
        modelux::provider::AttemptRequest,
        modelux::provider::ProviderResponse,
    >();
    let task = tokio::spawn(Fallback::new(mock).oneshot(req(&route(a_b(secs(1))), false)));
    let (_, send) = within(handle.next_request()).await.unwrap();
    send.send_error(Wrapped(err(Failure::ContentPolicy)));
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(
        e.kind,
        RouteErrorKind::Rejected(err(Failure::ContentPolicy))
    );
    assert_eq!(e.attempts.len(), 1, "b never tried");
}

/// Routes that recover only by prefill.
fn prefill_only(p: &mut modelux::route::RoutePolicy) {
    p.continuation = vec![modelux::route::Continuation::Prefill];
}

/// A full answer "Hello world" from provider `id`, as a regenerating target writes it.
fn full_answer(id: &str, words: &[&str]) -> Act {
    let mut steps = vec![role(id), sleep(5)];
    for w in words {
        steps.push(text(id, w));
    }
    steps.push(finish(id));
    Act::Stream(steps)
}

#[tokio::test(start_paused = true)]
async fn regenerate_splices_a_matching_answer_after_the_delivered_text() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::StreamCut)));
    // Same answer, chunked differently: the splice point falls inside a chunk.
    s.on("b", full_answer("b-id", &["He", "llo w", "or", "ld"]));
    let svc = Fallback::new(s.leaf());
    let route = route(vec![cand("a", secs(1)), cand("b", secs(1))]);

    let resp = within(svc.oneshot(req_id(&route, true, "regen-1")))
        .await
        .unwrap();
    let items = collect(resp.body).await;

    assert_one_continued_answer(&items);
    let calls = s.calls();
    assert_eq!(s.providers(), ["a", "b"]);
    assert_eq!(
        calls[1].prefill, None,
        "regenerate re-sends the original request"
    );
    assert!(items
        .last()
        .unwrap()
        .as_ref()
        .unwrap()
        .finish_reason()
        .is_some());
}

#[tokio::test(start_paused = true)]
async fn regenerate_that_diverges_ends_with_the_original_failure() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::StreamCut)));
    s.on("b", full_answer("b-id", &["Help ", "me"]));
    let svc = Fallback::new(s.leaf());
    let route = route(vec![cand("a", secs(1)), cand("b", secs(1))]);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_eq!(
        stream_text(&items),
        "Hello ",
        "nothing of the divergent answer reaches the client"
    );
    let e = items.last().unwrap().as_ref().expect_err("ends in error");
    assert_eq!(
        e.failure,
        Failure::StreamCut,
        "the original failure, never the divergence"
    );
    assert!(items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .all(|c| c.finish_reason().is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_prefill_falls_through_to_regenerate() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::StreamCut)));
    s.then("b", Act::Fail(err(Failure::PrefillUnsupported)));
    s.on("b", full_answer("b-id", &["Hello ", "world"]));
    let svc = Fallback::new(s.leaf());
    let route = route(vec![cand("a", secs(1)), prefill_cand("b", secs(1))]);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_one_continued_answer(&items);
    let calls = s.calls();
    assert_eq!(s.providers(), ["a", "b", "b"]);
    assert_eq!(calls[1].prefill.as_deref(), Some("Hello "));
    assert_eq!(calls[2].prefill, None);
}

#[tokio::test(start_paused = true)]
async fn regenerate_is_not_attempted_over_the_character_limit() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::StreamCut)));
    s.on("b", full_answer("b-id", &["Hello ", "world"]));
    let svc = Fallback::new(s.leaf());
    let route = route_with(a_b(secs(1)), |p| p.regenerate_max_chars = 3);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_eq!(s.providers(), ["a"], "b is never asked");
    let e = items.last().unwrap().as_ref().expect_err("ends in error");
    assert_eq!(e.failure, Failure::StreamCut);
}

#[tokio::test(start_paused = true)]
async fn regenerate_stall_while_holding_back_ends_with_the_original_failure() {
    let s = Script::new();
    s.on("a", cut_after_hello(fail_in_stream(Failure::StreamCut)));
    s.on(
        "b",
        Act::Stream(vec![role("b-id"), text("b-id", "Hel"), Step::Hang]),
    );
    let svc = Fallback::new(s.leaf());
    let route = route_with(a_b(secs(1)), |p| p.stream_idle_timeout = secs(2));

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;

    assert_eq!(stream_text(&items), "Hello ");
    assert_eq!(
        items.last().unwrap().as_ref().unwrap_err().failure,
        Failure::StreamCut
    );
}

// ---------------------------------------------------------------------------
// Streams whose chunks keep an OpenAI-kind provider's bytes
// ---------------------------------------------------------------------------

/// The same stream as an OpenAI-kind provider sends it: every chunk kept as
/// its JSON bytes, with a field the gateway does not model.
fn as_provider_bytes(act: Act) -> Act {
    let Act::Stream(steps) = act else { return act };
    let steps = steps
        .into_iter()
        .map(|s| match s {
            Step::Chunk(c) => {
                let mut v = serde_json::to_value(c.to_chat_chunk().unwrap().as_ref()).unwrap();
                v["x_up"] = serde_json::json!({"k": [1]});
                let chunk =
                    modelux::provider::Chunk::from_json(serde_json::to_vec(&v).unwrap().into())
                        .expect("a complete chunk");
                Step::Chunk(chunk)
            }
            other => other,
        })
        .collect();
    Act::Stream(steps)
}

#[tokio::test(start_paused = true)]
async fn a_prefill_continuation_of_provider_bytes_is_one_answer() {
    let s = Script::new();
    s.on(
        "a",
        as_provider_bytes(cut_after_hello(fail_in_stream(Failure::StreamCut))),
    );
    s.on("b", as_provider_bytes(continuation_stream()));
    let svc = Fallback::new(s.leaf());
    let route = route(vec![cand("a", secs(1)), prefill_cand("b", secs(1))]);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;
    assert_one_continued_answer(&items);
    let chunks: Vec<_> = items.iter().map(|i| i.as_ref().unwrap()).collect();
    // The first attempt's chunks go out as its bytes; the continuation's are
    // rewritten (id, role) and keep the fields the gateway does not model.
    assert!(chunks[..3].iter().all(|c| c.json().is_some()), "{chunks:?}");
    for c in &chunks[3..] {
        assert!(c.json().is_none(), "rewritten: {c:?}");
        let v: serde_json::Value = serde_json::from_slice(&c.to_sse()[6..]).unwrap();
        assert_eq!(v["x_up"]["k"][0], 1, "{v}");
        assert_eq!(v["id"], "a-id");
    }
}

#[tokio::test(start_paused = true)]
async fn a_regenerated_splice_of_provider_bytes_is_one_answer() {
    let s = Script::new();
    s.on(
        "a",
        as_provider_bytes(cut_after_hello(fail_in_stream(Failure::StreamCut))),
    );
    s.on(
        "b",
        as_provider_bytes(full_answer("b-id", &["He", "llo w", "or", "ld"])),
    );
    let svc = Fallback::new(s.leaf());
    let route = route(vec![cand("a", secs(1)), cand("b", secs(1))]);

    let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
    let items = collect(resp.body).await;
    assert_one_continued_answer(&items);
    let sse: Vec<String> = items
        .iter()
        .map(|i| String::from_utf8(i.as_ref().unwrap().to_sse().to_vec()).unwrap())
        .collect();
    assert!(
        sse.iter().all(|e| e.starts_with("data: {")
            && e.ends_with("}\n\n")
            && e.matches('\n').count() == 2),
        "each chunk is one SSE event: {sse:?}"
    );
}

/// A provider refusing the target itself (the gateway's key: 401, 403; its
/// model or endpoint: 404) moves on to the next target under any
/// `retry_on`, `[]` included: the request is fine, another target can serve
/// it. Before, it was returned to the client as its own error (a 401 or 404
/// for a revoked key or a retired model) and the fallback was never tried.
#[tokio::test(start_paused = true)]
async fn a_target_the_provider_refuses_moves_on_under_any_retry_on() {
    for status in [401, 403, 404] {
        for tokens in [&["429", "5xx", "timeout", "connect"][..], &[]] {
            let s = Script::new();
            s.on("a", Act::Fail(err(Failure::TargetRefused { status })));
            s.on("b", Act::Ok);
            let svc = Fallback::new(s.leaf());
            let route = route_with(a_b(secs(1)), |p| {
                p.retry_on = RetryOn::parse(tokens).unwrap();
            });
            let resp = within(svc.oneshot(req(&route, false))).await.unwrap();
            assert_eq!(
                resp.served_by.id.provider.as_ref(),
                "b",
                "{status} {tokens:?}"
            );
            assert_eq!(
                s.providers(),
                ["a", "b"],
                "{status} {tokens:?}: never retried on a"
            );
        }
    }
}

/// An exact status in `retry_on` moves on whatever class the failure has:
/// a 400 the operator listed, a 408 without the `timeout` token. Before,
/// only 5xx statuses were looked at, so `"400"`–`"499"` were accepted and
/// did nothing.
#[tokio::test(start_paused = true)]
async fn an_exact_4xx_status_in_retry_on_moves_on() {
    let timed_out = ProviderError::from_status(
        http::StatusCode::REQUEST_TIMEOUT,
        &http::HeaderMap::new(),
        "request timeout",
    );
    for (failure, listed) in [
        (err(Failure::Client { status: 400 }), "400"),
        (err(Failure::Client { status: 422 }), "422"),
        (timed_out, "408"),
    ] {
        let s = Script::new();
        s.on("a", Act::Fail(failure.clone()));
        s.on("b", Act::Ok);
        let svc = Fallback::new(s.leaf());
        let listing = route_with(a_b(secs(1)), |p| {
            p.retry_on = RetryOn::parse(["5xx", listed]).unwrap();
        });
        let resp = within(svc.oneshot(req(&listing, false))).await.unwrap();
        assert_eq!(resp.served_by.id.provider.as_ref(), "b", "{listed}");

        // Not listed: the client gets it, nothing else is tried.
        let s = Script::new();
        s.on("a", Act::Fail(failure));
        s.on("b", Act::Ok);
        let svc = Fallback::new(s.leaf());
        let not_listing = route_with(a_b(secs(1)), |p| {
            p.retry_on = RetryOn::parse(["5xx"]).unwrap();
        });
        within(svc.oneshot(req(&not_listing, false)))
            .await
            .unwrap_err();
        assert_eq!(s.providers(), ["a"], "{listed}");
    }
}

/// A leaf service that fails its readiness in the middle of a request ends
/// it: no target was contacted, so none is charged. Classified as a
/// connection failure of the target, the failed service was retried for
/// the same target and then for the next, which was ejected without ever
/// being called.
#[tokio::test(start_paused = true)]
async fn a_leaf_that_fails_readiness_mid_request_ends_it_without_charging_a_target() {
    use modelux::health::{HealthConfig, HealthScoreLayer, TargetStatus};
    use modelux::provider::TargetId;
    let (mock, mut handle) = tower_test::mock::pair::<
        modelux::provider::AttemptRequest,
        modelux::provider::ProviderResponse,
    >();
    let health = HealthScoreLayer::new(HealthConfig {
        consecutive_failures: 1,
        ..Default::default()
    });
    let reg = health.registry();
    let svc = health.layer(Fallback::new(mock));
    let task = tokio::spawn(svc.oneshot(req(&route(a_b(secs(1))), false)));
    let (r, send) = within(handle.next_request()).await.unwrap();
    assert_eq!(&*r.target.id.provider, "a");
    send.send_error(e503());
    drop(handle);

    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.kind, RouteErrorKind::AllFailed);
    let failures: Vec<_> = e.attempts.iter().map(|a| a.error.failure).collect();
    assert_eq!(
        failures,
        [Failure::Server { status: 503 }, Failure::Connect],
        "a's 503, then the leaf's readiness failure"
    );
    // The failure names the target the attempt was for (a's retry), not a
    // placeholder.
    let targets: Vec<_> = e.attempts.iter().map(|a| a.target.to_string()).collect();
    assert_eq!(targets, [format!("a/{MODEL}"), format!("a/{MODEL}")]);
    assert!(matches!(
        reg.status(&TargetId::new("a", MODEL)),
        TargetStatus::Ejected { .. }
    ));
    assert_eq!(
        reg.status(&TargetId::new("b", MODEL)),
        TargetStatus::Healthy,
        "never contacted"
    );
}

/// A leaf whose `poll_ready` is pending for `every` after each call (a rate
/// limit shared by its clones, as one in front of a provider's quota).
struct SlowReady<S> {
    inner: S,
    every: Duration,
    ready_at: Arc<std::sync::Mutex<Instant>>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S: Clone> Clone for SlowReady<S> {
    fn clone(&self) -> Self {
        SlowReady {
            inner: self.inner.clone(),
            every: self.every,
            ready_at: self.ready_at.clone(),
            sleep: None,
        }
    }
}

impl<S> SlowReady<S> {
    fn new(inner: S, every: Duration) -> Self {
        SlowReady {
            inner,
            every,
            ready_at: Arc::new(std::sync::Mutex::new(Instant::now())),
            sleep: None,
        }
    }
}

impl<S: tower::Service<modelux::provider::AttemptRequest>>
    tower::Service<modelux::provider::AttemptRequest> for SlowReady<S>
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        let at = *self.ready_at.lock().unwrap();
        if Instant::now() < at {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            sleep.as_mut().reset(at);
            std::task::ready!(std::future::Future::poll(sleep.as_mut(), cx));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: modelux::provider::AttemptRequest) -> S::Future {
        *self.ready_at.lock().unwrap() = Instant::now() + self.every;
        self.inner.call(req)
    }
}

/// A leaf that is slow to become ready is waited for before the attempt's
/// clock starts: the fallback target answers, is charged nothing for the
/// wait, and stays healthy. Waiting inside the attempt's timeout, the wait
/// was charged to the fallback as a timeout and ejected it, though it was
/// never called.
#[tokio::test(start_paused = true)]
async fn waiting_for_a_slow_leaf_to_be_ready_is_not_charged_to_the_target() {
    use modelux::health::{HealthConfig, HealthScoreLayer, TargetStatus};
    use modelux::provider::TargetId;
    let s = Script::new();
    s.on("a", Act::Fail(e503())).on("b", Act::Ok);
    // One call per 3 s: the fallback waits 3 s for the leaf, longer than
    // its 1 s attempt timeout, well inside the 30 s budget.
    let leaf = SlowReady::new(s.leaf(), secs(3));
    let health = HealthScoreLayer::new(HealthConfig {
        consecutive_failures: 1,
        ..Default::default()
    });
    let reg = health.registry();
    let store = TraceStore::new(4);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(store.clone()))
        .layer(health)
        .layer(FallbackLayer::new())
        .service(leaf);
    let route = route_with(vec![cand("a", secs(1)), cand("b", secs(1))], |p| {
        p.same_target_retries = 0
    });
    let started = Instant::now();
    let resp = within(svc.oneshot(req_id(&route, false, "slow-leaf")))
        .await
        .unwrap();
    assert!(started.elapsed() >= secs(3), "the leaf was waited for");
    assert_eq!(&*resp.served_by.id.provider, "b");
    assert_eq!(s.providers(), ["a", "b"]);
    assert_eq!(
        reg.status(&TargetId::new("b", MODEL)),
        TargetStatus::Healthy,
        "the wait for the leaf is not b's"
    );
    let t = store.get("slow-leaf").unwrap();
    let b = t.attempts.last().unwrap();
    assert!(b.duration_ms < 100, "b's attempt took {} ms", b.duration_ms);
}

/// The budget that runs out while the leaf is not ready ends the request as
/// out of budget, charging no target.
#[tokio::test(start_paused = true)]
async fn a_leaf_not_ready_before_the_budget_runs_out_charges_no_target() {
    use modelux::health::{HealthConfig, HealthScoreLayer, TargetStatus};
    use modelux::provider::TargetId;
    let s = Script::new();
    s.on("a", Act::Fail(e503())).on("b", Act::Ok);
    let leaf = SlowReady::new(s.leaf(), secs(60));
    let health = HealthScoreLayer::new(HealthConfig {
        consecutive_failures: 1,
        ..Default::default()
    });
    let reg = health.registry();
    let svc = health.layer(Fallback::new(leaf));
    let route = route_with(vec![cand("a", secs(1)), cand("b", secs(1))], |p| {
        p.same_target_retries = 0;
        p.total_budget = secs(5);
    });
    let e = within(svc.oneshot(req(&route, false))).await.unwrap_err();
    assert_eq!(e.kind, RouteErrorKind::BudgetExhausted);
    assert_eq!(s.providers(), ["a"]);
    assert_eq!(
        reg.status(&TargetId::new("b", MODEL)),
        TargetStatus::Healthy
    );
}

/// A prompt every target refuses as too long is the client's to fix: the
/// first refusal, answered 400 (`context_length_exceeded` at the gateway),
/// not a 502 that reads as an outage and that clients trimming their
/// history never recognise.
#[tokio::test(start_paused = true)]
async fn a_prompt_too_long_for_every_target_is_rejected_not_all_failed() {
    let s = Script::new();
    let too_long = err(Failure::ContextLength);
    s.on("a", Act::Fail(too_long.clone()));
    s.on("b", Act::Fail(too_long.clone()));
    let svc = Fallback::new(s.leaf());
    let e = within(svc.oneshot(req(&route(a_b(secs(1))), false)))
        .await
        .unwrap_err();
    assert_eq!(s.providers(), ["a", "b"], "each target got its chance");
    assert_eq!(e.kind, RouteErrorKind::Rejected(too_long));
    assert_eq!(e.status(), 400);
    assert_eq!(e.attempts.len(), 2);
}

/// After a failover, a 4xx from the fallback may be that target's (its
/// translation of the request, its limits) rather than the client's: the
/// next candidate still gets the request. When every target then fails, a
/// mix of outages and refusals is a 502, not the fallback's 400.
#[tokio::test(start_paused = true)]
async fn a_client_error_from_a_fallback_moves_on_to_the_next_candidate() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::Fail(err(Failure::Client { status: 400 })));
    s.on("c", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let abc = route_with(
        vec![cand("a", secs(1)), cand("b", secs(1)), cand("c", secs(1))],
        |p| p.same_target_retries = 0,
    );
    let resp = within(svc.clone().oneshot(req(&abc, false))).await.unwrap();
    assert_eq!(&*resp.served_by.id.provider, "c");
    assert_eq!(s.providers(), ["a", "b", "c"]);

    s.on("c", Act::Fail(e503()));
    let e = within(svc.clone().oneshot(req(&abc, false)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, RouteErrorKind::AllFailed);
    assert_eq!(e.status(), 502);

    // The first target's own 4xx is still the client's, at once.
    s.on("a", Act::Fail(err(Failure::Client { status: 400 })));
    let e = within(svc.oneshot(req(&abc, false))).await.unwrap_err();
    assert_eq!(
        e.kind,
        RouteErrorKind::Rejected(err(Failure::Client { status: 400 }))
    );
    assert_eq!(e.attempts.len(), 1);
}

/// A request for several choices skips a target that returns one (an
/// Anthropic model) rather than silently getting fewer; when no target can,
/// the client is told at once, without a call.
#[tokio::test(start_paused = true)]
async fn a_request_for_several_choices_skips_targets_that_return_one() {
    let one_choice = |p: &str| {
        let mut t = modelux::provider::Target::new(p, "m");
        t.multiple_choices = false;
        modelux::route::Candidate::new(Arc::new(t), secs(1))
    };
    let s = Script::new();
    s.on("an", Act::Ok);
    s.on("b", Act::Ok);
    let svc = Fallback::new(s.leaf());
    let with_n = |route: &Arc<modelux::route::Route>, n: u32| {
        let mut r = req(route, false);
        let mut chat = (*r.chat).clone();
        chat.params.n = Some(n);
        r.chat = Arc::new(chat);
        r
    };
    let mixed = route(vec![one_choice("an"), cand("b", secs(1))]);
    let resp = within(svc.clone().oneshot(with_n(&mixed, 2)))
        .await
        .unwrap();
    assert_eq!(&*resp.served_by.id.provider, "b");
    // One choice asked: the first target serves as usual.
    let resp = within(svc.clone().oneshot(with_n(&mixed, 1)))
        .await
        .unwrap();
    assert_eq!(&*resp.served_by.id.provider, "an");
    assert_eq!(s.providers(), ["b", "an"]);

    let only = route(vec![one_choice("an")]);
    let e = within(svc.oneshot(with_n(&only, 3))).await.unwrap_err();
    match &e.kind {
        RouteErrorKind::Rejected(pe) => {
            assert_eq!(pe.failure, Failure::Client { status: 400 });
            assert!(pe.message.contains("'n' is 3"), "{}", pe.message);
        }
        k => panic!("{k:?}"),
    }
    assert!(e.attempts.is_empty());
    assert_eq!(s.providers(), ["b", "an"], "no call was made");
}

/// A library user may write `Duration::MAX` for "no limit"; the deadline
/// arithmetic saturates instead of panicking.
#[tokio::test(start_paused = true)]
async fn an_unlimited_total_budget_does_not_overflow_the_clock() {
    let s = Script::new();
    s.then("a", Act::Fail(e503()));
    s.on("a", Act::Text("from a".into()));
    let svc = Fallback::new(s.leaf());
    let route = route_with(vec![cand("a", Duration::MAX)], |p| {
        p.total_budget = Duration::MAX;
    });
    let resp = within(svc.oneshot(req(&route, false))).await.unwrap();
    assert_eq!(s.providers(), ["a", "a"], "the 503 was retried");
    assert_eq!(completion_text(&resp.body), "from a");
}

/// A prefill candidate could continue an answer of any length, but every
/// open stream keeps its copy of the delivered text: past
/// `MAX_KEPT_BYTES` it is dropped, and a break ends the stream as when
/// nothing can continue it.
#[tokio::test(start_paused = true)]
async fn a_prefill_continues_only_what_the_stream_could_keep() {
    for (delivered, continued) in [
        (modelux::fallback::MAX_KEPT_BYTES - 1000, true),
        (modelux::fallback::MAX_KEPT_BYTES + 1000, false),
    ] {
        let s = Script::new();
        let half = "x".repeat(delivered / 2);
        s.on(
            "a",
            Act::Stream(vec![
                role("a-id"),
                text("a-id", &half),
                text("a-id", &half),
                fail_in_stream(Failure::Connect),
            ]),
        );
        s.on("b", continuation_stream());
        let svc = Fallback::new(s.leaf());
        let route = route(vec![cand("a", secs(1)), prefill_cand("b", secs(1))]);
        let resp = within(svc.oneshot(req(&route, true))).await.unwrap();
        let last = collect(resp.body).await.pop();
        if continued {
            assert_eq!(s.providers(), ["a", "b"]);
            assert_eq!(
                s.calls()[1].prefill.as_deref().map(str::len),
                Some(delivered / 2 * 2)
            );
            assert!(last.unwrap().is_ok());
        } else {
            assert_eq!(s.providers(), ["a"], "{delivered} bytes were not kept");
            assert_eq!(last.unwrap().unwrap_err().failure, Failure::StreamCut);
        }
    }
}

/// A continuation runs on its own timeout, not the (usually spent) total
/// budget: a leaf not ready within it is reported as such, so an operator
/// reading the trace looks at the right setting.
#[tokio::test(start_paused = true)]
async fn a_leaf_not_ready_for_a_continuation_names_the_continuation_s_timeout() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            text("x", "partial"),
            sleep(100),
            fail_in_stream(Failure::StreamCut),
        ]),
    );
    s.on("b", Act::Ok);
    // After a's call the leaf is not ready again for 60 s.
    let leaf = SlowReady::new(s.leaf(), secs(60));
    let store = TraceStore::new(4);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(store.clone()))
        .layer(FallbackLayer::new())
        .service(leaf);
    let route = route(vec![cand("a", secs(1)), prefill_cand("b", secs(2))]);
    let resp = within(svc.oneshot(req_id(&route, true, "cont-wait")))
        .await
        .unwrap();
    let started = Instant::now();
    let items = collect(resp.body).await;
    assert!(
        items.last().unwrap().is_err(),
        "the stream ends in an error"
    );
    assert!(
        started.elapsed() < secs(5),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(s.providers(), ["a"], "b was never called");
    let t = store.get("cont-wait").unwrap();
    let waited: Vec<_> = t
        .decisions
        .iter()
        .filter(|d| d.kind == "budget_exhausted")
        .map(|d| d.detail.clone())
        .collect();
    assert_eq!(waited.len(), 1, "{:?}", t.decisions);
    assert!(
        waited[0].contains("within the continuation's timeout"),
        "{}",
        waited[0]
    );
}
