//! Numbered, idempotent migrations of the ClickHouse schema in `schemas/clickhouse/`, applied at start-up.
//!
//! Applied migrations are recorded in `schema_migrations`; a start applies
//! those not recorded yet, in order, and stops at the first statement that
//! fails, naming the migration and the statement. Statements are written to
//! be re-runnable (`IF NOT EXISTS`, replacing engines for seeded rows), so a
//! start interrupted inside a migration repeats it without harm.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use sms_core::carrier::CARRIER_CODES;

use crate::config::ClickHouseSettings;
use crate::error::AnalyticsError;

/// One migration: its number, its file name and its SQL text.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../../schemas/clickhouse/", $name, ".sql")),
        }
    };
}

/// Every migration, in the order they apply.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_events"),
    migration!(2, "0002_messages"),
    migration!(3, "0003_aggregates"),
    migration!(4, "0004_carrier_error_codes"),
    migration!(5, "0005_sink_offsets"),
    migration!(6, "0006_messages_skip_duplicates"),
];

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version";

#[derive(Debug, Row, Serialize, Deserialize)]
struct AppliedMigration {
    version: u32,
    name: String,
}

/// What a run of [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationReport {
    /// Names of the migrations applied by this run.
    pub applied: Vec<&'static str>,
    /// How many were already recorded.
    pub already_applied: usize,
}

/// Creates the database if needed, applies the migrations not yet recorded
/// (with `{ttl_months}` replaced), and writes the carrier's error codes.
pub async fn migrate(
    settings: &ClickHouseSettings,
    ttl_months: u32,
) -> Result<MigrationReport, AnalyticsError> {
    let report = apply(settings, MIGRATIONS, ttl_months).await?;
    seed_carrier_codes(settings).await?;
    Ok(report)
}

/// One row of `carrier_error_codes`.
#[derive(Debug, Row, Serialize, Deserialize)]
struct CarrierCodeRow {
    code: i32,
    category: String,
    description_zh: String,
    description_en: String,
}

/// Writes the carrier's error codes from `sms_core::carrier` into
/// `carrier_error_codes`, with code 0 ("no error"); rows already there with
/// the same code are replaced.
pub async fn seed_carrier_codes(settings: &ClickHouseSettings) -> Result<usize, AnalyticsError> {
    let failed = |e| AnalyticsError::clickhouse("writing carrier_error_codes", e);
    let mut rows = vec![CarrierCodeRow {
        code: 0,
        category: "NONE".into(),
        description_zh: "无错误，命令正确接收".into(),
        description_en: "no error; command accepted".into(),
    }];
    rows.extend(CARRIER_CODES.iter().map(|c| CarrierCodeRow {
        code: i32::from(c.code),
        category: crate::rows::failure_category(c.category).into(),
        description_zh: c.zh.into(),
        description_en: c.en.into(),
    }));
    let client = settings.client();
    let mut insert = client
        .insert::<CarrierCodeRow>("carrier_error_codes")
        .await
        .map_err(failed)?;
    for row in &rows {
        insert.write(row).await.map_err(failed)?;
    }
    insert.end().await.map_err(failed)?;
    Ok(rows.len())
}

/// Applies `migrations` (in the given order) that are not yet recorded.
pub async fn apply(
    settings: &ClickHouseSettings,
    migrations: &[Migration],
    ttl_months: u32,
) -> Result<MigrationReport, AnalyticsError> {
    settings
        .server_client()
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            settings.database
        ))
        .execute()
        .await
        .map_err(|e| AnalyticsError::clickhouse("creating the database", e))?;
    let client = settings.client();
    client
        .query(CREATE_MIGRATIONS_TABLE)
        .execute()
        .await
        .map_err(|e| AnalyticsError::clickhouse("creating schema_migrations", e))?;
    let applied: Vec<u32> = client
        .query("SELECT DISTINCT version FROM schema_migrations")
        .fetch_all()
        .await
        .map_err(|e| AnalyticsError::clickhouse("reading schema_migrations", e))?;

    let mut report = MigrationReport::default();
    for migration in migrations {
        if applied.contains(&migration.version) {
            report.already_applied += 1;
            continue;
        }
        let sql = migration
            .sql
            .replace("{ttl_months}", &ttl_months.to_string());
        for (index, statement) in statements(&sql).into_iter().enumerate() {
            client
                .query(statement)
                .execute()
                .await
                .map_err(|e| AnalyticsError::Migration {
                    name: migration.name,
                    statement: index + 1,
                    source: Box::new(e),
                })?;
        }
        let mut insert = client
            .insert::<AppliedMigration>("schema_migrations")
            .await
            .map_err(|e| AnalyticsError::clickhouse("recording a migration", e))?;
        let record = AppliedMigration {
            version: migration.version,
            name: migration.name.into(),
        };
        insert
            .write(&record)
            .await
            .map_err(|e| AnalyticsError::clickhouse("recording a migration", e))?;
        insert
            .end()
            .await
            .map_err(|e| AnalyticsError::clickhouse("recording a migration", e))?;
        tracing::info!(migration = migration.name, "schema migration applied");
        report.applied.push(migration.name);
    }
    Ok(report)
}

/// Splits a migration into statements at `;` outside quotes and comments;
/// statements that are only comments are dropped.
pub fn statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = sql.as_bytes();
    let (mut start, mut i) = (0, 0);
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => {
                if bytes.get(i + 1) == Some(&q) {
                    i += 1;
                } else {
                    quote = None;
                }
            }
            Some(_) => {}
            None if b == b'\'' || b == b'"' || b == b'`' => quote = Some(b),
            None if b == b'-' && bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            None if b == b';' => {
                out.push(&sql[start..i]);
                start = i + 1;
            }
            None => {}
        }
        i += 1;
    }
    out.push(&sql[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_semicolons_outside_quotes_and_comments() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE a (x String COMMENT 'a;b''c');\n\
                   INSERT INTO a VALUES ('x;y');\n-- trailing comment\n";
        let parts = statements(sql);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(parts[0].ends_with("COMMENT 'a;b''c')"));
        assert_eq!(parts[1], "INSERT INTO a VALUES ('x;y')");
    }

    #[test]
    fn every_migration_has_statements_and_increasing_numbers() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for migration in MIGRATIONS {
            assert!(!statements(migration.sql).is_empty(), "{}", migration.name);
            assert!(
                migration
                    .name
                    .starts_with(&format!("{:04}_", migration.version)),
                "{}",
                migration.name
            );
        }
    }
}
