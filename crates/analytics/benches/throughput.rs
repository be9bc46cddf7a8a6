//! Throughput of the sink against the local Kafka and ClickHouse, next to ClickHouse's own bulk insert of the same rows, and the speed of the monthly figures.
//!
//! Run with the local services up:
//!
//! ```text
//! eval "$(deploy/local-services.sh env)"
//! cargo bench -p analytics --bench throughput
//! ```
//!
//! `BENCH_EVENTS` (default 1000000) sets how many final statuses go through
//! the sink; `BENCH_MONTH` (default 3000000) how many messages the monthly
//! figures are computed over; `BENCH_COMPRESSION=lz4` sends inserts as LZ4
//! blocks (default: plain, as deployed on one machine). Each part uses its
//! own topics and database.

use std::time::{Duration, Instant};

use analytics::config::InsertCompression;
use analytics::exporter::Health;
use analytics::rows::{final_status_rows, EventRow, SourcePosition};
use analytics::store::EventStore;
use analytics::{schema, AnalyticsConfig, Sink};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sms_core::avro::AvroCodec;
use sms_core::events::{now_millis, FailureCategory, FinalState, FinalStatus, MessageKind};
use tokio_util::sync::CancellationToken;

// The allocator the `analytics` binary runs with, so that the sink measured
// here is the one deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn status(n: usize, now: i64) -> FinalStatus {
    let accepted_at = now - 10_000 + (n % 5_000) as i64;
    let delivered = n % 100 != 0;
    FinalStatus {
        message_id: format!("00000000-0000-5000-8000-{n:012}"),
        request_id: format!("req-{n}"),
        phone: format!("86130{:08}", n % 100_000_000),
        kind: MessageKind::ALL[n % 3],
        status: if delivered {
            FinalState::Delivered
        } else {
            FinalState::Failed
        },
        failure_category: (!delivered).then_some(FailureCategory::PoweredOff),
        error_code: (!delivered).then_some(25),
        refusal_reason: None,
        billed_segments: (n % 2 + 1) as i32,
        segments_delivered: if delivered { (n % 2 + 1) as i32 } else { 0 },
        accepted_at,
        submitted_at: Some(accepted_at + 80),
        gateway_response_at: Some(accepted_at + 120),
        report_at: Some(accepted_at + 1_500 + (n % 7_000) as i64),
        decided_at: now,
        within_seven_seconds: n % 7_000 <= 5_500,
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn database(label: &str) -> AnalyticsConfig {
    let (_, database) = sms_harness::clickhouse_for_test(label)
        .await
        .expect("a database");
    let services = sms_harness::services().await.expect("services");
    let mut config = AnalyticsConfig::default();
    config.clickhouse.url = services.clickhouse_url.clone();
    config.clickhouse.database = database;
    // As deploy/config/analytics.toml sets it for an engine on the same
    // machine; `BENCH_COMPRESSION=lz4` measures the compressed path.
    if std::env::var("BENCH_COMPRESSION").as_deref() != Ok("lz4") {
        config.clickhouse.compression = InsertCompression::None;
    }
    schema::migrate(&config.clickhouse, config.ttl_months)
        .await
        .expect("schema applies");
    config
}

async fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    client.query(sql).fetch_one::<u64>().await.unwrap_or(0)
}

/// The sink from Kafka: produces `events` final statuses, then times the
/// sink from its first stored row to the last. Returns the rate and the
/// topic the statuses were read from.
async fn sink_rate(events: usize) -> (f64, String) {
    let kafka = sms_harness::kafka_for_test("bench_sink", 4)
        .await
        .expect("topics");
    let mut config = database("bench_sink").await;
    config.kafka = kafka.clone();
    config.group_id = sms_harness::unique_name("bench");
    config.batch_max_events = 100_000;
    config.batch_max_ms = 1_000;
    let topic = kafka.topics().status;

    let producer: FutureProducer = kafka
        .producer_config("bench")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let codec = AvroCodec::single_object();
    let now = now_millis();
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for n in 0..events {
        let record = status(n, now);
        let payload = codec.encode(&record).expect("encodes");
        let key = record.phone.clone();
        let producer = producer.clone();
        let topic = topic.clone();
        pending.push(async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(60),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        });
        if pending.len() >= 50_000 {
            drain(&mut pending).await;
        }
    }
    drain(&mut pending).await;
    println!(
        "produced {events} final statuses to Kafka in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let client = config.clickhouse.client();
    let shutdown = CancellationToken::new();
    let sink = Sink::new(&config, Health::default()).expect("sink");
    let running = tokio::spawn(sink.run(shutdown.clone()));
    let (mut first, mut first_count) = (None, 0);
    let target = events as u64;
    loop {
        let n = count(&client, "SELECT count() FROM sms_events").await;
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
            first_count = n;
        }
        if n >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finished = Instant::now();
    shutdown.cancel();
    let _ = running.await;
    let Some(first) = first else {
        return (0.0, topic);
    };
    let seconds = finished.duration_since(first).as_secs_f64();
    let rate = (target - first_count) as f64 / seconds;
    println!(
        "sink: {} events in {seconds:.2} s after the first batch landed ({first_count} in it): {rate:.0} events/s",
        target - first_count
    );
    (rate, topic)
}

