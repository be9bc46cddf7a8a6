//! Request validation shared by ingest and the dispatcher: recipient number, text, kind, expiry.
//!
//! One implementation so that what ingest accepts is exactly what the
//! dispatcher lets through. A refused request is a value ([`Refusal`]) with
//! a stable machine-readable code, not an error: refusing bad input is the
//! expected outcome of validation.
//!
//! - **Numbers** are normalised to `86` followed by the 11-digit national
//!   number (the SGIP `UserNumber` form), whether given as `130…`, `86130…`,
//!   `+86130…` or `0086130…`, and accepted only within China Unicom's ranges
//!   ([`NumberRanges`], loaded from `data/unicom-number-ranges.txt`, compiled
//!   in as the default, with a path override). Since number portability a
//!   prefix does not prove the carrier; the gateway's answer stays final.
//! - **Text** must not be empty, must not hold a forbidden word (contract
//!   clauses 2.2 and 2.3: no advertising), must carry the sender signature
//!   (added or required, per [`SignaturePolicy`]) and must fit in
//!   [`TextRules::max_segments`] billed segments, counted as the gateway
//!   counts them: 70 UCS-2 characters in one message or 67 per concatenated
//!   segment, 140 / 134 for text that is all ASCII.
//! - **Expiry** must lie in the future, and a scheduled time before it.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::error::CoreError;
use crate::events::{MessageKind, Millis, RefusalReason, SmsRequest};

/// The range file compiled into every binary, used when no path is configured.
pub const BUNDLED_RANGES: &str = include_str!("../../../data/unicom-number-ranges.txt");

/// The sender signature of the bureau's platform.
pub const DEFAULT_SIGNATURE: &str = "【交管12123】";

/// Characters in one UCS-2 message, and per segment once concatenated.
const UCS2_SINGLE: usize = 70;
const UCS2_SEGMENT: usize = 67;
/// Characters in one all-ASCII message, and per segment once concatenated.
const ASCII_SINGLE: usize = 140;
const ASCII_SEGMENT: usize = 134;

/// The longest extension the platform may append to the access number
/// (`121231100` plus the extension must fit SGIP's 21-octet SPNumber).
pub const MAX_EXTENSION_DIGITS: usize = 12;

/// Why a request is refused. Each variant has a stable [`Refusal::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a mobile number of mainland China in any accepted spelling.
    InvalidNumber,
    /// A mainland mobile number outside China Unicom's ranges.
    NotUnicom,
    /// Empty, or white space only.
    EmptyText,
    /// Longer than the platform allows.
    TextTooLong { segments: u32, max: u32 },
    /// Holds a word the content policy forbids.
    ForbiddenContent { word: String },
    /// The sender signature is required and missing.
    MissingSignature { signature: String },
    /// Not one of the message kinds.
    UnknownKind { kind: String },
    /// The expiry time has passed.
    Expired,
    /// The scheduled time is at or after the expiry time.
    ScheduledAfterExpiry,
    /// The access-number extension is not a short run of digits.
    InvalidExtension,
}

impl Refusal {
    /// The machine-readable code, stable across releases.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidNumber => "invalid_number",
            Self::NotUnicom => "not_unicom",
            Self::EmptyText => "empty_text",
            Self::TextTooLong { .. } => "text_too_long",
            Self::ForbiddenContent { .. } => "forbidden_content",
            Self::MissingSignature { .. } => "missing_signature",
            Self::UnknownKind { .. } => "unknown_kind",
            Self::Expired => "expired",
            Self::ScheduledAfterExpiry => "scheduled_after_expiry",
            Self::InvalidExtension => "invalid_extension",
        }
    }

    /// The reason recorded on `sms.dispatch` and `sms.status`.
    pub fn reason(&self) -> RefusalReason {
        match self {
            Self::NotUnicom => RefusalReason::NotUnicom,
            Self::Expired => RefusalReason::Expired,
            Self::ForbiddenContent { .. } | Self::MissingSignature { .. } => {
                RefusalReason::ContentPolicy
            }
            _ => RefusalReason::InvalidRequest,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidNumber => f.write_str(
                "recipient is not a mainland mobile number (11 digits, optionally after +86 or 86)",
            ),
            Self::NotUnicom => f.write_str("recipient is not in China Unicom's number ranges"),
            Self::EmptyText => f.write_str("text is empty"),
            Self::TextTooLong { segments, max } => {
                write!(
                    f,
                    "text needs {segments} segments, at most {max} are allowed"
                )
            }
            Self::ForbiddenContent { word } => {
                write!(f, "text holds \"{word}\", which the content policy forbids")
            }
            Self::MissingSignature { signature } => {
                write!(f, "text does not carry the sender signature {signature}")
            }
            Self::UnknownKind { kind } => write!(
                f,
                "kind \"{kind}\" is not one of VERIFICATION_CODE, NOTICE, REMINDER"
            ),
            Self::Expired => f.write_str("expiry time has passed"),
            Self::ScheduledAfterExpiry => f.write_str("scheduled time is not before expiry time"),
            Self::InvalidExtension => write!(
                f,
                "access-number extension must be 1 to {MAX_EXTENSION_DIGITS} digits"
            ),
        }
    }
}

