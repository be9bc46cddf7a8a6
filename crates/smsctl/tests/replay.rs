//! Replay of a time window against the real Kafka broker and ClickHouse engine.

mod common;

use std::time::Duration;

use common::{message, warehouse, Outcome};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sms_core::avro::AvroCodec;
use sms_core::events::{FinalStatus, MessageKind};
use smsctl::replay::{replay, ReplayTarget, ReplayWindow, Silent};

const HOUR: i64 = 3_600_000;

#[tokio::test]
async fn a_window_is_replayed_to_a_topic_a_file_and_clickhouse_exactly() {
    let kafka = sms_harness::kafka_for_test("smsctl_replay", 3)
        .await
        .expect("kafka");
    let topics = kafka.topics();
    let producer: FutureProducer = kafka.producer_config("test").create().expect("producer");

    // Statuses stamped before, inside and after the window [t0 + 1 h, t0 + 2 h).
    let t0 = sms_core::events::now_millis() - 10 * HOUR;
    let mut inside = Vec::new();
    let codec = AvroCodec::single_object();
    for i in 0..300u64 {
        let at = t0 + (i as i64) * 36_000; // every 36 s over 3 hours
        let phone = format!("86130{:08}", i % 7);
        let m = message(
            i,
            &phone,
            MessageKind::Notice,
            at - 2_000,
            1,
            Outcome::Delivered(1_500),
        );
        let payload = codec.encode(&m.status).expect("encodes");
        producer
            .send(
                FutureRecord::to(&topics.status)
                    .key(&phone)
                    .payload(&payload)
                    .timestamp(at),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
        if at >= t0 + HOUR && at < t0 + 2 * HOUR {
            inside.push(m);
        }
    }
    assert_eq!(inside.len(), 100);
    let window = |phone: Option<&str>| ReplayWindow {
        topic: topics.status.clone(),
        from: t0 + HOUR,
        to: t0 + 2 * HOUR,
        phone: phone.map(str::to_string),
    };

    // To a topic: the same bytes, every one once.
    let summary = replay(
        &kafka,
        window(None),
        ReplayTarget::Topic(topics.dlq.clone()),
        Box::new(Silent),
    )
    .await
    .expect("replay");
    assert_eq!((summary.read, summary.written), (100, 100));
    let (copied, undecodable) =
        sms_harness::read_topic::<FinalStatus>(&kafka, &topics.dlq, 100, Duration::from_secs(20))
            .await
            .expect("read");
    assert_eq!(undecodable, 0);
    let mut ids: Vec<String> = copied.iter().map(|s| s.message_id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = inside.iter().map(|m| m.message_id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);

    // To a file, filtered by phone: JSON lines of the decoded records.
    let phone = "8613000000003";
    let path = std::env::temp_dir().join(format!("{}.jsonl", sms_harness::unique_name("replay")));
    let summary = replay(
        &kafka,
        window(Some(phone)),
        ReplayTarget::File(path.clone()),
        Box::new(Silent),
    )
    .await
    .expect("replay");
    let lines = std::fs::read_to_string(&path).expect("file");
    let _ = std::fs::remove_file(&path);
    let of_phone: Vec<&common::Message> = inside.iter().filter(|m| m.phone == phone).collect();
    assert_eq!(summary.read, 100);
    assert_eq!(summary.written as usize, of_phone.len());
    assert_eq!(lines.lines().count(), of_phone.len());
    for (line, m) in lines.lines().zip(&of_phone) {
        let value: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(value["record"]["message_id"], m.message_id.as_str());
        assert_eq!(value["record"]["status"], "DELIVERED");
        assert_eq!(value["key"], phone);
    }

    // To ClickHouse: the first replay stores the window, a second finds
    // every record already there and adds nothing.
    let (warehouse, _) = warehouse("smsctl_replay").await;
    let summary = replay(
        &kafka,
        window(None),
        ReplayTarget::ClickHouse(Box::new(warehouse.clone())),
        Box::new(Silent),
    )
    .await
    .expect("replay");
    assert_eq!((summary.written, summary.already_stored), (100, 0));
    let again = replay(
        &kafka,
        window(None),
        ReplayTarget::ClickHouse(Box::new(warehouse.clone())),
        Box::new(Silent),
    )
    .await
    .expect("replay");
    assert_eq!(
        (again.written, again.already_stored),
        (0, 100),
        "nothing counts twice"
    );
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Count {
        statuses: u64,
        messages: u64,
    }
    let counts: Vec<Count> = warehouse
        .fetch(
            "test",
            "SELECT count() AS statuses, uniqExact(message_id) AS messages FROM sms_events WHERE event_kind = 'final_status'",
        )
        .await
        .expect("counts");
    assert_eq!((counts[0].statuses, counts[0].messages), (100, 100));
}
