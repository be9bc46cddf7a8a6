//! The consumer loop: read every topic, decode on every core, batch, store in ClickHouse while the next batch is read, then commit.
//!
//! Two batches at most are held at once: the one being stored and the one
//! being read. Reading copies each record's bytes out of the consumer and
//! hands them, a chunk at a time, to decoding tasks that run on any worker
//! thread; the batch is complete once every chunk is decoded and every
//! record that did not decode is safe in the dead-letter topic. Storing runs
//! in a task of its own and commits the batch's offsets once ClickHouse took
//! it; the next batch is stored only after that, so commits stay in order.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sms_core::avro::AvroCodec;
use sms_core::events::{
    now_millis, CarrierReport, DeadLetter, DeadLetterError, DispatchEvent, FinalStatus, SmsRequest,
    SubscriptionRecord, UplinkMessage,
};
use sms_core::CoreError;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::AnalyticsConfig;
use crate::error::AnalyticsError;
use crate::exporter::{self, Health};
use crate::rows::{self, EventRow, SourcePosition, EVENTS_TABLE};
use crate::store::{EventStore, PartitionKey};

/// The name the sink signs its dead letters with.
pub const SERVICE: &str = "analytics";

/// Records decoded by one task: small enough that a worker thread is not
/// held for long, large enough that spawning costs nothing in comparison.
const DECODE_CHUNK_RECORDS: usize = 2_048;

/// Which record type a topic carries, and how it becomes rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Request,
    RetryRequest,
    Dispatch,
    Report,
    Uplink,
    Status,
    Subscription,
    DeadLetter,
}

/// Tells the loop that the assignment changed, and exports librdkafka's lag.
struct SinkContext {
    reassigned: Arc<AtomicBool>,
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // librdkafka reports -1 for partitions it does not consume.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(exporter::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "partition assignment changed");
        self.reassigned.store(true, Ordering::SeqCst);
    }
}

type SinkConsumer = StreamConsumer<SinkContext>;

/// Records read since the last commit, turned into rows.
#[derive(Debug, Default)]
pub struct Batch {
    rows: Vec<EventRow>,
    /// The first and last offset read per partition.
    ranges: BTreeMap<PartitionKey, (i64, i64)>,
    records: usize,
}

impl Batch {
    /// Records read into this batch (dead letters and tombstones included).
    pub fn records(&self) -> usize {
        self.records
    }

