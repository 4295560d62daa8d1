//! The fuzz targets for the parsers of satcast-protocol, as plain functions of `&[u8]`.
//!
//! This one file is compiled twice: into the cargo-fuzz crate (`fuzz/src/lib.rs`, where each
//! `fuzz/fuzz_targets/<name>.rs` calls one function here under libFuzzer), and into
//! `protocol/tests/fuzz_regressions.rs` (by `#[path]`), which replays every file under
//! `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` through the same function with plain
//! `cargo test` on stable. So it may only use what satcast-protocol's tests can use:
//! satcast_protocol, blake3, ed25519_dalek and std.
//!
//! Every function must return normally for every input. A panic is a bug: either in the
//! code under test (a parser panicked, or broke one of the properties asserted here), or in
//! this harness. Structured targets read their input with [`Input`], which yields zeros once
//! the bytes run out, so every input means something.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ed25519_dalek::Signer as _;
use satcast_protocol::fec::{self, BlockEncoder, FecError, Oti};
use satcast_protocol::feedback::Feedback;
use satcast_protocol::key_tree::{self, CountySecret, KeyRing, Node, SignedKeyWraps};
use satcast_protocol::manifest::{self, Compression, Delivered, Kind, Manifest};
use satcast_protocol::network_key::{self, SignedNextNetworkKey};
use satcast_protocol::reception::{self, Fidelity, MemoryStore, Reception, ReceptionConfig, ReceptionEvent};
use satcast_protocol::storage;
use satcast_protocol::trust::{
    self, Accepted, Heartbeat, KeyCertificate, NetworkKey, Revocation, RootKey, RootPublicKey, SignedHeartbeat, SignedManifest,
    SignedRevocation, SigningKey,
};
use satcast_protocol::wire::{self, Body, Datagram, ManifestAssembler};

/// A fuzz target: its name and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every protocol target, by the name of its `fuzz/fuzz_targets/<name>.rs`, corpus and
/// regressions directory.
pub const TARGETS: &[Target] = &[
    ("wire_parse", wire_parse),
    ("wire_sealed", wire_sealed),
    ("manifest", manifest),
    ("parse_targets", parse_targets),
    ("signed_manifest", signed_manifest),
    ("revocation", revocation),
    ("key_wraps", key_wraps),
    ("network_key", network_key),
    ("certificate", certificate),
    ("heartbeat", heartbeat),
    ("key_text", key_text),
    ("feedback", feedback),
    ("oti", oti),
    ("fec_decode", fec_decode),
    ("reception", reception),
];

// ---- Fixed inputs: those of docs/protocol.md section 12, so its vectors are valid seeds. ----

/// The receiver clock every verification uses (docs/protocol.md 12.1).
pub const NOW_UNIX_SECS: u64 = 1_750_000_000;
/// The receiver's division code (docs/protocol.md 12.1).
pub const COUNTY_CODE: &str = "410102";
/// Validity of the signing key's certificate (docs/protocol.md 12.1).
pub const CERT_NOT_BEFORE: u64 = 1_735_689_600;
/// Validity of the signing key's certificate (docs/protocol.md 12.1).
pub const CERT_NOT_AFTER: u64 = 1_767_225_599;

/// The payload of docs/protocol.md 12.1.
pub const VECTOR_PAYLOAD: &[u8; 70] = b"satcast test vector payload: 70 bytes, two source blocks (3+2 symbols)";

/// The manifest of docs/protocol.md 12.6, signed in 12.7 by the fixed signing key.
pub fn vector_manifest() -> Manifest {
    let oti = Oti::new_for_object(VECTOR_PAYLOAD.len() as u64, 16, 48).expect("vector oti");
    Manifest {
        object_id: 0x0123_4567_89ab_cdef,
        kind: Kind::CodeTable,
        name: "divisions.csv".to_owned(),
        version: 7,
        size_bytes: VECTOR_PAYLOAD.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(VECTOR_PAYLOAD).as_bytes(),
        block_hashes: fec::blocks(&oti)
            .iter()
            .map(|b| fec::block_hash(&VECTOR_PAYLOAD[b.offset as usize..(b.offset + b.len) as usize]))
            .collect(),
        targets: vec!["41".to_owned(), "4201".to_owned(), "110101".to_owned()],
        created_unix_secs: 1_750_000_000,
        expires_unix_secs: 1_750_604_800,
    }
}

/// The fixed keys: network key 00..1f, root secret 20..3f, signing secret 40..5f.
pub struct Keys {
    /// The network key every datagram is tagged with.
    pub network: NetworkKey,
    /// The root key, to sign revocation lists.
    pub root: RootKey,
    /// Its public half, pinned by the receivers under test.
    pub root_public: RootPublicKey,
    /// The certified signing key.
    pub signing: SigningKey,
    /// The same signing key as ed25519-dalek's type, to sign raw manifest bytes.
    pub signing_raw: ed25519_dalek::SigningKey,
}

fn pattern(first: u8) -> [u8; 32] {
    std::array::from_fn(|i| first.wrapping_add(i as u8))
}

/// The fixed keys, built once.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let text = |label: &str, bytes: &[u8; 32]| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("{label} {hex}\n")
        };
        let network = NetworkKey::from_text(&text(trust::NETWORK_KEY_LABEL, &pattern(0x00))).expect("network key text");
        let root = RootKey::from_text(&text(trust::ROOT_SECRET_LABEL, &pattern(0x20))).expect("root key text");
        let root_public = root.public();
        let signing_raw = ed25519_dalek::SigningKey::from_bytes(&pattern(0x40));
        let certificate = root.issue(signing_raw.verifying_key().to_bytes(), 1, CERT_NOT_BEFORE, CERT_NOT_AFTER);
        let signing =
            SigningKey::from_text(&text(trust::SIGNING_SECRET_LABEL, &pattern(0x40)), &certificate.to_text()).expect("signing key text");
        Keys { network, root, root_public, signing, signing_raw }
    })
}

/// Appends the keyed-BLAKE3 tag under the fixed network key to `content` (docs/protocol.md
/// section 3), so the fuzzer's bytes get past the tag check.
pub fn seal(content: &[u8]) -> Vec<u8> {
    let hash = blake3::keyed_hash(&keys().network.0, content);
    let mut out = content.to_vec();
    out.extend_from_slice(&hash.as_bytes()[..wire::TAG_LEN]);
    out
}

/// A canonical signed manifest over `manifest_bytes` (whatever they are), signed by the
/// fixed signing key: what a genuine uplink would air if it signed these bytes.
pub fn sign_manifest_bytes(manifest_bytes: &[u8]) -> Vec<u8> {
    let keys = keys();
    let mut message = trust::MANIFEST_CONTEXT.to_vec();
    message.extend_from_slice(manifest_bytes);
    SignedManifest {
        manifest: manifest_bytes.to_vec(),
        certificate: *keys.signing.certificate(),
        signature: keys.signing_raw.sign(&message).to_bytes(),
    }
    .to_bytes()
}

