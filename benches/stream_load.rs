//! A streaming load tool used by `scripts/loadtest.sh` (not a criterion
//! bench: `cargo bench` runs it with no mode and it returns at once).
//!
//! ```text
//! stream_load ttft --url URL --model M --streams 1000 [--ramp-ms 1000] [--warmup]
//! stream_load hold --url URL --model M --streams 10000 --pid PID [--ramp-ms 5000] [--hold-ms 3000]
//! ```
//!
//! `ttft` opens `--streams` streaming Chat Completions requests, started
//! evenly over `--ramp-ms` (open loop: each stream's clock starts at its
//! scheduled start, not when the client got round to sending it), reads each
//! to its end, and reports the time to the first content token (the first
//! SSE event whose `delta.content` is not empty): p50, p99, p99.9, max.
//! With `--warmup` the same load runs once first, unmeasured, so connection
//! pools (client to server, gateway to provider) are warm.
//!
//! `hold` opens `--streams` streams, waits until every one has delivered its
//! first content token, then reads `VmRSS` of `--pid` from `/proc`, holds
//! the streams open for `--hold-ms`, reads it again, and closes them all.
//! With `--http2` the streams go over HTTP/2 (h2c, prior knowledge), 100
//! to a connection.
//!
//! `--pid` takes a comma-separated list (nginx's master and workers): the
//! RSS reported is their sum.
//!
//! Each mode prints one JSON object on stdout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

struct Opts {
    mode: String,
    url: String,
    model: String,
    streams: usize,
    ramp: Duration,
    hold: Duration,
    pids: Vec<u32>,
    warmup: bool,
    timeout: Duration,
    /// Speak HTTP/2 (prior knowledge, h2c) to the server: streams share
    /// connections instead of holding one each.
    http2: bool,
}

/// Streams per HTTP/2 connection with `--http2`: under hyper's default
/// server limit of 200 concurrent streams per connection.
const STREAMS_PER_H2_CONNECTION: usize = 100;

const USAGE: &str = "usage: stream_load ttft|hold --url URL --model NAME --streams N \
[--ramp-ms MS] [--hold-ms MS] [--pid PID[,PID...]] [--warmup] [--timeout-ms MS] [--http2]";

fn parse() -> Result<Option<Opts>, String> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let Some(mode) = args.next() else {
        return Ok(None);
    };
    if mode != "ttft" && mode != "hold" {
        return Err(format!("unknown mode {mode:?}"));
    }
    let mut o = Opts {
        mode,
        url: String::new(),
        model: String::new(),
        streams: 1000,
        ramp: Duration::from_millis(1000),
        hold: Duration::from_millis(3000),
        pids: Vec::new(),
        warmup: false,
        timeout: Duration::from_secs(120),
        http2: false,
    };
    while let Some(a) = args.next() {
        if a == "--warmup" {
            o.warmup = true;
            continue;
        }
        if a == "--http2" {
            o.http2 = true;
            continue;
        }
        let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--url" => o.url = v,
            "--model" => o.model = v,
            "--streams" => o.streams = num(&v)? as usize,
            "--ramp-ms" => o.ramp = Duration::from_millis(num(&v)?),
            "--hold-ms" => o.hold = Duration::from_millis(num(&v)?),
            "--timeout-ms" => o.timeout = Duration::from_millis(num(&v)?),
            "--pid" => {
                for p in v.split(',') {
                    o.pids.push(num(p)? as u32);
                }
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.url.is_empty() || o.model.is_empty() || o.streams == 0 {
        return Err("--url, --model and --streams are required".into());
    }
    Ok(Some(o))
}

fn body(model: &str) -> String {
    serde_json::json!({
        "model": model,
        "stream": true,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Write one short sentence about the sea."}
        ],
        "max_tokens": 64
    })
    .to_string()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether an SSE event carries a non-empty `delta.content`.
fn has_content(ev: &[u8]) -> bool {
    let key = b"\"content\":\"";
    let mut rest = ev;
    while let Some(i) = find(rest, key) {
        let after = &rest[i + key.len()..];
        if after.first().is_some_and(|b| *b != b'"') {
            return true;
        }
        rest = after;
    }
    false
}

#[derive(Default)]
struct Outcome {
    ttft: Option<Duration>,
    done: bool,
    error: Option<String>,
}

/// One stream: sent at `start`, read to its end, or in hold mode until
/// `stop` turns true (then it is closed, which is not an error). `opened`
/// counts streams that delivered their first token.
async fn one_stream(
    client: reqwest::Client,
    url: Arc<str>,
    body: Arc<str>,
    start: Instant,
    opened: Arc<AtomicUsize>,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Outcome {
    let work = read_stream(client, url, body, start, opened);
    match stop {
        Some(mut stop) => tokio::select! {
            out = work => out,
            _ = stop.wait_for(|v| *v) => Outcome::default(),
        },
        None => work.await,
    }
}

async fn read_stream(
    client: reqwest::Client,
    url: Arc<str>,
    body: Arc<str>,
    start: Instant,
    opened: Arc<AtomicUsize>,
) -> Outcome {
    tokio::time::sleep_until(start).await;
    let mut out = Outcome::default();
    let resp = match client
        .post(&*url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("send: {e}"));
            return out;
        }
    };
    if !resp.status().is_success() {
        out.error = Some(format!("status {}", resp.status()));
        return out;
    }
    let mut s = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                out.error = Some(format!("body: {e}"));
                return out;
            }
        };
        buf.extend_from_slice(&chunk);
        while let Some(i) = find(&buf, b"\n\n") {
            if out.ttft.is_none() && has_content(&buf[..i]) {
                out.ttft = Some(start.elapsed());
                opened.fetch_add(1, Ordering::Relaxed);
            }
            if find(&buf[..i], b"[DONE]").is_some() {
                out.done = true;
            }
            buf.drain(..i + 2);
        }
    }
    out
}

