//! Property tests: every PDU survives encode then decode, and no input makes the decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use sgip::framing::SgipCodec;
use sgip::pdu::{frame_len, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use sgip::{
    Bind, Body, Deliver, Error, Pdu, Report, Response, ResultCode, SequenceTriple, Submit, Text,
    Trace, TraceHop, TraceResp, UserRpt,
};
use tokio_util::codec::Decoder;

fn text<const N: usize>() -> impl Strategy<Value = Text<N>> {
    vec(any::<u8>(), N).prop_map(|v| {
        let mut raw = [0u8; N];
        raw.copy_from_slice(&v);
        Text::from_raw(raw)
    })
}

fn sequence() -> impl Strategy<Value = SequenceTriple> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(n, t, c)| SequenceTriple::new(n, t, c))
}

fn response() -> impl Strategy<Value = Response> {
    (any::<u8>(), text::<8>()).prop_map(|(r, reserve)| Response {
        result: ResultCode(r),
        reserve,
    })
}

fn content(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn submit() -> impl Strategy<Value = Submit> {
    (
        (
            text::<21>(),
            text::<21>(),
            vec(text::<21>(), 1..=8),
            text::<5>(),
            text::<10>(),
        ),
        (any::<u8>(), text::<6>(), text::<6>(), any::<[u8; 3]>()),
        (
            text::<16>(),
            text::<16>(),
            any::<[u8; 5]>(),
            content(140),
            text::<8>(),
        ),
    )
        .prop_map(
            |(
                (sp_number, charge_number, user_numbers, corp_id, service_type),
                (fee_type, fee_value, given_value, flags),
                (expire_time, schedule_time, more, content, reserve),
            )| Submit {
                sp_number,
                charge_number,
                user_numbers,
                corp_id,
                service_type,
                fee_type,
                fee_value,
                given_value,
                agent_flag: flags[0],
                morelateto_mt_flag: flags[1],
                priority: flags[2],
                expire_time,
                schedule_time,
                report_flag: more[0],
                tp_pid: more[1],
                tp_udhi: more[2],
                message_coding: more[3],
                message_type: more[4],
                content,
                reserve,
            },
        )
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<u8>(), text::<16>(), text::<16>(), text::<8>()).prop_map(|(t, n, p, r)| {
            Body::Bind(Bind {
                login_type: t,
                login_name: n,
                login_password: p,
                reserve: r,
            })
        }),
        response().prop_map(Body::BindResp),
        Just(Body::Unbind),
        Just(Body::UnbindResp),
        submit().prop_map(Body::Submit),
        response().prop_map(Body::SubmitResp),
        (
            text::<21>(),
            text::<21>(),
            any::<[u8; 3]>(),
            content(1000),
            text::<8>()
        )
            .prop_map(
                |(user_number, sp_number, f, content, reserve)| Body::Deliver(Deliver {
                    user_number,
                    sp_number,
                    tp_pid: f[0],
                    tp_udhi: f[1],
                    message_coding: f[2],
                    content,
                    reserve,
                })
            ),
        response().prop_map(Body::DeliverResp),
        (sequence(), any::<[u8; 3]>(), text::<21>(), text::<8>()).prop_map(|(s, f, u, r)| {
            Body::Report(Report {
                submit_sequence: s,
                report_type: f[0],
                user_number: u,
                state: f[1],
                error_code: f[2],
                reserve: r,
            })
        }),
        response().prop_map(Body::ReportResp),
        (text::<21>(), text::<21>(), any::<u8>(), text::<8>()).prop_map(|(s, u, c, r)| {
            Body::UserRpt(UserRpt {
                sp_number: s,
                user_number: u,
                user_condition: c,
                reserve: r,
            })
        }),
        response().prop_map(Body::UserRptResp),
        (sequence(), text::<21>(), text::<8>()).prop_map(|(s, u, r)| Body::Trace(Trace {
            submit_sequence: s,
            user_number: u,
            reserve: r,
        })),
        vec(
            (
                any::<u8>(),
                text::<6>(),
                text::<16>(),
                text::<16>(),
                text::<8>()
            )
                .prop_map(|(result, node_id, receive_time, send_time, reserve)| {
                    TraceHop {
                        result,
                        node_id,
                        receive_time,
                        send_time,
                        reserve,
                    }
                }),
            0..=20
        )
        .prop_map(|hops| Body::TraceResp(TraceResp { hops })),
    ]
}

fn pdu() -> impl Strategy<Value = Pdu> {
    (sequence(), body()).prop_map(|(s, b)| Pdu::new(s, b))
}

