//! Replay (`smsctl replay`): a time window of one topic, read partition by partition from the offsets Kafka finds for its start and end, filtered, and written out.
//!
//! The window is the offsets `offsets_for_times` returns for the start and
//! the end time in every partition: from the first record stamped at or after
//! the start to the first stamped at or after the end. A phone filter matches
//! the record key (every topic is keyed by the recipient's phone number).
//!
//! Where it goes:
//! - another topic: the same key, value, headers and timestamp;
//! - a file (or standard output): one JSON object a line with the position,
//!   the timestamp, the key and the decoded record, in the order the records
//!   were read (offset order within a partition); decoding and serialising
//!   run on one thread per core ([`lines`]);
//! - ClickHouse: the rows the analytics sink would have stored
//!   (`analytics::rows`), skipping records whose rows are already in
//!   `sms_events`, so a replay fills a gap and never counts a record twice.
//!   Nothing is re-published to the topics the sink reads.

mod lines;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use analytics::rows::{self, EventRow, SourcePosition};
use analytics::store::EventStore;
use clickhouse::Row;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use sms_core::avro::{decode_single_object, AvroRecord};
use sms_core::events::{
    CarrierReport, DeadLetter, DispatchEvent, FinalStatus, SmsRequest, SubscriptionRecord,
    UplinkMessage,
};
use sms_core::kafka::KafkaSettings;

use crate::error::SmsctlError;
use crate::warehouse::Warehouse;
use lines::{LineWriter, LinesWritten};

/// Rows sent to ClickHouse in one insert.
const CLICKHOUSE_BATCH_RECORDS: usize = 20_000;
/// How long one metadata or offset lookup may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);

/// What a topic carries, by its name without the deployment prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Request,
    RetryRequest,
    Dispatch,
    Report,
    Uplink,
    Status,
    Subscription,
    DeadLetter,
    /// Not an Avro topic of the system (e.g. the raw inbound JSON).
    Raw,
}

impl TopicKind {
    pub fn of(topic: &str) -> Self {
        let suffixes = [
            ("sms.requests.otp", Self::Request),
            ("sms.requests.notify", Self::Request),
            ("sms.requests.retry", Self::RetryRequest),
            ("sms.dispatch", Self::Dispatch),
            ("sms.reports", Self::Report),
            ("sms.mo", Self::Uplink),
            ("sms.status", Self::Status),
            ("sms.subscriptions", Self::Subscription),
            ("sms.dlq", Self::DeadLetter),
        ];
        suffixes
            .iter()
            .find(|(suffix, _)| topic.ends_with(suffix))
            .map_or(Self::Raw, |(_, kind)| *kind)
    }
}

/// The records to replay.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// The full topic name (with any prefix).
    pub topic: String,
    /// Unix milliseconds, inclusive.
    pub from: i64,
    /// Unix milliseconds, exclusive.
    pub to: i64,
    /// Only records keyed by this phone number (stored form).
    pub phone: Option<String>,
}

/// Where replayed records go.
pub enum ReplayTarget {
    Topic(String),
    File(PathBuf),
    Stdout,
    ClickHouse(Box<Warehouse>),
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub partitions: usize,
    /// Records read in the window.
    pub read: u64,
    /// Records that passed the filter.
    pub matched: u64,
    /// Records written out.
    pub written: u64,
    /// Records skipped because ClickHouse already holds their rows.
    pub already_stored: u64,
    /// Records that did not decode (file and ClickHouse targets).
    pub undecodable: u64,
}

/// Reports progress: total records in the window, then each record read.
pub trait Progress: Send {
    fn start(&mut self, total: u64);
    fn advance(&mut self, records: u64);
    fn finish(&mut self);
}

/// No progress display.
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// A progress bar on standard error with rate and ETA, hidden unless
/// standard output and standard error are terminals.
pub struct Bar(indicatif::ProgressBar);

