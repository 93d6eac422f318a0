//! Mid-stream recovery end to end, against the fake provider: prefill
//! continuation and regenerate-and-splice (issue 9).

mod common;

use modelux::mock::{Behaviour, ErrorFlavor, Fault};
use serde_json::{json, Value};

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn config(mock: &modelux::mock::MockProvider, fallback_prefill: bool, extra: Value) -> Value {
    let mut route = json!({
        "attempts": [{"model": "primary", "timeout_ms": 3000}, {"model": "fallback", "timeout_ms": 3000}],
        "stream_idle_timeout_ms": 300,
        "total_budget_ms": 20000
    });
    for (k, v) in extra.as_object().unwrap() {
        route[k] = v.clone();
    }
    json!({
        "providers": common::providers(mock),
        "models": {
            "primary": {"provider": "oa", "upstream_model": "m-primary"},
            "fallback": {"provider": if fallback_prefill { "an" } else { "oa" },
                         "upstream_model": "m-fallback", "prefill": fallback_prefill}
        },
        "routes": {"default": route}
    })
}

fn sixty(mock: &modelux::mock::MockProvider, primary_fault: Fault) {
    mock.set(
        "m-primary",
        Behaviour {
            words: Some(60),
            fault: Some(primary_fault),
            ..Behaviour::default()
        },
    );
    mock.set(
        "m-fallback",
        Behaviour {
            words: Some(60),
            ..Behaviour::default()
        },
    );
}

async fn decisions(h: &common::Harness, s: &common::Streamed) -> String {
    let t = h.trace(&s.header("x-modelux-request-id")).await;
    t["decisions"].to_string()
}

#[tokio::test]
async fn a_cut_stream_is_regenerated_on_an_openai_fallback_and_spliced() {
    let h = common::start(|m| config(m, false, json!({}))).await;
    sixty(&h.mock, Fault::CutAfter { chunks: 40 });
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.text(), words(60), "complete, uninterrupted, once");
    assert!(s.done());
    assert_eq!(s.finish_reasons(), vec!["stop".to_string()]);
    assert!(s.error().is_none());
    // The fallback got the original request, unchanged.
    let fb = h.mock.requests_for("m-fallback");
    assert_eq!(fb.len(), 1);
    assert_eq!(fb[0].body["messages"].as_array().unwrap().len(), 1);
    let d = decisions(&h, &s).await;
    assert!(d.contains("regenerate: spliced"), "{d}");
}

#[tokio::test]
async fn a_regenerated_answer_that_differs_ends_with_the_original_cut() {
    let h = common::start(|m| config(m, false, json!({}))).await;
    sixty(&h.mock, Fault::CutAfter { chunks: 40 });
    h.mock.set(
        "m-fallback",
        Behaviour {
            answer: Some(format!("{} something else entirely", words(10))),
            ..Behaviour::default()
        },
    );
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.status, 200);
    assert!(!s.done(), "never [DONE] after a failure");
    assert!(s.finish_reasons().is_empty(), "never a normal finish");
    let err = s.error().expect("an in-band error ends the stream");
    assert_eq!(
        err["error"]["code"], "stream_cut",
        "names the original failure: {err}"
    );
    assert!(!err.to_string().contains("diverg"));
    assert!(words(60).starts_with(&s.text()));
    let d = decisions(&h, &s).await;
    assert!(d.contains("diverged"), "{d}");
}

#[tokio::test]
async fn a_rejected_prefill_falls_through_to_regenerate() {
    let h = common::start(|m| config(m, true, json!({}))).await;
    sixty(&h.mock, Fault::CutAfter { chunks: 40 });
    h.mock.push(
        "m-fallback",
        Fault::Status {
            status: 400,
            retry_after_s: None,
            retry_after_ms: None,
            error: Some(ErrorFlavor::PrefillUnsupported),
        },
    );
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.text(), words(60));
    assert!(s.done());
    let fb = h.mock.requests_for("m-fallback");
    assert_eq!(fb.len(), 2, "a prefill attempt, then a regeneration");
    let last_role = |r: &modelux::mock::RecordedRequest| {
        r.body["messages"].as_array().unwrap().last().unwrap()["role"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(last_role(&fb[0]), "assistant");
    assert_eq!(last_role(&fb[1]), "user");
    let d = decisions(&h, &s).await;
    assert!(
        d.contains("rejected the prefill") && d.contains("regenerate: spliced"),
        "{d}"
    );
}

#[tokio::test]
async fn a_prefix_over_the_limit_is_not_regenerated() {
    let h = common::start(|m| config(m, false, json!({"regenerate_max_chars": 50}))).await;
    sixty(&h.mock, Fault::CutAfter { chunks: 40 });
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.error().unwrap()["error"]["code"], "stream_cut");
    assert!(!s.done());
    assert_eq!(h.mock.request_count("m-fallback"), 0);
    let d = decisions(&h, &s).await;
    assert!(d.contains("over regenerate_max_chars"), "{d}");
}

