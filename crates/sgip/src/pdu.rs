//! Every SGIP 1.2 PDU an SP meets: the 20-byte header, the bodies, encode and decode.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::result_code::ResultCode;
use crate::sequence::SequenceTriple;
use crate::text_field::Text;

/// Size of the header: length, command id, sequence triple.
pub const HEADER_LEN: usize = 20;
/// The protocol's maximum PDU size, in bytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 2048;
/// Most recipients one Submit may carry.
pub const MAX_USER_COUNT: usize = 100;
/// Most octets of MessageContent (including any UDH) in one short message.
pub const MAX_MESSAGE_LEN: usize = 140;

const SUBMIT_FIXED_BODY: usize = 123;
const DELIVER_FIXED_BODY: usize = 57;
const TRACE_HOP_LEN: usize = 47;

/// SGIP command ids. A response id is its request id with bit 31 set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CommandId {
    Bind = 0x0000_0001,
    BindResp = 0x8000_0001,
    Unbind = 0x0000_0002,
    UnbindResp = 0x8000_0002,
    Submit = 0x0000_0003,
    SubmitResp = 0x8000_0003,
    Deliver = 0x0000_0004,
    DeliverResp = 0x8000_0004,
    Report = 0x0000_0005,
    ReportResp = 0x8000_0005,
    UserRpt = 0x0000_0011,
    UserRptResp = 0x8000_0011,
    Trace = 0x0000_1000,
    TraceResp = 0x8000_1000,
}

impl CommandId {
    /// The command for a wire id, or `None` for ids this crate does not speak
    /// (the GNS and billing-centre commands, and anything undefined).
    pub fn from_u32(id: u32) -> Option<Self> {
        Some(match id {
            0x0000_0001 => Self::Bind,
            0x8000_0001 => Self::BindResp,
            0x0000_0002 => Self::Unbind,
            0x8000_0002 => Self::UnbindResp,
            0x0000_0003 => Self::Submit,
            0x8000_0003 => Self::SubmitResp,
            0x0000_0004 => Self::Deliver,
            0x8000_0004 => Self::DeliverResp,
            0x0000_0005 => Self::Report,
            0x8000_0005 => Self::ReportResp,
            0x0000_0011 => Self::UserRpt,
            0x8000_0011 => Self::UserRptResp,
            0x0000_1000 => Self::Trace,
            0x8000_1000 => Self::TraceResp,
            _ => return None,
        })
    }

    /// The wire id.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Whether this is a response.
    pub fn is_response(self) -> bool {
        self.as_u32() & 0x8000_0000 != 0
    }

    /// The response to this request (a response maps to itself).
    pub fn response(self) -> Self {
        Self::from_u32(self.as_u32() | 0x8000_0000).unwrap_or(self)
    }

    /// The command's name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::BindResp => "bind_resp",
            Self::Unbind => "unbind",
            Self::UnbindResp => "unbind_resp",
            Self::Submit => "submit",
            Self::SubmitResp => "submit_resp",
            Self::Deliver => "deliver",
            Self::DeliverResp => "deliver_resp",
            Self::Report => "report",
            Self::ReportResp => "report_resp",
            Self::UserRpt => "userrpt",
            Self::UserRptResp => "userrpt_resp",
            Self::Trace => "trace",
            Self::TraceResp => "trace_resp",
        }
    }
}

/// Bind: opens a session. LoginType 1 is SP→gateway, 2 is gateway→SP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bind {
    pub login_type: u8,
    pub login_name: Text<16>,
    pub login_password: Text<16>,
    pub reserve: Text<8>,
}

/// LoginType of an SP connecting to the gateway.
pub const LOGIN_SP_TO_GATEWAY: u8 = 1;
/// LoginType of the gateway connecting to an SP.
pub const LOGIN_GATEWAY_TO_SP: u8 = 2;

/// The generic response body of Bind, Submit, Deliver, Report and UserRpt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Response {
    pub result: ResultCode,
    pub reserve: Text<8>,
}

