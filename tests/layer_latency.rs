//! Behaviour of `LatencyRankLayer` (optionally over `HealthScoreLayer`) on
//! `FallbackLayer` over scripted leaves, on virtual time.

mod layers;

use std::sync::Arc;

use layers::*;
use modelux::fallback::FallbackLayer;
use modelux::health::{HealthConfig, HealthScoreLayer, TargetStatus};
use modelux::latency::{LatencyConfig, LatencyRankLayer, LatencyRegistry, Measure};
use modelux::provider::TargetId;
use modelux::route::{Route, RouteError, RouteRequest, RouteResponse, Strategy};
use modelux::trace::{TraceLayer, TraceStore};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

type Stack = BoxCloneService<RouteRequest, RouteResponse, RouteError>;

fn latency_stack(s: &Script, config: LatencyConfig) -> (Stack, LatencyRegistry, TraceStore) {
    let latency = LatencyRankLayer::new(config);
    let registry = latency.registry();
    let store = TraceStore::new(256);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(store.clone()))
        .layer(latency)
        .layer(FallbackLayer::new())
        .service(s.leaf());
    (BoxCloneService::new(svc), registry, store)
}

fn config(min_samples: usize, explore: f64) -> LatencyConfig {
    LatencyConfig {
        window: secs(300),
        min_samples,
        explore,
        max_samples: 256,
    }
}

fn id(p: &str) -> TargetId {
    TargetId::new(p, MODEL)
}

/// Answers after `ms` milliseconds.
fn answers_after(ms_: u64) -> Act {
    Act::After(ms(ms_), Box::new(Act::Ok))
}

fn single(p: &str) -> Arc<Route> {
    route(vec![cand(p, secs(5))])
}

fn latency_route(providers: &[&str]) -> Arc<Route> {
    route_strategy(
        providers.iter().map(|p| cand(p, secs(5))).collect(),
        Strategy::Latency,
    )
}

/// Measures `p` `n` times through single-candidate routes.
async fn warm(svc: &Stack, p: &str, n: usize) {
    for _ in 0..n {
        svc.clone().oneshot(req(&single(p), false)).await.unwrap();
    }
}

/// The provider tried first by one request on `route`.
async fn first_tried(s: &Script, svc: &Stack, route: &Arc<Route>) -> String {
    s.clear_calls();
    svc.clone().oneshot(req(route, false)).await.unwrap();
    s.providers()[0].clone()
}

#[tokio::test(start_paused = true)]
async fn with_enough_samples_the_faster_target_goes_first() {
    let s = Script::new();
    s.on("slow", answers_after(500));
    s.on("fast", answers_after(100));
    let (svc, reg, store) = latency_stack(&s, config(3, 0.0));
    warm(&svc, "slow", 3).await;
    warm(&svc, "fast", 3).await;
    assert_eq!(reg.estimate(&id("fast")).unwrap().p50, ms(100));
    assert_eq!(reg.estimate(&id("slow")).unwrap().p50, ms(500));

    let route = latency_route(&["slow", "fast"]);
    for _ in 0..5 {
        assert_eq!(first_tried(&s, &svc, &route).await, "fast");
    }
    let mut r = req(&route, false);
    r.ctx.request_id = "ranked".into();
    svc.clone().oneshot(r).await.unwrap();
    let t = store.get("ranked").unwrap();
    let order: Vec<_> = t.candidates.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(order, ["fast/m", "slow/m"]);
    assert!(
        t.candidates[0].reason.contains("p50 100 ms"),
        "{:?}",
        t.candidates
    );
}

#[tokio::test(start_paused = true)]
async fn stream_latency_is_time_to_first_content_token() {
    // "slowhead" sends its first token late but finishes fast; "steady" the
    // other way round. Ranking follows the first token.
    let s = Script::new();
    s.on(
        "slowhead",
        Act::Stream(vec![sleep(400), text("x", "a"), finish("x")]),
    );
    s.on(
        "steady",
        Act::Stream(vec![
            sleep(100),
            text("y", "a"),
            sleep(2_000),
            text("y", "b"),
            finish("y"),
        ]),
    );
    let (svc, reg, _) = latency_stack(&s, config(2, 0.0));
    for p in ["slowhead", "steady"] {
        for _ in 0..2 {
            let resp = svc.clone().oneshot(req(&single(p), true)).await.unwrap();
            collect(resp.body).await;
        }
    }
    let first_token = |p: &str| reg.estimate_of(&id(p), Measure::FirstToken).unwrap().p50;
    assert_eq!(first_token("steady"), ms(100));
    assert_eq!(first_token("slowhead"), ms(400));
}

