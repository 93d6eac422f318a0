//! The reference gateway: the whole Modelux stack behind an OpenAI-compatible
//! API, assembled from a JSON config.
//!
//! ```text
//! cargo run --release --example gateway -- --config modelux.json [--listen 127.0.0.1:8080]
//! cargo run --release --example gateway            # demo: built-in fake providers
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use modelux::config::Config;
use modelux::gateway::{AdminTokens, Gateway};
use modelux::mock::{Behaviour, Fault, MockProvider};

#[derive(Parser, Debug)]
#[command(name = "gateway", about = "Modelux reference gateway", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// JSON config file. Imported into the store as a new active version
    /// when it differs from the last file imported. Without it (and without
    /// --store), a demo runs against built-in fake providers.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Config store: `sqlite:<path>`, `memory`, or `postgres://user:pass@host/db`.
    #[arg(long, env = "MODELUX_STORE")]
    store: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage config versions on a running gateway (admin token from
    /// MODELUX_ADMIN_TOKEN).
    Config {
        /// The gateway's base URL.
        #[arg(
            long,
            env = "MODELUX_URL",
            default_value = "http://127.0.0.1:8080",
            global = true
        )]
        url: String,
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// List versions, newest first.
    List,
    /// Show a version (default: the active one).
    Show { version: Option<u64> },
    /// Store a config file as a new version.
    Push {
        file: PathBuf,
        /// What changed and why.
        #[arg(short, long, default_value = "")]
        message: String,
        /// Activate it in the same call.
        #[arg(long)]
        activate: bool,
    },
    /// Activate a stored version.
    Activate {
        version: u64,
        /// Only if this version is the active one (guards against a concurrent change).
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Re-activate the version that was active before the current one.
    Rollback,
    /// What changed between two versions.
    Diff { from: u64, to: u64 },
}

