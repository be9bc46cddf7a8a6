//! A China Unicom SMS gateway simulator speaking SGIP 1.2, in-process or as the `smsc-sim` binary.
//!
//! It plays the gateway's side of both SGIP connections. SPs connect to its
//! submit listener, bind with LoginType 1 and send Submits; it answers each
//! with a Result drawn from a configured mix (or 88 above a TPS limit),
//! counts what it accepted, reassembles concatenated messages to count
//! whole messages by recipient and text, and schedules a Report per
//! recipient after a delay drawn from a distribution, with a delivered /
//! failed mix of realistic error codes. Reports, and uplink messages asked
//! for over HTTP (`POST /mo`), go to the SP's own listener over a
//! LoginType 2 session, and are sent again until the SP answers Result 0,
//! as a real gateway does.
//!
//! Faults (refused binds, silence, slow answers, dropped connections, late
//! or doubled reports) can be set in the configuration and switched at run
//! time over HTTP (`PUT /faults`, `POST /drop`). `GET /counts` returns every
//! count as JSON; [`message_key`] gives the key a whole message is counted
//! under, so a test with unique texts can prove nothing was lost and bound
//! what was duplicated.
//!
//! Limitations: one SP account; Submit windows are not enforced (answers
//! are immediate unless delayed); Trace and UserRpt are not generated.

mod config;
mod counts;
mod faults;
mod gateway;
mod http;
mod outbound;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sgip::text::{self, CodingChoice, Reassembler};
use sgip::{RateLimiter, SequenceGenerator, SequenceTriple};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

pub use config::{
    Account, DelayDistribution, ReportBehaviour, SimConfig, SpListener, SubmitBehaviour,
    WeightedCode, WeightedDelay, WeightedOutcome,
};
pub use counts::{message_key, segment_key, with_country_code, Counts};
pub use faults::Faults;
pub use outbound::MoRequest;

/// The simulator's single error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A configuration value is out of range; names the key.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        key: &'static str,
        reason: &'static str,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// No SP listener is configured, so uplink messages cannot be sent.
    #[error("no sp listener configured")]
    NoSpListener,
    /// The text of an uplink message cannot be encoded.
    #[error("cannot encode uplink message: {0}")]
    Text(#[from] sgip::Error),
    /// The simulator is shutting down.
    #[error("simulator stopped")]
    Stopped,
}

impl SimError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SimError::Listen { .. })
    }
}

/// Counts plus the reassembly state they are derived from.
pub(crate) struct Tally {
    /// Every count but the per-message and per-segment ones.
    pub counts: Counts,
    pub messages: counts::KeyCounts,
    pub segments: counts::KeyCounts,
    pub reassembler: Reassembler<(String, String)>,
}

impl Tally {
    /// Every count, as `GET /counts` serves it.
    pub fn snapshot(&self) -> Counts {
        let mut counts = self.counts.clone();
        counts.partial_messages = self.reassembler.pending() as u64;
        counts.messages = self.messages.to_map();
        counts.segments = self.segments.to_map();
        counts
    }

    /// Starts every count from zero.
    pub fn reset(&mut self) {
        self.counts = Counts::default();
        self.messages = counts::KeyCounts::default();
        self.segments = counts::KeyCounts::default();
    }
}

/// State shared by the listeners, the report sender and the HTTP endpoint.
pub(crate) struct State {
    pub config: SimConfig,
    pub faults: RwLock<Faults>,
    pub tally: Mutex<Tally>,
    pub limiter: Option<RateLimiter>,
    /// Bumped to make every SP connection drop.
    pub drop_all: watch::Sender<u64>,
    pub stop: watch::Receiver<bool>,
    pub outbound: Option<mpsc::Sender<outbound::Outbound>>,
    pub sequences: SequenceGenerator,
    pub submits_seen: AtomicU64,
    pub bound: AtomicUsize,
}