impl Response {
    /// A response with `result` and an empty Reserve.
    pub fn new(result: ResultCode) -> Self {
        Self {
            result,
            reserve: Text::empty(),
        }
    }
}

/// Submit: one MT short message from the SP to one or more recipients.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Submit {
    /// The SP's access number, possibly with extension digits.
    pub sp_number: Text<21>,
    /// Who pays: "86"+number, empty (the recipient) or 21 zeros (the SP).
    pub charge_number: Text<21>,
    /// Recipients with the "86" prefix; 1 to 100.
    pub user_numbers: Vec<Text<21>>,
    pub corp_id: Text<5>,
    pub service_type: Text<10>,
    pub fee_type: u8,
    pub fee_value: Text<6>,
    pub given_value: Text<6>,
    pub agent_flag: u8,
    pub morelateto_mt_flag: u8,
    pub priority: u8,
    pub expire_time: Text<16>,
    pub schedule_time: Text<16>,
    /// 0 failures only, 1 always, 2 never, 3 fee information only.
    pub report_flag: u8,
    pub tp_pid: u8,
    /// 1 when `content` starts with a user-data header.
    pub tp_udhi: u8,
    pub message_coding: u8,
    pub message_type: u8,
    /// MessageContent: raw octets, UDH included.
    pub content: Bytes,
    pub reserve: Text<8>,
}

/// Deliver: an MO (uplink) message from a user to the SP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deliver {
    /// The sender, with "86".
    pub user_number: Text<21>,
    /// The access number the user sent to, with any extension.
    pub sp_number: Text<21>,
    pub tp_pid: u8,
    pub tp_udhi: u8,
    pub message_coding: u8,
    pub content: Bytes,
    /// Some gateways carry a LinkID here.
    pub reserve: Text<8>,
}

/// Report: the outcome of an earlier Submit for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// The header sequence of the Submit this report concerns.
    pub submit_sequence: SequenceTriple,
    /// 0 for a Submit, 1 for a forwarded Deliver.
    pub report_type: u8,
    pub user_number: Text<21>,
    /// 0 delivered, 1 waiting, 2 failed.
    pub state: u8,
    /// The reason when `state` is 2, else 0.
    pub error_code: u8,
    pub reserve: Text<8>,
}

/// Report State: delivered to the handset.
pub const STATE_DELIVERED: u8 = 0;
/// Report State: waiting (not final).
pub const STATE_WAITING: u8 = 1;
/// Report State: failed; ErrorCode says why.
pub const STATE_FAILED: u8 = 2;

/// UserRpt: a change of a user's state (cancelled, suspended, back to normal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserRpt {
    pub sp_number: Text<21>,
    pub user_number: Text<21>,
    /// 0 cancelled, 1 suspended for arrears, 2 back to normal.
    pub user_condition: u8,
    pub reserve: Text<8>,
}

/// Trace: asks where an MT went (test link, LoginType 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trace {
    pub submit_sequence: SequenceTriple,
    pub user_number: Text<21>,
    pub reserve: Text<8>,
}

/// One node an MT passed through, in a Trace_Resp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceHop {
    pub result: u8,
    pub node_id: Text<6>,
    pub receive_time: Text<16>,
    pub send_time: Text<16>,
    pub reserve: Text<8>,
}

/// Trace_Resp: the nodes an MT passed through (1.2 layout, 6-byte NodeId).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceResp {
    pub hops: Vec<TraceHop>,
}

/// A PDU body, by command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Bind(Bind),
    BindResp(Response),
    Unbind,
    UnbindResp,
    Submit(Submit),
    SubmitResp(Response),
    Deliver(Deliver),
    DeliverResp(Response),
    Report(Report),
    ReportResp(Response),
    UserRpt(UserRpt),
    UserRptResp(Response),
    Trace(Trace),
    TraceResp(TraceResp),
}

