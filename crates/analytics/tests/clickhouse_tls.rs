//! ClickHouse over TLS: the sink's client speaks `https://` to a TLS proxy (a certificate made here) in front of the real local ClickHouse, migrates and reads the schema through it, and refuses the server while it does not trust the certificate.

use std::error::Error as _;

use analytics::{schema, AnalyticsConfig};
use sms_harness::tls::{SelfSigned, TlsTerminator};
use sms_harness::unique_name;

/// Every message in an error's chain, outermost first.
fn chain(error: &clickhouse::error::Error) -> String {
    let mut messages = vec![error.to_string()];
    let mut source = error.source();
    while let Some(inner) = source {
        messages.push(inner.to_string());
        source = inner.source();
    }
    messages.join(": ")
}

#[tokio::test]
async fn https_urls_work_once_the_servers_ca_is_trusted() {
    let services = sms_harness::services().await.expect("a ClickHouse");
    let host_port = services
        .clickhouse_url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let upstream = tokio::net::lookup_host(host_port)
        .await
        .expect("CLICKHOUSE_URL resolves")
        .next()
        .expect("an address");
    let certificate = SelfSigned::localhost().expect("test certificate");
    let proxy = TlsTerminator::start(&certificate, upstream)
        .await
        .expect("tls proxy");
    let file = format!(
        "[clickhouse]\nurl = \"https://localhost:{}\"\ndatabase = {:?}\n",
        proxy.address.port(),
        unique_name("analytics_tls"),
    );

    // The system's CA store does not know the certificate: the handshake is
    // attempted and refused.
    let untrusting = AnalyticsConfig::from_sources(&file, Vec::new()).expect("valid");
    let err = untrusting
        .clickhouse
        .server_client()
        .query("SELECT 1")
        .fetch_one::<u8>()
        .await
        .expect_err("an untrusted certificate is refused");
    assert!(
        chain(&err).contains("certificate verify failed"),
        "{}",
        chain(&err)
    );

    // With the CA named (here by an environment override), the sink's
    // start-up path runs over TLS: migrations, then a read.
    let trusting = AnalyticsConfig::from_sources(
        &file,
        vec![(
            "ANALYTICS_CLICKHOUSE__CA_FILE".to_string(),
            certificate.cert_file.display().to_string(),
        )],
    )
    .expect("valid");
    let report = schema::migrate(&trusting.clickhouse, 13)
        .await
        .expect("migrations applied through tls");
    assert!(!report.applied.is_empty());
    let recorded: u64 = trusting
        .clickhouse
        .client()
        .query("SELECT count() FROM schema_migrations")
        .fetch_one()
        .await
        .expect("read through tls");
    assert_eq!(recorded as usize, report.applied.len());

    // A CA file that is not PEM is refused at start-up, by key.
    let not_pem = std::env::temp_dir().join(unique_name("not-a-ca"));
    std::fs::write(&not_pem, "not a certificate").expect("writes");
    let err = AnalyticsConfig::from_sources(
        &file,
        vec![(
            "ANALYTICS_CLICKHOUSE__CA_FILE".to_string(),
            not_pem.display().to_string(),
        )],
    )
    .expect_err("refused");
    assert!(
        err.to_string().contains("clickhouse.ca_file = ")
            && err.to_string().contains("expected PEM certificates"),
        "{err}"
    );
}
