//! Client and server sessions against hand-driven peers on loopback: raw bytes, bad frames, timers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sgip::client::{Session, SessionConfig, SubmitRequest};
use sgip::framing::{PduReader, PduWriter};
use sgip::pdu::{Body, Pdu, Response};
use sgip::server::{Handler, Origin, Server, ServerConfig};
use sgip::text::{self, CodingChoice};
use sgip::{Bind, Deliver, Error, Report, ResultCode, SequenceTriple, Text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

fn request(text: &str) -> SubmitRequest {
    let segment = text::split(text, CodingChoice::Auto, 0).unwrap().remove(0);
    SubmitRequest::new("18612341234", "10655", "TEST", segment)
}

fn client_config(addr: std::net::SocketAddr) -> SessionConfig {
    SessionConfig {
        addr: addr.to_string(),
        login_name: "sp".into(),
        login_password: "pw".into(),
        node_id: 3075512345,
        response_timeout_ms: 200,
        reconnect_min_ms: 20,
        reconnect_max_ms: 50,
        bind_timeout_ms: 500,
        ..SessionConfig::default()
    }
}

/// Accepts one connection, answers its Bind with 0, and returns the halves.
async fn accept_bound(
    listener: &TcpListener,
) -> (
    PduReader<tokio::net::tcp::OwnedReadHalf>,
    PduWriter<tokio::net::tcp::OwnedWriteHalf>,
) {
    let (stream, _) = listener.accept().await.unwrap();
    let (rd, wr) = stream.into_split();
    let mut reader = PduReader::new(rd, 2048);
    let mut writer = PduWriter::new(wr);
    let bind = reader.read_pdu().await.unwrap().unwrap();
    match &bind.body {
        Body::Bind(b) => {
            assert_eq!(b.login_type, 1);
            assert_eq!(b.login_name.as_str(), Some("sp"));
        }
        other => panic!("expected bind, got {other:?}"),
    }
    writer
        .send(&Pdu::new(
            bind.sequence,
            Body::BindResp(Response::new(ResultCode::OK)),
        ))
        .await
        .unwrap();
    (reader, writer)
}

#[tokio::test]
async fn client_matches_responses_out_of_order_and_reports_the_result() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let session = Session::start(client_config(listener.local_addr().unwrap())).unwrap();
    let gateway = tokio::spawn(async move {
        let (mut reader, mut writer) = accept_bound(&listener).await;
        let a = reader.read_pdu().await.unwrap().unwrap();
        let b = reader.read_pdu().await.unwrap().unwrap();
        // Answer the second first, with a throttle code.
        writer
            .send(&Pdu::new(
                b.sequence,
                Body::SubmitResp(Response::new(ResultCode(88))),
            ))
            .await
            .unwrap();
        writer
            .send(&Pdu::new(
                a.sequence,
                Body::SubmitResp(Response::new(ResultCode::OK)),
            ))
            .await
            .unwrap();
        (a, b)
    });
    let mut first = request("first");
    let chosen = SequenceTriple::new(3075512345, 1203190405, 42);
    first.sequence = Some(chosen);
    let (ra, rb) = tokio::join!(session.submit(&first), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        session.submit(&request("second")).await
    });
    let (a, b) = gateway.await.unwrap();
    let ra = ra.unwrap();
    let rb = rb.unwrap();
    assert_eq!(a.sequence, chosen);
    assert_eq!(ra.sequence, chosen);
    assert!(ra.is_accepted());
    assert_eq!(rb.sequence, b.sequence);
    assert_eq!(rb.result, ResultCode::FLOW_CONTROL);
    assert!(rb.result.is_retryable());
    match a.body {
        Body::Submit(s) => {
            assert_eq!(s.user_numbers[0].as_str(), Some("8618612341234"));
            assert_eq!(s.report_flag, 1);
            assert_eq!(&s.content[..], b"first");
        }
        other => panic!("expected submit, got {other:?}"),
    }
}

#[tokio::test]
async fn client_resends_with_the_same_triple_then_gives_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = client_config(listener.local_addr().unwrap());
    config.max_attempts = 3;
    let session = Session::start(config).unwrap();
    let gateway = tokio::spawn(async move {
        let (mut reader, _writer) = accept_bound(&listener).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(reader.read_pdu().await.unwrap().unwrap().sequence);
        }
        seen
    });
    let err = timeout(LIMIT, session.submit(&request("x")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::NoResponse { attempts: 3 }), "{err}");
    assert!(err.is_retryable());
    let seen = gateway.await.unwrap();
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
}