// ---- Reading structured input. ----

/// A reader over fuzz input that never fails: past the end it yields zeros and empty slices.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// One byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&byte, rest)) => {
                self.rest = rest;
                byte
            }
            None => 0,
        }
    }

    /// Two bytes, big endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Four bytes, big endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Eight bytes, big endian.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// A u16 length (reduced modulo `max + 1`) followed by that many bytes.
    pub fn chunk(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.take(n)
    }
}

// ---- Datagrams. ----

/// Checks what a successful parse promises, and that writing the parsed datagram back with
/// the writer of its type gives exactly the bytes that were parsed.
fn check_datagram(bytes: &[u8], datagram: &Datagram<'_>) {
    let key = &keys().network;
    let mut out = Vec::new();
    match &datagram.body {
        Body::Data { sbn, esi, symbol } => {
            assert!(*esi <= wire::ESI_MAX, "esi {esi} above 24 bits");
            assert!(!symbol.is_empty(), "data datagram without a symbol");
            wire::write_data(&mut out, key, datagram.object_id, *sbn, *esi, symbol);
        }
        Body::Manifest(fragment) => {
            assert!(!fragment.bytes.is_empty(), "empty manifest fragment");
            assert!(fragment.total_len <= wire::SIGNED_MANIFEST_BYTES_MAX);
            assert!(u64::from(fragment.offset) + fragment.bytes.len() as u64 <= u64::from(fragment.total_len), "fragment past its total");
            wire::write_manifest_fragment(&mut out, key, datagram.object_id, fragment);
        }
        Body::Heartbeat(signed) => {
            assert_eq!(datagram.object_id, 0, "heartbeat with an object id");
            assert!(!signed.is_empty(), "empty heartbeat");
            wire::write_heartbeat(&mut out, key, signed);
        }
        Body::Round { round } => wire::write_round(&mut out, key, datagram.object_id, *round),
        Body::Revocation(signed) => {
            assert_eq!(datagram.object_id, 0, "revocation with an object id");
            assert!(!signed.is_empty(), "empty revocation");
            wire::write_revocation(&mut out, key, signed);
        }
        Body::KeyWrap(signed) => {
            assert_eq!(datagram.object_id, 0, "key wrap with an object id");
            assert!(!signed.is_empty(), "empty key wrap");
            wire::write_key_wrap(&mut out, key, signed);
        }
        Body::NetworkKey(signed) => {
            assert_eq!(datagram.object_id, 0, "network key with an object id");
            assert!(!signed.is_empty(), "empty network key");
            wire::write_network_key(&mut out, key, signed);
        }
        Body::SymbolList(list) => {
            assert!(list.symbols <= wire::SYMBOL_LIST_SYMBOLS_MAX, "too many symbols");
            assert!(list.symbols > 0 || list.round.is_some(), "a list of nothing");
            assert_eq!(list.entries().count(), list.symbols, "entries and count differ");
            assert_eq!(list.signature.len(), wire::SYMBOL_LIST_SIGNATURE_LEN);
            let signed =
                wire::symbol_list_signed_part(list.signer_serial, list.sequence, list.round, list.certificate, &list.symbol_ranges());
            assert_eq!(signed, list.signed, "list does not re-encode");
            let mut signature = [0u8; 64];
            signature.copy_from_slice(list.signature);
            wire::write_symbol_list(&mut out, key, datagram.object_id, &signed, &signature);
        }
    }
    assert_eq!(out, bytes, "parsed datagram does not write back to the same bytes");
}

/// `wire::parse` of raw bytes under the fixed network key: almost every input stops at the
/// tag; the vector seeds (docs/protocol.md 12) and their tag-preserving mutations get further.
pub fn wire_parse(data: &[u8]) {
    if let Ok(datagram) = wire::parse(data, &keys().network) {
        check_datagram(data, &datagram);
    }
}

/// A sequence of datagrams whose tag is computed over the fuzzer's bytes, so the body parsers
/// and the manifest reassembly are reached. Each datagram: one mode byte (bit 0 clear: the
/// magic and version are prepended, so the fuzzer supplies type, object id and body), a u16
/// length and that many bytes. MANIFEST fragments go into one [`ManifestAssembler`]; a
/// reassembled signed manifest is checked against its digest and length, then verified.
pub fn wire_sealed(data: &[u8]) {
    let mut input = Input::new(data);
    let mut assembler = ManifestAssembler::default();
    let mut content = Vec::new();
    while !input.is_empty() {
        let mode = input.u8();
        content.clear();
        if mode & 1 == 0 {
            content.extend_from_slice(&wire::MAGIC);
            content.push(wire::VERSION);
        }
        content.extend_from_slice(input.chunk(wire::DATAGRAM_BYTES_MAX));
        let sealed = seal(&content);
        let Ok(datagram) = wire::parse(&sealed, &keys().network) else { continue };
        check_datagram(&sealed, &datagram);
        if let Body::Manifest(fragment) = &datagram.body {
            if let Some(signed) = assembler.add(datagram.object_id, fragment) {
                assert_eq!(signed.len(), fragment.total_len as usize, "reassembled length");
                assert_eq!(wire::manifest_digest(&signed), fragment.digest, "reassembled digest");
                let _ = trust::verify_signed(&signed, &keys().root_public, NOW_UNIX_SECS);
            }
        }
    }
}

// ---- Manifests and targets. ----

/// `Manifest::from_bytes`: an accepted input is canonical (re-encodes to itself) and valid.
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = Manifest::from_bytes(data) else { return };
    assert_eq!(manifest.to_bytes(), data, "accepted manifest is not canonical");
    assert!(manifest.validate().is_ok());
    assert!((1..=manifest::BLOCK_HASHES_MAX).contains(&manifest.block_hashes.len()));
    assert!((1..=manifest::TARGETS_MAX).contains(&manifest.targets.len()));
    assert!(manifest.created_unix_secs < manifest.expires_unix_secs);
    let _ = manifest.targets_code(COUNTY_CODE);
    if let Ok(oti) = Oti::decode(&manifest.oti) {
        let _ = fec::blocks(&oti).len() == manifest.block_hashes.len();
    }
}

/// `parse_targets` (and `Kind::from_str`) on operator text: accepted targets are well formed,
/// distinct, at most `TARGETS_MAX`, and parse back the same when printed.
pub fn parse_targets(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<Kind>();
    let Ok(targets) = manifest::parse_targets(&text) else { return };
    assert!((1..=manifest::TARGETS_MAX).contains(&targets.len()), "{} targets", targets.len());
    for (i, target) in targets.iter().enumerate() {
        assert!(matches!(target.len(), 0 | 2 | 4 | 6), "target {target:?}");
        assert!(target.bytes().all(|b| b.is_ascii_digit()), "target {target:?}");
        assert!(!targets[..i].contains(target), "duplicate target {target:?}");
    }
    let printed: Vec<&str> = targets.iter().map(|t| if t.is_empty() { "all" } else { t.as_str() }).collect();
    let again = manifest::parse_targets(&printed.join(",")).expect("printed targets parse");
    assert_eq!(again, targets);
}

