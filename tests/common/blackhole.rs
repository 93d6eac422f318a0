//! A TCP proxy for tests that can go silent, as a connection through a NAT
//! or load balancer that dropped its state without a reset does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A TCP proxy that can go silent: after `freeze`, the connections it holds
/// stay open but carry nothing either way (what a NAT or load balancer that
/// dropped its state without a reset looks like); new connections are
/// forwarded as before.
pub struct Blackhole {
    pub addr: std::net::SocketAddr,
    /// Bumped by `freeze`: a connection accepted under an older value is silent.
    generation: Arc<AtomicUsize>,
    pub conns: Arc<AtomicUsize>,
}

impl Blackhole {
    pub async fn start(upstream: std::net::SocketAddr) -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let generation = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(AtomicUsize::new(0));
        let (g, c) = (generation.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let born = g.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, g.clone(), born));
                tokio::spawn(pump(sr, cw, g.clone(), born));
            }
        });
        Blackhole {
            addr,
            generation,
            conns,
        }
    }

    /// Silences every connection open now.
    pub fn freeze(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while the proxy's generation is still `born`;
/// after that reads and drops, and keeps both halves open until the test ends.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    generation: Arc<AtomicUsize>,
    born: usize,
) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf).await {
        let live = generation.load(Ordering::SeqCst) == born;
        if n == 0 || (live && to.write_all(&buf[..n]).await.is_err()) {
            break;
        }
    }
    std::future::pending::<()>().await;
    drop(to);
}
