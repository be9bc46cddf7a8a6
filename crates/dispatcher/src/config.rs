//! The dispatcher's configuration (TOML via `--config`, overridden by `DISPATCHER_…` variables).
//!
//! Every duration is in milliseconds (`_ms`), every amount of money in yuan.
//! Connection counts and rates are totals for the whole deployment: an
//! instance holding k of the P request partitions takes its share of them
//! (see [`GatewaySettings::share`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sgip::text::{BillingRule, CodingChoice};
use sms_core::events::MessageKind;
use sms_core::kafka::KafkaSettings;
use sms_core::validate::TextRules;
use sms_core::{CoreError, Secret};

/// Everything the dispatcher needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, topic prefix and extra librdkafka properties.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// The consumer group and its transactions.
    #[serde(default)]
    pub consumer: ConsumerSettings,
    /// The carrier's SMS gateway and the SP's account on it.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// What is refused before anything reaches the gateway.
    #[serde(default)]
    pub policy: PolicySettings,
    /// Later attempts after a refusal that may pass.
    #[serde(default)]
    pub retry: RetrySettings,
    /// Address of `/metrics` and `/healthz`. Default `0.0.0.0:9603`.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
}

/// The top-level keys environment overrides may name.
pub const KEYS: &[&str] = &[
    "kafka",
    "consumer",
    "gateway",
    "policy",
    "retry",
    "metrics_listen",
];

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9603))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaSettings::default(),
            consumer: ConsumerSettings::default(),
            gateway: GatewaySettings::default(),
            policy: PolicySettings::default(),
            retry: RetrySettings::default(),
            metrics_listen: default_metrics_listen(),
        }
    }
}

/// The consumer group, its transactions and its state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Consumer group of every dispatcher instance. Default `dispatcher`.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// This instance's name, unique among the running instances and stable
    /// across its restarts: it names the transactional producer, so a
    /// restarted instance fences (aborts) what its crashed predecessor left
    /// open. Default `0`.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Longest time between transaction commits while work is finishing.
    /// Default 20.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// On shutdown or revocation, the longest wait for in-flight Submits
    /// before letting go; what is still unanswered then is not committed and
    /// is submitted again by the next owner. Default 15000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// How far back `sms.dispatch` is read on each assignment to rebuild
    /// the duplicate check (message ids dispatched in this window) and the
    /// frequency caps. At least the longest cap window. Default 86400000
    /// (24 hours).
    #[serde(default = "default_dedupe_window_ms")]
    pub dedupe_window_ms: i64,
    /// Longest wait for the subscription records of newly assigned
    /// partitions to be read before requests are decided. Default 30000.
    #[serde(default = "default_subscriptions_wait_ms")]
    pub subscriptions_wait_ms: u64,
}

fn default_group() -> String {
    "dispatcher".into()
}
fn default_instance() -> String {
    "0".into()
}
fn default_commit_interval_ms() -> u64 {
    20
}
fn default_drain_timeout_ms() -> u64 {
    15_000
}
fn default_dedupe_window_ms() -> i64 {
    24 * 3600 * 1000
}
fn default_subscriptions_wait_ms() -> u64 {
    30_000
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            group_id: default_group(),
            instance: default_instance(),
            commit_interval_ms: default_commit_interval_ms(),
            drain_timeout_ms: default_drain_timeout_ms(),
            dedupe_window_ms: default_dedupe_window_ms(),
            subscriptions_wait_ms: default_subscriptions_wait_ms(),
        }
    }
}

