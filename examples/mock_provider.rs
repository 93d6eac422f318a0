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

const USAGE: &str = "usage: mock_provider [--listen ADDR] [--h2-max-streams N|none]   (defaults: 127.0.0.1:9100, 200)";

struct Args {
    listen: SocketAddr,
    h2_max_streams: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:9100".parse().map_err(|e| format!("{e}"))?,
        h2_max_streams: Some(200),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None if arg == "-h" || arg == "--help" => return Err(String::new()),
            None => {
                let v = args.next().ok_or(format!("{arg} needs a value"))?;
                (arg.clone(), v)
            }
        };
        match name.as_str() {
            "--listen" => {
                a.listen = value
                    .parse()
                    .map_err(|e| format!("bad --listen address {value:?}: {e}"))?
            }
            "--h2-max-streams" => {
                a.h2_max_streams = match value.as_str() {
                    "none" => None,
                    n => Some(
                        n.parse()
                            .map_err(|e| format!("bad --h2-max-streams {value:?}: {e}"))?,
                    ),
                }
            }
            _ => return Err(format!("unknown argument: {arg}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
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
    let listen = args.listen;
    let mock = match MockProvider::start_with_h2_streams(listen, args.h2_max_streams).await {
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
