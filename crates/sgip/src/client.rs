//! The SP's client side: a session to the gateway with a window, timeouts, retries and reconnects; a pool of them.
//!
//! A [`Session`] owns one TCP connection at a time, driven by one task.
//! Callers hand it requests through a bounded queue; the task connects and
//! binds lazily when work arrives, writes requests while fewer than
//! `window` are unanswered and the rate limit allows, matches responses by
//! sequence triple, resends a request that got no response within
//! `response_timeout_ms` (the same triple each time, at most `max_attempts`
//! writes), and reconnects after the gateway drops or refuses, backing off
//! exponentially while it keeps failing. Requests that were written but not
//! answered when a connection dropped are written again on the next one,
//! so the gateway may see a message twice; that is the protocol's
//! at-least-once nature, and the gateway or the receiver dedupes on the
//! triple. An idle connection is unbound before the gateway's own idle
//! timer would drop it. [`Session::close`] stops taking work, waits for
//! what is in flight and unbinds.
//!
//! A gateway's non-zero Result is an outcome, not an error: it comes back in
//! [`SubmitOutcome::result`], classified by [`ResultCode::class`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, info, warn, Instrument};

use crate::error::Error;
use crate::framing::{PduReader, PduWriter};
use crate::pdu::{Bind, Body, CommandId, Pdu, Submit, DEFAULT_MAX_FRAME_LEN, LOGIN_SP_TO_GATEWAY};
use crate::rate::RateLimiter;
use crate::result_code::ResultCode;
use crate::sequence::{SequenceGenerator, SequenceTriple};
use crate::text::Segment;
use crate::text_field::{mask_phone, Text};
use crate::unix_millis;

/// One connection's settings. Durations are in milliseconds.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// The gateway's address, `host:port`. Default `127.0.0.1:8801`.
    pub addr: String,
    /// Bind LoginName. Default empty.
    pub login_name: String,
    /// Bind LoginPassword. Default empty.
    pub login_password: String,
    /// Bind LoginType: 1 for an SP, 2 for a gateway reaching an SP. Default 1.
    pub login_type: u8,
    /// The node id stamped in sequence triples (3AAAAQQQQQ for an SP). Default 0.
    pub node_id: u32,
    /// Most requests written and not yet answered, 1 to 1024. Default 16.
    pub window: usize,
    /// Requests per second on this connection; 0 for no limit. Default 0.
    pub rate_limit_per_sec: u32,
    /// Wait for a response before writing the request again. Default 30000.
    pub response_timeout_ms: u64,
    /// Most writes of one request, first one included, at least 1. Default 3.
    pub max_attempts: u32,
    /// TCP connect timeout. Default 3000.
    pub connect_timeout_ms: u64,
    /// Wait for Bind_Resp and Unbind_Resp. Default 5000.
    pub bind_timeout_ms: u64,
    /// Unbind after this long without traffic; 0 never. Default 50000
    /// (the gateway may drop a connection idle for 60 s).
    pub idle_unbind_ms: u64,
    /// First reconnect back-off after a failed connect or bind. Default 1000.
    pub reconnect_min_ms: u64,
    /// Longest reconnect back-off. Default 60000.
    pub reconnect_max_ms: u64,
    /// Requests queued for the connection task beyond the window. Default 1024.
    pub queue_capacity: usize,
    /// Longest wait in `close` for in-flight requests. Default 10000.
    pub close_timeout_ms: u64,
    /// Largest frame accepted from the gateway, in bytes. Default 2048.
    pub max_frame_len: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8801".into(),
            login_name: String::new(),
            login_password: String::new(),
            login_type: LOGIN_SP_TO_GATEWAY,
            node_id: 0,
            window: 16,
            rate_limit_per_sec: 0,
            response_timeout_ms: 30_000,
            max_attempts: 3,
            connect_timeout_ms: 3_000,
            bind_timeout_ms: 5_000,
            idle_unbind_ms: 50_000,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 60_000,
            queue_capacity: 1024,
            close_timeout_ms: 10_000,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl SessionConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key, reason| Err(Error::Config { key, reason });
        if !(1..=1024).contains(&self.window) {
            return bad("window", "must be 1 to 1024");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.response_timeout_ms == 0 {
            return bad("response_timeout_ms", "must be positive");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be positive");
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return bad("reconnect_max_ms", "must not be below reconnect_min_ms");
        }
        if self.max_frame_len < 64 {
            return bad("max_frame_len", "must be at least 64");
        }
        Text::<16>::new("login_name", &self.login_name)?;
        Text::<16>::new("login_password", &self.login_password)?;
        Ok(())
    }
}

