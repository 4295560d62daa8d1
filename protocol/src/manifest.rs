//! Manifests: the description of one broadcast object (what it is, how it is coded on the
//! air, how to check it, who it is for and how long it is good for), and the one canonical
//! byte encoding that is signed (see [`crate::trust`]) and repeated on the carousel.
//!
//! The canonical encoding is bincode 2 with big-endian fixed-width integers and a hard
//! size limit ([`canonical_config`]). Decoding rejects trailing bytes and any input that
//! does not re-encode to itself, so one manifest has exactly one byte string: a signature
//! covers the bytes, and the bytes mean one thing.

use std::fmt;
use std::str::FromStr;

use bincode::config::{BigEndian, Configuration, Fixint, Limit};
use bincode::{Decode, Encode};

/// Largest canonical encoding of a [`Manifest`], in bytes. A manifest at the other limits
/// (256 block hashes, 64 targets, 240-byte name) encodes to about 9.4 KiB; the margin is
/// for future fields. Decoding never allocates more than this.
pub const MANIFEST_BYTES_MAX: usize = 65536;
/// Longest object name in bytes of UTF-8: it becomes a file name on county PCs, where file
/// systems (ext4, XFS, NTFS) allow 255 bytes; the margin leaves room for the names tools
/// put beside a file (`.name.swp`, `name~`). A Chinese character is 3 bytes: 80 of them fit.
pub const NAME_BYTES_MAX: usize = 240;
/// Most source blocks per object: the RFC 6330 section 3.2 source block number is a u8,
/// so an object has at most 256 blocks.
pub const BLOCK_HASHES_MAX: usize = 255;
/// Most target prefixes in one manifest.
pub const TARGETS_MAX: usize = 64;
/// Longest division code (and target prefix) in digits: province (2), city (4), county (6).
pub const TARGET_DIGITS_MAX: usize = 6;
/// Longest piece of rejected input echoed back in an error message, in characters, so a
/// hostile or mistaken input cannot blow up a log line.
pub const ECHO_CHARS_MAX: usize = 32;
/// Largest delivered (decoded) size a manifest may declare, in bytes: 64 GiB, far above any
/// payload the ministry airs and below what a county's disk holds. A receiver also refuses a
/// declared size over its own cache limit before it receives a byte.
pub const DELIVERED_BYTES_MAX: u64 = 64 << 30;

/// The bincode configuration of the canonical encoding, limited to `LIMIT` bytes.
pub(crate) type CanonicalConfig<const LIMIT: usize> = Configuration<BigEndian, Fixint, Limit<LIMIT>>;

/// The canonical bincode configuration for manifests: big endian, fixed-width integers
/// (so every value has exactly one encoding), at most [`MANIFEST_BYTES_MAX`] bytes.
pub fn canonical_config() -> CanonicalConfig<MANIFEST_BYTES_MAX> {
    canonical_config_limited::<MANIFEST_BYTES_MAX>()
}

/// The canonical configuration with another size limit, for the signed envelopes.
pub(crate) fn canonical_config_limited<const LIMIT: usize>() -> CanonicalConfig<LIMIT> {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<LIMIT>()
}

/// Why bytes are not the canonical encoding of a value.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The input is longer than the limit for this type.
    #[error("input is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit for this type.
        max: usize,
    },
    /// bincode could not decode the input (truncated, bad enum tag, bad UTF-8, length
    /// over the limit, ...).
    #[error("undecodable: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A value decoded but bytes were left over.
    #[error("{trailing} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left over.
        trailing: usize,
    },
    /// The value decoded but does not re-encode to the same bytes.
    #[error("not the canonical encoding")]
    NonCanonical,
}

/// Encodes `value` canonically. Encoding into a `Vec` has no failure mode for the plain
/// structs of this crate (the writer cannot fail and the limit applies to decoding only);
/// should bincode ever report one, the empty result fails every later decode and
/// signature check, which is the safe direction.
pub(crate) fn encode_canonical<T: Encode, const LIMIT: usize>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, canonical_config_limited::<LIMIT>()).unwrap_or_default()
}