impl Body {
    /// The command id of this body.
    pub fn command(&self) -> CommandId {
        match self {
            Body::Bind(_) => CommandId::Bind,
            Body::BindResp(_) => CommandId::BindResp,
            Body::Unbind => CommandId::Unbind,
            Body::UnbindResp => CommandId::UnbindResp,
            Body::Submit(_) => CommandId::Submit,
            Body::SubmitResp(_) => CommandId::SubmitResp,
            Body::Deliver(_) => CommandId::Deliver,
            Body::DeliverResp(_) => CommandId::DeliverResp,
            Body::Report(_) => CommandId::Report,
            Body::ReportResp(_) => CommandId::ReportResp,
            Body::UserRpt(_) => CommandId::UserRpt,
            Body::UserRptResp(_) => CommandId::UserRptResp,
            Body::Trace(_) => CommandId::Trace,
            Body::TraceResp(_) => CommandId::TraceResp,
        }
    }

    /// The generic response carried by this body, if it is one.
    pub fn response(&self) -> Option<Response> {
        match self {
            Body::BindResp(r)
            | Body::SubmitResp(r)
            | Body::DeliverResp(r)
            | Body::ReportResp(r)
            | Body::UserRptResp(r) => Some(*r),
            Body::UnbindResp => Some(Response::new(ResultCode::OK)),
            _ => None,
        }
    }

    /// The response body answering this request with `result`, or `None`
    /// if this body is itself a response. Unbind and Trace get their
    /// body-less and empty responses.
    pub fn response_with(&self, result: ResultCode) -> Option<Body> {
        let r = Response::new(result);
        Some(match self {
            Body::Bind(_) => Body::BindResp(r),
            Body::Unbind => Body::UnbindResp,
            Body::Submit(_) => Body::SubmitResp(r),
            Body::Deliver(_) => Body::DeliverResp(r),
            Body::Report(_) => Body::ReportResp(r),
            Body::UserRpt(_) => Body::UserRptResp(r),
            Body::Trace(_) => Body::TraceResp(TraceResp::default()),
            _ => return None,
        })
    }

    fn body_len(&self) -> usize {
        match self {
            Body::Bind(_) => 41,
            Body::Unbind | Body::UnbindResp => 0,
            Body::BindResp(_)
            | Body::SubmitResp(_)
            | Body::DeliverResp(_)
            | Body::ReportResp(_)
            | Body::UserRptResp(_) => 9,
            Body::Submit(s) => SUBMIT_FIXED_BODY + 21 * s.user_numbers.len() + s.content.len(),
            Body::Deliver(d) => DELIVER_FIXED_BODY + d.content.len(),
            Body::Report(_) => 44,
            Body::UserRpt(_) => 51,
            Body::Trace(_) => 41,
            Body::TraceResp(t) => 1 + TRACE_HOP_LEN * t.hops.len(),
        }
    }
}

/// One SGIP PDU: the header's sequence triple and a body. The length and
/// command id of the header follow from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub sequence: SequenceTriple,
    pub body: Body,
}

impl Pdu {
    /// A PDU from its parts.
    pub fn new(sequence: SequenceTriple, body: Body) -> Self {
        Self { sequence, body }
    }

    /// The command id of this PDU.
    pub fn command(&self) -> CommandId {
        self.body.command()
    }

