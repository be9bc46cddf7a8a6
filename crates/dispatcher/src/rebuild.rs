//! State read back from Kafka for the assigned partitions: ledgers from `sms.dispatch`, and the subscription records of `sms.subscriptions`, kept current.
//!
//! Both readers assign partitions directly (no consumer group, nothing
//! committed) and read committed records only, so an aborted transaction
//! never counts. A partition is read to its end: to the high watermark, or
//! to where reading stalls behind another producer's open transaction.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sms_core::avro::AvroCodec;
use sms_core::events::{DispatchEvent, MessageKind, Millis, SubscriptionRecord};
use sms_core::kafka::KafkaSettings;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::DispatchError;
use crate::policy::{Dispatched, Ledger};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// A consumer that reads assigned partitions without a group.
fn reader(kafka: &KafkaSettings, client: &str) -> Result<BaseConsumer, DispatchError> {
    kafka
        .consumer_config(client, &format!("{client}-unused"))
        .create()
        .map_err(DispatchError::kafka("creating a reader"))
}

/// Where each partition of `topic` starts (first offset at or after
/// `since`, or the beginning when `since` is `None`) and ends.
fn bounds(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    since: Option<Millis>,
) -> Result<HashMap<i32, (i64, i64)>, DispatchError> {
    let mut bounds = HashMap::new();
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, KAFKA_TIMEOUT)
            .map_err(DispatchError::kafka("reading watermarks"))?;
        let start = match since {
            None => low,
            Some(since) => {
                let mut wanted = TopicPartitionList::new();
                wanted
                    .add_partition_offset(topic, partition, Offset::Offset(since))
                    .map_err(DispatchError::kafka("listing offsets"))?;
                consumer
                    .offsets_for_times(wanted, KAFKA_TIMEOUT)
                    .map_err(DispatchError::kafka("finding offsets by time"))?
                    .find_partition(topic, partition)
                    .and_then(|p| p.offset().to_raw())
                    .filter(|o| *o >= 0)
                    .unwrap_or(high)
                    .max(low)
            }
        };
        bounds.insert(partition, (start, high));
    }
    Ok(bounds)
}

