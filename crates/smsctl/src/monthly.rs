//! The monthly statistical report (clause 3.10): volume, success and timeliness rates, failures, refusals and latency for one month.
//!
//! # Definitions
//!
//! A message counts in the month its request was accepted, in Beijing time,
//! once it has a final status. Messages the dispatcher refused by policy
//! (final state `REJECTED`, or `EXPIRED` before submission) are the bureau's
//! and are counted as refusals, not in the rates. Every other final status
//! (`DELIVERED`, `FAILED`, `UNKNOWN`) went to the carrier:
//!
//! - success rate = delivered / messages that went to the carrier;
//! - timeliness rate = statuses returned within 7 s of acceptance / messages
//!   that went to the carrier (a message with no report counts as late).
//!
//! Both are compared with the thresholds exactly, in integers. Latency is the
//! report time minus the acceptance time, over messages that got a report;
//! its percentiles are exact (`quantilesExact`: the value at rank
//! ⌊level × n⌋ of the sorted latencies).

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::Deserialize;

use crate::error::SmsctlError;
use crate::period::Month;
use crate::warehouse::Warehouse;

/// Clause 3.7: the minimum success rate, in percent.
pub const SUCCESS_THRESHOLD_PERCENT: u64 = 99;
/// Clause 3.8: the minimum share of statuses within 7 seconds, in percent.
pub const TIMELINESS_THRESHOLD_PERCENT: u64 = 98;

/// Final states of messages the bureau's policy stopped before the carrier.
pub const POLICY_STATES: [&str; 2] = ["REJECTED", "EXPIRED"];

/// Latency buckets of the distribution, upper bounds in milliseconds (the last is open).
pub const LATENCY_BUCKETS_MS: [i64; 5] = [1_000, 3_000, 5_000, 7_000, 30_000];

/// A share, kept as its two counts so it compares exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    pub numerator: u64,
    pub denominator: u64,
}

impl Rate {
    pub fn new(numerator: u64, denominator: u64) -> Self {
        Self {
            numerator,
            denominator,
        }
    }

    /// Whether the share is at least `percent` %. A period with no messages
    /// meets every threshold (nothing failed).
    pub fn meets(self, percent: u64) -> bool {
        u128::from(self.numerator) * 100 >= u128::from(percent) * u128::from(self.denominator)
    }

    /// The share in percent, for display only.
    pub fn percent(self) -> Option<f64> {
        (self.denominator > 0).then(|| self.numerator as f64 * 100.0 / self.denominator as f64)
    }

    /// `99.512%`, or `n/a` with no messages.
    pub fn display(self) -> String {
        match self.percent() {
            Some(p) => format!("{p:.3}%"),
            None => "n/a".into(),
        }
    }
}

/// Counts of one group of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Volume {
    /// Every message with a final status, refused ones included.
    pub messages: u64,
    /// Segments the carrier accepted (what is billed).
    pub billed_segments: u64,
    /// Messages that went to the carrier.
    pub carrier_messages: u64,
    pub delivered: u64,
    /// Carrier messages whose status came within 7 s of acceptance.
    pub within_seven_seconds: u64,
    /// Messages refused by policy before the carrier.
    pub refused: u64,
}

impl Volume {
    pub fn success(&self) -> Rate {
        Rate::new(self.delivered, self.carrier_messages)
    }

    pub fn timeliness(&self) -> Rate {
        Rate::new(self.within_seven_seconds, self.carrier_messages)
    }

    fn add(&mut self, row: &DailyRow) {
        self.add_counts(
            &row.status,
            row.messages,
            row.billed_segments,
            row.delivered,
            row.within_seven_seconds,
        );
    }

    /// Adds a group of final statuses in `status`.
    pub fn add_counts(
        &mut self,
        status: &str,
        messages: u64,
        billed_segments: u64,
        delivered: u64,
        within_seven_seconds: u64,
    ) {
        self.messages += messages;
        self.billed_segments += billed_segments;
        if POLICY_STATES.contains(&status) {
            self.refused += messages;
        } else {
            self.carrier_messages += messages;
            self.delivered += delivered;
            self.within_seven_seconds += within_seven_seconds;
        }
    }

    /// The sum of two volumes.
    pub fn plus(&self, other: &Volume) -> Volume {
        Volume {
            messages: self.messages + other.messages,
            billed_segments: self.billed_segments + other.billed_segments,
            carrier_messages: self.carrier_messages + other.carrier_messages,
            delivered: self.delivered + other.delivered,
            within_seven_seconds: self.within_seven_seconds + other.within_seven_seconds,
            refused: self.refused + other.refused,
        }
    }
}

/// Failures of one carrier error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFailures {
    /// The code as decimal text; empty when the failure carried none.
    pub code: String,
    pub category: String,
    pub description_zh: String,
    pub description_en: String,
    pub messages: u64,
}

