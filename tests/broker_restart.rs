//! The Kafka broker stopped and started again in the middle of traffic:
//! nothing accepted is lost and nothing is decided twice. A test binary of
//! its own, so no other test shares the broker while it is down.

#[path = "stack.rs"]
mod stack;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use stack::Stack;

fn services(command: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-services.sh");
    // The script starts a broker only when no outside one is named.
    let status = std::process::Command::new(script)
        .arg(command)
        .env_remove("KAFKA_BOOTSTRAP")
        .status()
        .expect("the services script runs");
    assert!(
        status.success(),
        "deploy/local-services.sh {command} failed"
    );
}

fn local_broker_is_managed() -> bool {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-services.sh");
    std::process::Command::new(script)
        .arg("status")
        .env_remove("KAFKA_BOOTSTRAP")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("kafka: running"))
}

fn instruction(n: usize) -> Value {
    let phone = format!("186{:08}", 30_000_000 + n % 20);
    let kind = if n % 2 == 0 { "NOTICE" } else { "REMINDER" };
    json!({ "request_id": format!("broker-{n}"), "phone": phone, "kind": kind, "text": format!("第{n}号提醒：请按时参加年检。") })
}

async fn send(stack: &Stack, range: std::ops::Range<usize>) -> HashSet<String> {
    let messages: Vec<Value> = range.map(instruction).collect();
    stack.send_all(&messages, 20).await
}

#[tokio::test]
async fn a_broker_restart_in_the_middle_of_traffic_loses_nothing() {
    assert!(
        local_broker_is_managed(),
        "this test stops and starts the broker that deploy/local-services.sh runs; start it with `make test`"
    );
    let stack = Stack::start("e2e_broker", "").await;
    let phones: Vec<String> = (0..20)
        .map(|n| format!("186{:08}", 30_000_000 + n))
        .collect();
    stack.subscribe(&phones).await;

    let mut accepted = send(&stack, 0..60).await;
    let during = async {
        // The platform keeps sending while the broker is away; ingest answers
        // 503 and the same request ids are sent again until they are taken.
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&stack, 60..120).await
    };
    let outage = async {
        services("stop-kafka");
        tokio::time::sleep(Duration::from_secs(5)).await;
        services("start-kafka");
    };
    let (ids, ()) = tokio::join!(during, outage);
    accepted.extend(ids);
    accepted.extend(send(&stack, 120..160).await);
    assert_eq!(accepted.len(), 160, "every request was taken in the end");

    let finals = stack::wait_final(&stack, &accepted, Duration::from_secs(180)).await;
    let missing = accepted
        .iter()
        .filter(|id| !finals.contains_key(*id))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} accepted messages have no final status; logs in {}",
        stack.logs().display()
    );
    let (statuses, _) = sms_harness::read_topic::<sms_core::events::FinalStatus>(
        &stack.kafka,
        &stack.kafka.topics().status,
        accepted.len() + 1,
        Duration::from_secs(10),
    )
    .await
    .expect("statuses");
    let unique: HashSet<_> = statuses.iter().map(|s| s.message_id.clone()).collect();
    assert_eq!(unique.len(), statuses.len(), "a message was decided twice");
    assert_eq!(unique.len(), accepted.len());
    stack.stop().await;
}
