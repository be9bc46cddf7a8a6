//! China Unicom SGIP 1.2 for an SP: the codec, text segmentation, a client session pool and a server.
//!
//! # Data flow
//!
//! SGIP runs over two TCP connections in opposite directions. On the MT
//! path the SP is the client: a [`client::Session`] connects to the gateway,
//! binds with LoginType 1, writes Submits inside a window and matches each
//! Submit_Resp to its Submit by the 12-byte sequence triple. A
//! [`client::Pool`] spreads Submits over several sessions under one shared
//! rate limit. On the MO path the gateway is the client: it connects to the
//! SP's [`server::Server`], binds with LoginType 2 and sends Reports (the
//! outcome of an earlier Submit, carrying that Submit's triple), Delivers
//! (uplink messages) and UserRpts. The server hands each one to a
//! caller-supplied [`server::Handler`] and answers only when the handler
//! says the record is safe, so an outage makes the gateway resend instead of
//! losing a report.
//!
//! # Wire format
//!
//! Every PDU starts with a 20-byte header: the total length (header
//! included), the command id (a response is its request with bit 31 set) and
//! the sequence triple (node id, MMDDhhmmss in Beijing time, counter), all
//! unsigned big-endian `u32`s. Bodies are fixed-width fields: integers of one
//! or four bytes and NUL-padded text ([`Text`]); Submit and Deliver carry a
//! four-byte MessageLength and that many octets of content, and Submit a
//! one-byte UserCount of 21-byte numbers. A response repeats its request's
//! triple exactly. [`Pdu::decode`] checks every length against the frame
//! before it reads or allocates, and [`framing::PduReader`] refuses a length
//! field outside 20 to 2048 bytes (configurable) before awaiting the body.
//!
//! # Text
//!
//! [`text`] encodes a message as ASCII (coding 0), UCS-2 (8) or GBK (15),
//! splits long text into concatenated segments with a six-byte user-data
//! header inside the 140-octet limit, counts billed segments the way the
//! gateway bills them (including text the carrier appends), and reassembles
//! concatenated uplink messages with a bound and an expiry.

pub mod client;
mod error;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod pdu;
mod rate;
mod result_code;
mod sequence;
pub mod server;
pub mod text;
mod text_field;

pub use client::{Pool, PoolConfig, Session, SessionConfig, SubmitOutcome, SubmitRequest};
pub use error::{Error, Result};
pub use pdu::{
    Bind, Body, CommandId, Deliver, Pdu, Report, Response, Submit, Trace, TraceHop, TraceResp,
    UserRpt,
};
pub use rate::RateLimiter;
pub use result_code::{ResultClass, ResultCode};
pub use sequence::{mmddhhmmss, SequenceGenerator, SequenceTriple};
pub use server::{Handler, Origin, Server, ServerConfig};
pub use text_field::{mask_phone, Text};

/// Milliseconds since the Unix epoch, the time unit of outcomes and records.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