/// What came back for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    /// The triple the request was written with (every attempt uses it).
    pub sequence: SequenceTriple,
    /// The response's Result; 0 accepted.
    pub result: ResultCode,
    /// When the answered attempt was written, Unix milliseconds.
    pub written_at_ms: u64,
    /// When the response arrived, Unix milliseconds.
    pub responded_at_ms: u64,
    /// Writes it took, 1 if the first was answered.
    pub attempts: u32,
}

/// What came back for one Submit.
pub type SubmitOutcome = CallOutcome;

impl CallOutcome {
    /// Whether the gateway accepted the request.
    pub fn is_accepted(&self) -> bool {
        self.result.is_ok()
    }
}

/// One Submit to send: the recipient, the SP's fields and one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    /// Recipient; "86" is put in front when missing.
    pub user_number: String,
    /// The SP access number, with any extension.
    pub sp_number: String,
    /// Service code registered with the operator (ServiceType).
    pub service_type: String,
    /// Enterprise code. Default empty.
    pub corp_id: String,
    /// Who pays. Default 21 zeros (the SP).
    pub charge_number: String,
    /// Default 1 (free for the charged number).
    pub fee_type: u8,
    /// Fee in fen as text. Default "0".
    pub fee_value: String,
    /// Default "0".
    pub given_value: String,
    /// Default 0.
    pub agent_flag: u8,
    /// Default 2 (MT not caused by an MO).
    pub morelateto_mt_flag: u8,
    /// 0 to 9. Default 0.
    pub priority: u8,
    /// `yymmddhhmmss032+` or empty for the gateway's default. Default empty.
    pub expire_time: String,
    /// Same format, empty to send now. Default empty.
    pub schedule_time: String,
    /// Default 1 (always report).
    pub report_flag: u8,
    /// Submit Reserve (some gateways carry a LinkID here). Default empty.
    pub reserve: String,
    /// The segment's coding, header flag and octets.
    pub segment: Segment,
    /// The triple to use; the session's generator picks one when `None`.
    /// Choosing it beforehand lets the caller record it before the write.
    pub sequence: Option<SequenceTriple>,
}

impl SubmitRequest {
    /// A request with the usual defaults for a push notice.
    pub fn new(user_number: &str, sp_number: &str, service_type: &str, segment: Segment) -> Self {
        Self {
            user_number: user_number.to_owned(),
            sp_number: sp_number.to_owned(),
            service_type: service_type.to_owned(),
            corp_id: String::new(),
            charge_number: "0".repeat(21),
            fee_type: 1,
            fee_value: "0".into(),
            given_value: "0".into(),
            agent_flag: 0,
            morelateto_mt_flag: 2,
            priority: 0,
            expire_time: String::new(),
            schedule_time: String::new(),
            report_flag: 1,
            reserve: String::new(),
            segment,
            sequence: None,
        }
    }

    /// The Submit body; fails when a field does not fit or the content is
    /// over 140 octets.
    pub fn to_submit(&self) -> Result<Submit, Error> {
        let user = if self.user_number.starts_with("86") {
            self.user_number.clone()
        } else {
            format!("86{}", self.user_number)
        };
        let submit = Submit {
            sp_number: Text::new("sp_number", &self.sp_number)?,
            charge_number: Text::new("charge_number", &self.charge_number)?,
            user_numbers: vec![Text::new("user_number", &user)?],
            corp_id: Text::new("corp_id", &self.corp_id)?,
            service_type: Text::new("service_type", &self.service_type)?,
            fee_type: self.fee_type,
            fee_value: Text::new("fee_value", &self.fee_value)?,
            given_value: Text::new("given_value", &self.given_value)?,
            agent_flag: self.agent_flag,
            morelateto_mt_flag: self.morelateto_mt_flag,
            priority: self.priority,
            expire_time: Text::new("expire_time", &self.expire_time)?,
            schedule_time: Text::new("schedule_time", &self.schedule_time)?,
            report_flag: self.report_flag,
            tp_pid: 0,
            tp_udhi: u8::from(self.segment.udhi),
            message_coding: self.segment.coding.as_u8(),
            message_type: 0,
            content: self.segment.content.clone(),
            reserve: Text::new("reserve", &self.reserve)?,
        };
        submit.check(DEFAULT_MAX_FRAME_LEN)?;
        Ok(submit)
    }
}

