//! The sink's configuration: a TOML file whose every key an `ANALYTICS_...` environment variable can override.
//!
//! Environment overrides name the key path in upper case, nested tables
//! joined by a double underscore: `ANALYTICS_BATCH_MAX_EVENTS=20000`,
//! `ANALYTICS_CLICKHOUSE__URL=http://ch:8123`,
//! `ANALYTICS_KAFKA__TOPIC_PREFIX=staging.`. A value that parses as a TOML
//! integer or boolean is taken as one, anything else as a string. An
//! override for a key that does not exist fails start-up, as an unknown key
//! in the file does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sms_core::kafka::KafkaSettings;
use sms_core::Secret;

use crate::error::AnalyticsError;

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "ANALYTICS_";

/// The top-level keys environment overrides may name.
pub const KEYS: &[&str] = &[
    "kafka",
    "clickhouse",
    "group_id",
    "batch_max_events",
    "batch_max_ms",
    "ttl_months",
    "metrics_address",
    "retry_initial_ms",
    "retry_max_ms",
    "shutdown_drain_ms",
    "max_poll_interval_ms",
];

/// The contract's minimum log retention (clause 2.7), in months.
pub const MIN_TTL_MONTHS: u32 = 6;

/// Everything the sink needs to start. Durations are in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// The brokers and the topic prefix; see `sms_core::kafka::KafkaSettings`.
    pub kafka: KafkaSettings,
    /// Where the events go.
    pub clickhouse: ClickHouseSettings,
    /// The consumer group every sink instance joins. Default `analytics`.
    pub group_id: String,
    /// A batch is written when it holds this many records. The sink holds
    /// two batches at most: one being stored and the next being read.
    /// Default 50000.
    pub batch_max_events: usize,
    /// A batch is written at the latest this long after its first record.
    /// Default 1000.
    pub batch_max_ms: u64,
    /// How long ClickHouse keeps raw events and per-message rows, in months;
    /// at least 6 (the contract's audit retention). Applied when the tables
    /// are created. Default 13.
    pub ttl_months: u32,
    /// Where `/metrics` (Prometheus text) and `/healthz` are served.
    /// Default `127.0.0.1:9464`.
    pub metrics_address: SocketAddr,
    /// The first wait after a failed insert; it doubles on each failure.
    /// Default 200.
    pub retry_initial_ms: u64,
    /// The longest wait between insert attempts. Default 10000.
    pub retry_max_ms: u64,
    /// On shutdown, how long to keep trying to store the current batch
    /// before exiting without committing it. Default 30000.
    pub shutdown_drain_ms: u64,
    /// How long the sink may go without reading Kafka (while ClickHouse is
    /// down) before the broker takes its partitions away
    /// (`max.poll.interval.ms`). Default 600000.
    pub max_poll_interval_ms: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            group_id: "analytics".into(),
            batch_max_events: 50_000,
            batch_max_ms: 1_000,
            ttl_months: 13,
            metrics_address: SocketAddr::from(([127, 0, 0, 1], 9464)),
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            shutdown_drain_ms: 30_000,
            max_poll_interval_ms: 600_000,
        }
    }
}

/// How to reach ClickHouse.
///
/// TLS is chosen by the URL: `https://ch.example:8443` speaks TLS (through
/// the system OpenSSL), checks the server's certificate against the
/// system's CA store, plus `ca_file` when given, and its host name against
/// the URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSettings {
    /// The HTTP interface, `http://` or `https://`. Default
    /// `http://127.0.0.1:8123`.
    pub url: String,
    /// Default `default`.
    pub user: String,
    /// A secret: a literal, `{ env = "VARIABLE" }` or `{ file = "/path" }`.
    /// Default empty.
    pub password: Secret,
    /// Created if missing. Default `sms`.
    pub database: String,
    /// PEM file with the CA certificate(s) of a private CA that signed the
    /// server's certificate, trusted besides the system's store, for
    /// `https://` URLs. Default none.
    pub ca_file: Option<PathBuf>,
    /// How insert bodies are sent: `lz4` (ClickHouse's compressed blocks) or
    /// `none`. Compression costs processor time on both sides and saves
    /// only network, so `none` suits a server on the same machine. Default
    /// `lz4`.
    pub compression: InsertCompression,
}

/// The compression of insert bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InsertCompression {
    #[default]
    Lz4,
    None,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            user: "default".into(),
            password: Secret::default(),
            database: "sms".into(),
            ca_file: None,
            compression: InsertCompression::default(),
        }
    }
}

