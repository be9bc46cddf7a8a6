//! The consumer loop: read every topic, decode, batch, store in ClickHouse, then commit.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::AnalyticsConfig;
use crate::error::AnalyticsError;
use crate::exporter::{self, Health};
use crate::rows::{self, EventRow, SourcePosition, EVENTS_TABLE};
use crate::store::{EventStore, PartitionKey};

/// The name the sink signs its dead letters with.
pub const SERVICE: &str = "analytics";

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

    fn mark(&mut self, position: SourcePosition<'_>) {
        self.records += 1;
        let key = (position.topic.to_string(), position.partition);
        self.ranges
            .entry(key)
            .and_modify(|(_, last)| *last = (*last).max(position.offset))
            .or_insert((position.offset, position.offset));
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

/// The analytics sink: one member of the consumer group reading every topic.
pub struct Sink {
    consumer: StreamConsumer<SinkContext>,
    dead_letters: FutureProducer,
    dead_letter_topic: String,
    codec: AvroCodec,
    routes: HashMap<String, Route>,
    store: EventStore,
    batch_max_events: usize,
    batch_max_time: Duration,
    backoff: Backoff,
    shutdown_drain: Duration,
    /// The highest offset known to be in ClickHouse, per partition.
    stored: HashMap<PartitionKey, i64>,
    reassigned: Arc<AtomicBool>,
    health: Health,
}

impl Sink {
    /// Connects to Kafka and subscribes to every topic. The schema must be
    /// migrated first (see [`crate::schema::migrate`]).
    pub fn new(config: &AnalyticsConfig, health: Health) -> Result<Self, AnalyticsError> {
        let topics = config.kafka.topics();
        let routes: HashMap<String, Route> = [
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
        .collect();

        let reassigned = Arc::new(AtomicBool::new(true));
        let mut consumer_config = config.kafka.consumer_config(SERVICE, &config.group_id);
        consumer_config
            .set(
                "max.poll.interval.ms",
                config.max_poll_interval_ms.to_string(),
            )
            .set("statistics.interval.ms", "5000")
            // Large fetches: the sink reads everything, in bulk.
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "4194304");
        let consumer: StreamConsumer<SinkContext> = consumer_config
            .create_with_context(SinkContext {
                reassigned: reassigned.clone(),
            })
            .map_err(|e| AnalyticsError::kafka("creating the consumer", e))?;
        let names: Vec<&str> = routes.keys().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| AnalyticsError::kafka("subscribing", e))?;
        let dead_letters: FutureProducer = config
            .kafka
            .producer_config(SERVICE)
            .create()
            .map_err(|e| AnalyticsError::kafka("creating the dead-letter producer", e))?;

        Ok(Self {
            consumer,
            dead_letters,
            dead_letter_topic: topics.dlq,
            codec: AvroCodec::single_object(),
            routes,
            store: EventStore::new(config.clickhouse.client()),
            batch_max_events: config.batch_max_events,
            batch_max_time: config.batch_max_time(),
            backoff: Backoff {
                initial: Duration::from_millis(config.retry_initial_ms),
                max: Duration::from_millis(config.retry_max_ms),
            },
            shutdown_drain: Duration::from_millis(config.shutdown_drain_ms),
            stored: HashMap::new(),
            reassigned,
            health,
        })
    }

    /// Runs until `shutdown`: batches, stores, commits. On shutdown the
    /// current batch is stored and committed before it returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AnalyticsError> {
        tracing::info!(
            topics = self.routes.len(),
            batch_max_events = self.batch_max_events,
            batch_max_ms = self.batch_max_time.as_millis() as u64,
            "sink consuming"
        );
        loop {
            let mut batch = self.next_batch(&shutdown).await?;
            if !batch.is_empty() {
                match self.write(&mut batch, &shutdown).await {
                    Ok(()) => {}
                    Err(AnalyticsError::ShutdownBeforeStored { rows }) => {
                        tracing::warn!(
                            rows,
                            "shut down before ClickHouse took the batch; it will be read again"
                        );
                        return Ok(());
                    }
                    Err(error) => return Err(error),
                }
                let mode = if shutdown.is_cancelled() {
                    CommitMode::Sync
                } else {
                    CommitMode::Async
                };
                self.commit(&batch, mode);
            }
            if shutdown.is_cancelled() {
                tracing::info!("sink stopped: last batch stored and committed");
                return Ok(());
            }
        }
    }

    /// Reads records until the batch is full, `batch_max_ms` passed since
    /// its first record, or `shutdown`.
    pub async fn next_batch(&self, shutdown: &CancellationToken) -> Result<Batch, AnalyticsError> {
        let mut batch = Batch::default();
        let mut deadline: Option<Instant> = None;
        while batch.records < self.batch_max_events {
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = timer => break,
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        self.take(&message, &mut batch, shutdown).await?;
                        deadline.get_or_insert_with(|| Instant::now() + self.batch_max_time);
                    }
                    Err(error) => tracing::warn!(%error, "kafka consumer error"),
                },
            }
        }
        Ok(batch)
    }

    /// Decodes one record into the batch, or sends it to the dead-letter topic.
    async fn take(
        &self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), AnalyticsError> {
        let position = SourcePosition {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        batch.mark(position);
        metrics::counter!(exporter::RECORDS_READ, "topic" => position.topic.to_string())
            .increment(1);
        let Some(route) = self.routes.get(position.topic).copied() else {
            return Ok(());
        };
        // A tombstone on the compacted subscription topic: nothing to record.
        let Some(payload) = message.payload() else {
            return Ok(());
        };
        match self.decode(route, payload, position).await {
            Ok(rows) => {
                tracing::debug!(
                    topic = position.topic,
                    partition = position.partition,
                    offset = position.offset,
                    rows = rows.len(),
                    "record decoded"
                );
                batch.rows.extend(rows);
                Ok(())
            }
            Err(error) => self.dead_letter(message, route, &error, shutdown).await,
        }
    }

    async fn decode(
        &self,
        route: Route,
        payload: &[u8],
        at: SourcePosition<'_>,
    ) -> Result<Vec<EventRow>, CoreError> {
        let codec = &self.codec;
        Ok(match route {
            Route::Request => {
                rows::request_rows(&codec.decode::<SmsRequest>(payload).await?, at, false)
            }
            Route::RetryRequest => {
                rows::request_rows(&codec.decode::<SmsRequest>(payload).await?, at, true)
            }
            Route::Dispatch => {
                rows::dispatch_rows(&codec.decode::<DispatchEvent>(payload).await?, at)
            }
            Route::Report => rows::report_rows(&codec.decode::<CarrierReport>(payload).await?, at),
            Route::Uplink => rows::uplink_rows(&codec.decode::<UplinkMessage>(payload).await?, at),
            Route::Status => {
                rows::final_status_rows(&codec.decode::<FinalStatus>(payload).await?, at)
            }
            Route::Subscription => {
                rows::subscription_rows(&codec.decode::<SubscriptionRecord>(payload).await?, at)
            }
            Route::DeadLetter => {
                rows::dead_letter_rows(&codec.decode::<DeadLetter>(payload).await?, at)
            }
        })
    }

    /// Writes an undecodable record to `sms.dlq`, retrying until Kafka takes
    /// it: its offset is committed only once the dead letter is safe.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        route: Route,
        error: &CoreError,
        shutdown: &CancellationToken,
    ) -> Result<(), AnalyticsError> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        metrics::counter!(exporter::DEAD_LETTERS, "topic" => topic.to_string()).increment(1);
        if route == Route::DeadLetter {
            // Not sent back to the topic it came from, or it would circle.
            tracing::error!(topic, partition, offset, %error, "dead letter does not decode; dropped");
            return Ok(());
        }
        tracing::warn!(topic, partition, offset, %error, "record does not decode; sent to the dead-letter topic");
        let letter = DeadLetter {
            source_topic: topic.to_string(),
            source_partition: partition,
            source_offset: offset,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
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
            let mut record = FutureRecord::to(&self.dead_letter_topic).payload(&payload);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            match self
                .dead_letters
                .send(record, Duration::from_secs(30))
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

    /// Stores the batch's rows, skipping those already stored (read again
    /// after a restart or rebalance) and those of partitions no longer
    /// assigned. Retries with backoff while ClickHouse refuses; after
    /// `shutdown`, for at most `shutdown_drain_ms`.
    pub async fn write(
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
            let owned = |key: &PartitionKey| assigned.as_ref().is_none_or(|a| a.contains(key));
            batch.ranges.retain(|key, _| owned(key));
            let before = batch.rows.len();
            let stored = &self.stored;
            batch.rows.retain(|row| {
                let key = (row.source_topic.clone(), row.source_partition);
                owned(&key)
                    && stored
                        .get(&key)
                        .is_none_or(|last| row.source_offset > *last)
            });
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

    /// Commits the offset after the last record of every partition in the
    /// batch. A failed commit is logged: the records will be read again and
    /// skipped as already stored.
    pub fn commit(&self, batch: &Batch, mode: CommitMode) {
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
    fn assigned(&self) -> Option<HashSet<PartitionKey>> {
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
