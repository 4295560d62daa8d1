//! The datagram format: framing, the keyed-BLAKE3 tag, and the DATA, MANIFEST and
//! HEARTBEAT bodies. docs/protocol.md describes the same layout byte by byte.
//!
//! Every datagram, all integers big endian:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "SCST"
//! 4       1     version (1)
//! 5       1     type (1 DATA, 2 MANIFEST, 3 HEARTBEAT, 4 ROUND, 5 REVOCATION, 6 KEY_WRAP,
//!               7 SYMBOL_LIST)
//! 6       8     object id (0 in HEARTBEAT)
//! 14      n     body
//! 14+n    16    tag: first 16 bytes of BLAKE3 keyed by the network key over bytes 0..14+n
//! ```
//!
//! Parsing checks the length, magic and version, then the tag, and only then looks at the
//! body: a sender without the network key cannot reach the body parsers or the decoder.

use std::collections::{BTreeMap, HashMap, VecDeque};

use thiserror::Error;

/// The four magic bytes that open every satcast datagram.
pub const MAGIC: [u8; 4] = *b"SCST";
/// The wire version this module reads and writes.
pub const VERSION: u8 = 1;
/// Bytes before the body: magic, version, type, object id.
pub const HEADER_LEN: usize = 14;
/// Bytes of the keyed-BLAKE3 tag that closes every datagram.
pub const TAG_LEN: usize = 16;
/// Bytes of the FEC payload id in a DATA body (RFC 6330 section 3.2: SBN u8, ESI u24).
pub const PAYLOAD_ID_LEN: usize = 4;
/// Bytes of the fragment header in a MANIFEST body: digest, total length, offset.
pub const FRAGMENT_HEADER_LEN: usize = 16;
/// The largest UDP payload over IPv4; nothing longer can be a satcast datagram.
pub const DATAGRAM_BYTES_MAX: usize = 65_507;
/// The largest encoding symbol identifier (RFC 6330 section 3.2: 24 bits).
pub const ESI_MAX: u32 = (1 << 24) - 1;
/// The largest signed manifest, reassembled from fragments: the trust layer's own bound,
/// so anything it can sign can cross the wire.
pub const SIGNED_MANIFEST_BYTES_MAX: u32 = crate::trust::SIGNED_MANIFEST_BYTES_MAX as u32;
/// IPv4 and UDP header bytes that every datagram costs on the carrier.
pub const IP_UDP_HEADER_BYTES: usize = 28;

pub use crate::trust::NetworkKey;

/// Datagram type codes (the byte at offset 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    /// One encoding symbol of one source block.
    Data = 1,
    /// One fragment of a signed manifest.
    Manifest = 2,
    /// A signed heartbeat: uplink time and sequence.
    Heartbeat = 3,
    /// End of a round of symbols for one object: receivers report what they still need.
    Round = 4,
    /// The root's signed list of revoked signing keys.
    Revocation = 5,
    /// Signed wraps of the confidential key tree's group keys (see `key_tree`).
    KeyWrap = 6,
    /// The uplink's signed list of the hashes of the symbols it airs next (or of the ROUND
    /// marker it airs next), so a county knows which symbols the uplink made.
    SymbolList = 7,
    /// The next network key, sealed for every enrolled county and signed (see
    /// `network_key`).
    NetworkKey = 8,
}

/// Bytes of a SYMBOL LIST body before its ranges, without a certificate: signer serial,
/// sequence, round, certificate flag, range count.
pub const SYMBOL_LIST_HEADER_LEN: usize = 22;
/// Bytes of the signer's certificate (canonical [`crate::trust::KeyCertificate`]) that some
/// SYMBOL LISTs carry after the certificate flag.
pub const SYMBOL_LIST_CERTIFICATE_LEN: usize = 120;
/// Bytes that open one range of a SYMBOL LIST: SBN (1), first ESI (3), count (1).
pub const SYMBOL_RANGE_HEADER_LEN: usize = 5;
/// Bytes of the truncated BLAKE3 of one symbol in a SYMBOL LIST: 64 bits. A forger must find
/// another symbol with a listed hash (a second preimage, about 2^64 hashes) while the list
/// is current, which is seconds (docs/protocol.md, section 7.5).
pub const SYMBOL_HASH_LEN: usize = 8;
/// Bytes of the Ed25519 signature that closes a SYMBOL LIST body.
pub const SYMBOL_LIST_SIGNATURE_LEN: usize = 64;
/// The most symbols one SYMBOL LIST names (a 1472-byte datagram holds about 160).
pub const SYMBOL_LIST_SYMBOLS_MAX: usize = 1024;
/// The most ranges one SYMBOL LIST holds (its count is one byte).
pub const SYMBOL_LIST_RANGES_MAX: usize = 255;
/// The most symbols one range names (its count is one byte).
pub const SYMBOL_RANGE_SYMBOLS_MAX: usize = 255;
/// The `round` of a SYMBOL LIST that names no ROUND marker.
pub const SYMBOL_LIST_NO_ROUND: u32 = u32::MAX;

/// Bytes of a ROUND body: the round number.
pub const ROUND_BODY_LEN: usize = 4;

/// Why a datagram was refused. Each variant names what an operator sees in the log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// Shorter than a header and a tag, or longer than any UDP payload.
    #[error("datagram length {0} outside {min}..={max}", min = HEADER_LEN + TAG_LEN, max = DATAGRAM_BYTES_MAX)]
    Length(usize),
    /// The first four bytes are not "SCST".
    #[error("bad magic")]
    Magic,
    /// A version this build does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// The keyed-BLAKE3 tag does not match: not from a holder of the network key.
    #[error("bad tag")]
    Tag,
    /// A type code this version does not define.
    #[error("unknown datagram type {0}")]
    Type(u8),
    /// A body too short or too long for its type.
    #[error("{kind} body of {len} bytes is malformed")]
    Body {
        /// The datagram type.
        kind: &'static str,
        /// The body length seen.
        len: usize,
    },
    /// A manifest fragment whose offset and length do not fit its declared total.
    #[error("manifest fragment at {offset}+{len} does not fit total {total}")]
    Fragment {
        /// Offset of the fragment in the signed manifest.
        offset: u32,
        /// Length of the fragment.
        len: usize,
        /// Declared length of the whole signed manifest.
        total: u32,
    },
    /// A manifest fragment the assembler refused, or an assembly that failed its digest.
    #[error("manifest fragment refused: {0}")]
    Assembly(FragmentRefusal),
    /// A symbol, symbol list or ROUND marker the uplink's signature does not vouch for.
    #[error("{0}")]
    Source(SourceRefusal),
}

/// Why a receiver refused a DATA symbol, a SYMBOL LIST or a ROUND marker that passed the
/// tag: only a holder of the network key who is not the uplink sends these. The text is the
/// same for every occurrence, so the drop log counts them under one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SourceRefusal {
    /// A symbol whose hash differs from the one its signed list gives.
    #[error("symbol does not match its signed list")]
    ForgedSymbol,
    /// A symbol list whose signature does not verify.
    #[error("symbol list signature does not verify")]
    BadListSignature,
    /// A ROUND marker no signed list names.
    #[error("round marker not in a signed list")]
    UnlistedRound,
    /// A block decoded with symbols no signed list named failed its hash: those symbols
    /// were dropped, and the block takes only listed symbols from now on.
    #[error("unlisted symbols failed their block's hash")]
    UnverifiedBlock,
}