impl Bar {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        let visible = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = if visible {
            indicatif::ProgressBar::new(0)
        } else {
            indicatif::ProgressBar::hidden()
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} records, {per_sec}, ETA {eta}",
        ) {
            bar.set_style(style);
        }
        Self(bar)
    }
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Bar {
    fn start(&mut self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&mut self, records: u64) {
        self.0.inc(records);
    }
    fn finish(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Replays `window` into `target`.
pub async fn replay(
    kafka: &KafkaSettings,
    window: ReplayWindow,
    target: ReplayTarget,
    mut progress: Box<dyn Progress>,
) -> Result<ReplaySummary, SmsctlError> {
    let kafka_error = |operation: String, e: rdkafka::error::KafkaError| SmsctlError::Kafka {
        bootstrap: kafka.bootstrap.clone(),
        operation,
        source: Box::new(e),
    };
    if window.to <= window.from {
        return Err(SmsctlError::argument(
            "--to",
            "the end of the window must be after its start",
        ));
    }
    let kind = TopicKind::of(&window.topic);
    if kind == TopicKind::Raw && matches!(target, ReplayTarget::ClickHouse(_)) {
        return Err(SmsctlError::argument(
            "--to-clickhouse",
            format!("{} is not a topic the analytics sink stores", window.topic),
        ));
    }

    // Find the window's offsets in every partition.
    let mut config = kafka.consumer_config("smsctl-replay", "smsctl-replay");
    config
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "262144")
        .set("fetch.max.bytes", "104857600");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| kafka_error("creating a consumer".into(), e))?;
    let metadata = consumer
        .fetch_metadata(Some(&window.topic), KAFKA_TIMEOUT)
        .map_err(|e| kafka_error(format!("reading metadata of {}", window.topic), e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == window.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(SmsctlError::argument(
            "--topic",
            format!(
                "{} does not exist on {} (check the name and --topic-prefix)",
                window.topic, kafka.bootstrap
            ),
        ));
    }
    let starts = offsets_at(&consumer, &window.topic, &partitions, window.from)
        .map_err(|e| kafka_error(format!("finding offsets by time in {}", window.topic), e))?;
    let ends = offsets_at(&consumer, &window.topic, &partitions, window.to)
        .map_err(|e| kafka_error(format!("finding offsets by time in {}", window.topic), e))?;
    let mut assignment = TopicPartitionList::new();
    let mut bounds: HashMap<i32, (i64, i64)> = HashMap::new();
    for &p in &partitions {
        let (start, end) = (starts[&p], ends[&p]);
        if start < end {
            assignment
                .add_partition_offset(&window.topic, p, Offset::Offset(start))
                .map_err(|e| kafka_error("assigning partitions".into(), e))?;
            bounds.insert(p, (start, end));
        }
    }
    let total: u64 = bounds.values().map(|(s, e)| (e - s) as u64).sum();
    tracing::info!(topic = %window.topic, partitions = bounds.len(), records = total, "replay window found");
    let mut summary = ReplaySummary {
        partitions: bounds.len(),
        ..ReplaySummary::default()
    };
    progress.start(total);
    if bounds.is_empty() {
        progress.finish();
        return Ok(summary);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| kafka_error("assigning partitions".into(), e))?;

    // Records already in ClickHouse are not stored again.
    let mut stored: HashSet<(i32, i64)> = HashSet::new();
    if let ReplayTarget::ClickHouse(warehouse) = &target {
        stored = stored_positions(warehouse, &window.topic, &bounds).await?;
    }

    let mut writer = Writer::open(kafka, &target, &window.topic)?;
    let mut done: HashSet<i32> = HashSet::new();
    let mut idle = 0u32;
    let mut pending_rows: Vec<EventRow> = Vec::new();
    let mut pending_records = 0usize;
    while done.len() < bounds.len() {
        let Some(result) = consumer.poll(Duration::from_millis(500)) else {
            idle += 1;
            // Nothing for a minute while records are still owed: the broker lost them.
            if idle > 120 {
                tracing::warn!(topic = %window.topic, "replay stopped: no records for 60 s before the window's end");
                break;
            }
            continue;
        };
        idle = 0;
        let message = result.map_err(|e| kafka_error(format!("reading {}", window.topic), e))?;
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&(_, end)) = bounds.get(&partition) else {
            continue;
        };
        if offset >= end {
            done.insert(partition);
            continue;
        }
        if offset + 1 >= end {
            done.insert(partition);
        }
        summary.read += 1;
        progress.advance(1);
        if let Some(phone) = &window.phone {
            if message.key() != Some(phone.as_bytes()) {
                continue;
            }
        }
        summary.matched += 1;
        match &mut writer {
            Writer::Topic { producer, topic } => {
                let mut record = BaseRecord::<[u8], [u8]>::to(topic);
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                if let Some(payload) = message.payload() {
                    record = record.payload(payload);
                }
                if let Some(ts) = message.timestamp().to_millis() {
                    record = record.timestamp(ts);
                }
                if let Some(headers) = message.headers() {
                    record = record.headers(headers.detach());
                }
                send_retrying(producer, record)
                    .map_err(|e| kafka_error(format!("writing to {topic}"), e))?;
                summary.written += 1;
            }
            Writer::Lines(lines) => {
                let pushed = lines.push(
                    partition,
                    offset,
                    message.timestamp().to_millis(),
                    message.key(),
                    message.payload().unwrap_or_default(),
                );
                // The writer stopped on an error, which finishing returns.
                if pushed.is_err() {
                    break;
                }
            }
            Writer::ClickHouse { .. } => {
                if stored.contains(&(partition, offset)) {
                    summary.already_stored += 1;
                    continue;
                }
                let Some(payload) = message.payload() else {
                    continue;
                };
                let at = SourcePosition {
                    topic: &window.topic,
                    partition,
                    offset,
                };
                match event_rows(kind, payload, at) {
                    Ok(rows) => {
                        pending_rows.extend(rows);
                        pending_records += 1;
                    }
                    Err(reason) => {
                        summary.undecodable += 1;
                        tracing::warn!(partition, offset, %reason, "record does not decode");
                    }
                }
                if pending_records >= CLICKHOUSE_BATCH_RECORDS {
                    writer.store(&mut pending_rows).await?;
                    summary.written += pending_records as u64;
                    pending_records = 0;
                }
            }
        }
    }
    if pending_records > 0 {
        writer.store(&mut pending_rows).await?;
        summary.written += pending_records as u64;
    }
    if let Some(lines) = writer.finish(kafka)? {
        summary.written += lines.written;
        summary.undecodable += lines.undecodable;
    }
    progress.finish();
    Ok(summary)
}

