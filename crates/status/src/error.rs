//! The status service's error type.

/// What failed in the status service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    #[error("encoding a record failed")]
    Encode(#[from] sms_core::CoreError),
    #[error("kafka did not acknowledge a record on {topic}")]
    Produce {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("kafka {operation} failed")]
    Kafka {
        operation: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("partitions were reassigned; state is rebuilt")]
    Rebalanced,
}

impl StatusError {
    pub(crate) fn kafka(
        operation: &'static str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| Self::Kafka { operation, source }
    }

    /// Whether running the same step again can succeed (everything here is
    /// about the brokers, except a record that does not encode).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Encode(_))
    }
}
