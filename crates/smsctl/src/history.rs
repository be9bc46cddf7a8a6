//! Generated history for benchmarks and demonstrations: months of traffic written into `sms_events` by ClickHouse itself (`INSERT … SELECT … FROM numbers(N)`).
//!
//! Each message gets the rows the analytics sink would store for it: a
//! request, then either a policy refusal and its final status (1 % of
//! messages), or a submit, the gateway's response, a carrier report (none
//! for messages whose report never came) and the final status. Outcomes and
//! latencies come from a hash of the message number, so a run is
//! reproducible: 98.2 % delivered, 0.5 % failed at the handset
//! ([`FAILED_CODE`], switched off), 0.3 % without a report, 1 % refused;
//! about 1 % of statuses come later than 7 s. Messages are spread evenly over the
//! span, to about 30 messages per phone number. The materialized views fill
//! `sms_messages`, `sms_daily` and `sms_monthly` as the rows go in.

use analytics::config::ClickHouseSettings;

use crate::error::SmsctlError;
use crate::warehouse::Warehouse;

/// The carrier error code of generated handset failures.
pub const FAILED_CODE: u8 = 25;

/// Messages written per `INSERT`.
pub const CHUNK_MESSAGES: u64 = 1_000_000;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct HistoryPlan {
    /// Unix milliseconds of the first acceptance.
    pub start_ms: i64,
    /// Milliseconds the messages are spread over.
    pub span_ms: i64,
    /// Messages in all.
    pub messages: u64,
}

impl HistoryPlan {
    /// Phone numbers the messages go to.
    pub fn phones(&self) -> u64 {
        (self.messages / 30).max(1)
    }

    /// The phone number (stored form) of message `n`.
    pub fn phone_of(&self, n: u64) -> String {
        format!("86130{:08}", n % self.phones())
    }
}