async fn drain<F>(pending: &mut futures::stream::FuturesUnordered<F>)
where
    F: std::future::Future<Output = Result<(), rdkafka::error::KafkaError>>,
{
    use futures::StreamExt;
    while let Some(result) = pending.next().await {
        result.expect("kafka acknowledged");
    }
}

fn rows(range: std::ops::Range<usize>, now: i64, topic: &str) -> Vec<EventRow> {
    range
        .flat_map(|n| {
            final_status_rows(
                &status(n, now),
                SourcePosition {
                    topic,
                    partition: (n % 4) as i32,
                    offset: n as i64,
                },
            )
        })
        .collect()
}

/// ClickHouse's own bulk insert of the same rows: RowBinary straight from
/// memory, 100000 rows a statement, no Kafka and no decoding. `topic` is
/// the one the sink read, so that the rows are byte for byte the sink's.
async fn bulk_rate(events: usize, topic: &str) -> f64 {
    let config = database("bench_bulk").await;
    let store = EventStore::new(config.clickhouse.client());
    let now = now_millis();
    let chunks: Vec<Vec<EventRow>> = (0..events)
        .step_by(100_000)
        .map(|start| rows(start..(start + 100_000).min(events), now, topic))
        .collect();
    let started = Instant::now();
    for (i, chunk) in chunks.iter().enumerate() {
        store
            .insert(chunk, &format!("bulk-{i}"))
            .await
            .expect("bulk insert");
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = events as f64 / seconds;
    println!("bulk RowBinary insert: {events} rows in {seconds:.2} s: {rate:.0} rows/s");
    rate
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct MonthlyFigures {
    volume: u64,
    billed: u64,
    delivered: u64,
    timely: u64,
    quantiles: Vec<f64>,
}

/// Fills a month with `messages` final statuses and times the monthly figures.
async fn monthly_report(messages: usize) {
    let config = database("bench_month").await;
    let client = config.clickhouse.client();
    let store = EventStore::new(client.clone());
    let now = now_millis();
    let started = Instant::now();
    for start in (0..messages).step_by(200_000) {
        let chunk = rows(start..(start + 200_000).min(messages), now, "sms.status");
        store
            .insert(&chunk, &format!("month-{start}"))
            .await
            .expect("insert");
    }
    println!(
        "loaded {messages} final statuses in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let sql = "SELECT
            sum(messages) AS volume, sum(billed_segments) AS billed,
            sum(delivered) AS delivered, sum(within_seven_seconds) AS timely,
            arrayMap(q -> toFloat64(q), quantilesTDigestMerge(0.5, 0.9, 0.98, 0.99)(latency_ms)) AS quantiles
        FROM sms_monthly
        WHERE month = toStartOfMonth(toDate(now(), 'Asia/Shanghai'))";
    let by_cause = "SELECT failure_category, error_code, sum(failed)
        FROM sms_monthly
        WHERE month = toStartOfMonth(toDate(now(), 'Asia/Shanghai')) AND failed > 0
        GROUP BY failure_category, error_code ORDER BY 3 DESC";
    let started = Instant::now();
    let MonthlyFigures {
        volume,
        billed,
        delivered,
        timely,
        quantiles,
    } = client
        .query(sql)
        .fetch_one()
        .await
        .expect("monthly figures");
    let causes: Vec<(String, String, u64)> = client
        .query(by_cause)
        .fetch_all()
        .await
        .expect("failure causes");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "monthly figures over {volume} messages in {:.0} ms: billed {billed} segments ({:.2} yuan), \
         success {:.2}%, within 7 s {:.2}%, latency p50/p90/p98/p99 {:?} ms, {} failure causes",
        seconds * 1000.0,
        billed as f64 * 0.041,
        delivered as f64 * 100.0 / volume.max(1) as f64,
        timely as f64 * 100.0 / volume.max(1) as f64,
        quantiles,
        causes.len()
    );
}

#[tokio::main]
async fn main() {
    let events = env_count("BENCH_EVENTS", 1_000_000);
    let month = env_count("BENCH_MONTH", 3_000_000);
    let (sink, topic) = sink_rate(events).await;
    let bulk = bulk_rate(events, &topic).await;
    println!(
        "sink / bulk insert: {:.0}% (the goal: at least 50%, and 200000 events/s)",
        sink * 100.0 / bulk
    );
    monthly_report(month).await;
}
