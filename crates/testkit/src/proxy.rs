//! A TCP fault proxy for loopback tests: sits between the services and NATS, adds latency to
//! every chunk it forwards, and can reset every open connection on demand — the network
//! misbehaving, without touching either end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    latency_ms: Arc<AtomicU64>,
    resets: watch::Sender<u64>,
}

impl FaultProxy {
    /// Proxies a free loopback port to `upstream` (`127.0.0.1:<port>`).
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let latency_ms = Arc::new(AtomicU64::new(0));
        let (resets, reset_rx) = watch::channel(0u64);
        let latency = latency_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (latency, mut reset) = (latency.clone(), reset_rx.clone());
                reset.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = pipe(client_read, server_write, latency.clone()) => {}
                        _ = pipe(server_read, client_write, latency) => {}
                        // Dropping both halves closes the sockets: the peers see a reset.
                        _ = reset.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            latency_ms,
            resets,
        }
    }

    /// The URL to give clients instead of the upstream's.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Delays every forwarded chunk by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// Drops every open connection.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency_ms: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
