//! The monthly report and the quarterly billing against the real ClickHouse engine, on generated traffic whose figures are known.

mod common;

use std::collections::BTreeMap;

use common::{day_of, last_month, month_traffic, store, warehouse, Message, Outcome};
use sms_core::events::MessageKind;
use smsctl::billing::billing;
use smsctl::money::{Money, BUDGET, PENALTY_PER_PERIOD};
use smsctl::monthly::{monthly_report, Volume};
use smsctl::period::{Month, Quarter};

/// The volume of `messages` counted the way the report defines it.
fn truth(messages: &[&Message]) -> Volume {
    let carrier: Vec<&&Message> = messages.iter().filter(|m| m.to_carrier()).collect();
    Volume {
        messages: messages.len() as u64,
        billed_segments: messages.iter().map(|m| m.billed()).sum(),
        carrier_messages: carrier.len() as u64,
        delivered: carrier.iter().filter(|m| m.delivered()).count() as u64,
        within_seven_seconds: carrier.iter().filter(|m| m.timely()).count() as u64,
        refused: (messages.len() - carrier.len()) as u64,
    }
}

fn exact_quantile(sorted: &[i64], level: f64) -> i64 {
    let index = ((level * sorted.len() as f64).floor() as usize).min(sorted.len() - 1);
    sorted[index]
}

#[tokio::test]
async fn the_monthly_report_equals_the_generated_figures() {
    let (warehouse, settings) = warehouse("smsctl_monthly").await;
    let month = last_month();
    let current = month_traffic(month, 900, 0, 7, 40);
    let previous = month_traffic(month.previous(), 300, 10_000, 11, 5);
    store(&settings, &current, "current").await;
    store(&settings, &previous, "previous").await;

    let report = monthly_report(&warehouse, month).await.expect("report");
    let all: Vec<&Message> = current.iter().collect();
    assert_eq!(report.total, truth(&all));
    assert_eq!(report.previous, truth(&previous.iter().collect::<Vec<_>>()));
    assert!(report.total.refused > 0 && report.total.delivered > 0);

    // By kind and by day.
    for kind in MessageKind::ALL {
        let of_kind: Vec<&Message> = current.iter().filter(|m| m.kind == kind).collect();
        assert_eq!(
            report
                .by_kind
                .get(kind.as_str())
                .copied()
                .unwrap_or_default(),
            truth(&of_kind),
            "{kind:?}"
        );
    }
    assert_eq!(report.by_day.len() as u32, month.days());
    for (day, volume) in &report.by_day {
        let of_day: Vec<&Message> = current
            .iter()
            .filter(|m| &day_of(m.accepted_at) == day)
            .collect();
        assert_eq!(*volume, truth(&of_day), "{day}");
    }

    // Thresholds, exactly.
    let t = truth(&all);
    assert_eq!(
        report.success_met(),
        t.delivered * 100 >= 99 * t.carrier_messages
    );
    assert_eq!(
        report.timeliness_met(),
        t.within_seven_seconds * 100 >= 98 * t.carrier_messages
    );
    assert!(
        !report.success_met(),
        "4 % failures miss the 99 % threshold"
    );

    // Failures by category and code, refusals by reason.
    let mut categories: BTreeMap<String, u64> = BTreeMap::new();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for m in &current {
        match m.outcome {
            Outcome::Failed(code, category, _) => {
                *categories
                    .entry(analytics::rows::failure_category(category).into())
                    .or_default() += 1;
                *codes.entry(code.to_string()).or_default() += 1;
            }
            Outcome::GatewayRefused(code) => {
                *categories.entry("GATEWAY_REFUSED".into()).or_default() += 1;
                *codes.entry(code.to_string()).or_default() += 1;
            }
            Outcome::NoReport => {
                *categories.entry("NO_REPORT".into()).or_default() += 1;
                *codes.entry(String::new()).or_default() += 1;
            }
            Outcome::Refused(reason) => {
                *reasons
                    .entry(analytics::rows::refusal_reason(reason).into())
                    .or_default() += 1;
            }
            Outcome::Delivered(_) => {}
        }
    }
    assert_eq!(report.failures_by_category, categories);
    let by_code: BTreeMap<String, u64> = report
        .failures_by_code
        .iter()
        .map(|f| (f.code.clone(), f.messages))
        .collect();
    assert_eq!(by_code, codes);
    let powered_off = report
        .failures_by_code
        .iter()
        .find(|f| f.code == "25")
        .expect("code 25 listed");
    assert_eq!(powered_off.category, "POWERED_OFF");
    assert!(
        powered_off.description_en.contains("switched off"),
        "{powered_off:?}"
    );
    let reported_reasons: BTreeMap<String, u64> =
        report.refusals_by_reason.iter().cloned().collect();
    assert_eq!(reported_reasons, reasons);

    // Latency percentiles, exact.
    let mut latencies: Vec<i64> = current.iter().filter_map(|m| m.latency()).collect();
    latencies.sort_unstable();
    let l = &report.latency;
    assert_eq!(l.reported, latencies.len() as u64);
    assert_eq!(
        [l.p50_ms, l.p90_ms, l.p98_ms, l.p99_ms],
        [0.5, 0.9, 0.98, 0.99].map(|q| exact_quantile(&latencies, q))
    );
    assert_eq!(l.buckets.iter().sum::<u64>(), latencies.len() as u64);
    assert_eq!(
        l.buckets[0],
        latencies.iter().filter(|&&x| x <= 1_000).count() as u64
    );

    // Every format carries the headline figures.
    let html = smsctl::report::html(&report);
    let markdown = smsctl::report::markdown(&report);
    let csv = smsctl::report::csv(&report);
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.matches("<svg").count() >= 4,
        "charts drawn"
    );
    assert!(!html.contains("src=\"http"), "self-contained");
    for text in [&html, &markdown] {
        assert!(text.contains(&report.total.success().display()));
        assert!(text.contains("未达标 NOT met"));
        assert!(text.contains("成功率 Success rate"));
    }
    assert!(csv.contains(&format!("total,{month},messages,{}", t.messages)));
    assert!(csv.contains(&format!(
        "total,{month},billed_segments,{}",
        t.billed_segments
    )));
    assert!(csv.contains("threshold,success_99,met,false"));
}