// ---- Trust. ----

/// `SignedManifest::from_bytes` + `verify` (+ `check_acceptance`) on raw input; then the same
/// input treated as manifest bytes and signed with the genuine key, so the manifest decoder is
/// reached after a good signature: that verifies exactly when `Manifest::from_bytes` accepts.
pub fn signed_manifest(data: &[u8]) {
    let keys = keys();
    if let Ok(signed) = SignedManifest::from_bytes(data) {
        assert_eq!(signed.to_bytes(), data, "accepted signed manifest is not canonical");
        if let Ok(manifest) = signed.verify(&keys.root_public, NOW_UNIX_SECS) {
            let accepted = Accepted { version: manifest.version, object_id: manifest.object_id ^ 1 };
            let _ = trust::check_acceptance(&manifest, COUNTY_CODE, NOW_UNIX_SECS, None);
            let _ = trust::check_acceptance(&manifest, COUNTY_CODE, NOW_UNIX_SECS, Some(accepted));
        }
    }
    let _ = trust::verify_manifest(data, &keys.root_public, COUNTY_CODE, NOW_UNIX_SECS, None);
    if data.len() <= manifest::MANIFEST_BYTES_MAX + 1 {
        let signed = sign_manifest_bytes(data);
        let verified = trust::verify_signed(&signed, &keys.root_public, NOW_UNIX_SECS);
        let decoded = Manifest::from_bytes(data);
        assert_eq!(verified.is_ok(), decoded.is_ok(), "{verified:?} vs {decoded:?}");
        if let (Ok(verified), Ok(decoded)) = (verified, decoded) {
            assert_eq!(verified, decoded);
        }
    }
}

/// `SignedRevocation::from_bytes` + `verify` (canonical, within its bounds, agreeing with
/// `verify_revocation`); the signer-serial peeks on the same bytes; and the input's revocation
/// list re-signed by the genuine root, which verifies exactly when it is within its bounds.
/// A KEY_WRAP body (docs/protocol.md 7.4): decoding is canonical and bounded, the cheap
/// checks and the unwrapping never panic whatever the wraps say (verified or not), and the
/// message, signed again with the fixed signing key, verifies. Seed: the vector of 12.14.
pub fn key_wraps(data: &[u8]) {
    let Ok((signed, message)) = SignedKeyWraps::decode(data) else { return };
    assert_eq!(signed.to_bytes(), data, "accepted key wraps are not canonical");
    assert!(message.wraps.len() <= key_tree::WRAPS_PER_MESSAGE_MAX);
    let digits: String = pattern(0x80).iter().map(|b| format!("{b:02x}")).collect();
    let secret = CountySecret::from_text(&format!("{} {digits}", key_tree::COUNTY_SECRET_LABEL)).expect("secret");
    let mut ring = KeyRing::new(Node::county(COUNTY_CODE).expect("county"), secret);
    let wanted = ring.wants_any(&message);
    let learned = ring.learn(&message.wraps);
    assert!(learned <= usize::from(key_tree::LEVELS));
    assert!(wanted || learned == 0, "learned from wraps it did not want");
    let _ = signed.verify(&keys().root_public, NOW_UNIX_SECS);
    let resigned = message.sign(&keys().signing).expect("within bounds");
    resigned.verify(&keys().root_public, NOW_UNIX_SECS).expect("genuine key wraps");
}

/// A NETWORK KEY body (docs/protocol.md 8.6): decoding is canonical and bounded, opening it
/// with a county's ring never panics whatever the wraps say, and the message, signed again
/// with the fixed signing key, verifies. Seed: the vector of 12.15.
pub fn network_key(data: &[u8]) {
    let Ok((signed, message)) = SignedNextNetworkKey::decode(data) else { return };
    assert_eq!(signed.to_bytes(), data, "an accepted next network key is not canonical");
    assert!(message.wraps.len() <= network_key::NEXT_NETWORK_KEY_WRAPS_MAX);
    let digits: String = pattern(0x80).iter().map(|b| format!("{b:02x}")).collect();
    let secret = CountySecret::from_text(&format!("{} {digits}", key_tree::COUNTY_SECRET_LABEL)).expect("secret");
    let ring = KeyRing::new(Node::county(COUNTY_CODE).expect("county"), secret);
    let _ = message.open(&ring);
    let _ = signed.verify(&keys().root_public, NOW_UNIX_SECS);
    let resigned = message.sign(&keys().signing).expect("within bounds");
    resigned.verify(&keys().root_public, NOW_UNIX_SECS).expect("genuine next network key");
}

pub fn revocation(data: &[u8]) {
    let root = &keys().root_public;
    let both = trust::verify_revocation(data, root);
    let _ = trust::manifest_signer_serial(data);
    let _ = trust::heartbeat_signer_serial(data);
    let Ok(signed) = SignedRevocation::from_bytes(data) else {
        assert!(both.is_err());
        return;
    };
    assert_eq!(signed.to_bytes(), data, "accepted revocation is not canonical");
    let one = signed.verify(root);
    assert_eq!(one.is_ok(), both.is_ok());
    if let Ok(list) = one {
        assert!(list.revoked_serials.len() <= trust::REVOKED_SERIALS_MAX);
    }
    let list = signed.revocation;
    let within = list.revoked_serials.len() <= trust::REVOKED_SERIALS_MAX;
    match keys().root.sign_revocation(list.clone()) {
        Ok(resigned) => {
            assert!(within);
            let bytes = resigned.to_bytes();
            assert_eq!(trust::verify_revocation(&bytes, root).expect("genuine revocation"), list);
        }
        Err(_) => assert!(!within),
    }
}

/// `KeyCertificate::from_bytes` + `verify`: canonical, and its text form parses back.
pub fn certificate(data: &[u8]) {
    let Ok(certificate) = KeyCertificate::from_bytes(data) else { return };
    assert_eq!(certificate.to_bytes(), data, "accepted certificate is not canonical");
    let _ = certificate.verify(&keys().root_public, NOW_UNIX_SECS);
    let _ = certificate.verify(&keys().root_public, u64::MAX);
    let again = KeyCertificate::from_text(&certificate.to_text()).expect("certificate text");
    assert_eq!(again, certificate);
}

/// `SignedHeartbeat::from_bytes` + `verify`, and `verify_heartbeat` agreeing with them.
pub fn heartbeat(data: &[u8]) {
    let root = &keys().root_public;
    let both = trust::verify_heartbeat(data, root, NOW_UNIX_SECS);
    match SignedHeartbeat::from_bytes(data) {
        Ok(signed) => {
            assert_eq!(signed.to_bytes(), data, "accepted heartbeat is not canonical");
            let one = signed.verify(root, NOW_UNIX_SECS);
            assert_eq!(one.is_ok(), both.is_ok());
            if let Ok(heartbeat) = one {
                assert_eq!(heartbeat, signed.heartbeat);
            }
        }
        Err(_) => assert!(both.is_err()),
    }
}

