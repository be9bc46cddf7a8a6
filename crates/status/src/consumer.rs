//! The correlation consumer: reads `sms.dispatch` and `sms.reports`, feeds the correlator, and writes final statuses with the consumer offsets in one Kafka transaction.
//!
//! Delivery semantics: a final status and the offsets that led to it commit
//! together or not at all, and consumers of `sms.status` read committed
//! records only, so a crash never shows a status twice. Offsets never pass a
//! record whose effect lives only in memory (see `correlate`), so after a
//! crash or a rebalance the state is rebuilt by replaying from the committed
//! offsets, with `sms.status` telling which messages are already final.
//! Any failure, and any revocation of partitions, aborts the open
//! transaction and starts a fresh session that rebuilds its state.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sms_core::avro::AvroCodec;
use sms_core::events::{
    now_millis, CarrierReport, DeadLetter, DeadLetterError, DispatchEvent, FinalStatus, Millis,
};
use sms_core::ids::message_key;
use sms_core::kafka::{KafkaSettings, Topics};
use sms_core::telemetry::mask_phone;
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

use crate::config::CorrelationSettings;
use crate::correlate::{Correlator, Decision, Limits, Position};
use crate::error::StatusError;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// Notes when partitions are taken away, so the session can rebuild.
struct RevocationFlag(Arc<AtomicBool>);

impl ClientContext for RevocationFlag {}

