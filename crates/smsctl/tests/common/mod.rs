//! Generated traffic with known figures, stored in a test database through the analytics schema and row mapping.

#![allow(dead_code)]

use analytics::config::ClickHouseSettings;
use analytics::rows::{self, EventRow, SourcePosition};
use analytics::store::EventStore;
use chrono::{Datelike, NaiveDate, TimeZone};
use sms_core::events::{
    CarrierReport, DispatchEvent, DispatchOutcome, FailureCategory, FinalState, FinalStatus,
    MessageKind, RefusalReason, ReportState, RequestSource, SequenceTriple, SmsRequest,
    SubmittedSegment,
};
use smsctl::period::{beijing, Month};
use smsctl::warehouse::Warehouse;

/// A test database with the analytics schema applied.
pub async fn warehouse(label: &str) -> (Warehouse, ClickHouseSettings) {
    let services = sms_harness::services().await.expect("services");
    let (client, database) = sms_harness::clickhouse_for_test(label)
        .await
        .expect("clickhouse");
    let settings = ClickHouseSettings {
        url: services.clickhouse_url.clone(),
        database: database.clone(),
        ..ClickHouseSettings::default()
    };
    analytics::schema::migrate(&settings, 13)
        .await
        .expect("schema applies");
    (
        Warehouse::from_client(client, &services.clickhouse_url, &database),
        settings,
    )
}

/// The month before the current one (always inside the 13-month TTL).
pub fn last_month() -> Month {
    let today = chrono::Utc::now().with_timezone(&beijing()).date_naive();
    Month::of(today).previous()
}

/// Unix ms of a Beijing wall time.
pub fn beijing_ms(date: NaiveDate, h: u32, m: u32, s: u32, ms: i64) -> i64 {
    let naive = date.and_hms_opt(h, m, s).expect("valid time");
    beijing()
        .from_local_datetime(&naive)
        .single()
        .expect("unambiguous")
        .timestamp_millis()
        + ms
}

/// What happened to one generated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; the report came this many ms after acceptance.
    Delivered(i64),
    /// The handset failed: error code, category, report latency.
    Failed(i32, FailureCategory, i64),
    /// Submitted, never reported.
    NoReport,
    /// Refused by policy.
    Refused(RefusalReason),
    /// The gateway refused the Submit with this result.
    GatewayRefused(i32),
}

/// One generated message and the records the system wrote for it.
#[derive(Debug, Clone)]
pub struct Message {
    pub n: u64,
    pub message_id: String,
    pub request_id: String,
    pub phone: String,
    pub kind: MessageKind,
    pub accepted_at: i64,
    pub segments: i32,
    pub outcome: Outcome,
    pub request: SmsRequest,
    pub dispatch: DispatchEvent,
    pub reports: Vec<CarrierReport>,
    pub status: FinalStatus,
}

impl Message {
    pub fn billed(&self) -> u64 {
        match self.outcome {
            Outcome::Refused(_) | Outcome::GatewayRefused(_) => 0,
            _ => self.segments as u64,
        }
    }
    pub fn to_carrier(&self) -> bool {
        !matches!(self.outcome, Outcome::Refused(_))
    }
    pub fn delivered(&self) -> bool {
        matches!(self.outcome, Outcome::Delivered(_))
    }
    pub fn timely(&self) -> bool {
        self.status.within_seven_seconds
    }
    pub fn latency(&self) -> Option<i64> {
        match self.outcome {
            Outcome::Delivered(l) | Outcome::Failed(_, _, l) => Some(l),
            _ => None,
        }
    }
}

/// A small deterministic generator (xorshift).
pub struct Draw(u64);

