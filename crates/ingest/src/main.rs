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
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sms_core::telemetry::init("ingest");
    let config = Config::load(args.config.as_deref(), std::env::vars())
        .context("loading the configuration")?;
    if args.check_config {
        println!("configuration ok");
        return Ok(());
    }
    let service = Ingest::start(config).await.context("starting ingest")?;
    if !service.run_until(shutdown_signal()).await {
        anyhow::bail!("shutdown did not finish within the drain deadline");
    }
    Ok(())
}

/// Completes on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    sms_core::telemetry::terminated().await;
}