impl ConsumerContext for RevocationFlag {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            if partitions.count() > 0 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Runs correlation sessions until `shutdown` turns true; a failed session is
/// followed by a fresh one after a pause.
pub async fn run(
    kafka: KafkaSettings,
    settings: CorrelationSettings,
    codec: AvroCodec,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        match session(&kafka, &settings, &codec, shutdown.clone()).await {
            Ok(()) => return,
            Err(e) => {
                counter!("status_session_restarts_total").increment(1);
                warn!(error = %e, source = ?std::error::Error::source(&e), "correlation session ended; rebuilding");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

struct Session<'a> {
    topics: Topics,
    codec: &'a AvroCodec,
    producer: FutureProducer,
    correlator: Correlator,
    deliveries: Vec<DeliveryFuture>,
}

async fn session(
    kafka: &KafkaSettings,
    settings: &CorrelationSettings,
    codec: &AvroCodec,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StatusError> {
    let topics = kafka.topics();
    let revoked = Arc::new(AtomicBool::new(false));
    // Range assignment gives one member partition p of every topic it reads,
    // which is what co-partitioned state needs.
    let mut consumer_config = kafka.consumer_config("status-correlator", &settings.group_id);
    consumer_config.set("partition.assignment.strategy", "range");
    let consumer: StreamConsumer<RevocationFlag> = consumer_config
        .create_with_context(RevocationFlag(revoked.clone()))
        .map_err(StatusError::kafka("creating the consumer"))?;
    consumer
        .subscribe(&[&topics.dispatch, &topics.reports])
        .map_err(StatusError::kafka("subscribing"))?;

    let transactional_id = format!("{}-{}", settings.group_id, kafka.topic_prefix);
    let producer: FutureProducer = kafka
        .transactional_producer_config("status-correlator", &transactional_id)
        .create()
        .map_err(StatusError::kafka("creating the producer"))?;
    producer
        .init_transactions(KAFKA_TIMEOUT)
        .map_err(StatusError::kafka("initialising transactions"))?;

    let limits = Limits {
        validity_ms: settings.validity_ms,
        orphan_hold_ms: settings.orphan_hold_ms,
        finalized_memory_ms: settings.validity_ms + settings.validity_ms / 3 + 3_600_000,
        final_sequences: settings.final_sequences,
    };
    let mut session = Session {
        topics: topics.clone(),
        codec,
        producer,
        correlator: Correlator::new(limits),
        deliveries: Vec::new(),
    };
    let mut loaded: HashSet<i32> = HashSet::new();
    info!(group = %settings.group_id, "correlation session started");

    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        session
            .producer
            .begin_transaction()
            .map_err(StatusError::kafka("beginning a transaction"))?;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(settings.commit_interval_ms);
        let mut fed = 0;
        while fed < settings.max_batch {
            let message = tokio::select! {
                m = consumer.recv() => m.map_err(StatusError::kafka("reading"))?,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.changed() => break,
            };
            if !loaded.contains(&message.partition()) {
                let finalized =
                    load_finalized(kafka, &topics.status, message.partition(), limits).await?;
                for (id, decided_at) in finalized {
                    session.correlator.mark_finalized(id, decided_at);
                }
                loaded.insert(message.partition());
            }
            session.feed(&message).await?;
            fed += 1;
        }
        let expired = session.correlator.expire(now_millis());
        session.write(expired)?;

        if revoked.load(Ordering::SeqCst) {
            let _ = session.producer.abort_transaction(KAFKA_TIMEOUT);
            return Err(StatusError::Rebalanced);
        }
        session.commit(&consumer).await?;
        session.publish_gauges();
    }
}

impl Session<'_> {
    async fn feed(&mut self, message: &BorrowedMessage<'_>) -> Result<(), StatusError> {
        let at = Position {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let payload = message.payload().unwrap_or_default();
        let now = now_millis();
        let decisions = if at.topic == self.topics.dispatch {
            match self.codec.decode::<DispatchEvent>(payload).await {
                Ok(event) => {
                    let span = info_span!("dispatch", message_id = %event.message_id);
                    let _enter = span.enter();
                    debug!(outcome = ?event.outcome, "dispatch event");
                    self.correlator.on_dispatch(event, at, now)
                }
                Err(e) => return self.undecodable(message, at, e.to_string()),
            }
        } else {
            match self.codec.decode::<CarrierReport>(payload).await {
                Ok(report) => self.correlator.on_report(report, at, now),
                Err(e) => return self.undecodable(message, at, e.to_string()),
            }
        };
        self.write(decisions)
    }

    fn undecodable(
        &mut self,
        message: &BorrowedMessage<'_>,
        at: Position,
        reason: String,
    ) -> Result<(), StatusError> {
        counter!("status_undecodable_total", "topic" => at.topic.clone()).increment(1);
        warn!(topic = %at.topic, partition = at.partition, offset = at.offset, %reason, "undecodable record sent to the dead-letter topic");
        // Nothing in memory depends on it: it is done once recorded.
        let letter = DeadLetter {
            source_topic: at.topic.clone(),
            source_partition: at.partition,
            source_offset: at.offset,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            error: DeadLetterError::Undecodable,
            reason,
            service: "status".into(),
            recorded_at: now_millis(),
        };
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        self.correlator.on_skipped(&at);
        self.send(&self.topics.dlq.clone(), &key, self.codec.encode(&letter)?)
    }

    fn write(&mut self, decisions: Vec<Decision>) -> Result<(), StatusError> {
        for decision in decisions {
            match decision {
                Decision::Final(status) => self.write_final(status)?,
                Decision::Unmatched { report, at } => {
                    counter!("status_reports_unmatched_total").increment(1);
                    warn!(submit = %report.submit_sequence, phone = %mask_phone(&report.phone), "report matches no dispatch event; recorded as unmatched");
                    let letter = DeadLetter {
                        source_topic: at.topic,
                        source_partition: at.partition,
                        source_offset: at.offset,
                        key: Some(report.phone.as_bytes().to_vec()),
                        payload: Some(self.codec.encode(&report)?),
                        error: DeadLetterError::Unmatched,
                        reason: format!(
                            "no dispatch event has submit sequence {}",
                            report.submit_sequence
                        ),
                        service: "status".into(),
                        recorded_at: now_millis(),
                    };
                    let payload = self.codec.encode(&letter)?;
                    self.send(&self.topics.dlq.clone(), &report.phone, payload)?;
                }
                Decision::AfterFinal { report, message_id } => {
                    counter!("status_reports_after_final_total").increment(1);
                    debug!(%message_id, submit = %report.submit_sequence, "report for a message already final");
                }
            }
        }
        Ok(())
    }

    fn write_final(&mut self, status: FinalStatus) -> Result<(), StatusError> {
        let span = info_span!("final", message_id = %status.message_id);
        let _enter = span.enter();
        count_final(&status);
        if let Some(report_at) = status.report_at {
            gauge!("status_correlation_lag_ms").set((status.decided_at - report_at) as f64);
        }
        debug!(status = ?status.status, within_seven_seconds = status.within_seven_seconds, "final status");
        let payload = self.codec.encode(&status)?;
        self.send(&self.topics.status.clone(), &status.phone, payload)
    }

    fn send(&mut self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), StatusError> {
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        let delivery =
            self.producer
                .send_result(record)
                .map_err(|(e, _)| StatusError::Produce {
                    topic: topic.to_string(),
                    source: e,
                })?;
        self.deliveries.push(delivery);
        Ok(())
    }

    async fn commit(
        &mut self,
        consumer: &StreamConsumer<RevocationFlag>,
    ) -> Result<(), StatusError> {
        for delivery in self.deliveries.drain(..) {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(StatusError::Produce {
                        topic: "output".into(),
                        source: e,
                    })
                }
                Err(_) => {
                    return Err(StatusError::Produce {
                        topic: "output".into(),
                        source: rdkafka::error::KafkaError::Canceled,
                    })
                }
            }
        }
        let assignment = consumer
            .assignment()
            .map_err(StatusError::kafka("reading the assignment"))?;
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in self.correlator.safe_offsets() {
            if assignment.find_partition(&topic, partition).is_some() {
                offsets
                    .add_partition_offset(&topic, partition, Offset::Offset(offset))
                    .map_err(StatusError::kafka("listing offsets"))?;
            }
        }
        if offsets.count() > 0 {
            let group = consumer.group_metadata().ok_or(StatusError::Kafka {
                operation: "reading group metadata",
                source: rdkafka::error::KafkaError::NoMessageReceived,
            })?;
            self.producer
                .send_offsets_to_transaction(&offsets, &group, KAFKA_TIMEOUT)
                .map_err(StatusError::kafka("adding offsets to the transaction"))?;
        }
        self.producer
            .commit_transaction(KAFKA_TIMEOUT)
            .map_err(StatusError::kafka("committing"))?;
        Ok(())
    }

    fn publish_gauges(&self) {
        gauge!("status_pending_messages").set(self.correlator.pending() as f64);
        gauge!("status_finalized_remembered").set(self.correlator.finalized() as f64);
        gauge!("status_orphan_reports").set(self.correlator.orphans() as f64);
        let now = now_millis();
        let oldest = self
            .correlator
            .oldest_pending_accepted_at()
            .map_or(0, |at| now - at);
        gauge!("status_pending_oldest_age_ms").set(oldest as f64);
    }
}

/// Reads the final statuses of one partition of `sms.status` written in the
/// last `limits.finalized_memory_ms`: the messages already decided.
async fn load_finalized(
    kafka: &KafkaSettings,
    status_topic: &str,
    partition: i32,
    limits: Limits,
) -> Result<Vec<(Uuid, Millis)>, StatusError> {
    let kafka = kafka.clone();
    let topic = status_topic.to_string();
    let span = info_span!("rebuild", partition);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka
            .consumer_config("status-rebuild", "status-rebuild-unused")
            .create()
            .map_err(StatusError::kafka("creating the rebuild consumer"))?;
        let (low, high) = consumer
            .fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)
            .map_err(StatusError::kafka("reading watermarks"))?;
        let since = now_millis() - limits.finalized_memory_ms;
        let mut wanted = TopicPartitionList::new();
        wanted
            .add_partition_offset(&topic, partition, Offset::Offset(since))
            .map_err(StatusError::kafka("listing offsets"))?;
        let start = consumer
            .offsets_for_times(wanted, KAFKA_TIMEOUT)
            .map_err(StatusError::kafka("finding offsets by time"))?
            .find_partition(&topic, partition)
            .and_then(|p| p.offset().to_raw())
            .filter(|o| *o >= 0)
            .unwrap_or(high);
        let mut finalized = Vec::new();
        if start < high {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&topic, partition, Offset::Offset(start.max(low)))
                .map_err(StatusError::kafka("listing offsets"))?;
            consumer
                .assign(&assignment)
                .map_err(StatusError::kafka("assigning"))?;
            let mut next = start;
            while next < high {
                let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                    // Transaction markers occupy offsets and yield no message.
                    let position = consumer.position().ok().and_then(|p| {
                        p.find_partition(&topic, partition)
                            .and_then(|e| e.offset().to_raw())
                    });
                    match position {
                        Some(p) if p > next => next = p,
                        _ => break,
                    }
                    continue;
                };
                let message = message.map_err(StatusError::kafka("reading sms.status"))?;
                next = message.offset() + 1;
                let payload = message.payload().unwrap_or_default();
                // Statuses are written by this service, single-object encoded.
                if let Ok(status) = sms_core::avro::decode_single_object::<FinalStatus>(payload) {
                    finalized.push((message_key(&status.message_id), status.decided_at));
                }
            }
        }
        info!(count = finalized.len(), "final statuses loaded");
        Ok(finalized)
    })
    .instrument(span)
    .await
    .map_err(|_| StatusError::Rebalanced)?
}