/// A request on its way through the connection task.
struct Job {
    sequence: SequenceTriple,
    command: CommandId,
    frame: Bytes,
    attempts: u32,
    written_at_ms: u64,
    reply: oneshot::Sender<Result<CallOutcome, Error>>,
}

impl Job {
    fn finish(self, result: Result<CallOutcome, Error>) {
        // The caller may have given up waiting; nothing to do then.
        let _ = self.reply.send(result);
    }
}

enum Command {
    Call(Job),
    Close(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Shared {
    connected: AtomicBool,
    load: AtomicUsize,
}

/// A client session to the gateway. Cheap to clone; all clones drive the
/// same connection. See the module documentation for its behaviour.
#[derive(Clone)]
pub struct Session {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    sequences: Arc<SequenceGenerator>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("connected", &self.is_connected())
            .field("load", &self.load())
            .finish()
    }
}

impl Session {
    /// Starts a session's task. Nothing connects until the first request.
    pub fn start(config: SessionConfig) -> Result<Self, Error> {
        let sequences = Arc::new(SequenceGenerator::new(config.node_id));
        Self::start_shared(config, sequences, Vec::new())
    }

    /// Starts a session that takes triples from `sequences` and tokens from
    /// every limiter in `limiters` (plus its own when `rate_limit_per_sec`
    /// is set).
    pub fn start_shared(
        config: SessionConfig,
        sequences: Arc<SequenceGenerator>,
        mut limiters: Vec<Arc<RateLimiter>>,
    ) -> Result<Self, Error> {
        config.validate()?;
        if config.rate_limit_per_sec > 0 {
            let rate = config.rate_limit_per_sec;
            limiters.push(Arc::new(RateLimiter::new(
                f64::from(rate),
                rate.div_ceil(10),
            )));
        }
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let shared = Arc::new(Shared::default());
        let span = tracing::info_span!("sgip_client", addr = %config.addr, node = config.node_id);
        let driver = Driver {
            config: Arc::new(config),
            limiters,
            sequences: sequences.clone(),
            rx,
            shared: shared.clone(),
            ready: VecDeque::new(),
            closing: None,
        };
        tokio::spawn(driver.run().instrument(span));
        Ok(Self {
            tx,
            shared,
            sequences,
        })
    }

    /// A fresh triple from this session's generator.
    pub fn next_sequence(&self) -> SequenceTriple {
        self.sequences.next()
    }

    /// Whether a bound connection is open now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Requests queued or in flight.
    pub fn load(&self) -> usize {
        self.shared.load.load(Ordering::Relaxed)
    }

    /// Sends one Submit and waits for its Submit_Resp.
    pub async fn submit(&self, request: &SubmitRequest) -> Result<SubmitOutcome, Error> {
        let submit = request.to_submit()?;
        let sequence = request.sequence.unwrap_or_else(|| self.sequences.next());
        debug!(
            %sequence,
            user = %mask_phone(request.user_number.as_bytes()),
            segment = request.segment.index,
            total = request.segment.total,
            "submit queued"
        );
        self.call_with_sequence(sequence, Body::Submit(submit))
            .await
    }

    /// Sends any request body and waits for its response.
    pub async fn call(&self, body: Body) -> Result<CallOutcome, Error> {
        let sequence = self.sequences.next();
        self.call_with_sequence(sequence, body).await
    }