/// The latency distribution of messages that got a report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Latency {
    /// Messages with a report (the population of the percentiles).
    pub reported: u64,
    pub p50_ms: i64,
    pub p90_ms: i64,
    pub p98_ms: i64,
    pub p99_ms: i64,
    /// Counts per bucket of [`LATENCY_BUCKETS_MS`], plus one for longer.
    pub buckets: Vec<u64>,
}

/// Everything the monthly report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthlyReport {
    pub month: Month,
    pub total: Volume,
    pub previous: Volume,
    /// By message kind (`VERIFICATION_CODE`, `NOTICE`, `REMINDER`).
    pub by_kind: BTreeMap<String, Volume>,
    /// By day (Beijing), every day of the month present.
    pub by_day: BTreeMap<String, Volume>,
    /// By (day, kind).
    pub by_day_and_kind: BTreeMap<(String, String), Volume>,
    /// Carrier messages not delivered, by failure category (`UNKNOWN` status
    /// without a category counts as `NO_REPORT`).
    pub failures_by_category: BTreeMap<String, u64>,
    /// The same failures by carrier error code, most frequent first.
    pub failures_by_code: Vec<CodeFailures>,
    /// Policy refusals by reason, most frequent first.
    pub refusals_by_reason: Vec<(String, u64)>,
    pub latency: Latency,
    /// The SQL that produced the figures, in order.
    pub sql: Vec<String>,
}

impl MonthlyReport {
    pub fn success_met(&self) -> bool {
        self.total.success().meets(SUCCESS_THRESHOLD_PERCENT)
    }

    pub fn timeliness_met(&self) -> bool {
        self.total.timeliness().meets(TIMELINESS_THRESHOLD_PERCENT)
    }
}

#[derive(Debug, Clone, Row, Deserialize)]
struct DailyRow {
    #[serde(rename = "day_text")]
    day: String,
    kind: String,
    status: String,
    category: String,
    code: String,
    messages: u64,
    billed_segments: u64,
    delivered: u64,
    within_seven_seconds: u64,
}

#[derive(Debug, Row, Deserialize)]
struct CodeRow {
    code: String,
    category: String,
    description_zh: String,
    description_en: String,
}

#[derive(Debug, Row, Deserialize)]
struct ReasonRow {
    #[serde(rename = "refusal_reason")]
    reason: String,
    messages: u64,
}

#[derive(Debug, Row, Deserialize)]
struct LatencyRow {
    reported: u64,
    quantiles: Vec<i64>,
    buckets: Vec<u64>,
}

/// The figures of `sms_daily` for the days of `month`, grouped as stored.
pub fn daily_sql(month: Month) -> String {
    format!(
        "SELECT toString(day) AS day_text, toString(message_kind) AS kind, toString(status) AS status,
       toString(failure_category) AS category, toString(error_code) AS code,
       sum(messages) AS messages, sum(billed_segments) AS billed_segments,
       sum(delivered) AS delivered, sum(within_seven_seconds) AS within_seven_seconds
FROM sms_daily
WHERE day >= '{}' AND day < '{}'
GROUP BY day_text, kind, status, category, code
ORDER BY day_text, kind, status, category, code",
        month.first_day(),
        month.next().first_day()
    )
}

fn codes_sql() -> String {
    "SELECT toString(code) AS code, toString(category) AS category, description_zh, description_en
FROM carrier_error_codes FINAL
ORDER BY code"
        .into()
}

/// The bounds that select final statuses of messages accepted in `month`:
/// the acceptance date in Beijing time, with the event-time partition
/// narrowed to the month and the week after it (a status follows its
/// acceptance by at most days).
fn final_statuses_in(month: Month) -> String {
    format!(
        "event_kind = 'final_status'
  AND event_time >= toDateTime64('{from} 00:00:00', 3, 'Asia/Shanghai')
  AND event_time < toDateTime64('{to} 00:00:00', 3, 'Asia/Shanghai') + INTERVAL 7 DAY
  AND toDate(accepted_at, 'Asia/Shanghai') >= '{from}'
  AND toDate(accepted_at, 'Asia/Shanghai') < '{to}'",
        from = month.first_day(),
        to = month.next().first_day()
    )
}

fn refusals_sql(month: Month) -> String {
    format!(
        "SELECT if(reason = '', 'UNSPECIFIED', toString(reason)) AS refusal_reason, count() AS messages
FROM sms_events
WHERE {}
  AND state IN ('REJECTED', 'EXPIRED')
GROUP BY refusal_reason
ORDER BY messages DESC, refusal_reason",
        final_statuses_in(month)
    )
}

