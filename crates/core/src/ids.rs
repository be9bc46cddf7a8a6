//! Message ids as the services hold them in memory.
//!
//! The services remember millions of recent message ids (final messages,
//! dispatched messages, queried statuses), so the size of one id decides
//! their memory. Every id ingest gives is a UUID in its canonical text form
//! (36 characters, lower case, hyphenated); held as its 16 bytes it costs a
//! fifth of a `String` with its heap block. Ids in any other form still
//! work: [`message_key`] turns them into a name-based UUID, and
//! [`MessageRef`] keeps their text.

use std::fmt;

use uuid::Uuid;

/// The namespace of the keys of ids that are not canonical UUIDs.
const OTHER_IDS: Uuid = Uuid::from_u128(0x0b5e_7a21_4c1d_5e39_8f02_1212_3000_0001);

/// The UUID of a canonical id (lower-case hyphenated text), else `None`.
fn canonical(id: &str) -> Option<Uuid> {
    if id.len() != 36 || id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Uuid::try_parse(id).ok()
}

/// The 16-byte key of a message id: the UUID itself when the id is a
/// canonical UUID, else a version-5 UUID of its text. Two ids have the same
/// key exactly when their texts are equal (for non-canonical ids, up to a
/// SHA-1 collision).
pub fn message_key(id: &str) -> Uuid {
    canonical(id).unwrap_or_else(|| Uuid::new_v5(&OTHER_IDS, id.as_bytes()))
}

/// A message id kept so that its text can be given back: 16 bytes for a
/// canonical UUID, the text itself otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageRef {
    Uuid(Uuid),
    Text(Box<str>),
}

impl From<&str> for MessageRef {
    fn from(id: &str) -> Self {
        match canonical(id) {
            Some(uuid) => Self::Uuid(uuid),
            None => Self::Text(id.into()),
        }
    }
}

impl fmt::Display for MessageRef {
    /// The id exactly as it was given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(uuid) => uuid.hyphenated().fmt(f),
            Self::Text(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_canonical_id_is_its_own_key() {
        let id = "6d1c5f0e-2b7a-4c8e-9a51-121231100000";
        assert_eq!(message_key(id), Uuid::parse_str(id).unwrap());
        assert_eq!(MessageRef::from(id), MessageRef::Uuid(message_key(id)));
        assert_eq!(MessageRef::from(id).to_string(), id);
    }

    #[test]
    fn other_forms_are_kept_as_text_and_keyed_apart() {
        let upper = "6D1C5F0E-2B7A-4C8E-9A51-121231100000";
        let simple = "6d1c5f0e2b7a4c8e9a51121231100000";
        let lower = upper.to_lowercase();
        for id in [upper, simple, "m-1", ""] {
            assert_eq!(MessageRef::from(id), MessageRef::Text(id.into()));
            assert_eq!(MessageRef::from(id).to_string(), id);
            assert_ne!(message_key(id), message_key(&lower));
        }
    }

    proptest! {
        #[test]
        fn keys_are_equal_exactly_when_ids_are(a in ".{0,40}", b in ".{0,40}") {
            prop_assert_eq!(message_key(&a) == message_key(&b), a == b);
            prop_assert_eq!(MessageRef::from(a.as_str()).to_string(), a);
        }

        #[test]
        fn uuids_round_trip(n in any::<u128>()) {
            let id = Uuid::from_u128(n).hyphenated().to_string();
            prop_assert_eq!(message_key(&id).as_u128(), n);
            prop_assert_eq!(MessageRef::from(id.as_str()).to_string(), id);
        }
    }
}
