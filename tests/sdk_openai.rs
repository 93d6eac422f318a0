//! The official OpenAI Python SDK as the client, against every provider kind.
//!
//! The SDK is installed into a virtualenv under the target directory the
//! first time this test runs (pinned version), so `cargo test` needs nothing
//! but python3 and access to PyPI.

mod common;

use std::path::PathBuf;

use serde_json::json;

const OPENAI_SDK: &str = "openai==3.57.0";

fn venv_python() -> PathBuf {
    common::python_with("sdk-venv", OPENAI_SDK)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_parses_every_kind_streaming_and_not() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let h = common::start(|mock| {
        json!({
            "providers": common::providers(mock),
            "models": {
                "via-openai": {"provider": "oa", "upstream_model": "m-openai"},
                "via-anthropic": {"provider": "an", "upstream_model": "m-anthropic"},
                "via-gemini": {"provider": "ge", "upstream_model": "m-gemini"}
            },
            "routes": {}
        })
    })
    .await;
    let base = format!("{}/v1", h.url);
    let lines = common::run_sdk_script(
        &python,
        "openai_client.py",
        &[&base, "via-openai", "via-anthropic", "via-gemini"],
    )
    .await;
    assert_eq!(lines.len(), 8, "{lines:?}");
    let expected = common::mock_answer();
    for l in &lines[..6] {
        assert_eq!(l["text"].as_str().unwrap().trim(), expected, "{l}");
        assert_eq!(l["finish_reason"], "stop", "{l}");
        assert!(l["usage"].as_u64().unwrap() > 0, "usage missing: {l}");
    }
    // `chat.completions.parse` with a pydantic model, served by Anthropic.
    assert_eq!(lines[6]["check"], "parse", "{}", lines[6]);
    assert_eq!(lines[6]["city"], "Paris", "{}", lines[6]);
    assert_eq!(lines[6]["finish_reason"], "stop", "{}", lines[6]);
    assert_eq!(lines[7]["status"], 404);
    assert_eq!(lines[7]["code"], "model_not_found");
}