/// China Unicom's number ranges: leading digits of the national number.
#[derive(Debug, Clone)]
pub struct NumberRanges {
    /// Range digits → category (`ordinary`, `data-card`, `mvno`, …).
    ranges: HashMap<String, String>,
    shortest: usize,
    longest: usize,
}

impl NumberRanges {
    /// The ranges compiled in from `data/unicom-number-ranges.txt`.
    pub fn bundled() -> Self {
        match Self::parse(BUNDLED_RANGES, "bundled unicom-number-ranges.txt") {
            Ok(ranges) => ranges,
            // The file is compiled in and parsed by the tests.
            Err(e) => panic!("{e}"),
        }
    }

    /// The ranges from `path` when given, else the bundled ones.
    pub fn from_path(path: Option<&Path>) -> Result<Self, CoreError> {
        let Some(path) = path else {
            return Ok(Self::bundled());
        };
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::Config {
            key: "number_ranges".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the range file format: `digits [category]` per line, `#` comments.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CoreError> {
        let mut ranges = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let digits = fields.next().unwrap_or_default();
            let category = fields.next().unwrap_or("ordinary");
            let valid = (2..=10).contains(&digits.len())
                && digits.starts_with('1')
                && digits.bytes().all(|b| b.is_ascii_digit());
            if !valid || fields.next().is_some() {
                return Err(CoreError::Config {
                    key: "number_ranges".into(),
                    message: format!(
                        "{origin} line {}: expected `digits [category]`, found {line:?}",
                        n + 1
                    ),
                });
            }
            ranges.insert(digits.to_string(), category.to_string());
        }
        if ranges.is_empty() {
            return Err(CoreError::Config {
                key: "number_ranges".into(),
                message: format!("{origin} lists no ranges"),
            });
        }
        let shortest = ranges.keys().map(String::len).min().unwrap_or(0);
        let longest = ranges.keys().map(String::len).max().unwrap_or(0);
        Ok(Self {
            ranges,
            shortest,
            longest,
        })
    }

    /// The category of the longest range that `national` (11 digits) falls in.
    pub fn category(&self, national: &str) -> Option<&str> {
        (self.shortest..=self.longest.min(national.len()))
            .rev()
            .find_map(|len| national.get(..len).and_then(|p| self.ranges.get(p)))
            .map(String::as_str)
    }

    /// How many ranges are listed.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether no range is listed (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Whether the signature is added to text without it, or required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignaturePolicy {
    /// Text without the signature gets it in front.
    #[default]
    Add,
    /// Text without the signature is refused.
    Require,
}

/// The content rules for message text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRules {
    /// The sender signature. Default `【交管12123】`.
    #[serde(default = "default_signature")]
    pub signature: String,
    /// What to do with text that lacks the signature. Default `add`.
    #[serde(default)]
    pub signature_policy: SignaturePolicy,
    /// The most billed segments one message may take, signature included.
    /// Default 10.
    #[serde(default = "default_max_segments")]
    pub max_segments: u32,
    /// Words that mark advertising or otherwise forbidden content (contract
    /// 2.2, 2.3); matched case-insensitively. Default: a short list of
    /// promotional words.
    #[serde(default = "default_forbidden_words")]
    pub forbidden_words: Vec<String>,
}

fn default_signature() -> String {
    DEFAULT_SIGNATURE.into()
}

fn default_max_segments() -> u32 {
    10
}

fn default_forbidden_words() -> Vec<String> {
    ["广告", "促销", "特价", "优惠券", "限时抢购", "中奖"]
        .into_iter()
        .map(String::from)
        .collect()
}

