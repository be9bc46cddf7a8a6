//! The carrier's error codes (SGIP 1.2, and the 1.3 codes gateways send in practice) with the failure category each one counts under.
//!
//! One table serves the status service (which category a failed report
//! falls in) and the analytics schema (descriptions for the monthly report).

use crate::events::FailureCategory;

/// One carrier error code: what it means and how the reports group it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarrierCode {
    pub code: u8,
    pub category: FailureCategory,
    pub zh: &'static str,
    pub en: &'static str,
}

const fn code(
    code: u8,
    category: FailureCategory,
    zh: &'static str,
    en: &'static str,
) -> CarrierCode {
    CarrierCode {
        code,
        category,
        zh,
        en,
    }
}

use FailureCategory::*;

/// Codes a Report's ErrorCode or a Submit_Resp's Result can carry.
pub const CARRIER_CODES: &[CarrierCode] = &[
    code(1, GatewayRefused, "非法登录", "illegal login"),
    code(2, GatewayRefused, "重复登录", "repeated login"),
    code(3, GatewayRefused, "连接过多", "too many connections"),
    code(4, GatewayRefused, "登录类型错", "wrong login type"),
    code(5, GatewayRefused, "参数格式错", "parameter format error"),
    code(6, NoSuchNumber, "非法手机号码", "illegal mobile number"),
    code(7, GatewayRefused, "消息ID错", "wrong command id"),
    code(8, GatewayRefused, "信息长度错", "wrong message length"),
    code(9, GatewayRefused, "非法序列号", "illegal sequence number"),
    code(10, GatewayRefused, "非法操作GNS", "illegal GNS operation"),
    code(11, Network, "节点忙", "node busy"),
    code(21, Network, "目的地址不可达", "destination unreachable"),
    code(22, Network, "路由错", "routing error"),
    code(23, Network, "路由不存在", "no route"),
    code(24, Other, "计费号码无效", "invalid charge number"),
    code(
        25,
        PoweredOff,
        "用户不能通信",
        "user cannot be reached (switched off or out of coverage)",
    ),
    code(26, PoweredOff, "手机内存不足", "handset memory full"),
    code(
        27,
        Other,
        "手机不支持短消息",
        "handset does not support SMS",
    ),
    code(
        28,
        Other,
        "手机接收短消息出现错误",
        "handset error receiving the SMS",
    ),
    code(29, NoSuchNumber, "不知道的用户", "unknown user"),
    code(30, Other, "不提供此功能", "function not provided"),
    code(31, Other, "非法设备", "illegal device"),
    code(32, Network, "系统失败", "system failure"),
    code(33, Network, "短信中心队列满", "SMSC queue full"),
    code(51, Network, "尚未建立连接", "not connected"),
    code(52, Network, "尚未成功登录", "not logged in"),
    code(53, Network, "发送消息失败", "send failed"),
    code(
        54,
        Network,
        "超时未接收到响应消息",
        "timed out waiting for a response",
    ),
    code(
        55,
        Network,
        "等待状态报告超时",
        "timed out waiting for a status report",
    ),
    code(
        56,
        Suspended,
        "鉴权时用户状态异常",
        "user state abnormal at authentication",
    ),
    code(61, Expired, "有效时间已经过期", "validity period expired"),
    code(
        62,
        Expired,
        "定时发送时间已经过期",
        "schedule time already passed",
    ),
    code(
        68,
        NoSuchNumber,
        "用户鉴权失败",
        "user authentication failed",
    ),
    code(69, Blacklisted, "黑名单用户", "blacklisted user"),
    code(
        70,
        Network,
        "网络断连或目的设备关闭接口",
        "network down or peer interface closed",
    ),
    code(72, Network, "路由不存在", "no route"),
    code(73, Network, "响应超时", "response timeout"),
    code(
        88,
        Network,
        "流量控制错",
        "flow control: traffic over the limit",
    ),
    code(108, Suspended, "停机用户", "suspended user"),
    code(
        110,
        Blacklisted,
        "黑名单或非活动用户",
        "blacklisted or inactive user",
    ),
];

/// The entry for `code`, if the table knows it.
pub fn carrier_code(code: u8) -> Option<&'static CarrierCode> {
    CARRIER_CODES.iter().find(|c| c.code == code)
}

/// The category a failure with `code` counts under; unknown codes are `Other`.
pub fn failure_category(code: u8) -> FailureCategory {
    carrier_code(code).map_or(Other, |c| c.category)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_categorised() {
        let mut seen = std::collections::HashSet::new();
        for c in CARRIER_CODES {
            assert!(seen.insert(c.code), "code {} twice", c.code);
            assert!(!c.zh.is_empty() && !c.en.is_empty());
        }
        assert_eq!(failure_category(29), NoSuchNumber);
        assert_eq!(failure_category(25), PoweredOff);
        assert_eq!(failure_category(108), Suspended);
        assert_eq!(failure_category(69), Blacklisted);
        assert_eq!(failure_category(61), Expired);
        assert_eq!(failure_category(21), Network);
        assert_eq!(failure_category(200), Other);
    }
}