/// Feeds `data` through the stream codec the way a reader does, until it
/// needs more bytes or fails. Returns how many PDUs came out.
fn drive_codec(data: &[u8], max: usize) -> (usize, Option<Error>) {
    let mut codec = SgipCodec::new(max);
    let mut buf = BytesMut::from(data);
    let mut count = 0;
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(_)) => count += 1,
            Ok(None) => return (count, None),
            Err(e) => return (count, Some(e)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_pdu_round_trips(pdu in pdu()) {
        let wire = pdu.to_bytes();
        prop_assert_eq!(wire.len(), pdu.encoded_len());
        prop_assert_eq!(frame_len(&wire, 1 << 20).unwrap(), Some(wire.len()));
        let decoded = Pdu::decode(wire).unwrap();
        prop_assert_eq!(decoded, pdu);
    }

    #[test]
    fn a_stream_of_pdus_decodes_in_any_chunking(
        pdus in vec(pdu(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        for p in &pdus {
            p.encode(&mut wire);
        }
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut codec = SgipCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(p) = codec.decode(&mut buf).unwrap() {
                out.push(p);
            }
        }
        prop_assert_eq!(out, pdus);
    }

    #[test]
    fn random_bytes_never_panic(data in vec(any::<u8>(), 0..3000)) {
        let (count, _) = drive_codec(&data, DEFAULT_MAX_FRAME_LEN);
        prop_assert!(count <= data.len() / HEADER_LEN);
        let _ = Pdu::decode(Bytes::from(data));
    }

    #[test]
    fn mutated_frames_never_panic(
        pdu in pdu(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in any::<prop::sample::Index>(),
        cut in any::<bool>(),
    ) {
        let mut wire = pdu.to_bytes().to_vec();
        for (at, value) in edits {
            let i = at.index(wire.len());
            wire[i] = value;
        }
        if cut {
            wire.truncate(truncate.index(wire.len() + 1));
        }
        let (count, err) = drive_codec(&wire, DEFAULT_MAX_FRAME_LEN);
        // Either a whole PDU, nothing yet, or a typed error; never a panic.
        prop_assert!(count <= 1 || err.is_none());
        let _ = Pdu::decode(Bytes::from(wire));
    }
}

#[test]
fn a_lying_length_is_a_typed_error() {
    let mut wire = Pdu::new(SequenceTriple::default(), Body::Unbind)
        .to_bytes()
        .to_vec();
    wire[3] = 19;
    assert!(matches!(
        frame_len(&wire, 2048),
        Err(Error::FrameTooShort { length: 19 })
    ));
    wire[0..4].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    assert!(matches!(
        frame_len(&wire, 2048),
        Err(Error::FrameTooLong { .. })
    ));
}

#[test]
fn an_unknown_command_is_a_typed_error() {
    let mut wire = Pdu::new(SequenceTriple::default(), Body::Unbind)
        .to_bytes()
        .to_vec();
    wire[4..8].copy_from_slice(&0x0000_0006u32.to_be_bytes());
    assert!(matches!(
        Pdu::decode(Bytes::from(wire)),
        Err(Error::UnknownCommand { id: 6 })
    ));
}

#[test]
fn submit_counts_and_lengths_are_checked() {
    let mut submit = Submit {
        user_numbers: vec![Text::new("UserNumber", "8613012345678").unwrap()],
        content: Bytes::from_static(b"hello"),
        ..Submit::default()
    };
    let wire = Pdu::new(SequenceTriple::default(), Body::Submit(submit.clone())).to_bytes();

    // UserCount 0 and 101 are refused before any recipient is read.
    for count in [0u8, 101, 255] {
        let mut bad = wire.to_vec();
        bad[62] = count;
        assert!(matches!(
            Pdu::decode(Bytes::from(bad)),
            Err(Error::CountOutOfRange {
                field: "UserCount",
                ..
            })
        ));
    }

    // A UserCount that claims more recipients than the frame holds.
    let mut bad = wire.to_vec();
    bad[62] = 50;
    assert!(matches!(
        Pdu::decode(Bytes::from(bad)),
        Err(Error::BodyLength { .. })
    ));

    // A MessageLength larger than the frame.
    let mut bad = wire.to_vec();
    bad[152..156].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Pdu::decode(Bytes::from(bad)),
        Err(Error::BodyLength { .. })
    ));

    submit.content = Bytes::from(vec![0u8; 141]);
    assert!(matches!(
        submit.check(2048),
        Err(Error::FieldTooLong { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The fuzz target's oracle, driven by random streams of valid frames with
    /// random edits: the stable-toolchain stand-in for `cargo fuzz run decode`.
    #[test]
    fn fuzz_oracle_holds_for_mutated_streams(
        pdus in vec(pdu(), 1..4),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        tail in vec(any::<u8>(), 0..40),
    ) {
        let mut wire = BytesMut::new();
        for p in &pdus {
            p.encode(&mut wire);
        }
        let mut data = wire.to_vec();
        let clean = edits.is_empty();
        for (at, value) in edits {
            let i = at.index(data.len());
            data[i] = value;
        }
        let decoded = sgip::fuzzing::check_decoder(&data);
        if clean && pdus.iter().all(|p| p.encoded_len() <= DEFAULT_MAX_FRAME_LEN) {
            prop_assert_eq!(decoded, pdus.len());
        }
        data.extend_from_slice(&tail);
        sgip::fuzzing::check_decoder(&data);
    }
}
