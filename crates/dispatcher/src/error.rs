//! The dispatcher's one error type.

/// What failed in the dispatcher. Gateway refusals and policy refusals are
/// outcomes recorded on `sms.dispatch`, not errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    #[error("configuration or record encoding failed")]
    Core(#[from] sms_core::CoreError),
    #[error("kafka {operation} failed")]
    Kafka {
        operation: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("kafka did not acknowledge a record on {topic}")]
    Produce {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("the sgip session pool could not start")]
    Gateway(#[source] sgip::Error),
    #[error("{topic} has no partitions")]
    NoPartitions { topic: String },
    #[error("in-flight submits did not finish within the drain timeout; their records are left uncommitted")]
    DrainTimedOut,
    #[error("a background task ended unexpectedly")]
    TaskEnded,
}

impl DispatchError {
    pub(crate) fn kafka(
        operation: &'static str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| Self::Kafka { operation, source }
    }

    /// Whether starting the same step again can succeed: broker and gateway
    /// trouble heals, a bad configuration does not.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Core(_) | Self::NoPartitions { .. })
    }
}