    /// Sends a request body under `sequence` and waits for its response.
    pub async fn call_with_sequence(
        &self,
        sequence: SequenceTriple,
        body: Body,
    ) -> Result<CallOutcome, Error> {
        let command = body.command();
        if command.is_response() || matches!(command, CommandId::Bind | CommandId::Unbind) {
            return Err(Error::UnexpectedPdu {
                command: command.name(),
            });
        }
        let pdu = Pdu::new(sequence, body);
        let mut frame = BytesMut::with_capacity(pdu.encoded_len());
        pdu.encode(&mut frame);
        let (reply, rx) = oneshot::channel();
        let job = Job {
            sequence,
            command,
            frame: frame.freeze(),
            attempts: 0,
            written_at_ms: 0,
            reply,
        };
        self.shared.load.fetch_add(1, Ordering::Relaxed);
        let _load = LoadGuard(&self.shared);
        self.tx
            .send(Command::Call(job))
            .await
            .map_err(|_| Error::SessionClosed)?;
        rx.await.map_err(|_| Error::SessionClosed)?
    }

    /// Stops taking requests, waits (up to `close_timeout_ms`) for those
    /// queued before the call, unbinds and closes the connection.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct LoadGuard<'a>(&'a Shared);

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        self.0.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A written request waiting for its response.
struct Flight {
    job: Job,
    deadline: Instant,
}

/// How a connection ended.
enum Ended {
    /// The session is closed for good.
    Closed,
    /// Unbound or lost; `answered` says whether any response arrived.
    Disconnected { answered: bool },
}

struct Connection {
    reader: PduReader<OwnedReadHalf>,
    writer: PduWriter<OwnedWriteHalf>,
}

struct Driver {
    config: Arc<SessionConfig>,
    limiters: Vec<Arc<RateLimiter>>,
    sequences: Arc<SequenceGenerator>,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    /// Requests to write before taking new ones from the queue (resends).
    ready: VecDeque<Job>,
    /// Set once `close` was called: the callers to tell when done.
    closing: Option<(Vec<oneshot::Sender<()>>, Instant)>,
}

impl Driver {
    async fn run(mut self) {
        let mut backoff = Duration::ZERO;
        loop {
            if self.ready.is_empty() && self.closing.is_none() {
                match self.rx.recv().await {
                    Some(Command::Call(job)) => self.ready.push_back(job),
                    Some(Command::Close(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    None => break,
                }
            }
            if self.ready.is_empty() && self.closing.is_some() {
                break;
            }
            if !backoff.is_zero() && self.wait_out(backoff).await {
                break;
            }
            match self.connect().await {
                Ok(conn) => {
                    self.shared.connected.store(true, Ordering::Relaxed);
                    let ended = self.serve(conn).await;
                    self.shared.connected.store(false, Ordering::Relaxed);
                    match ended {
                        Ended::Closed => break,
                        Ended::Disconnected { answered: true } => backoff = Duration::ZERO,
                        Ended::Disconnected { answered: false } => {
                            backoff = self.next_backoff(backoff)
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, retryable = e.is_retryable(), "gateway connect or bind failed");
                    let reason = e.to_string();
                    for job in self.ready.drain(..) {
                        job.finish(Err(Error::Unavailable {
                            reason: reason.clone(),
                        }));
                    }
                    backoff = self.next_backoff(backoff);
                }
            }
        }
        self.shutdown_queue();
        info!("session closed");
    }

    fn next_backoff(&self, current: Duration) -> Duration {
        let min = Duration::from_millis(self.config.reconnect_min_ms);
        let max = Duration::from_millis(self.config.reconnect_max_ms);
        if current.is_zero() {
            min
        } else {
            (current * 2).min(max)
        }
    }

    /// Sleeps through a back-off, failing requests that arrive meanwhile so
    /// that callers (or a pool) can go elsewhere. True if the session closed.
    async fn wait_out(&mut self, backoff: Duration) -> bool {
        debug!(
            backoff_ms = backoff.as_millis() as u64,
            "waiting before reconnect"
        );
        let until = Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return false,
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Call(job)) => job.finish(Err(Error::Unavailable {
                        reason: "reconnecting after a failure".into(),
                    })),
                    Some(Command::Close(done)) => {
                        for job in self.ready.drain(..) {
                            job.finish(Err(Error::SessionClosed));
                        }
                        let _ = done.send(());
                        return true;
                    }
                    None => return true,
                },
            }
        }
    }

