-- The read-only user analysts and dashboards use on a real ClickHouse server
-- (the local front defines the same user in users.toml). Run once per
-- server as an administrator, with the database the sink writes to (`sms`
-- by default) and a password of your own in place of the placeholder:
--
--     clickhouse-client --multiquery < deploy/clickhouse/analyst-user.sql
--
-- Analysts read figures, states and codes. They do not read phone numbers
-- or message text: traces of one message or one number go through the
-- operator's tool, which uses the service account.

CREATE ROLE IF NOT EXISTS analyst_reader;

-- The report figures and the code table: every column.
GRANT SELECT ON sms.sms_daily TO analyst_reader;
GRANT SELECT ON sms.sms_monthly TO analyst_reader;
GRANT SELECT ON sms.carrier_error_codes TO analyst_reader;

-- Per-message states, without the phone number.
GRANT SELECT(message_id, request_id, client_id, message_kind, state, refusal_reason,
             failure_category, error_code, billed_segments, segments_delivered,
             accepted_at, updated_at, latency_ms, within_seven_seconds, is_final, version)
    ON sms.sms_messages TO analyst_reader;

-- Events, without the phone number and the text.
GRANT SELECT(event_id, event_time, event_kind, message_id, request_id, client_id,
             message_kind, state, reason, failure_category, error_code, segment_index,
             billed_segments, segments_delivered, sequence, attempt, accepted_at,
             latency_ms, within_seven_seconds, source_topic, source_partition,
             source_offset, recorded_at)
    ON sms.sms_events TO analyst_reader;

CREATE USER IF NOT EXISTS analyst
    IDENTIFIED WITH sha256_password BY 'CHANGE-ME'
    SETTINGS readonly = 1;

GRANT analyst_reader TO analyst;
SET DEFAULT ROLE analyst_reader TO analyst;
