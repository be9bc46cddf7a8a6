//! The sink's metrics in Prometheus text on `/metrics`, and its health on `/healthz`.
//!
//! Metric names (all prefixed `analytics_`):
//!
//! - `records_read_total{topic}`: records taken from Kafka;
//! - `rows_inserted_total{table}`: rows ClickHouse accepted;
//! - `batch_records`, `batch_rows`, `insert_seconds`: per batch (summaries);
//! - `insert_retries_total`: failed insert attempts, each followed by a wait;
//! - `redelivered_rows_skipped_total`: rows already stored, read again after a
//!   restart or rebalance, and not stored twice;
//! - `dead_letters_total{topic}`: records that did not decode;
//! - `commit_failures_total`: offset commits the broker refused;
//! - `consumer_lag{topic,partition}`: records behind the end of each
//!   partition, from librdkafka's statistics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::error::AnalyticsError;

pub const RECORDS_READ: &str = "analytics_records_read_total";
pub const ROWS_INSERTED: &str = "analytics_rows_inserted_total";
pub const BATCH_RECORDS: &str = "analytics_batch_records";
pub const BATCH_ROWS: &str = "analytics_batch_rows";
pub const INSERT_SECONDS: &str = "analytics_insert_seconds";
pub const INSERT_RETRIES: &str = "analytics_insert_retries_total";
pub const REDELIVERED_SKIPPED: &str = "analytics_redelivered_rows_skipped_total";
pub const DEAD_LETTERS: &str = "analytics_dead_letters_total";
pub const COMMIT_FAILURES: &str = "analytics_commit_failures_total";
pub const CONSUMER_LAG: &str = "analytics_consumer_lag";

/// Whether the sink is storing: false while ClickHouse refuses inserts.
#[derive(Debug, Clone)]
pub struct Health {
    storing: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            storing: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Health {
    pub fn set_storing(&self, storing: bool) {
        self.storing.store(storing, Ordering::Relaxed);
    }

    pub fn is_storing(&self) -> bool {
        self.storing.load(Ordering::Relaxed)
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (in a test process); the
        // handle then renders only what this one saw, which is nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[derive(Clone)]
struct EndpointState {
    handle: &'static PrometheusHandle,
    health: Health,
}

/// Serves `/metrics` and `/healthz` on `address` until `shutdown`; returns
/// the address actually bound (port 0 picks a free one).
pub async fn serve(
    address: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AnalyticsError> {
    let failed = |message: String| AnalyticsError::Metrics {
        address: address.to_string(),
        message,
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| failed(e.to_string()))?;
    let state = EndpointState {
        handle: recorder(),
        health,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .with_state(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "metrics endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "metrics endpoint listening");
    Ok((bound, task))
}

async fn metrics_text(State(state): State<EndpointState>) -> String {
    state.handle.run_upkeep();
    state.handle.render()
}

async fn healthz(State(state): State<EndpointState>) -> (StatusCode, &'static str) {
    if state.health.is_storing() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "clickhouse is refusing inserts; retrying\n",
        )
    }
}
