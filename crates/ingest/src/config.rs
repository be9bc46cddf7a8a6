//! Configuration: a TOML file given with `--config`, overridden by `INGEST_…` environment variables, checked at start.
//!
//! An override names a key path with `__` between levels:
//! `INGEST_LISTEN=0.0.0.0:8080`, `INGEST_KAFKA__BOOTSTRAP=broker:9092`,
//! `INGEST_LIMITS__MAX_BATCH=500`. Its value is read as a TOML value when it
//! parses as one (numbers, booleans) and as a string otherwise. Only
//! variables whose first segment names a top-level section are overrides, so
//! client secrets may live in `INGEST_SECRET_…` variables without clashing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sms_core::kafka::KafkaSettings;
use sms_core::validate::TextRules;

use crate::error::IngestError;
use crate::tls::TlsSettings;

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "INGEST_";

/// Everything the service needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on. Default `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Brokers, topic prefix and extra librdkafka properties.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// The platform's clients and their credentials.
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    /// Text rules: signature, segment limit, forbidden words.
    #[serde(default)]
    pub text: TextRules,
    /// A range file to use instead of the bundled
    /// `data/unicom-number-ranges.txt`. Default: the bundled one.
    #[serde(default)]
    pub number_ranges: Option<PathBuf>,
    /// Message templates by id; `{name}` marks a parameter. Default: none.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Sizes, time-outs and caches.
    #[serde(default)]
    pub limits: Limits,
    /// Signature checks.
    #[serde(default)]
    pub auth: AuthSettings,
    /// The raw-topic bridge.
    #[serde(default)]
    pub bridge: BridgeSettings,
    /// HTTPS: the API's certificate and key. Default: absent, plain HTTP
    /// (for local runs, or behind a proxy that terminates TLS).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

/// One platform client and how it proves who it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// The client's id, sent in `X-Client-Id` and recorded on each request.
    pub id: String,
    /// Environment variable holding the HMAC secret. Default: none.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the HMAC secret (surrounding white space is dropped).
    /// Default: none.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// SHA-256 hashes (hex) of the bearer tokens this client may use.
    /// Default: none.
    #[serde(default)]
    pub bearer_sha256: Vec<String>,
    /// Messages (and other calls) per second this client may make. Default 5000.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Calls allowed in a burst above the rate. Default 10000 (ten full batches).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_rate() -> u32 {
    5_000
}

fn default_burst() -> u32 {
    10_000
}

/// Sizes, time-outs and caches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most messages in one batch call. Default 1000.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Largest request body, in bytes. Default 4194304 (4 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a request waits for Kafka's acknowledgement before it is
    /// answered 503, in milliseconds. Default 5000.
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Records written but not yet acknowledged, across all requests; a
    /// request that finds no room waits (within `publish_timeout_ms`).
    /// Default 100000.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The `Retry-After` sent with a 503, in seconds. Default 2.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
    /// Request ids remembered for retries, per instance: five days of the
    /// contract's volume (about 100,000 a day), about 100 bytes each.
    /// Default 500000.
    #[serde(default = "default_recent_requests")]
    pub recent_requests: usize,
    /// How long a request id is remembered, in milliseconds. Default
    /// 86400000 (24 h).
    #[serde(default = "default_recent_window_ms")]
    pub recent_window_ms: u64,
    /// Final statuses kept for status queries, about 110 bytes each.
    /// Default 500000.
    #[serde(default = "default_recent_statuses")]
    pub recent_statuses: usize,
    /// Time in-flight requests get to finish after a shutdown signal, in
    /// milliseconds. Default 10000.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
}

