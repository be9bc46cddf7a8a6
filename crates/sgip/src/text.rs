//! Message text: coding choice, concatenated segments, billed segment counts, uplink reassembly.
//!
//! A short message carries at most 140 octets. Longer text is split into
//! segments that each start with a six-byte user-data header
//! (`05 00 03 ref total index`, TP_udhi = 1), leaving 134 octets for text:
//! 67 UCS-2 characters, 67 Chinese characters in GBK, or 134 ASCII
//! characters. A character is never split across segments (a UTF-16
//! surrogate pair stays together).
//!
//! The gateway bills per segment it sends, after appending any text the
//! carrier adds (a signature, an unsubscribe hint); [`BillingRule`] counts
//! the same way. Limitation: the count assumes the gateway re-segments the
//! whole text with the coding the SP chose; a gateway that instead bills a
//! fixed 70/67 characters regardless of coding would differ for GBK text
//! mixed with ASCII.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::Error;
use crate::pdu::MAX_MESSAGE_LEN;

/// Octets of a concatenation header with an 8-bit reference.
pub const UDH_LEN: usize = 6;
/// Octets of text in one segment of a concatenated message.
pub const SEGMENT_PAYLOAD_LEN: usize = MAX_MESSAGE_LEN - UDH_LEN;

/// MessageCoding values this crate produces and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// 0: one octet per ASCII character.
    Ascii,
    /// 4: raw binary.
    Binary,
    /// 8: UCS-2, sent as UTF-16BE without a byte-order mark.
    Ucs2,
    /// 15: GBK.
    Gbk,
}

impl Coding {
    /// The MessageCoding byte.
    pub fn as_u8(self) -> u8 {
        match self {
            Coding::Ascii => 0,
            Coding::Binary => 4,
            Coding::Ucs2 => 8,
            Coding::Gbk => 15,
        }
    }

    /// The coding for a MessageCoding byte, if this crate knows it.
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Coding::Ascii),
            4 => Some(Coding::Binary),
            8 => Some(Coding::Ucs2),
            15 => Some(Coding::Gbk),
            _ => None,
        }
    }
}

/// How to pick the coding of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodingChoice {
    /// ASCII when every character is ASCII, otherwise UCS-2.
    #[default]
    Auto,
    /// Always UCS-2.
    Ucs2,
    /// ASCII when possible, else GBK when every character has a GBK form,
    /// else UCS-2.
    Gbk,
}

/// Encodes `text` in the coding `choice` picks, returning each character's
/// octets (so that splitting never cuts a character).
fn encode_chars(text: &str, choice: CodingChoice) -> (Coding, Vec<Vec<u8>>) {
    let ascii = text.is_ascii();
    if ascii && choice != CodingChoice::Ucs2 {
        return (Coding::Ascii, text.bytes().map(|b| vec![b]).collect());
    }
    if choice == CodingChoice::Gbk {
        let mut encoder = encoding_rs::GBK.new_encoder();
        let mut chars = Vec::with_capacity(text.len());
        let mut ok = true;
        for ch in text.chars() {
            let mut utf8 = [0u8; 4];
            let mut out = [0u8; 8];
            let (result, _, written) = encoder.encode_from_utf8_without_replacement(
                ch.encode_utf8(&mut utf8),
                &mut out,
                false,
            );
            if !matches!(result, encoding_rs::EncoderResult::InputEmpty) {
                ok = false;
                break;
            }
            chars.push(out[..written].to_vec());
        }
        if ok {
            return (Coding::Gbk, chars);
        }
    }
    let chars = text
        .chars()
        .map(|ch| {
            let mut units = [0u16; 2];
            ch.encode_utf16(&mut units)
                .iter()
                .flat_map(|u| u.to_be_bytes())
                .collect()
        })
        .collect();
    (Coding::Ucs2, chars)
}

/// Encodes a whole text; returns the coding and the octets.
pub fn encode(text: &str, choice: CodingChoice) -> (Coding, Vec<u8>) {
    let (coding, chars) = encode_chars(text, choice);
    (coding, chars.concat())
}