#[tokio::test]
async fn billing_prices_the_quarter_exactly_and_applies_the_deductions() {
    let (warehouse, settings) = warehouse("smsctl_billing").await;
    let month = last_month();
    let quarter = Quarter {
        year: month.year,
        quarter: (month.month - 1) / 3 + 1,
    };
    let months = quarter.months();
    let before = months[0].previous();
    let contract_start = before.previous();

    // Messages in the month before the quarter count against the budget
    // only; months of the quarter after last month hold nothing yet.
    let mut n = 0;
    let mut traffic: BTreeMap<Month, Vec<Message>> = BTreeMap::new();
    for (i, m) in [contract_start.previous(), contract_start, before]
        .into_iter()
        .chain(months.into_iter().filter(|m| *m <= month))
        .enumerate()
    {
        // Good months inside the quarter except the last, which fails 4 %.
        let failures = if m == month { 40 } else { 3 };
        let messages = month_traffic(m, 400, n, 100 + i as u64, failures);
        n += 10_000;
        store(&settings, &messages, &format!("billing-{m}")).await;
        traffic.insert(m, messages);
    }

    let b = billing(&warehouse, quarter, contract_start)
        .await
        .expect("billing");
    let segments = |m: &Month| -> u64 {
        traffic
            .get(m)
            .map_or(0, |ms| ms.iter().map(|x| x.billed()).sum())
    };
    for mb in &b.months {
        assert_eq!(
            mb.volume.billed_segments,
            segments(&mb.month),
            "{}",
            mb.month
        );
        assert_eq!(mb.fee, Money::for_segments(segments(&mb.month)));
    }
    let quarter_segments: u64 = months.iter().map(segments).sum();
    assert_eq!(b.fee.li, quarter_segments * 41);
    assert_eq!(
        b.spent_before.li,
        (segments(&contract_start) + segments(&before)) * 41,
        "the month before the contract is not counted"
    );
    assert_eq!(b.spent_to_date, b.spent_before.plus(b.fee));
    assert_eq!(b.payable_fee, b.fee, "far under the budget");

    let in_quarter: Vec<&Message> = months
        .iter()
        .flat_map(|m| traffic.get(m).into_iter().flatten())
        .collect();
    let t = truth(&in_quarter);
    assert_eq!(b.volume, t);
    let success_missed = t.delivered * 100 < 99 * t.carrier_messages;
    let timeliness_missed = t.within_seven_seconds * 100 < 98 * t.carrier_messages;
    assert_eq!(
        b.penalties.iter().any(|p| p.clause == "6.9"),
        success_missed
    );
    assert_eq!(
        b.penalties.iter().any(|p| p.clause == "6.10"),
        timeliness_missed
    );
    let deducted =
        PENALTY_PER_PERIOD.li * (u64::from(success_missed) + u64::from(timeliness_missed));
    assert_eq!(b.net_payable.li, b.payable_fee.li.saturating_sub(deducted));

    let text = smsctl::billing::markdown(&b);
    assert!(text.contains(&b.fee.to_string()) && text.contains(&BUDGET.to_string()));
    // The printed SQL reproduces the quarter's billed segments.
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Segments {
        billed: u64,
    }
    let first = months[0].first_day();
    let sql = format!(
        "SELECT sum(billed_segments) AS billed FROM ({}) WHERE month >= '{first}'",
        b.sql[0]
    );
    let rows: Vec<Segments> = warehouse.fetch("test", &sql).await.expect("sql runs");
    assert_eq!(rows[0].billed, quarter_segments);
}