fn default_max_batch() -> usize {
    1_000
}
fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_publish_timeout_ms() -> u64 {
    5_000
}
fn default_max_in_flight() -> usize {
    100_000
}
fn default_retry_after_s() -> u64 {
    2
}
fn default_recent_requests() -> usize {
    500_000
}
fn default_recent_window_ms() -> u64 {
    24 * 3600 * 1000
}
fn default_recent_statuses() -> usize {
    500_000
}
fn default_drain_ms() -> u64 {
    10_000
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch: default_max_batch(),
            max_body_bytes: default_max_body_bytes(),
            publish_timeout_ms: default_publish_timeout_ms(),
            max_in_flight: default_max_in_flight(),
            retry_after_s: default_retry_after_s(),
            recent_requests: default_recent_requests(),
            recent_window_ms: default_recent_window_ms(),
            recent_statuses: default_recent_statuses(),
            drain_ms: default_drain_ms(),
        }
    }
}

/// Signature checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// How far a signed request's timestamp may be from the server's clock,
    /// either way, in milliseconds. Default 300000 (±300 s).
    #[serde(default = "default_timestamp_tolerance_ms")]
    pub timestamp_tolerance_ms: u64,
    /// Nonces remembered to refuse replays. Default 1000000.
    #[serde(default = "default_nonce_cache")]
    pub nonce_cache: usize,
}

fn default_timestamp_tolerance_ms() -> u64 {
    300_000
}
fn default_nonce_cache() -> usize {
    1_000_000
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            timestamp_tolerance_ms: default_timestamp_tolerance_ms(),
            nonce_cache: default_nonce_cache(),
        }
    }
}

/// The raw-topic bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// Whether the bridge runs. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Consumer group of the bridge. Default `ingest-bridge`.
    #[serde(default = "default_bridge_group")]
    pub group_id: String,
    /// Most instructions written (and then committed) together. Default 500.
    #[serde(default = "default_bridge_chunk")]
    pub max_chunk: usize,
    /// Wait before writing a chunk again after Kafka refused it, in
    /// milliseconds. Default 1000.
    #[serde(default = "default_bridge_backoff_ms")]
    pub retry_backoff_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_bridge_group() -> String {
    "ingest-bridge".into()
}
fn default_bridge_chunk() -> usize {
    500
}
fn default_bridge_backoff_ms() -> u64 {
    1_000
}

impl Default for BridgeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: default_bridge_group(),
            max_chunk: default_bridge_chunk(),
            retry_backoff_ms: default_bridge_backoff_ms(),
        }
    }
}

const SECTIONS: &[&str] = &[
    "listen",
    "kafka",
    "text",
    "number_ranges",
    "limits",
    "auth",
    "bridge",
    "clients",
    "templates",
    "tls",
];