    /// Rows waiting to be stored.
    pub fn rows(&self) -> &[EventRow] {
        &self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The insert's deduplication token: the offset range of every
    /// partition whose rows it holds. A retry of the same rows has the same
    /// token; different rows never do.
    fn token(&self) -> String {
        let mut ranges: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
        for row in &self.rows {
            ranges
                .entry((row.source_topic.as_str(), row.source_partition))
                .and_modify(|(first, last)| {
                    *first = (*first).min(row.source_offset);
                    *last = (*last).max(row.source_offset);
                })
                .or_insert((row.source_offset, row.source_offset));
        }
        ranges
            .iter()
            .map(|((topic, partition), (first, last))| {
                format!("{topic}/{partition}/{first}-{last}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A record copied out of the consumer, waiting for a decoding task.
struct RawRecord {
    route: Route,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl RawRecord {
    fn position(&self) -> SourcePosition<'_> {
        SourcePosition {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// What a decoding task gives back: the rows of the records that decoded,
/// and the records that did not, with the reason.
#[derive(Default)]
struct DecodedChunk {
    rows: Vec<EventRow>,
    undecodable: Vec<(RawRecord, CoreError)>,
}

/// How far a batch read one partition.
struct PartitionRead {
    topic: Arc<str>,
    partition: i32,
    first: i64,
    last: i64,
    records: u64,
}

/// A batch while it is read: positions per partition, the chunk being
/// filled, and the chunks being decoded.
struct BatchBuilder {
    reads: Vec<PartitionRead>,
    records: usize,
    chunk: Vec<RawRecord>,
    decoding: Vec<JoinHandle<DecodedChunk>>,
}

impl BatchBuilder {
    fn new() -> Self {
        Self {
            reads: Vec::new(),
            records: 0,
            chunk: Vec::new(),
            decoding: Vec::new(),
        }
    }

    fn mark(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        self.records += 1;
        // A batch reads few partitions, mostly in runs: a scan from the
        // most recent one is quicker than hashing the topic name.
        match self
            .reads
            .iter_mut()
            .rev()
            .find(|r| r.partition == partition && *r.topic == **topic)
        {
            Some(read) => {
                read.first = read.first.min(offset);
                read.last = read.last.max(offset);
                read.records += 1;
            }
            None => self.reads.push(PartitionRead {
                topic: topic.clone(),
                partition,
                first: offset,
                last: offset,
                records: 1,
            }),
        }
    }

    /// Hands the chunk being filled to a decoding task.
    fn spawn_decoding(&mut self, codec: &AvroCodec) {
        if self.chunk.is_empty() {
            return;
        }
        let chunk = std::mem::take(&mut self.chunk);
        let codec = codec.clone();
        self.decoding.push(tokio::spawn(
            async move { decode_chunk(&codec, chunk).await },
        ));
    }
}

async fn decode_chunk(codec: &AvroCodec, chunk: Vec<RawRecord>) -> DecodedChunk {
    let mut decoded = DecodedChunk {
        rows: Vec::with_capacity(chunk.len()),
        undecodable: Vec::new(),
    };
    for record in chunk {
        match decode(codec, record.route, &record.payload, record.position()).await {
            Ok(rows) => decoded.rows.extend(rows),
            Err(error) => decoded.undecodable.push((record, error)),
        }
    }
    decoded
}

async fn decode(
    codec: &AvroCodec,
    route: Route,
    payload: &[u8],
    at: SourcePosition<'_>,
) -> Result<Vec<EventRow>, CoreError> {
    Ok(match route {
        Route::Request => {
            rows::request_rows(&codec.decode::<SmsRequest>(payload).await?, at, false)
        }
        Route::RetryRequest => {
            rows::request_rows(&codec.decode::<SmsRequest>(payload).await?, at, true)
        }
        Route::Dispatch => rows::dispatch_rows(&codec.decode::<DispatchEvent>(payload).await?, at),
        Route::Report => rows::report_rows(&codec.decode::<CarrierReport>(payload).await?, at),
        Route::Uplink => rows::uplink_rows(&codec.decode::<UplinkMessage>(payload).await?, at),
        Route::Status => rows::final_status_rows(&codec.decode::<FinalStatus>(payload).await?, at),
        Route::Subscription => {
            rows::subscription_rows(&codec.decode::<SubscriptionRecord>(payload).await?, at)
        }
        Route::DeadLetter => {
            rows::dead_letter_rows(&codec.decode::<DeadLetter>(payload).await?, at)
        }
    })
}

/// Waits that double from `initial` up to `max`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn wait(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The reading half: takes records from Kafka, decodes them, sends what
/// does not decode to the dead-letter topic.
struct Reader {
    consumer: Arc<SinkConsumer>,
    dead_letters: FutureProducer,
    dead_letter_topic: String,
    codec: AvroCodec,
    /// Every subscribed topic, with its name shared by the records read from it.
    routes: HashMap<String, (Route, Arc<str>)>,
    batch_max_events: usize,
    batch_max_time: Duration,
    backoff: Backoff,
}

/// The storing half: inserts batches, keeps the stored offsets, commits.
struct Writer {
    consumer: Arc<SinkConsumer>,
    store: EventStore,
    backoff: Backoff,
    shutdown_drain: Duration,
    /// The highest offset known to be in ClickHouse, per partition.
    stored: HashMap<PartitionKey, i64>,
    reassigned: Arc<AtomicBool>,
    health: Health,
}

/// The analytics sink: one member of the consumer group reading every topic.
pub struct Sink {
    reader: Reader,
    writer: Writer,
}

/// Where the storing half is: waiting for a batch, or storing one in a task
/// of its own.
enum Stage {
    Idle(Box<Writer>),
    Storing(JoinHandle<(Box<Writer>, Result<(), AnalyticsError>)>),
}

/// Whether the batch was stored; `Ok(false)` when shutdown came while
/// ClickHouse still refused it, and its records will be read again.
fn stored_or_stopped(stored: Result<(), AnalyticsError>) -> Result<bool, AnalyticsError> {
    match stored {
        Ok(()) => Ok(true),
        Err(AnalyticsError::ShutdownBeforeStored { rows }) => {
            tracing::warn!(
                rows,
                "shut down before ClickHouse took the batch; it will be read again"
            );
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

impl Sink {
    /// Connects to Kafka and subscribes to every topic. The schema must be
    /// migrated first (see [`crate::schema::migrate`]).
    pub fn new(config: &AnalyticsConfig, health: Health) -> Result<Self, AnalyticsError> {
        let topics = config.kafka.topics();
        let routes: HashMap<String, (Route, Arc<str>)> = [
            (topics.requests_otp, Route::Request),
            (topics.requests_notify, Route::Request),
            (topics.requests_retry, Route::RetryRequest),
            (topics.dispatch, Route::Dispatch),
            (topics.reports, Route::Report),
            (topics.mo, Route::Uplink),
            (topics.status, Route::Status),
            (topics.subscriptions, Route::Subscription),
            (topics.dlq.clone(), Route::DeadLetter),
        ]
        .into_iter()
        .map(|(topic, route)| {
            let name: Arc<str> = Arc::from(topic.as_str());
            (topic, (route, name))
        })
        .collect();

        let reassigned = Arc::new(AtomicBool::new(true));
        let mut consumer_config = config.kafka.consumer_config(SERVICE, &config.group_id);
        consumer_config
            .set(
                "max.poll.interval.ms",
                config.max_poll_interval_ms.to_string(),
            )
            .set("statistics.interval.ms", "5000")
            // Large fetches: the sink reads everything, in bulk. The broker
            // holds a fetch until it has 256 KiB or 100 ms has passed, rather
            // than answering each new record on its own: the sink stores in
            // batches of up to a second anyway, and the broker's answers to
            // small fetches cost it processor time the rest of the pipeline
            // needs.
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "4194304")
            .set("fetch.min.bytes", "262144")
            .set("fetch.wait.max.ms", "100");
        let consumer: SinkConsumer = consumer_config
            .create_with_context(SinkContext {
                reassigned: reassigned.clone(),
            })
            .map_err(|e| AnalyticsError::kafka("creating the consumer", e))?;
        let names: Vec<&str> = routes.keys().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| AnalyticsError::kafka("subscribing", e))?;
        let consumer = Arc::new(consumer);
        let dead_letters: FutureProducer = config
            .kafka
            .producer_config(SERVICE)
            .create()
            .map_err(|e| AnalyticsError::kafka("creating the dead-letter producer", e))?;
        let backoff = Backoff {
            initial: Duration::from_millis(config.retry_initial_ms),
            max: Duration::from_millis(config.retry_max_ms),
        };

        Ok(Self {
            reader: Reader {
                consumer: consumer.clone(),
                dead_letters,
                dead_letter_topic: topics.dlq,
                codec: AvroCodec::single_object(),
                routes,
                batch_max_events: config.batch_max_events,
                batch_max_time: config.batch_max_time(),
                backoff,
            },
            writer: Writer {
                consumer,
                store: EventStore::new(config.clickhouse.client()),
                backoff,
                shutdown_drain: Duration::from_millis(config.shutdown_drain_ms),
                stored: HashMap::new(),
                reassigned,
                health,
            },
        })
    }

    /// Runs until `shutdown`: reads a batch while the one before is stored
    /// and committed. On shutdown the batch being read is stored and
    /// committed too before it returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AnalyticsError> {
        let Self { reader, writer } = self;
        tracing::info!(
            topics = reader.routes.len(),
            batch_max_events = reader.batch_max_events,
            batch_max_ms = reader.batch_max_time.as_millis() as u64,
            "sink consuming"
        );
        // Cancelled when storing failed for good: the batch being read is
        // then abandoned, uncommitted.
        let halt = CancellationToken::new();
        let mut stage = Stage::Idle(Box::new(writer));
        loop {
            let read = reader.next_batch(&shutdown, &halt).await;

            // The batch before this one is stored and committed first.
            let mut writer = match stage {
                Stage::Idle(writer) => writer,
                Stage::Storing(task) => {
                    let (writer, stored) = match task.await {
                        Ok(done) => done,
                        Err(error) => std::panic::resume_unwind(error.into_panic()),
                    };
                    if !stored_or_stopped(stored)? {
                        return Ok(());
                    }
                    writer
                }
            };
            let batch = read?;

            if shutdown.is_cancelled() {
                if !batch.is_empty()
                    && !stored_or_stopped(writer.store_and_commit(batch, &shutdown).await)?
                {
                    return Ok(());
                }
                tracing::info!("sink stopped: last batch stored and committed");
                return Ok(());
            }
            if batch.is_empty() {
                stage = Stage::Idle(writer);
                continue;
            }
            let (shutdown, halt) = (shutdown.clone(), halt.clone());
            stage = Stage::Storing(tokio::spawn(async move {
                let stored = writer.store_and_commit(batch, &shutdown).await;
                if stored.is_err() {
                    halt.cancel();
                }
                (writer, stored)
            }));
        }
    }

    /// Reads records until the batch is full, `batch_max_ms` passed since
    /// its first record, or `shutdown`.
    pub async fn next_batch(&self, shutdown: &CancellationToken) -> Result<Batch, AnalyticsError> {
        self.reader.next_batch(shutdown, shutdown).await
    }

    /// Stores the batch's rows, skipping those already stored (read again
    /// after a restart or rebalance) and those of partitions no longer
    /// assigned. Retries with backoff while ClickHouse refuses; after
    /// `shutdown`, for at most `shutdown_drain_ms`.
    pub async fn write(
        &mut self,
        batch: &mut Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), AnalyticsError> {
        self.writer.write(batch, shutdown).await
    }

    /// Commits the offset after the last record of every partition in the
    /// batch. A failed commit is logged: the records will be read again and
    /// skipped as already stored.
    pub fn commit(&self, batch: &Batch, mode: CommitMode) {
        self.writer.commit(batch, mode);
    }
}

impl Reader {
    /// Reads records until the batch is full, `batch_max_ms` passed since
    /// its first record, `shutdown` or `halt`; then waits for its records
    /// to be decoded.
    async fn next_batch(
        &self,
        shutdown: &CancellationToken,
        halt: &CancellationToken,
    ) -> Result<Batch, AnalyticsError> {
        let mut builder = BatchBuilder::new();
        // Made once and polled again for every record: registering a waker
        // per record with the token and the timer costs more than reading.
        let stopped = async {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = halt.cancelled() => {}
            }
        };
        tokio::pin!(stopped);
        let mut deadline: Option<Pin<Box<Sleep>>> = None;
        while builder.records < self.batch_max_events {
            let timer = async {
                match deadline.as_mut() {
                    Some(sleep) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                _ = timer => break,
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        self.take(&message, &mut builder);
                        if deadline.is_none() {
                            deadline = Some(Box::pin(tokio::time::sleep(self.batch_max_time)));
                        }
                    }
                    Err(error) => tracing::warn!(%error, "kafka consumer error"),
                },
            }
        }
        self.finish(builder, shutdown).await
    }

    /// Notes the record's position and queues its bytes for decoding.
    fn take(&self, message: &BorrowedMessage<'_>, builder: &mut BatchBuilder) {
        let Some((route, topic)) = self.routes.get(message.topic()) else {
            // Not subscribed to; counted so that its offset is committed.
            let topic: Arc<str> = Arc::from(message.topic());
            builder.mark(&topic, message.partition(), message.offset());
            return;
        };
        builder.mark(topic, message.partition(), message.offset());
        // A tombstone on the compacted subscription topic: nothing to record.
        let Some(payload) = message.payload() else {
            return;
        };
        builder.chunk.push(RawRecord {
            route: *route,
            topic: topic.clone(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        });
        if builder.chunk.len() >= DECODE_CHUNK_RECORDS {
            builder.spawn_decoding(&self.codec);
        }
    }

    /// Collects the decoded chunks in the order they were read and writes
    /// the dead letters of the records that did not decode.
    async fn finish(
        &self,
        mut builder: BatchBuilder,
        shutdown: &CancellationToken,
    ) -> Result<Batch, AnalyticsError> {
        builder.spawn_decoding(&self.codec);
        let mut batch = Batch {
            rows: Vec::with_capacity(builder.records),
            ranges: BTreeMap::new(),
            records: builder.records,
        };
        for read in &builder.reads {
            metrics::counter!(exporter::RECORDS_READ, "topic" => read.topic.to_string())
                .increment(read.records);
            let key = (read.topic.to_string(), read.partition);
            let range = batch.ranges.entry(key).or_insert((read.first, read.last));
            range.0 = range.0.min(read.first);
            range.1 = range.1.max(read.last);
        }
        let mut failure = None;
        for task in builder.decoding {
            let decoded = match task.await {
                Ok(decoded) => decoded,
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            };
            tracing::debug!(rows = decoded.rows.len(), "records decoded");
            batch.rows.extend(decoded.rows);
            for (record, error) in decoded.undecodable {
                // Every chunk is awaited, even after a dead letter failed,
                // so that no decoding task outlives the batch.
                if failure.is_none() {
                    if let Err(e) = self.dead_letter(&record, &error, shutdown).await {
                        failure = Some(e);
                    }
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(batch),
        }
    }

    /// Writes an undecodable record to `sms.dlq`, retrying until Kafka takes
    /// it: its offset is committed only once the dead letter is safe.
    async fn dead_letter(
        &self,
        record: &RawRecord,
        error: &CoreError,
        shutdown: &CancellationToken,
    ) -> Result<(), AnalyticsError> {
        let (topic, partition, offset) = (&*record.topic, record.partition, record.offset);
        metrics::counter!(exporter::DEAD_LETTERS, "topic" => topic.to_string()).increment(1);
        if record.route == Route::DeadLetter {
            // Not sent back to the topic it came from, or it would circle.
            tracing::error!(topic, partition, offset, %error, "dead letter does not decode; dropped");
            return Ok(());
        }
        tracing::warn!(topic, partition, offset, %error, "record does not decode; sent to the dead-letter topic");
        let letter = DeadLetter {
            source_topic: topic.to_string(),
            source_partition: partition,
            source_offset: offset,
            key: record.key.clone(),
            payload: Some(record.payload.clone()),
            error: DeadLetterError::Undecodable,
            reason: error.to_string(),
            service: SERVICE.into(),
            recorded_at: now_millis(),
        };
        let payload = self
            .codec
            .encode(&letter)
            .map_err(|e| AnalyticsError::DeadLetter {
                topic: topic.into(),
                partition,
                offset,
                message: e.to_string(),
            })?;
        let mut attempt = 0;
        loop {
            let mut message = FutureRecord::to(&self.dead_letter_topic).payload(&payload);
            if let Some(key) = &record.key {
                message = message.key(key);
            }
            match self
                .dead_letters
                .send(message, Duration::from_secs(30))
                .await
            {
                Ok(_) => return Ok(()),
                Err((kafka_error, _)) => {
                    tracing::warn!(topic, partition, offset, error = %kafka_error, attempt, "dead letter not written; retrying");
                }
            }
            if shutdown.is_cancelled() {
                return Err(AnalyticsError::DeadLetter {
                    topic: topic.into(),
                    partition,
                    offset,
                    message: "shut down before the dead letter was written".into(),
                });
            }
            tokio::time::sleep(self.backoff.wait(attempt)).await;
            attempt += 1;
        }
    }
}

impl Writer {
    /// Stores the batch, then commits its offsets: synchronously after
    /// `shutdown`, so that they are with the broker before the sink exits.
    async fn store_and_commit(
        &mut self,
        mut batch: Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), AnalyticsError> {
        self.write(&mut batch, shutdown).await?;
        let mode = if shutdown.is_cancelled() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        self.commit(&batch, mode);
        Ok(())
    }

    async fn write(
        &mut self,
        batch: &mut Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), AnalyticsError> {
        let span = tracing::info_span!("batch", records = batch.records, rows = batch.rows.len());
        async {
            if self.reassigned.swap(false, Ordering::SeqCst) {
                self.stored = self
                    .retry(shutdown, batch.rows.len(), |store| async move {
                        store.stored_offsets().await
                    })
                    .await?;
                tracing::info!(partitions = self.stored.len(), "stored offsets loaded");
            }
            let assigned = self.assigned();
            batch
                .ranges
                .retain(|key, _| assigned.as_ref().is_none_or(|a| a.contains(key)));

            // Per partition still owned, the highest offset already stored;
            // rows at or below it, or of partitions not owned, are dropped.
            let mut floors: HashMap<&str, HashMap<i32, i64>> = HashMap::new();
            for (topic, partition) in batch.ranges.keys() {
                let floor = self
                    .stored
                    .get(&(topic.clone(), *partition))
                    .copied()
                    .unwrap_or(i64::MIN);
                floors
                    .entry(topic.as_str())
                    .or_default()
                    .insert(*partition, floor);
            }
            let before = batch.rows.len();
            batch.rows.retain(|row| {
                floors
                    .get(row.source_topic.as_str())
                    .and_then(|partitions| partitions.get(&row.source_partition))
                    .is_some_and(|floor| row.source_offset > *floor)
            });
            drop(floors);
            let skipped = before - batch.rows.len();
            if skipped > 0 {
                metrics::counter!(exporter::REDELIVERED_SKIPPED).increment(skipped as u64);
                tracing::info!(
                    skipped,
                    "rows already stored or no longer assigned; not stored again"
                );
            }

            if !batch.rows.is_empty() {
                let token = batch.token();
                let rows = std::mem::take(&mut batch.rows);
                let started = std::time::Instant::now();
                let rows_ref = &rows;
                let token_ref = token.as_str();
                self.retry(shutdown, rows.len(), |store| async move {
                    store.insert(rows_ref, token_ref).await
                })
                .await?;
                metrics::histogram!(exporter::INSERT_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!(exporter::ROWS_INSERTED, "table" => EVENTS_TABLE)
                    .increment(rows.len() as u64);
                metrics::histogram!(exporter::BATCH_ROWS).record(rows.len() as f64);
                tracing::debug!(rows = rows.len(), "batch stored");
                batch.rows = rows;
            }
            metrics::histogram!(exporter::BATCH_RECORDS).record(batch.records as f64);
            for (key, (_, last)) in &batch.ranges {
                let entry = self.stored.entry(key.clone()).or_insert(*last);
                *entry = (*entry).max(*last);
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Runs `operation` against the store until it succeeds, waiting longer
    /// after each failure; gives up only after shutdown and the drain time.
    async fn retry<T, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        rows: usize,
        operation: F,
    ) -> Result<T, AnalyticsError>
    where
        F: Fn(EventStore) -> Fut,
        Fut: std::future::Future<Output = Result<T, AnalyticsError>>,
    {
        let mut attempt = 0;
        let mut give_up_at: Option<Instant> = None;
        loop {
            match operation(self.store.clone()).await {
                Ok(value) => {
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, "clickhouse took the batch again");
                    }
                    self.health.set_storing(true);
                    return Ok(value);
                }
                Err(error) if error.is_retryable() => {
                    self.health.set_storing(false);
                    metrics::counter!(exporter::INSERT_RETRIES).increment(1);
                    let wait = self.backoff.wait(attempt);
                    tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, rows, "clickhouse refused; consumption paused, retrying");
                    if shutdown.is_cancelled() {
                        let at =
                            *give_up_at.get_or_insert_with(|| Instant::now() + self.shutdown_drain);
                        if Instant::now() >= at {
                            return Err(AnalyticsError::ShutdownBeforeStored { rows });
                        }
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn commit(&self, batch: &Batch, mode: CommitMode) {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), (_, last)) in &batch.ranges {
            if let Err(error) =
                list.add_partition_offset(topic, *partition, Offset::Offset(last + 1))
            {
                tracing::warn!(topic, partition, %error, "offset not added to the commit");
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(error) = self.consumer.commit(&list, mode) {
            metrics::counter!(exporter::COMMIT_FAILURES).increment(1);
            tracing::warn!(%error, "offset commit failed; the batch will be read again and skipped");
        }
    }

    /// The partitions this member owns now; `None` when the client cannot
    /// say, and the batch is then kept whole.
    fn assigned(&self) -> Option<std::collections::HashSet<PartitionKey>> {
        match self.consumer.assignment() {
            Ok(list) => Some(
                list.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect(),
            ),
            Err(error) => {
                tracing::warn!(%error, "assignment unknown; keeping the batch whole");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sms_core::events::{FinalState, MessageKind};

    fn status(n: i64) -> FinalStatus {
        FinalStatus {
            message_id: format!("00000000-0000-5000-8000-{n:012}"),
            request_id: format!("r{n}"),
            phone: "8613012345678".into(),
            kind: MessageKind::Notice,
            status: FinalState::Delivered,
            failure_category: None,
            error_code: None,
            refusal_reason: None,
            billed_segments: 1,
            segments_delivered: 1,
            accepted_at: 1_000,
            submitted_at: Some(1_100),
            gateway_response_at: Some(1_150),
            report_at: Some(2_000),
            decided_at: 2_000,
            within_seven_seconds: true,
        }
    }

    fn raw(topic: &Arc<str>, offset: i64, payload: Vec<u8>) -> RawRecord {
        RawRecord {
            route: Route::Status,
            topic: topic.clone(),
            partition: 1,
            offset,
            key: Some(b"8613012345678".to_vec()),
            payload,
        }
    }

    #[tokio::test]
    async fn a_chunk_keeps_the_read_order_and_sets_undecodable_records_aside() {
        let codec = AvroCodec::single_object();
        let topic: Arc<str> = Arc::from("sms.status");
        let chunk = vec![
            raw(&topic, 10, codec.encode(&status(10)).expect("encodes")),
            raw(&topic, 11, b"not avro at all".to_vec()),
            raw(&topic, 12, codec.encode(&status(12)).expect("encodes")),
        ];

        let decoded = decode_chunk(&codec, chunk).await;

        let offsets: Vec<i64> = decoded.rows.iter().map(|r| r.source_offset).collect();
        assert_eq!(offsets, [10, 12]);
        assert_eq!(decoded.rows[0].message_id, status(10).message_id);
        assert_eq!(decoded.rows[1].event_id, "sms.status/1/12/0");
        assert_eq!(decoded.undecodable.len(), 1);
        let (record, error) = &decoded.undecodable[0];
        assert_eq!(record.offset, 11);
        assert_eq!(record.payload, b"not avro at all");
        assert!(!error.to_string().is_empty());
    }

    #[test]
    fn a_batch_notes_the_offset_range_and_count_of_every_partition() {
        let status: Arc<str> = Arc::from("sms.status");
        let dispatch: Arc<str> = Arc::from("sms.dispatch");
        let mut builder = BatchBuilder::new();
        for (topic, partition, offset) in [
            (&status, 0, 5),
            (&status, 0, 6),
            (&dispatch, 0, 40),
            (&status, 1, 9),
            (&status, 0, 7),
        ] {
            builder.mark(topic, partition, offset);
        }

        let reads: Vec<(&str, i32, i64, i64, u64)> = builder
            .reads
            .iter()
            .map(|r| (&*r.topic, r.partition, r.first, r.last, r.records))
            .collect();
        assert_eq!(
            reads,
            [
                ("sms.status", 0, 5, 7, 3),
                ("sms.dispatch", 0, 40, 40, 1),
                ("sms.status", 1, 9, 9, 1),
            ]
        );
        assert_eq!(builder.records, 5);
    }
}
