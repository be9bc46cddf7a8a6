//! The Rust types and the `.avsc` files cannot drift, and every schema stays
//! readable by old consumers' data: round trips and compatibility checks.

use apache_avro::schema_compatibility::SchemaCompatibility;
use sms_core::avro::{decode_single_object, AvroCodec, AvroRecord, SINGLE_OBJECT_MAGIC};
use sms_core::events::*;

fn request() -> SmsRequest {
    SmsRequest {
        message_id: "6f0b5a3e-3c1d-5b8e-9a57-2f1a0c4d9e21".into(),
        request_id: "req-1".into(),
        client_id: "platform".into(),
        phone: "8613012345678".into(),
        kind: MessageKind::VerificationCode,
        text: "【交管12123】验证码 123456，5分钟内有效。".into(),
        template_id: Some("otp-login".into()),
        sp_extension: None,
        source: RequestSource::Http,
        accepted_at: 1_764_720_000_123,
        expires_at: Some(1_764_720_300_000),
        scheduled_at: None,
        attempt: 0,
        not_before: None,
    }
}

fn dispatch() -> DispatchEvent {
    DispatchEvent {
        message_id: "6f0b5a3e-3c1d-5b8e-9a57-2f1a0c4d9e21".into(),
        request_id: "req-1".into(),
        phone: "8613012345678".into(),
        kind: MessageKind::Notice,
        outcome: DispatchOutcome::Submitted,
        reason: None,
        detail: None,
        gateway_result: None,
        segments: vec![
            SubmittedSegment {
                index: 1,
                sequence: SequenceTriple::new(3_075_512_345, 1_203_190_405, 1),
                submitted_at: 1_764_720_000_200,
                response_at: Some(1_764_720_000_210),
                result: 0,
            },
            SubmittedSegment {
                index: 2,
                sequence: SequenceTriple::new(u32::MAX, 1_203_190_405, 2),
                submitted_at: 1_764_720_000_201,
                response_at: None,
                result: 88,
            },
        ],
        billed_segments: 2,
        attempt: 1,
        accepted_at: 1_764_720_000_123,
        dispatched_at: 1_764_720_000_220,
        not_before: Some(1_764_720_005_000),
    }
}

fn report() -> CarrierReport {
    CarrierReport {
        submit_sequence: SequenceTriple::new(3_075_512_345, 1_203_190_405, 1),
        report_sequence: SequenceTriple::new(107_551, 1_203_190_410, 77),
        phone: "8613012345678".into(),
        report_type: 0,
        state: ReportState::Failed,
        error_code: 25,
        received_at: 1_764_720_001_000,
    }
}

fn uplink() -> UplinkMessage {
    UplinkMessage {
        uplink_id: "0d5f0f4b-8e2a-5c0e-a7c3-1b2c3d4e5f60".into(),
        sequence: SequenceTriple::new(107_551, 1_203_190_600, 78),
        phone: "8613012345678".into(),
        sp_number: "121231100".into(),
        coding: 8,
        text: Some("退订".into()),
        content: vec![0x90, 0x00, 0x8b, 0xa2],
        udhi: false,
        link_id: None,
        received_at: 1_764_720_002_000,
    }
}

fn status() -> FinalStatus {
    FinalStatus {
        message_id: "6f0b5a3e-3c1d-5b8e-9a57-2f1a0c4d9e21".into(),
        request_id: "req-1".into(),
        phone: "8613012345678".into(),
        kind: MessageKind::Reminder,
        status: FinalState::Failed,
        failure_category: Some(FailureCategory::PoweredOff),
        error_code: Some(25),
        refusal_reason: None,
        billed_segments: 1,
        segments_delivered: 0,
        accepted_at: 1_764_720_000_123,
        submitted_at: Some(1_764_720_000_200),
        gateway_response_at: Some(1_764_720_000_210),
        report_at: Some(1_764_720_001_000),
        decided_at: 1_764_720_001_010,
        within_seven_seconds: true,
    }
}

fn subscription() -> SubscriptionRecord {
    SubscriptionRecord {
        phone: "8613012345678".into(),
        state: SubscriptionState::Registered,
        kinds: vec![MessageKind::VerificationCode, MessageKind::Notice],
        source: SubscriptionSource::Api,
        moved_to: None,
        client_id: Some("platform".into()),
        changed_at: 1_764_720_000_000,
    }
}