impl Default for TextRules {
    fn default() -> Self {
        Self {
            signature: default_signature(),
            signature_policy: SignaturePolicy::default(),
            max_segments: default_max_segments(),
            forbidden_words: default_forbidden_words(),
        }
    }
}

/// The billed segments of `text` as sent: 70 / 67 UTF-16 units, or 140 / 134
/// when every character is ASCII. Empty text takes none.
pub fn segments(text: &str) -> u32 {
    let (units, single, per_segment) = if text.is_ascii() {
        (text.len(), ASCII_SINGLE, ASCII_SEGMENT)
    } else {
        (text.encode_utf16().count(), UCS2_SINGLE, UCS2_SEGMENT)
    };
    let count = match units {
        0 => 0,
        n if n <= single => 1,
        n => n.div_ceil(per_segment),
    };
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Normalises a mainland mobile number to `86` + 11 digits. Spaces and
/// hyphens are ignored; `+86`, `86` and `0086` prefixes are accepted.
pub fn normalise_phone(raw: &str) -> Result<String, Refusal> {
    let compact: String = raw
        .trim()
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::InvalidNumber);
    }
    let national = match digits.len() {
        11 => digits,
        13 if digits.starts_with("86") => &digits[2..],
        15 if digits.starts_with("0086") => &digits[4..],
        _ => return Err(Refusal::InvalidNumber),
    };
    if !national.starts_with('1') {
        return Err(Refusal::InvalidNumber);
    }
    Ok(format!("86{national}"))
}

/// Parses a message kind, case-insensitively, with `-` or `_` between words.
pub fn parse_kind(raw: &str) -> Result<MessageKind, Refusal> {
    let wanted = raw.trim().to_ascii_uppercase().replace('-', "_");
    MessageKind::ALL
        .into_iter()
        .find(|k| k.as_str() == wanted)
        .ok_or_else(|| Refusal::UnknownKind {
            kind: raw.chars().take(40).collect(),
        })
}

/// Checks an access-number extension: 1 to 12 digits.
pub fn check_extension(extension: &str) -> Result<(), Refusal> {
    let valid = !extension.is_empty()
        && extension.len() <= MAX_EXTENSION_DIGITS
        && extension.bytes().all(|b| b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(Refusal::InvalidExtension)
    }
}

/// Checks that an expiry lies after `now` and a schedule before the expiry.
pub fn check_times(
    now: Millis,
    expires_at: Option<Millis>,
    scheduled_at: Option<Millis>,
) -> Result<(), Refusal> {
    let Some(expires_at) = expires_at else {
        return Ok(());
    };
    if expires_at <= now {
        return Err(Refusal::Expired);
    }
    if scheduled_at.is_some_and(|at| at >= expires_at) {
        return Err(Refusal::ScheduledAfterExpiry);
    }
    Ok(())
}

/// The number ranges and text rules, applied together.
#[derive(Debug, Clone)]
pub struct Validator {
    ranges: NumberRanges,
    rules: TextRules,
    /// Forbidden words, lower-cased once.
    forbidden: Vec<String>,
}

impl Validator {
    /// A validator; refuses rules that could never pass.
    pub fn new(ranges: NumberRanges, rules: TextRules) -> Result<Self, CoreError> {
        if rules.max_segments == 0 {
            return Err(CoreError::Config {
                key: "text.max_segments".into(),
                message: "must be at least 1".into(),
            });
        }
        if rules.signature.trim().is_empty() {
            return Err(CoreError::Config {
                key: "text.signature".into(),
                message: "must not be empty (contract 2.6: no anonymous messages)".into(),
            });
        }
        let signature_segments = segments(&rules.signature);
        if signature_segments > rules.max_segments {
            return Err(CoreError::Config {
                key: "text.signature".into(),
                message: format!("takes {signature_segments} segments alone"),
            });
        }
        let forbidden = rules
            .forbidden_words
            .iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        Ok(Self {
            ranges,
            rules,
            forbidden,
        })
    }

    /// The bundled ranges and the default rules.
    pub fn bundled() -> Self {
        match Self::new(NumberRanges::bundled(), TextRules::default()) {
            Ok(validator) => validator,
            // The defaults are fixed and covered by the tests.
            Err(e) => panic!("{e}"),
        }
    }

    /// The text rules in force.
    pub fn rules(&self) -> &TextRules {
        &self.rules
    }

    /// The number ranges in force.
    pub fn ranges(&self) -> &NumberRanges {
        &self.ranges
    }

