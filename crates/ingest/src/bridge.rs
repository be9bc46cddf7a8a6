//! The topic bridge: send instructions the platform publishes as JSON on the raw inbound topic, validated and written like HTTP ones.
//!
//! Each raw record's value is one JSON object `{"client_id": "...",
//! "message": {...}}`, where `message` is the same [`Instruction`] the HTTP
//! API takes. The bridge reads a chunk of records, validates them through
//! the same [`Intake`], writes the accepted ones to the request topics and
//! the refused ones to `sms.dlq` as [`DeadLetter`]s with their reason, and
//! commits the chunk's offsets only after Kafka acknowledged every output.
//! When Kafka refuses an output the chunk is written again after a pause;
//! message ids are deterministic, so a record written twice is one message
//! to the dispatcher.
//!
//! Delivery is at least once: a crash between the writes and the commit
//! reads the chunk again, and the retry memory (or, after a restart, the
//! dispatcher's dedupe) absorbs the repeats.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use serde::{Deserialize, Serialize};
use sms_core::avro::AvroCodec;
use sms_core::events::{now_millis, DeadLetter, DeadLetterError, RequestSource};
use sms_core::kafka::KafkaSettings;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::BridgeSettings;
use crate::error::IngestError;
use crate::publish::Outgoing;
use crate::submit::{Instruction, Intake};

/// One record of the raw inbound topic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeEnvelope {
    /// A configured client id; the message id is derived from it.
    pub client_id: String,
    pub message: Instruction,
}

/// Reads the raw topic and writes its instructions.
pub struct Bridge {
    consumer: StreamConsumer,
    intake: Arc<Intake>,
    auth: Arc<Authenticator>,
    settings: BridgeSettings,
    topic: String,
    dlq: String,
    codec: AvroCodec,
}

/// What became of one raw record.
enum Verdict {
    /// Written to a request topic, or a retry of one already written.
    Written,
    /// Goes to the dead-letter topic.
    Dead(DeadLetterError, IngestError),
    /// Kafka did not take the output; the chunk is tried again.
    Retry(IngestError),
}

impl Bridge {
    pub fn new(
        kafka: &KafkaSettings,
        settings: BridgeSettings,
        intake: Arc<Intake>,
        auth: Arc<Authenticator>,
    ) -> Result<Self, IngestError> {
        let topics = kafka.topics();
        let consumer: StreamConsumer = kafka
            .consumer_config("ingest-bridge", &settings.group_id)
            .create()
            .map_err(IngestError::KafkaSetup)?;
        consumer
            .subscribe(&[&topics.inbound_raw])
            .map_err(IngestError::KafkaSetup)?;
        Ok(Self {
            consumer,
            intake,
            auth,
            settings,
            topic: topics.inbound_raw,
            dlq: topics.dlq,
            codec: AvroCodec::single_object(),
        })
    }

