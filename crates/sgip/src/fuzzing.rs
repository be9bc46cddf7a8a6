//! The decoder's fuzzing oracle, shared by the `cargo fuzz` target and the property tests.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::framing::SgipCodec;
use crate::pdu::{Pdu, DEFAULT_MAX_FRAME_LEN};

/// Feeds `data` to the stream decoder as one buffer, then checks that every
/// PDU it produced encodes back to exactly the bytes it came from. Returns
/// how many PDUs were decoded.
///
/// Panics only when an invariant is broken (a decoded frame that does not
/// re-encode to itself), which is what a fuzzer looks for; malformed input
/// ends the loop with a typed error, as it would end a session.
pub fn check_decoder(data: &[u8]) -> usize {
    let mut codec = SgipCodec::new(DEFAULT_MAX_FRAME_LEN);
    let mut buf = BytesMut::from(data);
    let mut consumed = 0usize;
    let mut count = 0usize;
    loop {
        let before = buf.len();
        match codec.decode_eof(&mut buf) {
            Ok(Some(pdu)) => {
                let used = before - buf.len();
                let original = &data[consumed..consumed + used];
                let again = pdu.to_bytes();
                assert_eq!(
                    again.as_ref(),
                    original,
                    "decoded frame does not re-encode to itself"
                );
                assert_eq!(
                    Pdu::decode(again).ok(),
                    Some(pdu),
                    "re-encoded frame decodes differently"
                );
                consumed += used;
                count += 1;
            }
            Ok(None) | Err(_) => return count,
        }
    }
}
