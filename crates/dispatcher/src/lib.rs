//! The dispatcher: takes send requests off Kafka, verification codes first, applies the policy, submits them to China Unicom's gateway over SGIP 1.2, and writes what it did to `sms.dispatch`.
//!
//! # Data flow
//!
//! The [`consumer`] reads `sms.requests.otp`, `sms.requests.retry` and
//! `sms.requests.notify` in one consumer group with range assignment, so an
//! instance holding partition p of one holds partition p of each, and finds
//! the matching state in partition p of `sms.dispatch` and
//! `sms.subscriptions` (every key is the recipient's number). On each
//! assignment it rebuilds a [`policy::Ledger`] per partition from
//! `sms.dispatch` (message ids, submit times, spend) and follows the
//! partitions' subscription records ([`rebuild`]).
//!
//! Every request passes the [`policy`]: duplicate, expired, number range,
//! subscription, content, frequency caps, budget. A refusal is a REFUSED
//! dispatch event with its reason code. An accepted request is split into
//! segments and submitted over a pool of SGIP sessions ([`submit`]) sized by
//! the instance's share of the partitions; the dispatch event carries every
//! segment's sequence triple, submit time and the gateway's Result. A
//! refusal that may pass later becomes a RETRYING event and a record on
//! `sms.requests.retry` with a not-before time; a final one a FAILED event
//! with the gateway's code; the last attempt a FAILED event with
//! ATTEMPTS_EXHAUSTED. Records that do not decode go to `sms.dlq`.
//!
//! Events, retry records, dead letters and the consumer offsets commit in
//! one Kafka transaction; the [`consumer`] module states exactly what that
//! guarantees through restarts, rebalances and crashes.
//!
//! # Wire format
//!
//! Values on every topic are Avro single-object records (`sms_core::avro`),
//! keyed by the recipient's number as digits (`86` + 11). On the gateway
//! side, each Submit carries one segment (at most 140 octets, with a
//! six-byte concatenation header when the text needs several), the access
//! number `121231100` plus the request's extension, and ReportFlag 1.
//!
//! Logs carry message ids and masked numbers, never message text.

pub mod config;
pub mod consumer;
pub mod error;
pub mod policy;
pub mod rebuild;
pub mod service;
pub mod submit;

pub use error::DispatchError;
