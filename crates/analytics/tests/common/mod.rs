//! Shared plumbing of the sink's integration tests: a test's own topics and database, records with current timestamps, and waiting for counts.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use analytics::config::{AnalyticsConfig, ClickHouseSettings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sms_core::avro::{AvroCodec, AvroRecord};
use sms_core::events::{
    now_millis, FailureCategory, FinalState, FinalStatus, MessageKind, RequestSource, SmsRequest,
};
use sms_core::kafka::KafkaSettings;

/// A test's own topics and database, and a sink configuration pointing at them.
pub struct TestBed {
    pub kafka: KafkaSettings,
    pub config: AnalyticsConfig,
    pub client: clickhouse::Client,
    pub producer: FutureProducer,
}

pub async fn test_bed(label: &str, partitions: i32) -> TestBed {
    let kafka = sms_harness::kafka_for_test(label, partitions)
        .await
        .expect("test topics");
    let (client, database) = sms_harness::clickhouse_for_test(label)
        .await
        .expect("test database");
    let services = sms_harness::services().await.expect("services");
    let config = AnalyticsConfig {
        kafka: kafka.clone(),
        clickhouse: ClickHouseSettings {
            url: services.clickhouse_url.clone(),
            database,
            ..ClickHouseSettings::default()
        },
        group_id: sms_harness::unique_name("analytics"),
        batch_max_events: 1_000,
        batch_max_ms: 300,
        retry_initial_ms: 100,
        retry_max_ms: 1_000,
        ..AnalyticsConfig::default()
    };
    let producer = kafka
        .producer_config("analytics-test")
        .create()
        .expect("producer");
    TestBed {
        kafka,
        config,
        client,
        producer,
    }
}

impl TestBed {
    /// Produces a record, keyed by `key`, and waits for Kafka's acknowledgement.
    pub async fn send<T: AvroRecord>(&self, topic: &str, key: &str, record: &T) {
        let payload = AvroCodec::single_object().encode(record).expect("encodes");
        self.send_raw(topic, key, &payload).await;
    }

    pub async fn send_raw(&self, topic: &str, key: &str, payload: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("kafka acknowledged the record");
    }

    pub async fn count(&self, sql: &str) -> u64 {
        self.client.query(sql).fetch_one::<u64>().await.expect(sql)
    }

    /// Waits until `sql` returns at least `expected`, then returns what it
    /// returns; panics after `timeout`.
    pub async fn wait_for_count(&self, sql: &str, expected: u64, timeout: Duration) -> u64 {
        let client = self.client.clone();
        wait_until(timeout, || {
            let client = client.clone();
            async move {
                let n = client.query(sql).fetch_one::<u64>().await.unwrap_or(0);
                (n >= expected).then_some(n)
            }
        })
        .await
        .unwrap_or_else(|| panic!("`{sql}` did not reach {expected} within {timeout:?}"))
    }

    /// The offset the sink's group committed for each partition of `topic`.
    pub fn committed(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self
            .kafka
            .consumer_config("analytics-test-offsets", &self.config.group_id)
            .create()
            .expect("consumer");
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect()
    }

    /// The end offset of each partition of `topic`.
    pub fn ends(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self
            .kafka
            .consumer_config("analytics-test-ends", &sms_harness::unique_name("ends"))
            .create()
            .expect("consumer");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }
}

/// Polls `check` every 100 ms until it gives a value or `timeout` passes.
pub async fn wait_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The UUID message id of the `n`th test message.
pub fn message_id(n: usize) -> String {
    format!("00000000-0000-5000-8000-{n:012}")
}

pub fn phone(n: usize) -> String {
    format!("86130{n:08}")
}

pub fn request(n: usize, kind: MessageKind, text: &str) -> SmsRequest {
    SmsRequest {
        message_id: message_id(n),
        request_id: format!("req-{n}"),
        client_id: "platform".into(),
        phone: phone(n),
        kind,
        text: text.into(),
        template_id: None,
        sp_extension: None,
        source: RequestSource::Http,
        accepted_at: now_millis(),
        expires_at: None,
        scheduled_at: None,
        attempt: 0,
        not_before: None,
    }
}

/// A final status accepted now; every third one failed with code 25.
pub fn final_status(n: usize) -> FinalStatus {
    let accepted_at = now_millis() - 3_000;
    let delivered = n % 3 != 0;
    FinalStatus {
        message_id: message_id(n),
        request_id: format!("req-{n}"),
        phone: phone(n),
        kind: MessageKind::ALL[n % 3],
        status: if delivered {
            FinalState::Delivered
        } else {
            FinalState::Failed
        },
        failure_category: (!delivered).then_some(FailureCategory::PoweredOff),
        error_code: (!delivered).then_some(25),
        refusal_reason: None,
        billed_segments: (n % 2 + 1) as i32,
        segments_delivered: if delivered { (n % 2 + 1) as i32 } else { 0 },
        accepted_at,
        submitted_at: Some(accepted_at + 100),
        gateway_response_at: Some(accepted_at + 150),
        report_at: Some(accepted_at + 1_000 + (n % 10) as i64 * 1_000),
        decided_at: now_millis(),
        within_seven_seconds: n % 10 <= 6,
    }
}
