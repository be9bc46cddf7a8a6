//! The API over HTTPS, against the real local Kafka: a certificate made here, a real TLS client that trusts it, and plain HTTP on the same port getting no answer.

mod common;

use std::time::Duration;

use common::{config, notice, start_with, TOKEN};
use ingest::tls::TlsSettings;
use sms_harness::kafka_for_test;
use sms_harness::tls::SelfSigned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn the_api_answers_over_https_and_not_over_plain_http() {
    let kafka = kafka_for_test("ingest_https", 3)
        .await
        .expect("kafka for the test");
    let certificate = SelfSigned::localhost().expect("test certificate");
    let mut config = config(kafka);
    config.tls = Some(TlsSettings {
        cert_file: certificate.cert_file.clone(),
        key_file: certificate.key_file.clone(),
    });
    let mut t = start_with(config).await;
    let port = t.service.local_addr().port();

    // A client that trusts the certificate, on the system OpenSSL.
    t.base = format!("https://localhost:{port}");
    t.http = reqwest::Client::builder()
        .use_native_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&certificate.cert_pem).expect("pem"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("https client");
    let health = t
        .http
        .get(format!("{}/healthz", t.base))
        .send()
        .await
        .expect("https request answered");
    assert_eq!(health.status(), 200);
    let sent = t
        .bearer(
            TOKEN,
            "POST",
            "/v1/messages",
            &notice("https-1", "13012345678").to_string(),
        )
        .await;
    assert_eq!(sent.status(), 202, "{:?}", sent.text().await);

    // The system's CA store does not know the certificate: no connection.
    let untrusting = reqwest::Client::builder()
        .use_native_tls()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let err = untrusting
        .get(format!("{}/healthz", t.base))
        .send()
        .await
        .expect_err("an unknown certificate is refused by the client");
    assert!(err.is_connect(), "{err:?}");

    // Plain HTTP to the HTTPS port is never answered in HTTP.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let err = plain
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect_err("plain HTTP gets no answer");
    assert!(!err.is_status(), "{err:?}");
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("writes");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "plain HTTP got an HTTP answer: {answer:?}"
    );

    // Each refused handshake is counted.
    let metrics = t
        .http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .expect("metrics over https")
        .text()
        .await
        .expect("metrics text");
    let failures: f64 = metrics
        .lines()
        .find(|line| line.starts_with("ingest_tls_handshake_failures_total"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .expect("the handshake failure counter is exported");
    assert!(failures >= 3.0, "{failures} handshake failures counted");

    t.service.shutdown_token().cancel();
}