#[tokio::test]
async fn client_survives_a_garbage_frame_and_resends_on_a_new_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let session = Session::start(client_config(listener.local_addr().unwrap())).unwrap();
    let gateway = tokio::spawn(async move {
        // First connection: read the Submit, answer with a frame that lies
        // about its length.
        let (mut reader, writer) = accept_bound(&listener).await;
        let first = reader.read_pdu().await.unwrap().unwrap();
        let mut raw = writer.into_inner();
        raw.write_all(&[0, 0, 0, 5, 1, 2, 3, 4]).await.unwrap();
        // The client closes; a second connection carries the resend.
        let (mut reader, mut writer) = accept_bound(&listener).await;
        let again = reader.read_pdu().await.unwrap().unwrap();
        assert_eq!(again.sequence, first.sequence);
        writer
            .send(&Pdu::new(
                again.sequence,
                Body::SubmitResp(Response::new(ResultCode::OK)),
            ))
            .await
            .unwrap();
        let _ = reader.read_pdu().await;
    });
    let outcome = timeout(LIMIT, session.submit(&request("y")))
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_accepted());
    assert_eq!(outcome.attempts, 2);
    session.close().await;
    timeout(LIMIT, gateway).await.unwrap().unwrap();
}

#[tokio::test]
async fn client_reports_a_refused_bind_and_unbinds_when_idle() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = client_config(listener.local_addr().unwrap());
    config.idle_unbind_ms = 100;
    let session = Session::start(config).unwrap();
    let gateway = tokio::spawn(async move {
        // Refuse the first bind.
        let (stream, _) = listener.accept().await.unwrap();
        let (rd, wr) = stream.into_split();
        let mut reader = PduReader::new(rd, 2048);
        let mut writer = PduWriter::new(wr);
        let bind = reader.read_pdu().await.unwrap().unwrap();
        writer
            .send(&Pdu::new(
                bind.sequence,
                Body::BindResp(Response::new(ResultCode(1))),
            ))
            .await
            .unwrap();
        drop(writer);
        // Accept the next, answer a Submit, then expect an Unbind when idle.
        let (mut reader, mut writer) = accept_bound(&listener).await;
        let submit = reader.read_pdu().await.unwrap().unwrap();
        writer
            .send(&Pdu::new(
                submit.sequence,
                Body::SubmitResp(Response::new(ResultCode::OK)),
            ))
            .await
            .unwrap();
        let unbind = reader.read_pdu().await.unwrap().unwrap();
        assert_eq!(unbind.body, Body::Unbind);
        writer
            .send(&Pdu::new(unbind.sequence, Body::UnbindResp))
            .await
            .unwrap();
        assert!(reader.read_pdu().await.unwrap().is_none());
    });
    let err = session.submit(&request("a")).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let outcome = timeout(LIMIT, session.submit(&request("b")))
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_accepted());
    timeout(LIMIT, gateway).await.unwrap().unwrap();
    assert!(!session.is_connected());
}