/// A parsed datagram borrowing its body from the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The object this datagram belongs to (0 for heartbeats).
    pub object_id: u64,
    /// The typed body.
    pub body: Body<'a>,
}

/// The body of a datagram, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// One encoding symbol.
    Data {
        /// Source block number (RFC 6330 section 3.2).
        sbn: u8,
        /// Encoding symbol id, 24 bits (RFC 6330 section 3.2).
        esi: u32,
        /// The symbol; its length is checked against the OTI by the receiver.
        symbol: &'a [u8],
    },
    /// One fragment of a signed manifest.
    Manifest(ManifestFragment<'a>),
    /// A canonical signed heartbeat (see `trust`).
    Heartbeat(&'a [u8]),
    /// A canonical signed revocation list (see `trust`).
    Revocation(&'a [u8]),
    /// Canonical signed key wraps (see `key_tree`), at most
    /// [`crate::key_tree::SIGNED_KEY_WRAPS_BYTES_MAX`] bytes.
    KeyWrap(&'a [u8]),
    /// A canonical signed next network key (see `network_key`), at most
    /// [`crate::network_key::SIGNED_NEXT_NETWORK_KEY_BYTES_MAX`] bytes.
    NetworkKey(&'a [u8]),
    /// The end of a round of symbols for the object: round 0 is the first pass.
    Round {
        /// The round that just ended.
        round: u32,
    },
    /// The uplink's signed list of the symbols (or ROUND marker) it airs next.
    SymbolList(SymbolList<'a>),
}

/// A SYMBOL LIST body, parsed (its ranges are well formed) but not verified:
/// [`crate::trust::verify_symbol_list`] checks its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolList<'a> {
    /// The serial of the signing key (its certificate came in a manifest or heartbeat).
    pub signer_serial: u64,
    /// Increases with every list the uplink builds (its wall clock in milliseconds, or one
    /// more than the last): receivers drop lists seen already before checking a signature.
    pub sequence: u64,
    /// The ROUND marker of this object the list names, if any.
    pub round: Option<u32>,
    /// The signer's certificate (canonical bytes), in some lists: a county that missed the
    /// heartbeats of a new signing key learns it from the next list that carries it.
    pub certificate: Option<&'a [u8]>,
    /// The ranges: each SBN (1), first ESI (3), count (1), then count hashes of
    /// [`SYMBOL_HASH_LEN`] bytes, one per consecutive ESI.
    pub ranges: &'a [u8],
    /// Symbols named in all.
    pub symbols: usize,
    /// The body bytes the signature covers (everything before it).
    pub signed: &'a [u8],
    /// The signature over [`crate::trust::SYMBOL_LIST_CONTEXT`], the object id (8 bytes, big
    /// endian) and `signed`.
    pub signature: &'a [u8],
}

impl SymbolList<'_> {
    /// The named symbols as (payload id, hash), in list order.
    pub fn entries(&self) -> impl Iterator<Item = (u32, [u8; SYMBOL_HASH_LEN])> + '_ {
        let mut rest = self.ranges;
        std::iter::from_fn(move || {
            if rest.len() < SYMBOL_RANGE_HEADER_LEN {
                return None;
            }
            let (sbn, first, count) = (rest[0], be_u32(rest) & ESI_MAX, usize::from(rest[4]));
            let end = (SYMBOL_RANGE_HEADER_LEN + count * SYMBOL_HASH_LEN).min(rest.len());
            let hashes = &rest[SYMBOL_RANGE_HEADER_LEN..end];
            rest = &rest[end..];
            Some(hashes.chunks_exact(SYMBOL_HASH_LEN).enumerate().map(move |(i, h)| {
                let mut hash = [0u8; SYMBOL_HASH_LEN];
                hash.copy_from_slice(h);
                (payload_id(sbn, first + i as u32), hash)
            }))
        })
        .flatten()
    }
}

impl SymbolList<'_> {
    /// The ranges as written (re-encoding them gives the same bytes).
    pub fn symbol_ranges(&self) -> Vec<SymbolRange> {
        let mut out: Vec<SymbolRange> = Vec::new();
        let mut rest = self.ranges;
        while rest.len() >= SYMBOL_RANGE_HEADER_LEN {
            let (sbn, first_esi, count) = (rest[0], be_u32(rest) & ESI_MAX, usize::from(rest[4]));
            let end = (SYMBOL_RANGE_HEADER_LEN + count * SYMBOL_HASH_LEN).min(rest.len());
            let hashes = rest[SYMBOL_RANGE_HEADER_LEN..end]
                .chunks_exact(SYMBOL_HASH_LEN)
                .map(|h| {
                    let mut hash = [0u8; SYMBOL_HASH_LEN];
                    hash.copy_from_slice(h);
                    hash
                })
                .collect();
            out.push(SymbolRange { sbn, first_esi, hashes });
            rest = &rest[end..];
        }
        out
    }
}

/// One range of a SYMBOL LIST as the uplink builds it: consecutive ESIs of one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolRange {
    /// The block.
    pub sbn: u8,
    /// The ESI of the first hash.
    pub first_esi: u32,
    /// The hashes of ESIs first_esi, first_esi + 1, ... (at most [`SYMBOL_RANGE_SYMBOLS_MAX`]).
    pub hashes: Vec<[u8; SYMBOL_HASH_LEN]>,
}

/// The hash a SYMBOL LIST names a symbol by: the first [`SYMBOL_HASH_LEN`] bytes of its BLAKE3.
pub fn symbol_hash(symbol: &[u8]) -> [u8; SYMBOL_HASH_LEN] {
    let mut hash = [0u8; SYMBOL_HASH_LEN];
    hash.copy_from_slice(&blake3::hash(symbol).as_bytes()[..SYMBOL_HASH_LEN]);
    hash
}

/// The FEC payload id (RFC 6330 section 3.2) of (sbn, esi), as DATA and SYMBOL LIST carry it.
pub fn payload_id(sbn: u8, esi: u32) -> u32 {
    (u32::from(sbn) << 24) | (esi & ESI_MAX)
}

/// The bytes adding (sbn, esi) to `ranges` would add to the list (see [`add_to_ranges`]).
pub fn range_growth(ranges: &[SymbolRange], sbn: u8, esi: u32) -> usize {
    let extends = ranges
        .iter()
        .rev()
        .any(|r| r.sbn == sbn && r.hashes.len() < SYMBOL_RANGE_SYMBOLS_MAX && r.first_esi.checked_add(r.hashes.len() as u32) == Some(esi));
    if extends { SYMBOL_HASH_LEN } else { SYMBOL_RANGE_HEADER_LEN + SYMBOL_HASH_LEN }
}

