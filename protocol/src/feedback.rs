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
    /// The receiver refused a genuine manifest addressed to it, or cannot take the object
    /// now (spool full, too many partial objects): a typed reason. Appended last, so the
    /// variants before it keep their encoding (older receivers send [`FeedbackMessage::Rejected`]).
    Refused {
        /// The object.
        object_id: u64,
        /// Why.
        refusal: Refusal,
    },
    /// Where a county stands while a pass is still airing, so the uplink can start a
    /// repair the moment the pass ends instead of waiting for reports after its marker
    /// (section 15.1 of docs/protocol.md). Appended last: the variants before it keep
    /// their encoding. Not recorded in the ledger.
    PassProgress {
        /// The object.
        object_id: u64,
        /// Per source block, in SBN order: fresh symbols still needed (0 = verified).
        needs: Vec<u32>,
        /// Per source block: one past the highest ESI received, so the uplink knows which
        /// of the symbols it aired are still on their way.
        seen: Vec<u32>,
    },
}

/// Why a county refused an object: a code an uplink can act on and a short detail for
/// people ("needs 40.0 MiB, 12.0 MiB free").
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Refusal {
    /// What kind of refusal.
    pub code: RefusalCode,
    /// Specifics, at most [`TEXT_BYTES_MAX`] bytes (see [`Refusal::new`]).
    pub detail: String,
}

impl Refusal {
    /// A refusal with its detail cut to [`TEXT_BYTES_MAX`] bytes on a character boundary.
    pub fn new(code: RefusalCode, detail: impl Into<String>) -> Refusal {
        let mut detail = detail.into();
        if detail.len() > TEXT_BYTES_MAX {
            let mut end = TEXT_BYTES_MAX;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        Refusal { code, detail }
    }
}

impl std::fmt::Display for Refusal {
    /// "spool full (needs 40.0 MiB, 12.0 MiB free)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, self.detail.is_empty()) {
            (RefusalCode::Other(_), false) => f.write_str(&self.detail),
            (code, true) => write!(f, "{code}"),
            (code, false) => write!(f, "{code} ({})", self.detail),
        }
    }
}

/// The kinds of refusal. On the wire a `u16`; a code this build does not know reads as
/// [`RefusalCode::Other`], so a newer receiver never makes its messages unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// The signing key was revoked by the root.
    KeyRevoked,
    /// The signing key is not valid yet by the county's clock (a clock behind?).
    KeyNotYetValid,
    /// The signing key's validity ended by the county's clock.
    KeyExpired,
    /// The manifest expired by the county's clock.
    ManifestExpired,
    /// The manifest was created in the future of the county's clock (a clock behind?).
    ManifestFromFuture,
    /// A newer version of the (kind, name) was delivered already, or the same version
    /// under another object id.
    Rollback,
    /// The uplink's heartbeat states a newer version of the (kind, name).
    Superseded,
    /// The county receives `limits.partial_objects_max` objects already; it takes this one
    /// when one of them ends (passing).
    TooManyPartial,
    /// The spool or the disk has no room for the object (passing: retried every second).
    StorageFull,
    /// Storage failed otherwise when the object was begun (passing: retried every second).
    StorageFailed,
    /// The payload is a patch against a base this county does not hold (never received,
    /// evicted, or failing its hash): the uplink airs the full object to it afterwards.
    NoBase,
    /// The payload arrived intact but does not decode to the signed delivered bytes (it
    /// expands past its declared size, or decodes to other bytes): nothing was delivered,
    /// and the uplink airs the full object to it afterwards.
    Undecodable,
    /// A code this build does not know, or a reason an older receiver gave as text.
    Other(u16),
}

