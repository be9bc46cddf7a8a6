-- The sink's database, replicated: every table the sink creates in it is
-- created on both replicas, with the MergeTree engines replicated through
-- ClickHouse Keeper. Runs on each replica's first start, before the sink.
CREATE DATABASE IF NOT EXISTS sms
    ENGINE = Replicated('/clickhouse/databases/sms', '{shard}', '{replica}');
