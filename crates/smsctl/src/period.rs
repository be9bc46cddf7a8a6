//! Months, quarters and instants as the operator types them, in Beijing time (UTC+8) unless an offset is given.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::error::SmsctlError;

/// Beijing time, the contract's clock: UTC+8, no daylight saving.
pub const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// [`BEIJING`], as a function for call sites that want one.
pub fn beijing() -> FixedOffset {
    BEIJING
}

/// A calendar month, e.g. `2026-11`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Self, SmsctlError> {
        let bad =
            || SmsctlError::argument("--month", format!("`{text}` is not YYYY-MM (e.g. 2026-11)"));
        let (year, month) = text.trim().split_once('-').ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(2000..=2200).contains(&year) {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// The month holding `date`.
    pub fn of(date: NaiveDate) -> Self {
        Self {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN)
    }

    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn previous(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Number of days in the month.
    pub fn days(self) -> u32 {
        let days = self.next().first_day() - self.first_day();
        u32::try_from(days.num_days()).unwrap_or(31)
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A settlement period of three months (clause 4.1.3), e.g. `2026Q4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarter {
    pub year: i32,
    /// 1 to 4.
    pub quarter: u32,
}

impl Quarter {
    /// Parses `YYYYQn`.
    pub fn parse(text: &str) -> Result<Self, SmsctlError> {
        let bad =
            || SmsctlError::argument("--quarter", format!("`{text}` is not YYYYQn (e.g. 2026Q4)"));
        let upper = text.trim().to_ascii_uppercase();
        let (year, quarter) = upper.split_once('Q').ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let quarter: u32 = quarter.parse().map_err(|_| bad())?;
        if !(1..=4).contains(&quarter) || !(2000..=2200).contains(&year) {
            return Err(bad());
        }
        Ok(Self { year, quarter })
    }

    /// Its three months, in order.
    pub fn months(self) -> [Month; 3] {
        let first = Month {
            year: self.year,
            month: (self.quarter - 1) * 3 + 1,
        };
        [first, first.next(), first.next().next()]
    }
}

impl std::fmt::Display for Quarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}Q{}", self.year, self.quarter)
    }
}

/// Parses an instant: `2026-11-03T08:00`, `2026-11-03 08:00:30`, or a
/// date `2026-11-03` (its midnight), in Beijing time unless the text ends
/// with an offset (`Z`, `+08:00`, `-05:00`).
pub fn parse_instant(option: &'static str, text: &str) -> Result<DateTime<Utc>, SmsctlError> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M%:z",
        "%Y-%m-%dT%H:%M%#z",
    ] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Ok(at.with_timezone(&Utc));
        }
    }
    if let Some(stripped) = text.strip_suffix('Z') {
        if let Some(naive) = parse_naive(stripped) {
            return Ok(Utc.from_utc_datetime(&naive));
        }
    }
    let naive = parse_naive(text).ok_or_else(|| {
        SmsctlError::argument(
            option,
            format!(
                "`{text}` is not a time like 2026-11-03T08:00 (Beijing time) or 2026-11-03T00:00Z"
            ),
        )
    })?;
    beijing()
        .from_local_datetime(&naive)
        .single()
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| SmsctlError::argument(option, format!("`{text}` is not a valid time")))
}

fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive);
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// Unix milliseconds as Beijing wall time, `2026-11-03 08:00:01.250`.
pub fn beijing_time(millis: i64) -> String {
    match DateTime::from_timestamp_millis(millis) {
        Some(at) => at
            .with_timezone(&beijing())
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        None => format!("{millis} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_quarters_parse_and_step() {
        let m = Month::parse("2026-11").unwrap();
        assert_eq!(m.to_string(), "2026-11");
        assert_eq!(m.next().to_string(), "2026-12");
        assert_eq!(m.next().next().to_string(), "2027-01");
        assert_eq!(
            Month::parse("2027-01").unwrap().previous().to_string(),
            "2026-12"
        );
        assert_eq!(Month::parse("2028-02").unwrap().days(), 29);
        assert!(Month::parse("2026-13").is_err());
        assert!(Month::parse("november").is_err());
        let q = Quarter::parse("2026q4").unwrap();
        assert_eq!(
            q.months().map(|m| m.to_string()),
            ["2026-10", "2026-11", "2026-12"]
        );
        assert!(Quarter::parse("2026Q5").is_err());
    }

    #[test]
    fn instants_are_beijing_time_unless_an_offset_is_given() {
        let at = parse_instant("--from", "2026-11-03T08:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-03T00:00:00+00:00");
        let at = parse_instant("--from", "2026-11-03T08:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-03T08:00:00+00:00");
        let at = parse_instant("--from", "2026-11-03T08:00:00+01:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-03T07:00:00+00:00");
        let at = parse_instant("--from", "2026-11-03").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-02T16:00:00+00:00");
        assert!(parse_instant("--from", "yesterday").is_err());
        assert_eq!(
            beijing_time(at.timestamp_millis()),
            "2026-11-03 00:00:00.000"
        );
    }
}