    /// Normalises a recipient and checks it is a Unicom number.
    pub fn phone(&self, raw: &str) -> Result<String, Refusal> {
        let phone = normalise_phone(raw)?;
        match self.ranges.category(&phone[2..]) {
            Some(_) => Ok(phone),
            None => Err(Refusal::NotUnicom),
        }
    }

    /// Checks text and returns it as it will be sent, signature included.
    pub fn text(&self, raw: &str) -> Result<String, Refusal> {
        let trimmed = raw.trim();
        let signature = &self.rules.signature;
        let bare = trimmed
            .strip_prefix(signature.as_str())
            .or_else(|| trimmed.strip_suffix(signature.as_str()));
        if bare.unwrap_or(trimmed).trim().is_empty() {
            return Err(Refusal::EmptyText);
        }
        let lower = trimmed.to_lowercase();
        if let Some(word) = self.forbidden.iter().find(|w| lower.contains(w.as_str())) {
            return Err(Refusal::ForbiddenContent { word: word.clone() });
        }
        let text = match (bare, self.rules.signature_policy) {
            (Some(_), _) => trimmed.to_string(),
            (None, SignaturePolicy::Add) => format!("{signature}{trimmed}"),
            (None, SignaturePolicy::Require) => {
                return Err(Refusal::MissingSignature {
                    signature: signature.clone(),
                })
            }
        };
        let needed = segments(&text);
        if needed > self.rules.max_segments {
            return Err(Refusal::TextTooLong {
                segments: needed,
                max: self.rules.max_segments,
            });
        }
        Ok(text)
    }

