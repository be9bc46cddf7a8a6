//! Test harness: gives a test a Kafka bootstrap address and a ClickHouse URL,
//! and its own topics and database on them, so tests run in parallel without
//! seeing each other.
//!
//! Where the services come from, in order:
//!
//! 1. `KAFKA_BOOTSTRAP` and `CLICKHOUSE_URL`, when set (`make test` sets them
//!    after `deploy/local-services.sh up`);
//! 2. containers started through testcontainers, when a Docker engine answers
//!    (`DOCKER_HOST` or `/var/run/docker.sock`); they live as long as the test
//!    process;
//! 3. otherwise the test fails with a message that says how to start the
//!    local services.

mod proxy;
pub mod tls;

use std::sync::atomic::{AtomicU32, Ordering};

use sms_core::kafka::{create_topics, KafkaSettings, Topics};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::ContainerAsync;
use tokio::sync::OnceCell;

pub use proxy::TcpProxy;

/// Addresses of the services every integration test runs against.
#[derive(Debug, Clone)]
pub struct Services {
    pub kafka_bootstrap: String,
    pub clickhouse_url: String,
}

/// What failed while providing services to a test.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

const HOW_TO_START: &str = "no Kafka/ClickHouse for the tests: run `make test` (it starts them), \
     or `deploy/local-services.sh up && eval \"$(deploy/local-services.sh env)\"` before \
     `cargo test`, or set KAFKA_BOOTSTRAP and CLICKHOUSE_URL, or run a Docker engine";

struct Containers {
    _kafka: ContainerAsync<testcontainers_modules::kafka::apache::Kafka>,
    _clickhouse: ContainerAsync<testcontainers_modules::clickhouse::ClickHouse>,
}

static SERVICES: OnceCell<Services> = OnceCell::const_new();
static CONTAINERS: OnceCell<Containers> = OnceCell::const_new();

/// The services for this test process, found once.
pub async fn services() -> Result<&'static Services, HarnessError> {
    SERVICES.get_or_try_init(find_services).await
}

async fn find_services() -> Result<Services, HarnessError> {
    let kafka = std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|v| !v.is_empty());
    let clickhouse = std::env::var("CLICKHOUSE_URL")
        .ok()
        .filter(|v| !v.is_empty());
    if let (Some(kafka_bootstrap), Some(clickhouse_url)) = (kafka, clickhouse) {
        return Ok(Services {
            kafka_bootstrap,
            clickhouse_url,
        });
    }
    if docker_available() {
        return start_containers().await;
    }
    Err(HarnessError(HOW_TO_START.into()))
}

fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

async fn start_containers() -> Result<Services, HarnessError> {
    use testcontainers_modules::testcontainers::core::IntoContainerPort;
    let containers = CONTAINERS
        .get_or_try_init(|| async {
            let kafka = testcontainers_modules::kafka::apache::Kafka::default()
                .start()
                .await
                .map_err(|e| HarnessError(format!("starting a Kafka container: {e}")))?;
            let clickhouse = testcontainers_modules::clickhouse::ClickHouse::default()
                .start()
                .await
                .map_err(|e| HarnessError(format!("starting a ClickHouse container: {e}")))?;
            Ok::<_, HarnessError>(Containers {
                _kafka: kafka,
                _clickhouse: clickhouse,
            })
        })
        .await?;
    let kafka_port = containers
        ._kafka
        .get_host_port_ipv4(testcontainers_modules::kafka::apache::KAFKA_PORT)
        .await
        .map_err(|e| HarnessError(format!("kafka container port: {e}")))?;
    let clickhouse_port = containers
        ._clickhouse
        .get_host_port_ipv4(8123.tcp())
        .await
        .map_err(|e| HarnessError(format!("clickhouse container port: {e}")))?;
    Ok(Services {
        kafka_bootstrap: format!("127.0.0.1:{kafka_port}"),
        clickhouse_url: format!("http://127.0.0.1:{clickhouse_port}"),
    })
}

/// A name no other test (in this process or another) uses: `{label}_{pid}_{n}_{random}`,
/// made only of characters valid in topic and database names.
pub fn unique_name(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    let label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{label}_{}_{n}_{}", std::process::id(), &random[..8])
}

