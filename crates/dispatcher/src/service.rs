//! Wires the dispatcher together: the dispatch sessions and the metrics endpoint, both stopped by one shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sms_core::avro::AvroCodec;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;

/// Runs the dispatcher until `shutdown` turns true; `bound` learns the
/// metrics address once it is open.
pub async fn run(
    config: Config,
    gateway_password: String,
    shutdown: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let codec = AvroCodec::single_object();
    let metrics = PrometheusBuilder::new().install_recorder().ok();
    let listener = TcpListener::bind(config.metrics_listen).await?;
    let address = listener.local_addr()?;
    info!(metrics = %address, "dispatcher listening");
    if let Some(bound) = bound {
        let _ = bound.send(address);
    }
    let dispatch =
        crate::consumer::run(Arc::new(config), gateway_password, codec, shutdown.clone());
    let http = serve_metrics(listener, metrics, shutdown.clone());
    let (_, http) = tokio::join!(dispatch, http);
    http?;
    info!("dispatcher stopped");
    Ok(())
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

async fn serve_metrics(
    listener: TcpListener,
    handle: Option<PrometheusHandle>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { handle.map(|h| h.render()).unwrap_or_default() }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped(shutdown))
        .await
}
