//! The `analytics` binary: loads the configuration, migrates the schema, serves metrics, runs the sink.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use analytics::exporter::{self, Health};
use analytics::{schema, AnalyticsConfig, Sink};

// Decoding allocates many short-lived strings on every worker thread; this
// allocator keeps a heap per thread and frees them far more cheaply than
// the system one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Streams every topic into ClickHouse.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Arguments {
    /// A TOML configuration file; every key can also be set by an
    /// `ANALYTICS_...` environment variable.
    #[arg(long)]
    config: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    sms_core::telemetry::init(analytics::sink::SERVICE);
    let config = AnalyticsConfig::load(arguments.config.as_deref()).context("configuration")?;
    if arguments.check_config {
        println!("configuration ok");
        return Ok(());
    }

    let report = schema::migrate(&config.clickhouse, config.ttl_months)
        .await
        .context("applying the ClickHouse schema")?;
    tracing::info!(applied = ?report.applied, already_applied = report.already_applied, "schema ready");

    let shutdown = CancellationToken::new();
    let health = Health::default();
    let (_, endpoint) = exporter::serve(config.metrics_address, health.clone(), shutdown.clone())
        .await
        .context("metrics endpoint")?;
    tokio::spawn(stop_on_signal(shutdown.clone()));

    let sink = Sink::new(&config, health).context("starting the sink")?;
    let result = sink.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = endpoint.await;
    result.context("sink")?;
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or ctrl-c.
async fn stop_on_signal(shutdown: CancellationToken) {
    sms_core::telemetry::terminated().await;
    shutdown.cancel();
}
