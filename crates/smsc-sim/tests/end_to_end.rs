//! The client pool and the SP server against the simulator, over loopback TCP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sgip::client::{Pool, PoolConfig, SessionConfig, SubmitRequest};
use sgip::server::{Handler, Origin, Server, ServerConfig};
use sgip::text::{self, Assembly, CodingChoice, Reassembler};
use sgip::{Deliver, Report, ResultClass, SequenceTriple};
use smsc_sim::{
    message_key, Counts, DelayDistribution, Faults, MoRequest, SimConfig, Simulator,
    SimulatorHandle, SpListener, WeightedOutcome,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[derive(Default)]
struct Received {
    reports: Vec<(Origin, Report)>,
    delivers: Vec<(Origin, Deliver)>,
    failures_left: u32,
}

/// A handler that records what it gets, and fails the first
/// `failures_left` calls as a downstream outage would.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Received>>);

impl Handler for Recorder {
    type Error = String;

    async fn report(&self, origin: Origin, report: Report) -> Result<(), String> {
        let mut r = self.0.lock().unwrap();
        if r.failures_left > 0 {
            r.failures_left -= 1;
            return Err("downstream unavailable".into());
        }
        r.reports.push((origin, report));
        Ok(())
    }

    async fn deliver(&self, origin: Origin, deliver: Deliver) -> Result<(), String> {
        self.0.lock().unwrap().delivers.push((origin, deliver));
        Ok(())
    }
}

struct Rig {
    sim: SimulatorHandle,
    recorder: Recorder,
    stop_server: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), sgip::Error>>,
}

