//! Shared helpers for the workspace-level integration tests (the tests themselves are the `[[test]]` targets beside this file).

use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};

/// Reads up to `count` records from a subscribed consumer, giving up after `within`.
pub async fn read_records(
    consumer: &StreamConsumer,
    count: usize,
    within: Duration,
) -> Vec<OwnedMessage> {
    let mut out = Vec::new();
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < count {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(message))) => out.push(message.detach()),
            Ok(Some(Err(e))) => panic!("consumer error: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// The committed offset of `topic`/`partition` for the consumer's group, if any.
pub fn committed_offset(consumer: &StreamConsumer, topic: &str, partition: i32) -> Option<i64> {
    let committed = consumer.committed(Duration::from_secs(10)).ok()?;
    committed
        .find_partition(topic, partition)?
        .offset()
        .to_raw()
}

/// The partition and offset of a message, for assertions.
pub fn position(message: &OwnedMessage) -> (i32, i64) {
    (message.partition(), message.offset())
}
