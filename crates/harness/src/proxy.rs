//! A TCP proxy a test can cut and restore, to take a service away from one
//! client (the analytics sink's ClickHouse, say) while everything else keeps
//! using it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection to `upstream` while open; when cut, closes the
/// connections it carries and refuses new ones until restored.
pub struct TcpProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    open: watch::Sender<bool>,
}

impl TcpProxy {
    /// Starts a proxy on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Arc<Self>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (open, _) = watch::channel(true);
        let proxy = Arc::new(Self {
            address: listener.local_addr()?,
            open,
        });
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*accepting.open.borrow() {
                    drop(client);
                    continue;
                }
                let mut cut = accepting.open.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Ok(proxy)
    }

    /// Closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}
