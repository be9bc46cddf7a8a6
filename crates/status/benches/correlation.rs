//! Correlation throughput against the local Kafka, and memory per pending message.
//!
//! Writes N dispatch events and N delivered reports to fresh topics, runs the
//! correlation consumer, and times the final statuses from the first to the
//! last; then fills a correlator with pending messages and reads the growth
//! of the process's resident memory. Needs KAFKA_BOOTSTRAP (make bench sets it).
//!
//! `cargo bench -p status --bench correlation` (N from BENCH_REPORTS, default 200000)

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sms_core::avro::AvroCodec;
use sms_core::events::*;
use status::config::CorrelationSettings;
use status::correlate::{Correlator, Limits, Position};

fn event(n: u32, now: Millis) -> DispatchEvent {
    DispatchEvent {
        message_id: format!("00000000-0000-5000-8000-{n:012}"),
        request_id: format!("req-{n}"),
        phone: format!("86186{:08}", n % 5_000_000),
        kind: MessageKind::Notice,
        outcome: DispatchOutcome::Submitted,
        reason: None,
        detail: None,
        gateway_result: None,
        segments: vec![SubmittedSegment {
            index: 1,
            sequence: SequenceTriple::new(3_075_512_345, 1_203_190_405, n),
            submitted_at: now,
            response_at: Some(now + 5),
            result: 0,
        }],
        billed_segments: 1,
        attempt: 0,
        accepted_at: now - 10,
        dispatched_at: now + 5,
        not_before: None,
    }
}

fn report(n: u32, now: Millis) -> CarrierReport {
    CarrierReport {
        submit_sequence: SequenceTriple::new(3_075_512_345, 1_203_190_405, n),
        report_sequence: SequenceTriple::new(107_551, 1_203_190_406, n),
        phone: format!("86186{:08}", n % 5_000_000),
        report_type: 0,
        state: ReportState::Delivered,
        error_code: 0,
        received_at: now + 800,
    }
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn memory_per_pending(count: u32) -> f64 {
    let now = now_millis();
    let before = resident_bytes();
    let mut correlator = Correlator::new(Limits::default());
    for n in 0..count {
        let at = Position {
            topic: "sms.dispatch".into(),
            partition: (n % 6) as i32,
            offset: i64::from(n),
        };
        correlator.on_dispatch(event(n, now), at, now);
    }
    let after = resident_bytes();
    assert_eq!(correlator.pending(), count as usize);
    (after.saturating_sub(before)) as f64 / f64::from(count)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: u32 = std::env::var("BENCH_REPORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let kafka = sms_harness::kafka_for_test("bench_status", 6)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let topics = kafka.topics();
    let codec = AvroCodec::single_object();
    let producer: FutureProducer = kafka.producer_config("bench").create()?;

    let now = now_millis();
    for n in 0..count {
        let e = event(n, now);
        let r = report(n, now);
        producer
            .send_result(
                FutureRecord::to(&topics.dispatch)
                    .key(&e.phone)
                    .payload(&codec.encode(&e)?),
            )
            .map_err(|(e, _)| e)?;
        loop {
            match producer.send_result(
                FutureRecord::to(&topics.reports)
                    .key(&r.phone)
                    .payload(&codec.encode(&r)?),
            ) {
                Ok(_) => break,
                Err((_, _)) => producer.poll(Duration::from_millis(10)),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    eprintln!("wrote {count} dispatch events and {count} reports");

    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let settings = CorrelationSettings {
        max_batch: 20_000,
        commit_interval_ms: 200,
        ..CorrelationSettings::default()
    };
    let started = Instant::now();
    let run = tokio::spawn(status::consumer::run(
        kafka.clone(),
        settings,
        codec,
        shutdown,
    ));

    // Time from the first final status to the last.
    let (first, _) =
        sms_harness::read_topic::<FinalStatus>(&kafka, &topics.status, 1, Duration::from_secs(120))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let first_at = Instant::now();
    anyhow::ensure!(!first.is_empty(), "no final status appeared");
    let (all, _) = sms_harness::read_topic::<FinalStatus>(
        &kafka,
        &topics.status,
        count as usize,
        Duration::from_secs(600),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let done_at = Instant::now();
    let _ = stop.send(true);
    let _ = run.await;
    anyhow::ensure!(
        all.len() == count as usize,
        "only {} of {count} final statuses",
        all.len()
    );

    let steady = done_at.duration_since(first_at).as_secs_f64().max(1e-3);
    let total = done_at.duration_since(started).as_secs_f64();
    let per_pending = memory_per_pending(100_000);
    println!("status correlation: {count} reports joined to {count} dispatch events");
    println!(
        "  throughput        {:.0} reports/s (first to last final status, {steady:.2} s)",
        f64::from(count) / steady
    );
    println!(
        "  including start   {:.0} reports/s ({total:.2} s, group join and rebuild included)",
        f64::from(count) / total
    );
    println!("  memory            {per_pending:.0} bytes per pending message (resident growth over 100000 pending)");
    Ok(())
}