impl Draw {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Builds one message accepted at `accepted_at` with `outcome`.
pub fn message(
    n: u64,
    phone: &str,
    kind: MessageKind,
    accepted_at: i64,
    segments: i32,
    outcome: Outcome,
) -> Message {
    let message_id = format!("{:08x}-0000-4000-8000-{:012x}", n, accepted_at);
    let request_id = format!("req-{n}");
    let request = SmsRequest {
        message_id: message_id.clone(),
        request_id: request_id.clone(),
        client_id: "platform".into(),
        phone: phone.into(),
        kind,
        text: "【交管12123】您有一条交通违法记录待处理。".into(),
        template_id: None,
        sp_extension: None,
        source: RequestSource::Http,
        accepted_at,
        expires_at: None,
        scheduled_at: None,
        attempt: 0,
        not_before: None,
    };
    let dispatched_at = accepted_at + 30;
    let seg = |i: i32, result: i32| SubmittedSegment {
        index: i,
        sequence: SequenceTriple::new(
            3_075_512_345,
            (n % 1_000_000) as u32,
            i as u32 + (n as u32 % 100_000) * 10,
        ),
        submitted_at: dispatched_at - 10,
        response_at: Some(dispatched_at),
        result,
    };
    let (outcome_kind, reason, gateway_result, segs, billed) = match outcome {
        Outcome::Refused(reason) => (DispatchOutcome::Refused, Some(reason), None, vec![], 0),
        Outcome::GatewayRefused(code) => (
            DispatchOutcome::Failed,
            Some(RefusalReason::GatewayRefused),
            Some(code),
            vec![seg(0, code)],
            0,
        ),
        _ => (
            DispatchOutcome::Submitted,
            None,
            Some(0),
            (0..segments).map(|i| seg(i, 0)).collect(),
            segments,
        ),
    };
    let dispatch = DispatchEvent {
        message_id: message_id.clone(),
        request_id: request_id.clone(),
        phone: phone.into(),
        kind,
        outcome: outcome_kind,
        reason,
        detail: None,
        gateway_result,
        segments: segs.clone(),
        billed_segments: billed,
        attempt: 0,
        accepted_at,
        dispatched_at,
        not_before: None,
    };
    let mut reports = Vec::new();
    let (state, category, code, report_at, refusal) = match outcome {
        Outcome::Delivered(latency) => (
            FinalState::Delivered,
            None,
            None,
            Some(accepted_at + latency),
            None,
        ),
        Outcome::Failed(code, category, latency) => (
            FinalState::Failed,
            Some(category),
            Some(code),
            Some(accepted_at + latency),
            None,
        ),
        Outcome::NoReport => (FinalState::Unknown, None, None, None, None),
        Outcome::Refused(RefusalReason::Expired) => (
            FinalState::Expired,
            Some(FailureCategory::Expired),
            None,
            None,
            Some(RefusalReason::Expired),
        ),
        Outcome::Refused(reason) => (FinalState::Rejected, None, None, None, Some(reason)),
        Outcome::GatewayRefused(code) => (
            FinalState::Failed,
            Some(FailureCategory::GatewayRefused),
            Some(code),
            None,
            Some(RefusalReason::GatewayRefused),
        ),
    };
    if let Some(at) = report_at {
        for s in &segs {
            reports.push(CarrierReport {
                submit_sequence: s.sequence,
                report_sequence: SequenceTriple::new(3_075_599_999, 1, n as u32),
                phone: phone.into(),
                report_type: 0,
                state: if state == FinalState::Delivered {
                    ReportState::Delivered
                } else {
                    ReportState::Failed
                },
                error_code: code.unwrap_or(0),
                received_at: at,
            });
        }
    }
    let decided_at = report_at.unwrap_or(match outcome {
        Outcome::NoReport => accepted_at + 600_000,
        _ => dispatched_at,
    });
    let within = match outcome {
        Outcome::NoReport => false,
        _ => {
            sms_core::events::within_seven_seconds(accepted_at, report_at.unwrap_or(dispatched_at))
        }
    };
    let status = FinalStatus {
        message_id: message_id.clone(),
        request_id: request_id.clone(),
        phone: phone.into(),
        kind,
        status: state,
        failure_category: category,
        error_code: code,
        refusal_reason: refusal,
        billed_segments: billed,
        segments_delivered: if state == FinalState::Delivered {
            segments
        } else {
            0
        },
        accepted_at,
        submitted_at: segs.first().map(|s| s.submitted_at),
        gateway_response_at: segs.first().and_then(|s| s.response_at),
        report_at,
        decided_at,
        within_seven_seconds: within,
    };
    Message {
        n,
        message_id,
        request_id,
        phone: phone.into(),
        kind,
        accepted_at,
        segments,
        outcome,
        request,
        dispatch,
        reports,
        status,
    }
}

/// `count` messages accepted across `month`, with a mix of every outcome;
/// the first and last land a few hundred ms inside the month's edges.
pub fn month_traffic(
    month: Month,
    count: u64,
    first_n: u64,
    seed: u64,
    failure_per_mille: u64,
) -> Vec<Message> {
    let mut draw = Draw::new(seed);
    let start = beijing_ms(month.first_day(), 0, 0, 0, 0);
    let end = beijing_ms(month.next().first_day(), 0, 0, 0, 0);
    let mut out = Vec::new();
    for i in 0..count {
        let n = first_n + i;
        let accepted_at = match i {
            0 => start + 300,
            i if i + 1 == count => end - 400,
            _ => start + 1_000 + draw.next((end - start - 2_000) as u64) as i64,
        };
        let kind = MessageKind::ALL[draw.next(3) as usize];
        let segments = 1 + draw.next(3) as i32;
        let roll = draw.next(1000);
        let outcome = if roll < failure_per_mille / 2 {
            let (code, category) = [
                (25, FailureCategory::PoweredOff),
                (6, FailureCategory::NoSuchNumber),
                (26, FailureCategory::PoweredOff),
            ][draw.next(3) as usize];
            Outcome::Failed(code, category, 500 + draw.next(12_000) as i64)
        } else if roll < failure_per_mille * 3 / 4 {
            Outcome::NoReport
        } else if roll < failure_per_mille {
            Outcome::GatewayRefused(11)
        } else if roll < failure_per_mille + 30 {
            Outcome::Refused(
                [
                    RefusalReason::NotSubscribed,
                    RefusalReason::ContentPolicy,
                    RefusalReason::Expired,
                ][draw.next(3) as usize],
            )
        } else {
            Outcome::Delivered(300 + draw.next(9_000) as i64)
        };
        let phone = format!("8613{:09}", 100 + draw.next(50));
        out.push(message(n, &phone, kind, accepted_at, segments, outcome));
    }
    out
}

/// Every `sms_events` row the sink would store for `messages`, as if read
/// from the system's topics at consecutive offsets.
pub fn event_rows(messages: &[Message]) -> Vec<EventRow> {
    let mut rows = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = |topic: &'static str| SourcePosition {
            topic,
            partition: 0,
            offset: i as i64,
        };
        rows.extend(rows::request_rows(
            &m.request,
            at("sms.requests.notify"),
            false,
        ));
        rows.extend(rows::dispatch_rows(&m.dispatch, at("sms.dispatch")));
        for (j, r) in m.reports.iter().enumerate() {
            rows.extend(rows::report_rows(
                r,
                SourcePosition {
                    topic: "sms.reports",
                    partition: 0,
                    offset: (i * 4 + j) as i64,
                },
            ));
        }
        rows.extend(rows::final_status_rows(&m.status, at("sms.status")));
    }
    rows
}

/// Stores `messages` in the test database through the analytics sink's store.
pub async fn store(settings: &ClickHouseSettings, messages: &[Message], token: &str) {
    let store = EventStore::new(settings.client());
    for (k, chunk) in event_rows(messages).chunks(50_000).enumerate() {
        store
            .insert(chunk, &format!("{token}-{k}"))
            .await
            .expect("rows stored");
    }
}

/// The day (Beijing) of a Unix ms time, as `YYYY-MM-DD`.
pub fn day_of(ms: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .with_timezone(&beijing());
    format!("{:04}-{:02}-{:02}", at.year(), at.month(), at.day())
}
