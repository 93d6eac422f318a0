//! The gateway's HTTP surface: unbuffered streaming, error formats, the
//! informational endpoints, and the CLI's handling of a bad config.

mod common;

use std::time::Duration;

use modelux::mock::Behaviour;
use serde_json::{json, Value};

fn one_route(mock: &modelux::mock::MockProvider) -> Value {
    json!({
        "providers": common::providers(mock),
        "models": {
            "primary": {"provider": "oa", "upstream_model": "m-primary"},
            "backup": {"provider": "an", "upstream_model": "m-backup", "prefill": true}
        },
        "routes": {
            "default": {"attempts": [{"model": "primary", "timeout_ms": 5000}, {"model": "backup", "timeout_ms": 5000}]}
        }
    })
}

#[tokio::test]
async fn streaming_is_forwarded_chunk_by_chunk() {
    let h = common::start(one_route).await;
    h.mock.set(
        "m-primary",
        Behaviour {
            words: Some(4),
            chunk_interval_ms: 200,
            ..Behaviour::default()
        },
    );
    let s = h.stream(&common::chat("default", true)).await;
    assert_eq!(s.status, 200);
    let content: Vec<_> = s
        .events
        .iter()
        .filter(|e| {
            e.json().is_some_and(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            })
        })
        .collect();
    assert_eq!(content.len(), 4, "{:?}", s.events);
    // The fake provider produces each word 200 ms after the previous one: if
    // the gateway buffered, the first word would arrive with the later ones.
    for pair in content.windows(2) {
        let gap = pair[1].at.saturating_sub(pair[0].at);
        assert!(
            gap >= Duration::from_millis(150),
            "chunks arrived together: {:?}",
            s.events
        );
    }
    assert!(
        content[0].at + Duration::from_millis(150) <= content[1].at,
        "the first chunk did not arrive before the second was produced"
    );
    assert!(s.done());
    assert_eq!(s.finish_reasons(), vec!["stop".to_string()]);
}

