//! The status service: receives the carrier's reports and uplink messages over SGIP, and decides the one final status of every message.
pub mod correlate;
