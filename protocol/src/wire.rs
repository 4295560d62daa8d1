//! The datagram format: framing, the keyed-BLAKE3 tag, and the DATA, MANIFEST and
//! HEARTBEAT bodies. docs/protocol.md describes the same layout byte by byte.
//!
//! Every datagram, all integers big endian:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "SCST"
//! 4       1     version (1)
//! 5       1     type (1 DATA, 2 MANIFEST, 3 HEARTBEAT, 4 ROUND, 5 REVOCATION)
//! 6       8     object id (0 in HEARTBEAT)
//! 14      n     body
//! 14+n    16    tag: first 16 bytes of BLAKE3 keyed by the network key over bytes 0..14+n
//! ```
//!
//! Parsing checks the length, magic and version, then the tag, and only then looks at the
//! body: a sender without the network key cannot reach the body parsers or the decoder.

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
}

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
    /// The end of a round of symbols for the object: round 0 is the first pass.
    Round {
        /// The round that just ended.
        round: u32,
    },
}

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

/// Writes a ROUND datagram: the end of round `round` of symbols for `object_id`.
pub fn write_round(out: &mut Vec<u8>, key: &NetworkKey, object_id: u64, round: u32) {
    begin(out, PacketType::Round, object_id);
    out.extend_from_slice(&round.to_be_bytes());
    seal(out, key);
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

/// Pending signed manifests being put back together from fragments, bounded in count and bytes.
#[derive(Debug, Default)]
pub struct ManifestAssembler {
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    object_id: u64,
    digest: [u8; 8],
    bytes: Vec<u8>,
    /// Which byte ranges have arrived, as (offset, len), merged lazily.
    received: Vec<(u32, u32)>,
}

/// The most manifests reassembled at once; the oldest is dropped beyond this.
pub const PENDING_MANIFESTS_MAX: usize = 16;

impl ManifestAssembler {
    /// Adds one fragment; returns the whole signed manifest once every byte has arrived and
    /// its digest matches.
    pub fn add(&mut self, object_id: u64, fragment: &ManifestFragment<'_>) -> Option<Vec<u8>> {
        if fragment.offset == 0 && fragment.bytes.len() as u64 == u64::from(fragment.total_len) {
            return (manifest_digest(fragment.bytes) == fragment.digest).then(|| fragment.bytes.to_vec());
        }
        let index = match self
            .pending
            .iter()
            .position(|p| p.object_id == object_id && p.digest == fragment.digest && p.bytes.len() == fragment.total_len as usize)
        {
            Some(index) => index,
            None => {
                if self.pending.len() >= PENDING_MANIFESTS_MAX {
                    self.pending.remove(0);
                }
                self.pending.push(Pending {
                    object_id,
                    digest: fragment.digest,
                    bytes: vec![0; fragment.total_len as usize],
                    received: Vec::new(),
                });
                self.pending.len() - 1
            }
        };
        let pending = &mut self.pending[index];
        let start = fragment.offset as usize;
        pending.bytes[start..start + fragment.bytes.len()].copy_from_slice(fragment.bytes);
        pending.received.push((fragment.offset, fragment.bytes.len() as u32));
        if !covers(&mut pending.received, fragment.total_len) {
            return None;
        }
        let done = self.pending.remove(index);
        (manifest_digest(&done.bytes) == done.digest).then_some(done.bytes)
    }
}

/// Sorts and merges the ranges; true when they cover 0..total.
fn covers(ranges: &mut Vec<(u32, u32)>, total: u32) -> bool {
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for &(offset, len) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if offset <= last.0 + last.1 => last.1 = last.1.max(offset + len - last.0),
            _ => merged.push((offset, len)),
        }
    }
    *ranges = merged;
    matches!(ranges.as_slice(), [(0, len)] if *len >= total)
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

    #[test]
    fn symbol_size_for_standard_mtu() {
        assert_eq!(symbol_size_for_mtu(1500), Some(1436));
        assert_eq!(data_bytes_on_air(1436), 1498);
        assert_eq!(symbol_size_for_mtu(60), None);
    }
}
