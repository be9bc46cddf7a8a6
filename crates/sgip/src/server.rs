//! The SP's server side: the listener the gateway connects to with Report, Deliver and UserRpt.
//!
//! The gateway binds with LoginType 2 and the credentials the SP assigned;
//! the server checks them and the peer's address (an allow-list, empty for
//! any). Each Report, Deliver and UserRpt goes to the caller's [`Handler`];
//! its response is written only when the handler returned `Ok`, which means
//! the record is safe. When a handler fails, the server answers nothing for
//! that request, finishes the others already running on that connection,
//! and closes it: the gateway then resends, so a downstream outage delays
//! records instead of losing them. Because the gateway resends, a handler
//! can see the same record twice; it should be idempotent (the Report's
//! SubmitSequenceNumber plus UserNumber identify one outcome).
//!
//! Connections are capped by a semaphore, a connection silent for
//! `idle_timeout_ms` is closed, and the shutdown future stops the listener,
//! lets each connection finish the requests it is handling, and returns when
//! every connection has ended.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, info, warn, Instrument};

use crate::error::Error;
use crate::framing::{PduReader, PduWriter};
use crate::pdu::{Body, Deliver, Pdu, Report, UserRpt, DEFAULT_MAX_FRAME_LEN, LOGIN_GATEWAY_TO_SP};
use crate::result_code::ResultCode;
use crate::sequence::SequenceTriple;
use crate::text_field::mask_phone;
use crate::unix_millis;

/// The listener's settings. Durations are in milliseconds.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The LoginName the gateway must bind with. Default empty.
    pub login_name: String,
    /// The LoginPassword the gateway must bind with. Default empty.
    pub login_password: String,
    /// Peer addresses allowed to connect; empty allows any. A refused peer
    /// is closed before any byte is read, logged at warn and counted in
    /// `sgip_server_refused_peers_total`. Default empty.
    pub allowed_peers: Vec<IpAddr>,
    /// Most connections open at once. Default 16.
    pub max_connections: usize,
    /// Close a connection after this long without a PDU. Default 60000.
    pub idle_timeout_ms: u64,
    /// Most requests of one connection in the handler at once. Default 32.
    pub max_in_flight_per_connection: usize,
    /// Largest frame accepted, in bytes. Default 2048.
    pub max_frame_len: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            login_name: String::new(),
            login_password: String::new(),
            allowed_peers: Vec::new(),
            max_connections: 16,
            idle_timeout_ms: 60_000,
            max_in_flight_per_connection: 32,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl ServerConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key, reason| Err(Error::Config { key, reason });
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.max_in_flight_per_connection == 0 {
            return bad("max_in_flight_per_connection", "must be at least 1");
        }
        if self.idle_timeout_ms == 0 {
            return bad("idle_timeout_ms", "must be positive");
        }
        if self.max_frame_len < 64 {
            return bad("max_frame_len", "must be at least 64");
        }
        Ok(())
    }
}

/// Where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The gateway's socket address.
    pub peer: SocketAddr,
    /// The LoginName it bound with.
    pub login_name: String,
    /// The request's own header triple (the gateway's; not the Submit's).
    pub sequence: SequenceTriple,
    /// When the request was read, Unix milliseconds.
    pub received_at_ms: u64,
}