/// Decodes MessageContent octets (without any UDH) by MessageCoding.
/// Unknown codings and invalid octets decode lossily, never failing.
pub fn decode(coding: u8, octets: &[u8]) -> String {
    match Coding::from_u8(coding) {
        Some(Coding::Ucs2) => {
            let units: Vec<u16> = octets
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Some(Coding::Gbk) => encoding_rs::GB18030
            .decode_without_bom_handling(octets)
            .0
            .into_owned(),
        _ => String::from_utf8_lossy(octets).into_owned(),
    }
}

/// One short message's worth of a text: the octets for MessageContent
/// (user-data header included when `udhi`), its coding and its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub coding: Coding,
    /// TP_udhi: the content starts with a concatenation header.
    pub udhi: bool,
    /// MessageContent, at most 140 octets.
    pub content: Bytes,
    /// 1-based position in the message.
    pub index: u8,
    /// Number of segments in the message.
    pub total: u8,
}

/// Splits `text` into the segments of one message. A text of at most 140
/// octets is one segment without a header; a longer one is cut into
/// segments of at most 134 octets of text, each with the header carrying
/// `reference`, the total and its index. Fails on empty text and on text
/// needing more than 255 segments.
pub fn split(text: &str, choice: CodingChoice, reference: u8) -> Result<Vec<Segment>, Error> {
    if text.is_empty() {
        return Err(Error::InvalidContent {
            reason: "empty message",
        });
    }
    let (coding, chars) = encode_chars(text, choice);
    let total_len: usize = chars.iter().map(Vec::len).sum();
    if total_len <= MAX_MESSAGE_LEN {
        return Ok(vec![Segment {
            coding,
            udhi: false,
            content: Bytes::from(chars.concat()),
            index: 1,
            total: 1,
        }]);
    }
    let mut payloads: Vec<Vec<u8>> = vec![Vec::with_capacity(SEGMENT_PAYLOAD_LEN)];
    for ch in chars {
        let fits = payloads
            .last()
            .is_some_and(|p| p.len() + ch.len() <= SEGMENT_PAYLOAD_LEN);
        if !fits {
            payloads.push(Vec::with_capacity(SEGMENT_PAYLOAD_LEN));
        }
        if let Some(last) = payloads.last_mut() {
            last.extend_from_slice(&ch);
        }
    }
    let total = u8::try_from(payloads.len()).map_err(|_| Error::InvalidContent {
        reason: "text needs more than 255 segments",
    })?;
    Ok(payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let mut content = Vec::with_capacity(UDH_LEN + payload.len());
            content.extend_from_slice(&[0x05, 0x00, 0x03, reference, total, i as u8 + 1]);
            content.extend_from_slice(&payload);
            Segment {
                coding,
                udhi: true,
                content: Bytes::from(content),
                index: i as u8 + 1,
                total,
            }
        })
        .collect())
}

/// How the gateway bills a text: what the carrier adds to every message and
/// the coding the SP sends it in.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingRule {
    /// Text the carrier puts before the message (e.g. a signature such as
    /// "【12123】"). Default: none.
    pub prefix: String,
    /// Text the carrier appends (e.g. an unsubscribe hint "回TD退订").
    /// Default: none.
    pub suffix: String,
    /// The coding the SP sends the message in. Default: `auto`.
    pub coding: CodingChoice,
}

/// The number of segments the gateway bills for one message, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BilledSegments {
    /// Segments billed (the price unit).
    pub segments: u32,
    /// Characters of the billed text, carrier additions included.
    pub characters: u32,
    /// The coding the billed text ends up in.
    pub coding: Coding,
}

impl BillingRule {
    /// Counts the segments the gateway bills for `text`, with the carrier's
    /// additions. An empty text with no additions bills nothing.
    pub fn billed_segments(&self, text: &str) -> BilledSegments {
        let full = format!("{}{}{}", self.prefix, text, self.suffix);
        let (coding, chars) = encode_chars(&full, self.coding);
        let octets: usize = chars.iter().map(Vec::len).sum();
        let segments = if octets == 0 {
            0
        } else if octets <= MAX_MESSAGE_LEN {
            1
        } else {
            // Greedy packing, as `split` does, so a character is never cut.
            let mut count = 1u32;
            let mut used = 0usize;
            for ch in &chars {
                if used + ch.len() > SEGMENT_PAYLOAD_LEN {
                    count += 1;
                    used = 0;
                }
                used += ch.len();
            }
            count
        };
        BilledSegments {
            segments,
            characters: full.chars().count() as u32,
            coding,
        }
    }
}

