//! Wires the status service together: the SGIP receiver, the correlation consumer, the uplink handler and the metrics endpoint, all stopped by one shutdown signal.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rdkafka::producer::FutureProducer;
use sgip::server::{Server, ServerConfig};
use sms_core::avro::AvroCodec;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::receiver::ReportReceiver;

/// The addresses a running service listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub receiver: SocketAddr,
    pub metrics: SocketAddr,
}

/// Binds the listeners and runs every part of the service until `shutdown`
/// turns true; `bound` learns the listening addresses once they are open.
pub async fn run(
    config: Config,
    gateway_password: String,
    shutdown: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> anyhow::Result<()> {
    let codec = AvroCodec::single_object();
    let metrics = PrometheusBuilder::new().install_recorder().ok();

    let receiver_listener = TcpListener::bind(config.receiver.listen).await?;
    let metrics_listener = TcpListener::bind(config.metrics_listen).await?;
    let addresses = Bound {
        receiver: receiver_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
    };
    info!(receiver = %addresses.receiver, metrics = %addresses.metrics, "status service listening");
    if let Some(bound) = bound {
        let _ = bound.send(addresses);
    }

    let producer: FutureProducer = config.kafka.producer_config("status-receiver").create()?;
    let handler = ReportReceiver::new(
        producer,
        codec.clone(),
        config.kafka.topics(),
        Duration::from_millis(config.receiver.produce_timeout_ms),
    );
    let server = Server::new(
        ServerConfig {
            login_name: config.receiver.login_name.clone(),
            login_password: gateway_password,
            allowed_peers: config.receiver.allowed_peers.clone(),
            max_connections: config.receiver.max_connections,
            max_in_flight_per_connection: config.receiver.max_in_flight_per_connection,
            ..ServerConfig::default()
        },
        handler,
    )?;

    let receiver = server.run(receiver_listener, stopped(shutdown.clone()));
    let correlation = crate::consumer::run(
        config.kafka.clone(),
        config.correlation.clone(),
        codec.clone(),
        shutdown.clone(),
    );
    let uplink = crate::uplink::run(
        config.kafka.clone(),
        config.uplink.clone(),
        codec,
        shutdown.clone(),
    );
    let http = serve_metrics(metrics_listener, metrics, shutdown.clone());

    let (receiver, _, _, http) = tokio::join!(receiver, correlation, uplink, http);
    receiver?;
    http?;
    info!("status service stopped");
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
