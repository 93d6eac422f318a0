//! Behaviour of `HealthScoreLayer` stacked on `FallbackLayer` over scripted
//! leaves: ejection, ordering, probes, cool-downs, on virtual time.

mod layers;

use std::sync::Arc;
use std::time::Duration;

use layers::*;
use modelux::fallback::FallbackLayer;
use modelux::health::{HealthConfig, HealthRegistry, HealthScoreLayer, TargetStatus};
use modelux::provider::{Failure, TargetId};
use modelux::route::{Candidate, Route, RouteError, RouteErrorKind, RouteRequest, RouteResponse};
use modelux::trace::{TraceLayer, TraceStore};
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};

type Stack = BoxCloneService<RouteRequest, RouteResponse, RouteError>;

/// HealthScoreLayer + FallbackLayer over the script, with a trace store on top.
fn stack(s: &Script, config: HealthConfig) -> (Stack, HealthRegistry, TraceStore) {
    let health = HealthScoreLayer::new(config);
    let registry = health.registry();
    let store = TraceStore::new(256);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(store.clone()))
        .layer(health)
        .layer(FallbackLayer::new())
        .service(s.leaf());
    (BoxCloneService::new(svc), registry, store)
}

fn config() -> HealthConfig {
    HealthConfig {
        window: secs(30),
        consecutive_failures: 3,
        failure_rate: 0.5,
        min_requests: 10,
        cooldown_base: secs(5),
        cooldown_max: secs(60),
        probes: 1,
        // Restored targets take all their traffic back at once here; the
        // slow start has tests of its own.
        slow_start: std::time::Duration::ZERO,
    }
}

/// A fallback route over `providers` with no same-target retries, so every
/// request makes exactly one attempt per failing target.
fn no_retry_route(providers: &[&str]) -> Arc<Route> {
    route_with(
        providers
            .iter()
            .map(|p| cand(p, secs(1)))
            .collect::<Vec<Candidate>>(),
        |p| p.same_target_retries = 0,
    )
}

fn id(p: &str) -> TargetId {
    TargetId::new(p, MODEL)
}

async fn send(svc: &Stack, route: &Arc<Route>) -> Result<RouteResponse, RouteError> {
    svc.clone().oneshot(req(route, false)).await
}

async fn send_id(svc: &Stack, route: &Arc<Route>, rid: &str) -> Result<RouteResponse, RouteError> {
    svc.clone().oneshot(req_id(route, false, rid)).await
}

/// The providers attempted by `f`.
async fn attempted<F: std::future::Future>(s: &Script, f: F) -> (F::Output, Vec<String>) {
    s.clear_calls();
    let out = f.await;
    (out, s.providers())
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_move_the_target_behind_healthy_ones() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::Ok);
    s.on("c", Act::Ok);
    let (svc, reg, store) = stack(&s, config());
    let route = no_retry_route(&["a", "b", "c"]);

    for i in 0..2 {
        let (_, calls) = attempted(&s, send(&svc, &route)).await;
        assert_eq!(calls, ["a", "b"], "request {i}: a still first");
        assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    }
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a", "b"]);
    let now = Instant::now();
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Ejected {
            until: now + secs(5)
        },
        "third consecutive failure ejects"
    );

    let (resp, calls) = attempted(&s, send_id(&svc, &route, "after")).await;
    assert_eq!(calls, ["b"], "the ejected target is not tried first");
    assert_eq!(resp.unwrap().served_by.id, id("b"));
    let t = store.get("after").unwrap();
    let order: Vec<_> = t.candidates.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(
        order,
        ["b/m", "c/m", "a/m"],
        "moved behind every healthy one"
    );
    assert!(
        t.candidates[2].reason.contains("ejected"),
        "{:?}",
        t.candidates
    );
    assert!(t.decisions.iter().any(|d| d.kind == "reorder"));
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let s = Script::new();
    s.on("b", Act::Ok);
    let (svc, reg, _) = stack(&s, config());
    let route = no_retry_route(&["a", "b"]);
    for act in [
        Act::Fail(e503()),
        Act::Fail(e503()),
        Act::Ok,
        Act::Fail(e503()),
        Act::Fail(e503()),
    ] {
        s.then("a", act);
        let _ = send(&svc, &route).await;
    }
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    s.then("a", Act::Fail(e503()));
    let _ = send(&svc, &route).await;
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
}

