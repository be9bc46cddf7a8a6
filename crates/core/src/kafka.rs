//! Kafka client setup shared by every service: settings, topic catalogue, producer and consumer defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

use crate::error::CoreError;
use crate::secret::Secret;

/// Where the brokers are and how to talk to them.
///
/// Security is off by default (`security_protocol = "plaintext"`), as the
/// local broker runs. For a cluster that wants credentials:
///
/// ```toml
/// [kafka]
/// bootstrap = "kafka-1:9094,kafka-2:9094"
/// security_protocol = "sasl_ssl"
/// [kafka.sasl]
/// mechanism = "SCRAM-SHA-512"
/// username = "industry-sms"
/// password = { file = "/run/secrets/kafka-password" }
/// [kafka.ssl]
/// ca_file = "/etc/industry-sms/kafka-ca.pem"
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list. Default `127.0.0.1:9092`.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: String,
    /// Prefix put in front of every topic name, so several deployments (or
    /// tests) share one cluster. Default empty.
    #[serde(default)]
    pub topic_prefix: String,
    /// `plaintext`, `ssl` (TLS), `sasl_plaintext` (credentials, no TLS) or
    /// `sasl_ssl` (credentials over TLS). Default `plaintext`.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// Credentials, required by (and only allowed with) the `sasl_*`
    /// protocols. Default none.
    #[serde(default)]
    pub sasl: Option<SaslSettings>,
    /// TLS settings for the `ssl` and `sasl_ssl` protocols. Default: the
    /// system's CA store, host names checked, no client certificate.
    #[serde(default)]
    pub ssl: SslSettings,
    /// Extra librdkafka properties, e.g. `"socket.keepalive.enable" = "true"`.
    /// Applied last, so they override everything above. Values of keys that
    /// contain `password` or `secret` are never printed, but prefer the typed
    /// `sasl.password`, which can come from a file or the environment.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// How librdkafka connects to the brokers (`security.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// SASL credentials (`sasl.mechanisms`, `sasl.username`, `sasl.password`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSettings {
    /// `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN` (send PLAIN only over
    /// `sasl_ssl`). Default `SCRAM-SHA-512`.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// The SASL user name.
    pub username: String,
    /// The password: a literal, `{ env = "VARIABLE" }` or
    /// `{ file = "/path" }` (see [`crate::secret`]).
    pub password: Secret,
}

/// A SASL mechanism librdkafka implements with OpenSSL alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
        }
    }
}

/// TLS to the brokers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslSettings {
    /// PEM file of the CA(s) that signed the brokers' certificates
    /// (`ssl.ca.location`). Default: the system's CA store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one
    /// (`ssl.certificate.location`). Default none.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// PEM private key of the client certificate (`ssl.key.location`).
    /// Default none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Password of an encrypted `key_file` (`ssl.key.password`), a secret.
    /// Default none.
    #[serde(default)]
    pub key_password: Option<Secret>,
    /// Whether the broker's certificate must name the host connected to
    /// (`ssl.endpoint.identification.algorithm`). Default true.
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
}

fn default_true() -> bool {
    true
}

impl Default for SslSettings {
    fn default() -> Self {
        Self {
            ca_file: None,
            certificate_file: None,
            key_file: None,
            key_password: None,
            verify_hostname: true,
        }
    }
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".into()
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap: default_bootstrap(),
            topic_prefix: String::new(),
            security_protocol: SecurityProtocol::default(),
            sasl: None,
            ssl: SslSettings::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let secret = k.contains("password") || k.contains("secret");
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap", &self.bootstrap)
            .field("topic_prefix", &self.topic_prefix)
            .field("security_protocol", &self.security_protocol)
            .field("sasl", &self.sasl)
            .field("ssl", &self.ssl)
            .field("properties", &properties)
            .finish()
    }
}