/// The gateway, the SP's account and the carrier's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// The gateway's SGIP address, `host:port`. Default `127.0.0.1:8801`.
    #[serde(default = "default_gateway_addr")]
    pub addr: String,
    /// Bind LoginName. Default `sp`.
    #[serde(default = "default_login_name")]
    pub login_name: String,
    /// The Bind LoginPassword, a secret: a literal, `{ env = "VARIABLE" }`
    /// or `{ file = "/run/secrets/gateway" }`. Default: absent, and the
    /// variable named by `login_password_env` is read instead.
    #[serde(default)]
    pub login_password: Option<Secret>,
    /// Name of the environment variable holding the Bind LoginPassword when
    /// `login_password` is absent. Default `DISPATCHER_GATEWAY_PASSWORD`;
    /// when that is unset too the password is empty.
    #[serde(default = "default_password_env")]
    pub login_password_env: String,
    /// The SP's node id, stamped in every sequence triple (3AAAAQQQQQ).
    /// Default 3000012123.
    #[serde(default = "default_node_id")]
    pub node_id: u32,
    /// The access number every message shows (contract: `121231100`); a
    /// request's extension is appended. Default `121231100`.
    #[serde(default = "default_sp_number")]
    pub sp_number: String,
    /// Enterprise code (CorpId). Default empty.
    #[serde(default)]
    pub corp_id: String,
    /// Service code registered with the carrier (ServiceType). Default `12123`.
    #[serde(default = "default_service_type")]
    pub service_type: String,
    /// Connections the carrier allows for all instances together. Default 2.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Submits per second the carrier allows for all instances together;
    /// 0 for no limit. Default 0.
    #[serde(default)]
    pub rate_limit_per_sec: u32,
    /// Submits written and unanswered per connection, 1 to 1024 (the
    /// protocol reference advises at most 32). Default 16.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Wait for a Submit_Resp before writing the Submit again. Default 30000.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Writes of one Submit without a response, first included. Default 3.
    #[serde(default = "default_resends")]
    pub resends: u32,
    /// Text coding: `auto` (ASCII or UCS-2), `ucs2` or `gbk`. Default `auto`.
    #[serde(default)]
    pub coding: CodingChoice,
}

fn default_gateway_addr() -> String {
    "127.0.0.1:8801".into()
}
fn default_login_name() -> String {
    "sp".into()
}
fn default_password_env() -> String {
    "DISPATCHER_GATEWAY_PASSWORD".into()
}
fn default_node_id() -> u32 {
    3_000_012_123
}
fn default_sp_number() -> String {
    "121231100".into()
}
fn default_service_type() -> String {
    "12123".into()
}
fn default_connections() -> usize {
    2
}
fn default_window() -> usize {
    16
}
fn default_response_timeout_ms() -> u64 {
    30_000
}
fn default_resends() -> u32 {
    3
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            addr: default_gateway_addr(),
            login_name: default_login_name(),
            login_password: None,
            login_password_env: default_password_env(),
            node_id: default_node_id(),
            sp_number: default_sp_number(),
            corp_id: String::new(),
            service_type: default_service_type(),
            connections: default_connections(),
            rate_limit_per_sec: 0,
            window: default_window(),
            response_timeout_ms: default_response_timeout_ms(),
            resends: default_resends(),
            coding: CodingChoice::default(),
        }
    }
}

impl GatewaySettings {
    /// The Bind LoginPassword: `login_password`, else the variable named by
    /// `login_password_env`, else empty.
    pub fn password(&self) -> Secret {
        match &self.login_password {
            Some(password) => password.clone(),
            None => Secret::new(std::env::var(&self.login_password_env).unwrap_or_default()),
        }
    }
}

/// What one instance may use of the carrier's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Connections: `ceil(total * k / P)`.
    pub connections: usize,
    /// Submits per second: `total * k / P` rounded down, at least 1; 0 when
    /// the total is unlimited.
    pub rate_limit_per_sec: u32,
    /// Records in flight: connections times the window.
    pub in_flight: usize,
}

impl GatewaySettings {
    /// The share of an instance holding `held` of `partitions` request
    /// partitions. The connection count rounds up (a holder of any
    /// partition needs one), so with more instances than the total the
    /// carrier may see one connection per instance; the rate never adds up
    /// to more than the total.
    pub fn share(&self, held: usize, partitions: usize) -> Share {
        let partitions = partitions.max(1);
        let held = held.min(partitions);
        let connections = (self.connections * held).div_ceil(partitions).max(1);
        let rate_limit_per_sec = if self.rate_limit_per_sec == 0 {
            0
        } else {
            let rate = u64::from(self.rate_limit_per_sec) * held as u64 / partitions as u64;
            u32::try_from(rate).unwrap_or(u32::MAX).max(1)
        };
        Share {
            connections,
            rate_limit_per_sec,
            in_flight: connections * self.window,
        }
    }
}

/// A cap: at most `max` messages of a kind to one number within `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub window_ms: i64,
    pub max: u32,
}

