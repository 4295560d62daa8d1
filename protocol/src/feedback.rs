//! Feedback from receivers to the uplink, carried over the terrestrial WAN (QUIC in the
//! daemons, an in-memory queue in the simulator). Transport-agnostic and versioned:
//! canonical bincode 2 (big endian, fixed-width integers), with a version byte first so a
//! newer uplink can still read an older receiver.
//!
//! The sender's identity is not in the message: the transport authenticates it (the
//! county code in the QUIC client certificate), and the uplink refuses a message whose
//! claimed county differs from the authenticated one.

use bincode::{Decode, Encode};
use thiserror::Error;

/// ALPN of the acknowledgement channel: QUIC with mutual TLS over the terrestrial WAN. Each
/// feedback message travels on its own bidirectional stream: the receiver writes the
/// message bytes and finishes the stream; the uplink answers one [`AckReply`] byte only
/// after the message is durably recorded, and the receiver drops it from its outbox then.
pub const ACK_ALPN: &[u8] = b"satcast-ack/1";

/// The uplink's answer to one feedback message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AckReply {
    /// Recorded durably: the receiver may forget it.
    Recorded = 0,
    /// Refused for good (malformed, or about a county the certificate does not name):
    /// resending cannot help; the receiver logs it and forgets it.
    Refused = 1,
    /// Not recorded now (the uplink is busy or stopping): resend later.
    Busy = 2,
}

impl AckReply {
    /// The reply a byte stands for; anything unknown is treated as [`AckReply::Busy`].
    pub fn from_byte(byte: u8) -> AckReply {
        match byte {
            0 => AckReply::Recorded,
            1 => AckReply::Refused,
            _ => AckReply::Busy,
        }
    }
}

/// The DNS name a county's QUIC client certificate carries: `<code>.county.satcast`.
pub fn county_dns_name(county_code: &str) -> String {
    format!("{county_code}.county.satcast")
}

/// The feedback format version this build writes.
pub const FEEDBACK_VERSION: u8 = 1;
/// The largest encoded feedback message.
pub const FEEDBACK_BYTES_MAX: usize = 16 * 1024;
/// The most per-block entries in a progress report (one per source block).
pub const NEEDS_MAX: usize = 256;
/// The longest free-text field (reasons, software versions).
pub const TEXT_BYTES_MAX: usize = 256;

/// One feedback message from one county.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Feedback {
    /// The county this is about (checked against the transport's authenticated identity).
    pub county_code: String,
    /// What it says.
    pub message: FeedbackMessage,
}

/// What a receiver reports.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum FeedbackMessage {
    /// The receiver is up: sent on (re)connect and periodically.
    Hello {
        /// The receiver software's version.
        software_version: String,
        /// Free bytes on the receiver's state disk.
        free_disk_bytes: u64,
        /// Milliseconds since the last valid heartbeat, if one arrived.
        heartbeat_age_ms: Option<u64>,
    },
    /// How many more symbols each source block of an object needs.
    Progress {
        /// The object.
        object_id: u64,
        /// The repair round this report answers (the last end-of-round marker seen).
        round: u32,
        /// Per source block, in SBN order: fresh symbols still needed (0 = verified).
        needs: Vec<u32>,
        /// DATA symbols of this object received so far, for the uplink's loss estimate.
        symbols_received: u64,
    },
    /// The object is verified, durable and delivered.
    Complete {
        /// The object.
        object_id: u64,
        /// BLAKE3 of the delivered payload.
        object_hash: [u8; 32],
    },
    /// The receiver refused a genuine manifest addressed to it (rollback, expired...).
    Rejected {
        /// The object.
        object_id: u64,
        /// Why, as text.
        reason: String,
    },
    /// The post-receive hook for a delivered object ran (once; it is not retried).
    HookResult {
        /// The object.
        object_id: u64,
        /// Whether it succeeded (exit status 0 within its timeout).
        success: bool,
        /// What happened, as text: "exit status 3", "timed out after 60 s", the tail of
        /// its error output.
        detail: String,
    },
}

