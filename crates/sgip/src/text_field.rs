//! Fixed-width NUL-padded text fields, the SGIP "Text" type.

use std::fmt;

use crate::error::Error;

/// A fixed-width field of `N` bytes, left-aligned and padded with NUL.
///
/// The raw bytes are kept exactly as they came off the wire, so a decoded
/// field encodes back to the same bytes. [`Text::as_bytes`] gives the value a
/// reader means: cut at the first NUL, trailing spaces trimmed (some peers pad
/// with spaces).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Text<const N: usize> {
    raw: [u8; N],
}

impl<const N: usize> Text<N> {
    /// The field's width on the wire.
    pub const WIDTH: usize = N;

    /// An all-NUL (empty) field.
    pub const fn empty() -> Self {
        Self { raw: [0; N] }
    }

    /// A field holding `value`; fails if it is longer than `N` bytes.
    pub fn new(field: &'static str, value: &str) -> Result<Self, Error> {
        Self::from_value_bytes(field, value.as_bytes())
    }

    /// A field holding `value` bytes; fails if longer than `N`.
    pub fn from_value_bytes(field: &'static str, value: &[u8]) -> Result<Self, Error> {
        if value.len() > N {
            return Err(Error::FieldTooLong {
                field,
                max: N,
                actual: value.len(),
            });
        }
        let mut raw = [0u8; N];
        raw[..value.len()].copy_from_slice(value);
        Ok(Self { raw })
    }

    /// A field from its exact wire bytes.
    pub const fn from_raw(raw: [u8; N]) -> Self {
        Self { raw }
    }

    /// The exact wire bytes.
    pub fn raw(&self) -> &[u8; N] {
        &self.raw
    }

    /// The value: bytes up to the first NUL, trailing spaces trimmed.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.raw.iter().position(|&b| b == 0).unwrap_or(N);
        let mut value = &self.raw[..end];
        while let [rest @ .., b' '] = value {
            value = rest;
        }
        value
    }

    /// The value as text; `None` if it is not UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }

    /// The value as text with invalid bytes replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Masks a phone number for logs: `8618612341234` becomes `86186****1234`.
pub fn mask_phone(number: &[u8]) -> String {
    let s = String::from_utf8_lossy(number);
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 7 {
        return "*".repeat(chars.len());
    }
    let keep_tail = 4;
    let hidden = 4.min(chars.len() - keep_tail - 3);
    let head = chars.len() - keep_tail - hidden;
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(hidden));
    out.extend(&chars[chars.len() - keep_tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_cut_at_nul_and_trimmed() {
        let t = Text::<8>::from_raw(*b"ab  \0xyz");
        assert_eq!(t.as_bytes(), b"ab");
        assert_eq!(Text::<4>::from_raw(*b"full").as_str(), Some("full"));
    }

    #[test]
    fn too_long_value_is_an_error() {
        assert!(matches!(
            Text::<4>::new("LoginName", "toolong"),
            Err(Error::FieldTooLong {
                max: 4,
                actual: 7,
                ..
            })
        ));
    }

    #[test]
    fn phones_are_masked() {
        assert_eq!(mask_phone(b"18612341234"), "186****1234");
        assert_eq!(mask_phone(b"8618612341234"), "86186****1234");
        assert_eq!(mask_phone(b"12345"), "*****");
    }
}
