//! A TCP proxy for tests that can go silent, as a connection through a NAT
//! or load balancer that dropped its state without a reset does.

use std::sync::Arc;

/// A TCP proxy that can go silent: after `freeze`, the connections it holds
/// stay open but carry nothing either way (what a NAT or load balancer that
/// dropped its state without a reset looks like); new connections are
/// forwarded as before.
pub struct Blackhole {
    pub addr: std::net::SocketAddr,
    /// Bumped by `freeze`: a connection accepted under an older value is silent.
    generation: Arc<std::sync::atomic::AtomicUsize>,
    pub conns: Arc<std::sync::atomic::AtomicUsize>,
}

impl Blackhole {
    pub async fn start(upstream: std::net::SocketAddr) -> Blackhole {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let g1 = g.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = cr.read(&mut buf).await {
                        let live = g1.load(Ordering::SeqCst) == born;
                        if n == 0 || (live && sw.write_all(&buf[..n]).await.is_err()) {
                            break;
                        }
                    }
                    // Held open, silent, until the test ends.
                    std::future::pending::<()>().await;
                    drop(sw);
                });
                let g2 = g.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = sr.read(&mut buf).await {
                        let live = g2.load(Ordering::SeqCst) == born;
                        if n == 0 || (live && cw.write_all(&buf[..n]).await.is_err()) {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                    drop(cw);
                });
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
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
