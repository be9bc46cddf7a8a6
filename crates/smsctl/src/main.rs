//! `smsctl`: the operator's command-line tool.

use clap::{Parser, Subcommand};
use smsctl::topics::{self, TopicsCommand};

#[derive(Parser)]
#[command(
    name = "smsctl",
    version,
    about = "Operate industry-sms: topics, reports, traces, replay."
)]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    kafka: String,
    /// Prefix in front of every topic name (for a shared cluster).
    #[arg(long, env = "SMS_TOPIC_PREFIX", default_value = "", global = true)]
    topic_prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the system's topics, or check a cluster against them.
    #[command(subcommand)]
    Topics(TopicsCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    sms_core::telemetry::init_with("smsctl", "warn");
    let mut kafka = sms_core::kafka::KafkaSettings::new(cli.kafka);
    kafka.topic_prefix = cli.topic_prefix;
    let result = match cli.command {
        Command::Topics(command) => topics::run(&kafka, command).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smsctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