#[tokio::test(start_paused = true)]
async fn when_every_target_is_unhealthy_they_are_still_tried_soonest_available_first() {
    let s = Script::new();
    let cfg = HealthConfig {
        consecutive_failures: 1,
        cooldown_base: secs(10),
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let t0 = Instant::now();
    // b is ejected first (until t0+10s), a one second later (until t0+11s).
    s.then("b", Act::Fail(e503()));
    send(&svc, &no_retry_route(&["b"])).await.unwrap_err();
    tokio::time::advance(secs(1)).await;
    s.then("a", Act::Fail(e503()));
    send(&svc, &no_retry_route(&["a"])).await.unwrap_err();
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Ejected {
            until: t0 + secs(11)
        }
    );
    assert_eq!(
        reg.status(&id("b")),
        TargetStatus::Ejected {
            until: t0 + secs(10)
        }
    );

    // Both down: the request is not refused; b (back sooner) goes first.
    s.then("b", Act::Fail(e503()));
    s.then("a", Act::Ok);
    let (resp, calls) = attempted(&s, send(&svc, &no_retry_route(&["a", "b"]))).await;
    assert_eq!(calls, ["b", "a"]);
    assert_eq!(resp.unwrap().served_by.id, id("a"));

    // And when every one of them fails, the client gets their failures.
    s.then("a", Act::Fail(e503()));
    s.then("b", Act::Fail(e503()));
    let (e, calls) = attempted(&s, send(&svc, &no_retry_route(&["a", "b"]))).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    let e = e.unwrap_err();
    assert_eq!(e.kind, RouteErrorKind::AllFailed);
    assert_eq!(e.attempts.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn probe_is_admitted_after_the_cooldown_and_its_success_restores() {
    let s = Script::new();
    s.on("b", Act::Ok);
    let cfg = HealthConfig {
        consecutive_failures: 1,
        ..config()
    };
    let (svc, reg, store) = stack(&s, cfg);
    let route = no_retry_route(&["a", "b"]);
    s.then("a", Act::Fail(e503()));
    send(&svc, &route).await.unwrap();
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));

    tokio::time::advance(ms(4_999)).await;
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["b"], "still cooling down");

    tokio::time::advance(ms(1)).await;
    assert_eq!(reg.status(&id("a")), TargetStatus::Probing);
    s.then("a", Act::Ok);
    let (resp, calls) = attempted(&s, send_id(&svc, &route, "probe")).await;
    assert_eq!(calls, ["a"], "the probe runs in a's normal place");
    assert_eq!(resp.unwrap().served_by.id, id("a"));
    let t = store.get("probe").unwrap();
    assert!(
        t.candidates[0].reason.contains("probe"),
        "{:?}",
        t.candidates
    );

    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    let snap = reg.snapshot();
    let a = snap.iter().find(|h| h.target == id("a")).unwrap();
    assert_eq!(a.ejections, 0);

    // Restored for good: a is first again, and the next ejection starts
    // from the base cool-down again.
    s.then("a", Act::Fail(e503()));
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a", "b"]);
    let now = Instant::now();
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Ejected {
            until: now + secs(5)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn at_most_probes_requests_probe_concurrently() {
    let s = Script::new();
    s.on("b", Act::Ok);
    let cfg = HealthConfig {
        consecutive_failures: 1,
        probes: 2,
        ..config()
    };
    let (mut svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a", "b"]);
    s.then("a", Act::Fail(e503()));
    send(&svc, &route).await.unwrap();
    tokio::time::advance(secs(5)).await;

    // Three concurrent requests once the cool-down is over: two probes.
    s.on("a", Act::After(secs(1), Box::new(Act::Ok)));
    s.clear_calls();
    let f1 = svc.ready().await.unwrap().call(req(&route, false));
    let f2 = svc.ready().await.unwrap().call(req(&route, false));
    let f3 = svc.ready().await.unwrap().call(req(&route, false));
    let (r1, r2, r3) = tokio::join!(f1, f2, f3);
    let served: Vec<_> = [r1, r2, r3]
        .into_iter()
        .map(|r| r.unwrap().served_by.id.provider.to_string())
        .collect();
    assert_eq!(served, ["a", "a", "b"]);
    assert_eq!(s.count("a"), 2, "the third request did not probe");
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_releases_its_slot() {
    let s = Script::new();
    s.on("b", Act::Ok);
    let cfg = HealthConfig {
        consecutive_failures: 1,
        ..config()
    };
    let (mut svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a", "b"]);
    s.then("a", Act::Fail(e503()));
    send(&svc, &route).await.unwrap();
    tokio::time::advance(secs(5)).await;

    let probe = svc.ready().await.unwrap().call(req(&route, false));
    // While the probe is in flight, a is not tried first.
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["b"]);
    drop(probe);
    assert_eq!(reg.status(&id("a")), TargetStatus::Probing);

    s.then("a", Act::Ok);
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a"], "the slot came back with the dropped request");
}

#[tokio::test(start_paused = true)]
async fn failed_probe_re_ejects_with_doubled_cooldown_capped_at_max() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::Ok);
    let cfg = HealthConfig {
        consecutive_failures: 1,
        cooldown_base: secs(5),
        cooldown_max: secs(15),
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a", "b"]);

    send(&svc, &route).await.unwrap();
    let mut expected = [secs(5), secs(10), secs(15), secs(15)]
        .into_iter()
        .peekable();
    let mut n = 0;
    while let Some(cooldown) = expected.next() {
        n += 1;
        let now = Instant::now();
        assert_eq!(
            reg.status(&id("a")),
            TargetStatus::Ejected {
                until: now + cooldown
            },
            "ejection {n}"
        );
        let snap = reg.snapshot();
        assert_eq!(
            snap.iter().find(|h| h.target == id("a")).unwrap().ejections,
            n
        );
        if expected.peek().is_none() {
            break;
        }
        // Just before the end of the cool-down a is still skipped.
        tokio::time::advance(cooldown - ms(1)).await;
        let (_, calls) = attempted(&s, send(&svc, &route)).await;
        assert_eq!(calls, ["b"]);
        // Then one probe, which fails.
        tokio::time::advance(ms(1)).await;
        let (_, calls) = attempted(&s, send(&svc, &route)).await;
        assert_eq!(calls, ["a", "b"], "probe {n}");
    }
}

#[tokio::test(start_paused = true)]
async fn failure_rate_ejects_only_from_min_requests_on() {
    let s = Script::new();
    let cfg = HealthConfig {
        consecutive_failures: 100,
        failure_rate: 0.5,
        min_requests: 4,
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a"]);
    // ok, ok, fail: 1/3 failing, under min_requests anyway.
    // ok: 4 samples.  fail: 2/5 = 0.4 < 0.5.  fail: 3/6 = 0.5 -> ejected.
    let plan = [
        (Act::Ok, true),
        (Act::Ok, true),
        (Act::Fail(e503()), true),
        (Act::Ok, true),
        (Act::Fail(e503()), true),
        (Act::Fail(e503()), false),
    ];
    for (i, (act, healthy_after)) in plan.into_iter().enumerate() {
        s.then("a", act);
        let _ = send(&svc, &route).await;
        assert_eq!(
            reg.status(&id("a")) == TargetStatus::Healthy,
            healthy_after,
            "after attempt {i}: {:?}",
            reg.snapshot()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn failure_rate_needs_min_requests_even_when_everything_fails() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    let cfg = HealthConfig {
        consecutive_failures: 100,
        failure_rate: 0.5,
        min_requests: 4,
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a"]);
    for _ in 0..3 {
        send(&svc, &route).await.unwrap_err();
    }
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Healthy,
        "3 < min_requests"
    );
    send(&svc, &route).await.unwrap_err();
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_are_forgotten() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    let cfg = HealthConfig {
        window: secs(10),
        consecutive_failures: 100,
        failure_rate: 0.5,
        min_requests: 4,
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a"]);
    for _ in 0..3 {
        send(&svc, &route).await.unwrap_err();
    }
    tokio::time::advance(secs(11)).await;
    send(&svc, &route).await.unwrap_err();
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    let snap = reg.snapshot();
    assert_eq!(
        snap.iter().find(|h| h.target == id("a")).unwrap().samples,
        1
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_with_retry_after_cools_the_target_until_then() {
    let s = Script::new();
    s.then("a", Act::Fail(e429(Some(secs(3)))));
    s.on("a", Act::Ok);
    s.on("b", Act::Ok);
    let (svc, reg, _) = stack(&s, config());
    let route = no_retry_route(&["a", "b"]);

    let (resp, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a", "b"]);
    assert_eq!(resp.unwrap().served_by.id, id("b"));
    let now = Instant::now();
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Cooling {
            until: now + secs(3)
        }
    );

    tokio::time::advance(ms(2_999)).await;
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["b"], "cooling targets go behind healthy ones");

    tokio::time::advance(ms(1)).await;
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a"]);
}

#[tokio::test(start_paused = true)]
async fn client_errors_do_not_count_against_health() {
    let s = Script::new();
    s.on("b", Act::Ok);
    let cfg = HealthConfig {
        consecutive_failures: 2,
        min_requests: 1,
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a", "b"]);

    s.on("a", Act::Fail(err(Failure::ContentPolicy)));
    for _ in 0..5 {
        let e = send(&svc, &route).await.unwrap_err();
        assert!(matches!(e.kind, RouteErrorKind::Rejected(_)));
    }
    s.on("a", Act::Fail(err(Failure::Client { status: 400 })));
    for _ in 0..5 {
        send(&svc, &route).await.unwrap_err();
    }
    s.on("a", Act::Fail(err(Failure::ContextLength)));
    for _ in 0..5 {
        send(&svc, &route).await.unwrap();
    }
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    // Neutral: not even a sample in the window.
    let snap = reg.snapshot();
    assert!(
        snap.iter().all(|h| h.target != id("a")),
        "{:?}",
        snap.iter().map(|h| &h.target).collect::<Vec<_>>()
    );

    // Control: the same number of server errors ejects, and so does a
    // provider refusing the target itself (a revoked key): that is an
    // outage of the target, not a fault of the request.
    s.on("a", Act::Fail(e503()));
    for _ in 0..2 {
        send(&svc, &route).await.unwrap();
    }
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
    let (svc, reg, _) = stack(&s, cfg);
    s.on("a", Act::Fail(err(Failure::TargetRefused { status: 401 })));
    for _ in 0..2 {
        send(&svc, &route).await.unwrap();
    }
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
}

#[tokio::test(start_paused = true)]
async fn snapshot_reflects_each_targets_state() {
    let s = Script::new();
    let cfg = HealthConfig {
        consecutive_failures: 2,
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    assert!(reg.snapshot().is_empty());

    // a: one success, one failure.  b: two failures (ejected).  c: cooling.
    s.then("a", Act::Ok);
    s.then("a", Act::Fail(e503()));
    s.then("b", Act::Fail(e503()));
    s.then("b", Act::Fail(e503()));
    s.then("c", Act::Fail(e429(Some(secs(2)))));
    for p in ["a", "a", "b", "b", "c"] {
        let _ = send(&svc, &no_retry_route(&[p])).await;
    }
    let now = Instant::now();
    let snap = reg.snapshot();
    let targets: Vec<_> = snap.iter().map(|h| h.target.to_string()).collect();
    assert_eq!(targets, ["a/m", "b/m", "c/m"], "sorted by target");

    assert_eq!(snap[0].status, TargetStatus::Healthy);
    assert_eq!(snap[0].samples, 2);
    assert!((snap[0].score - 0.5).abs() < 1e-9);
    assert_eq!(snap[0].ejections, 0);

    assert_eq!(
        snap[1].status,
        TargetStatus::Ejected {
            until: now + secs(5)
        }
    );
    assert_eq!(snap[1].ejections, 1);

    assert_eq!(
        snap[2].status,
        TargetStatus::Cooling {
            until: now + secs(2)
        }
    );
    assert_eq!(snap[2].samples, 1);
    assert_eq!(snap[2].score, 0.0);
}

#[tokio::test(start_paused = true)]
async fn mid_stream_failure_counts_against_the_target() {
    let s = Script::new();
    s.on(
        "a",
        Act::Stream(vec![
            text("a-id", "partial"),
            sleep(5),
            fail_in_stream(Failure::StreamCut),
        ]),
    );
    let cfg = HealthConfig {
        consecutive_failures: 1,
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let resp = svc
        .clone()
        .oneshot(req(&no_retry_route(&["a"]), true))
        .await
        .unwrap();
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Healthy,
        "committed: a success so far"
    );
    let items = collect(resp.body).await;
    assert!(items.last().unwrap().is_err());
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
}

/// The failure rate follows the window as attempts expire from it (it is
/// kept as a running count, not recounted).
#[tokio::test(start_paused = true)]
async fn the_failure_rate_follows_the_window_as_attempts_expire() {
    use modelux::provider::ProviderError;
    use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    let registry = HealthRegistry::new(HealthConfig {
        consecutive_failures: 100,
        min_requests: 1000,
        ..config()
    });
    let a = id("a");
    let err: ProviderError = e503();
    let report = |ok: bool| {
        registry.on_attempt(&AttemptReport {
            target: &a,
            result: if ok { Ok(()) } else { Err(&err) },
            latency: ms(1),
            stream: false,
            phase: AttemptPhase::Whole,
        })
    };
    let score = || {
        let h = registry.snapshot();
        (h[0].score, h[0].samples)
    };
    report(false);
    report(false);
    tokio::time::advance(secs(20)).await;
    report(true);
    report(true);
    assert_eq!(score(), (0.5, 4));
    // The two failures leave the 30 s window; the successes stay.
    tokio::time::advance(secs(15)).await;
    assert_eq!(score(), (1.0, 2));
    report(false);
    let (s, n) = score();
    assert_eq!(n, 3);
    assert!((s - 2.0 / 3.0).abs() < 1e-9, "{s}");
    // Everything expires.
    tokio::time::advance(secs(31)).await;
    assert_eq!(score(), (1.0, 0));
    report(false);
    assert_eq!(score(), (0.0, 1));
}

/// A fallback whose attempt the total budget cut short (a hanging primary
/// used most of it) is not charged for timing out: it never had its own
/// timeout. Only the primary is ejected, and the fallback then serves.
/// Charged, the healthy fallback was ejected too, and the primary, ejected
/// first and so back first, kept eating the budget: every request failed.
#[tokio::test(start_paused = true)]
async fn a_timeout_the_total_budget_cut_short_is_not_charged_to_the_target() {
    let s = Script::new();
    s.on("a", Act::Hang);
    s.on("b", Act::After(ms(100), Box::new(Act::Ok)));
    let (svc, reg, store) = stack(&s, config());
    let route = route_with(vec![cand("a", ms(150)), cand("b", secs(1))], |p| {
        p.total_budget = ms(200);
        p.same_target_retries = 0;
    });

    for i in 0..3 {
        let (resp, calls) = attempted(&s, send_id(&svc, &route, &format!("r{i}"))).await;
        assert_eq!(calls, ["a", "b"], "request {i}");
        assert!(
            matches!(resp.unwrap_err().kind, RouteErrorKind::BudgetExhausted),
            "request {i}"
        );
    }
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
    assert_eq!(reg.status(&id("b")), TargetStatus::Healthy);

    for i in 0..5 {
        let (resp, calls) = attempted(&s, send(&svc, &route)).await;
        assert_eq!(calls, ["b"], "request {i} after the ejection");
        assert_eq!(resp.unwrap().served_by.id, id("b"));
    }
    let t = store.get("r0").unwrap();
    let cut = t.decisions.iter().find(|d| d.kind == "budget_cut");
    assert!(
        cut.is_some_and(|d| d.detail.contains("b/m had 50 ms left")),
        "{:?}",
        t.decisions
    );
}

/// A target that hangs is charged for its timeouts when nothing earlier in
/// the request took its time, on a real clock, where even the first attempt
/// gets a few nanoseconds less than a total budget equal to its timeout (the
/// defaults: 30 s each). Charged against "less than its own timeout", a
/// hanging target was never ejected and every request waited the whole
/// budget.
#[tokio::test]
async fn a_hanging_first_target_is_charged_when_its_timeout_equals_the_budget() {
    let s = Script::new();
    s.on("a", Act::Hang);
    s.on("b", Act::Ok);
    let (svc, reg, store) = stack(&s, config());
    let route = route_with(vec![cand("a", ms(60)), cand("b", ms(60))], |p| {
        p.total_budget = ms(60);
        p.same_target_retries = 0;
    });
    for i in 0..3 {
        let (resp, calls) = attempted(&s, send_id(&svc, &route, &format!("r{i}"))).await;
        assert_eq!(calls, ["a"], "request {i}: the budget ends with the hang");
        assert!(resp.is_err(), "request {i}");
    }
    let t = store.get("r0").unwrap();
    assert!(
        t.decisions.iter().all(|d| d.kind != "budget_cut"),
        "{:?}",
        t.decisions
    );
    assert!(
        matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }),
        "{:?}",
        reg.status(&id("a"))
    );
    let (resp, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["b"]);
    assert_eq!(resp.unwrap().served_by.id, id("b"));
}

/// A first attempt that the total budget bounds by configuration (the budget
/// is shorter than the target's timeout) is still the target's failure: no
/// earlier attempt took its time.
#[tokio::test(start_paused = true)]
async fn a_first_attempt_bounded_by_a_shorter_budget_is_charged_for_its_timeout() {
    let s = Script::new();
    s.on("a", Act::Hang);
    let (svc, reg, _) = stack(&s, config());
    let route = route_with(vec![cand("a", secs(10))], |p| {
        p.total_budget = secs(2);
        p.same_target_retries = 0;
    });
    for _ in 0..3 {
        assert!(send(&svc, &route).await.is_err());
    }
    assert!(
        matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }),
        "{:?}",
        reg.status(&id("a"))
    );
}

/// A request's own fault (a 400) is neutral for health: it neither restores
/// a probed target nor resets its run of consecutive failures. Counted as a
/// success, one malformed request brought back a target that answered
/// everything else with 503s.
#[tokio::test(start_paused = true)]
async fn a_client_error_neither_restores_a_probed_target_nor_breaks_a_run_of_failures() {
    let s = Script::new();
    s.on("b", Act::Ok);
    let cfg = HealthConfig {
        consecutive_failures: 2,
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a", "b"]);

    // 503, 400, 503: two failures of the target in a row.
    s.on("a", Act::Fail(e503()));
    send(&svc, &route).await.unwrap();
    s.on("a", Act::Fail(err(Failure::Client { status: 400 })));
    send(&svc, &route).await.unwrap_err();
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    s.on("a", Act::Fail(e503()));
    send(&svc, &route).await.unwrap();
    assert!(
        matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }),
        "{:?}",
        reg.status(&id("a"))
    );

    // After the cool-down the probe meets a 400: still probing, not restored.
    tokio::time::advance(secs(6)).await;
    s.on("a", Act::Fail(err(Failure::Client { status: 400 })));
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a"], "the probe");
    assert_eq!(reg.status(&id("a")), TargetStatus::Probing);
    // The next probe fails: ejected again, for longer (a second ejection).
    s.on("a", Act::Fail(e503()));
    send(&svc, &route).await.unwrap();
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
    let snap = reg.snapshot();
    assert_eq!(
        snap.iter().find(|h| h.target == id("a")).unwrap().ejections,
        2
    );
}

/// A stream is judged once, when it ends: a target that cuts every stream
/// after its first token fails in a row and is ejected (a success counted at
/// each first token reset the run, so `consecutive_failures` above 1 never
/// tripped), and a probe restores a target only once its stream finished
/// (restored at the first token, a target that then cut the stream was back
/// at the base cool-down every time).
#[tokio::test(start_paused = true)]
async fn a_stream_is_judged_when_it_ends_not_at_its_first_token() {
    let s = Script::new();
    let cut = || {
        Act::Stream(vec![
            text("a-id", "partial"),
            sleep(5),
            fail_in_stream(Failure::StreamCut),
        ])
    };
    s.on("a", cut());
    let cfg = HealthConfig {
        consecutive_failures: 2,
        min_requests: 1000,
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a"]);
    let stream = || svc.clone().oneshot(req(&route, true));
    for i in 0..2 {
        let items = collect(stream().await.unwrap().body).await;
        assert!(items.last().unwrap().is_err(), "stream {i} is cut");
    }
    assert!(
        matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }),
        "{:?}",
        reg.status(&id("a"))
    );

    // The probe's stream starts, then is cut: ejected again, for longer.
    tokio::time::advance(secs(6)).await;
    let resp = stream().await.unwrap();
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Probing,
        "started, not judged"
    );
    assert!(collect(resp.body).await.last().unwrap().is_err());
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
    let ejections = |reg: &HealthRegistry| {
        reg.snapshot()
            .iter()
            .find(|h| h.target == id("a"))
            .unwrap()
            .ejections
    };
    assert_eq!(ejections(&reg), 2);

    // The next probe's stream finishes: restored then, not before.
    s.on(
        "a",
        Act::Stream(vec![text("a-id", "whole"), finish("a-id")]),
    );
    tokio::time::advance(secs(11)).await;
    let resp = stream().await.unwrap();
    assert_eq!(reg.status(&id("a")), TargetStatus::Probing);
    assert!(collect(resp.body).await.iter().all(|i| i.is_ok()));
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    assert_eq!(ejections(&reg), 0);
}

/// After its cool-down a target's probe slot goes to a request that tries it
/// first. A request that puts it behind a candidate that answers (a route
/// where it is the fallback) neither takes the slot nor calls it: holding
/// the slot for such a request, here a slow one on another route, kept the
/// target's own route from probing it, and the target sat unused behind its
/// fallback. Reached because everything before it failed, it is judged like
/// a probe.
#[tokio::test(start_paused = true)]
async fn a_probe_slot_goes_to_a_request_that_tries_the_target_first() {
    let s = Script::new();
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::After(ms(500), Box::new(Act::Ok)));
    let cfg = HealthConfig {
        consecutive_failures: 1,
        ..config()
    };
    let (svc, reg, store) = stack(&s, cfg);
    send(&svc, &no_retry_route(&["a"])).await.unwrap_err();
    assert!(matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }));
    tokio::time::advance(secs(6)).await;
    s.on("a", Act::Ok);

    // A slow request where `a` is the fallback is in flight ...
    let behind = no_retry_route(&["b", "a"]);
    let own = no_retry_route(&["a", "b"]);
    let (slow, (resp, calls)) = tokio::join!(send_id(&svc, &behind, "slow"), async {
        // ... and a request of `a`'s own route probes it meanwhile.
        tokio::task::yield_now().await;
        attempted(&s, send(&svc, &own)).await
    });
    assert_eq!(calls, ["a"]);
    assert_eq!(resp.unwrap().served_by.id, id("a"));
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
    assert_eq!(slow.unwrap().served_by.id, id("b"));
    let t = store.get("slow").unwrap();
    assert!(
        t.candidates[1].reason.contains("judged if reached"),
        "{:?}",
        t.candidates
    );

    // Ejected again; as a fallback only, it is judged when reached.
    s.on("a", Act::Fail(e503()));
    send(&svc, &no_retry_route(&["a"])).await.unwrap_err();
    tokio::time::advance(secs(11)).await;
    s.on("a", Act::Ok);
    s.on("b", Act::Ok);
    for _ in 0..3 {
        let (_, calls) = attempted(&s, send(&svc, &behind)).await;
        assert_eq!(calls, ["b"]);
    }
    assert_eq!(reg.status(&id("a")), TargetStatus::Probing);
    s.on("b", Act::Fail(e503()));
    let (resp, calls) = attempted(&s, send(&svc, &behind)).await;
    assert_eq!(calls, ["b", "a"]);
    assert_eq!(resp.unwrap().served_by.id, id("a"));
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
}

