//! Golden byte vectors: the worked examples of the protocol reference (§4.14), encoded and decoded.

use bytes::Bytes;
use sgip::{Bind, Body, Deliver, Pdu, Report, Response, ResultCode, SequenceTriple, Submit, Text};

const SP_NODE: u32 = 3075512345;
const SMG_NODE: u32 = 107551;
const TIME: u32 = 1203190405;

/// Parses a hex dump: the offset column and spacing are ignored.
fn hex(dump: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in dump.lines() {
        let mut words = line.split_whitespace();
        if words.next().is_none() {
            continue;
        }
        for word in words {
            out.push(u8::from_str_radix(word, 16).expect("test vector is hex"));
        }
    }
    out
}

fn check(pdu: Pdu, dump: &str) {
    let wire = hex(dump);
    assert_eq!(
        pdu.to_bytes().as_ref(),
        wire.as_slice(),
        "encode {:?}",
        pdu.command()
    );
    assert_eq!(pdu.encoded_len(), wire.len());
    let decoded = Pdu::decode(Bytes::from(wire)).expect("golden vector decodes");
    assert_eq!(decoded, pdu);
}

#[test]
fn bind() {
    let pdu = Pdu::new(
        SequenceTriple::new(SP_NODE, TIME, 1),
        Body::Bind(Bind {
            login_type: 1,
            login_name: Text::new("LoginName", "sp001").unwrap(),
            login_password: Text::new("LoginPassword", "pwd001").unwrap(),
            reserve: Text::empty(),
        }),
    );
    check(
        pdu,
        "0000  00 00 00 3d 00 00 00 01 b7 50 98 19 47 b7 3a 85
         0010  00 00 00 01 01 73 70 30 30 31 00 00 00 00 00 00
         0020  00 00 00 00 00 70 77 64 30 30 31 00 00 00 00 00
         0030  00 00 00 00 00 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn bind_resp() {
    let pdu = Pdu::new(
        SequenceTriple::new(SP_NODE, TIME, 1),
        Body::BindResp(Response::new(ResultCode::OK)),
    );
    check(
        pdu,
        "0000  00 00 00 1d 80 00 00 01 b7 50 98 19 47 b7 3a 85
         0010  00 00 00 01 00 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn unbind() {
    check(
        Pdu::new(SequenceTriple::new(SP_NODE, TIME, 9), Body::Unbind),
        "0000  00 00 00 14 00 00 00 02 b7 50 98 19 47 b7 3a 85  00 00 00 09",
    );
}

#[test]
fn unbind_resp() {
    // The Unbind example with bit 31 set on the command id.
    check(
        Pdu::new(SequenceTriple::new(SP_NODE, TIME, 9), Body::UnbindResp),
        "0000  00 00 00 14 80 00 00 02 b7 50 98 19 47 b7 3a 85  00 00 00 09",
    );
}

fn example_submit() -> Submit {
    Submit {
        sp_number: Text::new("SPNumber", "1065502812345").unwrap(),
        charge_number: Text::new("ChargeNumber", "000000000000000000000").unwrap(),
        user_numbers: vec![Text::new("UserNumber", "8613012345678").unwrap()],
        corp_id: Text::new("CorpId", "12345").unwrap(),
        service_type: Text::new("ServiceType", "TEST").unwrap(),
        fee_type: 1,
        fee_value: Text::new("FeeValue", "0").unwrap(),
        given_value: Text::new("GivenValue", "0").unwrap(),
        agent_flag: 0,
        morelateto_mt_flag: 2,
        priority: 0,
        expire_time: Text::empty(),
        schedule_time: Text::empty(),
        report_flag: 1,
        tp_pid: 0,
        tp_udhi: 0,
        message_coding: 8,
        message_type: 0,
        content: Bytes::from_static(&[0x4f, 0x60, 0x59, 0x7d]),
        reserve: Text::empty(),
    }
}

#[test]
fn submit() {
    let pdu = Pdu::new(
        SequenceTriple::new(SP_NODE, TIME, 2),
        Body::Submit(example_submit()),
    );
    check(
        pdu,
        "0000  00 00 00 a8 00 00 00 03 b7 50 98 19 47 b7 3a 85
         0010  00 00 00 02 31 30 36 35 35 30 32 38 31 32 33 34
         0020  35 00 00 00 00 00 00 00 00 30 30 30 30 30 30 30
         0030  30 30 30 30 30 30 30 30 30 30 30 30 30 30 01 38
         0040  36 31 33 30 31 32 33 34 35 36 37 38 00 00 00 00
         0050  00 00 00 00 31 32 33 34 35 54 45 53 54 00 00 00
         0060  00 00 00 01 30 00 00 00 00 00 30 00 00 00 00 00
         0070  00 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00
         0080  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
         0090  00 00 00 01 00 00 08 00 00 00 00 04 4f 60 59 7d
         00a0  00 00 00 00 00 00 00 00",
    );
}

#[test]
fn submit_resp() {
    let pdu = Pdu::new(
        SequenceTriple::new(SP_NODE, TIME, 2),
        Body::SubmitResp(Response::new(ResultCode::FLOW_CONTROL)),
    );
    check(
        pdu,
        "0000  00 00 00 1d 80 00 00 03 b7 50 98 19 47 b7 3a 85
         0010  00 00 00 02 58 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn report() {
    let pdu = Pdu::new(
        SequenceTriple::new(SMG_NODE, 1203190410, 77),
        Body::Report(Report {
            submit_sequence: SequenceTriple::new(SP_NODE, TIME, 2),
            report_type: 0,
            user_number: Text::new("UserNumber", "8613012345678").unwrap(),
            state: 0,
            error_code: 0,
            reserve: Text::empty(),
        }),
    );
    check(
        pdu,
        "0000  00 00 00 40 00 00 00 05 00 01 a4 1f 47 b7 3a 8a
         0010  00 00 00 4d b7 50 98 19 47 b7 3a 85 00 00 00 02
         0020  00 38 36 31 33 30 31 32 33 34 35 36 37 38 00 00
         0030  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn report_resp() {
    let pdu = Pdu::new(
        SequenceTriple::new(SMG_NODE, 1203190410, 77),
        Body::ReportResp(Response::new(ResultCode::OK)),
    );
    check(
        pdu,
        "0000  00 00 00 1d 80 00 00 05 00 01 a4 1f 47 b7 3a 8a
         0010  00 00 00 4d 00 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn deliver() {
    let pdu = Pdu::new(
        SequenceTriple::new(SMG_NODE, 1203191000, 78),
        Body::Deliver(Deliver {
            user_number: Text::new("UserNumber", "8613012345678").unwrap(),
            sp_number: Text::new("SPNumber", "1065502812345").unwrap(),
            tp_pid: 0,
            tp_udhi: 0,
            message_coding: 0,
            content: Bytes::from_static(b"TD"),
            reserve: Text::empty(),
        }),
    );
    check(
        pdu,
        "0000  00 00 00 4f 00 00 00 04 00 01 a4 1f 47 b7 3c d8
         0010  00 00 00 4e 38 36 31 33 30 31 32 33 34 35 36 37
         0020  38 00 00 00 00 00 00 00 00 31 30 36 35 35 30 32
         0030  38 31 32 33 34 35 00 00 00 00 00 00 00 00 00 00
         0040  00 00 00 00 02 54 44 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn deliver_resp() {
    let pdu = Pdu::new(
        SequenceTriple::new(SMG_NODE, 1203191000, 78),
        Body::DeliverResp(Response::new(ResultCode::OK)),
    );
    check(
        pdu,
        "0000  00 00 00 1d 80 00 00 04 00 01 a4 1f 47 b7 3c d8
         0010  00 00 00 4e 00 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn user_rpt_and_resp() {
    // Built from the UserRpt table (§4.10): SPNumber 21, UserNumber 21,
    // UserCondition 1, Reserve 8; 71 bytes in all.
    let pdu = Pdu::new(
        SequenceTriple::new(SMG_NODE, TIME, 5),
        Body::UserRpt(sgip::UserRpt {
            sp_number: Text::new("SPNumber", "1065502812345").unwrap(),
            user_number: Text::new("UserNumber", "8613012345678").unwrap(),
            user_condition: 1,
            reserve: Text::empty(),
        }),
    );
    check(
        pdu,
        "0000  00 00 00 47 00 00 00 11 00 01 a4 1f 47 b7 3a 85
         0010  00 00 00 05 31 30 36 35 35 30 32 38 31 32 33 34
         0020  35 00 00 00 00 00 00 00 00 38 36 31 33 30 31 32
         0030  33 34 35 36 37 38 00 00 00 00 00 00 00 00 01 00
         0040  00 00 00 00 00 00 00",
    );
    check(
        Pdu::new(
            SequenceTriple::new(SMG_NODE, TIME, 5),
            Body::UserRptResp(Response::new(ResultCode::OK)),
        ),
        "0000  00 00 00 1d 80 00 00 11 00 01 a4 1f 47 b7 3a 85
         0010  00 00 00 05 00 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn trace_and_resp() {
    // Built from the Trace tables (§4.11, §4.12, 1.2 layout with a 6-byte NodeId).
    let trace = Pdu::new(
        SequenceTriple::new(SP_NODE, TIME, 6),
        Body::Trace(sgip::Trace {
            submit_sequence: SequenceTriple::new(SP_NODE, TIME, 2),
            user_number: Text::new("UserNumber", "8613012345678").unwrap(),
            reserve: Text::empty(),
        }),
    );
    check(
        trace,
        "0000  00 00 00 3d 00 00 10 00 b7 50 98 19 47 b7 3a 85
         0010  00 00 00 06 b7 50 98 19 47 b7 3a 85 00 00 00 02
         0020  38 36 31 33 30 31 32 33 34 35 36 37 38 00 00 00
         0030  00 00 00 00 00 00 00 00 00 00 00 00 00",
    );
    let resp = Pdu::new(
        SequenceTriple::new(SP_NODE, TIME, 6),
        Body::TraceResp(sgip::TraceResp {
            hops: vec![sgip::TraceHop {
                result: 0,
                node_id: Text::new("NodeId", "107551").unwrap(),
                receive_time: Text::new("ReceiveTime", "251203190405").unwrap(),
                send_time: Text::new("SendTime", "251203190406").unwrap(),
                reserve: Text::empty(),
            }],
        }),
    );
    check(
        resp,
        "0000  00 00 00 44 80 00 10 00 b7 50 98 19 47 b7 3a 85
         0010  00 00 00 06 01 00 31 30 37 35 35 31 32 35 31 32
         0020  30 33 31 39 30 34 30 35 00 00 00 00 32 35 31 32
         0030  30 33 31 39 30 34 30 36 00 00 00 00 00 00 00 00
         0040  00 00 00 00",
    );
}

#[test]
fn the_sequence_string_of_the_example_submit() {
    let seq = SequenceTriple::new(SP_NODE, TIME, 2);
    assert_eq!(seq.to_string(), "307551234512031904050000000002");
    assert_eq!(SP_NODE, 0xB750_9819);
    assert_eq!(SMG_NODE, 0x0001_A41F);
    assert_eq!(TIME, 0x47B7_3A85);
}
