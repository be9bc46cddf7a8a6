//! The contract's figures from the system's own data: with a carrier that
//! delivers 99.3% of messages and reports 3% of them only after 8 seconds,
//! the monthly report's success and timeliness rates are exactly what the
//! simulator did. A test binary of its own, so that no other test's load
//! pushes a quick report past the 7-second line.

#[path = "stack.rs"]
mod stack;

use std::time::Duration;

use serde_json::{json, Value};
use smsctl::monthly::{monthly_report, Rate};
use smsctl::period::Month;
use smsctl::warehouse::Warehouse;
use stack::{Options, Stack};

const MESSAGES: usize = 1_000;
const PHONES: usize = 100;

fn phone(n: usize) -> String {
    ["130", "131", "156", "186", "176"][n % 5].to_string() + &format!("{:08}", 40_000_000 + n)
}

fn instruction(n: usize) -> Value {
    let kind = if n % 2 == 0 { "NOTICE" } else { "REMINDER" };
    json!({
        "request_id": format!("contract-{n}"),
        "phone": phone(n % PHONES),
        "kind": kind,
        "text": format!("第{n}号通知：您的驾驶证将于下月到期，请及时换证。"),
    })
}

#[tokio::test]
async fn the_monthly_rates_equal_what_the_carrier_did() {
    let reports = "[reports]\n\
        delay = { kind = \"weighted\", choices = [{ delay_ms = 100, weight = 97 }, { delay_ms = 8000, weight = 3 }] }\n\
        outcomes = [{ state = 0, error_code = 0, weight = 993 }, { state = 2, error_code = 29, weight = 4 }, { state = 2, error_code = 25, weight = 3 }]\n";
    let stack = Stack::start_with(
        "e2e_contract",
        Options {
            reports: Some(reports.into()),
            ..Options::default()
        },
    )
    .await;
    let phones: Vec<String> = (0..PHONES).map(phone).collect();
    stack.subscribe(&phones).await;

    // Paced at about 100 a second, so that no request waits in a backlog
    // long enough to turn a quick report into a late one.
    let messages: Vec<Value> = (0..MESSAGES).map(instruction).collect();
    let mut accepted = std::collections::HashSet::new();
    for chunk in messages.chunks(50) {
        accepted.extend(stack.send_all(chunk, 50).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(accepted.len(), MESSAGES, "every request was accepted");
    let finals = stack::wait_final(&stack, &accepted, Duration::from_secs(300)).await;
    let missing = accepted
        .iter()
        .filter(|id| !finals.contains_key(*id))
        .count();
    assert_eq!(missing, 0, "logs in {}", stack.logs().display());

    // What the carrier did: one report per message (every text is one segment).
    let counts = stack.counts().await;
    let reported: u64 = counts.reports_by_state.values().sum();
    assert_eq!(reported, MESSAGES as u64, "one report per message");
    assert_eq!(counts.duplicates(), 0, "a clean run sends nothing twice");
    let delivered = counts.reports_by_state.get(&0).copied().unwrap_or(0);
    let late: u64 = counts
        .reports_by_delay_s
        .iter()
        .filter(|(seconds, _)| **seconds >= 7)
        .map(|(_, n)| n)
        .sum();
    assert!(late > 0, "some reports were drawn late");
    assert!(delivered < reported, "some reports were failures");

    // What the monthly report says, read from ClickHouse as smsctl reads it.
    let today = chrono::Utc::now()
        .with_timezone(&smsctl::period::beijing())
        .date_naive();
    let warehouse = Warehouse::from_client(
        stack.clickhouse.clone(),
        &sms_harness::services()
            .await
            .expect("services")
            .clickhouse_url,
        &stack.database,
    );
    let report = monthly_report(&warehouse, Month::of(today))
        .await
        .expect("the monthly report reads");
    assert_eq!(report.total.carrier_messages, reported);
    assert_eq!(report.total.refused, 0);
    assert_eq!(report.total.success(), Rate::new(delivered, reported));
    assert_eq!(
        report.total.timeliness(),
        Rate::new(reported - late, reported)
    );
    assert_eq!(report.success_met(), delivered * 100 >= reported * 99);
    assert_eq!(
        report.timeliness_met(),
        (reported - late) * 100 >= reported * 98
    );

    // And the page the bureau gets shows the same figures.
    let page = smsctl::report::markdown(&report);
    for rate in [report.total.success(), report.total.timeliness()] {
        assert!(
            page.contains(&rate.display()),
            "{} in the report",
            rate.display()
        );
    }
    stack.stop().await;
}
