//! Shared harness for the gateway integration tests: a fault-injecting fake
//! provider and a gateway in front of it, both on loopback, and an HTTP client
//! that records when each SSE event arrives.
#![allow(dead_code)]

pub mod blackhole;
pub mod synthetic;

use std::time::{Duration, Instant};

use futures::StreamExt;
use modelux::config::Config;
use modelux::gateway::Gateway;
use modelux::mock::MockProvider;
use serde_json::{json, Value};

/// A running gateway and its fake provider.
pub struct Harness {
    pub mock: MockProvider,
    pub gateway: Gateway,
    pub url: String,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Path of an example binary built by `cargo test` (examples are built
/// for integration tests).
pub fn example(name: &str) -> std::path::PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

/// Providers of all three kinds pointing at `mock`.
pub fn providers(mock: &MockProvider) -> Value {
    json!({
        "oa": {"kind": "openai", "base_url": mock.openai_url(), "api_key": "sk-test-openai-SECRET"},
        "an": {"kind": "anthropic", "base_url": mock.url(), "api_key": "sk-ant-test-SECRET"},
        "ge": {"kind": "gemini", "base_url": mock.url(), "api_key": "gm-test-SECRET"}
    })
}

/// Starts a fake provider and a gateway serving `config(mock)`.
pub async fn start(config: impl FnOnce(&MockProvider) -> Value) -> Harness {
    let mock = MockProvider::start().await.expect("mock provider starts");
    let value = config(&mock);
    let config = Config::from_value(value).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let gateway = Gateway::new(config, 1).expect("config compiles");
    serve(mock, gateway).await
}

/// Reads a response body until the text received so far contains `needle`
/// (each chunk within 5 s), and returns that text.
pub async fn read_until(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    needle: &str,
) -> String {
    let mut seen = String::new();
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap_or_else(|_| panic!("no chunk within 5 s, waiting for {needle:?}"))
            .unwrap_or_else(|| panic!("the stream ended before {needle:?}: {seen}"))
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// A one-message chat request body.
pub fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Tell me a story"}]
    })
}

/// A plain answer.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    pub fn content(&self) -> String {
        self.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// One SSE `data:` payload and when it arrived.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Duration,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// A streamed answer.
pub struct Streamed {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub events: Vec<Event>,
}

impl Streamed {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    /// The concatenated text of every content delta.
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| e.json())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    pub fn done(&self) -> bool {
        self.events.last().is_some_and(|e| e.data == "[DONE]")
    }

    pub fn finish_reasons(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| e.json())
            .filter_map(|v| v["choices"][0]["finish_reason"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn error(&self) -> Option<Value> {
        self.events
            .iter()
            .filter_map(|e| e.json())
            .find(|v| v.get("error").is_some())
    }

    pub fn usage(&self) -> Option<Value> {
        self.events
            .iter()
            .filter_map(|e| e.json())
            .find(|v| v["usage"].is_object())
            .map(|v| v["usage"].clone())
    }
}

impl Harness {
    pub async fn post(&self, body: &Value) -> Answer {
        let resp = self
            .client
            .post(format!("{}/v1/chat/completions", self.url))
            .json(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Posts a streaming request and collects every event with its arrival
    /// time (from when the request was sent).
    pub async fn stream(&self, body: &Value) -> Streamed {
        let start = Instant::now();
        let resp = self
            .client
            .post(format!("{}/v1/chat/completions", self.url))
            .json(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut events = Vec::new();
        let mut buf = String::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let raw: String = buf.drain(..end + 2).collect();
                for line in raw.lines() {
                    if let Some(d) = line.strip_prefix("data: ") {
                        events.push(Event {
                            at: start.elapsed(),
                            data: d.to_owned(),
                        });
                    }
                }
            }
        }
        Streamed {
            status,
            headers,
            events,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{}", self.url, path))
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// The decision trace of a request.
    pub async fn trace(&self, request_id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/traces/{request_id}")).await;
        assert_eq!(status, 200, "trace {request_id} not found: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// The admin token the store-backed harness configures.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-SECRET";

/// Starts a fake provider and a store-backed gateway: `config(mock)` is the
/// "file" imported into the store at `store_url`.
pub async fn start_with_store(
    store_url: &str,
    config: impl FnOnce(&MockProvider) -> Value,
) -> Harness {
    let mock = MockProvider::start().await.expect("mock provider starts");
    let value = config(&mock);
    let config = Config::from_value(value).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let store = modelux::store::open(store_url).await.expect("store opens");
    let gateway = Gateway::with_store(store, store_url, Some((config, "test.json")))
        .await
        .expect("gateway starts from the store");
    gateway.set_admin_tokens(modelux::gateway::AdminTokens::single(
        "ops-alice",
        ADMIN_TOKEN,
    ));
    serve(mock, gateway).await
}

/// Serves an existing gateway on loopback.
pub async fn serve(mock: MockProvider, gateway: Gateway) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let g = gateway.clone();
    tokio::spawn(async move {
        let _ = g
            .serve(
                listener,
                async move {
                    let _ = rx.await;
                },
                Duration::from_secs(5),
            )
            .await;
    });
    Harness {
        mock,
        gateway,
        url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        shutdown: Some(tx),
    }
}

impl Harness {
    /// An admin call with the harness token: status and JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.admin_with(method, path, body, Some(ADMIN_TOKEN), None)
            .await
    }

    /// An admin call with any token and an optional If-Match.
    pub async fn admin_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        if_match: Option<u64>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(v) = if_match {
            req = req.header("if-match", v.to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// A virtualenv under the target directory with `package` (pinned, e.g.
/// `"openai==3.57.0"`) installed, created the first time and reused while
/// the pin is unchanged; returns its `python`. Needs python3 and PyPI.
pub fn python_with(venv: &str, package: &str) -> std::path::PathBuf {
    use std::process::Command;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(venv);
    let python = dir.join("bin").join("python");
    let ready = dir.join(".installed");
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(package) {
        let ok = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir)
            .status()
            .expect("python3 runs")
            .success();
        assert!(ok, "python3 -m venv failed");
        let ok = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                package,
            ])
            .status()
            .expect("pip runs")
            .success();
        assert!(ok, "pip install {package} failed");
        std::fs::write(&ready, package).unwrap();
    }
    python
}

/// Runs `tests/sdk/{script}` with an SDK's `python` and `args`; asserts it
/// exited successfully and returns the JSON object it printed per line.
pub async fn run_sdk_script(python: &std::path::Path, script: &str, args: &[&str]) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = tokio::process::Command::new(python)
        .arg(path)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK script {script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The printed objects keyed by their `case` field.
pub fn by_case(lines: Vec<Value>) -> std::collections::HashMap<String, Value> {
    lines
        .into_iter()
        .map(|v| (v["case"].as_str().unwrap().to_owned(), v))
        .collect()
}

/// The fake provider's default answer: `word0 word1 …`.
pub fn mock_answer() -> String {
    (0..modelux::mock::DEFAULT_WORDS)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}
