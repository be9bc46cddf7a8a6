//! `smsctl`: the operator's command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use smsctl::period::{parse_instant, Month, Quarter};
use smsctl::replay::{Bar, ReplayTarget, ReplayWindow, Silent};
use smsctl::topics::{self, TopicsCommand};
use smsctl::trace::{normalise_phone, TraceTarget};
use smsctl::warehouse::ClickHouseOptions;
use smsctl::{billing, monthly, report, trace};

#[derive(Parser)]
#[command(
    name = "smsctl",
    version,
    about = "Operate industry-sms: topics, reports, billing, traces, replay.",
    after_help = "Examples:\n  smsctl report monthly --month 2026-11 --out reports/\n  smsctl trace --message 6f1c0e2a-... --out traces/\n  smsctl replay --topic sms.status --from 2026-11-03T08:00 --to 2026-11-03T09:00 --to-file status.jsonl\n\nTimes are Beijing time (UTC+8) unless they carry an offset."
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
    #[command(flatten)]
    clickhouse: ClickHouseOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the system's topics, or check a cluster against them.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// The monthly report (3.10) and the quarterly billing and SLA.
    #[command(subcommand)]
    Report(ReportCommand),
    /// The timeline of messages, with a trace report for the bureau (3.11).
    #[command(
        after_help = "Examples:\n  smsctl trace --message 6f1c0e2a5b7d4e3f --out traces/\n  smsctl trace --request REQ-20261103-0042\n  smsctl trace --phone 13012345678 --from 2026-06-01 --to 2026-12-01 --out traces/"
    )]
    Trace(TraceArgs),
    /// Read a time window of a topic and write it to a topic, a file or ClickHouse.
    #[command(
        after_help = "Examples:\n  smsctl replay --topic sms.status --from 2026-11-03T08:00 --to 2026-11-03T09:00 --to-file status.jsonl\n  smsctl replay --topic sms.dispatch --from 2026-11-03T08:00 --to 2026-11-03T09:00 --phone 13012345678\n  smsctl replay --topic sms.status --from 2026-11-03T08:00 --to 2026-11-03T09:00 --to-clickhouse\n\nWith no --to-… option the records go to standard output as JSON lines."
    )]
    Replay(ReplayArgs),
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Volume, success and timeliness rates, failures, refusals and latency of one month.
    #[command(
        after_help = "Example:\n  smsctl report monthly --month 2026-11 --out reports/\n  (writes monthly-2026-11.html, .md and .csv; prints the Markdown)"
    )]
    Monthly {
        /// The month, YYYY-MM (Beijing time).
        #[arg(long)]
        month: String,
        /// Directory to write monthly-YYYY-MM.html, .md and .csv into.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the SQL behind every figure.
        #[arg(long)]
        show_sql: bool,
    },
    /// The fee of a settlement quarter, the budget, and the SLA deductions.
    #[command(
        after_help = "Example:\n  smsctl report billing --quarter 2026Q4 --contract-start 2026-01 --show-sql"
    )]
    Billing {
        /// The quarter, YYYYQn.
        #[arg(long)]
        quarter: String,
        /// The contract's first month (YYYY-MM): spend against the budget counts from it.
        #[arg(long, env = "SMS_CONTRACT_START")]
        contract_start: String,
        /// Print the SQL behind every figure.
        #[arg(long)]
        show_sql: bool,
    },
}

#[derive(Args)]
struct TraceArgs {
    /// A message id (repeatable).
    #[arg(long = "message", conflicts_with_all = ["request", "phone"])]
    messages: Vec<String>,
    /// The platform's request id.
    #[arg(long, conflicts_with = "phone")]
    request: Option<String>,
    /// A phone number (11 digits or E.164); needs --from and --to.
    #[arg(long, requires_all = ["from", "to"])]
    phone: Option<String>,
    /// Start of the window (Beijing time unless an offset is given).
    #[arg(long)]
    from: Option<String>,
    /// End of the window, exclusive.
    #[arg(long)]
    to: Option<String>,
    /// Directory to write the trace report (HTML and Markdown) into.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the SQL the trace ran.
    #[arg(long)]
    show_sql: bool,
}