/// The key text parsers. The first byte picks the parser, the rest is the text (lossy
/// UTF-8); for a signing key, the first line is the secret and the rest the certificate.
/// Whatever parses prints back to text that parses to the same key.
pub fn key_text(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    match which % 5 {
        0 => {
            if let Ok(key) = RootPublicKey::from_text(&text) {
                assert_eq!(RootPublicKey::from_text(&key.to_text()).expect("root public text"), key);
            }
        }
        1 => {
            if let Ok(key) = NetworkKey::from_text(&text) {
                assert_eq!(NetworkKey::from_text(&key.to_text()).expect("network key text"), key);
            }
        }
        2 => {
            if let Ok(certificate) = KeyCertificate::from_text(&text) {
                let again = KeyCertificate::from_text(&certificate.to_text()).expect("certificate text");
                assert_eq!(again, certificate);
            }
        }
        3 => {
            if let Ok(key) = RootKey::from_text(&text) {
                let again = RootKey::from_text(&key.to_text()).expect("root secret text");
                assert_eq!(again.public(), key.public());
            }
        }
        _ => {
            let (secret, certificate) = text.split_once('\n').unwrap_or((&text, ""));
            if let Ok(key) = SigningKey::from_text(secret, certificate) {
                assert_eq!(key.certificate().body.public_key, key.public_key());
                let certificate_text = key.certificate().to_text();
                let again = SigningKey::from_text(&key.secret_to_text(), &certificate_text).expect("signing text");
                assert_eq!(again.public_key(), key.public_key());
            }
        }
    }
}

// ---- Feedback. ----

/// `Feedback::from_bytes`: an accepted message is within its bounds and writes back to the
/// same bytes.
pub fn feedback(data: &[u8]) {
    let Ok(feedback) = Feedback::from_bytes(data) else { return };
    assert_eq!(feedback.county_code.len(), 6);
    assert_eq!(feedback.to_bytes(), data, "accepted feedback does not write back to itself");
}

// ---- FEC. ----

/// `Oti::decode`: an accepted OTI encodes back to the same 12 bytes, and its blocks cover
/// [0, F) exactly within every bound.
pub fn oti(data: &[u8]) {
    let Ok(oti) = Oti::decode(data) else { return };
    assert_eq!(oti.encode().as_slice(), data, "accepted oti does not encode to itself");
    let _ = oti.to_raptorq();
    let blocks = fec::blocks(&oti);
    assert_eq!(blocks.len(), usize::from(oti.source_blocks));
    let t = u64::from(oti.symbol_size);
    let mut offset = 0;
    for (i, block) in blocks.iter().enumerate() {
        assert_eq!(usize::from(block.sbn), i);
        assert_eq!(block.offset, offset, "block {i} is not contiguous");
        assert!(block.source_symbols >= 1 && block.source_symbols <= fec::SOURCE_SYMBOLS_MAX);
        let padded = u64::from(block.source_symbols) * t;
        assert!(padded <= fec::BLOCK_BYTES_MAX_LIMIT);
        assert!(block.len >= 1 && block.len <= padded, "block {i} length {}", block.len);
        assert!(block.len == padded || i + 1 == blocks.len(), "only the last block may be short");
        offset += block.len;
    }
    assert_eq!(offset, oti.transfer_length, "blocks do not cover the object");
    for sbn in oti.source_blocks..=u8::MAX {
        assert!(oti.block(sbn).is_err());
    }
}

/// The most symbols [`fec_decode`] hands to the decoder.
pub const FEC_SYMBOLS_MAX: usize = 1024;

/// Deterministic payload bytes for a seed (xorshift), so inputs stay small.
pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// `fec::decode_block` on fuzz-chosen symbols for a small valid OTI (at most 64 source
/// symbols of at most 64 bytes per block). Input: alignment, symbol size, F, Z, the block,
/// a payload seed, then symbols, each a mode byte and its parameters: genuine (made by the
/// encoder for the ESI), corrupted, the wrong length, an ESI past 24 bits, or a duplicate.
/// Never panics; if every symbol is genuine the result is the block or a typed error, and
/// every source symbol present means no decoding and the exact block.
pub fn fec_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let alignment = [1u8, 2, 4, 8][usize::from(input.u8() % 4)];
    let al = u16::from(alignment);
    let t = al * (1 + u16::from(input.u8()) % (64 / al));
    let f = 1 + u64::from(input.u16()) % (64 * u64::from(t));
    let kt = f.div_ceil(u64::from(t));
    let z = 1 + u64::from(input.u8()) % kt.min(16);
    let oti = Oti { transfer_length: f, symbol_size: t, source_blocks: z as u8, sub_blocks: 1, alignment };
    oti.validate().expect("the harness builds valid otis");
    let sbn_byte = input.u8();
    let sbn = sbn_byte % oti.source_blocks;
    // With the top bit set, decode under the raw byte: usually a block that does not exist.
    let decode_sbn = if sbn_byte & 0x80 != 0 { sbn_byte } else { sbn };
    let block = oti.block(sbn).expect("block of a valid oti");
    let object = payload(f as usize, input.u8());
    let data_range = block.offset as usize..(block.offset + block.len) as usize;
    let encoder = BlockEncoder::new(&oti, sbn, &object[data_range.clone()]).expect("encoder");
    let k = block.source_symbols;
    let symbol_size = usize::from(t);
    let mut symbols: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut all_genuine = true;
    while !input.is_empty() && symbols.len() < FEC_SYMBOLS_MAX {
        let mode = input.u8();
        let esi = match mode >> 6 {
            0 => u32::from(input.u8()) % k,
            1 => k + u32::from(input.u8()),
            2 => u32::from(input.u16()),
            _ => input.u32() & wire::ESI_MAX,
        };
        let mut symbol = Vec::with_capacity(symbol_size);
        encoder.symbol_into(esi, &mut symbol).expect("symbol of a valid esi");
        match mode & 7 {
            0..=3 => {}
            4 => {
                let at = usize::from(input.u8()) % symbol_size;
                symbol[at] ^= input.u8() | 1;
                all_genuine = false;
            }
            5 => {
                let len = usize::from(input.u8());
                symbol.resize(if len == symbol_size { len + 1 } else { len }, 0);
                all_genuine = false;
            }
            6 => {
                symbols.push((input.u32() | (wire::ESI_MAX + 1), symbol));
                all_genuine = false;
                continue;
            }
            _ => {
                let copy = symbols.last().map_or(esi, |s| s.0);
                let garbage = input.take(symbol_size).to_vec();
                if !symbols.is_empty() && garbage.len() == symbol_size {
                    // A second, different copy of an ESI already given: the first one counts.
                    symbols.push((copy, garbage));
                    continue;
                }
            }
        }
        symbols.push((esi, symbol));
    }
    let sources_present = (0..k).all(|esi| symbols.iter().any(|s| s.0 == esi));
    let result = fec::decode_block(&oti, decode_sbn, symbols);
    if decode_sbn >= oti.source_blocks {
        assert!(matches!(result, Err(FecError::SbnOutOfRange { .. })), "{result:?}");
        return;
    }
    if all_genuine {
        match result {
            Ok(decoded) => assert_eq!(decoded, object[data_range], "genuine symbols decoded wrongly"),
            Err(FecError::NotEnoughSymbols { .. }) | Err(FecError::DecodeFailed { .. }) => {
                assert!(!sources_present, "every source symbol present, yet {result:?}")
            }
            Err(other) => panic!("genuine symbols: {other:?}"),
        }
    }
}

