//! A dry-run's simulated layers do not write to the gateway's log. Alone in
//! its test binary: it installs the process's global subscriber, as the
//! gateway does, since the replay runs each side on a thread of its own.

mod layers;

use layers::LogBuf;

/// A dry-run replays traffic through the real layers, whose simulated
/// ejections are not the gateway's: logged, they read exactly like real
/// outages of production targets (hundreds a second during a replay).
#[test]
fn a_dry_run_s_simulated_ejections_are_not_logged() {
    use modelux::config::Config;
    use modelux::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
    let config = |order: [&str; 2]| {
        Config::from_value(serde_json::json!({
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": {"a": {"provider": "p"}, "b": {"provider": "p"}},
            "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
        }))
        .unwrap()
    };
    // `a` fails every request: the replay ejects it.
    let records: Vec<TrafficRecord> = (0..50)
        .map(|i| TrafficRecord {
            at_ms: 1_000_000 + i * 1000,
            request_id: format!("r{i}"),
            config_version: 1,
            route: "default".into(),
            client: None,
            stream: false,
            prompt_tokens: 10,
            completion_tokens: 10,
            tokens_estimated: false,
            max_tokens: None,
            attempts: vec![
                AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
                AttemptRecord::ok("p", "b", 100, 20),
            ],
            outcome: "ok".into(),
            status: 200,
            latency_ms: 121,
            ttft_ms: None,
            served_by: Some("p/b".into()),
            cost_usd: None,
        })
        .collect();
    let (buf, subscriber) = LogBuf::subscriber("info");
    // Global: the replay runs each side on a thread of its own.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    tracing::info!("before the dry-run");
    let report = dry_run(
        &records,
        &config(["a", "b"]),
        &config(["b", "a"]),
        &DryRunOptions::default(),
    )
    .unwrap();
    assert_eq!(report.requests, 50);
    tracing::info!("after the dry-run");
    let logs = buf.text();
    assert!(
        logs.contains("before the dry-run") && logs.contains("after the dry-run"),
        "{logs}"
    );
    assert!(!logs.contains("target ejected"), "{logs}");
    // And the gateway's own filter is back: the replay's quiet subscribers
    // had loosened the global level filter to TRACE for the process's life.
    assert_eq!(
        tracing::level_filters::LevelFilter::current(),
        tracing::level_filters::LevelFilter::INFO
    );
}
