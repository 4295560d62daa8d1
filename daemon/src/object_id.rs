//! Object ids in JSON and TOML, for `#[serde(with = "satcast_daemon::object_id")]` on a
//! `u64` field: 16 hex digits as a string, written and read by
//! [`satcast_protocol::ObjectId`] (JSON numbers would lose precision above 2^53, and the
//! logs use the same form).

use satcast_protocol::ObjectId;
use serde::{Deserialize, Deserializer, Serializer};

/// Writes the id as 16 lowercase hex digits.
pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&ObjectId(*id))
}

/// Reads exactly 16 hex digits.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<ObjectId>().map(u64::from).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "super")]
        object_id: u64,
    }

    #[test]
    fn ids_are_strings_of_16_digits_in_json_and_anything_else_is_refused() {
        let record = Record { object_id: 0x00ab_cdef_0123_4567 };
        let json = serde_json::to_string(&record).expect("serialize");
        assert_eq!(json, r#"{"object_id":"00abcdef01234567"}"#);
        assert_eq!(serde_json::from_str::<Record>(&json).expect("deserialize"), record);
        let error = serde_json::from_str::<Record>(r#"{"object_id":"abcdef01234567"}"#).expect_err("14 digits");
        assert!(error.to_string().contains("an object id is 16 hex digits"), "{error}");
        assert!(serde_json::from_str::<Record>(r#"{"object_id":48879}"#).is_err(), "a number is not an id");
    }
}
