//! A batch stored but not committed (the sink died in between) is read again and not counted twice; a retried insert is dropped by its token.

mod common;

use std::time::Duration;

use analytics::exporter::Health;
use analytics::rows::{final_status_rows, SourcePosition};
use analytics::store::EventStore;
use analytics::{schema, Sink};
use common::{final_status, test_bed};
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_insert_and_commit_does_not_double_any_count() {
    let bed = test_bed("analytics_redelivery", 3).await;
    let topic = bed.kafka.topics().status;
    schema::migrate(&bed.config.clickhouse, bed.config.ttl_months)
        .await
        .expect("schema applies");
    let statuses: Vec<_> = (0..MESSAGES).map(final_status).collect();
    for status in &statuses {
        bed.send(&topic, &status.phone, status).await;
    }
    let billed: u64 = statuses.iter().map(|s| s.billed_segments as u64).sum();

    // The first sink stores one batch and dies before committing it.
    let mut config = bed.config.clone();
    // A third of the records: the batches read again later do not line up
    // with this one, so only the stored offsets can tell what is stored.
    config.batch_max_events = MESSAGES / 3;
    config.batch_max_ms = 3_000;
    let never = CancellationToken::new();
    let mut first = Sink::new(&config, Health::default()).expect("sink starts");
    let mut batch = first.next_batch(&never).await.expect("reads a batch");
    assert!(!batch.is_empty());
    first
        .write(&mut batch, &never)
        .await
        .expect("stores the batch");
    let stored_first = batch.rows().len() as u64;
    assert!(stored_first > 0);
    drop(first);
    assert_eq!(
        bed.count("SELECT count() FROM sms_events").await,
        stored_first
    );
    assert_eq!(
        bed.committed(&topic, 3),
        vec![-1, -1, -1],
        "nothing was committed"
    );

    // A second sink in the same group reads everything again.
    let shutdown = CancellationToken::new();
    let second = Sink::new(&bed.config, Health::default()).expect("sink starts");
    let running = tokio::spawn(second.run(shutdown.clone()));
    common::wait_until(Duration::from_secs(60), || async {
        let ends = bed.ends(&topic, 3);
        let committed = bed.committed(&topic, 3);
        let done = ends.iter().zip(&committed).all(|(e, c)| *e == 0 || c == e);
        done.then_some(())
    })
    .await
    .expect("the second sink commits every record");
    shutdown.cancel();
    running.await.expect("task").expect("sink ends cleanly");

    let n = MESSAGES as u64;
    assert_eq!(bed.count("SELECT count() FROM sms_events").await, n);
    assert_eq!(
        bed.count("SELECT uniqExact(message_id) FROM sms_events")
            .await,
        n
    );
    assert_eq!(bed.count("SELECT count() FROM sms_messages FINAL").await, n);
    assert_eq!(bed.count("SELECT sum(messages) FROM sms_monthly").await, n);
    assert_eq!(bed.count("SELECT sum(messages) FROM sms_daily").await, n);
    assert_eq!(
        bed.count("SELECT sum(billed_segments) FROM sms_monthly")
            .await,
        billed
    );
    let delivered = statuses.iter().filter(|s| s.segments_delivered > 0).count() as u64;
    assert_eq!(
        bed.count("SELECT sum(delivered) FROM sms_monthly").await,
        delivered
    );
}

#[tokio::test]
async fn an_insert_retried_with_its_token_is_stored_once() {
    let bed = test_bed("analytics_token", 1).await;
    schema::migrate(&bed.config.clickhouse, bed.config.ttl_months)
        .await
        .expect("schema applies");
    let rows: Vec<_> = (0..50)
        .flat_map(|n| {
            final_status_rows(
                &final_status(n),
                SourcePosition {
                    topic: "sms.status",
                    partition: 0,
                    offset: n as i64,
                },
            )
        })
        .collect();
    let store = EventStore::new(bed.config.clickhouse.client());
    store
        .insert(&rows, "sms.status/0/0-49")
        .await
        .expect("inserts");
    // The answer was lost; the sink sends the same batch again.
    store
        .insert(&rows, "sms.status/0/0-49")
        .await
        .expect("inserts again");

    assert_eq!(bed.count("SELECT count() FROM sms_events").await, 50);
    assert_eq!(bed.count("SELECT sum(messages) FROM sms_monthly").await, 50);
    assert_eq!(bed.count("SELECT sum(messages) FROM sms_daily").await, 50);
    let stored = store.stored_offsets().await.expect("offsets");
    assert_eq!(stored.get(&("sms.status".to_string(), 0)), Some(&49));
}
