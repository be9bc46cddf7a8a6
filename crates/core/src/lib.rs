//! The shared library of industry-sms: the records on every topic, their Avro
//! encoding, Kafka client setup and the topic catalogue, and telemetry.
//!
//! # Data flow
//!
//! Ingest writes [`events::SmsRequest`] to `sms.requests.otp` or
//! `sms.requests.notify`; the dispatcher writes a [`events::DispatchEvent`] for
//! every request to `sms.dispatch` (and retries to `sms.requests.retry`); the
//! report receiver writes [`events::CarrierReport`] to `sms.reports` and
//! [`events::UplinkMessage`] to `sms.mo`; the status service writes one
//! [`events::FinalStatus`] per message to `sms.status`; ingest and status keep
//! the compacted `sms.subscriptions` ([`events::SubscriptionRecord`]); anything
//! a consumer cannot process becomes a [`events::DeadLetter`] on `sms.dlq`.
//! Every key is the recipient's phone number (E.164 digits, no `+`).
//!
//! # Wire format
//!
//! Values are Avro datums framed by [`avro::AvroCodec`]: single-object
//! encoding (`C3 01`, 8-byte schema fingerprint, datum) by default, or the
//! Confluent framing (`00`, 4-byte schema id, datum) when a schema registry is
//! configured. Schemas live in `schemas/avro/`; released copies stay in
//! `schemas/avro/released/` so records written by older versions still decode.

pub mod avro;
pub mod carrier;
pub mod config;
pub mod error;
pub mod events;
pub mod ids;
pub mod kafka;
pub mod secret;
pub mod telemetry;
pub mod validate;

pub use error::CoreError;
pub use secret::Secret;
