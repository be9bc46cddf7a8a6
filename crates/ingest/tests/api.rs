//! The HTTP API against the real local Kafka: accepted messages land on the right topic once, retries are not second messages, every kind of bad input gets its 4xx and code.

mod common;

use std::time::Duration;

use common::{json, notice, read, request_of, start, CLIENT, SLOW_TOKEN, TOKEN};
use ingest::submit::message_id;
use rdkafka::message::Message;
use sms_core::events::{MessageKind, RequestSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_validated_and_written_to_the_topic_of_their_kind() {
    let t = start("api_submit").await;
    let topics = t.kafka.topics();

    let otp = serde_json::json!({
        "request_id": "otp-1",
        "phone": "+86 186 1234 1234",
        "kind": "verification_code",
        "text": "您的验证码是 482913，5分钟内有效。",
        "expires_at": sms_core::events::now_millis() + 300_000
    });
    let (status, body) = json(t.signed("POST", "/v1/messages", &otp.to_string()).await).await;
    assert_eq!(status, 202, "{body}");
    let otp_id = message_id(CLIENT, "otp-1").to_string();
    assert_eq!(body["message_id"], otp_id.as_str());
    assert_eq!(body["duplicate"], false);

    let (status, body) = json(
        t.bearer(
            TOKEN,
            "POST",
            "/v1/messages",
            &notice("notice-1", "13012345678").to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let template = serde_json::json!({
        "request_id": "reminder-1",
        "phone": "8615512345678",
        "kind": "REMINDER",
        "template_id": "inspection",
        "params": {"plate": "京A12345", "date": "6月30日"}
    });
    let (status, body) = json(
        t.signed("POST", "/v1/messages", &template.to_string())
            .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let otp_records = read(
        &t.consumer(&topics.requests_otp),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(otp_records.len(), 1);
    assert_eq!(otp_records[0].key(), Some(&b"8618612341234"[..]));
    let request = request_of(&otp_records[0]).await;
    assert_eq!(request.message_id, otp_id);
    assert_eq!(request.kind, MessageKind::VerificationCode);
    assert_eq!(request.client_id, CLIENT);
    assert_eq!(request.source, RequestSource::Http);
    assert_eq!(
        request.text,
        "【交管12123】您的验证码是 482913，5分钟内有效。"
    );

    let notify = read(
        &t.consumer(&topics.requests_notify),
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(notify.len(), 2);
    let mut texts = Vec::new();
    for record in &notify {
        texts.push(request_of(record).await.text);
    }
    texts.sort();
    assert!(
        texts.contains(
            &"【交管12123】您的车辆京A12345年检将于6月30日到期，请及时办理。".to_string()
        ),
        "{texts:?}"
    );
    t.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_is_not_a_second_message() {
    let t = start("api_retry").await;
    let body = notice("retry-1", "13112345678").to_string();

    let (first, answer) = json(t.signed("POST", "/v1/messages", &body).await).await;
    assert_eq!(first, 202, "{answer}");
    let id = answer["message_id"].clone();
    for _ in 0..3 {
        let (status, again) = json(t.signed("POST", "/v1/messages", &body).await).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["message_id"], id);
        assert_eq!(again["duplicate"], true);
    }
    // Also inside a batch, and with another spelling of the same number.
    let batch = serde_json::json!({"messages": [notice("retry-1", "8613112345678")]});
    let (status, answer) = json(
        t.signed("POST", "/v1/messages/batch", &batch.to_string())
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["results"][0]["message_id"], id);
    assert_eq!(answer["results"][0]["duplicate"], true);

    // The same request id for different content is a conflict, not a message.
    let other = notice("retry-1", "13212345678").to_string();
    let (status, answer) = json(t.signed("POST", "/v1/messages", &other).await).await;
    assert_eq!(status, 409);
    assert_eq!(answer["error"]["code"], "request_id_reused");

    // Exactly one record reached Kafka.
    let records = read(
        &t.consumer(&t.kafka.topics().requests_notify),
        5,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(records.len(), 1, "one record for four submissions");
    assert_eq!(
        request_of(&records[0]).await.message_id,
        id.as_str().unwrap_or_default()
    );
    t.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_each_item() {
    let t = start("api_batch").await;
    let batch = serde_json::json!({"messages": [
        notice("b-0", "13012340000"),
        notice("b-1", "13812340000"),
        {"request_id": "b-2", "phone": "13012340002", "kind": "NOTICE", "text": "  "},
        notice("b-0", "13012340000"),
        {"request_id": "b-4", "phone": "13012340004", "kind": "NOTICE", "text": "x", "colour": "red"},
        {"request_id": "b-5", "phone": "13012340005", "kind": "VERIFICATION_CODE", "text": "验证码 1234"},
        {"request_id": "b-6", "phone": 13012340006u64, "kind": "NOTICE", "text": "x"},
    ]});
    let (status, answer) = json(
        t.signed("POST", "/v1/messages/batch", &batch.to_string())
            .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["refused"], 5);
    let code = |i: usize| {
        answer["results"][i]["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(answer["results"][0]["message_id"].is_string());
    assert_eq!(code(1), "not_unicom");
    assert_eq!(code(2), "empty_text");
    assert_eq!(code(3), "duplicate_in_batch");
    assert_eq!(code(4), "unknown_field");
    assert!(answer["results"][5]["message_id"].is_string());
    assert_eq!(code(6), "wrong_type");
    assert_eq!(answer["results"][1]["request_id"], "b-1");

    let topics = t.kafka.topics();
    let notify = read(
        &t.consumer(&topics.requests_notify),
        3,
        Duration::from_secs(10),
    )
    .await;
    let otp = read(&t.consumer(&topics.requests_otp), 2, Duration::from_secs(5)).await;
    assert_eq!(
        (notify.len(), otp.len()),
        (1, 1),
        "only the accepted items were written"
    );
    t.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_with_a_code_and_the_service_carries_on() {
    let kafka = sms_harness::kafka_for_test("api_bad_input", 3)
        .await
        .expect("kafka");
    let mut config = common::config(kafka);
    // Small enough that an oversize body still fits the socket buffers, so
    // the client reads the answer instead of a reset.
    config.limits.max_body_bytes = 256 * 1024;
    let t = common::start_with(config).await;
    let now = sms_core::events::now_millis();
    let long_text = "好".repeat(700);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed", "{\"request_id\": ".into(), 400, "malformed_json"),
        ("empty body", String::new(), 400, "malformed_json"),
        ("not an object", "[1,2]".into(), 400, "wrong_type"),
        ("wrong type", r#"{"request_id":"r","phone":13012345678,"kind":"NOTICE","text":"x"}"#.into(), 400, "wrong_type"),
        ("unknown field", r#"{"request_id":"r","phone":"13012345678","kind":"NOTICE","text":"x","to":"y"}"#.into(), 400, "unknown_field"),
        ("missing field", r#"{"request_id":"r","kind":"NOTICE","text":"x"}"#.into(), 400, "missing_field"),
        ("bad number", notice("r", "1301234").to_string(), 422, "invalid_number"),
        ("not unicom", notice("r", "13912345678").to_string(), 422, "not_unicom"),
        ("empty text", r#"{"request_id":"r","phone":"13012345678","kind":"NOTICE","text":""}"#.into(), 422, "empty_text"),
        ("forbidden text", r#"{"request_id":"r","phone":"13012345678","kind":"NOTICE","text":"年终促销大酬宾"}"#.into(), 422, "forbidden_content"),
        ("too long", serde_json::json!({"request_id":"r","phone":"13012345678","kind":"NOTICE","text": long_text}).to_string(), 422, "text_too_long"),
        ("unknown kind", r#"{"request_id":"r","phone":"13012345678","kind":"ADVERT","text":"x"}"#.into(), 422, "unknown_kind"),
        ("expired", serde_json::json!({"request_id":"r","phone":"13012345678","kind":"NOTICE","text":"x","expires_at": now - 1}).to_string(), 422, "expired"),
        ("schedule after expiry", serde_json::json!({"request_id":"r","phone":"13012345678","kind":"NOTICE","text":"x","expires_at": now + 10_000, "scheduled_at": now + 20_000}).to_string(), 422, "scheduled_after_expiry"),
        ("bad extension", r#"{"request_id":"r","phone":"13012345678","kind":"NOTICE","text":"x","sp_extension":"12ab"}"#.into(), 422, "invalid_extension"),
        ("text and template", r#"{"request_id":"r","phone":"13012345678","kind":"NOTICE","text":"x","template_id":"inspection"}"#.into(), 400, "invalid_request"),
        ("empty request id", r#"{"request_id":" ","phone":"13012345678","kind":"NOTICE","text":"x"}"#.into(), 400, "invalid_request"),
        ("unknown template", r#"{"request_id":"r","phone":"13012345678","kind":"NOTICE","template_id":"nope"}"#.into(), 422, "unknown_template"),
        ("missing parameter", r#"{"request_id":"r","phone":"13012345678","kind":"NOTICE","template_id":"inspection","params":{"plate":"A"}}"#.into(), 422, "missing_parameter"),
        ("unused parameter", r#"{"request_id":"r","phone":"13012345678","kind":"NOTICE","template_id":"inspection","params":{"plate":"A","date":"B","x":"C"}}"#.into(), 422, "unknown_parameter"),
    ];
    for (name, body, status, code) in &cases {
        let (got, answer) = json(t.signed("POST", "/v1/messages", body).await).await;
        assert_eq!(got, *status, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], *code, "{name}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }

    // Oversize payloads and batches.
    let huge = "x".repeat(300 * 1024);
    let (got, answer) = json(t.signed("POST", "/v1/messages", &huge).await).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let many: Vec<_> = (0..1001)
        .map(|n| notice(&format!("m{n}"), "13012345678"))
        .collect();
    let batch = serde_json::json!({ "messages": many }).to_string();
    let (got, answer) = json(t.signed("POST", "/v1/messages/batch", &batch).await).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (413, Some("batch_too_large"))
    );
    let (got, answer) = json(
        t.signed("POST", "/v1/messages/batch", r#"{"messages": []}"#)
            .await,
    )
    .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );

    // Credentials.
    let body = notice("auth-1", "13012345678").to_string();
    let now_s = sms_core::events::now_millis().to_string();
    let (got, answer) = json(
        t.signed_at("POST", "/v1/messages", &body, &now_s, "nonce-a")
            .await,
    )
    .await;
    assert_eq!(got, 202, "{answer}");
    let (got, answer) = json(
        t.signed_at("POST", "/v1/messages", &body, &now_s, "nonce-a")
            .await,
    )
    .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (401, Some("replayed_nonce"))
    );
    let stale = (sms_core::events::now_millis() - 301_000).to_string();
    let (got, answer) = json(
        t.signed_at("POST", "/v1/messages", &body, &stale, "nonce-b")
            .await,
    )
    .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (401, Some("stale_timestamp"))
    );
    let bad_signature = t
        .http
        .post(format!("{}/v1/messages", t.base))
        .header("x-client-id", CLIENT)
        .header("x-timestamp", now_s.as_str())
        .header("x-nonce", "nonce-c")
        .header("x-signature", "00".repeat(32))
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    let (got, answer) = json(bad_signature).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (401, Some("bad_signature"))
    );
    let (got, answer) = json(
        t.http
            .post(format!("{}/v1/messages", t.base))
            .body(body.clone())
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (got, answer) = json(t.bearer("wrong-token", "POST", "/v1/messages", &body).await).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (401, Some("unknown_client"))
    );

    // Rate limit: the slow client may make two calls at once, not three.
    for _ in 0..2 {
        let (got, _) = json(t.bearer(SLOW_TOKEN, "GET", "/v1/requests/r1", "").await).await;
        assert_eq!(got, 200);
    }
    let response = t.bearer(SLOW_TOKEN, "GET", "/v1/requests/r1", "").await;
    assert!(response.headers().get("retry-after").is_some());
    let (got, answer) = json(response).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );

    // Routes and methods that do not exist.
    let (got, answer) = json(t.bearer(TOKEN, "GET", "/v1/nothing", "").await).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (got, answer) = json(t.bearer(TOKEN, "DELETE", "/v1/messages", "").await).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    // Still serving, and still writing.
    let (got, _) = json(
        t.http
            .get(format!("{}/healthz", t.base))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(got, 200);
    let (got, answer) = json(
        t.signed(
            "POST",
            "/v1/messages",
            &notice("after", "13012345678").to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(got, 202, "{answer}");
    t.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_answered_from_the_status_topic() {
    let t = start("api_status").await;
    let (got, answer) = json(
        t.signed(
            "POST",
            "/v1/messages",
            &notice("s-1", "13012345678").to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(got, 202, "{answer}");
    let id = answer["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let (got, view) = json(t.signed("GET", &format!("/v1/messages/{id}"), "").await).await;
    assert_eq!(
        (got, view["state"].as_str()),
        (200, Some("ACCEPTED")),
        "{view}"
    );
    let unknown = message_id(CLIENT, "never-sent");
    let (_, view) = json(
        t.signed("GET", &format!("/v1/messages/{unknown}"), "")
            .await,
    )
    .await;
    assert_eq!(view["state"], "PENDING");
    let (got, view) = json(t.signed("GET", "/v1/messages/not-a-uuid", "").await).await;
    assert_eq!(
        (got, view["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let now = sms_core::events::now_millis();
    let status = sms_core::events::FinalStatus {
        message_id: id.clone(),
        request_id: "s-1".into(),
        phone: "8613012345678".into(),
        kind: MessageKind::Notice,
        status: sms_core::events::FinalState::Delivered,
        failure_category: None,
        error_code: Some(0),
        refusal_reason: None,
        billed_segments: 1,
        segments_delivered: 1,
        accepted_at: now - 2_000,
        submitted_at: Some(now - 1_500),
        gateway_response_at: Some(now - 1_400),
        report_at: Some(now),
        decided_at: now,
        within_seven_seconds: true,
    };
    let payload = sms_core::avro::AvroCodec::single_object()
        .encode(&status)
        .expect("encodes");
    t.produce(&t.kafka.topics().status, "8613012345678", &payload)
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = json(t.signed("GET", "/v1/requests/s-1", "").await).await;
        if view["state"] == "DELIVERED" {
            assert_eq!(view["message_id"], id.as_str());
            assert_eq!(view["is_final"], true);
            assert_eq!(view["within_seven_seconds"], true);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never arrived: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let t = start("api_health").await;
    let get = |path: &str| t.http.get(format!("{}{path}", t.base)).send();
    assert_eq!(get("/healthz").await.expect("sent").status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = json(get("/readyz").await.expect("sent")).await;
        if status == 200 {
            assert_eq!(body["kafka"], true);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (got, _) = json(
        t.signed(
            "POST",
            "/v1/messages",
            &notice("metrics-1", "13012345678").to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(got, 202);
    let text = get("/metrics")
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(text.contains("ingest_accepted_total"), "{text}");
    assert!(text.contains("ingest_http_requests_total"), "{text}");
    t.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_kafka_is_down_requests_wait_then_get_503_with_retry_after() {
    let mut settings = sms_core::kafka::KafkaSettings::new("127.0.0.1:1");
    settings.topic_prefix = sms_harness::unique_name("down") + ".";
    settings
        .properties
        .insert("reconnect.backoff.max.ms".into(), "200".into());
    let mut config = common::config(settings);
    config.limits.publish_timeout_ms = 700;
    config.limits.drain_ms = 2_000;
    config.bridge.enabled = false;
    let t = common::start_with(config).await;

    let started = std::time::Instant::now();
    let response = t
        .signed(
            "POST",
            "/v1/messages",
            &notice("down-1", "13012345678").to_string(),
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    let (got, answer) = json(response).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (503, Some("kafka_unavailable"))
    );
    assert!(
        waited >= Duration::from_millis(600),
        "waited the bounded time: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "and no longer: {waited:?}");

    let batch = serde_json::json!({"messages": [notice("down-2", "13012345678")]}).to_string();
    let (got, _) = json(t.signed("POST", "/v1/messages/batch", &batch).await).await;
    assert_eq!(got, 503);
    // The request id was not remembered as written: a later retry writes it.
    let (got, answer) = json(
        t.signed(
            "POST",
            "/v1/messages",
            &notice("down-1", "13012345678").to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (503, Some("kafka_unavailable"))
    );
    let (got, _) = json(
        t.http
            .get(format!("{}/readyz", t.base))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(got, 503);
    t.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_in_flight_requests_then_closes_the_port() {
    // Kafka is unreachable, so a request stays in flight for the whole
    // publish time-out; shutdown starts while it waits.
    let mut config = common::config(sms_core::kafka::KafkaSettings::new("127.0.0.1:1"));
    config.limits.publish_timeout_ms = 1_500;
    config.limits.drain_ms = 5_000;
    config.bridge.enabled = false;
    let t = common::start_with(config).await;
    let addr = t.service.local_addr();
    let token = t.service.shutdown_token();

    let body = notice("shutdown-1", "13012345678").to_string();
    let (response, ()) = tokio::join!(t.signed("POST", "/v1/messages", &body), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel();
    });
    let (got, answer) = json(response).await;
    assert_eq!(got, 503, "the in-flight request was answered: {answer}");
    let started = std::time::Instant::now();
    t.service.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "stopped within the drain deadline"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