    /// The size of the encoded PDU, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.body_len()
    }

    /// Appends the encoded PDU to `dst`.
    ///
    /// Counts that do not fit their wire field (more than 255 recipients or
    /// trace hops) are written modulo the field; use [`Submit::check`] to
    /// refuse such a Submit before encoding it.
    pub fn encode(&self, dst: &mut BytesMut) {
        let len = self.encoded_len();
        dst.reserve(len);
        dst.put_u32(len as u32);
        dst.put_u32(self.command().as_u32());
        dst.put_slice(&self.sequence.to_bytes());
        match &self.body {
            Body::Bind(b) => {
                dst.put_u8(b.login_type);
                dst.put_slice(b.login_name.raw());
                dst.put_slice(b.login_password.raw());
                dst.put_slice(b.reserve.raw());
            }
            Body::Unbind | Body::UnbindResp => {}
            Body::BindResp(r)
            | Body::SubmitResp(r)
            | Body::DeliverResp(r)
            | Body::ReportResp(r)
            | Body::UserRptResp(r) => {
                dst.put_u8(r.result.0);
                dst.put_slice(r.reserve.raw());
            }
            Body::Submit(s) => {
                dst.put_slice(s.sp_number.raw());
                dst.put_slice(s.charge_number.raw());
                dst.put_u8(s.user_numbers.len() as u8);
                for user in &s.user_numbers {
                    dst.put_slice(user.raw());
                }
                dst.put_slice(s.corp_id.raw());
                dst.put_slice(s.service_type.raw());
                dst.put_u8(s.fee_type);
                dst.put_slice(s.fee_value.raw());
                dst.put_slice(s.given_value.raw());
                dst.put_u8(s.agent_flag);
                dst.put_u8(s.morelateto_mt_flag);
                dst.put_u8(s.priority);
                dst.put_slice(s.expire_time.raw());
                dst.put_slice(s.schedule_time.raw());
                dst.put_u8(s.report_flag);
                dst.put_u8(s.tp_pid);
                dst.put_u8(s.tp_udhi);
                dst.put_u8(s.message_coding);
                dst.put_u8(s.message_type);
                dst.put_u32(s.content.len() as u32);
                dst.put_slice(&s.content);
                dst.put_slice(s.reserve.raw());
            }
            Body::Deliver(d) => {
                dst.put_slice(d.user_number.raw());
                dst.put_slice(d.sp_number.raw());
                dst.put_u8(d.tp_pid);
                dst.put_u8(d.tp_udhi);
                dst.put_u8(d.message_coding);
                dst.put_u32(d.content.len() as u32);
                dst.put_slice(&d.content);
                dst.put_slice(d.reserve.raw());
            }
            Body::Report(r) => {
                dst.put_slice(&r.submit_sequence.to_bytes());
                dst.put_u8(r.report_type);
                dst.put_slice(r.user_number.raw());
                dst.put_u8(r.state);
                dst.put_u8(r.error_code);
                dst.put_slice(r.reserve.raw());
            }
            Body::UserRpt(u) => {
                dst.put_slice(u.sp_number.raw());
                dst.put_slice(u.user_number.raw());
                dst.put_u8(u.user_condition);
                dst.put_slice(u.reserve.raw());
            }
            Body::Trace(t) => {
                dst.put_slice(&t.submit_sequence.to_bytes());
                dst.put_slice(t.user_number.raw());
                dst.put_slice(t.reserve.raw());
            }
            Body::TraceResp(t) => {
                dst.put_u8(t.hops.len() as u8);
                for hop in &t.hops {
                    dst.put_u8(hop.result);
                    dst.put_slice(hop.node_id.raw());
                    dst.put_slice(hop.receive_time.raw());
                    dst.put_slice(hop.send_time.raw());
                    dst.put_slice(hop.reserve.raw());
                }
            }
        }
    }

    /// The encoded PDU as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes one whole frame (header included). The frame's length field
    /// must equal `frame.len()`; use [`frame_len`] to find a frame's end in
    /// a stream first. Never panics; every inconsistency is an [`Error`].
    pub fn decode(frame: Bytes) -> Result<Self, Error> {
        if frame.len() < HEADER_LEN {
            return Err(Error::FrameTooShort {
                length: frame.len() as u32,
            });
        }
        let mut r = Reader::new(frame);
        let length = r.u32()? as usize;
        if length != r.buf.len() {
            return Err(Error::BodyLength {
                command: "frame",
                expected: length.saturating_sub(HEADER_LEN),
                actual: r.buf.len() - HEADER_LEN,
            });
        }
        let id = r.u32()?;
        let command = CommandId::from_u32(id).ok_or(Error::UnknownCommand { id })?;
        let sequence = r.sequence()?;
        let body_len = length - HEADER_LEN;
        let fixed = |expected: usize| {
            if body_len == expected {
                Ok(())
            } else {
                Err(Error::BodyLength {
                    command: command.name(),
                    expected,
                    actual: body_len,
                })
            }
        };
        let body = match command {
            CommandId::Bind => {
                fixed(41)?;
                Body::Bind(Bind {
                    login_type: r.u8()?,
                    login_name: r.text()?,
                    login_password: r.text()?,
                    reserve: r.text()?,
                })
            }
            CommandId::Unbind => {
                fixed(0)?;
                Body::Unbind
            }
            CommandId::UnbindResp => {
                fixed(0)?;
                Body::UnbindResp
            }
            CommandId::BindResp
            | CommandId::SubmitResp
            | CommandId::DeliverResp
            | CommandId::ReportResp
            | CommandId::UserRptResp => {
                fixed(9)?;
                let response = Response {
                    result: ResultCode(r.u8()?),
                    reserve: r.text()?,
                };
                match command {
                    CommandId::BindResp => Body::BindResp(response),
                    CommandId::SubmitResp => Body::SubmitResp(response),
                    CommandId::DeliverResp => Body::DeliverResp(response),
                    CommandId::ReportResp => Body::ReportResp(response),
                    _ => Body::UserRptResp(response),
                }
            }
            CommandId::Submit => Body::Submit(decode_submit(&mut r, body_len)?),
            CommandId::Deliver => {
                if body_len < DELIVER_FIXED_BODY {
                    return Err(Error::BodyLength {
                        command: "deliver",
                        expected: DELIVER_FIXED_BODY,
                        actual: body_len,
                    });
                }
                let user_number = r.text()?;
                let sp_number = r.text()?;
                let tp_pid = r.u8()?;
                let tp_udhi = r.u8()?;
                let message_coding = r.u8()?;
                let message_len = r.u32()? as usize;
                fixed(DELIVER_FIXED_BODY.saturating_add(message_len))?;
                Body::Deliver(Deliver {
                    user_number,
                    sp_number,
                    tp_pid,
                    tp_udhi,
                    message_coding,
                    content: r.bytes(message_len)?,
                    reserve: r.text()?,
                })
            }
            CommandId::Report => {
                fixed(44)?;
                Body::Report(Report {
                    submit_sequence: r.sequence()?,
                    report_type: r.u8()?,
                    user_number: r.text()?,
                    state: r.u8()?,
                    error_code: r.u8()?,
                    reserve: r.text()?,
                })
            }
            CommandId::UserRpt => {
                fixed(51)?;
                Body::UserRpt(UserRpt {
                    sp_number: r.text()?,
                    user_number: r.text()?,
                    user_condition: r.u8()?,
                    reserve: r.text()?,
                })
            }
            CommandId::Trace => {
                fixed(41)?;
                Body::Trace(Trace {
                    submit_sequence: r.sequence()?,
                    user_number: r.text()?,
                    reserve: r.text()?,
                })
            }
            CommandId::TraceResp => {
                if body_len < 1 {
                    return Err(Error::BodyLength {
                        command: "trace_resp",
                        expected: 1,
                        actual: 0,
                    });
                }
                let count = r.u8()? as usize;
                fixed(1 + TRACE_HOP_LEN * count)?;
                let mut hops = Vec::with_capacity(count);
                for _ in 0..count {
                    hops.push(TraceHop {
                        result: r.u8()?,
                        node_id: r.text()?,
                        receive_time: r.text()?,
                        send_time: r.text()?,
                        reserve: r.text()?,
                    });
                }
                Body::TraceResp(TraceResp { hops })
            }
        };
        Ok(Pdu { sequence, body })
    }
}

