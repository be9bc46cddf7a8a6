//! Every policy refusal, and bad input, against the real broker and the simulator.

mod common;

use std::time::Duration;

use common::*;
use sms_core::events::{
    DeadLetterError, DispatchOutcome, MessageKind, RefusalReason, RequestSource,
    SubscriptionRecord, SubscriptionSource, SubscriptionState,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_is_a_dispatch_event_with_its_reason() {
    let kafka = sms_harness::kafka_for_test("dispatcher_policy", 1)
        .await
        .unwrap();
    let topics = kafka.topics();
    let sim = simulator(|_| {}).await;
    let mut config = config(&kafka, &sim);
    config.policy.require_subscription = true;
    // Room for exactly four one-segment messages (4 x 0.041 = 0.164).
    config.policy.budget.contract_yuan = 0.17;

    let subscribed = phone(1);
    let unsubscribed = phone(2);
    let producer = producer(&kafka);
    produce(
        &producer,
        &topics.subscriptions,
        &subscribed,
        &SubscriptionRecord {
            phone: subscribed.clone(),
            state: SubscriptionState::Registered,
            kinds: vec![MessageKind::VerificationCode, MessageKind::Notice],
            source: SubscriptionSource::Api,
            moved_to: None,
            client_id: None,
            changed_at: 0,
        },
    )
    .await;
    let dispatches = Dispatches::start(&kafka, &topics.dispatch);
    let running = start(config);

    let ok = request("ok", &subscribed, MessageKind::Notice, "您的驾驶证即将到期");
    let mut expired = request("expired", &subscribed, MessageKind::Notice, "过期的通知");
    expired.expires_at = Some(expired.accepted_at - 1);
    let mut mobile = request("mobile", &subscribed, MessageKind::Notice, "移动号码");
    mobile.phone = "8613812341234".into();
    let not_subscribed = request(
        "not-subscribed",
        &unsubscribed,
        MessageKind::Notice,
        "未订阅",
    );
    let mut system = request("system", &unsubscribed, MessageKind::Notice, "您已退订");
    system.source = RequestSource::System;
    let reminder = request(
        "reminder-kind",
        &subscribed,
        MessageKind::Reminder,
        "未订阅提醒",
    );
    let word = request("word", &subscribed, MessageKind::Notice, "本店促销");
    let marker = request(
        "marker",
        &subscribed,
        MessageKind::Notice,
        "新服务上线，回T退订",
    );
    let first_otp = request(
        "otp-1",
        &subscribed,
        MessageKind::VerificationCode,
        "验证码 111111",
    );
    send_requests(
        &kafka,
        &[
            ok.clone(),
            expired,
            mobile,
            not_subscribed,
            system,
            reminder,
            word,
            marker,
        ],
    )
    .await;
    send_requests(&kafka, std::slice::from_ref(&first_otp)).await;
    let ids: Vec<String> = [
        "ok",
        "expired",
        "mobile",
        "not-subscribed",
        "system",
        "reminder-kind",
        "word",
        "marker",
        "otp-1",
    ]
    .map(id)
    .to_vec();
    dispatches
        .wait_for(Duration::from_secs(60), "first decisions", |e| {
            all_final(e, &ids)
        })
        .await;

    // A copy of a dispatched message, a second code within the minute, and
    // then one message more than the budget allows.
    send_requests(&kafka, std::slice::from_ref(&ok)).await;
    let second_otp = request(
        "otp-2",
        &subscribed,
        MessageKind::VerificationCode,
        "验证码 222222",
    );
    send_requests(&kafka, &[second_otp]).await;
    let ids2: Vec<String> = ids.iter().cloned().chain([id("otp-2")]).collect();
    dispatches
        .wait_for(Duration::from_secs(30), "cap decision", |e| {
            all_final(e, &ids2) && e.len() >= 11
        })
        .await;
    let fourth = request("fourth", &subscribed, MessageKind::Notice, "第四条");
    let over = request("over-budget", &subscribed, MessageKind::Notice, "超出预算");
    send_requests(&kafka, &[fourth]).await;
    dispatches
        .wait_for(Duration::from_secs(30), "fourth", |e| {
            e.iter().any(|e| e.message_id == id("fourth"))
        })
        .await;
    send_requests(&kafka, &[over]).await;
    let events = dispatches
        .wait_for(Duration::from_secs(30), "budget decision", |e| {
            e.iter().any(|e| e.message_id == id("over-budget"))
        })
        .await;
    running.stop().await;

    let reason_of = |name: &str| {
        events
            .iter()
            .filter(|e| e.message_id == id(name))
            .map(|e| (e.outcome, e.reason))
            .collect::<Vec<_>>()
    };
    let submitted = (DispatchOutcome::Submitted, None);
    let refused = |r| (DispatchOutcome::Refused, Some(r));
    assert_eq!(
        reason_of("ok"),
        vec![submitted, refused(RefusalReason::Duplicate)]
    );
    assert_eq!(reason_of("expired"), vec![refused(RefusalReason::Expired)]);
    assert_eq!(reason_of("mobile"), vec![refused(RefusalReason::NotUnicom)]);
    assert_eq!(
        reason_of("not-subscribed"),
        vec![refused(RefusalReason::NotSubscribed)]
    );
    assert_eq!(
        reason_of("reminder-kind"),
        vec![refused(RefusalReason::NotSubscribed)]
    );
    assert_eq!(reason_of("system"), vec![submitted]);
    assert_eq!(
        reason_of("word"),
        vec![refused(RefusalReason::ContentPolicy)]
    );
    assert_eq!(
        reason_of("marker"),
        vec![refused(RefusalReason::ContentPolicy)]
    );
    assert_eq!(reason_of("otp-1"), vec![submitted]);
    assert_eq!(
        reason_of("otp-2"),
        vec![refused(RefusalReason::FrequencyCap)]
    );
    assert_eq!(reason_of("fourth"), vec![submitted]);
    assert_eq!(
        reason_of("over-budget"),
        vec![refused(RefusalReason::BudgetExhausted)]
    );

    let word_event = events.iter().find(|e| e.message_id == id("word")).unwrap();
    assert_eq!(word_event.detail.as_deref(), Some("forbidden_word: 促销"));
    let marker_event = events
        .iter()
        .find(|e| e.message_id == id("marker"))
        .unwrap();
    assert!(marker_event
        .detail
        .as_deref()
        .unwrap_or_default()
        .starts_with("forbidden_pattern"));

    // A submitted event carries its segment's triple and the gateway's answer.
    let ok_event = events.iter().find(|e| e.message_id == id("ok")).unwrap();
    assert_eq!(ok_event.segments.len(), 1);
    assert_eq!(ok_event.segments[0].result, 0);
    assert!(ok_event.segments[0].response_at.is_some());
    assert_eq!(ok_event.billed_segments, 1);
    assert_eq!(ok_event.gateway_result, Some(0));

    // Only the four submitted messages reached the gateway, once each.
    let counts = sim.counts();
    assert_eq!(counts.messages.len(), 4, "{:?}", counts.messages);
    assert_eq!(counts.duplicates(), 0);
    assert_eq!(
        counts
            .messages
            .get(&smsc_sim::message_key(&ok.phone, &ok.text)),
        Some(&1)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_records_go_to_the_dead_letter_topic_and_the_consumer_moves_on() {
    let kafka = sms_harness::kafka_for_test("dispatcher_dlq", 1)
        .await
        .unwrap();
    let topics = kafka.topics();
    let sim = simulator(|_| {}).await;
    let dispatches = Dispatches::start(&kafka, &topics.dispatch);
    let letters = DeadLetters::start(&kafka, &topics.dlq);
    let running = start(config(&kafka, &sim));

    let producer = producer(&kafka);
    let who = phone(7);
    produce_raw(
        &producer,
        &topics.requests_notify,
        &who,
        b"\x00\x01 not avro at all",
    )
    .await;
    // A valid record of another schema.
    let record = SubscriptionRecord {
        phone: who.clone(),
        state: SubscriptionState::Registered,
        kinds: vec![MessageKind::Notice],
        source: SubscriptionSource::Api,
        moved_to: None,
        client_id: None,
        changed_at: 0,
    };
    produce(&producer, &topics.requests_notify, &who, &record).await;
    let mut invalid = request("invalid-number", &who, MessageKind::Notice, "号码不对");
    invalid.phone = "86123".into();
    produce(&producer, &topics.requests_notify, &who, &invalid).await;
    let after = request("after", &who, MessageKind::Notice, "坏记录之后");
    send_requests(&kafka, std::slice::from_ref(&after)).await;

    let events = dispatches
        .wait_for(Duration::from_secs(60), "the good record", |e| {
            e.iter().any(|e| e.message_id == id("after"))
        })
        .await;
    let letters = letters
        .wait_for(Duration::from_secs(30), "two dead letters", |l| {
            l.len() >= 2
        })
        .await;
    running.stop().await;

    let invalid_event = events
        .iter()
        .find(|e| e.message_id == id("invalid-number"))
        .unwrap();
    assert_eq!(invalid_event.outcome, DispatchOutcome::Refused);
    assert_eq!(invalid_event.reason, Some(RefusalReason::InvalidRequest));
    let after_event = events.iter().find(|e| e.message_id == id("after")).unwrap();
    assert_eq!(after_event.outcome, DispatchOutcome::Submitted);

    assert_eq!(letters.len(), 2);
    let mut offsets: Vec<i64> = letters.iter().map(|l| l.source_offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, vec![0, 1]);
    for letter in &letters {
        assert_eq!(letter.source_topic, topics.requests_notify);
        assert_eq!(letter.source_partition, 0);
        assert_eq!(letter.service, "dispatcher");
        assert!(!letter.reason.is_empty());
    }
    assert!(letters
        .iter()
        .all(|l| l.error == DeadLetterError::Undecodable));
    assert_eq!(
        letters[0].payload.as_deref(),
        Some(&b"\x00\x01 not avro at all"[..])
    );
    assert_eq!(sim.counts().messages.len(), 1);
    sim.shutdown().await;
}
