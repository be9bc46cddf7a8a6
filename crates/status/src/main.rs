//! `status`: the SGIP report receiver and the final-status consumer.

use std::path::PathBuf;

use clap::Parser;
use status::config::Config;

#[derive(Parser)]
#[command(
    name = "status",
    version,
    about = "Receive carrier reports and decide every message's final status."
)]
struct Cli {
    /// TOML configuration file (see deploy/config/status.toml); `STATUS_…` variables override it.
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
    let cli = Cli::parse();
    sms_core::telemetry::init("status");
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if cli.check_config {
        println!("configuration ok");
        return Ok(());
    }
    let password = config.receiver.password();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        sms_core::telemetry::terminated().await;
        let _ = stop.send(true);
    });
    status::service::run(config, password.expose().to_string(), shutdown, None).await
}
