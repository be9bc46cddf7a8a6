//! HTTPS for the API: a listener that completes each connection's TLS handshake (OpenSSL) before axum sees it.
//!
//! Handshakes run in their own tasks, so a slow or silent client cannot
//! hold up the others; one that does not finish within
//! [`HANDSHAKE_TIMEOUT`] is dropped. A connection that fails its handshake
//! (plain HTTP sent to the HTTPS port, an unknown protocol version) is
//! closed without an answer, logged at debug level and counted in
//! `ingest_tls_handshake_failures_total`. TLS 1.2 and 1.3 only, with
//! Mozilla's "intermediate" cipher list.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_openssl::SslStream;

use crate::error::IngestError;

/// Longest time a client gets to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for axum to take them.
const ACCEPTED_QUEUE: usize = 128;

/// The API's certificate. When the `[tls]` section is absent the API speaks
/// plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the server certificate, followed by any intermediate
    /// certificates.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (unencrypted).
    pub key_file: PathBuf,
}

impl TlsSettings {
    /// Loads the certificate and key and checks that they belong together.
    pub fn acceptor(&self) -> Result<SslAcceptor, IngestError> {
        let bad = |key: &str, path: &Path, message: String| IngestError::Config {
            key: format!("{key} = {:?}", path.display().to_string()),
            message,
        };
        for (key, path) in [
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
        ] {
            if !path.is_file() {
                return Err(bad(key, path, "no such file; expected a PEM file".into()));
            }
        }
        let mut builder =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| {
                IngestError::Config {
                    key: "tls".into(),
                    message: format!("cannot set up openssl: {e}"),
                }
            })?;
        builder
            .set_certificate_chain_file(&self.cert_file)
            .map_err(|e| {
                bad(
                    "tls.cert_file",
                    &self.cert_file,
                    format!("expected a PEM certificate chain: {e}"),
                )
            })?;
        builder
            .set_private_key_file(&self.key_file, SslFiletype::PEM)
            .map_err(|e| {
                bad(
                    "tls.key_file",
                    &self.key_file,
                    format!("expected an unencrypted PEM private key: {e}"),
                )
            })?;
        builder.check_private_key().map_err(|e| {
            bad(
                "tls.key_file",
                &self.key_file,
                format!("expected the private key of tls.cert_file: {e}"),
            )
        })?;
        Ok(builder.build())
    }
}

/// A listener handing axum connections whose TLS handshake is complete.
pub struct TlsListener {
    accepted: mpsc::Receiver<(SslStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_task: AbortHandle,
}

impl TlsListener {
    /// Starts accepting on `listener`, handshaking with `acceptor`.
    pub fn new(listener: TcpListener, acceptor: SslAcceptor) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let acceptor = Arc::new(acceptor);
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, tx)).abort_handle();
        Ok(Self {
            accepted,
            local_addr,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Arc<SslAcceptor>,
    accepted: mpsc::Sender<(SslStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(e) => {
                // Usually out of file descriptors: wait, do not spin.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = accepted.send((stream, peer)).await;
                }
                Ok(Err(reason)) => refused(peer, &reason),
                Err(_) => refused(peer, "handshake timed out"),
            }
        });
    }
}

async fn handshake(acceptor: &SslAcceptor, tcp: TcpStream) -> Result<SslStream<TcpStream>, String> {
    let ssl = Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    Pin::new(&mut stream)
        .accept()
        .await
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

fn refused(peer: SocketAddr, reason: &str) {
    tracing::debug!(%peer, reason, "tls handshake failed; connection closed");
    metrics::counter!("ingest_tls_handshake_failures_total").increment(1);
}

impl axum::serve::Listener for TlsListener {
    type Io = SslStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
