//! The status service against the real local Kafka and the carrier simulator:
//! reports travel from the simulator through the receiver to `sms.reports`,
//! are joined to dispatch events, and every message gets exactly one final
//! status, through a restart, with reports that arrive before their dispatch
//! event, and with uplink unsubscribes.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use sgip::text::{split, CodingChoice};
use sgip::{Pool, PoolConfig, SessionConfig, SubmitRequest};
use sms_core::events::*;
use sms_core::kafka::KafkaSettings;
use sms_harness::{kafka_for_test, produce, read_topic};
use smsc_sim::{DelayDistribution, SimConfig, Simulator, SpListener, WeightedOutcome};
use status::config::Config;
use status::receiver::to_event_triple;
use tokio::sync::watch;

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    receiver: std::net::SocketAddr,
}

async fn start_status(kafka: &KafkaSettings, receiver: &str) -> Running {
    let mut config = Config::load(None, Vec::<(String, String)>::new()).expect("defaults");
    config.kafka = kafka.clone();
    config.receiver.listen = receiver.parse().expect("address");
    config.metrics_listen = "127.0.0.1:0".parse().expect("address");
    config.correlation.validity_ms = 6_000;
    config.correlation.orphan_hold_ms = 60_000;
    // Groups of their own: tests running side by side must not rebalance each other.
    config.correlation.group_id = format!("{}status", kafka.topic_prefix);
    config.uplink.group_id = format!("{}status-uplink", kafka.topic_prefix);
    let (stop, shutdown) = watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(status::service::run(
        config,
        "secret".into(),
        shutdown,
        Some(bound_tx),
    ));
    let bound = bound_rx.await.expect("status service starts");
    Running {
        stop,
        task,
        receiver: bound.receiver,
    }
}

async fn stop_status(running: Running) {
    let _ = running.stop.send(true);
    tokio::time::timeout(Duration::from_secs(30), running.task)
        .await
        .expect("status stops within 30 s")
        .expect("task joins")
        .expect("status ran cleanly");
}

async fn start_simulator(receiver: std::net::SocketAddr) -> smsc_sim::SimulatorHandle {
    let mut config = SimConfig {
        submit_addr: "127.0.0.1:0".parse().expect("address"),
        http_addr: "127.0.0.1:0".parse().expect("address"),
        sp: Some(SpListener {
            addr: receiver.to_string(),
            resend_after_ms: 1_000,
            ..SpListener::default()
        }),
        ..SimConfig::default()
    };
    config.reports.delay = DelayDistribution::Fixed { delay_ms: 50 };
    config.reports.outcomes = vec![
        WeightedOutcome {
            state: 0,
            error_code: 0,
            weight: 3,
        },
        WeightedOutcome {
            state: 2,
            error_code: 25,
            weight: 1,
        },
    ];
    Simulator::start(config).await.expect("simulator starts")
}

fn pool(sim: &smsc_sim::SimulatorHandle) -> Pool {
    Pool::start(PoolConfig {
        session: SessionConfig {
            addr: sim.submit_addr.to_string(),
            login_name: "sp".into(),
            login_password: "secret".into(),
            ..SessionConfig::default()
        },
        connections: 2,
        rate_limit_per_sec: 0,
    })
    .expect("pool starts")
}

fn phone(n: usize) -> String {
    format!("86186{n:08}")
}

