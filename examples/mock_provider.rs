//! Runs the fault-injecting fake provider until Ctrl-C.
//!
//! ```text
//! cargo run --example mock_provider -- --listen 127.0.0.1:9100
//! ```
//!
//! Faults are set over HTTP:
//!
//! ```text
//! curl -X POST localhost:9100/_mock/faults -d '{"model":"gpt-4o-mini","behaviour":{"words":50,"chunk_interval_ms":30}}'
//! curl -X POST localhost:9100/_mock/faults -d '{"model":"gpt-4o-mini","push":{"kind":"status","status":429,"retry_after_s":1}}'
//! curl localhost:9100/_mock/requests
//! curl -X POST localhost:9100/_mock/reset
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use modelux::mock::MockProvider;

const USAGE: &str = "usage: mock_provider [--listen ADDR]   (default 127.0.0.1:9100)";

fn parse_args() -> Result<SocketAddr, String> {
    let mut listen: SocketAddr = "127.0.0.1:9100".parse().map_err(|e| format!("{e}"))?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.split_once('=') {
            Some(("--listen", v)) => v.to_owned(),
            _ if arg == "--listen" => args.next().ok_or("--listen needs an address")?,
            _ if arg == "-h" || arg == "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument: {arg}")),
        };
        listen = value
            .parse()
            .map_err(|e| format!("bad --listen address {value:?}: {e}"))?;
    }
    Ok(listen)
}

#[tokio::main]
async fn main() -> ExitCode {
    let listen = match parse_args() {
        Ok(addr) => addr,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            eprintln!("{USAGE}");
            return if msg.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let mock = match MockProvider::start_on(listen).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("mock provider listening on {}", mock.addr());
    println!("  OpenAI    base URL: {}", mock.openai_url());
    println!("  Anthropic base URL: {}", mock.url());
    println!("  Gemini    base URL: {}", mock.url());
    println!(
        "  control: GET {0}/_mock/requests, POST {0}/_mock/faults, POST {0}/_mock/reset",
        mock.url()
    );
    println!("Ctrl-C to stop.");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    mock.shutdown();
    ExitCode::SUCCESS
}