#[tokio::test]
async fn bad_requests_get_openai_errors_with_the_right_status() {
    let h = common::start(one_route).await;
    let post_raw = |body: Vec<u8>| {
        let c = h.client.clone();
        let url = format!("{}/v1/chat/completions", h.url);
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v)
        }
    };
    let (s, v) = post_raw(b"{not json".to_vec()).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, v) = post_raw(br#"{"model":"default"}"#.to_vec()).await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("messages"));
    let (s, _) = post_raw(br#"{"model":"default","messages":[]}"#.to_vec()).await;
    assert_eq!(s, 400);
    for n in ["0", "129", "2147483648"] {
        let body = format!(
            r#"{{"model":"default","n":{n},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        let (s, v) = post_raw(body.into_bytes()).await;
        assert_eq!(s, 400, "n={n}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("'n'"),
            "{v}"
        );
    }
    let (s, v) = post_raw(
        br#"{"model":"default","messages":[{"role":"user","content":"x"},{"role":"tool","content":"42"}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[1].tool_call_id"),
        "{v}"
    );
    assert!(h.mock.requests().is_empty(), "nothing sent upstream");
    let (s, v) =
        post_raw(br#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#.to_vec()).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let big = format!(
        r#"{{"model":"default","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(5 * 1024 * 1024)
    );
    let (s, v) = post_raw(big.into_bytes()).await;
    assert_eq!(s, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    let r = h
        .client
        .get(format!("{}/v1/chat/completions", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
    // Nothing reached the provider.
    assert_eq!(h.mock.request_count("m-primary"), 0);
    // Refused before routing, so no trace: still counted, by reason. (The
    // recorder is the process's: other tests may add to the counts.)
    let (_, metrics) = h.get("/metrics").await;
    for (reason, at_least) in [
        ("invalid_request", 7),
        ("unknown_model", 1),
        ("too_large", 1),
    ] {
        let series = format!("modelux_requests_refused_total{{reason=\"{reason}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}in {metrics}"));
        assert!(n >= at_least, "{series}{n}");
    }
}

#[tokio::test]
async fn models_healthz_and_headers() {
    let h = common::start(one_route).await;
    let (s, body) = h.get("/v1/models").await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["backup", "default", "primary"]);
    let (s, body) = h.get("/healthz").await;
    assert_eq!(s, 200);
    assert!(body.contains("\"config_version\":1"));
    let a = h.post(&common::chat("default", false)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-modelux-route"), "default");
    assert_eq!(a.header("x-modelux-provider"), "oa");
    assert_eq!(a.header("x-modelux-model"), "primary");
    assert_eq!(a.header("x-modelux-attempts"), "1");
    assert_eq!(a.header("x-modelux-config-version"), "1");
    // An incoming x-request-id is honoured and finds the trace.
    let r = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-request-id", "my-req-42")
        .json(&common::chat("primary", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-modelux-request-id"], "my-req-42");
    // Also as `x-request-id`, where the OpenAI SDKs read it.
    assert_eq!(r.headers()["x-request-id"], "my-req-42");
    let t = h.trace("my-req-42").await;
    assert_eq!(t["route"], "primary");
    assert_eq!(t["outcome"]["served_by"], "oa/primary");
    let (s, _) = h.get("/v1/traces/unknown-id").await;
    assert_eq!(s, 404);
    // One model, as the SDKs' `models.retrieve` asks for it.
    let (s, body) = h.get("/v1/models/primary").await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str()),
        (Some("primary"), Some("model"))
    );
    let (s, body) = h.get("/v1/models/nope").await;
    assert_eq!(s, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
}

/// `--help` shows where the store URL comes from, never its value: a
/// `MODELUX_STORE` with a password was printed in clear, also by
/// `config dry-run --help`.
#[test]
fn help_never_prints_the_store_password() {
    for args in [&["--help"][..], &["config", "dry-run", "--help"]] {
        let out = std::process::Command::new(common::example("gateway"))
            .args(args)
            .env("MODELUX_STORE", "postgres://u:Pg5ecretXyZ@db:5432/modelux")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("MODELUX_STORE"), "{args:?}: {text}");
        assert!(!text.contains("Pg5ecretXyZ"), "{args:?}: {text}");
    }
    // Nor an admin CLI error the password of its --url.
    let out = std::process::Command::new(common::example("gateway"))
        .args([
            "config",
            "list",
            "--url",
            "http://ops:UrlPa55wd@127.0.0.1:1/",
        ])
        .env("MODELUX_ADMIN_TOKEN", "t")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("cannot reach http://ops:***@127.0.0.1:1/"),
        "{text}"
    );
    assert!(!text.contains("UrlPa55wd"), "{text}");
}

#[test]
fn a_bad_config_prints_every_problem_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("modelux-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    std::fs::write(
        &file,
        r#"{"providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": "sk-SHOULD-NOT-PRINT"}},
            "models": {"m": {"provider": "nope"}},
            "routes": {"r": {"attempts": [], "retry_on": ["teapot"], "strategy": "random"}}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(common::example("gateway"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("the gateway example is built by cargo test");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "$.models.m.provider",
        "$.routes.r.attempts",
        "$.routes.r.retry_on[0]",
        "$.routes.r.strategy",
    ] {
        assert!(err.contains(path), "missing {path} in:\n{err}");
    }
    assert!(!err.contains("SHOULD-NOT-PRINT"));
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_upstream_call() {
    let h = common::start(one_route).await;
    h.mock.set(
        "m-primary",
        Behaviour {
            latency_ms: 3000,
            ..Behaviour::default()
        },
    );
    let r = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-request-id", "gone-1")
        .timeout(Duration::from_millis(300))
        .json(&common::chat("default", false))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up first");
    // The gateway notices the closed connection, drops the request (and with
    // it the upstream call) and records why, long before the provider answers.
    let mut trace = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (s, body) = h.get("/v1/traces/gone-1").await;
        if s == 200 {
            trace = Some(serde_json::from_str::<Value>(&body).unwrap());
            break;
        }
    }
    let trace = trace.expect("trace finished within 2 s of the disconnect");
    assert_eq!(trace["outcome"]["class"], "client_disconnected");
    assert_eq!(trace["outcome"]["status"], 499);
    assert!(trace["duration_ms"].as_u64().unwrap() < 2000);
    // The attempt the provider received is in the trace, as abandoned.
    let attempts = trace["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{trace:#}");
    assert_eq!(attempts[0]["outcome"], "abandoned");
    assert_eq!(attempts[0]["target"], "oa/primary");
    assert!(
        attempts[0]["duration_ms"].as_u64().unwrap() >= 200,
        "{trace:#}"
    );
    // And the provider saw its client leave while it was still working.
    let seen = provider_end(&h.mock, "m-primary").await;
    assert_eq!(seen.end, modelux::mock::AnswerEnd::Abandoned, "{seen:?}");
    assert_eq!(h.mock.request_count("m-backup"), 0);
}

/// Waits up to 2 s for the provider to see `model`'s only request end, and
/// returns its record.
async fn provider_end(
    mock: &modelux::mock::MockProvider,
    model: &str,
) -> modelux::mock::RecordedRequest {
    provider_end_within(
        mock,
        model,
        Duration::from_secs(2),
        Duration::from_millis(20),
    )
    .await
    .0
}

/// [`provider_end`] with its own limit and polling interval (on tokio's
/// clock, so paused-clock tests can wait minutes), and how long it took.
async fn provider_end_within(
    mock: &modelux::mock::MockProvider,
    model: &str,
    limit: Duration,
    every: Duration,
) -> (modelux::mock::RecordedRequest, Duration) {
    let started = tokio::time::Instant::now();
    loop {
        let seen = mock.requests_for(model);
        assert_eq!(
            seen.len(),
            1,
            "one upstream request, never a second: {seen:?}"
        );
        if seen[0].end != modelux::mock::AnswerEnd::Open {
            return (seen[0].clone(), started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "the provider still answers {:?} after its client left or stopped reading: {seen:?}",
            started.elapsed()
        );
        tokio::time::sleep(every).await;
    }
}

/// Makes `model` answer 20,000 chunks of 1 KB, far more than the socket
/// buffers on the way hold, and returns the chunk count.
fn long_answer(mock: &modelux::mock::MockProvider, model: &str) -> usize {
    let words = 20_000;
    mock.set(
        model,
        Behaviour {
            answer: Some(vec!["x".repeat(1000); words].join(" ")),
            ..Behaviour::default()
        },
    );
    words
}

/// A client stopped reading a stream of `words` chunks from `model` just
/// now: the provider's stream is abandoned `SEND_TIMEOUT` later, not before,
/// and not after all its chunks were produced.
async fn cut_after_the_send_timeout(mock: &modelux::mock::MockProvider, model: &str, words: usize) {
    let limit = modelux::gateway::SEND_TIMEOUT;
    let (record, waited) = provider_end_within(
        mock,
        model,
        limit + Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;
    assert!(
        waited >= limit,
        "cut after {waited:?}, before the send timeout"
    );
    assert_eq!(
        record.end,
        modelux::mock::AnswerEnd::Abandoned,
        "{record:?}"
    );
    assert!(record.chunks_sent < words, "{record:?}");
}

/// A client that leaves a stream stops the provider's stream too (nobody
/// pays for tokens nobody reads), for every provider kind, over HTTP/1.1 and
/// HTTP/2 on either side, and no attempt is made in its place.
#[tokio::test]
async fn a_client_leaving_a_stream_stops_the_provider_stream() {
    use modelux::mock::AnswerEnd;
    let mock = modelux::mock::MockProvider::start().await.unwrap();
    // (provider, whether the client speaks HTTP/2); "oa2" speaks HTTP/2 upstream.
    let cases = [
        ("oa", false),
        ("oa2", true),
        ("oa2", false),
        ("an", false),
        ("ge", true),
    ];
    let mut providers = common::providers(&mock);
    providers["oa2"] = json!({"kind": "openai", "base_url": mock.openai_url(), "http2": true});
    let mut models = serde_json::Map::new();
    let mut routes = serde_json::Map::new();
    for (i, (provider, _)) in cases.iter().enumerate() {
        mock.set(
            &format!("m-{i}"),
            Behaviour {
                words: Some(40),
                chunk_interval_ms: 100,
                ..Behaviour::default()
            },
        );
        models.insert(
            format!("c{i}"),
            json!({"provider": provider, "upstream_model": format!("m-{i}")}),
        );
        models.insert(
            format!("b{i}"),
            json!({"provider": "oa", "upstream_model": format!("backup-{i}")}),
        );
        routes.insert(
            format!("r{i}"),
            json!({"attempts": [{"model": format!("c{i}"), "timeout_ms": 10000}, {"model": format!("b{i}")}]}),
        );
    }
    let config = json!({"providers": providers, "models": models, "routes": routes});
    let config = modelux::config::Config::from_value(config).unwrap();
    let h = common::serve(mock, modelux::gateway::Gateway::new(config, 1).unwrap()).await;
    let h2_client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    for (i, (provider, client_h2)) in cases.iter().enumerate() {
        let client = if *client_h2 { &h2_client } else { &h.client };
        let resp = client
            .post(format!("{}/v1/chat/completions", h.url))
            .json(&common::chat(&format!("r{i}"), true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "case {i} ({provider})");
        let mut body = resp.bytes_stream();
        common::read_until(&mut body, "word1").await;
        drop(body);

        let record = provider_end(&h.mock, &format!("m-{i}")).await;
        assert_eq!(
            record.end,
            AnswerEnd::Abandoned,
            "case {i} ({provider}): {record:?}"
        );
        // Two chunks read, a few more in flight when the client left: far
        // from the 40 a provider that went on would have produced.
        assert!(
            record.chunks_sent < 10,
            "case {i} ({provider}): {} chunks produced",
            record.chunks_sent
        );
        assert_eq!(h.mock.request_count(&format!("backup-{i}")), 0);
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_accepting_and_drains_streams_in_flight() {
    let mock = modelux::mock::MockProvider::start().await.unwrap();
    mock.set(
        "m-primary",
        Behaviour {
            words: Some(6),
            chunk_interval_ms: 150,
            ..Behaviour::default()
        },
    );
    let dir = std::env::temp_dir().join(format!("modelux-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.json");
    std::fs::write(&file, serde_json::to_vec(&one_route(&mock)).unwrap()).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(common::example("gateway"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "gateway did not start");
    let resp = client
        .post(&url)
        .json(&common::chat("default", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(async move { resp.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(150)).await;
    // No new connections once draining.
    let fresh = reqwest::Client::new()
        .post(&url)
        .json(&common::chat("default", false))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "a new connection was accepted while draining"
    );
    let body = reader.await.unwrap();
    assert!(
        body.trim_end().ends_with("data: [DONE]"),
        "stream was not drained: {body}"
    );
    assert!(body.contains("word5"));
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "gateway exited with {status}");
}

#[tokio::test]
async fn configured_clients_must_present_their_key() {
    let digest = |key: &[u8]| {
        use sha2::Digest;
        sha2::Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let h = common::start(|mock| {
        let mut c = one_route(mock);
        c["clients"] = json!({
            "team-a": {"key_sha256": digest(b"client-key-a")},
            "team-b": {"key_sha256": digest(b"client-key-b")}
        });
        c
    })
    .await;
    let url = format!("{}/v1/chat/completions", h.url);
    let no_key = h
        .client
        .post(&url)
        .json(&common::chat("default", false))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status().as_u16(), 401);
    let v: Value = no_key.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let wrong = h
        .client
        .post(&url)
        .bearer_auth("nope")
        .json(&common::chat("default", false))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let ok = h
        .client
        .post(&url)
        .bearer_auth("client-key-b")
        .json(&common::chat("default", false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    // The scheme's name is case-insensitive (RFC 9110).
    let lower = h
        .client
        .post(&url)
        .header("authorization", "bearer client-key-a")
        .json(&common::chat("default", false))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status().as_u16(), 200);
    let id = ok.headers()["x-modelux-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // So is the model list.
    let models = |key: Option<&'static str>| {
        let mut req = h.client.get(format!("{}/v1/models", h.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(models(None).await, 401);
    assert_eq!(models(Some("client-key-a")).await, 200);

    // A trace is read with the key of the client it belongs to.
    let trace = |key: Option<&'static str>, id: String| {
        let mut req = h.client.get(format!("{}/v1/traces/{id}", h.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (s, t) = trace(Some("client-key-b"), id.clone()).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["client"], "team-b");
    assert!(!t.to_string().contains("client-key-b"));
    let (s, v) = trace(None, id.clone()).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = trace(Some("client-key-a"), id.clone()).await;
    assert_eq!(s, 404, "another client's trace is not found: {v}");

    // The same request id from another client neither reads nor replaces it.
    let a = h
        .client
        .post(&url)
        .bearer_auth("client-key-a")
        .header("x-request-id", &id)
        .json(&common::chat("default", false))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status().as_u16(), 200);
    let (s, t) = trace(Some("client-key-a"), id.clone()).await;
    assert_eq!((s, t["client"].as_str()), (200, Some("team-a")));
    let (s, t) = trace(Some("client-key-b"), id.clone()).await;
    assert_eq!((s, t["client"].as_str()), (200, Some("team-b")));
    assert_eq!(
        h.mock.request_count("m-primary"),
        3,
        "only the authenticated requests went upstream"
    );
}

/// Providers are spoken to over HTTP/1.1 unless their config sets `http2`;
/// with it, a plain `http://` provider gets HTTP/2 with prior knowledge, and
/// many concurrent streams share its connection. Every kind works both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_speak_http1_unless_http2_is_set() {
    let h = common::start(|mock| {
        json!({
            "providers": {
                "oa": {"kind": "openai", "base_url": mock.openai_url()},
                "oa2": {"kind": "openai", "base_url": mock.openai_url(), "http2": true},
                "an2": {"kind": "anthropic", "base_url": mock.url(), "http2": true},
                "ge2": {"kind": "gemini", "base_url": mock.url(), "http2": true}
            },
            "models": {
                "via-h1": {"provider": "oa", "upstream_model": "m-h1"},
                "via-h2": {"provider": "oa2", "upstream_model": "m-h2"},
                "an-h2": {"provider": "an2", "upstream_model": "m-an-h2"},
                "ge-h2": {"provider": "ge2", "upstream_model": "m-ge-h2"}
            },
            "routes": {}
        })
    })
    .await;
    for model in ["via-h1", "via-h2", "an-h2", "ge-h2"] {
        let a = h.post(&common::chat(model, false)).await;
        assert_eq!(a.status, 200, "{model}: {}", a.body);
        assert!(a.content().starts_with("word0 word1"), "{model}");
        let s = h.stream(&common::chat(model, true)).await;
        assert!(s.done(), "{model}");
        assert!(s.text().starts_with("word0 word1"), "{model}");
    }
    // 50 streams at once over the HTTP/2 provider.
    let body = common::chat("via-h2", true);
    let streams = (0..50).map(|_| h.stream(&body));
    for s in futures::future::join_all(streams).await {
        assert!(s.done() && s.text().starts_with("word0"));
    }
    let seen = h.mock.requests();
    let version_of = |model: &str| -> Vec<http::Version> {
        seen.iter()
            .filter(|r| r.model == model)
            .map(|r| r.version)
            .collect()
    };
    assert_eq!(version_of("m-h1"), [http::Version::HTTP_11; 2]);
    assert_eq!(version_of("m-h2"), [http::Version::HTTP_2; 52]);
    assert_eq!(version_of("m-an-h2"), [http::Version::HTTP_2; 2]);
    assert_eq!(version_of("m-ge-h2"), [http::Version::HTTP_2; 2]);
}

/// Past `http2_max_streams` streams on one HTTP/2 connection, the client
/// opens another connection to the provider rather than queueing requests
/// behind streams that may last minutes (hyper-util's pool alone keeps one
/// HTTP/2 connection per host). The mock allows 4 streams per connection;
/// each stream lasts about 3 s and each attempt may wait 1.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_providers_open_another_connection_when_one_is_full() {
    let addr = "127.0.0.1:0".parse().unwrap();
    let mock = modelux::mock::MockProvider::start_with_h2_streams(addr, Some(4))
        .await
        .unwrap();
    let slow = Behaviour {
        words: Some(10),
        chunk_interval_ms: 300,
        ..Behaviour::default()
    };
    mock.set("m-pooled", slow.clone());
    mock.set("m-one", slow);
    let config = json!({
        "providers": {
            "pooled": {"kind": "openai", "base_url": mock.openai_url(), "http2": true, "http2_max_streams": 4},
            "one": {"kind": "openai", "base_url": mock.openai_url(), "http2": true, "http2_max_streams": 1000}
        },
        "models": {
            "pooled": {"provider": "pooled", "upstream_model": "m-pooled", "timeout_ms": 1500},
            "one": {"provider": "one", "upstream_model": "m-one", "timeout_ms": 1500}
        },
        "routes": {}
    });
    let config = modelux::config::Config::from_value(config).unwrap();
    let h = common::serve(mock, modelux::gateway::Gateway::new(config, 1).unwrap()).await;

    let body = common::chat("pooled", true);
    let streams = futures::future::join_all((0..12).map(|_| h.stream(&body))).await;
    for s in &streams {
        assert_eq!(s.status, 200);
        assert!(s.done() && s.text().starts_with("word0"), "{:?}", s.events);
        assert!(s.events[0].at < Duration::from_millis(1500));
    }
    let seen = h.mock.requests();
    let mut conns: Vec<u64> = seen
        .iter()
        .filter(|r| r.model == "m-pooled")
        .inspect(|r| assert_eq!(r.version, http::Version::HTTP_2))
        .map(|r| r.connection)
        .collect();
    assert_eq!(conns.len(), 12);
    conns.sort_unstable();
    conns.dedup();
    assert_eq!(conns.len(), 3, "12 streams at 4 per connection");

    // What the limit prevents: told a connection carries 1,000 streams, the
    // client puts all 12 on one, the server takes 4, and the other 8 wait
    // past their attempt's timeout.
    let body = common::chat("one", true);
    let streams = futures::future::join_all((0..12).map(|_| h.stream(&body))).await;
    let served = streams
        .iter()
        .filter(|s| s.status == 200 && s.done())
        .count();
    assert_eq!(
        served,
        4,
        "{:?}",
        streams.iter().map(|s| s.status).collect::<Vec<_>>()
    );
}

/// An HTTP/2 connection to a provider that goes silent (dropped by a NAT
/// without a reset) is found by the client's pings and replaced, instead of
/// taking every request into its timeout for the ~15 minutes the kernel
/// takes to give up on it (HTTP/1.1 needs no ping: a timed-out request
/// closes its connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_provider_connection_is_replaced() {
    let mock = modelux::mock::MockProvider::start().await.unwrap();
    let upstream: std::net::SocketAddr = mock
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = common::blackhole::Blackhole::start(upstream).await;
    let config = json!({
        "providers": {
            "h2": {"kind": "openai", "base_url": format!("http://{}/v1", proxy.addr), "http2": true}
        },
        "models": {"m": {"provider": "h2", "upstream_model": "m-h2", "timeout_ms": 1000}},
        "routes": {}
    });
    let config = modelux::config::Config::from_value(config).unwrap();
    let h = common::serve(mock, modelux::gateway::Gateway::new(config, 1).unwrap()).await;
    let body = common::chat("m", false);

    assert_eq!(h.post(&body).await.status, 200);
    assert_eq!(proxy.conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    proxy.freeze();
    let lost = h.post(&body).await;
    assert_eq!(lost.status, 502, "{}", lost.body);
    assert!(lost.body.to_string().contains("timeout"), "{}", lost.body);

    // Silence for the ping interval, then an unanswered ping: the
    // connection is closed and the next request gets a new one.
    tokio::time::sleep(
        modelux::provider::HTTP2_KEEPALIVE_INTERVAL
            + modelux::provider::HTTP2_KEEPALIVE_TIMEOUT
            + Duration::from_secs(2),
    )
    .await;
    let back = h.post(&body).await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(proxy.conns.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// `GET /healthz` as raw HTTP/1.1 bytes.
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

/// Writes `request` to `s` and returns what one read brings back (the
/// response head, for the small answers these tests ask for).
async fn send_raw(s: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Waits (on the paused clock) for the gateway to close `s`, and checks it
/// did so `HEADER_READ_TIMEOUT` after now, not before and not much later.
async fn assert_closed_after_the_header_timeout(s: &mut tokio::net::TcpStream, what: &str) {
    use tokio::io::AsyncReadExt;
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(600), s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: the gateway never closed the connection"));
    assert!(matches!(read, Ok(0) | Err(_)), "{what}: {read:?}");
    let waited = start.elapsed();
    let limit = modelux::gateway::HEADER_READ_TIMEOUT;
    assert!(
        waited >= limit && waited < limit + Duration::from_secs(5),
        "{what}: {waited:?}"
    );
}

/// A client that opens a connection and never finishes its request headers
/// (slowloris) is disconnected after `HEADER_READ_TIMEOUT` instead of
/// holding a connection forever.
#[tokio::test(start_paused = true)]
async fn slow_and_idle_http1_clients_are_disconnected_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let h = common::start(one_route).await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert_closed_after_the_header_timeout(&mut s, "unfinished headers").await;
    // Other clients are served meanwhile and after; a kept-alive
    // connection left idle is closed after the same time.
    let mut ok = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let answer = send_raw(&mut ok, HEALTHZ).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_closed_after_the_header_timeout(&mut ok, "idle kept-alive connection").await;
}

/// A client that stops reading a stream is disconnected `SEND_TIMEOUT`
/// after its socket stopped taking data, and the provider's stream stops
/// with it, instead of both being held for as long as the socket stays open.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_disconnected_after_the_send_timeout() {
    use tokio::io::AsyncReadExt;
    let h = common::start(one_route).await;
    let words = long_answer(&h.mock, "m-primary");
    let addr: std::net::SocketAddr = h.url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let body = common::chat("default", true).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answer = send_raw(&mut s, format!("{head}{body}").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Stop reading. The buffers fill, and nothing moves until the timeout.
    cut_after_the_send_timeout(&h.mock, "m-primary", words).await;
    // The gateway closed the connection: what was buffered, then the end.
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(end, Ok(Ok(_)) | Ok(Err(_))),
        "the connection is still open"
    );
}

/// An HTTP/2 client that stops reading one stream while its connection
/// stays up (it answers pings; the stream's flow-control window stays shut,
/// so nothing fills the socket and the send timeout never fires) has that
/// stream cut `SEND_TIMEOUT` after it stopped, not before, and the
/// provider's stream stops with it. Its other streams are served.
#[tokio::test(start_paused = true)]
async fn an_http2_stream_its_client_stopped_reading_is_cut_after_the_send_timeout() {
    let h = common::start(one_route).await;
    let words = long_answer(&h.mock, "m-primary");
    // A 16 KiB window per stream on a 16 MiB connection window: the stalled
    // stream shuts its own window, not the connection's.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(16 * 1024)
        .http2_initial_connection_window_size(16 * 1024 * 1024)
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&common::chat("default", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    // Not read from here on, but kept open.
    cut_after_the_send_timeout(&h.mock, "m-primary", words).await;
    // The same connection still serves.
    let ok = client
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The stalled stream ends in an error, never in a clean end.
    let rest = tokio::time::timeout(Duration::from_secs(5), resp.bytes()).await;
    assert!(
        matches!(rest, Ok(Err(_))),
        "the cut stream did not fail: {:?}",
        rest.map(|r| r.map(|b| b.len()))
    );
}

/// A request body that stops arriving is answered 408 (in the OpenAI error
/// format) `BODY_READ_TIMEOUT` after its last byte; one that keeps arriving,
/// however slowly, is served.
#[tokio::test(start_paused = true)]
async fn a_request_body_that_stops_arriving_gets_a_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = common::start(one_route).await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let body = common::chat("default", false).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let limit = modelux::gateway::BODY_READ_TIMEOUT;
    async fn response(s: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&out).contains("}") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    // Stalls after 20 bytes of its body.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..20]).await.unwrap();
    let start = tokio::time::Instant::now();
    let answer = tokio::time::timeout(limit * 2, response(&mut s))
        .await
        .expect("an answer, not a connection held forever");
    let waited = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(
        waited >= limit && waited < limit + Duration::from_secs(2),
        "answered after {waited:?}"
    );

    // Sends its body in five pieces, each just within the limit.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let pieces: Vec<&[u8]> = body.as_bytes().chunks(body.len().div_ceil(5)).collect();
    for piece in pieces {
        tokio::time::sleep(limit - Duration::from_secs(5)).await;
        s.write_all(piece).await.unwrap();
    }
    let answer = response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// At `server.max_connections` the gateway stops accepting; a connection
/// waiting in the backlog is served as soon as another closes.
#[tokio::test]
async fn past_max_connections_new_connections_wait_for_a_free_one() {
    use tokio::io::AsyncReadExt;
    let h = common::start(|m| {
        let mut c = one_route(m);
        c["server"] = json!({"max_connections": 2});
        c
    })
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(send_raw(&mut first, HEALTHZ)
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(send_raw(&mut second, HEALTHZ)
        .await
        .starts_with("HTTP/1.1 200"));
    // The third is queued by the kernel, not served.
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let waiting =
        tokio::time::timeout(Duration::from_millis(500), send_raw(&mut third, HEALTHZ)).await;
    assert!(waiting.is_err(), "served past the limit: {waiting:?}");
    // One closes: the third is accepted and answered.
    drop(first);
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    drop((second, third));
    let (status, metrics) = h.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("modelux_client_connections "), "{metrics}");
}

/// Before hyper's header timeout starts, the protocol must be known: a
/// client that connects and sends nothing, or only part of the HTTP/2
/// preface, is disconnected after `HEADER_READ_TIMEOUT` too.
#[tokio::test(start_paused = true)]
async fn silent_clients_and_partial_http2_prefaces_are_disconnected() {
    use tokio::io::AsyncWriteExt;
    let h = common::start(one_route).await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    for (sent, what) in [
        (&b""[..], "silent client"),
        (b"PRI * HTTP/2.0\r\n", "partial preface"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        assert_closed_after_the_header_timeout(&mut s, what).await;
    }
    // A whole preface is HTTP/2: served.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

/// `server.max_in_flight` bounds the requests served at once, a stream
/// counting until its last byte, also when they all come over one HTTP/2
/// connection (which `max_connections` cannot bound): past it a request
/// gets an OpenAI-format 503 with `Retry-After` at once, and requests are
/// served again as soon as one finishes.
#[tokio::test]
async fn past_max_in_flight_requests_get_503_at_once_even_over_one_http2_connection() {
    let h = common::start(|m| {
        let mut c = one_route(m);
        c["server"] = json!({"max_in_flight": 2});
        c
    })
    .await;
    h.mock.set(
        "m-primary",
        Behaviour {
            words: Some(10),
            chunk_interval_ms: 200,
            ..Behaviour::default()
        },
    );
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", h.url);
    let send = |stream: bool| {
        client
            .post(&url)
            .json(&common::chat("default", stream))
            .send()
    };
    // Two streams, open until their last chunk (≈ 2 s).
    let first = send(true).await.unwrap();
    let second = send(true).await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(first.version(), http::Version::HTTP_2);

    let started = std::time::Instant::now();
    let shed = send(false).await.unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["x-should-retry"], "true");
    assert!(shed.headers().contains_key("x-modelux-request-id"));
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(body["error"]["code"], "gateway_overloaded", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shed at once, not queued behind the streams: {:?}",
        started.elapsed()
    );
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("modelux_requests_shed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("modelux_requests_refused_total{reason=\"overloaded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("modelux_in_flight_requests 2"),
        "{metrics}"
    );

    // The streams finish whole; then requests are admitted again.
    for resp in [first, second] {
        let text = resp.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
    let after = send(false).await.unwrap();
    assert_eq!(after.status(), 200);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("modelux_in_flight_requests 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("modelux_requests_shed_total 1"),
        "{metrics}"
    );
}

/// An HTTP/2 client that never opens its flow-control window is
/// disconnected: for a complete answer once it has waited `SEND_TIMEOUT`;
/// for a stream once the stream watch cut it (after `SEND_TIMEOUT`) and the
/// client did not come back for another. hyper never polls a body it may
/// not send, so nothing else would ever free the connection, its open
/// request and what the answer holds (the idle timeout does not apply while
/// a request is open).
#[tokio::test(start_paused = true)]
async fn an_http2_client_that_never_takes_its_answer_is_disconnected() {
    let h = common::start(one_route).await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let limit = modelux::gateway::SEND_TIMEOUT;
    for stream in [false, true] {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let body = serde_json::to_vec(&common::chat("default", stream)).unwrap();
        send.send_data(body.into(), true).unwrap();
        // The head is not flow-controlled: it arrives; the body cannot.
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let started = tokio::time::Instant::now();
        let ended = tokio::time::timeout(limit * 4, conn).await;
        assert!(
            ended.is_ok(),
            "stream: {stream}: the connection is still open after {:?}",
            limit * 4
        );
        assert!(
            started.elapsed() >= limit,
            "stream: {stream}: closed after {:?}, before the send timeout",
            started.elapsed()
        );
    }
}

/// A body declared larger than `server.max_body_bytes` is refused from its
/// headers, before a byte of it is read: no `100 Continue`, the 413 at once
/// (before, the gateway invited the body and read 4 MiB of it first).
#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = common::start(one_route).await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("request_too_large"), "{head}");
}

/// A client that sends the start of HTTP/2's preface and closes frees its
/// connection at once. Before, the protocol check peeked, which cannot see
/// the close behind unread bytes, and held the connection until the idle
/// timeout: twenty one-byte connections filled `max_connections: 20`.
#[tokio::test]
async fn a_client_that_closes_mid_preface_frees_its_connection_at_once() {
    use tokio::io::AsyncWriteExt;
    let h = common::start(|m| {
        let mut c = one_route(m);
        c["server"] = json!({"max_connections": 2});
        c
    })
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    for first in [&b"P"[..], b"PRI * HTTP/2.0"] {
        for _ in 0..2 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(first).await.unwrap();
            drop(s);
        }
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        h.post(&common::chat("default", false)),
    )
    .await
    .expect("served, not queued behind connections already closed");
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// A client that sends its body slowly holds a connection, not one of
/// `max_in_flight`'s slots: the slot is taken once the body is in. Before,
/// two such clients (one byte every few seconds keeps a body read alive)
/// made every other request get 503 with `max_in_flight: 2`.
#[tokio::test]
async fn a_slow_request_body_holds_no_in_flight_slot() {
    use tokio::io::AsyncWriteExt;
    let h = common::start(|m| {
        let mut c = one_route(m);
        c["server"] = json!({"max_in_flight": 2});
        c
    })
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"model\"",
        )
        .await
        .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = h.post(&common::chat("default", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        !metrics.contains("modelux_requests_shed_total"),
        "{metrics}"
    );
    drop(slow);
}

/// `server.max_body_bytes_in_flight` bounds the request bodies held at
/// once, whoever sends them: past it a request gets the overload 503 (which
/// SDKs retry) before its body is read. Without it, clients sending large
/// bodies slowly held up to `max_connections` × `max_body_bytes` (80 GiB
/// with the defaults); an audit saw 426 MB for 100 bodies of 4 MiB.
#[tokio::test]
async fn request_bodies_held_at_once_are_bounded_in_bytes() {
    use tokio::io::AsyncWriteExt;
    let h = common::start(|m| {
        let mut c = one_route(m);
        c["server"] = json!({"max_body_bytes": 8192, "max_body_bytes_in_flight": 8192});
        c
    })
    .await;
    let gauge = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("modelux_body_bytes_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    // A client that sent 8,150 bytes of its body and waits.
    let addr = h.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 8190\r\n\r\n";
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&[b' '; 8150]).await.unwrap();
    let mut held = 0;
    for _ in 0..100 {
        held = gauge(&h.get("/metrics").await.1);
        if held == 8150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        held, 8150,
        "the slow body's bytes are counted as they arrive"
    );

    let refused = h.post(&common::chat("default", false)).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "gateway_overloaded");
    assert_eq!(refused.header("retry-after"), "1");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request body bytes"),
        "{}",
        refused.body
    );
    assert_eq!(h.mock.request_count("m-primary"), 0);

    // The slow client leaves: its bytes are released, and requests pass.
    drop(slow);
    let mut answer = h.post(&common::chat("default", false)).await;
    for _ in 0..100 {
        if answer.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = h.post(&common::chat("default", false)).await;
    }
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        gauge(&h.get("/metrics").await.1),
        0,
        "released with the request"
    );
}

/// An HTTP/2 connection with no request open for `server.idle_timeout_ms`
/// is sent a GOAWAY and closed (it would otherwise hold one of
/// `max_connections` for as long as its client answers pings); a stream
/// that outlasts the timeout keeps its connection and is never cut.
#[tokio::test(start_paused = true)]
async fn an_http2_connection_is_closed_once_idle_for_the_idle_timeout_not_while_streaming() {
    use http_body_util::BodyExt;
    let idle = Duration::from_secs(5);
    let h = common::start(|m| {
        let mut c = one_route(m);
        c["server"] = json!({"idle_timeout_ms": idle.as_millis() as u64});
        c
    })
    .await;
    // A stream of ≈ 12 s, more than twice the idle timeout.
    h.mock.set(
        "m-primary",
        Behaviour {
            words: Some(4),
            chunk_interval_ms: 3_000,
            ..Behaviour::default()
        },
    );
    let addr = h.url.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let mut conn = tokio::spawn(conn);
    let start = tokio::time::Instant::now();
    let req = http::Request::post(format!("{}/v1/chat/completions", h.url))
        .header("content-type", "application/json")
        .body(http_body_util::Full::<bytes::Bytes>::from(
            common::chat("default", true).to_string(),
        ))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(start.elapsed() > 2 * idle, "{:?}", start.elapsed());
    assert!(!conn.is_finished(), "the connection closed under a stream");

    // Idle from now: closed after the timeout, not before.
    let idle_from = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(120), &mut conn)
        .await
        .expect("an idle HTTP/2 connection was kept open");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    let waited = idle_from.elapsed();
    assert!(
        waited >= idle && waited < idle + Duration::from_secs(2),
        "closed {waited:?} after its last request"
    );
}