/// The success of an attempt in flight when the target was ejected (it
/// started before) does not restore it: at a busy route's load dozens are
/// in flight, and each restored a target failing 60 % of its requests as
/// soon as it was ejected, so its cool-down never grew and it kept its
/// traffic. One that started after the ejection restores it.
#[tokio::test(start_paused = true)]
async fn a_success_in_flight_at_the_ejection_does_not_restore_the_target() {
    use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    let reg = modelux::health::HealthRegistry::new(HealthConfig {
        consecutive_failures: 2,
        ..config()
    });
    let a = id("a");
    let down = e503();
    let failed = AttemptReport {
        target: &a,
        result: Err(&down),
        latency: secs(1),
        stream: false,
        phase: AttemptPhase::Whole,
    };
    let ok = AttemptReport {
        result: Ok(()),
        ..failed.clone()
    };
    reg.on_attempt(&failed);
    reg.on_attempt(&failed);
    assert!(matches!(reg.status(&a), TargetStatus::Ejected { .. }));
    // Answers of requests sent before the ejection come back.
    for _ in 0..5 {
        reg.on_attempt(&ok);
    }
    assert!(
        matches!(reg.status(&a), TargetStatus::Ejected { .. }),
        "{:?}",
        reg.status(&a)
    );
    let ejections = |r: &modelux::health::HealthRegistry| {
        r.snapshot()
            .iter()
            .find(|h| h.target == a)
            .unwrap()
            .ejections
    };
    assert_eq!(
        ejections(&reg),
        1,
        "the count, which sets the next cool-down, is kept"
    );
    // A success of an attempt started after the ejection restores it.
    tokio::time::advance(secs(6)).await;
    reg.on_attempt(&ok);
    assert_eq!(reg.status(&a), TargetStatus::Healthy);
}