// ---- The reception machine. ----

/// Most operations [`reception`] performs per input.
pub const RECEPTION_OPS_MAX: usize = 256;
/// Most bytes the machine, its store and this harness may hold beyond what they held at the
/// start of an input (checked when the caller can count heap bytes): the early-symbol buffer
/// (16 MiB) plus manifest reassembly, events and the harness's own small objects.
pub const RECEPTION_LIVE_BYTES_MAX: usize = 64 << 20;
/// Largest object [`reception`] signs a manifest for.
pub const RECEPTION_OBJECT_BYTES_MAX: u64 = 4096;
/// Objects the harness remembers, to send symbols for.
const RECEPTION_OBJECTS_MAX: usize = 8;
/// Symbols one burst operation sends.
const BURST_SYMBOLS_MAX: usize = 512;

/// The operations of [`reception`]: the operation byte modulo [`OP_COUNT`].
pub mod op {
    /// A u16-length chunk of raw bytes, as received (almost always a bad tag).
    pub const RAW: u8 = 0;
    /// Type, object id choice, u16-length body: sealed with the network key.
    pub const SEALED: u8 = 1;
    /// A manifest built from fuzz bytes, signed with the genuine key, fragmented and aired.
    pub const MANIFEST: u8 = 2;
    /// One DATA symbol of a known object: genuine, corrupted, the wrong length or raw.
    pub const SYMBOL: u8 = 3;
    /// Genuine symbols for the blocks of a known object, with a loss pattern.
    pub const BURST: u8 = 4;
    /// A heartbeat signed with the genuine key, or a sealed raw heartbeat body.
    pub const HEARTBEAT: u8 = 5;
    /// A ROUND marker.
    pub const ROUND: u8 = 6;
    /// Time passes (monotonic milliseconds, wall-clock seconds, or a long jump).
    pub const TIME: u8 = 7;
    /// The driver's periodic work: tick, timeout, and sending the feedback.
    pub const TICK: u8 = 8;
    /// The receiver restarts over the same store and durable trust state (which the input
    /// may add to).
    pub const RESTART: u8 = 9;
    /// A revocation list signed by the genuine root (sometimes naming the signing key in use,
    /// serial 1), or a sealed raw revocation body.
    pub const REVOCATION: u8 = 10;
    /// How many operations there are.
    pub const OP_COUNT: u8 = 11;
}

/// Names the manifest operation picks from: good ones and ones the manifest rules refuse.
pub const NAMES: [&str; 8] = ["divisions.csv", "app.bin", "a", "policy-2025_v2.pdf", ".hidden", "", "../etc", "a b"];
/// Target lists the manifest operation picks from.
pub const TARGET_SETS: [&[&str]; 7] = [&["41"], &["410102"], &[""], &["4101", "99"], &["99"], &[], &["4"]];

struct Object {
    manifest: Manifest,
    payload: Vec<u8>,
    oti: Oti,
    encoders: Vec<Option<BlockEncoder>>,
}

impl Object {
    /// The genuine symbol `esi` of block `sbn` (empty if there is no such block).
    fn symbol(&mut self, sbn: u8, esi: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(slot) = self.encoders.get_mut(usize::from(sbn)) else { return out };
        let Ok(block) = self.oti.block(sbn) else { return out };
        if esi < block.source_symbols {
            // A source symbol is the padded block's bytes: no encoder needed.
            let t = usize::from(self.oti.symbol_size);
            let start = block.offset as usize + esi as usize * t;
            let end = (block.offset + block.len) as usize;
            out.extend_from_slice(&self.payload[start.min(end)..(start + t).min(end)]);
            out.resize(t, 0);
            return out;
        }
        if slot.is_none() {
            let data = &self.payload[block.offset as usize..(block.offset + block.len) as usize];
            *slot = BlockEncoder::new(&self.oti, sbn, data).ok();
        }
        if let Some(encoder) = slot {
            let _ = encoder.symbol_into(esi, &mut out);
        }
        out
    }
}

struct Stores {
    counting: bool,
    memory: MemoryStore,
}

impl Stores {
    /// Carries out the machine's requests: in memory, or counted (a block with K symbols
    /// always decodes, so the fuzzer reaches completion).
    fn drain(&mut self, rec: &mut Reception) {
        if !self.counting {
            return storage::drain(rec, &mut self.memory);
        }
        while let Some(request) = rec.poll_request() {
            if let Some(completion) = storage::execute_counting(request, || 1.0) {
                rec.handle_completion(completion);
            }
        }
    }
}

/// What happened during one [`reception`] run, so seeds can be checked to reach deep states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceptionCounts {
    /// Manifests accepted.
    pub accepted: usize,
    /// Manifests rejected.
    pub rejected: usize,
    /// Blocks verified.
    pub blocks_verified: usize,
    /// Blocks or objects poisoned.
    pub poisoned: usize,
    /// Symbols dropped because they did not match their signed list.
    pub forged: usize,
    /// Objects completed.
    pub completed: usize,
    /// Heartbeats accepted.
    pub heartbeats: usize,
    /// Feedback messages sent to the uplink.
    pub feedback: usize,
}

struct Sim {
    counts: ReceptionCounts,
    rec: Reception,
    stores: Stores,
    now: Instant,
    wall: u64,
    partial_max: usize,
    objects: Vec<Object>,
    /// Every manifest signed so far: nothing else may ever be accepted or completed.
    signed: Vec<Manifest>,
    /// Whether the machine's revocation list names the signing key (serial 1): then nothing
    /// may be accepted, verified or completed.
    revoked_ours: bool,
    /// The configuration, to restart with.
    config: ReceptionConfig,
    /// What the driver keeps in durable trust state: delivered versions and the revocation list.
    durable_delivered: Vec<(Kind, String, Accepted)>,
    durable_revocations: (u64, Vec<u64>),
    buf: Vec<u8>,
    /// The sequence of the last symbol list sent.
    list_sequence: u64,
}

