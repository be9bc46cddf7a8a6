//! The simulator's configuration: listeners, account, outcome mixes, delays, the SP's report listener.

use std::net::SocketAddr;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::faults::Faults;

/// Everything the simulator needs to start. Durations are in milliseconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Where SPs connect to submit (the gateway's SGIP port). Port 0 picks
    /// a free one. Default `127.0.0.1:8801`.
    pub submit_addr: SocketAddr,
    /// The control and counts HTTP endpoint. Default `127.0.0.1:8880`.
    pub http_addr: SocketAddr,
    /// The gateway's node id, stamped on Reports and Delivers (1AAAAX).
    /// Default 107551.
    pub node_id: u32,
    /// The SP account allowed to bind (LoginType 1).
    pub account: Account,
    /// How Submits are answered.
    pub submit: SubmitBehaviour,
    /// How and when Reports are made.
    pub reports: ReportBehaviour,
    /// Where Reports and Delivers go: the SP's server. No reports are sent
    /// when it is absent.
    pub sp: Option<SpListener>,
    /// Faults active from the start; switchable at run time over HTTP.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            submit_addr: SocketAddr::from(([127, 0, 0, 1], 8801)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8880)),
            node_id: 107551,
            account: Account::default(),
            submit: SubmitBehaviour::default(),
            reports: ReportBehaviour::default(),
            sp: None,
            faults: Faults::default(),
        }
    }
}

/// The credentials an SP binds with, and its connection cap.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Account {
    /// Default `sp`.
    pub login_name: String,
    /// Default `secret`.
    pub login_password: String,
    /// Bound connections allowed at once; beyond it Bind gets Result 3. Default 8.
    pub max_connections: usize,
    /// Close a connection silent this long. Default 60000.
    pub idle_timeout_ms: u64,
}

impl Default for Account {
    fn default() -> Self {
        Self {
            login_name: "sp".into(),
            login_password: "secret".into(),
            max_connections: 8,
            idle_timeout_ms: 60_000,
        }
    }
}

/// How Submits are answered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitBehaviour {
    /// The Result mix of Submit_Resp. Default: always 0.
    pub results: Vec<WeightedCode>,
    /// Submits per second over all connections before Result 88; 0 for no
    /// limit. Default 0.
    pub tps_limit: u32,
    /// Wait before each Submit_Resp. Default 0.
    pub response_delay_ms: u64,
    /// Refuse numbers without the "86" prefix with Result 6. Default true.
    pub strict_numbers: bool,
}

impl Default for SubmitBehaviour {
    fn default() -> Self {
        Self {
            results: vec![WeightedCode { code: 0, weight: 1 }],
            tps_limit: 0,
            response_delay_ms: 0,
            strict_numbers: true,
        }
    }
}

/// A Result code and its relative weight in a mix.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WeightedCode {
    pub code: u8,
    pub weight: u32,
}

/// How and when Reports are made.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportBehaviour {
    /// The delay between accepting a Submit and sending its Report.
    /// Default log-normal, median 800 ms, sigma 0.7, capped at 30000 ms.
    pub delay: DelayDistribution,
    /// The delivered / failed mix. Default 97% delivered, the rest spread
    /// over unknown number (29), switched off (25), suspended (108),
    /// blacklisted (69) and expired (61).
    pub outcomes: Vec<WeightedOutcome>,
    /// Most reports waiting to be sent; beyond it a report is dropped and
    /// counted. Default 1000000.
    pub max_pending: usize,
}

impl Default for ReportBehaviour {
    fn default() -> Self {
        let failed = |error_code, weight| WeightedOutcome {
            state: 2,
            error_code,
            weight,
        };
        Self {
            delay: DelayDistribution::LogNormal {
                median_ms: 800.0,
                sigma: 0.7,
                max_ms: 30_000,
            },
            outcomes: vec![
                WeightedOutcome {
                    state: 0,
                    error_code: 0,
                    weight: 970,
                },
                failed(29, 10),
                failed(25, 10),
                failed(108, 4),
                failed(69, 3),
                failed(61, 3),
            ],
            max_pending: 1_000_000,
        }
    }
}

/// A Report State and ErrorCode with their relative weight.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WeightedOutcome {
    /// 0 delivered, 2 failed.
    pub state: u8,
    pub error_code: u8,
    pub weight: u32,
}

/// A delay drawn at random for each report.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DelayDistribution {
    /// Always `delay_ms`.
    Fixed { delay_ms: u64 },
    /// Log-normal with the given median and shape, capped at `max_ms`.
    LogNormal {
        median_ms: f64,
        sigma: f64,
        max_ms: u64,
    },
    /// One of the listed delays, by weight.
    Weighted { choices: Vec<WeightedDelay> },
}

/// A delay and its relative weight.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WeightedDelay {
    pub delay_ms: u64,
    pub weight: u32,
}