/// Nor does the failure of an attempt in flight at the ejection fail the
/// probe that follows: a long stream or a stall that began before would
/// re-eject a target that may have recovered, doubling its cool-down.
#[tokio::test(start_paused = true)]
async fn a_failure_in_flight_at_the_ejection_does_not_fail_the_probe() {
    use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    let s = Script::new();
    s.on("a", Act::Hang);
    let (svc, reg, _) = stack(
        &s,
        HealthConfig {
            consecutive_failures: 1,
            ..config()
        },
    );
    let a = id("a");
    let down = e503();
    let report = |latency| AttemptReport {
        target: &a,
        result: Err(&down),
        latency,
        stream: false,
        phase: AttemptPhase::Whole,
    };
    // t = 0: a long attempt starts. t = 50 s: another fails and ejects.
    tokio::time::advance(secs(50)).await;
    reg.on_attempt(&report(Duration::from_millis(10)));
    assert!(matches!(reg.status(&a), TargetStatus::Ejected { .. }));
    // t = 56 s: a request orders the candidates, and the target is probed.
    tokio::time::advance(secs(6)).await;
    let route = route(vec![cand("a", secs(30))]);
    let probe = tokio::spawn(svc.oneshot(req(&route, false)));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(reg.status(&a), TargetStatus::Probing);
    // t = 60 s: the attempt that started at t = 0 fails.
    tokio::time::advance(secs(4)).await;
    reg.on_attempt(&report(secs(60)));
    assert_eq!(reg.status(&a), TargetStatus::Probing, "still probing");
    let ejections = reg
        .snapshot()
        .iter()
        .find(|h| h.target == a)
        .unwrap()
        .ejections;
    assert_eq!(ejections, 1, "the cool-down was not doubled");
    probe.abort();
}

