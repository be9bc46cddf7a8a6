//! The operator's tool for industry-sms, as a library so its commands are
//! tested against the real services.
//!
//! `smsctl topics create|check` sets up and verifies the Kafka topics from the
//! catalogue in `sms_core::kafka::Topics` (partition counts, retention,
//! compaction).

pub mod topics;