/// A test's own Kafka: settings whose topic prefix no other test uses, with
/// every system topic already created (`partitions` each).
pub async fn kafka_for_test(label: &str, partitions: i32) -> Result<KafkaSettings, HarnessError> {
    let services = services().await?;
    let mut settings = KafkaSettings::new(services.kafka_bootstrap.clone());
    settings.topic_prefix = format!("{}.", unique_name(label));
    let admin = settings.admin().map_err(|e| HarnessError(e.to_string()))?;
    let specs = Topics::with_prefix(&settings.topic_prefix).specs(partitions);
    create_topics(&admin, &specs, 1)
        .await
        .map_err(|e| HarnessError(format!("creating test topics: {e}")))?;
    wait_for_topics(&settings, &specs).await?;
    Ok(settings)
}

/// Reads `topic` from the beginning with a fresh consumer group (committed
/// records only) until `count` records of type `T` have been read or
/// `within` has passed; returns what was read, with undecodable records
/// counted as errors in the second element.
pub async fn read_topic<T: sms_core::avro::AvroRecord>(
    kafka: &KafkaSettings,
    topic: &str,
    count: usize,
    within: std::time::Duration,
) -> Result<(Vec<T>, usize), HarnessError> {
    use futures::StreamExt;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;

    let consumer: StreamConsumer = kafka
        .consumer_config("harness-reader", &unique_name("reader"))
        .create()
        .map_err(|e| HarnessError(format!("creating a reader: {e}")))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| HarnessError(format!("subscribing to {topic}: {e}")))?;
    let codec = sms_core::avro::AvroCodec::single_object();
    let mut records = Vec::new();
    let mut undecodable = 0;
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + within;
    while records.len() + undecodable < count {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(message))) => match codec
                .decode::<T>(message.payload().unwrap_or_default())
                .await
            {
                Ok(record) => records.push(record),
                Err(_) => undecodable += 1,
            },
            // A topic this young may not be known to every part of the broker yet.
            Ok(Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            )))) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Ok(Some(Err(e))) => return Err(HarnessError(format!("reading {topic}: {e}"))),
            Ok(None) | Err(_) => break,
        }
    }
    Ok((records, undecodable))
}

/// Writes `record` to `topic` under `key` and waits for Kafka's acknowledgement.
pub async fn produce<T: sms_core::avro::AvroRecord>(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    record: &T,
) -> Result<(), HarnessError> {
    let payload = sms_core::avro::AvroCodec::single_object()
        .encode(record)
        .map_err(|e| HarnessError(format!("encoding: {e}")))?;
    producer
        .send(
            rdkafka::producer::FutureRecord::to(topic)
                .key(key)
                .payload(&payload),
            std::time::Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| HarnessError(format!("producing to {topic}: {e}")))?;
    Ok(())
}

/// Waits until the broker's metadata lists every topic with its partitions,
/// so a consumer started next does not see them as unknown.
async fn wait_for_topics(
    settings: &KafkaSettings,
    specs: &[sms_core::kafka::TopicSpec],
) -> Result<(), HarnessError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = settings
        .consumer_config("harness-metadata", "harness-metadata")
        .create()
        .map_err(|e| HarnessError(format!("creating a metadata client: {e}")))?;
    for _ in 0..100 {
        let ready = consumer
            .fetch_metadata(None, std::time::Duration::from_secs(5))
            .is_ok_and(|m| {
                specs.iter().all(|spec| {
                    m.topics().iter().any(|t| {
                        t.name() == spec.name
                            && t.error().is_none()
                            && t.partitions().len() as i32 == spec.partitions
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
            });
        if ready {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(HarnessError(
        "test topics did not appear in the broker's metadata within 10 s".into(),
    ))
}

/// A test's own ClickHouse database, created empty; the client points at it.
pub async fn clickhouse_for_test(
    label: &str,
) -> Result<(clickhouse::Client, String), HarnessError> {
    let services = services().await?;
    let database = unique_name(label);
    let client = clickhouse::Client::default().with_url(&services.clickhouse_url);
    client
        .query(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
        .execute()
        .await
        .map_err(|e| {
            HarnessError(format!(
                "creating database {database} at {}: {e}",
                services.clickhouse_url
            ))
        })?;
    Ok((client.with_database(&database), database))
}
