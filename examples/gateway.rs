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

use clap::{Parser, ValueEnum};
use modelux::config::Config;
use modelux::gateway::Gateway;
use modelux::mock::{Behaviour, Fault, MockProvider};

#[derive(Parser, Debug)]
#[command(name = "gateway", about = "Modelux reference gateway", version)]
struct Args {
    /// JSON config file. Without it, a demo runs against built-in fake providers.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    init_logs(args.log_format);
    let (config, _mock) = match &args.config {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            match Config::from_json(&text) {
                Ok(c) => (c, None),
                Err(e) => {
                    eprintln!("error: {} is not a valid config:\n{e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
        None => match demo_config().await {
            Ok((c, m)) => (c, Some(m)),
            Err(e) => {
                eprintln!("error: cannot start the demo providers: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let gateway = match Gateway::new(config, 1) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: the config cannot be served:\n{e}");
            return ExitCode::from(2);
        }
    };
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
    if args.config.is_none() {
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
    } else {
        println!("Modelux gateway on http://{addr}");
    }
    match gateway.serve(listener, shutdown_signal(), grace).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
