//! The analytics sink: every topic of the system into ClickHouse, where the
//! monthly report, billing, the SLA figures and traces are read.
//!
//! # Data flow
//!
//! One consumer group reads every Avro topic (`sms.requests.*`, `sms.dispatch`,
//! `sms.reports`, `sms.mo`, `sms.status`, `sms.subscriptions`, `sms.dlq`). Each
//! record is decoded with the shared [`sms_core::avro::AvroCodec`] and turned
//! into one or more rows of `sms_events` ([`rows`]): one per lifecycle event,
//! a dispatch giving a row per submitted segment and per gateway response.
//! The text of verification codes is masked before it is stored
//! ([`privacy`]). A record that does not decode goes to `sms.dlq` as a
//! `DeadLetter` with its offset and reason, and the sink goes on.
//!
//! Rows collect in a [`sink::Batch`] until it holds `batch_max_events` records
//! or `batch_max_ms` passed since its first one, then go to ClickHouse in one
//! `INSERT` ([`store`]). Records are decoded by tasks on every worker thread,
//! a chunk at a time, while the reader goes on taking records from Kafka; a
//! batch is stored in a task of its own while the next one is read. Offsets
//! are committed only after ClickHouse took the batch, and batches are stored
//! and committed in the order they were read. While ClickHouse refuses, the
//! sink finishes reading the next batch, stops, and retries with doubling
//! waits: memory stays bounded by two batches and nothing is lost.
//!
//! A batch cannot count twice. A retried insert carries the same
//! deduplication token (the offset range of each partition), so ClickHouse
//! drops a repeat of one that did land. A batch read again because the sink
//! died between insert and commit is filtered against `sink_offsets`, the
//! highest offset stored per partition, which a materialized view keeps in
//! the same insert as the rows; the sink reloads it at start and after every
//! rebalance.
//!
//! In ClickHouse, materialized views derive from `sms_events` the latest state
//! of each message (`sms_messages`), the daily and monthly report figures
//! (`sms_daily`, `sms_monthly`) and the stored offsets. The schema is applied
//! at start-up by numbered, idempotent migrations ([`schema`]) from
//! `schemas/clickhouse/`.
//!
//! # Limitations
//!
//! - With several sink instances, a partition revoked while its batch is being
//!   inserted may be stored by both members; the sink drops rows of partitions
//!   it no longer owns just before inserting, which narrows this to the
//!   insert itself.
//! - An outage longer than `max_poll_interval_ms` makes the broker take the
//!   sink's partitions away; it rejoins when ClickHouse answers again and skips
//!   what it already stored.

pub mod config;
pub mod error;
pub mod exporter;
pub mod privacy;
pub mod rows;
pub mod schema;
pub mod sink;
pub mod store;

pub use config::AnalyticsConfig;
pub use error::AnalyticsError;
pub use sink::Sink;