/// A target its probe restored gets its traffic back gradually: first for
/// ≈ 10 % of requests, rising linearly to all by the end of the slow start
/// (the rest try it behind the healthy candidate, and the trace says why);
/// ejected again meanwhile, its cool-down keeps doubling.
#[tokio::test(start_paused = true)]
async fn a_restored_target_gets_its_traffic_back_over_the_slow_start() {
    let s = Script::new();
    s.on("b", Act::Ok);
    let cfg = HealthConfig {
        consecutive_failures: 1,
        slow_start: secs(10),
        ..config()
    };
    let (svc, reg, store) = stack(&s, cfg);
    let route = no_retry_route(&["a", "b"]);
    s.then("a", Act::Fail(e503()));
    send(&svc, &route).await.unwrap();
    tokio::time::advance(secs(5)).await;
    s.on("a", Act::Ok);
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a"], "the probe");
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);

    // How many of `n` requests try a first.
    let share = |n: usize| {
        let (svc, route, s) = (svc.clone(), route.clone(), &s);
        async move {
            let mut first = 0;
            for i in 0..n {
                let (_, calls) = attempted(s, send_id(&svc, &route, &format!("r{i}"))).await;
                first += usize::from(calls[0] == "a");
            }
            first
        }
    };
    // Just restored: ≈ 10 % (binomial, n = 400: 40 ± 6).
    let early = share(400).await;
    assert!((15..=70).contains(&early), "{early} of 400");
    let passed_over = (0..400)
        .filter_map(|i| store.get(&format!("r{i}")))
        .find(|t| t.candidates[0].target == "b/m")
        .expect("a request that put b first");
    let a_note = passed_over
        .candidates
        .iter()
        .find(|c| c.target == "a/m")
        .unwrap();
    assert!(
        a_note.reason.contains("slow start"),
        "{:?}",
        passed_over.candidates
    );
    // Half-way: ≈ 55 % (220 ± 10).
    tokio::time::advance(secs(5)).await;
    let half = share(400).await;
    assert!((170..=270).contains(&half), "{half} of 400");
    // Over: all of them.
    tokio::time::advance(secs(5)).await;
    assert_eq!(share(100).await, 100);

    // A target that fails again during its slow start is in the same run
    // of ejections: 5 s, then 10 s, not 5 s again.
    s.on("a", Act::Fail(e503()));
    send(&svc, &route).await.unwrap();
    tokio::time::advance(secs(5)).await;
    s.on("a", Act::Ok);
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a"], "the probe");
    tokio::time::advance(secs(2)).await;
    s.on("a", Act::Fail(e503()));
    for i in 0..50 {
        // Until a request puts a first.
        let (_, calls) = attempted(&s, send_id(&svc, &route, &format!("x{i}"))).await;
        if calls[0] == "a" {
            break;
        }
    }
    let now = Instant::now();
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Ejected {
            until: now + secs(10)
        }
    );
}