/// Why feedback bytes could not be read.
#[derive(Debug, Error)]
pub enum FeedbackError {
    /// Empty input.
    #[error("empty feedback message")]
    Empty,
    /// A version this build does not read.
    #[error("unsupported feedback version {0}")]
    Version(u8),
    /// Longer than [`FEEDBACK_BYTES_MAX`].
    #[error("feedback message of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a valid encoding.
    #[error("malformed feedback: {0}")]
    Decode(String),
    /// Bytes after the message.
    #[error("{0} trailing bytes after feedback message")]
    TrailingBytes(usize),
    /// A field is out of bounds.
    #[error("feedback field out of bounds: {0}")]
    Bounds(&'static str),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<FEEDBACK_BYTES_MAX>()
}

impl Feedback {
    /// The wire bytes: version byte, then the canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![FEEDBACK_VERSION];
        // Encoding into a Vec cannot fail for these types; an empty body would be refused
        // by the reader, so a failure can never be mistaken for a valid message.
        if let Ok(body) = bincode::encode_to_vec(self, config()) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Reads and bounds-checks one message. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Feedback, FeedbackError> {
        let (&version, body) = bytes.split_first().ok_or(FeedbackError::Empty)?;
        if version != FEEDBACK_VERSION {
            return Err(FeedbackError::Version(version));
        }
        if bytes.len() > FEEDBACK_BYTES_MAX {
            return Err(FeedbackError::TooLarge(bytes.len()));
        }
        let (feedback, used): (Feedback, usize) =
            bincode::decode_from_slice(body, config()).map_err(|e| FeedbackError::Decode(e.to_string()))?;
        if used != body.len() {
            return Err(FeedbackError::TrailingBytes(body.len() - used));
        }
        feedback.check_bounds()?;
        Ok(feedback)
    }

    fn check_bounds(&self) -> Result<(), FeedbackError> {
        if self.county_code.len() != 6 || !self.county_code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FeedbackError::Bounds("county code must be six digits"));
        }
        match &self.message {
            FeedbackMessage::Hello { software_version, .. } if software_version.len() > TEXT_BYTES_MAX => {
                Err(FeedbackError::Bounds("software version too long"))
            }
            FeedbackMessage::Progress { needs, .. } if needs.is_empty() || needs.len() > NEEDS_MAX => {
                Err(FeedbackError::Bounds("needs must list 1 to 256 blocks"))
            }
            FeedbackMessage::Rejected { reason, .. } if reason.len() > TEXT_BYTES_MAX => Err(FeedbackError::Bounds("reason too long")),
            FeedbackMessage::HookResult { detail, .. } if detail.len() > TEXT_BYTES_MAX => {
                Err(FeedbackError::Bounds("hook detail too long"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_and_refuses_bad_input() {
        let feedback = Feedback {
            county_code: "410102".into(),
            message: FeedbackMessage::Progress { object_id: 9, round: 2, needs: vec![0, 12, 3], symbols_received: 1000 },
        };
        let bytes = feedback.to_bytes();
        assert_eq!(Feedback::from_bytes(&bytes).expect("roundtrip"), feedback);
        assert!(matches!(Feedback::from_bytes(&[]), Err(FeedbackError::Empty)));
        assert!(matches!(Feedback::from_bytes(&[9, 0]), Err(FeedbackError::Version(9))));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(Feedback::from_bytes(&trailing), Err(FeedbackError::TrailingBytes(1))));
        let bad_code = Feedback { county_code: "41".into(), message: FeedbackMessage::Complete { object_id: 1, object_hash: [0; 32] } };
        assert!(matches!(Feedback::from_bytes(&bad_code.to_bytes()), Err(FeedbackError::Bounds(_))));
    }
}