fn latency_sql(month: Month) -> String {
    let buckets: Vec<String> = LATENCY_BUCKETS_MS
        .iter()
        .enumerate()
        .map(|(i, upper)| match i {
            0 => format!("countIf(latency_ms <= {upper})"),
            _ => format!(
                "countIf(latency_ms > {} AND latency_ms <= {upper})",
                LATENCY_BUCKETS_MS[i - 1]
            ),
        })
        .chain(std::iter::once(format!(
            "countIf(latency_ms > {})",
            LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]
        )))
        .collect();
    format!(
        "SELECT count() AS reported,
       if(count() = 0, [0, 0, 0, 0], arrayMap(x -> toInt64(x), quantilesExact(0.5, 0.9, 0.98, 0.99)(assumeNotNull(latency_ms)))) AS quantiles,
       [{}] AS buckets
FROM sms_events
WHERE {}
  AND state NOT IN ('REJECTED', 'EXPIRED')
  AND latency_ms IS NOT NULL",
        buckets.join(", "),
        final_statuses_in(month)
    )
}

/// Reads every figure of the report for `month` from ClickHouse.
pub async fn monthly_report(
    warehouse: &Warehouse,
    month: Month,
) -> Result<MonthlyReport, SmsctlError> {
    let sql = vec![
        daily_sql(month),
        daily_sql(month.previous()),
        codes_sql(),
        refusals_sql(month),
        latency_sql(month),
    ];
    let rows: Vec<DailyRow> = warehouse.fetch("reading sms_daily", &sql[0]).await?;
    let previous_rows: Vec<DailyRow> = warehouse.fetch("reading sms_daily", &sql[1]).await?;
    let codes: Vec<CodeRow> = warehouse
        .fetch("reading carrier_error_codes", &sql[2])
        .await?;
    let refusals: Vec<ReasonRow> = warehouse
        .fetch("reading refusals from sms_events", &sql[3])
        .await?;
    let latency: Vec<LatencyRow> = warehouse
        .fetch("reading latencies from sms_events", &sql[4])
        .await?;

    let mut report = MonthlyReport {
        month,
        total: Volume::default(),
        previous: Volume::default(),
        by_kind: BTreeMap::new(),
        by_day: (0..month.days())
            .filter_map(|d| {
                month
                    .first_day()
                    .checked_add_days(chrono::Days::new(d.into()))
            })
            .map(|day| (day.to_string(), Volume::default()))
            .collect(),
        by_day_and_kind: BTreeMap::new(),
        failures_by_category: BTreeMap::new(),
        failures_by_code: Vec::new(),
        refusals_by_reason: refusals
            .into_iter()
            .map(|r| (r.reason, r.messages))
            .collect(),
        latency: Latency::default(),
        sql,
    };
    for row in &previous_rows {
        report.previous.add(row);
    }
    let mut by_code: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rows {
        report.total.add(row);
        report.by_kind.entry(row.kind.clone()).or_default().add(row);
        report.by_day.entry(row.day.clone()).or_default().add(row);
        report
            .by_day_and_kind
            .entry((row.day.clone(), row.kind.clone()))
            .or_default()
            .add(row);
        let undelivered = row.messages - row.delivered.min(row.messages);
        if POLICY_STATES.contains(&row.status.as_str()) || undelivered == 0 {
            continue;
        }
        let category = match (row.category.as_str(), row.status.as_str()) {
            ("", "UNKNOWN") => "NO_REPORT".to_string(),
            ("", _) => "OTHER".to_string(),
            (category, _) => category.to_string(),
        };
        *report.failures_by_category.entry(category).or_default() += undelivered;
        *by_code.entry(row.code.clone()).or_default() += undelivered;
    }
    let mut failures: Vec<CodeFailures> = by_code
        .into_iter()
        .map(|(code, messages)| {
            let known = codes.iter().find(|c| c.code == code);
            CodeFailures {
                category: known.map(|c| c.category.clone()).unwrap_or_default(),
                description_zh: known.map(|c| c.description_zh.clone()).unwrap_or_else(|| {
                    if code.is_empty() {
                        "无错误码（无状态报告）".into()
                    } else {
                        "未知错误码".into()
                    }
                }),
                description_en: known.map(|c| c.description_en.clone()).unwrap_or_else(|| {
                    if code.is_empty() {
                        "no code (no report)".into()
                    } else {
                        "unknown code".into()
                    }
                }),
                code,
                messages,
            }
        })
        .collect();
    failures.sort_by(|a, b| {
        b.messages
            .cmp(&a.messages)
            .then_with(|| a.code.cmp(&b.code))
    });
    report.failures_by_code = failures;
    if let Some(row) = latency.into_iter().next() {
        let q = |i: usize| row.quantiles.get(i).copied().unwrap_or(0);
        report.latency = Latency {
            reported: row.reported,
            p50_ms: q(0),
            p90_ms: q(1),
            p98_ms: q(2),
            p99_ms: q(3),
            buckets: row.buckets,
        };
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_compare_exactly_with_the_thresholds() {
        assert!(Rate::new(99, 100).meets(99));
        assert!(!Rate::new(98_999, 100_000).meets(99));
        assert!(Rate::new(0, 0).meets(99));
        assert_eq!(Rate::new(1, 3).display(), "33.333%");
        assert_eq!(Rate::new(0, 0).display(), "n/a");
    }
}
