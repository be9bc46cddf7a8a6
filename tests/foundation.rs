//! The foundation works against the real services: a record produced with the
//! project's producer setup and Avro framing is consumed back through a
//! consumer group with its offset committed, and a row written with the
//! `clickhouse` crate is read back.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sms_core::avro::AvroCodec;
use sms_core::events::{MessageKind, RequestSource, SmsRequest};
use sms_harness::{clickhouse_for_test, kafka_for_test, unique_name};
use sms_tests::{committed_offset, position, read_records};

fn request(n: usize) -> SmsRequest {
    let now = sms_core::events::now_millis();
    SmsRequest {
        message_id: format!("00000000-0000-5000-8000-{n:012}"),
        request_id: format!("req-{n}"),
        client_id: "platform".into(),
        phone: format!("86130{n:08}"),
        kind: MessageKind::Notice,
        text: format!("【交管12123】您的车辆年检提醒 {n}"),
        template_id: None,
        sp_extension: None,
        source: RequestSource::Http,
        accepted_at: now + n as i64,
        expires_at: None,
        scheduled_at: None,
        attempt: 0,
        not_before: None,
    }
}

#[tokio::test]
async fn avro_records_go_through_kafka_and_a_committed_consumer_group() {
    let kafka = kafka_for_test("foundation", 3).await.expect("kafka");
    let topic = kafka.topics().requests_notify;
    let codec = AvroCodec::single_object();

    let producer: FutureProducer = kafka
        .producer_config("foundation-test")
        .create()
        .expect("producer");
    let sent: Vec<SmsRequest> = (0..20).map(request).collect();
    for record in &sent {
        let payload = codec.encode(record).expect("encodes");
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&record.phone)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("kafka acknowledged the record");
    }

    let group = unique_name("foundation_group");
    let consumer: StreamConsumer = kafka
        .consumer_config("foundation-test", &group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribes");
    let received = read_records(&consumer, sent.len(), Duration::from_secs(60)).await;
    assert_eq!(
        received.len(),
        sent.len(),
        "every produced record is consumed"
    );

    let mut decoded = Vec::new();
    for message in &received {
        let record: SmsRequest = codec
            .decode(message.payload().expect("payload"))
            .await
            .expect("decodes");
        assert_eq!(
            message.key(),
            Some(record.phone.as_bytes()),
            "keyed by phone"
        );
        decoded.push(record);
    }
    decoded.sort_by_key(|r| r.accepted_at);
    assert_eq!(decoded, sent);

    // Mark each processed record (rdkafka stores the offset after it, the next
    // one to read), commit, and check the group's committed offsets.
    for message in &received {
        let (partition, offset) = position(message);
        consumer
            .store_offset(&topic, partition, offset)
            .expect("stores the offset");
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commits");
    for message in &received {
        let (partition, offset) = position(message);
        let committed =
            committed_offset(&consumer, &topic, partition).expect("an offset is committed");
        assert!(
            committed > offset,
            "partition {partition}: committed {committed} must pass {offset}"
        );
        assert!(received
            .iter()
            .all(|m| m.partition() != partition || m.offset() < committed));
    }
    drop(consumer);

    // A new member of the same group starts after the committed offsets: it sees
    // only what is produced afterwards.
    let later = request(1000);
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&later.phone)
                .payload(&codec.encode(&later).expect("encodes")),
            Duration::from_secs(10),
        )
        .await
        .expect("acknowledged");
    let consumer: StreamConsumer = kafka
        .consumer_config("foundation-test-2", &group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribes");
    let again = read_records(&consumer, 2, Duration::from_secs(8)).await;
    let seen: Vec<(i32, i64)> = again.iter().map(position).collect();
    assert_eq!(
        again.len(),
        1,
        "only the record produced after the commit is redelivered: {seen:?}"
    );
    let record: SmsRequest = codec
        .decode(again[0].payload().expect("payload"))
        .await
        .expect("decodes");
    assert_eq!(record, later);
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
struct EventRow {
    message_id: String,
    kind: String,
    /// DateTime64(3): milliseconds since the epoch.
    at: i64,
    billed_segments: u8,
}

#[tokio::test]
async fn rows_written_with_the_clickhouse_crate_read_back() {
    let (client, database) = clickhouse_for_test("foundation").await.expect("clickhouse");
    client
        .query(
            "CREATE TABLE events (
                message_id String,
                kind LowCardinality(String),
                at DateTime64(3, 'UTC'),
                billed_segments UInt8
            ) ENGINE = MergeTree PARTITION BY toYYYYMM(at) ORDER BY (message_id, at)
            TTL toDateTime(at) + INTERVAL 13 MONTH",
        )
        .execute()
        .await
        .expect("creates the table");

    // Current timestamps: rows already past the table's TTL are dropped on insert.
    let now = sms_core::events::now_millis();
    let rows: Vec<EventRow> = (0..1000)
        .map(|n| EventRow {
            message_id: format!("m{n:05}"),
            kind: MessageKind::ALL[n % 3].as_str().into(),
            at: now + n as i64,
            billed_segments: (n % 3 + 1) as u8,
        })
        .collect();
    let mut insert = client
        .insert::<EventRow>("events")
        .await
        .expect("insert starts");
    for row in &rows {
        insert.write(row).await.expect("row written");
    }
    insert.end().await.expect("insert ends");

    let back = client
        .query("SELECT ?fields FROM events ORDER BY message_id")
        .fetch_all::<EventRow>()
        .await
        .expect("reads back");
    assert_eq!(back, rows, "database {database}");

    let total: u64 = client
        .query("SELECT sum(billed_segments) FROM events WHERE kind = ?")
        .bind("NOTICE")
        .fetch_one()
        .await
        .expect("aggregates");
    let expected: u64 = rows
        .iter()
        .filter(|r| r.kind == "NOTICE")
        .map(|r| u64::from(r.billed_segments))
        .sum();
    assert_eq!(total, expected);
}
