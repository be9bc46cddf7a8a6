//! The ingest binary: reads the configuration, starts the service, and stops it on SIGTERM or ctrl-c.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ingest::{Config, Ingest};

/// The platform's entrance: HTTP API and raw-topic bridge for send
/// instructions and subscriptions.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file; `INGEST_…` environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sms_core::telemetry::init("ingest");
    let config = Config::load(args.config.as_deref(), std::env::vars())
        .context("loading the configuration")?;
    let service = Ingest::start(config).await.context("starting ingest")?;
    if !service.run_until(shutdown_signal()).await {
        anyhow::bail!("shutdown did not finish within the drain deadline");
    }
    Ok(())
}

/// Completes on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