impl Config {
    /// Reads the file at `path` (or starts from the defaults), applies the
    /// `INGEST_…` overrides from `env`, and checks the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, IngestError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| IngestError::Config {
                key: "--config".into(),
                message: format!("cannot read {}: {e}", path.display()),
            })?,
            None => String::new(),
        };
        Self::from_toml(&text, env)
    }

    /// Parses TOML text, applies the overrides from `env`, and checks the result.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, IngestError> {
        let config: Config =
            sms_core::config::from_str(text, ENV_PREFIX, SECTIONS, env).map_err(|e| match e {
                sms_core::CoreError::Config { key, message } => {
                    IngestError::Config { key, message }
                }
                other => IngestError::Config {
                    key: "config".into(),
                    message: other.to_string(),
                },
            })?;
        config.check()?;
        Ok(config)
    }

    /// Refuses values that could never work, naming the key.
    pub fn check(&self) -> Result<(), IngestError> {
        let bad = |key: &str, message: &str| {
            Err(IngestError::Config {
                key: key.into(),
                message: message.into(),
            })
        };
        let l = &self.limits;
        if l.max_batch == 0 {
            return bad("limits.max_batch = 0", "expected at least 1");
        }
        if l.max_in_flight < l.max_batch {
            return bad(
                &format!("limits.max_in_flight = {}", l.max_in_flight),
                &format!("expected at least limits.max_batch ({})", l.max_batch),
            );
        }
        if l.publish_timeout_ms == 0 {
            return bad("limits.publish_timeout_ms = 0", "expected a positive time");
        }
        if l.recent_requests == 0 {
            return bad("limits.recent_requests = 0", "expected at least 1 entry");
        }
        if l.recent_statuses == 0 {
            return bad("limits.recent_statuses = 0", "expected at least 1 entry");
        }
        if self.auth.nonce_cache == 0 {
            return bad("auth.nonce_cache = 0", "expected at least 1 entry");
        }
        if self.bridge.max_chunk == 0 {
            return bad("bridge.max_chunk = 0", "expected at least 1");
        }
        self.kafka.check("kafka").map_err(|e| match e {
            sms_core::CoreError::Config { key, message } => IngestError::Config { key, message },
            other => IngestError::Config {
                key: "kafka".into(),
                message: other.to_string(),
            },
        })?;
        if let Some(tls) = &self.tls {
            tls.acceptor()?;
        }
        let mut seen = std::collections::HashSet::new();
        for (n, client) in self.clients.iter().enumerate() {
            let key = format!("clients[{n}]");
            if client.id.trim().is_empty() || !seen.insert(client.id.clone()) {
                return bad(&format!("{key}.id"), "must be present and unique");
            }
            if client.secret_env.is_none()
                && client.secret_file.is_none()
                && client.bearer_sha256.is_empty()
            {
                return bad(
                    &key,
                    "needs secret_env, secret_file or bearer_sha256 to authenticate",
                );
            }
            for hash in &client.bearer_sha256 {
                if hash.len() != 64 || hex::decode(hash).is_err() {
                    return bad(
                        &format!("{key}.bearer_sha256"),
                        "each entry must be 64 hex digits (SHA-256 of the token)",
                    );
                }
            }
            if client.rate_per_second == 0 || client.burst == 0 {
                return bad(
                    &format!("{key}.rate_per_second"),
                    "rate and burst must be positive",
                );
            }
        }
        for (id, template) in &self.templates {
            if template.trim().is_empty() {
                return bad(&format!("templates.{id}"), "must not be empty");
            }
        }
        Ok(())
    }
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
    fn defaults_need_no_file() {
        let config = Config::from_toml("", env(&[])).unwrap();
        assert_eq!(config.limits.max_batch, 1000);
        assert_eq!(config.auth.timestamp_tolerance_ms, 300_000);
        assert_eq!(config.text.max_segments, 10);
        assert_eq!(config.listen.port(), 8080);
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = Config::from_toml(
            "[limits]\nmax_batch = 10\n",
            env(&[
                ("INGEST_LIMITS__MAX_BATCH", "20"),
                ("INGEST_KAFKA__BOOTSTRAP", "broker:9092"),
                ("INGEST_LISTEN", "127.0.0.1:9000"),
                ("INGEST_SECRET_PLATFORM", "not an override"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.limits.max_batch, 20);
        assert_eq!(config.kafka.bootstrap, "broker:9092");
        assert_eq!(config.listen.port(), 9000);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let err = Config::from_toml("[limits]\nmax_bach = 10\n", env(&[])).unwrap_err();
        assert!(err.to_string().contains("max_bach"), "{err}");
        let err = Config::from_toml("", env(&[("INGEST_LIMITS__MAX_BATCH", "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: limits.max_batch = 0: expected at least 1"
        );
        let err = Config::from_toml("", env(&[("INGEST_LIMITS__MAX_BATCH", "many")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: limits.max_batch = \"many\" (from INGEST_LIMITS__MAX_BATCH): \
             invalid type: string \"many\", expected usize"
        );
        let err = Config::from_toml(
            "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
            env(&[]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: tls.cert_file = \"/nonexistent/cert.pem\": \
             no such file; expected a PEM file"
        );
        let err = Config::from_toml("[[clients]]\nid = \"p\"\n", env(&[])).unwrap_err();
        assert!(err.to_string().contains("clients[0]"), "{err}");
        let err = Config::from_toml(
            "[[clients]]\nid = \"p\"\nbearer_sha256 = [\"abc\"]\n",
            env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bearer_sha256"), "{err}");
    }
}
