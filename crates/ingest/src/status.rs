//! The final statuses of recent messages, read from `sms.status`, for the status query.
//!
//! Holds the last [`Limits::recent_statuses`] final statuses (one per
//! message, the latest wins), each in about 100 bytes: the id as its
//! 16-byte key and the fields the query answers. A message without a final status here is
//! answered `ACCEPTED` when this instance accepted it within its retry
//! window, else `PENDING`: no final status is known yet, which is also the
//! answer for a message older than the memory holds.
//!
//! [`Limits::recent_statuses`]: crate::config::Limits::recent_statuses

use std::sync::{Arc, Mutex};

use serde::Serialize;
use sms_core::avro::decode_single_object;
use sms_core::events::{
    now_millis, FailureCategory, FinalState, FinalStatus, Millis, RefusalReason,
};
use sms_core::ids::message_key;
use uuid::Uuid;

use crate::recent::RecentMap;
use crate::tail::Tailed;

/// What the status query answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    pub message_id: String,
    /// `ACCEPTED`, `PENDING`, or a final state (`DELIVERED`, `FAILED`,
    /// `EXPIRED`, `REJECTED`, `UNKNOWN`).
    pub state: String,
    pub is_final: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_category: Option<FailureCategory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal_reason: Option<RefusalReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billed_segments: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_seven_seconds: Option<bool>,
}

impl StatusView {
    fn not_final(message_id: String, state: &str) -> Self {
        Self {
            message_id,
            state: state.into(),
            is_final: false,
            failure_category: None,
            error_code: None,
            refusal_reason: None,
            billed_segments: None,
            accepted_at: None,
            decided_at: None,
            within_seven_seconds: None,
        }
    }

    fn from_final(message_id: String, status: &Settled) -> Self {
        let state = match status.status {
            FinalState::Delivered => "DELIVERED",
            FinalState::Failed => "FAILED",
            FinalState::Expired => "EXPIRED",
            FinalState::Rejected => "REJECTED",
            FinalState::Unknown => "UNKNOWN",
        };
        Self {
            message_id,
            state: state.into(),
            is_final: true,
            failure_category: status.failure_category,
            error_code: status.error_code,
            refusal_reason: status.refusal_reason,
            billed_segments: Some(status.billed_segments),
            accepted_at: Some(status.accepted_at),
            decided_at: Some(status.decided_at),
            within_seven_seconds: Some(status.within_seven_seconds),
        }
    }
}

/// What is kept of a final status: what the query answers, without the id
/// (the key) or any text.
#[derive(Debug, Clone, Copy)]
struct Settled {
    status: FinalState,
    failure_category: Option<FailureCategory>,
    refusal_reason: Option<RefusalReason>,
    within_seven_seconds: bool,
    error_code: Option<i32>,
    billed_segments: i32,
    accepted_at: Millis,
    decided_at: Millis,
}

impl From<&FinalStatus> for Settled {
    fn from(status: &FinalStatus) -> Self {
        Self {
            status: status.status,
            failure_category: status.failure_category,
            refusal_reason: status.refusal_reason,
            within_seven_seconds: status.within_seven_seconds,
            error_code: status.error_code,
            billed_segments: status.billed_segments,
            accepted_at: status.accepted_at,
            decided_at: status.decided_at,
        }
    }
}

/// Recent final statuses by message id.
#[derive(Clone)]
pub struct StatusBoard {
    statuses: Arc<Mutex<RecentMap<Uuid, Settled>>>,
}

impl StatusBoard {
    pub fn new(capacity: usize) -> Self {
        Self {
            // Age is bounded by the topic's retention, not here.
            statuses: Arc::new(Mutex::new(RecentMap::new(capacity, u64::MAX / 2))),
        }
    }

    /// Takes one record of `sms.status`; undecodable ones are counted and skipped.
    pub fn apply(&self, record: Tailed<'_>) {
        let Some(payload) = record.payload else {
            return;
        };
        match decode_single_object::<FinalStatus>(payload) {
            Ok(status) => {
                let key = message_key(&status.message_id);
                let mut statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
                statuses.insert(key, Settled::from(&status), now_millis());
            }
            Err(e) => {
                metrics::counter!("ingest_status_undecodable_total").increment(1);
                tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    error = %e,
                    "status record does not decode; skipped"
                );
            }
        }
    }

    /// The status of `message_id`; `accepted` says whether this instance
    /// accepted it recently.
    pub fn view(&self, message_id: &str, accepted: bool) -> StatusView {
        let statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        match statuses.get(&message_key(message_id), now_millis()) {
            Some(settled) => StatusView::from_final(message_id.into(), settled),
            None if accepted => StatusView::not_final(message_id.into(), "ACCEPTED"),
            None => StatusView::not_final(message_id.into(), "PENDING"),
        }
    }
}
