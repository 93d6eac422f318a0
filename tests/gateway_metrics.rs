//! Prometheus output after injected failures: the values, the exposition
//! format (checked by `promtool`), and that no key ever leaks into metrics,
//! traces or logs.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use modelux::mock::{Behaviour, Fault};
use serde_json::json;

/// Captures every log line of the process.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The value of one sample line, e.g. `name{a="b"}`.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{metrics}"))
}

#[tokio::test]
async fn metrics_after_failures_pass_promtool_and_leak_no_secret() {
    let logs = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(logs.clone())
        .json()
        .init();

    let h = common::start(|mock| {
        json!({
            "providers": common::providers(mock),
            "models": {
                "primary": {"provider": "oa", "upstream_model": "m-primary"},
                "backup": {"provider": "an", "upstream_model": "m-backup",
                           "price": {"input_per_mtok": 1.0, "output_per_mtok": 5.0}},
                "refused": {"provider": "oa", "upstream_model": "m-refused"}
            },
            "routes": {
                "default": {
                    "attempts": [{"model": "primary", "timeout_ms": 2000}, {"model": "backup", "timeout_ms": 2000}],
                    "backoff_base_ms": 5
                }
            },
            "health": {"consecutive_failures": 2, "cooldown_base_ms": 60000, "cooldown_max_ms": 60000}
        })
    })
    .await;
    h.mock.set(
        "m-primary",
        Behaviour {
            fault: Some(Fault::status(503)),
            ..Behaviour::default()
        },
    );
    let mut ids = Vec::new();
    for i in 0..5 {
        let a = h.post(&common::chat("default", i % 2 == 1)).await;
        assert_eq!(a.status, 200);
        ids.push(a.header("x-modelux-request-id"));
    }
    let s = h
        .stream(&json!({"model": "default", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert!(s.done());

    let (status, metrics) = h.get("/metrics").await;
    assert_eq!(status, 200);
    // Set at start, not only when a version changes (this gateway is the
    // process's first, so it also installs the exporter).
    assert_eq!(sample(&metrics, "modelux_config_version "), 1.0);
    // The primary failed twice (first try and its same-target retry), was
    // ejected, and every later request went to the backup first.
    assert_eq!(
        sample(
            &metrics,
            r#"modelux_attempts_total{provider="oa",model="primary",outcome="5xx"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"modelux_attempts_total{provider="an",model="backup",outcome="ok"}"#
        ),
        6.0
    );
    assert_eq!(
        sample(&metrics, r#"modelux_fallbacks_total{route="default"}"#),
        1.0
    );
    assert_eq!(
        sample(&metrics, r#"modelux_retries_total{route="default"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"modelux_health_ejections_total{provider="oa",model="primary"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"modelux_health_ejected{provider="oa",model="primary"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"modelux_requests_total{route="default",outcome="ok"}"#
        ),
        6.0
    );
    assert!(
        sample(
            &metrics,
            r#"modelux_tokens_total{provider="an",model="backup",kind="completion"}"#
        ) >= 120.0
    );
    assert!(
        sample(
            &metrics,
            r#"modelux_cost_usd_micros_total{provider="an",model="backup"}"#
        ) > 0.0
    );
    assert_eq!(sample(&metrics, "modelux_active_streams"), 0.0);
    assert!(metrics.contains("modelux_request_duration_seconds_bucket"));
    assert!(metrics.contains("modelux_time_to_first_token_seconds_bucket"));

    // The exposition format is valid for Prometheus.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package 'prometheus'; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{report}"
    );
    assert!(!report.contains("error"), "{report}");

    // A provider that refuses the key quotes part of it (as OpenAI's 401
    // does): the client gets a 502 that does not repeat the provider's text.
    h.mock.push("m-refused", Fault::status(401));
    let refused = h.post(&common::chat("refused", false)).await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "upstream_auth_failed");
    let said = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.model == "m-refused")
        .count();
    assert_eq!(said, 1, "the refusing provider was asked once");
    ids.push(refused.header("x-modelux-request-id"));
    let answers = refused.body.to_string();

    // No key reached the metrics, a trace, a log line or an answer; the keys
    // were sent to the provider (the fake provider saw them).
    let sent: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter_map(|r| r.auth)
        .collect();
    assert!(
        sent.iter().any(|a| a.contains("sk-ant-test-SECRET")),
        "{sent:?}"
    );
    let mut traces = String::new();
    for id in &ids {
        traces.push_str(&h.trace(id).await.to_string());
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request finished"),
        "the per-request event is logged"
    );
    for secret in [
        "sk-test-openai-SECRET",
        "sk-ant-test-SECRET",
        "gm-test-SECRET",
    ] {
        assert!(!metrics.contains(secret), "{secret} in /metrics");
        assert!(!traces.contains(secret), "{secret} in a trace");
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    // Nor the masked key of the 401 (its last four characters are the key's).
    for quoted in ["Incorrect API key", "sk-te", "*CRET"] {
        assert!(
            !answers.contains(quoted),
            "{quoted} in an answer: {answers}"
        );
        assert!(!traces.contains(quoted), "{quoted} in a trace");
        assert!(!logs.contains(quoted), "{quoted} in the logs");
    }
    assert!(
        answers.contains("refused the gateway's credentials"),
        "{answers}"
    );
}

/// Every metric the crate records has a description for `/metrics` (else
/// `promtool` flags it: "no help text") and a row in `docs/metrics.md`.
#[test]
fn every_recorded_metric_is_described_and_documented() {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    /// The `"modelux_…"` names right after `macro!(` for each macro.
    fn names_after(text: &str, macros: &[&str]) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        for m in macros {
            for (at, _) in text.match_indices(m) {
                let rest = text[at + m.len()..].trim_start();
                if let Some(rest) = rest.strip_prefix("\"modelux_") {
                    let end = rest.find('"').unwrap();
                    names.insert(format!("modelux_{}", &rest[..end]));
                }
            }
        }
        names
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let source: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let recorded = names_after(&source, &["counter!(", "gauge!(", "histogram!("]);
    assert!(recorded.len() > 20, "{recorded:?}");
    let described = names_after(
        &source,
        &[
            "describe_counter!(",
            "describe_gauge!(",
            "describe_histogram!(",
        ],
    );
    let docs = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    for name in &recorded {
        assert!(
            described.contains(name),
            "{name} has no describe_*! in src/gateway/metrics.rs"
        );
        assert!(
            docs.contains(&format!("| `{name}` |")),
            "{name} has no row in docs/metrics.md"
        );
    }
}
