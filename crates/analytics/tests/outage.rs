//! ClickHouse goes away in the middle of traffic and comes back: the sink waits, retries and loses nothing.
//!
//! The sink talks to the real ClickHouse through a TCP proxy in this test
//! process, which the test cuts (closing every connection and refusing new
//! ones) and restores.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use analytics::exporter::Health;
use analytics::{schema, Sink};
use common::{final_status, test_bed};
use sms_harness::TcpProxy;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_mid_traffic_loses_nothing() {
    let bed = test_bed("analytics_outage", 2).await;
    let topic = bed.kafka.topics().status;
    schema::migrate(&bed.config.clickhouse, bed.config.ttl_months)
        .await
        .expect("schema applies");

    let upstream: SocketAddr = bed
        .config
        .clickhouse
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the ClickHouse URL is host:port");
    let proxy = TcpProxy::start(upstream).await.expect("proxy starts");
    let mut config = bed.config.clone();
    config.clickhouse.url = format!("http://{}", proxy.address);
    config.batch_max_events = 100;

    let health = Health::default();
    let shutdown = CancellationToken::new();
    let sink = Sink::new(&config, health.clone()).expect("sink starts");
    let running = tokio::spawn(sink.run(shutdown.clone()));

    let before: Vec<_> = (0..200).map(final_status).collect();
    for status in &before {
        bed.send(&topic, &status.phone, status).await;
    }
    bed.wait_for_count(
        "SELECT count() FROM sms_events",
        200,
        Duration::from_secs(60),
    )
    .await;

    // ClickHouse disappears while traffic goes on.
    proxy.cut();
    let during: Vec<_> = (200..500).map(final_status).collect();
    for status in &during {
        bed.send(&topic, &status.phone, status).await;
    }
    let noticed = common::wait_until(Duration::from_secs(30), || async {
        (!health.is_storing()).then_some(())
    })
    .await;
    assert!(noticed.is_some(), "the sink notices the outage");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bed.count("SELECT count() FROM sms_events").await,
        200,
        "nothing reaches ClickHouse during the outage"
    );
    let committed: i64 = bed.committed(&topic, 2).iter().map(|c| c.max(&0)).sum();
    assert!(
        committed <= 200,
        "nothing is committed that was not stored: {committed}"
    );

    // It comes back: everything arrives, once.
    proxy.restore();
    bed.wait_for_count(
        "SELECT count() FROM sms_events",
        500,
        Duration::from_secs(60),
    )
    .await;
    common::wait_until(Duration::from_secs(30), || async {
        health.is_storing().then_some(())
    })
    .await
    .expect("the sink is healthy again");
    shutdown.cancel();
    running.await.expect("task").expect("sink ends cleanly");

    assert_eq!(bed.count("SELECT count() FROM sms_events").await, 500);
    assert_eq!(
        bed.count("SELECT uniqExact(message_id) FROM sms_events")
            .await,
        500
    );
    assert_eq!(
        bed.count("SELECT sum(messages) FROM sms_monthly").await,
        500
    );
    let ends = bed.ends(&topic, 2);
    assert_eq!(
        bed.committed(&topic, 2),
        ends,
        "every record committed after the outage"
    );
}
