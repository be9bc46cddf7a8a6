//! Submits per second of one client session (window 16, no rate limit) against the in-process simulator.
//!
//! Run with `cargo bench -p smsc-sim --bench session_throughput`; set
//! `SUBMITS` to change the count (default 200000). Client and simulator
//! share the machine, so the figure is for both together.

use std::time::Instant;

use sgip::client::{Session, SessionConfig, SubmitRequest};
use sgip::text::{self, CodingChoice};
use smsc_sim::{SimConfig, Simulator};

const WINDOW: usize = 16;

fn main() {
    let submits: usize = std::env::var("SUBMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(submits));
}

async fn run(submits: usize) {
    let mut config = SimConfig {
        submit_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        sp: None,
        ..SimConfig::default()
    };
    config.account.max_connections = 4;
    let sim = Simulator::start(config).await.expect("simulator starts");
    let session = Session::start(SessionConfig {
        addr: sim.submit_addr.to_string(),
        login_name: "sp".into(),
        login_password: "secret".into(),
        node_id: 3075512345,
        window: WINDOW,
        queue_capacity: WINDOW * 4,
        ..SessionConfig::default()
    })
    .expect("session starts");
    let text: String = "您好，您的机动车将于本月到期，请及时办理年检手续。"
        .chars()
        .cycle()
        .take(70)
        .collect();
    let segment = text::split(&text, CodingChoice::Auto, 0)
        .expect("fits")
        .remove(0);
    let request = SubmitRequest::new("18612341234", "10655012123", "TRAFFIC", segment);

    // Warm up: connect and bind.
    session.submit(&request).await.expect("warm-up submit");

    let start = Instant::now();
    // Twice the window of callers keeps the window full.
    let callers = WINDOW * 2;
    let mut tasks = Vec::with_capacity(callers);
    for c in 0..callers {
        let session = session.clone();
        let request = request.clone();
        let share = submits / callers + usize::from(c < submits % callers);
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            for _ in 0..share {
                if session
                    .submit(&request)
                    .await
                    .map(|o| o.is_accepted())
                    .unwrap_or(false)
                {
                    accepted += 1;
                }
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.expect("caller");
    }
    let elapsed = start.elapsed();
    session.close().await;
    let counts = sim.counts();
    println!(
        "session_throughput: {accepted} of {submits} submits accepted in {:.3} s = {:.0} submits/s (window {WINDOW}, simulator counted {})",
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64(),
        counts.submits_accepted,
    );
    sim.shutdown().await;
}