impl ClickHouseSettings {
    /// A client on the configured database.
    pub fn client(&self) -> clickhouse::Client {
        self.server_client().with_database(&self.database)
    }

    /// A client with no database selected, for creating it.
    pub fn server_client(&self) -> clickhouse::Client {
        let compression = match self.compression {
            InsertCompression::Lz4 => clickhouse::Compression::Lz4,
            InsertCompression::None => clickhouse::Compression::None,
        };
        http_client(self.ca_file.as_deref())
            .with_compression(compression)
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(self.password.expose())
    }
}

/// A ClickHouse client with no URL yet: the crate's default, or, with
/// `ca_file`, one whose TLS also trusts the certificates in that PEM file.
/// A file that cannot be read is logged and the default client used (the
/// configuration check refuses such a file at start-up).
pub fn http_client(ca_file: Option<&Path>) -> clickhouse::Client {
    let Some(ca_file) = ca_file else {
        return clickhouse::Client::default();
    };
    match trusting(ca_file) {
        Ok(client) => client,
        Err(message) => {
            tracing::error!(ca_file = %ca_file.display(), message, "clickhouse ca_file unusable; using the system's CA store only");
            clickhouse::Client::default()
        }
    }
}

fn trusting(ca_file: &Path) -> Result<clickhouse::Client, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("cannot read it: {e}"))?;
    let certificates = native_tls::Certificate::stack_from_pem(&pem)
        .map_err(|e| format!("expected PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err("expected PEM certificates, found none".into());
    }
    let mut tls = native_tls::TlsConnector::builder();
    for certificate in certificates {
        tls.add_root_certificate(certificate);
    }
    let tls = tls.build().map_err(|e| format!("cannot set up tls: {e}"))?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    // As the crate's own client: https needs the connector to accept any
    // scheme, and idle connections are probed.
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_tls::HttpsConnector::from((http, tls.into()));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        // Below the server's keep-alive time-out (3 s by default).
        .pool_idle_timeout(Duration::from_secs(2))
        .build(connector);
    Ok(clickhouse::Client::with_http_client(client))
}