/// Adds one symbol's hash to `ranges`: to the range of its block that ends just before its
/// ESI, or as a new range. Returns the bytes the list grew by.
pub fn add_to_ranges(ranges: &mut Vec<SymbolRange>, sbn: u8, esi: u32, hash: [u8; SYMBOL_HASH_LEN]) -> usize {
    let open = ranges
        .iter_mut()
        .rev()
        .find(|r| r.sbn == sbn && r.hashes.len() < SYMBOL_RANGE_SYMBOLS_MAX && r.first_esi.checked_add(r.hashes.len() as u32) == Some(esi));
    if let Some(range) = open {
        range.hashes.push(hash);
        return SYMBOL_HASH_LEN;
    }
    ranges.push(SymbolRange { sbn, first_esi: esi, hashes: vec![hash] });
    SYMBOL_RANGE_HEADER_LEN + SYMBOL_HASH_LEN
}

/// Bytes of a whole SYMBOL LIST datagram with no ranges (header, list header, signature, tag).
pub const SYMBOL_LIST_DATAGRAM_BASE_LEN: usize = HEADER_LEN + SYMBOL_LIST_HEADER_LEN + SYMBOL_LIST_SIGNATURE_LEN + TAG_LEN;

/// One piece of a signed manifest that may span several datagrams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFragment<'a> {
    /// First 8 bytes of BLAKE3 of the whole signed manifest: fragments of different
    /// manifests for the same object never mix.
    pub digest: [u8; 8],
    /// Length of the whole signed manifest.
    pub total_len: u32,
    /// Offset of this fragment in it.
    pub offset: u32,
    /// The fragment bytes.
    pub bytes: &'a [u8],
}

fn tag(key: &NetworkKey, bytes: &[u8]) -> [u8; TAG_LEN] {
    let hash = blake3::keyed_hash(&key.0, bytes);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
    out
}

/// Compares two tags in time independent of where they differ.
fn tags_equal(a: &[u8], b: &[u8; TAG_LEN]) -> bool {
    a.len() == TAG_LEN && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

/// Parses and authenticates one datagram. Never panics, whatever the input.
pub fn parse<'a>(bytes: &'a [u8], key: &NetworkKey) -> Result<Datagram<'a>, WireError> {
    if bytes.len() < HEADER_LEN + TAG_LEN || bytes.len() > DATAGRAM_BYTES_MAX {
        return Err(WireError::Length(bytes.len()));
    }
    if bytes[..4] != MAGIC {
        return Err(WireError::Magic);
    }
    if bytes[4] != VERSION {
        return Err(WireError::Version(bytes[4]));
    }
    let (signed, received_tag) = bytes.split_at(bytes.len() - TAG_LEN);
    if !tags_equal(received_tag, &tag(key, signed)) {
        return Err(WireError::Tag);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&signed[6..14]);
    let object_id = u64::from_be_bytes(id);
    let body = &signed[HEADER_LEN..];
    let body = match signed[5] {
        1 => parse_data(body)?,
        2 => Body::Manifest(parse_fragment(body)?),
        3 if object_id != 0 => return Err(WireError::Body { kind: "heartbeat", len: body.len() }),
        3 if !body.is_empty() => Body::Heartbeat(body),
        3 => return Err(WireError::Body { kind: "heartbeat", len: 0 }),
        4 if body.len() == ROUND_BODY_LEN => Body::Round { round: be_u32(body) },
        4 => return Err(WireError::Body { kind: "round", len: body.len() }),
        5 if object_id == 0 && !body.is_empty() => Body::Revocation(body),
        5 => return Err(WireError::Body { kind: "revocation", len: body.len() }),
        6 if object_id == 0 && !body.is_empty() && body.len() <= crate::key_tree::SIGNED_KEY_WRAPS_BYTES_MAX => Body::KeyWrap(body),
        6 => return Err(WireError::Body { kind: "key wrap", len: body.len() }),
        8 if object_id == 0 && !body.is_empty() && body.len() <= crate::network_key::SIGNED_NEXT_NETWORK_KEY_BYTES_MAX => {
            Body::NetworkKey(body)
        }
        8 => return Err(WireError::Body { kind: "network key", len: body.len() }),
        7 if object_id != 0 => Body::SymbolList(parse_symbol_list(body)?),
        7 => return Err(WireError::Body { kind: "symbol list", len: body.len() }),
        other => return Err(WireError::Type(other)),
    };
    Ok(Datagram { object_id, body })
}

fn parse_data(body: &[u8]) -> Result<Body<'_>, WireError> {
    if body.len() <= PAYLOAD_ID_LEN {
        return Err(WireError::Body { kind: "data", len: body.len() });
    }
    let payload_id = be_u32(body);
    Ok(Body::Data { sbn: (payload_id >> 24) as u8, esi: payload_id & ESI_MAX, symbol: &body[PAYLOAD_ID_LEN..] })
}

/// Parses a SYMBOL LIST body (the bytes between header and tag). Never panics.
pub fn parse_symbol_list(body: &[u8]) -> Result<SymbolList<'_>, WireError> {
    let malformed = WireError::Body { kind: "symbol list", len: body.len() };
    if body.len() < SYMBOL_LIST_HEADER_LEN + SYMBOL_LIST_SIGNATURE_LEN {
        return Err(malformed);
    }
    let (signed, signature) = body.split_at(body.len() - SYMBOL_LIST_SIGNATURE_LEN);
    let mut word = [0u8; 8];
    word.copy_from_slice(&signed[..8]);
    let signer_serial = u64::from_be_bytes(word);
    word.copy_from_slice(&signed[8..16]);
    let sequence = u64::from_be_bytes(word);
    let round = be_u32(&signed[16..]);
    let round = (round != SYMBOL_LIST_NO_ROUND).then_some(round);
    let (certificate, rest) = match signed[20] {
        0 => (None, &signed[21..]),
        1 if signed.len() >= SYMBOL_LIST_HEADER_LEN + SYMBOL_LIST_CERTIFICATE_LEN => {
            (Some(&signed[21..21 + SYMBOL_LIST_CERTIFICATE_LEN]), &signed[21 + SYMBOL_LIST_CERTIFICATE_LEN..])
        }
        _ => return Err(malformed),
    };
    let range_count = usize::from(rest[0]);
    let ranges = &rest[1..];
    // Walk the ranges: each complete, non-empty, within the ESI space, and nothing after.
    let (mut at, mut symbols) = (0usize, 0usize);
    for _ in 0..range_count {
        let Some(header) = ranges.get(at..at + SYMBOL_RANGE_HEADER_LEN) else { return Err(malformed) };
        let (first, count) = (be_u32(header) & ESI_MAX, usize::from(header[4]));
        if count == 0 || u64::from(first) + count as u64 > u64::from(ESI_MAX) + 1 {
            return Err(malformed);
        }
        at += SYMBOL_RANGE_HEADER_LEN + count * SYMBOL_HASH_LEN;
        symbols += count;
    }
    // A list of nothing vouches for nothing.
    if at != ranges.len() || symbols > SYMBOL_LIST_SYMBOLS_MAX || (symbols == 0 && round.is_none()) {
        return Err(malformed);
    }
    Ok(SymbolList { signer_serial, sequence, round, certificate, ranges, symbols, signed, signature })
}

