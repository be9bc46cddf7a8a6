//! `/metrics` serves Prometheus text and `/healthz` follows whether ClickHouse takes inserts.

use analytics::exporter::{self, Health};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn metrics_and_health_are_served() {
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let (address, task) = exporter::serve(
        "127.0.0.1:0".parse().expect("address"),
        health.clone(),
        shutdown.clone(),
    )
    .await
    .expect("serves");
    metrics::counter!(exporter::ROWS_INSERTED, "table" => "sms_events").increment(7);

    let http = reqwest::Client::new();
    let text = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("analytics_rows_inserted_total{table=\"sms_events\"} 7"),
        "{text}"
    );

    let healthz = |http: reqwest::Client| async move {
        http.get(format!("http://{address}/healthz"))
            .send()
            .await
            .expect("answers")
            .status()
            .as_u16()
    };
    assert_eq!(healthz(http.clone()).await, 200);
    health.set_storing(false);
    assert_eq!(healthz(http.clone()).await, 503);

    shutdown.cancel();
    task.await.expect("the endpoint stops");
}