/// A stream is ranked by the targets' time to first token and a whole
/// answer by their whole-response time, each from its own window: "quick"
/// was only measured streaming (first token after 100 ms), "whole" only
/// answering whole (400 ms). One window of both put "quick" first for whole
/// answers too, on a number that says nothing about them.
#[tokio::test(start_paused = true)]
async fn streams_and_whole_answers_are_ranked_by_their_own_measure() {
    let s = Script::new();
    s.on(
        "quick",
        Act::Stream(vec![sleep(100), text("q", "a"), finish("q")]),
    );
    s.on("whole", answers_after(400));
    let (svc, reg, _) = latency_stack(&s, config(2, 0.0));
    for _ in 0..2 {
        let resp = svc
            .clone()
            .oneshot(req(&single("quick"), true))
            .await
            .unwrap();
        collect(resp.body).await;
    }
    warm(&svc, "whole", 2).await;
    assert!(reg.estimate(&id("quick")).is_none());
    assert!(reg.estimate_of(&id("whole"), Measure::FirstToken).is_none());

    let route = latency_route(&["quick", "whole"]);
    assert_eq!(first_tried(&s, &svc, &route).await, "whole");
    s.clear_calls();
    let resp = svc.clone().oneshot(req(&route, true)).await.unwrap();
    collect(resp.body).await;
    assert_eq!(s.providers()[0], "quick");
}

#[tokio::test(start_paused = true)]
async fn below_min_samples_config_order_is_kept() {
    let s = Script::new();
    s.on("slow", answers_after(500));
    s.on("fast", answers_after(100));
    let (svc, _, _) = latency_stack(&s, config(3, 0.0));
    warm(&svc, "slow", 2).await;
    warm(&svc, "fast", 2).await;

    let route = latency_route(&["slow", "fast"]);
    // Each request here adds a sample to "slow" only: it stays first.
    assert_eq!(first_tried(&s, &svc, &route).await, "slow");
}

#[tokio::test(start_paused = true)]
async fn a_ranked_target_goes_ahead_of_unranked_ones() {
    let s = Script::new();
    s.on("a", answers_after(300));
    s.on("b", answers_after(300));
    s.on("c", answers_after(900));
    let (svc, _, _) = latency_stack(&s, config(3, 0.0));
    warm(&svc, "c", 3).await;
    warm(&svc, "a", 1).await;

    // c is slow but the only one with enough samples.
    let route = latency_route(&["a", "b", "c"]);
    assert_eq!(first_tried(&s, &svc, &route).await, "c");
}

#[tokio::test(start_paused = true)]
async fn fallback_strategy_keeps_config_order_even_with_samples() {
    let s = Script::new();
    s.on("slow", answers_after(500));
    s.on("fast", answers_after(100));
    let (svc, reg, _) = latency_stack(&s, config(3, 0.0));
    warm(&svc, "slow", 5).await;
    warm(&svc, "fast", 5).await;
    assert!(reg.estimate(&id("fast")).unwrap().p50 < reg.estimate(&id("slow")).unwrap().p50);

    let route = route_strategy(
        vec![cand("slow", secs(5)), cand("fast", secs(5))],
        Strategy::Fallback,
    );
    for _ in 0..5 {
        assert_eq!(first_tried(&s, &svc, &route).await, "slow");
    }
    // Attempts on fallback routes are still measured.
    assert_eq!(reg.estimate(&id("slow")).unwrap().samples, 10);
}

/// Exploration tries the candidate measured least recently, whatever its
/// sample count: a target that recovered with a window full of old slow
/// samples (b here: the most samples, all old) is measured again, where
/// picking by fewest samples always chose another (c) and left b without
/// traffic until its samples aged out of the window.
#[tokio::test(start_paused = true)]
async fn explore_puts_the_least_recently_measured_other_candidate_first() {
    let s = Script::new();
    s.on("a", answers_after(100));
    s.on("b", answers_after(200));
    s.on("c", answers_after(300));
    let (svc, _, store) = latency_stack(&s, config(3, 1.0));
    warm(&svc, "b", 20).await;
    warm(&svc, "a", 10).await;
    warm(&svc, "c", 2).await;

    // Without exploration the order would be a, b, c; b was measured last
    // longest ago (c has the fewest samples).
    let route = latency_route(&["a", "b", "c"]);
    let mut r = req(&route, false);
    r.ctx.request_id = "explore".into();
    s.clear_calls();
    svc.clone().oneshot(r).await.unwrap();
    assert_eq!(s.providers(), ["b"]);
    let t = store.get("explore").unwrap();
    assert!(
        t.candidates[0].reason.starts_with("exploration"),
        "{:?}",
        t.candidates
    );
    let order: Vec<_> = t.candidates.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(order, ["b/m", "a/m", "c/m"]);
}

#[tokio::test(start_paused = true)]
async fn no_exploration_when_explore_is_zero() {
    let s = Script::new();
    s.on("a", answers_after(100));
    s.on("b", answers_after(200));
    let (svc, _, _) = latency_stack(&s, config(3, 0.0));
    warm(&svc, "a", 10).await;
    warm(&svc, "b", 3).await;
    let route = latency_route(&["a", "b"]);
    for _ in 0..50 {
        assert_eq!(first_tried(&s, &svc, &route).await, "a");
    }
}