fn parse_fragment(body: &[u8]) -> Result<ManifestFragment<'_>, WireError> {
    if body.len() <= FRAGMENT_HEADER_LEN {
        return Err(WireError::Body { kind: "manifest", len: body.len() });
    }
    let mut digest = [0u8; 8];
    digest.copy_from_slice(&body[..8]);
    let total_len = be_u32(&body[8..]);
    let offset = be_u32(&body[12..]);
    let bytes = &body[FRAGMENT_HEADER_LEN..];
    let fits = total_len <= SIGNED_MANIFEST_BYTES_MAX && u64::from(offset) + bytes.len() as u64 <= u64::from(total_len);
    if !fits {
        return Err(WireError::Fragment { offset, len: bytes.len(), total: total_len });
    }
    Ok(ManifestFragment { digest, total_len, offset, bytes })
}

fn begin(out: &mut Vec<u8>, kind: PacketType, object_id: u64) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&object_id.to_be_bytes());
}

fn seal(out: &mut Vec<u8>, key: &NetworkKey) {
    let t = tag(key, out);
    out.extend_from_slice(&t);
}

/// Writes a DATA datagram into `out` (cleared first). `esi` must be at most [`ESI_MAX`].
pub fn write_data(out: &mut Vec<u8>, key: &NetworkKey, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) {
    debug_assert!(esi <= ESI_MAX, "esi {esi} exceeds 24 bits");
    begin(out, PacketType::Data, object_id);
    out.extend_from_slice(&((u32::from(sbn) << 24) | (esi & ESI_MAX)).to_be_bytes());
    out.extend_from_slice(symbol);
    seal(out, key);
}

/// Writes one MANIFEST fragment datagram into `out` (cleared first).
pub fn write_manifest_fragment(out: &mut Vec<u8>, key: &NetworkKey, object_id: u64, fragment: &ManifestFragment<'_>) {
    begin(out, PacketType::Manifest, object_id);
    out.extend_from_slice(&fragment.digest);
    out.extend_from_slice(&fragment.total_len.to_be_bytes());
    out.extend_from_slice(&fragment.offset.to_be_bytes());
    out.extend_from_slice(fragment.bytes);
    seal(out, key);
}

/// Writes a HEARTBEAT datagram carrying canonical signed-heartbeat bytes.
pub fn write_heartbeat(out: &mut Vec<u8>, key: &NetworkKey, signed_heartbeat: &[u8]) {
    begin(out, PacketType::Heartbeat, 0);
    out.extend_from_slice(signed_heartbeat);
    seal(out, key);
}

/// Writes a REVOCATION datagram carrying canonical signed-revocation bytes.
pub fn write_revocation(out: &mut Vec<u8>, key: &NetworkKey, signed_revocation: &[u8]) {
    begin(out, PacketType::Revocation, 0);
    out.extend_from_slice(signed_revocation);
    seal(out, key);
}

/// Writes a KEY_WRAP datagram carrying canonical signed key wraps.
pub fn write_key_wrap(out: &mut Vec<u8>, key: &NetworkKey, signed_key_wraps: &[u8]) {
    begin(out, PacketType::KeyWrap, 0);
    out.extend_from_slice(signed_key_wraps);
    seal(out, key);
}

/// Replaces the tag of a datagram written by this module with one under `key` (the uplink
/// switching network keys with datagrams queued).
pub fn retag(datagram: &mut Vec<u8>, key: &NetworkKey) {
    if datagram.len() >= HEADER_LEN + TAG_LEN {
        datagram.truncate(datagram.len() - TAG_LEN);
        seal(datagram, key);
    }
}

/// Writes a NETWORK KEY datagram carrying a canonical signed next network key.
pub fn write_network_key(out: &mut Vec<u8>, key: &NetworkKey, signed_next_network_key: &[u8]) {
    begin(out, PacketType::NetworkKey, 0);
    out.extend_from_slice(signed_next_network_key);
    seal(out, key);
}

/// Writes a ROUND datagram: the end of round `round` of symbols for `object_id`.
pub fn write_round(out: &mut Vec<u8>, key: &NetworkKey, object_id: u64, round: u32) {
    begin(out, PacketType::Round, object_id);
    out.extend_from_slice(&round.to_be_bytes());
    seal(out, key);
}

/// The signed part of a SYMBOL LIST body: signer serial, sequence, round (None:
/// [`SYMBOL_LIST_NO_ROUND`]), the certificate flag and certificate (canonical bytes,
/// [`SYMBOL_LIST_CERTIFICATE_LEN`]), range count and the ranges. At most
/// [`SYMBOL_LIST_RANGES_MAX`] ranges and [`SYMBOL_LIST_SYMBOLS_MAX`] symbols are written; the
/// caller keeps within them.
pub fn symbol_list_signed_part(
    signer_serial: u64,
    sequence: u64,
    round: Option<u32>,
    certificate: Option<&[u8]>,
    ranges: &[SymbolRange],
) -> Vec<u8> {
    let ranges = &ranges[..ranges.len().min(SYMBOL_LIST_RANGES_MAX)];
    let mut body = Vec::with_capacity(
        SYMBOL_LIST_HEADER_LEN + ranges.iter().map(|r| SYMBOL_RANGE_HEADER_LEN + r.hashes.len() * SYMBOL_HASH_LEN).sum::<usize>(),
    );
    body.extend_from_slice(&signer_serial.to_be_bytes());
    body.extend_from_slice(&sequence.to_be_bytes());
    body.extend_from_slice(&round.unwrap_or(SYMBOL_LIST_NO_ROUND).to_be_bytes());
    match certificate {
        Some(certificate) => {
            body.push(1);
            let mut fixed = [0u8; SYMBOL_LIST_CERTIFICATE_LEN];
            let n = certificate.len().min(SYMBOL_LIST_CERTIFICATE_LEN);
            fixed[..n].copy_from_slice(&certificate[..n]);
            body.extend_from_slice(&fixed);
        }
        None => body.push(0),
    }
    body.push(ranges.len() as u8);
    for range in ranges {
        let hashes = &range.hashes[..range.hashes.len().min(SYMBOL_RANGE_SYMBOLS_MAX)];
        body.extend_from_slice(&payload_id(range.sbn, range.first_esi).to_be_bytes());
        body.push(hashes.len() as u8);
        for hash in hashes {
            body.extend_from_slice(hash);
        }
    }
    body
}

/// Writes a SYMBOL LIST datagram: `signed_part` from [`symbol_list_signed_part`] and its
/// signature (see [`crate::trust::SigningKey::sign_symbol_list`]).
pub fn write_symbol_list(out: &mut Vec<u8>, key: &NetworkKey, object_id: u64, signed_part: &[u8], signature: &[u8; 64]) {
    begin(out, PacketType::SymbolList, object_id);
    out.extend_from_slice(signed_part);
    out.extend_from_slice(signature);
    seal(out, key);
}

/// A whole SYMBOL LIST datagram of `object_id` naming `symbols` (sbn, esi, symbol) and
/// `round`'s marker, signed by `signer`, with its certificate: what the uplink airs before
/// them.
pub fn symbol_list_datagram(
    key: &NetworkKey,
    signer: &crate::trust::SigningKey,
    object_id: u64,
    sequence: u64,
    round: Option<u32>,
    symbols: &[(u8, u32, &[u8])],
) -> Vec<u8> {
    let mut ranges = Vec::new();
    for (sbn, esi, symbol) in symbols {
        add_to_ranges(&mut ranges, *sbn, *esi, symbol_hash(symbol));
    }
    let certificate = signer.certificate().to_bytes();
    let signed = symbol_list_signed_part(signer.serial(), sequence, round, Some(&certificate), &ranges);
    let signature = signer.sign_symbol_list(object_id, &signed);
    let mut out = Vec::new();
    write_symbol_list(&mut out, key, object_id, &signed, &signature);
    out
}