/// Submits `text` to the simulator as the dispatcher would, and returns the dispatch event.
async fn submit(pool: &Pool, n: usize, text: &str) -> DispatchEvent {
    let accepted_at = now_millis();
    let segments = split(text, CodingChoice::Auto, (n % 250) as u8).expect("splits");
    let mut submitted = Vec::new();
    for segment in segments {
        let request = SubmitRequest::new(&phone(n), "121231100", "TRAFFIC", segment);
        let outcome = pool.submit(&request).await.expect("submits");
        assert!(outcome.is_accepted());
        submitted.push(SubmittedSegment {
            index: submitted.len() as i32 + 1,
            sequence: to_event_triple(outcome.sequence),
            submitted_at: outcome.written_at_ms as i64,
            response_at: Some(outcome.responded_at_ms as i64),
            result: 0,
        });
    }
    DispatchEvent {
        message_id: format!("00000000-0000-5000-8000-{n:012}"),
        request_id: format!("req-{n}"),
        phone: phone(n),
        kind: MessageKind::Notice,
        outcome: DispatchOutcome::Submitted,
        reason: None,
        detail: None,
        gateway_result: None,
        billed_segments: submitted.len() as i32,
        segments: submitted,
        attempt: 0,
        accepted_at,
        dispatched_at: now_millis(),
        not_before: None,
    }
}

fn refused(n: usize, outcome: DispatchOutcome, reason: RefusalReason) -> DispatchEvent {
    let now = now_millis();
    DispatchEvent {
        message_id: format!("00000000-0000-5000-8000-{n:012}"),
        request_id: format!("req-{n}"),
        phone: phone(n),
        kind: MessageKind::VerificationCode,
        outcome,
        reason: Some(reason),
        detail: None,
        gateway_result: (outcome == DispatchOutcome::Failed).then_some(6),
        segments: Vec::new(),
        billed_segments: 0,
        attempt: 0,
        accepted_at: now,
        dispatched_at: now,
        not_before: None,
    }
}

/// Every final status by message id, failing on any duplicate.
fn by_message(statuses: Vec<FinalStatus>) -> HashMap<String, FinalStatus> {
    let mut out = HashMap::new();
    for status in statuses {
        let id = status.message_id.clone();
        assert!(
            out.insert(id.clone(), status).is_none(),
            "message {id} has two final statuses"
        );
    }
    out
}