    fn shutdown_queue(&mut self) {
        for job in self.ready.drain(..) {
            job.finish(Err(Error::SessionClosed));
        }
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Call(job) => job.finish(Err(Error::SessionClosed)),
                Command::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        if let Some((waiters, _)) = self.closing.take() {
            for done in waiters {
                let _ = done.send(());
            }
        }
    }

    async fn connect(&self) -> Result<Connection, Error> {
        let cfg = &self.config;
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let stream = timeout(connect_timeout, TcpStream::connect(&cfg.addr))
            .await
            .map_err(|_| Error::Timeout {
                operation: "connect",
                after_ms: cfg.connect_timeout_ms,
            })??;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut conn = Connection {
            reader: PduReader::new(rd, cfg.max_frame_len),
            writer: PduWriter::new(wr),
        };
        let sequence = self.sequences.next();
        let bind = Pdu::new(
            sequence,
            Body::Bind(Bind {
                login_type: cfg.login_type,
                login_name: Text::new("login_name", &cfg.login_name)?,
                login_password: Text::new("login_password", &cfg.login_password)?,
                reserve: Text::empty(),
            }),
        );
        conn.writer.send(&bind).await?;
        let bind_timeout = Duration::from_millis(cfg.bind_timeout_ms);
        let reply = timeout(bind_timeout, conn.reader.read_pdu())
            .await
            .map_err(|_| Error::Timeout {
                operation: "bind",
                after_ms: cfg.bind_timeout_ms,
            })??;
        match reply {
            Some(Pdu {
                sequence: s,
                body: Body::BindResp(r),
            }) if s == sequence => {
                if r.result.is_ok() {
                    info!(login_type = cfg.login_type, "bound to gateway");
                    Ok(conn)
                } else {
                    Err(Error::BindRefused { result: r.result.0 })
                }
            }
            Some(other) => Err(Error::UnexpectedPdu {
                command: other.command().name(),
            }),
            None => Err(Error::ConnectionClosed),
        }
    }

