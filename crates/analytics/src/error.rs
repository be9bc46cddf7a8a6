//! The one error type of the analytics sink, with whether a retry can help.

/// What failed in the sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// A configuration key has a value the sink cannot use.
    #[error("invalid configuration: {key}: {message}")]
    Config { key: String, message: String },

    /// The configuration file could not be read or parsed.
    #[error("config file {path}: {message}")]
    ConfigFile { path: String, message: String },

    /// A schema migration failed; the sink does not start.
    #[error("migration {name} failed at statement {statement}: {source}")]
    Migration {
        name: &'static str,
        statement: usize,
        #[source]
        source: Box<clickhouse::error::Error>,
    },

    /// ClickHouse refused or could not be reached for an insert or a query.
    #[error("clickhouse {operation}: {source}")]
    ClickHouse {
        operation: &'static str,
        #[source]
        source: Box<clickhouse::error::Error>,
    },

    /// The Kafka client could not be created or subscribed.
    #[error("kafka {operation}: {source}")]
    Kafka {
        operation: &'static str,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },

    /// A dead letter could not be encoded or written to the dead-letter topic.
    #[error("dead letter for {topic}/{partition}@{offset}: {message}")]
    DeadLetter {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },

    /// The metrics endpoint could not start.
    #[error("metrics endpoint on {address}: {message}")]
    Metrics { address: String, message: String },

    /// Shutdown came while ClickHouse was still refusing the batch; its
    /// offsets were not committed, so the records will be read again.
    #[error("shut down with {rows} rows not stored; they will be read again")]
    ShutdownBeforeStored { rows: usize },
}

impl AnalyticsError {
    /// Whether trying the same operation again can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::ClickHouse { .. } | Self::DeadLetter { .. } | Self::Kafka { .. }
        )
    }

    pub(crate) fn clickhouse(operation: &'static str, source: clickhouse::error::Error) -> Self {
        Self::ClickHouse {
            operation,
            source: Box::new(source),
        }
    }

    pub(crate) fn kafka(operation: &'static str, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            operation,
            source: Box::new(source),
        }
    }
}
