//! The status service: receives the carrier's reports and uplink messages over SGIP, and decides the one final status of every message.
//!
//! # Data flow
//!
//! The gateway connects to the [`receiver`] (an SGIP server, LoginType 2)
//! and sends Reports and Delivers. Each becomes a `CarrierReport` on
//! `sms.reports` or an `UplinkMessage` on `sms.mo`, and the gateway gets its
//! Result 0 only after Kafka acknowledged the record; if Kafka is down the
//! gateway gets no answer and resends, so nothing is lost.
//!
//! The [`consumer`] reads `sms.dispatch` and `sms.reports` and feeds the
//! [`correlate`] state machine, which joins reports to dispatch events by the
//! SGIP sequence triple of every segment and decides DELIVERED, FAILED (with
//! the carrier's code and a category), REJECTED, EXPIRED or UNKNOWN (no
//! report within the validity, 72 hours by default). Each `FinalStatus`
//! carries accepted-at, submitted-at, gateway-response-at and report-at, and
//! whether the status came within the contract's 7 seconds. Statuses and
//! consumer offsets commit in one Kafka transaction.
//!
//! The [`uplink`] handler reads `sms.mo`: unsubscribe keywords cancel the
//! user's subscription in `sms.subscriptions` and queue a confirmation; other
//! replies stay on `sms.mo` for the platform to consume.

pub mod config;
pub mod consumer;
pub mod correlate;
pub mod error;
pub mod receiver;
pub mod service;
pub mod uplink;
