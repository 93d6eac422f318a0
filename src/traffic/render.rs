//! A dry-run report for people: a one-line verdict, a terminal table and a
//! self-contained HTML page (inline SVG, no script, no network).

use std::fmt::Write as _;

use super::replay::{Outcomes, Report};

/// What the report says, in one word.
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// assert_eq!(run(["a", "b"]).verdict().kind, VerdictKind::NoChange);
/// // `c` was never observed: the prediction cannot be trusted.
/// assert_eq!(run(["c", "b"]).verdict().kind, VerdictKind::Uncertain);
/// assert_eq!(serde_json::to_value(VerdictKind::NoChange).unwrap(), "no_change");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// The candidate does better on success, latency or cost, and no worse
    /// on any of them.
    Better,
    /// The candidate loses success (whatever it gains elsewhere: a request
    /// that fails is cheap and fast, which is no gain), or loses latency
    /// without gaining anything.
    Worse,
    /// Differences are within the thresholds.
    NoChange,
    /// Some of the traffic depended on a target never observed, so the
    /// prediction cannot be trusted for it.
    Uncertain,
    /// Better on some figures and worse on others (say, cheaper but slower).
    Mixed,
}

/// The verdict: a kind and the sentence that explains it.
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let v = run(["c", "b"]).verdict();
/// assert!(v.line.starts_with("UNCERTAIN: "), "{}", v.line);
/// assert!(v.line.contains("p/c"));
/// assert_eq!(serde_json::to_value(&v).unwrap()["kind"], "uncertain");
/// ```
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// The kind.
    pub kind: VerdictKind,
    /// One line for people.
    pub line: String,
}

/// Success rate moves smaller than this (0.5 points) are noise.
const SUCCESS_EPS: f64 = 0.005;
/// Relative latency and cost moves smaller than this (5 %) are noise.
const REL_EPS: f64 = 0.05;

fn rel(a: f64, b: f64) -> f64 {
    if b.abs() < f64::EPSILON {
        if a.abs() < f64::EPSILON {
            0.0
        } else {
            1.0
        }
    } else {
        a / b - 1.0
    }
}

