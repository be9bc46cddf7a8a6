-- A duplicate refusal (a request seen again after a rebalance, or sent again
-- by the platform) says nothing about its message: the original's events
-- decide. The view that keeps sms_messages is made again without them.
DROP VIEW IF EXISTS sms_messages_mv;

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
  AND NOT (event_kind = 'refused' AND reason = 'DUPLICATE');
