//! The consume-decide-submit-produce loop: three request lanes by priority, the policy, concurrent submissions, and one Kafka transaction for events and offsets.
//!
//! # Delivery semantics
//!
//! A record's offset is committed in the same Kafka transaction as the
//! events it caused (its dispatch event, and for a retry its record on
//! `sms.requests.retry`), and only up to the lowest record of the partition
//! not finished yet. Readers of `sms.dispatch` read committed records only.
//!
//! - **Clean restart, SIGTERM, rebalance**: new work stops, in-flight Submits
//!   are awaited (up to `consumer.drain_timeout_ms`), their events and the
//!   offsets commit, then the partitions are let go. The next owner rebuilds
//!   its duplicate check from `sms.dispatch` and starts after the committed
//!   offsets: nothing is sent twice, nothing is lost.
//! - **kill -9**: the open transaction is aborted (by the restarted
//!   instance, which fences its predecessor through the same transactional
//!   id, or by the broker's transaction timeout), so the records it covered
//!   are read again. A slot of the in-flight window is freed only when its
//!   record's transaction committed, so at most the window (connections x
//!   window of this instance) of messages can have reached the gateway
//!   without a committed event: that is the bound on duplicates. Nothing is
//!   lost, since no offset passes a record whose event is not committed.
//! - **drain timeout**: Submits still unanswered are abandoned uncommitted;
//!   the next owner sends them again (the gateway may then see them twice).
//!
//! # Priority
//!
//! Each partition of each request topic has its own librdkafka queue and
//! reader task, feeding one small channel per lane. The loop always takes a
//! verification code first; a due retry next; a notice only while no
//! verification code is waiting. Records are taken only while the window has
//! room, and notices and retries leave an eighth of it to verification
//! codes, so a burst of notices can delay a verification code by at most the
//! window in flight (in practice, by one commit interval). A retry record waits in memory until its `not_before`;
//! when too many wait, that retry partition is paused.
//!
//! # Order
//!
//! One message per phone number is in flight at a time; later ones for the
//! same number wait for it, so one recipient's messages keep their order.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use rdkafka::client::ClientContext;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sms_core::avro::AvroCodec;
use sms_core::events::{
    now_millis, DeadLetter, DeadLetterError, DispatchEvent, DispatchOutcome, Millis, RefusalReason,
    SmsRequest, SubmittedSegment,
};
use sms_core::kafka::Topics;
use sms_core::telemetry::mask_phone;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, debug_span, error, info, warn, Instrument};

use crate::config::{Config, Share};
use crate::error::DispatchError;
use crate::policy::{month_start, Dispatched, Ledger, Policy, Verdict};
use crate::rebuild::{ledgers, Subscriptions};
use crate::submit::{self, Gateway, Submission};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// Records buffered per lane between the partition readers and the loop.
const LANE_BUFFER: usize = 64;
const SERVICE: &str = "dispatcher";

/// The three request topics, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    Otp,
    Retry,
    Notify,
}

impl Lane {
    const ALL: [Lane; 3] = [Lane::Otp, Lane::Retry, Lane::Notify];

    fn topic(self, topics: &Topics) -> &str {
        match self {
            Lane::Otp => &topics.requests_otp,
            Lane::Retry => &topics.requests_retry,
            Lane::Notify => &topics.requests_notify,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lane::Otp => "otp",
            Lane::Retry => "retry",
            Lane::Notify => "notify",
        }
    }
}

/// A rebalance, handed from the consumer's callback to the loop.
enum Control {
    /// Partitions about to be assigned, with their committed offsets.
    Assign(Vec<(String, i32, Option<i64>)>),
    /// Partitions about to be revoked; the callback waits for `done`.
    Revoke(Vec<(String, i32)>, std::sync::mpsc::Sender<()>),
}

/// The consumer's context: tells the loop about rebalances, and on
/// revocation holds the rebalance until the loop has committed.
struct Rebalances {
    control: mpsc::UnboundedSender<Control>,
    hold: Duration,
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let committed = consumer
                    .committed_offsets((*list).clone(), KAFKA_TIMEOUT)
                    .ok();
                let partitions = list
                    .elements()
                    .iter()
                    .map(|e| {
                        let offset = committed
                            .as_ref()
                            .and_then(|c| c.find_partition(e.topic(), e.partition()))
                            .and_then(|c| c.offset().to_raw())
                            .filter(|o| *o >= 0);
                        (e.topic().to_string(), e.partition(), offset)
                    })
                    .collect();
                let _ = self.control.send(Control::Assign(partitions));
            }
            Rebalance::Revoke(list) => {
                let partitions = list
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let (done, wait) = std::sync::mpsc::channel();
                if self.control.send(Control::Revoke(partitions, done)).is_ok() {
                    let _ = wait.recv_timeout(self.hold);
                }
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance failed"),
        }
    }
}

type RequestConsumer = StreamConsumer<Rebalances>;