/// Decodes `bytes` as exactly one canonical `T` of at most `LIMIT` bytes.
pub(crate) fn decode_canonical<T: Decode<()> + Encode, const LIMIT: usize>(bytes: &[u8]) -> Result<T, CanonicalError> {
    if bytes.len() > LIMIT {
        return Err(CanonicalError::TooLarge { len: bytes.len(), max: LIMIT });
    }
    let (value, read) = bincode::decode_from_slice(bytes, canonical_config_limited::<LIMIT>())?;
    if read != bytes.len() {
        return Err(CanonicalError::TrailingBytes { trailing: bytes.len() - read });
    }
    // Fixed-width integers leave little room for aliasing, but checking costs one encode
    // and makes "one value, one byte string" a tested property instead of an assumption.
    if encode_canonical::<T, LIMIT>(&value) != bytes {
        return Err(CanonicalError::NonCanonical);
    }
    Ok(value)
}

/// What kind of payload an object is; receivers deliver each kind into its own directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum Kind {
    /// A policy document.
    Policy,
    /// A software update.
    Software,
    /// A code table, such as the administrative-division codes.
    CodeTable,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 3] = [Kind::Policy, Kind::Software, Kind::CodeTable];

    /// The lowercase name used on the command line and as a directory name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Policy => "policy",
            Kind::Software => "software",
            Kind::CodeTable => "codetable",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a [`Kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindParseError {
    /// The string is none of "policy", "software", "codetable".
    #[error("unknown kind {0:?}: expected policy, software or codetable")]
    Unknown(String),
}

impl FromStr for Kind {
    type Err = KindParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == s).ok_or_else(|| KindParseError::Unknown(echo(s)))
    }
}

/// How the transmitted payload is coded. [`Manifest::object_hash`] and the block hashes
/// cover the bytes as transmitted (so a poisoned block is still caught block by block); a
/// coded payload also declares the size and BLAKE3 of the bytes the receiver delivers, which
/// it checks after decoding, before anything is delivered (see [`crate::codec`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Compression {
    /// Transmitted as is: the delivered bytes are the transmitted ones.
    None,
    /// One zstd frame that decodes to the delivered bytes.
    Zstd(Delivered),
    /// One zstd frame made with the previous version as its reference prefix (`zstd
    /// --patch-from`): only a receiver holding that base (by its BLAKE3) can decode it.
    ZstdPatch {
        /// BLAKE3 of the base: the delivered bytes of an earlier version of (kind, name).
        base_hash: [u8; 32],
        /// The bytes the patch decodes to.
        delivered: Delivered,
    },
    /// A confidential object (docs/protocol.md 8.5): the aired bytes are the plaintext
    /// sealed block by block under a content key; the section carries that key's wraps and
    /// the sealed secrets (real name, plaintext size and hash, and the plaintext's own
    /// coding, none or zstd). The public manifest names the object by a pseudonym; what is
    /// delivered is known only to a county that opens the section, so the delivered hash
    /// and size of the public manifest are those of the aired bytes.
    Sealed(Box<crate::confidential::Confidential>),
}

/// The bytes a receiver delivers from a coded payload, as signed in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Delivered {
    /// Their length: decoding stops with a refusal as soon as it would pass it.
    pub size_bytes: u64,
    /// Their BLAKE3.
    pub hash: [u8; 32],
}

impl Compression {
    /// The word operators see.
    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd(_) => "zstd",
            Compression::ZstdPatch { .. } => "zstd-patch",
            Compression::Sealed(_) => "sealed",
        }
    }
}

/// The signed description of one broadcast object. Build one, call [`Manifest::validate`]
/// (signing does), and encode it with [`Manifest::to_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Manifest {
    /// Identifies this broadcast on the air; every datagram of the object carries it.
    pub object_id: u64,
    /// What the payload is.
    pub kind: Kind,
    /// File name the receiver delivers under (see [`Manifest::validate`] for the rules).
    pub name: String,
    /// Version of (kind, name); receivers refuse anything older than what they accepted.
    pub version: u64,
    /// Bytes on the air: the RFC 6330 transfer length (section 3.3.2). What is delivered
    /// may differ: see [`Manifest::delivered_size`].
    pub size_bytes: u64,
    /// How the transmitted bytes are compressed.
    pub compression: Compression,
    /// RFC 6330 section 3.3.2 Object Transmission Information, 12 bytes as on the wire;
    /// validated by the FEC layer, not here.
    pub oti: [u8; 12],
    /// BLAKE3 of the whole transmitted payload (see [`Manifest::delivered_hash`] for what
    /// is delivered).
    pub object_hash: [u8; 32],
    /// BLAKE3 of each source block's bytes, in source block number order, so a poisoned
    /// block can be dropped and collected again without discarding the others.
    pub block_hashes: Vec<[u8; 32]>,
    /// Division-code prefixes this object is for: "" is nationwide, otherwise 2 (province),
    /// 4 (city) or 6 (county) ASCII digits.
    pub targets: Vec<String>,
    /// When the uplink created the manifest, seconds since the Unix epoch.
    pub created_unix_secs: u64,
    /// After this instant receivers refuse the manifest, seconds since the Unix epoch.
    pub expires_unix_secs: u64,
}

