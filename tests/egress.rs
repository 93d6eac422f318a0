//! What leaves the gateway for a provider: through an egress proxy, with a
//! company's own CA, and with a provider's extra headers.
//!
//! A fake provider sits behind TLS for `provider.test` (a name that does not
//! resolve: only the proxy can reach it), signed by the test CA in
//! `tests/fixtures/tls`. A CONNECT proxy on loopback forwards every tunnel
//! to it and records what it was asked and what crossed it.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelux::mock::MockProvider;
use modelux::provider::{AttemptRequest, Failure, HttpClient, OpenAi, ProviderResponse, Target};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

const CA: &[u8] = include_bytes!("fixtures/tls/ca.pem");
const CERT: &[u8] = include_bytes!("fixtures/tls/provider.pem");
const KEY: &[u8] = include_bytes!("fixtures/tls/provider.key");
const API_KEY: &str = "sk-egress-PLAINTEXT-CANARY";

/// TLS for `provider.test` (and `proxy.test`, 127.0.0.1) in front of a
/// plain port: the mock's, or the proxy's.
async fn tls_front(mock: SocketAddr) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(CERT)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut up) = TcpStream::connect(mock).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    addr
}

/// How the fake proxy answers `CONNECT`.
#[derive(Clone, Copy)]
enum Mode {
    /// 200, then bytes both ways to the TLS front.
    Open,
    /// This status, then close.
    Refuse(u16),
    /// Accept the connection and never answer.
    Stall,
}

#[derive(Default)]
struct Seen {
    /// Each `CONNECT` request's head.
    heads: Vec<String>,
    /// Every byte the client sent through tunnels.
    upstream_bytes: Vec<u8>,
}

struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Proxy {
    async fn start(front: SocketAddr, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let seen = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    seen.lock()
                        .unwrap()
                        .heads
                        .push(String::from_utf8_lossy(&head).into_owned());
                    match mode {
                        Mode::Stall => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        Mode::Refuse(code) => {
                            let _ = tcp
                                .write_all(
                                    format!("HTTP/1.1 {code} No\r\ncontent-length: 0\r\n\r\n")
                                        .as_bytes(),
                                )
                                .await;
                        }
                        Mode::Open => {
                            let Ok(up) = TcpStream::connect(front).await else {
                                return;
                            };
                            let _ = tcp
                                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                                .await;
                            let (mut cr, mut cw) = tcp.into_split();
                            let (mut ur, mut uw) = up.into_split();
                            let down = tokio::spawn(async move {
                                let _ = tokio::io::copy(&mut ur, &mut cw).await;
                            });
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                match cr.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        seen.lock()
                                            .unwrap()
                                            .upstream_bytes
                                            .extend_from_slice(&buf[..n]);
                                        if uw.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                            down.abort();
                        }
                    }
                });
            }
        });
        Proxy { addr, seen }
    }

    fn heads(&self) -> Vec<String> {
        self.seen.lock().unwrap().heads.clone()
    }
}

fn chat(stream: bool) -> AttemptRequest {
    let chat = serde_json::from_value(json!({
        "model": "route",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }))
    .unwrap();
    AttemptRequest::new(Arc::new(Target::new("remote", "gpt-test")), Arc::new(chat))
}

fn adapter(client: HttpClient) -> OpenAi {
    OpenAi::new(
        "https://provider.test/v1",
        Some(modelux::Secret::new(API_KEY)),
        client,
    )
}

