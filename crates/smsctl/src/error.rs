//! The one error type of smsctl's commands, each saying what to check.

/// What failed in a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmsctlError {
    /// An option has a value the command cannot use; fix the command line.
    #[error("{option}: {message}")]
    Argument {
        option: &'static str,
        message: String,
    },

    /// ClickHouse could not be reached or refused a query. Retrying helps
    /// only if the server was down.
    #[error(
        "clickhouse at {url} (database {database}), {operation}: {source}; \
         check that ClickHouse is up, --clickhouse/--database and the user's grants"
    )]
    ClickHouse {
        url: String,
        database: String,
        operation: &'static str,
        #[source]
        source: Box<clickhouse::error::Error>,
    },

    /// ClickHouse refused rows written by smsctl (a replay or generated history).
    #[error("clickhouse at {url}: {source}; check that ClickHouse is up and the user may write to {database}")]
    Store {
        url: String,
        database: String,
        #[source]
        source: Box<analytics::AnalyticsError>,
    },

    /// Kafka could not be reached or refused an operation.
    #[error("kafka at {bootstrap}, {operation}: {source}; check that Kafka is up and --kafka")]
    Kafka {
        bootstrap: String,
        operation: String,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },

    /// A record read from a topic could not be decoded.
    #[error("{topic}/{partition}@{offset} does not decode: {message}")]
    Undecodable {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },

    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl SmsctlError {
    /// An invalid option value.
    pub fn argument(option: &'static str, message: impl Into<String>) -> Self {
        Self::Argument {
            option,
            message: message.into(),
        }
    }

    /// A file operation on `path` that failed.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether running the command again unchanged can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::ClickHouse { .. } | Self::Store { .. } | Self::Kafka { .. }
        )
    }
}