const DEFAULT_STORE: &str = "sqlite:./modelux-data/modelux.db";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The demo: three fake providers on loopback (one fails 30% of the time),
/// a fallback route across them, and a latency-ranked route.
async fn demo_config() -> std::io::Result<(Config, MockProvider)> {
    let mock = MockProvider::start().await?;
    mock.set(
        "demo-flaky",
        Behaviour {
            latency_ms: 20,
            chunk_interval_ms: 30,
            fault: Some(Fault::Status {
                status: 503,
                retry_after_s: None,
                retry_after_ms: None,
                error: None,
            }),
            fault_rate: Some(0.3),
            ..Behaviour::default()
        },
    );
    mock.set(
        "demo-steady",
        Behaviour {
            latency_ms: 80,
            chunk_interval_ms: 30,
            ..Behaviour::default()
        },
    );
    mock.set(
        "demo-gemini",
        Behaviour {
            latency_ms: 120,
            chunk_interval_ms: 30,
            ..Behaviour::default()
        },
    );
    let config = serde_json::json!({
        "providers": {
            "demo-openai": {"kind": "openai", "base_url": mock.openai_url()},
            "demo-anthropic": {"kind": "anthropic", "base_url": mock.url()},
            "demo-gemini": {"kind": "gemini", "base_url": mock.url()}
        },
        "models": {
            "gpt-demo": {"provider": "demo-openai", "upstream_model": "demo-flaky",
                         "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
            "claude-demo": {"provider": "demo-anthropic", "upstream_model": "demo-steady", "prefill": true,
                            "price": {"input_per_mtok": 1.0, "output_per_mtok": 5.0}},
            "gemini-demo": {"provider": "demo-gemini", "upstream_model": "demo-gemini",
                            "price": {"input_per_mtok": 0.3, "output_per_mtok": 2.5}}
        },
        "routes": {
            "default": {
                "strategy": "fallback",
                "attempts": [
                    {"model": "gpt-demo", "timeout_ms": 2000},
                    {"model": "claude-demo", "timeout_ms": 3000},
                    {"model": "gemini-demo", "timeout_ms": 5000}
                ],
                "retry_on": ["429", "5xx", "timeout", "connect"],
                "same_target_retries": 0,
                "total_budget_ms": 8000
            },
            "fastest": {
                "strategy": "latency",
                "attempts": [
                    {"model": "gemini-demo", "timeout_ms": 5000},
                    {"model": "claude-demo", "timeout_ms": 5000},
                    {"model": "gpt-demo", "timeout_ms": 5000}
                ]
            }
        }
    });
    let config = Config::from_value(config).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((config, mock))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Config { url, cmd }) = args.command {
        return cli::run(&url, cmd).await;
    }
    init_logs(args.log_format);
    let demo = args.config.is_none() && args.store.is_none();
    let (config, name, _mock) = match &args.config {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            match Config::from_json(&text) {
                Ok(c) => (Some(c), path.display().to_string(), None),
                Err(e) => {
                    eprintln!("error: {} is not a valid config:\n{e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
        None if demo => match demo_config().await {
            Ok((c, m)) => (Some(c), "the built-in demo".to_owned(), Some(m)),
            Err(e) => {
                eprintln!("error: cannot start the demo providers: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => (None, String::new(), None),
    };
    let store_url = match (&args.store, demo) {
        (Some(s), _) => s.clone(),
        (None, true) => format!(
            "sqlite:{}",
            std::env::temp_dir()
                .join(format!("modelux-demo-{}.db", std::process::id()))
                .display()
        ),
        (None, false) => DEFAULT_STORE.to_owned(),
    };
    let store = match modelux::store::open(&store_url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot open the config store {}: {e}",
                modelux::store::redact_url(&store_url)
            );
            return ExitCode::FAILURE;
        }
    };
    let grace = config
        .as_ref()
        .map(|c| Duration::from_millis(c.server.shutdown_grace_ms))
        .unwrap_or(Duration::from_secs(30));
    let gateway =
        match Gateway::with_store(store, &store_url, config.map(|c| (c, name.as_str()))).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: cannot serve:\n{e}");
                return ExitCode::from(2);
            }
        };
    let mut demo_token = None;
    if demo && AdminTokens::from_env().is_empty() {
        let token = format!(
            "mxa-{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        gateway.set_admin_tokens(AdminTokens::single("demo-admin", &token));
        demo_token = Some(token);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if demo {
        println!("Modelux demo gateway on http://{addr}");
        println!("  fake providers: an OpenAI-format one failing 30% of requests with 503,");
        println!("  an Anthropic-format fallback and a Gemini-format one.");
        println!();
        println!("Try:");
        println!(
            "  curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' \\"
        );
        println!("    -d '{{\"model\":\"default\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'");
        println!(
            "  curl -sN http://{addr}/v1/chat/completions -H 'content-type: application/json' \\"
        );
        println!("    -d '{{\"model\":\"default\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'");
        println!("  curl -s http://{addr}/metrics | grep modelux_");
        println!("  curl -s http://{addr}/v1/traces/<x-modelux-request-id from a response>");
        if let Some(t) = &demo_token {
            println!();
            println!("Admin API (token generated for this demo run):");
            println!("  export MODELUX_ADMIN_TOKEN={t} MODELUX_URL=http://{addr}");
            println!("  cargo run --release --example gateway -- config list");
        }
    } else {
        println!(
            "Modelux gateway on http://{addr} (config version {})",
            gateway.version()
        );
    }
    match gateway.serve(listener, shutdown_signal(), grace).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `gateway config ...`: the admin API from a terminal.
mod cli {
    use std::process::ExitCode;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use serde_json::{json, Value};

    use super::ConfigCmd;

    async fn call(
        url: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        if_match: Option<u64>,
    ) -> Result<(u16, Value), String> {
        let token = std::env::var("MODELUX_ADMIN_TOKEN")
            .map_err(|_| "set MODELUX_ADMIN_TOKEN to an admin token of the gateway".to_owned())?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", url.trim_end_matches('/')))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if let Some(v) = if_match {
            req = req.header("if-match", v.to_string());
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let client = modelux::provider::http_client();
        let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
            .await
            .map_err(|_| format!("{url} did not answer within 30 s"))?
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, v))
    }

    fn fail(status: u16, v: &Value) -> ExitCode {
        eprintln!(
            "error ({status}): {}",
            v["error"]["message"].as_str().unwrap_or("request failed")
        );
        if let Some(problems) = v["error"]["problems"].as_array() {
            for p in problems {
                eprintln!(
                    "  {}: {}",
                    p["path"].as_str().unwrap_or(""),
                    p["message"].as_str().unwrap_or("")
                );
            }
        }
        ExitCode::FAILURE
    }

    pub async fn run(url: &str, cmd: ConfigCmd) -> ExitCode {
        let result = match &cmd {
            ConfigCmd::List => call(url, "GET", "/admin/config/versions", None, None).await,
            ConfigCmd::Show { version: Some(n) } => {
                call(
                    url,
                    "GET",
                    &format!("/admin/config/versions/{n}"),
                    None,
                    None,
                )
                .await
            }
            ConfigCmd::Show { version: None } => {
                call(url, "GET", "/admin/config", None, None).await
            }
            ConfigCmd::Push {
                file,
                message,
                activate,
            } => {
                let text = match std::fs::read_to_string(file) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: cannot read {}: {e}", file.display());
                        return ExitCode::from(2);
                    }
                };
                let config: Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("error: {} is not JSON: {e}", file.display());
                        return ExitCode::from(2);
                    }
                };
                let body = json!({"config": config, "message": message, "activate": activate});
                call(url, "POST", "/admin/config/versions", Some(body), None).await
            }
            ConfigCmd::Activate { version, if_match } => {
                call(
                    url,
                    "POST",
                    &format!("/admin/config/versions/{version}/activate"),
                    None,
                    *if_match,
                )
                .await
            }
            ConfigCmd::Rollback => call(url, "POST", "/admin/config/rollback", None, None).await,
            ConfigCmd::Diff { from, to } => {
                call(
                    url,
                    "GET",
                    &format!("/admin/config/diff?from={from}&to={to}"),
                    None,
                    None,
                )
                .await
            }
        };
        let (status, v) = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if status >= 400 {
            return fail(status, &v);
        }
        match cmd {
            ConfigCmd::List => {
                println!(
                    "{:>7}  {:<6}  {:<20}  {:<12}  {:<8}  message",
                    "version", "active", "created", "author", "based_on"
                );
                for r in v["data"].as_array().into_iter().flatten() {
                    println!(
                        "{:>7}  {:<6}  {:<24}  {:<12}  {:<8}  {}",
                        r["version"].as_u64().unwrap_or(0),
                        if r["active"].as_bool() == Some(true) {
                            "*"
                        } else {
                            ""
                        },
                        r["created_at"].as_str().unwrap_or(""),
                        r["author"].as_str().unwrap_or(""),
                        r["based_on"]
                            .as_u64()
                            .map(|b| b.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r["message"].as_str().unwrap_or(""),
                    );
                }
            }
            ConfigCmd::Show { .. } => {
                println!("# version {}", v["version"]);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["config"]).unwrap_or_default()
                );
            }
            ConfigCmd::Push { activate, .. } => {
                println!(
                    "stored as version {}{}",
                    v["version"],
                    if activate { " and activated" } else { "" }
                );
            }
            ConfigCmd::Activate { .. } | ConfigCmd::Rollback => {
                println!("active version: {}", v["active"])
            }
            ConfigCmd::Diff { from, to } => {
                let changes = v["changes"].as_array().cloned().unwrap_or_default();
                if changes.is_empty() {
                    println!("versions {from} and {to} are the same");
                }
                for c in changes {
                    let path = c["path"].as_str().unwrap_or("");
                    match c["kind"].as_str() {
                        Some("added") => println!("+ {path} = {}", c["to"]),
                        Some("removed") => println!("- {path} (was {})", c["from"]),
                        _ => println!("~ {path}: {} -> {}", c["from"], c["to"]),
                    }
                }
            }
        }
        ExitCode::SUCCESS
    }
}
