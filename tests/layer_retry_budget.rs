//! Behaviour of `RetryBudgetLayer` on `FallbackLayer` under a total upstream
//! outage, driven at a steady request rate on virtual time.

mod layers;

use std::sync::Arc;
use std::time::Duration;

use layers::*;
use modelux::fallback::FallbackLayer;
use modelux::retry_budget::{RetryBudgetConfig, RetryBudgetLayer};
use modelux::route::{Route, RouteError, RouteErrorKind, RouteRequest, RouteResponse};
use modelux::trace::{TraceLayer, TraceStore};
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

type Stack = BoxCloneService<RouteRequest, RouteResponse, RouteError>;

const REQUESTS: usize = 1000;
/// Five requests per virtual second: 200 s of traffic, 20 budget TTLs.
const SPACING: Duration = Duration::from_millis(200);

fn three_down() -> (Script, Arc<Route>) {
    let s = Script::new();
    for p in ["a", "b", "c"] {
        s.on(p, Act::Fail(e503()));
    }
    let route = route(vec![
        cand("a", secs(1)),
        cand("b", secs(1)),
        cand("c", secs(1)),
    ]);
    (s, route)
}

struct Run {
    results: Vec<(Instant, Result<RouteResponse, RouteError>)>,
    start: Instant,
}

/// Sends `REQUESTS` requests, one every `SPACING`, each as its own task, and
/// waits for all of them.
async fn drive(svc: Stack, route: &Arc<Route>) -> Run {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        tokio::time::sleep_until(start + SPACING * i as u32).await;
        let svc = svc.clone();
        let r = req_id(route, false, &format!("req-{i}"));
        let at = Instant::now();
        tasks.push(tokio::spawn(async move { (at, svc.oneshot(r).await) }));
    }
    let mut results = Vec::with_capacity(REQUESTS);
    for t in tasks {
        results.push(t.await.unwrap());
    }
    Run { results, start }
}

/// Upstream attempts per request among requests started at or after `from`.
fn attempts_per_request(s: &Script, run: &Run, from: Duration) -> f64 {
    let from = run.start + from;
    let requests = run.results.iter().filter(|(at, _)| *at >= from).count();
    let attempts = s.calls().iter().filter(|c| c.at >= from).count();
    attempts as f64 / requests as f64
}

#[tokio::test(start_paused = true)]
async fn control_without_a_budget_every_request_makes_every_attempt() {
    let (s, route) = three_down();
    let svc: Stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(FallbackLayer::new())
            .service(s.leaf()),
    );
    let run = drive(svc, &route).await;
    // same_target_retries = 1 on each of 3 candidates.
    assert_eq!(s.total(), REQUESTS * 6);
    assert!(run.results.iter().all(|(_, r)| {
        let e = r.as_ref().unwrap_err();
        e.kind == RouteErrorKind::AllFailed && !e.retry_budget_exhausted && e.attempts.len() == 6
    }));
}

