//! The official Google Gen AI Python SDK (`google-genai`) as a client of the
//! fake provider's Gemini API: if the SDK parses every answer, stream and
//! error, the fake speaks Gemini's wire format faithfully, and the gateway
//! tests that use it as their Gemini upstream test against something real.
//!
//! The SDK is installed into its own virtualenv under the target directory
//! the first time this test runs (pinned version), so `cargo test` needs
//! nothing but python3 and access to PyPI.

mod common;

use modelux::mock::{Behaviour, ErrorFlavor, Fault, MockProvider};

const GEMINI_SDK: &str = "google-genai==3.6.1";

fn fault(fault: Fault) -> Behaviour {
    Behaviour {
        fault: Some(fault),
        ..Behaviour::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_sdk_parses_the_fake_providers_answers_streams_and_errors() {
    let python = tokio::task::spawn_blocking(|| common::python_with("sdk-venv-gemini", GEMINI_SDK))
        .await
        .unwrap();
    let mock = MockProvider::start().await.unwrap();
    mock.set("ok", Behaviour::default());
    mock.set(
        "limited",
        fault(Fault::Status {
            status: 429,
            retry_after_s: Some(3),
            retry_after_ms: None,
            error: None,
        }),
    );
    mock.set("down", fault(Fault::status(503)));
    mock.set(
        "too-long",
        fault(Fault::Status {
            status: 400,
            retry_after_s: None,
            retry_after_ms: None,
            error: Some(ErrorFlavor::ContextLength),
        }),
    );
    mock.set("error-event", fault(Fault::ErrorEventAfter { chunks: 3 }));

    let url = mock.url();
    let cases = common::by_case(common::run_sdk_script(&python, "gemini_client.py", &[&url]).await);
    let answer = common::mock_answer();

    let generate = &cases["generate"];
    assert_eq!(
        generate["text"].as_str().unwrap().trim(),
        answer,
        "{generate}"
    );
    assert_eq!(generate["finish_reason"], "STOP", "{generate}");
    assert!(
        generate["prompt_tokens"].as_u64().unwrap() > 0,
        "{generate}"
    );
    assert!(
        generate["output_tokens"].as_u64().unwrap() > 0,
        "{generate}"
    );

    let stream = &cases["stream"];
    assert_eq!(stream["text"].as_str().unwrap().trim(), answer, "{stream}");
    assert!(
        stream["chunks"].as_u64().unwrap() > 1,
        "not streamed: {stream}"
    );
    assert_eq!(stream["finish_reason"], "STOP", "{stream}");
    assert!(stream["output_tokens"].as_u64().unwrap() > 0, "{stream}");

    let limited = &cases["rate_limited"];
    assert_eq!(limited["raised"], "ClientError", "{limited}");
    assert_eq!(
        (limited["code"].as_u64(), limited["status"].as_str()),
        (Some(429), Some("RESOURCE_EXHAUSTED"))
    );

    let down = &cases["unavailable"];
    assert_eq!(down["raised"], "ServerError", "{down}");
    assert_eq!(
        (down["code"].as_u64(), down["status"].as_str()),
        (Some(503), Some("UNAVAILABLE"))
    );

    let too_long = &cases["too_long"];
    assert_eq!(too_long["raised"], "ClientError", "{too_long}");
    assert_eq!(too_long["status"], "INVALID_ARGUMENT", "{too_long}");
    assert!(
        too_long["message"]
            .as_str()
            .unwrap()
            .contains("input token count"),
        "{too_long}"
    );

    // An error object inside a 200 stream is an error to the SDK too.
    let event = &cases["error_event"];
    assert_eq!(event["raised"], "ServerError", "{event}");
    assert_eq!(event["code"], 503, "{event}");

    let seen = mock.requests();
    assert!(seen.len() >= 6, "{}", seen.len());
    for r in &seen {
        assert_eq!(
            (r.format, r.auth.as_deref()),
            ("gemini", Some("gm-sdk-test")),
            "{r:?}"
        );
    }
}
