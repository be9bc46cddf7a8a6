//! The Kafka security settings against the real local broker's SASL listeners: SCRAM-SHA-512 over plain TCP and over TLS, a wrong password, an untrusted certificate.
//!
//! The addresses and the test user come from `deploy/local-services.sh env`
//! (`KAFKA_SASL_BOOTSTRAP`, `KAFKA_SASL_SSL_BOOTSTRAP`, `KAFKA_SASL_USERNAME`,
//! `KAFKA_SASL_PASSWORD`, `KAFKA_SSL_CA_FILE`); a test fails, naming the
//! variable, when one is missing.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use sms_core::kafka::{create_topics, KafkaSettings, TopicSpec};
use sms_core::CoreError;

const TIMEOUT: Duration = Duration::from_secs(20);

/// How long a probe that is meant to be refused may try.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Service {
    kafka: KafkaSettings,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the local broker and export its addresses with \
             `deploy/local-services.sh up && eval \"$(deploy/local-services.sh env)\"`"
        )
    })
}

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Writes `password` to a file of its own, as a mounted secret would be.
fn password_file(password: &str) -> PathBuf {
    let path = std::env::temp_dir().join(unique("kafka-sasl-password"));
    std::fs::write(&path, format!("{password}\n")).expect("writes the password file");
    path
}

/// Settings as a service would load them: a TOML file with the password in
/// a secret file, the protocol and address from environment overrides.
fn settings(
    bootstrap: &str,
    protocol: &str,
    password: &str,
    ca_file: Option<&str>,
) -> KafkaSettings {
    let mut text = format!(
        "[kafka]\ntopic_prefix = {:?}\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\n\
         username = {:?}\npassword = {{ file = {:?} }}\n",
        format!("{}.", unique("security")),
        required("KAFKA_SASL_USERNAME"),
        password_file(password),
    );
    if let Some(ca_file) = ca_file {
        text.push_str(&format!("[kafka.ssl]\nca_file = {ca_file:?}\n"));
    }
    let env = vec![
        ("SEC_KAFKA__BOOTSTRAP".to_string(), bootstrap.to_string()),
        (
            "SEC_KAFKA__SECURITY_PROTOCOL".to_string(),
            protocol.to_string(),
        ),
    ];
    let service: Service =
        sms_core::config::from_str(&text, "SEC_", &["kafka"], env).expect("settings load");
    service
        .kafka
        .check("kafka")
        .expect("settings are consistent");
    service.kafka
}

/// Creates a topic, writes one record and reads it back, all through the
/// secured listener.
async fn round_trip(kafka: &KafkaSettings) {
    let topic = format!("{}round-trip", kafka.topic_prefix);
    let admin = kafka.admin().expect("admin client");
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 1,
        config: Vec::new(),
    };
    let created = create_topics(&admin, &[spec], 1)
        .await
        .expect("topic created through the secured listener");
    assert_eq!(created, vec![topic.clone()]);

    let producer: FutureProducer = kafka
        .producer_config("security-test")
        .create()
        .expect("producer");
    let payload = unique("payload");
    producer
        .send(
            FutureRecord::to(&topic)
                .key("8618600000001")
                .payload(&payload),
            TIMEOUT,
        )
        .await
        .expect("record acknowledged");

    let consumer: BaseConsumer = kafka
        .consumer_config("security-test", &unique("security-group"))
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&assignment).expect("assigned");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let read = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no record read back within {TIMEOUT:?}"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => break message.payload().map(<[u8]>::to_vec),
            Some(Err(e)) => panic!("consumer failed: {e}"),
            None => continue,
        }
    };
    assert_eq!(read.as_deref(), Some(payload.as_bytes()));

    let options = rdkafka::admin::AdminOptions::new();
    admin
        .delete_topics(&[topic.as_str()], &options)
        .await
        .expect("topic deleted");
}

#[tokio::test]
async fn scram_over_sasl_plaintext_produces_and_consumes() {
    let kafka = settings(
        &required("KAFKA_SASL_BOOTSTRAP"),
        "sasl_plaintext",
        &required("KAFKA_SASL_PASSWORD"),
        None,
    );
    let probe = kafka.clone();
    let brokers = tokio::task::spawn_blocking(move || probe.probe(TIMEOUT))
        .await
        .expect("probe runs")
        .expect("the broker accepts the credentials");
    assert_eq!(brokers, 1);
    round_trip(&kafka).await;
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error() {
    let kafka = settings(
        &required("KAFKA_SASL_BOOTSTRAP"),
        "sasl_plaintext",
        "not-the-password",
        None,
    );
    let err = tokio::task::spawn_blocking(move || kafka.probe(REFUSED_WITHIN))
        .await
        .expect("probe runs")
        .expect_err("a wrong password is refused");
    let CoreError::KafkaAuthentication(reason) = &err else {
        panic!("expected an authentication error, got {err}");
    };
    assert!(
        reason.contains("SASL authentication error") && reason.contains("invalid credentials"),
        "{reason}"
    );
    assert!(!err.to_string().contains("not-the-password"), "{err}");
}

#[tokio::test]
async fn scram_over_tls_with_the_broker_ca_produces_and_consumes() {
    let ca_file = required("KAFKA_SSL_CA_FILE");
    let kafka = settings(
        &required("KAFKA_SASL_SSL_BOOTSTRAP"),
        "sasl_ssl",
        &required("KAFKA_SASL_PASSWORD"),
        Some(&ca_file),
    );
    let probe = kafka.clone();
    tokio::task::spawn_blocking(move || probe.probe(TIMEOUT))
        .await
        .expect("probe runs")
        .expect("tls handshake and credentials accepted");
    round_trip(&kafka).await;
}

#[tokio::test]
async fn an_untrusted_broker_certificate_is_refused() {
    // No ca_file: the system's CA store does not know the local broker's
    // self-signed certificate.
    let kafka = settings(
        &required("KAFKA_SASL_SSL_BOOTSTRAP"),
        "sasl_ssl",
        &required("KAFKA_SASL_PASSWORD"),
        None,
    );
    let err = tokio::task::spawn_blocking(move || kafka.probe(REFUSED_WITHIN))
        .await
        .expect("probe runs")
        .expect_err("an unknown certificate is refused");
    let CoreError::KafkaAuthentication(reason) = &err else {
        panic!("expected a tls error, got {err}");
    };
    assert!(reason.contains("certificate verify failed"), "{reason}");
}
