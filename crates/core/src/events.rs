//! The records carried on the system's topics, one Rust type per Avro schema in `schemas/avro/`.
//!
//! Field names and enum symbols match the schemas exactly; the tests in
//! `tests/schemas.rs` encode every type with its schema and decode it back,
//! so the two cannot drift. Each enum declares its variants in the order of
//! the schema's symbols: the encoder writes a variant by its position, and
//! the tests compare every variant's bytes with the symbol's. Timestamps are
//! Unix milliseconds (`timestamp-millis`).

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as carried in every `timestamp-millis` field.
pub type Millis = i64;

/// Now, in Unix milliseconds.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// What a message is. Verification codes are served before everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageKind {
    VerificationCode,
    Notice,
    Reminder,
}

impl MessageKind {
    pub const ALL: [MessageKind; 3] = [Self::VerificationCode, Self::Notice, Self::Reminder];

    /// The Avro symbol, also used in ClickHouse and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerificationCode => "VERIFICATION_CODE",
            Self::Notice => "NOTICE",
            Self::Reminder => "REMINDER",
        }
    }
}

/// Which entrance took a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestSource {
    Http,
    Topic,
    System,
}

/// A send instruction accepted by ingest (`sms.requests.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsRequest {
    pub message_id: String,
    pub request_id: String,
    pub client_id: String,
    pub phone: String,
    pub kind: MessageKind,
    pub text: String,
    pub template_id: Option<String>,
    pub sp_extension: Option<String>,
    pub source: RequestSource,
    pub accepted_at: Millis,
    pub expires_at: Option<Millis>,
    pub scheduled_at: Option<Millis>,
    pub attempt: i32,
    pub not_before: Option<Millis>,
}

/// The dispatcher's decision on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DispatchOutcome {
    Submitted,
    Refused,
    Retrying,
    Failed,
}

/// Why a message was not, or not yet, submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefusalReason {
    Expired,
    NotUnicom,
    NotSubscribed,
    ContentPolicy,
    Duplicate,
    FrequencyCap,
    BudgetExhausted,
    InvalidRequest,
    GatewayRefused,
    GatewayUnavailable,
    AttemptsExhausted,
}

/// An SGIP sequence number as carried in Avro: three unsigned 32-bit values widened to `long`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SequenceTriple {
    pub node: i64,
    pub time: i64,
    pub counter: i64,
}

impl SequenceTriple {
    pub fn new(node: u32, time: u32, counter: u32) -> Self {
        Self {
            node: node.into(),
            time: time.into(),
            counter: counter.into(),
        }
    }
}

impl std::fmt::Display for SequenceTriple {
    /// The fixed-width 30-digit form, comparable as a string.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:010}{:010}{:010}", self.node, self.time, self.counter)
    }
}

/// One SGIP Submit made for a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmittedSegment {
    pub index: i32,
    pub sequence: SequenceTriple,
    pub submitted_at: Millis,
    pub response_at: Option<Millis>,
    pub result: i32,
}

/// What the dispatcher did with one request (`sms.dispatch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchEvent {
    pub message_id: String,
    pub request_id: String,
    pub phone: String,
    pub kind: MessageKind,
    pub outcome: DispatchOutcome,
    pub reason: Option<RefusalReason>,
    pub detail: Option<String>,
    pub gateway_result: Option<i32>,
    pub segments: Vec<SubmittedSegment>,
    pub billed_segments: i32,
    pub attempt: i32,
    pub accepted_at: Millis,
    pub dispatched_at: Millis,
    pub not_before: Option<Millis>,
}

/// The carrier's state for one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportState {
    Delivered,
    Waiting,
    Failed,
}

/// An SGIP Report as received (`sms.reports`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarrierReport {
    pub submit_sequence: SequenceTriple,
    pub report_sequence: SequenceTriple,
    pub phone: String,
    pub report_type: i32,
    pub state: ReportState,
    pub error_code: i32,
    pub received_at: Millis,
}