impl RefusalCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            RefusalCode::KeyRevoked => 1,
            RefusalCode::KeyNotYetValid => 2,
            RefusalCode::KeyExpired => 3,
            RefusalCode::ManifestExpired => 4,
            RefusalCode::ManifestFromFuture => 5,
            RefusalCode::Rollback => 6,
            RefusalCode::TooManyPartial => 7,
            RefusalCode::StorageFull => 8,
            RefusalCode::StorageFailed => 9,
            RefusalCode::NoBase => 10,
            RefusalCode::Undecodable => 11,
            RefusalCode::Superseded => 12,
            RefusalCode::Other(code) => code,
        }
    }

    /// The code a wire value stands for.
    pub fn from_u16(code: u16) -> RefusalCode {
        match code {
            1 => RefusalCode::KeyRevoked,
            2 => RefusalCode::KeyNotYetValid,
            3 => RefusalCode::KeyExpired,
            4 => RefusalCode::ManifestExpired,
            5 => RefusalCode::ManifestFromFuture,
            6 => RefusalCode::Rollback,
            7 => RefusalCode::TooManyPartial,
            8 => RefusalCode::StorageFull,
            9 => RefusalCode::StorageFailed,
            10 => RefusalCode::NoBase,
            11 => RefusalCode::Undecodable,
            12 => RefusalCode::Superseded,
            other => RefusalCode::Other(other),
        }
    }

    /// Whether the uplink airs the full object to the county afterwards (it could not use
    /// the coded one it got).
    pub fn wants_full(self) -> bool {
        matches!(self, RefusalCode::NoBase | RefusalCode::Undecodable)
    }

    /// Whether the county may still take the object by itself once the condition passes
    /// (a slot or space frees): the uplink keeps waiting for it. Every other refusal is
    /// final for this manifest.
    pub fn is_passing(self) -> bool {
        matches!(self, RefusalCode::TooManyPartial | RefusalCode::StorageFull | RefusalCode::StorageFailed)
    }

    /// A stable name for scripts: `spool_full`, `key_revoked`...
    pub fn name(self) -> &'static str {
        match self {
            RefusalCode::KeyRevoked => "key_revoked",
            RefusalCode::KeyNotYetValid => "key_not_yet_valid",
            RefusalCode::KeyExpired => "key_expired",
            RefusalCode::ManifestExpired => "manifest_expired",
            RefusalCode::ManifestFromFuture => "manifest_from_future",
            RefusalCode::Rollback => "rollback",
            RefusalCode::TooManyPartial => "too_many_partial",
            RefusalCode::StorageFull => "spool_full",
            RefusalCode::StorageFailed => "storage_failed",
            RefusalCode::NoBase => "no_base",
            RefusalCode::Undecodable => "undecodable",
            RefusalCode::Superseded => "superseded",
            RefusalCode::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalCode::KeyRevoked => f.write_str("signing key revoked"),
            RefusalCode::KeyNotYetValid => f.write_str("signing key not yet valid (county clock behind?)"),
            RefusalCode::KeyExpired => f.write_str("signing key expired"),
            RefusalCode::ManifestExpired => f.write_str("manifest expired"),
            RefusalCode::ManifestFromFuture => f.write_str("manifest from the future (county clock behind?)"),
            RefusalCode::Rollback => f.write_str("rollback"),
            RefusalCode::TooManyPartial => f.write_str("too many partial objects"),
            RefusalCode::StorageFull => f.write_str("spool full"),
            RefusalCode::StorageFailed => f.write_str("storage failing"),
            RefusalCode::NoBase => f.write_str("no base for the patch"),
            RefusalCode::Undecodable => f.write_str("payload does not decode to the signed bytes"),
            RefusalCode::Superseded => f.write_str("superseded by a newer version"),
            RefusalCode::Other(code) => write!(f, "refusal code {code}"),
        }
    }
}

impl Encode for RefusalCode {
    fn encode<E: bincode::enc::Encoder>(&self, encoder: &mut E) -> Result<(), bincode::error::EncodeError> {
        self.to_u16().encode(encoder)
    }
}

impl<Context> Decode<Context> for RefusalCode {
    fn decode<D: bincode::de::Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, bincode::error::DecodeError> {
        Ok(RefusalCode::from_u16(u16::decode(decoder)?))
    }
}

