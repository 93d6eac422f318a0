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
    /// Config store: `sqlite:<path>`, `memory`, or `postgres://user:pass@host/db`
    /// (a URL with a password belongs in MODELUX_STORE: `ps` shows arguments).
    #[arg(long, env = "MODELUX_STORE", hide_env_values = true)]
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
        /// With --activate: only if this version is still the active one
        /// (the one the file was edited from; another operator's change in
        /// between gets 412 and the new version stays inactive).
        #[arg(long, requires = "activate")]
        if_match: Option<u64>,
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
    /// What a candidate config would have done to the recorded traffic,
    /// next to the active one. Offline: reads the store directly, no
    /// gateway needed (SQLite allows it while a gateway runs).
    DryRun(DryRunArgs),
}

#[derive(clap::Args, Debug)]
struct DryRunArgs {
    /// The candidate config file (or --candidate-version).
    candidate: Option<PathBuf>,
    /// A stored version as the candidate instead of a file.
    #[arg(long, conflicts_with = "candidate")]
    candidate_version: Option<u64>,
    /// The baseline (default: the active version).
    #[arg(long)]
    baseline_version: Option<u64>,
    /// The store the gateway records into: `sqlite:<path>` or `postgres://…`.
    #[arg(long, env = "MODELUX_STORE", hide_env_values = true, default_value = DEFAULT_STORE)]
    store: String,
    /// How far back to replay: `24h`, `90m`, `600s`, `7d`.
    #[arg(long, default_value = "24h", value_parser = parse_since)]
    since: Duration,
    /// Also write a self-contained HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Replay (and read) at most this many requests; a longer window is
    /// sampled in blocks of consecutive requests (5 minutes, shorter when the
    /// traffic is dense) and the report gives confidence intervals.
    #[arg(long, default_value_t = 1_000_000)]
    max_records: u64,
    /// The RNG seed (same records + configs + seed = same report).
    #[arg(long)]
    seed: Option<u64>,
}