/// A message a user sent to the access number (`sms.mo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkMessage {
    pub uplink_id: String,
    pub sequence: SequenceTriple,
    pub phone: String,
    pub sp_number: String,
    pub coding: i32,
    pub text: Option<String>,
    #[serde(with = "avro_bytes")]
    pub content: Vec<u8>,
    pub udhi: bool,
    pub link_id: Option<String>,
    pub received_at: Millis,
}

/// The final status of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FinalState {
    Delivered,
    Failed,
    Expired,
    Rejected,
    Unknown,
}

/// Why a message failed, grouped for the monthly report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCategory {
    NoSuchNumber,
    PoweredOff,
    Suspended,
    Blacklisted,
    Network,
    Expired,
    GatewayRefused,
    Other,
}

/// The one final status of a message, with the contract's timings (`sms.status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalStatus {
    pub message_id: String,
    pub request_id: String,
    pub phone: String,
    pub kind: MessageKind,
    pub status: FinalState,
    pub failure_category: Option<FailureCategory>,
    pub error_code: Option<i32>,
    pub refusal_reason: Option<RefusalReason>,
    pub billed_segments: i32,
    pub segments_delivered: i32,
    pub accepted_at: Millis,
    pub submitted_at: Option<Millis>,
    pub gateway_response_at: Option<Millis>,
    pub report_at: Option<Millis>,
    pub decided_at: Millis,
    pub within_seven_seconds: bool,
}

/// Contract clause 3.8: a status returned at most this long after acceptance is timely.
pub const TIMELINESS_LIMIT_MS: Millis = 7_000;

/// Whether a status that arrived at `returned_at` for a request accepted at `accepted_at` is timely.
pub fn within_seven_seconds(accepted_at: Millis, returned_at: Millis) -> bool {
    returned_at - accepted_at <= TIMELINESS_LIMIT_MS
}

/// Whether a number is in the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionState {
    Registered,
    Cancelled,
}

/// Who changed a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionSource {
    Api,
    UplinkKeyword,
    NumberChange,
}

/// The opt-in record of one phone number (`sms.subscriptions`, compacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub phone: String,
    pub state: SubscriptionState,
    pub kinds: Vec<MessageKind>,
    pub source: SubscriptionSource,
    pub moved_to: Option<String>,
    pub client_id: Option<String>,
    pub changed_at: Millis,
}

impl SubscriptionRecord {
    /// Whether this record lets a message of `kind` through (clause 2.9).
    pub fn allows(&self, kind: MessageKind) -> bool {
        self.state == SubscriptionState::Registered && self.kinds.contains(&kind)
    }
}

/// The class of failure that sent a record to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeadLetterError {
    Undecodable,
    Invalid,
    Unmatched,
}

/// A record a consumer could not process (`sms.dlq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    #[serde(with = "avro_opt_bytes")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "avro_opt_bytes")]
    pub payload: Option<Vec<u8>>,
    pub error: DeadLetterError,
    pub reason: String,
    pub service: String,
    pub recorded_at: Millis,
}

/// Serde for `bytes` fields: Avro wants a byte string, not a sequence of integers.
mod avro_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(serde_bytes_compat::ByteBuf::deserialize(d)?.0)
    }

    pub(super) mod serde_bytes_compat {
        use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

        /// An owned byte buffer that accepts bytes, strings or integer sequences.
        pub struct ByteBuf(pub Vec<u8>);

        impl<'de> Deserialize<'de> for ByteBuf {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_byte_buf(ByteBufVisitor)
            }
        }

        struct ByteBufVisitor;

        impl<'de> Visitor<'de> for ByteBufVisitor {
            type Value = ByteBuf;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.as_bytes().to_vec()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
    }
}

/// Serde for nullable `bytes` fields.
mod avro_opt_bytes {
    use super::avro_bytes::serde_bytes_compat::ByteBuf;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&Bytes(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<ByteBuf>::deserialize(d)?.map(|b| b.0))
    }

    struct Bytes<'a>(&'a [u8]);

    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
}
