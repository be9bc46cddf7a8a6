//! The report receiver: the SGIP server's handler, which writes each Report to `sms.reports` and each Deliver to `sms.mo` and lets the gateway have its answer only after Kafka acknowledged the record.

use std::time::Duration;

use metrics::counter;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sgip::server::{Handler, Origin};
use sgip::{Deliver, Report};
use sms_core::avro::{AvroCodec, AvroRecord};
use sms_core::events::{
    CarrierReport, DeadLetter, DeadLetterError, ReportState, SequenceTriple, UplinkMessage,
};
use sms_core::kafka::Topics;
use sms_core::telemetry::mask_phone;
use tracing::{debug, warn};

use crate::error::StatusError;

/// Writes what the gateway sends to Kafka before it is answered.
pub struct ReportReceiver {
    producer: FutureProducer,
    codec: AvroCodec,
    topics: Topics,
    timeout: Duration,
}

impl ReportReceiver {
    pub fn new(
        producer: FutureProducer,
        codec: AvroCodec,
        topics: Topics,
        timeout: Duration,
    ) -> Self {
        Self {
            producer,
            codec,
            topics,
            timeout,
        }
    }

    async fn write<T: AvroRecord>(
        &self,
        topic: &str,
        key: &str,
        record: &T,
    ) -> Result<(), StatusError> {
        let payload = self.codec.encode(record)?;
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(&payload),
                self.timeout,
            )
            .await
            .map_err(|(e, _)| StatusError::Produce {
                topic: topic.to_string(),
                source: e,
            })?;
        Ok(())
    }

    /// Records a PDU that cannot become a topic record, so it is kept and counted.
    async fn dead_letter(&self, key: &str, reason: String) -> Result<(), StatusError> {
        let record = DeadLetter {
            source_topic: "sgip".into(),
            source_partition: -1,
            source_offset: -1,
            key: Some(key.as_bytes().to_vec()),
            payload: None,
            error: DeadLetterError::Invalid,
            reason,
            service: "status-receiver".into(),
            recorded_at: sms_core::events::now_millis(),
        };
        self.write(&self.topics.dlq, key, &record).await
    }
}

/// The sequence triple as carried in Avro.
pub fn to_event_triple(triple: sgip::SequenceTriple) -> SequenceTriple {
    SequenceTriple::new(triple.node, triple.time, triple.counter)
}

/// A recipient or sender number as every topic keys it: `86` and 11 digits.
/// Gateways that drop the `86` are tolerated.
pub fn normalise_number(raw: &str) -> String {
    let digits = raw.trim().trim_start_matches('+');
    if digits.len() == 11 && digits.starts_with('1') {
        format!("86{digits}")
    } else {
        digits.to_string()
    }
}

impl Handler for ReportReceiver {
    type Error = StatusError;

    async fn report(&self, origin: Origin, report: Report) -> Result<(), StatusError> {
        let phone = normalise_number(&report.user_number.to_string_lossy());
        let state = match report.state {
            sgip::pdu::STATE_DELIVERED => ReportState::Delivered,
            sgip::pdu::STATE_WAITING => ReportState::Waiting,
            sgip::pdu::STATE_FAILED => ReportState::Failed,
            other => {
                counter!("status_reports_invalid_total").increment(1);
                warn!(phone = %mask_phone(&phone), state = other, "report with an unknown state");
                return self
                    .dead_letter(
                        &phone,
                        format!(
                            "report for submit {} has unknown state {other}",
                            report.submit_sequence
                        ),
                    )
                    .await;
            }
        };
        let record = CarrierReport {
            submit_sequence: to_event_triple(report.submit_sequence),
            report_sequence: to_event_triple(origin.sequence),
            phone: phone.clone(),
            report_type: i32::from(report.report_type),
            state,
            error_code: i32::from(report.error_code),
            received_at: origin.received_at_ms as i64,
        };
        self.write(&self.topics.reports, &phone, &record).await?;
        counter!("status_reports_received_total", "state" => format!("{state:?}"), "error_code" => report.error_code.to_string())
            .increment(1);
        debug!(submit = %report.submit_sequence, phone = %mask_phone(&phone), ?state, "report recorded");
        Ok(())
    }

    async fn deliver(&self, origin: Origin, deliver: Deliver) -> Result<(), StatusError> {
        let phone = normalise_number(&deliver.user_number.to_string_lossy());
        let udhi = deliver.tp_udhi & 1 == 1;
        let known = matches!(deliver.message_coding, 0 | 8 | 15);
        let text =
            (!udhi && known).then(|| sgip::text::decode(deliver.message_coding, &deliver.content));
        if !known {
            counter!("status_uplink_unknown_coding_total").increment(1);
            warn!(phone = %mask_phone(&phone), coding = deliver.message_coding, "uplink in an unknown coding; kept undecoded");
        }
        let sequence = to_event_triple(origin.sequence);
        let reserve = deliver.reserve.to_string_lossy();
        let record = UplinkMessage {
            uplink_id: uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                sequence.to_string().as_bytes(),
            )
            .to_string(),
            sequence,
            phone: phone.clone(),
            sp_number: deliver.sp_number.to_string_lossy(),
            coding: i32::from(deliver.message_coding),
            text,
            content: deliver.content.to_vec(),
            udhi,
            link_id: (!reserve.is_empty()).then_some(reserve),
            received_at: origin.received_at_ms as i64,
        };
        self.write(&self.topics.mo, &phone, &record).await?;
        counter!("status_uplink_received_total").increment(1);
        debug!(phone = %mask_phone(&phone), udhi, "uplink recorded");
        Ok(())
    }
}