impl Sim {
    /// Sends the uplink's signed list of `entries` (payload id, genuine symbol) and, with
    /// `round`, the ROUND marker it authorises.
    fn list(&mut self, object_id: u64, round: Option<u32>, symbols: &[(u32, Vec<u8>)]) {
        let chunks: Vec<&[(u32, Vec<u8>)]> =
            if symbols.is_empty() { vec![symbols] } else { symbols.chunks(wire::SYMBOL_RANGE_SYMBOLS_MAX).collect() };
        for chunk in chunks {
            self.list_sequence += 1;
            let mut ranges = Vec::new();
            for (id, symbol) in chunk {
                wire::add_to_ranges(&mut ranges, (id >> 24) as u8, id & wire::ESI_MAX, wire::symbol_hash(symbol));
            }
            let certificate = keys().signing.certificate().to_bytes();
            let signed = wire::symbol_list_signed_part(keys().signing.serial(), self.list_sequence, round, Some(&certificate), &ranges);
            let signature = keys().signing.sign_symbol_list(object_id, &signed);
            wire::write_symbol_list(&mut self.buf, &keys().network, object_id, &signed, &signature);
            self.send_buf();
        }
    }

    fn deliver(&mut self, datagram: &[u8]) {
        self.rec.handle_datagram(self.now, self.wall, datagram);
        self.stores.drain(&mut self.rec);
    }

    fn send_buf(&mut self) {
        let datagram = std::mem::take(&mut self.buf);
        self.deliver(&datagram);
        self.buf = datagram;
    }

    fn pick_object(&mut self, input: &mut Input<'_>) -> Option<usize> {
        let choice = usize::from(input.u8());
        (!self.objects.is_empty()).then(|| choice % self.objects.len())
    }

    fn object_id(&mut self, input: &mut Input<'_>) -> u64 {
        let choice = input.u8();
        match choice % 4 {
            0 if !self.objects.is_empty() => self.objects[usize::from(choice / 4) % self.objects.len()].manifest.object_id,
            1 => 0,
            2 => u64::from(choice / 4),
            _ => input.u64(),
        }
    }

    fn sealed(&mut self, input: &mut Input<'_>) {
        let kind = input.u8();
        let kind = if kind & 0x80 == 0 { 1 + kind % 4 } else { kind };
        let object_id = self.object_id(input);
        let body = input.chunk(1500);
        let mut content = wire::MAGIC.to_vec();
        content.push(wire::VERSION);
        content.push(kind);
        content.extend_from_slice(&object_id.to_be_bytes());
        content.extend_from_slice(body);
        let datagram = seal(&content);
        self.deliver(&datagram);
    }

    fn manifest(&mut self, input: &mut Input<'_>) {
        let flags = input.u8();
        let more = input.u8();
        let object_id = match self.pick_object(input) {
            Some(i) if more & 1 != 0 => self.objects[i].manifest.object_id,
            _ => 1 + u64::from(input.u8() % 16),
        };
        let kind = Kind::ALL[usize::from(input.u8() % 3)];
        let name = NAMES[usize::from(input.u8()) % NAMES.len()].to_owned();
        let version = u64::from(input.u8() % 8);
        let f = 1 + u64::from(input.u16()) % RECEPTION_OBJECT_BYTES_MAX;
        let t = 4 * (1 + u16::from(input.u8() % 16));
        let block_bytes_max = u64::from(t) * (1 + u64::from(input.u8() % 32));
        let Ok(oti) = Oti::new_for_object(f, t, block_bytes_max) else { return };
        let payload = payload(f as usize, input.u8());
        let blocks = fec::blocks(&oti);
        let mut block_hashes: Vec<[u8; 32]> =
            blocks.iter().map(|b| fec::block_hash(&payload[b.offset as usize..(b.offset + b.len) as usize])).collect();
        let mut object_hash = *blake3::hash(&payload).as_bytes();
        let mut size_bytes = f;
        let mut oti_bytes = oti.encode();
        let targets = TARGET_SETS[usize::from(input.u8()) % TARGET_SETS.len()];
        let mut created = self.wall.saturating_sub(u64::from(input.u8()) * 60);
        let mut expires = created + 1 + u64::from(input.u16()) * 10;
        if flags & 1 != 0 {
            let at = usize::from(input.u8()) % block_hashes.len();
            block_hashes[at][0] ^= 1;
        }
        if flags & 2 != 0 {
            object_hash[0] ^= 1;
        }
        if flags & 4 != 0 {
            size_bytes += 1;
        }
        if flags & 8 != 0 {
            if more & 2 != 0 {
                block_hashes.pop();
            } else {
                block_hashes.push([0; 32]);
            }
        }
        if flags & 16 != 0 {
            let at = usize::from(input.u8()) % oti_bytes.len();
            oti_bytes[at] ^= input.u8() | 1;
        }
        if flags & 64 != 0 {
            if more & 4 != 0 {
                created = self.wall + 301 + u64::from(input.u8());
                expires = created + 3600;
            } else {
                expires = self.wall.saturating_sub(u64::from(input.u8()));
                created = expires.saturating_sub(3600);
            }
        }
        let manifest = Manifest {
            object_id,
            kind,
            name,
            version,
            size_bytes,
            // Coded payloads too (no more input read, so stored regressions replay as before):
            // the receiver decodes what verifies and refuses what does not decode.
            compression: match (flags & 32 != 0, more & 8 != 0) {
                (false, _) => Compression::None,
                (true, false) => Compression::Zstd(Delivered { size_bytes: size_bytes.wrapping_mul(3), hash: object_hash }),
                (true, true) => Compression::ZstdPatch {
                    base_hash: object_hash,
                    delivered: Delivered { size_bytes: size_bytes.wrapping_mul(3), hash: object_hash },
                },
            },
            oti: oti_bytes,
            object_hash,
            block_hashes,
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            created_unix_secs: created,
            expires_unix_secs: expires,
        };
        let signed = sign_manifest_bytes(&manifest.to_bytes());
        // Fragments of at least 1/32 of the manifest: at most 32 datagrams.
        let room = 1 + usize::from(input.u16()) % 1500;
        let datagram_bytes_max = 46 + room.max(signed.len().div_ceil(32));
        let fragments = wire::manifest_fragments(&signed, datagram_bytes_max);
        let lost = if flags & 128 != 0 { input.u32() } else { 0 };
        let header_id = if more & 8 != 0 { object_id ^ 1 } else { object_id };
        let mut order: Vec<usize> = (0..fragments.len()).collect();
        if more & 16 != 0 {
            order.reverse();
        }
        for i in order {
            if lost & (1 << (i % 32)) != 0 {
                continue;
            }
            wire::write_manifest_fragment(&mut self.buf, &keys().network, header_id, &fragments[i]);
            self.send_buf();
        }
        if self.objects.len() >= RECEPTION_OBJECTS_MAX {
            self.objects.remove(0);
        }
        let encoders = blocks.iter().map(|_| None).collect();
        self.signed.push(manifest.clone());
        self.objects.push(Object { manifest, payload, oti, encoders });
    }