/// The spending ceilings. Spend is counted from `sms.dispatch` (billed
/// segments of SUBMITTED events times the price) and split by partition:
/// each request partition may spend its `1/P` part of what is left, so
/// instances need not talk to each other.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// Price per billed segment (contract 4.2). Default 0.041.
    #[serde(default = "default_price")]
    pub price_yuan: f64,
    /// The contract's ceiling for the service period (4.1.5). Default 1430000.
    #[serde(default = "default_contract_yuan")]
    pub contract_yuan: f64,
    /// Spent before the current calendar month (Beijing time), taken from
    /// the billing report; this month's spend is read from `sms.dispatch`.
    /// Default 0.
    #[serde(default)]
    pub contract_spent_yuan: f64,
    /// Ceiling per calendar month; 0 for none. Default 0.
    #[serde(default)]
    pub monthly_yuan: f64,
}

fn default_price() -> f64 {
    0.041
}
fn default_contract_yuan() -> f64 {
    1_430_000.0
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            price_yuan: default_price(),
            contract_yuan: default_contract_yuan(),
            contract_spent_yuan: 0.0,
            monthly_yuan: 0.0,
        }
    }
}

/// What is refused before anything reaches the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Refuse a message unless the recipient's record in `sms.subscriptions`
    /// allows its kind (contract 2.9). Messages the system itself sends
    /// (source SYSTEM, e.g. an unsubscribe confirmation) are never checked.
    /// Default true.
    #[serde(default = "default_true")]
    pub require_subscription: bool,
    /// Signature, segment limit and forbidden words, as ingest applies them.
    #[serde(default)]
    pub text: TextRules,
    /// Regular expressions that mark forbidden content, advertising markers
    /// among them. Default: the "reply T to unsubscribe" markers of
    /// marketing messages.
    #[serde(default = "default_forbidden_patterns")]
    pub forbidden_patterns: Vec<String>,
    /// A file of Unicom number ranges; the bundled list when absent.
    #[serde(default)]
    pub number_ranges: Option<PathBuf>,
    /// Per-recipient caps by kind (`verification_code`, `notice`,
    /// `reminder`). Default: verification codes 1 a minute, 5 an hour and
    /// 10 a day; notices and reminders 50 a day each.
    #[serde(default = "default_caps")]
    pub frequency_caps: BTreeMap<String, Vec<FrequencyCap>>,
    /// Spending ceilings.
    #[serde(default)]
    pub budget: BudgetSettings,
    /// What the carrier adds to every message, for counting billed segments.
    #[serde(default)]
    pub billing: BillingRule,
}

fn default_true() -> bool {
    true
}

fn default_forbidden_patterns() -> Vec<String> {
    vec![r"回\s*[Tt]\s*退订".into(), r"退订\s*回\s*[Tt]".into()]
}

fn default_caps() -> BTreeMap<String, Vec<FrequencyCap>> {
    let cap = |window_ms, max| FrequencyCap { window_ms, max };
    let day = 24 * 3_600_000;
    BTreeMap::from([
        (
            "verification_code".to_string(),
            vec![cap(60_000, 1), cap(3_600_000, 5), cap(day, 10)],
        ),
        ("notice".to_string(), vec![cap(day, 50)]),
        ("reminder".to_string(), vec![cap(day, 50)]),
    ])
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            require_subscription: true,
            text: TextRules::default(),
            forbidden_patterns: default_forbidden_patterns(),
            number_ranges: None,
            frequency_caps: default_caps(),
            budget: BudgetSettings::default(),
            billing: BillingRule::default(),
        }
    }
}

impl PolicySettings {
    /// The caps configured for `kind`.
    pub fn caps(&self, kind: MessageKind) -> &[FrequencyCap] {
        self.frequency_caps
            .get(&kind.as_str().to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Later attempts after a refusal that may pass (flow control, busy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts of one message, the first included; after the last the
    /// message is FAILED with ATTEMPTS_EXHAUSTED. Default 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    /// Wait before the second attempt; doubled for each later one.
    /// Default 1000.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: i64,
    /// Longest wait between attempts. Default 60000.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: i64,
    /// After a flow-control answer (Result 33 or 88), no Submit is written
    /// for this long. Default 200.
    #[serde(default = "default_throttle_pause_ms")]
    pub throttle_pause_ms: u64,
    /// Retry records held in memory per partition before that partition of
    /// the retry topic is paused. Default 1000.
    #[serde(default = "default_hold_max")]
    pub hold_max: usize,
}

fn default_max_attempts() -> i32 {
    5
}
fn default_backoff_ms() -> i64 {
    1_000
}
fn default_backoff_max_ms() -> i64 {
    60_000
}
fn default_throttle_pause_ms() -> u64 {
    200
}
fn default_hold_max() -> usize {
    1_000
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff_ms: default_backoff_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            throttle_pause_ms: default_throttle_pause_ms(),
            hold_max: default_hold_max(),
        }
    }
}

impl RetrySettings {
    /// The wait before attempt `next` (1 for the second attempt).
    pub fn backoff(&self, next: i32) -> i64 {
        let doublings = u32::try_from(next.saturating_sub(1)).unwrap_or(0).min(30);
        self.backoff_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.backoff_max_ms)
    }
}

