-- The highest source offset stored per topic partition, kept by the same
-- insert that stores the rows. The sink reads it after a (re)start or a
-- rebalance and skips records at or below it: a batch redelivered because the
-- sink died between insert and commit is not stored twice.
CREATE TABLE IF NOT EXISTS sink_offsets
(
    topic LowCardinality(String),
    partition Int32,
    offset Int64
)
ENGINE = ReplacingMergeTree(offset)
ORDER BY (topic, partition)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS sink_offsets_mv TO sink_offsets AS
SELECT source_topic AS topic, source_partition AS partition, max(source_offset) AS offset
FROM sms_events
GROUP BY topic, partition
