//! A bare keepalive reverse proxy on the same HTTP stack as the gateway
//! (hyper's server and hyper-util's pooled client on tokio), with none of
//! Modelux in it: no JSON, no routing, no layers, no log line. The load test
//! runs it beside nginx and the gateway so that the gap between the gateway
//! and nginx splits into what the Rust HTTP stack costs and what Modelux
//! adds on top (docs/performance.md, "What dominates the cost").
//!
//! ```text
//! cargo run --release --example hyper_proxy -- --listen 127.0.0.1:9000 --upstream 127.0.0.1:8081
//! ```

use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http::uri::{Authority, Scheme, Uri};
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(
    name = "hyper_proxy",
    about = "Bare hyper reverse proxy (load-test baseline)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream's `host:port`, spoken to over plain HTTP/1.1.
    #[arg(long)]
    upstream: Authority,
}

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(connector);
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("hyper_proxy on {} -> {}", args.listen, args.upstream);
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let client = client.clone();
        let upstream = args.upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let mut uri = parts.uri.into_parts();
                    uri.scheme = Some(Scheme::HTTP);
                    uri.authority = Some(upstream);
                    parts.uri = Uri::from_parts(uri).expect("scheme, authority and path");
                    let req = Request::from_parts(parts, body.boxed());
                    let resp = client.request(req).await;
                    resp.map(|r| r.map(|b| b.boxed()))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
