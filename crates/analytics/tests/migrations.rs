//! Migrations apply once, re-run as no-ops, and a failing one stops with an error naming it.

mod common;

use analytics::schema::{self, Migration, MIGRATIONS};
use common::test_bed;

#[tokio::test]
async fn migrations_apply_once_and_rerun_as_no_ops() {
    let bed = test_bed("analytics_migrations", 1).await;
    let first = schema::migrate(&bed.config.clickhouse, 13)
        .await
        .expect("applies");
    assert_eq!(first.applied.len(), MIGRATIONS.len());
    assert_eq!(first.already_applied, 0);
    let codes = bed
        .count("SELECT count() FROM carrier_error_codes FINAL")
        .await;
    assert_eq!(
        codes,
        sms_core::carrier::CARRIER_CODES.len() as u64 + 1,
        "every code and 0"
    );
    let powered_off: String = bed
        .client
        .query("SELECT category FROM carrier_error_codes FINAL WHERE code = 25")
        .fetch_one()
        .await
        .expect("code 25");
    assert_eq!(powered_off, "POWERED_OFF");

    let second = schema::migrate(&bed.config.clickhouse, 13)
        .await
        .expect("re-runs");
    assert!(second.applied.is_empty(), "{:?}", second.applied);
    assert_eq!(second.already_applied, MIGRATIONS.len());
    let recorded = bed.count("SELECT count() FROM schema_migrations").await;
    assert_eq!(
        recorded,
        MIGRATIONS.len() as u64,
        "each migration recorded once"
    );

    // A migration interrupted half-way (recorded as not applied) re-runs
    // without harm: its statements are idempotent.
    for migration in MIGRATIONS {
        let replay = schema::apply(
            &bed.config.clickhouse,
            &[Migration {
                version: 1000 + migration.version,
                ..*migration
            }],
            13,
        )
        .await;
        assert!(replay.is_ok(), "{} re-runs: {replay:?}", migration.name);
    }
    let codes_again = bed
        .count("SELECT count() FROM carrier_error_codes FINAL")
        .await;
    assert_eq!(codes_again, codes);

    let ttl: String = bed
        .client
        .query("SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'sms_events'")
        .fetch_one()
        .await
        .expect("table definition");
    assert!(ttl.contains("toIntervalMonth(13)"), "{ttl}");
}

#[tokio::test]
async fn a_failing_migration_stops_start_up_naming_it() {
    let bed = test_bed("analytics_migration_fails", 1).await;
    let broken = Migration {
        version: 1,
        name: "0001_broken",
        sql: "CREATE TABLE IF NOT EXISTS fine (x UInt8) ENGINE = Memory;\nCREATE TABLE nonsense (",
    };
    let error = schema::apply(&bed.config.clickhouse, &[broken], 13)
        .await
        .expect_err("a syntax error fails the migration");
    let message = error.to_string();
    assert!(
        message.contains("0001_broken") && message.contains("statement 2"),
        "{message}"
    );
    let recorded = bed.count("SELECT count() FROM schema_migrations").await;
    assert_eq!(recorded, 0, "a failed migration is not recorded");
}
