//! Reads a whole topic from its beginning and keeps following it, for the state ingest holds in memory (statuses, subscriptions).
//!
//! The tail assigns itself every partition (no consumer group, no commits:
//! every instance needs the whole topic) and reports when it has read
//! everything that was in the topic when it started, so queries are not
//! answered from half-loaded state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sms_core::kafka::KafkaSettings;
use tokio_util::sync::CancellationToken;

use crate::error::IngestError;

/// Whether a tail has caught up with its topic as it was at start.
#[derive(Debug, Clone, Default)]
pub struct CaughtUp(Arc<AtomicBool>);

impl CaughtUp {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// One record as the tail hands it over.
pub struct Tailed<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub partition: i32,
    pub offset: i64,
}

/// Starts following `topic` from its beginning, handing each record to
/// `apply`, until `shutdown`.
pub fn spawn(
    settings: &KafkaSettings,
    topic: String,
    shutdown: CancellationToken,
    mut apply: impl FnMut(Tailed<'_>) + Send + 'static,
) -> Result<(CaughtUp, tokio::task::JoinHandle<()>), IngestError> {
    let consumer: Arc<StreamConsumer> = Arc::new(
        settings
            .consumer_config("ingest-tail", "ingest-tail-unused")
            .create()
            .map_err(IngestError::KafkaSetup)?,
    );
    let caught_up = CaughtUp::default();
    let flag = caught_up.clone();
    let handle = tokio::spawn(async move {
        let ends = loop {
            // Metadata and watermark calls block; keep them off the runtime.
            let (c, t) = (consumer.clone(), topic.clone());
            match tokio::task::spawn_blocking(move || assign_all(&c, &t)).await {
                Ok(Ok(ends)) => break ends,
                Ok(Err(e)) => {
                    tracing::warn!(%topic, error = %e, "cannot read topic metadata; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(_) => return,
            }
        };
        let mut remaining: HashMap<i32, i64> =
            ends.into_iter().filter(|(_, end)| *end > 0).collect();
        if remaining.is_empty() {
            flag.set();
        }
        tracing::info!(%topic, "following topic");
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(%topic, error = %e, "reading topic failed; continuing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (partition, offset) = (message.partition(), message.offset());
            apply(Tailed {
                key: message.key(),
                payload: message.payload(),
                partition,
                offset,
            });
            if !remaining.is_empty() {
                if remaining
                    .get(&partition)
                    .is_some_and(|end| offset + 1 >= *end)
                {
                    remaining.remove(&partition);
                }
                if remaining.is_empty() {
                    tracing::info!(%topic, "caught up with topic");
                    flag.set();
                }
            }
        }
    });
    Ok((caught_up, handle))
}

/// Assigns every partition of `topic` from the beginning; returns each
/// partition's end offset at this moment.
fn assign_all(
    consumer: &StreamConsumer,
    topic: &str,
) -> Result<Vec<(i32, i64)>, rdkafka::error::KafkaError> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let mut ends = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        ends.push((partition, if high > low { high } else { 0 }));
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(ends)
}
