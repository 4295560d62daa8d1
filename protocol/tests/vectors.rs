//! The test vectors of docs/protocol.md, kept honest.
//!
//! The document holds fenced blocks such as ```` ```hex data-source-datagram ````. This test
//! regenerates every vector from the inputs the document lists (the same constants are
//! below), checks that each block in the document is byte for byte what our code produces
//! (hex wrapped at 32 bytes per line), and parses each block back with our parsers,
//! asserting the field values the document states. A mismatch prints the regenerated block.
//!
//! Beyond the bytes, the tests drive a [`Reception`] machine with the documented datagrams
//! and check the behaviour the document states: revocation lists must be newer to count and
//! drop what a revoked key signed, and the feedback vectors are exactly what a receiver
//! sends after the ROUND vector and after delivering the object.
//!
//! After a deliberate change to the wire format, print every block for pasting into the
//! document with
//!
//! ```text
//! cargo test -p satcast-protocol --test vectors -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use satcast_protocol::confidential::{self, Opened, Secrets};
use satcast_protocol::fec::{self, BlockEncoder, Oti};
use satcast_protocol::feedback::{
    FEEDBACK_BYTES_MAX, FEEDBACK_VERSION, Feedback, FeedbackError, FeedbackMessage, NEEDS_MAX, TEXT_BYTES_MAX,
};
use satcast_protocol::key_tree::{self, CountySecret, EdgeWrap, GroupKey, KeyRing, KeyWraps, Node, SecretKey, SignedKeyWraps, Wrapped};
use satcast_protocol::manifest::{Compression, Delivered, Kind, Manifest};
use satcast_protocol::network_key::{NextKeyAccess, NextNetworkKey, SignedNextNetworkKey};
use satcast_protocol::reception::{MemoryStore, Reception, ReceptionConfig, ReceptionEvent};
use satcast_protocol::trust::{
    self, CERTIFICATE_CONTEXT, HEARTBEAT_CONTEXT, Heartbeat, KeyCertificate, MANIFEST_CONTEXT, NetworkKey, REVOCATION_CONTEXT,
    REVOKED_SERIALS_MAX, Revocation, RootKey, RootPublicKey, SignedHeartbeat, SignedManifest, SignedRevocation, SigningKey, TrustError,
};
use satcast_protocol::wire::{self, Body, ManifestAssembler, WireError};

/// The document under test.
const DOC: &str = include_str!("../../docs/protocol.md");

// ---- Inputs, as listed in docs/protocol.md, section "Test vectors". ----

/// Receiver clock for every verification: 2025-06-15T15:06:40Z.
const NOW_UNIX_SECS: u64 = 1_750_000_000;
/// Division code of the receiver the vectors are checked as.
const COUNTY_CODE: &str = "410102";
/// The payload: 70 ASCII bytes.
const PAYLOAD: &[u8; 70] = b"satcast test vector payload: 70 bytes, two source blocks (3+2 symbols)";
/// Symbol size T.
const SYMBOL_SIZE: u16 = 16;
/// Block size limit given to `Oti::new_for_object`: 48 bytes, at most 3 symbols per block.
const BLOCK_BYTES_MAX: u64 = 48;
const OBJECT_ID: u64 = 0x0123_4567_89ab_cdef;
/// The source symbol of data-source-datagram: the last one of block 1, half padding.
const SOURCE_SBN: u8 = 1;
const SOURCE_ESI: u32 = 1;
/// The repair symbol of data-repair-datagram: the first repair symbol of block 0 (K = 3).
const REPAIR_SBN: u8 = 0;
const REPAIR_ESI: u32 = 3;
const CERT_SERIAL: u64 = 1;
/// 2025-01-01T00:00:00Z.
const CERT_NOT_BEFORE: u64 = 1_735_689_600;
/// 2025-12-31T23:59:59Z.
const CERT_NOT_AFTER: u64 = 1_767_225_599;
const MANIFEST_NAME: &str = "divisions.csv";
const MANIFEST_VERSION: u64 = 7;
const MANIFEST_TARGETS: [&str; 3] = ["41", "4201", "110101"];
const MANIFEST_CREATED: u64 = 1_750_000_000;
/// Seven days after creation.
const MANIFEST_EXPIRES: u64 = 1_750_604_800;
/// The `datagram_bytes_max` given to `wire::manifest_fragments`: 154 manifest bytes each.
const MANIFEST_DATAGRAM_BYTES: usize = 200;
/// Fragments the signed manifest is split into at that size.
const MANIFEST_FRAGMENTS: usize = 3;
const HEARTBEAT_SEQUENCE: u64 = 42;
const HEARTBEAT_UPLINK_MS: u64 = 1_750_000_000_123;
/// The heartbeat's latest-version statement: policy "notice.txt" is at version 3.
const HEARTBEAT_LATEST_NAME: &str = "notice.txt";
const HEARTBEAT_LATEST_VERSION: u64 = 3;
/// The round ended by round-datagram.
const ROUND: u32 = 1;
/// The sequence of the SYMBOL LIST vector: the uplink's clock in milliseconds.
const LIST_SEQUENCE: u64 = 1_750_000_000_100;
/// The symbols the SYMBOL LIST vector names: every one the feedback test airs (two ranges
/// of block 0 and ranges of the repair and source vectors' blocks).
const LISTED: [(u8, u32); 5] = [(0, 0), (0, 1), (REPAIR_SBN, REPAIR_ESI), (SOURCE_SBN, SOURCE_ESI), (1, 0)];
/// The revocation list of revocation-datagram: sequence 3, issued at `NOW_UNIX_SECS`,
/// revoking serials 2 and 5 (not the vectors' signing key, serial 1).
const REVOCATION_SEQUENCE: u64 = 3;
const REVOCATION_ISSUED: u64 = 1_750_000_000;
const REVOKED_SERIALS: [u64; 2] = [2, 5];
/// The progress report of feedback-progress: after round 1, block 0 is verified and block 1
/// holds one of its two source symbols; four DATA symbols of the object arrived.
const PROGRESS_NEEDS: [u32; 2] = [0, 1];
const PROGRESS_SYMBOLS_RECEIVED: u64 = 4;

/// Confidential vectors (section 12.14): the county's X25519 secret, the group keys of
/// prefecture 4101 (epoch 2) and province 41 (epoch 3), the content key, the ephemeral secret
/// of the county wrap and the nonces of the group wraps, all fixed patterns.
const COUNTY_SECRET: u8 = 0x80;
const PREFECTURE_KEY: u8 = 0xa0;
const PREFECTURE_EPOCH: u64 = 2;
const PROVINCE_KEY: u8 = 0xc0;
const PROVINCE_EPOCH: u64 = 3;
const CONTENT_KEY: u8 = 0x60;
const EPHEMERAL_SECRET: u8 = 0x90;
const EDGE_NONCE: u8 = 0xe0;
const CONTENT_NONCE: u8 = 0xd0;
const KEY_WRAP_SEQUENCE: u64 = 5;
const SEALED_NAME: &str = "relief-2025.csv";
/// The uplink's pseudonym key of the sealed manifest's vector: bytes 0x30 ... 0x4f.
const NAME_KEY: u8 = 0x30;
/// The next network key of section 12.15 (bytes 0x50 ... 0x6f), when it activates, and the
/// nonce of its wrap under province 41's key (bytes 0xb0 ... 0xc7).
const NEXT_NETWORK_KEY: u8 = 0x50;
const NEXT_NETWORK_KEY_ACTIVATES: u64 = 1_750_086_400;
const NEXT_NETWORK_KEY_NONCE: u8 = 0xb0;

/// Every vector block the document must contain, in document order.
const EXPECTED_NAMES: [&str; 23] = [
    "key-files",
    "payload",
    "oti",
    "data-source-datagram",
    "data-repair-datagram",
    "certificate",
    "manifest",
    "manifest-patch",
    "signed-manifest",
    "manifest-datagram-0",
    "manifest-datagram-1",
    "manifest-datagram-2",
    "heartbeat-datagram",
    "round-datagram",
    "symbol-list-datagram",
    "revocation-datagram",
    "feedback-progress",
    "feedback-complete",
    "key-wrap-datagram",
    "confidential-section",
    "sealed-object",
    "manifest-sealed",
    "network-key-datagram",
];

fn pattern(first: u8) -> [u8; 32] {
    std::array::from_fn(|i| first + i as u8)
}

/// The keys, loaded through the key text formats as a daemon loads them.
struct Keys {
    network: NetworkKey,
    root: RootKey,
    root_public: RootPublicKey,
    signing: SigningKey,
    /// The key files, one per line, in the order the document lists them.
    text: String,
}