    fn symbol(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_object(input) else { return };
        let z = self.objects[i].encoders.len() as u8;
        let sbn = input.u8();
        let sbn = if sbn & 0x80 == 0 { sbn % z.max(1) } else { sbn };
        let k = self.objects[i].oti.block(sbn).map_or(1, |b| b.source_symbols);
        let mode = input.u8();
        let esi = match mode % 4 {
            0 => u32::from(input.u8()) % k,
            1 => k + u32::from(input.u8()),
            2 => u32::from(input.u16()),
            _ => input.u32() & wire::ESI_MAX,
        };
        let mut symbol = self.objects[i].symbol(sbn, esi);
        if !symbol.is_empty() {
            // The uplink lists the genuine symbol; the forgeries below then fail the list.
            let object_id = self.objects[i].manifest.object_id;
            self.list(object_id, None, &[(wire::payload_id(sbn, esi), symbol.clone())]);
        }
        match (mode >> 2) % 4 {
            0 | 1 => {}
            2 if !symbol.is_empty() => {
                let at = usize::from(input.u8()) % symbol.len();
                symbol[at] ^= input.u8() | 1;
            }
            _ => symbol = input.chunk(256).to_vec(),
        }
        if symbol.is_empty() {
            symbol.push(0);
        }
        let object_id = self.objects[i].manifest.object_id;
        wire::write_data(&mut self.buf, &keys().network, object_id, sbn, esi, &symbol);
        self.send_buf();
    }

    fn burst(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_object(input) else { return };
        let z = self.objects[i].encoders.len();
        if z == 0 {
            return;
        }
        let first_block = usize::from(input.u8()) % z;
        let first_esi = u32::from(input.u8());
        let count = 1 + u32::from(input.u8() % 64);
        let lost = input.u64();
        let object_id = self.objects[i].manifest.object_id;
        let mut sent = 0;
        let mut symbols = Vec::new();
        'blocks: for sbn in (first_block..z).chain(0..first_block) {
            for n in 0..count {
                if sent >= BURST_SYMBOLS_MAX {
                    break 'blocks;
                }
                sent += 1;
                let esi = first_esi + n;
                let symbol = self.objects[i].symbol(sbn as u8, esi);
                if !symbol.is_empty() {
                    symbols.push((sbn as u8, esi, lost & (1 << (n % 64)) != 0, symbol));
                }
            }
        }
        // The uplink's lists first (lost symbols are listed too), then the symbols.
        let listed: Vec<(u32, Vec<u8>)> =
            symbols.iter().map(|(sbn, esi, _, symbol)| (wire::payload_id(*sbn, *esi), symbol.clone())).collect();
        if !listed.is_empty() {
            self.list(object_id, None, &listed);
        }
        for (sbn, esi, lost, symbol) in symbols {
            if !lost {
                wire::write_data(&mut self.buf, &keys().network, object_id, sbn, esi, &symbol);
                self.send_buf();
            }
        }
    }

    fn heartbeat(&mut self, input: &mut Input<'_>) {
        let mode = input.u8();
        if mode & 1 == 0 {
            let sequence = u64::from(input.u16());
            let uplink_time_unix_ms = match (mode >> 1) & 3 {
                0 => self.wall * 1000 + u64::from(input.u16()),
                1 => self.wall.saturating_sub(u64::from(input.u16())) * 1000,
                _ => input.u64(),
            };
            let signed = keys().signing.sign_heartbeat(Heartbeat { sequence, uplink_time_unix_ms, ..Heartbeat::default() });
            wire::write_heartbeat(&mut self.buf, &keys().network, &signed.to_bytes());
        } else {
            let body = input.chunk(600).to_vec();
            wire::write_heartbeat(&mut self.buf, &keys().network, &body);
        }
        self.send_buf();
    }

    fn round(&mut self, input: &mut Input<'_>) {
        let object_id = self.object_id(input);
        let byte = input.u8();
        let round = u32::from(byte % 8);
        if byte & 8 == 0 {
            // Signed by the uplink; with the bit set, a forgery no list authorises.
            self.list(object_id, Some(round), &[]);
        }
        wire::write_round(&mut self.buf, &keys().network, object_id, round);
        self.send_buf();
    }

    fn time(&mut self, input: &mut Input<'_>) {
        let mode = input.u8();
        self.now += Duration::from_millis(u64::from(input.u16()));
        self.wall += match mode % 4 {
            0 => u64::from(input.u32()),
            _ => u64::from(input.u8()),
        };
    }

    fn tick(&mut self, input: &mut Input<'_>) {
        let mode = input.u8();
        self.rec.handle_tick(self.wall);
        self.stores.drain(&mut self.rec);
        if mode & 1 != 0 {
            if let Some(due) = self.rec.poll_timeout() {
                self.now = self.now.max(due);
            }
        }
        self.rec.handle_timeout(self.now);
        self.send_feedback();
    }

    /// The receiver restarts: a new machine over the same store, given the durable trust
    /// state as the call order says (delivered versions, then the revocation list). The input
    /// may add delivered entries an earlier run recorded, and replace the revocation list.
    fn restart(&mut self, input: &mut Input<'_>) {
        let mode = input.u8();
        for _ in 0..mode % 3 {
            let kind = Kind::ALL[usize::from(input.u8() % 3)];
            let name = NAMES[usize::from(input.u8()) % NAMES.len()].to_owned();
            let version = u64::from(input.u8() % 8);
            let object_id = self.object_id(input);
            self.durable_delivered.push((kind, name, Accepted { version, object_id }));
        }
        if mode & 4 != 0 {
            let sequence = u64::from(input.u8() % 8);
            let count = usize::from(input.u8() % 4);
            self.durable_revocations = (sequence, (0..count).map(|_| u64::from(input.u8() % 4)).collect());
        }
        self.rec = Reception::new(self.config.clone());
        for (kind, name, accepted) in &self.durable_delivered {
            self.rec.set_delivered(*kind, name, *accepted);
        }
        let (sequence, serials) = &self.durable_revocations;
        self.rec.set_revocations(*sequence, serials);
        self.revoked_ours = serials.contains(&keys().signing.certificate().body.serial);
    }

    fn revocation(&mut self, input: &mut Input<'_>) {
        let mode = input.u8();
        if mode & 1 == 0 {
            let count = usize::from(input.u8() % 4);
            let revoked_serials = (0..count).map(|_| u64::from(input.u8() % 4)).collect();
            let list = Revocation { sequence: u64::from(input.u8() % 8), issued_unix_secs: self.wall, revoked_serials };
            let Ok(signed) = keys().root.sign_revocation(list) else { return };
            wire::write_revocation(&mut self.buf, &keys().network, &signed.to_bytes());
        } else {
            let body = input.chunk(1200).to_vec();
            wire::write_revocation(&mut self.buf, &keys().network, &body);
        }
        self.send_buf();
    }

    /// What the uplink does with each message: it must be able to read everything a
    /// receiver sends.
    fn send_feedback(&mut self) {
        let mut sent = 0;
        while let Some(feedback) = self.rec.poll_feedback() {
            sent += 1;
            assert!(sent <= reception::FEEDBACK_QUEUE_MAX, "feedback queue past its bound");
            let bytes = feedback.to_bytes();
            self.counts.feedback += 1;
            let read = Feedback::from_bytes(&bytes);
            assert!(read.is_ok(), "the uplink cannot read {feedback:?}: {read:?}");
        }
    }

    /// What the driver does after every datagram: poll every event, deliver completed
    /// objects.
    fn drain_events(&mut self) {
        let mut events = 0;
        while let Some(event) = self.rec.poll_event() {
            events += 1;
            assert!(events <= reception::EVENTS_MAX, "event queue past its bound");
            match event {
                ReceptionEvent::Accepted { manifest } => {
                    self.counts.accepted += 1;
                    assert!(!self.revoked_ours, "accepted a manifest signed by a revoked key");
                    assert!(self.signed.contains(&*manifest), "accepted a manifest never signed");
                    assert!(manifest.targets_code(COUNTY_CODE), "accepted a manifest for another county");
                }
                ReceptionEvent::Complete { manifest } => {
                    self.counts.completed += 1;
                    assert!(!self.revoked_ours, "completed an object signed by a revoked key");
                    assert!(self.signed.contains(&*manifest), "completed a manifest never signed");
                    if !self.stores.counting {
                        let stored = self.stores.memory.object(manifest.object_id).unwrap_or_default();
                        let len = (manifest.size_bytes as usize).min(stored.len());
                        assert_eq!(*blake3::hash(&stored[..len]).as_bytes(), manifest.object_hash, "completed object differs");
                        let object = self.objects.iter().find(|o| o.manifest == *manifest);
                        if let Some(object) = object.filter(|o| *blake3::hash(&o.payload).as_bytes() == manifest.object_hash) {
                            assert_eq!(&stored[..len], object.payload.as_slice(), "completed object differs");
                        }
                    }
                    self.rec.mark_delivered(&manifest);
                    let accepted = Accepted { version: manifest.version, object_id: manifest.object_id };
                    self.durable_delivered.push((manifest.kind, manifest.name.clone(), accepted));
                }
                ReceptionEvent::Rejected { .. } | ReceptionEvent::Refused { .. } => self.counts.rejected += 1,
                ReceptionEvent::BlockVerified { .. } => {
                    self.counts.blocks_verified += 1;
                    assert!(!self.revoked_ours, "verified a block of an object signed by a revoked key");
                }
                ReceptionEvent::RevocationsUpdated { sequence, revoked_serials } => {
                    self.revoked_ours = revoked_serials.contains(&keys().signing.certificate().body.serial);
                    self.durable_revocations = (sequence, revoked_serials);
                }
                ReceptionEvent::BlockPoisoned { .. } | ReceptionEvent::ObjectPoisoned { .. } => self.counts.poisoned += 1,
                ReceptionEvent::Dropped { reason: wire::WireError::Source(wire::SourceRefusal::ForgedSymbol) } => self.counts.forged += 1,
                ReceptionEvent::Heartbeat { .. } => self.counts.heartbeats += 1,
                _ => {}
            }
        }
    }
}

