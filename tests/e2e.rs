//! End to end: every service as a real process against the local Kafka,
//! ClickHouse and the carrier simulator. Each test sends traffic through the
//! HTTP API (and the raw-topic bridge), then accounts for every accepted
//! request: exactly one final status on `sms.status`, one row in the
//! per-message table, and the right count at the simulator.

#[path = "stack.rs"]
mod stack;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use sms_core::events::{FinalState, FinalStatus, SmsRequest};
use stack::{Options, Stack};

fn phone(n: usize) -> String {
    ["130", "131", "156", "186", "176"][n % 5].to_string() + &format!("{:08}", 20_000_000 + n)
}

fn instruction(run: &str, n: usize, phones: usize) -> Value {
    let kind = ["VERIFICATION_CODE", "NOTICE", "REMINDER"][n % 3];
    let text = if n % 7 == 0 {
        format!(
            "第{n}号提醒：{}",
            "您的机动车检验有效期即将届满，请及时预约检验。".repeat(4)
        )
    } else {
        format!("第{n}号通知：您有一条交通违法记录待处理。")
    };
    json!({ "request_id": format!("{run}-{n}"), "phone": phone(n % phones), "kind": kind, "text": text })
}

/// Sends `count` messages from `start` in batches; returns the accepted message ids.
async fn send(
    stack: &Stack,
    run: &str,
    range: std::ops::Range<usize>,
    phones: usize,
) -> HashSet<String> {
    let messages: Vec<Value> = range.map(|n| instruction(run, n, phones)).collect();
    stack.send_all(&messages, 50).await
}

/// The accounting every test ends with. Returns the number of duplicate
/// submissions the simulator saw.
async fn account(stack: &Stack, accepted: &HashSet<String>) -> u64 {
    let finals = stack::wait_final(stack, accepted, Duration::from_secs(120)).await;
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !finals.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted messages never became final, e.g. {:?}; logs in {}",
        missing.len(),
        missing.first(),
        stack.logs().display()
    );

    // Exactly one final status per accepted message on sms.status (messages
    // the system sends itself, such as unsubscribe confirmations, aside).
    let topics = stack.kafka.topics();
    let mut requests = Vec::new();
    for topic in [&topics.requests_notify, &topics.requests_otp] {
        let (read, _) = sms_harness::read_topic::<SmsRequest>(
            &stack.kafka,
            topic,
            100_000,
            Duration::from_secs(3),
        )
        .await
        .expect("requests");
        requests.extend(read);
    }
    let text_of: HashMap<&str, &SmsRequest> = requests
        .iter()
        .map(|r| (r.message_id.as_str(), r))
        .collect();
    let system: HashSet<&str> = requests
        .iter()
        .filter(|r| r.source == sms_core::events::RequestSource::System)
        .map(|r| r.message_id.as_str())
        .collect();
    let (statuses, undecodable) = sms_harness::read_topic::<FinalStatus>(
        &stack.kafka,
        &topics.status,
        accepted.len() + system.len() + 1,
        Duration::from_secs(10),
    )
    .await
    .expect("statuses");
    assert_eq!(undecodable, 0);
    let statuses: Vec<FinalStatus> = statuses
        .into_iter()
        .filter(|s| !system.contains(s.message_id.as_str()))
        .collect();
    let mut seen = HashSet::new();
    for status in &statuses {
        assert!(
            seen.insert(status.message_id.clone()),
            "two final statuses for {}",
            status.message_id
        );
        assert!(
            accepted.contains(&status.message_id),
            "a final status for a message never accepted"
        );
    }
    assert_eq!(seen.len(), accepted.len());

    // The per-message table has one row per message and agrees with the topic.
    for status in &statuses {
        let state = format!("{:?}", status.status).to_uppercase();
        assert_eq!(finals[&status.message_id], state, "{}", status.message_id);
    }

    // The simulator accepted each submitted message at least once.
    let counts = stack.counts().await;
    let mut duplicates = 0;
    for status in &statuses {
        let request = text_of[status.message_id.as_str()];
        let seen = counts
            .messages
            .get(&smsc_sim::message_key(&request.phone, &request.text))
            .copied()
            .unwrap_or(0);
        match status.status {
            FinalState::Delivered | FinalState::Failed => {
                assert!(
                    seen >= 1,
                    "{} is {:?} but the carrier never took it",
                    status.message_id,
                    status.status
                );
                duplicates += seen - 1;
            }
            FinalState::Rejected | FinalState::Expired => {
                assert_eq!(seen, 0, "a refused message reached the carrier")
            }
            FinalState::Unknown => {}
        }
    }
    duplicates
}

