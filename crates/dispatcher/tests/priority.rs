//! Verification codes overtake a backlog of notices.

mod common;

use std::time::Duration;

use common::*;
use sms_core::events::{DispatchOutcome, MessageKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verification_codes_overtake_a_notice_backlog() {
    let kafka = sms_harness::kafka_for_test("dispatcher_priority", 2)
        .await
        .unwrap();
    // 20 ms per answer and a window of 8: about 400 notices a second.
    let sim = simulator(|c| c.submit.response_delay_ms = 20).await;
    let mut config = config(&kafka, &sim);
    config.gateway.connections = 1;
    config.gateway.window = 8;
    let dispatches = Dispatches::start(&kafka, &kafka.topics().dispatch);

    let notices: Vec<_> = (0..2000)
        .map(|n| {
            request(
                &format!("notice-{n}"),
                &phone(n),
                MessageKind::Notice,
                &format!("通知 {n}"),
            )
        })
        .collect();
    let producer = producer(&kafka);
    send_requests_with(&producer, &kafka, &notices).await;
    let running = start(config);
    dispatches
        .wait_for(Duration::from_secs(60), "the backlog to start", |e| {
            e.len() >= 200
        })
        .await;

    let codes: Vec<_> = (0..20)
        .map(|n| {
            request(
                &format!("code-{n}"),
                &phone(10_000 + n),
                MessageKind::VerificationCode,
                &format!("验证码 {n:06}"),
            )
        })
        .collect();
    send_requests_with(&producer, &kafka, &codes).await;
    let code_ids: Vec<String> = codes.iter().map(|r| r.message_id.clone()).collect();
    let events = dispatches
        .wait_for(Duration::from_secs(60), "the codes", |e| {
            all_final(e, &code_ids)
        })
        .await;
    let notices_before_codes = events
        .iter()
        .filter(|e| e.kind == MessageKind::Notice)
        .count();
    running.stop().await;

    assert!(
        notices_before_codes < notices.len() - 500,
        "the backlog was still there when the codes went out ({notices_before_codes} notices done)"
    );
    for event in events
        .iter()
        .filter(|e| e.kind == MessageKind::VerificationCode)
    {
        assert_eq!(event.outcome, DispatchOutcome::Submitted);
        // The 20 codes pass a window of 8 at 20 ms an answer in about 100
        // ms; behind the queue a code would wait for the 1,800 or so notices
        // still queued when it was written, at about 400 a second: over four
        // seconds. The bound leaves room for a debug build on a busy machine
        // and still tells the two apart (the benchmark measures the figure).
        let waited = event.segments[0].submitted_at - event.accepted_at;
        assert!(
            waited < 1_000,
            "a code waited {waited} ms behind the notices"
        );
    }
    sim.shutdown().await;
}