impl DelayDistribution {
    /// Draws one delay in milliseconds.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match self {
            DelayDistribution::Fixed { delay_ms } => *delay_ms,
            DelayDistribution::LogNormal {
                median_ms,
                sigma,
                max_ms,
            } => {
                // Box-Muller for a standard normal draw.
                let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                let u2: f64 = rng.random_range(0.0..1.0);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let ms = median_ms.max(0.0) * (sigma * z).exp();
                (ms.round() as u64).min(*max_ms)
            }
            DelayDistribution::Weighted { choices } => {
                pick(choices, |c| c.weight, rng).map_or(0, |c| c.delay_ms)
            }
        }
    }
}

/// Picks one item by weight; `None` when all weights are zero.
pub fn pick<'a, T>(
    items: &'a [T],
    weight: impl Fn(&T) -> u32,
    rng: &mut impl Rng,
) -> Option<&'a T> {
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    if total == 0 {
        return None;
    }
    let mut at = rng.random_range(0..total);
    for item in items {
        let w = u64::from(weight(item));
        if at < w {
            return Some(item);
        }
        at -= w;
    }
    None
}

/// The SP's server that Reports and Delivers go to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpListener {
    /// The SP's SGIP listener. Default `127.0.0.1:8802`.
    pub addr: String,
    /// The credentials the SP assigned to the gateway. Default `smg` / `secret`.
    pub login_name: String,
    pub login_password: String,
    /// Reports and Delivers unanswered at once. Default 16.
    pub window: usize,
    /// Send again when the SP has not answered after this long. Default 5000.
    pub resend_after_ms: u64,
    /// Unbind after this long without traffic. Default 30000.
    pub idle_unbind_ms: u64,
}

impl Default for SpListener {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8802".into(),
            login_name: "smg".into(),
            login_password: "secret".into(),
            window: 16,
            resend_after_ms: 5_000,
            idle_unbind_ms: 30_000,
        }
    }
}

impl SimConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), crate::SimError> {
        let bad =
            |key: &'static str, reason: &'static str| Err(crate::SimError::Config { key, reason });
        if self.submit.results.iter().all(|w| w.weight == 0) {
            return bad("submit.results", "needs a positive weight");
        }
        if self.reports.outcomes.iter().all(|w| w.weight == 0) {
            return bad("reports.outcomes", "needs a positive weight");
        }
        if let DelayDistribution::Weighted { choices } = &self.reports.delay {
            if choices.iter().all(|c| c.weight == 0) {
                return bad("reports.delay.choices", "needs a positive weight");
            }
        }
        if self.account.max_connections == 0 {
            return bad("account.max_connections", "must be at least 1");
        }
        if self.reports.max_pending == 0 {
            return bad("reports.max_pending", "must be at least 1");
        }
        if let Some(sp) = &self.sp {
            if sp.window == 0 {
                return bad("sp.window", "must be at least 1");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_every_section_parses() {
        let text = r#"
            submit_addr = "127.0.0.1:0"
            http_addr = "127.0.0.1:0"
            node_id = 107551
            [account]
            login_name = "sp001"
            login_password = "pwd001"
            [submit]
            results = [{ code = 0, weight = 99 }, { code = 88, weight = 1 }]
            tps_limit = 500
            [reports]
            delay = { kind = "weighted", choices = [{ delay_ms = 100, weight = 3 }, { delay_ms = 2000, weight = 1 }] }
            outcomes = [{ state = 0, error_code = 0, weight = 1 }]
            [sp]
            addr = "127.0.0.1:9000"
            [faults]
            duplicate_reports = true
        "#;
        let config: SimConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.submit.tps_limit, 500);
        assert!(config.faults.duplicate_reports);
        assert!(toml::from_str::<SimConfig>("nonsense = 1").is_err());
    }

    #[test]
    fn delays_follow_their_distribution() {
        let mut rng = rand::rng();
        let fixed = DelayDistribution::Fixed { delay_ms: 7 };
        assert_eq!(fixed.sample(&mut rng), 7);
        let ln = DelayDistribution::LogNormal {
            median_ms: 800.0,
            sigma: 0.7,
            max_ms: 30_000,
        };
        let mut draws: Vec<u64> = (0..4001).map(|_| ln.sample(&mut rng)).collect();
        draws.sort_unstable();
        let median = draws[2000];
        assert!((600..=1050).contains(&median), "median {median}");
        assert!(draws.iter().all(|&d| d <= 30_000));
        let weighted = DelayDistribution::Weighted {
            choices: vec![
                WeightedDelay {
                    delay_ms: 1,
                    weight: 0,
                },
                WeightedDelay {
                    delay_ms: 2,
                    weight: 5,
                },
            ],
        };
        assert!((0..100).all(|_| weighted.sample(&mut rng) == 2));
    }
}
