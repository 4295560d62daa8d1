//! [`ObjectId`]: an object (broadcast) id as people and programs read it. On the wire and
//! in the machines an id is a `u64`; wherever it becomes text (logs, status files, the
//! control API, the CLI, hook environments, record file names) it is exactly 16 lowercase
//! hex digits, printed and parsed here and nowhere else.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Digits in an id's text form.
pub const OBJECT_ID_DIGITS: usize = 16;
/// The most characters of a refused text quoted back in an [`ObjectIdError`], so the message
/// stays one short line whatever was typed.
pub const OBJECT_ID_ERROR_QUOTE_MAX: usize = 40;

/// An object id: `Display` gives 16 lowercase hex digits, `FromStr` takes exactly 16 hex
/// digits in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectId(pub u64);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a text is not an object id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("an object id is {OBJECT_ID_DIGITS} hex digits, not {quoted:?}")]
pub struct ObjectIdError {
    /// The refused text, cut to [`OBJECT_ID_ERROR_QUOTE_MAX`] characters.
    quoted: String,
}

impl FromStr for ObjectId {
    type Err = ObjectIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // u64::from_str_radix alone would take "+" signs and fewer digits; an id in a
        // file name or URL must have one spelling.
        if text.len() != OBJECT_ID_DIGITS || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ObjectIdError { quoted: text.chars().take(OBJECT_ID_ERROR_QUOTE_MAX).collect() });
        }
        u64::from_str_radix(text, 16).map(ObjectId).map_err(|_| ObjectIdError { quoted: text.to_owned() })
    }
}

impl From<u64> for ObjectId {
    fn from(id: u64) -> Self {
        ObjectId(id)
    }
}

impl From<ObjectId> for u64 {
    fn from(id: ObjectId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // proptest prints the failing input and keeps it in proptest-regressions/ for replay.
        #[test]
        fn every_id_prints_as_16_lowercase_digits_and_parses_back(id: u64) {
            let text = ObjectId(id).to_string();
            prop_assert_eq!(text.len(), OBJECT_ID_DIGITS);
            prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{}", text);
            prop_assert_eq!(text.parse::<ObjectId>(), Ok(ObjectId(id)));
            prop_assert_eq!(text.to_uppercase().parse::<ObjectId>(), Ok(ObjectId(id)));
            prop_assert_eq!(text, format!("{id:016x}"));
        }

        #[test]
        fn any_text_parses_only_if_it_is_16_hex_digits(text in "\\PC{0,24}") {
            let wellformed = text.len() == OBJECT_ID_DIGITS && text.bytes().all(|b| b.is_ascii_hexdigit());
            match text.parse::<ObjectId>() {
                Ok(id) => {
                    prop_assert!(wellformed, "{:?} accepted", text);
                    prop_assert_eq!(id.to_string(), text.to_lowercase());
                }
                Err(error) => {
                    prop_assert!(!wellformed, "{:?} refused", text);
                    prop_assert!(!error.to_string().contains('\n'));
                }
            }
        }
    }

    #[test]
    fn what_from_str_radix_would_take_is_refused_with_one_clear_line() {
        for text in ["", "abc", "0123456789abcdef0", "+123456789abcdef", "-123456789abcdef", "0123456789abcdeg", " 123456789abcdef"] {
            assert!(text.parse::<ObjectId>().is_err(), "{text:?} accepted");
        }
        // 16 bytes, not 16 digits: a multi-byte character must not pass the length check.
        assert!("é23456789abcdef".parse::<ObjectId>().is_err());
        let error = "xyz".parse::<ObjectId>().expect_err("not an id");
        assert_eq!(error.to_string(), "an object id is 16 hex digits, not \"xyz\"");
        let long = "a\n".repeat(1000);
        let message = long.parse::<ObjectId>().expect_err("not an id").to_string();
        assert!(!message.contains('\n') && message.len() < 200, "{message}");
    }

    #[test]
    fn conversions_keep_the_number() {
        assert_eq!(u64::from(ObjectId::from(u64::MAX)), u64::MAX);
        assert_eq!(ObjectId(0).to_string(), "0000000000000000");
        assert_eq!("4B0601073E0FA23E".parse::<ObjectId>(), Ok(ObjectId(0x4b06_0107_3e0f_a23e)));
    }
}