fn decode_submit(r: &mut Reader, body_len: usize) -> Result<Submit, Error> {
    if body_len < SUBMIT_FIXED_BODY + 21 {
        return Err(Error::BodyLength {
            command: "submit",
            expected: SUBMIT_FIXED_BODY + 21,
            actual: body_len,
        });
    }
    let sp_number = r.text()?;
    let charge_number = r.text()?;
    let user_count = r.u8()? as usize;
    if !(1..=MAX_USER_COUNT).contains(&user_count) {
        return Err(Error::CountOutOfRange {
            field: "UserCount",
            value: user_count as u32,
            min: 1,
            max: MAX_USER_COUNT as u32,
        });
    }
    // The recipients must fit before the fixed tail; check before allocating.
    if body_len < SUBMIT_FIXED_BODY + 21 * user_count {
        return Err(Error::BodyLength {
            command: "submit",
            expected: SUBMIT_FIXED_BODY + 21 * user_count,
            actual: body_len,
        });
    }
    let mut user_numbers = Vec::with_capacity(user_count);
    for _ in 0..user_count {
        user_numbers.push(r.text()?);
    }
    let corp_id = r.text()?;
    let service_type = r.text()?;
    let fee_type = r.u8()?;
    let fee_value = r.text()?;
    let given_value = r.text()?;
    let agent_flag = r.u8()?;
    let morelateto_mt_flag = r.u8()?;
    let priority = r.u8()?;
    let expire_time = r.text()?;
    let schedule_time = r.text()?;
    let report_flag = r.u8()?;
    let tp_pid = r.u8()?;
    let tp_udhi = r.u8()?;
    let message_coding = r.u8()?;
    let message_type = r.u8()?;
    let message_len = r.u32()? as usize;
    let expected = (SUBMIT_FIXED_BODY + 21 * user_count).saturating_add(message_len);
    if expected != body_len {
        return Err(Error::BodyLength {
            command: "submit",
            expected,
            actual: body_len,
        });
    }
    Ok(Submit {
        sp_number,
        charge_number,
        user_numbers,
        corp_id,
        service_type,
        fee_type,
        fee_value,
        given_value,
        agent_flag,
        morelateto_mt_flag,
        priority,
        expire_time,
        schedule_time,
        report_flag,
        tp_pid,
        tp_udhi,
        message_coding,
        message_type,
        content: r.bytes(message_len)?,
        reserve: r.text()?,
    })
}