/// The concatenation element of a user-data header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concatenation {
    /// Reference shared by all parts (8 or 16 bits on the wire).
    pub reference: u16,
    pub total: u8,
    /// 1-based.
    pub index: u8,
    /// Octets of the whole header, UDHL included.
    pub header_len: usize,
}

/// Reads the concatenation element from content that starts with a
/// user-data header. `None` when the header is malformed or holds no
/// concatenation element (IEI 0x00 or 0x08) with a valid index.
pub fn parse_concatenation(content: &[u8]) -> Option<Concatenation> {
    let udhl = *content.first()? as usize;
    let header = content.get(1..1 + udhl)?;
    let mut at = 0;
    while at + 2 <= header.len() {
        let iei = header[at];
        let len = header[at + 1] as usize;
        let data = header.get(at + 2..at + 2 + len)?;
        let found = match (iei, data) {
            (0x00, [r, t, i]) => Some((u16::from(*r), *t, *i)),
            (0x08, [r1, r2, t, i]) => Some((u16::from_be_bytes([*r1, *r2]), *t, *i)),
            _ => None,
        };
        if let Some((reference, total, index)) = found {
            if total == 0 || index == 0 || index > total {
                return None;
            }
            return Some(Concatenation {
                reference,
                total,
                index,
                header_len: 1 + udhl,
            });
        }
        at += 2 + len;
    }
    None
}

/// What [`Reassembler::push`] made of a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembly {
    /// The message is whole: its text octets (headers removed) in order.
    Complete { payload: Vec<u8>, parts: u8 },
    /// More parts are needed.
    Pending,
    /// This part was already held; it changes nothing.
    Duplicate,
}

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    received: u8,
    first_seen: Instant,
}

/// Puts concatenated messages back together, keyed by the caller's `K`
/// (for uplink messages: sender and access number) plus the reference and
/// total. Holds at most `max_pending` unfinished messages, evicting the
/// oldest beyond that, and drops unfinished ones older than `expiry`.
#[derive(Debug)]
pub struct Reassembler<K: Hash + Eq + Clone> {
    max_pending: usize,
    expiry: Duration,
    pending: HashMap<(K, u16, u8), Partial>,
    order: VecDeque<((K, u16, u8), Instant)>,
    dropped: u64,
}