    /// Runs until `shutdown`; the chunk in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(topic = %self.topic, group = %self.settings.group_id, "bridge started");
        while let Some(chunk) = self.next_chunk(&shutdown).await {
            self.settle(&chunk, &shutdown).await;
        }
        tracing::info!("bridge stopped");
    }

    /// Waits for at least one record, then takes what is ready, up to the chunk size.
    async fn next_chunk(&self, shutdown: &CancellationToken) -> Option<Vec<OwnedMessage>> {
        let mut chunk = Vec::new();
        loop {
            let wait = if chunk.is_empty() {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(5)
            };
            let received = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = tokio::time::timeout(wait, self.consumer.recv()) => r,
            };
            match received {
                Ok(Ok(message)) => {
                    chunk.push(message.detach());
                    if chunk.len() >= self.settings.max_chunk {
                        return Some(chunk);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "reading the raw topic failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) if chunk.is_empty() => {}
                Err(_) => return Some(chunk),
            }
        }
    }

    /// Writes a chunk's outputs until every one is acknowledged, then commits.
    async fn settle(&self, chunk: &[OwnedMessage], shutdown: &CancellationToken) {
        loop {
            match self.write_chunk(chunk).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(records = chunk.len(), code = e.code(), error = %e, "chunk not acknowledged; writing it again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(self.settings.retry_backoff_ms)) => {}
                    }
                }
            }
        }
        for message in chunk {
            if let Err(e) =
                self.consumer
                    .store_offset(message.topic(), message.partition(), message.offset())
            {
                tracing::warn!(error = %e, "storing an offset failed; the record will be read again");
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
            tracing::warn!(error = %e, "commit failed; the chunk will be read again after a restart");
        }
    }

    async fn write_chunk(&self, chunk: &[OwnedMessage]) -> Result<(), IngestError> {
        let verdicts = self.submit(chunk).await;
        let mut dead = Vec::new();
        for (message, verdict) in chunk.iter().zip(verdicts) {
            match verdict {
                Verdict::Written => {}
                Verdict::Retry(e) => return Err(e),
                Verdict::Dead(kind, reason) => dead.push(self.dead_letter(message, kind, &reason)?),
            }
        }
        for result in self.intake.publisher().write_all(dead).await {
            result?;
        }
        Ok(())
    }

    /// Validates and writes the chunk's instructions, grouped by client.
    async fn submit(&self, chunk: &[OwnedMessage]) -> Vec<Verdict> {
        let mut verdicts: Vec<Option<Verdict>> = chunk.iter().map(|_| None).collect();
        let mut by_client: Vec<(String, Vec<(usize, Instruction)>)> = Vec::new();
        for (index, message) in chunk.iter().enumerate() {
            match self.read(message) {
                Ok(envelope) => {
                    match by_client.iter_mut().find(|(c, _)| *c == envelope.client_id) {
                        Some((_, items)) => items.push((index, envelope.message)),
                        None => {
                            by_client.push((envelope.client_id, vec![(index, envelope.message)]))
                        }
                    }
                }
                Err(verdict) => verdicts[index] = Some(verdict),
            }
        }
        for (client_id, items) in by_client {
            let (indices, instructions): (Vec<usize>, Vec<_>) =
                items.into_iter().map(|(i, m)| (i, Ok(m))).unzip();
            let results = self
                .intake
                .submit_many(&client_id, RequestSource::Topic, instructions)
                .await;
            for (index, result) in indices.into_iter().zip(results) {
                verdicts[index] = Some(match result {
                    Ok(_) => Verdict::Written,
                    Err(e) if e.is_retryable() => Verdict::Retry(e),
                    Err(e) => Verdict::Dead(DeadLetterError::Invalid, e),
                });
            }
        }
        verdicts
            .into_iter()
            .map(|v| {
                v.unwrap_or(Verdict::Retry(IngestError::InvalidRequest(
                    "record skipped".into(),
                )))
            })
            .collect()
    }

    fn read(&self, message: &OwnedMessage) -> Result<BridgeEnvelope, Verdict> {
        let payload = message.payload().unwrap_or_default();
        let envelope: BridgeEnvelope = serde_json::from_slice(payload)
            .map_err(|e| Verdict::Dead(DeadLetterError::Undecodable, IngestError::from_json(&e)))?;
        if !self.auth.knows(&envelope.client_id) {
            return Err(Verdict::Dead(
                DeadLetterError::Invalid,
                IngestError::UnknownClient,
            ));
        }
        Ok(envelope)
    }

    fn dead_letter(
        &self,
        message: &OwnedMessage,
        error: DeadLetterError,
        reason: &IngestError,
    ) -> Result<Outgoing, IngestError> {
        metrics::counter!("ingest_dead_letters_total", "code" => reason.code()).increment(1);
        tracing::debug!(
            partition = message.partition(),
            offset = message.offset(),
            code = reason.code(),
            "raw record refused; sent to the dead-letter topic"
        );
        let letter = DeadLetter {
            source_topic: message.topic().to_string(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            error,
            reason: format!("{}: {reason}", reason.code()),
            service: "ingest".into(),
            recorded_at: now_millis(),
        };
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        Ok(Outgoing {
            topic: self.dlq.clone(),
            key,
            payload: self.codec.encode(&letter)?,
        })
    }
}