#[tokio::test]
async fn client_close_waits_for_in_flight_then_unbinds() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = client_config(listener.local_addr().unwrap());
    config.response_timeout_ms = 5_000;
    let session = Session::start(config).unwrap();
    let gateway = tokio::spawn(async move {
        let (mut reader, mut writer) = accept_bound(&listener).await;
        let submit = reader.read_pdu().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        writer
            .send(&Pdu::new(
                submit.sequence,
                Body::SubmitResp(Response::new(ResultCode::OK)),
            ))
            .await
            .unwrap();
        let unbind = reader.read_pdu().await.unwrap().unwrap();
        assert_eq!(unbind.body, Body::Unbind);
        writer
            .send(&Pdu::new(unbind.sequence, Body::UnbindResp))
            .await
            .unwrap();
    });
    let s2 = session.clone();
    let pending = tokio::spawn(async move { s2.submit(&request("late")).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    timeout(LIMIT, session.close()).await.unwrap();
    assert!(pending.await.unwrap().unwrap().is_accepted());
    timeout(LIMIT, gateway).await.unwrap().unwrap();
    let err = session.submit(&request("after")).await.unwrap_err();
    assert!(matches!(err, Error::SessionClosed), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn client_rate_limit_spaces_writes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = client_config(listener.local_addr().unwrap());
    config.rate_limit_per_sec = 10;
    config.response_timeout_ms = 60_000;
    let session = Session::start(config).unwrap();
    let gateway = tokio::spawn(async move {
        let (mut reader, mut writer) = accept_bound(&listener).await;
        for _ in 0..5 {
            let pdu = reader.read_pdu().await.unwrap().unwrap();
            writer
                .send(&Pdu::new(
                    pdu.sequence,
                    Body::SubmitResp(Response::new(ResultCode::OK)),
                ))
                .await
                .unwrap();
        }
    });
    let start = tokio::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..5 {
        let s = session.clone();
        calls.push(tokio::spawn(async move {
            s.submit(&request(&format!("r{i}"))).await
        }));
    }
    for call in calls {
        assert!(call.await.unwrap().unwrap().is_accepted());
    }
    // A burst of 1 token, then 10 per second: the fifth write waits 0.4 s.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    gateway.await.unwrap();
}

// ---------------------------------------------------------------- server

#[derive(Clone, Default)]
struct Store {
    reports: Arc<Mutex<Vec<Report>>>,
    fail_next: Arc<AtomicU32>,
}

impl Handler for Store {
    type Error = &'static str;

    async fn report(&self, _origin: Origin, report: Report) -> Result<(), &'static str> {
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("kafka unavailable");
        }
        self.reports.lock().unwrap().push(report);
        Ok(())
    }

    async fn deliver(&self, _origin: Origin, _deliver: Deliver) -> Result<(), &'static str> {
        Ok(())
    }
}

struct TestServer {
    addr: std::net::SocketAddr,
    store: Store,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

async fn server(config: ServerConfig) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Store::default();
    let server = Server::new(config, store.clone()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        store,
        stop,
        task,
    }
}

fn server_config() -> ServerConfig {
    ServerConfig {
        login_name: "smg".into(),
        login_password: "pw".into(),
        idle_timeout_ms: 300,
        ..ServerConfig::default()
    }
}

fn bind_pdu(login_type: u8, password: &str) -> Pdu {
    Pdu::new(
        SequenceTriple::new(107551, 1203190405, 1),
        Body::Bind(Bind {
            login_type,
            login_name: Text::new("n", "smg").unwrap(),
            login_password: Text::new("p", password).unwrap(),
            reserve: Text::empty(),
        }),
    )
}

fn report_pdu(counter: u32) -> Pdu {
    Pdu::new(
        SequenceTriple::new(107551, 1203190405, counter),
        Body::Report(Report {
            submit_sequence: SequenceTriple::new(3075512345, 1203190400, counter),
            report_type: 0,
            user_number: Text::new("u", "8618612341234").unwrap(),
            state: 0,
            error_code: 0,
            reserve: Text::empty(),
        }),
    )
}

async fn raw_client(
    addr: std::net::SocketAddr,
) -> (
    PduReader<tokio::net::tcp::OwnedReadHalf>,
    PduWriter<tokio::net::tcp::OwnedWriteHalf>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (rd, wr) = stream.into_split();
    (PduReader::new(rd, 2048), PduWriter::new(wr))
}