#[tokio::test]
async fn every_message_gets_exactly_one_final_status_through_a_restart() {
    let kafka = kafka_for_test("status", 3).await.expect("kafka");
    let topics = kafka.topics();
    let producer: FutureProducer = kafka
        .producer_config("status-test")
        .create()
        .expect("producer");

    let running = start_status(&kafka, "127.0.0.1:0").await;
    let receiver = running.receiver;
    let sim = start_simulator(receiver).await;
    let pool = pool(&sim);

    // First wave: 20 messages, 5 of them long (three segments). The first ten
    // dispatch events are written before the reports can arrive, the other
    // ten only after the reports are in Kafka (reports before dispatch).
    let mut events = Vec::new();
    for n in 0..20 {
        let text = if n % 4 == 0 {
            "交管提醒：".repeat(40)
        } else {
            format!("【交管12123】提醒 {n}")
        };
        events.push(submit(&pool, n, &text).await);
    }
    for event in &events[..10] {
        produce(&producer, &topics.dispatch, &event.phone, event)
            .await
            .expect("dispatch written");
    }
    let segments: usize = events.iter().map(|e| e.segments.len()).sum();
    let (reports, _) =
        read_topic::<CarrierReport>(&kafka, &topics.reports, segments, Duration::from_secs(30))
            .await
            .expect("reports");
    assert_eq!(
        reports.len(),
        segments,
        "every segment's report reached sms.reports"
    );
    for event in &events[10..] {
        produce(&producer, &topics.dispatch, &event.phone, event)
            .await
            .expect("dispatch written");
    }

    // Refusals and gateway failures are final at once; one message is
    // submitted with a triple the gateway never saw, so it becomes UNKNOWN.
    let rejected = refused(100, DispatchOutcome::Refused, RefusalReason::NotSubscribed);
    let expired = refused(101, DispatchOutcome::Refused, RefusalReason::Expired);
    let failed = refused(102, DispatchOutcome::Failed, RefusalReason::GatewayRefused);
    let mut silent = refused(103, DispatchOutcome::Submitted, RefusalReason::Expired);
    silent.reason = None;
    silent.segments = vec![SubmittedSegment {
        index: 1,
        sequence: SequenceTriple::new(3_075_512_345, 1_203_000_000, 424_242),
        submitted_at: now_millis(),
        response_at: Some(now_millis()),
        result: 0,
    }];
    for event in [&rejected, &expired, &failed, &silent] {
        produce(&producer, &topics.dispatch, &event.phone, event)
            .await
            .expect("dispatch written");
    }

    // Restart the service in the middle: reports of the second wave arrive
    // while it is down and are resent by the gateway until it answers.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop_status(running).await;
    let mut more = Vec::new();
    for n in 20..30 {
        more.push(submit(&pool, n, &format!("【交管12123】违法处理提醒 {n}")).await);
    }
    for event in &more {
        produce(&producer, &topics.dispatch, &event.phone, event)
            .await
            .expect("dispatch written");
    }
    let running = start_status(&kafka, &receiver.to_string()).await;

    let expected = events.len() + more.len() + 4;
    let (statuses, undecodable) =
        read_topic::<FinalStatus>(&kafka, &topics.status, expected, Duration::from_secs(40))
            .await
            .expect("statuses");
    assert_eq!(undecodable, 0);
    let statuses = by_message(statuses);
    assert_eq!(
        statuses.len(),
        expected,
        "one final status per message, none lost, none doubled"
    );

    // Submitted messages: the status agrees with what the gateway reported.
    let (reports, _) =
        read_topic::<CarrierReport>(&kafka, &topics.reports, 1_000, Duration::from_secs(5))
            .await
            .expect("reports");
    let mut outcome_of: HashMap<SequenceTriple, (ReportState, i32)> = HashMap::new();
    for r in &reports {
        outcome_of.insert(r.submit_sequence, (r.state, r.error_code));
    }
    for event in events.iter().chain(&more) {
        let status = &statuses[&event.message_id];
        let outcomes: Vec<_> = event
            .segments
            .iter()
            .map(|s| outcome_of[&s.sequence])
            .collect();
        let failed = outcomes
            .iter()
            .find(|(state, _)| *state == ReportState::Failed);
        match failed {
            Some((_, code)) => {
                assert_eq!(status.status, FinalState::Failed, "{}", event.message_id);
                assert_eq!(status.error_code, Some(*code));
                assert_eq!(status.failure_category, Some(FailureCategory::PoweredOff));
            }
            None => {
                assert_eq!(status.status, FinalState::Delivered, "{}", event.message_id);
                assert_eq!(status.segments_delivered as usize, event.segments.len());
            }
        }
        assert_eq!(status.billed_segments as usize, event.segments.len());
        assert!(status.report_at.is_some());
        assert_eq!(
            status.submitted_at,
            event.segments.iter().map(|s| s.submitted_at).min()
        );
    }
    assert_eq!(statuses[&rejected.message_id].status, FinalState::Rejected);
    assert_eq!(
        statuses[&rejected.message_id].refusal_reason,
        Some(RefusalReason::NotSubscribed)
    );
    assert_eq!(statuses[&expired.message_id].status, FinalState::Expired);
    assert_eq!(statuses[&failed.message_id].status, FinalState::Failed);
    assert_eq!(statuses[&failed.message_id].error_code, Some(6));
    let unknown = &statuses[&silent.message_id];
    assert_eq!(unknown.status, FinalState::Unknown);
    assert!(!unknown.within_seven_seconds);

    // Redelivered reports change nothing: replay every report once more.
    for report in &reports[..5] {
        produce(&producer, &topics.reports, &report.phone, report)
            .await
            .expect("replayed");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Reading for one more than expected shows any duplicate within the wait.
    let (again, _) =
        read_topic::<FinalStatus>(&kafka, &topics.status, expected + 1, Duration::from_secs(6))
            .await
            .expect("statuses");
    assert_eq!(
        by_message(again).len(),
        expected,
        "replayed reports decide nothing twice"
    );

    pool.close().await;
    sim.shutdown().await;
    stop_status(running).await;
}

#[tokio::test]
async fn an_unsubscribe_reply_cancels_the_subscription_and_queues_a_confirmation() {
    let kafka = kafka_for_test("status_mo", 3).await.expect("kafka");
    let topics = kafka.topics();
    let running = start_status(&kafka, "127.0.0.1:0").await;
    let sim = start_simulator(running.receiver).await;

    sim.send_mo(smsc_sim::MoRequest {
        phone: "8618612345678".into(),
        text: "ＴＤ".into(),
        sp_number: Some("121231100".into()),
        coding: None,
        link_id: None,
    })
    .await
    .expect("uplink sent");
    sim.send_mo(smsc_sim::MoRequest {
        phone: "8618612345679".into(),
        text: "谢谢提醒".into(),
        sp_number: Some("121231100".into()),
        coding: None,
        link_id: None,
    })
    .await
    .expect("uplink sent");

    let (uplinks, _) = read_topic::<UplinkMessage>(&kafka, &topics.mo, 2, Duration::from_secs(20))
        .await
        .expect("mo");
    assert_eq!(
        uplinks.len(),
        2,
        "both replies are recorded for the platform"
    );
    let (subscriptions, _) =
        read_topic::<SubscriptionRecord>(&kafka, &topics.subscriptions, 1, Duration::from_secs(20))
            .await
            .expect("subs");
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].phone, "8618612345678");
    assert_eq!(subscriptions[0].state, SubscriptionState::Cancelled);
    assert_eq!(subscriptions[0].source, SubscriptionSource::UplinkKeyword);
    let (requests, _) =
        read_topic::<SmsRequest>(&kafka, &topics.requests_notify, 1, Duration::from_secs(20))
            .await
            .expect("requests");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].phone, "8618612345678");
    assert_eq!(requests[0].source, RequestSource::System);

    sim.shutdown().await;
    stop_status(running).await;
}

