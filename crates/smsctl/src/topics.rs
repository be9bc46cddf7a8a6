//! `smsctl topics`: create the system's topics, or check an existing cluster against the catalogue.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use sms_core::kafka::{create_topics, KafkaSettings, TopicSpec};

/// Partitions per topic unless told otherwise. Request, dispatch, status,
/// report and subscription topics must share one count.
pub const DEFAULT_PARTITIONS: i32 = 6;

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every topic that does not exist yet.
    ///
    /// Example: smsctl topics create --partitions 6 --replication 3
    Create {
        #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Check that every topic exists with the expected partitions and settings.
    ///
    /// Example: smsctl topics check --partitions 6
    Check {
        #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
        partitions: i32,
    },
}

pub async fn run(kafka: &KafkaSettings, command: TopicsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicsCommand::Create {
            partitions,
            replication,
        } => {
            let specs = kafka.topics().specs(partitions);
            let admin = kafka.admin()?;
            let created = create_topics(&admin, &specs, replication)
                .await
                .with_context(|| {
                    format!("creating topics on {} (is Kafka up?)", kafka.bootstrap)
                })?;
            for spec in &specs {
                let verb = if created.contains(&spec.name) {
                    "created"
                } else {
                    "exists "
                };
                println!("{verb} {} ({} partitions)", spec.name, spec.partitions);
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Check { partitions } => {
            let problems = check(kafka, &kafka.topics().specs(partitions)).await?;
            if problems.is_empty() {
                println!("ok: every topic matches the catalogue");
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    println!("mismatch: {p}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// Compares the cluster with `specs`; returns one line per difference.
pub async fn check(kafka: &KafkaSettings, specs: &[TopicSpec]) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = kafka
        .consumer_config("smsctl", "smsctl-topics-check")
        .create()
        .context("creating a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(15))
        .with_context(|| format!("reading metadata from {} (is Kafka up?)", kafka.bootstrap))?;
    let admin = kafka.admin()?;

    let mut problems = Vec::new();
    for spec in specs {
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == spec.name) else {
            problems.push(format!(
                "{} does not exist (run `smsctl topics create`)",
                spec.name
            ));
            continue;
        };
        if topic.partitions().len() as i32 != spec.partitions {
            problems.push(format!(
                "{} has {} partitions, expected {}",
                spec.name,
                topic.partitions().len(),
                spec.partitions
            ));
        }
        let configs = admin
            .describe_configs(
                [&ResourceSpecifier::Topic(&spec.name)],
                &AdminOptions::new(),
            )
            .await
            .with_context(|| format!("describing {}", spec.name))?;
        let Some(Ok(resource)) = configs.into_iter().next() else {
            problems.push(format!("{}: its settings could not be read", spec.name));
            continue;
        };
        for (key, expected) in &spec.config {
            let actual = resource.get(key).and_then(|entry| entry.value.clone());
            if actual.as_deref() != Some(expected.as_str()) {
                problems.push(format!(
                    "{}: {key} is {}, expected {expected}",
                    spec.name,
                    actual.as_deref().unwrap_or("unset")
                ));
            }
        }
    }
    Ok(problems)
}
