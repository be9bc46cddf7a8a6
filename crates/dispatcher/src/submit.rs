//! Submission: one message split into segments and sent over the session pool, with the gateway's answer classified.
//!
//! Segments of one message go one after the other, each with a sequence
//! triple fixed before it is written (and recorded whatever the answer).
//! While nothing of a message was accepted, a refusal that may pass later
//! (flow control, node busy, no connection) sends the whole message to the
//! retry topic. Once a segment was accepted, a passing refusal of a later
//! segment is retried in place a few times, since sending the message again
//! would repeat the accepted segments; if it still fails the message is
//! FAILED with the segments it has. A flow-control answer (33, 88) also
//! stops every Submit of this instance for `retry.throttle_pause_ms`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use sgip::text::{self, CodingChoice};
use sgip::{Pool, PoolConfig, ResultClass, SessionConfig, SubmitRequest};
use sms_core::events::{now_millis, RefusalReason, SequenceTriple, SmsRequest, SubmittedSegment};

use crate::config::{GatewaySettings, Share};
use crate::error::DispatchError;

/// Tries of one later segment after a passing refusal, before giving up.
const SEGMENT_TRIES: u32 = 3;

/// How a submission ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every segment accepted.
    Accepted,
    /// Nothing accepted; the gateway may take it later.
    Retry {
        code: Option<u8>,
        reason: RefusalReason,
        detail: String,
    },
    /// Refused for good (or partly sent and then refused).
    Failed {
        code: Option<u8>,
        reason: RefusalReason,
        detail: String,
    },
}

/// What happened to one message at the gateway.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Every Submit written, in order, with its answer (-1: none).
    pub segments: Vec<SubmittedSegment>,
    /// Segments the gateway accepted.
    pub accepted: u32,
    pub verdict: Verdict,
}

/// The session pool with this instance's share of the carrier's limits.
#[derive(Debug)]
pub struct Gateway {
    pool: Pool,
    sp_number: String,
    service_type: String,
    corp_id: String,
    coding: CodingChoice,
    throttle_pause_ms: i64,
    /// Unix milliseconds before which no Submit is written.
    throttled_until: AtomicI64,
}

impl Gateway {
    /// Starts the pool (connections open on first use).
    pub fn start(
        settings: &GatewaySettings,
        password: &str,
        share: Share,
        throttle_pause_ms: u64,
    ) -> Result<Arc<Self>, DispatchError> {
        let session = SessionConfig {
            addr: settings.addr.clone(),
            login_name: settings.login_name.clone(),
            login_password: password.to_string(),
            node_id: settings.node_id,
            window: settings.window,
            response_timeout_ms: settings.response_timeout_ms,
            max_attempts: settings.resends,
            queue_capacity: settings.window.max(16) * 4,
            ..SessionConfig::default()
        };
        let pool = Pool::start(PoolConfig {
            session,
            connections: share.connections,
            rate_limit_per_sec: share.rate_limit_per_sec,
        })
        .map_err(DispatchError::Gateway)?;
        Ok(Arc::new(Self {
            pool,
            sp_number: settings.sp_number.clone(),
            service_type: settings.service_type.clone(),
            corp_id: settings.corp_id.clone(),
            coding: settings.coding,
            throttle_pause_ms: i64::try_from(throttle_pause_ms).unwrap_or(i64::MAX),
            throttled_until: AtomicI64::new(0),
        }))
    }

    /// Sessions bound to the gateway now (they connect on first use and
    /// unbind when idle, so 0 is normal while there is nothing to send).
    pub fn connected(&self) -> usize {
        self.pool
            .sessions()
            .iter()
            .filter(|s| s.is_connected())
            .count()
    }

    /// Closes every connection, waiting for what is in flight.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn wait_throttle(&self) {
        let until = self.throttled_until.load(Ordering::Relaxed);
        let wait = until - now_millis();
        if wait > 0 {
            counter!("dispatcher_throttle_waits_total").increment(1);
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }

    /// Sends `request` and classifies the answer.
    pub async fn submit(&self, request: &SmsRequest) -> Submission {
        let mut submission = Submission {
            segments: Vec::new(),
            accepted: 0,
            verdict: Verdict::Accepted,
        };
        let parts = match text::split(&request.text, self.coding, reference(&request.message_id)) {
            Ok(parts) => parts,
            Err(e) => {
                submission.verdict = Verdict::Failed {
                    code: None,
                    reason: RefusalReason::InvalidRequest,
                    detail: e.to_string(),
                };
                return submission;
            }
        };
        let sp_number = format!(
            "{}{}",
            self.sp_number,
            request.sp_extension.as_deref().unwrap_or_default()
        );
        for part in parts {
            let mut tries = 0;
            loop {
                self.wait_throttle().await;
                let sequence = self.pool.next_sequence();
                let mut submit = SubmitRequest::new(
                    &request.phone,
                    &sp_number,
                    &self.service_type,
                    part.clone(),
                );
                submit.corp_id = self.corp_id.clone();
                submit.sequence = Some(sequence);
                let triple = SequenceTriple::new(sequence.node, sequence.time, sequence.counter);
                let index = i32::from(part.index);
                let passing = match self.pool.submit(&submit).await {
                    Ok(outcome) => {
                        let code = outcome.result.0;
                        counter!("dispatcher_gateway_results_total", "code" => code.to_string())
                            .increment(1);
                        submission.segments.push(SubmittedSegment {
                            index,
                            sequence: triple,
                            submitted_at: outcome.written_at_ms as i64,
                            response_at: Some(outcome.responded_at_ms as i64),
                            result: i32::from(code),
                        });
                        if outcome.result.is_throttle() {
                            self.throttled_until.fetch_max(
                                now_millis() + self.throttle_pause_ms,
                                Ordering::Relaxed,
                            );
                        }
                        match outcome.result.class() {
                            ResultClass::Ok => {
                                submission.accepted += 1;
                                break;
                            }
                            ResultClass::Transient => Verdict::Retry {
                                code: Some(code),
                                reason: RefusalReason::GatewayRefused,
                                detail: format!("gateway result {code}, may pass later"),
                            },
                            ResultClass::Session | ResultClass::Permanent => {
                                submission.verdict = Verdict::Failed {
                                    code: Some(code),
                                    reason: RefusalReason::GatewayRefused,
                                    detail: format!("gateway result {code}"),
                                };
                                return submission;
                            }
                        }
                    }
                    Err(e) => {
                        counter!("dispatcher_gateway_errors_total", "retryable" => e.is_retryable().to_string())
                            .increment(1);
                        submission.segments.push(SubmittedSegment {
                            index,
                            sequence: triple,
                            submitted_at: now_millis(),
                            response_at: None,
                            result: -1,
                        });
                        if !e.is_retryable() {
                            submission.verdict = Verdict::Failed {
                                code: None,
                                reason: RefusalReason::InvalidRequest,
                                detail: e.to_string(),
                            };
                            return submission;
                        }
                        Verdict::Retry {
                            code: None,
                            reason: RefusalReason::GatewayUnavailable,
                            detail: e.to_string(),
                        }
                    }
                };
                if submission.accepted == 0 {
                    submission.verdict = passing;
                    return submission;
                }
                tries += 1;
                if tries >= SEGMENT_TRIES {
                    if let Verdict::Retry {
                        code,
                        reason,
                        detail,
                    } = passing
                    {
                        submission.verdict = Verdict::Failed {
                            code,
                            reason,
                            detail: format!("{detail}; {} segments sent", submission.accepted),
                        };
                    }
                    return submission;
                }
                tokio::time::sleep(Duration::from_millis(self.throttle_pause_ms.max(50) as u64))
                    .await;
            }
        }
        submission
    }
}

/// The concatenation reference of a message: stable across its attempts.
fn reference(message_id: &str) -> u8 {
    message_id
        .bytes()
        .fold(0u8, |acc, b| acc.wrapping_mul(31).wrapping_add(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sms_core::events::{MessageKind, RequestSource};

    #[tokio::test]
    async fn connected_counts_the_sessions_bound_to_the_gateway() {
        let sim = smsc_sim::Simulator::start(smsc_sim::SimConfig {
            submit_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            sp: None,
            ..smsc_sim::SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let settings = GatewaySettings {
            addr: sim.submit_addr.to_string(),
            ..GatewaySettings::default()
        };
        let share = settings.share(6, 6);
        assert_eq!(share.connections, 2);
        let gateway = Gateway::start(&settings, "secret", share, 200).expect("pool starts");
        assert_eq!(gateway.connected(), 0, "sessions connect on first use");

        let request = SmsRequest {
            message_id: "m-1".into(),
            request_id: "r-1".into(),
            client_id: "c".into(),
            phone: "8613012345678".into(),
            kind: MessageKind::Notice,
            text: "【交管12123】通知".into(),
            template_id: None,
            sp_extension: None,
            source: RequestSource::Http,
            accepted_at: now_millis(),
            expires_at: None,
            scheduled_at: None,
            attempt: 0,
            not_before: None,
        };
        let submission = gateway.submit(&request).await;
        assert_eq!(submission.verdict, Verdict::Accepted);
        assert_eq!(gateway.connected(), 1, "one session was needed");

        gateway.close().await;
        assert_eq!(gateway.connected(), 0);
        sim.shutdown().await;
    }
}
