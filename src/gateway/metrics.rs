//! The Prometheus exporter and the metric descriptions.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for LLM latencies, in seconds: tens of milliseconds for
/// a cached answer up to minutes for a long generation.
///
/// ```
/// use modelux::gateway::{prometheus, LATENCY_BUCKETS};
/// assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
/// // Every `*_seconds` histogram of the exporter uses them.
/// let handle = prometheus().unwrap();
/// metrics::histogram!("modelux_request_duration_seconds").record(0.3);
/// let text = handle.render();
/// assert!(text.contains(r#"modelux_request_duration_seconds_bucket{le="0.25"} 0"#));
/// assert!(text.contains(r#"modelux_request_duration_seconds_bucket{le="0.5"} 1"#));
/// ```
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its
/// handle; `None` when another recorder was installed first. The layers then
/// keep their metric handles for it ([`crate::cache_metric_handles`]).
///
/// ```
/// let handle = modelux::gateway::prometheus().unwrap();
/// metrics::counter!("modelux_requests_total", "route" => "chat").increment(1);
/// let text = handle.render();
/// assert!(text.contains(r#"modelux_requests_total{route="chat"} 1"#));
/// // Metrics are described, and later calls share the one recorder.
/// assert!(text.contains("# HELP modelux_requests_total"));
/// assert!(modelux::gateway::prometheus().is_some());
/// ```
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            crate::cache_metric_handles();
            let upkeep = handle.clone();
            // Histograms are drained by upkeep; without it they grow.
            std::thread::Builder::new()
                .name("modelux-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "modelux_requests_total",
        "Requests by route and final outcome."
    );
    describe_histogram!(
        "modelux_request_duration_seconds",
        Unit::Seconds,
        "End-to-end request duration (streams: until the stream ended)."
    );
    describe_histogram!(
        "modelux_time_to_first_token_seconds",
        Unit::Seconds,
        "Time from request to the first content token of a stream."
    );
    describe_counter!(
        "modelux_attempts_total",
        "Upstream attempts by provider, model and outcome class."
    );
    describe_histogram!(
        "modelux_attempt_duration_seconds",
        Unit::Seconds,
        "Upstream attempt duration until its outcome was known."
    );
    describe_counter!(
        "modelux_fallbacks_total",
        "Fallbacks to the next candidate."
    );
    describe_counter!("modelux_retries_total", "Same-target retries.");
    describe_counter!(
        "modelux_retry_budget_exhausted_total",
        "Retries refused by the retry budget."
    );
    describe_counter!(
        "modelux_budget_exhausted_total",
        "Requests whose total latency budget ran out."
    );
    describe_counter!(
        "modelux_continuations_total",
        "Mid-stream recoveries by outcome."
    );
    describe_gauge!(
        "modelux_health_score",
        "1 - failure rate over the health window, per target."
    );
    describe_gauge!("modelux_health_ejected", "1 while a target is ejected.");
    describe_counter!("modelux_health_ejections_total", "Target ejections.");
    describe_counter!(
        "modelux_health_probes_total",
        "Probe requests admitted after a cool-down."
    );
    describe_gauge!(
        "modelux_latency_p50_seconds",
        Unit::Seconds,
        "Live p50 latency per target and measure (first_token: streams; whole: other answers)."
    );
    describe_gauge!(
        "modelux_latency_p95_seconds",
        Unit::Seconds,
        "Live p95 latency per target and measure (first_token: streams; whole: other answers)."
    );
    describe_gauge!("modelux_active_streams", "Streams being served now.");
    describe_counter!(
        "modelux_stream_malformed_events_total",
        "Provider stream events skipped as unparseable."
    );
    describe_counter!(
        "modelux_tokens_total",
        "Tokens by provider, model and kind (prompt, completion; cached_prompt: the prompt tokens read from a prompt cache, also counted in prompt)."
    );
    describe_counter!(
        "modelux_cost_usd_micros_total",
        "Estimated cost in millionths of a USD, when prices are configured."
    );
    describe_gauge!(
        "modelux_in_flight_requests",
        "Chat requests being served now, a stream until its provider stream ends or is cut (at most server.max_in_flight)."
    );
    describe_counter!(
        "modelux_requests_shed_total",
        "Chat requests answered 503 at once because server.max_in_flight requests or server.max_body_bytes_in_flight bytes of request bodies were in flight."
    );
    describe_gauge!(
        "modelux_body_bytes_in_flight",
        "Bytes of chat request bodies held now, from their arrival until their answer ends (at most server.max_body_bytes_in_flight)."
    );
    describe_counter!(
        "modelux_requests_refused_total",
        "Chat requests answered with an error before they were routed (not in modelux_requests_total), by reason."
    );
    describe_gauge!(
        "modelux_client_connections",
        "Client connections open now (at most server.max_connections)."
    );
    describe_gauge!("modelux_config_version", "The config version being served.");
    describe_gauge!(
        "modelux_store_writable",
        "0 while the traffic log's writes to the store fail (reads may still work), 1 once one succeeds."
    );
    describe_gauge!(
        "modelux_config_apply_failed",
        "1 while the store's active config version cannot be applied on this replica (it serves an older one), else 0."
    );
    describe_gauge!(
        "modelux_store_up",
        "1 while the config store answers, 0 while this gateway serves its last active version without it."
    );
    describe_counter!(
        "modelux_traffic_records_written_total",
        "Traffic-log records written to the store (for dry-runs)."
    );
    describe_counter!(
        "modelux_traffic_records_dropped_total",
        "Traffic-log records dropped: the queue was full or a write failed."
    );
}