/// A target in its slow start is passed over only for a settled healthy
/// one: behind nothing but a target being probed, it goes first every time
/// (an unproven target before a restored one was the wrong way round). And
/// a slow start that ended while no request looked at the target ends its
/// run of ejections: the next cool-down is the base one again.
#[tokio::test(start_paused = true)]
async fn a_target_in_its_slow_start_is_not_passed_over_for_an_unproven_one() {
    let s = Script::new();
    let cfg = HealthConfig {
        consecutive_failures: 1,
        slow_start: secs(60),
        ..config()
    };
    let (svc, reg, _) = stack(&s, cfg);
    let route = no_retry_route(&["a", "b"]);
    s.on("a", Act::Fail(e503()));
    s.on("b", Act::Fail(e503()));
    send(&svc, &route).await.unwrap_err();
    tokio::time::advance(secs(5)).await;
    // a's probe succeeds; b's cool-down is over too, its probe not taken.
    s.on("a", Act::Ok);
    let (_, calls) = attempted(&s, send(&svc, &route)).await;
    assert_eq!(calls, ["a"]);
    for _ in 0..50 {
        let (_, calls) = attempted(&s, send(&svc, &route)).await;
        assert_eq!(calls, ["a"], "nothing settled to pass a over for");
    }

    // A stream starts on a during its slow start and breaks 70 s later,
    // after the slow start ran out with no request ordering a meanwhile.
    s.on(
        "a",
        Act::Stream(vec![
            text("a-id", "partial"),
            sleep(70_000),
            fail_in_stream(Failure::StreamCut),
        ]),
    );
    let only_a = route_with(vec![cand("a", secs(1))], |p| {
        p.same_target_retries = 0;
        p.stream_idle_timeout = secs(120);
        p.continuation = vec![];
    });
    let resp = svc.clone().oneshot(req(&only_a, true)).await.unwrap();
    let items = collect(resp.body).await;
    assert!(items.last().unwrap().is_err());
    let now = Instant::now();
    assert_eq!(
        reg.status(&id("a")),
        TargetStatus::Ejected {
            until: now + secs(5)
        },
        "a new run of ejections: the base cool-down"
    );
}