/// A record as read from a request partition.
struct Incoming {
    lane: Lane,
    partition: i32,
    offset: i64,
    kafka_at: Option<Millis>,
    key: Option<Vec<u8>>,
    decoded: Result<SmsRequest, (Vec<u8>, String)>,
}

/// A request taken from a lane, until its events are written.
struct Work {
    lane: Lane,
    partition: i32,
    offset: i64,
    kafka_at: Option<Millis>,
    request: SmsRequest,
}

/// A finished Submit, back from its task.
struct Completion {
    work: Work,
    submission: Submission,
    billed: u32,
    cost: u64,
}

/// The offsets of one request partition.
#[derive(Debug, Default)]
struct Track {
    /// Records taken and not finished.
    unfinished: BTreeSet<i64>,
    /// Next offset to read: every record below it was taken.
    next: i64,
    /// The offset last committed.
    committed: i64,
}

impl Track {
    fn safe(&self) -> i64 {
        self.unfinished.first().copied().unwrap_or(self.next)
    }
}

/// Runs dispatch sessions until `shutdown` turns true. A session that fails
/// is followed by a fresh one after a pause, which rebuilds its state.
pub async fn run(
    config: Arc<Config>,
    password: String,
    codec: AvroCodec,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        match session(&config, &password, &codec, shutdown.clone()).await {
            Ok(()) => return,
            Err(e) => {
                counter!("dispatcher_session_restarts_total").increment(1);
                warn!(error = %e, source = ?std::error::Error::source(&e), "dispatch session ended; starting again");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DispatchError> + Send + 'static,
) -> Result<T, DispatchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| DispatchError::TaskEnded)?
}

async fn session(
    config: &Arc<Config>,
    password: &str,
    codec: &AvroCodec,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DispatchError> {
    let kafka = &config.kafka;
    let topics = kafka.topics();
    let group = &config.consumer.group_id;

    let transactional_id = format!(
        "{}{}-{}",
        kafka.topic_prefix, group, config.consumer.instance
    );
    let producer: FutureProducer = kafka
        .transactional_producer_config("dispatcher", &transactional_id)
        .create()
        .map_err(DispatchError::kafka("creating the producer"))?;
    {
        let producer = producer.clone();
        blocking(move || {
            producer
                .init_transactions(KAFKA_TIMEOUT)
                .map_err(DispatchError::kafka("initialising transactions"))
        })
        .await?;
    }

    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let hold = Duration::from_millis(config.consumer.drain_timeout_ms) + KAFKA_TIMEOUT;
    let mut consumer_config = kafka.consumer_config("dispatcher", group);
    // Range assignment gives one member partition p of every request topic,
    // matching partition p of sms.dispatch and sms.subscriptions.
    // Small fetches keep a verification code from waiting behind a large
    // response of queued notices: 256 KiB a partition is still about a
    // thousand requests, far more than one window.
    consumer_config
        .set("partition.assignment.strategy", "range")
        .set("queued.max.messages.kbytes", "8192")
        .set("max.partition.fetch.bytes", "262144")
        .set("fetch.max.bytes", "1048576");
    let consumer: Arc<RequestConsumer> = Arc::new(
        consumer_config
            .create_with_context(Rebalances {
                control: control_tx,
                hold,
            })
            .map_err(DispatchError::kafka("creating the consumer"))?,
    );

    let mut partition_counts = HashMap::new();
    for lane in Lane::ALL {
        let topic = lane.topic(&topics).to_string();
        let count = {
            let consumer = consumer.clone();
            let topic = topic.clone();
            blocking(move || {
                let metadata = consumer
                    .fetch_metadata(Some(&topic), KAFKA_TIMEOUT)
                    .map_err(DispatchError::kafka("reading topic metadata"))?;
                Ok(metadata
                    .topics()
                    .first()
                    .map_or(0, |t| t.partitions().len()))
            })
            .await?
        };
        if count == 0 {
            return Err(DispatchError::NoPartitions { topic });
        }
        partition_counts.insert(lane, count);
    }
    let partitions = partition_counts.get(&Lane::Otp).copied().unwrap_or(1);

    consumer
        .subscribe(&[
            &topics.requests_otp,
            &topics.requests_notify,
            &topics.requests_retry,
        ])
        .map_err(DispatchError::kafka("subscribing"))?;

    // One queue and one reader per partition of each lane.
    let mut readers = Vec::new();
    let mut lanes = HashMap::new();
    for lane in Lane::ALL {
        let (tx, rx) = mpsc::channel(LANE_BUFFER);
        lanes.insert(lane, rx);
        let topic = lane.topic(&topics).to_string();
        for partition in 0..partition_counts.get(&lane).copied().unwrap_or(0) {
            let partition = i32::try_from(partition).unwrap_or(i32::MAX);
            if let Some(queue) = consumer.split_partition_queue(&topic, partition) {
                readers.push(tokio::spawn(read_partition(
                    queue,
                    lane,
                    partition,
                    codec.clone(),
                    tx.clone(),
                )));
            }
        }
    }

    // The main queue carries no records, only rebalances; it is served on
    // its own thread because a revocation blocks there until committed.
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let consumer = consumer.clone();
        let polling = polling.clone();
        std::thread::Builder::new()
            .name("rebalances".into())
            .spawn(move || serve_main_queue(consumer, polling))
            .map_err(|_| DispatchError::TaskEnded)?
    };

    let policy = Arc::new(Policy::new(&config.policy)?);
    let (completions_tx, completions_rx) = mpsc::unbounded_channel();
    let mut dispatch = Dispatch {
        config: config.clone(),
        password: password.to_string(),
        codec: codec.clone(),
        topics,
        policy,
        producer,
        consumer: consumer.clone(),
        partitions,
        assigned: HashSet::new(),
        tracks: HashMap::new(),
        ledgers: HashMap::new(),
        dispatched: Dispatched::default(),
        subscriptions: None,
        gateway: None,
        share: config.gateway.share(0, partitions),
        slots_used: 0,
        to_release: 0,
        in_flight: 0,
        busy_phones: HashSet::new(),
        waiting: HashMap::new(),
        held: HashMap::new(),
        paused: HashSet::new(),
        deliveries: Vec::new(),
        in_transaction: false,
        dirty: false,
        last_commit: Instant::now(),
        completions: completions_tx,
        full: false,
    };
    info!(group = %group, instance = %config.consumer.instance, partitions, "dispatch session started");
    let result = dispatch
        .run(control_rx, completions_rx, &mut lanes, shutdown)
        .await;

    // Let go: readers first (they hold the consumer), then the poller, then
    // the consumer itself (closing it may block).
    for reader in &readers {
        reader.abort();
    }
    for reader in readers {
        let _ = reader.await;
    }
    polling.store(false, Ordering::Relaxed);
    let gateway = dispatch.gateway.take();
    drop(dispatch);
    drop(lanes);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = poller.join();
        drop(consumer);
    })
    .await;
    if let Some(gateway) = gateway {
        gateway.close().await;
    }
    info!("dispatch session stopped");
    result
}