fn keys() -> Keys {
    let network_text = format!("{} {}\n", trust::NETWORK_KEY_LABEL, hex::encode(pattern(0x00)));
    let root_text = format!("{} {}\n", trust::ROOT_SECRET_LABEL, hex::encode(pattern(0x20)));
    let signing_text = format!("{} {}\n", trust::SIGNING_SECRET_LABEL, hex::encode(pattern(0x40)));
    let network = NetworkKey::from_text(&network_text).expect("network key text");
    let root = RootKey::from_text(&root_text).expect("root secret text");
    let root_public = root.public();
    // The signing key's public half, to certify it: Ed25519 derives it from the secret.
    let signing_public = ed25519_dalek::SigningKey::from_bytes(&pattern(0x40)).verifying_key().to_bytes();
    let certificate = root.issue(signing_public, CERT_SERIAL, CERT_NOT_BEFORE, CERT_NOT_AFTER);
    let certificate_text = certificate.to_text();
    let signing = SigningKey::from_text(&signing_text, &certificate_text).expect("signing key text");
    assert_eq!(network.to_text(), network_text);
    assert_eq!(root.to_text(), root_text);
    assert_eq!(signing.secret_to_text(), signing_text);
    let root_public_text = root_public.to_text();
    let text = [network_text, root_text, root_public_text, signing_text, certificate_text].concat();
    Keys { network, root, root_public, signing, text }
}

fn oti() -> Oti {
    Oti::new_for_object(PAYLOAD.len() as u64, SYMBOL_SIZE, BLOCK_BYTES_MAX).expect("oti")
}

fn block_data(oti: &Oti, sbn: u8) -> &'static [u8] {
    let block = oti.block(sbn).expect("block");
    &PAYLOAD[block.offset as usize..(block.offset + block.len) as usize]
}

fn manifest(oti: &Oti) -> Manifest {
    Manifest {
        object_id: OBJECT_ID,
        kind: Kind::CodeTable,
        name: MANIFEST_NAME.to_owned(),
        version: MANIFEST_VERSION,
        size_bytes: PAYLOAD.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(PAYLOAD).as_bytes(),
        block_hashes: fec::blocks(oti).iter().map(|b| fec::block_hash(block_data(oti, b.sbn))).collect(),
        targets: MANIFEST_TARGETS.iter().map(|t| (*t).to_owned()).collect(),
        created_unix_secs: MANIFEST_CREATED,
        expires_unix_secs: MANIFEST_EXPIRES,
    }
}

/// The manifest of a zstd patch (section 8.4): the vectors' manifest with compression 2,
/// base hash 10 11 .. 2f, delivering 100 bytes of BLAKE3 40 41 .. 5f.
fn patch_manifest(oti: &Oti) -> Manifest {
    let delivered = Delivered { size_bytes: PATCH_DELIVERED_BYTES, hash: pattern(0x40) };
    Manifest { compression: Compression::ZstdPatch { base_hash: pattern(0x10), delivered }, ..manifest(oti) }
}

/// What the patch manifest's payload decodes to, in bytes.
const PATCH_DELIVERED_BYTES: u64 = 100;

fn revocation() -> Revocation {
    Revocation { sequence: REVOCATION_SEQUENCE, issued_unix_secs: REVOCATION_ISSUED, revoked_serials: REVOKED_SERIALS.to_vec() }
}

fn progress() -> Feedback {
    Feedback {
        county_code: COUNTY_CODE.to_owned(),
        message: FeedbackMessage::Progress {
            object_id: OBJECT_ID,
            round: ROUND,
            needs: PROGRESS_NEEDS.to_vec(),
            symbols_received: PROGRESS_SYMBOLS_RECEIVED,
        },
    }
}

fn complete() -> Feedback {
    Feedback {
        county_code: COUNTY_CODE.to_owned(),
        message: FeedbackMessage::Complete { object_id: OBJECT_ID, object_hash: *blake3::hash(PAYLOAD).as_bytes() },
    }
}

/// Recomputes the tag of a datagram whose header or body was edited, as a holder of the
/// network key could.
fn retag(datagram: &mut [u8]) {
    let at = datagram.len() - 16;
    let tag = blake3::keyed_hash(&pattern(0x00), &datagram[..at]);
    datagram[at..].copy_from_slice(&tag.as_bytes()[..16]);
}

/// A receiver for county `COUNTY_CODE` pinning the vectors' root, with the report timing
/// of the daemon (report window 1 s).
fn receiver(keys: &Keys) -> Reception {
    Reception::new(ReceptionConfig::new(COUNTY_CODE.to_owned(), keys.root_public, keys.network.clone()))
}

fn symbol(oti: &Oti, sbn: u8, esi: u32) -> Vec<u8> {
    let encoder = BlockEncoder::new(oti, sbn, block_data(oti, sbn)).expect("encoder");
    let mut out = Vec::new();
    encoder.symbol_into(esi, &mut out).expect("symbol");
    out
}

/// One fenced block of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Vector {
    /// ```` ```hex NAME ````: bytes, 32 per line.
    Hex(Vec<u8>),
    /// ```` ```text NAME ````: lines of text.
    Text(String),
}

impl Vector {
    fn render(&self, name: &str) -> String {
        match self {
            Vector::Hex(bytes) => {
                let mut out = format!("```hex {name}\n");
                for line in bytes.chunks(32) {
                    out.push_str(&hex::encode(line));
                    out.push('\n');
                }
                out.push_str("```\n");
                out
            }
            Vector::Text(text) => format!("```text {name}\n{text}```\n"),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Vector::Hex(bytes) => bytes,
            Vector::Text(text) => text.as_bytes(),
        }
    }
}

/// Every vector, regenerated from the inputs with our code, in document order.
fn generate() -> Vec<(String, Vector)> {
    let keys = keys();
    let oti = oti();
    let manifest = manifest(&oti);
    let signed = keys.signing.sign_manifest(&manifest).expect("sign manifest").to_bytes();
    let mut out = vec![
        ("key-files".to_owned(), Vector::Text(keys.text.clone())),
        ("payload".to_owned(), Vector::Hex(PAYLOAD.to_vec())),
        ("oti".to_owned(), Vector::Hex(oti.encode().to_vec())),
    ];
    for (name, sbn, esi) in [("data-source-datagram", SOURCE_SBN, SOURCE_ESI), ("data-repair-datagram", REPAIR_SBN, REPAIR_ESI)] {
        let mut datagram = Vec::new();
        wire::write_data(&mut datagram, &keys.network, OBJECT_ID, sbn, esi, &symbol(&oti, sbn, esi));
        out.push((name.to_owned(), Vector::Hex(datagram)));
    }
    out.push(("certificate".to_owned(), Vector::Hex(keys.signing.certificate().to_bytes())));
    out.push(("manifest".to_owned(), Vector::Hex(manifest.to_bytes())));
    out.push(("manifest-patch".to_owned(), Vector::Hex(patch_manifest(&oti).to_bytes())));
    out.push(("signed-manifest".to_owned(), Vector::Hex(signed.clone())));
    for (i, fragment) in wire::manifest_fragments(&signed, MANIFEST_DATAGRAM_BYTES).iter().enumerate() {
        let mut datagram = Vec::new();
        wire::write_manifest_fragment(&mut datagram, &keys.network, OBJECT_ID, fragment);
        out.push((format!("manifest-datagram-{i}"), Vector::Hex(datagram)));
    }
    let heartbeat = vector_heartbeat();
    let mut datagram = Vec::new();
    wire::write_heartbeat(&mut datagram, &keys.network, &keys.signing.sign_heartbeat(heartbeat).to_bytes());
    out.push(("heartbeat-datagram".to_owned(), Vector::Hex(datagram)));
    let mut datagram = Vec::new();
    wire::write_round(&mut datagram, &keys.network, OBJECT_ID, ROUND);
    out.push(("round-datagram".to_owned(), Vector::Hex(datagram)));
    out.push(("symbol-list-datagram".to_owned(), Vector::Hex(symbol_list_vector(&keys, &oti))));
    let signed_revocation = keys.root.sign_revocation(revocation()).expect("sign revocation").to_bytes();
    let mut datagram = Vec::new();
    wire::write_revocation(&mut datagram, &keys.network, &signed_revocation);
    out.push(("revocation-datagram".to_owned(), Vector::Hex(datagram)));
    out.push(("feedback-progress".to_owned(), Vector::Hex(progress().to_bytes())));
    out.push(("feedback-complete".to_owned(), Vector::Hex(complete().to_bytes())));
    let (key_wraps, section, sealed) = confidential_vectors(&keys);
    out.push(("key-wrap-datagram".to_owned(), Vector::Hex(key_wraps)));
    out.push(("confidential-section".to_owned(), Vector::Hex(section.to_bytes())));
    let manifest = sealed_manifest(&section, &sealed);
    out.push(("sealed-object".to_owned(), Vector::Hex(sealed)));
    out.push(("manifest-sealed".to_owned(), Vector::Hex(manifest.to_bytes())));
    out.push(("network-key-datagram".to_owned(), Vector::Hex(network_key_datagram(&keys))));
    out
}