    /// Drives one bound connection until it ends.
    async fn serve(&mut self, mut conn: Connection) -> Ended {
        let cfg = self.config.clone();
        let response_timeout = Duration::from_millis(cfg.response_timeout_ms);
        let idle = (cfg.idle_unbind_ms > 0).then(|| Duration::from_millis(cfg.idle_unbind_ms));
        let mut flights: HashMap<SequenceTriple, Flight> = HashMap::new();
        // Deadlines in write order; entries whose flight is gone are skipped.
        let mut deadlines: VecDeque<(Instant, SequenceTriple, u32)> = VecDeque::new();
        let mut held: Option<(Job, Instant)> = None;
        let mut last_traffic = Instant::now();
        let mut answered = false;
        let mut queue_open = true;

        let lost = |this: &mut Self,
                    flights: HashMap<SequenceTriple, Flight>,
                    held: Option<(Job, Instant)>| {
            // Unanswered requests go back to the front, oldest first.
            let mut back: Vec<Flight> = flights.into_values().collect();
            back.sort_by_key(|f| f.deadline);
            for flight in back.into_iter().rev() {
                this.requeue_or_fail(flight.job);
            }
            if let Some((job, _)) = held {
                this.ready.push_front(job);
            }
        };

        loop {
            // Write as much as the window and the rate limit allow.
            let mut wrote = false;
            while flights.len() < cfg.window && held.is_none() {
                let job = match self.ready.pop_front() {
                    Some(job) => job,
                    None if queue_open && self.closing.is_none() => match self.rx.try_recv() {
                        Ok(Command::Call(job)) => job,
                        Ok(Command::Close(done)) => {
                            self.begin_close(done);
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            queue_open = false;
                            self.closing.get_or_insert_with(|| {
                                (
                                    Vec::new(),
                                    Instant::now() + Duration::from_millis(cfg.close_timeout_ms),
                                )
                            });
                            break;
                        }
                    },
                    None => break,
                };
                let wait = self.reserve_token();
                if wait.is_zero() {
                    match self
                        .write_job(
                            &mut conn,
                            job,
                            &mut flights,
                            &mut deadlines,
                            response_timeout,
                        )
                        .await
                    {
                        Ok(()) => wrote = true,
                        Err(e) => {
                            warn!(error = %e, "write to gateway failed");
                            lost(self, flights, held);
                            return Ended::Disconnected { answered };
                        }
                    }
                } else {
                    held = Some((job, Instant::now() + wait));
                }
            }
            if wrote {
                last_traffic = Instant::now();
                if let Err(e) = conn.writer.flush().await {
                    warn!(error = %e, "write to gateway failed");
                    lost(self, flights, held);
                    return Ended::Disconnected { answered };
                }
            }

            // Closing: done when nothing is left, or when the deadline passed.
            if let Some((_, close_by)) = &self.closing {
                let nothing_left = flights.is_empty() && held.is_none() && self.ready.is_empty();
                if nothing_left || Instant::now() >= *close_by {
                    for (_, flight) in flights.drain() {
                        flight.job.finish(Err(Error::SessionClosed));
                    }
                    if let Some((job, _)) = held.take() {
                        job.finish(Err(Error::SessionClosed));
                    }
                    self.unbind(&mut conn).await;
                    return Ended::Closed;
                }
            }

            let can_take = flights.len() < cfg.window
                && held.is_none()
                && queue_open
                && self.closing.is_none();
            let next_deadline = deadlines.front().map(|d| d.0);
            let held_until = held.as_ref().map(|h| h.1);
            let idle_at = match idle {
                Some(idle) if flights.is_empty() && held.is_none() && self.ready.is_empty() => {
                    Some(last_traffic + idle)
                }
                _ => None,
            };
            let close_by = self.closing.as_ref().map(|c| c.1);

            tokio::select! {
                read = conn.reader.read_pdu() => {
                    match read {
                        Ok(Some(pdu)) => {
                            last_traffic = Instant::now();
                            match self.on_pdu(&mut conn, pdu, &mut flights).await {
                                Ok(Some(true)) => answered = true,
                                Ok(Some(false)) => {}
                                Ok(None) => {
                                    info!("gateway unbound");
                                    lost(self, flights, held);
                                    return Ended::Disconnected { answered: true };
                                }
                                Err(e) => {
                                    warn!(error = %e, "gateway write failed");
                                    lost(self, flights, held);
                                    return Ended::Disconnected { answered };
                                }
                            }
                        }
                        Ok(None) => {
                            info!(in_flight = flights.len(), "gateway closed the connection");
                            lost(self, flights, held);
                            return Ended::Disconnected { answered };
                        }
                        Err(e) => {
                            warn!(error = %e, in_flight = flights.len(), "bad frame from gateway, closing");
                            lost(self, flights, held);
                            return Ended::Disconnected { answered };
                        }
                    }
                }
                cmd = self.rx.recv(), if can_take => match cmd {
                    Some(Command::Call(job)) => self.ready.push_back(job),
                    Some(Command::Close(done)) => self.begin_close(done),
                    None => {
                        queue_open = false;
                        self.closing.get_or_insert_with(|| {
                            (Vec::new(), Instant::now() + Duration::from_millis(cfg.close_timeout_ms))
                        });
                    }
                },
                _ = sleep_until(held_until.unwrap_or_else(far_future)), if held_until.is_some() => {
                    if let Some((job, _)) = held.take() {
                        if let Err(e) = self.write_job(&mut conn, job, &mut flights, &mut deadlines, response_timeout).await {
                            warn!(error = %e, "write to gateway failed");
                            lost(self, flights, None);
                            return Ended::Disconnected { answered };
                        }
                        if let Err(e) = conn.writer.flush().await {
                            warn!(error = %e, "write to gateway failed");
                            lost(self, flights, None);
                            return Ended::Disconnected { answered };
                        }
                        last_traffic = Instant::now();
                    }
                }
                _ = sleep_until(next_deadline.unwrap_or_else(far_future)), if next_deadline.is_some() => {
                    let now = Instant::now();
                    let mut exhausted = false;
                    while let Some(&(at, seq, attempt)) = deadlines.front() {
                        if at > now {
                            break;
                        }
                        deadlines.pop_front();
                        let current = flights.get(&seq).is_some_and(|f| f.job.attempts == attempt);
                        if !current {
                            continue;
                        }
                        let Some(flight) = flights.remove(&seq) else { continue };
                        if flight.job.attempts >= cfg.max_attempts {
                            warn!(sequence = %seq, attempts = flight.job.attempts, "no response from gateway, giving up");
                            flight.job.finish(Err(Error::NoResponse { attempts: attempt }));
                            exhausted = true;
                        } else {
                            debug!(sequence = %seq, attempt, "no response from gateway, writing again");
                            self.ready.push_front(flight.job);
                        }
                    }
                    if exhausted {
                        // A connection that swallows requests is not trusted further.
                        lost(self, flights, held);
                        return Ended::Disconnected { answered };
                    }
                }
                _ = sleep_until(idle_at.unwrap_or_else(far_future)), if idle_at.is_some() => {
                    info!(idle_ms = cfg.idle_unbind_ms, "idle, unbinding");
                    self.unbind(&mut conn).await;
                    return Ended::Disconnected { answered: true };
                }
                _ = sleep_until(close_by.unwrap_or_else(far_future)), if close_by.is_some() => {}
            }
        }
    }

