//! Traces by message id, request id and phone number against the real ClickHouse engine.

mod common;

use common::{beijing_ms, last_month, message, month_traffic, store, warehouse, Outcome};
use sms_core::events::{FailureCategory, MessageKind, RefusalReason};
use smsctl::trace::{mask_phone, trace, TraceTarget};

#[tokio::test]
async fn a_trace_shows_every_event_of_a_message_with_its_reports() {
    let (warehouse, settings) = warehouse("smsctl_trace").await;
    let month = last_month();
    let day = month.first_day() + chrono::Days::new(2);
    let phone = "8613011112222";
    let traced = vec![
        message(
            1,
            phone,
            MessageKind::Notice,
            beijing_ms(day, 8, 0, 0, 0),
            3,
            Outcome::Delivered(2_400),
        ),
        message(
            2,
            phone,
            MessageKind::VerificationCode,
            beijing_ms(day, 9, 0, 0, 0),
            1,
            Outcome::Failed(25, FailureCategory::PoweredOff, 8_100),
        ),
        message(
            3,
            phone,
            MessageKind::Reminder,
            beijing_ms(day, 10, 0, 0, 0),
            1,
            Outcome::Refused(RefusalReason::NotSubscribed),
        ),
        // Outside the phone window below.
        message(
            4,
            phone,
            MessageKind::Notice,
            beijing_ms(day + chrono::Days::new(5), 10, 0, 0, 0),
            1,
            Outcome::NoReport,
        ),
    ];
    // Other traffic, to other numbers.
    let noise = month_traffic(month, 300, 1_000, 3, 20);
    store(&settings, &traced, "traced").await;
    store(&settings, &noise, "noise").await;

    // By message id: request, 3 submits, 3 responses, 3 reports, final.
    let found = trace(
        &warehouse,
        TraceTarget::Messages(vec![traced[0].message_id.clone()]),
    )
    .await
    .expect("trace");
    assert_eq!(found.messages.len(), 1);
    let m = &found.messages[0];
    let kinds: Vec<&str> = m.events.iter().map(|e| e.event_kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "submitted").count(), 3);
    assert_eq!(
        kinds.iter().filter(|k| **k == "gateway_response").count(),
        3
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "report").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(kinds.first(), Some(&"requested"));
    assert_eq!(kinds.last(), Some(&"final_status"));
    assert!(m
        .events
        .windows(2)
        .all(|w| w[0].event_time <= w[1].event_time));
    assert_eq!(m.accepted_at, traced[0].accepted_at);
    let final_status = m.final_status().expect("final status");
    assert_eq!(final_status.state, "DELIVERED");
    assert_eq!(final_status.latency_ms, Some(2_400));
    assert_eq!(final_status.billed_segments, 3);

    let terminal = smsctl::trace::terminal(&found);
    assert!(
        terminal.contains(&mask_phone(phone)) && !terminal.contains(phone),
        "masked on the terminal"
    );
    assert!(terminal.contains("+2.400 s"), "{terminal}");
    assert!(
        terminal.contains("Report for segment 3/3")
            || terminal.contains("Report for segment 3: DELIVERED"),
        "{terminal}"
    );

    // The report for the bureau shows the number in full, in both formats.
    let dir = std::env::temp_dir().join(sms_harness::unique_name("trace_out"));
    let files =
        smsctl::trace::write_report(&found, &dir, sms_core::events::now_millis()).expect("written");
    assert_eq!(files.len(), 2);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        assert!(text.contains(phone) && text.contains(&traced[0].message_id));
        assert!(text.contains("DELIVERED"));
    }
    let _ = std::fs::remove_dir_all(&dir);

    // By request id.
    let found = trace(
        &warehouse,
        TraceTarget::Request {
            request_id: traced[1].request_id.clone(),
            window: None,
        },
    )
    .await
    .expect("trace");
    let ids: Vec<&str> = found
        .messages
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    assert!(ids.contains(&traced[1].message_id.as_str()), "{ids:?}");
    let failed = found
        .messages
        .iter()
        .find(|m| m.message_id == traced[1].message_id)
        .expect("found");
    let status = failed.final_status().expect("final");
    assert_eq!(
        (
            status.state.as_str(),
            status.error_code.as_str(),
            status.within_seven_seconds
        ),
        ("FAILED", "25", 0)
    );

    // By phone over a window: the three messages of that day, not the fourth.
    let found = trace(
        &warehouse,
        TraceTarget::Phone {
            phone: phone.into(),
            from: beijing_ms(day, 0, 0, 0, 0),
            to: beijing_ms(day + chrono::Days::new(1), 0, 0, 0, 0),
        },
    )
    .await
    .expect("trace");
    let ids: Vec<&str> = found
        .messages
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            &traced[0].message_id,
            &traced[1].message_id,
            &traced[2].message_id
        ]
        .map(String::as_str)
    );
    // Each timeline, carrier reports included, is the one a trace by its
    // message id gives.
    for message in &found.messages {
        let by_id = trace(
            &warehouse,
            TraceTarget::Messages(vec![message.message_id.clone()]),
        )
        .await
        .expect("trace");
        assert_eq!(by_id.messages, std::slice::from_ref(message));
    }
    assert!(found.messages[0]
        .events
        .iter()
        .any(|e| e.event_kind == "report" && e.state == "DELIVERED"));
    let refused = &found.messages[2];
    assert!(refused
        .events
        .iter()
        .any(|e| e.event_kind == "refused" && e.reason == "NOT_SUBSCRIBED"));
    assert_eq!(
        refused.final_status().map(|f| f.state.as_str()),
        Some("REJECTED")
    );

    // An unknown id gives an empty trace, not an error; a quote is refused.
    let found = trace(
        &warehouse,
        TraceTarget::Messages(vec!["no-such-message".into()]),
    )
    .await
    .expect("trace");
    assert!(found.messages.is_empty());
    assert!(
        trace(&warehouse, TraceTarget::Messages(vec!["x' OR '1".into()]))
            .await
            .is_err()
    );
}
