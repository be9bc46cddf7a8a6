-- The latest known state of each message, which the reports and the status
-- query read (with FINAL, or argMax over version). A later stage replaces an
-- earlier one: request < dispatch decision < final status.
CREATE TABLE IF NOT EXISTS sms_messages
(
    message_id String,
    request_id String,
    client_id LowCardinality(String),
    phone String,
    message_kind LowCardinality(String),
    state LowCardinality(String) COMMENT 'REQUESTED, SUBMITTED, REFUSED, RETRYING, FAILED, then the final state',
    refusal_reason LowCardinality(String),
    failure_category LowCardinality(String),
    error_code LowCardinality(String),
    billed_segments UInt16,
    segments_delivered UInt16,
    accepted_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    latency_ms Nullable(Int64),
    within_seven_seconds UInt8,
    is_final UInt8,
    version UInt64 COMMENT 'stage rank * 1e13 + event time in ms: the highest wins'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(accepted_at)
ORDER BY message_id
TTL toDateTime(accepted_at) + INTERVAL {ttl_months} MONTH
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS sms_messages_mv TO sms_messages AS
SELECT
    message_id,
    request_id,
    client_id,
    phone,
    message_kind,
    multiIf(event_kind = 'requested', 'REQUESTED', event_kind = 'submitted', 'SUBMITTED', state) AS state,
    if(event_kind = 'final_status' OR event_kind = 'refused' OR event_kind = 'dispatch_failed' OR event_kind = 'retrying', reason, '') AS refusal_reason,
    failure_category,
    error_code,
    billed_segments,
    segments_delivered,
    accepted_at,
    event_time AS updated_at,
    latency_ms,
    within_seven_seconds,
    toUInt8(event_kind = 'final_status') AS is_final,
    toUInt64(multiIf(event_kind = 'final_status', 3, event_kind = 'requested', 1, 2)) * 10000000000000
        + toUInt64(greatest(toUnixTimestamp64Milli(event_time), 0)) AS version
FROM sms_events
WHERE message_id != ''
  AND (event_kind IN ('requested', 'refused', 'retrying', 'dispatch_failed', 'final_status')
       OR (event_kind = 'submitted' AND segment_index = 0))