/// `24h`, `90m`, `600s`, `7d`, or plain seconds.
fn parse_since(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 24h, 90m, 600s or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err("the window must be at least 1 s".to_owned());
    }
    Ok(Duration::from_secs(secs))
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
        .with_writer(std::io::stderr)
        // The default timer's text, its date and time formatted once a
        // second rather than for every line.
        .with_timer(modelux::gateway::LogTime);
    match format {
        // The default text format, written without `core::fmt` for the
        // common values (≈ 8k fewer instructions per request line).
        LogFormat::Text => builder.fmt_fields(modelux::gateway::LogFields).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Registers the SIGTERM and Ctrl-C (SIGINT) handlers now and returns a
/// future that resolves on the first of them. Registered before the listener
/// is bound, not when the server first polls the future: a signal in
/// between would otherwise kill the process with requests in its backlog.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
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
        // A command's output piped to `head` ends the command when the pipe
        // closes, as it does for other Unix tools; Rust ignores SIGPIPE, and
        // `println!` then panics. Only here: the server must keep ignoring
        // it (a client's closed socket is an error to handle, not an exit).
        #[cfg(unix)]
        // SAFETY: setting a signal's disposition to its default, before any
        // thread of this process could be relying on it being ignored.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        if let ConfigCmd::DryRun(a) = cmd {
            return offline::dry_run(a).await;
        }
        return cli::run(&url, cmd).await;
    }
    init_logs(args.log_format);
    // The egress (proxy variables, MODELUX_CA_FILE) before anything else:
    // a gateway that cannot reach its providers should not start serving.
    match modelux::gateway::upstream_client() {
        Ok(client) => {
            if let Some(proxies) = client.proxy_description() {
                tracing::info!(
                    proxies,
                    "providers are reached through an egress proxy (loopback never is)"
                );
            }
        }
        Err(e) => {
            eprintln!("error: cannot reach providers as the environment says:\n{e}");
            return ExitCode::from(2);
        }
    }
    if let Some(file) = std::env::var_os(modelux::gateway::CA_FILE_VAR).filter(|f| !f.is_empty()) {
        tracing::info!(file = %file.to_string_lossy(), "trusting its root certificates besides the Mozilla roots");
    }
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
    let shutdown = shutdown_signal();
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
        println!();
        println!("Traffic is recorded into {store_url}; after some requests, try a");
        println!("candidate config against it (no gateway needed):");
        println!("  cargo run --release --example gateway -- config show | tail -n +2 > candidate.json   # then edit it (a literal api_key shows as \"***\": give it again)");
        println!("  cargo run --release --example gateway -- config dry-run candidate.json --store {store_url} --since 1h --html report.html");
    } else {
        println!(
            "Modelux gateway on http://{addr} (config version {})",
            gateway.version()
        );
    }
    // The version being served (with `--store` alone, the stored active one)
    // sets the limits that hold for the process's life.
    modelux::gateway::raise_open_files_limit(gateway.live().config.server.max_connections);
    // Large request bodies go back to the system once freed, not kept by
    // the allocator after a burst of long prompts.
    modelux::gateway::return_large_buffers();
    let grace = Duration::from_millis(gateway.live().config.server.shutdown_grace_ms);
    match gateway.serve(listener, shutdown, grace).await {
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
        // A password in --url never reaches the terminal.
        let shown = modelux::store::redact_url(url);
        // One deadline for the whole exchange, the answer's body included.
        let exchange = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| format!("cannot reach {shown}: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await;
            Ok::<_, String>((status, body.map_err(|e| e.to_string())?.to_bytes()))
        };
        let (status, bytes) = tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
            .await
            .map_err(|_| format!("{shown} did not answer within 30 s"))??;
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
                if_match,
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
                call(url, "POST", "/admin/config/versions", Some(body), *if_match).await
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
            ConfigCmd::DryRun(_) => unreachable!("dry-run runs offline, see main"),
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
                    "{:>7}  {:<6}  {:<24}  {:<12}  {:<8}  message",
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
            ConfigCmd::DryRun(_) => {}
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

/// `gateway config dry-run`: offline, against the store.
mod offline {
    use std::io::IsTerminal;
    use std::process::ExitCode;
    use std::sync::Arc;

    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use modelux::config::Config;
    use modelux::store::ConfigStore;
    use modelux::traffic::{dry_run as replay, load_window, DryRunOptions, LoadOptions};

    use super::DryRunArgs;

    async fn stored(store: &dyn ConfigStore, n: u64) -> Result<Config, (ExitCode, String)> {
        match store.version(n).await {
            Ok(Some(v)) => Config::from_value(v.config).map_err(|e| {
                (
                    ExitCode::from(2),
                    format!("stored version {n} is not a valid config:\n{e}"),
                )
            }),
            Ok(None) => Err((
                ExitCode::from(2),
                format!("no config version {n} in the store"),
            )),
            Err(e) => Err((ExitCode::FAILURE, format!("cannot read the store: {e}"))),
        }
    }

    fn bar(message: &'static str) -> ProgressBar {
        // Drawn on stderr, only on a terminal: `--json > file` and CI logs
        // stay clean.
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let pb = ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta} left)",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(message);
        pb
    }

    pub async fn dry_run(a: DryRunArgs) -> ExitCode {
        match run(a).await {
            Ok(()) => ExitCode::SUCCESS,
            Err((code, msg)) => {
                eprintln!("error: {msg}");
                code
            }
        }
    }

    async fn run(a: DryRunArgs) -> Result<(), (ExitCode, String)> {
        let input = |m: String| (ExitCode::from(2), m);
        let failed = |m: String| (ExitCode::FAILURE, m);
        // A file is read and validated before the store is opened
        // (`Err(n)`: the candidate is stored version n).
        let candidate_file: Result<Config, u64> = match (&a.candidate, a.candidate_version) {
            (Some(path), None) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| input(format!("cannot read {}: {e}", path.display())))?;
                Ok(Config::from_json(&text).map_err(|e| {
                    input(format!("{} is not a valid config:\n{e}", path.display()))
                })?)
            }
            (None, Some(n)) => Err(n),
            _ => {
                return Err(input(
                    "give the candidate as a config file or --candidate-version N".to_owned(),
                ))
            }
        };
        // Opening a SQLite path creates the file: a mistyped path would
        // leave an empty store behind and report "no active version".
        if let Some(rest) = a.store.trim().strip_prefix("sqlite:") {
            let path = std::path::Path::new(rest.strip_prefix("//").unwrap_or(rest));
            if !path.is_file() {
                return Err(input(format!(
                    "no SQLite store at {}: check --store (the gateway prints its store's URL when it starts)",
                    path.display()
                )));
            }
        }
        let store = modelux::store::open(&a.store).await.map_err(|e| {
            failed(format!(
                "cannot open the store {}: {e}",
                modelux::store::redact_url(&a.store)
            ))
        })?;
        let candidate = match candidate_file {
            Ok(c) => c,
            Err(version) => stored(&*store, version).await?,
        };
        let baseline_version = match a.baseline_version {
            Some(n) => n,
            None => store
                .active()
                .await
                .map_err(|e| failed(format!("cannot read the store: {e}")))?
                .map(|act| act.version)
                .ok_or_else(|| {
                    input(
                        "the store has no active config version to compare with; pass --baseline-version N"
                            .to_owned(),
                    )
                })?,
        };
        let baseline = stored(&*store, baseline_version).await?;

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let from = now.saturating_sub(a.since.as_millis() as u64);
        let seed = a.seed.unwrap_or(DryRunOptions::default().seed);
        let load_opts = LoadOptions {
            max_records: a.max_records.max(1),
            seed,
            ..LoadOptions::default()
        };
        let pb = bar("loading");
        let progress = {
            let pb = pb.clone();
            move |done: u64, total: u64| {
                pb.set_length(total);
                pb.set_position(done);
            }
        };
        let window = load_window(&*store, from, u64::MAX, &load_opts, Some(&progress))
            .await
            .map_err(|e| failed(format!("cannot read the traffic log: {e}")))?;
        pb.finish_and_clear();
        if window.records.is_empty() {
            return Err(input(format!(
                "no recorded traffic in the last {} s: nothing to replay (traffic is recorded while \
                 traffic.enabled is set and the gateway runs with this store)",
                a.since.as_secs()
            )));
        }
        let pb = bar("replaying");
        let opts = DryRunOptions {
            seed,
            sample: window.sample.clone(),
            progress: Some(Arc::new({
                let pb = pb.clone();
                move |done, total| {
                    pb.set_length(total);
                    pb.set_position(done);
                }
            })),
            ..DryRunOptions::default()
        };
        let records = window.records;
        let report =
            tokio::task::spawn_blocking(move || replay(&records, &baseline, &candidate, &opts))
                .await
                .map_err(|e| failed(format!("the replay failed: {e}")))?
                .map_err(|e| input(e.to_string()))?;
        pb.finish_and_clear();

        if let Some(path) = &a.html {
            std::fs::write(path, report.to_html())
                .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
        }
        if a.json {
            let mut v = report.to_json();
            v["baseline_version"] = serde_json::json!(baseline_version);
            v["candidate_version"] = serde_json::json!(a.candidate_version);
            v["since_s"] = serde_json::json!(a.since.as_secs());
            v["verdict"] = serde_json::to_value(report.verdict()).unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            println!(
                "baseline: version {baseline_version} (the {})",
                if a.baseline_version.is_some() {
                    "version given"
                } else {
                    "active one"
                }
            );
            match a.candidate_version {
                Some(n) => println!("candidate: version {n}"),
                None => println!(
                    "candidate: {}",
                    a.candidate
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            }
            print!("{}", report.to_text());
        }
        if let Some(path) = &a.html {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            eprintln!("HTML report written to {}", path.display());
        }
        Ok(())
    }
}
