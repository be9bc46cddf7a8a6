//! The status service's configuration (TOML via `--config`, overridden by `STATUS_…` variables).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Deserialize;
use sms_core::kafka::KafkaSettings;
use sms_core::Secret;

/// Everything the status service needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, topic prefix and extra librdkafka properties.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// The SGIP server the gateway connects to.
    #[serde(default)]
    pub receiver: ReceiverSettings,
    /// How final statuses are decided.
    #[serde(default)]
    pub correlation: CorrelationSettings,
    /// Uplink (MO) handling.
    #[serde(default)]
    pub uplink: UplinkSettings,
    /// Address of `/metrics` and `/healthz`. Default `0.0.0.0:9602`.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
}

/// The top-level keys environment overrides may name.
pub const KEYS: &[&str] = &[
    "kafka",
    "receiver",
    "correlation",
    "uplink",
    "metrics_listen",
];

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9602))
}

/// The SGIP server for the gateway's Report and Deliver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSettings {
    /// Address to listen on. Default `0.0.0.0:8802`.
    #[serde(default = "default_receiver_listen")]
    pub listen: SocketAddr,
    /// LoginName the gateway binds with. Default `smg`.
    #[serde(default = "default_login")]
    pub login_name: String,
    /// The LoginPassword the gateway binds with, a secret: a literal,
    /// `{ env = "VARIABLE" }` or `{ file = "/run/secrets/gateway" }`.
    /// Default: absent, and the variable named by `login_password_env` is
    /// read instead.
    #[serde(default)]
    pub login_password: Option<Secret>,
    /// Name of the environment variable holding the gateway's LoginPassword
    /// when `login_password` is absent. Default `STATUS_GATEWAY_PASSWORD`;
    /// when that is unset too, the password is empty.
    #[serde(default = "default_password_env")]
    pub login_password_env: String,
    /// The gateway's source addresses; a connection from any other address
    /// is closed at once, logged and counted
    /// (`sgip_server_refused_peers_total`). Empty allows any (local runs).
    /// Default empty.
    #[serde(default)]
    pub allowed_peers: Vec<IpAddr>,
    /// Most gateway connections at once. Default 16.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A Report or Deliver not acknowledged by Kafka within this time is not
    /// answered, so the gateway resends it. Default 10000.
    #[serde(default = "default_produce_timeout_ms")]
    pub produce_timeout_ms: u64,
    /// Reports and Delivers of one gateway connection being written to
    /// Kafka at once. Each is answered only once Kafka has it, so one
    /// connection carries at most this many per produce round trip (32 is
    /// about 4,500 a second on the build machine); the gateway's own window
    /// is usually the smaller bound. Default 256.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_per_connection: usize,
}

fn default_receiver_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8802))
}
fn default_login() -> String {
    "smg".into()
}
fn default_password_env() -> String {
    "STATUS_GATEWAY_PASSWORD".into()
}
fn default_max_connections() -> usize {
    16
}
fn default_produce_timeout_ms() -> u64 {
    10_000
}
fn default_max_in_flight() -> usize {
    256
}

impl Default for ReceiverSettings {
    fn default() -> Self {
        Self {
            listen: default_receiver_listen(),
            login_name: default_login(),
            login_password: None,
            login_password_env: default_password_env(),
            allowed_peers: Vec::new(),
            max_connections: default_max_connections(),
            produce_timeout_ms: default_produce_timeout_ms(),
            max_in_flight_per_connection: default_max_in_flight(),
        }
    }
}

impl ReceiverSettings {
    /// The gateway's LoginPassword: `login_password`, else the variable
    /// named by `login_password_env`, else empty.
    pub fn password(&self) -> Secret {
        match &self.login_password {
            Some(password) => password.clone(),
            None => Secret::new(std::env::var(&self.login_password_env).unwrap_or_default()),
        }
    }
}

/// How final statuses are decided.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationSettings {
    /// Consumer group of the correlator. Default `status`.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// A message with no final report this long after acceptance is
    /// UNKNOWN. Default 259200000 (72 hours).
    #[serde(default = "default_validity_ms")]
    pub validity_ms: i64,
    /// A report whose dispatch event has not arrived is held this long,
    /// then recorded as unmatched. Default 600000 (10 minutes).
    #[serde(default = "default_orphan_hold_ms")]
    pub orphan_hold_ms: i64,
    /// Submit sequences of recently final messages remembered, so that a
    /// late or resent report is recorded against its message. A report for
    /// a message whose sequences were already forgotten is recorded as
    /// unmatched instead; its message's final status stands either way.
    /// About 100 bytes each. Default 500000.
    #[serde(default = "default_final_sequences")]
    pub final_sequences: usize,
    /// Longest time between transaction commits. Default 100.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Most records in one transaction. Default 5000.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

fn default_group() -> String {
    "status".into()
}
fn default_validity_ms() -> i64 {
    72 * 3600 * 1000
}
fn default_orphan_hold_ms() -> i64 {
    10 * 60 * 1000
}
fn default_final_sequences() -> usize {
    500_000
}
fn default_commit_interval_ms() -> u64 {
    100
}
fn default_max_batch() -> usize {
    5000
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self {
            group_id: default_group(),
            validity_ms: default_validity_ms(),
            orphan_hold_ms: default_orphan_hold_ms(),
            final_sequences: default_final_sequences(),
            commit_interval_ms: default_commit_interval_ms(),
            max_batch: default_max_batch(),
        }
    }
}