fn serve_main_queue(consumer: Arc<RequestConsumer>, polling: Arc<AtomicBool>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        error!("cannot start the rebalance thread");
        return;
    };
    runtime.block_on(async {
        while polling.load(Ordering::Relaxed) {
            if let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
            {
                // Only partitions that appeared after start-up come here;
                // their records are not committed and stay for a restart.
                error!(
                    topic = message.topic(),
                    partition = message.partition(),
                    "record from a partition without a reader; restart the dispatcher to read it"
                );
            }
        }
    });
}

async fn read_partition(
    queue: StreamPartitionQueue<Rebalances>,
    lane: Lane,
    partition: i32,
    codec: AvroCodec,
    tx: mpsc::Sender<Incoming>,
) {
    loop {
        let incoming = match queue.recv().await {
            Ok(message) => {
                let payload = message.payload().unwrap_or_default().to_vec();
                let key = message.key().map(<[u8]>::to_vec);
                let offset = message.offset();
                let kafka_at = message.timestamp().to_millis();
                drop(message);
                let decoded = match codec.decode::<SmsRequest>(&payload).await {
                    Ok(request) => Ok(request),
                    Err(e) => Err((payload, e.to_string())),
                };
                Incoming {
                    lane,
                    partition,
                    offset,
                    kafka_at,
                    key,
                    decoded,
                }
            }
            Err(e) => {
                warn!(lane = lane.name(), partition, error = %e, "reading a request partition failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.send(incoming).await.is_err() {
            return;
        }
    }
}

/// The loop's state.
struct Dispatch {
    config: Arc<Config>,
    password: String,
    codec: AvroCodec,
    topics: Topics,
    policy: Arc<Policy>,
    producer: FutureProducer,
    consumer: Arc<RequestConsumer>,
    /// Partitions of each request topic.
    partitions: usize,
    /// Request partitions held now.
    assigned: HashSet<i32>,
    tracks: HashMap<(Lane, i32), Track>,
    ledgers: HashMap<i32, Ledger>,
    /// Message ids dispatched within the duplicate window, of every
    /// partition held (or held before, until they age out).
    dispatched: Dispatched,
    subscriptions: Option<Subscriptions>,
    gateway: Option<Arc<Gateway>>,
    share: Share,
    /// Records taken whose transaction has not committed.
    slots_used: usize,
    /// Records finished in the open transaction.
    to_release: usize,
    /// Submits at the gateway.
    in_flight: usize,
    busy_phones: HashSet<String>,
    waiting: HashMap<String, VecDeque<Work>>,
    /// Retry records waiting for their time, per partition.
    held: HashMap<i32, VecDeque<Work>>,
    paused: HashSet<i32>,
    deliveries: Vec<DeliveryFuture>,
    in_transaction: bool,
    dirty: bool,
    last_commit: Instant,
    completions: mpsc::UnboundedSender<Completion>,
    /// Whether the window was full at the last look (for the metric).
    full: bool,
}

impl Dispatch {
    async fn run(
        &mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut completions: mpsc::UnboundedReceiver<Completion>,
        lanes: &mut HashMap<Lane, mpsc::Receiver<Incoming>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), DispatchError> {
        let (Some(mut otp), Some(mut retry), Some(mut notify)) = (
            lanes.remove(&Lane::Otp),
            lanes.remove(&Lane::Retry),
            lanes.remove(&Lane::Notify),
        ) else {
            return Err(DispatchError::TaskEnded);
        };
        let commit_interval = Duration::from_millis(self.config.consumer.commit_interval_ms);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(5));
        loop {
            if *shutdown.borrow() {
                info!("stop requested; finishing in-flight work");
                self.drain(&mut completions).await?;
                return Ok(());
            }
            let room = self.room();
            let lower = self.room_below_reserve();
            if !room && !self.full {
                counter!("dispatcher_window_waits_total").increment(1);
            }
            self.full = !room;
            let due = self.next_due();
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        self.drain(&mut completions).await?;
                        return Ok(());
                    }
                }
                Some(event) = control.recv() => match event {
                    Control::Assign(partitions) => self.assign(partitions).await?,
                    Control::Revoke(partitions, done) => {
                        self.drain(&mut completions).await?;
                        self.revoke(&partitions);
                        let _ = done.send(());
                    }
                },
                Some(done) = completions.recv() => self.complete(done)?,
                _ = tokio::time::sleep_until(self.last_commit + commit_interval), if self.dirty => {
                    self.commit().await?;
                }
                Some(incoming) = otp.recv(), if room => self.take(incoming)?,
                _ = tokio::time::sleep_until(due.unwrap_or(far)), if lower && due.is_some() => {
                    self.start_due()?;
                }
                Some(incoming) = retry.recv() => self.hold(incoming)?,
                Some(incoming) = notify.recv(), if lower && otp.is_empty() => self.take(incoming)?,
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
    }

    /// Whether a verification code may be taken: the whole window.
    fn room(&self) -> bool {
        self.gateway.is_some() && self.slots_used < self.share.in_flight
    }

    /// Whether a notice or a retry may be taken: the window less an eighth
    /// kept for verification codes, so a notice backlog never fills it.
    fn room_below_reserve(&self) -> bool {
        let reserve = (self.share.in_flight / 8).max(1);
        self.gateway.is_some() && self.slots_used + reserve < self.share.in_flight.max(reserve + 1)
    }

    // ---- rebalances -------------------------------------------------------

    async fn assign(
        &mut self,
        partitions: Vec<(String, i32, Option<i64>)>,
    ) -> Result<(), DispatchError> {
        let mut numbers = BTreeSet::new();
        for (topic, partition, committed) in &partitions {
            let Some(lane) = Lane::ALL
                .into_iter()
                .find(|l| l.topic(&self.topics) == topic)
            else {
                continue;
            };
            numbers.insert(*partition);
            let start = committed.unwrap_or(0);
            self.tracks.insert(
                (lane, *partition),
                Track {
                    unfinished: BTreeSet::new(),
                    next: start,
                    committed: start,
                },
            );
        }
        let numbers: Vec<i32> = numbers.into_iter().collect();
        info!(partitions = ?numbers, "partitions assigned; rebuilding state");
        let now = now_millis();
        let dedupe_since = now - self.config.consumer.dedupe_window_ms;
        let since = dedupe_since.min(month_start(now));
        let (rebuilt, dispatched) = ledgers(
            &self.config.kafka,
            &self.codec,
            &numbers,
            since,
            dedupe_since,
            self.policy.price(),
        )
        .await?;
        self.ledgers.extend(rebuilt);
        self.dispatched.merge(dispatched);
        if self.config.policy.require_subscription && !numbers.is_empty() {
            let mut subscriptions =
                Subscriptions::follow(&self.config.kafka, &self.codec, &numbers)?;
            let wait = Duration::from_millis(self.config.consumer.subscriptions_wait_ms);
            if !subscriptions.caught_up(wait).await {
                warn!(
                    "subscription records not read to the end in time; deciding with what is read"
                );
            }
            info!(records = subscriptions.len(), "subscription records loaded");
            self.subscriptions = Some(subscriptions);
        }
        self.assigned.extend(numbers.iter().copied());
        self.share = self
            .config
            .gateway
            .share(self.assigned.len(), self.partitions);
        if let Some(old) = self.gateway.take() {
            tokio::spawn(async move { old.close().await });
        }
        if !self.assigned.is_empty() {
            self.gateway = Some(Gateway::start(
                &self.config.gateway,
                &self.password,
                self.share,
                self.config.retry.throttle_pause_ms,
            )?);
        }
        gauge!("dispatcher_partitions_assigned").set(self.assigned.len() as f64);
        info!(
            partitions = self.assigned.len(),
            connections = self.share.connections,
            rate_limit_per_sec = self.share.rate_limit_per_sec,
            in_flight = self.share.in_flight,
            "ready"
        );
        Ok(())
    }

    fn revoke(&mut self, partitions: &[(String, i32)]) {
        let numbers: HashSet<i32> = partitions.iter().map(|(_, p)| *p).collect();
        info!(partitions = ?numbers, "partitions revoked");
        for number in &numbers {
            self.assigned.remove(number);
            self.ledgers.remove(number);
            self.held.remove(number);
            self.paused.remove(number);
            for lane in Lane::ALL {
                self.tracks.remove(&(lane, *number));
            }
        }
        // Waiting records are uncommitted; the next owner reads them again.
        self.waiting.clear();
        self.busy_phones.clear();
        self.slots_used = 0;
        self.subscriptions = None;
        self.share = self
            .config
            .gateway
            .share(self.assigned.len(), self.partitions);
        if let Some(old) = self.gateway.take() {
            tokio::spawn(async move { old.close().await });
        }
        gauge!("dispatcher_partitions_assigned").set(self.assigned.len() as f64);
    }

    /// Stops taking work, waits for the Submits in flight (bounded), writes
    /// their events and commits.
    async fn drain(
        &mut self,
        completions: &mut mpsc::UnboundedReceiver<Completion>,
    ) -> Result<(), DispatchError> {
        let deadline =
            Instant::now() + Duration::from_millis(self.config.consumer.drain_timeout_ms);
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, completions.recv()).await {
                Ok(Some(done)) => self.finish_submission(done)?,
                Ok(None) => break,
                Err(_) => break,
            }
        }
        self.commit().await?;
        if self.in_flight > 0 {
            error!(in_flight = self.in_flight, "submits still unanswered at the drain deadline; they stay uncommitted and may be sent again");
            return Err(DispatchError::DrainTimedOut);
        }
        Ok(())
    }

    // ---- taking records ---------------------------------------------------

    /// Accepts a record if it belongs to a held partition and was not taken
    /// before (a reader may hand over records fetched before a rebalance).
    fn accept(&mut self, incoming: &Incoming) -> bool {
        let Some(track) = self.tracks.get_mut(&(incoming.lane, incoming.partition)) else {
            return false;
        };
        if incoming.offset < track.next {
            return false;
        }
        track.next = incoming.offset + 1;
        track.unfinished.insert(incoming.offset);
        counter!("dispatcher_consumed_total", "lane" => incoming.lane.name()).increment(1);
        true
    }

    fn take(&mut self, incoming: Incoming) -> Result<(), DispatchError> {
        if !self.accept(&incoming) {
            return Ok(());
        }
        self.slots_used += 1;
        match self.work(incoming)? {
            Some(work) => self.start(work),
            None => Ok(()),
        }
    }

    fn hold(&mut self, incoming: Incoming) -> Result<(), DispatchError> {
        if !self.accept(&incoming) {
            return Ok(());
        }
        let partition = incoming.partition;
        // A dead letter frees its slot at commit; a held record takes one
        // only when it starts.
        self.slots_used += 1;
        let Some(work) = self.work(incoming)? else {
            return Ok(());
        };
        self.slots_used -= 1;
        let held = self.held.entry(partition).or_default();
        held.push_back(work);
        if held.len() >= self.config.retry.hold_max && self.paused.insert(partition) {
            self.pause(partition, true);
        }
        Ok(())
    }

    fn pause(&self, partition: i32, pause: bool) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topics.requests_retry, partition);
        let result = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        if let Err(e) = result {
            warn!(partition, pause, error = %e, "pausing or resuming the retry partition failed");
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let due = self
            .held
            .values()
            .filter_map(|held| held.front())
            .map(|work| work.request.not_before.unwrap_or(0))
            .min()?;
        let wait = (due - now_millis()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait))
    }

    fn start_due(&mut self) -> Result<(), DispatchError> {
        let now = now_millis();
        let partitions: Vec<i32> = self.held.keys().copied().collect();
        for partition in partitions {
            while self.room_below_reserve() {
                let Some(held) = self.held.get_mut(&partition) else {
                    break;
                };
                if held
                    .front()
                    .is_none_or(|w| w.request.not_before.unwrap_or(0) > now)
                {
                    break;
                }
                let Some(work) = held.pop_front() else {
                    break;
                };
                let below = held.len() < self.config.retry.hold_max / 2;
                if below && self.paused.remove(&partition) {
                    self.pause(partition, false);
                }
                self.slots_used += 1;
                self.start(work)?;
            }
        }
        Ok(())
    }

    /// Turns a record into work, or records why it cannot be (dead letter).
    fn work(&mut self, incoming: Incoming) -> Result<Option<Work>, DispatchError> {
        let topic = incoming.lane.topic(&self.topics).to_string();
        let (error, reason, payload) = match incoming.decoded {
            Ok(request) if request.message_id.trim().is_empty() => (
                DeadLetterError::Invalid,
                "request has no message id".to_string(),
                self.codec.encode(&request)?,
            ),
            Ok(request) => {
                return Ok(Some(Work {
                    lane: incoming.lane,
                    partition: incoming.partition,
                    offset: incoming.offset,
                    kafka_at: incoming.kafka_at,
                    request,
                }))
            }
            Err((payload, reason)) => (DeadLetterError::Undecodable, reason, payload),
        };
        counter!("dispatcher_dead_letters_total", "lane" => incoming.lane.name()).increment(1);
        warn!(topic = %topic, partition = incoming.partition, offset = incoming.offset, %reason, "request sent to the dead-letter topic");
        let letter = DeadLetter {
            source_topic: topic,
            source_partition: incoming.partition,
            source_offset: incoming.offset,
            key: incoming.key.clone(),
            payload: Some(payload),
            error,
            reason,
            service: SERVICE.into(),
            recorded_at: now_millis(),
        };
        let key = incoming
            .key
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .unwrap_or_default();
        let encoded = self.codec.encode(&letter)?;
        let dlq = self.topics.dlq.clone();
        self.send(&dlq, &key, encoded)?;
        self.finish(incoming.lane, incoming.partition, incoming.offset);
        Ok(None)
    }

    /// Decides a request and submits it, unless an earlier message to the
    /// same number is still in flight.
    fn start(&mut self, work: Work) -> Result<(), DispatchError> {
        let phone = work.request.phone.clone();
        if self.busy_phones.contains(&phone) {
            self.waiting.entry(phone).or_default().push_back(work);
            return Ok(());
        }
        let span = debug_span!("message", message_id = %work.request.message_id);
        let _entered = span.enter();
        let now = now_millis();
        let verdict = {
            let ledger = self.ledgers.entry(work.partition).or_default();
            let subscriptions = self.subscriptions.as_ref();
            self.policy.decide(
                &work.request,
                now,
                &self.dispatched,
                ledger,
                self.partitions,
                |phone, kind| subscriptions.is_some_and(|s| s.allows(phone, kind)),
            )
        };
        match verdict {
            Verdict::Refuse { reason, detail } => {
                counter!("dispatcher_refused_total", "reason" => format!("{reason:?}"))
                    .increment(1);
                debug!(phone = %mask_phone(&phone), ?reason, %detail, "refused");
                let event = event(&work.request, DispatchOutcome::Refused, now)
                    .reason(reason, detail)
                    .done();
                self.write_event(&work, event)?;
                self.finish(work.lane, work.partition, work.offset);
                self.next_for(&phone)
            }
            Verdict::Submit { billed, cost } => {
                let Some(gateway) = self.gateway.clone() else {
                    return Err(DispatchError::TaskEnded);
                };
                if let Some(ledger) = self.ledgers.get_mut(&work.partition) {
                    ledger.reserve(cost);
                }
                self.busy_phones.insert(phone.clone());
                self.in_flight += 1;
                gauge!("dispatcher_in_flight").set(self.in_flight as f64);
                debug!(phone = %mask_phone(&phone), billed, "submitting");
                let completions = self.completions.clone();
                tokio::spawn(
                    async move {
                        let submission = gateway.submit(&work.request).await;
                        let _ = completions.send(Completion {
                            work,
                            submission,
                            billed,
                            cost,
                        });
                    }
                    .instrument(span.clone()),
                );
                Ok(())
            }
        }
    }

    /// Starts the next waiting message for `phone`, if any.
    fn next_for(&mut self, phone: &str) -> Result<(), DispatchError> {
        self.busy_phones.remove(phone);
        let next = match self.waiting.get_mut(phone) {
            Some(queue) => {
                let next = queue.pop_front();
                if queue.is_empty() {
                    self.waiting.remove(phone);
                }
                next
            }
            None => None,
        };
        match next {
            Some(work) => self.start(work),
            None => Ok(()),
        }
    }

    // ---- finishing --------------------------------------------------------

    fn complete(&mut self, done: Completion) -> Result<(), DispatchError> {
        let phone = done.work.request.phone.clone();
        self.finish_submission(done)?;
        self.next_for(&phone)
    }

    fn finish_submission(&mut self, done: Completion) -> Result<(), DispatchError> {
        let Completion {
            work,
            submission,
            billed,
            cost,
        } = done;
        self.in_flight = self.in_flight.saturating_sub(1);
        gauge!("dispatcher_in_flight").set(self.in_flight as f64);
        if let Some(ledger) = self.ledgers.get_mut(&work.partition) {
            ledger.release(cost);
        }
        let span = debug_span!("message", message_id = %work.request.message_id);
        let _entered = span.enter();
        let now = now_millis();
        let request = &work.request;
        let gateway_result = submission
            .segments
            .iter()
            .rev()
            .find(|s| s.result >= 0)
            .map(|s| s.result);
        let partial = i32::try_from(submission.accepted).unwrap_or(i32::MAX);
        let event = match submission.verdict {
            submit::Verdict::Accepted => {
                counter!("dispatcher_submitted_total", "kind" => request.kind.as_str())
                    .increment(1);
                if let (Some(first), Some(kafka_at)) = (submission.segments.first(), work.kafka_at)
                {
                    histogram!("dispatcher_kafka_to_gateway_ms", "lane" => work.lane.name())
                        .record((first.submitted_at - kafka_at).max(0) as f64);
                }
                debug!(segments = submission.segments.len(), "submitted");
                event(request, DispatchOutcome::Submitted, now)
                    .segments(submission.segments, gateway_result)
                    .billed(i32::try_from(billed).unwrap_or(i32::MAX))
                    .done()
            }
            submit::Verdict::Retry {
                code,
                reason,
                detail,
            } if request.attempt + 1 < self.config.retry.max_attempts => {
                let next = request.attempt + 1;
                let not_before = now + self.config.retry.backoff(next);
                counter!("dispatcher_retrying_total").increment(1);
                debug!(
                    code,
                    attempt = request.attempt,
                    not_before,
                    "gateway refusal may pass; retrying later"
                );
                let mut again = request.clone();
                again.attempt = next;
                again.not_before = Some(not_before);
                let payload = self.codec.encode(&again)?;
                let retry_topic = self.topics.requests_retry.clone();
                self.send(&retry_topic, &request.phone, payload)?;
                event(request, DispatchOutcome::Retrying, now)
                    .reason(reason, detail)
                    .segments(submission.segments, code.map(i32::from))
                    .not_before(not_before)
                    .done()
            }
            submit::Verdict::Retry { code, detail, .. } => {
                counter!("dispatcher_failed_total", "reason" => "AttemptsExhausted").increment(1);
                warn!(
                    code,
                    attempts = request.attempt + 1,
                    "gateway kept refusing; message failed"
                );
                event(request, DispatchOutcome::Failed, now)
                    .reason(
                        RefusalReason::AttemptsExhausted,
                        format!("{} attempts; last: {detail}", request.attempt + 1),
                    )
                    .segments(submission.segments, code.map(i32::from))
                    .billed(partial)
                    .done()
            }
            submit::Verdict::Failed {
                code,
                reason,
                detail,
            } => {
                counter!("dispatcher_failed_total", "reason" => format!("{reason:?}")).increment(1);
                warn!(code, ?reason, %detail, "gateway refused the message");
                event(request, DispatchOutcome::Failed, now)
                    .reason(reason, detail)
                    .segments(submission.segments, code.map(i32::from).or(gateway_result))
                    .billed(partial)
                    .done()
            }
        };
        self.write_event(&work, event)?;
        self.finish(work.lane, work.partition, work.offset);
        Ok(())
    }

    fn write_event(&mut self, work: &Work, event: DispatchEvent) -> Result<(), DispatchError> {
        self.dispatched.record(&event);
        if let Some(ledger) = self.ledgers.get_mut(&work.partition) {
            ledger.record(&event, self.policy.price());
        }
        let payload = self.codec.encode(&event)?;
        let topic = self.topics.dispatch.clone();
        self.send(&topic, &event.phone, payload)
    }

    fn finish(&mut self, lane: Lane, partition: i32, offset: i64) {
        if let Some(track) = self.tracks.get_mut(&(lane, partition)) {
            track.unfinished.remove(&offset);
        }
        self.to_release += 1;
        self.dirty = true;
    }

    // ---- transactions -----------------------------------------------------

    fn send(&mut self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), DispatchError> {
        if !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(DispatchError::kafka("beginning a transaction"))?;
            self.in_transaction = true;
        }
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        let delivery =
            self.producer
                .send_result(record)
                .map_err(|(e, _)| DispatchError::Produce {
                    topic: topic.to_string(),
                    source: e,
                })?;
        self.deliveries.push(delivery);
        Ok(())
    }

    /// Commits the open transaction with the offsets up to the lowest
    /// unfinished record of each partition, and frees the window slots of
    /// the records it finished.
    async fn commit(&mut self) -> Result<(), DispatchError> {
        self.last_commit = Instant::now();
        let mut offsets = TopicPartitionList::new();
        let mut moved = Vec::new();
        for ((lane, partition), track) in &self.tracks {
            let safe = track.safe();
            if safe > track.committed {
                offsets
                    .add_partition_offset(
                        lane.topic(&self.topics),
                        *partition,
                        Offset::Offset(safe),
                    )
                    .map_err(DispatchError::kafka("listing offsets"))?;
                moved.push(((*lane, *partition), safe));
            }
        }
        if !self.in_transaction && offsets.count() == 0 {
            self.slots_used = self.slots_used.saturating_sub(self.to_release);
            self.to_release = 0;
            self.dirty = false;
            return Ok(());
        }
        if !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(DispatchError::kafka("beginning a transaction"))?;
            self.in_transaction = true;
        }
        for delivery in self.deliveries.drain(..) {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(DispatchError::Produce {
                        topic: "output".into(),
                        source: e,
                    })
                }
                Err(_) => {
                    return Err(DispatchError::Produce {
                        topic: "output".into(),
                        source: rdkafka::error::KafkaError::Canceled,
                    })
                }
            }
        }
        let group = self.consumer.group_metadata();
        let producer = self.producer.clone();
        blocking(move || {
            if offsets.count() > 0 {
                let group = group.ok_or(DispatchError::Kafka {
                    operation: "reading group metadata",
                    source: rdkafka::error::KafkaError::NoMessageReceived,
                })?;
                producer
                    .send_offsets_to_transaction(&offsets, &group, KAFKA_TIMEOUT)
                    .map_err(DispatchError::kafka("adding offsets to the transaction"))?;
            }
            producer
                .commit_transaction(KAFKA_TIMEOUT)
                .map_err(DispatchError::kafka("committing"))
        })
        .await?;
        self.in_transaction = false;
        for (key, safe) in moved {
            if let Some(track) = self.tracks.get_mut(&key) {
                track.committed = safe;
            }
        }
        self.slots_used = self.slots_used.saturating_sub(self.to_release);
        self.to_release = 0;
        self.dirty = false;
        counter!("dispatcher_transactions_total").increment(1);
        Ok(())
    }

    // ---- housekeeping -----------------------------------------------------

    fn housekeeping(&mut self) {
        let now = now_millis();
        let window = self.config.consumer.dedupe_window_ms;
        for ledger in self.ledgers.values_mut() {
            ledger.prune(now, window);
        }
        self.dispatched.prune(now, window);
        gauge!("dispatcher_dedupe_ids").set(self.dispatched.len() as f64);
        gauge!("dispatcher_cap_recipients")
            .set(self.ledgers.values().map(Ledger::recipients).sum::<usize>() as f64);
        let spent: u64 = self.ledgers.values().map(|l| l.month_spend(now)).sum();
        gauge!("dispatcher_budget_month_spent_yuan").set(spent as f64 / 1_000_000.0);
        let used = self
            .ledgers
            .values()
            .map(|l| self.policy.budget_used(l, now, self.partitions))
            .fold(0.0, f64::max);
        gauge!("dispatcher_budget_used_ratio").set(used);
        gauge!("dispatcher_gateway_connections")
            .set(self.gateway.as_ref().map_or(0, |g| g.connected()) as f64);
        gauge!("dispatcher_retry_held")
            .set(self.held.values().map(VecDeque::len).sum::<usize>() as f64);
        gauge!("dispatcher_waiting_for_phone")
            .set(self.waiting.values().map(VecDeque::len).sum::<usize>() as f64);
        let positions: Vec<(Lane, String, i32, i64)> = self
            .tracks
            .iter()
            .map(|((lane, partition), track)| {
                (
                    *lane,
                    lane.topic(&self.topics).to_string(),
                    *partition,
                    track.next,
                )
            })
            .collect();
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let mut lag: HashMap<Lane, i64> = HashMap::new();
            for (lane, topic, partition, next) in positions {
                if let Ok((_, high)) =
                    consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))
                {
                    *lag.entry(lane).or_default() += (high - next).max(0);
                }
            }
            for (lane, lag) in lag {
                gauge!("dispatcher_lag_records", "lane" => lane.name()).set(lag as f64);
            }
        });
    }
}

