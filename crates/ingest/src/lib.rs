//! Ingest: the platform's entrance to the system. It takes send
//! instructions and subscription changes over HTTP or from a raw topic,
//! validates them, and writes them to Kafka, answering only once Kafka has
//! them.
//!
//! # Data flow
//!
//! An HTTP call ([`api`]) is first authenticated ([`auth`]: a bearer token,
//! or an HMAC-SHA256 signature with a fresh timestamp and an unused nonce)
//! and rate-limited per client. Its JSON body becomes one or more
//! [`submit::Instruction`]s; [`submit::Intake`] validates each with the shared
//! [`sms_core::validate::Validator`] (Unicom number, text and signature,
//! kind, expiry), gives it its message id (UUID v5 of client id and request
//! id), and writes an Avro [`sms_core::events::SmsRequest`] keyed by phone
//! number to `sms.requests.otp` (verification codes) or
//! `sms.requests.notify` (everything else). The answer waits for every
//! record's acknowledgement ([`publish::Publisher`]: acks=all, idempotent
//! producer); when Kafka does not answer within the configured time the
//! caller gets 503 with `Retry-After`, and nothing Kafka does not have is
//! ever acknowledged.
//!
//! The [`bridge`] reads JSON instructions from the raw inbound topic and
//! pushes them through the same intake; refused records go to `sms.dlq` with
//! their reason, and offsets are committed only after every output was
//! acknowledged.
//!
//! Subscription changes ([`subscriptions`]) write whole
//! [`sms_core::events::SubscriptionRecord`]s to the compacted
//! `sms.subscriptions` topic, which a [`tail`] keeps materialised in memory
//! for queries. Another tail keeps recent final statuses from `sms.status`
//! ([`status`]) for the status query.
//!
//! # Duplicates
//!
//! A retried request (same client, same request id) gets the same message id.
//! Within the retry memory (by default the last million request ids, at most
//! 24 hours old) it is answered from memory and nothing is written; beyond it,
//! or after a restart, the record is written again with the same message id
//! and the dispatcher's dedupe on message id is the backstop.

pub mod api;
pub mod auth;
pub mod bridge;
pub mod config;
pub mod error;
pub mod publish;
pub mod recent;
pub mod status;
pub mod submit;
pub mod subscriptions;
pub mod tail;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sms_core::validate::{NumberRanges, Validator};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::IngestError;

/// The process-wide Prometheus recorder, installed on first use; `None`
/// when another recorder was installed first.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

/// A running ingest service.
pub struct Ingest {
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    publisher: publish::Publisher,
    drain: Duration,
}

impl Ingest {
    /// Binds the listener and starts the API, the bridge and the tails.
    pub async fn start(config: Config) -> Result<Self, IngestError> {
        config.check()?;
        let tls = config
            .tls
            .as_ref()
            .map(tls::TlsSettings::acceptor)
            .transpose()?;
        let shutdown = CancellationToken::new();
        let topics = config.kafka.topics();

        let ranges = NumberRanges::from_path(config.number_ranges.as_deref())?;
        let validator = Validator::new(ranges, config.text.clone())?;
        let auth = Arc::new(auth::Authenticator::new(&config.clients, &config.auth)?);
        let publisher = publish::Publisher::new(
            &config.kafka,
            config.limits.max_in_flight,
            Duration::from_millis(config.limits.publish_timeout_ms),
            config.limits.retry_after_s,
        )?;
        let intake = Arc::new(submit::Intake::new(
            validator.clone(),
            config.templates.clone(),
            topics.clone(),
            publisher.clone(),
            config.limits.recent_requests,
            config.limits.recent_window_ms,
        ));

        let statuses = status::StatusBoard::new(config.limits.recent_statuses);
        let board = statuses.clone();
        let (statuses_loaded, status_tail) = tail::spawn(
            &config.kafka,
            topics.status.clone(),
            shutdown.clone(),
            move |r| board.apply(r),
        )?;
        let subscriptions = subscriptions::Subscriptions::new(
            topics.subscriptions.clone(),
            publisher.clone(),
            Arc::new(validator),
        );
        let book = subscriptions.clone();
        let (subscriptions_loaded, subscription_tail) = tail::spawn(
            &config.kafka,
            topics.subscriptions.clone(),
            shutdown.clone(),
            move |r| book.apply(r),
        )?;
        let mut background = vec![status_tail, subscription_tail];
        if config.bridge.enabled {
            let bridge = bridge::Bridge::new(
                &config.kafka,
                config.bridge.clone(),
                intake.clone(),
                auth.clone(),
            )?;
            background.push(tokio::spawn(bridge.run(shutdown.clone())));
        }

        let state = api::AppState {
            intake,
            auth,
            statuses,
            subscriptions,
            publisher: publisher.clone(),
            metrics: metrics_handle(),
            max_batch: config.limits.max_batch,
            max_body_bytes: config.limits.max_body_bytes,
            ready: vec![statuses_loaded, subscriptions_loaded],
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| IngestError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| IngestError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let stop = shutdown.clone();
        let router = api::router(state);
        let server = match tls {
            Some(acceptor) => {
                let listener = tls::TlsListener::new(listener, acceptor).map_err(|source| {
                    IngestError::Listen {
                        addr: config.listen.to_string(),
                        source,
                    }
                })?;
                tokio::spawn(async move {
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "https server failed");
                    }
                })
            }
            None => tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "http server failed");
                }
            }),
        };
        tracing::info!(
            %addr,
            https = config.tls.is_some(),
            bridge = config.bridge.enabled,
            "ingest listening"
        );
        Ok(Self {
            addr,
            shutdown,
            server,
            background,
            publisher,
            drain: Duration::from_millis(config.limits.drain_ms),
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A token that stops the service when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops taking new connections, lets in-flight requests finish within
    /// the drain deadline, stops the bridge and the tails, and flushes the
    /// producer. Returns whether everything finished in time.
    pub async fn stop(self) -> bool {
        self.shutdown.cancel();
        tracing::info!(drain_ms = self.drain.as_millis() as u64, "draining");
        let deadline = tokio::time::Instant::now() + self.drain;
        let server_abort = self.server.abort_handle();
        let mut finished = tokio::time::timeout_at(deadline, self.server).await.is_ok();
        if !finished {
            tracing::warn!("in-flight requests did not finish within the drain deadline");
            server_abort.abort();
        }
        for task in self.background {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                finished = false;
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.publisher
            .flush(left.max(Duration::from_millis(100)))
            .await;
        tracing::info!(finished, "ingest stopped");
        finished
    }

    /// Runs until `signal` completes, then stops as [`Ingest::stop`] does.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> bool {
        let token = self.shutdown.clone();
        tokio::select! {
            _ = signal => {}
            _ = token.cancelled() => {}
        }
        self.stop().await
    }
}
