//! Shared set-up of the integration tests: a service on its own topics of the local Kafka, and a signing client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use ingest::auth::{self, token_hash};
use ingest::config::ClientSettings;
use ingest::{Config, Ingest};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sms_core::kafka::KafkaSettings;
use sms_harness::{kafka_for_test, unique_name};

pub const CLIENT: &str = "platform";
pub const SECRET: &str = "platform-hmac-secret-for-tests";
pub const TOKEN: &str = "platform-bearer-token";
pub const SLOW_TOKEN: &str = "slow-client-token";

pub struct TestIngest {
    pub service: Ingest,
    pub base: String,
    pub kafka: KafkaSettings,
    pub http: reqwest::Client,
    pub bridge_group: String,
}

/// A configuration for `kafka` with the test clients and a template.
pub fn config(kafka: KafkaSettings) -> Config {
    let secret_file = std::env::temp_dir().join(unique_name("ingest_secret"));
    std::fs::write(&secret_file, SECRET).expect("writes the secret file");
    let mut config = Config::from_toml("", Vec::new()).expect("default config");
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.kafka = kafka;
    config.bridge.group_id = unique_name("ingest_bridge");
    config.clients = vec![
        ClientSettings {
            id: CLIENT.into(),
            secret_env: None,
            secret_file: Some(secret_file),
            bearer_sha256: vec![token_hash(TOKEN)],
            rate_per_second: 100_000,
            burst: 100_000,
        },
        ClientSettings {
            id: "slow".into(),
            secret_env: None,
            secret_file: None,
            bearer_sha256: vec![token_hash(SLOW_TOKEN)],
            rate_per_second: 1,
            burst: 2,
        },
    ];
    config.templates = BTreeMap::from([(
        "inspection".to_string(),
        "您的车辆{plate}年检将于{date}到期，请及时办理。".to_string(),
    )]);
    config
}

pub async fn start(label: &str) -> TestIngest {
    let kafka = kafka_for_test(label, 3).await.expect("kafka for the test");
    start_with(config(kafka)).await
}

pub async fn start_with(config: Config) -> TestIngest {
    let kafka = config.kafka.clone();
    let bridge_group = config.bridge.group_id.clone();
    let service = Ingest::start(config).await.expect("ingest starts");
    let base = format!("http://{}", service.local_addr());
    TestIngest {
        service,
        base,
        kafka,
        http: reqwest::Client::new(),
        bridge_group,
    }
}

impl TestIngest {
    /// A request signed with the client's HMAC secret and a fresh nonce.
    pub async fn signed(&self, method: &str, path: &str, body: &str) -> reqwest::Response {
        let timestamp = sms_core::events::now_millis().to_string();
        self.signed_at(method, path, body, &timestamp, &unique_name("nonce"))
            .await
    }

    pub async fn signed_at(
        &self,
        method: &str,
        path: &str,
        body: &str,
        timestamp: &str,
        nonce: &str,
    ) -> reqwest::Response {
        let signature = auth::sign(
            SECRET.as_bytes(),
            method,
            path,
            timestamp,
            nonce,
            body.as_bytes(),
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header(auth::CLIENT_HEADER, CLIENT)
            .header(auth::TIMESTAMP_HEADER, timestamp)
            .header(auth::NONCE_HEADER, nonce)
            .header(auth::SIGNATURE_HEADER, signature)
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// A request with a bearer token.
    pub async fn bearer(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// A consumer reading `topic` from the beginning.
    pub fn consumer(&self, topic: &str) -> StreamConsumer {
        let consumer: StreamConsumer = self
            .kafka
            .consumer_config("ingest-test", &unique_name("reader"))
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribes");
        consumer
    }

    pub async fn produce(&self, topic: &str, key: &str, payload: &[u8]) {
        let producer: FutureProducer = self
            .kafka
            .producer_config("ingest-test")
            .create()
            .expect("producer");
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("acknowledged");
    }
}

/// Reads up to `count` records, giving up after `within`.
pub async fn read(consumer: &StreamConsumer, count: usize, within: Duration) -> Vec<OwnedMessage> {
    let mut out = Vec::new();
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < count {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(message))) => out.push(message.detach()),
            Ok(Some(Err(e))) => panic!("consumer error: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Decodes an `SmsRequest` record.
pub async fn request_of(message: &OwnedMessage) -> sms_core::events::SmsRequest {
    sms_core::avro::AvroCodec::single_object()
        .decode(message.payload().expect("payload"))
        .await
        .expect("decodes")
}

pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

pub fn notice(request_id: &str, phone: &str) -> serde_json::Value {
    serde_json::json!({
        "request_id": request_id,
        "phone": phone,
        "kind": "NOTICE",
        "text": "您的驾驶证将于下月到期，请及时换证。"
    })
}