fn dead_letter() -> DeadLetter {
    DeadLetter {
        source_topic: "sms.requests.notify".into(),
        source_partition: 3,
        source_offset: 1234,
        key: Some(b"8613012345678".to_vec()),
        payload: Some(vec![0xde, 0xad, 0xbe, 0xef]),
        error: DeadLetterError::Undecodable,
        reason: "record is not framed avro".into(),
        service: "dispatcher".into(),
        recorded_at: 1_764_720_000_000,
    }
}

/// Encodes a record and checks the bytes against apache-avro's own value
/// path (serde value, resolved to the schema, then written), and that they
/// read back as the same record.
fn encodes_as_the_schema_says<T: AvroRecord + PartialEq + std::fmt::Debug>(record: &T) {
    let bytes = sms_core::avro::to_datum(record).expect("encodes");
    let schema = &T::schema().schema;
    let value = apache_avro::to_value(record)
        .and_then(|v| v.resolve(schema))
        .expect("resolves to the schema");
    let reference = apache_avro::to_avro_datum(schema, value).expect("value path encodes");
    assert_eq!(bytes, reference, "{record:?}");
    let back: T = sms_core::avro::from_datum(schema, false, &bytes).expect("decodes");
    assert_eq!(&back, record);
    let direct: T = sms_core::avro::read_current_datum(&bytes).expect("reads without values");
    assert_eq!(&direct, record);
    // Cut short anywhere, the direct reader refuses rather than panics.
    for end in 0..bytes.len() {
        assert!(sms_core::avro::read_current_datum::<T>(&bytes[..end]).is_err());
    }
}

async fn round_trip<T: AvroRecord + PartialEq + std::fmt::Debug>(record: T) {
    encodes_as_the_schema_says(&record);
    let codec = AvroCodec::single_object();
    let bytes = codec.encode(&record).expect("encodes");
    assert_eq!(bytes[..2], SINGLE_OBJECT_MAGIC);
    assert_eq!(bytes[2..10], T::schema().fingerprint);
    let back: T = codec.decode(&bytes).await.expect("decodes");
    assert_eq!(back, record);
}

#[tokio::test]
async fn every_record_round_trips_through_its_schema() {
    round_trip(request()).await;
    round_trip(SmsRequest {
        expires_at: None,
        template_id: None,
        ..request()
    })
    .await;
    round_trip(dispatch()).await;
    round_trip(DispatchEvent {
        segments: vec![],
        reason: Some(RefusalReason::ContentPolicy),
        ..dispatch()
    })
    .await;
    round_trip(report()).await;
    round_trip(uplink()).await;
    round_trip(UplinkMessage {
        text: None,
        content: vec![],
        ..uplink()
    })
    .await;
    round_trip(status()).await;
    round_trip(subscription()).await;
    round_trip(SubscriptionRecord {
        kinds: vec![],
        state: SubscriptionState::Cancelled,
        ..subscription()
    })
    .await;
    round_trip(dead_letter()).await;
    round_trip(DeadLetter {
        key: None,
        payload: None,
        ..dead_letter()
    })
    .await;
}

