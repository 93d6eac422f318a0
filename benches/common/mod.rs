//! Shared helpers of the criterion benches: short bench settings and a
//! summary read back from criterion's own estimates.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use criterion::Criterion;

/// Short groups: the whole `cargo bench` must finish in a few minutes on two
/// cores. Every figure is a mean over 20 samples of ~2 s of work.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .without_plots()
        .configure_from_args()
}

/// Where criterion writes its results (`CRITERION_HOME`, else the target
/// directory's `criterion/`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("criterion"));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/criterion"));
    // The bench binary lives in <target>/release/deps/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe.ancestors().nth(3) {
            candidates.push(target.join("criterion"));
        }
    }
    candidates.into_iter().find(|p| p.is_dir())
}

/// The mean time (ns) criterion measured for `group/name` in this run, read
/// from `new/estimates.json`. `None` when the bench did not run (filtered).
pub fn mean_ns(group: &str, name: &str) -> Option<f64> {
    let dir = criterion_dir()?;
    let path = dir
        .join(sanitize(group))
        .join(sanitize(name))
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Criterion's directory name for a group or function id.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '?' | '"' | '/' | '\\' | '*' | '<' | '>' | ':' | '|' | '^' => '_',
            c => c,
        })
        .collect()
}

/// Formats nanoseconds for the summary.
pub fn fmt_ns(ns: f64) -> String {
    if ns.abs() >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns.abs() >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}