async fn run(
    o: &Opts,
    clients: &[reqwest::Client],
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> (Vec<tokio::task::JoinHandle<Outcome>>, Arc<AtomicUsize>) {
    let url: Arc<str> = o.url.as_str().into();
    let body: Arc<str> = body(&o.model).into();
    let opened = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now() + Duration::from_millis(50);
    let step = o.ramp.as_secs_f64() / o.streams as f64;
    let tasks = (0..o.streams)
        .map(|i| {
            let start = t0 + Duration::from_secs_f64(step * i as f64);
            tokio::spawn(one_stream(
                clients[i % clients.len()].clone(),
                url.clone(),
                body.clone(),
                start,
                opened.clone(),
                stop.clone(),
            ))
        })
        .collect();
    (tasks, opened)
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Outcome {
            error: Some(format!("task: {e}")),
            ..Outcome::default()
        }));
    }
    out
}

fn first_error(outcomes: &[Outcome]) -> Option<&str> {
    outcomes.iter().find_map(|o| o.error.as_deref())
}

async fn ttft(o: &Opts, clients: &[reqwest::Client]) -> serde_json::Value {
    if o.warmup {
        let (tasks, _) = run(o, clients, None).await;
        let _ = tokio::time::timeout(o.timeout, collect(tasks)).await;
    }
    let (tasks, _) = run(o, clients, None).await;
    let outcomes = match tokio::time::timeout(o.timeout, collect(tasks)).await {
        Ok(v) => v,
        Err(_) => return serde_json::json!({"mode": "ttft", "error": "timed out"}),
    };
    let mut us: Vec<u64> = outcomes
        .iter()
        .filter_map(|x| x.ttft)
        .map(|d| d.as_micros() as u64)
        .collect();
    us.sort_unstable();
    let errors = outcomes.iter().filter(|x| x.error.is_some()).count();
    serde_json::json!({
        "mode": "ttft",
        "streams": o.streams,
        "ramp_ms": o.ramp.as_millis() as u64,
        "first_token": us.len(),
        "completed": outcomes.iter().filter(|x| x.done).count(),
        "errors": errors,
        "first_error": first_error(&outcomes),
        "p50_us": percentile(&us, 0.50),
        "p99_us": percentile(&us, 0.99),
        "p999_us": percentile(&us, 0.999),
        "max_us": us.last().copied().unwrap_or(0),
    })
}

async fn hold(o: &Opts, clients: &[reqwest::Client]) -> serde_json::Value {
    let pids = o.pids.clone();
    let rss = move || -> Option<u64> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|p| vm_rss_kb(*p)).sum()
    };
    let before = rss();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (tasks, opened) = run(o, clients, Some(stopped)).await;
    let deadline = Instant::now() + o.timeout;
    // Until every stream has delivered its first token or ended (an error).
    while Instant::now() < deadline {
        let ended = tasks.iter().filter(|t| t.is_finished()).count();
        if opened.load(Ordering::Relaxed) + ended >= o.streams {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = opened.load(Ordering::Relaxed);
    let open_at = rss();
    tokio::time::sleep(o.hold).await;
    let held = rss();
    // Streams that ended early (an error) are not open any more.
    let still_open = tasks.iter().filter(|t| !t.is_finished()).count();
    let _ = stop.send(true);
    let outcomes: Vec<Outcome> = collect(tasks).await;
    let per_stream = match (before, held) {
        (Some(b), Some(h)) if open > 0 => Some((h.saturating_sub(b) * 1024) / open as u64),
        _ => None,
    };
    serde_json::json!({
        "mode": "hold",
        "streams": o.streams,
        "opened": open,
        "still_open_after_hold": still_open,
        "errors": outcomes.iter().filter(|x| x.error.is_some()).count(),
        "first_error": first_error(&outcomes),
        "rss_before_kb": before,
        "rss_open_kb": open_at,
        "rss_after_hold_kb": held,
        "rss_per_stream_bytes": per_stream,
    })
}

fn main() -> std::process::ExitCode {
    let opts = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("stream_load: the streaming load tool of scripts/loadtest.sh; nothing to do without a mode");
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        // HTTP/1.1: one client, one connection per open stream. HTTP/2:
        // one client (so one connection) per STREAMS_PER_H2_CONNECTION.
        let n = if opts.http2 {
            opts.streams.div_ceil(STREAMS_PER_H2_CONNECTION)
        } else {
            1
        };
        let clients: Vec<reqwest::Client> = (0..n)
            .map(|_| {
                let b = reqwest::Client::builder()
                    .pool_max_idle_per_host(usize::MAX)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .tcp_nodelay(true);
                let b = if opts.http2 {
                    b.http2_prior_knowledge()
                } else {
                    b
                };
                b.build().expect("client")
            })
            .collect();
        if opts.mode == "ttft" {
            ttft(&opts, &clients).await
        } else {
            hold(&opts, &clients).await
        }
    });
    println!("{out}");
    std::process::ExitCode::SUCCESS
}