/// Why a manifest (or a target list) is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not a canonical encoding.
    #[error("manifest bytes: {0}")]
    Encoding(#[from] CanonicalError),
    /// The name is empty or longer than [`NAME_BYTES_MAX`] bytes.
    #[error("name is {len} bytes, expected 1 to {NAME_BYTES_MAX}")]
    NameLength {
        /// Length of the name in bytes.
        len: usize,
    },
    /// The name could not be a plain file name in the delivery folder (see [`validate_name`]).
    #[error("name {name:?} {why}")]
    NameCharacters {
        /// The name, shortened to [`ECHO_CHARS_MAX`] characters.
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// There are no block hashes or more than [`BLOCK_HASHES_MAX`].
    #[error("{count} block hashes, expected 1 to {BLOCK_HASHES_MAX}")]
    BlockHashCount {
        /// How many there are.
        count: usize,
    },
    /// There are no targets or more than [`TARGETS_MAX`].
    #[error("{count} targets, expected 1 to {TARGETS_MAX}")]
    TargetCount {
        /// How many there are.
        count: usize,
    },
    /// A target is neither "" (nationwide) nor 2, 4 or 6 ASCII digits.
    #[error("target {target:?} is not 2, 4 or 6 digits (or \"all\" on the command line)")]
    Target {
        /// The target, shortened to [`ECHO_CHARS_MAX`] characters.
        target: String,
    },
    /// A confidential section with more than [`crate::confidential::CONTENT_WRAPS_MAX`] wraps
    /// or no sealed secrets.
    #[error("confidential section: {0}")]
    Confidential(&'static str),
    /// A coded payload declares a delivered size over [`DELIVERED_BYTES_MAX`].
    #[error("declares {size_bytes} delivered bytes, more than {DELIVERED_BYTES_MAX}")]
    DeliveredSize {
        /// The declared size.
        size_bytes: u64,
    },
    /// The manifest expires before (or when) it is created.
    #[error("expires at {expires_unix_secs}, not after creation at {created_unix_secs}")]
    Lifetime {
        /// Creation time, seconds since the Unix epoch.
        created_unix_secs: u64,
        /// Expiry time, seconds since the Unix epoch.
        expires_unix_secs: u64,
    },
}

impl Manifest {
    /// The canonical encoding. Validate first: encoding does not check the manifest.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, MANIFEST_BYTES_MAX>(self)
    }

    /// Decodes a canonical encoding and validates it. Never panics, allocates at most
    /// about [`MANIFEST_BYTES_MAX`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = decode_canonical::<Self, MANIFEST_BYTES_MAX>(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the rules every manifest must satisfy whatever the receiver: a safe name,
    /// 1..=[`BLOCK_HASHES_MAX`] block hashes, 1..=[`TARGETS_MAX`] well-formed targets, and
    /// creation before expiry. Times against a clock are checked by [`crate::trust`].
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_name(&self.name)?;
        let count = self.block_hashes.len();
        if !(1..=BLOCK_HASHES_MAX).contains(&count) {
            return Err(ManifestError::BlockHashCount { count });
        }
        let count = self.targets.len();
        if !(1..=TARGETS_MAX).contains(&count) {
            return Err(ManifestError::TargetCount { count });
        }
        for target in &self.targets {
            validate_target(target)?;
        }
        // Only a coded payload declares a size apart from what is aired (the FEC layer bounds that).
        if let Compression::Sealed(section) = &self.compression {
            if section.wraps.is_empty() || section.wraps.len() > crate::confidential::CONTENT_WRAPS_MAX {
                return Err(ManifestError::Confidential("1 to 64 content-key wraps expected"));
            }
            if section.sealed_secrets.len() < crate::confidential::TAG_LEN
                || section.sealed_secrets.len() > crate::confidential::SEALED_SECRETS_BYTES_MAX
            {
                return Err(ManifestError::Confidential("sealed secrets of impossible length"));
            }
        }
        if self.compression != Compression::None && self.delivered_size() > DELIVERED_BYTES_MAX {
            return Err(ManifestError::DeliveredSize { size_bytes: self.delivered_size() });
        }
        if self.created_unix_secs >= self.expires_unix_secs {
            return Err(ManifestError::Lifetime { created_unix_secs: self.created_unix_secs, expires_unix_secs: self.expires_unix_secs });
        }
        Ok(())
    }

    /// BLAKE3 of the bytes a receiver delivers: [`Manifest::object_hash`] for a payload
    /// aired as is, the declared hash of a coded one. The cache, the ledger and the
    /// acknowledgements name an object by it, so a full airing and a patch of the same
    /// version are the same object to them.
    pub fn delivered_hash(&self) -> [u8; 32] {
        match self.compression {
            Compression::None | Compression::Sealed(_) => self.object_hash,
            Compression::Zstd(delivered) | Compression::ZstdPatch { delivered, .. } => delivered.hash,
        }
    }

    /// Length of the bytes a receiver delivers.
    pub fn delivered_size(&self) -> u64 {
        match self.compression {
            Compression::None | Compression::Sealed(_) => self.size_bytes,
            Compression::Zstd(delivered) | Compression::ZstdPatch { delivered, .. } => delivered.size_bytes,
        }
    }

    /// BLAKE3 of the base a patch needs, if the payload is one.
    pub fn base_hash(&self) -> Option<[u8; 32]> {
        match self.compression {
            Compression::ZstdPatch { base_hash, .. } => Some(base_hash),
            Compression::None | Compression::Zstd(_) | Compression::Sealed(_) => None,
        }
    }

    /// The confidential section, if the object is sealed.
    pub fn confidential(&self) -> Option<&crate::confidential::Confidential> {
        match &self.compression {
            Compression::Sealed(section) => Some(section),
            _ => None,
        }
    }

    /// Whether this manifest is for the receiver with division code `county_code`: some
    /// target is a prefix of it ("" is a prefix of every code).
    pub fn targets_code(&self, county_code: &str) -> bool {
        self.targets.iter().any(|target| county_code.starts_with(target.as_str()))
    }
}

