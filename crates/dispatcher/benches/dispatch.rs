//! Throughput and verification-code latency against the in-process simulator: `cargo bench -p dispatcher --bench dispatch`.
//!
//! Writes a backlog of notices to the local Kafka (`KAFKA_BOOTSTRAP`, from
//! `deploy/local-services.sh env`), starts the simulator with no delay and
//! no rate limit and the dispatcher in this process, writes a verification
//! code every 10 ms while the backlog drains, and prints the rate at which
//! messages reached the gateway and the codes' Kafka-to-gateway time.
//! `BENCH_NOTICES` sets the backlog (default 100000).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher::config::Config;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sms_core::avro::AvroCodec;
use sms_core::events::{now_millis, DispatchEvent, MessageKind, RequestSource, SmsRequest};
use smsc_sim::{SimConfig, Simulator};
use tokio::sync::watch;

fn request(n: u64, kind: MessageKind) -> SmsRequest {
    let now = now_millis();
    SmsRequest {
        message_id: uuid::Uuid::new_v4().to_string(),
        request_id: format!("bench-{n}"),
        client_id: "bench".into(),
        phone: format!("86186{:08}", n % 100_000_000),
        kind,
        text: format!("【交管12123】您有一条交通违法记录待处理，编号 {n}"),
        template_id: None,
        sp_extension: None,
        source: RequestSource::Http,
        accepted_at: now,
        expires_at: None,
        scheduled_at: None,
        attempt: 0,
        not_before: None,
    }
}

async fn produce(producer: &FutureProducer, codec: &AvroCodec, topic: &str, request: &SmsRequest) {
    let payload = codec.encode(request).expect("encodes");
    let _ = producer
        .send(
            FutureRecord::to(topic)
                .key(&request.phone)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await;
}

#[tokio::main]
async fn main() {
    let notices: u64 = std::env::var("BENCH_NOTICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let kafka = sms_harness::kafka_for_test("dispatcher_bench", 6)
        .await
        .expect("local kafka (eval \"$(deploy/local-services.sh env)\")");
    let topics = kafka.topics();
    let codec = AvroCodec::single_object();
    let producer: FutureProducer = kafka.producer_config("bench").create().expect("producer");

    let started = Instant::now();
    for chunk in (0..notices).collect::<Vec<_>>().chunks(5_000) {
        let sends = chunk.iter().map(|n| {
            let request = request(*n, MessageKind::Notice);
            let producer = producer.clone();
            let codec = codec.clone();
            let topic = topics.requests_notify.clone();
            async move { produce(&producer, &codec, &topic, &request).await }
        });
        futures::future::join_all(sends).await;
    }
    println!(
        "backlog: {notices} notices written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let sim = Simulator::start(SimConfig {
        submit_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        sp: None,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let mut config = Config {
        kafka: kafka.clone(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.gateway.addr = sim.submit_addr.to_string();
    config.gateway.connections = 8;
    config.gateway.window = 128;
    config.policy.require_subscription = false;
    config.policy.frequency_caps = BTreeMap::new();
    config.consumer.commit_interval_ms = 20;
    let (stop, shutdown) = watch::channel(false);
    let dispatcher = tokio::spawn(dispatcher::consumer::run(
        Arc::new(config),
        "secret".into(),
        codec.clone(),
        shutdown,
    ));

    // Verification codes every 10 ms while the backlog drains, from the
    // moment the dispatcher has joined its group and started sending (codes
    // written during its start-up would measure the start-up instead).
    while sim.submits_accepted() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let codes = {
        let producer = producer.clone();
        let codec = codec.clone();
        let topic = topics.requests_otp.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut n = 1_000_000_000u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                n += 1;
                let code = request(n, MessageKind::VerificationCode);
                produce(&producer, &codec, &topic, &code).await;
                ids.push(code.message_id);
                if ids.len() >= 2000 {
                    return ids;
                }
            }
        })
    };

    let mut first: Option<Instant> = None;
    let mut last_count = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let accepted = sim.submits_accepted();
        if accepted > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        last_count = last_count.max(accepted);
        if accepted >= notices || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "throughput: {last_count} messages to the gateway in {elapsed:.2} s = {:.0} per second",
        last_count as f64 / elapsed.max(0.001)
    );
    codes.abort();
    let _ = stop.send(true);
    let _ = dispatcher.await;

    // The codes' time from Kafka (accepted_at, set when written) to the gateway.
    let reader: StreamConsumer = kafka
        .consumer_config(
            "bench-reader",
            &format!("bench-reader-{}", uuid::Uuid::new_v4()),
        )
        .create()
        .expect("reader");
    reader.subscribe(&[&topics.dispatch]).expect("subscribe");
    let mut latencies = Vec::new();
    let mut seen = 0u64;
    while let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await {
        seen += 1;
        if let Ok(event) = codec
            .decode::<DispatchEvent>(message.payload().unwrap_or_default())
            .await
        {
            if event.kind == MessageKind::VerificationCode {
                if let Some(segment) = event.segments.first() {
                    latencies.push(segment.submitted_at - event.accepted_at);
                }
            }
        }
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "verification codes during the backlog: {} (of {seen} events); kafka to gateway p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies.last().copied().unwrap_or(-1)
    );
    sim.shutdown().await;
}
