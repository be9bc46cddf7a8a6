//! Writes batches of event rows to ClickHouse and reads back how far each partition is stored.

use std::collections::HashMap;
use std::time::Duration;

use clickhouse::Row;
use serde::Deserialize;

use crate::error::AnalyticsError;
use crate::rows::{EventRow, EVENTS_TABLE};

/// A topic partition, as the sink keys its offsets.
pub type PartitionKey = (String, i32);

/// The event table and the offsets stored with it.
#[derive(Clone)]
pub struct EventStore {
    client: clickhouse::Client,
}

#[derive(Debug, Row, Deserialize)]
struct StoredOffset {
    topic: String,
    partition: i32,
    offset: i64,
}

/// An insert that takes longer than this (ClickHouse hung, a network
/// partition without a reset) is abandoned and retried.
const INSERT_TIMEOUT: Duration = Duration::from_secs(60);

impl EventStore {
    pub fn new(client: clickhouse::Client) -> Self {
        Self { client }
    }

    /// Inserts `rows` as one statement. `token` names the batch: an insert
    /// repeated with the same token (a retry after an ambiguous failure) is
    /// dropped by ClickHouse instead of stored twice, in the event table and
    /// in every table its materialized views feed.
    pub async fn insert(&self, rows: &[EventRow], token: &str) -> Result<(), AnalyticsError> {
        let failed = |e| AnalyticsError::clickhouse("inserting events", e);
        let mut insert = self
            .client
            .insert::<EventRow>(EVENTS_TABLE)
            .await
            .map_err(failed)?
            .with_setting("insert_deduplication_token", token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
        for row in rows {
            insert.write(row).await.map_err(failed)?;
        }
        insert.end().await.map_err(failed)
    }

    /// The highest offset stored for every partition the event table has
    /// rows from.
    pub async fn stored_offsets(&self) -> Result<HashMap<PartitionKey, i64>, AnalyticsError> {
        let rows: Vec<StoredOffset> = self
            .client
            .query("SELECT topic, partition, max(offset) AS offset FROM sink_offsets GROUP BY topic, partition")
            .fetch_all()
            .await
            .map_err(|e| AnalyticsError::clickhouse("reading stored offsets", e))?;
        Ok(rows
            .into_iter()
            .map(|r| ((r.topic, r.partition), r.offset))
            .collect())
    }
}
