-- The carrier's result and error codes (docs/sgip-1.2.md section 5.1) with the
-- failure category the monthly report groups failures by and a Chinese and
-- English description. The rows come from the table the status service
-- categorises with (`sms_core::carrier`): the sink writes them at every
-- start, and the replacing engine keeps one row per code. Read with FINAL.
CREATE TABLE IF NOT EXISTS carrier_error_codes
(
    code Int32,
    category LowCardinality(String) COMMENT 'NONE for 0, else a FailureCategory symbol',
    description_zh String,
    description_en String
)
ENGINE = ReplacingMergeTree
ORDER BY code