/// The offset of the first record at or after `at` in each partition; the
/// partition's end when none is.
fn offsets_at(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    at: i64,
) -> Result<HashMap<i32, i64>, rdkafka::error::KafkaError> {
    let mut query = TopicPartitionList::new();
    for &p in partitions {
        query.add_partition_offset(topic, p, Offset::Offset(at))?;
    }
    let found = consumer.offsets_for_times(query, KAFKA_TIMEOUT)?;
    let mut out = HashMap::new();
    for element in found.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => o,
            _ => {
                let (_, high) =
                    consumer.fetch_watermarks(topic, element.partition(), KAFKA_TIMEOUT)?;
                high
            }
        };
        out.insert(element.partition(), offset);
    }
    Ok(out)
}

#[derive(Row, Deserialize)]
struct StoredPosition {
    partition: i32,
    offset: i64,
}

async fn stored_positions(
    warehouse: &Warehouse,
    topic: &str,
    bounds: &HashMap<i32, (i64, i64)>,
) -> Result<HashSet<(i32, i64)>, SmsctlError> {
    let ranges: Vec<String> = bounds
        .iter()
        .map(|(p, (s, e))| {
            format!("(source_partition = {p} AND source_offset >= {s} AND source_offset < {e})")
        })
        .collect();
    let sql = format!(
        "SELECT DISTINCT source_partition AS partition, source_offset AS offset FROM sms_events WHERE source_topic = {} AND ({})",
        crate::warehouse::quote(topic),
        ranges.join(" OR ")
    );
    let rows: Vec<StoredPosition> = warehouse.fetch("reading stored offsets", &sql).await?;
    Ok(rows.into_iter().map(|r| (r.partition, r.offset)).collect())
}

enum Writer {
    Topic {
        producer: Box<ThreadedProducer<DefaultProducerContext>>,
        topic: String,
    },
    /// Decoded on worker threads, see [`lines`].
    Lines(LineWriter),
    ClickHouse {
        store: Box<EventStore>,
        warehouse: Box<Warehouse>,
        topic: String,
        batches: u64,
    },
}