#[tokio::test(start_paused = true)]
async fn samples_older_than_the_window_do_not_rank() {
    let s = Script::new();
    s.on("slow", answers_after(500));
    s.on("fast", answers_after(100));
    let cfg = LatencyConfig {
        window: secs(60),
        ..config(3, 0.0)
    };
    let (svc, reg, _) = latency_stack(&s, cfg);
    warm(&svc, "fast", 3).await;
    tokio::time::advance(secs(61)).await;
    warm(&svc, "slow", 3).await;
    // Ranking itself must drop the stale samples (no other call prunes them first).
    let route = latency_route(&["fast", "slow"]);
    assert_eq!(first_tried(&s, &svc, &route).await, "slow");
    assert!(reg.estimate(&id("fast")).is_none());
}

#[tokio::test(start_paused = true)]
async fn failures_are_not_latency_samples() {
    let s = Script::new();
    s.on("a", Act::After(ms(10), Box::new(Act::Fail(e503()))));
    let (svc, reg, _) = latency_stack(&s, config(1, 0.0));
    for _ in 0..3 {
        svc.clone()
            .oneshot(req(&single("a"), false))
            .await
            .unwrap_err();
    }
    assert!(reg.estimate(&id("a")).is_none());
}

#[tokio::test(start_paused = true)]
async fn health_inside_latency_moves_an_ejected_fast_target_behind_a_healthy_slow_one() {
    let s = Script::new();
    s.on("slow", answers_after(500));
    s.on("fast", answers_after(100));
    let latency = LatencyRankLayer::new(config(3, 0.0));
    let health = HealthScoreLayer::new(HealthConfig {
        consecutive_failures: 1,
        ..HealthConfig::default()
    });
    let registry = health.registry();
    let store = TraceStore::new(64);
    let svc: Stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(TraceLayer::new(store.clone()))
            .layer(latency)
            .layer(health)
            .layer(FallbackLayer::new())
            .service(s.leaf()),
    );
    warm(&svc, "slow", 3).await;
    warm(&svc, "fast", 3).await;
    let route = latency_route(&["slow", "fast"]);
    assert_eq!(first_tried(&s, &svc, &route).await, "fast");

    // One failure ejects "fast".
    s.then("fast", Act::Fail(e503()));
    let single_fast = route_with(vec![cand("fast", secs(5))], |p| p.same_target_retries = 0);
    svc.clone()
        .oneshot(req(&single_fast, false))
        .await
        .unwrap_err();
    assert!(matches!(
        registry.status(&id("fast")),
        TargetStatus::Ejected { .. }
    ));

    let mut r = req(&route, false);
    r.ctx.request_id = "both".into();
    s.clear_calls();
    svc.clone().oneshot(r).await.unwrap();
    assert_eq!(s.providers(), ["slow"]);
    let t = store.get("both").unwrap();
    let order: Vec<_> = t.candidates.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(order, ["slow/m", "fast/m"]);
    // Both layers' reasons are kept.
    assert!(t.candidates[1].reason.contains("p50"), "{:?}", t.candidates);
    assert!(
        t.candidates[1].reason.contains("ejected"),
        "{:?}",
        t.candidates
    );
}

mod gauges {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// Records gauges by name (the value of the last `set`).
    #[derive(Default)]
    pub struct GaugeRecorder {
        gauges: Mutex<HashMap<String, Arc<GaugeValue>>>,
    }

    #[derive(Default)]
    pub struct GaugeValue(Mutex<f64>);

    impl metrics::GaugeFn for GaugeValue {
        fn increment(&self, v: f64) {
            *self.0.lock().unwrap() += v;
        }
        fn decrement(&self, v: f64) {
            *self.0.lock().unwrap() -= v;
        }
        fn set(&self, v: f64) {
            *self.0.lock().unwrap() = v;
        }
    }

    impl GaugeRecorder {
        pub fn get(&self, name: &str) -> Option<f64> {
            self.gauges
                .lock()
                .unwrap()
                .get(name)
                .map(|v| *v.0.lock().unwrap())
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

/// The p50/p95 gauges are refreshed at most once a second per target; the
/// estimate the ranking uses is always up to date.
#[test]
fn latency_gauges_refresh_at_most_once_a_second_but_estimates_are_current() {
    use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    let rec = gauges::GaugeRecorder::default();
    metrics::with_local_recorder(&rec, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let reg = LatencyRegistry::new(config(1, 0.0));
                let a = id("a");
                let sample = |latency_ms: u64| {
                    reg.on_attempt(&AttemptReport {
                        target: &a,
                        result: Ok(()),
                        latency: ms(latency_ms),
                        stream: false,
                        phase: AttemptPhase::Whole,
                    })
                };
                let p50 = || rec.get("modelux_latency_p50_seconds");
                sample(100);
                assert_eq!(p50(), Some(0.1), "the first sample sets the gauges");
                for _ in 0..4 {
                    sample(300);
                }
                assert_eq!(p50(), Some(0.1), "not refreshed within a second");
                assert_eq!(
                    reg.estimate(&a).unwrap().p50,
                    ms(300),
                    "estimate is current"
                );
                tokio::time::advance(ms(1000)).await;
                sample(300);
                assert_eq!(p50(), Some(0.3), "refreshed a second later");
                assert_eq!(rec.get("modelux_latency_p95_seconds"), Some(0.3));
            })
    });
}