impl KafkaSettings {
    /// Settings for `bootstrap` with no prefix and no extra properties.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            ..Self::default()
        }
    }

    /// Refuses combinations that cannot connect, naming the key under
    /// `section` (usually `kafka`): SASL credentials without a SASL
    /// protocol or the other way round, TLS files that do not exist, a key
    /// without its certificate.
    pub fn check(&self, section: &str) -> Result<(), CoreError> {
        let bad = |key: &str, message: String| {
            Err(CoreError::Config {
                key: format!("{section}.{key}"),
                message,
            })
        };
        let protocol = self.security_protocol.as_librdkafka();
        match (&self.sasl, self.security_protocol.uses_sasl()) {
            (None, true) => {
                return bad(
                    "sasl",
                    format!("security_protocol = \"{protocol}\" needs a [{section}.sasl] section with username and password"),
                )
            }
            (Some(_), false) => {
                return bad(
                    "security_protocol",
                    format!("is \"{protocol}\"; expected \"sasl_plaintext\" or \"sasl_ssl\" when [{section}.sasl] is given"),
                )
            }
            (Some(sasl), true) if sasl.username.trim().is_empty() => {
                return bad("sasl.username", "is empty; expected the SASL user name".into())
            }
            _ => {}
        }
        let files = [
            ("ssl.ca_file", &self.ssl.ca_file),
            ("ssl.certificate_file", &self.ssl.certificate_file),
            ("ssl.key_file", &self.ssl.key_file),
        ];
        for (key, file) in files {
            if let Some(path) = file {
                if !path.is_file() {
                    return bad(
                        key,
                        format!(
                            "= {:?}: no such file; expected a PEM file",
                            path.display().to_string()
                        ),
                    );
                }
            }
        }
        if self.ssl.key_file.is_some() != self.ssl.certificate_file.is_some() {
            return bad(
                "ssl.key_file",
                "expected both certificate_file and key_file, or neither".into(),
            );
        }
        Ok(())
    }

    /// The topic names under this deployment's prefix.
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", client_id);
        if self.security_protocol != SecurityProtocol::Plaintext {
            config.set("security.protocol", self.security_protocol.as_librdkafka());
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanisms", sasl.mechanism.as_librdkafka())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        if self.security_protocol.uses_tls() {
            let ssl = &self.ssl;
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(ca) = &ssl.ca_file {
                config.set("ssl.ca.location", path(ca));
            }
            if let Some(certificate) = &ssl.certificate_file {
                config.set("ssl.certificate.location", path(certificate));
            }
            if let Some(key) = &ssl.key_file {
                config.set("ssl.key.location", path(key));
            }
            if let Some(password) = &ssl.key_password {
                config.set("ssl.key.password", password.expose());
            }
            let algorithm = if ssl.verify_hostname { "https" } else { "none" };
            config.set("ssl.endpoint.identification.algorithm", algorithm);
        }
        config
    }

    fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// A producer that loses nothing it acknowledged: acks from every in-sync
    /// replica, idempotence (no duplicates from its own retries), and the
    /// Java client's partitioner so every writer of a phone-number key, Java
    /// or Rust, picks the same partition.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            // A record not acknowledged within this time fails, and its caller
            // answers 503 or retries; it is never reported as written.
            .set("message.timeout.ms", "30000");
        self.finish(config)
    }

    /// A transactional producer (consume-transform-produce with offsets in
    /// the same transaction).
    pub fn transactional_producer_config(
        &self,
        client_id: &str,
        transactional_id: &str,
    ) -> ClientConfig {
        let mut config = self.producer_config(client_id);
        config
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "60000");
        self.finish(config)
    }

    /// A consumer that commits only on purpose and sees only committed
    /// transactional records.
    pub fn consumer_config(&self, client_id: &str, group_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .set("partition.assignment.strategy", "cooperative-sticky");
        self.finish(config)
    }

    /// Connects and fetches the cluster's metadata, waiting at most
    /// `timeout`; returns the number of brokers. Wrong SASL credentials or a
    /// failed TLS handshake are [`CoreError::KafkaAuthentication`] with
    /// librdkafka's reason, rather than the time-out they otherwise look
    /// like. Blocking: call it from `spawn_blocking` in async code.
    pub fn probe(&self, timeout: Duration) -> Result<usize, CoreError> {
        let consumer: BaseConsumer<ProbeContext> = self
            .finish(self.base("industry-sms-probe"))
            .create_with_context(ProbeContext::default())
            .map_err(CoreError::KafkaSetup)?;
        let result = consumer.fetch_metadata(None, timeout);
        // librdkafka queues its error events; polling hands them to the
        // context, which keeps an authentication or TLS failure.
        if result.is_err() {
            for _ in 0..10 {
                if consumer.poll(Duration::from_millis(100)).is_none()
                    && consumer.context().refused.lock().is_ok_and(|r| r.is_some())
                {
                    break;
                }
            }
        }
        if let Some(reason) = consumer
            .context()
            .refused
            .lock()
            .ok()
            .and_then(|r| r.clone())
        {
            return Err(CoreError::KafkaAuthentication(reason));
        }
        result
            .map(|metadata| metadata.brokers().len())
            .map_err(CoreError::KafkaSetup)
    }

    /// An admin client for topic management.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, CoreError> {
        self.finish(self.base("industry-sms-admin"))
            .create()
            .map_err(CoreError::KafkaSetup)
    }
}

