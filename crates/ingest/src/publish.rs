//! Writes records to Kafka and waits for the acknowledgement, within a bounded time and a bounded number of records in flight.
//!
//! The producer is the shared one from [`KafkaSettings::producer_config`]:
//! acks from every in-sync replica and idempotence, so a record is reported
//! written only once every replica has it, and the producer's own retries add
//! no duplicates. A caller is answered only after every one of its records is
//! acknowledged; when Kafka is slow or down it waits at most
//! `publish_timeout_ms` and gets [`IngestError::Unavailable`].
//!
//! Limitation: a record handed to the producer cannot be taken back. One that
//! is acknowledged after its caller was told 503 is in Kafka once and, when
//! the caller retries, possibly twice, with the same message id; the
//! dispatcher's dedupe on message id drops the second.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sms_core::kafka::KafkaSettings;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::IngestError;

/// One record ready to write: topic, key and framed value.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// The Kafka writer every entrance shares.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    retry_after_s: u64,
}

impl Publisher {
    /// A producer on `settings`, allowing `max_in_flight` unacknowledged
    /// records and waiting `timeout` for each write.
    pub fn new(
        settings: &KafkaSettings,
        max_in_flight: usize,
        timeout: Duration,
        retry_after_s: u64,
    ) -> Result<Self, IngestError> {
        let mut config = settings.producer_config("ingest");
        // The producer's own queue is never the bound: the semaphore is.
        config.set("queue.buffering.max.messages", "1000000");
        let producer = config.create().map_err(IngestError::KafkaSetup)?;
        Ok(Self {
            producer,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            timeout,
            retry_after_s,
        })
    }

    fn unavailable(&self) -> IngestError {
        IngestError::Unavailable {
            retry_after_s: self.retry_after_s,
        }
    }

    /// Writes every record and reports, per record, whether Kafka
    /// acknowledged it; gives up on the ones still unacknowledged when the
    /// time-out passes.
    pub async fn write_all(&self, records: Vec<Outgoing>) -> Vec<Result<(), IngestError>> {
        if records.is_empty() {
            return Vec::new();
        }
        let deadline = Instant::now() + self.timeout;
        let wanted = u32::try_from(records.len().min(self.max_in_flight)).unwrap_or(u32::MAX);
        let permit = match tokio::time::timeout_at(
            deadline,
            self.in_flight.clone().acquire_many_owned(wanted),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                metrics::counter!("ingest_backpressure_total", "stage" => "in_flight").increment(1);
                return records.iter().map(|_| Err(self.unavailable())).collect();
            }
        };

        let started = std::time::Instant::now();
        let sends = records
            .iter()
            .map(|record| self.write_one(record, deadline));
        let results = join_all(sends).await;
        drop(permit);
        metrics::histogram!("ingest_kafka_write_seconds").record(started.elapsed().as_secs_f64());
        results
    }

    async fn write_one(&self, record: &Outgoing, deadline: Instant) -> Result<(), IngestError> {
        let future = loop {
            let enqueued = self.producer.send_result(
                FutureRecord::to(&record.topic)
                    .key(&record.key)
                    .payload(&record.payload),
            );
            match enqueued {
                Ok(future) => break future,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if Instant::now() >= deadline {
                        return Err(self.unavailable());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(IngestError::KafkaWrite(e)),
            }
        };
        match tokio::time::timeout_at(deadline, future).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(IngestError::KafkaWrite(e)),
            // The producer was dropped: the record's fate is unknown.
            Ok(Err(_)) => Err(self.unavailable()),
            Err(_) => {
                metrics::counter!("ingest_backpressure_total", "stage" => "ack").increment(1);
                Err(self.unavailable())
            }
        }
    }

    /// Whether a broker answers a metadata request within `within`.
    pub async fn reachable(&self, within: Duration) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, within).is_ok())
            .await
            .unwrap_or(false)
    }

    /// Waits up to `within` for everything queued to be acknowledged.
    pub async fn flush(&self, within: Duration) {
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(within)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "producer flush did not finish; unacknowledged records were never reported written"
            );
        }
    }
}