#[test]
fn every_enum_symbol_matches_the_schema() {
    // Each Rust variant must be written as the symbol of its name (the encoder
    // writes a variant's position, so the order must match too): encode one
    // record per variant, compare, and read it back.
    for kind in MessageKind::ALL {
        encodes_as_the_schema_says(&SmsRequest { kind, ..request() });
    }
    for outcome in [
        DispatchOutcome::Submitted,
        DispatchOutcome::Refused,
        DispatchOutcome::Retrying,
        DispatchOutcome::Failed,
    ] {
        encodes_as_the_schema_says(&DispatchEvent {
            outcome,
            ..dispatch()
        });
    }
    use RefusalReason::*;
    for reason in [
        Expired,
        NotUnicom,
        NotSubscribed,
        ContentPolicy,
        Duplicate,
        FrequencyCap,
        BudgetExhausted,
        InvalidRequest,
        GatewayRefused,
        GatewayUnavailable,
        AttemptsExhausted,
    ] {
        encodes_as_the_schema_says(&DispatchEvent {
            reason: Some(reason),
            ..dispatch()
        });
        encodes_as_the_schema_says(&FinalStatus {
            refusal_reason: Some(reason),
            ..status()
        });
    }
    for state in [
        FinalState::Delivered,
        FinalState::Failed,
        FinalState::Expired,
        FinalState::Rejected,
        FinalState::Unknown,
    ] {
        encodes_as_the_schema_says(&FinalStatus {
            status: state,
            ..status()
        });
    }
    use FailureCategory as F;
    for c in [
        F::NoSuchNumber,
        F::PoweredOff,
        F::Suspended,
        F::Blacklisted,
        F::Network,
        F::Expired,
        F::GatewayRefused,
        F::Other,
    ] {
        encodes_as_the_schema_says(&FinalStatus {
            failure_category: Some(c),
            ..status()
        });
    }
    for state in [
        ReportState::Delivered,
        ReportState::Waiting,
        ReportState::Failed,
    ] {
        encodes_as_the_schema_says(&CarrierReport { state, ..report() });
    }
    for source in [
        SubscriptionSource::Api,
        SubscriptionSource::UplinkKeyword,
        SubscriptionSource::NumberChange,
    ] {
        encodes_as_the_schema_says(&SubscriptionRecord {
            source,
            ..subscription()
        });
    }
    for error in [
        DeadLetterError::Undecodable,
        DeadLetterError::Invalid,
        DeadLetterError::Unmatched,
    ] {
        encodes_as_the_schema_says(&DeadLetter {
            error,
            ..dead_letter()
        });
    }
    for source in [
        RequestSource::Http,
        RequestSource::Topic,
        RequestSource::System,
    ] {
        encodes_as_the_schema_says(&SmsRequest {
            source,
            ..request()
        });
    }
}

fn assert_backward_compatible<T: AvroRecord>() {
    let current = &T::schema().schema;
    let released = T::schema().released();
    assert!(
        !released.is_empty(),
        "{} has no released copy under schemas/avro/released",
        T::SCHEMA_FILE
    );
    for (version, old) in released {
        // New readers must read what old writers wrote...
        SchemaCompatibility::can_read(&old, current).unwrap_or_else(|e| {
            panic!(
                "{} cannot read data written with released {version}: {e}",
                T::SCHEMA_FILE
            )
        });
    }
}

#[test]
fn every_schema_reads_what_released_versions_wrote() {
    assert_backward_compatible::<SmsRequest>();
    assert_backward_compatible::<DispatchEvent>();
    assert_backward_compatible::<CarrierReport>();
    assert_backward_compatible::<UplinkMessage>();
    assert_backward_compatible::<FinalStatus>();
    assert_backward_compatible::<SubscriptionRecord>();
    assert_backward_compatible::<DeadLetter>();
}

#[test]
fn every_schema_is_documented_and_namespaced() {
    let texts = [
        SmsRequest::SCHEMA_TEXT,
        DispatchEvent::SCHEMA_TEXT,
        CarrierReport::SCHEMA_TEXT,
        UplinkMessage::SCHEMA_TEXT,
        FinalStatus::SCHEMA_TEXT,
        SubscriptionRecord::SCHEMA_TEXT,
        DeadLetter::SCHEMA_TEXT,
    ];
    for text in texts {
        let json: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(json["namespace"], "industrysms.events");
        assert!(json["doc"].is_string(), "{} has no doc", json["name"]);
        for field in json["fields"].as_array().expect("fields") {
            assert!(
                field["doc"].is_string(),
                "{}.{} has no doc",
                json["name"],
                field["name"]
            );
        }
    }
}