/// A request's same-target retry, started a few ms after another failure
/// ejected the target, is not a probe: its success does not restore the
/// target during its cool-down (it did, 25 ms after each ejection, for a
/// target failing a third of its requests). A request that tries the target
/// anyway, every candidate being unavailable, still restores it.
#[tokio::test(start_paused = true)]
async fn a_same_target_retry_right_after_the_ejection_does_not_restore_it() {
    let s = Script::new();
    s.then("a", Act::Fail(e503()));
    s.on("a", Act::Ok);
    s.on("b", Act::Ok);
    let (svc, reg, _) = stack(
        &s,
        HealthConfig {
            consecutive_failures: 1,
            ..config()
        },
    );
    let r = route(vec![cand("a", secs(1)), cand("b", secs(1))]);
    let (resp, tried) = attempted(&s, send(&svc, &r)).await;
    assert_eq!(tried, ["a", "a"], "the 503 ejected a, then the retry");
    assert_eq!(resp.unwrap().served_by.id, id("a"));
    assert!(
        matches!(reg.status(&id("a")), TargetStatus::Ejected { .. }),
        "{:?}",
        reg.status(&id("a"))
    );
    // Every candidate unavailable: `a` is tried anyway, and restored.
    let only_a = route(vec![cand("a", secs(1))]);
    let (resp, tried) = attempted(&s, send(&svc, &only_a)).await;
    assert_eq!(tried, ["a"]);
    assert!(resp.is_ok());
    assert_eq!(reg.status(&id("a")), TargetStatus::Healthy);
}
