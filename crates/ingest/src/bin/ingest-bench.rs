//! Throughput benchmark: the batch API of an in-process ingest against the local Kafka, next to Kafka's own producer benchmark with the same record size and acks=all.
//!
//! Run from the repository root, with the local services up:
//!
//! ```text
//! cargo run --release -p ingest --bin ingest-bench -- --messages 200000 --batch 500 --clients 8
//! ```
//!
//! It creates its own topics (a unique prefix), starts ingest on a free
//! port with one bearer-token client, sends pre-built batches from
//! `--clients` concurrent HTTP clients, and reports the accepted rate and the
//! latency of the batch calls. Then it runs
//! `org.apache.kafka.tools.ProducerPerformance` from `deploy/kafka/dist/libs`
//! for the same number of records of the Avro record size, and prints the
//! ratio of the two rates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ingest::auth::token_hash;
use ingest::config::ClientSettings;
use ingest::{Config, Ingest};
use sms_core::events::{MessageKind, RequestSource, SmsRequest};
use sms_core::kafka::{create_topics, KafkaSettings, Topics};

#[derive(Parser)]
struct Args {
    /// Kafka bootstrap address.
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Messages to send through the batch API.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Messages per batch call.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Where Kafka's jars are.
    #[arg(long, default_value = "deploy/kafka/dist/libs")]
    kafka_libs: String,
    /// Skip Kafka's own producer benchmark.
    #[arg(long)]
    skip_kafka_perf: bool,
}

const TOKEN: &str = "bench-token";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let prefix = format!(
        "bench_{}_{}.",
        std::process::id(),
        sms_core::events::now_millis()
    );
    let mut kafka = KafkaSettings::new(args.bootstrap.clone());
    kafka.topic_prefix = prefix.clone();
    let admin = kafka.admin()?;
    create_topics(
        &admin,
        &Topics::with_prefix(&prefix).specs(args.partitions),
        1,
    )
    .await?;

    let mut config = Config::from_toml("", Vec::new())?;
    config.listen = "127.0.0.1:0".parse()?;
    config.kafka = kafka.clone();
    config.bridge.enabled = false;
    config.clients = vec![ClientSettings {
        id: "bench".into(),
        secret_env: None,
        secret_file: None,
        bearer_sha256: vec![token_hash(TOKEN)],
        rate_per_second: 10_000_000,
        burst: 10_000_000,
    }];
    let service = Ingest::start(config).await?;
    let url = format!("http://{}/v1/messages/batch", service.local_addr());

    // Bodies are built before the clock starts.
    let bodies: Vec<String> = (0..args.messages.div_ceil(args.batch))
        .map(|b| {
            let messages: Vec<_> = (b * args.batch..((b + 1) * args.batch).min(args.messages))
                .map(|n| {
                    serde_json::json!({
                        "request_id": format!("bench-{n}"),
                        "phone": format!("130{:08}", n % 100_000_000),
                        "kind": if n % 4 == 0 { "VERIFICATION_CODE" } else { "NOTICE" },
                        "text": format!("您的验证码是 {:06}，5分钟内有效，请勿告诉他人。", n % 1_000_000),
                    })
                })
                .collect();
            serde_json::json!({ "messages": messages }).to_string()
        })
        .collect();
    let bodies = Arc::new(bodies);

    // A short warm-up connects the producer.
    let http = reqwest::Client::new();
    let warm = serde_json::json!({"messages": [{"request_id": "warm", "phone": "13000000000", "kind": "NOTICE", "text": "warm up"}]});
    http.post(&url)
        .bearer_auth(TOKEN)
        .json(&warm)
        .send()
        .await?;

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.clients {
        let (bodies, next, http, url) = (bodies.clone(), next.clone(), http.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut accepted = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = response.status();
                let answer: serde_json::Value = response.json().await?;
                latencies.push(sent.elapsed());
                if !status.is_success() {
                    bail!("batch refused: {status} {answer}");
                }
                accepted += answer["accepted"].as_u64().unwrap_or(0) as usize;
            }
            Ok::<_, anyhow::Error>((accepted, latencies))
        }));
    }
    let mut accepted = 0;
    let mut latencies = Vec::new();
    for worker in workers {
        let (a, l) = worker.await??;
        accepted += a;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    service.stop().await;

    latencies.sort();
    let percentile = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    let rate = accepted as f64 / elapsed.as_secs_f64();
    println!(
        "ingest batch API: {accepted} of {} messages accepted in {:.2} s",
        args.messages,
        elapsed.as_secs_f64()
    );
    println!(
        "  rate {rate:.0} messages/s; batch {} x {} clients",
        args.batch, args.clients
    );
    println!(
        "  batch call latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(0.50)),
        ms(percentile(0.99)),
        ms(percentile(1.0))
    );

    let record_size = sample_record_size()?;
    println!("  Avro record size {record_size} bytes");
    if args.skip_kafka_perf {
        return Ok(());
    }
    let perf_topic = format!("{prefix}perf");
    let spec = sms_core::kafka::TopicSpec {
        name: perf_topic.clone(),
        partitions: args.partitions,
        config: Vec::new(),
    };
    create_topics(&admin, &[spec], 1).await?;
    let command = format!(
        "java -cp '{}/*' org.apache.kafka.tools.ProducerPerformance --topic {perf_topic} --num-records {} --record-size {record_size} --throughput -1 --producer-props bootstrap.servers={} acks=all",
        args.kafka_libs, args.messages, args.bootstrap
    );
    println!("kafka producer benchmark: {command}");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .output()
        .context("running ProducerPerformance")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(summary) = text.lines().rev().find(|l| l.contains("records sent")) else {
        bail!(
            "no summary from ProducerPerformance: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    println!("  {summary}");
    let kafka_rate: f64 = summary
        .split(',')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .context("reading the records/sec figure")?;
    println!("ratio ingest / kafka producer: {:.2}", rate / kafka_rate);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sample_record_size() -> anyhow::Result<usize> {
    let request = SmsRequest {
        message_id: uuid::Uuid::new_v4().to_string(),
        request_id: "bench-123456".into(),
        client_id: "bench".into(),
        phone: "8613012345678".into(),
        kind: MessageKind::Notice,
        text: "【交管12123】您的验证码是 123456，5分钟内有效，请勿告诉他人。".into(),
        template_id: None,
        sp_extension: None,
        source: RequestSource::Http,
        accepted_at: sms_core::events::now_millis(),
        expires_at: None,
        scheduled_at: None,
        attempt: 0,
        not_before: None,
    };
    Ok(sms_core::avro::AvroCodec::single_object()
        .encode(&request)?
        .len())
}