#[test]
fn a_record_written_with_an_older_schema_still_decodes() {
    // Simulates a schema evolution: write with a copy of the released schema
    // whose trailing defaulted field is missing, then read with the current one.
    let old_text = SmsRequest::SCHEMA_TEXT.replace(
        r#",
    {"name": "not_before", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null,
     "doc": "On the retry topic: the earliest instant of the next attempt."}"#,
        "",
    );
    assert_ne!(
        old_text,
        SmsRequest::SCHEMA_TEXT,
        "the test's edit must apply"
    );
    let old = apache_avro::Schema::parse_str(&old_text).expect("old schema");
    let mut value = apache_avro::to_value(request()).expect("value");
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.retain(|(name, _)| name != "not_before");
    }
    let datum =
        apache_avro::to_avro_datum(&old, value.resolve(&old).expect("resolves")).expect("datum");
    let back: SmsRequest = sms_core::avro::from_datum(&old, true, &datum).expect("decodes");
    assert_eq!(back, request());
}

#[test]
fn uuid_fields_read_as_apache_avro_reads_them() {
    let upper = SmsRequest {
        message_id: "6F0B5A3E-3C1D-5B8E-9A57-2F1A0C4D9E21".into(),
        ..request()
    };
    let bytes = sms_core::avro::to_datum(&upper).expect("encodes");
    let schema = &SmsRequest::schema().schema;
    let reference: SmsRequest = sms_core::avro::from_datum(schema, false, &bytes).expect("decodes");
    let direct: SmsRequest = sms_core::avro::read_current_datum(&bytes).expect("reads");
    assert_eq!(direct, reference);
    assert_eq!(direct.message_id, request().message_id);

    let not_a_uuid = SmsRequest {
        message_id: "not-a-uuid".into(),
        ..request()
    };
    // The writer checks nothing about the text; both readers refuse it.
    let bytes = sms_core::avro::to_datum(&not_a_uuid).expect("encodes");
    assert!(sms_core::avro::from_datum::<SmsRequest>(schema, false, &bytes).is_err());
    assert!(sms_core::avro::read_current_datum::<SmsRequest>(&bytes).is_err());
}

#[test]
fn garbage_is_a_typed_error_not_a_panic() {
    for bytes in [
        &b""[..],
        &b"\xc3"[..],
        &b"\xc3\x01\x00"[..],
        &b"hello world, not avro"[..],
    ] {
        assert!(decode_single_object::<SmsRequest>(bytes).is_err());
    }
    // Right framing, unknown fingerprint.
    let mut bytes = AvroCodec::single_object()
        .encode(&request())
        .expect("encodes");
    bytes[2] ^= 0xff;
    let err = decode_single_object::<SmsRequest>(&bytes).unwrap_err();
    assert!(err.to_string().contains("fingerprint"), "{err}");
    // Right framing and fingerprint, truncated datum.
    let bytes = AvroCodec::single_object()
        .encode(&request())
        .expect("encodes");
    assert!(decode_single_object::<SmsRequest>(&bytes[..bytes.len() - 5]).is_err());
    // A record of another type.
    let bytes = AvroCodec::single_object()
        .encode(&report())
        .expect("encodes");
    assert!(decode_single_object::<SmsRequest>(&bytes).is_err());
}

#[test]
fn a_single_object_record_from_a_released_writer_decodes_with_the_new_defaults() {
    // The released uplink schema has no `udhi`; the current one defaults it to false.
    let (_, old) = UplinkMessage::schema()
        .released()
        .into_iter()
        .find(|(version, _)| *version == "v1")
        .expect("released v1");
    let mut value = apache_avro::to_value(uplink()).expect("value");
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.retain(|(name, _)| name != "udhi");
    }
    let datum =
        apache_avro::to_avro_datum(&old, value.resolve(&old).expect("resolves")).expect("datum");
    let mut framed = SINGLE_OBJECT_MAGIC.to_vec();
    framed.extend_from_slice(&sms_core::avro::fingerprint(&old));
    framed.extend_from_slice(&datum);
    assert_ne!(framed[2..10], UplinkMessage::schema().fingerprint);

    let back: UplinkMessage = decode_single_object(&framed).expect("decodes");
    assert_eq!(back, uplink());

    // Bytes after the datum are refused, whichever writer it names.
    framed.push(0);
    let err = decode_single_object::<UplinkMessage>(&framed).unwrap_err();
    assert!(err.to_string().contains("left over"), "{err}");
    let mut current = AvroCodec::single_object()
        .encode(&uplink())
        .expect("encodes");
    current.push(0);
    assert!(decode_single_object::<UplinkMessage>(&current).is_err());
}