#[tokio::test]
async fn requests_from_http_and_the_raw_topic_are_each_accounted_for() {
    let stack = Stack::start("e2e_flow", "").await;
    let phones: Vec<String> = (0..30).map(phone).collect();
    stack.subscribe(&phones).await;

    let mut accepted = send(&stack, "flow", 0..150, 30).await;
    assert_eq!(accepted.len(), 150);

    // One recipient who never subscribed: refused by policy, never sent.
    let answer = stack
        .send_batch(&[json!({ "request_id": "flow-unsubscribed", "phone": "13099999999", "kind": "NOTICE", "text": "测试" })])
        .await;
    let refused_id = answer["results"][0]["message_id"]
        .as_str()
        .expect("accepted at the door")
        .to_string();
    accepted.insert(refused_id.clone());

    // Twenty more through the raw topic, one of them malformed.
    let producer: FutureProducer = stack
        .kafka
        .producer_config("e2e")
        .create()
        .expect("producer");
    let raw = stack.kafka.topics().inbound_raw;
    for n in 150..170 {
        let record = json!({ "client_id": "platform", "message": instruction("flow", n, 30) });
        producer
            .send(
                FutureRecord::to(&raw)
                    .key(&phone(n % 30))
                    .payload(&record.to_string()),
                Duration::from_secs(10),
            )
            .await
            .expect("raw instruction written");
        let id = ingest::submit::message_id("platform", &format!("flow-{n}"));
        accepted.insert(id.to_string());
    }
    producer
        .send(
            FutureRecord::to(&raw).key("x").payload("{not json"),
            Duration::from_secs(10),
        )
        .await
        .expect("garbage written");

    let duplicates = account(&stack, &accepted).await;
    assert_eq!(duplicates, 0, "a clean run sends nothing twice");
    let (statuses, _) = sms_harness::read_topic::<FinalStatus>(
        &stack.kafka,
        &stack.kafka.topics().status,
        accepted.len(),
        Duration::from_secs(5),
    )
    .await
    .expect("statuses");
    let refused = statuses
        .iter()
        .find(|s| s.message_id == refused_id)
        .expect("refused message has a status");
    assert_eq!(refused.status, FinalState::Rejected);
    stack.stop().await;
}