/// Counts a final status for the contract's rates: `status_final_total` by
/// state, and `status_within_seven_seconds_total` for the timely ones. With
/// the states that went to the carrier (Delivered, Failed, Unknown) as the
/// denominator, Delivered gives the success rate (3.7) and the timely count
/// the timeliness rate (3.8); refused states are never timely.
fn count_final(status: &FinalStatus) {
    counter!("status_final_total", "status" => format!("{:?}", status.status)).increment(1);
    if status.within_seven_seconds {
        counter!("status_within_seven_seconds_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sms_core::events::{FinalState, MessageKind};

    fn status(state: FinalState, within_seven_seconds: bool) -> FinalStatus {
        FinalStatus {
            message_id: "m".into(),
            request_id: "r".into(),
            phone: "8618612341234".into(),
            kind: MessageKind::Notice,
            status: state,
            failure_category: None,
            error_code: None,
            refusal_reason: None,
            billed_segments: 1,
            segments_delivered: 1,
            accepted_at: 0,
            submitted_at: Some(100),
            gateway_response_at: Some(200),
            report_at: Some(900),
            decided_at: 1_000,
            within_seven_seconds,
        }
    }

    #[test]
    fn final_statuses_count_by_state_and_timeliness() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            count_final(&status(FinalState::Delivered, true));
            count_final(&status(FinalState::Delivered, false));
            count_final(&status(FinalState::Failed, true));
            count_final(&status(FinalState::Rejected, false));
        });
        let text = handle.render();
        assert!(
            text.contains("status_final_total{status=\"Delivered\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("status_final_total{status=\"Failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("status_final_total{status=\"Rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("status_within_seven_seconds_total 2"),
            "{text}"
        );
    }
}