impl Report {
    /// The one-line verdict the terminal and the HTML page print.
    ///
    /// ```
    /// # use modelux::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord, VerdictKind};
    /// # use modelux::config::Config;
    /// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
    /// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    /// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}},
    /// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
    /// # })).unwrap();
    /// // "a" answers in 100 ms but fails 3 times in 10, then "b" answers in 20 ms.
    /// let records: Vec<TrafficRecord> = (0..50).map(|i| {
    ///     let attempts = if i % 10 < 3 {
    ///         vec![AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)), AttemptRecord::ok("p", "b", 100, 20)]
    ///     } else {
    ///         vec![AttemptRecord::ok("p", "a", 0, 100)]
    ///     };
    ///     TrafficRecord {
    ///         at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
    ///         route: "default".into(), client: None, stream: false, prompt_tokens: 10,
    ///         completion_tokens: 10, tokens_estimated: false, max_tokens: None, attempts,
    ///         outcome: "ok".into(), status: 200, latency_ms: 120, ttft_ms: None,
    ///         served_by: Some("p/b".into()), cost_usd: None,
    ///     }
    /// }).collect();
    /// // Putting "b" first is faster.
    /// let report = dry_run(&records, &config(["a", "b"]), &config(["b", "a"]), &DryRunOptions::default()).unwrap();
    /// let v = report.verdict();
    /// assert_eq!(v.kind, VerdictKind::Better);
    /// assert!(v.line.contains("p50"), "{}", v.line);
    /// ```
    pub fn verdict(&self) -> Verdict {
        let (b, c) = (&self.baseline, &self.candidate);
        let ds = c.success_rate - b.success_rate;
        let d50 = rel(c.p50_ms, b.p50_ms);
        let d95 = rel(c.p95_ms, b.p95_ms);
        let dcost = rel(c.cost_usd, b.cost_usd);
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let pts = |v: f64| format!("{:+.1} pts", v * 100.0);
        let pct = |v: f64| format!("{:+.0} %", v * 100.0);
        if ds > SUCCESS_EPS {
            good.push(format!("success {}", pts(ds)));
        } else if ds < -SUCCESS_EPS {
            bad.push(format!("success {}", pts(ds)));
        }
        if d50 < -REL_EPS {
            good.push(format!("p50 {}", pct(d50)));
        } else if d50 > REL_EPS {
            bad.push(format!("p50 {}", pct(d50)));
        }
        if d95 > REL_EPS * 2.0 {
            bad.push(format!("p95 {}", pct(d95)));
        }
        if dcost < -REL_EPS {
            good.push(format!("cost {}", pct(dcost)));
        } else if dcost > REL_EPS {
            bad.push(format!("cost {}", pct(dcost)));
        }
        let unobserved = self.unobserved.share_of_requests;
        let longer = self.unobserved.longer_timeout_share;
        let recovery = self.unobserved.changed_recovery_share;
        let limited = self.unobserved.stream_limit_share;
        let (kind, mut line) = if unobserved > 0.0
            || longer > 0.0
            || recovery > 0.0
            || limited > 0.0
        {
            let names: Vec<&str> = self
                .unobserved
                .targets
                .iter()
                .map(|t| t.target.as_str())
                .collect();
            let mut parts = Vec::new();
            if unobserved > 0.0 {
                parts.push(format!(
                    "{:.1} % of requests reach targets never observed in the window ({})",
                    unobserved * 100.0,
                    names.join(", ")
                ));
            }
            if longer > 0.0 {
                parts.push(format!(
                    "{:.1} % had an attempt time out on a target the candidate gives more time: whether it would have answered then was never observed",
                    longer * 100.0
                ));
            }
            if recovery > 0.0 {
                parts.push(format!(
                    "{:.1} % were streams continued after a cut, and the candidate recovers cut streams differently: replayed, they never break",
                    recovery * 100.0
                ));
            }
            if limited > 0.0 {
                parts.push(format!(
                    "{:.1} % were streams that ran longer than the candidate's stream_max_ms: it would end them there",
                    limited * 100.0
                ));
            }
            (
                VerdictKind::Uncertain,
                format!("UNCERTAIN: {}", parts.join("; ")),
            )
        } else if ds < -SUCCESS_EPS {
            // Failed requests are cheap and fast: a candidate that fails more
            // often "gains" cost and latency, and was called MIXED even when
            // it failed every request.
            let mut line = format!("WORSE: {}", bad.join(", "));
            if !good.is_empty() {
                let _ = write!(line, " (though {})", good.join(", "));
            }
            (VerdictKind::Worse, line)
        } else {
            match (good.is_empty(), bad.is_empty()) {
                (true, true) => (
                    VerdictKind::NoChange,
                    "NO MEANINGFUL CHANGE: success within 0.5 pts, latency and cost within 5 %"
                        .to_owned(),
                ),
                (false, true) => (VerdictKind::Better, format!("BETTER: {}", good.join(", "))),
                (true, false) => (VerdictKind::Worse, format!("WORSE: {}", bad.join(", "))),
                (false, false) => (
                    VerdictKind::Mixed,
                    format!("MIXED: {}; but {}", good.join(", "), bad.join(", ")),
                ),
            }
        };
        if !self.rate_flags.is_empty() {
            let _ = write!(
                line,
                "; {} target(s) would carry more requests/s than ever observed",
                self.rate_flags.len()
            );
        }
        if let Some(ci) = self
            .sample
            .as_ref()
            .and_then(|s| s.confidence_95.get("diff.success_rate"))
        {
            if ci[0] < 0.0 && ci[1] > 0.0 && ds.abs() > SUCCESS_EPS {
                line.push_str("; the success difference is within the sampling interval");
            }
        }
        Verdict { kind, line }
    }