impl<K: Hash + Eq + Clone> Reassembler<K> {
    /// A reassembler holding at most `max_pending` (at least 1) unfinished
    /// messages, each for at most `expiry`.
    pub fn new(max_pending: usize, expiry: Duration) -> Self {
        Self {
            max_pending: max_pending.max(1),
            expiry,
            pending: HashMap::new(),
            order: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Adds one received part. Content without a header (`udhi` false, or no
    /// concatenation element) is a whole message by itself.
    pub fn push(&mut self, key: K, udhi: bool, content: &[u8], now: Instant) -> Assembly {
        self.expire(now);
        let concat = if udhi {
            parse_concatenation(content)
        } else {
            None
        };
        let Some(concat) = concat else {
            let payload = match (udhi, content.first()) {
                (true, Some(&udhl)) => content.get(1 + udhl as usize..).unwrap_or(&[]).to_vec(),
                _ => content.to_vec(),
            };
            return Assembly::Complete { payload, parts: 1 };
        };
        let body = content.get(concat.header_len..).unwrap_or(&[]).to_vec();
        if concat.total == 1 {
            return Assembly::Complete {
                payload: body,
                parts: 1,
            };
        }
        let id = (key, concat.reference, concat.total);
        if !self.pending.contains_key(&id) {
            while self.pending.len() >= self.max_pending {
                if !self.evict_oldest() {
                    break;
                }
            }
            self.pending.insert(
                id.clone(),
                Partial {
                    parts: vec![None; concat.total as usize],
                    received: 0,
                    first_seen: now,
                },
            );
            self.order.push_back((id.clone(), now));
        }
        let Some(partial) = self.pending.get_mut(&id) else {
            return Assembly::Pending;
        };
        let slot = &mut partial.parts[concat.index as usize - 1];
        if slot.is_some() {
            return Assembly::Duplicate;
        }
        *slot = Some(body);
        partial.received += 1;
        if partial.received < concat.total {
            return Assembly::Pending;
        }
        let Some(partial) = self.pending.remove(&id) else {
            return Assembly::Pending;
        };
        let payload = partial.parts.into_iter().flatten().flatten().collect();
        Assembly::Complete {
            payload,
            parts: concat.total,
        }
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((id, seen)) = self.order.pop_front() {
            let current = self.pending.get(&id).map(|p| p.first_seen);
            if current == Some(seen) {
                self.pending.remove(&id);
                self.dropped += 1;
                return true;
            }
        }
        false
    }

    /// Drops unfinished messages older than the expiry; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut count = 0;
        while let Some((id, seen)) = self.order.front() {
            if now.saturating_duration_since(*seen) < self.expiry {
                break;
            }
            let current = self.pending.get(id).map(|p| p.first_seen);
            if current == Some(*seen) {
                self.pending.remove(id);
                count += 1;
            }
            self.order.pop_front();
        }
        self.dropped += count as u64;
        count
    }

    /// Unfinished messages held now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Unfinished messages dropped so far (evicted or expired).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ascii_is_one_plain_segment() {
        let segs = split("hello", CodingChoice::Auto, 7).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].coding, Coding::Ascii);
        assert!(!segs[0].udhi);
        assert_eq!(&segs[0].content[..], b"hello");
    }

    #[test]
    fn seventy_chinese_characters_fit_one_segment() {
        let text = "交".repeat(70);
        let segs = split(&text, CodingChoice::Auto, 1).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].coding, Coding::Ucs2);
        assert_eq!(segs[0].content.len(), 140);
    }

    #[test]
    fn seventy_one_chinese_characters_make_two_segments_of_67_and_4() {
        let text = "交".repeat(71);
        let segs = split(&text, CodingChoice::Auto, 0x2a).unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(&segs[0].content[..6], &[5, 0, 3, 0x2a, 2, 1]);
        assert_eq!(segs[0].content.len(), 6 + 134);
        assert_eq!(&segs[1].content[..6], &[5, 0, 3, 0x2a, 2, 2]);
        assert_eq!(segs[1].content.len(), 6 + 8);
        assert!(segs.iter().all(|s| s.udhi && s.total == 2));
    }

    #[test]
    fn surrogate_pairs_are_not_cut() {
        // 66 BMP characters then an emoji (two UTF-16 units) that would
        // straddle the 134-octet boundary.
        let text = format!("{}😀{}", "交".repeat(66), "交".repeat(10));
        let segs = split(&text, CodingChoice::Ucs2, 1).unwrap();
        assert_eq!(segs[0].content.len(), 6 + 132);
        let mut payload = Vec::new();
        for s in &segs {
            payload.extend_from_slice(&s.content[6..]);
        }
        assert_eq!(decode(8, &payload), text);
    }

    #[test]
    fn gbk_is_used_when_asked_and_possible() {
        let (coding, octets) = encode("交通", CodingChoice::Gbk);
        assert_eq!(coding, Coding::Gbk);
        assert_eq!(octets, vec![0xbd, 0xbb, 0xcd, 0xa8]);
        assert_eq!(decode(15, &octets), "交通");
        // An emoji has no GBK form: fall back to UCS-2.
        assert_eq!(encode("交😀", CodingChoice::Gbk).0, Coding::Ucs2);
    }

    #[test]
    fn long_ascii_splits_at_134() {
        let segs = split(&"a".repeat(300), CodingChoice::Auto, 3).unwrap();
        let lens: Vec<usize> = segs.iter().map(|s| s.content.len() - 6).collect();
        assert_eq!(lens, vec![134, 134, 32]);
    }

    #[test]
    fn empty_and_huge_texts_are_refused() {
        assert!(split("", CodingChoice::Auto, 0).is_err());
        assert!(split(&"交".repeat(67 * 256), CodingChoice::Auto, 0).is_err());
    }

    #[test]
    fn billing_counts_the_carrier_additions() {
        let rule = BillingRule {
            prefix: "【12123】".into(),
            suffix: "回TD退订".into(),
            coding: CodingChoice::Auto,
        };
        // 7 + 56 + 5 = 68 characters: one segment.
        assert_eq!(rule.billed_segments(&"交".repeat(56)).segments, 1);
        // 7 + 59 + 5 = 71 characters: two segments although the text alone fits in one.
        let billed = rule.billed_segments(&"交".repeat(59));
        assert_eq!((billed.segments, billed.characters), (2, 71));
        // ASCII text becomes UCS-2 once a Chinese signature is added.
        assert_eq!(rule.billed_segments("hello").coding, Coding::Ucs2);
        // 67 * 3 = 201 characters is three segments, 202 is four.
        assert_eq!(rule.billed_segments(&"交".repeat(201 - 12)).segments, 3);
        assert_eq!(rule.billed_segments(&"交".repeat(202 - 12)).segments, 4);
        assert_eq!(BillingRule::default().billed_segments("").segments, 0);
    }

    #[test]
    fn billing_matches_split_for_any_length() {
        let rule = BillingRule::default();
        for n in [1, 69, 70, 71, 134, 135, 200, 500] {
            let text = "交".repeat(n);
            let split_count = split(&text, CodingChoice::Auto, 0).unwrap().len() as u32;
            assert_eq!(rule.billed_segments(&text).segments, split_count, "{n}");
        }
    }

    #[test]
    fn concatenation_headers_parse_in_both_sizes() {
        assert_eq!(
            parse_concatenation(&[5, 0, 3, 9, 3, 2, b'x']),
            Some(Concatenation {
                reference: 9,
                total: 3,
                index: 2,
                header_len: 6
            })
        );
        assert_eq!(
            parse_concatenation(&[6, 8, 4, 1, 2, 3, 1]).map(|c| c.reference),
            Some(0x0102)
        );
        assert_eq!(parse_concatenation(&[5, 0, 3, 9, 3, 4]), None);
        assert_eq!(parse_concatenation(&[9, 0, 3]), None);
        assert_eq!(parse_concatenation(&[]), None);
    }

    #[test]
    fn reassembly_in_any_order_with_duplicates() {
        let text = "交通管理".repeat(40);
        let segs = split(&text, CodingChoice::Auto, 5).unwrap();
        assert_eq!(segs.len(), 3);
        let mut r = Reassembler::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(r.push("a", true, &segs[2].content, now), Assembly::Pending);
        assert_eq!(
            r.push("a", true, &segs[2].content, now),
            Assembly::Duplicate
        );
        assert_eq!(r.push("a", true, &segs[0].content, now), Assembly::Pending);
        match r.push("a", true, &segs[1].content, now) {
            Assembly::Complete { payload, parts } => {
                assert_eq!(parts, 3);
                assert_eq!(decode(8, &payload), text);
            }
            other => panic!("expected complete, got {other:?}"),
        }
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn reassembly_is_bounded_and_expires() {
        let segs = split(&"x".repeat(200), CodingChoice::Auto, 1).unwrap();
        let now = Instant::now();
        let mut r = Reassembler::new(2, Duration::from_secs(10));
        r.push(1, true, &segs[0].content, now);
        r.push(2, true, &segs[0].content, now);
        r.push(3, true, &segs[0].content, now);
        assert_eq!(r.pending(), 2);
        assert_eq!(r.dropped(), 1);
        assert_eq!(r.expire(now + Duration::from_secs(11)), 2);
        assert_eq!(r.pending(), 0);
        // A plain message passes straight through.
        assert_eq!(
            r.push(9, false, b"TD", now),
            Assembly::Complete {
                payload: b"TD".to_vec(),
                parts: 1
            }
        );
    }
}
