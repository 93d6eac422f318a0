//! End-to-end behaviour of the layers that remember across requests: health
//! ejection and recovery, latency ranking, and the shared retry budget. Real
//! HTTP on loopback against the fault-injecting mock; every test checks what
//! the client saw and what the decision traces say.

mod common;

use std::time::{Duration, Instant};

use modelux::mock::{Behaviour, Fault, MockProvider};
use serde_json::{json, Value};

use common::{chat, providers, Answer, Harness};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn full() -> String {
    (0..modelux::mock::DEFAULT_WORDS)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn models() -> Value {
    json!({
        "primary": {"provider": "oa", "upstream_model": "m-primary"},
        "secondary": {"provider": "an", "upstream_model": "m-secondary"},
        "tertiary": {"provider": "ge", "upstream_model": "m-tertiary"}
    })
}

/// A route over `attempts` (model, timeout_ms) with small backoffs and the
/// fields of `policy` on top.
fn route(attempts: &[(&str, u64)], policy: Value) -> Value {
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|(m, t)| json!({"model": m, "timeout_ms": t}))
        .collect();
    let mut route = json!({
        "attempts": attempts,
        "backoff_base_ms": 10,
        "backoff_max_ms": 20,
        "total_budget_ms": 5000
    });
    if let (Some(r), Some(p)) = (route.as_object_mut(), policy.as_object()) {
        for (k, v) in p {
            r.insert(k.clone(), v.clone());
        }
    }
    route
}

fn failing(fault: Fault) -> Behaviour {
    Behaviour {
        fault: Some(fault),
        ..Behaviour::default()
    }
}

fn down() -> Behaviour {
    failing(Fault::status(503))
}

async fn trace_of(h: &Harness, a: &Answer) -> Value {
    let id = a.header("x-modelux-request-id");
    assert!(!id.is_empty(), "no x-modelux-request-id header");
    h.trace(&id).await
}