#[derive(Args)]
struct ReplayArgs {
    /// The topic to read, without the deployment prefix (e.g. sms.status).
    #[arg(long)]
    topic: String,
    /// Start of the window (Beijing time unless an offset is given).
    #[arg(long)]
    from: String,
    /// End of the window, exclusive.
    #[arg(long)]
    to: String,
    /// Only records keyed by this phone number.
    #[arg(long)]
    phone: Option<String>,
    /// Write the records, unchanged, to this topic (without prefix).
    #[arg(long, conflicts_with_all = ["to_file", "to_clickhouse"])]
    to_topic: Option<String>,
    /// Write the decoded records to this file as JSON lines.
    #[arg(long, conflicts_with = "to_clickhouse")]
    to_file: Option<PathBuf>,
    /// Store the records' rows in sms_events, skipping those already there.
    #[arg(long)]
    to_clickhouse: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    sms_core::telemetry::init_with("smsctl", "warn");
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smsctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut kafka = sms_core::kafka::KafkaSettings::new(cli.kafka);
    kafka.topic_prefix = cli.topic_prefix;
    let warehouse = cli.clickhouse.client();
    match cli.command {
        Command::Topics(command) => topics::run(&kafka, command).await,
        Command::Report(ReportCommand::Monthly {
            month,
            out,
            show_sql,
        }) => {
            let month = Month::parse(&month)?;
            let figures = monthly::monthly_report(&warehouse, month).await?;
            if show_sql {
                print_sql(&figures.sql);
            }
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for (ext, body) in [
                    ("html", report::html(&figures)),
                    ("md", report::markdown(&figures)),
                    ("csv", report::csv(&figures)),
                ] {
                    let path = dir.join(format!("monthly-{month}.{ext}"));
                    std::fs::write(&path, body)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
            }
            print!("{}", report::markdown(&figures));
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(ReportCommand::Billing {
            quarter,
            contract_start,
            show_sql,
        }) => {
            let quarter = Quarter::parse(&quarter)?;
            let start = Month::parse(&contract_start)
                .context("--contract-start (or SMS_CONTRACT_START)")?;
            let settlement = billing::billing(&warehouse, quarter, start).await?;
            if show_sql {
                print_sql(&settlement.sql);
            }
            print!("{}", billing::markdown(&settlement));
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace(args) => {
            let target = trace_target(&args)?;
            let found = trace::trace(&warehouse, target).await?;
            if args.show_sql {
                print_sql(&found.sql);
            }
            print!("{}", trace::terminal(&found));
            if let Some(dir) = &args.out {
                let now = sms_core::events::now_millis();
                for path in trace::write_report(&found, dir, now)? {
                    eprintln!("wrote {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            let window = ReplayWindow {
                topic: format!("{}{}", kafka.topic_prefix, args.topic),
                from: parse_instant("--from", &args.from)?.timestamp_millis(),
                to: parse_instant("--to", &args.to)?.timestamp_millis(),
                phone: args.phone.as_deref().map(normalise_phone).transpose()?,
            };
            let target = match (args.to_topic, args.to_file, args.to_clickhouse) {
                (Some(topic), _, _) => {
                    ReplayTarget::Topic(format!("{}{topic}", kafka.topic_prefix))
                }
                (_, Some(path), _) => ReplayTarget::File(path),
                (_, _, true) => ReplayTarget::ClickHouse(Box::new(warehouse)),
                _ => ReplayTarget::Stdout,
            };
            let progress: Box<dyn smsctl::replay::Progress> =
                if matches!(target, ReplayTarget::Stdout) {
                    Box::new(Silent)
                } else {
                    Box::new(Bar::new())
                };
            let started = std::time::Instant::now();
            let summary = smsctl::replay::replay(&kafka, window, target, progress).await?;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "replayed {} of {} records read from {} partition(s) in {seconds:.1} s ({:.0} records/s); {} already stored, {} undecodable",
                summary.written,
                summary.read,
                summary.partitions,
                summary.read as f64 / seconds.max(0.001),
                summary.already_stored,
                summary.undecodable
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn trace_target(args: &TraceArgs) -> anyhow::Result<TraceTarget> {
    let window = match (&args.from, &args.to) {
        (Some(from), Some(to)) => Some((
            parse_instant("--from", from)?.timestamp_millis(),
            parse_instant("--to", to)?.timestamp_millis(),
        )),
        _ => None,
    };
    if !args.messages.is_empty() {
        return Ok(TraceTarget::Messages(args.messages.clone()));
    }
    if let Some(request_id) = &args.request {
        return Ok(TraceTarget::Request {
            request_id: request_id.clone(),
            window,
        });
    }
    if let (Some(phone), Some((from, to))) = (&args.phone, window) {
        return Ok(TraceTarget::Phone {
            phone: normalise_phone(phone)?,
            from,
            to,
        });
    }
    anyhow::bail!(
        "say what to trace: --message ID, --request ID, or --phone NUMBER --from TIME --to TIME"
    )
}

fn print_sql(statements: &[String]) {
    for sql in statements {
        println!("```sql\n{sql};\n```\n");
    }
}
