//! What the simulator accepted and sent, counted so tests can prove nothing was lost.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every count the simulator keeps, as served by `GET /counts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Submit PDUs read.
    pub submits_received: u64,
    /// Submits answered with Result 0 (one per segment).
    pub submits_accepted: u64,
    /// Submits answered with a non-zero Result, by Result.
    pub submits_refused: BTreeMap<u8, u64>,
    /// Submits read and never answered (the `stop_answering` fault).
    pub submits_unanswered: u64,
    /// Whole messages accepted, by [`message_key`]: how many times each
    /// (recipient, full text) was accepted in full. A value above 1 is a
    /// duplicate.
    pub messages: BTreeMap<String, u64>,
    /// Accepted segments, by [`segment_key`].
    pub segments: BTreeMap<String, u64>,
    /// Concatenated messages still missing parts.
    pub partial_messages: u64,
    /// Binds answered 0.
    pub binds_accepted: u64,
    /// Binds refused (bad credentials, wrong type, too many, fault).
    pub binds_refused: u64,
    /// Connections the simulator dropped on purpose (faults).
    pub connections_dropped: u64,
    /// Reports made from accepted Submits.
    pub reports_scheduled: u64,
    /// Reports made, doubled copies aside, by the state they carry (0
    /// delivered, 2 failed): what the carrier says happened.
    pub reports_by_state: BTreeMap<u8, u64>,
    /// Reports made, doubled copies aside, by the delay drawn for them
    /// (fault delay included) in whole seconds after the Submit was accepted.
    pub reports_by_delay_s: BTreeMap<u64, u64>,
    /// Report PDUs written to the SP, resends and duplicates included.
    pub reports_sent: u64,
    /// Reports the SP answered with Result 0.
    pub reports_acked: u64,
    /// Reports sent again because the SP did not answer or refused.
    pub reports_resent: u64,
    /// Reports not made or dropped: no SP listener configured, or the
    /// pending queue was full.
    pub reports_dropped: u64,
    /// Deliver segments queued by `POST /mo`.
    pub mo_queued: u64,
    /// Deliver segments the SP answered with Result 0.
    pub mo_acked: u64,
}

impl Counts {
    /// Accepted messages whose key was accepted more than once, and the
    /// number of extra copies in all.
    pub fn duplicates(&self) -> u64 {
        self.messages.values().map(|n| n.saturating_sub(1)).sum()
    }
}

fn short_hash(bytes: &[u8]) -> String {
    format!("{:016x}", hash64(bytes))
}

/// The first 8 bytes of the SHA-256 of `bytes`, big-endian.
fn hash64(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Counts by (recipient, content hash), the keys of [`Counts::messages`]
/// and [`Counts::segments`], held as two numbers when the recipient is all
/// digits (as every real one is): 24 bytes a key rather than a 40-byte
/// string, since the simulator counts every message it ever accepted.
#[derive(Debug, Default)]
pub(crate) struct KeyCounts {
    numeric: HashMap<(u64, u64), u32>,
    other: HashMap<String, u32>,
}

impl KeyCounts {
    /// Counts one more of `content` to `user_number`.
    pub fn add(&mut self, user_number: &str, content: &[u8]) {
        let number = with_country_code(user_number);
        let hash = hash64(content);
        // With "86" in front no digit string starts with 0, so the number
        // gives the text back.
        let digits = number.len() <= 19 && number.bytes().all(|b| b.is_ascii_digit());
        match number.parse::<u64>() {
            Ok(n) if digits => *self.numeric.entry((n, hash)).or_default() += 1,
            _ => {
                *self
                    .other
                    .entry(format!("{number}:{hash:016x}"))
                    .or_default() += 1
            }
        }
    }

    /// The counts keyed as [`message_key`] and [`segment_key`] write them.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        let numeric = self
            .numeric
            .iter()
            .map(|((n, hash), count)| (format!("{n}:{hash:016x}"), u64::from(*count)));
        let other = self
            .other
            .iter()
            .map(|(key, count)| (key.clone(), u64::from(*count)));
        numeric.chain(other).collect()
    }
}

/// Puts "86" in front of a number that lacks it.
pub fn with_country_code(number: &str) -> String {
    if number.starts_with("86") {
        number.to_owned()
    } else {
        format!("86{number}")
    }
}

/// The key a whole message is counted under: the recipient ("86" + number)
/// and a hash of the full text, `8618612341234:0123456789abcdef`.
pub fn message_key(user_number: &str, text: &str) -> String {
    format!(
        "{}:{}",
        with_country_code(user_number),
        short_hash(text.as_bytes())
    )
}

/// The key a segment is counted under: the recipient and a hash of its
/// MessageContent octets (header included).
pub fn segment_key(user_number: &str, content: &[u8]) -> String {
    format!("{}:{}", with_country_code(user_number), short_hash(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalise_the_country_code() {
        assert_eq!(
            message_key("18612341234", "hi"),
            message_key("8618612341234", "hi")
        );
        assert_ne!(
            message_key("18612341234", "hi"),
            message_key("18612341234", "ho")
        );
        assert!(message_key("18612341234", "hi").starts_with("8618612341234:"));
    }

    #[test]
    fn compact_counts_give_the_same_keys() {
        let mut counts = KeyCounts::default();
        counts.add("18612341234", "hi".as_bytes());
        counts.add("8618612341234", "hi".as_bytes());
        counts.add("1861234123x", "hi".as_bytes());
        counts.add("", "ho".as_bytes());
        let map = counts.to_map();
        assert_eq!(map[&message_key("18612341234", "hi")], 2);
        assert_eq!(map[&message_key("1861234123x", "hi")], 1);
        assert_eq!(map[&segment_key("", "ho".as_bytes())], 1);
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn duplicates_are_the_extra_copies() {
        let mut c = Counts::default();
        c.messages.insert("a".into(), 1);
        c.messages.insert("b".into(), 3);
        assert_eq!(c.duplicates(), 2);
    }
}