/// Keeps the first authentication or TLS error librdkafka reports.
#[derive(Default)]
struct ProbeContext {
    refused: Mutex<Option<String>>,
}

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        );
        if refused {
            if let Ok(mut first) = self.refused.lock() {
                first.get_or_insert_with(|| reason.to_string());
            }
        } else {
            tracing::debug!(error = %error, reason, "kafka client error while probing");
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// The names of the system's topics under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub requests_otp: String,
    pub requests_notify: String,
    pub requests_retry: String,
    pub dispatch: String,
    pub reports: String,
    pub mo: String,
    pub status: String,
    pub subscriptions: String,
    pub dlq: String,
    /// JSON send instructions published by the platform, read by the ingest bridge.
    pub inbound_raw: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |n: &str| format!("{prefix}{n}");
        Self {
            requests_otp: name("sms.requests.otp"),
            requests_notify: name("sms.requests.notify"),
            requests_retry: name("sms.requests.retry"),
            dispatch: name("sms.dispatch"),
            reports: name("sms.reports"),
            mo: name("sms.mo"),
            status: name("sms.status"),
            subscriptions: name("sms.subscriptions"),
            dlq: name("sms.dlq"),
            inbound_raw: name("sms.inbound.raw"),
        }
    }

    /// Every topic with its partition count and settings. The request,
    /// dispatch, status, report and subscription topics share one partition
    /// count so per-recipient state lines up partition by partition.
    pub fn specs(&self, partitions: i32) -> Vec<TopicSpec> {
        let days = |d: u64| (d * 24 * 3600 * 1000).to_string();
        let keyed = |name: &String, retention_days: u64| TopicSpec {
            name: name.clone(),
            partitions,
            config: vec![("retention.ms".into(), days(retention_days))],
        };
        vec![
            keyed(&self.requests_otp, 7),
            keyed(&self.requests_notify, 7),
            keyed(&self.requests_retry, 7),
            // The dispatcher rebuilds dedupe and frequency state from this one.
            keyed(&self.dispatch, 14),
            keyed(&self.reports, 14),
            keyed(&self.mo, 14),
            keyed(&self.status, 14),
            TopicSpec {
                name: self.subscriptions.clone(),
                partitions,
                config: vec![
                    ("cleanup.policy".into(), "compact".into()),
                    ("min.compaction.lag.ms".into(), "60000".into()),
                ],
            },
            keyed(&self.dlq, 30),
            keyed(&self.inbound_raw, 7),
        ]
    }
}

/// A topic as the system expects it to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub config: Vec<(String, String)>,
}

/// Creates the topics that do not exist yet; existing ones are left alone.
/// Returns the names created.
pub async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<String>, CoreError> {
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            spec.config.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(replication),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new.iter(), &options)
        .await
        .map_err(CoreError::KafkaSetup)?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(CoreError::Config {
                    key: format!("topic {name}"),
                    message: format!("could not be created: {code}"),
                })
            }
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> KafkaSettings {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn plaintext_by_default_sets_no_security_properties() {
        let config = KafkaSettings::default().producer_config("t");
        assert_eq!(config.get("security.protocol"), None);
        assert_eq!(config.get("sasl.password"), None);
        KafkaSettings::default()
            .check("kafka")
            .expect("default is valid");
    }

    #[test]
    fn sasl_and_tls_become_librdkafka_properties() {
        let kafka = settings(
            "security_protocol = \"sasl_ssl\"\n\
             [sasl]\nusername = \"sms\"\npassword = \"pw\"\n\
             [ssl]\nverify_hostname = false\n",
        );
        kafka.check("kafka").expect("valid");
        let config = kafka.consumer_config("t", "g");
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("sms"));
        assert_eq!(config.get("sasl.password"), Some("pw"));
        assert_eq!(
            config.get("ssl.endpoint.identification.algorithm"),
            Some("none")
        );
    }

    #[test]
    fn debug_hides_passwords_in_typed_settings_and_properties() {
        let kafka = settings(
            "security_protocol = \"sasl_plaintext\"\n\
             [sasl]\nusername = \"sms\"\npassword = \"typed-pw\"\n\
             [properties]\n\"sasl.oauthbearer.client.secret\" = \"prop-secret\"\n\
             \"ssl.keystore.password\" = \"prop-pw\"\n\"linger.ms\" = \"7\"\n",
        );
        let printed = format!("{kafka:?}");
        for hidden in ["typed-pw", "prop-secret", "prop-pw"] {
            assert!(!printed.contains(hidden), "{printed}");
        }
        assert!(printed.contains("\"linger.ms\": \"7\""), "{printed}");
    }

    #[test]
    fn inconsistent_security_is_refused_by_key() {
        let err = settings("security_protocol = \"sasl_ssl\"\n")
            .check("kafka")
            .unwrap_err();
        assert!(err.to_string().contains("kafka.sasl"), "{err}");
        let err = settings("[sasl]\nusername = \"u\"\npassword = \"p\"\n")
            .check("kafka")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("kafka.security_protocol: is \"plaintext\""),
            "{err}"
        );
        let err =
            settings("security_protocol = \"ssl\"\n[ssl]\nca_file = \"/nonexistent/ca.pem\"\n")
                .check("kafka")
                .unwrap_err();
        assert!(err.to_string().contains("kafka.ssl.ca_file"), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let err: Result<KafkaSettings, _> = toml::from_str("security_protocol = \"tls\"\n");
        assert!(err.is_err());
    }
}
