//! Versioned configs through the admin API: auth, validation, activation
//! under load, If-Match, rollback, diff, audit, secrets, durability.

mod common;

use std::time::Duration;

use modelux::mock::{Behaviour, MockProvider};
use reqwest::Method;
use serde_json::{json, Value};

fn config_to(mock: &MockProvider, model: &str) -> Value {
    json!({
        "providers": {
            "oa": {"kind": "openai", "base_url": mock.openai_url(), "api_key": "sk-literal-SECRET-in-config"},
            "an": {"kind": "anthropic", "base_url": mock.url()}
        },
        "models": {
            "primary": {"provider": "oa", "upstream_model": "m-primary"},
            "other": {"provider": "an", "upstream_model": "m-other"}
        },
        "routes": {"default": {"attempts": [{"model": model, "timeout_ms": 5000}]}}
    })
}

fn sqlite_url(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("modelux-admin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite:{}", dir.join("modelux.db").display())
}

async fn served_model(h: &common::Harness) -> (String, String) {
    let a = h.post(&common::chat("default", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    (
        a.header("x-modelux-model"),
        a.header("x-modelux-config-version"),
    )
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let h = common::start_with_store("memory", |m| config_to(m, "primary")).await;
    let (s, _) = h
        .admin_with(Method::GET, "/admin/config", None, None, None)
        .await;
    assert_eq!(s, 401);
    let (s, v) = h
        .admin_with(Method::GET, "/admin/config", None, Some("wrong"), None)
        .await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["message"], "unauthorized");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["code"], "unauthorized");
    let (s, v) = h.admin(Method::GET, "/admin/config", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["version"], 1);
    // No token configured at all: 403 saying how to configure one.
    h.gateway
        .set_admin_tokens(modelux::gateway::AdminTokens::default());
    let (s, v) = h.admin(Method::GET, "/admin/config", None).await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "admin_disabled", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("MODELUX_ADMIN_TOKEN"));
}