    fn begin_close(&mut self, done: oneshot::Sender<()>) {
        let by = Instant::now() + Duration::from_millis(self.config.close_timeout_ms);
        match &mut self.closing {
            Some((waiters, _)) => waiters.push(done),
            None => self.closing = Some((vec![done], by)),
        }
        info!("closing session");
    }

    fn requeue_or_fail(&mut self, job: Job) {
        if job.attempts >= self.config.max_attempts {
            let attempts = job.attempts;
            job.finish(Err(Error::NoResponse { attempts }));
        } else {
            self.ready.push_front(job);
        }
    }

    fn reserve_token(&self) -> Duration {
        self.limiters
            .iter()
            .map(|l| l.reserve())
            .max()
            .unwrap_or(Duration::ZERO)
    }

    async fn write_job(
        &self,
        conn: &mut Connection,
        mut job: Job,
        flights: &mut HashMap<SequenceTriple, Flight>,
        deadlines: &mut VecDeque<(Instant, SequenceTriple, u32)>,
        response_timeout: Duration,
    ) -> Result<(), Error> {
        job.attempts += 1;
        job.written_at_ms = unix_millis();
        let deadline = Instant::now() + response_timeout;
        let write = conn.writer.write_frame(&job.frame).await;
        debug!(sequence = %job.sequence, command = job.command.name(), attempt = job.attempts, "request written");
        deadlines.push_back((deadline, job.sequence, job.attempts));
        if let Some(previous) = flights.insert(job.sequence, Flight { job, deadline }) {
            // The caller reused a triple that is still in flight.
            previous.job.finish(Err(Error::InvalidSequence {
                reason: "triple reused while still in flight",
            }));
        }
        write
    }

    /// Handles one PDU from the gateway. `Ok(Some(answered))` to go on,
    /// `Ok(None)` when the gateway unbound.
    async fn on_pdu(
        &mut self,
        conn: &mut Connection,
        pdu: Pdu,
        flights: &mut HashMap<SequenceTriple, Flight>,
    ) -> Result<Option<bool>, Error> {
        let command = pdu.command();
        if command.is_response() {
            let Some(response) = pdu.body.response() else {
                debug!(command = command.name(), "unexpected response dropped");
                return Ok(Some(false));
            };
            let matches = flights
                .get(&pdu.sequence)
                .is_some_and(|f| f.job.command.response() == command);
            if !matches {
                debug!(sequence = %pdu.sequence, command = command.name(), "response to nothing in flight dropped");
                return Ok(Some(false));
            }
            if let Some(flight) = flights.remove(&pdu.sequence) {
                let outcome = CallOutcome {
                    sequence: pdu.sequence,
                    result: response.result,
                    written_at_ms: flight.job.written_at_ms,
                    responded_at_ms: unix_millis(),
                    attempts: flight.job.attempts,
                };
                debug!(sequence = %pdu.sequence, result = response.result.0, "response received");
                flight.job.finish(Ok(outcome));
            }
            return Ok(Some(true));
        }
        match pdu.body {
            Body::Unbind => {
                conn.writer
                    .send(&Pdu::new(pdu.sequence, Body::UnbindResp))
                    .await?;
                Ok(None)
            }
            body => {
                // A well-formed request that does not belong on this side.
                debug!(command = command.name(), "request refused with result 7");
                if let Some(reply) = body.response_with(ResultCode::WRONG_COMMAND) {
                    conn.writer.send(&Pdu::new(pdu.sequence, reply)).await?;
                }
                Ok(Some(false))
            }
        }
    }

