//! Result codes of SGIP responses and their classification (transient or permanent).

use std::fmt;

/// The one-byte Result of a response, or ErrorCode of a Report.
///
/// Zero means accepted. A non-zero value from the gateway is an expected
/// outcome, not an [`crate::Error`]: callers decide from [`ResultCode::class`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct ResultCode(pub u8);

/// What a non-zero Result means for the request that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultClass {
    /// Accepted (Result 0).
    Ok,
    /// Busy or throttled: send the same request again after a back-off.
    Transient,
    /// The session or the protocol is wrong (login, command id, length,
    /// sequence): alert; a blind retry does not help.
    Session,
    /// The content or parameters are wrong: fail the message.
    Permanent,
}

impl ResultCode {
    /// Accepted.
    pub const OK: Self = Self(0);
    /// Bad login name or password.
    pub const ILLEGAL_LOGIN: Self = Self(1);
    /// Bind sent twice on one connection.
    pub const REPEATED_LOGIN: Self = Self(2);
    /// Too many connections from one node.
    pub const TOO_MANY_CONNECTIONS: Self = Self(3);
    /// Wrong LoginType.
    pub const WRONG_LOGIN_TYPE: Self = Self(4);
    /// A value does not match its type or range.
    pub const PARAMETER_FORMAT: Self = Self(5);
    /// Not a valid mobile number.
    pub const ILLEGAL_NUMBER: Self = Self(6);
    /// Wrong command id.
    pub const WRONG_COMMAND: Self = Self(7);
    /// Wrong message length.
    pub const WRONG_LENGTH: Self = Self(8);
    /// Duplicate or malformed sequence number.
    pub const ILLEGAL_SEQUENCE: Self = Self(9);
    /// Node busy.
    pub const NODE_BUSY: Self = Self(11);
    /// Handset unreachable (switched off, out of coverage).
    pub const UNREACHABLE: Self = Self(25);
    /// Handset memory full.
    pub const MEMORY_FULL: Self = Self(26);
    /// Unknown user.
    pub const UNKNOWN_USER: Self = Self(29);
    /// System failure.
    pub const SYSTEM_FAILURE: Self = Self(32);
    /// 1.2: SMSC queue full; 1.3 list A: per-second flow limit.
    pub const QUEUE_FULL_OR_FLOW_LIMIT: Self = Self(33);
    /// Validity period expired (1.3 vendor list).
    pub const EXPIRED: Self = Self(61);
    /// Blacklisted user (1.3 vendor list).
    pub const BLACKLISTED: Self = Self(69);
    /// Flow control: traffic above the allowed rate.
    pub const FLOW_CONTROL: Self = Self(88);
    /// Suspended user (1.3 SPMS list).
    pub const SUSPENDED: Self = Self(108);

    /// Whether the code means accepted.
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Whether the code is the gateway asking the sender to slow down.
    pub fn is_throttle(self) -> bool {
        matches!(self.0, 33 | 88)
    }

    /// The class of a Submit_Resp (or other response) Result, per the
    /// protocol reference's policy table. Codes in no table are treated as
    /// permanent so that an unknown refusal is surfaced, not retried forever.
    pub fn class(self) -> ResultClass {
        match self.0 {
            0 => ResultClass::Ok,
            11 | 33 | 34 | 51..=55 | 70 | 73 | 84..=88 => ResultClass::Transient,
            1..=4 | 7..=9 => ResultClass::Session,
            _ => ResultClass::Permanent,
        }
    }

    /// Whether sending the same request again after a back-off can succeed.
    pub fn is_retryable(self) -> bool {
        self.class() == ResultClass::Transient
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u8> for ResultCode {
    fn from(value: u8) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_policy_table() {
        assert_eq!(ResultCode(0).class(), ResultClass::Ok);
        for code in [11, 88, 33, 34, 51, 55, 70, 73] {
            assert!(ResultCode(code).is_retryable(), "{code}");
        }
        for code in [1, 2, 3, 4, 7, 8, 9] {
            assert_eq!(ResultCode(code).class(), ResultClass::Session, "{code}");
        }
        for code in [5, 6, 13, 14, 17, 19, 32, 38, 44, 95, 101, 124, 200] {
            assert_eq!(ResultCode(code).class(), ResultClass::Permanent, "{code}");
        }
        assert!(ResultCode::FLOW_CONTROL.is_throttle());
    }
}
