//! `dispatcher`: takes send requests off Kafka, applies the policy and submits them to the gateway.

use std::path::PathBuf;

use clap::Parser;
use dispatcher::config::Config;

#[derive(Parser)]
#[command(
    name = "dispatcher",
    version,
    about = "Submit the platform's SMS to the carrier's gateway, verification codes first."
)]
struct Cli {
    /// TOML configuration file; `DISPATCHER_…` variables override it.
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
    sms_core::telemetry::init("dispatcher");
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if cli.check_config {
        dispatcher::policy::Policy::new(&config.policy)?;
        println!("configuration ok");
        return Ok(());
    }
    let password = config.gateway.password();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        sms_core::telemetry::terminated().await;
        let _ = stop.send(true);
    });
    dispatcher::service::run(config, password.expose().to_string(), shutdown, None).await
}
