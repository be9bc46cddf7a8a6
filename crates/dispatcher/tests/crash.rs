//! kill -9 of the dispatcher binary mid-stream: nothing is lost, and the gateway sees at most the in-flight window again.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use sms_core::events::MessageKind;
use sms_core::kafka::KafkaSettings;
use smsc_sim::SimulatorHandle;

const CONNECTIONS: usize = 2;
const WINDOW: usize = 8;

fn spawn(kafka: &KafkaSettings, sim: &SimulatorHandle) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .env("DISPATCHER_KAFKA__BOOTSTRAP", &kafka.bootstrap)
        .env(
            "DISPATCHER_KAFKA__TOPIC_PREFIX",
            format!("\"{}\"", kafka.topic_prefix),
        )
        .env(
            "DISPATCHER_GATEWAY__ADDR",
            format!("\"{}\"", sim.submit_addr),
        )
        .env("DISPATCHER_GATEWAY__CONNECTIONS", CONNECTIONS.to_string())
        .env("DISPATCHER_GATEWAY__WINDOW", WINDOW.to_string())
        .env("DISPATCHER_GATEWAY_PASSWORD", "secret")
        .env("DISPATCHER_POLICY__REQUIRE_SUBSCRIPTION", "false")
        .env("DISPATCHER_METRICS_LISTEN", "\"127.0.0.1:0\"")
        .env("DISPATCHER_CONSUMER__INSTANCE", "crash")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the dispatcher binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_nothing_and_repeats_at_most_the_window() {
    let kafka = sms_harness::kafka_for_test("dispatcher_crash", 2)
        .await
        .unwrap();
    let sim = simulator(|c| c.submit.response_delay_ms = 20).await;
    let dispatches = Dispatches::start(&kafka, &kafka.topics().dispatch);
    let requests: Vec<_> = (0..1200)
        .map(|n| {
            request(
                &format!("crash-{n}"),
                &phone(5000 + n % 300),
                MessageKind::Notice,
                &format!("崩溃测试 {n}"),
            )
        })
        .collect();
    let ids: Vec<String> = requests.iter().map(|r| r.message_id.clone()).collect();
    send_requests(&kafka, &requests).await;

    let mut first = spawn(&kafka, &sim);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sim.counts().messages.len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first process submitted too little"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let at_kill = sim.counts().messages.len();
    assert!(at_kill < requests.len(), "killed before the end");

    let mut second = spawn(&kafka, &sim);
    let outcome = dispatches
        .wait_for(
            Duration::from_secs(120),
            "every message after the restart",
            |e| all_final(e, &ids),
        )
        .await;
    second.kill().expect("stop the second process");
    let _ = second.wait();

    let counts = sim.counts();
    for r in &requests {
        assert!(
            counts
                .messages
                .get(&smsc_sim::message_key(&r.phone, &r.text))
                .is_some_and(|n| *n >= 1),
            "lost {}",
            r.message_id
        );
    }
    let duplicates = counts.duplicates();
    assert!(
        duplicates <= (CONNECTIONS * WINDOW) as u64,
        "{duplicates} duplicates, more than the window of {}",
        CONNECTIONS * WINDOW
    );
    // Committed dispatch events: one final event per message.
    let finals = finals(&outcome);
    assert!(
        finals.values().all(|n| *n == 1),
        "a message has two committed events"
    );
    eprintln!("kill -9 after {at_kill} messages: {duplicates} sent again");
    sim.shutdown().await;
}