/// The NETWORK KEY datagram of section 12.15: the next network key sealed under province
/// 41's key at epoch 3 (the cover of every enrolled county if all were in 41), signed.
fn network_key_datagram(keys: &Keys) -> Vec<u8> {
    let province = Node::from_prefix("41").expect("province");
    let province_key = GroupKey { epoch: PROVINCE_EPOCH, key: SecretKey(pattern(PROVINCE_KEY)) };
    let wrap = key_tree::seal_under_group_with_nonce(
        nonce24(NEXT_NETWORK_KEY_NONCE),
        Wrapped::NetworkKey { activates_unix_secs: NEXT_NETWORK_KEY_ACTIVATES },
        &SecretKey(pattern(NEXT_NETWORK_KEY)),
        province,
        &province_key,
    );
    let message = NextNetworkKey { activates_unix_secs: NEXT_NETWORK_KEY_ACTIVATES, created_unix_secs: NOW_UNIX_SECS, wraps: vec![wrap] };
    let mut datagram = Vec::new();
    wire::write_network_key(&mut datagram, &keys.network, &message.sign(&keys.signing).expect("signs").to_bytes());
    datagram
}

#[test]
fn the_county_of_the_vectors_opens_the_next_network_key() {
    let keys = keys();
    let secret =
        CountySecret::from_text(&format!("{} {}", key_tree::COUNTY_SECRET_LABEL, hex::encode(pattern(COUNTY_SECRET)))).expect("secret");
    let mut ring = KeyRing::new(Node::county(COUNTY_CODE).expect("county"), secret);
    let key_wraps = document_bytes("key-wrap-datagram");
    let Body::KeyWrap(body) = wire::parse(&key_wraps, &keys.network).expect("parses").body else { panic!("not KEY_WRAP") };
    ring.learn(&SignedKeyWraps::decode(body).expect("decodes").1.wraps);
    let datagram = document_bytes("network-key-datagram");
    let Body::NetworkKey(body) = wire::parse(&datagram, &keys.network).expect("parses").body else { panic!("not NETWORK KEY") };
    let (signed, message) = SignedNextNetworkKey::decode(body).expect("decodes");
    signed.verify(&keys.root_public, NOW_UNIX_SECS).expect("verifies");
    assert_eq!(message.activates_unix_secs, NEXT_NETWORK_KEY_ACTIVATES);
    assert_eq!(message.open(&ring), NextKeyAccess::Key(NetworkKey(pattern(NEXT_NETWORK_KEY))));
    let outside = CountySecret::from_text(&format!("{} {}", key_tree::COUNTY_SECRET_LABEL, hex::encode(pattern(0x82)))).expect("secret");
    assert_eq!(message.open(&KeyRing::new(Node::county("420101").expect("county"), outside)), NextKeyAccess::NotTargeted);
}

/// The manifest of the sealed object (section 8.5): the vectors' manifest named by its
/// pseudonym, describing the 128 aired bytes of `sealed`, compression variant 3 carrying
/// the confidential section. Not signed in these vectors.
fn sealed_manifest(section: &confidential::Confidential, sealed: &[u8]) -> Manifest {
    let layout = confidential::sealed_oti(PAYLOAD.len() as u64, SYMBOL_SIZE, BLOCK_BYTES_MAX).expect("layout");
    Manifest {
        name: confidential::pseudonym(&SecretKey(pattern(NAME_KEY)), Kind::CodeTable, SEALED_NAME),
        size_bytes: sealed.len() as u64,
        compression: Compression::Sealed(Box::new(section.clone())),
        oti: layout.encode(),
        object_hash: *blake3::hash(sealed).as_bytes(),
        block_hashes: fec::blocks(&layout)
            .iter()
            .map(|b| fec::block_hash(&sealed[b.offset as usize..(b.offset + b.len) as usize]))
            .collect(),
        ..manifest(&oti())
    }
}

#[test]
fn sealed_manifest_fields() {
    let bytes = document_bytes("manifest-sealed");
    let manifest = Manifest::from_bytes(&bytes).expect("canonical, valid manifest");
    let section_bytes = document_bytes("confidential-section");
    let section = confidential::Confidential::from_bytes(&section_bytes).expect("section");
    assert_eq!(manifest, sealed_manifest(&section, &document_bytes("sealed-object")));
    assert_eq!(manifest.confidential(), Some(&section));
    assert!(manifest.name.starts_with("sealed-") && !manifest.name.contains("relief"), "{}", manifest.name);
    // object id, kind, the 31-byte pseudonym, version, size: then compression variant 3
    // and the section exactly as its own vector.
    let mut r = Reader(&bytes[8 + 4..]);
    assert_eq!(r.u64(), 31, "name length");
    assert_eq!(r.take(31), manifest.name.as_bytes());
    assert_eq!(r.u64(), MANIFEST_VERSION);
    assert_eq!(r.u64(), 128, "size on the air");
    assert_eq!(r.u32(), 3, "compression sealed is variant 3");
    assert_eq!(r.take(section_bytes.len()), section_bytes);
    assert_eq!((manifest.delivered_size(), manifest.delivered_hash()), (128, manifest.object_hash), "what is public is what airs");
}

fn nonce24(first: u8) -> [u8; 24] {
    std::array::from_fn(|i| first + i as u8)
}

/// The KEY_WRAP datagram (the prefecture key sealed to the county, the province key sealed
/// under the prefecture key), the confidential section of the payload for province 41, and
/// the payload sealed.
fn confidential_vectors(keys: &Keys) -> (Vec<u8>, confidential::Confidential, Vec<u8>) {
    let county = Node::county(COUNTY_CODE).expect("county");
    let prefecture = Node::from_prefix("4101").expect("prefecture");
    let province = Node::from_prefix("41").expect("province");
    let county_public = CountySecret::from_text(&format!("{} {}", key_tree::COUNTY_SECRET_LABEL, hex::encode(pattern(COUNTY_SECRET))))
        .expect("secret")
        .public();
    let prefecture_key = GroupKey { epoch: PREFECTURE_EPOCH, key: SecretKey(pattern(PREFECTURE_KEY)) };
    let province_key = GroupKey { epoch: PROVINCE_EPOCH, key: SecretKey(pattern(PROVINCE_KEY)) };
    let leaf = key_tree::seal_to_county_with_ephemeral(
        pattern(EPHEMERAL_SECRET),
        Wrapped::Group { node: prefecture, epoch: PREFECTURE_EPOCH },
        &prefecture_key.key,
        county,
        &county_public,
    )
    .expect("county wrap");
    let edge = key_tree::seal_under_group_with_nonce(
        nonce24(EDGE_NONCE),
        Wrapped::Group { node: province, epoch: PROVINCE_EPOCH },
        &province_key.key,
        prefecture,
        &prefecture_key,
    );
    let message = KeyWraps {
        sequence: KEY_WRAP_SEQUENCE,
        created_unix_secs: NOW_UNIX_SECS,
        wraps: vec![
            EdgeWrap { node: prefecture, epoch: PREFECTURE_EPOCH, wrap: leaf },
            EdgeWrap { node: province, epoch: PROVINCE_EPOCH, wrap: edge },
        ],
    };
    let mut datagram = Vec::new();
    wire::write_key_wrap(&mut datagram, &keys.network, &message.sign(&keys.signing).expect("signs").to_bytes());
    let content_key = SecretKey(pattern(CONTENT_KEY));
    let wrap = key_tree::seal_under_group_with_nonce(
        nonce24(CONTENT_NONCE),
        Wrapped::Content { object_id: OBJECT_ID },
        &content_key,
        province,
        &province_key,
    );
    let secrets = Secrets {
        name: SEALED_NAME.to_owned(),
        plain_size: PAYLOAD.len() as u64,
        plain_hash: *blake3::hash(PAYLOAD).as_bytes(),
        compression: Compression::None,
    };
    let section =
        confidential::Confidential { wraps: vec![wrap], sealed_secrets: confidential::seal_secrets(&content_key, OBJECT_ID, &secrets) };
    let oti = confidential::sealed_oti(PAYLOAD.len() as u64, SYMBOL_SIZE, BLOCK_BYTES_MAX).expect("layout");
    let sealed = confidential::seal_object(&content_key, OBJECT_ID, &oti, PAYLOAD).expect("seals");
    (datagram, section, sealed)
}