/// The digest that names one signed manifest in its fragments.
pub fn manifest_digest(signed_manifest: &[u8]) -> [u8; 8] {
    let mut digest = [0u8; 8];
    digest.copy_from_slice(&blake3::hash(signed_manifest).as_bytes()[..8]);
    digest
}

/// Splits a signed manifest into fragments that each fit a datagram of `datagram_bytes_max`.
pub fn manifest_fragments(signed_manifest: &[u8], datagram_bytes_max: usize) -> Vec<ManifestFragment<'_>> {
    let digest = manifest_digest(signed_manifest);
    let room = datagram_bytes_max.saturating_sub(HEADER_LEN + FRAGMENT_HEADER_LEN + TAG_LEN).max(1);
    let total_len = signed_manifest.len() as u32;
    signed_manifest
        .chunks(room)
        .enumerate()
        .map(|(i, bytes)| ManifestFragment { digest, total_len, offset: (i * room) as u32, bytes })
        .collect()
}

/// The largest symbol size, a multiple of 4 (the RFC 6330 alignment satcast uses), whose
/// DATA datagram fits an IPv4 packet of `mtu` bytes. None if the MTU is too small to be useful.
pub fn symbol_size_for_mtu(mtu: u16) -> Option<u16> {
    let room = usize::from(mtu).checked_sub(IP_UDP_HEADER_BYTES + HEADER_LEN + PAYLOAD_ID_LEN + TAG_LEN)?;
    let symbol = room / 4 * 4;
    (symbol >= 64).then_some(symbol as u16)
}

/// Bytes a DATA datagram with a symbol of `symbol_size` costs on the carrier, IP and UDP included.
pub fn data_bytes_on_air(symbol_size: usize) -> usize {
    IP_UDP_HEADER_BYTES + HEADER_LEN + PAYLOAD_ID_LEN + symbol_size + TAG_LEN
}

/// The most fragments one signed manifest may be cut into. The smallest useful MTU (126
/// bytes: 52 manifest bytes per fragment) cuts the largest signed manifest into 1267.
pub const MANIFEST_FRAGMENTS_MAX: usize = 2048;
/// Candidate manifests held at once, over all object ids, digests and layouts. Garbage
/// that never completes is evicted oldest first, so a genuine manifest's first fragment
/// survives this many garbage candidates before its next fragment arrives (a genuine
/// manifest's fragments are aired back to back).
pub const ASSEMBLIES_MAX: usize = 1024;
/// Fragment bytes held by all candidates together.
pub const ASSEMBLY_BYTES_MAX: usize = 8 << 20;
/// Distinct contents kept for one fragment place of one candidate. Fragments with the same
/// digest, total length and offset but other bytes can only be forgeries (the digest names
/// the bytes), yet a forgery that arrives first must not shut out the genuine copy.
pub const FRAGMENT_VARIANTS_MAX: usize = 2;
/// Contested places (holding two contents) whose choices are tried when every place is
/// filled: at most 2^this digest checks for a first attempt, half as many for a later one.
pub const CONTESTED_TRIED_MAX: usize = 3;
/// Digest attempts one candidate gets: the first when its last place fills, then one each
/// time a place gains a second content. Each costs a hash of the whole manifest per choice,
/// so a forger must keep sending to keep a failed candidate costing work, and after this
/// many the candidate is dropped (the next airing starts it again).
pub const ASSEMBLY_ATTEMPTS_MAX: u8 = 1 + CONTESTED_TRIED_MAX as u8;

/// Why the assembler refused a fragment (or an assembly). Each says what only a holder of
/// the network key who is not the uplink could have sent; the text is the same for every
/// occurrence, so a receiver's drop log can count them under one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FragmentRefusal {
    /// Bytes outside the declared total length, or none (a fragment built without `parse`).
    #[error("it does not fit its declared length")]
    OutOfBounds,
    /// A fragment that is not the last one of its manifest starts at an offset that is not
    /// a multiple of its length: no sender cuts a manifest that way.
    #[error("its offset is not a multiple of its length")]
    Misaligned,
    /// The layout would cut the manifest into more than [`MANIFEST_FRAGMENTS_MAX`] fragments.
    #[error("its layout needs more than {max} fragments", max = MANIFEST_FRAGMENTS_MAX)]
    TooManyFragments,
    /// Other bytes for a place that already holds [`FRAGMENT_VARIANTS_MAX`] contents.
    #[error("its place already holds other contents")]
    Conflicting,
    /// Every place is filled, but no choice of their contents matches the digest.
    #[error("the reassembled manifest does not match its digest")]
    DigestMismatch,
}

/// Counters of a [`ManifestAssembler`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AssemblyStats {
    /// Fragments offered.
    pub fragments: u64,
    /// Fragments whose bytes a candidate already held (the carousel re-airs every fragment).
    pub duplicates: u64,
    /// Fragments with other bytes for a place already filled (second contents kept or not).
    pub conflicts: u64,
    /// Fragments refused for their shape ([`FragmentRefusal::OutOfBounds`], `Misaligned`,
    /// `TooManyFragments`).
    pub refused: u64,
    /// Candidates dropped to stay within [`ASSEMBLIES_MAX`] and [`ASSEMBLY_BYTES_MAX`].
    pub evicted: u64,
    /// Assemblies (or single fragments) that did not match their digest.
    pub digest_failures: u64,
    /// Signed manifests returned.
    pub completed: u64,
}

/// Which manifest a fragment claims to belong to, and how that manifest was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    object_id: u64,
    digest: [u8; 8],
    total_len: u32,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    /// Cut into fragments of this many bytes, the last one shorter or equal.
    Stride(u32),
    /// Only a last fragment, starting at this offset, has arrived: it joins the layout
    /// whose last fragment starts there as soon as a fragment of that layout arrives.
    Tail(u32),
}

/// Where a content lives in a candidate's `data`: (start, length).
type Variant = Option<(u32, u32)>;

/// One candidate manifest: the contents received for each place, appended to `data` in
/// arrival order (no buffer of the declared total is allocated for a fragment that may be
/// garbage).
#[derive(Debug)]
struct Candidate {
    /// Admission order: among candidates with one place filled, the oldest is evicted first.
    seq: u64,
    /// Digest attempts that failed (at most [`ASSEMBLY_ATTEMPTS_MAX`]).
    attempts: u8,
    /// Place index (offset / stride; 0 for a [`Shape::Tail`]) to its contents, first arrived first.
    places: BTreeMap<u16, [Variant; FRAGMENT_VARIANTS_MAX]>,
    data: Vec<u8>,
}

enum Put {
    New,
    Duplicate,
    /// Kept as the place's content number .0.
    Kept(usize),
    Full,
}

