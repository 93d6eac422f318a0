//! Dry-run speed: how long a counterfactual replay of N recorded requests
//! takes, end to end, the way `gateway config dry-run` does it.
//!
//! ```text
//! cargo bench --bench dry_run                       # 1,000,000 records
//! MODELUX_DRY_RUN_N=200000 cargo bench --bench dry_run
//! ```
//!
//! Not a criterion bench: one run of a million records is the measurement.
//! Three phases are timed: writing the records into a fresh SQLite traffic
//! log (the recorder's batched `append_traffic`), reading the window back
//! (`traffic::load_window`), and the replay of both configs
//! (`traffic::dry_run`). The goal in issue 5/8 is load + replay of 1M records
//! under 60 s on the 2-core machine; the output says whether it was met and
//! by what ratio. As a same-run baseline it also times a plain pass over
//! the records (sorting them by time and summing latencies), the floor any
//! replay has to pay.

use std::time::Instant;

use modelux::config::Config;
use modelux::traffic::{dry_run, DryRunOptions};
use serde_json::{json, Value};

#[path = "../tests/common/synthetic.rs"]
mod synthetic;
use synthetic::synthetic;

fn config(order: &[&str]) -> Config {
    let attempts: Vec<Value> = order.iter().map(|m| json!({"model": m})).collect();
    Config::from_value(json!({
        "providers": {"oa": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"primary": {"provider": "oa", "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}},
                   "fallback": {"provider": "oa", "price": {"input_per_mtok": 0.5, "output_per_mtok": 2.0}}},
        "routes": {"default": {"attempts": attempts}}
    }))
    .expect("the bench config is valid")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and must not spend a minute here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: u64 = std::env::var("MODELUX_DRY_RUN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("modelux-dry-run-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite:{}", dir.join("traffic.db").display());
    let t0 = 1_700_000_000_000u64;
    let records = synthetic(n, t0);

    let t = Instant::now();
    let mut sum = 0u64;
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| records[i].at_ms);
    for &i in &order {
        sum = sum.wrapping_add(records[i].latency_ms);
    }
    let floor = t.elapsed();
    std::hint::black_box(sum);

    let store = rt.block_on(modelux::store::open(&url)).expect("store");
    let t = Instant::now();
    rt.block_on(async {
        for chunk in records.chunks(modelux::traffic::MAX_BATCH) {
            store.append_traffic(chunk).await.expect("append");
        }
    });
    let write = t.elapsed();
    drop(records);

    let t = Instant::now();
    let window = rt
        .block_on(modelux::traffic::load_window(
            &*store,
            t0,
            u64::MAX,
            &modelux::traffic::LoadOptions::default(),
            None,
        ))
        .expect("load");
    let load = t.elapsed();
    assert_eq!(window.records.len() as u64, n, "every record is read back");

    let t = Instant::now();
    let report = dry_run(
        &window.records,
        &config(&["primary", "fallback"]),
        &config(&["fallback", "primary"]),
        &DryRunOptions::default(),
    )
    .expect("dry-run");
    let replay = t.elapsed();
    assert_eq!(report.requests, n);
    assert_eq!(report.candidate.success_rate, 1.0);

    let total = load + replay;
    println!("dry-run of {n} recorded requests (both configs):");
    println!(
        "  baseline: sort + pass over the records   {:>9.3} s",
        floor.as_secs_f64()
    );
    println!(
        "  write into SQLite (not part of a dry-run) {:>9.3} s",
        write.as_secs_f64()
    );
    println!(
        "  load the window from SQLite               {:>9.3} s",
        load.as_secs_f64()
    );
    println!(
        "  replay                                    {:>9.3} s  ({:.0} records/s, {:.0}x the baseline pass)",
        replay.as_secs_f64(),
        n as f64 / replay.as_secs_f64(),
        replay.as_secs_f64() / floor.as_secs_f64().max(1e-9)
    );
    let budget = 60.0 * n as f64 / 1_000_000.0;
    println!(
        "  load + replay                             {:>9.3} s  ({:.2} of the {budget:.0} s budget: {})",
        total.as_secs_f64(),
        total.as_secs_f64() / budget,
        if total.as_secs_f64() <= budget { "met" } else { "MISSED" }
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
