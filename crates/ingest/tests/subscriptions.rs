//! Register, subscribe, query, cancel and change number: each change is on the compacted topic, and a fresh instance answers queries from it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{json, read, start, start_with};
use rdkafka::message::Message;
use sms_core::events::{SubscriptionRecord, SubscriptionSource, SubscriptionState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_functions_write_the_compacted_topic() {
    let t = start("subscriptions").await;

    let (got, view) = json(
        t.signed(
            "POST",
            "/v1/subscriptions",
            r#"{"phone": "+86 130 1111 2222", "kinds": ["NOTICE"]}"#,
        )
        .await,
    )
    .await;
    assert_eq!(got, 201, "{view}");
    assert_eq!(view["phone"], "8613011112222");
    assert_eq!(view["state"], "REGISTERED");
    assert_eq!(view["kinds"], serde_json::json!(["NOTICE"]));

    let (got, view) = json(
        t.signed(
            "POST",
            "/v1/subscriptions/13011112222/subscribe",
            r#"{"kinds": ["reminder", "verification_code"]}"#,
        )
        .await,
    )
    .await;
    assert_eq!(got, 200, "{view}");
    assert_eq!(
        view["kinds"],
        serde_json::json!(["VERIFICATION_CODE", "NOTICE", "REMINDER"])
    );

    let (got, view) = json(
        t.signed(
            "POST",
            "/v1/subscriptions/13011112222/cancel",
            r#"{"kinds": ["REMINDER"]}"#,
        )
        .await,
    )
    .await;
    assert_eq!(got, 200, "{view}");
    assert_eq!(
        view["kinds"],
        serde_json::json!(["VERIFICATION_CODE", "NOTICE"])
    );

    let (got, view) = json(t.signed("GET", "/v1/subscriptions/8613011112222", "").await).await;
    assert_eq!(got, 200);
    assert_eq!(
        view["kinds"],
        serde_json::json!(["VERIFICATION_CODE", "NOTICE"])
    );

    let (got, view) = json(
        t.signed(
            "POST",
            "/v1/subscriptions/13011112222/change",
            r#"{"new_phone": "18633334444"}"#,
        )
        .await,
    )
    .await;
    assert_eq!(got, 200, "{view}");
    assert_eq!(view["phone"], "8618633334444");
    assert_eq!(view["state"], "REGISTERED");

    let (_, old) = json(t.signed("GET", "/v1/subscriptions/13011112222", "").await).await;
    assert_eq!(old["state"], "CANCELLED");
    assert_eq!(old["moved_to"], "8618633334444");

    let (got, view) = json(
        t.signed("POST", "/v1/subscriptions/18633334444/cancel", "")
            .await,
    )
    .await;
    assert_eq!(got, 200, "{view}");
    assert_eq!(view["state"], "CANCELLED");

    // Refusals: a number outside Unicom, unknown kinds, changes to numbers never registered.
    let (got, e) = json(
        t.signed("POST", "/v1/subscriptions", r#"{"phone": "13912345678"}"#)
            .await,
    )
    .await;
    assert_eq!(
        (got, e["error"]["code"].as_str()),
        (422, Some("not_unicom"))
    );
    let (got, e) = json(
        t.signed(
            "POST",
            "/v1/subscriptions",
            r#"{"phone": "13012345678", "kinds": ["ADS"]}"#,
        )
        .await,
    )
    .await;
    assert_eq!(
        (got, e["error"]["code"].as_str()),
        (422, Some("unknown_kind"))
    );
    let (got, e) = json(
        t.signed(
            "POST",
            "/v1/subscriptions/13099998888/subscribe",
            r#"{"kinds": ["NOTICE"]}"#,
        )
        .await,
    )
    .await;
    assert_eq!((got, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (got, e) = json(t.signed("GET", "/v1/subscriptions/13099998888", "").await).await;
    assert_eq!((got, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (got, e) = json(
        t.signed(
            "POST",
            "/v1/subscriptions",
            r#"{"phone": "13012345678", "extra": 1}"#,
        )
        .await,
    )
    .await;
    assert_eq!(
        (got, e["error"]["code"].as_str()),
        (400, Some("unknown_field"))
    );

    // The topic holds every change, keyed by phone number.
    let records = read(
        &t.consumer(&t.kafka.topics().subscriptions),
        7,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        records.len(),
        6,
        "register, subscribe, cancel kind, change (two), cancel"
    );
    let codec = sms_core::avro::AvroCodec::single_object();
    let mut last: HashMap<String, SubscriptionRecord> = HashMap::new();
    for record in &records {
        let decoded: SubscriptionRecord = codec
            .decode(record.payload().expect("payload"))
            .await
            .expect("decodes");
        assert_eq!(record.key(), Some(decoded.phone.as_bytes()));
        last.insert(decoded.phone.clone(), decoded);
    }
    let old = &last["8613011112222"];
    assert_eq!(old.state, SubscriptionState::Cancelled);
    assert_eq!(old.source, SubscriptionSource::NumberChange);
    assert_eq!(old.moved_to.as_deref(), Some("8618633334444"));
    assert_eq!(last["8618633334444"].state, SubscriptionState::Cancelled);
    assert_eq!(
        last["8618633334444"].client_id.as_deref(),
        Some(common::CLIENT)
    );

    // A fresh instance on the same topics answers from the topic.
    let kafka = t.kafka.clone();
    t.service.stop().await;
    let again = start_with(common::config(kafka)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (got, view) = json(
            again
                .signed("GET", "/v1/subscriptions/13011112222", "")
                .await,
        )
        .await;
        if got == 200 {
            assert_eq!(view["state"], "CANCELLED");
            assert_eq!(view["moved_to"], "8618633334444");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never loaded: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    again.service.stop().await;
}
