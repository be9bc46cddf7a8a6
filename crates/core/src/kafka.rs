//! Kafka client setup shared by every service: settings, topic catalogue, producer and consumer defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

use crate::error::CoreError;

/// Where the brokers are and how to talk to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list. Default `127.0.0.1:9092`.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: String,
    /// Prefix put in front of every topic name, so several deployments (or
    /// tests) share one cluster. Default empty.
    #[serde(default)]
    pub topic_prefix: String,
    /// Extra librdkafka properties, e.g. `security.protocol = "SASL_SSL"`.
    /// Applied last, so they override the defaults below.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".into()
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap: default_bootstrap(),
            topic_prefix: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    /// Settings for `bootstrap` with no prefix and no extra properties.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            ..Self::default()
        }
    }

    /// The topic names under this deployment's prefix.
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", client_id);
        config
    }

    fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// A producer that loses nothing it acknowledged: acks from every in-sync
    /// replica, idempotence (no duplicates from its own retries), and the
    /// Java client's partitioner so every writer of a phone-number key, Java
    /// or Rust, picks the same partition.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            // A record not acknowledged within this time fails, and its caller
            // answers 503 or retries; it is never reported as written.
            .set("message.timeout.ms", "30000");
        self.finish(config)
    }

    /// A transactional producer (consume-transform-produce with offsets in
    /// the same transaction).
    pub fn transactional_producer_config(
        &self,
        client_id: &str,
        transactional_id: &str,
    ) -> ClientConfig {
        let mut config = self.producer_config(client_id);
        config
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "60000");
        self.finish(config)
    }

    /// A consumer that commits only on purpose and sees only committed
    /// transactional records.
    pub fn consumer_config(&self, client_id: &str, group_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .set("partition.assignment.strategy", "cooperative-sticky");
        self.finish(config)
    }

    /// An admin client for topic management.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, CoreError> {
        self.finish(self.base("industry-sms-admin"))
            .create()
            .map_err(CoreError::KafkaSetup)
    }
}

/// The names of the system's topics under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub requests_otp: String,
    pub requests_notify: String,
    pub requests_retry: String,
    pub dispatch: String,
    pub reports: String,
    pub mo: String,
    pub status: String,
    pub subscriptions: String,
    pub dlq: String,
    /// JSON send instructions published by the platform, read by the ingest bridge.
    pub inbound_raw: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |n: &str| format!("{prefix}{n}");
        Self {
            requests_otp: name("sms.requests.otp"),
            requests_notify: name("sms.requests.notify"),
            requests_retry: name("sms.requests.retry"),
            dispatch: name("sms.dispatch"),
            reports: name("sms.reports"),
            mo: name("sms.mo"),
            status: name("sms.status"),
            subscriptions: name("sms.subscriptions"),
            dlq: name("sms.dlq"),
            inbound_raw: name("sms.inbound.raw"),
        }
    }

    /// Every topic with its partition count and settings. The request,
    /// dispatch, status, report and subscription topics share one partition
    /// count so per-recipient state lines up partition by partition.
    pub fn specs(&self, partitions: i32) -> Vec<TopicSpec> {
        let days = |d: u64| (d * 24 * 3600 * 1000).to_string();
        let keyed = |name: &String, retention_days: u64| TopicSpec {
            name: name.clone(),
            partitions,
            config: vec![("retention.ms".into(), days(retention_days))],
        };
        vec![
            keyed(&self.requests_otp, 7),
            keyed(&self.requests_notify, 7),
            keyed(&self.requests_retry, 7),
            // The dispatcher rebuilds dedupe and frequency state from this one.
            keyed(&self.dispatch, 14),
            keyed(&self.reports, 14),
            keyed(&self.mo, 14),
            keyed(&self.status, 14),
            TopicSpec {
                name: self.subscriptions.clone(),
                partitions,
                config: vec![
                    ("cleanup.policy".into(), "compact".into()),
                    ("min.compaction.lag.ms".into(), "60000".into()),
                ],
            },
            keyed(&self.dlq, 30),
            keyed(&self.inbound_raw, 7),
        ]
    }
}

/// A topic as the system expects it to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub config: Vec<(String, String)>,
}

/// Creates the topics that do not exist yet; existing ones are left alone.
/// Returns the names created.
pub async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<String>, CoreError> {
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            spec.config.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(replication),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new.iter(), &options)
        .await
        .map_err(CoreError::KafkaSetup)?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(CoreError::Config {
                    key: format!("topic {name}"),
                    message: format!("could not be created: {code}"),
                })
            }
        }
    }
    Ok(created)
}
