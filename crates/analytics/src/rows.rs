//! The rows of `sms_events`: how each topic record becomes one or more lifecycle events.

use serde::{Deserialize, Serialize};
use sms_core::events::{
    CarrierReport, DeadLetter, DeadLetterError, DispatchEvent, DispatchOutcome, FailureCategory,
    FinalState, FinalStatus, Millis, RefusalReason, ReportState, SmsRequest, SubscriptionRecord,
    SubscriptionSource, SubscriptionState, UplinkMessage,
};

use crate::privacy::stored_text;

/// The table every event goes to.
pub const EVENTS_TABLE: &str = "sms_events";

/// Where a record was read: the row's provenance and the offset the sink
/// commits and deduplicates by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// One row of `sms_events`; `recorded_at` is filled in by ClickHouse.
/// Timestamps are Unix milliseconds (`DateTime64(3)`).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct EventRow {
    pub event_id: String,
    pub event_time: i64,
    pub event_kind: String,
    pub message_id: String,
    pub request_id: String,
    pub client_id: String,
    pub phone: String,
    pub message_kind: String,
    pub state: String,
    pub reason: String,
    pub failure_category: String,
    pub error_code: String,
    pub segment_index: i16,
    pub billed_segments: u16,
    pub segments_delivered: u16,
    pub sequence: String,
    pub text: String,
    pub attempt: u16,
    pub accepted_at: i64,
    pub latency_ms: Option<i64>,
    pub within_seven_seconds: u8,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
}

impl EventRow {
    /// The `n`th row made from the record at `position`, with every other
    /// column empty.
    fn new(position: SourcePosition<'_>, n: usize, kind: &str, time: Millis) -> Self {
        Self {
            event_id: format!(
                "{}/{}/{}/{n}",
                position.topic, position.partition, position.offset
            ),
            event_time: time,
            event_kind: kind.into(),
            message_id: String::new(),
            request_id: String::new(),
            client_id: String::new(),
            phone: String::new(),
            message_kind: String::new(),
            state: String::new(),
            reason: String::new(),
            failure_category: String::new(),
            error_code: String::new(),
            segment_index: -1,
            billed_segments: 0,
            segments_delivered: 0,
            sequence: String::new(),
            text: String::new(),
            attempt: 0,
            accepted_at: 0,
            latency_ms: None,
            within_seven_seconds: 0,
            source_topic: position.topic.into(),
            source_partition: position.partition,
            source_offset: position.offset,
        }
    }
}

/// A request accepted by ingest (`requested`) or queued for a later attempt
/// (`retry_queued`).
pub fn request_rows(
    request: &SmsRequest,
    position: SourcePosition<'_>,
    retry: bool,
) -> Vec<EventRow> {
    let (kind, time) = if retry {
        (
            "retry_queued",
            request.not_before.unwrap_or(request.accepted_at),
        )
    } else {
        ("requested", request.accepted_at)
    };
    let mut row = EventRow::new(position, 0, kind, time);
    row.message_id.clone_from(&request.message_id);
    row.request_id.clone_from(&request.request_id);
    row.client_id.clone_from(&request.client_id);
    row.phone.clone_from(&request.phone);
    row.message_kind = request.kind.as_str().into();
    row.text = stored_text(request.kind, &request.text);
    row.attempt = clamp_u16(request.attempt);
    row.accepted_at = request.accepted_at;
    vec![row]
}

/// The dispatcher's decision: `refused`, `retrying` or `dispatch_failed`
/// once, or for a submitted message one `submitted` row per segment (billed
/// 1 when the gateway accepted it) and one `gateway_response` row per
/// segment answered.
pub fn dispatch_rows(event: &DispatchEvent, position: SourcePosition<'_>) -> Vec<EventRow> {
    let base = |n: usize, kind: &str, time: Millis| {
        let mut row = EventRow::new(position, n, kind, time);
        row.message_id.clone_from(&event.message_id);
        row.request_id.clone_from(&event.request_id);
        row.phone.clone_from(&event.phone);
        row.message_kind = event.kind.as_str().into();
        row.state = dispatch_outcome(event.outcome).into();
        row.reason = event.reason.map(refusal_reason).unwrap_or_default().into();
        row.attempt = clamp_u16(event.attempt);
        row.accepted_at = event.accepted_at;
        row
    };
    let decision = match event.outcome {
        DispatchOutcome::Submitted => None,
        DispatchOutcome::Refused => Some("refused"),
        DispatchOutcome::Retrying => Some("retrying"),
        DispatchOutcome::Failed => Some("dispatch_failed"),
    };
    if let Some(kind) = decision {
        let mut row = base(0, kind, event.dispatched_at);
        row.error_code = event
            .gateway_result
            .map(|c| c.to_string())
            .unwrap_or_default();
        row.billed_segments = clamp_u16(event.billed_segments);
        return vec![row];
    }
    let mut rows = Vec::with_capacity(event.segments.len() * 2);
    for segment in &event.segments {
        let mut row = base(rows.len(), "submitted", segment.submitted_at);
        row.segment_index = i16::try_from(segment.index).unwrap_or(i16::MAX);
        row.sequence = segment.sequence.to_string();
        row.billed_segments = u16::from(segment.result == 0);
        rows.push(row);
        if let Some(response_at) = segment.response_at {
            let mut row = base(rows.len(), "gateway_response", response_at);
            row.segment_index = i16::try_from(segment.index).unwrap_or(i16::MAX);
            row.sequence = segment.sequence.to_string();
            row.error_code = segment.result.to_string();
            row.latency_ms = Some(response_at - segment.submitted_at);
            rows.push(row);
        }
    }
    rows
}

