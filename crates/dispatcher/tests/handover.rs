//! Restarts and rebalances: several instances share the partitions, come and go, and the gateway sees every message exactly once.

mod common;

use std::time::Duration;

use common::*;
use sms_core::events::{DispatchOutcome, MessageKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarts_and_rebalances_lose_nothing_and_send_nothing_twice() {
    let kafka = sms_harness::kafka_for_test("dispatcher_handover", 4)
        .await
        .unwrap();
    // Slow answers keep Submits in flight while partitions move.
    let sim = simulator(|c| c.submit.response_delay_ms = 40).await;
    let dispatches = Dispatches::start(&kafka, &kafka.topics().dispatch);
    let instance = |name: &str| {
        let mut config = config(&kafka, &sim);
        config.consumer.instance = name.into();
        config.gateway.connections = 2;
        config.gateway.window = 8;
        config
    };

    let requests: Vec<_> = (0..1500)
        .map(|n| {
            request(
                &format!("handover-{n}"),
                &phone(1000 + n % 400),
                MessageKind::Notice,
                &format!("第 {n} 条通知"),
            )
        })
        .collect();
    let ids: Vec<String> = requests.iter().map(|r| r.message_id.clone()).collect();
    send_requests(&kafka, &requests[..750]).await;

    let a = start(instance("a"));
    dispatches
        .wait_for(Duration::from_secs(60), "a first share", |e| e.len() >= 100)
        .await;
    // A second instance joins: the partitions are split between them.
    let b = start(instance("b"));
    send_requests(&kafka, &requests[750..]).await;
    dispatches
        .wait_for(Duration::from_secs(60), "work after the join", |e| {
            e.len() >= 500
        })
        .await;
    // The first leaves (SIGTERM path): b takes everything.
    a.stop().await;
    dispatches
        .wait_for(Duration::from_secs(60), "work after the leave", |e| {
            e.len() >= 900
        })
        .await;
    // The second restarts under its own name.
    b.stop().await;
    let b = start(instance("b"));
    let events = dispatches
        .wait_for(Duration::from_secs(120), "every message", |e| {
            all_final(e, &ids)
        })
        .await;
    b.stop().await;

    let finals = finals(&events);
    let twice: Vec<_> = finals.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "messages decided twice: {twice:?}");
    assert!(events
        .iter()
        .all(|e| e.outcome == DispatchOutcome::Submitted));
    assert_eq!(finals.len(), requests.len());

    let counts = sim.counts();
    assert_eq!(counts.duplicates(), 0, "the gateway saw a message twice");
    for r in &requests {
        assert_eq!(
            counts
                .messages
                .get(&smsc_sim::message_key(&r.phone, &r.text)),
            Some(&1),
            "{}",
            r.message_id
        );
    }
    sim.shutdown().await;
}