#[tokio::test]
async fn create_activate_if_match_rollback_diff_and_audit() {
    let h = common::start_with_store("memory", |m| config_to(m, "primary")).await;
    assert_eq!(served_model(&h).await, ("primary".into(), "1".into()));

    // An invalid config is refused with every problem, and nothing is stored.
    let mut bad = config_to(&h.mock, "ghost");
    bad["routes"]["default"]["retry_on"] = json!(["teapot"]);
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/versions",
            Some(json!({"config": bad, "message": "oops"})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_config", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let paths: Vec<_> = v["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        paths.contains(&"$.routes.default.attempts[0].model".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"$.routes.default.retry_on[0]".to_owned()),
        "{paths:?}"
    );
    let (_, list) = h.admin(Method::GET, "/admin/config/versions", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // Store v2 without activating, then activate it.
    let v2 = config_to(&h.mock, "other");
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/versions",
            Some(json!({"config": v2, "message": "to anthropic"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(served_model(&h).await.0, "primary", "stored, not active");

    // A stale If-Match changes nothing.
    let (s, v) = h
        .admin_with(
            Method::POST,
            "/admin/config/versions/2/activate",
            None,
            Some(common::ADMIN_TOKEN),
            Some(7),
        )
        .await;
    assert_eq!(s, 412);
    assert_eq!(v["error"]["code"], "version_conflict", "{v}");
    assert_eq!(served_model(&h).await.0, "primary");
    let (s, v) = h
        .admin(Method::POST, "/admin/config/versions/99/activate", None)
        .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "version_not_found", "{v}");
    let (s, v) = h
        .admin_with(
            Method::POST,
            "/admin/config/versions/2/activate",
            None,
            Some(common::ADMIN_TOKEN),
            Some(1),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["active"], 2);
    assert_eq!(served_model(&h).await, ("other".into(), "2".into()));

    // Diff and the version listing.
    let (s, d) = h
        .admin(Method::GET, "/admin/config/diff?from=1&to=2", None)
        .await;
    assert_eq!(s, 200);
    let changes = d["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["path"] == "$.routes.default.attempts[0].model"
                && c["from"] == "primary"
                && c["to"] == "other"),
        "{d}"
    );
    let (_, list) = h.admin(Method::GET, "/admin/config/versions", None).await;
    let data = list["data"].as_array().unwrap();
    assert_eq!(data[0]["version"], 2);
    assert_eq!(data[0]["active"], true);
    assert_eq!(data[0]["author"], "ops-alice");
    assert_eq!(data[0]["based_on"], 1);
    assert_eq!(data[0]["sha256"].as_str().unwrap().len(), 64);

    // Rollback restores behaviour, creates no version, and is audited.
    let (s, v) = h.admin(Method::POST, "/admin/config/rollback", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["active"], 1);
    assert_eq!(served_model(&h).await, ("primary".into(), "1".into()));
    let (_, list) = h.admin(Method::GET, "/admin/config/versions", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let (s, v) = h.admin(Method::GET, "/admin/audit?limit=0", None).await;
    assert_eq!(
        (s, v["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    let (s, v) = h.admin(Method::POST, "/admin/config/rollback", None).await;
    assert_eq!(s, 409, "nothing before version 1");
    assert_eq!(v["error"]["code"], "nothing_to_roll_back", "{v}");
    assert_eq!(v["error"]["type"], "conflict_error", "{v}");
    let (_, audit) = h.admin(Method::GET, "/admin/audit", None).await;
    let actions: Vec<_> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(actions.contains(&("rollback".into(), 1)), "{actions:?}");
    assert!(actions.contains(&("activate".into(), 2)), "{actions:?}");
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["actor"] == "ops-alice"));

    // No endpoint ever shows the literal key or the admin token.
    let mut seen = String::new();
    for path in [
        "/admin/config",
        "/admin/config/versions",
        "/admin/config/versions/1",
        "/admin/config/versions/2",
        "/admin/config/diff?from=1&to=2",
        "/admin/audit",
        "/admin/status",
    ] {
        let (s, v) = h.admin(Method::GET, path, None).await;
        assert_eq!(s, 200, "{path}: {v}");
        seen.push_str(&v.to_string());
    }
    assert!(seen.contains("\"***\""), "the key shows as ***");
    assert!(!seen.contains("sk-literal-SECRET-in-config"));
    assert!(!seen.contains(common::ADMIN_TOKEN));
    let (_, metrics) = h.get("/metrics").await;
    assert!(!metrics.contains("SECRET"));
}

/// Requests the extractors reject (a version that is not a number, a
/// diff without `to`, a body over the limit) get the admin API's JSON
/// error with the right status, not axum's plain text; so does a trace id
/// that is not UTF-8 on `/v1`, in OpenAI's format.
#[tokio::test]
async fn malformed_admin_requests_get_json_errors() {
    let h = common::start_with_store("memory", |m| config_to(m, "primary")).await;
    for (method, path, status) in [
        (Method::GET, "/admin/config/versions/abc", 400),
        (Method::GET, "/admin/config/diff?from=1", 400),
        (Method::GET, "/admin/audit?limit=x", 400),
        (Method::POST, "/admin/config/versions/x/activate", 400),
    ] {
        let (s, v) = h.admin(method, path, None).await;
        assert_eq!(s, status, "{path}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}: {v}"
        );
    }
    // Over the admin body limit.
    let big = json!({"config": config_to(&h.mock, "primary"), "message": "x".repeat(3 << 20)});
    let (s, v) = h
        .admin(Method::POST, "/admin/config/versions", Some(big))
        .await;
    assert_eq!(s, 413, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(v["error"]["code"], "body_too_large", "{v}");
    // Not JSON at all.
    let resp = h
        .client
        .post(format!("{}/admin/config/dry-run", h.url))
        .bearer_auth(common::ADMIN_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");

    let (s, body) = h.get("/v1/traces/%FF%FE").await;
    assert_eq!(s, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
}

/// An admin request body that stops arriving is answered 408 in the admin
/// API's JSON error format `BODY_READ_TIMEOUT` after its last byte (as on
/// `/v1`), not 400 as if the client had sent something malformed; one that
/// keeps arriving, however slowly, is served.
#[tokio::test(start_paused = true)]
async fn an_admin_request_body_that_stops_arriving_gets_a_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = common::start_with_store("memory", |m| config_to(m, "primary")).await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let limit = modelux::gateway::BODY_READ_TIMEOUT;
    let head = |path: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: {len}\r\n\r\n",
            common::ADMIN_TOKEN
        )
    };
    /// The status line, the headers (lower-cased) and the body.
    async fn response(s: &mut tokio::net::TcpStream) -> (String, String, Value) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&out).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let head = head.to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if body.len() >= len {
                    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
                    let json = serde_json::from_str(body).unwrap_or(Value::String(body.into()));
                    return (status.to_owned(), headers.to_owned(), json);
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer: {text}");
            out.extend_from_slice(&buf[..n]);
        }
    }

    let create = json!({"config": config_to(&h.mock, "other"), "message": "slow"}).to_string();
    let dry_run = json!({"candidate_version": 1}).to_string();
    for (path, body) in [
        ("/admin/config/versions", &create),
        ("/admin/config/dry-run", &dry_run),
    ] {
        // Stalls after 10 bytes of its body.
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(head(path, body.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(&body.as_bytes()[..10]).await.unwrap();
        let start = tokio::time::Instant::now();
        let (status, headers, v) = tokio::time::timeout(limit * 2, response(&mut s))
            .await
            .expect("an answer, not a connection held forever");
        let waited = start.elapsed();
        assert_eq!(status, "http/1.1 408 request timeout", "{path}: {v}");
        assert!(
            headers.contains("content-type: application/json"),
            "{path}: {headers}"
        );
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("stopped arriving") && message.contains("60 s"),
            "{path}: {v}"
        );
        assert!(
            waited >= limit && waited < limit + Duration::from_secs(2),
            "{path}: answered after {waited:?}"
        );
    }

    // Sends its body in five pieces, each just within the limit: stored.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(head("/admin/config/versions", create.len()).as_bytes())
        .await
        .unwrap();
    for piece in create.as_bytes().chunks(create.len().div_ceil(5)) {
        tokio::time::sleep(limit - Duration::from_secs(5)).await;
        s.write_all(piece).await.unwrap();
    }
    let (status, _, v) = response(&mut s).await;
    assert_eq!(status, "http/1.1 201 created", "{v}");
    assert_eq!(v["version"], 2, "{v}");
}

/// A version whose key variable is unset on this replica (stored by another
/// replica where it is set, or straight into the store) is never made
/// active through this one: activate is refused with the problem, and a
/// rollback that lands on it is undone, so the store never names an active
/// version the replica does not serve.
#[tokio::test]
async fn a_version_this_replica_cannot_serve_is_never_made_active() {
    use modelux::store::{NewVersion, VersionSource};
    let url = sqlite_url("uncompilable");
    let h = common::start_with_store(&url, |m| config_to(m, "primary")).await;
    let store = modelux::store::open(&url).await.unwrap();
    let mut needs_key = config_to(&h.mock, "other");
    needs_key["providers"]["an"]["api_key_env"] = json!("MODELUX_TEST_NEVER_SET_4F1C");
    let stored = store
        .create_version(NewVersion {
            config: needs_key,
            author: "elsewhere".into(),
            message: "needs a key this replica lacks".into(),
            based_on: Some(1),
            source: VersionSource::Api,
            activate: false,
        })
        .await
        .unwrap();
    assert_eq!(stored.version, 2);

    let (s, v) = h
        .admin(Method::POST, "/admin/config/versions/2/activate", None)
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("MODELUX_TEST_NEVER_SET_4F1C"), "{v}");
    assert_eq!(store.active().await.unwrap().unwrap().version, 1);
    assert_eq!(served_model(&h).await, ("primary".into(), "1".into()));

    // Made active behind this replica's back, then version 3 on top through
    // the API: a rollback would land on version 2.
    store.activate(2, "elsewhere", None).await.unwrap();
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/versions",
            Some(
                json!({"config": config_to(&h.mock, "primary"), "message": "v3", "activate": true}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(served_model(&h).await, ("primary".into(), "3".into()));
    let (s, v) = h.admin(Method::POST, "/admin/config/rollback", None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("MODELUX_TEST_NEVER_SET_4F1C"), "{v}");
    assert_eq!(store.active().await.unwrap().unwrap().version, 3);
    assert_eq!(served_model(&h).await, ("primary".into(), "3".into()));
}

#[tokio::test]
async fn activation_under_load_loses_nothing_and_mixes_no_versions() {
    let h = common::start_with_store("memory", |m| config_to(m, "primary")).await;
    for m in ["m-primary", "m-other"] {
        h.mock.set(
            m,
            Behaviour {
                words: Some(6),
                chunk_interval_ms: 100,
                latency_ms: 20,
                ..Behaviour::default()
            },
        );
    }
    // A stream that starts on version 1 ...
    let h = std::sync::Arc::new(h);
    let h2 = h.clone();
    let stream = tokio::spawn(async move { h2.stream(&common::chat("default", true)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // ... and a steady load of short requests across the activation.
    let mut load = Vec::new();
    for i in 0..40 {
        let h3 = h.clone();
        load.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 10)).await;
            let a = h3.post(&common::chat("default", false)).await;
            (
                a.status,
                a.header("x-modelux-config-version"),
                a.header("x-modelux-model"),
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/versions",
            Some(json!({"config": config_to(&h.mock, "other"), "activate": true})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let s = stream.await.unwrap();
    assert!(s.done(), "the stream finished");
    assert_eq!(s.header("x-modelux-config-version"), "1");
    assert_eq!(
        s.header("x-modelux-model"),
        "primary",
        "finished on the version it started with"
    );
    let t = h.trace(&s.header("x-modelux-request-id")).await;
    assert_eq!(t["config_version"], 1);
    let mut versions = std::collections::BTreeSet::new();
    for r in load {
        let (status, version, model) = r.await.unwrap();
        assert_eq!(status, 200, "no request lost");
        // Each request is wholly on one version.
        assert_eq!(model, if version == "1" { "primary" } else { "other" });
        versions.insert(version);
    }
    assert!(
        versions.contains("2"),
        "new requests see version 2: {versions:?}"
    );
    assert_eq!(served_model(&h).await.1, "2");
}

struct Proc {
    child: std::process::Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_gateway(config: &std::path::Path, store: &str) -> Proc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(common::example("gateway"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--store",
            store,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("MODELUX_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{url}/healthz")).await.is_ok() {
            return Proc { child, url };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    panic!("gateway did not start");
}

async fn admin_call(url: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{url}{path}"))
        .bearer_auth(common::ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn sigkill_after_activation_and_restarts_with_the_same_file() {
    let mock = MockProvider::start().await.unwrap();
    let store = sqlite_url("kill");
    let dir = std::env::temp_dir().join(format!("modelux-admin-{}-killcfg", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.json");
    std::fs::write(&file, config_to(&mock, "primary").to_string()).unwrap();

    let g = spawn_gateway(&file, &store).await;
    let (s, v) = admin_call(
        &g.url,
        Method::POST,
        "/admin/config/versions",
        Some(json!({"config": config_to(&mock, "other"), "activate": true})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // SIGKILL right after the activation returned.
    drop(g);
    let g = spawn_gateway(&file, &store).await;
    let (_, v) = admin_call(&g.url, Method::GET, "/admin/config", None).await;
    assert_eq!(
        v["version"], 2,
        "the activated version survives SIGKILL and a restart with the same file"
    );
    // A rollback through the API survives a restart with the unchanged file.
    let (s, v) = admin_call(&g.url, Method::POST, "/admin/config/rollback", None).await;
    assert_eq!((s, v["active"].clone()), (200, json!(1)));
    drop(g);
    let g = spawn_gateway(&file, &store).await;
    let (_, v) = admin_call(&g.url, Method::GET, "/admin/config", None).await;
    assert_eq!(v["version"], 1);
    let (_, list) = admin_call(&g.url, Method::GET, "/admin/config/versions", None).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        2,
        "no re-import of an unchanged file"
    );
    // A changed file is imported as a new active version.
    drop(g);
    std::fs::write(
        &file,
        config_to(&mock, "other")
            .to_string()
            .replace("5000", "4000"),
    )
    .unwrap();
    let g = spawn_gateway(&file, &store).await;
    let (_, v) = admin_call(&g.url, Method::GET, "/admin/config", None).await;
    assert_eq!(v["version"], 3);
}

#[path = "pg/mod.rs"]
mod pg;

#[tokio::test]
async fn two_gateway_processes_share_one_postgres_database() {
    let db = pg::database("replicas").await;
    let mock = MockProvider::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("modelux-admin-{}-pg", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.json");
    std::fs::write(&file, config_to(&mock, "primary").to_string()).unwrap();
    let a = spawn_gateway(&file, &db).await;
    let b = spawn_gateway(&file, &db).await;
    let model_of = |url: String| async move {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&common::chat("default", false))
            .send()
            .await
            .unwrap();
        (
            r.headers()["x-modelux-model"].to_str().unwrap().to_owned(),
            r.headers()["x-modelux-config-version"]
                .to_str()
                .unwrap()
                .to_owned(),
        )
    };
    assert_eq!(
        model_of(b.url.clone()).await,
        ("primary".into(), "1".into())
    );
    let converge = |want: u64| {
        let url = b.url.clone();
        async move {
            let start = std::time::Instant::now();
            loop {
                let (_, v) = admin_call(&url, Method::GET, "/admin/status", None).await;
                if v["version"] == want {
                    return start.elapsed();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "replica b did not converge on {want} within 2 s: {v}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // An activation made through a ...
    let (s, v) = admin_call(
        &a.url,
        Method::POST,
        "/admin/config/versions",
        Some(json!({"config": config_to(&mock, "other"), "activate": true})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    converge(2).await;
    // ... is served by b.
    assert_eq!(model_of(b.url.clone()).await, ("other".into(), "2".into()));
    // And a rollback made through b is served by a.
    let (s, _) = admin_call(&b.url, Method::POST, "/admin/config/rollback", None).await;
    assert_eq!(s, 200);
    let start = std::time::Instant::now();
    loop {
        let (_, v) = admin_call(&a.url, Method::GET, "/admin/status", None).await;
        if v["version"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "replica a did not converge: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        model_of(a.url.clone()).await,
        ("primary".into(), "1".into())
    );
    let (_, st) = admin_call(&a.url, Method::GET, "/admin/status", None).await;
    assert_eq!(st["store_ok"], true);
    assert!(st["store"].as_str().unwrap().starts_with("postgres"));
}

/// A database that stops answering on the connections a replica holds (a
/// partition, a failover behind a NAT: no reset) is reported within the
/// store's timeouts (10 s to check out a pooled connection, 15 s for any
/// operation once it has one), while requests are served on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_is_noticed_and_requests_are_served_on() {
    let url = pg::database("silent").await;
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let proxy = common::blackhole::Blackhole::start(([127, 0, 0, 1], port).into()).await;
    let via = url.replace(&format!(":{port}/"), &format!(":{}/", proxy.addr.port()));
    let h = common::start_with_store(&via, |m| config_to(m, "primary")).await;
    assert_eq!(health(&h).await["store_ok"], true);

    proxy.freeze();
    let t = std::time::Instant::now();
    loop {
        // Noticed: the replica reported the store down (it may be up
        // again already, over a new connection).
        let v = health(&h).await;
        if v["last_store_error"].is_string() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "the silent database was not noticed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("silence noticed after {:?}", t.elapsed());
    assert_eq!(served_model(&h).await.0, "primary");
}

/// A replica restarting with the previous deploy's config file (it was not
/// updated yet) does not import it again: that activated the old file for
/// the whole fleet and silently reverted the deploy.
#[tokio::test]
async fn an_older_config_file_is_not_imported_again() {
    use modelux::config::Config;
    use modelux::gateway::Gateway;
    let mock = MockProvider::start().await.unwrap();
    let url = sqlite_url("older-file");
    let c1 = Config::from_value(config_to(&mock, "primary")).unwrap();
    let c2 = Config::from_value(config_to(&mock, "other")).unwrap();
    let store = modelux::store::open(&url).await.unwrap();
    let start = |c: &Config| {
        let (store, c) = (store.clone(), c.clone());
        let url = url.clone();
        async move {
            Gateway::with_store(store, &url, Some((c, "modelux.json")))
                .await
                .unwrap()
                .version()
        }
    };
    assert_eq!(start(&c1).await, 1);
    assert_eq!(start(&c2).await, 2, "the new deploy's file is imported");
    assert_eq!(start(&c1).await, 2, "the old one is not imported again");
    assert_eq!(store.versions().await.unwrap().len(), 2);
    assert_eq!(store.active().await.unwrap().unwrap().version, 2);
    assert_eq!(start(&c2).await, 2);
}

/// A push that activates can say which version it was edited from
/// (If-Match): when another operator activated a version in between, it is
/// stored but not activated (412) rather than silently replacing theirs.
#[tokio::test]
async fn a_push_with_a_stale_if_match_is_stored_but_not_activated() {
    let h = common::start_with_store("memory", |m| config_to(m, "primary")).await;
    let push = |model: &str, if_match: Option<u64>| {
        let body = json!({"config": config_to(&h.mock, model), "message": model, "activate": true});
        h.admin_with(
            Method::POST,
            "/admin/config/versions",
            Some(body),
            Some(common::ADMIN_TOKEN),
            if_match,
        )
    };
    // Bob, editing from version 1, goes first.
    let (s, v) = push("other", Some(1)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["version"], 2);
    // Alice edited from version 1 too.
    let (s, v) = push("primary", Some(1)).await;
    assert_eq!(s, 412, "{v}");
    assert!(v.to_string().contains("stored as version 3"), "{v}");
    let (_, list) = h.admin(Method::GET, "/admin/config/versions", None).await;
    let active: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["active"] == true)
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(active, [2], "{list}");
    assert_eq!(served_model(&h).await.1, "2");
    // From the version that is active, it goes through.
    let (s, v) = push("primary", Some(2)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(served_model(&h).await, ("primary".into(), "4".into()));
}

/// A replica starting on a store whose active version names a key variable
/// it lacks (activated through another replica) serves the newest older
/// version it can and says so, rather than refusing to start: every restart
/// or scale-up of such a replica crash-looped.
#[tokio::test]
async fn a_replica_starts_on_an_older_version_when_it_cannot_serve_the_active_one() {
    let url = sqlite_url("restart-split");
    let h = common::start_with_store(&url, |m| config_to(m, "primary")).await;
    let store = modelux::store::open(&url).await.unwrap();
    store_version_needing(&store, &h.mock, "MODELUX_TEST_NEVER_SET_5B7D", true).await;
    let restarted = modelux::gateway::Gateway::with_store(store.clone(), &url, None)
        .await
        .expect("starts on an older version");
    assert_eq!(restarted.version(), 1);
    restarted.set_admin_tokens(modelux::gateway::AdminTokens::single(
        "ops-alice",
        common::ADMIN_TOKEN,
    ));
    let mock = modelux::mock::MockProvider::start().await.unwrap();
    let r = common::serve(mock, restarted).await;
    let v = health(&r).await;
    assert_eq!(v["status"], "degraded", "{v}");
    assert!(
        v["apply_error"].as_str().is_some_and(
            |e| e.starts_with("version 2:") && e.contains("MODELUX_TEST_NEVER_SET_5B7D")
        ),
        "{v}"
    );
    // Nothing in the store changed: version 2 stays the fleet's active one.
    assert_eq!(store.active().await.unwrap().unwrap().version, 2);
}

/// Stores a version (active or not) that names a key variable this
/// process never has, as another replica with the variable would.
async fn store_version_needing(
    store: &std::sync::Arc<dyn modelux::store::ConfigStore>,
    mock: &MockProvider,
    var: &str,
    activate: bool,
) -> u64 {
    let mut needs_key = config_to(mock, "other");
    needs_key["providers"]["an"]["api_key_env"] = json!(var);
    store
        .create_version(modelux::store::NewVersion {
            config: needs_key,
            author: "elsewhere".into(),
            message: "needs a key this replica lacks".into(),
            based_on: Some(1),
            source: modelux::store::VersionSource::Api,
            activate,
        })
        .await
        .unwrap()
        .version
}

async fn health(h: &common::Harness) -> Value {
    let (s, b) = h.get("/healthz").await;
    assert_eq!(s, 200, "/healthz is 200 while serving: {b}");
    serde_json::from_str(&b).unwrap()
}

/// A replica that cannot apply the fleet's active version (a key variable
/// set on other replicas only) keeps serving its own and says so: /healthz
/// is `degraded` with the reason and `modelux_config_apply_failed` is 1
/// (before, only /admin/status told, /healthz said `ok`). Once the fleet
/// is back on a version it serves, both clear (the error used to stay).
#[tokio::test]
async fn a_replica_that_cannot_apply_the_active_version_says_so_until_it_can() {
    let url = sqlite_url("split");
    let h = common::start_with_store(&url, |m| config_to(m, "primary")).await;
    let store = modelux::store::open(&url).await.unwrap();
    store_version_needing(&store, &h.mock, "MODELUX_TEST_NEVER_SET_9A2E", true).await;
    let until = |want: &'static str| {
        let h = &h;
        async move {
            for _ in 0..100 {
                let v = health(h).await;
                if v["status"] == want {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("/healthz never said {want}: {}", health(h).await);
        }
    };
    let v = until("degraded").await;
    assert!(
        v["apply_error"]
            .as_str()
            .is_some_and(|e| e.contains("MODELUX_TEST_NEVER_SET_9A2E")),
        "{v}"
    );
    assert_eq!(v["config_version"], 1);
    assert_eq!(v["store_ok"], true);
    let (_, m) = h.get("/metrics").await;
    assert!(m.contains("modelux_config_apply_failed 1"), "{m}");
    assert_eq!(served_model(&h).await, ("primary".into(), "1".into()));

    store.activate(1, "elsewhere", None).await.unwrap();
    let v = until("ok").await;
    assert!(v["apply_error"].is_null(), "{v}");
    let (_, s) = h.admin(Method::GET, "/admin/status", None).await;
    assert!(s["apply_error"].is_null(), "{s}");
    let (_, m) = h.get("/metrics").await;
    assert!(m.contains("modelux_config_apply_failed 0"), "{m}");
}

/// A gateway whose PostgreSQL goes away keeps serving its last active
/// version, says so in /healthz, and recovers when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_its_database_keeps_serving_and_recovers() {
    // Its own server: stopping the shared one would break other tests.
    let server = pg::PgServer::start().expect("a throwaway PostgreSQL starts");
    let url = server.url("postgres");
    let h = common::start_with_store(&url, |m| {
        json!({
            "providers": common::providers(m),
            "models": {"m": {"provider": "oa", "upstream_model": "m"}},
            "routes": {"default": {"attempts": [{"model": "m"}]}}
        })
    })
    .await;
    let body = common::chat("default", false);
    assert_eq!(h.post(&body).await.status, 200);
    assert_eq!(health(&h).await["store_ok"], true);

    server.stop().expect("the database stops");
    let t = std::time::Instant::now();
    loop {
        let v = health(&h).await;
        if v["store_ok"] == false {
            assert_eq!(v["status"], "degraded");
            assert!(v["last_store_error"].is_string(), "{v}");
            assert!(!v.to_string().contains("sk-test"), "no key in /healthz");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the outage was not noticed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("outage noticed after {:?}", t.elapsed());
    // Requests keep being served from the last active version, promptly,
    // though their traffic records cannot be written.
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let a = h.post(&body).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-modelux-config-version"), "1");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    server.restart().expect("the database starts again");
    let t = std::time::Instant::now();
    loop {
        let v = health(&h).await;
        if v["store_ok"] == true {
            assert_eq!(v["status"], "ok");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the store did not come back: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("recovery noticed after {:?}", t.elapsed());
    // And it follows the store again: an activation through the API is served.
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/versions",
            Some(json!({"config": {
                "providers": common::providers(&h.mock),
                "models": {"m": {"provider": "oa", "upstream_model": "m2"}},
                "routes": {"default": {"attempts": [{"model": "m"}]}}
            }, "activate": true})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(h.post(&body).await.header("x-modelux-config-version"), "2");
}

/// `config show` then `config push` unedited: the literal key shows as
/// `***`, and pushed back the mask is refused, never sent to the provider as
/// `Bearer ***`. A rotated key shows in the diff as a change, masked.
#[tokio::test]
async fn a_shown_config_pushed_back_keeps_no_masked_key_and_a_rotated_key_shows_in_the_diff() {
    let h = common::start_with_store("memory", |m| config_to(m, "primary")).await;
    let (_, shown) = h.admin(Method::GET, "/admin/config", None).await;
    assert_eq!(shown["config"]["providers"]["oa"]["api_key"], "***");
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/versions",
            Some(json!({"config": shown["config"], "activate": true})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v.to_string().contains("$.providers.oa.api_key"),
        "the problem names the field: {v}"
    );
    let a = h.post(&common::chat("default", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-modelux-config-version"), "1");

    // A real rotation: stored, and the diff shows it without either key.
    let mut rotated = shown["config"].clone();
    rotated["providers"]["oa"]["api_key"] = "sk-literal-ROTATED-key".into();
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/config/versions",
            Some(json!({"config": rotated})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, d) = h
        .admin(Method::GET, "/admin/config/diff?from=1&to=2", None)
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        d["changes"],
        json!([{"path": "$.providers.oa.api_key", "kind": "changed", "from": "***", "to": "***"}]),
        "{d}"
    );
    assert!(!d.to_string().contains("SECRET") && !d.to_string().contains("ROTATED"));
}

/// A `--config` file that names a key variable this replica lacks is refused
/// at start, before the store is touched: imported first, it became the
/// fleet's active version, and every replica started afterwards (and the
/// crashed one, restarting with the same file) could not serve it.
#[tokio::test]
async fn a_config_file_this_replica_cannot_serve_is_not_imported_into_the_store() {
    use modelux::config::Config;
    use modelux::gateway::{Gateway, StartError};
    let url = sqlite_url("import-uncompilable");
    let h = common::start_with_store(&url, |m| config_to(m, "primary")).await;
    let store = modelux::store::open(&url).await.unwrap();
    let mut needs_key = config_to(&h.mock, "other");
    needs_key["providers"]["an"]["api_key_env"] = json!("MODELUX_TEST_NEVER_SET_9A2B");
    let file = Config::from_value(needs_key).unwrap();
    let err = match Gateway::with_store(store.clone(), &url, Some((file, "new.json"))).await {
        Ok(_) => panic!("a file this replica cannot serve started a gateway"),
        Err(e) => e,
    };
    assert!(matches!(err, StartError::Config(_)), "{err}");
    assert!(
        err.to_string().contains("MODELUX_TEST_NEVER_SET_9A2B"),
        "{err}"
    );
    assert_eq!(store.active().await.unwrap().unwrap().version, 1);
    assert_eq!(store.versions().await.unwrap().len(), 1);
    assert_eq!(served_model(&h).await, ("primary".into(), "1".into()));
}

/// A memory store on which another operator activates version `bob` (with
/// If-Match on the version just rolled back to) right after every rollback:
/// the window between a rollback and its undo.
struct RacingStore {
    inner: modelux::store::MemoryStore,
    bob: u64,
}

mod racing_store {
    use futures::future::BoxFuture;
    use modelux::store::*;
    use modelux::traffic::{EncodedRecord, TrafficRecord};

    type Fut<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

    impl ConfigStore for super::RacingStore {
        fn create_version(&self, new: NewVersion) -> Fut<'_, VersionSummary> {
            self.inner.create_version(new)
        }
        fn version(&self, v: u64) -> Fut<'_, Option<ConfigVersion>> {
            self.inner.version(v)
        }
        fn versions(&self) -> Fut<'_, Vec<VersionSummary>> {
            self.inner.versions()
        }
        fn active(&self) -> Fut<'_, Option<Activation>> {
            self.inner.active()
        }
        fn activate(&self, v: u64, actor: &str, if_match: Option<u64>) -> Fut<'_, Activation> {
            self.inner.activate(v, actor, if_match)
        }
        fn rollback(&self, actor: &str) -> Fut<'_, Activation> {
            let actor = actor.to_owned();
            Box::pin(async move {
                let a = self.inner.rollback(&actor).await?;
                self.inner
                    .activate(self.bob, "bob", Some(a.version))
                    .await?;
                Ok(a)
            })
        }
        fn audit(&self, limit: usize) -> Fut<'_, Vec<AuditEvent>> {
            self.inner.audit(limit)
        }
        fn last_file_import(&self) -> Fut<'_, Option<VersionSummary>> {
            self.inner.last_file_import()
        }
        fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
            None
        }
        fn append_encoded<'a>(&'a self, records: &'a [EncodedRecord]) -> Fut<'a, ()> {
            self.inner.append_encoded(records)
        }
        fn traffic_since(&self, from: u64, to: u64, limit: usize) -> Fut<'_, Vec<TrafficRecord>> {
            self.inner.traffic_since(from, to, limit)
        }
        fn traffic_count(&self, from: u64, to: u64) -> Fut<'_, u64> {
            self.inner.traffic_count(from, to)
        }
        fn prune_traffic(&self, older: u64, max: u64) -> Fut<'_, u64> {
            self.inner.prune_traffic(older, max)
        }
    }
}

/// A rollback that lands on a version this replica cannot serve is undone
/// only if that version is still the active one: another operator's
/// activation in between is kept, and the rollback is answered 409. Undone
/// without If-Match, it silently replaced the other operator's version.
#[tokio::test]
async fn undoing_a_rollback_never_overwrites_another_operator_s_activation() {
    use modelux::config::Config;
    use modelux::gateway::Gateway;
    use modelux::store::{ConfigStore, NewVersion, VersionSource};
    let mock = MockProvider::start().await.unwrap();
    let store = std::sync::Arc::new(RacingStore {
        inner: modelux::store::MemoryStore::default(),
        bob: 1,
    });
    let file = Config::from_value(config_to(&mock, "primary")).unwrap();
    let dynstore: std::sync::Arc<dyn ConfigStore> = store.clone();
    let gateway = Gateway::with_store(dynstore, "memory", Some((file, "test.json")))
        .await
        .unwrap();
    gateway.set_admin_tokens(modelux::gateway::AdminTokens::single(
        "ops-alice",
        common::ADMIN_TOKEN,
    ));
    let mut needs_key = config_to(&mock, "other");
    needs_key["providers"]["an"]["api_key_env"] = json!("MODELUX_TEST_NEVER_SET_7D3E");
    for (config, activate) in [(needs_key, false), (config_to(&mock, "primary"), false)] {
        store
            .create_version(NewVersion {
                config,
                author: "elsewhere".into(),
                message: String::new(),
                based_on: None,
                source: VersionSource::Api,
                activate,
            })
            .await
            .unwrap();
    }
    // Activations: 1, 2 (unservable here), 3.
    store.activate(2, "elsewhere", None).await.unwrap();
    store.activate(3, "elsewhere", None).await.unwrap();
    let h = common::serve(mock, gateway).await;

    // Rolled back to 2; bob activates 1 over it; the undo must not replace 1.
    let (s, v) = h.admin(Method::POST, "/admin/config/rollback", None).await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("changed meanwhile (now 1)"), "{v}");
    assert_eq!(store.active().await.unwrap().unwrap().version, 1);
}