#[tokio::test]
async fn a_stall_mid_stream_recovers_the_same_way() {
    let h = common::start(|m| config(m, false, json!({}))).await;
    sixty(
        &h.mock,
        Fault::StallAfter {
            chunks: 40,
            ms: 5000,
        },
    );
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.text(), words(60));
    assert!(s.done());
    let t = h.trace(&s.header("x-modelux-request-id")).await;
    assert!(t["decisions"].to_string().contains("regenerate: spliced"));
    assert_eq!(t["outcome"]["stream_end"], "done");
}

#[tokio::test]
async fn prefill_continuation_on_an_anthropic_fallback() {
    let h = common::start(|m| config(m, true, json!({}))).await;
    sixty(&h.mock, Fault::CutAfter { chunks: 40 });
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(
        s.text().split_whitespace().collect::<Vec<_>>().join(" "),
        words(60)
    );
    assert!(s.done());
    let fb = h.mock.requests_for("m-fallback");
    assert_eq!(fb.len(), 1);
    let last = fb[0].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["role"], "assistant");
}

/// After a continuation, the usage the stream reports at its end is the
/// continuing target's: its tokens and cost are counted under it, at its
/// price. Before, they were counted under the target the stream was cut on,
/// at that target's price.
#[tokio::test]
async fn a_continued_stream_s_usage_is_counted_under_the_target_that_finished_it() {
    let h = common::start(|m| {
        let mut c = config(m, true, json!({}));
        c["models"] = json!({
            "cut-priced": {"provider": "oa", "upstream_model": "m-cut-priced",
                           "price": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}},
            "finish-priced": {"provider": "an", "upstream_model": "m-finish-priced", "prefill": true,
                              "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
        });
        c["routes"]["default"]["attempts"] = json!([
            {"model": "cut-priced", "timeout_ms": 3000},
            {"model": "finish-priced", "timeout_ms": 3000}
        ]);
        c
    })
    .await;
    h.mock.set(
        "m-cut-priced",
        Behaviour {
            words: Some(60),
            fault: Some(Fault::CutAfter { chunks: 40 }),
            ..Behaviour::default()
        },
    );
    h.mock.set(
        "m-finish-priced",
        Behaviour {
            words: Some(60),
            ..Behaviour::default()
        },
    );
    let s = h.stream(&common::chat("default", true)).await;
    assert!(s.done());
    assert_eq!(
        s.header("x-modelux-provider"),
        "oa",
        "committed on the first"
    );
    let t = h.trace(&s.header("x-modelux-request-id")).await;
    let usage = &t["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_f64().unwrap(),
        usage["completion_tokens"].as_f64().unwrap(),
    );
    assert!(completion > 0.0, "{t:#}");
    let at_finisher = (prompt * 1.0 + completion * 2.0) / 1e6;
    let cost = t["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - at_finisher).abs() < 1e-12,
        "{cost} is not the finishing target's price ({at_finisher}): {t:#}"
    );
    let (_, metrics) = h.get("/metrics").await;
    let counted = |provider: &str, model: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("modelux_tokens_total{")
                    && l.contains(&format!(r#"provider="{provider}""#))
                    && l.contains(&format!(r#"model="{model}""#))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert_eq!(
        counted("an", "finish-priced"),
        prompt + completion,
        "{metrics}"
    );
    assert_eq!(counted("oa", "cut-priced"), 0.0, "{metrics}");
}
