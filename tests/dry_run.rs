//! Traffic recording and counterfactual dry-runs: accuracy against a live
//! run under the same fault pattern, unobserved targets, bad input, and a
//! stalled store that must never slow or fail a request.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use modelux::config::Config;
use modelux::gateway::Gateway;
use modelux::mock::{Behaviour, Fault, MockProvider};
use modelux::store::{
    Activation, AuditEvent, ConfigStore, ConfigVersion, MemoryStore, NewVersion, StoreError,
    VersionSummary,
};
use modelux::traffic::TrafficRecord;
use reqwest::Method;
use serde_json::{json, Value};

const PRIMARY_MS: u64 = 200;
const FALLBACK_MS: u64 = 50;
const REQUESTS: usize = 300;

fn config(mock: &MockProvider, order: &[&str]) -> Value {
    let attempts: Vec<Value> = order
        .iter()
        .map(|m| json!({"model": m, "timeout_ms": 2000}))
        .collect();
    json!({
        "providers": {"oa": {"kind": "openai", "base_url": mock.openai_url(), "api_key": "sk-test"}},
        "models": {
            "primary": {"provider": "oa", "upstream_model": "m-primary",
                        "price": {"input_per_mtok": 10.0, "output_per_mtok": 30.0}},
            "fallback": {"provider": "oa", "upstream_model": "m-fallback",
                         "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            "third": {"provider": "oa", "upstream_model": "m-third"}
        },
        "routes": {"default": {"attempts": attempts}}
    })
}

fn sqlite_url(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("modelux-dryrun-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite:{}", dir.join("modelux.db").display())
}

fn faults(mock: &MockProvider) {
    mock.set(
        "m-primary",
        Behaviour {
            latency_ms: PRIMARY_MS,
            fault: Some(Fault::status(503)),
            fault_rate: Some(0.3),
            ..Behaviour::default()
        },
    );
    mock.set(
        "m-fallback",
        Behaviour {
            latency_ms: FALLBACK_MS,
            ..Behaviour::default()
        },
    );
}

/// Sends `n` requests, 10 at a time; returns how many got a 200.
async fn load(h: &common::Harness, n: usize) -> usize {
    let body = common::chat("default", false);
    futures::stream::iter(0..n)
        .map(|_| h.post(&body))
        .buffer_unordered(10)
        .filter(|a| futures::future::ready(a.status == 200))
        .count()
        .await
}

async fn recorded(store: &Arc<dyn ConfigStore>, h: &common::Harness) -> Vec<TrafficRecord> {
    h.gateway
        .traffic()
        .expect("the gateway records")
        .flush()
        .await;
    store.traffic_since(0, u64::MAX, 1_000_000).await.unwrap()
}

fn p50(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    v[v.len().div_ceil(2) - 1] as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_predicts_the_live_run_of_the_candidate() {
    let url = sqlite_url("accuracy");
    // The primary fails 30 % of requests without being ejected, so under A
    // the fallback only ever sees the primary's failures.
    let config = |m: &MockProvider, order: &[&str]| {
        let mut c = config(m, order);
        c["health"] = json!({"consecutive_failures": 1000, "failure_rate": 1.0});
        c
    };
    let h = common::start_with_store(&url, |m| config(m, &["primary", "fallback"])).await;
    faults(&h.mock);
    let store = modelux::store::open(&url).await.unwrap();

    // Config A: the flaky primary first.
    let ok_a = load(&h, REQUESTS).await;
    let a_records = recorded(&store, &h).await;
    assert_eq!(
        a_records.len(),
        REQUESTS,
        "every request under A is recorded"
    );
    assert!(a_records.iter().all(|r| r.config_version == 1));
    let first = &a_records[0];
    assert_eq!(first.route, "default");
    assert!(!first.tokens_estimated, "the mock reports usage");
    assert!(first.prompt_tokens > 0 && first.completion_tokens > 0);
    assert!(a_records
        .iter()
        .any(|r| r.attempts.len() > 1 && r.attempts[0].outcome == "5xx"));

    // Dry-run B (fallback first) against A's traffic.
    let b = config(&h.mock, &["fallback", "primary"]);
    let t = Instant::now();
    let (s, report) = h
        .admin(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate": b})),
        )
        .await;
    assert_eq!(s, 200, "{report}");
    let took = t.elapsed();
    for key in [
        "requests",
        "window",
        "baseline",
        "candidate",
        "actual",
        "diff",
        "unobserved",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}: {report}");
    }
    for side in ["baseline", "candidate", "actual"] {
        for key in [
            "success_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "ttft_p50_ms",
            "cost_usd",
            "attempts_per_request",
            "fallback_rate",
            "by_target",
            "by_route",
        ] {
            assert!(report[side].get(key).is_some(), "{side} lacks {key}");
        }
    }
    assert_eq!(report["requests"], REQUESTS);
    // Nothing changed in the store.
    let (_, versions) = h.admin(Method::GET, "/admin/config/versions", None).await;
    assert_eq!(versions["data"].as_array().unwrap().len(), 1);

    // Identity backtest: the simulated baseline reproduces what happened.
    let actual = &report["actual"];
    let base = &report["baseline"];
    assert!(
        (base["success_rate"].as_f64().unwrap() - actual["success_rate"].as_f64().unwrap()).abs()
            <= 0.02,
        "baseline vs actual: {base} / {actual}"
    );
    let (bp, ap) = (
        base["p50_ms"].as_f64().unwrap(),
        actual["p50_ms"].as_f64().unwrap(),
    );
    assert!(
        (bp / ap - 1.0).abs() <= 0.15,
        "baseline p50 {bp} vs actual {ap}"
    );
    assert_eq!(
        ok_a as f64 / REQUESTS as f64,
        actual["success_rate"].as_f64().unwrap()
    );

    // Now run B live under the same fault pattern.
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/versions",
            Some(json!({"config": config(&h.mock, &["fallback", "primary"]), "activate": true})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let b_version = v["version"].as_u64().unwrap();
    let ok_b = load(&h, REQUESTS).await;
    let live: Vec<TrafficRecord> = recorded(&store, &h)
        .await
        .into_iter()
        .filter(|r| r.config_version == b_version)
        .collect();
    assert_eq!(live.len(), REQUESTS);
    let live_success = ok_b as f64 / REQUESTS as f64;
    let live_p50 = p50(live.iter().map(|r| r.latency_ms).collect());

    let cand = &report["candidate"];
    let predicted_success = cand["success_rate"].as_f64().unwrap();
    let predicted_p50 = cand["p50_ms"].as_f64().unwrap();
    eprintln!(
        "accuracy: predicted success {predicted_success:.4} p50 {predicted_p50} ms; \
         live success {live_success:.4} p50 {live_p50} ms; \
         baseline sim success {:.4} p50 {bp} ms; actual A success {:.4} p50 {ap} ms; \
         dry-run of {REQUESTS} records took {took:?}",
        base["success_rate"].as_f64().unwrap(),
        actual["success_rate"].as_f64().unwrap(),
    );
    eprintln!("report: {}", serde_json::to_string_pretty(&report).unwrap());
    assert!(
        (predicted_success - live_success).abs() <= 0.02,
        "success: predicted {predicted_success}, live {live_success}"
    );
    assert!(
        (predicted_p50 / live_p50 - 1.0).abs() <= 0.15,
        "p50: predicted {predicted_p50}, live {live_p50}"
    );
    // B mostly serves from the fallback, which is cheaper.
    assert!(cand["by_target"]["oa/fallback"].as_f64().unwrap() > 0.95);
    assert!(report["diff"]["cost_usd"].as_f64().unwrap() < 0.0);
    assert!(report["diff"]["p50_ms"].as_f64().unwrap() < 0.0);
    // B's busiest second on the fallback exceeds anything A sent it.
    assert!(report["rate_flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["target"] == "oa/fallback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_needs_an_unobserved_target_says_so() {
    let h = common::start_with_store("memory", |m| config(m, &["primary", "fallback"])).await;
    let answered = load(&h, 40).await;
    assert_eq!(answered, 40);
    h.gateway.traffic().unwrap().flush().await;

    // Observed targets only: nothing unobserved... (fallback is listed but
    // never tried, since the primary never failed).
    let (s, r) = h
        .admin(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate": config(&h.mock, &["primary"])})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        r["unobserved"]["targets"].as_array().unwrap().is_empty(),
        "{r}"
    );
    assert_eq!(r["coverage"]["candidate"]["none"], 0.0);

    let (s, r) = h
        .admin(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate": config(&h.mock, &["third", "primary"])})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let targets = r["unobserved"]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{r}");
    assert_eq!(targets[0]["target"], "oa/third");
    assert_eq!(targets[0]["routed_share"], 1.0);
    assert!(targets[0]["attempted_share"].as_f64().unwrap() > 0.0);
    assert!(r["unobserved"]["share_of_requests"].as_f64().unwrap() > 0.0);
    // Never counted as a success: the unknown attempts fail over to the primary.
    assert!(r["coverage"]["candidate"]["none"].as_f64().unwrap() > 0.0);
    assert!(!r["candidate"]["by_target"]
        .as_object()
        .unwrap()
        .contains_key("oa/third"));
    assert!(r["candidate"]["attempts_per_request"].as_f64().unwrap() > 1.0);

    // Same input, same report.
    let (_, again) = h
        .admin(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate": config(&h.mock, &["third", "primary"])})),
        )
        .await;
    for side in ["baseline", "candidate"] {
        assert_eq!(r[side], again[side]);
    }
}

#[tokio::test]
async fn bad_dry_run_input_is_refused_and_changes_nothing() {
    let h = common::start_with_store("memory", |m| config(m, &["primary"])).await;
    let (_, before) = h.admin(Method::GET, "/admin/config/versions", None).await;

    // Empty window: nothing recorded yet.
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate_version": 1})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no recorded traffic"));

    assert_eq!(load(&h, 3).await, 3);
    h.gateway.traffic().unwrap().flush().await;

    let mut bad = config(&h.mock, &["primary"]);
    bad["routes"]["default"]["attempts"][0]["model"] = json!("ghost");
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate": bad})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["problems"][0]["path"]
        .as_str()
        .unwrap()
        .contains("attempts[0].model"));

    for body in [
        json!({"candidate_version": 99}),
        json!({"candidate_version": 1, "baseline_version": 42}),
    ] {
        let (s, v) = h
            .admin(Method::POST, "/admin/config/dry-run", Some(body))
            .await;
        assert_eq!(s, 404, "{v}");
    }
    for body in [
        json!({}),
        json!({"candidate_version": 1, "candidate": {}}),
        json!({"candidate_version": 1, "surprise": true}),
        json!({"candidate_version": 1, "since_s": 0}),
        json!({"candidate_version": 1, "max_records": 0}),
        json!({"candidate_version": 1, "max_records": 2_000_000}),
    ] {
        let (s, v) = h
            .admin(Method::POST, "/admin/config/dry-run", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body} -> {v}");
    }
    // No token, no dry-run.
    let (s, _) = h
        .admin_with(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate_version": 1})),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401);
    // A good one works, and nothing changed.
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate_version": 1, "since_s": 3600})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["requests"], 3);
    let (_, after) = h.admin(Method::GET, "/admin/config/versions", None).await;
    assert_eq!(before, after);
    assert_eq!(h.gateway.version(), 1);
}

/// A memory store with hooks for the tests below: traffic writes that never
/// finish, or traffic reads that wait until the test opens a gate.
#[derive(Default)]
struct HookedStore {
    inner: MemoryStore,
    /// Traffic writes hang (and `entered` says one was tried).
    stall_writes: bool,
    entered: AtomicBool,
    /// Traffic writes fail (reads still work), while set.
    refuse_writes: AtomicBool,
    /// Traffic counts (the first read of a dry-run's window) wait for a
    /// permit, after notifying.
    read_gate: Option<(Arc<tokio::sync::Semaphore>, Arc<tokio::sync::Notify>)>,
    /// Records returned by traffic reads so far.
    records_read: AtomicU64,
}

impl ConfigStore for HookedStore {
    fn create_version(&self, new: NewVersion) -> BoxFuture<'_, Result<VersionSummary, StoreError>> {
        self.inner.create_version(new)
    }
    fn version(&self, v: u64) -> BoxFuture<'_, Result<Option<ConfigVersion>, StoreError>> {
        self.inner.version(v)
    }
    fn versions(&self) -> BoxFuture<'_, Result<Vec<VersionSummary>, StoreError>> {
        self.inner.versions()
    }
    fn active(&self) -> BoxFuture<'_, Result<Option<Activation>, StoreError>> {
        self.inner.active()
    }
    fn activate(
        &self,
        v: u64,
        actor: &str,
        if_match: Option<u64>,
    ) -> BoxFuture<'_, Result<Activation, StoreError>> {
        self.inner.activate(v, actor, if_match)
    }
    fn rollback(&self, actor: &str) -> BoxFuture<'_, Result<Activation, StoreError>> {
        self.inner.rollback(actor)
    }
    fn audit(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditEvent>, StoreError>> {
        self.inner.audit(limit)
    }
    fn last_file_import(&self) -> BoxFuture<'_, Result<Option<VersionSummary>, StoreError>> {
        self.inner.last_file_import()
    }
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    fn append_encoded<'a>(
        &'a self,
        records: &'a [modelux::traffic::EncodedRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.entered.store(true, Ordering::SeqCst);
        if self.stall_writes {
            return Box::pin(std::future::pending());
        }
        if self.refuse_writes.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(StoreError::Database(
                    "cannot execute INSERT in a read-only transaction".into(),
                ))
            });
        }
        self.inner.append_encoded(records)
    }
    fn traffic_since(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<TrafficRecord>, StoreError>> {
        Box::pin(async move {
            let got = self.inner.traffic_since(from, to, limit).await?;
            self.records_read
                .fetch_add(got.len() as u64, Ordering::SeqCst);
            Ok(got)
        })
    }
    fn traffic_count(&self, from: u64, to: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            if let Some((gate, waiting)) = &self.read_gate {
                waiting.notify_one();
                let _pass = gate.acquire().await;
            }
            self.inner.traffic_count(from, to).await
        })
    }
    fn prune_traffic(&self, older: u64, max: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.prune_traffic(older, max)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_never_slows_or_fails_a_request() {
    let mock = MockProvider::start().await.unwrap();
    let mut value = config(&mock, &["primary"]);
    value["traffic"] = json!({"queue": 4});
    let config = Config::from_value(value).unwrap();
    let stalled = Arc::new(HookedStore {
        stall_writes: true,
        ..HookedStore::default()
    });
    let store: Arc<dyn ConfigStore> = stalled.clone();
    let gateway = Gateway::with_store(store, "memory", Some((config, "test.json")))
        .await
        .unwrap();
    let h = common::serve(mock, gateway).await;
    // Warm up, and let the writer take the first batch (on its next tick)
    // and hang on it.
    assert_eq!(h.post(&common::chat("default", false)).await.status, 200);
    tokio::time::sleep(modelux::traffic::FLUSH_INTERVAL + Duration::from_millis(300)).await;
    assert!(
        stalled.entered.load(Ordering::SeqCst),
        "the writer is stuck"
    );

    let mut slowest = Duration::ZERO;
    for _ in 0..60 {
        let t = Instant::now();
        let a = h.post(&common::chat("default", false)).await;
        assert_eq!(a.status, 200);
        slowest = slowest.max(t.elapsed());
    }
    let rec = h.gateway.traffic().unwrap();
    // The queue holds 4; the writer holds one batch; the rest were dropped.
    assert!(rec.dropped() >= 50, "dropped {}", rec.dropped());
    assert_eq!(rec.written(), 0);
    assert!(
        slowest < Duration::from_millis(500),
        "a request took {slowest:?} with a stalled store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_writes_the_records_still_queued() {
    let mock = MockProvider::start().await.unwrap();
    let config = Config::from_value(config(&mock, &["primary"])).unwrap();
    let store = modelux::store::open("memory").await.unwrap();
    let gateway = Gateway::with_store(store.clone(), "memory", Some((config, "test.json")))
        .await
        .unwrap();
    let (url, stop, served) = serve_until_stopped(&gateway, Duration::from_secs(5)).await;
    // Start right after a tick, so none falls between the requests and the stop.
    tokio::time::sleep(modelux::traffic::FLUSH_INTERVAL / 10).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let r = client
            .post(&url)
            .json(&common::chat("default", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    // serve() returned: the records are in the store, not in the queue.
    assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 5);
    assert_eq!(gateway.traffic().unwrap().written(), 5);
}

/// Serves `gateway` on loopback until the sender is used, with `grace` to
/// drain; gives the chat completions URL.
async fn serve_until_stopped(
    gateway: &Gateway,
    grace: Duration,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gateway.clone().serve(
        listener,
        async move {
            let _ = stopped.await;
        },
        grace,
    ));
    (url, stop, served)
}

#[tokio::test]
async fn recording_can_be_switched_off() {
    let h = common::start_with_store("memory", |m| {
        let mut c = config(m, &["primary"]);
        c["traffic"] = json!({"enabled": false});
        c
    })
    .await;
    assert_eq!(load(&h, 5).await, 5);
    let rec = h.gateway.traffic().unwrap();
    rec.flush().await;
    assert_eq!(rec.written(), 0);
    let (s, _) = h
        .admin(
            Method::POST,
            "/admin/config/dry-run",
            Some(json!({"candidate_version": 1})),
        )
        .await;
    assert_eq!(s, 400);
}

/// `n` synthetic records from 2023-11-14 on (see `common::synthetic`).
fn synthetic(n: u64) -> Vec<TrafficRecord> {
    common::synthetic::synthetic(n, 1_700_000_000_000)
}

fn synthetic_config(order: &[&str]) -> Config {
    let attempts: Vec<Value> = order.iter().map(|m| json!({"model": m})).collect();
    Config::from_value(json!({
        "providers": {"oa": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"primary": {"provider": "oa"}, "fallback": {"provider": "oa"}},
        "routes": {"default": {"attempts": attempts}}
    }))
    .unwrap()
}

/// Speed is measured by `cargo bench --bench dry_run` (1M records); this
/// checks what a replay of synthetic traffic reports.
#[test]
fn synthetic_traffic_replays_to_the_expected_figures() {
    let records = synthetic(5_000);
    let report = modelux::traffic::dry_run(
        &records,
        &synthetic_config(&["primary", "fallback"]),
        &synthetic_config(&["fallback", "primary"]),
        &modelux::traffic::DryRunOptions::default(),
    )
    .unwrap();
    assert_eq!(report.requests, 5_000);
    assert_eq!(report.candidate.success_rate, 1.0);
    assert_eq!(report.candidate.by_target["oa/fallback"], 1.0);
    assert_eq!(report.candidate.p50_ms, 50.0);
    assert_eq!(report.actual.p50_ms, 201.0);
    assert!((report.actual.by_target["oa/fallback"] - 0.3).abs() < 1e-9);
    // 5,000 requests at 20/s: 250 s, so the series has 1 s or 10 s points
    // covering them all.
    let counted: u64 = report
        .series
        .points
        .iter()
        .map(|p| p.candidate.requests)
        .sum();
    assert_eq!(counted, 5_000);
    assert!(report.series.bucket_ms <= 10_000);
    let binned: u64 = report.latency_histogram.candidate.iter().sum();
    assert_eq!(binned, 5_000);
    assert!(report.sample.is_none());
}

/// A window larger than `max_records` is sampled in whole blocks, and the
/// report carries 95 % intervals that contain the sample's own estimate.
#[tokio::test]
async fn a_large_window_is_sampled_in_blocks_with_intervals() {
    let store = modelux::store::open("memory").await.unwrap();
    // 24,000 records at 20/s: 20 min, four 5-minute blocks of 6,000… use
    // 1-minute blocks to get 20 of them.
    let records = synthetic(24_000);
    store.append_traffic(&records).await.unwrap();
    let opts = modelux::traffic::LoadOptions {
        max_records: 6_000,
        block_ms: 60_000,
        ..modelux::traffic::LoadOptions::default()
    };
    let window = modelux::traffic::load_window(&*store, 0, u64::MAX, &opts, None)
        .await
        .unwrap();
    let info = window.sample.clone().expect("sampled");
    assert_eq!(info.records_in_window, 24_000);
    assert_eq!(info.blocks_in_window, 20);
    assert_eq!(
        info.blocks_sampled, 5,
        "systematic: a quarter of the blocks"
    );
    assert_eq!(info.records_sampled, 6_000);
    assert_eq!(window.records.len(), 6_000);
    assert_eq!((info.block_ms, info.blocks_cut), (60_000, 0), "kept whole");
    let report = modelux::traffic::dry_run(
        &window.records,
        &synthetic_config(&["primary", "fallback"]),
        &synthetic_config(&["fallback", "primary"]),
        &modelux::traffic::DryRunOptions {
            sample: window.sample,
            ..modelux::traffic::DryRunOptions::default()
        },
    )
    .unwrap();
    let sample = report.sample.as_ref().expect("the report says it sampled");
    assert_eq!(sample.scale, 4.0);
    let ci = &sample.confidence_95;
    for (key, estimate) in [
        ("baseline.success_rate", report.baseline.success_rate),
        ("candidate.success_rate", report.candidate.success_rate),
        ("baseline.p50_ms", report.baseline.p50_ms),
        ("candidate.p50_ms", report.candidate.p50_ms),
        ("diff.p50_ms", report.diff.p50_ms),
    ] {
        let [lo, hi] = ci[key];
        assert!(
            lo <= estimate && estimate <= hi,
            "{key}: {estimate} not in [{lo}, {hi}]"
        );
    }
    assert_eq!(ci["candidate.success_rate"], [1.0, 1.0]);
    assert!(report
        .notes
        .iter()
        .any(|n| n.starts_with("Sampled: 6000 of 24000")));
}

/// What one sampled load of `records` read: the records it returned, how
/// many the store gave it in all, and the sample.
async fn sample_of(
    records: &[TrafficRecord],
    max_records: u64,
    seed: u64,
) -> (Vec<TrafficRecord>, u64, modelux::traffic::SampleInfo) {
    let store = HookedStore::default();
    store.append_traffic(records).await.unwrap();
    let opts = modelux::traffic::LoadOptions {
        max_records,
        seed,
        ..modelux::traffic::LoadOptions::default()
    };
    let window = modelux::traffic::load_window(&store, 0, u64::MAX, &opts, None)
        .await
        .unwrap();
    let read = store.records_read.load(Ordering::SeqCst);
    (window.records, read, window.sample.expect("sampled"))
}

/// Every quarter of `[from, to]` in which no sampled record started.
fn quarters_missed(records: &[TrafficRecord], from: u64, to: u64) -> Vec<u64> {
    let q = (to - from) / 4 + 1;
    (0..4)
        .filter(|k| {
            !records
                .iter()
                .any(|r| r.at_ms >= from + k * q && r.at_ms < from + (k + 1) * q)
        })
        .collect()
}

/// A serving replica must not hold more than `max_records` for a dry-run,
/// however dense the traffic: 5-minute blocks too large for the budget are
/// shortened, and the records read from the store never add up to more
/// than `max_records` (plus the one that places the blocks). The sample
/// still spans the whole window, and a seed gives the same sample again.
#[tokio::test]
async fn a_sample_never_reads_more_than_max_records_and_spans_the_window() {
    // 24,000 records at 20/s: four 5-minute blocks of 6,000, each six times
    // the budget of 1,000; and 6,000 (a single 5-minute block).
    for n in [24_000, 6_000] {
        let records = synthetic(n);
        let (from, to) = (records[0].at_ms, records[records.len() - 1].at_ms);
        for seed in [0, 1, 7, 42, modelux::traffic::LoadOptions::default().seed] {
            let (got, read, info) = sample_of(&records, 1_000, seed).await;
            assert!(
                read <= 1_001,
                "{n} records, seed {seed}: read {read} records for max_records 1,000"
            );
            assert!(
                (800..=1_000).contains(&got.len()),
                "{n} records, seed {seed}: kept {}",
                got.len()
            );
            assert_eq!(info.records_in_window, n);
            assert_eq!(info.records_sampled, got.len() as u64);
            assert!(info.block_ms < 300_000, "{info:?}");
            assert!(info.blocks_sampled >= 4, "{info:?}");
            assert!(got.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            assert_eq!(
                quarters_missed(&got, from, to),
                Vec::<u64>::new(),
                "{n} records, seed {seed}: quarters of the window without a sampled record"
            );
            let (again, _, _) = sample_of(&records, 1_000, seed).await;
            assert!(
                got.iter()
                    .map(|r| &r.request_id)
                    .eq(again.iter().map(|r| &r.request_id)),
                "the same seed keeps the same records"
            );
        }
    }
    // The same through SQLite's paged log.
    let store = modelux::store::open(&sqlite_url("sample-cap"))
        .await
        .unwrap();
    let records = synthetic(24_000);
    store.append_traffic(&records).await.unwrap();
    let opts = modelux::traffic::LoadOptions {
        max_records: 1_000,
        ..modelux::traffic::LoadOptions::default()
    };
    let window = modelux::traffic::load_window(&*store, 0, u64::MAX, &opts, None)
        .await
        .unwrap();
    assert!((800..=1_000).contains(&window.records.len()));
    assert!(quarters_missed(&window.records, records[0].at_ms, records[23_999].at_ms).is_empty());
}

/// The terminal command, as an operator runs it: offline against the
/// gateway's SQLite store while the gateway is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_dry_run_reads_the_store_and_writes_json_and_html() {
    let url = sqlite_url("cli");
    // The primary fails 30 % of requests without being ejected (as in
    // `dry_run_predicts_the_live_run_of_the_candidate`): a run of 503s at the
    // start ejected it for the whole load about one run in three, once a
    // same-target retry no longer restored it, and then both orders served
    // from the fallback alike.
    let config = |m: &MockProvider, order: &[&str]| {
        let mut c = config(m, order);
        c["health"] = json!({"consecutive_failures": 1000, "failure_rate": 1.0});
        c
    };
    let h = common::start_with_store(&url, |m| config(m, &["primary", "fallback"])).await;
    faults(&h.mock);
    let store = modelux::store::open(&url).await.unwrap();
    load(&h, 120).await;
    assert_eq!(recorded(&store, &h).await.len(), 120);
    let dir = std::env::temp_dir().join(format!("modelux-dryrun-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let candidate = dir.join("candidate.json");
    std::fs::write(
        &candidate,
        config(&h.mock, &["fallback", "primary"]).to_string(),
    )
    .unwrap();
    let html = dir.join("report.html");
    let gateway = common::example("gateway");
    let run = |args: Vec<String>| {
        let gateway = gateway.clone();
        async move {
            tokio::process::Command::new(gateway)
                .args(args)
                .env_remove("MODELUX_STORE")
                .output()
                .await
                .unwrap()
        }
    };
    let s = |v: &str| v.to_owned();

    // --json: the report on stdout, nothing else there.
    let out = run(vec![
        s("config"),
        s("dry-run"),
        candidate.display().to_string(),
        s("--store"),
        url.clone(),
        s("--since"),
        s("1h"),
        s("--json"),
        s("--html"),
        html.display().to_string(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON report");
    assert_eq!(report["requests"], 120);
    assert_eq!(report["baseline_version"], 1);
    for key in [
        "window",
        "baseline",
        "candidate",
        "actual",
        "diff",
        "unobserved",
    ] {
        assert!(report.get(key).is_some(), "no {key}");
    }
    assert!(
        report["candidate"]["by_target"]["oa/fallback"]
            .as_f64()
            .unwrap()
            > 0.95
    );
    assert!(report["diff"]["p50_ms"].as_f64().unwrap() < 0.0);
    assert!(report["sample"].is_null(), "120 records are not sampled");
    assert_eq!(report["verdict"]["kind"], "better", "{}", report["verdict"]);
    assert!(!stderr.contains("sk-test"), "no key in the output");

    // The HTML page: self-contained, the three charts, no key.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(
        page.matches("<svg").count(),
        4,
        "latency, success, cost, targets"
    );
    assert!(page.contains("oa/fallback"));
    for banned in ["<script", "http://", "https://", "sk-test"] {
        assert!(!page.contains(banned), "the page contains {banned}");
    }

    // The table and the verdict for people.
    let out = run(vec![
        s("config"),
        s("dry-run"),
        candidate.display().to_string(),
        s("--store"),
        url.clone(),
    ])
    .await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("success rate"), "{text}");
    assert!(text.contains("BETTER: "), "{text}");
    assert!(
        text.contains("baseline: version 1 (the active one)"),
        "{text}"
    );

    // Sampled: at most 50 records → whole blocks, with intervals.
    let out = run(vec![
        s("config"),
        s("dry-run"),
        s("--candidate-version"),
        s("1"),
        s("--store"),
        url.clone(),
        s("--max-records"),
        s("50"),
        s("--json"),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // All 120 requests fall into one 5-minute block or two: whichever
    // blocks are kept are kept whole.
    let sample = &report["sample"];
    assert_eq!(sample["records_in_window"], 120, "{report}");
    assert_eq!(sample["records_sampled"], report["requests"]);

    // Bad input: an invalid candidate names the problem; exit 2.
    let mut bad = config(&h.mock, &["fallback"]);
    bad["routes"]["default"]["attempts"][0]["model"] = json!("nope");
    std::fs::write(&candidate, bad.to_string()).unwrap();
    let out = run(vec![
        s("config"),
        s("dry-run"),
        candidate.display().to_string(),
        s("--store"),
        url.clone(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes.default.attempts[0].model"), "{err}");
    assert!(err.contains("nope"), "{err}");

    // An empty window: a clear message, exit 2.
    let empty = sqlite_url("cli-empty");
    let st = modelux::store::open(&empty).await.unwrap();
    let v = st
        .create_version(modelux::store::NewVersion {
            config: config(&h.mock, &["primary"]),
            author: "test".into(),
            message: String::new(),
            source: modelux::store::VersionSource::Api,
            activate: true,
            based_on: None,
        })
        .await
        .unwrap();
    assert_eq!(v.version, 1);
    std::fs::write(&candidate, config(&h.mock, &["fallback"]).to_string()).unwrap();
    let out = run(vec![
        s("config"),
        s("dry-run"),
        candidate.display().to_string(),
        s("--store"),
        empty,
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no recorded traffic"));

    // A mistyped store path: named, exit 2, and nothing is created there.
    let typo = dir.join("no-such-dir").join("modelux.db");
    let out = run(vec![
        s("config"),
        s("dry-run"),
        candidate.display().to_string(),
        s("--store"),
        format!("sqlite:{}", typo.display()),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no SQLite store at"), "{err}");
    assert!(!typo.parent().unwrap().exists(), "the typo created a store");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store that answers reads but refuses writes (a PostgreSQL standby
/// after a failover, a locked SQLite file) shows in /healthz: `degraded`,
/// `store_writable: false` with the error, until a write succeeds again.
/// Before, reads kept it `ok` while every traffic record was dropped.
#[tokio::test]
async fn a_store_that_refuses_writes_shows_in_healthz() {
    let mock = MockProvider::start().await.unwrap();
    let config = Config::from_value(config(&mock, &["primary"])).unwrap();
    let store = Arc::new(HookedStore::default());
    store.refuse_writes.store(true, Ordering::SeqCst);
    let gateway = Gateway::with_store(store.clone(), "memory", Some((config, "test.json")))
        .await
        .unwrap();
    let h = common::serve(mock, gateway).await;
    let health = || async {
        let (_, b) = h.get("/healthz").await;
        serde_json::from_str::<Value>(&b).unwrap()
    };
    assert_eq!(h.post(&common::chat("default", false)).await.status, 200);
    h.gateway.traffic().unwrap().flush().await;
    let v = health().await;
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(
        (v["store_ok"].as_bool(), v["store_writable"].as_bool()),
        (Some(true), Some(false)),
        "{v}"
    );
    assert!(
        v["last_write_error"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{v}"
    );
    let (_, m) = h.get("/metrics").await;
    assert!(m.contains("modelux_store_writable 0"), "{m}");

    store.refuse_writes.store(false, Ordering::SeqCst);
    assert_eq!(h.post(&common::chat("default", false)).await.status, 200);
    h.gateway.traffic().unwrap().flush().await;
    let v = health().await;
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v["last_write_error"].is_null(), "{v}");
}

/// One admin dry-run at a time per replica: a second one while the first
/// is still loading its window gets 409, and the slot frees when the first
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_admin_dry_run_at_a_time() {
    let mock = MockProvider::start().await.unwrap();
    let config = Config::from_value(config(&mock, &["primary"])).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let waiting = Arc::new(tokio::sync::Notify::new());
    let store: Arc<dyn ConfigStore> = Arc::new(HookedStore {
        read_gate: Some((gate.clone(), waiting.clone())),
        ..HookedStore::default()
    });
    let gateway = Gateway::with_store(store, "memory", Some((config, "test.json")))
        .await
        .unwrap();
    gateway.set_admin_tokens(modelux::gateway::AdminTokens::single(
        "ops-alice",
        common::ADMIN_TOKEN,
    ));
    let h = Arc::new(common::serve(mock, gateway).await);
    let body = json!({"candidate_version": 1, "since_s": 3600});

    let first = {
        let (h, body) = (h.clone(), body.clone());
        tokio::spawn(async move {
            h.admin(Method::POST, "/admin/config/dry-run", Some(body))
                .await
        })
    };
    waiting.notified().await;
    let (s, v) = h
        .admin(Method::POST, "/admin/config/dry-run", Some(body.clone()))
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("already running"), "{v}");

    gate.add_permits(10);
    let (s, v) = first.await.unwrap();
    assert_eq!(s, 400, "the first ran to its end (nothing recorded): {v}");
    let (s, v) = h
        .admin(Method::POST, "/admin/config/dry-run", Some(body))
        .await;
    assert_eq!(s, 400, "the slot is free again: {v}");
    assert!(v.to_string().contains("no recorded traffic"), "{v}");
}

/// An admin dry-run whose caller goes away stops: its slot frees within
/// moments, not when a replay nobody will read would have ended (run to its
/// end, the same replay takes ≈ 15 s in a debug build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_dry_run_stops_when_its_caller_goes_away() {
    const RECORDS: u64 = 100_000;
    let mock = MockProvider::start().await.unwrap();
    let config = Config::from_value(config(&mock, &["primary"])).unwrap();
    let store = modelux::store::open("memory").await.unwrap();
    store.append_traffic(&synthetic(RECORDS)).await.unwrap();
    let gateway = Gateway::with_store(store, "memory", Some((config, "test.json")))
        .await
        .unwrap();
    gateway.set_admin_tokens(modelux::gateway::AdminTokens::single(
        "ops-alice",
        common::ADMIN_TOKEN,
    ));
    let h = common::serve(mock, gateway).await;
    // The synthetic traffic is from 2023.
    let body = json!({"candidate_version": 1, "since_s": 400_000_000u64, "max_records": RECORDS});
    let gave_up = h
        .client
        .post(format!("{}/admin/config/dry-run", h.url))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&body)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(
        gave_up.is_err_and(|e| e.is_timeout()),
        "the replay outlasts the caller"
    );
    // A request for a version that does not exist gets its 404 once the slot
    // is free, 409 while the abandoned replay still holds it.
    let missing = json!({"candidate_version": 999, "since_s": 60});
    let left = tokio::time::Instant::now();
    loop {
        let (s, v) = h
            .admin(Method::POST, "/admin/config/dry-run", Some(missing.clone()))
            .await;
        if s == 404 {
            break;
        }
        assert_eq!(s, 409, "{v}");
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "the abandoned dry-run still holds the slot after {:?}",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stream still open at the drain deadline is cut, and its record
/// (`client_disconnected`) is written before `serve` returns, also over
/// HTTP/2, where each request runs in a task of its own that ends only after
/// its connection was dropped. Before, that record reached the queue after
/// the last flush and was lost, uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_at_the_drain_deadline_is_recorded() {
    for http2 in [true, false] {
        let mock = MockProvider::start().await.unwrap();
        mock.set(
            "m-primary",
            Behaviour {
                words: Some(100),
                chunk_interval_ms: 100,
                ..Default::default()
            },
        );
        let config = Config::from_value(config(&mock, &["primary"])).unwrap();
        let store = modelux::store::open("memory").await.unwrap();
        let gateway = Gateway::with_store(store.clone(), "memory", Some((config, "test.json")))
            .await
            .unwrap();
        let (url, stop, served) = serve_until_stopped(&gateway, Duration::from_millis(200)).await;
        let client = if http2 {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        } else {
            reqwest::Client::new()
        };
        let resp = client
            .post(&url)
            .json(&common::chat("default", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        body.next().await.unwrap().unwrap();
        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
        drop(body);
        let records = store.traffic_since(0, u64::MAX, 10).await.unwrap();
        assert_eq!(records.len(), 1, "http2: {http2}");
        assert_eq!(gateway.traffic().unwrap().written(), 1, "http2: {http2}");
    }
}