impl State {
    pub fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Entry point: [`Simulator::start`].
pub struct Simulator;

impl Simulator {
    /// Binds the listeners, starts every task and returns a handle with the
    /// bound addresses.
    pub async fn start(config: SimConfig) -> Result<SimulatorHandle, SimError> {
        config.validate()?;
        let submit_listener = TcpListener::bind(config.submit_addr)
            .await
            .map_err(|source| SimError::Listen {
                addr: config.submit_addr,
                source,
            })?;
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| SimError::Listen {
                addr: config.http_addr,
                source,
            })?;
        let submit_addr = submit_listener
            .local_addr()
            .map_err(|source| SimError::Listen {
                addr: config.submit_addr,
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| SimError::Listen {
                addr: config.http_addr,
                source,
            })?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let (drop_all, _) = watch::channel(0u64);
        let mut tasks = Vec::new();
        let (outbound_tx, outbound_rx) = match &config.sp {
            Some(_) => {
                let (tx, rx) = mpsc::channel(65_536);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let limiter = (config.submit.tps_limit > 0).then(|| {
            let tps = config.submit.tps_limit;
            RateLimiter::new(f64::from(tps), tps.div_ceil(10).max(1))
        });
        let state = Arc::new(State {
            faults: RwLock::new(config.faults.clone()),
            tally: Mutex::new(Tally {
                counts: Counts::default(),
                messages: counts::KeyCounts::default(),
                segments: counts::KeyCounts::default(),
                reassembler: Reassembler::new(100_000, Duration::from_secs(600)),
            }),
            limiter,
            drop_all,
            stop: stop_rx.clone(),
            outbound: outbound_tx.clone(),
            sequences: SequenceGenerator::new(config.node_id),
            submits_seen: AtomicU64::new(0),
            bound: AtomicUsize::new(0),
            config,
        });

        if let (Some(rx), Some(tx), Some(sp)) = (outbound_rx, outbound_tx, state.config.sp.clone())
        {
            let sender = outbound::Sender::start(state.clone(), sp, tx)?;
            tasks.push(tokio::spawn(sender.run(rx)));
        }
        tasks.push(tokio::spawn(gateway::listen(
            state.clone(),
            submit_listener,
        )));
        tasks.push(tokio::spawn(http::serve(state.clone(), http_listener)));
        info!(%submit_addr, %http_addr, "simulator started");
        Ok(SimulatorHandle {
            submit_addr,
            http_addr,
            state,
            stop: stop_tx,
            tasks,
        })
    }
}

/// A running simulator. Dropping it without [`SimulatorHandle::shutdown`]
/// leaves its tasks running until the runtime ends.
pub struct SimulatorHandle {
    /// Where SPs connect to submit.
    pub submit_addr: SocketAddr,
    /// The control and counts endpoint.
    pub http_addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimulatorHandle {
    /// A snapshot of the counts.
    pub fn counts(&self) -> Counts {
        self.state.tally().snapshot()
    }

    /// Submits accepted so far: the cheap poll for a caller waiting for
    /// traffic to arrive ([`SimulatorHandle::counts`] copies every per-message
    /// count while the gateway waits for the lock).
    pub fn submits_accepted(&self) -> u64 {
        self.state.tally().counts.submits_accepted
    }

    /// Clears the counts.
    pub fn reset_counts(&self) {
        self.state.tally().reset();
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.state.faults()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.write().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// Drops every SP connection now.
    pub fn drop_connections(&self) {
        self.state.drop_all.send_modify(|g| *g += 1);
    }

    /// Sends an uplink message from `phone` to the SP (split into
    /// concatenated Delivers when long). Returns the Delivers' triples.
    pub async fn send_mo(&self, request: MoRequest) -> Result<Vec<SequenceTriple>, SimError> {
        outbound::queue_mo(&self.state, request).await
    }

    /// Stops accepting, closes connections and waits for the tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        info!("simulator stopped");
    }
}

/// Decodes the text a Submit or Deliver carries, headers removed.
pub(crate) fn decode_text(coding: u8, payload: &[u8]) -> String {
    text::decode(coding, payload)
}

/// The coding choice names accepted by `POST /mo`.
pub(crate) fn coding_choice(name: Option<&str>) -> CodingChoice {
    match name {
        Some("ucs2") => CodingChoice::Ucs2,
        Some("gbk") => CodingChoice::Gbk,
        _ => CodingChoice::Auto,
    }
}