#[test]
fn the_county_of_the_vectors_reads_the_sealed_object_and_no_other_does() {
    let keys = keys();
    let secret =
        CountySecret::from_text(&format!("{} {}", key_tree::COUNTY_SECRET_LABEL, hex::encode(pattern(COUNTY_SECRET)))).expect("secret");
    let mut ring = KeyRing::new(Node::county(COUNTY_CODE).expect("county"), secret);
    let datagram = document_bytes("key-wrap-datagram");
    let Body::KeyWrap(body) = wire::parse(&datagram, &keys.network).expect("parses").body else { panic!("not KEY_WRAP") };
    let (signed, message) = SignedKeyWraps::decode(body).expect("decodes");
    assert!(ring.wants_any(&message));
    signed.verify(&keys.root_public, NOW_UNIX_SECS).expect("verifies");
    assert_eq!(ring.learn(&message.wraps), 2, "prefecture, then province from the same datagram");
    assert!(!ring.wants_any(&message), "heard again, it costs a lookup");
    let section = confidential::Confidential::from_bytes(&document_bytes("confidential-section")).expect("section");
    let Opened::Readable(key, secrets) = confidential::open_section(&ring, OBJECT_ID, &section).expect("opens") else {
        panic!("not readable")
    };
    assert_eq!(secrets.name, SEALED_NAME);
    let sealed = document_bytes("sealed-object");
    let oti = confidential::sealed_oti(PAYLOAD.len() as u64, SYMBOL_SIZE, BLOCK_BYTES_MAX).expect("layout");
    assert_eq!((sealed.len(), oti.source_blocks), (128, 3));
    let mut plain = Vec::new();
    for block in fec::blocks(&oti) {
        let mut bytes = sealed[block.offset as usize..(block.offset + block.len) as usize].to_vec();
        assert_eq!(blake3::hash(&bytes), blake3::hash(&sealed[block.offset as usize..(block.offset + block.len) as usize]));
        confidential::open_block(&key, OBJECT_ID, &oti, block.sbn, &mut bytes).expect("block opens");
        plain.extend_from_slice(&bytes);
    }
    assert_eq!(&plain[..PAYLOAD.len()], PAYLOAD);
    assert!(plain[PAYLOAD.len()..].iter().all(|b| *b == 0));
    // A county of another prefecture with its own valid key learns nothing from the datagram.
    let other = CountySecret::from_text(&format!("{} {}", key_tree::COUNTY_SECRET_LABEL, hex::encode(pattern(0x81)))).expect("secret");
    let mut other = KeyRing::new(Node::county("410201").expect("county"), other);
    assert!(!other.wants_any(&message));
    assert_eq!(other.learn(&message.wraps), 0);
    // It is in province 41, so targeted: it waits for its own prefecture's wraps.
    assert_eq!(confidential::open_section(&other, OBJECT_ID, &section).expect("well formed"), Opened::Pending);
    let outside = CountySecret::from_text(&format!("{} {}", key_tree::COUNTY_SECRET_LABEL, hex::encode(pattern(0x82)))).expect("secret");
    let outside = KeyRing::new(Node::county("420101").expect("county"), outside);
    assert_eq!(confidential::open_section(&outside, OBJECT_ID, &section).expect("well formed"), Opened::NotTargeted);
}

/// The SYMBOL LIST vector: [`LISTED`] and round [`ROUND`]'s marker, signed by the vectors'
/// signing key.
fn symbol_list_vector(keys: &Keys, oti: &Oti) -> Vec<u8> {
    let symbols: Vec<(u8, u32, Vec<u8>)> = LISTED.iter().map(|(sbn, esi)| (*sbn, *esi, symbol(oti, *sbn, *esi))).collect();
    let listed: Vec<(u8, u32, &[u8])> = symbols.iter().map(|(sbn, esi, s)| (*sbn, *esi, s.as_slice())).collect();
    wire::symbol_list_datagram(&keys.network, &keys.signing, OBJECT_ID, LIST_SEQUENCE, Some(ROUND), &listed)
}

/// The certificate a SYMBOL LIST datagram carries, if any.
fn list_certificate(datagram: &[u8], keys: &Keys) -> Option<Vec<u8>> {
    match wire::parse(datagram, &keys.network).ok()?.body {
        Body::SymbolList(list) => list.certificate.map(<[u8]>::to_vec),
        _ => None,
    }
}

#[test]
fn symbol_list_fields() {
    let keys = keys();
    let oti = oti();
    let datagram = document_bytes("symbol-list-datagram");
    let ranges = wire::parse(&datagram, &keys.network).ok().and_then(|d| match d.body {
        Body::SymbolList(list) => Some(list.symbol_ranges().len()),
        _ => None,
    });
    let ranges = ranges.expect("a SYMBOL LIST");
    assert_eq!(datagram.len(), 14 + 22 + 120 + ranges * 5 + LISTED.len() * 8 + 64 + 16);
    assert_eq!(list_certificate(&datagram, &keys), Some(document_bytes("certificate")), "the signer's certificate, 12.5");
    let parsed = wire::parse(&datagram, &keys.network).expect("symbol list parses");
    assert_eq!(parsed.object_id, OBJECT_ID);
    let Body::SymbolList(list) = parsed.body else { panic!("not a SYMBOL LIST: {parsed:?}") };
    assert_eq!((list.signer_serial, list.sequence, list.round, list.symbols), (CERT_SERIAL, LIST_SEQUENCE, Some(ROUND), LISTED.len()));
    let mut entries: Vec<(u32, [u8; 8])> = list.entries().collect();
    let mut expected: Vec<(u32, [u8; 8])> =
        LISTED.iter().map(|(sbn, esi)| (wire::payload_id(*sbn, *esi), wire::symbol_hash(&symbol(&oti, *sbn, *esi)))).collect();
    entries.sort();
    expected.sort();
    assert_eq!(entries, expected);
    let public = keys.signing.certificate().body.public_key;
    assert!(trust::verify_symbol_list(&public, OBJECT_ID, list.signed, list.signature));
    assert!(!trust::verify_symbol_list(&public, OBJECT_ID + 1, list.signed, list.signature), "the object id is signed");
    // Malformed bodies: a partial hash, a missing range, a list of nothing, a count of zero.
    for cut in [1, 8, 13] {
        let mut edited = datagram[..datagram.len() - 16 - 64 - cut].to_vec();
        edited.extend_from_slice(&[0; 64]);
        edited.extend_from_slice(&[0; 16]);
        retag(&mut edited);
        assert!(matches!(wire::parse(&edited, &keys.network), Err(WireError::Body { kind: "symbol list", .. })), "cut {cut}");
    }
    let empty = wire::symbol_list_signed_part(keys.signing.serial(), 1, None, None, &[]);
    let mut edited = Vec::new();
    wire::write_symbol_list(&mut edited, &keys.network, OBJECT_ID, &empty, &[0; 64]);
    assert!(matches!(wire::parse(&edited, &keys.network), Err(WireError::Body { kind: "symbol list", .. })));
    let mut zero_count = wire::symbol_list_signed_part(keys.signing.serial(), 1, None, None, &[]);
    zero_count[21] = 1;
    zero_count.extend_from_slice(&[0, 0, 0, 0, 0]);
    wire::write_symbol_list(&mut edited, &keys.network, OBJECT_ID, &zero_count, &[0; 64]);
    assert!(matches!(wire::parse(&edited, &keys.network), Err(WireError::Body { kind: "symbol list", .. })));
}

/// Every ```` ```hex NAME ```` and ```` ```text NAME ```` block of the document, by name,
/// as written. Other fenced blocks (plain ```` ```text ````, tables) are skipped.
fn document_blocks() -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let mut words = info.split_whitespace();
        let (Some(format @ ("hex" | "text")), Some(name)) = (words.next(), words.next()) else {
            // Skip over the body of any other fenced block.
            for inner in lines.by_ref() {
                if inner.trim_end() == "```" {
                    break;
                }
            }
            continue;
        };
        let mut block = format!("```{format} {name}\n");
        for inner in lines.by_ref() {
            block.push_str(inner);
            block.push('\n');
            if inner.trim_end() == "```" {
                break;
            }
        }
        let previous = blocks.insert(name.to_owned(), block);
        assert!(previous.is_none(), "docs/protocol.md has two blocks named {name}");
    }
    blocks
}

/// The bytes of the document's block `name`, decoded from hex (or the text's bytes).
fn document_bytes(name: &str) -> Vec<u8> {
    let blocks = document_blocks();
    let block = blocks.get(name).unwrap_or_else(|| panic!("docs/protocol.md has no block named {name}"));
    let mut lines: Vec<&str> = block.lines().collect();
    let header = lines.remove(0);
    lines.pop();
    if header.starts_with("```hex") {
        let digits: String = lines.concat().split_whitespace().collect();
        hex::decode(&digits).unwrap_or_else(|e| panic!("block {name} is not hex: {e}"))
    } else {
        lines.iter().map(|l| format!("{l}\n")).collect::<String>().into_bytes()
    }
}

