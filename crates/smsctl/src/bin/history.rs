//! `smsctl-history`: writes months of generated traffic into a ClickHouse database, for benchmarks and demonstrations.

use anyhow::Context;
use clap::Parser;
use smsctl::history::{generate, HistoryPlan};
use smsctl::period::parse_instant;
use smsctl::warehouse::ClickHouseOptions;

#[derive(Parser)]
#[command(
    name = "smsctl-history",
    about = "Write generated message history into ClickHouse (server-side, INSERT … SELECT FROM numbers).",
    after_help = "Example (six months at the contract's volume):\n  smsctl-history --database sms_history --from 2026-06-01 --days 183 --messages 17000000"
)]
struct Cli {
    #[command(flatten)]
    clickhouse: ClickHouseOptions,
    /// First day of the history (Beijing time).
    #[arg(long)]
    from: String,
    /// Days the history spans.
    #[arg(long, default_value_t = 183)]
    days: i64,
    /// Messages in all (the contract's volume is about 2.9 million a month).
    #[arg(long, default_value_t = 17_000_000)]
    messages: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let plan = HistoryPlan {
        start_ms: parse_instant("--from", &cli.from)?.timestamp_millis(),
        span_ms: cli.days * 24 * 3600 * 1000,
        messages: cli.messages,
    };
    let settings = analytics::config::ClickHouseSettings {
        url: cli.clickhouse.url.clone(),
        user: cli.clickhouse.user.clone(),
        password: cli.clickhouse.password.clone(),
        database: cli.clickhouse.database.clone(),
        ca_file: cli.clickhouse.ca_file.clone(),
        ..Default::default()
    };
    let warehouse = cli.clickhouse.client();
    let started = std::time::Instant::now();
    generate(&warehouse, &settings, &plan, |done| {
        eprintln!(
            "{done} messages written ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    })
    .await
    .context("generating history")?;
    println!(
        "{} messages to {} phone numbers in {} ({:.0} s)",
        plan.messages,
        plan.phones(),
        cli.clickhouse.database,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
