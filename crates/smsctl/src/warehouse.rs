//! The ClickHouse connection options every reading command shares, and running the queries they print.

use clickhouse::{RowOwned, RowRead};
use sms_core::Secret;

use crate::error::SmsctlError;

/// Where the analytics tables are.
#[derive(Debug, Clone, clap::Args)]
pub struct ClickHouseOptions {
    /// ClickHouse HTTP interface.
    #[arg(
        long = "clickhouse",
        env = "CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123",
        global = true
    )]
    pub url: String,
    /// Database holding sms_events and the report tables.
    #[arg(
        long,
        env = "CLICKHOUSE_DATABASE",
        default_value = "sms",
        global = true
    )]
    pub database: String,
    /// ClickHouse user.
    #[arg(
        long = "clickhouse-user",
        env = "CLICKHOUSE_USER",
        default_value = "default",
        global = true
    )]
    pub user: String,
    /// ClickHouse password (prefer the environment variable); never printed.
    #[arg(
        long = "clickhouse-password",
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    pub password: Secret,
    /// PEM file of a private CA that signed the server's certificate, for
    /// an `https://` URL; trusted besides the system's CA store.
    #[arg(long = "clickhouse-ca-file", env = "CLICKHOUSE_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ClickHouseOptions {
    /// Options for `database` at `url` as the default user.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: database.into(),
            user: "default".into(),
            password: Secret::default(),
            ca_file: None,
        }
    }

    /// A client on the configured database.
    pub fn client(&self) -> Warehouse {
        let client = analytics::config::http_client(self.ca_file.as_deref())
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(self.password.expose())
            .with_database(&self.database);
        Warehouse {
            client,
            url: self.url.clone(),
            database: self.database.clone(),
        }
    }
}

/// A ClickHouse client that names the server and database in its errors.
#[derive(Clone)]
pub struct Warehouse {
    pub client: clickhouse::Client,
    pub url: String,
    pub database: String,
}

impl Warehouse {
    /// Wraps an existing client (tests, benches).
    pub fn from_client(client: clickhouse::Client, url: &str, database: &str) -> Self {
        Self {
            client,
            url: url.into(),
            database: database.into(),
        }
    }

    /// The error for a failed `operation`.
    pub fn error(&self, operation: &'static str, source: clickhouse::error::Error) -> SmsctlError {
        SmsctlError::ClickHouse {
            url: self.url.clone(),
            database: self.database.clone(),
            operation,
            source: Box::new(source),
        }
    }

    /// Runs `sql` (complete, with its literals) and returns every row.
    pub async fn fetch<T>(&self, operation: &'static str, sql: &str) -> Result<Vec<T>, SmsctlError>
    where
        T: RowOwned + RowRead,
    {
        tracing::debug!(operation, sql, "clickhouse query");
        self.client
            .query(sql)
            .fetch_all::<T>()
            .await
            .map_err(|e| self.error(operation, e))
    }
}

/// Quotes `text` as a ClickHouse string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_escape_quotes_and_backslashes() {
        assert_eq!(quote("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(quote("13012345678"), "'13012345678'");
    }
}
