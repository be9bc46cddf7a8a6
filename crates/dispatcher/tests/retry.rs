//! Gateway refusals: flow control retried until it passes, attempts exhausted, final refusals.

mod common;

use std::time::Duration;

use common::*;
use sms_core::events::{DispatchOutcome, MessageKind, RefusalReason};
use smsc_sim::WeightedCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flow_control_is_retried_until_every_message_is_submitted_once() {
    let kafka = sms_harness::kafka_for_test("dispatcher_retry_pass", 2)
        .await
        .unwrap();
    // The gateway takes 20 Submits a second and answers 88 beyond that.
    let sim = simulator(|c| c.submit.tps_limit = 20).await;
    let mut config = config(&kafka, &sim);
    config.retry.max_attempts = 60;
    config.retry.throttle_pause_ms = 50;
    let dispatches = Dispatches::start(&kafka, &kafka.topics().dispatch);
    let running = start(config);

    let requests: Vec<_> = (0..120)
        .map(|n| {
            request(
                &format!("burst-{n}"),
                &phone(100 + n),
                MessageKind::Notice,
                &format!("通知 {n}"),
            )
        })
        .collect();
    send_requests(&kafka, &requests).await;
    let ids: Vec<String> = requests.iter().map(|r| r.message_id.clone()).collect();
    let events = dispatches
        .wait_for(Duration::from_secs(90), "every message submitted", |e| {
            all_final(e, &ids)
        })
        .await;
    running.stop().await;

    let retrying: Vec<_> = events
        .iter()
        .filter(|e| e.outcome == DispatchOutcome::Retrying)
        .collect();
    assert!(
        !retrying.is_empty(),
        "the burst was above the gateway's limit"
    );
    for event in &retrying {
        assert_eq!(event.gateway_result, Some(88));
        assert!(event.not_before.is_some_and(|t| t > event.dispatched_at));
    }
    let finals = finals(&events);
    assert!(finals.values().all(|n| *n == 1));
    let last = last_by_id(&events);
    assert!(last
        .values()
        .all(|e| e.outcome == DispatchOutcome::Submitted));
    assert!(last.values().any(|e| e.attempt > 0));
    let counts = sim.counts();
    for r in &requests {
        assert_eq!(
            counts
                .messages
                .get(&smsc_sim::message_key(&r.phone, &r.text)),
            Some(&1)
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_attempt_fails_and_final_refusals_carry_the_gateway_code() {
    let kafka = sms_harness::kafka_for_test("dispatcher_retry_fail", 1)
        .await
        .unwrap();
    let busy = simulator(|c| {
        c.submit.results = vec![WeightedCode {
            code: 11,
            weight: 1,
        }]
    })
    .await;
    let mut config = config(&kafka, &busy);
    config.retry.max_attempts = 3;
    let dispatches = Dispatches::start(&kafka, &kafka.topics().dispatch);
    let running = start(config);
    let message = request("busy", &phone(1), MessageKind::Notice, "网关忙");
    send_requests(&kafka, std::slice::from_ref(&message)).await;
    let events = dispatches
        .wait_for(Duration::from_secs(60), "attempts exhausted", |e| {
            all_final(e, std::slice::from_ref(&message.message_id))
        })
        .await;
    running.stop().await;
    busy.shutdown().await;

    let outcomes: Vec<_> = events
        .iter()
        .map(|e| (e.outcome, e.attempt, e.reason))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (
                DispatchOutcome::Retrying,
                0,
                Some(RefusalReason::GatewayRefused)
            ),
            (
                DispatchOutcome::Retrying,
                1,
                Some(RefusalReason::GatewayRefused)
            ),
            (
                DispatchOutcome::Failed,
                2,
                Some(RefusalReason::AttemptsExhausted)
            ),
        ]
    );
    assert_eq!(events[2].gateway_result, Some(11));
    assert!(events[1].dispatched_at - events[0].dispatched_at >= 100);

    // A permanent refusal fails at once, with the code.
    let kafka = sms_harness::kafka_for_test("dispatcher_refused", 1)
        .await
        .unwrap();
    let strict = simulator(|c| {
        c.submit.results = vec![WeightedCode {
            code: 13,
            weight: 1,
        }]
    })
    .await;
    let dispatches = Dispatches::start(&kafka, &kafka.topics().dispatch);
    let running = start(config_for(&kafka, &strict));
    let message = request("refused", &phone(2), MessageKind::Notice, "业务代码错");
    send_requests(&kafka, std::slice::from_ref(&message)).await;
    let events = dispatches
        .wait_for(Duration::from_secs(60), "final refusal", |e| {
            all_final(e, std::slice::from_ref(&message.message_id))
        })
        .await;
    running.stop().await;
    strict.shutdown().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, DispatchOutcome::Failed);
    assert_eq!(events[0].reason, Some(RefusalReason::GatewayRefused));
    assert_eq!(events[0].gateway_result, Some(13));
    assert_eq!(events[0].segments[0].result, 13);
}

fn config_for(
    kafka: &sms_core::kafka::KafkaSettings,
    sim: &smsc_sim::SimulatorHandle,
) -> dispatcher::config::Config {
    config(kafka, sim)
}