impl Writer {
    fn open(
        kafka: &KafkaSettings,
        target: &ReplayTarget,
        source: &str,
    ) -> Result<Self, SmsctlError> {
        Ok(match target {
            ReplayTarget::Topic(topic) => {
                if topic == source {
                    return Err(SmsctlError::argument(
                        "--to-topic",
                        "must differ from --topic",
                    ));
                }
                let producer = kafka
                    .producer_config("smsctl-replay")
                    .set("linger.ms", "20")
                    .set("batch.size", "1000000")
                    .create()
                    .map_err(|e| SmsctlError::Kafka {
                        bootstrap: kafka.bootstrap.clone(),
                        operation: "creating a producer".into(),
                        source: Box::new(e),
                    })?;
                Self::Topic {
                    producer: Box::new(producer),
                    topic: topic.clone(),
                }
            }
            ReplayTarget::File(path) => {
                let file = std::fs::File::create(path).map_err(|e| SmsctlError::io(path, e))?;
                Self::Lines(LineWriter::start(
                    Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
                    path.display().to_string(),
                    source,
                    TopicKind::of(source),
                    decoding_threads(),
                ))
            }
            ReplayTarget::Stdout => Self::Lines(LineWriter::start(
                Box::new(std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::io::stdout(),
                )),
                "standard output".into(),
                source,
                TopicKind::of(source),
                decoding_threads(),
            )),
            ReplayTarget::ClickHouse(warehouse) => Self::ClickHouse {
                store: Box::new(EventStore::new(warehouse.client.clone())),
                warehouse: warehouse.clone(),
                topic: source.to_string(),
                batches: 0,
            },
        })
    }

    async fn store(&mut self, rows: &mut Vec<EventRow>) -> Result<(), SmsctlError> {
        if let Self::ClickHouse {
            store,
            warehouse,
            topic,
            batches,
        } = self
        {
            *batches += 1;
            let token = format!(
                "smsctl-replay/{topic}/{}",
                rows.first()
                    .map(|r| r.event_id.as_str())
                    .unwrap_or_default()
            );
            store
                .insert(rows, &token)
                .await
                .map_err(|e| SmsctlError::Store {
                    url: warehouse.url.clone(),
                    database: warehouse.database.clone(),
                    source: Box::new(e),
                })?;
            rows.clear();
        }
        Ok(())
    }

    /// Flushes what is still queued; for JSON lines, says what was written.
    fn finish(self, kafka: &KafkaSettings) -> Result<Option<LinesWritten>, SmsctlError> {
        match self {
            Self::Topic { producer, .. } => producer
                .flush(Duration::from_secs(60))
                .map(|()| None)
                .map_err(|e| SmsctlError::Kafka {
                    bootstrap: kafka.bootstrap.clone(),
                    operation: "flushing the producer".into(),
                    source: Box::new(e),
                }),
            Self::Lines(lines) => lines.finish().map(Some),
            Self::ClickHouse { .. } => Ok(None),
        }
    }
}

/// Threads decoding records into JSON lines: one per core.
fn decoding_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Sends one record, waiting while the producer's queue is full.
fn send_retrying(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), rdkafka::error::KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn decode<T: AvroRecord>(payload: &[u8]) -> Result<T, String> {
    decode_single_object::<T>(payload).map_err(|e| e.to_string())
}

fn json<T: serde::Serialize>(record: T) -> Result<serde_json::Value, String> {
    serde_json::to_value(record).map_err(|e| e.to_string())
}

/// A record as JSON, decoded by what its topic carries.
pub fn decode_json(kind: TopicKind, payload: &[u8]) -> Result<serde_json::Value, String> {
    match kind {
        TopicKind::Request | TopicKind::RetryRequest => json(decode::<SmsRequest>(payload)?),
        TopicKind::Dispatch => json(decode::<DispatchEvent>(payload)?),
        TopicKind::Report => json(decode::<CarrierReport>(payload)?),
        TopicKind::Uplink => json(decode::<UplinkMessage>(payload)?),
        TopicKind::Status => json(decode::<FinalStatus>(payload)?),
        TopicKind::Subscription => json(decode::<SubscriptionRecord>(payload)?),
        TopicKind::DeadLetter => json(decode::<DeadLetter>(payload)?),
        TopicKind::Raw => Ok(match serde_json::from_slice(payload) {
            Ok(value) => value,
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(payload).into_owned()),
        }),
    }
}

/// The `sms_events` rows of one record, as the analytics sink makes them.
pub fn event_rows(
    kind: TopicKind,
    payload: &[u8],
    at: SourcePosition<'_>,
) -> Result<Vec<EventRow>, String> {
    Ok(match kind {
        TopicKind::Request => rows::request_rows(&decode(payload)?, at, false),
        TopicKind::RetryRequest => rows::request_rows(&decode(payload)?, at, true),
        TopicKind::Dispatch => rows::dispatch_rows(&decode(payload)?, at),
        TopicKind::Report => rows::report_rows(&decode(payload)?, at),
        TopicKind::Uplink => rows::uplink_rows(&decode(payload)?, at),
        TopicKind::Status => rows::final_status_rows(&decode(payload)?, at),
        TopicKind::Subscription => rows::subscription_rows(&decode(payload)?, at),
        TopicKind::DeadLetter => rows::dead_letter_rows(&decode(payload)?, at),
        TopicKind::Raw => return Err("not an Avro topic".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_kinds_ignore_the_prefix() {
        assert_eq!(TopicKind::of("staging.sms.status"), TopicKind::Status);
        assert_eq!(TopicKind::of("sms.requests.retry"), TopicKind::RetryRequest);
        assert_eq!(TopicKind::of("sms.inbound.raw"), TopicKind::Raw);
    }
}
