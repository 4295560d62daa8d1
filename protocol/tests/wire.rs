//! Property tests for the datagram codec: roundtrips, and no panic on any input, including
//! inputs that carry a valid tag (what a holder of the network key could send).

use proptest::prelude::*;
use satcast_protocol::wire::{self, Body, ManifestAssembler, ManifestFragment, NetworkKey, WireError};

const KEY: NetworkKey = NetworkKey([0x5a; 32]);

fn config() -> ProptestConfig {
    // proptest prints the failing seed and persists it under proptest-regressions/ for replay.
    ProptestConfig { cases: 10_000, ..ProptestConfig::default() }
}

/// Seals arbitrary header and body bytes with a valid tag, as a key holder could.
fn sealed(header_and_body: &[u8]) -> Vec<u8> {
    let mut out = header_and_body.to_vec();
    let tag = blake3::keyed_hash(&KEY.0, &out);
    out.extend_from_slice(&tag.as_bytes()[..wire::TAG_LEN]);
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn data_roundtrips(object_id: u64, sbn: u8, esi in 0..=wire::ESI_MAX, symbol in prop::collection::vec(any::<u8>(), 1..1500)) {
        let mut buf = Vec::new();
        wire::write_data(&mut buf, &KEY, object_id, sbn, esi, &symbol);
        let parsed = wire::parse(&buf, &KEY).expect("a written datagram parses");
        prop_assert_eq!(parsed.object_id, object_id);
        prop_assert_eq!(parsed.body, Body::Data { sbn, esi, symbol: &symbol });
    }

    #[test]
    fn manifest_fragments_roundtrip(object_id: u64, manifest in prop::collection::vec(any::<u8>(), 1..6000), mtu in 100usize..1500) {
        let fragments = wire::manifest_fragments(&manifest, mtu);
        let mut assembler = ManifestAssembler::default();
        let mut done = None;
        let mut buf = Vec::new();
        for fragment in &fragments {
            wire::write_manifest_fragment(&mut buf, &KEY, object_id, fragment);
            prop_assert!(buf.len() <= mtu.max(wire::HEADER_LEN + wire::FRAGMENT_HEADER_LEN + wire::TAG_LEN + 1));
            let parsed = wire::parse(&buf, &KEY).expect("a written fragment parses");
            let Body::Manifest(parsed_fragment) = parsed.body else { panic!("not a manifest") };
            done = assembler.add(object_id, &parsed_fragment);
        }
        prop_assert_eq!(done, Some(manifest));
    }

    #[test]
    fn heartbeat_roundtrips(bytes in prop::collection::vec(any::<u8>(), 1..300)) {
        let mut buf = Vec::new();
        wire::write_heartbeat(&mut buf, &KEY, &bytes);
        let parsed = wire::parse(&buf, &KEY).expect("a written heartbeat parses");
        prop_assert_eq!(parsed.body, Body::Heartbeat(&bytes));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = wire::parse(&bytes, &KEY);
    }

    #[test]
    fn arbitrary_authenticated_bodies_never_panic(kind in 0u8..6, object_id: u64, body in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut raw = wire::MAGIC.to_vec();
        raw.push(wire::VERSION);
        raw.push(kind);
        raw.extend_from_slice(&object_id.to_be_bytes());
        raw.extend_from_slice(&body);
        let datagram = sealed(&raw);
        let mut assembler = ManifestAssembler::default();
        if let Ok(parsed) = wire::parse(&datagram, &KEY) {
            if let Body::Manifest(fragment) = parsed.body {
                let _ = assembler.add(parsed.object_id, &fragment);
            }
        }
    }

    #[test]
    fn any_single_bit_flip_is_refused(symbol in prop::collection::vec(any::<u8>(), 1..64), bit in 0usize..10_000) {
        let mut buf = Vec::new();
        wire::write_data(&mut buf, &KEY, 1, 0, 0, &symbol);
        let bit = bit % (buf.len() * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(wire::parse(&buf, &KEY).is_err());
    }

    #[test]
    fn forged_fragments_never_panic_the_assembler(frags in prop::collection::vec((any::<u64>(), any::<[u8; 8]>(), 0u32..70_000, 0u32..70_000, prop::collection::vec(any::<u8>(), 1..100)), 1..40)) {
        let mut assembler = ManifestAssembler::default();
        for (object_id, digest, total_len, offset, bytes) in &frags {
            let fragment = ManifestFragment { digest: *digest, total_len: *total_len, offset: *offset, bytes };
            // Only fragments the parser accepts reach the assembler.
            let mut buf = Vec::new();
            wire::write_manifest_fragment(&mut buf, &KEY, *object_id, &fragment);
            if let Ok(parsed) = wire::parse(&buf, &KEY) {
                if let Body::Manifest(fragment) = parsed.body {
                    let _ = assembler.add(parsed.object_id, &fragment);
                }
            }
        }
    }
}

/// A forgery a key holder could send while a genuine manifest airs.
#[derive(Debug, Clone)]
enum Forgery {
    /// Any digest, length, offset and bytes.
    Anything { object_id: u64, digest: [u8; 8], total_len: u32, offset: u32, bytes: Vec<u8> },
    /// The genuine digest and length, any offset and bytes (overlapping the genuine ones).
    Overlapping { offset: u32, bytes: Vec<u8> },
    /// Other bytes for the place of genuine fragment `index` (one per place, at most
    /// `CONTESTED_TRIED_MAX` places).
    Place { index: usize, fill: u8 },
}

/// A forged fragment to send: (object id, digest, total length, offset, bytes).
type Forged = (u64, [u8; 8], u32, u32, Vec<u8>);

fn forgery() -> impl Strategy<Value = Forgery> {
    prop_oneof![
        (any::<bool>(), any::<[u8; 8]>(), 1u32..70_000, any::<u32>(), prop::collection::vec(any::<u8>(), 1..300)).prop_map(
            |(same_object, digest, total_len, offset, bytes)| Forgery::Anything {
                object_id: if same_object { 0 } else { 1 },
                digest,
                total_len,
                offset: offset % total_len,
                bytes
            }
        ),
        (any::<u32>(), prop::collection::vec(any::<u8>(), 1..300)).prop_map(|(offset, bytes)| Forgery::Overlapping { offset, bytes }),
        (any::<usize>(), any::<u8>()).prop_map(|(index, fill)| Forgery::Place { index, fill }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever the order of a genuine manifest's fragments (each heard once) and however
    /// forgeries from a key holder are interleaved with them, the genuine manifest is
    /// assembled, and nothing else is. proptest prints the failing input and keeps it under
    /// proptest-regressions/ for replay.
    #[test]
    fn any_interleaving_with_forgeries_assembles_the_genuine_manifest(
        manifest in prop::collection::vec(any::<u8>(), 2..6000),
        mtu in 100usize..1500,
        order in prop::collection::vec(any::<u64>(), 64),
        forgeries in prop::collection::vec((forgery(), any::<u64>()), 0..120),
    ) {
        let object_id = 0;
        let genuine = wire::manifest_fragments(&manifest, mtu);
        let (digest, total_len) = (genuine[0].digest, genuine[0].total_len);
        let stride = genuine[0].bytes.len();
        // The genuine fragments in the order `order` gives (Fisher-Yates).
        let mut sequence: Vec<usize> = (0..genuine.len()).collect();
        for i in (1..sequence.len()).rev() {
            sequence.swap(i, (order[i % order.len()] % (i as u64 + 1)) as usize);
        }
        let mut places = std::collections::BTreeSet::new();
        let mut slots: Vec<Vec<Forged>> = vec![Vec::new(); genuine.len() + 1];
        for (forgery, at) in forgeries {
            let forged = match forgery {
                Forgery::Anything { object_id: id, digest, total_len, offset, mut bytes } => {
                    bytes.truncate((total_len - offset) as usize);
                    (id, digest, total_len, offset, bytes)
                }
                Forgery::Overlapping { offset, mut bytes } => {
                    let offset = offset % total_len;
                    bytes.truncate((total_len - offset) as usize);
                    let end = offset as usize + bytes.len();
                    // Not a copy of a genuine place: those are `Place` forgeries.
                    let aligned = offset as usize % stride == 0 && (bytes.len() == stride || end == manifest.len());
                    if aligned {
                        continue;
                    }
                    (object_id, digest, total_len, offset, bytes)
                }
                Forgery::Place { index, fill } => {
                    let index = index % genuine.len();
                    if !places.contains(&index) && places.len() >= wire::CONTESTED_TRIED_MAX {
                        continue;
                    }
                    if !places.insert(index) {
                        continue;
                    }
                    let bytes = vec![fill; genuine[index].bytes.len()];
                    if bytes == genuine[index].bytes {
                        continue;
                    }
                    (object_id, digest, total_len, genuine[index].offset, bytes)
                }
            };
            let gap = (at % slots.len() as u64) as usize;
            slots[gap].push(forged);
        }
        let mut assembler = ManifestAssembler::default();
        let mut assembled = Vec::new();
        for (position, forged) in slots.iter().enumerate() {
            for (id, digest, total_len, offset, bytes) in forged {
                let fragment = ManifestFragment { digest: *digest, total_len: *total_len, offset: *offset, bytes };
                assembled.extend(assembler.add(*id, &fragment));
            }
            if let Some(&index) = sequence.get(position) {
                assembled.extend(assembler.add(object_id, &genuine[index]));
            }
        }
        prop_assert_eq!(assembled, vec![manifest]);
        prop_assert!(assembler.candidates() <= wire::ASSEMBLIES_MAX);
    }
}

#[test]
fn every_truncation_of_a_valid_datagram_is_refused() {
    let mut buf = Vec::new();
    wire::write_data(&mut buf, &KEY, 77, 1, 2, &[9u8; 100]);
    for len in 0..buf.len() {
        assert!(wire::parse(&buf[..len], &KEY).is_err(), "truncated to {len} bytes");
    }
}

#[test]
fn typed_errors_for_framing() {
    let mut buf = Vec::new();
    wire::write_data(&mut buf, &KEY, 1, 0, 0, b"x");
    let mut bad_magic = buf.clone();
    bad_magic[0] = b'X';
    assert_eq!(wire::parse(&bad_magic, &KEY), Err(WireError::Magic));
    let mut bad_version = buf.clone();
    bad_version[4] = 2;
    assert_eq!(wire::parse(&bad_version, &KEY), Err(WireError::Version(2)));
    let mut bad_type = buf[..buf.len() - wire::TAG_LEN].to_vec();
    bad_type[5] = 9;
    assert_eq!(wire::parse(&sealed(&bad_type), &KEY), Err(WireError::Type(9)));
    assert_eq!(wire::parse(&[0u8; 10], &KEY), Err(WireError::Length(10)));
    assert_eq!(wire::parse(&vec![0u8; 70_000], &KEY), Err(WireError::Length(70_000)));
}
