//! Quarterly billing and SLA (clauses 4.1.3, 4.1.5, 4.2, 6.9, 6.10): the fee per month and quarter, the budget, and the deductions.
//!
//! Every figure comes from one query on `sms_daily`, grouped by month and
//! final state, from the contract's first month to the quarter's end; the
//! arithmetic is in integer thousandths of a yuan. The fee counts every
//! segment the carrier accepted (`billed_segments` of the final statuses),
//! in the month the request was accepted (Beijing time). The rates are the
//! monthly report's ([`crate::monthly`]), over the settlement period.
//!
//! Deductions for unanswered trace requests (6.4), missing monthly reports
//! (6.6) and faults (6.5) depend on records outside ClickHouse and are not
//! computed here.

use std::fmt::Write;

use clickhouse::Row;
use serde::Deserialize;

use crate::error::SmsctlError;
use crate::money::{group_thousands, Money, BUDGET, PENALTY_PER_PERIOD, PRICE_PER_SEGMENT_LI};
use crate::monthly::{Volume, SUCCESS_THRESHOLD_PERCENT, TIMELINESS_THRESHOLD_PERCENT};
use crate::period::{Month, Quarter};
use crate::warehouse::Warehouse;

/// The figures of one month of the quarter.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthBilling {
    pub month: Month,
    pub volume: Volume,
    pub fee: Money,
}

/// One deduction the contract makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Penalty {
    pub clause: &'static str,
    pub reason: String,
    pub amount: Money,
}

/// The settlement of one quarter.
#[derive(Debug, Clone, PartialEq)]
pub struct Billing {
    pub quarter: Quarter,
    pub contract_start: Month,
    pub months: Vec<MonthBilling>,
    pub volume: Volume,
    /// The quarter's billed segments at 0.041 yuan.
    pub fee: Money,
    /// Billed from the contract start to the quarter's start.
    pub spent_before: Money,
    /// Billed from the contract start to the quarter's end.
    pub spent_to_date: Money,
    /// The fee, cut to what is left of the budget (clause 4.1.5).
    pub payable_fee: Money,
    pub penalties: Vec<Penalty>,
    /// The payable fee less the deductions, not below zero.
    pub net_payable: Money,
    pub sql: Vec<String>,
}

#[derive(Debug, Row, Deserialize)]
struct MonthRow {
    month: String,
    status: String,
    messages: u64,
    billed_segments: u64,
    delivered: u64,
    within_seven_seconds: u64,
}

/// The query behind every billing figure.
pub fn billing_sql(contract_start: Month, quarter: Quarter) -> String {
    let end = quarter.months()[2].next();
    format!(
        "SELECT toString(toStartOfMonth(day)) AS month, toString(status) AS status,
       sum(messages) AS messages, sum(billed_segments) AS billed_segments,
       sum(delivered) AS delivered, sum(within_seven_seconds) AS within_seven_seconds
FROM sms_daily
WHERE day >= '{}' AND day < '{}'
GROUP BY month, status
ORDER BY month, status",
        contract_start.first_day(),
        end.first_day()
    )
}