/// The reception machine fed a sequence of operations (see [`op`]) chosen by the input:
/// raw datagrams, datagrams sealed with the network key, manifests signed with the genuine
/// key (good ones and ones every check should refuse), genuine and corrupted symbols,
/// heartbeats, ROUND markers, revocation lists, time, ticks and restarts over the same store. After every operation the
/// driver's work is done and checked: no panic, every queue within its bound, nothing
/// accepted or completed that was not signed (or whose key is revoked), completed objects
/// exactly right, every
/// feedback message readable by the uplink, at most `partial_objects_max` partial objects.
pub fn reception(data: &[u8]) {
    let _ = reception_with_memory(data, &|| None);
}

/// [`reception`], also checking after every operation that the heap bytes reported by
/// `live_bytes` (the fuzz target counts them with its allocator) grew by at most
/// [`RECEPTION_LIVE_BYTES_MAX`] since the start. Returns what happened.
pub fn reception_with_memory(data: &[u8], live_bytes: &dyn Fn() -> Option<usize>) -> ReceptionCounts {
    let keys = keys();
    let mut input = Input::new(data);
    let setup = input.u8();
    let counting = setup & 0x80 != 0;
    let mut config = ReceptionConfig::new(COUNTY_CODE.into(), keys.root_public, keys.network.clone());
    config.partial_objects_max = 1 + usize::from(setup & 3);
    config.report_window = Duration::from_millis(u64::from(input.u8()) * 20);
    config.quiet_report_after = Duration::from_millis(100 + u64::from(input.u8()) * 50);
    config.seed = u64::from(input.u8());
    config.fidelity = if counting { Fidelity::Counting } else { Fidelity::Full };
    let baseline = live_bytes();
    let mut sim = Sim {
        counts: ReceptionCounts::default(),
        partial_max: config.partial_objects_max,
        rec: Reception::new(config.clone()),
        stores: Stores { counting, memory: MemoryStore::default() },
        now: Instant::now(),
        wall: NOW_UNIX_SECS,
        objects: Vec::new(),
        // The vector seeds carry the genuine signed manifest of docs/protocol.md 12.7.
        signed: vec![vector_manifest()],
        revoked_ours: false,
        config: config.clone(),
        durable_delivered: Vec::new(),
        durable_revocations: (0, Vec::new()),
        buf: Vec::new(),
        list_sequence: 0,
    };
    for _ in 0..RECEPTION_OPS_MAX {
        if input.is_empty() {
            break;
        }
        match input.u8() % op::OP_COUNT {
            op::RAW => {
                let datagram = input.chunk(2048);
                sim.deliver(datagram);
            }
            op::SEALED => sim.sealed(&mut input),
            op::MANIFEST => sim.manifest(&mut input),
            op::SYMBOL => sim.symbol(&mut input),
            op::BURST => sim.burst(&mut input),
            op::HEARTBEAT => sim.heartbeat(&mut input),
            op::ROUND => sim.round(&mut input),
            op::TIME => sim.time(&mut input),
            op::TICK => sim.tick(&mut input),
            op::RESTART => sim.restart(&mut input),
            op::REVOCATION => sim.revocation(&mut input),
            _ => unreachable!("operations are taken modulo OP_COUNT"),
        }
        sim.drain_events();
        assert!(sim.rec.progress().len() <= sim.partial_max, "more partial objects than configured");
        if let (Some(before), Some(now)) = (baseline, live_bytes()) {
            let grown = now.saturating_sub(before);
            assert!(grown <= RECEPTION_LIVE_BYTES_MAX, "reception holds {grown} more heap bytes");
        }
    }
    sim.send_feedback();
    sim.counts
}
