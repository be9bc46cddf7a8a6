//! The 12-byte sequence number (node, MMDDhhmmss, counter) and its generator.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Datelike, Timelike};

use crate::error::Error;

/// The SGIP sequence number: the node that made the command, the time it was
/// made (MMDDhhmmss, Beijing time) and a counter. On the wire: three
/// big-endian `u32`s in that order.
///
/// Its string form is 30 decimal digits, each part zero-padded to ten, so
/// that the strings sort and compare like the triples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SequenceTriple {
    /// Source node id, e.g. 3AAAAQQQQQ for an SP. Unsigned: SP ids exceed 2^31.
    pub node: u32,
    /// MMDDhhmmss as a decimal number.
    pub time: u32,
    /// Counter, wrapping to 0.
    pub counter: u32,
}

impl SequenceTriple {
    /// Size on the wire.
    pub const LEN: usize = 12;

    /// Builds a triple from its parts.
    pub const fn new(node: u32, time: u32, counter: u32) -> Self {
        Self {
            node,
            time,
            counter,
        }
    }

    /// The 12 wire bytes.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0..4].copy_from_slice(&self.node.to_be_bytes());
        out[4..8].copy_from_slice(&self.time.to_be_bytes());
        out[8..12].copy_from_slice(&self.counter.to_be_bytes());
        out
    }

    /// Reads a triple from 12 wire bytes.
    pub fn from_bytes(bytes: [u8; 12]) -> Self {
        let part =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Self::new(part(0), part(4), part(8))
    }
}

impl fmt::Display for SequenceTriple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}{:010}{:010}", self.node, self.time, self.counter)
    }
}

impl FromStr for SequenceTriple {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 30 {
            return Err(Error::InvalidSequence {
                reason: "not 30 characters",
            });
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidSequence {
                reason: "not all decimal digits",
            });
        }
        let part = |range: std::ops::Range<usize>| {
            s[range].parse::<u32>().map_err(|_| Error::InvalidSequence {
                reason: "a part exceeds 4294967295",
            })
        };
        Ok(Self::new(part(0..10)?, part(10..20)?, part(20..30)?))
    }
}

impl serde::Serialize for SequenceTriple {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SequenceTriple {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Beijing time (UTC+8) as MMDDhhmmss, the form of the triple's time part.
pub fn mmddhhmmss(unix_secs: u64) -> u32 {
    let beijing = i64::try_from(unix_secs)
        .unwrap_or(0)
        .saturating_add(8 * 3600);
    let Some(t) = chrono::DateTime::from_timestamp(beijing, 0) else {
        return 0;
    };
    t.month() * 100_000_000
        + t.day() * 1_000_000
        + t.hour() * 10_000
        + t.minute() * 100
        + t.second()
}

/// Makes sequence triples for one node, unique per (node, second) for up to
/// 2^32 triples per second.
///
/// The counter starts at a random value so that a process restarted within
/// the same second does not reuse the triples of the one before it.
#[derive(Debug)]
pub struct SequenceGenerator {
    node: u32,
    counter: AtomicU32,
    /// Cached (unix second << 32 | MMDDhhmmss) so the clock is formatted once a second.
    cached: AtomicU64,
}

impl SequenceGenerator {
    /// A generator for `node` with a random starting counter.
    pub fn new(node: u32) -> Self {
        Self::starting_at(node, rand::random::<u32>())
    }

    /// A generator for `node` whose first counter is `counter`.
    pub fn starting_at(node: u32, counter: u32) -> Self {
        Self {
            node,
            counter: AtomicU32::new(counter),
            cached: AtomicU64::new(0),
        }
    }

    /// The node id this generator stamps.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// The next triple, stamped with the current time.
    pub fn next(&self) -> SequenceTriple {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.next_at(now)
    }

    /// The next triple, stamped with `unix_secs`.
    pub fn next_at(&self, unix_secs: u64) -> SequenceTriple {
        let cached = self.cached.load(Ordering::Relaxed);
        let time = if cached >> 32 == unix_secs & 0xFFFF_FFFF && cached != 0 {
            cached as u32
        } else {
            let time = mmddhhmmss(unix_secs);
            self.cached.store(
                ((unix_secs & 0xFFFF_FFFF) << 32) | u64::from(time),
                Ordering::Relaxed,
            );
            time
        };
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        SequenceTriple::new(self.node, time, counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_is_thirty_fixed_digits() {
        let seq = SequenceTriple::new(3075512345, 1203190405, 2);
        assert_eq!(seq.to_string(), "307551234512031904050000000002");
        assert_eq!(
            "307551234512031904050000000002"
                .parse::<SequenceTriple>()
                .unwrap(),
            seq
        );
    }

    #[test]
    fn string_form_rejects_bad_input() {
        assert!("12".parse::<SequenceTriple>().is_err());
        assert!("30755123451203190405000000000x"
            .parse::<SequenceTriple>()
            .is_err());
        assert!("999999999912031904050000000002"
            .parse::<SequenceTriple>()
            .is_err());
        assert!("+07551234512031904050000000002"
            .parse::<SequenceTriple>()
            .is_err());
    }

    #[test]
    fn wire_bytes_round_trip() {
        let seq = SequenceTriple::new(0xB750_9819, 0x47B7_3A85, 1);
        assert_eq!(
            seq.to_bytes(),
            [0xb7, 0x50, 0x98, 0x19, 0x47, 0xb7, 0x3a, 0x85, 0, 0, 0, 1]
        );
        assert_eq!(SequenceTriple::from_bytes(seq.to_bytes()), seq);
    }

    #[test]
    fn time_part_is_beijing_mmddhhmmss() {
        // 2025-12-03 11:04:05 UTC is 19:04:05 in Beijing.
        assert_eq!(mmddhhmmss(1_764_759_845), 1203190405);
    }

    #[test]
    fn generator_counts_up_and_wraps() {
        let gen = SequenceGenerator::starting_at(3075512345, u32::MAX);
        let a = gen.next_at(1_764_759_845);
        let b = gen.next_at(1_764_759_845);
        assert_eq!(
            (a.node, a.time, a.counter),
            (3075512345, 1203190405, u32::MAX)
        );
        assert_eq!(b.counter, 0);
        let c = gen.next_at(1_764_759_846);
        assert_eq!(c.time, 1203190406);
    }
}
