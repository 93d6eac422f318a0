//! The official Anthropic Python SDK as a client of the fake provider's
//! Messages API: if the SDK parses every answer, stream and error, the fake
//! speaks Anthropic's wire format faithfully, and the gateway tests that use
//! it as their Anthropic upstream test against something real.
//!
//! The SDK is installed into its own virtualenv under the target directory
//! the first time this test runs (pinned version), so `cargo test` needs
//! nothing but python3 and access to PyPI.

mod common;

use std::path::PathBuf;

use modelux::mock::{Behaviour, ErrorFlavor, Fault, MockProvider};

const ANTHROPIC_SDK: &str = "anthropic==2.14.0";

fn venv_python() -> PathBuf {
    common::python_with("sdk-venv-anthropic", ANTHROPIC_SDK)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_parses_the_fake_providers_answers_streams_and_errors() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let mock = MockProvider::start().await.unwrap();
    mock.set("ok", Behaviour::default());
    mock.set(
        "limited",
        Behaviour {
            fault: Some(Fault::Status {
                status: 429,
                retry_after_s: Some(7),
                retry_after_ms: None,
                error: None,
            }),
            ..Behaviour::default()
        },
    );
    mock.set(
        "overloaded",
        Behaviour {
            fault: Some(Fault::status(529)),
            ..Behaviour::default()
        },
    );
    mock.set(
        "too-long",
        Behaviour {
            fault: Some(Fault::Status {
                status: 400,
                retry_after_s: None,
                retry_after_ms: None,
                error: Some(ErrorFlavor::ContextLength),
            }),
            ..Behaviour::default()
        },
    );
    mock.set(
        "error-event",
        Behaviour {
            fault: Some(Fault::ErrorEventAfter { chunks: 3 }),
            ..Behaviour::default()
        },
    );

    let url = mock.url();
    let cases =
        common::by_case(common::run_sdk_script(&python, "anthropic_client.py", &[&url]).await);
    let answer = common::mock_answer();

    let create = &cases["create"];
    assert_eq!(create["text"].as_str().unwrap().trim(), answer, "{create}");
    assert_eq!(create["stop_reason"], "end_turn", "{create}");
    assert_eq!(create["role"], "assistant");
    assert!(create["input_tokens"].as_u64().unwrap() > 0, "{create}");
    assert!(create["output_tokens"].as_u64().unwrap() > 0, "{create}");

    let stream = &cases["stream"];
    assert_eq!(stream["text"].as_str().unwrap().trim(), answer, "{stream}");
    assert_eq!(stream["final_text"], stream["text"], "{stream}");
    assert_eq!(stream["stop_reason"], "end_turn", "{stream}");
    assert!(stream["output_tokens"].as_u64().unwrap() > 0, "{stream}");

    let kinds: Vec<&str> = cases["events"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"message_start"), "{kinds:?}");
    assert!(kinds.contains(&"content_block_start"), "{kinds:?}");
    assert!(kinds.contains(&"content_block_delta"), "{kinds:?}");
    assert!(kinds.contains(&"message_delta"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"message_stop"), "{kinds:?}");

    let limited = &cases["rate_limited"];
    assert_eq!(limited["raised"], "RateLimitError", "{limited}");
    assert_eq!(limited["status"], 429);
    assert_eq!(limited["error_type"], "rate_limit_error", "{limited}");
    assert_eq!(limited["retry_after"], "7", "{limited}");

    let overloaded = &cases["overloaded"];
    assert_eq!(overloaded["status"], 529, "{overloaded}");
    assert_eq!(overloaded["error_type"], "overloaded_error", "{overloaded}");

    let too_long = &cases["too_long"];
    assert_eq!(too_long["raised"], "BadRequestError", "{too_long}");
    assert_eq!(
        too_long["error_type"], "invalid_request_error",
        "{too_long}"
    );
    assert!(
        too_long["message"]
            .as_str()
            .unwrap()
            .contains("prompt is too long"),
        "{too_long}"
    );

    // An `event: error` inside a 200 stream is an error to the SDK too.
    let event = &cases["error_event"];
    assert!(event["raised"].is_string(), "{event}");
    assert!(
        event["message"].as_str().unwrap().contains("verloaded"),
        "{event}"
    );

    // The SDK's requests reached the Messages API with its key (SDK 2.x
    // sends an API key as `Authorization: Bearer`, older ones as `x-api-key`).
    let seen = mock.requests();
    assert!(seen.len() >= 7, "{}", seen.len());
    for r in &seen {
        assert_eq!(r.format, "anthropic", "{r:?}");
        let key = r.auth.as_deref().unwrap_or_default();
        assert!(
            key == "sk-ant-sdk-test" || key == "Bearer sk-ant-sdk-test",
            "{r:?}"
        );
    }
}