    async fn unbind(&self, conn: &mut Connection) {
        let sequence = self.sequences.next();
        if conn
            .writer
            .send(&Pdu::new(sequence, Body::Unbind))
            .await
            .is_err()
        {
            return;
        }
        let wait = Duration::from_millis(self.config.bind_timeout_ms);
        let _ = timeout(wait, async {
            loop {
                match conn.reader.read_pdu().await {
                    Ok(Some(Pdu {
                        body: Body::UnbindResp,
                        ..
                    })) => break,
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        })
        .await;
        let _ = conn.writer.shutdown().await;
        info!("unbound");
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// A pool's settings: one session's settings, how many, and the shared rate.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Settings of every connection (its `rate_limit_per_sec` applies per connection).
    pub session: SessionConfig,
    /// Connections, at least 1. Default 2.
    pub connections: usize,
    /// Submits per second over all connections together; 0 for no limit. Default 0.
    pub rate_limit_per_sec: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            connections: 2,
            rate_limit_per_sec: 0,
        }
    }
}

/// Several sessions to one gateway under one shared rate limit and one
/// sequence generator. Each request goes to the connected session with the
/// least work; a request refused because its session could not reach the
/// gateway is tried on the next session.
#[derive(Clone, Debug)]
pub struct Pool {
    sessions: Arc<Vec<Session>>,
    sequences: Arc<SequenceGenerator>,
}

impl Pool {
    /// Starts the pool's sessions (they connect on first use).
    pub fn start(config: PoolConfig) -> Result<Self, Error> {
        if config.connections == 0 {
            return Err(Error::Config {
                key: "connections",
                reason: "must be at least 1",
            });
        }
        let sequences = Arc::new(SequenceGenerator::new(config.session.node_id));
        let shared: Vec<Arc<RateLimiter>> = if config.rate_limit_per_sec > 0 {
            let rate = config.rate_limit_per_sec;
            vec![Arc::new(RateLimiter::new(
                f64::from(rate),
                rate.div_ceil(10),
            ))]
        } else {
            Vec::new()
        };
        let sessions = (0..config.connections)
            .map(|_| {
                Session::start_shared(config.session.clone(), sequences.clone(), shared.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            sessions: Arc::new(sessions),
            sequences,
        })
    }

    /// A fresh triple, to record before submitting with it.
    pub fn next_sequence(&self) -> SequenceTriple {
        self.sequences.next()
    }

    /// The sessions, for inspection.
    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    fn pick(&self, skip: &[usize]) -> Option<usize> {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .min_by_key(|(_, s)| (!s.is_connected(), s.load()))
            .map(|(i, _)| i)
    }

    /// Sends one Submit on the best session and waits for its response.
    /// The request's triple is fixed before the first try, so a try on
    /// another session reuses it.
    pub async fn submit(&self, request: &SubmitRequest) -> Result<SubmitOutcome, Error> {
        let mut request = request.clone();
        request
            .sequence
            .get_or_insert_with(|| self.sequences.next());
        let mut tried = Vec::with_capacity(self.sessions.len());
        loop {
            let Some(i) = self.pick(&tried) else {
                return Err(Error::Unavailable {
                    reason: "every connection failed".into(),
                });
            };
            tried.push(i);
            match self.sessions[i].submit(&request).await {
                Err(Error::Unavailable { reason }) if tried.len() < self.sessions.len() => {
                    debug!(%reason, "connection unavailable, trying another");
                }
                other => return other,
            }
        }
    }

    /// Closes every session, waiting for what is in flight.
    pub async fn close(&self) {
        futures::future::join_all(self.sessions.iter().map(Session::close)).await;
    }
}