impl AnalyticsConfig {
    /// Reads the file at `path` (defaults when `None`), applies the
    /// environment overrides, and validates the result.
    pub fn load(path: Option<&str>) -> Result<Self, AnalyticsError> {
        let text = match path {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|e| AnalyticsError::ConfigFile {
                    path: path.into(),
                    message: e.to_string(),
                })?
            }
            None => String::new(),
        };
        Self::from_sources(&text, std::env::vars())
    }

    /// Builds the configuration from TOML text and `(name, value)` pairs of
    /// the environment; pairs without the `ANALYTICS_` prefix are ignored.
    pub fn from_sources(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, AnalyticsError> {
        let config: Self =
            sms_core::config::from_str(text, ENV_PREFIX, KEYS, env).map_err(|e| match e {
                sms_core::CoreError::Config { key, message } => {
                    AnalyticsError::Config { key, message }
                }
                other => AnalyticsError::Config {
                    key: "(configuration)".into(),
                    message: other.to_string(),
                },
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), AnalyticsError> {
        let fail = |key: &str, message: String| {
            Err(AnalyticsError::Config {
                key: key.into(),
                message,
            })
        };
        if self.ttl_months < MIN_TTL_MONTHS {
            return fail(
                &format!("ttl_months = {}", self.ttl_months),
                format!("expected at least {MIN_TTL_MONTHS} (contract clause 2.7)"),
            );
        }
        if self.batch_max_events == 0 {
            return fail("batch_max_events = 0", "expected at least 1".into());
        }
        if self.batch_max_ms == 0 {
            return fail("batch_max_ms = 0", "expected at least 1".into());
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return fail(
                &format!(
                    "retry_initial_ms = {}, retry_max_ms = {}",
                    self.retry_initial_ms, self.retry_max_ms
                ),
                "expected 0 < retry_initial_ms <= retry_max_ms".into(),
            );
        }
        if self.group_id.is_empty() {
            return fail("group_id = \"\"", "expected a consumer group name".into());
        }
        if !valid_identifier(&self.clickhouse.database) {
            return fail(
                &format!("clickhouse.database = {:?}", self.clickhouse.database),
                "expected only letters, digits and underscores".into(),
            );
        }
        if let Some(ca_file) = &self.clickhouse.ca_file {
            if let Err(message) = trusting(ca_file) {
                return fail(
                    &format!("clickhouse.ca_file = {:?}", ca_file.display().to_string()),
                    message,
                );
            }
        }
        let url = &self.clickhouse.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return fail(
                &format!("clickhouse.url = {url:?}"),
                "expected an http:// or https:// URL".into(),
            );
        }
        self.kafka.check("kafka").map_err(|e| match e {
            sms_core::CoreError::Config { key, message } => AnalyticsError::Config { key, message },
            other => AnalyticsError::Config {
                key: "kafka".into(),
                message: other.to_string(),
            },
        })
    }

    pub fn batch_max_time(&self) -> Duration {
        Duration::from_millis(self.batch_max_ms)
    }
}

fn valid_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let config = AnalyticsConfig::from_sources("", env(&[])).expect("valid");
        assert_eq!(config.ttl_months, 13);
        assert_eq!(config.batch_max_events, 50_000);
        assert_eq!(config.clickhouse.database, "sms");
        assert_eq!(config.kafka.bootstrap, "127.0.0.1:9092");
    }

    #[test]
    fn insert_compression_is_lz4_unless_told_none() {
        let config = AnalyticsConfig::from_sources("", env(&[])).expect("valid");
        assert_eq!(config.clickhouse.compression, InsertCompression::Lz4);
        let config =
            AnalyticsConfig::from_sources("[clickhouse]\ncompression = \"none\"\n", env(&[]))
                .expect("valid");
        assert_eq!(config.clickhouse.compression, InsertCompression::None);
        let config =
            AnalyticsConfig::from_sources("", env(&[("ANALYTICS_CLICKHOUSE__COMPRESSION", "lz4")]))
                .expect("valid");
        assert_eq!(config.clickhouse.compression, InsertCompression::Lz4);
        let err = AnalyticsConfig::from_sources("[clickhouse]\ncompression = \"zstd\"\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("clickhouse.compression"), "{err}");
    }

    #[test]
    fn environment_overrides_file_values_at_any_depth() {
        let text = "batch_max_ms = 50\n[clickhouse]\nurl = \"http://file:8123\"\n";
        let config = AnalyticsConfig::from_sources(
            text,
            env(&[
                ("ANALYTICS_BATCH_MAX_MS", "75"),
                ("ANALYTICS_CLICKHOUSE__URL", "http://env:8123"),
                ("ANALYTICS_KAFKA__TOPIC_PREFIX", "t1."),
                ("OTHER_VARIABLE", "ignored"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.batch_max_ms, 75);
        assert_eq!(config.clickhouse.url, "http://env:8123");
        assert_eq!(config.kafka.topic_prefix, "t1.");
    }

    #[test]
    fn unknown_keys_are_refused_from_the_file_and_not_applied_from_the_environment() {
        let error =
            AnalyticsConfig::from_sources("batch_size = 3", env(&[])).expect_err("unknown key");
        assert!(error.to_string().contains("batch_size"), "{error}");
        // Variables that name no key (secrets share the prefix) change nothing.
        let config = AnalyticsConfig::from_sources("", env(&[("ANALYTICS_BATCH_SIZE", "3")]))
            .expect("loads");
        assert_eq!(
            config.batch_max_events,
            AnalyticsConfig::from_sources("", env(&[]))
                .expect("loads")
                .batch_max_events
        );
    }

    #[test]
    fn retention_below_the_contract_is_refused_naming_the_key() {
        let error = AnalyticsConfig::from_sources("ttl_months = 5", env(&[]))
            .expect_err("five months is too short");
        assert!(
            error
                .to_string()
                .contains("ttl_months = 5: expected at least 6"),
            "{error}"
        );
        let error = AnalyticsConfig::from_sources("", env(&[("ANALYTICS_TTL_MONTHS", "-1")]))
            .expect_err("negative");
        assert!(
            error
                .to_string()
                .contains("ttl_months = -1 (from ANALYTICS_TTL_MONTHS): invalid value"),
            "{error}"
        );
    }

    #[test]
    fn the_password_is_a_secret_and_the_url_may_be_https() {
        let config = AnalyticsConfig::from_sources(
            "[clickhouse]\nurl = \"https://ch.example:8443\"\n",
            env(&[("ANALYTICS_CLICKHOUSE__PASSWORD", "ch-pw")]),
        )
        .expect("valid");
        assert_eq!(config.clickhouse.password.expose(), "ch-pw");
        assert!(!format!("{config:?}").contains("ch-pw"));
        let error = AnalyticsConfig::from_sources("[clickhouse]\nurl = \"ch:8123\"\n", env(&[]))
            .expect_err("no scheme");
        assert!(
            error
                .to_string()
                .contains("clickhouse.url = \"ch:8123\": expected an http:// or https:// URL"),
            "{error}"
        );
    }
}
