//! Synthetic recorded traffic for dry-run tests and the dry-run bench.

use modelux::traffic::{AttemptRecord, TrafficRecord};

/// Synthetic traffic: a primary failing 30% of the time with 503 at 200 ms,
/// a fallback at 50 ms, 20 requests a second, a quarter of them streamed.
pub fn synthetic(n: u64, t0: u64) -> Vec<TrafficRecord> {
    (0..n)
        .map(|i| {
            let fail = i % 10 < 3;
            let mut attempts = vec![if fail {
                AttemptRecord::failed("oa", "primary", 0, 200, "5xx", Some(503))
            } else {
                AttemptRecord::ok("oa", "primary", 0, 200)
            }];
            if fail {
                attempts.push(AttemptRecord::ok("oa", "fallback", 200, 50));
            }
            TrafficRecord {
                at_ms: t0 + i * 50,
                request_id: format!("{i:016x}"),
                config_version: 1,
                route: "default".into(),
                client: None,
                stream: i % 4 == 0,
                prompt_tokens: 100,
                completion_tokens: 50,
                tokens_estimated: false,
                max_tokens: None,
                attempts,
                outcome: "ok".into(),
                status: 200,
                latency_ms: if fail { 251 } else { 201 },
                ttft_ms: None,
                served_by: Some(if fail { "oa/fallback" } else { "oa/primary" }.into()),
                cost_usd: None,
            }
        })
        .collect()
}
