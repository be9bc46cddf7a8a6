//! The raw-topic bridge: valid instructions reach the request topics, refused ones the dead-letter topic with their reason, and offsets are committed after.

mod common;

use std::time::Duration;

use common::{read, request_of, start, CLIENT};
use ingest::submit::message_id;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use sms_core::events::{DeadLetter, DeadLetterError, RequestSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_instructions_are_validated_like_http_ones() {
    let t = start("bridge").await;
    let topics = t.kafka.topics();
    let envelope = |request_id: &str, phone: &str, kind: &str, text: &str| {
        serde_json::json!({
            "client_id": CLIENT,
            "message": {"request_id": request_id, "phone": phone, "kind": kind, "text": text}
        })
        .to_string()
    };
    let raw: Vec<(String, String)> = vec![
        ("ok-otp".into(), envelope("t-1", "13012345678", "VERIFICATION_CODE", "验证码 112233")),
        ("ok-notice".into(), envelope("t-2", "8618612345678", "NOTICE", "您的罚单已处理完毕")),
        ("again".into(), envelope("t-2", "8618612345678", "NOTICE", "您的罚单已处理完毕")),
        ("not-json".into(), "{not json".into()),
        ("not-unicom".into(), envelope("t-3", "13912345678", "NOTICE", "x")),
        ("forbidden".into(), envelope("t-4", "13012345678", "NOTICE", "双十一促销")),
        ("unknown-client".into(), serde_json::json!({"client_id": "stranger", "message": {"request_id": "t-5", "phone": "13012345678", "kind": "NOTICE", "text": "x"}}).to_string()),
        ("unknown-field".into(), serde_json::json!({"client_id": CLIENT, "message": {"request_id": "t-6", "phone": "13012345678", "kind": "NOTICE", "text": "x", "priority": 1}}).to_string()),
    ];
    for (key, value) in &raw {
        t.produce(&topics.inbound_raw, key, value.as_bytes()).await;
    }

    let otp = read(
        &t.consumer(&topics.requests_otp),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(otp.len(), 1);
    let request = request_of(&otp[0]).await;
    assert_eq!(request.message_id, message_id(CLIENT, "t-1").to_string());
    assert_eq!(request.source, RequestSource::Topic);

    let notify = read(
        &t.consumer(&topics.requests_notify),
        2,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        notify.len(),
        1,
        "the repeated instruction is not a second message"
    );

    let dead = read(&t.consumer(&topics.dlq), 5, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 5);
    let codec = sms_core::avro::AvroCodec::single_object();
    let mut reasons = Vec::new();
    for record in &dead {
        let letter: DeadLetter = codec
            .decode(record.payload().expect("payload"))
            .await
            .expect("decodes");
        assert_eq!(letter.source_topic, topics.inbound_raw);
        assert_eq!(letter.service, "ingest");
        assert!(letter.payload.is_some());
        let key = String::from_utf8(letter.key.clone().unwrap_or_default()).unwrap_or_default();
        reasons.push((key, letter.error, letter.reason));
    }
    let find = |key: &str| {
        reasons
            .iter()
            .find(|(k, _, _)| k == key)
            .cloned()
            .expect(key)
    };
    assert_eq!(find("not-json").1, DeadLetterError::Undecodable);
    assert!(find("not-json").2.starts_with("malformed_json"));
    assert!(
        find("not-unicom").2.starts_with("not_unicom"),
        "{reasons:?}"
    );
    assert!(find("forbidden").2.starts_with("forbidden_content"));
    assert!(find("unknown-client").2.starts_with("unknown_client"));
    assert_eq!(find("unknown-field").1, DeadLetterError::Undecodable);
    assert!(find("unknown-field").2.starts_with("unknown_field"));

    // Every raw record's offset is committed for the bridge's group.
    let group = {
        let consumer: rdkafka::consumer::BaseConsumer = t
            .kafka
            .consumer_config("ingest-test", &bridge_group(&t))
            .create()
            .expect("consumer");
        consumer
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut committed_total = 0;
        let mut partitions = TopicPartitionList::new();
        for p in 0..3 {
            partitions.add_partition(&topics.inbound_raw, p);
        }
        if let Ok(committed) = group.committed_offsets(partitions, Duration::from_secs(5)) {
            committed_total = committed
                .elements()
                .iter()
                .filter_map(|e| e.offset().to_raw())
                .filter(|o| *o > 0)
                .sum::<i64>();
        }
        if committed_total == raw.len() as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {committed_total} of {}",
            raw.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    t.service.stop().await;
}

fn bridge_group(t: &common::TestIngest) -> String {
    t.bridge_group.clone()
}