impl Candidate {
    /// Garbage of one fragment, or a candidate that failed its digest: evicted first.
    fn evictable_early(&self) -> bool {
        self.places.len() <= 1 || self.attempts > 0
    }

    fn bytes(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.data[start as usize..start as usize + len as usize]
    }

    fn put(&mut self, place: u16, bytes: &[u8]) -> Put {
        let Candidate { places, data, .. } = self;
        let variants = places.entry(place).or_insert([None; FRAGMENT_VARIANTS_MAX]);
        let mut free = None;
        for (i, variant) in variants.iter().enumerate() {
            match *variant {
                Some((start, len)) if &data[start as usize..start as usize + len as usize] == bytes => return Put::Duplicate,
                Some(_) => {}
                None => {
                    free = Some(i);
                    break;
                }
            }
        }
        let Some(i) = free else { return Put::Full };
        variants[i] = Some((data.len() as u32, bytes.len() as u32));
        data.extend_from_slice(bytes);
        if i == 0 { Put::New } else { Put::Kept(i) }
    }

    /// The signed manifest, if some choice of contents matches the digest. The choices: for
    /// `only` (a place that just gained a content, after a failed attempt) that content; for
    /// the first [`CONTESTED_TRIED_MAX`] other contested places, either content (those
    /// choices were tried before without it).
    fn assemble(&self, total_len: u32, digest: &[u8; 8], only: Option<(u16, usize)>) -> Option<Vec<u8>> {
        let room = CONTESTED_TRIED_MAX - usize::from(only.is_some());
        let contested: Vec<u16> = self
            .places
            .iter()
            .filter(|(place, v)| v[1].is_some() && only.is_none_or(|(p, _)| p != **place))
            .map(|(place, _)| *place)
            .take(room)
            .collect();
        let mut out = Vec::with_capacity(total_len as usize);
        for choice in 0u32..(1 << contested.len()) {
            out.clear();
            for (place, variants) in &self.places {
                let pick = match only {
                    Some((p, pick)) if p == *place => pick,
                    _ => contested.iter().position(|c| c == place).map_or(0, |bit| (choice >> bit) & 1) as usize,
                };
                if let Some(variant) = variants[pick].or(variants[0]) {
                    out.extend_from_slice(self.bytes(variant));
                }
            }
            if out.len() == total_len as usize && manifest_digest(&out) == *digest {
                return Some(out);
            }
        }
        None
    }
}

/// Signed manifests being put back together from fragments. The work per fragment is a hash
/// lookup, a B-tree step and a copy of its bytes; the state is bounded by [`ASSEMBLIES_MAX`]
/// candidates and [`ASSEMBLY_BYTES_MAX`] bytes. Candidates are kept apart by object id,
/// digest, total length and fragment size, so garbage from a holder of the network key
/// cannot write into the genuine manifest's assembly, and garbage that never completes is
/// evicted before anything that has received two fragments (docs/protocol.md 6.1).
#[derive(Debug, Default)]
pub struct ManifestAssembler {
    candidates: HashMap<Key, Candidate>,
    /// The fragment sizes with a candidate, per (object id, digest, total length): where a
    /// last fragment, whose size does not tell the layout, is offered.
    strides: HashMap<(u64, [u8; 8], u32), Vec<u32>>,
    /// Candidates admitted with one fragment, oldest first; entries of candidates since
    /// removed or grown are skipped when met.
    fresh: VecDeque<(Key, u64)>,
    bytes: usize,
    next_seq: u64,
    stats: AssemblyStats,
    refusal: Option<FragmentRefusal>,
}

impl ManifestAssembler {
    /// Adds one fragment; returns the whole signed manifest once every place of its layout
    /// is filled and the bytes match its digest. Any input is safe: a fragment that does not
    /// fit is refused ([`ManifestAssembler::take_refusal`] says why).
    pub fn add(&mut self, object_id: u64, fragment: &ManifestFragment<'_>) -> Option<Vec<u8>> {
        self.stats.fragments += 1;
        self.refusal = None;
        let (total, offset) = (fragment.total_len, fragment.offset);
        let len = u32::try_from(fragment.bytes.len()).unwrap_or(u32::MAX);
        let end = u64::from(offset) + u64::from(len);
        if len == 0 || end > u64::from(total) || total > SIGNED_MANIFEST_BYTES_MAX {
            return self.refuse(FragmentRefusal::OutOfBounds);
        }
        if offset == 0 && len == total {
            if manifest_digest(fragment.bytes) == fragment.digest {
                self.stats.completed += 1;
                return Some(fragment.bytes.to_vec());
            }
            self.stats.digest_failures += 1;
            self.refusal = Some(FragmentRefusal::DigestMismatch);
            return None;
        }
        let manifest = (object_id, fragment.digest, total);
        let key = |shape| Key { object_id, digest: fragment.digest, total_len: total, shape };
        if end < u64::from(total) {
            // Not the last fragment: its length is the size of every fragment but the last.
            if offset % len != 0 {
                return self.refuse(FragmentRefusal::Misaligned);
            }
            let count = total.div_ceil(len);
            if count as usize > MANIFEST_FRAGMENTS_MAX {
                return self.refuse(FragmentRefusal::TooManyFragments);
            }
            let this = key(Shape::Stride(len));
            if !self.candidates.contains_key(&this) {
                self.admit(this);
                // A last fragment that came first joins the layout that ends with it (it
                // stays held as well: other layouts may end there too).
                let tails: Vec<Vec<u8>> = self
                    .candidates
                    .get(&key(Shape::Tail((count - 1) * len)))
                    .and_then(|tail| Some(tail.places.get(&0)?.iter().flatten().map(|v| tail.bytes(*v).to_vec()).collect()))
                    .unwrap_or_default();
                for bytes in &tails {
                    self.put(this, (count - 1) as u16, bytes);
                }
            }
            return self.put(this, (offset / len) as u16, fragment.bytes);
        }
        // The last fragment, whose length does not tell the layout: held on its own for a
        // layout that has not shown itself yet, and put into every layout of this manifest
        // that ends with it.
        let tail = key(Shape::Tail(offset));
        if !self.candidates.contains_key(&tail) {
            self.admit(tail);
        }
        self.put(tail, 0, fragment.bytes);
        for stride in self.strides.get(&manifest).cloned().unwrap_or_default() {
            let count = total.div_ceil(stride);
            if (count - 1) * stride == offset {
                if let Some(done) = self.put(key(Shape::Stride(stride)), (count - 1) as u16, fragment.bytes) {
                    return Some(done);
                }
            }
        }
        None
    }

    /// Why the last [`ManifestAssembler::add`] refused its fragment or assembly, once.
    pub fn take_refusal(&mut self) -> Option<FragmentRefusal> {
        self.refusal.take()
    }

    /// The counters so far.
    pub fn stats(&self) -> AssemblyStats {
        self.stats
    }

    /// Candidates held now (at most [`ASSEMBLIES_MAX`]).
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// Fragment bytes held now (at most [`ASSEMBLY_BYTES_MAX`]).
    pub fn bytes_held(&self) -> usize {
        self.bytes
    }

    fn refuse(&mut self, refusal: FragmentRefusal) -> Option<Vec<u8>> {
        self.stats.refused += 1;
        self.refusal = Some(refusal);
        None
    }

