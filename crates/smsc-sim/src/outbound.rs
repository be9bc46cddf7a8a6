//! The gateway's side of the SP's listener: sends Reports and Delivers when due, again until answered.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sgip::client::{Session, SessionConfig};
use sgip::pdu::{Body, Deliver, LOGIN_GATEWAY_TO_SP};
use sgip::text::{self, CodingChoice};
use sgip::{Error as SgipError, SequenceTriple, Text};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, warn};

use crate::config::SpListener;
use crate::counts::with_country_code;
use crate::{coding_choice, SimError, State};

/// A Report or Deliver waiting to be sent.
pub(crate) struct Outbound {
    pub sequence: SequenceTriple,
    pub body: Body,
    pub due: Instant,
    pub attempts: u32,
}

impl Outbound {
    pub fn new(sequence: SequenceTriple, body: Body, due: Instant) -> Self {
        Self {
            sequence,
            body,
            due,
            attempts: 0,
        }
    }
}

/// Heap entry ordered by due time, then by arrival.
struct Due(Instant, u64, Outbound);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// An uplink message to send to the SP, as posted to `POST /mo`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MoRequest {
    /// The sender's number, with or without "86".
    pub phone: String,
    /// The text, e.g. an unsubscribe keyword such as "TD".
    pub text: String,
    /// The access number the user sent to. Default: the SP listener's
    /// login name is not a number, so the default is "10655".
    #[serde(default)]
    pub sp_number: Option<String>,
    /// `auto` (ASCII or UCS-2), `ucs2` or `gbk`. Default `auto`.
    #[serde(default)]
    pub coding: Option<String>,
    /// Deliver Reserve (a LinkID on some gateways). Default empty.
    #[serde(default)]
    pub link_id: Option<String>,
}

/// Splits an uplink message into Delivers and queues them now.
pub(crate) async fn queue_mo(
    state: &State,
    request: MoRequest,
) -> Result<Vec<SequenceTriple>, SimError> {
    let Some(outbound) = &state.outbound else {
        return Err(SimError::NoSpListener);
    };
    let choice: CodingChoice = coding_choice(request.coding.as_deref());
    let reference = rand::random::<u8>();
    let segments = text::split(&request.text, choice, reference)?;
    let user_number = Text::new("phone", &with_country_code(&request.phone))?;
    let sp_number = Text::new("sp_number", request.sp_number.as_deref().unwrap_or("10655"))?;
    let reserve = Text::new("link_id", request.link_id.as_deref().unwrap_or(""))?;
    let mut sequences = Vec::with_capacity(segments.len());
    for segment in segments {
        let sequence = state.sequences.next();
        let deliver = Deliver {
            user_number,
            sp_number,
            tp_pid: 0,
            tp_udhi: u8::from(segment.udhi),
            message_coding: segment.coding.as_u8(),
            content: segment.content,
            reserve,
        };
        outbound
            .send(Outbound::new(
                sequence,
                Body::Deliver(deliver),
                Instant::now(),
            ))
            .await
            .map_err(|_| SimError::Stopped)?;
        state.tally().counts.mo_queued += 1;
        sequences.push(sequence);
    }
    debug!(phone = %sgip::mask_phone(request.phone.as_bytes()), segments = sequences.len(), "uplink message queued");
    Ok(sequences)
}

/// Sends due items over one LoginType 2 session, resending until answered.
pub(crate) struct Sender {
    state: Arc<State>,
    session: Session,
    resend_after: Duration,
    retry_tx: mpsc::Sender<Outbound>,
    in_progress: Arc<Semaphore>,
}

impl Sender {
    pub fn start(
        state: Arc<State>,
        sp: SpListener,
        retry_tx: mpsc::Sender<Outbound>,
    ) -> Result<Self, SimError> {
        let config = SessionConfig {
            addr: sp.addr.clone(),
            login_name: sp.login_name.clone(),
            login_password: sp.login_password.clone(),
            login_type: LOGIN_GATEWAY_TO_SP,
            node_id: state.config.node_id,
            window: sp.window,
            rate_limit_per_sec: 0,
            response_timeout_ms: sp.resend_after_ms.max(1),
            // Resends are made here, forever, not by the session.
            max_attempts: 1,
            connect_timeout_ms: 2_000,
            bind_timeout_ms: 5_000,
            idle_unbind_ms: sp.idle_unbind_ms,
            reconnect_min_ms: 200,
            reconnect_max_ms: 5_000,
            queue_capacity: sp.window * 4,
            close_timeout_ms: 2_000,
            max_frame_len: sgip::pdu::DEFAULT_MAX_FRAME_LEN,
        };
        let session = Session::start(config).map_err(SimError::Text)?;
        Ok(Self {
            state,
            session,
            resend_after: Duration::from_millis(sp.resend_after_ms.max(1)),
            retry_tx,
            in_progress: Arc::new(Semaphore::new(sp.window * 4)),
        })
    }

    pub async fn run(self, mut rx: mpsc::Receiver<Outbound>) {
        let max_pending = self.state.config.reports.max_pending;
        let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
        let mut arrivals = 0u64;
        let mut stop = self.state.stop.clone();
        loop {
            let next_due = heap.peek().map(|Reverse(d)| d.0);
            tokio::select! {
                item = rx.recv() => {
                    let Some(item) = item else { break };
                    if heap.len() >= max_pending {
                        error!(max_pending, "report queue full, dropping");
                        self.state.tally().counts.reports_dropped += 1;
                        continue;
                    }
                    arrivals += 1;
                    heap.push(Reverse(Due(item.due, arrivals, item)));
                }
                permit = self.in_progress.clone().acquire_owned(), if next_due.is_some_and(|d| d <= Instant::now()) => {
                    let Ok(permit) = permit else { break };
                    let Some(Reverse(Due(_, _, item))) = heap.pop() else { continue };
                    let session = self.session.clone();
                    let state = self.state.clone();
                    let retry = self.retry_tx.clone();
                    let resend_after = self.resend_after;
                    tokio::spawn(async move {
                        send_one(state, session, retry, resend_after, item).await;
                        drop(permit);
                    });
                }
                _ = sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some_and(|d| d > Instant::now()) => {}
                _ = stop.changed() => break,
            }
        }
        self.session.close().await;
    }
}

async fn send_one(
    state: Arc<State>,
    session: Session,
    retry: mpsc::Sender<Outbound>,
    resend_after: Duration,
    mut item: Outbound,
) {
    let is_report = matches!(item.body, Body::Report(_));
    item.attempts += 1;
    {
        let mut tally = state.tally();
        if is_report {
            tally.counts.reports_sent += 1;
            if item.attempts > 1 {
                tally.counts.reports_resent += 1;
            }
        }
    }
    let outcome = session
        .call_with_sequence(item.sequence, item.body.clone())
        .await;
    let again_at = match outcome {
        Ok(outcome) if outcome.is_accepted() => {
            let mut tally = state.tally();
            if is_report {
                tally.counts.reports_acked += 1;
            } else {
                tally.counts.mo_acked += 1;
            }
            return;
        }
        Ok(outcome) => {
            warn!(sequence = %item.sequence, result = outcome.result.0, "sp refused, sending again later");
            Instant::now() + resend_after
        }
        Err(SgipError::NoResponse { .. }) => {
            debug!(sequence = %item.sequence, "sp did not answer, sending again");
            Instant::now()
        }
        Err(e) => {
            debug!(sequence = %item.sequence, error = %e, "sp unreachable, sending again later");
            Instant::now() + resend_after.min(Duration::from_millis(500))
        }
    };
    item.due = again_at;
    let _ = retry.send(item).await;
}