bincode::impl_borrow_decode!(RefusalCode);

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
            FeedbackMessage::PassProgress { needs, seen, .. }
                if needs.is_empty() || needs.len() > NEEDS_MAX || seen.len() != needs.len() =>
            {
                Err(FeedbackError::Bounds("needs and seen must list the same 1 to 256 blocks"))
            }
            FeedbackMessage::Rejected { reason, .. } if reason.len() > TEXT_BYTES_MAX => Err(FeedbackError::Bounds("reason too long")),
            FeedbackMessage::HookResult { detail, .. } if detail.len() > TEXT_BYTES_MAX => {
                Err(FeedbackError::Bounds("hook detail too long"))
            }
            FeedbackMessage::Refused { refusal, .. } if refusal.detail.len() > TEXT_BYTES_MAX => {
                Err(FeedbackError::Bounds("refusal detail too long"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PassProgress example of docs/protocol.md section 13.1.
    #[test]
    fn a_pass_progress_encodes_as_documented() {
        let feedback = Feedback {
            county_code: "410102".into(),
            message: FeedbackMessage::PassProgress { object_id: 7, needs: vec![0, 30], seen: vec![80, 100] },
        };
        let hex: String = feedback.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let documented = "01 0000000000000006 343130313032 00000006 0000000000000007 0000000000000002 00000000 0000001e \
                          0000000000000002 00000050 00000064";
        assert_eq!(hex, documented.split_whitespace().collect::<String>());
        assert_eq!(Feedback::from_bytes(&feedback.to_bytes()).expect("roundtrip"), feedback);
        let uneven = Feedback { message: FeedbackMessage::PassProgress { object_id: 7, needs: vec![0, 30], seen: vec![80] }, ..feedback };
        assert!(matches!(Feedback::from_bytes(&uneven.to_bytes()), Err(FeedbackError::Bounds(_))));
    }

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

    #[test]
    fn a_refusal_is_typed_and_older_messages_keep_their_bytes() {
        // What an older receiver sends must still read the same: the new variant is last.
        let old = Feedback { county_code: "410102".into(), message: FeedbackMessage::Rejected { object_id: 7, reason: "rollback".into() } };
        let bytes = old.to_bytes();
        // Version, county string (u64 length + 6 bytes), then the variant index 3 (u32).
        assert_eq!(&bytes[15..19], &[0, 0, 0, 3], "Rejected keeps its variant index");
        assert_eq!(Feedback::from_bytes(&bytes).expect("old message"), old);

        let refusal = Refusal::new(RefusalCode::StorageFull, "needs 40.0 MiB, 12.0 MiB free");
        let new = Feedback { county_code: "410102".into(), message: FeedbackMessage::Refused { object_id: 7, refusal: refusal.clone() } };
        let bytes = new.to_bytes();
        assert_eq!(&bytes[15..19], &[0, 0, 0, 5], "Refused is appended after HookResult");
        assert_eq!(Feedback::from_bytes(&bytes).expect("roundtrip"), new);
        assert_eq!(refusal.to_string(), "spool full (needs 40.0 MiB, 12.0 MiB free)");
        // The example in docs/protocol.md, section 13.1.
        let example = Feedback {
            county_code: "410102".into(),
            message: FeedbackMessage::Refused { object_id: 7, refusal: Refusal::new(RefusalCode::StorageFull, "x") },
        };
        assert_eq!(
            hex::encode(example.to_bytes()),
            ["01", "0000000000000006", "343130313032", "00000005", "0000000000000007", "0008", "0000000000000001", "78"].concat()
        );

        // A code from a newer receiver still reads, as Other.
        let mut future = bytes.clone();
        future[27..29].copy_from_slice(&999u16.to_be_bytes());
        let Ok(Feedback { message: FeedbackMessage::Refused { refusal, .. }, .. }) = Feedback::from_bytes(&future) else {
            panic!("an unknown code must still decode")
        };
        assert_eq!(refusal.code, RefusalCode::Other(999));
        for code in 0..=12 {
            assert_eq!(RefusalCode::from_u16(code).to_u16(), code);
        }

        // The detail is bounded, cut on a character boundary.
        let long = Refusal::new(RefusalCode::StorageFailed, "满".repeat(200));
        assert!(long.detail.len() <= TEXT_BYTES_MAX && long.detail.chars().all(|c| c == '满'));
        let oversized = Feedback {
            county_code: "410102".into(),
            message: FeedbackMessage::Refused { object_id: 7, refusal: Refusal { code: RefusalCode::Rollback, detail: "x".repeat(300) } },
        };
        assert!(matches!(Feedback::from_bytes(&oversized.to_bytes()), Err(FeedbackError::Bounds(_))));
    }
}
