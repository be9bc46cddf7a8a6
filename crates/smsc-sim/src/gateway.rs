//! The gateway's submit listener: binds SPs, answers Submits, counts them and schedules their Reports.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use sgip::framing::{PduReader, PduWriter};
use sgip::pdu::{
    Body, Pdu, Response, Submit, DEFAULT_MAX_FRAME_LEN, LOGIN_SP_TO_GATEWAY, MAX_MESSAGE_LEN,
};
use sgip::text::Assembly;
use sgip::{mask_phone, Report, ResultCode, SequenceTriple, Text};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn, Instrument};

use crate::config::pick;
use crate::outbound::Outbound;
use crate::{decode_text, State};

/// Accepts SP connections until the simulator stops.
pub(crate) async fn listen(state: Arc<State>, listener: TcpListener) {
    let mut stop = state.stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::info_span!("sim_sp_conn", %peer);
                    tokio::spawn(serve(state.clone(), stream).instrument(span));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Why a connection ended.
enum End {
    Quiet,
    Dropped,
}

async fn serve(state: Arc<State>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut reader = PduReader::new(rd, DEFAULT_MAX_FRAME_LEN);
    let (tx, rx) = mpsc::channel::<(Instant, Pdu)>(1024);
    let writer = tokio::spawn(write_loop(PduWriter::new(wr), rx));
    let mut drop_all = state.drop_all.subscribe();
    let mut stop = state.stop.clone();
    let idle = Duration::from_millis(state.config.account.idle_timeout_ms);
    let mut bound = false;
    let mut last_read = Instant::now();

    let end = loop {
        tokio::select! {
            read = reader.read_pdu() => {
                let pdu = match read {
                    Ok(Some(pdu)) => pdu,
                    Ok(None) => break End::Quiet,
                    Err(e) => {
                        warn!(error = %e, "bad frame from sp, closing");
                        break End::Quiet;
                    }
                };
                last_read = Instant::now();
                match on_pdu(&state, pdu, &mut bound, &tx).await {
                    Next::Go => {}
                    Next::Close => break End::Quiet,
                    Next::Drop => break End::Dropped,
                }
            }
            _ = drop_all.changed() => break End::Dropped,
            _ = sleep_until(last_read + idle) => {
                info!("idle sp connection closed");
                break End::Quiet;
            }
            _ = stop.changed() => break End::Quiet,
        }
    };
    if bound {
        state.bound.fetch_sub(1, Ordering::Relaxed);
    }
    match end {
        End::Dropped => {
            // Abort the writer so queued answers are lost, as on a cut line.
            writer.abort();
            state.tally().counts.connections_dropped += 1;
            info!("sp connection dropped on purpose");
        }
        End::Quiet => {
            drop(tx);
            let _ = writer.await;
        }
    }
}

async fn write_loop(mut writer: PduWriter<OwnedWriteHalf>, mut rx: mpsc::Receiver<(Instant, Pdu)>) {
    while let Some((due, pdu)) = rx.recv().await {
        // A past deadline would still wait for the timer's next tick.
        if due > Instant::now() {
            sleep_until(due).await;
        }
        if writer.write_pdu(&pdu).await.is_err() {
            return;
        }
        while let Ok((due, pdu)) = rx.try_recv() {
            if due > Instant::now() {
                if writer.flush().await.is_err() {
                    return;
                }
                sleep_until(due).await;
            }
            if writer.write_pdu(&pdu).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
        if matches!(pdu.body, Body::UnbindResp) {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

enum Next {
    Go,
    Close,
    Drop,
}

async fn on_pdu(
    state: &State,
    pdu: Pdu,
    bound: &mut bool,
    tx: &mpsc::Sender<(Instant, Pdu)>,
) -> Next {
    let sequence = pdu.sequence;
    let now = Instant::now();
    let reply = |body: Body| (now, Pdu::new(sequence, body));
    match pdu.body {
        Body::Bind(bind) => {
            let account = &state.config.account;
            let result = if *bound {
                ResultCode::REPEATED_LOGIN
            } else if state.faults().refuse_binds {
                ResultCode::ILLEGAL_LOGIN
            } else if bind.login_type != LOGIN_SP_TO_GATEWAY {
                ResultCode::WRONG_LOGIN_TYPE
            } else if bind.login_name.as_bytes() != account.login_name.as_bytes()
                || bind.login_password.as_bytes() != account.login_password.as_bytes()
            {
                ResultCode::ILLEGAL_LOGIN
            } else if state.bound.load(Ordering::Relaxed) >= account.max_connections {
                ResultCode::TOO_MANY_CONNECTIONS
            } else {
                ResultCode::OK
            };
            let _ = tx.send(reply(Body::BindResp(Response::new(result)))).await;
            if result.is_ok() {
                *bound = true;
                state.bound.fetch_add(1, Ordering::Relaxed);
                state.tally().counts.binds_accepted += 1;
                info!("sp bound");
                Next::Go
            } else if result == ResultCode::REPEATED_LOGIN {
                Next::Go
            } else {
                state.tally().counts.binds_refused += 1;
                warn!(result = result.0, "sp bind refused");
                Next::Close
            }
        }
        _ if !*bound => {
            warn!("request before bind, closing");
            Next::Close
        }
        Body::Unbind => {
            let _ = tx.send(reply(Body::UnbindResp)).await;
            Next::Close
        }
        Body::Submit(submit) => on_submit(state, sequence, submit, tx).await,
        body if body.command().is_response() => {
            debug!(
                command = body.command().name(),
                "unexpected response dropped"
            );
            Next::Go
        }
        body => {
            if let Some(answer) = body.response_with(ResultCode::WRONG_COMMAND) {
                let _ = tx.send(reply(answer)).await;
            }
            Next::Go
        }
    }
}

async fn on_submit(
    state: &State,
    sequence: SequenceTriple,
    submit: Submit,
    tx: &mpsc::Sender<(Instant, Pdu)>,
) -> Next {
    let faults = state.faults();
    state.tally().counts.submits_received += 1;
    if faults.stop_answering {
        state.tally().counts.submits_unanswered += 1;
        debug!(%sequence, "submit swallowed");
        return Next::Go;
    }

    let numbers_ok = !state.config.submit.strict_numbers
        || submit.user_numbers.iter().all(|u| {
            u.as_bytes().starts_with(b"86") && u.as_bytes().iter().all(u8::is_ascii_digit)
        });
    let result = if !numbers_ok {
        ResultCode::ILLEGAL_NUMBER
    } else if submit.content.len() > MAX_MESSAGE_LEN {
        ResultCode::WRONG_LENGTH
    } else if state.limiter.as_ref().is_some_and(|l| !l.try_acquire()) {
        ResultCode::FLOW_CONTROL
    } else {
        let mut rng = rand::rng();
        pick(&state.config.submit.results, |w| w.weight, &mut rng)
            .map_or(ResultCode::OK, |w| ResultCode(w.code))
    };

    let mut reports = Vec::new();
    if result.is_ok() {
        record_accepted(state, &submit);
        reports = make_reports(state, sequence, &submit, &faults);
    } else {
        *state
            .tally()
            .counts
            .submits_refused
            .entry(result.0)
            .or_default() += 1;
    }
    debug!(
        %sequence,
        user = %submit.user_numbers.first().map(|u| mask_phone(u.as_bytes())).unwrap_or_default(),
        result = result.0,
        "submit answered"
    );
    if let Some(outbound) = &state.outbound {
        for item in reports {
            let _ = outbound.send(item).await;
        }
    }

    let seen = state.submits_seen.fetch_add(1, Ordering::Relaxed) + 1;
    if result.is_ok() && faults.drop_every_n_submits > 0 && seen % faults.drop_every_n_submits == 0
    {
        return Next::Drop;
    }
    let delay = state.config.submit.response_delay_ms + faults.slow_response_ms;
    let due = Instant::now() + Duration::from_millis(delay);
    let _ = tx
        .send((
            due,
            Pdu::new(sequence, Body::SubmitResp(Response::new(result))),
        ))
        .await;
    Next::Go
}

/// Counts an accepted Submit's segment and, once whole, its message.
fn record_accepted(state: &State, submit: &Submit) {
    let mut tally = state.tally();
    let tally = &mut *tally;
    tally.counts.submits_accepted += 1;
    let sp_number = submit.sp_number.to_string_lossy();
    for user in &submit.user_numbers {
        let user = user.to_string_lossy();
        tally.segments.add(&user, &submit.content);
        let assembly = tally.reassembler.push(
            (user.clone(), sp_number.clone()),
            submit.tp_udhi & 1 == 1,
            &submit.content,
            StdInstant::now(),
        );
        if let Assembly::Complete { payload, .. } = assembly {
            let text = decode_text(submit.message_coding, &payload);
            tally.messages.add(&user, text.as_bytes());
        }
    }
}

/// The Reports an accepted Submit earns under its ReportFlag.
fn make_reports(
    state: &State,
    sequence: SequenceTriple,
    submit: &Submit,
    faults: &crate::Faults,
) -> Vec<Outbound> {
    let behaviour = &state.config.reports;
    let mut rng = rand::rng();
    let mut out = Vec::new();
    let mut dropped = 0;
    let mut made = Vec::new();
    for user in &submit.user_numbers {
        let outcome = pick(&behaviour.outcomes, |o| o.weight, &mut rng).copied();
        let Some(outcome) = outcome else { continue };
        let wanted = match submit.report_flag {
            0 => outcome.state == sgip::pdu::STATE_FAILED,
            2 => false,
            _ => true,
        };
        if !wanted {
            continue;
        }
        if state.outbound.is_none() {
            dropped += 1;
            continue;
        }
        let delay = behaviour.delay.sample(&mut rng) + faults.report_extra_delay_ms;
        let due = Instant::now() + Duration::from_millis(delay);
        made.push((outcome.state, delay / 1000));
        let report = Report {
            submit_sequence: sequence,
            report_type: 0,
            user_number: *user,
            state: outcome.state,
            error_code: if outcome.state == sgip::pdu::STATE_FAILED {
                outcome.error_code
            } else {
                0
            },
            reserve: Text::empty(),
        };
        out.push(Outbound::new(
            state.sequences.next(),
            Body::Report(report),
            due,
        ));
        if faults.duplicate_reports {
            let later = due + Duration::from_millis(50);
            out.push(Outbound::new(
                state.sequences.next(),
                Body::Report(report),
                later,
            ));
        }
    }
    let mut tally = state.tally();
    tally.counts.reports_scheduled += out.len() as u64;
    tally.counts.reports_dropped += dropped;
    for (report_state, delay_s) in made {
        *tally
            .counts
            .reports_by_state
            .entry(report_state)
            .or_default() += 1;
        *tally.counts.reports_by_delay_s.entry(delay_s).or_default() += 1;
    }
    out
}