#[test]
fn document_matches_regenerated_vectors() {
    let generated = generate();
    let names: Vec<&str> = generated.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, EXPECTED_NAMES, "the generator and EXPECTED_NAMES disagree");
    let blocks = document_blocks();
    let mut problems = Vec::new();
    for (name, vector) in &generated {
        let regenerated = vector.render(name);
        match blocks.get(name) {
            None => problems.push(format!("missing vector {name}; regenerated:\n{regenerated}")),
            Some(written) if *written != regenerated => {
                problems.push(format!("vector {name} differs from the code; regenerated:\n{regenerated}"))
            }
            Some(_) => {}
        }
    }
    for name in blocks.keys() {
        if !names.contains(&name.as_str()) {
            problems.push(format!("block {name} in docs/protocol.md is not a known vector"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/protocol.md is out of date with the code. If the change is deliberate, update the \
         document (all blocks: cargo test -p satcast-protocol --test vectors -- --ignored --nocapture).\n\n{}",
        problems.join("\n")
    );
}

#[test]
fn key_files_load() {
    let keys = keys();
    let text = String::from_utf8(document_bytes("key-files")).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    let network = NetworkKey::from_text(lines[0]).expect("network key");
    assert_eq!(network.0, pattern(0x00));
    let root = RootKey::from_text(lines[1]).expect("root secret");
    assert_eq!(keys.root.to_text().trim_end(), lines[1]);
    let root_public = RootPublicKey::from_text(lines[2]).expect("root public");
    assert_eq!(root.public(), root_public);
    assert_eq!(root_public, keys.root_public);
    let signing = SigningKey::from_text(lines[3], lines[4]).expect("signing key and certificate");
    assert_eq!(signing.certificate(), keys.signing.certificate());
    assert_eq!(lines[3], format!("satcast-signing-secret-v1 {}", hex::encode(pattern(0x40))));
    // CRLF and surrounding blanks are tolerated; another label is not.
    assert!(NetworkKey::from_text(&format!("  {}\r\n", lines[0])).is_ok());
    assert!(NetworkKey::from_text(lines[1]).is_err());
}

#[test]
fn oti_fields() {
    let bytes = document_bytes("oti");
    assert_eq!(bytes.len(), fec::OTI_LEN);
    let oti = Oti::decode(&bytes).expect("oti decodes");
    assert_eq!(oti.transfer_length, 70);
    assert_eq!(oti.symbol_size, 16);
    assert_eq!(oti.source_blocks, 2);
    assert_eq!(oti.sub_blocks, 1);
    assert_eq!(oti.alignment, 4);
    assert_eq!(bytes, [0, 0, 0, 0, 70, 0, 0, 16, 2, 0, 1, 4]);
    // Partition[Kt = 5, Z = 2] = (KL 3, KS 2, ZL 1, ZS 1).
    let blocks: Vec<(u8, u64, u64, u32)> = fec::blocks(&oti).iter().map(|b| (b.sbn, b.offset, b.len, b.source_symbols)).collect();
    assert_eq!(blocks, [(0, 0, 48, 3), (1, 48, 22, 2)]);
    assert_eq!(document_bytes("payload"), PAYLOAD);
}

#[test]
fn data_datagrams_parse_and_decode() {
    let keys = keys();
    let oti = oti();
    let source = document_bytes("data-source-datagram");
    assert_eq!(source.len(), 14 + 4 + 16 + 16);
    assert_eq!(&source[..18], &[b'S', b'C', b'S', b'T', 1, 1, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0, 0, 0x01]);
    let parsed = wire::parse(&source, &keys.network).expect("source datagram parses");
    assert_eq!(parsed.object_id, OBJECT_ID);
    let Body::Data { sbn, esi, symbol } = parsed.body else { panic!("not DATA: {parsed:?}") };
    assert_eq!((sbn, esi), (SOURCE_SBN, SOURCE_ESI));
    // The last source symbol of block 1: payload bytes 64..70 and 10 bytes of zero padding.
    let mut expected = PAYLOAD[64..70].to_vec();
    expected.resize(16, 0);
    assert_eq!(symbol, expected.as_slice());
    // The tag: the first 16 bytes of BLAKE3 keyed with the network key over all before it.
    let tag = blake3::keyed_hash(&pattern(0x00), &source[..source.len() - 16]);
    assert_eq!(&source[source.len() - 16..], &tag.as_bytes()[..16]);

    let repair = document_bytes("data-repair-datagram");
    assert_eq!(&repair[14..18], &[0, 0, 0, 3]);
    let parsed = wire::parse(&repair, &keys.network).expect("repair datagram parses");
    assert_eq!(parsed.object_id, OBJECT_ID);
    let Body::Data { sbn, esi, symbol } = parsed.body else { panic!("not DATA: {parsed:?}") };
    assert_eq!((sbn, esi), (REPAIR_SBN, REPAIR_ESI));
    let block = oti.block(REPAIR_SBN).expect("block 0");
    assert!(esi >= block.source_symbols, "a repair symbol has ESI >= K");
    // raptorq itself, without our ESI arithmetic, gives the same first repair symbol.
    let mut padded = block_data(&oti, REPAIR_SBN).to_vec();
    padded.resize(block.source_symbols as usize * 16, 0);
    let encoder = raptorq::SourceBlockEncoder::new(REPAIR_SBN, &oti.to_raptorq(), &padded);
    let packets = encoder.repair_packets(0, 1);
    assert_eq!(packets[0].payload_id().source_block_number(), REPAIR_SBN);
    assert_eq!(packets[0].payload_id().encoding_symbol_id(), REPAIR_ESI);
    assert_eq!(packets[0].data(), symbol);
    // The repair symbol stands in for a lost source symbol: decode block 0 from ESIs 0, 1, 3.
    let symbols = [0, 1].map(|esi| (esi, block_data(&oti, 0)[esi as usize * 16..][..16].to_vec()));
    let decoded = fec::decode_block(&oti, 0, symbols.into_iter().chain([(esi, symbol.to_vec())])).expect("decodes");
    assert_eq!(decoded, block_data(&oti, 0));

    // A changed byte anywhere fails the tag before the body is looked at.
    let mut forged = repair.clone();
    forged[20] ^= 1;
    assert_eq!(wire::parse(&forged, &keys.network), Err(WireError::Tag));
}

#[test]
fn certificate_fields() {
    let keys = keys();
    let bytes = document_bytes("certificate");
    assert_eq!(bytes.len(), 120);
    let certificate = KeyCertificate::from_bytes(&bytes).expect("canonical certificate");
    assert_eq!(certificate.body.public_key, keys.signing.public_key());
    assert_eq!(&bytes[..32], &keys.signing.public_key());
    assert_eq!(certificate.body.serial, CERT_SERIAL);
    assert_eq!(&bytes[32..40], &CERT_SERIAL.to_be_bytes());
    assert_eq!(certificate.body.not_before_unix_secs, CERT_NOT_BEFORE);
    assert_eq!(&bytes[40..48], &CERT_NOT_BEFORE.to_be_bytes());
    assert_eq!(certificate.body.not_after_unix_secs, CERT_NOT_AFTER);
    assert_eq!(&bytes[48..56], &CERT_NOT_AFTER.to_be_bytes());
    // The root signs the context string followed by the 56-byte body.
    let message = [CERTIFICATE_CONTEXT, &bytes[..56]].concat();
    let root = ed25519_dalek::VerifyingKey::from_bytes(&keys.root_public.0).expect("root key");
    let signature = ed25519_dalek::Signature::from_slice(&bytes[56..]).expect("signature");
    root.verify_strict(&message, &signature).expect("root signature");
    certificate.verify(&keys.root_public, NOW_UNIX_SECS).expect("valid now");
    assert!(certificate.verify(&keys.root_public, CERT_NOT_AFTER + 1).is_err());
}

/// Reads the canonical encoding by hand, following the rules the document states, so the
/// document's description of bincode is checked and not only bincode against itself.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn string(&mut self) -> String {
        let len = self.u64() as usize;
        String::from_utf8(self.take(len).to_vec()).expect("utf-8")
    }
}

