//! The `smsc-sim` binary: loads the configuration, starts the simulator, stops on Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use smsc_sim::{SimConfig, Simulator, SpListener};

/// A China Unicom SGIP 1.2 gateway simulator.
#[derive(Debug, Parser)]
#[command(name = "smsc-sim", version)]
struct Args {
    /// TOML configuration file; flags below override it.
    #[arg(long, env = "SMSC_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// Address SPs submit to.
    #[arg(long)]
    submit_addr: Option<SocketAddr>,
    /// Address of the control and counts endpoint.
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// The SP's report listener (`host:port`); reports are sent there.
    #[arg(long)]
    report_addr: Option<String>,
    /// Login name the SP binds with.
    #[arg(long)]
    login_name: Option<String>,
    /// Password the SP binds with.
    #[arg(long)]
    login_password: Option<String>,
    /// Submits per second before Result 88 (0 for no limit).
    #[arg(long)]
    tps_limit: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<SimConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => SimConfig::default(),
    };
    if let Some(addr) = args.submit_addr {
        config.submit_addr = addr;
    }
    if let Some(addr) = args.http_addr {
        config.http_addr = addr;
    }
    if let Some(addr) = args.report_addr {
        config.sp.get_or_insert_with(SpListener::default).addr = addr;
    }
    if let Some(name) = args.login_name {
        config.account.login_name = name;
    }
    if let Some(password) = args.login_password {
        config.account.login_password = password;
    }
    if let Some(tps) = args.tps_limit {
        config.submit.tps_limit = tps;
    }
    let handle = Simulator::start(config).await?;
    println!("submit {} http {}", handle.submit_addr, handle.http_addr);
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    handle.shutdown().await;
    Ok(())
}