#[tokio::test(start_paused = true)]
async fn under_a_total_outage_attempts_per_request_stay_at_one_plus_retry_percent() {
    let (s, route) = three_down();
    let store = TraceStore::new(REQUESTS);
    let cfg = RetryBudgetConfig {
        ttl: secs(10),
        min_per_sec: 0,
        retry_percent: 0.2,
    };
    let svc: Stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(TraceLayer::new(store.clone()))
            .layer(RetryBudgetLayer::new(cfg))
            .layer(FallbackLayer::new())
            .service(s.leaf()),
    );
    let run = drive(svc, &route).await;

    // Steady state: after the first two TTLs.
    let ratio = attempts_per_request(&s, &run, secs(20));
    assert!(ratio <= 1.2 + 0.02, "{ratio} attempts per request");
    assert!(ratio >= 1.15, "the budget still allows its share: {ratio}");
    let overall = s.total() as f64 / REQUESTS as f64;
    assert!(
        overall <= 1.2 + 0.02,
        "{overall} attempts per request overall"
    );

    let errors: Vec<&RouteError> = run
        .results
        .iter()
        .map(|(_, r)| r.as_ref().unwrap_err())
        .collect();
    let cut = errors.iter().filter(|e| e.retry_budget_exhausted).count();
    assert!(
        cut >= REQUESTS * 3 / 4,
        "only {cut} requests were cut short"
    );
    let (i, e) = errors
        .iter()
        .enumerate()
        .find(|(_, e)| e.retry_budget_exhausted)
        .unwrap();
    assert_eq!(e.kind, RouteErrorKind::AllFailed);
    assert!(e.to_string().contains("retry budget exhausted"), "{e}");
    let t = store.get(&format!("req-{i}")).unwrap();
    assert!(
        t.decisions
            .iter()
            .any(|d| d.kind == "retry_budget_exhausted"),
        "{:?}",
        t.decisions
    );
    // And requests that were not cut say nothing about the budget.
    if let Some((j, _)) = errors
        .iter()
        .enumerate()
        .find(|(_, e)| !e.retry_budget_exhausted)
    {
        let t = store.get(&format!("req-{j}")).unwrap();
        assert!(t
            .decisions
            .iter()
            .all(|d| d.kind != "retry_budget_exhausted"));
    }
}

#[tokio::test(start_paused = true)]
async fn with_no_retry_percent_retries_are_held_to_min_per_sec() {
    let (s, route) = three_down();
    let cfg = RetryBudgetConfig {
        ttl: secs(10),
        min_per_sec: 1,
        retry_percent: 0.0,
    };
    let svc: Stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(RetryBudgetLayer::new(cfg))
            .layer(FallbackLayer::new())
            .service(s.leaf()),
    );
    let run = drive(svc, &route).await;

    let from = run.start + secs(20);
    let requests = run.results.iter().filter(|(at, _)| *at >= from).count();
    let attempts = s.calls().iter().filter(|c| c.at >= from).count();
    let retries = attempts - requests;
    let seconds = (SPACING * REQUESTS as u32 - secs(20)).as_secs_f64();
    let per_sec = retries as f64 / seconds;
    assert!(per_sec <= 1.1, "{per_sec} retries per second");
    assert!(per_sec >= 0.8, "{per_sec} retries per second");
}

#[tokio::test(start_paused = true)]
async fn clones_of_the_layer_share_one_budget() {
    let (s, route) = three_down();
    let layer = RetryBudgetLayer::new(RetryBudgetConfig {
        ttl: secs(10),
        min_per_sec: 0,
        retry_percent: 0.2,
    });
    let one: Stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(FallbackLayer::new())
            .service(s.leaf()),
    );
    let two: Stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(FallbackLayer::new())
            .service(s.leaf()),
    );
    // Six deposits (three through each stack) pay for one retry at 20 %
    // (five deposits per retry) only when they land in the same budget.
    for i in 0..6 {
        let svc = if i % 2 == 0 { one.clone() } else { two.clone() };
        let e = svc.oneshot(req(&route, false)).await.unwrap_err();
        assert!(e.attempts.len() <= 2);
    }
    assert_eq!(s.total(), 6 + 1);
}

/// Settings out of tower's range are clamped, never a panic inside
/// `TpsBudget::new` (a library user's config is not validated like the
/// gateway's JSON).
#[test]
fn out_of_range_settings_build_a_budget_instead_of_panicking() {
    use modelux::retry_budget::RetryBudgetConfig;
    for (min_per_sec, retry_percent) in [
        (10, f32::NAN),
        (u32::MAX, 0.2),
        (0, f32::INFINITY),
        (0, -1.0),
    ] {
        let budget = RetryBudgetConfig {
            min_per_sec,
            retry_percent,
            ..RetryBudgetConfig::default()
        }
        .build();
        budget.deposit();
        let _ = budget.withdraw();
    }
}