/// Parses operator input such as `"41,4201,110101"` or `"all"` into targets. Items are
/// separated by commas and trimmed; `all` means nationwide (""); duplicates are dropped.
pub fn parse_targets(s: &str) -> Result<Vec<String>, ManifestError> {
    let mut targets: Vec<String> = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        let target = if item.eq_ignore_ascii_case("all") { "" } else { item };
        // An empty item would otherwise silently mean nationwide: only "all" may.
        if item.is_empty() {
            return Err(ManifestError::Target { target: String::new() });
        }
        validate_target(target)?;
        if !targets.iter().any(|t| t == target) {
            targets.push(target.to_owned());
        }
        if targets.len() > TARGETS_MAX {
            return Err(ManifestError::TargetCount { count: targets.len() });
        }
    }
    Ok(targets)
}

/// The one rule for object names, checked by the uplink daemon before it queues a job (`send`),
/// by the uplink when it signs, and by every receiver before it delivers to
/// `deliver/<kind>/<name>`: 1..=[`NAME_BYTES_MAX`] bytes of UTF-8 (Chinese, spaces and any
/// printable character are fine) that name one plain file in that folder. So: no path
/// separator ('/', or '\\' for tools that treat it as one), no control character (NUL,
/// newlines, tabs), no bidirectional-override character (they make `通知\u{202E}fdp.exe`
/// display as a PDF), no leading '.' (".", ".." and hidden files), and no leading or trailing
/// whitespace (invisible to an operator reading a list).
pub fn validate_name(name: &str) -> Result<(), ManifestError> {
    let len = name.len();
    if !(1..=NAME_BYTES_MAX).contains(&len) {
        return Err(ManifestError::NameLength { len });
    }
    let why = if name.contains(['/', '\\']) {
        Some("contains a path separator ('/' or '\\')")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.chars().any(is_bidi_control) {
        Some("contains a bidirectional-override character")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.trim() != name {
        Some("starts or ends with whitespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(ManifestError::NameCharacters { name: echo(name), why }),
        None => Ok(()),
    }
}

/// Unicode's explicit directional marks, embeddings, overrides and isolates (UAX #9).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn validate_target(target: &str) -> Result<(), ManifestError> {
    let well_formed = match target.len() {
        0 => true,
        2 | 4 | TARGET_DIGITS_MAX => target.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    if well_formed { Ok(()) } else { Err(ManifestError::Target { target: echo(target) }) }
}

/// Shortens untrusted text for an error message.
pub(crate) fn echo(s: &str) -> String {
    s.chars().take(ECHO_CHARS_MAX).collect()
}