async fn text_of(resp: ProviderResponse) -> String {
    use futures::StreamExt;
    match resp {
        ProviderResponse::Complete(c) => {
            let json: serde_json::Value = match c.json() {
                Some(raw) => serde_json::from_slice(raw).unwrap(),
                None => serde_json::to_value(c.parsed().unwrap()).unwrap(),
            };
            json["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        }
        ProviderResponse::Stream(s) => s
            .map(|c| c.unwrap().text().into_owned())
            .collect::<Vec<_>>()
            .await
            .concat(),
    }
}

/// Through an authenticated proxy to a provider whose certificate only the
/// extra CA vouches for: whole answers and streams arrive, the proxy was
/// asked for `provider.test:443` with the credentials, and the key crossed
/// it encrypted only.
#[tokio::test]
async fn an_https_provider_is_reached_through_the_proxy_with_its_credentials() {
    let mock = MockProvider::start().await.unwrap();
    let front = tls_front(mock.addr()).await;
    let proxy = Proxy::start(front, Mode::Open).await;
    let client = HttpClient::builder()
        .proxy(&format!("http://ops:pw@{}", proxy.addr))
        .unwrap()
        .add_root_certificates_pem(CA)
        .unwrap()
        .build()
        .unwrap();
    assert!(client.uses_proxy());
    let provider = adapter(client.clone());
    let whole = provider.clone().oneshot(chat(false)).await.unwrap();
    assert!(!text_of(whole).await.is_empty());
    let streamed = provider.clone().oneshot(chat(true)).await.unwrap();
    assert!(matches!(streamed, ProviderResponse::Stream(_)));
    assert!(!text_of(streamed).await.is_empty());

    let heads = proxy.heads();
    assert!(!heads.is_empty());
    for head in &heads {
        assert!(
            head.starts_with("CONNECT provider.test:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("Host: provider.test:443\r\n"), "{head}");
        // ops:pw
        assert!(
            head.contains("Proxy-Authorization: Basic b3BzOnB3\r\n"),
            "{head}"
        );
    }
    // The provider saw the key; the proxy only ciphertext.
    assert_eq!(
        mock.requests()[0].auth.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let crossed = proxy.seen.lock().unwrap().upstream_bytes.clone();
    assert!(crossed.len() > 500, "{} bytes", crossed.len());
    assert!(!crossed
        .windows(API_KEY.len())
        .any(|w| w == API_KEY.as_bytes()));
    assert!(!crossed.windows(9).any(|w| w == b"messages\""));

    // HTTP/2 through the tunnel: ALPN runs end to end, and two requests
    // share one tunnel.
    let before = proxy.heads().len();
    let h2 = adapter(client.with_http2(true));
    for _ in 0..2 {
        let resp = h2.clone().oneshot(chat(false)).await.unwrap();
        assert!(!text_of(resp).await.is_empty());
    }
    assert_eq!(proxy.heads().len(), before + 1);
}

/// An `https://` proxy: TLS to the proxy, the provider's TLS inside it.
#[tokio::test]
async fn an_https_proxy_carries_the_provider_s_tls_inside_its_own() {
    let mock = MockProvider::start().await.unwrap();
    let front = tls_front(mock.addr()).await;
    let proxy = Proxy::start(front, Mode::Open).await;
    let proxy_tls = tls_front(proxy.addr).await;
    let client = HttpClient::builder()
        .proxy(&format!("https://ops:pw@127.0.0.1:{}", proxy_tls.port()))
        .unwrap()
        .add_root_certificates_pem(CA)
        .unwrap()
        .build()
        .unwrap();
    for stream in [false, true] {
        let resp = adapter(client.clone()).oneshot(chat(stream)).await.unwrap();
        assert!(!text_of(resp).await.is_empty());
    }
    let heads = proxy.heads();
    assert!(
        heads[0].starts_with("CONNECT provider.test:443 "),
        "{heads:?}"
    );
    assert!(heads[0].contains("Proxy-Authorization: Basic b3BzOnB3"));
}

/// Without the company CA the provider's certificate is refused, and the
/// attempt says so (a connect failure, so the router moves on).
#[tokio::test]
async fn an_untrusted_provider_certificate_is_named_as_the_reason() {
    let mock = MockProvider::start().await.unwrap();
    let front = tls_front(mock.addr()).await;
    let proxy = Proxy::start(front, Mode::Open).await;
    let client = HttpClient::builder()
        .proxy(&proxy.addr.to_string())
        .unwrap()
        .build()
        .unwrap();
    let err = adapter(client).oneshot(chat(false)).await.unwrap_err();
    assert_eq!(err.failure, Failure::Connect);
    assert!(
        err.message
            .starts_with("TLS with the provider failed: invalid peer certificate"),
        "{}",
        err.message
    );
    assert!(mock.requests().is_empty());
}

/// A proxy that refuses the tunnel, or never answers, fails the attempt
/// with the reason, the second within the connect timeout; neither
/// message holds the proxy's credentials.
#[tokio::test]
async fn a_proxy_that_refuses_or_stalls_fails_the_attempt_with_its_reason() {
    let mock = MockProvider::start().await.unwrap();
    let front = tls_front(mock.addr()).await;
    for (mode, expect) in [
        (
            Mode::Refuse(407),
            "the egress proxy refused the tunnel: 407 proxy authentication required",
        ),
        (
            Mode::Refuse(403),
            "the egress proxy refused the tunnel: 403",
        ),
        (
            Mode::Stall,
            "could not connect to the provider within 0.3 s",
        ),
    ] {
        let proxy = Proxy::start(front, mode).await;
        let client = HttpClient::builder()
            .proxy(&format!("http://ops:Pr0xyPa55@{}", proxy.addr))
            .unwrap()
            .add_root_certificates_pem(CA)
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let started = Instant::now();
        let err = adapter(client).oneshot(chat(false)).await.unwrap_err();
        assert_eq!(err.failure, Failure::Connect);
        assert_eq!(err.message, expect);
        assert!(!err.message.contains("Pr0xyPa55"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(proxy.heads().len(), 1);
    }
    // An unreachable proxy.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let client = HttpClient::builder()
        .proxy(&addr.to_string())
        .unwrap()
        .build()
        .unwrap();
    let err = adapter(client).oneshot(chat(false)).await.unwrap_err();
    assert_eq!(err.message, "could not connect to the egress proxy");
}

/// Loopback never goes through the proxy, nor a host `no_proxy` lists; a
/// client built `direct` never uses one.
#[tokio::test]
async fn loopback_and_no_proxy_hosts_are_reached_directly() {
    let mock = MockProvider::start().await.unwrap();
    let front = tls_front(mock.addr()).await;
    let proxy = Proxy::start(front, Mode::Open).await;
    let local = |client: HttpClient| {
        OpenAi::new(&mock.openai_url(), Some(modelux::Secret::new("k")), client)
    };
    let via = HttpClient::builder()
        .proxy(&proxy.addr.to_string())
        .unwrap()
        .no_proxy("provider.test")
        .build()
        .unwrap();
    let resp = local(via.clone()).oneshot(chat(false)).await.unwrap();
    assert!(!text_of(resp).await.is_empty());
    // provider.test is on the list: tried directly, where it does not resolve.
    let err = adapter(via).oneshot(chat(false)).await.unwrap_err();
    assert_eq!(err.failure, Failure::Connect);
    assert!(proxy.heads().is_empty(), "{:?}", proxy.heads());
}

/// The gateway binary takes its proxy from `HTTPS_PROXY` and its extra CA
/// from `MODELUX_CA_FILE`, and serves through them; a proxy variable it
/// cannot use stops it at start, naming the variable and not its password.
#[tokio::test]
async fn the_gateway_reaches_providers_through_the_environment_s_proxy() {
    let mock = MockProvider::start().await.unwrap();
    let front = tls_front(mock.addr()).await;
    let proxy = Proxy::start(front, Mode::Open).await;
    let dir = std::env::temp_dir().join(format!("modelux-egress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({
            "providers": {"remote": {"kind": "openai", "base_url": "https://provider.test/v1", "api_key_env": "EGRESS_TEST_KEY"}},
            "models": {"m": {"provider": "remote", "upstream_model": "gpt-test"}},
            "routes": {"default": {"attempts": [{"model": "m", "timeout_ms": 5000}]}}
        })
        .to_string(),
    )
    .unwrap();
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");

    // A proxy the gateway cannot use.
    let out = std::process::Command::new(common::example("gateway"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("bad.db").display()))
        .env("HTTPS_PROXY", "socks5://ops:S0cksPa55@127.0.0.1:1080")
        .env("EGRESS_TEST_KEY", API_KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTPS_PROXY: socks5:// proxies are not supported"),
        "{err}"
    );
    assert!(!err.contains("S0cksPa55"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(common::example("gateway"))
        .args(["--config", config.to_str().unwrap()])
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("ok.db").display()))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // With the trailing newline a value read from a file keeps.
        .env("HTTPS_PROXY", format!("http://ops:pw@{}\n", proxy.addr))
        // A catch-all for other tools that this client cannot use: ignored,
        // with a warning, since HTTPS_PROXY covers the providers.
        .env("ALL_PROXY", "socks5://127.0.0.1:1080")
        .env("MODELUX_CA_FILE", &ca)
        .env("EGRESS_TEST_KEY", API_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{url}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the gateway did not start");
    let resp = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&common::chat("default", false))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 1
    );
    let heads = proxy.heads();
    assert!(
        heads[0].starts_with("CONNECT provider.test:443 "),
        "{heads:?}"
    );
    assert!(heads[0].contains("Proxy-Authorization: Basic b3BzOnB3"));
    assert!(logs.contains("egress proxy"), "{logs}");
    assert!(logs.contains("ignoring a proxy variable"), "{logs}");
    assert!(logs.contains("ALL_PROXY: socks5://"), "{logs}");
    assert!(
        logs.contains("(HTTPS_PROXY); http: direct"),
        "the unusable ALL_PROXY is not used for http://: {logs}"
    );
    assert!(logs.contains("http://***@127.0.0.1:"), "{logs}");
    assert!(!logs.contains("ops:pw"), "{logs}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A provider's extra headers reach it on every kind, those from the
/// environment too, beside the adapter's own, which they cannot replace.
#[tokio::test]
async fn a_provider_s_extra_headers_reach_it_on_every_kind() {
    use modelux::config::Config;
    let mock = MockProvider::start().await.unwrap();
    let config = Config::from_value(json!({
        "providers": {
            "oa": {"kind": "openai", "base_url": mock.openai_url(), "api_key": "sk-oa",
                   "headers": {"OpenAI-Organization": "org-1"}, "headers_env": {"x-gw-auth": "GW_AUTH"}},
            "an": {"kind": "anthropic", "base_url": mock.url(), "api_key": "sk-an",
                   "headers": {"anthropic-beta": "context-1m-2025-08-07"}},
            "ge": {"kind": "gemini", "base_url": mock.url(), "api_key": "gm",
                   "headers": {"x-title": "app"}}
        },
        "models": {
            "m-oa": {"provider": "oa"}, "m-an": {"provider": "an"}, "m-ge": {"provider": "ge"}
        }
    }))
    .unwrap();
    let compiled = config
        .compile(modelux::provider::http_client(), &|v| {
            (v == "GW_AUTH").then(|| "Bearer gw-1".to_owned())
        })
        .unwrap();
    for (provider, model) in [("oa", "m-oa"), ("an", "m-an"), ("ge", "m-ge")] {
        let chat = serde_json::from_value(json!({
            "model": model, "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        let attempt = AttemptRequest::new(Arc::new(Target::new(provider, model)), Arc::new(chat));
        let resp = compiled.providers.clone().oneshot(attempt).await.unwrap();
        assert!(!text_of(resp).await.is_empty(), "{provider}");
    }
    let seen = mock.requests();
    let header = |i: usize, name: &str| {
        seen[i]
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(header(0, "openai-organization"), ["org-1"]);
    assert_eq!(header(0, "x-gw-auth"), ["Bearer gw-1"]);
    assert_eq!(header(0, "authorization"), ["Bearer sk-oa"]);
    assert_eq!(header(1, "anthropic-beta"), ["context-1m-2025-08-07"]);
    assert_eq!(header(1, "x-api-key"), ["sk-an"]);
    assert_eq!(header(1, "anthropic-version").len(), 1);
    assert_eq!(header(2, "x-title"), ["app"]);
    assert_eq!(header(2, "x-goog-api-key"), ["gm"]);

    // A library user's reserved header is skipped, not sent twice.
    let mut extra = http::HeaderMap::new();
    extra.insert("authorization", "Bearer other".parse().unwrap());
    extra.insert("x-extra", "1".parse().unwrap());
    let p = OpenAi::new(
        &mock.openai_url(),
        Some(modelux::Secret::new("sk-own")),
        modelux::provider::http_client(),
    )
    .with_headers(&extra);
    let resp = p.oneshot(chat(false)).await.unwrap();
    text_of(resp).await;
    assert_eq!(header_of(&mock, 3, "authorization"), ["Bearer sk-own"]);
    assert_eq!(header_of(&mock, 3, "x-extra"), ["1"]);
}

fn header_of(mock: &MockProvider, i: usize, name: &str) -> Vec<String> {
    mock.requests()[i]
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}