#[test]
fn manifest_fields() {
    let bytes = document_bytes("manifest");
    let manifest = Manifest::from_bytes(&bytes).expect("canonical, valid manifest");
    let oti = oti();
    assert_eq!(manifest, self::manifest(&oti));
    let mut r = Reader(&bytes);
    assert_eq!(r.u64(), OBJECT_ID);
    assert_eq!(r.u32(), 2, "kind codetable is variant 2");
    assert_eq!(r.string(), MANIFEST_NAME);
    assert_eq!(r.u64(), MANIFEST_VERSION);
    assert_eq!(r.u64(), 70, "size_bytes");
    assert_eq!(r.u32(), 0, "compression none is variant 0");
    assert_eq!(r.take(12), document_bytes("oti"));
    assert_eq!(r.take(32), blake3::hash(PAYLOAD).as_bytes());
    assert_eq!(r.u64(), 2, "two block hashes");
    assert_eq!(r.take(32), blake3::hash(&PAYLOAD[..48]).as_bytes());
    assert_eq!(r.take(32), blake3::hash(&PAYLOAD[48..]).as_bytes());
    assert_eq!(r.u64(), 3, "three targets");
    for target in MANIFEST_TARGETS {
        assert_eq!(r.string(), target);
    }
    assert_eq!(r.u64(), MANIFEST_CREATED);
    assert_eq!(r.u64(), MANIFEST_EXPIRES);
    assert!(r.0.is_empty(), "nothing after expires_unix_secs");
    assert_eq!(bytes.len(), 229);
}

#[test]
fn patch_manifest_fields() {
    let bytes = document_bytes("manifest-patch");
    let manifest = Manifest::from_bytes(&bytes).expect("canonical, valid manifest");
    assert_eq!(manifest, patch_manifest(&oti()));
    let plain = document_bytes("manifest");
    // Everything up to compression is the plain manifest's; then the variant and its fields.
    assert_eq!(bytes[..49], plain[..49]);
    let mut r = Reader(&bytes[49..]);
    assert_eq!(r.u32(), 2, "compression zstd patch is variant 2");
    assert_eq!(r.take(32), pattern(0x10), "base_hash");
    assert_eq!(r.u64(), PATCH_DELIVERED_BYTES, "delivered size_bytes");
    assert_eq!(r.take(32), pattern(0x40), "delivered hash");
    assert_eq!(r.0, &plain[53..], "the rest as in the plain manifest");
    assert_eq!(bytes.len(), 229 + 72);
    assert_eq!((manifest.delivered_size(), manifest.delivered_hash(), manifest.base_hash()), (100, pattern(0x40), Some(pattern(0x10))));
}

#[test]
fn signed_manifest_verifies_and_reassembles() {
    let keys = keys();
    let bytes = document_bytes("signed-manifest");
    let mut r = Reader(&bytes);
    let manifest_len = r.u64() as usize;
    assert_eq!(r.take(manifest_len), document_bytes("manifest"));
    assert_eq!(r.take(120), document_bytes("certificate"));
    let signature = r.take(64);
    assert!(r.0.is_empty());
    let message = [MANIFEST_CONTEXT, &document_bytes("manifest")].concat();
    let signer = ed25519_dalek::VerifyingKey::from_bytes(&keys.signing.public_key()).expect("key");
    signer.verify_strict(&message, &ed25519_dalek::Signature::from_slice(signature).expect("signature")).expect("manifest signature");
    let signed = SignedManifest::from_bytes(&bytes).expect("canonical signed manifest");
    let manifest = signed.verify(&keys.root_public, NOW_UNIX_SECS).expect("chain and signature");
    trust::check_acceptance(&manifest, COUNTY_CODE, NOW_UNIX_SECS, None).expect("accepted");
    assert!(manifest.targets_code(COUNTY_CODE));
    assert!(!manifest.targets_code("430102"));

    let hash = blake3::hash(&bytes);
    let digest = &hash.as_bytes()[..8];
    let room = MANIFEST_DATAGRAM_BYTES - 14 - 16 - 16;
    let mut fragments = Vec::new();
    for i in 0..MANIFEST_FRAGMENTS {
        fragments.push(document_bytes(&format!("manifest-datagram-{i}")));
    }
    let mut assembler = ManifestAssembler::default();
    let mut done = None;
    // Out of order, the last first: reassembly does not depend on order.
    for (i, datagram) in fragments.iter().enumerate().rev() {
        assert!(datagram.len() <= MANIFEST_DATAGRAM_BYTES);
        assert_eq!(&datagram[..6], &[b'S', b'C', b'S', b'T', 1, 2]);
        let parsed = wire::parse(datagram, &keys.network).expect("fragment parses");
        assert_eq!(parsed.object_id, OBJECT_ID);
        let Body::Manifest(fragment) = parsed.body else { panic!("not MANIFEST: {parsed:?}") };
        assert_eq!(fragment.digest, digest);
        assert_eq!(fragment.total_len as usize, bytes.len());
        assert_eq!(fragment.offset as usize, i * room);
        assert_eq!(fragment.bytes, &bytes[i * room..bytes.len().min((i + 1) * room)]);
        assert!(done.is_none());
        done = assembler.add(parsed.object_id, &fragment);
    }
    assert_eq!(done.as_deref(), Some(bytes.as_slice()));
    assert_eq!(bytes.len(), 421);
}

/// The heartbeat of heartbeat-datagram: the vector object is live, and the statement names
/// one other (kind, name).
fn vector_heartbeat() -> Heartbeat {
    Heartbeat {
        sequence: HEARTBEAT_SEQUENCE,
        uplink_time_unix_ms: HEARTBEAT_UPLINK_MS,
        live: vec![OBJECT_ID],
        live_complete: true,
        latest: vec![trust::LatestVersion {
            name: trust::name_digest(Kind::Policy, HEARTBEAT_LATEST_NAME),
            version: HEARTBEAT_LATEST_VERSION,
        }],
    }
}

