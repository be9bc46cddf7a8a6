//! The one error type of the shared library.

/// What went wrong in encoding, decoding or client setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("schema {file} does not parse")]
    Schema {
        file: String,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("schema {0} is not a record")]
    SchemaNotRecord(String),
    #[error("avro encoding or decoding failed")]
    Avro(#[source] Box<apache_avro::Error>),
    #[error("record is not framed avro (starts with {0})")]
    NotFramed(String),
    #[error("no known schema of {record} has fingerprint {fingerprint}")]
    UnknownFingerprint { record: String, fingerprint: String },
    #[error("record names schema registry id {0} but no registry is configured")]
    NoRegistry(u32),
    #[error("{0}")]
    Registry(String),
    #[error("{0} bytes left over after the record")]
    TrailingBytes(usize),
    #[error("avro datum not read: {0}")]
    Datum(String),
    #[error("kafka client setup failed: {0}")]
    KafkaSetup(#[source] rdkafka::error::KafkaError),
    #[error("invalid configuration: {key}: {message}")]
    Config { key: String, message: String },
    #[error("kafka refused the credentials or the tls handshake: {0}")]
    KafkaAuthentication(String),
}

impl CoreError {
    pub(crate) fn avro(e: apache_avro::Error) -> Self {
        Self::Avro(Box::new(e))
    }

    /// Whether trying the same thing again can succeed. Decoding errors are
    /// about the bytes and never heal; registry and client errors may.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Registry(_) | Self::KafkaSetup(_))
    }
}