async fn rig(tweak: impl FnOnce(&mut SimConfig), failures: u32) -> Rig {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let report_addr = listener.local_addr().unwrap();
    let recorder = Recorder::default();
    recorder.0.lock().unwrap().failures_left = failures;
    let server = Server::new(
        ServerConfig {
            login_name: "smg".into(),
            login_password: "secret".into(),
            ..ServerConfig::default()
        },
        recorder.clone(),
    )
    .unwrap();
    let (stop_server, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let mut config = SimConfig {
        submit_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        sp: Some(SpListener {
            addr: report_addr.to_string(),
            resend_after_ms: 300,
            ..SpListener::default()
        }),
        ..SimConfig::default()
    };
    config.reports.delay = DelayDistribution::Fixed { delay_ms: 20 };
    tweak(&mut config);
    let sim = Simulator::start(config).await.unwrap();
    Rig {
        sim,
        recorder,
        stop_server,
        server,
    }
}

fn pool_config(sim: &SimulatorHandle, connections: usize) -> PoolConfig {
    PoolConfig {
        session: SessionConfig {
            addr: sim.submit_addr.to_string(),
            login_name: "sp".into(),
            login_password: "secret".into(),
            node_id: 3075512345,
            response_timeout_ms: 500,
            reconnect_min_ms: 50,
            reconnect_max_ms: 200,
            ..SessionConfig::default()
        },
        connections,
        rate_limit_per_sec: 0,
    }
}

/// Submits every segment of `text` to `phone`; returns each segment's triple.
async fn send_text(pool: &Pool, phone: &str, text: &str, reference: u8) -> Vec<SequenceTriple> {
    let mut triples = Vec::new();
    for segment in text::split(text, CodingChoice::Auto, reference).unwrap() {
        let request = SubmitRequest::new(phone, "10655012123", "TRAFFIC", segment);
        let outcome = pool.submit(&request).await.unwrap();
        assert!(outcome.is_accepted(), "result {}", outcome.result);
        assert!(outcome.responded_at_ms >= outcome.written_at_ms);
        triples.push(outcome.sequence);
    }
    triples
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn http_counts(sim: &SimulatorHandle) -> Counts {
    reqwest::get(format!("http://{}/counts", sim.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_counted_once_and_reported() {
    let rig = rig(|_| {}, 0).await;
    let pool = Pool::start(pool_config(&rig.sim, 2)).unwrap();
    let mut expected = HashMap::new();
    let mut all_triples = Vec::new();
    for i in 0..40u32 {
        let phone = format!("186{:08}", 10_000 + i);
        // Every fifth message is long enough for three segments.
        let text = if i % 5 == 0 {
            format!("{}第{i}条交通提醒", "请按时年检车辆。".repeat(20))
        } else {
            format!("您的验证码是{i:06}")
        };
        let triples = send_text(&pool, &phone, &text, i as u8).await;
        all_triples.extend(triples);
        expected.insert(message_key(&phone, &text), 1u64);
    }
    pool.close().await;

    let counts = http_counts(&rig.sim).await;
    assert_eq!(counts.messages, expected.into_iter().collect());
    assert_eq!(counts.duplicates(), 0);
    assert_eq!(counts.submits_accepted, all_triples.len() as u64);
    assert_eq!(counts.partial_messages, 0);

    // Every segment gets exactly one report, carrying its Submit's triple.
    let recorder = rig.recorder.clone();
    let n = all_triples.len();
    wait_for("reports", || recorder.0.lock().unwrap().reports.len() >= n).await;
    {
        let received = rig.recorder.0.lock().unwrap();
        let mut reported: Vec<SequenceTriple> = received
            .reports
            .iter()
            .map(|(_, r)| r.submit_sequence)
            .collect();
        reported.sort();
        all_triples.sort();
        assert_eq!(reported, all_triples);
        assert!(received.reports.iter().all(|(o, _)| o.login_name == "smg"));
        assert!(received
            .reports
            .iter()
            .all(|(o, _)| o.sequence.node == 107551));
    }
    let _ = rig.stop_server.send(());
    rig.server.await.unwrap().unwrap();
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing_and_duplicates_stay_bounded() {
    let rig = rig(
        |c| {
            c.faults.drop_every_n_submits = 7;
        },
        0,
    )
    .await;
    let pool = Pool::start(pool_config(&rig.sim, 2)).unwrap();
    let mut keys = Vec::new();
    for i in 0..60u32 {
        let phone = format!("130{:08}", i);
        let text = format!("通知{i}");
        send_text(&pool, &phone, &text, 0).await;
        keys.push(message_key(&phone, &text));
    }
    pool.close().await;
    let counts = rig.sim.counts();
    assert!(
        counts.connections_dropped >= 8,
        "{}",
        counts.connections_dropped
    );
    for key in &keys {
        assert!(
            counts.messages.get(key).copied().unwrap_or(0) >= 1,
            "lost {key}"
        );
    }
    // Each drop swallows the answer to one accepted Submit, which is then resent.
    assert!(counts.duplicates() <= counts.connections_dropped);
    assert!(counts.duplicates() >= 1);
    let _ = rig.stop_server.send(());
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_gets_the_report_again() {
    let rig = rig(|_| {}, 2).await;
    let pool = Pool::start(pool_config(&rig.sim, 1)).unwrap();
    let triples = send_text(&pool, "18612341234", "您的车辆已年检", 0).await;
    let recorder = rig.recorder.clone();
    wait_for("the resent report", || {
        !recorder.0.lock().unwrap().reports.is_empty()
    })
    .await;
    assert_eq!(
        rig.recorder.0.lock().unwrap().reports[0].1.submit_sequence,
        triples[0]
    );
    let counts = rig.sim.counts();
    assert!(counts.reports_resent >= 2, "{counts:?}");
    assert_eq!(counts.reports_acked, 1);
    pool.close().await;
    let _ = rig.stop_server.send(());
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_refusals_are_outcomes_not_errors() {
    let rig = rig(|c| c.submit.tps_limit = 5, 0).await;
    let pool = Pool::start(pool_config(&rig.sim, 1)).unwrap();
    let mut throttled = 0;
    for i in 0..20 {
        let segment = text::split(&format!("m{i}"), CodingChoice::Auto, 0)
            .unwrap()
            .remove(0);
        let outcome = pool
            .submit(&SubmitRequest::new("18612341234", "10655", "T", segment))
            .await
            .unwrap();
        if outcome.result.0 == 88 {
            assert_eq!(outcome.result.class(), ResultClass::Transient);
            throttled += 1;
        }
    }
    assert!(throttled >= 10, "{throttled}");
    assert_eq!(
        rig.sim.counts().submits_refused.get(&88).copied(),
        Some(throttled)
    );

    // A number without 86 in a Submit built by hand is refused with 6.
    let segment = text::split("x", CodingChoice::Auto, 0).unwrap().remove(0);
    let mut request = SubmitRequest::new("8618612341234", "10655", "T", segment);
    request.user_number = "86abc".into();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let outcome = pool.submit(&request).await.unwrap();
    assert_eq!(outcome.result.0, 6);
    assert_eq!(outcome.result.class(), ResultClass::Permanent);
    pool.close().await;
    let _ = rig.stop_server.send(());
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_binds_and_silence_are_typed_errors() {
    let rig = rig(
        |c| {
            c.faults.refuse_binds = true;
        },
        0,
    )
    .await;
    let mut config = pool_config(&rig.sim, 1);
    config.session.response_timeout_ms = 100;
    config.session.max_attempts = 2;
    let pool = Pool::start(config).unwrap();
    let segment = text::split("hello", CodingChoice::Auto, 0)
        .unwrap()
        .remove(0);
    let request = SubmitRequest::new("18612341234", "10655", "T", segment);
    let err = pool.submit(&request).await.unwrap_err();
    assert!(matches!(err, sgip::Error::Unavailable { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(rig.sim.counts().binds_refused >= 1);

    // Switch the fault over HTTP: binds work, but Submits go unanswered.
    let client = reqwest::Client::new();
    let faults = Faults {
        stop_answering: true,
        ..Faults::default()
    };
    let put = client
        .put(format!("http://{}/faults", rig.sim.http_addr))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    assert_eq!(rig.sim.faults(), faults);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = pool.submit(&request).await.unwrap_err();
    assert!(
        matches!(err, sgip::Error::NoResponse { attempts: 2 }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(rig.sim.counts().submits_unanswered, 2);

    // And back to normal.
    rig.sim.set_faults(Faults::default());
    let outcome = pool.submit(&request).await.unwrap();
    assert!(outcome.is_accepted());
    pool.close().await;
    let _ = rig.stop_server.send(());
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_messages_reach_the_handler_and_reassemble() {
    let rig = rig(
        |c| {
            c.reports.outcomes = vec![WeightedOutcome {
                state: 0,
                error_code: 0,
                weight: 1,
            }];
        },
        0,
    )
    .await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{}/mo", rig.sim.http_addr))
        .json(&serde_json::json!({ "phone": "18612341234", "text": "TD" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let long = "我要退订交通提醒短信".repeat(10);
    let sequences = rig
        .sim
        .send_mo(MoRequest {
            phone: "8618612341234".into(),
            text: long.clone(),
            sp_number: Some("1065501212301".into()),
            coding: None,
            link_id: None,
        })
        .await
        .unwrap();
    assert_eq!(sequences.len(), 2);
    let recorder = rig.recorder.clone();
    wait_for("delivers", || {
        recorder.0.lock().unwrap().delivers.len() >= 3
    })
    .await;

    {
        let received = rig.recorder.0.lock().unwrap();
        let td = received
            .delivers
            .iter()
            .find(|(_, d)| d.tp_udhi == 0)
            .map(|(_, d)| d.clone())
            .unwrap();
        assert_eq!(td.user_number.as_str(), Some("8618612341234"));
        assert_eq!(text::decode(td.message_coding, &td.content), "TD");
        let mut reassembler = Reassembler::new(16, Duration::from_secs(60));
        let mut whole = None;
        for (_, d) in received.delivers.iter().filter(|(_, d)| d.tp_udhi == 1) {
            let key = (d.user_number.to_string(), d.sp_number.to_string());
            if let Assembly::Complete { payload, .. } =
                reassembler.push(key, true, &d.content, std::time::Instant::now())
            {
                whole = Some(text::decode(d.message_coding, &payload));
            }
        }
        assert_eq!(whole.as_deref(), Some(long.as_str()));
    }
    wait_for("mo acks", || rig.sim.counts().mo_acked == 3).await;
    let _ = rig.stop_server.send(());
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_doubled_reports_reach_the_handler() {
    let rig = rig(
        |c| {
            c.faults.duplicate_reports = true;
            c.faults.report_extra_delay_ms = 300;
        },
        0,
    )
    .await;
    let pool = Pool::start(pool_config(&rig.sim, 1)).unwrap();
    let started = std::time::Instant::now();
    let triples = send_text(&pool, "18612341234", "您的驾驶证即将到期", 0).await;
    let recorder = rig.recorder.clone();
    wait_for("both copies", || {
        recorder.0.lock().unwrap().reports.len() >= 2
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    {
        let received = rig.recorder.0.lock().unwrap();
        assert!(received
            .reports
            .iter()
            .all(|(_, r)| r.submit_sequence == triples[0]));
        // The copy comes under its own header triple.
        assert_ne!(
            received.reports[0].0.sequence,
            received.reports[1].0.sequence
        );
    }
    assert_eq!(rig.sim.counts().reports_scheduled, 2);
    pool.close().await;
    let _ = rig.stop_server.send(());
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_shares_one_rate_limit_between_its_connections() {
    let rig = rig(|_| {}, 0).await;
    let mut config = pool_config(&rig.sim, 3);
    config.rate_limit_per_sec = 20;
    let pool = Pool::start(config).unwrap();
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..12u32 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            let segment = text::split(&format!("限速{i}"), CodingChoice::Auto, 0)
                .unwrap()
                .remove(0);
            pool.submit(&SubmitRequest::new("18612341234", "10655", "T", segment))
                .await
        }));
    }
    for call in calls {
        assert!(call.await.unwrap().unwrap().is_accepted());
    }
    // A burst of 2 then 20 per second: 12 submits need at least 0.5 s.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    let used = pool.sessions().iter().filter(|s| s.is_connected()).count();
    assert!(used >= 1);
    pool.close().await;
    let _ = rig.stop_server.send(());
    rig.sim.shutdown().await;
}