/// Uplink (MO) handling: unsubscribe keywords and their confirmation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSettings {
    /// Consumer group of the uplink handler. Default `status-uplink`.
    #[serde(default = "default_uplink_group")]
    pub group_id: String,
    /// Replies that cancel the user's subscription, compared after trimming,
    /// full-width to half-width and upper-casing. `TD` followed by a service
    /// code also counts. Default TD, T, 0000, 00000, QX, 退订, 取消.
    #[serde(default = "default_keywords")]
    pub unsubscribe_keywords: Vec<String>,
    /// The confirmation sent after an unsubscribe.
    #[serde(default = "default_confirmation")]
    pub confirmation_text: String,
    /// Unfinished concatenated uplink messages are dropped after this long.
    /// Default 600000 (10 minutes).
    #[serde(default = "default_reassembly_ms")]
    pub reassembly_expiry_ms: u64,
}

fn default_uplink_group() -> String {
    "status-uplink".into()
}
fn default_keywords() -> Vec<String> {
    ["TD", "T", "0000", "00000", "QX", "退订", "取消"]
        .map(String::from)
        .to_vec()
}
fn default_confirmation() -> String {
    "【交管12123】您已退订交管12123短信服务，将不再收到通知和提醒。如需恢复，请在交管12123 App 中重新订阅。".into()
}
fn default_reassembly_ms() -> u64 {
    600_000
}

impl Default for UplinkSettings {
    fn default() -> Self {
        Self {
            group_id: default_uplink_group(),
            unsubscribe_keywords: default_keywords(),
            confirmation_text: default_confirmation(),
            reassembly_expiry_ms: default_reassembly_ms(),
        }
    }
}

impl Config {
    /// Reads the file (if any), applies `STATUS_…` overrides from `env`, and checks the values.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, sms_core::CoreError> {
        let config: Config = sms_core::config::load(path, "STATUS_", KEYS, env)?;
        config.check()?;
        Ok(config)
    }

    /// Refuses values that could never work, naming the key.
    pub fn check(&self) -> Result<(), sms_core::CoreError> {
        let bad = |key: &str, message: &str| {
            Err(sms_core::CoreError::Config {
                key: key.into(),
                message: message.into(),
            })
        };
        let c = &self.correlation;
        if c.validity_ms <= 0 {
            return bad(
                &format!("correlation.validity_ms = {}", c.validity_ms),
                "expected a positive time",
            );
        }
        if c.orphan_hold_ms <= 0 {
            return bad(
                &format!("correlation.orphan_hold_ms = {}", c.orphan_hold_ms),
                "expected a positive time",
            );
        }
        if c.max_batch == 0 {
            return bad("correlation.max_batch = 0", "expected at least 1");
        }
        if c.commit_interval_ms == 0 {
            return bad(
                "correlation.commit_interval_ms = 0",
                "expected a positive time",
            );
        }
        if self.receiver.max_connections == 0 {
            return bad("receiver.max_connections = 0", "expected at least 1");
        }
        if self.receiver.max_in_flight_per_connection == 0 {
            return bad(
                "receiver.max_in_flight_per_connection = 0",
                "expected at least 1",
            );
        }
        if self
            .uplink
            .unsubscribe_keywords
            .iter()
            .any(|k| k.trim().is_empty())
        {
            return bad(
                "uplink.unsubscribe_keywords",
                "contains an empty keyword; expected words",
            );
        }
        if self.uplink.confirmation_text.trim().is_empty() {
            return bad("uplink.confirmation_text = \"\"", "expected a text");
        }
        self.kafka.check("kafka")
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
    fn bad_values_name_the_key_the_value_and_what_was_expected() {
        let err = Config::load(
            None,
            env(&[("STATUS_RECEIVER__ALLOWED_PEERS", "[\"10.0.0.300\"]")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: receiver.allowed_peers.0 = \"10.0.0.300\" \
             (from STATUS_RECEIVER__ALLOWED_PEERS): invalid IP address syntax"
        );
        let err = Config::load(None, env(&[("STATUS_CORRELATION__VALIDITY_MS", "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: correlation.validity_ms = 0: expected a positive time"
        );
    }

    #[test]
    fn reports_in_flight_per_connection_default_to_256_and_zero_is_refused() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.receiver.max_in_flight_per_connection, 256);
        let config = Config::load(
            None,
            env(&[("STATUS_RECEIVER__MAX_IN_FLIGHT_PER_CONNECTION", "64")]),
        )
        .unwrap();
        assert_eq!(config.receiver.max_in_flight_per_connection, 64);
        let err = Config::load(
            None,
            env(&[("STATUS_RECEIVER__MAX_IN_FLIGHT_PER_CONNECTION", "0")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: receiver.max_in_flight_per_connection = 0: expected at least 1"
        );
    }

    #[test]
    fn final_sequences_default_to_500000_and_follow_the_environment_and_the_file() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.correlation.final_sequences, 500_000);
        let config = Config::load(
            None,
            env(&[("STATUS_CORRELATION__FINAL_SEQUENCES", "1000")]),
        )
        .unwrap();
        assert_eq!(config.correlation.final_sequences, 1_000);
        let shipped = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/config/status.toml"
        );
        let config = Config::load(Some(std::path::Path::new(shipped)), env(&[])).unwrap();
        assert_eq!(config.correlation.final_sequences, 500_000);
    }

    #[test]
    fn allowed_peers_and_the_password_come_from_the_environment() {
        let config = Config::load(
            None,
            env(&[
                ("STATUS_RECEIVER__ALLOWED_PEERS", "[\"10.1.2.3\", \"::1\"]"),
                ("STATUS_RECEIVER__LOGIN_PASSWORD", "from-env"),
            ]),
        )
        .unwrap();
        assert_eq!(config.receiver.allowed_peers.len(), 2);
        assert_eq!(config.receiver.password().expose(), "from-env");
        assert!(!format!("{config:?}").contains("from-env"));
    }
}