#[tokio::test]
async fn kill_minus_nine_of_each_service_loses_nothing() {
    let mut stack = Stack::start("e2e_kill", "").await;
    let phones: Vec<String> = (0..40).map(phone).collect();
    stack.subscribe(&phones).await;

    let mut accepted = HashSet::new();
    let mut kills = 0;
    for (wave, service) in ["dispatcher", "status", "analytics", "ingest", "dispatcher"]
        .into_iter()
        .enumerate()
    {
        let range = wave * 60..(wave + 1) * 60;
        let sending = send(&stack, "kill", range, 40);
        let (ids, ()) = tokio::join!(sending, async {
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        accepted.extend(ids);
        stack.kill9(service).await;
        if service == "dispatcher" {
            kills += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.spawn(service);
    }
    let duplicates = account(&stack, &accepted).await;
    // Each dispatcher crash may send again what was in flight: the pool's
    // window (16 per connection, 2 connections).
    assert!(
        duplicates <= kills * 32,
        "{duplicates} duplicates after {kills} dispatcher crashes"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_carrier_that_drops_connections_and_doubles_reports_loses_nothing() {
    let stack = Stack::start(
        "e2e_faults",
        "[faults]\ndrop_every_n_submits = 25\nduplicate_reports = true\nreport_extra_delay_ms = 200\n",
    )
    .await;
    let phones: Vec<String> = (0..20).map(phone).collect();
    stack.subscribe(&phones).await;
    let accepted = send(&stack, "faults", 0..120, 20).await;
    let duplicates = account(&stack, &accepted).await;
    // A dropped connection loses the answers to what was in flight on it (at
    // most the window, 16), and those Submits are sent again.
    let drops = stack.counts().await.connections_dropped;
    assert!(drops > 0, "the fault was active");
    assert!(
        duplicates <= drops * 16,
        "{duplicates} duplicates after {drops} dropped connections"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_carrier_that_answers_slowly_refuses_binds_and_reports_late_loses_nothing() {
    let stack = Stack::start("e2e_carrier", "").await;
    let phones: Vec<String> = (0..30).map(phone).collect();
    stack.subscribe(&phones).await;

    // Slow answers: every Submit_Resp waits 300 ms.
    stack.set_faults(json!({ "slow_response_ms": 300 })).await;
    let mut accepted = send(&stack, "carrier", 0..60, 30).await;

    // The gateway drops every connection and refuses binds for a while: the
    // dispatcher keeps reconnecting with back-off while requests queue.
    stack.set_faults(json!({ "refuse_binds": true })).await;
    stack.drop_connections().await;
    accepted.extend(send(&stack, "carrier", 60..120, 30).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = stack.counts().await.binds_refused;
    assert!(refused > 0, "the dispatcher tried to bind while refused");
    stack.set_faults(json!({})).await;

    // Reports 8 s late: delivered, but outside the contract's 7 seconds.
    stack
        .set_faults(json!({ "report_extra_delay_ms": 8000 }))
        .await;
    let late = send(&stack, "carrier", 120..150, 30).await;
    accepted.extend(late.iter().cloned());
    let duplicates = account(&stack, &accepted).await;

    // The in-flight window of both connections may be sent again after the drop.
    assert!(
        duplicates <= 32,
        "{duplicates} duplicates after one drop of 2 connections"
    );
    let (statuses, _) = sms_harness::read_topic::<FinalStatus>(
        &stack.kafka,
        &stack.kafka.topics().status,
        accepted.len(),
        Duration::from_secs(10),
    )
    .await
    .expect("statuses");
    for status in statuses.iter().filter(|s| late.contains(&s.message_id)) {
        if status.status == FinalState::Delivered || status.status == FinalState::Failed {
            assert!(
                !status.within_seven_seconds,
                "{} had its report 8 s late but counts as timely",
                status.message_id
            );
        }
    }
    stack.stop().await;
}

#[tokio::test]
async fn clickhouse_away_for_a_minute_loses_nothing() {
    let stack = Stack::start_with(
        "e2e_clickhouse",
        Options {
            clickhouse_proxy: true,
            ..Options::default()
        },
    )
    .await;
    let proxy = stack.clickhouse_proxy.clone().expect("a proxy");
    let phones: Vec<String> = (0..20).map(phone).collect();
    stack.subscribe(&phones).await;
    let mut accepted = send(&stack, "clickhouse", 0..40, 20).await;
    let before = stack::wait_final(&stack, &accepted, Duration::from_secs(120)).await;
    assert!(accepted.iter().all(|id| before.contains_key(id)));

    // ClickHouse is away from the sink for a minute while traffic goes on:
    // the rest of the pipeline does not wait for it.
    proxy.cut();
    let cut_at = tokio::time::Instant::now();
    let during = send(&stack, "clickhouse", 40..120, 20).await;
    let (statuses, _) = sms_harness::read_topic::<FinalStatus>(
        &stack.kafka,
        &stack.kafka.topics().status,
        accepted.len() + during.len(),
        Duration::from_secs(50),
    )
    .await
    .expect("statuses");
    let decided = statuses
        .iter()
        .filter(|s| during.contains(&s.message_id))
        .count();
    assert_eq!(
        decided,
        during.len(),
        "statuses are decided while ClickHouse is away"
    );
    tokio::time::sleep_until(cut_at + Duration::from_secs(60)).await;
    let stored = stack::wait_final(&stack, &during, Duration::ZERO).await;
    assert!(
        during.iter().all(|id| !stored.contains_key(id)),
        "nothing reached ClickHouse while it was away"
    );

    proxy.restore();
    accepted.extend(during);
    accepted.extend(send(&stack, "clickhouse", 120..140, 20).await);
    assert_eq!(account(&stack, &accepted).await, 0);
    let events = stack
        .clickhouse
        .query("SELECT count() FROM sms_events WHERE event_kind = 'final_status'")
        .fetch_one::<u64>()
        .await
        .expect("count");
    assert_eq!(
        events as usize,
        accepted.len(),
        "each final status is stored once"
    );
    stack.stop().await;
}

#[tokio::test]
async fn malformed_input_on_every_entrance_is_refused_and_traffic_still_flows() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stack = Stack::start("e2e_garbage", "").await;
    let http = reqwest::Client::new();
    let batch = format!("{}/v1/messages/batch", stack.ingest_url);
    let bad_bodies = [
        String::new(),
        "{".into(),
        "[]".into(),
        "{\"messages\": 5}".into(),
        "{\"messages\": []}".into(),
        "x".repeat(100_000),
        String::from_utf8_lossy(&[0xff, 0xfe, 0, 1, 2]).into_owned(),
        format!("{{\"messages\": [{}]}}", vec!["{}"; 1_001].join(",")),
    ];
    // A flood: every bad body many times, a few at a time.
    for round in 0..25 {
        let calls = bad_bodies.iter().map(|body| {
            http.post(&batch)
                .bearer_auth(stack::TOKEN)
                .body(body.clone())
                .header("content-type", "application/json")
                .send()
        });
        for (answer, body) in futures::future::join_all(calls)
            .await
            .into_iter()
            .zip(&bad_bodies)
        {
            let answer = answer.expect("answers");
            assert!(
                answer.status().is_client_error(),
                "round {round}, {body:.20}: {}",
                answer.status()
            );
            let error: Value = answer.json().await.expect("a JSON error");
            assert!(error["error"]["code"].is_string(), "{error}");
        }
    }
    // A well-formed batch with a malformed item: that item is refused, by index.
    let answer = http
        .post(&batch)
        .bearer_auth(stack::TOKEN)
        .json(&json!({ "messages": [{ "phone": 1 }] }))
        .send()
        .await
        .expect("answers");
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["refused"], 1, "{body}");
    assert_eq!(body["accepted"], 0, "{body}");

    // Raw-topic garbage: each record is refused to the dead-letter topic.
    let producer: FutureProducer = stack
        .kafka
        .producer_config("e2e")
        .create()
        .expect("producer");
    let garbage = [
        "",
        "null",
        "{\"client_id\": 5}",
        "\u{0}\u{1}",
        "{\"client_id\": \"platform\", \"message\": {}}",
    ];
    let raw_garbage = 200;
    for n in 0..raw_garbage {
        producer
            .send(
                FutureRecord::to(&stack.kafka.topics().inbound_raw)
                    .key("k")
                    .payload(garbage[n % garbage.len()]),
                Duration::from_secs(10),
            )
            .await
            .expect("written");
    }

    // Garbage on the SGIP receiver, many connections: a frame that lies
    // about its length, a truncated header, an unknown command, a Bind with
    // a wrong password, random bytes. Each connection is closed by the server.
    let mut unknown_command = vec![0, 0, 0, 20, 0x12, 0x34, 0x56, 0x78];
    unknown_command.extend([0u8; 12]);
    let mut bad_bind = vec![0, 0, 0, 61, 0, 0, 0, 1];
    bad_bind.extend([0u8; 12]);
    bad_bind.push(2);
    bad_bind.extend(b"smg\0\0\0\0\0\0\0\0\0\0\0\0\0");
    bad_bind.extend(b"wrong\0\0\0\0\0\0\0\0\0\0\0");
    bad_bind.extend([0u8; 8]);
    let frames: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1],
        vec![0, 0, 0],
        unknown_command,
        bad_bind,
        (0..=255u8).rev().cycle().take(4_096).collect(),
    ];
    for round in 0..10 {
        for frame in &frames {
            let Ok(mut socket) = tokio::net::TcpStream::connect(stack.receiver_addr()).await else {
                panic!("the receiver stopped accepting after round {round}");
            };
            let _ = socket.write_all(frame).await;
            let _ = socket.shutdown().await;
            let mut buf = [0u8; 256];
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                closed.is_ok(),
                "the receiver closes a connection that sent garbage"
            );
        }
    }
    let (letters, _) = sms_harness::read_topic::<sms_core::events::DeadLetter>(
        &stack.kafka,
        &stack.kafka.topics().dlq,
        raw_garbage,
        Duration::from_secs(60),
    )
    .await
    .expect("dead letters");
    assert_eq!(
        letters.len(),
        raw_garbage,
        "every raw record refused has its dead letter"
    );
    assert!(letters.iter().all(|l| !l.reason.is_empty()));

    let phones: Vec<String> = (0..5).map(phone).collect();
    stack.subscribe(&phones).await;
    let accepted = send(&stack, "after-garbage", 0..20, 5).await;
    assert_eq!(accepted.len(), 20);
    assert_eq!(account(&stack, &accepted).await, 0);
    stack.stop().await;
}

#[tokio::test]
async fn an_unsubscribe_reply_stops_the_next_notice_to_that_user() {
    let stack = Stack::start("e2e_unsubscribe", "").await;
    let user = phone(0);
    stack.subscribe(std::slice::from_ref(&user)).await;

    // The user replies "TD" to the access number.
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/mo", stack.sim_url))
        .json(&json!({ "phone": format!("86{user}"), "text": "TD", "sp_number": "121231100" }))
        .send()
        .await
        .expect("simulator answers");
    assert!(answer.status().is_success());

    // The cancellation reaches the compacted topic, and the confirmation is queued.
    let topics = stack.kafka.topics();
    let (cancellations, _) = sms_harness::read_topic::<sms_core::events::SubscriptionRecord>(
        &stack.kafka,
        &topics.subscriptions,
        2,
        Duration::from_secs(30),
    )
    .await
    .expect("subscriptions");
    assert!(cancellations
        .iter()
        .any(|r| r.state == sms_core::events::SubscriptionState::Cancelled));

    // The next notice to that user is refused before the carrier.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = send(&stack, "after-td", 0..1, 1).await;
    let id = accepted
        .iter()
        .next()
        .expect("accepted at the door")
        .clone();
    account(&stack, &accepted).await;
    let (statuses, _) = sms_harness::read_topic::<FinalStatus>(
        &stack.kafka,
        &topics.status,
        2,
        Duration::from_secs(10),
    )
    .await
    .expect("statuses");
    let status = statuses
        .iter()
        .find(|s| s.message_id == id)
        .expect("a final status");
    assert_eq!(status.status, FinalState::Rejected);
    assert_eq!(
        status.refusal_reason,
        Some(sms_core::events::RefusalReason::NotSubscribed)
    );
    // The confirmation itself (source SYSTEM) went out.
    let counts = stack.counts().await;
    assert!(
        counts.submits_accepted >= 1,
        "the unsubscribe confirmation was sent"
    );
    stack.stop().await;
}