    fn admit(&mut self, key: Key) {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.candidates.insert(key, Candidate { seq, attempts: 0, places: BTreeMap::new(), data: Vec::new() });
        if let Shape::Stride(stride) = key.shape {
            self.strides.entry((key.object_id, key.digest, key.total_len)).or_default().push(stride);
        }
        self.fresh.push_back((key, seq));
        if self.fresh.len() > 2 * ASSEMBLIES_MAX {
            // Mostly entries of candidates completed or grown since: keep the queue bounded.
            let candidates = &self.candidates;
            self.fresh.retain(|(key, seq)| candidates.get(key).is_some_and(|c| c.seq == *seq && c.evictable_early()));
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Candidate> {
        let candidate = self.candidates.remove(key)?;
        self.bytes -= candidate.data.len();
        if let Shape::Stride(stride) = key.shape {
            let manifest = (key.object_id, key.digest, key.total_len);
            if let Some(strides) = self.strides.get_mut(&manifest) {
                strides.retain(|s| *s != stride);
                if strides.is_empty() {
                    self.strides.remove(&manifest);
                }
            }
        }
        Some(candidate)
    }

    /// Puts `bytes` at `place` of the candidate `key`, then completes it or makes room.
    fn put(&mut self, key: Key, place: u16, bytes: &[u8]) -> Option<Vec<u8>> {
        let candidate = self.candidates.get_mut(&key)?;
        let held = candidate.data.len();
        let only = match candidate.put(place, bytes) {
            Put::Duplicate => {
                self.stats.duplicates += 1;
                return None;
            }
            Put::Full => {
                self.stats.conflicts += 1;
                self.refusal = Some(FragmentRefusal::Conflicting);
                if candidate.attempts > 0 {
                    // Every place filled, no choice matched, and here is a third content: the
                    // two held for this place may both be forgeries. Start again.
                    self.remove(&key);
                }
                return None;
            }
            Put::Kept(pick) => {
                self.stats.conflicts += 1;
                // A second content for a failed candidate is worth another attempt.
                (candidate.attempts > 0).then_some((place, pick))
            }
            Put::New => None,
        };
        self.bytes += candidate.data.len() - held;
        let complete = match key.shape {
            Shape::Stride(stride) => candidate.places.len() == key.total_len.div_ceil(stride) as usize,
            Shape::Tail(_) => false,
        };
        if !complete {
            self.make_room(key);
            return None;
        }
        if let Some(done) = candidate.assemble(key.total_len, &key.digest, only) {
            self.remove(&key);
            if let Shape::Stride(stride) = key.shape {
                // Its last fragment, held on its own too, is of no more use.
                let last = (key.total_len.div_ceil(stride) - 1) * stride;
                self.remove(&Key { shape: Shape::Tail(last), ..key });
            }
            self.stats.completed += 1;
            return Some(done);
        }
        self.stats.digest_failures += 1;
        self.refusal = Some(FragmentRefusal::DigestMismatch);
        candidate.attempts += 1;
        if candidate.attempts >= ASSEMBLY_ATTEMPTS_MAX {
            self.remove(&key);
        } else {
            // Kept, not remembered as bad: a forgery may have filled a place whose genuine
            // copy had not come yet, and the genuine copy then gets its attempt. Until then
            // it is evicted as early as garbage of one fragment.
            let seq = candidate.seq;
            self.fresh.push_back((key, seq));
            self.make_room(key);
        }
        None
    }

    /// Evicts candidates until the bounds hold, never `keep` (the one just grown): first
    /// the oldest with one fragment, and only when there is none, the one with the fewest
    /// fragments (the oldest among equals).
    fn make_room(&mut self, keep: Key) {
        while self.candidates.len() > ASSEMBLIES_MAX || self.bytes > ASSEMBLY_BYTES_MAX {
            let mut victim = None;
            let mut kept = None;
            while let Some((key, seq)) = self.fresh.pop_front() {
                let current = self.candidates.get(&key).is_some_and(|c| c.seq == seq && c.evictable_early());
                if current && key == keep {
                    kept = Some((key, seq));
                } else if current {
                    victim = Some(key);
                    break;
                }
            }
            if let Some(entry) = kept {
                self.fresh.push_front(entry);
            }
            let victim = victim.or_else(|| {
                self.candidates.iter().filter(|(key, _)| **key != keep).min_by_key(|(_, c)| (c.places.len(), c.seq)).map(|(key, _)| *key)
            });
            let Some(victim) = victim else { return };
            self.remove(&victim);
            self.stats.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: NetworkKey = NetworkKey([7; 32]);

    #[test]
    fn data_roundtrip() {
        let mut buf = Vec::new();
        write_data(&mut buf, &KEY, 42, 3, 0x00AB_CDEF, b"symbol");
        let parsed = parse(&buf, &KEY).expect("parses");
        assert_eq!(parsed.object_id, 42);
        assert_eq!(parsed.body, Body::Data { sbn: 3, esi: 0x00AB_CDEF, symbol: b"symbol" });
    }

    #[test]
    fn wrong_key_is_a_bad_tag() {
        let mut buf = Vec::new();
        write_heartbeat(&mut buf, &KEY, b"hb");
        assert_eq!(parse(&buf, &NetworkKey([8; 32])), Err(WireError::Tag));
    }

    #[test]
    fn fragments_reassemble_in_any_order() {
        let manifest: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut fragments = manifest_fragments(&manifest, 1200);
        assert!(fragments.len() > 4);
        fragments.reverse();
        let mut assembler = ManifestAssembler::default();
        let mut done = None;
        for fragment in &fragments {
            done = assembler.add(9, fragment);
        }
        assert_eq!(done.as_deref(), Some(manifest.as_slice()));
    }

    /// A stand-in for a signed manifest of `len` bytes.
    fn signed_manifest(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// A small deterministic generator for forgeries (xorshift64; the seed is fixed, so a
    /// failure replays as is).
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn a_forgery_before_each_airing_does_not_starve_a_late_joiner() {
        // The county joins during an airing (it hears the last fragments), and before each
        // later airing an insider sends one fragment under the genuine digest that covers all
        // but the first byte. The old range-merging assembler then completed on the airing's
        // first fragment, failed the digest, dropped everything and started over with the
        // airing's other fragments: it never assembled the manifest.
        let signed = signed_manifest(6000);
        let fragments = manifest_fragments(&signed, 1472);
        assert!(fragments.len() >= 4);
        let junk = vec![0xEE; signed.len()];
        let forgery = ManifestFragment { digest: fragments[0].digest, total_len: 6000, offset: 1, bytes: &junk[1..] };
        let mut assembler = ManifestAssembler::default();
        let mut done = None;
        for fragment in &fragments[2..] {
            done = done.or(assembler.add(5, fragment));
        }
        let mut airings = 0;
        while done.is_none() && airings < 10 {
            airings += 1;
            done = assembler.add(5, &forgery);
            for fragment in &fragments {
                done = done.or(assembler.add(5, fragment));
            }
        }
        assert_eq!(done.as_deref(), Some(signed.as_slice()), "not assembled after {airings} airings");
        assert_eq!(airings, 1);
    }

    #[test]
    fn a_forged_copy_of_a_genuine_fragment_that_comes_first_does_not_shut_out_the_genuine() {
        // Same digest, same place, other bytes, before every airing: the genuine copy is kept
        // beside it and the digest picks.
        let signed = signed_manifest(6000);
        let fragments = manifest_fragments(&signed, 1472);
        let junk = vec![0xEE; fragments[0].bytes.len()];
        let forgery = ManifestFragment { bytes: &junk, ..fragments[0].clone() };
        let mut assembler = ManifestAssembler::default();
        for fragment in &fragments[2..] {
            assert_eq!(assembler.add(5, fragment), None);
        }
        assert_eq!(assembler.add(5, &forgery), None);
        let mut done = None;
        for fragment in &fragments {
            done = done.or(assembler.add(5, fragment));
        }
        assert_eq!(done.as_deref(), Some(signed.as_slice()));
        assert_eq!(assembler.stats().conflicts, 1);
    }

    #[test]
    fn a_flood_of_forged_fragments_does_not_evict_the_genuine_assembly() {
        // 500 forgeries for the same object between two genuine fragments, each a candidate
        // of its own (random digest, length and layout): the old assembler kept 16 and lost
        // the genuine one.
        let signed = signed_manifest(6000);
        let fragments = manifest_fragments(&signed, 1472);
        let junk = vec![0x5A; 1400];
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let mut assembler = ManifestAssembler::default();
        let mut done = None;
        for fragment in &fragments {
            for _ in 0..500 {
                let stride = 100 + (next(&mut state) % 1300) as u32;
                let total = stride * (2 + (next(&mut state) % 40) as u32);
                let offset = stride * (next(&mut state) % u64::from(total / stride - 1)) as u32;
                let digest = next(&mut state).to_be_bytes();
                let forged = ManifestFragment { digest, total_len: total, offset, bytes: &junk[..stride as usize] };
                assert_eq!(assembler.add(5, &forged), None);
            }
            done = done.or(assembler.add(5, fragment));
        }
        assert_eq!(done.as_deref(), Some(signed.as_slice()));
    }

    #[test]
    fn state_stays_bounded_and_a_genuine_manifest_still_assembles_after_a_flood() {
        let signed = signed_manifest(20_000);
        let fragments = manifest_fragments(&signed, 1472);
        let junk = vec![0x33; 60_000];
        let mut state = 0x2545_F491_4F6C_DD1D;
        let mut assembler = ManifestAssembler::default();
        for i in 0..20_000u64 {
            // Large fragments of many layouts, and 1-byte overlapping pieces of the genuine one.
            let forged = if i % 2 == 0 {
                let stride = 30_000 + (next(&mut state) % 2) as u32;
                ManifestFragment { digest: next(&mut state).to_be_bytes(), total_len: 65_000, offset: 0, bytes: &junk[..stride as usize] }
            } else {
                let offset = (next(&mut state) % 19_999) as u32;
                ManifestFragment { digest: fragments[0].digest, total_len: 20_000, offset, bytes: &junk[..1] }
            };
            assert_eq!(assembler.add(i, &forged), None);
            assert!(assembler.candidates() <= ASSEMBLIES_MAX);
            assert!(assembler.bytes_held() <= ASSEMBLY_BYTES_MAX);
        }
        assert!(assembler.stats().evicted > 0);
        assert!(assembler.stats().refused >= 9_000, "{:?}", assembler.stats());
        let mut done = None;
        for fragment in fragments.iter().rev() {
            done = done.or(assembler.add(7, fragment));
        }
        assert_eq!(done.as_deref(), Some(signed.as_slice()));
    }

    #[test]
    fn repeated_airings_cost_a_counter() {
        let signed = signed_manifest(6000);
        let fragments = manifest_fragments(&signed, 1472);
        let mut assembler = ManifestAssembler::default();
        for _ in 0..3 {
            for fragment in &fragments[1..] {
                assert_eq!(assembler.add(5, fragment), None);
            }
        }
        // Each place held once, and the last fragment also on its own (until its layout completes).
        let last = fragments[fragments.len() - 1].bytes.len();
        assert_eq!(assembler.bytes_held(), signed.len() - fragments[0].bytes.len() + last);
        assert_eq!(assembler.stats().duplicates, 2 * fragments.len() as u64, "the last fragment counts twice");
        assert_eq!(assembler.take_refusal(), None);
        assert_eq!(assembler.add(5, &fragments[0]).as_deref(), Some(signed.as_slice()));
        assert_eq!((assembler.candidates(), assembler.bytes_held()), (0, 0));
    }

    #[test]
    fn refusals_name_the_forgery() {
        let signed = signed_manifest(6000);
        let fragments = manifest_fragments(&signed, 1472);
        let digest = fragments[0].digest;
        let mut assembler = ManifestAssembler::default();
        let bytes = [1u8; 100];
        let misaligned = ManifestFragment { digest, total_len: 6000, offset: 150, bytes: &bytes };
        assert_eq!(assembler.add(5, &misaligned), None);
        assert_eq!(assembler.take_refusal(), Some(FragmentRefusal::Misaligned));
        let tiny = ManifestFragment { digest, total_len: 6000, offset: 2, bytes: &bytes[..1] };
        assert_eq!(assembler.add(5, &tiny), None);
        assert_eq!(assembler.take_refusal(), Some(FragmentRefusal::TooManyFragments));
        let single = ManifestFragment { digest, total_len: 100, offset: 0, bytes: &bytes };
        assert_eq!(assembler.add(5, &single), None);
        assert_eq!(assembler.take_refusal(), Some(FragmentRefusal::DigestMismatch));
        let outside = ManifestFragment { digest, total_len: 50, offset: 0, bytes: &bytes };
        assert_eq!(assembler.add(5, &outside), None);
        assert_eq!(assembler.take_refusal(), Some(FragmentRefusal::OutOfBounds));
        // Three contents for one place: the third is refused.
        let (a, b) = (vec![2u8; fragments[1].bytes.len()], vec![3u8; fragments[1].bytes.len()]);
        for bytes in [&a, &b] {
            assert_eq!(assembler.add(5, &ManifestFragment { bytes, ..fragments[1].clone() }), None);
        }
        assert_eq!(assembler.take_refusal(), None);
        assert_eq!(assembler.add(5, &fragments[1]), None);
        assert_eq!(assembler.take_refusal(), Some(FragmentRefusal::Conflicting));
        // Every place filled, neither forgery matches (the second digest failure, after the
        // single fragment above). The genuine copy of that place, refused again, shows that
        // both contents held may be forged: the candidate is dropped, the next airing succeeds.
        let (mut done, mut airings) = (None, 0);
        while done.is_none() && airings < 5 {
            airings += 1;
            for fragment in &fragments {
                done = done.or(assembler.add(5, fragment));
            }
        }
        assert_eq!(done.as_deref(), Some(signed.as_slice()));
        assert_eq!((airings, assembler.stats().digest_failures), (3, 2));
    }

    #[test]
    fn symbol_size_for_standard_mtu() {
        assert_eq!(symbol_size_for_mtu(1500), Some(1436));
        assert_eq!(data_bytes_on_air(1436), 1498);
        assert_eq!(symbol_size_for_mtu(60), None);
    }
}