/// `(target, reason)` of each candidate, in the order they were tried.
fn candidates(trace: &Value) -> Vec<(String, String)> {
    trace["candidates"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["target"].as_str().unwrap_or("").to_owned(),
                        c["reason"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

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

fn attempt_field(trace: &Value, field: &str) -> Vec<String> {
    trace["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| match &a[field] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The p50 in a latency reason such as `"p50 21 ms, p95 25 ms over 3 samples; …"`.
fn p50_ms(reason: &str) -> u64 {
    let rest = reason
        .split("p50 ")
        .nth(1)
        .unwrap_or_else(|| panic!("no p50 in {reason:?}"));
    rest.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no p50 number in {reason:?}"))
}

// ---------------------------------------------------------------------------
// 17. Ejection, probe, recovery
// ---------------------------------------------------------------------------

#[tokio::test]
async fn down_primary_is_ejected_then_probed_and_restored() {
    let h = common::start(|m: &MockProvider| {
        json!({
            "providers": providers(m),
            "models": models(),
            "routes": {"r": route(&[("primary", 500), ("secondary", 500)], json!({"same_target_retries": 1}))},
            "health": {"consecutive_failures": 2, "cooldown_base_ms": 300, "cooldown_max_ms": 1000, "probes": 1, "slow_start_ms": 2000}
        })
    })
    .await;
    h.mock.set("m-primary", down());

    // Two failures in a row (first attempt and its retry) eject the primary.
    let a = h.post(&chat("r", false)).await;
    let ejected_at = Instant::now();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "an");
    let t = trace_of(&h, &a).await;
    assert_eq!(attempt_field(&t, "outcome"), ["5xx", "5xx", "ok"], "{t:#}");
    assert_eq!(h.mock.request_count("m-primary"), 2);

    // While ejected, the secondary goes first and the primary is not touched.
    for _ in 0..3 {
        let a = h.post(&chat("r", false)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.header("x-modelux-provider"), "an");
        assert_eq!(a.header("x-modelux-attempts"), "1");
        let t = trace_of(&h, &a).await;
        let c = candidates(&t);
        assert_eq!(c[0].0, "an/secondary", "{t:#}");
        assert_eq!(c[1].0, "oa/primary");
        assert!(c[1].1.contains("ejected"), "{:?}", c[1].1);
        assert_eq!(attempt_field(&t, "target"), ["an/secondary"]);
        assert_eq!(decisions(&t, "reorder").len(), 1, "{t:#}");
    }
    assert_eq!(
        h.mock.request_count("m-primary"),
        2,
        "an ejected target gets no traffic while something healthy is left"
    );

    // The primary recovers; after the cool-down a probe finds out and
    // traffic returns.
    h.mock.set("m-primary", Behaviour::default());
    let probe = loop {
        let a = h.post(&chat("r", false)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        if a.header("x-modelux-provider") == "oa" {
            break a;
        }
        assert!(
            ejected_at.elapsed() < Duration::from_millis(1000 + 1500),
            "traffic did not return to the primary within the cool-down cap"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let returned_after = ejected_at.elapsed();
    assert!(
        returned_after >= Duration::from_millis(250),
        "the primary was tried again before its 300 ms cool-down ended ({returned_after:?})"
    );
    assert_eq!(probe.content(), full());
    assert_eq!(h.mock.request_count("m-primary"), 3, "one probe");
    let t = trace_of(&h, &probe).await;
    let c = candidates(&t);
    assert_eq!(c[0].0, "oa/primary", "{t:#}");
    assert!(c[0].1.contains("probe"), "{:?}", c[0].1);
    assert_eq!(attempt_field(&t, "outcome"), ["ok"]);

    // Restored, in its slow start: first for a share of requests that grows
    // to all of them within `slow_start_ms`; the others try it second.
    // (Until one is passed over: within the first 1.8 s each request is at
    // least 9 % likely to be, the first ones 80-90 %, so a few requests on
    // a busy machine are enough.)
    let restored = Instant::now();
    let passed_over = loop {
        let a = h.post(&chat("r", false)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let t = trace_of(&h, &a).await;
        let c = candidates(&t);
        if c[0].0 == "an/secondary" {
            assert_eq!(c[1].0, "oa/primary", "{t:#}");
            assert!(c[1].1.contains("slow start"), "{:?}", c[1].1);
            break true;
        }
        if restored.elapsed() > Duration::from_millis(1800) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(passed_over, "every request put the primary first at once");
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(restored.elapsed())).await;

    // Then healthy and first again.
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.header("x-modelux-provider"), "oa");
    let t = trace_of(&h, &a).await;
    let c = candidates(&t);
    assert_eq!(c[0].0, "oa/primary", "{t:#}");
    assert!(c[0].1.starts_with("healthy"), "{:?}", c[0].1);
    assert!(decisions(&t, "reorder").is_empty(), "{t:#}");
}

/// A new config version's `health`, `retry_budget`, `traces` and
/// `server.max_body_bytes` apply to the next request (they used to stay at
/// the first version's values until a restart), while what the layers
/// learnt carries over: a target ejected under the old settings stays
/// ejected under the new ones.
#[tokio::test]
async fn a_new_version_s_settings_apply_and_the_learnt_state_carries_over() {
    let config = |failures: u32, max_body: u64| {
        move |mock: &MockProvider| {
            json!({
                "providers": providers(mock),
                "models": models(),
                "routes": {"r": route(&[("primary", 500), ("secondary", 500)], json!({"same_target_retries": 0}))},
                "health": {"consecutive_failures": failures, "cooldown_base_ms": 60000, "cooldown_max_ms": 60000},
                "server": {"max_body_bytes": max_body},
                "traces": {"capacity": 1000}
            })
        }
    };
    let h = common::start(config(100, 1 << 20)).await;
    h.mock.set("m-primary", down());

    // Version 1 tolerates 100 failures in a row: the primary stays first.
    for _ in 0..2 {
        let a = h.post(&chat("r", false)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(
            attempt_field(&trace_of(&h, &a).await, "outcome"),
            ["5xx", "ok"]
        );
    }
    let before = h.post(&chat("r", false)).await;
    let before_id = before.header("x-modelux-request-id");

    // Version 2 ejects after 2 (the primary already failed 3 times in a
    // row, which the health state remembers) and takes bodies up to 2 KiB.
    let v2 = modelux::config::Config::from_value(config(2, 2048)(&h.mock)).unwrap();
    h.gateway.apply(v2, 2).unwrap();
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.header("x-modelux-config-version"), "2");
    let t = trace_of(&h, &a).await;
    assert_eq!(attempt_field(&t, "outcome"), ["5xx", "ok"], "{t:#}");
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let t = trace_of(&h, &a).await;
    assert_eq!(attempt_field(&t, "target"), ["an/secondary"], "{t:#}");
    assert!(candidates(&t)[1].1.contains("ejected"), "{t:#}");
    assert_eq!(h.mock.request_count("m-primary"), 4);

    let big = json!({"model": "r", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let a = h.post(&big).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2048"),
        "{}",
        a.body
    );

    // Version 3: the ring shrinks to its one newest trace; the ejection
    // (60 s) still holds.
    let mut v3 = config(2, 1 << 20)(&h.mock);
    v3["traces"]["capacity"] = json!(1);
    h.gateway
        .apply(modelux::config::Config::from_value(v3).unwrap(), 3)
        .unwrap();
    let (status, _) = h.get(&format!("/v1/traces/{before_id}")).await;
    assert_eq!(status, 404, "the ring shrank to its newest trace");
    let a = h.post(&chat("r", false)).await;
    assert_eq!(
        attempt_field(&trace_of(&h, &a).await, "target"),
        ["an/secondary"]
    );
    assert_eq!(h.mock.request_count("m-primary"), 4);
}

// ---------------------------------------------------------------------------
// 18. Latency ranking
// ---------------------------------------------------------------------------

#[tokio::test]
async fn latency_route_prefers_the_faster_target() {
    let h = common::start(|m: &MockProvider| {
        json!({
            "providers": providers(m),
            "models": {
                "slow": {"provider": "oa", "upstream_model": "m-slow", "timeout_ms": 3000},
                "fast": {"provider": "an", "upstream_model": "m-fast", "timeout_ms": 3000}
            },
            "routes": {"lat": {
                "strategy": "latency",
                "attempts": [{"model": "slow", "timeout_ms": 3000}, {"model": "fast", "timeout_ms": 3000}]
            }},
            "latency": {"min_samples": 3, "explore": 0.0}
        })
    })
    .await;
    h.mock.set(
        "m-slow",
        Behaviour {
            latency_ms: 300,
            ..Behaviour::default()
        },
    );
    h.mock.set(
        "m-fast",
        Behaviour {
            latency_ms: 20,
            ..Behaviour::default()
        },
    );

    // Before any samples the route keeps config order: slow first.
    let a = h.post(&chat("lat", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-modelux-model"), "slow");
    let t = trace_of(&h, &a).await;
    assert!(
        candidates(&t).iter().all(|(_, r)| r.contains("unranked")),
        "{t:#}"
    );

    // Warm up both targets through their single-model routes.
    for model in ["slow", "fast"] {
        for _ in 0..3 {
            let a = h.post(&chat(model, false)).await;
            assert_eq!(a.status, 200, "{}", a.body);
            assert_eq!(a.header("x-modelux-model"), model);
        }
    }

    let mut fast = 0;
    let mut last = None;
    for _ in 0..10 {
        let a = h.post(&chat("lat", false)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.content(), full());
        if a.header("x-modelux-model") == "fast" {
            fast += 1;
        }
        last = Some(a);
    }
    assert!(
        fast >= 8,
        "only {fast} of 10 requests went to the fast target"
    );

    let t = trace_of(&h, &last.expect("requests")).await;
    let c = candidates(&t);
    assert_eq!(c.len(), 2, "{t:#}");
    assert_eq!(c[0].0, "an/fast", "{t:#}");
    assert_eq!(c[1].0, "oa/slow");
    let (p_fast, p_slow) = (p50_ms(&c[0].1), p50_ms(&c[1].1));
    assert!(
        p_fast < p_slow && p_slow >= 250,
        "p50s: fast {p_fast} ms, slow {p_slow} ms"
    );
    let reorder = decisions(&t, "reorder");
    assert!(
        reorder.iter().any(|d| d.contains("latency: an/fast first")),
        "{reorder:?}"
    );
    assert_eq!(h.mock.request_count("m-slow"), 4 + (10 - fast));
}

// ---------------------------------------------------------------------------
// 19. Retry budget
// ---------------------------------------------------------------------------

#[tokio::test]
async fn retry_budget_caps_upstream_attempts_under_total_outage() {
    let h = common::start(|m: &MockProvider| {
        json!({
            "providers": providers(m),
            "models": models(),
            "routes": {"r": route(
                &[("primary", 500), ("secondary", 500), ("tertiary", 500)],
                json!({"same_target_retries": 1})
            )},
            "retry_budget": {"ttl_ms": 1000, "min_per_sec": 1, "retry_percent": 0.2}
        })
    })
    .await;
    let upstream = ["m-primary", "m-secondary", "m-tertiary"];
    for m in upstream {
        h.mock.set(m, down());
    }
    let count = |h: &Harness| -> usize { upstream.iter().map(|m| h.mock.request_count(m)).sum() };

    const N: usize = 100;
    let mut ids = Vec::with_capacity(N);
    let mut mid = 0;
    let started = Instant::now();
    for i in 0..N {
        if i == N / 2 {
            mid = count(&h);
        }
        let a = h.post(&chat("r", false)).await;
        assert_eq!(a.status, 502, "{}", a.body);
        assert_eq!(a.header("x-should-retry"), "false");
        ids.push(a.header("x-modelux-request-id"));
    }
    let elapsed = started.elapsed();
    let total = count(&h);
    let second_half = (total - mid) as f64 / (N - N / 2) as f64;
    eprintln!(
        "retry budget: {total} upstream attempts for {N} requests ({mid} in the first half, \
         {second_half:.2} per request in the second half) in {elapsed:?}"
    );
    // Without a budget each request would make 6 attempts (3 targets × 2).
    assert!(
        total >= N,
        "every request tries at least once ({total} attempts)"
    );
    assert!(
        second_half <= 1.6,
        "{second_half:.2} upstream attempts per request in the second half \
         ({total} in all, {mid} in the first half, {elapsed:?})"
    );

    let mut exhausted = 0;
    for id in &ids[N / 2..] {
        let t = h.trace(id).await;
        if !decisions(&t, "retry_budget_exhausted").is_empty() {
            exhausted += 1;
            assert!(
                t["outcome"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("retry budget exhausted"),
                "{t:#}"
            );
        }
    }
    assert!(
        exhausted > 0,
        "no trace in the second half says the retry budget ran out"
    );
}

// ---------------------------------------------------------------------------
// 20. Every target unhealthy
// ---------------------------------------------------------------------------

#[tokio::test]
async fn all_targets_ejected_still_tried_and_served_by_the_one_that_recovered() {
    let h = common::start(|m: &MockProvider| {
        json!({
            "providers": providers(m),
            "models": models(),
            "routes": {"r": route(&[("primary", 500), ("secondary", 500)], json!({"same_target_retries": 0}))},
            "health": {"consecutive_failures": 1, "cooldown_base_ms": 5000, "cooldown_max_ms": 10000}
        })
    })
    .await;
    h.mock.set("m-primary", down());
    h.mock.set("m-secondary", down());

    // One failure each ejects both.
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(h.mock.request_count("m-primary"), 1);
    assert_eq!(h.mock.request_count("m-secondary"), 1);

    // Everything ejected and still down: tried anyway, answered with a real status.
    let t0 = Instant::now();
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.header("x-should-retry"), "false");
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "must not wait for a cool-down"
    );
    let t = trace_of(&h, &a).await;
    let c = candidates(&t);
    assert_eq!(c.len(), 2, "{t:#}");
    assert!(c.iter().all(|(_, r)| r.contains("ejected")), "{c:?}");
    assert_eq!(attempt_field(&t, "outcome"), ["5xx", "5xx"], "{t:#}");
    assert_eq!(h.mock.request_count("m-primary"), 2);
    assert_eq!(h.mock.request_count("m-secondary"), 2);

    // The secondary recovers long before its cool-down ends: the request
    // still finds it.
    h.mock.set("m-secondary", Behaviour::default());
    let t0 = Instant::now();
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content(), full());
    assert_eq!(a.header("x-modelux-provider"), "an");
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "must not wait for a cool-down"
    );
    let t = trace_of(&h, &a).await;
    let c = candidates(&t);
    assert!(c.iter().all(|(_, r)| r.contains("ejected")), "{c:?}");
    let targets = attempt_field(&t, "target");
    assert_eq!(
        targets.last().map(String::as_str),
        Some("an/secondary"),
        "{t:#}"
    );
    assert_eq!(
        attempt_field(&t, "outcome").last().map(String::as_str),
        Some("ok")
    );
    assert_eq!(t["outcome"]["served_by"], "an/secondary");

    // A success restores it: it is healthy and first again.
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-modelux-provider"), "an");
    let t = trace_of(&h, &a).await;
    let c = candidates(&t);
    assert_eq!(c[0].0, "an/secondary", "{t:#}");
    assert!(c[0].1.starts_with("healthy"), "{:?}", c[0].1);
    assert_eq!(attempt_field(&t, "target"), ["an/secondary"]);
}

/// A target a new version drops is forgotten: its `modelux_health_ejected`
/// goes back to 0 (before, an ejected target removed from the config, the
/// usual answer to its outage, kept reporting 1 and the alert on it fired
/// until a restart), and when a later version brings it back it starts
/// healthy, in its configured place.
#[tokio::test]
async fn a_target_a_new_version_drops_is_forgotten_and_its_ejection_cleared() {
    let config = |with_retired: bool| {
        move |mock: &MockProvider| {
            let mut models = models();
            let mut attempts = vec![("secondary", 500)];
            if with_retired {
                models["retired"] = json!({"provider": "oa", "upstream_model": "m-retired"});
                attempts.insert(0, ("retired", 500));
            }
            json!({
                "providers": providers(mock),
                "models": models,
                "routes": {"r": route(&attempts, json!({"same_target_retries": 0}))},
                "health": {"consecutive_failures": 2, "cooldown_base_ms": 60000, "cooldown_max_ms": 60000}
            })
        }
    };
    let ejected = |metrics: &str| -> Option<String> {
        metrics
            .lines()
            .find(|l| l.starts_with("modelux_health_ejected{") && l.contains(r#"model="retired""#))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    let h = common::start(config(true)).await;
    h.mock.set("m-retired", down());
    for _ in 0..2 {
        let a = h.post(&chat("r", false)).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(ejected(&metrics).as_deref(), Some("1"), "{metrics}");

    // The operator drops the ejected target.
    let v2 = modelux::config::Config::from_value(config(false)(&h.mock)).unwrap();
    h.gateway.apply(v2, 2).unwrap();
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(ejected(&metrics).as_deref(), Some("0"), "{metrics}");

    // Back in version 3, recovered: tried first again, not behind the
    // secondary as an ejected target would be.
    h.mock.set("m-retired", Behaviour::default());
    let v3 = modelux::config::Config::from_value(config(true)(&h.mock)).unwrap();
    h.gateway.apply(v3, 3).unwrap();
    let a = h.post(&chat("r", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        attempt_field(&trace_of(&h, &a).await, "target"),
        ["oa/retired"]
    );
}