/// The statement writing messages `first .. first + count` of `plan`.
pub fn insert_sql(plan: &HistoryPlan, first: u64, count: u64) -> String {
    let category =
        analytics::rows::failure_category(sms_core::carrier::failure_category(FAILED_CODE));
    format!(
        "INSERT INTO sms_events (event_id, event_time, event_kind, message_id, request_id, client_id, phone,
    message_kind, state, reason, failure_category, error_code, segment_index, billed_segments,
    segments_delivered, sequence, text, attempt, accepted_at, latency_ms, within_seven_seconds,
    source_topic, source_partition, source_offset)
SELECT
    concat('history/', toString(n), '/', k) AS event_id,
    fromUnixTimestamp64Milli(accepted + multiIf(k = 'requested', 0, k = 'refused', 5, k = 'submitted', 20,
        k = 'gateway_response', 60, k = 'report', latency, outcome = 'UNKNOWN', 600000, latency + 5), 'UTC') AS event_time,
    k AS event_kind,
    if(k = 'report', '', message_id) AS message_id,
    if(k IN ('report', 'gateway_response'), '', concat('req-', toString(n))) AS request_id,
    if(k = 'requested', 'platform-12123', '') AS client_id,
    phone,
    if(k = 'report', '', message_kind) AS message_kind,
    multiIf(k = 'requested', '', k = 'refused', 'REFUSED', k IN ('submitted', 'gateway_response'), 'SUBMITTED',
        k = 'report', if(outcome = 'DELIVERED', 'DELIVERED', 'FAILED'), outcome) AS state,
    if(k IN ('refused', 'final_status') AND outcome = 'REJECTED', 'NOT_SUBSCRIBED', '') AS reason,
    if(k = 'final_status' AND outcome = 'FAILED', '{category}', '') AS failure_category,
    multiIf(k = 'gateway_response', '0', k = 'report', if(outcome = 'DELIVERED', '0', '{FAILED_CODE}'),
        k = 'final_status' AND outcome = 'FAILED', '{FAILED_CODE}', '') AS error_code,
    toInt16(if(k IN ('submitted', 'gateway_response'), 0, -1)) AS segment_index,
    toUInt16(k IN ('submitted', 'final_status') AND outcome != 'REJECTED') AS billed_segments,
    toUInt16(k = 'final_status' AND outcome = 'DELIVERED') AS segments_delivered,
    if(k IN ('submitted', 'gateway_response', 'report'), sequence, '') AS sequence,
    if(k = 'requested', if(message_kind = 'VERIFICATION_CODE', '【交管12123】您的验证码是******，5分钟内有效。', '【交管12123】您的机动车将于近期到期，请及时办理。'), '') AS text,
    toUInt16(0) AS attempt,
    fromUnixTimestamp64Milli(if(k = 'report', 0, accepted), 'UTC') AS accepted_at,
    if(k = 'final_status' AND outcome IN ('DELIVERED', 'FAILED'), toNullable(latency),
       if(k = 'gateway_response', toNullable(toInt64(40)), NULL)) AS latency_ms,
    toUInt8(k = 'final_status' AND (outcome = 'REJECTED' OR (outcome IN ('DELIVERED', 'FAILED') AND latency <= 7000))) AS within_seven_seconds,
    multiIf(k = 'requested', 'sms.requests.notify', k = 'report', 'sms.reports', k = 'final_status', 'sms.status', 'sms.dispatch') AS source_topic,
    toInt32(n % 6) AS source_partition,
    toInt64(n) AS source_offset
FROM
(
    SELECT
        number AS n,
        toInt64({start}) + toInt64(intDiv(number * {span}, {total})) AS accepted,
        lower(hex(MD5(concat('message-', toString(number))))) AS message_id,
        concat('86130', leftPad(toString(number % {phones}), 8, '0')) AS phone,
        multiIf(number % 10 < 5, 'VERIFICATION_CODE', number % 10 < 8, 'NOTICE', 'REMINDER') AS message_kind,
        cityHash64(number) % 1000 AS draw,
        multiIf(draw < 10, 'REJECTED', draw < 15, 'FAILED', draw < 18, 'UNKNOWN', 'DELIVERED') AS outcome,
        toInt64(800 + cityHash64(number, 1) % 3000 + if(cityHash64(number, 2) % 100 = 0, 9000, 0)) AS latency,
        concat('3075512345', leftPad(toString(intDiv(number, 4294967296)), 10, '0'), leftPad(toString(number % 4294967296), 10, '0')) AS sequence,
        multiIf(outcome = 'REJECTED', ['requested', 'refused', 'final_status'],
                outcome = 'UNKNOWN', ['requested', 'submitted', 'gateway_response', 'final_status'],
                ['requested', 'submitted', 'gateway_response', 'report', 'final_status']) AS kinds
    FROM numbers({first}, {count})
)
ARRAY JOIN kinds AS k",
        start = plan.start_ms,
        span = plan.span_ms,
        total = plan.messages.max(1),
        phones = plan.phones(),
    )
}

/// Creates the schema in `warehouse`'s database (if needed) and writes the
/// plan's messages in chunks; `on_chunk` hears the messages written so far.
pub async fn generate(
    warehouse: &Warehouse,
    settings: &ClickHouseSettings,
    plan: &HistoryPlan,
    mut on_chunk: impl FnMut(u64),
) -> Result<(), SmsctlError> {
    analytics::schema::migrate(settings, 13)
        .await
        .map_err(|e| SmsctlError::Store {
            url: warehouse.url.clone(),
            database: warehouse.database.clone(),
            source: Box::new(e),
        })?;
    let mut first = 0;
    while first < plan.messages {
        let count = CHUNK_MESSAGES.min(plan.messages - first);
        warehouse
            .client
            .query(&insert_sql(plan, first, count))
            .execute()
            .await
            .map_err(|e| warehouse.error("inserting generated history", e))?;
        first += count;
        on_chunk(first);
    }
    Ok(())
}