/// A dispatch event under construction.
struct EventBuilder(DispatchEvent);

fn event(request: &SmsRequest, outcome: DispatchOutcome, now: Millis) -> EventBuilder {
    EventBuilder(DispatchEvent {
        message_id: request.message_id.clone(),
        request_id: request.request_id.clone(),
        phone: request.phone.clone(),
        kind: request.kind,
        outcome,
        reason: None,
        detail: None,
        gateway_result: None,
        segments: Vec::new(),
        billed_segments: 0,
        attempt: request.attempt,
        accepted_at: request.accepted_at,
        dispatched_at: now,
        not_before: None,
    })
}

impl EventBuilder {
    fn reason(mut self, reason: RefusalReason, detail: String) -> Self {
        self.0.reason = Some(reason);
        self.0.detail = Some(detail);
        self
    }

    fn segments(mut self, segments: Vec<SubmittedSegment>, result: Option<i32>) -> Self {
        self.0.segments = segments;
        self.0.gateway_result = result;
        self
    }

    fn billed(mut self, billed: i32) -> Self {
        self.0.billed_segments = billed;
        self
    }

    fn not_before(mut self, at: Millis) -> Self {
        self.0.not_before = Some(at);
        self
    }

    fn done(self) -> DispatchEvent {
        self.0
    }
}