#[tokio::test]
async fn server_checks_login_type_and_credentials() {
    let s = server(server_config()).await;
    for (login_type, password, expected) in [(1, "pw", 4u8), (2, "bad", 1)] {
        let (mut reader, mut writer) = raw_client(s.addr).await;
        writer.send(&bind_pdu(login_type, password)).await.unwrap();
        let resp = reader.read_pdu().await.unwrap().unwrap();
        assert_eq!(
            resp.body,
            Body::BindResp(Response::new(ResultCode(expected)))
        );
        assert!(timeout(LIMIT, reader.read_pdu())
            .await
            .unwrap()
            .unwrap()
            .is_none());
    }
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn server_answers_only_after_the_handler_and_closes_when_it_fails() {
    let s = server(server_config()).await;
    s.store.fail_next.store(1, Ordering::SeqCst);
    let (mut reader, mut writer) = raw_client(s.addr).await;
    writer.send(&bind_pdu(2, "pw")).await.unwrap();
    reader.read_pdu().await.unwrap().unwrap();
    // The first report fails in the handler: no answer, connection closed.
    writer.send(&report_pdu(1)).await.unwrap();
    assert!(timeout(LIMIT, reader.read_pdu())
        .await
        .unwrap()
        .unwrap()
        .is_none());
    assert!(s.store.reports.lock().unwrap().is_empty());

    // The gateway resends on a new connection and gets Result 0.
    let (mut reader, mut writer) = raw_client(s.addr).await;
    writer.send(&bind_pdu(2, "pw")).await.unwrap();
    reader.read_pdu().await.unwrap().unwrap();
    writer.send(&report_pdu(1)).await.unwrap();
    let resp = reader.read_pdu().await.unwrap().unwrap();
    assert_eq!(resp.sequence, report_pdu(1).sequence);
    assert_eq!(resp.body, Body::ReportResp(Response::new(ResultCode::OK)));
    assert_eq!(s.store.reports.lock().unwrap().len(), 1);

    // A second Bind gets Result 2; a Submit is refused with 7; Unbind closes.
    writer.send(&bind_pdu(2, "pw")).await.unwrap();
    let resp = reader.read_pdu().await.unwrap().unwrap();
    assert_eq!(resp.body, Body::BindResp(Response::new(ResultCode(2))));
    let submit = Pdu::new(
        SequenceTriple::new(1, 2, 3),
        Body::Submit(sgip::Submit {
            user_numbers: vec![Text::new("u", "8618612341234").unwrap()],
            content: Bytes::from_static(b"x"),
            ..sgip::Submit::default()
        }),
    );
    writer.send(&submit).await.unwrap();
    let resp = reader.read_pdu().await.unwrap().unwrap();
    assert_eq!(resp.body, Body::SubmitResp(Response::new(ResultCode(7))));
    writer
        .send(&Pdu::new(SequenceTriple::new(1, 2, 4), Body::Unbind))
        .await
        .unwrap();
    let resp = reader.read_pdu().await.unwrap().unwrap();
    assert_eq!(resp.body, Body::UnbindResp);
    assert!(reader.read_pdu().await.unwrap().is_none());
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn server_closes_on_bad_frames_and_when_idle() {
    let s = server(server_config()).await;
    let cases: [&[u8]; 4] = [
        // A length below the header.
        &[0, 0, 0, 3, 0, 0, 0, 1],
        // A length above the maximum.
        &[0, 0, 0x10, 0, 0, 0, 0, 1],
        // An unknown command.
        &[
            0, 0, 0, 20, 0, 0, 0, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        // A Report whose body is short.
        &[
            0, 0, 0, 24, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ],
    ];
    for bytes in cases {
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 64];
        let n = timeout(LIMIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "connection should close without an answer");
    }
    // A silent connection is closed after the idle timeout.
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 8];
    let n = timeout(LIMIT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn server_refuses_peers_off_the_allow_list_and_caps_connections() {
    let mut config = server_config();
    config.allowed_peers = vec!["10.9.9.9".parse().unwrap()];
    let s = server(config).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        timeout(LIMIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0),
        0
    );
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();

    let mut config = server_config();
    config.max_connections = 1;
    config.idle_timeout_ms = 5_000;
    let s = server(config).await;
    let (mut r1, mut w1) = raw_client(s.addr).await;
    w1.send(&bind_pdu(2, "pw")).await.unwrap();
    r1.read_pdu().await.unwrap().unwrap();
    // The second connection is not served while the first holds the permit.
    let (mut r2, mut w2) = raw_client(s.addr).await;
    w2.send(&bind_pdu(2, "pw")).await.unwrap();
    assert!(timeout(Duration::from_millis(200), r2.read_pdu())
        .await
        .is_err());
    // Once the first unbinds, the second is served.
    w1.send(&Pdu::new(SequenceTriple::new(1, 1, 1), Body::Unbind))
        .await
        .unwrap();
    let resp = timeout(LIMIT, r2.read_pdu())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.body, Body::BindResp(Response::new(ResultCode::OK)));
    // Shutdown ends the open connection and returns.
    let _ = s.stop.send(());
    timeout(LIMIT, s.task).await.unwrap().unwrap().unwrap();
    assert!(timeout(LIMIT, r2.read_pdu())
        .await
        .unwrap()
        .unwrap()
        .is_none());
}
