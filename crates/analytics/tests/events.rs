//! Every kind of event lands in ClickHouse with the derived tables filled, a bad record becomes a dead letter, and shutdown commits what was stored.

mod common;

use std::time::Duration;

use analytics::exporter::Health;
use analytics::{schema, Sink};
use common::{final_status, message_id, phone, request, test_bed};
use sms_core::avro::AvroCodec;
use sms_core::events::{
    now_millis, CarrierReport, DeadLetter, DispatchEvent, DispatchOutcome, MessageKind,
    RefusalReason, ReportState, SequenceTriple, SubmittedSegment, SubscriptionRecord,
    SubscriptionSource, SubscriptionState, UplinkMessage,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_kind_lands_and_bad_records_go_to_the_dead_letter_topic() {
    let bed = test_bed("analytics_events", 2).await;
    let topics = bed.kafka.topics();
    schema::migrate(&bed.config.clickhouse, bed.config.ttl_months)
        .await
        .expect("schema applies");

    let shutdown = CancellationToken::new();
    let sink = Sink::new(&bed.config, Health::default()).expect("sink starts");
    let running = tokio::spawn(sink.run(shutdown.clone()));

    // A verification code through its whole life: requested, submitted in
    // two segments with responses, reported, final status.
    let code = request(
        1,
        MessageKind::VerificationCode,
        "【交管12123】您的验证码是 482913，5分钟内有效",
    );
    bed.send(&topics.requests_otp, &code.phone, &code).await;
    let now = now_millis();
    let triple = |c| SequenceTriple::new(3075512345, 1203190405, c);
    let submitted = DispatchEvent {
        message_id: code.message_id.clone(),
        request_id: code.request_id.clone(),
        phone: code.phone.clone(),
        kind: code.kind,
        outcome: DispatchOutcome::Submitted,
        reason: None,
        detail: None,
        gateway_result: Some(0),
        segments: (0..2)
            .map(|i| SubmittedSegment {
                index: i,
                sequence: triple(i as u32),
                submitted_at: now,
                response_at: Some(now + 30),
                result: 0,
            })
            .collect(),
        billed_segments: 2,
        attempt: 0,
        accepted_at: code.accepted_at,
        dispatched_at: now + 30,
        not_before: None,
    };
    bed.send(&topics.dispatch, &code.phone, &submitted).await;
    let report = CarrierReport {
        submit_sequence: triple(0),
        report_sequence: SequenceTriple::new(107551, 1203190406, 9),
        phone: code.phone.clone(),
        report_type: 0,
        state: ReportState::Delivered,
        error_code: 0,
        received_at: now + 900,
    };
    bed.send(&topics.reports, &code.phone, &report).await;
    let mut status = final_status(1);
    status.kind = MessageKind::VerificationCode;
    bed.send(&topics.status, &status.phone, &status).await;

    // A notice refused by policy, a request waiting for a retry, an uplink
    // unsubscribe and the subscription change it caused.
    let notice = request(2, MessageKind::Notice, "您的车辆年检日期为20261203");
    bed.send(&topics.requests_notify, &notice.phone, &notice)
        .await;
    let refused = DispatchEvent {
        outcome: DispatchOutcome::Refused,
        reason: Some(RefusalReason::NotSubscribed),
        segments: vec![],
        billed_segments: 0,
        message_id: notice.message_id.clone(),
        request_id: notice.request_id.clone(),
        phone: notice.phone.clone(),
        kind: notice.kind,
        ..submitted.clone()
    };
    bed.send(&topics.dispatch, &notice.phone, &refused).await;
    let mut retry = request(3, MessageKind::Reminder, "您有一条违法记录待处理");
    retry.attempt = 1;
    retry.not_before = Some(now + 5_000);
    bed.send(&topics.requests_retry, &retry.phone, &retry).await;
    let uplink = UplinkMessage {
        uplink_id: "00000000-0000-5000-9000-000000000001".into(),
        sequence: SequenceTriple::new(107551, 1203190407, 1),
        phone: phone(4),
        sp_number: "121231100".into(),
        coding: 15,
        text: Some("TD".into()),
        content: b"TD".to_vec(),
        udhi: false,
        link_id: None,
        received_at: now,
    };
    bed.send(&topics.mo, &uplink.phone, &uplink).await;
    let subscription = SubscriptionRecord {
        phone: phone(4),
        state: SubscriptionState::Cancelled,
        kinds: vec![],
        source: SubscriptionSource::UplinkKeyword,
        moved_to: None,
        client_id: None,
        changed_at: now,
    };
    bed.send(&topics.subscriptions, &subscription.phone, &subscription)
        .await;

    // A record that is not Avro at all.
    bed.send_raw(&topics.dispatch, &phone(5), b"not an avro record")
        .await;

    // 12 rows from records plus one for the dead letter the sink writes and reads back.
    let total = bed
        .wait_for_count("SELECT count() FROM sms_events", 13, WAIT)
        .await;
    assert_eq!(total, 13);
    let kinds: Vec<(String, u64)> = bed
        .client
        .query("SELECT event_kind, count() FROM sms_events GROUP BY event_kind ORDER BY event_kind")
        .fetch_all()
        .await
        .expect("kinds");
    let expected: Vec<(String, u64)> = [
        ("dead_letter", 1),
        ("final_status", 1),
        ("gateway_response", 2),
        ("refused", 1),
        ("report", 1),
        ("requested", 2),
        ("retry_queued", 1),
        ("submitted", 2),
        ("subscription", 1),
        ("uplink", 1),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), *n))
    .collect();
    assert_eq!(kinds, expected);

    // The code is masked, the notice's text is kept.
    let texts: Vec<(String, String)> = bed
        .client
        .query("SELECT message_id, text FROM sms_events WHERE event_kind = 'requested' ORDER BY message_id")
        .fetch_all()
        .await
        .expect("texts");
    assert_eq!(texts[0].1, "【交管12123】您的验证码是 ******，5分钟内有效");
    assert!(!texts[0].1.contains("482913"));
    assert_eq!(texts[1].1, notice.text);

    // The per-message table holds the latest stage of each message.
    let states: Vec<(String, String)> = bed
        .client
        .query("SELECT message_id, state FROM sms_messages FINAL ORDER BY message_id")
        .fetch_all()
        .await
        .expect("messages");
    assert_eq!(
        states,
        vec![
            (message_id(1), "DELIVERED".to_string()),
            (message_id(2), "REFUSED".to_string()),
        ]
    );
    let monthly = bed
        .count("SELECT sum(messages) FROM sms_monthly WHERE status = 'DELIVERED'")
        .await;
    assert_eq!(monthly, 1);

    // The dead letter names the source offset; the sink went on past it.
    let dead: Vec<(String, String)> = bed
        .client
        .query("SELECT reason, text FROM sms_events WHERE event_kind = 'dead_letter'")
        .fetch_all()
        .await
        .expect("dead letters");
    assert_eq!(dead[0].0, "UNDECODABLE");
    assert!(
        dead[0].1.starts_with(&format!("{}/", topics.dispatch)),
        "{}",
        dead[0].1
    );
    let letter_payload: Vec<u8> = {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::Message;
        let reader: StreamConsumer = bed
            .kafka
            .consumer_config("dlq-reader", &sms_harness::unique_name("dlq"))
            .create()
            .expect("consumer");
        reader.subscribe(&[&topics.dlq]).expect("subscribes");
        let message = tokio::time::timeout(WAIT, reader.recv())
            .await
            .expect("a dead letter arrives")
            .expect("reads");
        message.payload().expect("payload").to_vec()
    };
    let letter: DeadLetter = AvroCodec::single_object()
        .decode(&letter_payload)
        .await
        .expect("the dead letter is Avro");
    assert_eq!(letter.source_topic, topics.dispatch);
    assert_eq!(letter.payload.as_deref(), Some(&b"not an avro record"[..]));
    assert_eq!(letter.service, "analytics");

    // Shutdown: the sink stops, having committed every record it stored.
    shutdown.cancel();
    tokio::time::timeout(WAIT, running)
        .await
        .expect("the sink stops")
        .expect("the task ends")
        .expect("the sink ends cleanly");
    for topic in [&topics.requests_otp, &topics.dispatch, &topics.status] {
        let ends = bed.ends(topic, 2);
        let committed = bed.committed(topic, 2);
        for (end, committed) in ends.iter().zip(&committed) {
            // An empty partition has nothing to commit.
            assert!(
                *end == 0 || committed == end,
                "{topic}: {committed:?} vs {ends:?}"
            );
        }
    }
}
