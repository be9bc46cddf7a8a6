//! The crate's single error type and the rule for whether a retry can help.

use std::io;

/// Everything that can go wrong in the codec, the text helpers and the sessions.
///
/// Expected protocol outcomes are not errors: a gateway's non-zero Result in a
/// response comes back as a [`crate::ResultCode`] value, and a partial frame is
/// `Ok(None)` from the reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The length field of a frame is below the 20-byte header.
    #[error("frame length {length} is shorter than the 20-byte header")]
    FrameTooShort { length: u32 },

    /// The length field of a frame is above the configured maximum.
    #[error("frame length {length} exceeds the maximum of {max} bytes")]
    FrameTooLong { length: u32, max: usize },

    /// The command id is not one of SGIP 1.2's.
    #[error("unknown command id {id:#010x}")]
    UnknownCommand { id: u32 },

    /// A body's size does not match what its fields say it must be.
    #[error("{command} body is {actual} bytes, expected {expected}")]
    BodyLength {
        command: &'static str,
        expected: usize,
        actual: usize,
    },

    /// A count field is out of its allowed range.
    #[error("{field} is {value}, allowed {min} to {max}")]
    CountOutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },

    /// A value does not fit its fixed-width field.
    #[error("{field} is {actual} bytes, the field holds {max}")]
    FieldTooLong {
        field: &'static str,
        max: usize,
        actual: usize,
    },

    /// A sequence number string is not the 30-digit form.
    #[error("invalid sequence number string: {reason}")]
    InvalidSequence { reason: &'static str },

    /// The message content cannot be sent as asked (too long, empty, bad coding).
    #[error("invalid message content: {reason}")]
    InvalidContent { reason: &'static str },

    /// A configuration value is out of range; names the key.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        key: &'static str,
        reason: &'static str,
    },

    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    TruncatedFrame { buffered: usize },

    /// The peer closed the connection.
    #[error("connection closed by peer")]
    ConnectionClosed,

    /// The peer sent a PDU that does not belong at this point of the session.
    #[error("unexpected {command} from peer")]
    UnexpectedPdu { command: &'static str },

    /// The gateway answered Bind with a non-zero Result.
    #[error("bind refused with result {result}")]
    BindRefused { result: u8 },

    /// Connecting, binding or unbinding did not finish in time.
    #[error("{operation} timed out after {after_ms} ms")]
    Timeout {
        operation: &'static str,
        after_ms: u64,
    },

    /// A request was written `attempts` times and never answered.
    #[error("no response after {attempts} attempts")]
    NoResponse { attempts: u32 },

    /// The session could not reach the gateway; the request was never written.
    #[error("gateway unavailable: {reason}")]
    Unavailable { reason: String },

    /// The session or pool was closed before the request could be handled.
    #[error("session closed")]
    SessionClosed,

    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// Whether sending the same request again later can succeed.
    ///
    /// Malformed input and refused credentials stay wrong however often they
    /// are tried; lost connections and missing responses do not. Note that a
    /// retry after [`Error::NoResponse`] may duplicate the message at the
    /// gateway, since the gateway may have accepted it without answering.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. }
            | Error::NoResponse { .. }
            | Error::Unavailable { .. }
            | Error::ConnectionClosed
            | Error::TruncatedFrame { .. }
            | Error::Io(_) => true,
            Error::BindRefused { result } => {
                crate::ResultCode(*result).class() == crate::ResultClass::Transient
            }
            Error::FrameTooShort { .. }
            | Error::FrameTooLong { .. }
            | Error::UnknownCommand { .. }
            | Error::BodyLength { .. }
            | Error::CountOutOfRange { .. }
            | Error::FieldTooLong { .. }
            | Error::InvalidSequence { .. }
            | Error::InvalidContent { .. }
            | Error::Config { .. }
            | Error::UnexpectedPdu { .. }
            | Error::SessionClosed => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