    /// Checks a request as it comes off a request topic (the dispatcher's
    /// view): its number, text, extension and expiry at `now`. A request
    /// ingest accepted passes unchanged, unless it has expired since.
    pub fn request(&self, request: &SmsRequest, now: Millis) -> Result<(), Refusal> {
        if self.phone(&request.phone)? != request.phone {
            return Err(Refusal::InvalidNumber);
        }
        if self.text(&request.text)? != request.text {
            return Err(Refusal::MissingSignature {
                signature: self.rules.signature.clone(),
            });
        }
        if let Some(extension) = &request.sp_extension {
            check_extension(extension)?;
        }
        check_times(now, request.expires_at, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RequestSource;

    #[test]
    fn bundled_ranges_parse() {
        let ranges = NumberRanges::bundled();
        assert!(ranges.len() >= 17);
        assert_eq!(ranges.category("13012345678"), Some("ordinary"));
        assert_eq!(ranges.category("17071234567"), Some("mvno"));
        assert_eq!(ranges.category("17001234567"), None, "1700 is Telecom's");
        assert_eq!(
            ranges.category("13812345678"),
            None,
            "138 is China Mobile's"
        );
    }

    #[test]
    fn range_files_with_bad_lines_are_refused_with_the_line() {
        let err = NumberRanges::parse("130\nabc ordinary\n", "test").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(NumberRanges::parse("# nothing\n", "test").is_err());
        assert!(NumberRanges::parse("130 ordinary extra\n", "test").is_err());
    }

    #[test]
    fn numbers_normalise_from_every_spelling() {
        for raw in [
            "13012345678",
            "8613012345678",
            "+8613012345678",
            "008613012345678",
            " 130-1234-5678 ",
            "+86 130 1234 5678",
        ] {
            assert_eq!(
                normalise_phone(raw).as_deref(),
                Ok("8613012345678"),
                "{raw}"
            );
        }
        for raw in [
            "",
            "130123456",
            "1301234567890",
            "23012345678",
            "86230123456789",
            "+1 130 1234 5678",
            "1301234567x",
            "８６13012345678",
        ] {
            assert_eq!(normalise_phone(raw), Err(Refusal::InvalidNumber), "{raw}");
        }
    }

    #[test]
    fn only_unicom_numbers_pass() {
        let v = Validator::bundled();
        assert_eq!(v.phone("18612341234").as_deref(), Ok("8618612341234"));
        assert_eq!(v.phone("+8613812341234"), Err(Refusal::NotUnicom));
        assert_eq!(v.phone("19612341234").as_deref(), Ok("8619612341234"));
    }

    #[test]
    fn segments_count_as_the_gateway_does() {
        assert_eq!(segments(""), 0);
        assert_eq!(segments(&"a".repeat(140)), 1);
        assert_eq!(segments(&"a".repeat(141)), 2);
        assert_eq!(segments(&"a".repeat(268)), 2);
        assert_eq!(segments(&"a".repeat(269)), 3);
        assert_eq!(segments(&"好".repeat(70)), 1);
        assert_eq!(segments(&"好".repeat(71)), 2);
        assert_eq!(segments(&"好".repeat(134)), 2);
        assert_eq!(segments(&"好".repeat(135)), 3);
        // A character outside the BMP takes two UTF-16 units.
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
    }

    #[test]
    fn signature_is_added_or_required() {
        let v = Validator::bundled();
        assert_eq!(
            v.text("您的验证码是 123456").as_deref(),
            Ok("【交管12123】您的验证码是 123456")
        );
        assert_eq!(
            v.text("您的验证码是 123456【交管12123】").as_deref(),
            Ok("您的验证码是 123456【交管12123】")
        );
        let rules = TextRules {
            signature_policy: SignaturePolicy::Require,
            ..TextRules::default()
        };
        let strict = Validator::new(NumberRanges::bundled(), rules).unwrap();
        assert!(matches!(
            strict.text("没有签名"),
            Err(Refusal::MissingSignature { .. })
        ));
        assert!(strict.text("【交管12123】有签名").is_ok());
    }

    #[test]
    fn empty_forbidden_and_long_text_is_refused() {
        let v = Validator::bundled();
        assert_eq!(v.text(""), Err(Refusal::EmptyText));
        assert_eq!(v.text("   "), Err(Refusal::EmptyText));
        assert_eq!(v.text("【交管12123】"), Err(Refusal::EmptyText));
        assert_eq!(
            v.text("本店促销，欢迎光临"),
            Err(Refusal::ForbiddenContent {
                word: "促销".into()
            })
        );
        // The signature takes 9 characters: 661 more fill 10 segments of 67.
        assert!(v.text(&"好".repeat(661)).is_ok());
        assert_eq!(
            v.text(&"好".repeat(662)),
            Err(Refusal::TextTooLong {
                segments: 11,
                max: 10
            })
        );
    }

    #[test]
    fn kinds_parse_in_either_case() {
        assert_eq!(
            parse_kind("verification_code"),
            Ok(MessageKind::VerificationCode)
        );
        assert_eq!(parse_kind("NOTICE"), Ok(MessageKind::Notice));
        assert_eq!(parse_kind("reminder"), Ok(MessageKind::Reminder));
        assert_eq!(parse_kind("advert").unwrap_err().code(), "unknown_kind");
    }

    #[test]
    fn times_and_extensions() {
        assert_eq!(check_times(1000, None, None), Ok(()));
        assert_eq!(check_times(1000, Some(2000), Some(1500)), Ok(()));
        assert_eq!(check_times(1000, Some(1000), None), Err(Refusal::Expired));
        assert_eq!(
            check_times(1000, Some(2000), Some(2000)),
            Err(Refusal::ScheduledAfterExpiry)
        );
        assert_eq!(check_extension("01"), Ok(()));
        assert_eq!(check_extension(""), Err(Refusal::InvalidExtension));
        assert_eq!(check_extension("12a"), Err(Refusal::InvalidExtension));
        assert_eq!(
            check_extension("1234567890123"),
            Err(Refusal::InvalidExtension)
        );
    }

    #[test]
    fn a_request_ingest_accepted_passes_the_dispatcher_check() {
        let v = Validator::bundled();
        let now = 1_000_000;
        let mut request = SmsRequest {
            message_id: "m".into(),
            request_id: "r".into(),
            client_id: "c".into(),
            phone: v.phone("13012345678").unwrap(),
            kind: MessageKind::Notice,
            text: v.text("您的车辆年检即将到期").unwrap(),
            template_id: None,
            sp_extension: Some("01".into()),
            source: RequestSource::Http,
            accepted_at: now,
            expires_at: Some(now + 60_000),
            scheduled_at: None,
            attempt: 0,
            not_before: None,
        };
        assert_eq!(v.request(&request, now), Ok(()));
        assert_eq!(v.request(&request, now + 60_000), Err(Refusal::Expired));
        request.phone = "13012345678".into();
        assert_eq!(v.request(&request, now), Err(Refusal::InvalidNumber));
        request.phone = "8613812345678".into();
        assert_eq!(
            v.request(&request, now).unwrap_err().reason(),
            RefusalReason::NotUnicom
        );
    }
}