#[test]
fn heartbeat_fields() {
    let keys = keys();
    let datagram = document_bytes("heartbeat-datagram");
    assert_eq!(&datagram[..14], &[b'S', b'C', b'S', b'T', 1, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
    let parsed = wire::parse(&datagram, &keys.network).expect("heartbeat parses");
    assert_eq!(parsed.object_id, 0);
    let Body::Heartbeat(body) = parsed.body else { panic!("not HEARTBEAT: {parsed:?}") };
    assert_eq!(body.len(), 241);
    let mut r = Reader(body);
    assert_eq!(r.u64(), HEARTBEAT_SEQUENCE);
    assert_eq!(r.u64(), HEARTBEAT_UPLINK_MS);
    assert_eq!((r.u64(), r.u64()), (1, OBJECT_ID), "one live object");
    assert_eq!(r.take(1), [1], "the live list is complete");
    assert_eq!(r.u64(), 1, "one latest version");
    let digest = *blake3::hash(b"satcast/v1/name\0policy\0notice.txt").as_bytes();
    assert_eq!(r.take(8), &digest[..8]);
    assert_eq!(r.u64(), HEARTBEAT_LATEST_VERSION);
    assert_eq!(r.take(120), document_bytes("certificate"));
    let message = [HEARTBEAT_CONTEXT, &body[..57]].concat();
    let signer = ed25519_dalek::VerifyingKey::from_bytes(&keys.signing.public_key()).expect("key");
    signer.verify_strict(&message, &ed25519_dalek::Signature::from_slice(r.take(64)).expect("signature")).expect("heartbeat signature");
    let heartbeat = trust::verify_heartbeat(body, &keys.root_public, NOW_UNIX_SECS).expect("verifies");
    assert_eq!(heartbeat, vector_heartbeat());
    assert_eq!(SignedHeartbeat::from_bytes(body).expect("canonical").certificate, *keys.signing.certificate());
    // The object id of a HEARTBEAT must be 0, even under a valid tag.
    let mut readdressed = datagram.clone();
    readdressed[6..14].copy_from_slice(&OBJECT_ID.to_be_bytes());
    retag(&mut readdressed);
    assert_eq!(wire::parse(&readdressed, &keys.network), Err(WireError::Body { kind: "heartbeat", len: 241 }));
}

#[test]
fn round_fields() {
    let keys = keys();
    let datagram = document_bytes("round-datagram");
    assert_eq!(datagram.len(), 14 + 4 + 16);
    assert_eq!(&datagram[..18], &[b'S', b'C', b'S', b'T', 1, 4, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0, 0, 1]);
    let parsed = wire::parse(&datagram, &keys.network).expect("round parses");
    assert_eq!(parsed.object_id, OBJECT_ID);
    assert_eq!(parsed.body, Body::Round { round: ROUND });
    // The body is exactly 4 bytes.
    for len in [3, 5] {
        let mut datagram = Vec::new();
        wire::write_round(&mut datagram, &keys.network, OBJECT_ID, ROUND);
        datagram.truncate(14);
        datagram.extend_from_slice(&[0, 0, 0, 1, 0][..len]);
        datagram.extend_from_slice(&[0; 16]);
        retag(&mut datagram);
        assert_eq!(wire::parse(&datagram, &keys.network), Err(WireError::Body { kind: "round", len }));
    }
    // Types other than 1 to 6 and 8 (7 is reserved) are refused after the tag.
    let mut unknown = datagram.clone();
    unknown[5] = 9;
    retag(&mut unknown);
    assert_eq!(wire::parse(&unknown, &keys.network), Err(WireError::Type(9)));
}

#[test]
fn revocation_fields() {
    let keys = keys();
    let datagram = document_bytes("revocation-datagram");
    assert_eq!(datagram.len(), 14 + 104 + 16);
    assert_eq!(&datagram[..14], &[b'S', b'C', b'S', b'T', 1, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
    let parsed = wire::parse(&datagram, &keys.network).expect("revocation parses");
    assert_eq!(parsed.object_id, 0);
    let Body::Revocation(body) = parsed.body else { panic!("not REVOCATION: {parsed:?}") };
    assert_eq!(body.len(), 104);
    let mut r = Reader(body);
    assert_eq!(r.u64(), REVOCATION_SEQUENCE);
    assert_eq!(r.u64(), REVOCATION_ISSUED);
    assert_eq!(r.u64(), REVOKED_SERIALS.len() as u64, "serial count");
    for serial in REVOKED_SERIALS {
        assert_eq!(r.u64(), serial);
    }
    // The root signs the context string followed by the 40-byte canonical Revocation.
    let message = [REVOCATION_CONTEXT, &body[..40]].concat();
    let root = ed25519_dalek::VerifyingKey::from_bytes(&keys.root_public.0).expect("root key");
    root.verify_strict(&message, &ed25519_dalek::Signature::from_slice(r.take(64)).expect("signature")).expect("root signature");
    assert!(r.0.is_empty(), "nothing after the signature");
    assert_eq!(trust::verify_revocation(body, &keys.root_public).expect("verifies"), revocation());
    assert_eq!(SignedRevocation::from_bytes(body).expect("canonical").revocation, revocation());

    // A list signed by any other key is refused, even one that holds a signing certificate.
    let not_root =
        RootKey::from_text(&format!("{} {}", trust::ROOT_SECRET_LABEL, hex::encode(pattern(0x40)))).expect("the signing secret as a key");
    let forged = not_root.sign_revocation(revocation()).expect("sign").to_bytes();
    assert!(matches!(trust::verify_revocation(&forged, &keys.root_public), Err(TrustError::BadCertificateSignature)));
    // The object id of a REVOCATION must be 0.
    let mut readdressed = datagram.clone();
    readdressed[6..14].copy_from_slice(&OBJECT_ID.to_be_bytes());
    retag(&mut readdressed);
    assert_eq!(wire::parse(&readdressed, &keys.network), Err(WireError::Body { kind: "revocation", len: 104 }));
    // At most REVOKED_SERIALS_MAX serials, when signing and when verifying.
    let too_many = Revocation { revoked_serials: (0..=REVOKED_SERIALS_MAX as u64).collect(), ..revocation() };
    assert!(
        matches!(keys.root.sign_revocation(too_many.clone()), Err(TrustError::TooManyRevoked { count }) if count == REVOKED_SERIALS_MAX + 1)
    );
    let unsigned = SignedRevocation { revocation: too_many, root_signature: [0; 64] }.to_bytes();
    assert!(matches!(trust::verify_revocation(&unsigned, &keys.root_public), Err(TrustError::TooManyRevoked { .. })));
    // The decoding limit: 24 + 8 * 130 + 64 = 1128 bytes.
    let longest = SignedRevocation { revocation: Revocation { revoked_serials: vec![7; 130], ..revocation() }, root_signature: [0; 64] };
    assert_eq!(longest.to_bytes().len(), 1128);
    assert!(SignedRevocation::from_bytes(&longest.to_bytes()).is_ok());
    let mut longer = longest.to_bytes();
    longer.extend_from_slice(&[0; 8]);
    assert!(SignedRevocation::from_bytes(&longer).is_err());
}

fn events(county: &mut Reception) -> Vec<ReceptionEvent> {
    std::iter::from_fn(|| county.poll_event()).collect()
}

fn air(county: &mut Reception, store: &mut MemoryStore, now: Instant, datagram: &[u8]) {
    county.handle_datagram(now, NOW_UNIX_SECS, datagram);
    satcast_protocol::storage::drain(county, store);
}

fn air_manifest(county: &mut Reception, store: &mut MemoryStore, now: Instant) {
    for i in 0..MANIFEST_FRAGMENTS {
        air(county, store, now, &document_bytes(&format!("manifest-datagram-{i}")));
    }
}

fn revocation_datagram(keys: &Keys, sequence: u64, revoked_serials: Vec<u64>) -> Vec<u8> {
    let list = Revocation { sequence, issued_unix_secs: REVOCATION_ISSUED, revoked_serials };
    let mut datagram = Vec::new();
    wire::write_revocation(&mut datagram, &keys.network, &keys.root.sign_revocation(list).expect("sign").to_bytes());
    datagram
}

#[test]
fn a_receiver_takes_only_newer_lists_and_drops_what_a_revoked_key_signed() {
    let keys = keys();
    let mut county = receiver(&keys);
    let mut store = MemoryStore::default();
    let now = Instant::now();
    air_manifest(&mut county, &mut store, now);
    assert!(events(&mut county).iter().any(|e| matches!(e, ReceptionEvent::Accepted { .. })));
    air(&mut county, &mut store, now, &document_bytes("revocation-datagram"));
    let got = events(&mut county);
    assert!(
        matches!(got.as_slice(), [ReceptionEvent::RevocationsUpdated { sequence: REVOCATION_SEQUENCE, revoked_serials }] if *revoked_serials == REVOKED_SERIALS),
        "{got:?}"
    );
    assert_eq!(county.progress().len(), 1, "serial 1 is not revoked: the object is still received");
    // The same list again (it follows every heartbeat), or an older one, is ignored silently.
    air(&mut county, &mut store, now, &document_bytes("revocation-datagram"));
    air(&mut county, &mut store, now, &revocation_datagram(&keys, REVOCATION_SEQUENCE - 1, vec![1]));
    assert!(events(&mut county).is_empty());
    assert_eq!(county.progress().len(), 1, "an older list cannot revoke anything");
    // A newer list naming serial 1: the partial object it signed is dropped, its manifests
    // and heartbeats are refused.
    air(&mut county, &mut store, now, &revocation_datagram(&keys, REVOCATION_SEQUENCE + 1, vec![1, 2, 5]));
    let got = events(&mut county);
    assert!(
        got.iter().any(|e| matches!(
            e,
            ReceptionEvent::Refused { object_id: OBJECT_ID, refusal, .. } if refusal.code == satcast_protocol::feedback::RefusalCode::KeyRevoked
        )),
        "{got:?}"
    );
    let told = std::iter::from_fn(|| county.poll_feedback()).filter(|f| matches!(f.message, FeedbackMessage::Refused { .. })).count();
    assert_eq!(told, 1, "the uplink is told why");
    assert!(got.iter().any(|e| matches!(e, ReceptionEvent::RevocationsUpdated { sequence: 4, .. })), "{got:?}");
    assert!(county.progress().is_empty(), "the partial object is dropped");
    // Its manifest again: refused, and the uplink, told already, is not told again.
    air_manifest(&mut county, &mut store, now);
    let got = events(&mut county);
    assert!(!got.iter().any(|e| matches!(e, ReceptionEvent::Accepted { .. })), "{got:?}");
    assert!(county.progress().is_empty());
    assert!(std::iter::from_fn(|| county.poll_feedback()).all(|f| !matches!(f.message, FeedbackMessage::Refused { .. })));
    air(&mut county, &mut store, now, &document_bytes("heartbeat-datagram"));
    let got = events(&mut county);
    assert!(got.iter().any(|e| matches!(e, ReceptionEvent::HeartbeatRejected { reason } if reason.contains("revoked"))), "{got:?}");
}

#[test]
fn feedback_progress_fields() {
    let bytes = document_bytes("feedback-progress");
    assert_eq!(bytes.len(), 55);
    assert_eq!(bytes[0], FEEDBACK_VERSION);
    let mut r = Reader(&bytes[1..]);
    assert_eq!(r.string(), COUNTY_CODE);
    assert_eq!(r.u32(), 1, "Progress is variant 1");
    assert_eq!(r.u64(), OBJECT_ID);
    assert_eq!(r.u32(), ROUND);
    assert_eq!(r.u64(), PROGRESS_NEEDS.len() as u64, "one need per block");
    for need in PROGRESS_NEEDS {
        assert_eq!(r.u32(), need);
    }
    assert_eq!(r.u64(), PROGRESS_SYMBOLS_RECEIVED);
    assert!(r.0.is_empty(), "nothing after symbols_received");
    assert_eq!(Feedback::from_bytes(&bytes).expect("decodes"), progress());
}

#[test]
fn feedback_complete_fields() {
    let bytes = document_bytes("feedback-complete");
    assert_eq!(bytes.len(), 59);
    assert_eq!(bytes[0], FEEDBACK_VERSION);
    let mut r = Reader(&bytes[1..]);
    assert_eq!(r.string(), COUNTY_CODE);
    assert_eq!(r.u32(), 2, "Complete is variant 2");
    assert_eq!(r.u64(), OBJECT_ID);
    assert_eq!(r.take(32), blake3::hash(PAYLOAD).as_bytes());
    assert!(r.0.is_empty(), "nothing after object_hash");
    assert_eq!(Feedback::from_bytes(&bytes).expect("decodes"), complete());
}

/// The variants without a vector, laid out as the document's tables say, and the bounds.
#[test]
fn feedback_layouts_and_bounds() {
    let county = |message| Feedback { county_code: COUNTY_CODE.to_owned(), message };
    let header = |variant: u32| [&[FEEDBACK_VERSION][..], &6u64.to_be_bytes(), COUNTY_CODE.as_bytes(), &variant.to_be_bytes()].concat();
    let string = |s: &str| [&(s.len() as u64).to_be_bytes()[..], s.as_bytes()].concat();
    let hello =
        |age| county(FeedbackMessage::Hello { software_version: "0.1.0".into(), free_disk_bytes: 5_000_000_000, heartbeat_age_ms: age });
    let expected = [header(0), string("0.1.0"), 5_000_000_000u64.to_be_bytes().to_vec(), vec![1], 1500u64.to_be_bytes().to_vec()].concat();
    assert_eq!(hello(Some(1500)).to_bytes(), expected, "Hello with a heartbeat age");
    let expected = [header(0), string("0.1.0"), 5_000_000_000u64.to_be_bytes().to_vec(), vec![0]].concat();
    assert_eq!(hello(None).to_bytes(), expected, "Hello without one");
    let rejected = county(FeedbackMessage::Rejected { object_id: OBJECT_ID, reason: "expired".into() });
    assert_eq!(rejected.to_bytes(), [header(3), OBJECT_ID.to_be_bytes().to_vec(), string("expired")].concat());
    let hook = county(FeedbackMessage::HookResult { object_id: OBJECT_ID, success: false, detail: "exit status 3".into() });
    assert_eq!(hook.to_bytes(), [header(4), OBJECT_ID.to_be_bytes().to_vec(), vec![0], string("exit status 3")].concat());
    for feedback in [hello(Some(1500)), hello(None), rejected.clone(), hook, progress(), complete()] {
        assert_eq!(Feedback::from_bytes(&feedback.to_bytes()).expect("roundtrip"), feedback);
    }

    let refused = |bytes: &[u8]| Feedback::from_bytes(bytes).err().map(|e| e.to_string()).unwrap_or_default();
    let progress_bytes = document_bytes("feedback-progress");
    assert!(matches!(Feedback::from_bytes(&[]), Err(FeedbackError::Empty)));
    assert!(matches!(Feedback::from_bytes(&[[2].as_slice(), &progress_bytes[1..]].concat()), Err(FeedbackError::Version(2))));
    assert!(matches!(Feedback::from_bytes(&vec![FEEDBACK_VERSION; FEEDBACK_BYTES_MAX + 1]), Err(FeedbackError::TooLarge(_))));
    assert!(matches!(Feedback::from_bytes(&[progress_bytes.as_slice(), &[0]].concat()), Err(FeedbackError::TrailingBytes(1))));
    assert!(matches!(Feedback::from_bytes(&progress_bytes[..progress_bytes.len() - 1]), Err(FeedbackError::Decode(_))));
    // Unknown variant, Option tag and bool values are refused.
    let mut unknown = complete().to_bytes();
    unknown[15..19].copy_from_slice(&5u32.to_be_bytes());
    assert!(matches!(Feedback::from_bytes(&unknown), Err(FeedbackError::Decode(_))));
    let mut tag = hello(None).to_bytes();
    *tag.last_mut().expect("tag") = 2;
    assert!(matches!(Feedback::from_bytes(&tag), Err(FeedbackError::Decode(_))), "{}", refused(&tag));
    let mut boolean = county(FeedbackMessage::HookResult { object_id: 1, success: true, detail: String::new() }).to_bytes();
    boolean[27] = 2;
    assert!(matches!(Feedback::from_bytes(&boolean), Err(FeedbackError::Decode(_))), "{}", refused(&boolean));
    // Bounds.
    let bounds = |feedback: Feedback| matches!(Feedback::from_bytes(&feedback.to_bytes()), Err(FeedbackError::Bounds(_)));
    for code in ["41", "4101020", "41010a", ""] {
        assert!(bounds(Feedback { county_code: code.into(), ..complete() }), "{code:?}");
    }
    let needs = |n: usize| county(FeedbackMessage::Progress { object_id: 1, round: 0, needs: vec![1; n], symbols_received: 0 });
    assert!(bounds(needs(0)) && bounds(needs(NEEDS_MAX + 1)));
    assert!(Feedback::from_bytes(&needs(NEEDS_MAX).to_bytes()).is_ok());
    let text = |n: usize| "x".repeat(n);
    assert!(bounds(county(FeedbackMessage::Rejected { object_id: 1, reason: text(TEXT_BYTES_MAX + 1) })));
    assert!(bounds(county(FeedbackMessage::HookResult { object_id: 1, success: true, detail: text(TEXT_BYTES_MAX + 1) })));
    assert!(bounds(county(FeedbackMessage::Hello {
        software_version: text(TEXT_BYTES_MAX + 1),
        free_disk_bytes: 0,
        heartbeat_age_ms: None
    })));
    assert!(Feedback::from_bytes(&county(FeedbackMessage::Rejected { object_id: 1, reason: text(TEXT_BYTES_MAX) }).to_bytes()).is_ok());
}

/// The feedback vectors are what a receiver sends: Progress after the ROUND vector, with
/// block 0 verified and one symbol of block 1; Complete once the object is delivered, and
/// again for a later ROUND marker.
#[test]
fn a_receiver_sends_the_feedback_vectors() {
    let keys = keys();
    let oti = oti();
    let mut county = receiver(&keys);
    let mut store = MemoryStore::default();
    let now = Instant::now();
    air_manifest(&mut county, &mut store, now);
    // The manifest taught the signing key; the list names every symbol below and the marker.
    air(&mut county, &mut store, now, &document_bytes("symbol-list-datagram"));
    let data = |sbn: u8, esi: u32| {
        let mut datagram = Vec::new();
        wire::write_data(&mut datagram, &keys.network, OBJECT_ID, sbn, esi, &symbol(&oti, sbn, esi));
        datagram
    };
    for datagram in [data(0, 0), data(0, 1), document_bytes("data-repair-datagram"), document_bytes("data-source-datagram")] {
        air(&mut county, &mut store, now, &datagram);
    }
    assert!(events(&mut county).iter().any(|e| matches!(e, ReceptionEvent::BlockVerified { sbn: 0, .. })));
    assert_eq!(county.poll_feedback(), None, "nothing is reported before a ROUND marker");
    for _ in 0..3 {
        air(&mut county, &mut store, now, &document_bytes("round-datagram"));
    }
    let due = county.poll_timeout().expect("a report is due");
    assert!(due <= now + Duration::from_secs(1), "within the report window");
    county.handle_timeout(now + Duration::from_secs(1));
    assert_eq!(county.poll_feedback(), Some(Feedback::from_bytes(&document_bytes("feedback-progress")).expect("decodes")));
    assert_eq!(county.poll_feedback(), None, "three copies of the marker, one report");

    air(&mut county, &mut store, now, &data(1, 0));
    let manifest = events(&mut county)
        .into_iter()
        .find_map(|e| match e {
            ReceptionEvent::Complete { manifest } => Some(manifest),
            _ => None,
        })
        .expect("the object completes");
    assert_eq!(county.poll_feedback(), None, "no Complete before the driver made the object durable");
    county.mark_delivered(&manifest);
    let complete_vector = Feedback::from_bytes(&document_bytes("feedback-complete")).expect("decodes");
    assert_eq!(county.poll_feedback(), Some(complete_vector.clone()));
    // The uplink asks again (its copy may have been lost): Complete again, for a round > 0.
    air(&mut county, &mut store, now, &document_bytes("round-datagram"));
    assert_eq!(county.poll_feedback(), Some(complete_vector));
    let mut round_zero = Vec::new();
    wire::write_round(&mut round_zero, &keys.network, OBJECT_ID, 0);
    air(&mut county, &mut store, now, &round_zero);
    assert_eq!(county.poll_feedback(), None, "a round 0 marker does not");
}

/// Prints every vector block as it belongs in docs/protocol.md.
#[test]
#[ignore = "prints the vectors for docs/protocol.md; run with -- --ignored --nocapture"]
fn print_vectors() {
    for (name, vector) in generate() {
        println!("{} ({} bytes)\n\n{}", name, vector.bytes().len(), vector.render(&name));
    }
}
