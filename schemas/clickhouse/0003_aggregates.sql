-- Daily and monthly report figures, maintained from final statuses as they
-- are inserted, so the monthly report reads a few hundred rows instead of
-- the month's events. Bucketed by the acceptance time (when the platform
-- asked), in Beijing time, by kind, final state, failure category and code.
CREATE TABLE IF NOT EXISTS sms_daily
(
    day Date,
    message_kind LowCardinality(String),
    status LowCardinality(String),
    failure_category LowCardinality(String),
    error_code LowCardinality(String),
    messages SimpleAggregateFunction(sum, UInt64),
    billed_segments SimpleAggregateFunction(sum, UInt64),
    delivered SimpleAggregateFunction(sum, UInt64),
    failed SimpleAggregateFunction(sum, UInt64),
    within_seven_seconds SimpleAggregateFunction(sum, UInt64),
    latency_ms AggregateFunction(quantilesTDigest(0.5, 0.9, 0.98, 0.99), Int64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, message_kind, status, failure_category, error_code)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS sms_daily_mv TO sms_daily AS
SELECT
    toDate(accepted_at, 'Asia/Shanghai') AS day,
    message_kind,
    state AS status,
    failure_category,
    error_code,
    count() AS messages,
    sum(billed_segments) AS billed_segments,
    countIf(state = 'DELIVERED') AS delivered,
    countIf(state != 'DELIVERED') AS failed,
    sum(within_seven_seconds) AS within_seven_seconds,
    quantilesTDigestStateIf(0.5, 0.9, 0.98, 0.99)(assumeNotNull(latency_ms), isNotNull(latency_ms)) AS latency_ms
FROM sms_events
WHERE event_kind = 'final_status'
GROUP BY day, message_kind, status, failure_category, error_code;

CREATE TABLE IF NOT EXISTS sms_monthly
(
    month Date COMMENT 'first day of the month',
    message_kind LowCardinality(String),
    status LowCardinality(String),
    failure_category LowCardinality(String),
    error_code LowCardinality(String),
    messages SimpleAggregateFunction(sum, UInt64),
    billed_segments SimpleAggregateFunction(sum, UInt64),
    delivered SimpleAggregateFunction(sum, UInt64),
    failed SimpleAggregateFunction(sum, UInt64),
    within_seven_seconds SimpleAggregateFunction(sum, UInt64),
    latency_ms AggregateFunction(quantilesTDigest(0.5, 0.9, 0.98, 0.99), Int64)
)
ENGINE = AggregatingMergeTree
ORDER BY (month, message_kind, status, failure_category, error_code)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS sms_monthly_mv TO sms_monthly AS
SELECT
    toStartOfMonth(toDate(accepted_at, 'Asia/Shanghai')) AS month,
    message_kind,
    state AS status,
    failure_category,
    error_code,
    count() AS messages,
    sum(billed_segments) AS billed_segments,
    countIf(state = 'DELIVERED') AS delivered,
    countIf(state != 'DELIVERED') AS failed,
    sum(within_seven_seconds) AS within_seven_seconds,
    quantilesTDigestStateIf(0.5, 0.9, 0.98, 0.99)(assumeNotNull(latency_ms), isNotNull(latency_ms)) AS latency_ms
FROM sms_events
WHERE event_kind = 'final_status'
GROUP BY month, message_kind, status, failure_category, error_code