/// A carrier Report for one segment, keyed by the Submit's sequence triple.
pub fn report_rows(report: &CarrierReport, position: SourcePosition<'_>) -> Vec<EventRow> {
    let mut row = EventRow::new(position, 0, "report", report.received_at);
    row.phone.clone_from(&report.phone);
    row.state = report_state(report.state).into();
    row.error_code = report.error_code.to_string();
    row.sequence = report.submit_sequence.to_string();
    vec![row]
}

/// A message a user sent to the access number; its id goes in `message_id`.
pub fn uplink_rows(uplink: &UplinkMessage, position: SourcePosition<'_>) -> Vec<EventRow> {
    let mut row = EventRow::new(position, 0, "uplink", uplink.received_at);
    row.message_id.clone_from(&uplink.uplink_id);
    row.phone.clone_from(&uplink.phone);
    row.sequence = uplink.sequence.to_string();
    row.text = match &uplink.text {
        Some(text) => text.clone(),
        None => String::from_utf8_lossy(&uplink.content).into_owned(),
    };
    row.reason.clone_from(&uplink.sp_number);
    vec![row]
}

/// The final status with the contract's timings; what the aggregates count.
pub fn final_status_rows(status: &FinalStatus, position: SourcePosition<'_>) -> Vec<EventRow> {
    let mut row = EventRow::new(position, 0, "final_status", status.decided_at);
    row.message_id.clone_from(&status.message_id);
    row.request_id.clone_from(&status.request_id);
    row.phone.clone_from(&status.phone);
    row.message_kind = status.kind.as_str().into();
    row.state = final_state(status.status).into();
    row.reason = status
        .refusal_reason
        .map(refusal_reason)
        .unwrap_or_default()
        .into();
    row.failure_category = status
        .failure_category
        .map(failure_category)
        .unwrap_or_default()
        .into();
    row.error_code = status.error_code.map(|c| c.to_string()).unwrap_or_default();
    row.billed_segments = clamp_u16(status.billed_segments);
    row.segments_delivered = clamp_u16(status.segments_delivered);
    row.accepted_at = status.accepted_at;
    row.latency_ms = status.report_at.map(|at| at - status.accepted_at);
    row.within_seven_seconds = u8::from(status.within_seven_seconds);
    vec![row]
}

/// A change of a number's opt-in; the kinds it allows go in `text`.
pub fn subscription_rows(
    record: &SubscriptionRecord,
    position: SourcePosition<'_>,
) -> Vec<EventRow> {
    let mut row = EventRow::new(position, 0, "subscription", record.changed_at);
    row.phone.clone_from(&record.phone);
    row.state = match record.state {
        SubscriptionState::Registered => "REGISTERED",
        SubscriptionState::Cancelled => "CANCELLED",
    }
    .into();
    row.reason = match record.source {
        SubscriptionSource::Api => "API",
        SubscriptionSource::UplinkKeyword => "UPLINK_KEYWORD",
        SubscriptionSource::NumberChange => "NUMBER_CHANGE",
    }
    .into();
    row.client_id = record.client_id.clone().unwrap_or_default();
    row.text = record
        .kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",");
    vec![row]
}

/// A record some consumer could not process. The payload is not stored (it
/// may hold a verification code); where it came from and why are.
pub fn dead_letter_rows(letter: &DeadLetter, position: SourcePosition<'_>) -> Vec<EventRow> {
    let mut row = EventRow::new(position, 0, "dead_letter", letter.recorded_at);
    row.state = letter.service.clone();
    row.reason = match letter.error {
        DeadLetterError::Undecodable => "UNDECODABLE",
        DeadLetterError::Invalid => "INVALID",
        DeadLetterError::Unmatched => "UNMATCHED",
    }
    .into();
    row.text = format!(
        "{}/{}@{}: {}",
        letter.source_topic, letter.source_partition, letter.source_offset, letter.reason
    );
    vec![row]
}

fn clamp_u16(n: i32) -> u16 {
    u16::try_from(n.max(0)).unwrap_or(u16::MAX)
}

