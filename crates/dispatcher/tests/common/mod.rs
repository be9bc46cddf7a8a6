//! Shared pieces of the dispatcher's integration tests: a simulator, a test's own topics, requests, and a reader of what the dispatcher wrote.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatcher::config::Config;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sms_core::avro::{AvroCodec, AvroRecord};
use sms_core::events::{
    now_millis, DeadLetter, DispatchEvent, DispatchOutcome, MessageKind, RequestSource, SmsRequest,
};
use sms_core::kafka::KafkaSettings;
use smsc_sim::{SimConfig, Simulator, SimulatorHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const SIGNATURE: &str = "【交管12123】";

/// A simulator on free ports, with `tweak` applied to its configuration.
pub async fn simulator(tweak: impl FnOnce(&mut SimConfig)) -> SimulatorHandle {
    let mut config = SimConfig {
        submit_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        sp: None,
        ..SimConfig::default()
    };
    tweak(&mut config);
    Simulator::start(config).await.expect("simulator starts")
}

/// A dispatcher configuration for the test's topics and simulator: no
/// subscription check, short back-offs, metrics on a free port.
pub fn config(kafka: &KafkaSettings, sim: &SimulatorHandle) -> Config {
    let mut config = Config {
        kafka: kafka.clone(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.gateway.addr = sim.submit_addr.to_string();
    config.gateway.response_timeout_ms = 2_000;
    config.policy.require_subscription = false;
    config.retry.backoff_ms = 100;
    config.retry.backoff_max_ms = 400;
    config.consumer.subscriptions_wait_ms = 5_000;
    config.consumer.drain_timeout_ms = 5_000;
    config
}

/// A dispatcher running in this process until [`Running::stop`].
pub struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub fn start(config: Config) -> Running {
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(dispatcher::consumer::run(
        Arc::new(config),
        "secret".into(),
        AvroCodec::single_object(),
        shutdown,
    ));
    Running { stop, task }
}

impl Running {
    /// Asks it to stop and waits until it has let go.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("dispatcher stops in time")
            .expect("dispatcher task ends cleanly");
    }
}

/// A Unicom number made from `n`.
pub fn phone(n: u32) -> String {
    format!("86186{:08}", n)
}

/// The message id (a UUID) a test names `name`.
pub fn id(name: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

/// A valid request named `name` (its id is [`id`] of it).
pub fn request(name: &str, phone: &str, kind: MessageKind, body: &str) -> SmsRequest {
    let now = now_millis();
    SmsRequest {
        message_id: id(name),
        request_id: format!("req-{name}"),
        client_id: "test".into(),
        phone: phone.into(),
        kind,
        text: format!("{SIGNATURE}{body}"),
        template_id: None,
        sp_extension: None,
        source: RequestSource::Http,
        accepted_at: now,
        expires_at: Some(now + 3_600_000),
        scheduled_at: None,
        attempt: 0,
        not_before: None,
    }
}

pub fn producer(kafka: &KafkaSettings) -> FutureProducer {
    kafka.producer_config("test-producer").create().unwrap()
}

/// Writes raw bytes under `key`.
pub async fn produce_raw(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("record written");
}

/// Writes an Avro record under `key`.
pub async fn produce<T: AvroRecord>(producer: &FutureProducer, topic: &str, key: &str, record: &T) {
    let payload = AvroCodec::single_object().encode(record).unwrap();
    produce_raw(producer, topic, key, &payload).await;
}

/// Writes requests to the lane their kind belongs to.
pub async fn send_requests(kafka: &KafkaSettings, requests: &[SmsRequest]) {
    send_requests_with(&producer(kafka), kafka, requests).await;
}

/// Writes requests with a producer that is already connected, so that the
/// time a request waits starts when it is written, not when a producer is
/// made.
pub async fn send_requests_with(
    producer: &FutureProducer,
    kafka: &KafkaSettings,
    requests: &[SmsRequest],
) {
    let topics = kafka.topics();
    let sends = requests.iter().map(|r| {
        let topic = if r.kind == MessageKind::VerificationCode {
            topics.requests_otp.clone()
        } else {
            topics.requests_notify.clone()
        };
        let producer = producer.clone();
        let r = r.clone();
        async move { produce(&producer, &topic, &r.phone, &r).await }
    });
    futures::future::join_all(sends).await;
}

/// Everything committed to one topic, decoded, read in the background.
pub struct Collected<T> {
    records: Arc<Mutex<Vec<T>>>,
    task: JoinHandle<()>,
}

impl<T: AvroRecord + Clone + Send + 'static> Collected<T> {
    pub fn start(kafka: &KafkaSettings, topic: &str) -> Self {
        let consumer: StreamConsumer = kafka
            .consumer_config(
                "test-reader",
                &format!("test-reader-{}", uuid::Uuid::new_v4()),
            )
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let task = tokio::spawn(async move {
            let codec = AvroCodec::single_object();
            loop {
                let Ok(message) = consumer.recv().await else {
                    continue;
                };
                if let Ok(record) = codec
                    .decode::<T>(message.payload().unwrap_or_default())
                    .await
                {
                    sink.lock().unwrap().push(record);
                }
            }
        });
        Self { records, task }
    }

    pub fn snapshot(&self) -> Vec<T> {
        self.records.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was read, or panics after `limit`.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[T]) -> bool,
    ) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let records = self.snapshot();
            if done(&records) {
                return records;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; have {} records",
                records.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl<T> Drop for Collected<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type Dispatches = Collected<DispatchEvent>;
pub type DeadLetters = Collected<DeadLetter>;

/// The last event of each message id.
pub fn last_by_id(events: &[DispatchEvent]) -> HashMap<String, DispatchEvent> {
    let mut by_id = HashMap::new();
    for event in events {
        by_id.insert(event.message_id.clone(), event.clone());
    }
    by_id
}

/// How many events of each message id are final (not RETRYING).
pub fn finals(events: &[DispatchEvent]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in events
        .iter()
        .filter(|e| e.outcome != DispatchOutcome::Retrying)
    {
        *counts.entry(event.message_id.clone()).or_default() += 1;
    }
    counts
}

/// Whether every id in `ids` has a final event.
pub fn all_final(events: &[DispatchEvent], ids: &[String]) -> bool {
    let finals = finals(events);
    ids.iter().all(|id| finals.contains_key(id))
}
