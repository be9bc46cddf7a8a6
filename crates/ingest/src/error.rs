//! The one error type of the ingest library, with the HTTP status and machine-readable code of each failure.

use axum::http::StatusCode;
use sms_core::validate::Refusal;
use sms_core::CoreError;

/// What went wrong while taking a request or running the service.
///
/// Every variant maps to one HTTP status and one stable code
/// ([`IngestError::code`]); the message is for people and never holds a
/// message's text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("invalid configuration: {key}: {message}")]
    Config { key: String, message: String },
    #[error("{0}")]
    Refused(Refusal),
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    UnknownField(String),
    #[error("{0}")]
    WrongType(String),
    #[error("{0}")]
    MissingField(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("template {0:?} is not configured")]
    UnknownTemplate(String),
    #[error("template parameter {0:?} is missing")]
    MissingParameter(String),
    #[error("template parameter {0:?} is not used by the template")]
    UnknownParameter(String),
    #[error("body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("batch holds {count} messages, at most {max} are allowed")]
    BatchTooLarge { count: usize, max: usize },
    #[error("no credentials: send a bearer token or an HMAC signature")]
    Unauthenticated,
    #[error("client or credentials unknown")]
    UnknownClient,
    #[error("signature does not match the request")]
    BadSignature,
    #[error("timestamp is missing, malformed or outside the allowed window")]
    StaleTimestamp,
    #[error("nonce was already used")]
    ReplayedNonce,
    #[error("rate limit reached, retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("request id was already used for a different message")]
    RequestIdReused,
    #[error("a request with this request id is being written, retry shortly")]
    RequestInProgress,
    #[error("request id appears more than once in this batch")]
    DuplicateInBatch,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("kafka did not acknowledge in time, retry in {retry_after_s} s")]
    Unavailable { retry_after_s: u64 },
    #[error("kafka refused the write: {0}")]
    KafkaWrite(#[source] rdkafka::error::KafkaError),
    #[error("kafka client setup failed: {0}")]
    KafkaSetup(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl IngestError {
    /// The machine-readable code sent to clients and counted in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config { .. } => "invalid_configuration",
            Self::Refused(refusal) => refusal.code(),
            Self::MalformedJson(_) => "malformed_json",
            Self::UnknownField(_) => "unknown_field",
            Self::WrongType(_) => "wrong_type",
            Self::MissingField(_) => "missing_field",
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnknownTemplate(_) => "unknown_template",
            Self::MissingParameter(_) => "missing_parameter",
            Self::UnknownParameter(_) => "unknown_parameter",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::Unauthenticated => "unauthenticated",
            Self::UnknownClient => "unknown_client",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::ReplayedNonce => "replayed_nonce",
            Self::RateLimited { .. } => "rate_limited",
            Self::RequestIdReused => "request_id_reused",
            Self::RequestInProgress => "request_in_progress",
            Self::DuplicateInBatch => "duplicate_in_batch",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable { .. } | Self::KafkaWrite(_) => "kafka_unavailable",
            Self::KafkaSetup(_) | Self::Core(_) | Self::Listen { .. } => "internal",
        }
    }

    /// The HTTP status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::UnknownField(_)
            | Self::WrongType(_)
            | Self::MissingField(_)
            | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Refused(_)
            | Self::UnknownTemplate(_)
            | Self::MissingParameter(_)
            | Self::UnknownParameter(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } | Self::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::Unauthenticated
            | Self::UnknownClient
            | Self::BadSignature
            | Self::StaleTimestamp
            | Self::ReplayedNonce => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestIdReused | Self::RequestInProgress | Self::DuplicateInBatch => {
                StatusCode::CONFLICT
            }
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable { .. } | Self::KafkaWrite(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Config { .. } | Self::KafkaSetup(_) | Self::Core(_) | Self::Listen { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Seconds after which a retry may succeed, for a `Retry-After` header.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_s } | Self::Unavailable { retry_after_s } => {
                Some(*retry_after_s)
            }
            Self::KafkaWrite(_) | Self::RequestInProgress => Some(1),
            _ => None,
        }
    }

    /// Whether sending the same request again can succeed.
    pub fn is_retryable(&self) -> bool {
        self.retry_after_s().is_some()
    }

    /// Sorts a `serde_json` error into the code a client can act on.
    pub fn from_json(e: &serde_json::Error) -> Self {
        let message = e.to_string();
        match e.classify() {
            serde_json::error::Category::Data if message.starts_with("unknown field") => {
                Self::UnknownField(message)
            }
            serde_json::error::Category::Data if message.starts_with("missing field") => {
                Self::MissingField(message)
            }
            serde_json::error::Category::Data => Self::WrongType(message),
            _ => Self::MalformedJson(message),
        }
    }
}

impl From<Refusal> for IngestError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}
