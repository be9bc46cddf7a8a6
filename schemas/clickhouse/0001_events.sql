-- One row per lifecycle event of every message: requested, refused, submitted
-- (one per segment), gateway response (one per segment), report, final status,
-- uplink, plus subscription changes and dead letters. Traces read it by
-- message id (the sorting key) or by phone number (the projection).
CREATE TABLE IF NOT EXISTS sms_events
(
    event_id String COMMENT 'topic/partition/offset/n of the record the row came from',
    event_time DateTime64(3, 'UTC') COMMENT 'when the event happened, by the writer''s clock',
    event_kind LowCardinality(String) COMMENT 'requested, refused, retrying, dispatch_failed, submitted, gateway_response, report, final_status, uplink, retry_queued, subscription, dead_letter',
    message_id String,
    request_id String,
    client_id LowCardinality(String),
    phone String COMMENT 'E.164 digits without +; not granted to analysts',
    message_kind LowCardinality(String) COMMENT 'VERIFICATION_CODE, NOTICE, REMINDER',
    state LowCardinality(String) COMMENT 'dispatch outcome, report state, final state or subscription state',
    reason LowCardinality(String) COMMENT 'refusal reason or dead-letter class',
    failure_category LowCardinality(String),
    error_code LowCardinality(String) COMMENT 'SGIP result or report error code as decimal text; empty when none',
    segment_index Int16 COMMENT '-1 when the row is not about one segment',
    billed_segments UInt16,
    segments_delivered UInt16,
    sequence String COMMENT 'SGIP sequence triple, 30 digits',
    text String COMMENT 'message text; digit runs of 4 to 8 masked in verification codes',
    attempt UInt16,
    accepted_at DateTime64(3, 'UTC') COMMENT 'when ingest accepted the request; 1970 when unknown',
    latency_ms Nullable(Int64) COMMENT 'final status only: report (or decision) time minus acceptance',
    within_seven_seconds UInt8,
    source_topic LowCardinality(String),
    source_partition Int32,
    source_offset Int64,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3),
    PROJECTION by_phone (SELECT * ORDER BY phone, event_time)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (message_id, event_time)
TTL toDateTime(event_time) + INTERVAL {ttl_months} MONTH
SETTINGS non_replicated_deduplication_window = 1000