    /// The report as a short terminal table followed by the verdict.
    ///
    /// ```
    /// # use modelux::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
    /// # use modelux::config::Config;
    /// # let config = Config::from_value(serde_json::json!({
    /// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    /// #     "models": {"a": {"provider": "p"}},
    /// #     "routes": {"default": {"attempts": [{"model": "a"}]}}
    /// # })).unwrap();
    /// # let records: Vec<TrafficRecord> = (0..10).map(|i| TrafficRecord {
    /// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
    /// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
    /// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
    /// #     attempts: vec![AttemptRecord::ok("p", "a", 0, 20)],
    /// #     outcome: "ok".into(), status: 200, latency_ms: 21, ttft_ms: None,
    /// #     served_by: Some("p/a".into()), cost_usd: None,
    /// # }).collect();
    /// let report = dry_run(&records, &config, &config, &DryRunOptions::default()).unwrap();
    /// let text = report.to_text();
    /// assert!(text.contains("success rate"));
    /// assert!(text.contains("NO MEANINGFUL CHANGE"));
    /// ```
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Dry-run of {} recorded requests, {} to {} ({} replayed per second)",
            self.requests,
            rfc3339(self.window.from),
            rfc3339(self.window.to),
            self.requests_per_s.round()
        );
        if let Some(s) = &self.sample {
            let _ = writeln!(
                out,
                "Sampled {} of {} requests ({} of {} blocks); intervals are 95 %.",
                s.info.records_sampled,
                s.info.records_in_window,
                s.info.blocks_sampled,
                s.info.blocks_in_window
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<22} {:>12} {:>12} {:>12} {:>12}",
            "", "actual", "baseline", "candidate", "diff"
        );
        let (a, b, c) = (&self.actual, &self.baseline, &self.candidate);
        let ci = |key: &str| {
            self.sample
                .as_ref()
                .and_then(|s| s.confidence_95.get(key))
                .copied()
        };
        let line =
            |name: &str, f: &dyn Fn(&Outcomes) -> f64, fmt: &dyn Fn(f64) -> String, key: &str| {
                let mut line = format!(
                    "{:<22} {:>12} {:>12} {:>12} {:>12}",
                    name,
                    fmt(f(a)),
                    fmt(f(b)),
                    fmt(f(c)),
                    fmt(f(c) - f(b)),
                );
                if let Some([lo, hi]) = ci(key) {
                    let _ = write!(line, "  [{} .. {}]", fmt(lo), fmt(hi));
                }
                line.push('\n');
                line
            };
        let row = |out: &mut String,
                   name: &str,
                   f: &dyn Fn(&Outcomes) -> f64,
                   fmt: &dyn Fn(f64) -> String,
                   key: &str| out.push_str(&line(name, f, fmt, key));
        let pct = |v: f64| format!("{:.2} %", v * 100.0);
        let ms = |v: f64| format!("{v:.0} ms");
        let usd = |v: f64| format!("${v:.4}");
        let num = |v: f64| format!("{v:.2}");
        row(
            &mut out,
            "success rate",
            &|o| o.success_rate,
            &pct,
            "diff.success_rate",
        );
        row(&mut out, "p50 latency", &|o| o.p50_ms, &ms, "diff.p50_ms");
        row(&mut out, "p95 latency", &|o| o.p95_ms, &ms, "");
        row(&mut out, "p99 latency", &|o| o.p99_ms, &ms, "");
        if a.ttft_p50_ms.is_some() || b.ttft_p50_ms.is_some() {
            // A side without a successful stream has no ttft: "–", not 0 ms.
            let show = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), ms);
            let diff = match (b.ttft_p50_ms, c.ttft_p50_ms) {
                (Some(b), Some(c)) => ms(c - b),
                _ => "–".to_owned(),
            };
            let ttft = format!(
                "{:<22} {:>12} {:>12} {:>12} {:>12}\n",
                "ttft p50 (streams)",
                show(a.ttft_p50_ms),
                show(b.ttft_p50_ms),
                show(c.ttft_p50_ms),
                diff,
            );
            out.push_str(&ttft);
        }
        row(&mut out, "cost", &|o| o.cost_usd, &usd, "");
        row(
            &mut out,
            "attempts/request",
            &|o| o.attempts_per_request,
            &num,
            "",
        );
        row(&mut out, "fallback rate", &|o| o.fallback_rate, &pct, "");
        let _ = writeln!(out);
        let mut targets: Vec<&String> = a
            .by_target
            .keys()
            .chain(b.by_target.keys())
            .chain(c.by_target.keys())
            .collect();
        targets.sort();
        targets.dedup();
        let _ = writeln!(out, "served by (share of answered requests)");
        let width = targets.iter().map(|t| t.len()).max().unwrap_or(0).max(20);
        for t in targets {
            let s = |o: &Outcomes| o.by_target.get(t).copied().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "  {:<width$} {:>12} {:>12} {:>12} {:>12}",
                t,
                pct(s(a)),
                pct(s(b)),
                pct(s(c)),
                pct(s(c) - s(b))
            );
        }
        for u in &self.unobserved.targets {
            let _ = writeln!(
                out,
                "  never observed: {} (routed for {:.1} %, attempted for {:.1} % of requests)",
                u.target,
                u.routed_share * 100.0,
                u.attempted_share * 100.0
            );
        }
        for f in &self.rate_flags {
            let _ = writeln!(
                out,
                "  rate: {} would see {}/s at peak; the most ever observed was {}/s",
                f.target, f.simulated_peak_per_s, f.observed_peak_per_s
            );
        }
        let _ = writeln!(
            out,
            "calibration: the simulated baseline is {:+.1} pts / {:+.0} % p50 off what actually happened",
            self.calibration.success_rate_error * 100.0,
            self.calibration.p50_relative_error * 100.0
        );
        // A window that spans several versions explains a calibration
        // error that would otherwise read as the simulator's.
        if self.config_versions.len() > 1 {
            let _ = writeln!(
                out,
                "  (the window spans config versions {:?}: `actual` mixes them, the baseline replays all of it)",
                self.config_versions
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", self.verdict().line);
        out
    }

    /// One self-contained HTML page: the verdict, the table, the latency
    /// distribution of baseline vs candidate, success rate and cost per hour
    /// over the window, and the per-target share, as inline SVG.
    ///
    /// ```
    /// # use modelux::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
    /// # use modelux::config::Config;
    /// # let config = Config::from_value(serde_json::json!({
    /// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    /// #     "models": {"a": {"provider": "p"}},
    /// #     "routes": {"default": {"attempts": [{"model": "a"}]}}
    /// # })).unwrap();
    /// # let records: Vec<TrafficRecord> = (0..10).map(|i| TrafficRecord {
    /// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
    /// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
    /// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
    /// #     attempts: vec![AttemptRecord::ok("p", "a", 0, 20)],
    /// #     outcome: "ok".into(), status: 200, latency_ms: 21, ttft_ms: None,
    /// #     served_by: Some("p/a".into()), cost_usd: None,
    /// # }).collect();
    /// let report = dry_run(&records, &config, &config, &DryRunOptions::default()).unwrap();
    /// let html = report.to_html();
    /// assert!(html.starts_with("<!DOCTYPE html>"));
    /// assert!(html.contains("<svg"));
    /// assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
    /// ```
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(32 * 1024);
        let v = self.verdict();
        let colour = match v.kind {
            VerdictKind::Better => "#1a7f37",
            VerdictKind::Worse => "#cf222e",
            VerdictKind::Uncertain | VerdictKind::Mixed => "#9a6700",
            VerdictKind::NoChange => "#57606a",
        };
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Modelux dry-run</title><style>\
             body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#1f2328}}\
             table{{border-collapse:collapse;margin:1em 0}}td,th{{padding:.25em .8em;text-align:right;border-bottom:1px solid #d0d7de}}\
             td:first-child,th:first-child{{text-align:left}}.verdict{{font-weight:600;padding:.6em 1em;border-left:6px solid {colour};background:#f6f8fa}}\
             .legend span{{display:inline-block;margin-right:1.2em}}.sw{{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-1px}}\
             svg text{{font:11px system-ui,sans-serif;fill:#57606a}}small{{color:#57606a}}</style></head><body>\n"
        );
        let _ = writeln!(
            h,
            "<h1>Dry-run report</h1><p>{} recorded requests from {} to {}; seed {}; replayed in {} ms.</p>",
            self.requests,
            rfc3339(self.window.from),
            rfc3339(self.window.to),
            self.seed,
            self.elapsed_ms
        );
        if let Some(s) = &self.sample {
            let _ = writeln!(
            h,
            "<p>Sampled {} of {} requests ({} of {} blocks of {}); intervals are 95 % (block bootstrap).</p>",
                s.info.records_sampled,
                s.info.records_in_window,
                s.info.blocks_sampled,
                s.info.blocks_in_window,
                super::window::block_length(s.info.block_ms)
            );
        }
        let _ = writeln!(h, "<p class=\"verdict\">{}</p>", esc(&v.line));
        h.push_str(LEGEND);
        // The table.
        h.push_str("<table><tr><th></th><th>actual</th><th>baseline</th><th>candidate</th><th>candidate − baseline</th></tr>\n");
        let (a, b, c) = (&self.actual, &self.baseline, &self.candidate);
        let mut row = |name: &str, f: &dyn Fn(&Outcomes) -> f64, fmt: &dyn Fn(f64) -> String| {
            let _ = writeln!(
                h,
                "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                fmt(f(a)),
                fmt(f(b)),
                fmt(f(c)),
                fmt(f(c) - f(b))
            );
        };
        let pct = |v: f64| format!("{:.2} %", v * 100.0);
        let ms = |v: f64| format!("{v:.0} ms");
        row("success rate", &|o| o.success_rate, &pct);
        row("p50 latency", &|o| o.p50_ms, &ms);
        row("p95 latency", &|o| o.p95_ms, &ms);
        row("p99 latency", &|o| o.p99_ms, &ms);
        row("ttft p50 (streams)", &|o| o.ttft_p50_ms.unwrap_or(0.0), &ms);
        row("cost", &|o| o.cost_usd, &|v| format!("${v:.4}"));
        row("attempts/request", &|o| o.attempts_per_request, &|v| {
            format!("{v:.2}")
        });
        row("fallback rate", &|o| o.fallback_rate, &pct);
        h.push_str("</table>\n");

        h.push_str("<h2>Latency distribution</h2>\n");
        h.push_str(&self.latency_svg());
        h.push_str("<h2>Success rate over the window</h2>\n");
        h.push_str(&self.series_svg(|f| f.success_rate * 100.0, "%"));
        h.push_str("<h2>Cost per hour over the window</h2>\n");
        h.push_str(&self.series_svg(|f| f.cost_usd_per_hour, "$/h"));
        h.push_str("<h2>Share of answered requests per target</h2>\n");
        h.push_str(&self.targets_svg());

        if !self.unobserved.targets.is_empty() || !self.rate_flags.is_empty() {
            h.push_str("<h2>Warnings</h2><ul>\n");
            for u in &self.unobserved.targets {
                let _ = writeln!(
            h,
            "<li>{} was never observed in the window: routed for {:.1} % and attempted for {:.1} % of requests (counted as unknown, not as success).</li>",
                    esc(&u.target),
                    u.routed_share * 100.0,
                    u.attempted_share * 100.0
                );
            }
            for f in &self.rate_flags {
                let _ = writeln!(
                    h,
                    "<li>{} would see {} requests/s at peak; the most observed was {}/s.</li>",
                    esc(&f.target),
                    f.simulated_peak_per_s,
                    f.observed_peak_per_s
                );
            }
            h.push_str("</ul>\n");
        }
        let _ = writeln!(
            h,
            "<h2>How far to trust it</h2><p>Calibration: the simulated baseline is {:+.1} pts success and {:+.0} % p50 away from what actually happened.</p><ul>",
            self.calibration.success_rate_error * 100.0,
            self.calibration.p50_relative_error * 100.0
        );
        for (side, cov) in &self.coverage {
            let _ = writeln!(
            h,
            "<li>{side}: {} simulated attempts, {:.1} % from the request's own record, {:.1} % from nearby records, {:.1} % with nothing to go on.</li>",
                cov.attempts,
                cov.own_record * 100.0,
                cov.nearby * 100.0,
                cov.none * 100.0
            );
        }
        for n in &self.notes {
            let _ = writeln!(h, "<li><small>{}</small></li>", esc(n));
        }
        h.push_str("</ul></body></html>\n");
        h
    }

    fn latency_svg(&self) -> String {
        let hist = &self.latency_histogram;
        let (w, hgt, left, bottom) = (900.0, 260.0, 50.0, 30.0);
        let bins = hist.baseline.len().max(1);
        let total = |v: &[u64]| v.iter().sum::<u64>().max(1) as f64;
        let (tb, tc) = (total(&hist.baseline), total(&hist.candidate));
        let max = hist
            .baseline
            .iter()
            .map(|v| *v as f64 / tb)
            .chain(hist.candidate.iter().map(|v| *v as f64 / tc))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let bw = (w - left) / bins as f64;
        let mut s = svg_open(w, hgt);
        for (i, (vb, vc)) in hist.baseline.iter().zip(&hist.candidate).enumerate() {
            let x = left + i as f64 * bw;
            for (k, (v, t, col)) in [(vb, tb, BASE), (vc, tc, CAND)].into_iter().enumerate() {
                let bh = (*v as f64 / t) / max * (hgt - bottom - 10.0);
                let _ = write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{col}\"/>",
                    x + k as f64 * bw / 2.0,
                    hgt - bottom - bh,
                    (bw / 2.0 - 0.5).max(0.5),
                    bh
                );
            }
        }
        for i in (0..=bins).step_by((bins / 8).max(1)) {
            if let Some(b) = hist.bounds_ms.get(i) {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    left + i as f64 * bw,
                    hgt - bottom + 14.0,
                    fmt_ms(*b)
                );
            }
        }
        let _ = write!(
            s,
            "<text x=\"{left}\" y=\"{:.1}\">share of requests per bin (log-spaced latency bins, ms)</text>",
            hgt - 4.0
        );
        s.push_str("</svg>\n");
        s
    }

    fn series_svg(&self, f: impl Fn(&super::replay::BucketFigures) -> f64, unit: &str) -> String {
        let pts = &self.series.points;
        let (w, hgt, left, bottom) = (900.0, 220.0, 60.0, 30.0);
        let mut s = svg_open(w, hgt);
        if pts.is_empty() {
            s.push_str("</svg>\n");
            return s;
        }
        let vals = |side: usize| -> Vec<f64> {
            pts.iter()
                .map(|p| match side {
                    0 => f(&p.actual),
                    1 => f(&p.baseline),
                    _ => f(&p.candidate),
                })
                .collect()
        };
        let all: Vec<Vec<f64>> = (0..3).map(vals).collect();
        let max = all.iter().flatten().copied().fold(0.0f64, f64::max);
        let min = all.iter().flatten().copied().fold(f64::INFINITY, f64::min);
        let (lo, hi) = if unit == "%" {
            ((min - 1.0).clamp(0.0, 99.0).floor(), 100.0)
        } else {
            (0.0, (max * 1.1).max(1e-9))
        };
        let x0 = pts[0].from as f64;
        let span = (pts[pts.len() - 1].from as f64 - x0).max(1.0);
        let xy = |i: usize, v: f64| {
            let x = if pts.len() == 1 {
                left + (w - left) / 2.0
            } else {
                left + (pts[i].from as f64 - x0) / span * (w - left - 10.0)
            };
            let y = hgt - bottom - (v - lo) / (hi - lo).max(1e-9) * (hgt - bottom - 10.0);
            (x, y)
        };
        for (side, col) in [(0, ACTUAL), (1, BASE), (2, CAND)] {
            let mut d = String::new();
            for (i, v) in all[side].iter().enumerate() {
                let (x, y) = xy(i, *v);
                let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
            }
            let _ = write!(
                s,
                "<path d=\"{d}\" fill=\"none\" stroke=\"{col}\" stroke-width=\"2\"{}/>",
                if side == 0 {
                    " stroke-dasharray=\"4 3\""
                } else {
                    ""
                }
            );
            if pts.len() == 1 {
                let (x, y) = xy(0, all[side][0]);
                let _ = write!(
                    s,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{col}\"/>"
                );
            }
        }
        for v in [lo, (lo + hi) / 2.0, hi] {
            let (_, y) = xy(0, v);
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left - 6.0,
                y + 4.0,
                if unit == "%" {
                    format!("{v:.1} %")
                } else {
                    format!("${v:.3}/h")
                }
            );
        }
        let _ = write!(
            s,
            "<text x=\"{left}\" y=\"{:.1}\">{} to {}, one point per {}</text>",
            hgt - 6.0,
            rfc3339(pts[0].from),
            rfc3339(pts[pts.len() - 1].from),
            fmt_ms(self.series.bucket_ms as f64)
        );
        s.push_str("</svg>\n");
        s
    }

    fn targets_svg(&self) -> String {
        let mut targets: Vec<&String> = self
            .actual
            .by_target
            .keys()
            .chain(self.baseline.by_target.keys())
            .chain(self.candidate.by_target.keys())
            .collect();
        targets.sort();
        targets.dedup();
        let row_h = 54.0;
        let (w, left) = (900.0, 180.0);
        let hgt = row_h * targets.len().max(1) as f64 + 10.0;
        let mut s = svg_open(w, hgt);
        for (i, t) in targets.iter().enumerate() {
            let y = 8.0 + i as f64 * row_h;
            let _ = write!(s, "<text x=\"0\" y=\"{:.1}\">{}</text>", y + 24.0, esc(t));
            for (k, (o, col)) in [
                (&self.actual, ACTUAL),
                (&self.baseline, BASE),
                (&self.candidate, CAND),
            ]
            .into_iter()
            .enumerate()
            {
                let v = o.by_target.get(*t).copied().unwrap_or(0.0);
                let bw = v * (w - left - 70.0);
                let yy = y + k as f64 * 15.0;
                let _ = write!(
                    s,
                    "<rect x=\"{left}\" y=\"{yy:.1}\" width=\"{bw:.1}\" height=\"12\" fill=\"{col}\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\">{:.1} %</text>",
                    left + bw + 4.0,
                    yy + 10.0,
                    v * 100.0
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

const BASE: &str = "#8250df";
const CAND: &str = "#0969da";
const ACTUAL: &str = "#8c959f";
const LEGEND: &str = "<p class=\"legend\"><span><i class=\"sw\" style=\"background:#8c959f\"></i>actual (from the log)</span>\
<span><i class=\"sw\" style=\"background:#8250df\"></i>baseline (simulated)</span>\
<span><i class=\"sw\" style=\"background:#0969da\"></i>candidate (simulated)</span></p>\n";

fn svg_open(w: f64, h: f64) -> String {
    format!("<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">")
}

fn fmt_ms(v: f64) -> String {
    if v >= 3_600_000.0 {
        format!("{:.0} h", v / 3_600_000.0)
    } else if v >= 60_000.0 {
        format!("{:.0} min", v / 60_000.0)
    } else if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Unix ms as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    crate::store::format_rfc3339_secs(unix_ms / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{AttemptRecord, TrafficRecord};

    /// Record `i` of a window: one a second, on route `default`.
    fn record(
        i: u64,
        stream: bool,
        attempts: Vec<AttemptRecord>,
        latency_ms: u64,
    ) -> TrafficRecord {
        let ok = attempts.last().is_some_and(|a| a.outcome == "ok");
        TrafficRecord {
            at_ms: 1_000_000 + i * 1000,
            request_id: format!("r{i}"),
            config_version: 1,
            route: "default".into(),
            client: None,
            stream,
            prompt_tokens: 1000,
            completion_tokens: if ok { 100 } else { 0 },
            tokens_estimated: false,
            max_tokens: None,
            attempts,
            outcome: if ok { "ok" } else { "all_failed" }.into(),
            status: if ok { 200 } else { 502 },
            latency_ms,
            ttft_ms: (stream && ok).then_some(50),
            served_by: None,
            cost_usd: None,
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_709_210_096_000), "2024-02-29T12:34:56Z");
    }

    /// A candidate that drops the fallback fails more often, and failures
    /// are cheap: it was "MIXED: cost −85 %; but success −10 pts". It is WORSE.
    #[test]
    fn a_candidate_that_loses_success_is_worse_whatever_it_saves() {
        use crate::config::Config;
        use crate::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
        let config = |attempts: serde_json::Value| {
            Config::from_value(serde_json::json!({
                "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {
                    "a": {"provider": "p", "price": {"input_per_mtok": 1, "output_per_mtok": 1}},
                    "b": {"provider": "p", "price": {"input_per_mtok": 50, "output_per_mtok": 50}}
                },
                "routes": {"default": {"attempts": attempts}}
            }))
            .unwrap()
        };
        let records: Vec<TrafficRecord> = (0..100u64)
            .map(|i| {
                let attempts = if i % 10 < 3 {
                    vec![
                        AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
                        AttemptRecord::ok("p", "b", 100, 20),
                    ]
                } else {
                    vec![AttemptRecord::ok("p", "a", 0, 100)]
                };
                record(i, false, attempts, 100)
            })
            .collect();
        let both = config(serde_json::json!([{"model": "a"}, {"model": "b"}]));
        let only_a = config(serde_json::json!([{"model": "a"}]));
        let report = dry_run(&records, &both, &only_a, &DryRunOptions::default()).unwrap();
        let v = report.verdict();
        assert_eq!(v.kind, VerdictKind::Worse, "{}", v.line);
        assert!(v.line.starts_with("WORSE: success -"), "{}", v.line);
        assert!(v.line.contains("(though cost"), "{}", v.line);
    }

    /// A candidate that points a model at another endpoint, key or upstream
    /// model is not the recorded target: the requests that reach it are
    /// unpredicted (it was "NO MEANINGFUL CHANGE" for a dead URL).
    #[test]
    fn a_redefined_target_is_never_observed() {
        use crate::config::Config;
        use crate::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
        let config = |q_url: &str, upstream: &str| {
            Config::from_value(serde_json::json!({
                "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                              "q": {"kind": "openai", "base_url": q_url}},
                "models": {"a": {"provider": "p"}, "b": {"provider": "q", "upstream_model": upstream}},
                "routes": {"default": {"attempts": [{"model": "a"}, {"model": "b"}]}}
            }))
            .unwrap()
        };
        let records: Vec<TrafficRecord> = (0..50u64)
            .map(|i| {
                let mut attempts = vec![AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503))];
                if i % 2 == 0 {
                    attempts = vec![AttemptRecord::ok("p", "a", 0, 100)];
                } else {
                    attempts.push(AttemptRecord::ok("q", "b", 100, 20));
                }
                record(i, false, attempts, 100)
            })
            .collect();
        let base = config("http://127.0.0.1:10/v1", "m-b");
        let same = dry_run(&records, &base, &base, &DryRunOptions::default()).unwrap();
        assert_eq!(
            same.verdict().kind,
            VerdictKind::NoChange,
            "{}",
            same.verdict().line
        );
        // New headers (an `anthropic-beta` flag, say) may change answers too.
        let mut with_headers = base.clone();
        with_headers
            .providers
            .get_mut("q")
            .unwrap()
            .headers
            .insert("x-beta".into(), "on".into());
        for cand in [
            config("http://127.0.0.1:18999/v1", "m-b"),
            config("http://127.0.0.1:10/v1", "m-other"),
            with_headers,
        ] {
            let v = dry_run(&records, &base, &cand, &DryRunOptions::default())
                .unwrap()
                .verdict();
            assert_eq!(v.kind, VerdictKind::Uncertain, "{}", v.line);
            assert!(v.line.contains("q/b (its"), "{}", v.line);
        }
    }

    /// A recorded timeout only says the target did not answer within the
    /// old limit: a candidate that gives it more time is uncertain (it was
    /// "WORSE" for the timeout that would have fixed an outage).
    #[test]
    fn a_longer_timeout_than_a_recorded_timeout_is_uncertain() {
        use crate::config::Config;
        use crate::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
        let config = |timeout_ms: u64| {
            Config::from_value(serde_json::json!({
                "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"a": {"provider": "p"}, "b": {"provider": "p"}},
                "routes": {"default": {"attempts": [{"model": "a", "timeout_ms": timeout_ms}, {"model": "b"}]}}
            }))
            .unwrap()
        };
        let records: Vec<TrafficRecord> = (0..20u64)
            .map(|i| {
                record(
                    i,
                    false,
                    vec![
                        AttemptRecord::failed("p", "a", 0, 2000, "timeout", None),
                        AttemptRecord::failed("p", "b", 2000, 10, "5xx", Some(503)),
                    ],
                    2010,
                )
            })
            .collect();
        let opts = DryRunOptions::default();
        let same = dry_run(&records, &config(2000), &config(2000), &opts).unwrap();
        assert_eq!(same.unobserved.longer_timeout_share, 0.0);
        let longer = dry_run(&records, &config(2000), &config(4000), &opts).unwrap();
        assert_eq!(longer.unobserved.longer_timeout_share, 1.0);
        let v = longer.verdict();
        assert_eq!(v.kind, VerdictKind::Uncertain, "{}", v.line);
        assert!(
            v.line.contains("100.0 % had an attempt time out"),
            "{}",
            v.line
        );
    }

    /// A candidate whose `stream_max_ms` is shorter than streams the
    /// window recorded would end them: uncertain for those, since the
    /// replay does not play the cut out.
    #[test]
    fn a_candidate_that_would_end_recorded_streams_early_is_uncertain() {
        use crate::config::Config;
        use crate::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
        let config = |stream_max_ms: u64| {
            Config::from_value(serde_json::json!({
                "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"a": {"provider": "p"}},
                "routes": {"default": {"attempts": [{"model": "a"}], "stream_max_ms": stream_max_ms}}
            }))
            .unwrap()
        };
        // Streams of 450 ms and 4,050 ms after their first token (at 50 ms).
        let records: Vec<TrafficRecord> = (0..20u64)
            .map(|i| {
                let latency = if i % 5 == 0 { 4_100 } else { 500 };
                record(i, true, vec![AttemptRecord::ok("p", "a", 0, 50)], latency)
            })
            .collect();
        let opts = DryRunOptions::default();
        let base = config(1_800_000);
        let same = dry_run(&records, &base, &base, &opts).unwrap();
        assert_eq!(same.unobserved.stream_limit_share, 0.0);
        let short = dry_run(&records, &base, &config(1_000), &opts).unwrap();
        assert_eq!(short.unobserved.stream_limit_share, 0.2);
        let v = short.verdict();
        assert_eq!(v.kind, VerdictKind::Uncertain, "{}", v.line);
        assert!(
            v.line
                .contains("20.0 % were streams that ran longer than the candidate's stream_max_ms"),
            "{}",
            v.line
        );
    }

    /// The recording keeps no cut: a stream continued on another target is
    /// two answered attempts. A candidate that recovers cut streams
    /// differently is uncertain for them (turning continuation off was "NO
    /// MEANINGFUL CHANGE", then 24 % of streams broke live).
    #[test]
    fn a_candidate_that_recovers_cut_streams_differently_is_uncertain() {
        use crate::config::Config;
        use crate::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
        let config = |continuation: serde_json::Value| {
            Config::from_value(serde_json::json!({
                "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"a": {"provider": "p"}, "b": {"provider": "p", "prefill": true}},
                "routes": {"default": {"attempts": [{"model": "a"}, {"model": "b"}],
                                       "continuation": continuation}}
            }))
            .unwrap()
        };
        let records: Vec<TrafficRecord> = (0..20u64)
            .map(|i| {
                record(
                    i,
                    true,
                    if i % 4 == 0 {
                        vec![
                            AttemptRecord::ok("p", "a", 0, 50),
                            AttemptRecord::ok("p", "b", 300, 50),
                        ]
                    } else {
                        vec![AttemptRecord::ok("p", "a", 0, 50)]
                    },
                    400,
                )
            })
            .collect();
        let opts = DryRunOptions::default();
        let base = config(serde_json::json!(["prefill", "regenerate"]));
        let same = dry_run(&records, &base, &base, &opts).unwrap();
        assert_eq!(same.unobserved.changed_recovery_share, 0.0);
        let off = dry_run(&records, &base, &config(serde_json::json!([])), &opts).unwrap();
        assert_eq!(off.unobserved.changed_recovery_share, 0.25);
        let v = off.verdict();
        assert_eq!(v.kind, VerdictKind::Uncertain, "{}", v.line);
        assert!(
            v.line.contains("25.0 % were streams continued after a cut"),
            "{}",
            v.line
        );
        assert!(!off.to_text().contains("spans config versions"));
        // A window over several versions says so next to the calibration.
        let mixed: Vec<TrafficRecord> = records
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, mut r)| {
                r.config_version = 1 + (i as u64 % 2);
                r
            })
            .collect();
        let text = dry_run(&mixed, &base, &base, &opts).unwrap().to_text();
        assert!(
            text.contains("the window spans config versions [1, 2]"),
            "{text}"
        );
    }

    #[test]
    fn html_escapes_names() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