impl Submit {
    /// Checks what the encoder cannot express or the gateway refuses: 1 to
    /// 100 recipients, at most 140 octets of content, and a PDU within
    /// `max_frame_len`.
    pub fn check(&self, max_frame_len: usize) -> Result<(), Error> {
        let users = self.user_numbers.len();
        if !(1..=MAX_USER_COUNT).contains(&users) {
            return Err(Error::CountOutOfRange {
                field: "UserCount",
                value: users as u32,
                min: 1,
                max: MAX_USER_COUNT as u32,
            });
        }
        if self.content.len() > MAX_MESSAGE_LEN {
            return Err(Error::FieldTooLong {
                field: "MessageContent",
                max: MAX_MESSAGE_LEN,
                actual: self.content.len(),
            });
        }
        let len = HEADER_LEN + SUBMIT_FIXED_BODY + 21 * users + self.content.len();
        if len > max_frame_len {
            return Err(Error::FrameTooLong {
                length: len as u32,
                max: max_frame_len,
            });
        }
        Ok(())
    }
}

/// Looks at the start of a stream buffer and says how long the first frame
/// is, without parsing it: `Ok(None)` if fewer than 4 bytes are there yet,
/// an error if the length field is below 20 or above `max_frame_len`.
pub fn frame_len(buf: &[u8], max_frame_len: usize) -> Result<Option<usize>, Error> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if (length as usize) < HEADER_LEN {
        return Err(Error::FrameTooShort { length });
    }
    if length as usize > max_frame_len {
        return Err(Error::FrameTooLong {
            length,
            max: max_frame_len,
        });
    }
    Ok(Some(length as usize))
}

/// A bounds-checked cursor over a frame.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(Error::BodyLength {
                command: "field",
                expected: self.pos.saturating_add(n),
                actual: self.buf.len(),
            });
        };
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn sequence(&mut self) -> Result<SequenceTriple, Error> {
        let mut raw = [0u8; 12];
        raw.copy_from_slice(self.take(12)?);
        Ok(SequenceTriple::from_bytes(raw))
    }

    fn text<const N: usize>(&mut self) -> Result<Text<N>, Error> {
        let mut raw = [0u8; N];
        raw.copy_from_slice(self.take(N)?);
        Ok(Text::from_raw(raw))
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, Error> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..start + n))
    }
}