#[tokio::test]
async fn garbage_on_the_input_topics_goes_to_the_dead_letter_topic_and_the_rest_flows() {
    let kafka = kafka_for_test("status_bad", 1).await.expect("kafka");
    let topics = kafka.topics();
    let producer: FutureProducer = kafka
        .producer_config("status-test")
        .create()
        .expect("producer");
    for (topic, bytes) in [
        (&topics.dispatch, b"not avro at all".to_vec()),
        (&topics.reports, vec![0xc3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ] {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key("8618600000000")
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("garbage written");
    }
    // A record of the wrong type on the dispatch topic.
    let wrong = SubscriptionRecord {
        phone: "8618600000000".into(),
        state: SubscriptionState::Registered,
        kinds: vec![MessageKind::Notice],
        source: SubscriptionSource::Api,
        moved_to: None,
        client_id: None,
        changed_at: now_millis(),
    };
    produce(&producer, &topics.dispatch, &wrong.phone, &wrong)
        .await
        .expect("written");
    let good = refused(2, DispatchOutcome::Refused, RefusalReason::ContentPolicy);
    produce(&producer, &topics.dispatch, &good.phone, &good)
        .await
        .expect("written");

    let running = start_status(&kafka, "127.0.0.1:0").await;
    let (letters, _) = read_topic::<DeadLetter>(&kafka, &topics.dlq, 3, Duration::from_secs(20))
        .await
        .expect("dlq");
    assert_eq!(letters.len(), 3);
    assert!(letters
        .iter()
        .all(|l| l.error == DeadLetterError::Undecodable && l.service == "status"));
    let (statuses, _) =
        read_topic::<FinalStatus>(&kafka, &topics.status, 1, Duration::from_secs(20))
            .await
            .expect("status");
    assert_eq!(
        statuses.len(),
        1,
        "the good record after the garbage is decided"
    );
    assert_eq!(
        statuses[0].refusal_reason,
        Some(RefusalReason::ContentPolicy)
    );
    stop_status(running).await;
}