/// The Avro symbols, as stored.
pub fn dispatch_outcome(outcome: DispatchOutcome) -> &'static str {
    match outcome {
        DispatchOutcome::Submitted => "SUBMITTED",
        DispatchOutcome::Refused => "REFUSED",
        DispatchOutcome::Retrying => "RETRYING",
        DispatchOutcome::Failed => "FAILED",
    }
}

pub fn refusal_reason(reason: RefusalReason) -> &'static str {
    match reason {
        RefusalReason::Expired => "EXPIRED",
        RefusalReason::NotUnicom => "NOT_UNICOM",
        RefusalReason::NotSubscribed => "NOT_SUBSCRIBED",
        RefusalReason::ContentPolicy => "CONTENT_POLICY",
        RefusalReason::Duplicate => "DUPLICATE",
        RefusalReason::FrequencyCap => "FREQUENCY_CAP",
        RefusalReason::BudgetExhausted => "BUDGET_EXHAUSTED",
        RefusalReason::InvalidRequest => "INVALID_REQUEST",
        RefusalReason::GatewayRefused => "GATEWAY_REFUSED",
        RefusalReason::GatewayUnavailable => "GATEWAY_UNAVAILABLE",
        RefusalReason::AttemptsExhausted => "ATTEMPTS_EXHAUSTED",
    }
}

pub fn report_state(state: ReportState) -> &'static str {
    match state {
        ReportState::Delivered => "DELIVERED",
        ReportState::Waiting => "WAITING",
        ReportState::Failed => "FAILED",
    }
}

pub fn final_state(state: FinalState) -> &'static str {
    match state {
        FinalState::Delivered => "DELIVERED",
        FinalState::Failed => "FAILED",
        FinalState::Expired => "EXPIRED",
        FinalState::Rejected => "REJECTED",
        FinalState::Unknown => "UNKNOWN",
    }
}

pub fn failure_category(category: FailureCategory) -> &'static str {
    match category {
        FailureCategory::NoSuchNumber => "NO_SUCH_NUMBER",
        FailureCategory::PoweredOff => "POWERED_OFF",
        FailureCategory::Suspended => "SUSPENDED",
        FailureCategory::Blacklisted => "BLACKLISTED",
        FailureCategory::Network => "NETWORK",
        FailureCategory::Expired => "EXPIRED",
        FailureCategory::GatewayRefused => "GATEWAY_REFUSED",
        FailureCategory::Other => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sms_core::events::{MessageKind, SequenceTriple, SubmittedSegment};

    const AT: SourcePosition<'static> = SourcePosition {
        topic: "sms.dispatch",
        partition: 2,
        offset: 41,
    };

    #[test]
    fn a_submitted_message_gives_a_row_per_segment_and_per_response() {
        let segment = |index: i32, response_at: Option<i64>, result: i32| SubmittedSegment {
            index,
            sequence: SequenceTriple::new(3075512345, 1203190405, index as u32),
            submitted_at: 1_000,
            response_at,
            result,
        };
        let event = DispatchEvent {
            message_id: "m1".into(),
            request_id: "r1".into(),
            phone: "8613012345678".into(),
            kind: MessageKind::Notice,
            outcome: DispatchOutcome::Submitted,
            reason: None,
            detail: None,
            gateway_result: Some(0),
            segments: vec![
                segment(0, Some(1_040), 0),
                segment(1, None, 0),
                segment(2, Some(1_050), 11),
            ],
            billed_segments: 2,
            attempt: 0,
            accepted_at: 900,
            dispatched_at: 1_060,
            not_before: None,
        };
        let rows = dispatch_rows(&event, AT);
        let kinds: Vec<&str> = rows.iter().map(|r| r.event_kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "submitted",
                "gateway_response",
                "submitted",
                "submitted",
                "gateway_response"
            ]
        );
        let ids: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids.len(), rows.len(), "every row has its own id");
        assert_eq!(rows[0].event_id, "sms.dispatch/2/41/0");
        let billed: u16 = rows.iter().map(|r| r.billed_segments).sum();
        assert_eq!(billed, 2, "the segment refused with 11 is not billed");
        assert_eq!(rows[4].error_code, "11");
        assert_eq!(rows[1].latency_ms, Some(40));
        assert_eq!(rows[0].sequence, "307551234512031904050000000000");
    }

    #[test]
    fn verification_code_text_is_stored_masked() {
        let request = SmsRequest {
            message_id: "m2".into(),
            request_id: "r2".into(),
            client_id: "platform".into(),
            phone: "8613012345678".into(),
            kind: MessageKind::VerificationCode,
            text: "【交管12123】验证码 739201".into(),
            template_id: None,
            sp_extension: None,
            source: sms_core::events::RequestSource::Http,
            accepted_at: 5,
            expires_at: None,
            scheduled_at: None,
            attempt: 0,
            not_before: None,
        };
        let rows = request_rows(&request, AT, false);
        assert_eq!(rows[0].text, "【交管12123】验证码 ******");
        assert_eq!(rows[0].event_kind, "requested");
    }
}