impl Config {
    /// Reads the file (if any), applies `DISPATCHER_…` overrides from `env`,
    /// and checks the values.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, CoreError> {
        let config: Config = sms_core::config::load(path, "DISPATCHER_", KEYS, env)?;
        config.check()?;
        Ok(config)
    }

    /// Refuses values that could never work, naming the key.
    pub fn check(&self) -> Result<(), CoreError> {
        let bad = |key: &str, message: String| {
            Err(CoreError::Config {
                key: key.into(),
                message,
            })
        };
        let g = &self.gateway;
        if g.connections == 0 {
            return bad("gateway.connections = 0", "expected at least 1".into());
        }
        if !(1..=1024).contains(&g.window) {
            return bad(
                &format!("gateway.window = {}", g.window),
                "expected 1 to 1024".into(),
            );
        }
        if g.resends == 0 {
            return bad("gateway.resends = 0", "expected at least 1".into());
        }
        if g.response_timeout_ms == 0 {
            return bad(
                "gateway.response_timeout_ms = 0",
                "expected a positive time".into(),
            );
        }
        if g.sp_number.is_empty() || !g.sp_number.bytes().all(|b| b.is_ascii_digit()) {
            return bad(
                &format!("gateway.sp_number = {:?}", g.sp_number),
                "expected digits only".into(),
            );
        }
        let c = &self.consumer;
        if c.commit_interval_ms == 0 {
            return bad(
                "consumer.commit_interval_ms = 0",
                "expected a positive time".into(),
            );
        }
        let longest_cap = self
            .policy
            .frequency_caps
            .values()
            .flatten()
            .map(|cap| cap.window_ms)
            .max()
            .unwrap_or(0);
        if c.dedupe_window_ms < longest_cap {
            return bad(
                &format!("consumer.dedupe_window_ms = {}", c.dedupe_window_ms),
                format!("expected at least the longest frequency cap window ({longest_cap} ms)"),
            );
        }
        for (kind, caps) in &self.policy.frequency_caps {
            if !MessageKind::ALL
                .iter()
                .any(|k| k.as_str().eq_ignore_ascii_case(kind))
            {
                return bad(
                    "policy.frequency_caps",
                    format!("{kind:?}: expected verification_code, notice or reminder"),
                );
            }
            if caps.iter().any(|cap| cap.window_ms <= 0) {
                return bad(
                    "policy.frequency_caps",
                    format!("{kind}: expected a positive window_ms"),
                );
            }
        }
        for pattern in &self.policy.forbidden_patterns {
            if let Err(e) = regex::Regex::new(pattern) {
                return bad(
                    "policy.forbidden_patterns",
                    format!("{pattern:?}: expected a regular expression: {e}"),
                );
            }
        }
        let b = &self.policy.budget;
        if b.price_yuan.is_nan()
            || b.price_yuan <= 0.0
            || b.contract_yuan < 0.0
            || b.monthly_yuan < 0.0
        {
            return bad(
                &format!(
                    "policy.budget (price_yuan = {}, contract_yuan = {}, monthly_yuan = {})",
                    b.price_yuan, b.contract_yuan, b.monthly_yuan
                ),
                "expected a positive price and ceilings not negative".into(),
            );
        }
        let r = &self.retry;
        if r.max_attempts < 1 {
            return bad(
                &format!("retry.max_attempts = {}", r.max_attempts),
                "expected at least 1".into(),
            );
        }
        if r.backoff_ms < 0 || r.backoff_max_ms < r.backoff_ms {
            return bad(
                &format!(
                    "retry.backoff_ms = {}, retry.backoff_max_ms = {}",
                    r.backoff_ms, r.backoff_max_ms
                ),
                "expected 0 <= backoff_ms <= backoff_max_ms".into(),
            );
        }
        if r.hold_max == 0 {
            return bad("retry.hold_max = 0", "expected at least 1".into());
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
    fn defaults_follow_the_contract() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.gateway.sp_number, "121231100");
        assert!(config.policy.require_subscription);
        assert_eq!(config.policy.budget.contract_yuan, 1_430_000.0);
        assert_eq!(config.policy.budget.price_yuan, 0.041);
        let otp = config.policy.caps(MessageKind::VerificationCode);
        assert_eq!(otp.len(), 3);
        assert_eq!(
            otp[0],
            FrequencyCap {
                window_ms: 60_000,
                max: 1
            }
        );
        assert_eq!(config.policy.caps(MessageKind::Notice)[0].max, 50);
    }

    #[test]
    fn environment_overrides_and_unknown_keys() {
        let config = Config::load(
            None,
            env(&[
                ("DISPATCHER_POLICY__REQUIRE_SUBSCRIPTION", "false"),
                ("DISPATCHER_GATEWAY__CONNECTIONS", "4"),
                ("DISPATCHER_GATEWAY_PASSWORD", "not a key"),
            ]),
        )
        .unwrap();
        assert!(!config.policy.require_subscription);
        assert_eq!(config.gateway.connections, 4);
        let err = Config::load(None, env(&[("DISPATCHER_GATEWAY__WINDOW", "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: gateway.window = 0: expected 1 to 1024"
        );
        let err = Config::load(None, env(&[("DISPATCHER_GATEWAY__WINDOW", "-3")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: gateway.window = -3 (from DISPATCHER_GATEWAY__WINDOW): \
             invalid value: integer `-3`, expected usize"
        );
        let err = Config::load(None, env(&[("DISPATCHER_GATEWAY__WNDOW", "3")])).unwrap_err();
        assert!(err.to_string().contains("wndow"), "{err}");
        let err = Config::load(
            None,
            env(&[("DISPATCHER_POLICY__FORBIDDEN_PATTERNS", "[\"(\"]")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("forbidden_patterns"), "{err}");
    }

    #[test]
    fn the_gateway_password_is_a_secret_from_a_file() {
        let file = std::env::temp_dir().join(format!("dispatcher-pw-{}", std::process::id()));
        std::fs::write(&file, "gateway-pw\n").unwrap();
        let text = format!("[gateway]\nlogin_password = {{ file = {:?} }}\n", file);
        let path = file.with_extension("toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.gateway.password().expose(), "gateway-pw");
        assert!(!format!("{config:?}").contains("gateway-pw"));
        let err = Config::load(
            None,
            env(&[(
                "DISPATCHER_GATEWAY__LOGIN_PASSWORD__FILE",
                "/nonexistent/gateway-password",
            )]),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "invalid configuration: gateway.login_password \
                 (from DISPATCHER_GATEWAY__LOGIN_PASSWORD__FILE): \
                 cannot read secret file /nonexistent/gateway-password"
            ),
            "{err}"
        );
    }

    #[test]
    fn shares_never_exceed_the_totals() {
        let gateway = GatewaySettings {
            connections: 4,
            rate_limit_per_sec: 100,
            window: 16,
            ..GatewaySettings::default()
        };
        assert_eq!(
            gateway.share(6, 6),
            Share {
                connections: 4,
                rate_limit_per_sec: 100,
                in_flight: 64
            }
        );
        let half = gateway.share(3, 6);
        assert_eq!((half.connections, half.rate_limit_per_sec), (2, 50));
        let third = gateway.share(2, 6);
        assert_eq!((third.connections, third.rate_limit_per_sec), (2, 33));
        // Three instances with 2 partitions each: the rate stays within 100.
        assert!(3 * third.rate_limit_per_sec <= 100);
        let unlimited = GatewaySettings::default().share(1, 3);
        assert_eq!(unlimited.rate_limit_per_sec, 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let retry = RetrySettings::default();
        assert_eq!(retry.backoff(1), 1_000);
        assert_eq!(retry.backoff(2), 2_000);
        assert_eq!(retry.backoff(3), 4_000);
        assert_eq!(retry.backoff(20), 60_000);
    }
}