fn assign(
    consumer: &BaseConsumer,
    topic: &str,
    bounds: &HashMap<i32, (i64, i64)>,
) -> Result<(), DispatchError> {
    let mut assignment = TopicPartitionList::new();
    for (&partition, &(start, _)) in bounds {
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(DispatchError::kafka("listing offsets"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(DispatchError::kafka("assigning"))
}

/// Tracks which partitions have been read to their end.
struct Progress {
    ends: HashMap<i32, i64>,
    next: HashMap<i32, i64>,
    done: HashSet<i32>,
}

impl Progress {
    fn new(bounds: &HashMap<i32, (i64, i64)>) -> Self {
        let mut progress = Self {
            ends: bounds.iter().map(|(p, (_, end))| (*p, *end)).collect(),
            next: bounds.iter().map(|(p, (start, _))| (*p, *start)).collect(),
            done: HashSet::new(),
        };
        for (partition, (start, end)) in bounds {
            if start >= end {
                progress.done.insert(*partition);
            }
        }
        progress
    }

    fn advance(&mut self, partition: i32, next: i64) {
        self.next.insert(partition, next);
        if self.ends.get(&partition).is_some_and(|end| next >= *end) {
            self.done.insert(partition);
        }
    }

    /// After a poll that returned nothing: partitions whose position did
    /// not move since the last idle poll are done (the rest of them is
    /// transaction markers or an open transaction).
    fn idle(&mut self, consumer: &BaseConsumer, topic: &str, last: &mut HashMap<i32, i64>) {
        let positions = consumer.position().ok();
        for (&partition, &end) in &self.ends {
            if self.done.contains(&partition) {
                continue;
            }
            let position = positions
                .as_ref()
                .and_then(|p| p.find_partition(topic, partition))
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            if position >= end || last.get(&partition) == Some(&position) {
                self.done.insert(partition);
            }
            last.insert(partition, position);
        }
    }

    fn finished(&self) -> bool {
        self.done.len() == self.ends.len()
    }
}

/// Reads `partitions` of `sms.dispatch` from `since` to their end into one
/// ledger per partition, and the message ids dispatched after
/// `dedupe_since`.
pub async fn ledgers(
    kafka: &KafkaSettings,
    codec: &AvroCodec,
    partitions: &[i32],
    since: Millis,
    dedupe_since: Millis,
    price: u64,
) -> Result<(HashMap<i32, Ledger>, Dispatched), DispatchError> {
    let kafka = kafka.clone();
    let codec = codec.clone();
    let partitions = partitions.to_vec();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let topic = kafka.topics().dispatch;
        let consumer = reader(&kafka, "dispatcher-rebuild")?;
        let mut ledgers: HashMap<i32, Ledger> =
            partitions.iter().map(|p| (*p, Ledger::default())).collect();
        let mut dispatched = Dispatched::default();
        let bounds = bounds(&consumer, &topic, &partitions, Some(since))?;
        let mut progress = Progress::new(&bounds);
        if !progress.finished() {
            assign(&consumer, &topic, &bounds)?;
        }
        let mut read = 0u64;
        let mut last = HashMap::new();
        while !progress.finished() {
            let Some(message) = consumer.poll(POLL) else {
                progress.idle(&consumer, &topic, &mut last);
                continue;
            };
            let message = message.map_err(DispatchError::kafka("reading sms.dispatch"))?;
            progress.advance(message.partition(), message.offset() + 1);
            let payload = message.payload().unwrap_or_default();
            match handle.block_on(codec.decode::<DispatchEvent>(payload)) {
                Ok(event) => {
                    if let Some(ledger) = ledgers.get_mut(&message.partition()) {
                        ledger.record(&event, price);
                        if event.dispatched_at > dedupe_since {
                            dispatched.record(&event);
                        }
                        read += 1;
                    }
                }
                Err(e) => {
                    warn!(partition = message.partition(), offset = message.offset(), error = %e, "dispatch event does not decode; not counted");
                }
            }
        }
        info!(?partitions, events = read, "ledgers rebuilt from sms.dispatch");
        Ok((ledgers, dispatched))
    })
    .await
    .map_err(|_| DispatchError::TaskEnded)?
}

/// The subscription records of some partitions, read from the start of
/// `sms.subscriptions` and kept current by a background thread.
pub struct Subscriptions {
    records: Arc<RwLock<HashMap<String, SubscriptionRecord>>>,
    caught_up: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriptions {
    /// Starts following `partitions`.
    pub fn follow(
        kafka: &KafkaSettings,
        codec: &AvroCodec,
        partitions: &[i32],
    ) -> Result<Self, DispatchError> {
        let records = Arc::new(RwLock::new(HashMap::new()));
        let (caught_up_tx, caught_up) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let topic = kafka.topics().subscriptions;
        let consumer = reader(kafka, "dispatcher-subscriptions")?;
        let bounds = bounds(&consumer, &topic, partitions, None)?;
        let mut progress = Progress::new(&bounds);
        assign(&consumer, &topic, &bounds)?;
        let handle = Handle::current();
        let codec = codec.clone();
        let thread = {
            let records = records.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("subscriptions".into())
                .spawn(move || {
                    let mut last = HashMap::new();
                    let _ = caught_up_tx.send(progress.finished());
                    while !stop.load(Ordering::Relaxed) {
                        let Some(message) = consumer.poll(POLL) else {
                            if !progress.finished() {
                                progress.idle(&consumer, &topic, &mut last);
                                if progress.finished() {
                                    let _ = caught_up_tx.send(true);
                                }
                            }
                            continue;
                        };
                        let Ok(message) = message else {
                            continue;
                        };
                        let was = progress.finished();
                        progress.advance(message.partition(), message.offset() + 1);
                        if !was && progress.finished() {
                            let _ = caught_up_tx.send(true);
                        }
                        let key = message
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned());
                        let mut map = records.write().unwrap_or_else(|p| p.into_inner());
                        match message.payload() {
                            None => {
                                if let Some(key) = key {
                                    map.remove(&key);
                                }
                            }
                            Some(payload) => {
                                match handle.block_on(codec.decode::<SubscriptionRecord>(payload)) {
                                    Ok(record) => {
                                        map.insert(record.phone.clone(), record);
                                    }
                                    Err(e) => {
                                        debug!(offset = message.offset(), error = %e, "subscription record does not decode; skipped");
                                    }
                                }
                            }
                        }
                    }
                })
                .map_err(|_| DispatchError::TaskEnded)?
        };
        Ok(Self {
            records,
            caught_up,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits until every partition was read to the end it had at the
    /// start, or `timeout`; says whether it got there.
    pub async fn caught_up(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.caught_up.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether `phone`'s record lets a message of `kind` through.
    pub fn allows(&self, phone: &str, kind: MessageKind) -> bool {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(phone)
            .is_some_and(|record| record.allows(kind))
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread notices the flag within one poll; do not block an
            // async caller on it.
            drop(thread);
        }
    }
}