/// Computes the settlement of `quarter` for a contract that started in `contract_start`.
pub async fn billing(
    warehouse: &Warehouse,
    quarter: Quarter,
    contract_start: Month,
) -> Result<Billing, SmsctlError> {
    let sql = billing_sql(contract_start, quarter);
    let rows: Vec<MonthRow> = warehouse.fetch("reading sms_daily", &sql).await?;
    let quarter_months = quarter.months();

    let mut months: Vec<MonthBilling> = quarter_months
        .iter()
        .map(|&month| MonthBilling {
            month,
            volume: Volume::default(),
            fee: Money::ZERO,
        })
        .collect();
    let mut segments_before = 0u64;
    for row in &rows {
        let month = row
            .month
            .get(..7)
            .map(Month::parse)
            .transpose()
            .ok()
            .flatten();
        let Some(month) = month else { continue };
        if month < quarter_months[0] {
            segments_before += row.billed_segments;
            continue;
        }
        if let Some(m) = months.iter_mut().find(|m| m.month == month) {
            m.volume.add_counts(
                &row.status,
                row.messages,
                row.billed_segments,
                row.delivered,
                row.within_seven_seconds,
            );
        }
    }
    for m in &mut months {
        m.fee = Money::for_segments(m.volume.billed_segments);
    }
    let volume = months
        .iter()
        .fold(Volume::default(), |sum, m| sum.plus(&m.volume));
    let fee = Money::for_segments(volume.billed_segments);
    let spent_before = Money::for_segments(segments_before);
    let spent_to_date = spent_before.plus(fee);
    let payable_fee = fee.min(BUDGET.saturating_sub(spent_before));

    let mut penalties = Vec::new();
    if !volume.success().meets(SUCCESS_THRESHOLD_PERCENT) {
        penalties.push(Penalty {
            clause: "6.9",
            reason: format!(
                "success rate {} under {SUCCESS_THRESHOLD_PERCENT}% / 成功率低于 {SUCCESS_THRESHOLD_PERCENT}%",
                volume.success().display()
            ),
            amount: PENALTY_PER_PERIOD,
        });
    }
    if !volume.timeliness().meets(TIMELINESS_THRESHOLD_PERCENT) {
        penalties.push(Penalty {
            clause: "6.10",
            reason: format!(
                "timeliness rate {} under {TIMELINESS_THRESHOLD_PERCENT}% / 及时率低于 {TIMELINESS_THRESHOLD_PERCENT}%",
                volume.timeliness().display()
            ),
            amount: PENALTY_PER_PERIOD,
        });
    }
    let deducted = penalties
        .iter()
        .fold(Money::ZERO, |sum, p| sum.plus(p.amount));
    Ok(Billing {
        quarter,
        contract_start,
        months,
        volume,
        fee,
        spent_before,
        spent_to_date,
        payable_fee,
        net_payable: payable_fee.saturating_sub(deducted),
        penalties,
        sql: vec![sql],
    })
}

/// The settlement as Markdown (readable as plain text on a terminal).
pub fn markdown(b: &Billing) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# 季度结算 Quarterly billing and SLA: {} (contract from {})\n",
        b.quarter, b.contract_start
    );
    let _ = writeln!(
        out,
        "Price 单价: 0.{PRICE_PER_SEGMENT_LI:03} yuan per billed segment (4.2). Amounts in yuan 元.\n"
    );
    let _ = writeln!(
        out,
        "| 月份 Month | 计费条数 Billed segments | 费用 Fee | 成功率 Success | 及时率 Timeliness |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for m in &b.months {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            m.month,
            group_thousands(m.volume.billed_segments),
            m.fee,
            m.volume.success().display(),
            m.volume.timeliness().display()
        );
    }
    let _ = writeln!(
        out,
        "| **{}** | **{}** | **{}** | **{}** | **{}** |\n",
        b.quarter,
        group_thousands(b.volume.billed_segments),
        b.fee,
        b.volume.success().display(),
        b.volume.timeliness().display()
    );
    let _ = writeln!(out, "| 预算 Budget (4.1.5) | 元 yuan |\n|---|---:|");
    let _ = writeln!(out, "| 预算 Budget | {BUDGET} |");
    let _ = writeln!(
        out,
        "| 本季度前已用 Spent before this quarter | {} |",
        b.spent_before
    );
    let _ = writeln!(
        out,
        "| 截至本季度末已用 Spent to the quarter's end | {} |",
        b.spent_to_date
    );
    let _ = writeln!(
        out,
        "| 预算余额 Budget left | {} |",
        BUDGET.saturating_sub(b.spent_to_date)
    );
    let _ = writeln!(
        out,
        "| 本季度应付（预算内） Fee payable within the budget | {} |\n",
        b.payable_fee
    );
    let _ = writeln!(
        out,
        "| 扣款 Deduction | 条款 Clause | 元 yuan |\n|---|---|---:|"
    );
    if b.penalties.is_empty() {
        let _ = writeln!(out, "| 无 none: success ≥ {SUCCESS_THRESHOLD_PERCENT}% and timeliness ≥ {TIMELINESS_THRESHOLD_PERCENT}% | 6.9, 6.10 | 0.000 |");
    }
    for p in &b.penalties {
        let _ = writeln!(out, "| {} | {} | {} |", p.reason, p.clause, p.amount);
    }
    let _ = writeln!(out, "\n**实付 Net payable: {} yuan**\n", b.net_payable);
    let _ = writeln!(
        out,
        "Not included: deductions under 6.4 (trace requests), 6.5 (faults) and 6.6 (monthly reports), which rest on records outside ClickHouse."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_spans_the_contract_start_to_the_quarter_end() {
        let sql = billing_sql(
            Month::parse("2026-01").unwrap(),
            Quarter::parse("2026Q4").unwrap(),
        );
        assert!(
            sql.contains("day >= '2026-01-01' AND day < '2027-01-01'"),
            "{sql}"
        );
    }
}