/// What the server does with each request. `Ok` means the record is safe
/// and Result 0 may be sent; `Err` means no answer and a closed connection,
/// so the gateway resends.
pub trait Handler: Send + Sync + 'static {
    /// The handler's failure; only displayed in logs.
    type Error: std::fmt::Display + Send + 'static;

    /// A status report on an earlier Submit.
    fn report(
        &self,
        origin: Origin,
        report: Report,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// An uplink (MO) message, one segment of it when concatenated.
    fn deliver(
        &self,
        origin: Origin,
        deliver: Deliver,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A change of a user's state. By default accepted and ignored.
    fn user_rpt(
        &self,
        origin: Origin,
        user_rpt: UserRpt,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (origin, user_rpt);
        async { Ok(()) }
    }
}

/// The SGIP server an SP runs for the gateway.
pub struct Server<H: Handler> {
    config: Arc<ServerConfig>,
    handler: Arc<H>,
}

impl<H: Handler> Server<H> {
    /// A server with `config` handing requests to `handler`.
    pub fn new(config: ServerConfig, handler: H) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
            handler: Arc::new(handler),
        })
    }

    /// Accepts connections on `listener` until `shutdown` completes, then
    /// waits for every connection to finish what it is handling.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let local = listener.local_addr().ok();
        info!(addr = ?local, "sgip server listening");

        let accept = async {
            loop {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually out of file descriptors: wait, do not spin.
                        error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if !self.config.allowed_peers.is_empty()
                    && !self.config.allowed_peers.contains(&peer.ip())
                {
                    warn!(%peer, "connection from a peer not on the allow-list refused");
                    metrics::counter!("sgip_server_refused_peers_total").increment(1);
                    continue;
                }
                let conn = ServerConnection {
                    config: self.config.clone(),
                    handler: self.handler.clone(),
                    peer,
                    stop: stop_rx.clone(),
                    _done: done_tx.clone(),
                };
                let span = tracing::info_span!("sgip_server_conn", %peer);
                tokio::spawn(
                    async move {
                        conn.run(stream).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        };

        tokio::select! {
            _ = accept => {}
            _ = shutdown => info!("sgip server shutting down"),
        }
        let _ = stop_tx.send(true);
        drop(done_tx);
        // Every connection task holds a sender; recv returns None when all ended.
        let _ = done_rx.recv().await;
        info!("sgip server stopped");
        Ok(())
    }
}

struct ServerConnection<H: Handler> {
    config: Arc<ServerConfig>,
    handler: Arc<H>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

/// A handler's verdict on one request: the response to write, or nothing.
type Verdict = (SequenceTriple, Option<Body>);

impl<H: Handler> ServerConnection<H> {
    async fn run(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut reader = PduReader::new(rd, self.config.max_frame_len);
        let mut writer = PduWriter::new(wr);
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let mut last_read = Instant::now();
        let mut login: Option<String> = None;
        let mut running: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Verdict> + Send>>> =
            FuturesUnordered::new();
        let mut reading = true;
        let mut unbind: Option<SequenceTriple> = None;

        loop {
            if !reading && running.is_empty() {
                break;
            }
            let can_read = reading && running.len() < self.config.max_in_flight_per_connection;
            let idle_at = last_read + idle;
            tokio::select! {
                read = reader.read_pdu(), if can_read => {
                    let pdu = match read {
                        Ok(Some(pdu)) => pdu,
                        Ok(None) => {
                            debug!("gateway closed the connection");
                            reading = false;
                            continue;
                        }
                        Err(e) => {
                            warn!(error = %e, "bad frame from gateway, closing");
                            reading = false;
                            continue;
                        }
                    };
                    last_read = Instant::now();
                    match self.on_pdu(pdu, &mut login, &mut writer).await {
                        Step::Go => {}
                        Step::Run(fut) => running.push(fut),
                        Step::Unbind(seq) => {
                            unbind = Some(seq);
                            reading = false;
                        }
                        Step::Close => reading = false,
                    }
                }
                Some((sequence, reply)) = running.next(), if !running.is_empty() => {
                    match reply {
                        Some(body) => {
                            if let Err(e) = writer.send(&Pdu::new(sequence, body)).await {
                                warn!(error = %e, "write to gateway failed");
                                reading = false;
                            }
                        }
                        None => {
                            // Not answered: the gateway must resend it.
                            reading = false;
                            unbind = None;
                        }
                    }
                }
                _ = sleep_until(idle_at), if reading && running.is_empty() => {
                    info!(idle_ms = self.config.idle_timeout_ms, "idle gateway connection closed");
                    reading = false;
                }
                _ = self.stop.changed(), if reading => {
                    reading = false;
                }
            }
        }
        if let Some(sequence) = unbind {
            let _ = writer.send(&Pdu::new(sequence, Body::UnbindResp)).await;
        }
        let _ = writer.shutdown().await;
        info!(
            login = login.as_deref().unwrap_or(""),
            "gateway connection ended"
        );
    }

    async fn on_pdu(
        &self,
        pdu: Pdu,
        login: &mut Option<String>,
        writer: &mut PduWriter<tokio::net::tcp::OwnedWriteHalf>,
    ) -> Step {
        let sequence = pdu.sequence;
        let command = pdu.command();
        if command.is_response() {
            debug!(command = command.name(), "unexpected response dropped");
            return Step::Go;
        }
        let Some(name) = login.clone() else {
            let Body::Bind(bind) = &pdu.body else {
                warn!(command = command.name(), "request before bind, closing");
                return Step::Close;
            };
            let result = if bind.login_type != LOGIN_GATEWAY_TO_SP {
                ResultCode::WRONG_LOGIN_TYPE
            } else if bind.login_name.as_bytes() != self.config.login_name.as_bytes()
                || bind.login_password.as_bytes() != self.config.login_password.as_bytes()
            {
                ResultCode::ILLEGAL_LOGIN
            } else {
                ResultCode::OK
            };
            let reply = Pdu::new(sequence, Body::BindResp(crate::pdu::Response::new(result)));
            if writer.send(&reply).await.is_err() {
                return Step::Close;
            }
            if !result.is_ok() {
                warn!(
                    result = result.0,
                    login_type = bind.login_type,
                    "gateway bind refused"
                );
                return Step::Close;
            }
            let name = bind.login_name.to_string_lossy();
            info!(login = %name, "gateway bound");
            *login = Some(name);
            return Step::Go;
        };
        let origin = Origin {
            peer: self.peer,
            login_name: name,
            sequence,
            received_at_ms: unix_millis(),
        };
        let handler = self.handler.clone();
        match pdu.body {
            Body::Bind(_) => {
                let reply = Body::BindResp(crate::pdu::Response::new(ResultCode::REPEATED_LOGIN));
                if writer.send(&Pdu::new(sequence, reply)).await.is_err() {
                    return Step::Close;
                }
                Step::Go
            }
            Body::Unbind => Step::Unbind(sequence),
            Body::Report(report) => {
                debug!(
                    %sequence,
                    submit = %report.submit_sequence,
                    user = %mask_phone(report.user_number.as_bytes()),
                    state = report.state,
                    error_code = report.error_code,
                    "report received"
                );
                Step::Run(Box::pin(async move {
                    let verdict = handler.report(origin, report).await;
                    answer(sequence, "report", verdict, Body::ReportResp)
                }))
            }
            Body::Deliver(deliver) => {
                debug!(
                    %sequence,
                    user = %mask_phone(deliver.user_number.as_bytes()),
                    udhi = deliver.tp_udhi,
                    coding = deliver.message_coding,
                    "deliver received"
                );
                Step::Run(Box::pin(async move {
                    let verdict = handler.deliver(origin, deliver).await;
                    answer(sequence, "deliver", verdict, Body::DeliverResp)
                }))
            }
            Body::UserRpt(user_rpt) => {
                debug!(%sequence, user = %mask_phone(user_rpt.user_number.as_bytes()), "userrpt received");
                Step::Run(Box::pin(async move {
                    let verdict = handler.user_rpt(origin, user_rpt).await;
                    answer(sequence, "userrpt", verdict, Body::UserRptResp)
                }))
            }
            other => {
                // Well-formed but not for this side (Submit, Trace): refuse it.
                debug!(command = command.name(), "request refused with result 7");
                if let Some(reply) = other.response_with(ResultCode::WRONG_COMMAND) {
                    if writer.send(&Pdu::new(sequence, reply)).await.is_err() {
                        return Step::Close;
                    }
                }
                Step::Go
            }
        }
    }
}

fn answer<E: std::fmt::Display>(
    sequence: SequenceTriple,
    what: &'static str,
    verdict: Result<(), E>,
    body: fn(crate::pdu::Response) -> Body,
) -> Verdict {
    match verdict {
        Ok(()) => (
            sequence,
            Some(body(crate::pdu::Response::new(ResultCode::OK))),
        ),
        Err(e) => {
            warn!(%sequence, error = %e, what, "handler failed; not answering so the gateway resends");
            (sequence, None)
        }
    }
}

enum Step {
    Go,
    Run(std::pin::Pin<Box<dyn Future<Output = Verdict> + Send>>),
    Unbind(SequenceTriple),
    Close,
}
