//! Benchmarks of `smsctl trace` on months of generated history and of `smsctl replay` on a topic window.
//!
//! ```text
//! eval "$(deploy/local-services.sh env)"
//! BENCH_MESSAGES=17000000 cargo bench -p smsctl --bench trace_replay
//! ```
//!
//! `BENCH_MESSAGES` (default 17,000,000: six months at the contract's
//! volume) messages go into the database `BENCH_DATABASE` (default
//! `smsctl_bench_<messages>`), generated once over the last 183 days;
//! `BENCH_REPLAY_RECORDS` (default 300000) statuses go to a fresh topic for
//! the replay.

use std::time::{Duration, Instant};

use analytics::config::ClickHouseSettings;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use smsctl::history::{generate, HistoryPlan};
use smsctl::replay::{replay, ReplayTarget, ReplayWindow, Silent};
use smsctl::trace::{trace, TraceTarget};
use smsctl::warehouse::Warehouse;

const DAY_MS: i64 = 24 * 3600 * 1000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: median {:.1} ms, max {:.1} ms over {} runs",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Count {
    n: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let messages = env_u64("BENCH_MESSAGES", 17_000_000);
    let database =
        std::env::var("BENCH_DATABASE").unwrap_or_else(|_| format!("smsctl_bench_{messages}"));
    let settings = ClickHouseSettings {
        url: url.clone(),
        database: database.clone(),
        ..ClickHouseSettings::default()
    };
    let warehouse = Warehouse::from_client(settings.client(), &url, &database);

    // Six months of history, generated once per database.
    let today = sms_core::events::now_millis() / DAY_MS * DAY_MS;
    let plan = HistoryPlan {
        start_ms: today - 183 * DAY_MS,
        span_ms: 183 * DAY_MS,
        messages,
    };
    settings
        .server_client()
        .query(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
        .execute()
        .await?;
    analytics::schema::migrate(&settings, 13).await?;
    let stored: Vec<Count> = warehouse
        .fetch("bench", "SELECT count() AS n FROM sms_messages")
        .await?;
    if stored[0].n == 0 {
        let started = Instant::now();
        generate(&warehouse, &settings, &plan, |done| {
            eprintln!("generated {done} messages")
        })
        .await?;
        println!(
            "generated {messages} messages in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let events: Vec<Count> = warehouse
        .fetch("bench", "SELECT count() AS n FROM sms_events")
        .await?;
    println!(
        "history: {messages} messages, {} events, {} phone numbers, 183 days",
        events[0].n,
        plan.phones()
    );

    // Trace by message id.
    let mut samples = Vec::new();
    for i in 0..20u64 {
        let n = (i * 7_919_993) % messages;
        let ids: Vec<String> = warehouse
            .fetch("bench", &format!("SELECT lower(hex(MD5('message-{n}')))"))
            .await?;
        let started = Instant::now();
        let found = trace(&warehouse, TraceTarget::Messages(ids)).await?;
        samples.push(started.elapsed());
        assert_eq!(found.messages.len(), 1, "message {n} found");
    }
    summary("trace by message id", samples);

    // Trace by phone number over the six months.
    let mut samples = Vec::new();
    let mut found_messages = 0;
    for i in 0..20u64 {
        let phone = plan.phone_of(i * 104_729);
        let started = Instant::now();
        let found = trace(
            &warehouse,
            TraceTarget::Phone {
                phone,
                from: plan.start_ms,
                to: plan.start_ms + plan.span_ms,
            },
        )
        .await?;
        samples.push(started.elapsed());
        found_messages += found.messages.len();
    }
    summary("trace by phone over 183 days", samples);
    println!(
        "  ({:.1} messages per phone on average)",
        found_messages as f64 / 20.0
    );

    // Replay: a window of statuses to a file, decoded, and to a topic, as bytes.
    let records = env_u64("BENCH_REPLAY_RECORDS", 300_000);
    let mut kafka = sms_core::kafka::KafkaSettings::new(bootstrap);
    kafka.topic_prefix = format!("smsctl-bench-{}.", std::process::id());
    let topics = kafka.topics();
    sms_core::kafka::create_topics(&kafka.admin()?, &topics.specs(6), 1).await?;
    let producer: ThreadedProducer<DefaultProducerContext> = kafka
        .producer_config("bench")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .create()?;
    let codec = sms_core::avro::AvroCodec::single_object();
    let t0 = sms_core::events::now_millis() - DAY_MS;
    for i in 0..records {
        let phone = format!("86130{:08}", i % 50_000);
        let status = sms_core::events::FinalStatus {
            message_id: format!("00000000-0000-4000-8000-{i:012x}"),
            request_id: format!("req-{i}"),
            phone: phone.clone(),
            kind: sms_core::events::MessageKind::Notice,
            status: sms_core::events::FinalState::Delivered,
            failure_category: None,
            error_code: None,
            refusal_reason: None,
            billed_segments: 1,
            segments_delivered: 1,
            accepted_at: t0,
            submitted_at: Some(t0 + 20),
            gateway_response_at: Some(t0 + 60),
            report_at: Some(t0 + 2_000),
            decided_at: t0 + 2_001,
            within_seven_seconds: true,
        };
        let payload = codec.encode(&status)?;
        let mut record = BaseRecord::to(&topics.status)
            .key(&phone)
            .payload(&payload)
            .timestamp(t0 + i as i64);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let window = ReplayWindow {
        topic: topics.status.clone(),
        from: t0,
        to: t0 + records as i64,
        phone: None,
    };
    let started = Instant::now();
    let done = replay(
        &kafka,
        window.clone(),
        ReplayTarget::File("/dev/null".into()),
        Box::new(Silent),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "replay to a JSON-lines file: {} records in {seconds:.2} s = {:.0} records/s",
        done.read,
        done.read as f64 / seconds
    );
    let started = Instant::now();
    let done = replay(
        &kafka,
        window,
        ReplayTarget::Topic(topics.dlq.clone()),
        Box::new(Silent),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "replay to a topic: {} records in {seconds:.2} s = {:.0} records/s",
        done.read,
        done.read as f64 / seconds
    );
    let admin = kafka.admin()?;
    let names = [topics.status.as_str(), topics.dlq.as_str()];
    let _ = admin
        .delete_topics(&names, &rdkafka::admin::AdminOptions::new())
        .await;
    Ok(())
}
