//! The operator's tool for industry-sms, as a library so its commands are
//! tested against the real services.
//!
//! - `smsctl topics create|check` sets up and verifies the Kafka topics from
//!   the catalogue in `sms_core::kafka::Topics`.
//! - `smsctl report monthly` ([`monthly`], [`report`]) reads the month's
//!   figures from the ClickHouse aggregates (`sms_daily`) and events
//!   (`sms_events`) and writes the clause 3.10 report as HTML, Markdown and CSV.
//! - `smsctl report billing` ([`billing`]) prices a settlement quarter in
//!   exact thousandths of a yuan, against the budget and the penalty clauses.
//! - `smsctl trace` ([`trace`]) rebuilds the timeline of messages from
//!   `sms_events`, by message id (the sorting key) or by phone number (the
//!   `by_phone` projection), and writes the clause 3.11 trace report.
//! - `smsctl replay` ([`replay`]) reads a time window of a topic, partition
//!   by partition from the offsets Kafka finds for the start time, and writes
//!   it to another topic, a JSON-lines file, or ClickHouse.
//!
//! Every ClickHouse figure comes from SQL the command can print
//! (`--show-sql`), so a reader can reproduce it.

pub mod billing;
pub mod chart;
pub mod error;
pub mod history;
pub mod money;
pub mod monthly;
pub mod period;
pub mod replay;
pub mod report;
pub mod topics;
pub mod trace;
pub mod warehouse;

pub use error::SmsctlError;
