//! Tests of the RaptorQ object codec (satcast_protocol::fec): OTI wire form and
//! validation, block partition against raptorq's own, per-block encode/decode under
//! loss, decode errors, and the interleaved sending order.
//!
//! Randomized tests print their seed; replay one with
//! `FEC_SEED=<seed> cargo test -p satcast-protocol --test fec <test name> -- --nocapture`.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::RngSeed;
use satcast_protocol::fec::{
    BLOCK_BYTES_MAX_LIMIT, BlockEncoder, DEFAULT_BLOCK_BYTES_MAX, DEFAULT_OBJECT_BYTES_MAX, ESI_MAX, FecError, OTI_LEN, Oti,
    SYMBOL_BATCH_MAX, SYMBOL_SIZE_MAX, block_hash, blocks, decode_block, interleave,
};

/// The seed used when FEC_SEED is not set, so a plain `cargo test` is deterministic.
const SEED_DEFAULT: u64 = 0x5a7c_a57f_ec00_0001;

/// The run's seed (FEC_SEED or the default), printed with the line that replays it.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("FEC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED_DEFAULT);
    println!("{test}: seed {seed}; replay: FEC_SEED={seed} cargo test -p satcast-protocol --test fec {test} -- --nocapture");
    seed
}

/// SplitMix64: a tiny deterministic generator, so the tests need no rand dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// True with probability permille / 1000.
    fn chance(&mut self, permille: u64) -> bool {
        self.next_u64() % 1000 < permille
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------
// OTI wire form and validation

/// A valid OTI whose bytes were worked out by hand from RFC 6330 sections 3.3.2/3.3.3.
fn hand_oti() -> (Oti, [u8; OTI_LEN]) {
    let oti = Oti {
        transfer_length: 0x0123_4567, // 19088743
        symbol_size: 1028,
        source_blocks: 2,
        sub_blocks: 1,
        alignment: 4,
    };
    let bytes = [
        0x00, 0x01, 0x23, 0x45, 0x67, // F, 40 bits
        0x00, // reserved
        0x04, 0x04, // T = 1028
        0x02, // Z
        0x00, 0x01, // N
        0x04, // Al
    ];
    (oti, bytes)
}

#[test]
fn oti_encodes_to_hand_checked_bytes_and_back() {
    let (oti, bytes) = hand_oti();
    assert_eq!(oti.encode(), bytes);
    assert_eq!(Oti::decode(&bytes), Ok(oti));
    // raptorq agrees on the layout.
    let r = raptorq::ObjectTransmissionInformation::new(19_088_743, 1028, 2, 1, 4);
    assert_eq!(r.serialize(), bytes);
    assert_eq!(oti.to_raptorq(), r);
}

#[test]
fn oti_roundtrips_for_new_for_object() {
    for (f, t) in [(1u64, 4u16), (1024, 1024), (1025, 1024), (100_000_000, 1400), (DEFAULT_OBJECT_BYTES_MAX, 1024)] {
        let oti = Oti::new_for_object(f, t, DEFAULT_BLOCK_BYTES_MAX).expect("valid object");
        assert_eq!(Oti::decode(&oti.encode()), Ok(oti), "F={f} T={t}");
    }
}

/// The hand OTI's bytes with one edit applied.
fn edited(edit: impl FnOnce(&mut [u8; OTI_LEN])) -> [u8; OTI_LEN] {
    let (_, mut bytes) = hand_oti();
    edit(&mut bytes);
    bytes
}

/// Bytes of an OTI with the given fields (F truncated to 40 bits, as on the wire).
fn oti_bytes(f: u64, t: u16, z: u8, n: u16, al: u8) -> [u8; OTI_LEN] {
    Oti { transfer_length: f, symbol_size: t, source_blocks: z, sub_blocks: n, alignment: al }.encode()
}

#[test]
fn oti_decode_rejects_every_invalid_field() {
    let cases: Vec<(Vec<u8>, FecError)> = vec![
        (vec![], FecError::OtiLength { len: 0 }),
        (vec![0; 11], FecError::OtiLength { len: 11 }),
        (vec![0; 13], FecError::OtiLength { len: 13 }),
        (edited(|b| b[5] = 1).to_vec(), FecError::OtiReserved { value: 1 }),
        (oti_bytes(0, 1024, 1, 1, 4).to_vec(), FecError::TransferLengthZero),
        (oti_bytes((1 << 40) - 1, 1024, 1, 1, 4).to_vec(), FecError::TransferLengthTooLarge { transfer_length: (1 << 40) - 1 }),
        (oti_bytes(942_574_504_276, 1024, 1, 1, 4).to_vec(), FecError::TransferLengthTooLarge { transfer_length: 942_574_504_276 }),
        (edited(|b| b[11] = 0).to_vec(), FecError::AlignmentInvalid { alignment: 0 }),
        (edited(|b| b[11] = 3).to_vec(), FecError::AlignmentInvalid { alignment: 3 }),
        (edited(|b| b[11] = 16).to_vec(), FecError::AlignmentInvalid { alignment: 16 }),
        (oti_bytes(1000, 0, 1, 1, 4).to_vec(), FecError::SymbolSizeZero),
        (oti_bytes(1000, 1026, 1, 1, 4).to_vec(), FecError::SymbolSizeUnaligned { symbol_size: 1026, alignment: 4 }),
        (oti_bytes(100_000, SYMBOL_SIZE_MAX + 8, 1, 1, 8).to_vec(), FecError::SymbolSizeTooLarge { symbol_size: SYMBOL_SIZE_MAX + 8 }),
        (oti_bytes(1000, 4, 1, 0, 4).to_vec(), FecError::SubBlockingUnsupported { sub_blocks: 0 }),
        (oti_bytes(1000, 4, 1, 2, 4).to_vec(), FecError::SubBlockingUnsupported { sub_blocks: 2 }),
        (oti_bytes(1000, 4, 0, 1, 4).to_vec(), FecError::SourceBlocksZero),
        (oti_bytes(10, 4, 4, 1, 4).to_vec(), FecError::SourceBlocksExceedSymbols { source_blocks: 4, symbols: 3 }),
        (oti_bytes(56_404 * 4, 4, 1, 1, 4).to_vec(), FecError::BlockSymbolsTooMany { symbols: 56_404 }),
        (oti_bytes(2 * 56_404 * 4 - 4, 4, 2, 1, 4).to_vec(), FecError::BlockSymbolsTooMany { symbols: 56_404 }),
        (oti_bytes(8193 * 8192, 8192, 1, 1, 8).to_vec(), FecError::BlockBytesTooLarge { bytes: 8193 * 8192 }),
    ];
    for (bytes, want) in cases {
        let got = Oti::decode(&bytes);
        assert_eq!(got, Err(want.clone()), "bytes {bytes:02x?}");
        let msg = want.to_string();
        assert!(!msg.starts_with(|c: char| c.is_uppercase()), "message not lowercase: {msg}");
    }
    // The largest valid block: K'max symbols and exactly BLOCK_BYTES_MAX_LIMIT bytes.
    assert!(Oti::decode(&oti_bytes(56_403 * 4, 4, 1, 1, 4)).is_ok());
    assert!(Oti::decode(&oti_bytes(BLOCK_BYTES_MAX_LIMIT, 8192, 1, 1, 8)).is_ok());
    assert!(Oti::decode(&oti_bytes(255 * BLOCK_BYTES_MAX_LIMIT, 8192, 255, 1, 8)).is_ok());
}

#[test]
fn new_for_object_picks_the_fewest_blocks() {
    // 16 KiB blocks of 1 KiB symbols: 100 symbols need 7 blocks (16 * 6 = 96 < 100).
    let oti = Oti::new_for_object(100 * 1024, 1024, 16 * 1024).expect("valid");
    assert_eq!((oti.source_blocks, oti.sub_blocks, oti.alignment), (7, 1, 4));
    let sizes: Vec<u32> = blocks(&oti).iter().map(|b| b.source_symbols).collect();
    assert_eq!(sizes, vec![15, 15, 14, 14, 14, 14, 14]);
    // A block limit that is not a multiple of T rounds down to whole symbols.
    assert_eq!(Oti::new_for_object(100 * 1024, 1024, 16 * 1024 + 1000).map(|o| o.source_blocks), Ok(7));
    // K'max caps the block even when the byte limit would allow more.
    let oti = Oti::new_for_object(56_404 * 4, 4, BLOCK_BYTES_MAX_LIMIT).expect("valid");
    assert_eq!(oti.source_blocks, 2);
    // One block when it fits.
    assert_eq!(Oti::new_for_object(1, 4, DEFAULT_BLOCK_BYTES_MAX).map(|o| o.source_blocks), Ok(1));
}

#[test]
fn new_for_object_rejects_what_it_cannot_describe() {
    let just_fits = Oti::new_for_object(DEFAULT_OBJECT_BYTES_MAX, 1024, DEFAULT_BLOCK_BYTES_MAX);
    assert_eq!(just_fits.map(|o| o.source_blocks), Ok(255));
    assert_eq!(
        Oti::new_for_object(DEFAULT_OBJECT_BYTES_MAX + 1, 1024, DEFAULT_BLOCK_BYTES_MAX),
        Err(FecError::ObjectTooLarge { transfer_length: DEFAULT_OBJECT_BYTES_MAX + 1, source_blocks: 256 })
    );
    assert_eq!(Oti::new_for_object(0, 1024, DEFAULT_BLOCK_BYTES_MAX), Err(FecError::TransferLengthZero));
    assert_eq!(Oti::new_for_object(10, 0, DEFAULT_BLOCK_BYTES_MAX), Err(FecError::SymbolSizeZero));
    assert_eq!(
        Oti::new_for_object(10, 1026, DEFAULT_BLOCK_BYTES_MAX),
        Err(FecError::SymbolSizeUnaligned { symbol_size: 1026, alignment: 4 })
    );
    assert_eq!(Oti::new_for_object(10, 8196, DEFAULT_BLOCK_BYTES_MAX), Err(FecError::SymbolSizeTooLarge { symbol_size: 8196 }));
    assert_eq!(Oti::new_for_object(10, 1024, 1023), Err(FecError::BlockBytesMaxInvalid { block_bytes_max: 1023, symbol_size: 1024 }));
    assert_eq!(
        Oti::new_for_object(10, 1024, BLOCK_BYTES_MAX_LIMIT + 1),
        Err(FecError::BlockBytesMaxInvalid { block_bytes_max: BLOCK_BYTES_MAX_LIMIT + 1, symbol_size: 1024 })
    );
}

#[test]
fn block_rejects_sbn_out_of_range() {
    let (oti, _) = hand_oti();
    assert!(oti.block(1).is_ok());
    assert_eq!(oti.block(2), Err(FecError::SbnOutOfRange { sbn: 2, source_blocks: 2 }));
    assert_eq!(oti.block(255), Err(FecError::SbnOutOfRange { sbn: 255, source_blocks: 2 }));
}

/// Everything a valid OTI promises: blocks tile [0, F) in SBN order exactly as raptorq
/// partitions the object, and raptorq accepts the OTI and each block without panicking.
fn check_valid_oti(oti: &Oti) -> Result<(), TestCaseError> {
    prop_assert_eq!(Oti::decode(&oti.encode()), Ok(*oti));
    // raptorq's constructor asserts its own limits; it must accept every valid OTI.
    let config =
        raptorq::ObjectTransmissionInformation::new(oti.transfer_length, oti.symbol_size, oti.source_blocks, oti.sub_blocks, oti.alignment);
    prop_assert_eq!(config, oti.to_raptorq());
    let list = blocks(oti);
    prop_assert_eq!(list.len(), usize::from(oti.source_blocks));
    // raptorq's block boundaries; its `data` argument only feeds a padding assertion,
    // so an empty slice avoids allocating the object.
    let theirs = raptorq::calculate_block_offsets(&[], &config);
    prop_assert_eq!(theirs.len(), list.len());
    let t = u64::from(oti.symbol_size);
    let mut next = 0u64;
    for (i, (b, &(start, end))) in list.iter().zip(&theirs).enumerate() {
        prop_assert_eq!(usize::from(b.sbn), i);
        prop_assert_eq!(b.offset, next);
        prop_assert!(b.len >= 1 && b.len <= u64::from(b.source_symbols) * t);
        prop_assert!(u64::from(b.source_symbols) * t <= BLOCK_BYTES_MAX_LIMIT);
        prop_assert_eq!((start as u64, end as u64), (b.offset, b.offset + u64::from(b.source_symbols) * t));
        prop_assert_eq!(oti.block(b.sbn), Ok(*b));
        let _decoder = raptorq::SourceBlockDecoder::new(b.sbn, &config, u64::from(b.source_symbols) * t);
        next += b.len;
    }
    prop_assert_eq!(next, oti.transfer_length);
    // Only the last block may be short.
    for b in list.iter().take(list.len().saturating_sub(1)) {
        prop_assert_eq!(b.len, u64::from(b.source_symbols) * t);
    }
    prop_assert!(oti.block(oti.source_blocks).is_err());
    Ok(())
}

/// 10,000 cases, seeded from FEC_SEED, with no regression files written into the repo.
fn proptest_config(test: &str) -> ProptestConfig {
    ProptestConfig { rng_seed: RngSeed::Fixed(seed(test)), failure_persistence: None, ..ProptestConfig::with_cases(10_000) }
}

/// OTI fields near the valid region, so a good share of cases pass validation and the
/// edges (K'max, 64 MiB blocks, Z = Kt) are hit: mostly F is derived from a chosen
/// per-block symbol count K, as Z * K - slack symbols less some padding bytes.
fn plausible_oti_bytes() -> impl Strategy<Value = [u8; OTI_LEN]> {
    let al = prop_oneof![9 => proptest::sample::select(vec![1u8, 2, 4, 8]), 1 => any::<u8>()];
    let t = prop_oneof![3 => 1u16..=64, 3 => 1u16..=SYMBOL_SIZE_MAX + 16, 1 => any::<u16>()];
    let z = prop_oneof![4 => 1u8..=8, 1 => any::<u8>()];
    let k = prop_oneof![3 => 1u64..=300, 2 => 1u64..=56_404, 1 => 56_390u64..=56_410];
    let n = prop_oneof![9 => Just(1u16), 1 => any::<u16>()];
    let reserved = prop_oneof![19 => Just(0u8), 1 => any::<u8>()];
    let raw_f = prop_oneof![9 => Just(None), 1 => any::<u64>().prop_map(Some)];
    (t, z, k, n, al, reserved, raw_f, any::<u64>()).prop_map(|(t, z, k, n, al, reserved, raw_f, r)| {
        // Usually round T to the alignment so the deeper checks are reached.
        let t = if r % 8 != 0 && matches!(al, 1 | 2 | 4 | 8) { (t / u16::from(al)).max(1) * u16::from(al) } else { t };
        let f = raw_f.unwrap_or_else(|| {
            let (tt, zz) = (u64::from(t.max(1)), u64::from(z.max(1)));
            let (slack, pad) = ((r >> 8) % zz, (r >> 24) % tt);
            ((zz * k - slack) * tt).saturating_sub(pad).max(1)
        });
        let mut bytes = oti_bytes(f, t, z, n, al);
        bytes[5] = reserved;
        bytes
    })
}

proptest! {
    #![proptest_config(proptest_config("oti_decode_arbitrary_12_bytes"))]
    #[test]
    fn oti_decode_arbitrary_12_bytes(bytes in any::<[u8; OTI_LEN]>()) {
        if let Ok(oti) = Oti::decode(&bytes) {
            check_valid_oti(&oti)?;
        }
    }
}

proptest! {
    #![proptest_config(proptest_config("oti_decode_arbitrary_length"))]
    #[test]
    fn oti_decode_arbitrary_length(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        match Oti::decode(&bytes) {
            Ok(oti) => check_valid_oti(&oti)?,
            Err(FecError::OtiLength { len }) => prop_assert!(len != OTI_LEN && len == bytes.len()),
            Err(_) => prop_assert_eq!(bytes.len(), OTI_LEN),
        }
    }
}

#[test]
fn plausible_oti_generator_reaches_valid_otis() {
    // The proptests below are only as good as the share of cases that pass validation.
    let mut runner = proptest::test_runner::TestRunner::new(proptest_config("plausible_oti_generator_reaches_valid_otis"));
    let strategy = plausible_oti_bytes();
    let mut valid = 0;
    for _ in 0..2000 {
        let bytes = strategy.new_tree(&mut runner).expect("generate").current();
        valid += usize::from(Oti::decode(&bytes).is_ok());
    }
    println!("{valid} of 2000 plausible OTIs valid");
    assert!(valid >= 200, "only {valid} of 2000 plausible OTIs valid");
}

proptest! {
    #![proptest_config(proptest_config("oti_decode_plausible_fields"))]
    #[test]
    fn oti_decode_plausible_fields(bytes in plausible_oti_bytes()) {
        if let Ok(oti) = Oti::decode(&bytes) {
            check_valid_oti(&oti)?;
        }
    }
}

proptest! {
    #![proptest_config(proptest_config("new_for_object_always_valid"))]
    #[test]
    fn new_for_object_always_valid(
        f in prop_oneof![1u64..=100_000, 1u64..=1 << 34, 1u64..=u64::MAX],
        t in (1u16..=SYMBOL_SIZE_MAX / 4).prop_map(|t| t * 4),
        block_bytes_max in prop_oneof![1u64..=1 << 20, 1u64..=BLOCK_BYTES_MAX_LIMIT + 1],
    ) {
        match Oti::new_for_object(f, t, block_bytes_max) {
            Ok(oti) => {
                check_valid_oti(&oti)?;
                // Smallest Z: every block within the limit, and one block fewer would not do.
                let k_max = (block_bytes_max / u64::from(t)).min(56_403);
                let kt = f.div_ceil(u64::from(t));
                prop_assert_eq!(u64::from(oti.source_blocks), kt.div_ceil(k_max));
            }
            Err(FecError::ObjectTooLarge { .. } | FecError::BlockBytesMaxInvalid { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Encoding and decoding

/// Which symbols a receiver gets in a roundtrip.
#[derive(Clone, Copy, Debug)]
enum Reception {
    /// Source then repair symbols, each lost with this probability (permille).
    Lossy { loss_permille: u64 },
    /// Only repair symbols, from this ESI up.
    RepairOnlyFrom { first_esi: u32 },
}

/// Receives block `sbn` through `reception`: gathers K + 1 symbols, decodes, and on
/// DecodeFailed gathers one more and retries (bounded). Returns the decoded block.
fn receive_block(oti: &Oti, encoder: &BlockEncoder, sbn: u8, reception: Reception, rng: &mut Rng) -> Vec<u8> {
    let k = encoder.source_symbols();
    let (mut esi, loss) = match reception {
        Reception::Lossy { loss_permille } => (0u32, loss_permille),
        Reception::RepairOnlyFrom { first_esi } => (first_esi, 0),
    };
    let mut received: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut want = k as usize + 1;
    let esi_end = (esi + 4 * k + 1000).min(ESI_MAX + 1); // bounds the loop
    while esi < esi_end {
        if received.len() >= want {
            match decode_block(oti, sbn, received.clone()) {
                Ok(out) => return out,
                Err(FecError::DecodeFailed { .. }) => want += 1,
                Err(e) => panic!("block {sbn}: unexpected {e}"),
            }
        }
        if !rng.chance(loss) {
            let mut symbol = Vec::new();
            encoder.symbol_into(esi, &mut symbol).expect("esi in range");
            received.push((esi, symbol));
        }
        esi += 1;
    }
    panic!("block {sbn}: no decode after {} symbols", received.len());
}

/// Encodes an object of `f` random bytes, receives every block through `reception`,
/// and checks the result, block hashes, and raptorq's whole-object decoder on the same
/// symbols.
fn roundtrip(test: &str, f: usize, t: u16, block_bytes_max: u64, reception: Reception) -> Oti {
    let mut rng = Rng::new(seed(test), f as u64);
    let data = rng.bytes(f);
    let oti = Oti::new_for_object(f as u64, t, block_bytes_max).expect("valid object");
    let mut rebuilt = Vec::with_capacity(f);
    let mut whole = raptorq::Decoder::new(oti.to_raptorq());
    for block in blocks(&oti) {
        let start = block.offset as usize;
        let part = &data[start..start + block.len as usize];
        let encoder = BlockEncoder::new(&oti, block.sbn, part).expect("encoder");
        assert_eq!(encoder.source_symbols(), block.source_symbols);
        let out = receive_block(&oti, &encoder, block.sbn, reception, &mut rng);
        assert_eq!(out.len() as u64, block.len, "block {} length", block.sbn);
        assert_eq!(block_hash(&out), block_hash(part), "block {} content", block.sbn);
        rebuilt.extend_from_slice(&out);
        // raptorq's own whole-object decoder reads our symbols too.
        let k = block.source_symbols;
        let first = match reception {
            Reception::Lossy { .. } => k / 3,
            Reception::RepairOnlyFrom { first_esi } => first_esi,
        };
        for (esi, symbol) in encoder.repair_symbols(first, k + 8).expect("batch") {
            whole.add_new_packet(raptorq::EncodingPacket::new(raptorq::PayloadId::new(block.sbn, esi), symbol));
        }
    }
    assert!(rebuilt == data, "object differs");
    assert!(whole.get_result() == Some(data), "raptorq::Decoder disagrees");
    oti
}

#[test]
fn roundtrip_one_byte() {
    let oti = roundtrip("roundtrip_one_byte", 1, 256, DEFAULT_BLOCK_BYTES_MAX, Reception::Lossy { loss_permille: 300 });
    assert_eq!(blocks(&oti).len(), 1);
    roundtrip("roundtrip_one_byte", 1, 256, DEFAULT_BLOCK_BYTES_MAX, Reception::RepairOnlyFrom { first_esi: 1_000_000 });
}

#[test]
fn roundtrip_exactly_one_symbol_and_one_more() {
    for f in [256, 257] {
        roundtrip("roundtrip_exactly_one_symbol_and_one_more", f, 256, DEFAULT_BLOCK_BYTES_MAX, Reception::Lossy { loss_permille: 300 });
        roundtrip(
            "roundtrip_exactly_one_symbol_and_one_more",
            f,
            256,
            DEFAULT_BLOCK_BYTES_MAX,
            Reception::RepairOnlyFrom { first_esi: 1_000_000 },
        );
    }
}

#[test]
fn roundtrip_many_uneven_blocks_with_loss() {
    // Kt = 782 symbols in blocks of at most 200: Z = 4, two blocks of 196 then two of 195.
    let oti = roundtrip("roundtrip_many_uneven_blocks_with_loss", 50_003, 64, 64 * 200, Reception::Lossy { loss_permille: 300 });
    let sizes: Vec<u32> = blocks(&oti).iter().map(|b| b.source_symbols).collect();
    assert_eq!(sizes, vec![196, 196, 195, 195]);
}

#[test]
fn roundtrip_many_uneven_blocks_repair_only() {
    roundtrip("roundtrip_many_uneven_blocks_repair_only", 50_001, 64, 64 * 150, Reception::RepairOnlyFrom { first_esi: 1_000_000 });
}

#[test]
fn roundtrip_near_esi_max() {
    // The very last ESIs work and decode.
    roundtrip("roundtrip_near_esi_max", 3000, 64, DEFAULT_BLOCK_BYTES_MAX, Reception::RepairOnlyFrom { first_esi: ESI_MAX - 60 });
}

#[test]
fn symbols_match_raptorq_encoder_esi_for_esi() {
    let mut rng = Rng::new(seed("symbols_match_raptorq_encoder_esi_for_esi"), 1);
    let data = rng.bytes(30_001);
    let oti = Oti::new_for_object(30_001, 64, 64 * 100).expect("valid");
    let theirs = raptorq::Encoder::new(&data, oti.to_raptorq());
    let their_blocks = theirs.get_block_encoders();
    assert_eq!(their_blocks.len(), blocks(&oti).len());
    for (block, their) in blocks(&oti).iter().zip(their_blocks) {
        let start = block.offset as usize;
        let ours = BlockEncoder::new(&oti, block.sbn, &data[start..start + block.len as usize]).expect("encoder");
        let k = ours.source_symbols();
        let mut expected: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for p in their.source_packets().into_iter().chain(their.repair_packets(0, 5)).chain(their.repair_packets(1000, 3)) {
            assert_eq!(p.payload_id().source_block_number(), block.sbn);
            expected.insert(p.payload_id().encoding_symbol_id(), p.data().to_vec());
        }
        // raptorq 2.x numbers repair symbols from K: repair_packets(r, _) starts at ESI K + r.
        assert!(expected.contains_key(&(k + 1000)) && expected.len() == k as usize + 8);
        for (&esi, symbol) in &expected {
            let mut out = vec![0xAA]; // symbol_into appends
            ours.symbol_into(esi, &mut out).expect("esi");
            assert_eq!(&out[1..], &symbol[..], "sbn {} esi {esi}", block.sbn);
        }
        let batch = ours.repair_symbols(k - 2, 7).expect("batch");
        let esis: Vec<u32> = batch.iter().map(|(e, _)| *e).collect();
        assert_eq!(esis, (k - 2..k + 5).collect::<Vec<_>>());
        for (esi, symbol) in batch {
            assert_eq!(Some(&symbol), expected.get(&esi), "batch esi {esi}");
        }
    }
}

#[test]
fn encoder_rejects_bad_arguments() {
    let oti = Oti::new_for_object(1000, 64, DEFAULT_BLOCK_BYTES_MAX).expect("valid");
    assert_eq!(BlockEncoder::new(&oti, 0, &[0; 999]).map(|_| ()), Err(FecError::DataLength { expected: 1000, actual: 999 }));
    assert_eq!(BlockEncoder::new(&oti, 1, &[0; 1000]).map(|_| ()), Err(FecError::SbnOutOfRange { sbn: 1, source_blocks: 1 }));
    let encoder = BlockEncoder::new(&oti, 0, &[7; 1000]).expect("encoder");
    let mut out = Vec::new();
    encoder.symbol_into(ESI_MAX, &mut out).expect("last esi");
    assert_eq!(out.len(), 64);
    assert_eq!(encoder.symbol_into(ESI_MAX + 1, &mut out), Err(FecError::EsiOutOfRange { esi: u64::from(ESI_MAX) + 1 }));
    assert_eq!(out.len(), 64, "nothing appended on error");
    assert_eq!(encoder.repair_symbols(ESI_MAX, 1).map(|v| v.len()), Ok(1));
    assert_eq!(encoder.repair_symbols(ESI_MAX, 2), Err(FecError::EsiOutOfRange { esi: u64::from(ESI_MAX) + 1 }));
    assert_eq!(encoder.repair_symbols(u32::MAX, 1), Err(FecError::EsiOutOfRange { esi: u64::from(u32::MAX) }));
    assert_eq!(encoder.repair_symbols(100, 0), Ok(vec![]));
    assert_eq!(encoder.repair_symbols(100, SYMBOL_BATCH_MAX + 1), Err(FecError::BatchTooLarge { count: SYMBOL_BATCH_MAX + 1 }));
    // The padding of the last (only) block is zeros.
    out.clear();
    encoder.symbol_into(15, &mut out).expect("last source symbol");
    assert_eq!(&out[..40], &[7; 40][..]);
    assert_eq!(&out[40..], &[0; 24][..]);
}

/// A one-block object of K = 20 symbols of 16 bytes and its encoder.
fn small_block() -> (Oti, Vec<u8>, BlockEncoder) {
    let mut rng = Rng::new(SEED_DEFAULT, 2);
    let data = rng.bytes(20 * 16 - 5);
    let oti = Oti::new_for_object(data.len() as u64, 16, DEFAULT_BLOCK_BYTES_MAX).expect("valid");
    let encoder = BlockEncoder::new(&oti, 0, &data).expect("encoder");
    assert_eq!(encoder.source_symbols(), 20);
    (oti, data, encoder)
}

#[test]
fn decode_block_errors() {
    let (oti, data, encoder) = small_block();
    let sym = |esi: u32| {
        let mut out = Vec::new();
        encoder.symbol_into(esi, &mut out).expect("esi");
        (esi, out)
    };
    // K - 1 distinct symbols, however many duplicates: not enough, raptorq not called.
    let mut few: Vec<_> = (0..19).map(sym).collect();
    few.extend((0..19).map(sym));
    assert_eq!(decode_block(&oti, 0, few.clone()), Err(FecError::NotEnoughSymbols { have: 19, need: 20 }));
    assert_eq!(decode_block(&oti, 0, Vec::new()), Err(FecError::NotEnoughSymbols { have: 0, need: 20 }));
    // A wrong-length symbol anywhere is rejected, even among enough good ones.
    let mut bad = few.clone();
    bad.push((100, vec![0; 15]));
    assert_eq!(decode_block(&oti, 0, bad), Err(FecError::SymbolLength { esi: 100, expected: 16, actual: 15 }));
    let mut bad = few.clone();
    bad.push((101, vec![0; 17]));
    assert_eq!(decode_block(&oti, 0, bad), Err(FecError::SymbolLength { esi: 101, expected: 16, actual: 17 }));
    let mut bad = few.clone();
    bad.push((ESI_MAX + 1, vec![0; 16]));
    assert_eq!(decode_block(&oti, 0, bad), Err(FecError::EsiOutOfRange { esi: u64::from(ESI_MAX) + 1 }));
    assert_eq!(decode_block(&oti, 1, few.clone()), Err(FecError::SbnOutOfRange { sbn: 1, source_blocks: 1 }));
    // One more distinct symbol is enough, duplicates and all.
    few.push(sym(500));
    assert_eq!(decode_block(&oti, 0, few), Ok(data.clone()));
    // Plenty of extra symbols are fine (the excess is dropped).
    let many: Vec<_> = (30..30 + 20 + 200).map(sym).collect();
    assert_eq!(decode_block(&oti, 0, many), Ok(data));
}

#[test]
fn decode_failure_is_typed_and_retry_with_more_symbols_succeeds() {
    // At zero overhead RaptorQ fails about 1% of the time: search (bounded) for a set of
    // exactly K repair symbols that does not decode, then show one more fixes it.
    let (oti, data, encoder) = small_block();
    let all: Vec<(u32, Vec<u8>)> = encoder.repair_symbols(20, 4000).expect("batch");
    let mut found = false;
    for window in all.chunks_exact(20).take(200) {
        match decode_block(&oti, 0, window.to_vec()) {
            Ok(out) => assert_eq!(out, data),
            Err(FecError::DecodeFailed { symbols: 20, need: 20 }) => {
                found = true;
                let mut more = window.to_vec();
                let mut extra = all.iter().rev();
                let mut tries = 0;
                loop {
                    more.push(extra.next().expect("spare symbol").clone());
                    tries += 1;
                    match decode_block(&oti, 0, more.clone()) {
                        Ok(out) => break assert_eq!(out, data),
                        Err(FecError::DecodeFailed { .. }) if tries < 10 => {}
                        Err(e) => panic!("retry: {e}"),
                    }
                }
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(found, "no failing window in 200 tries; RaptorQ is better than expected");
}

#[test]
fn block_hash_is_blake3() {
    assert_eq!(block_hash(b"abc"), *blake3::hash(b"abc").as_bytes());
    assert_ne!(block_hash(b"abc"), block_hash(b"abd"));
}

// ---------------------------------------------------------------------------------------
// Interleaving

#[test]
fn interleave_yields_every_pair_once() {
    let plan = [(0u8, 0u32, 7u32), (1, 100, 13), (2, 5, 0), (3, 0, 1), (1, 500, 4), (9, 1_000_000, 30)];
    let got: Vec<(u8, u32)> = interleave(&plan).collect();
    let mut expected: Vec<(u8, u32)> = Vec::new();
    for &(sbn, first, count) in &plan {
        expected.extend((first..first + count).map(|esi| (sbn, esi)));
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(got.iter().collect::<HashSet<_>>(), expected.iter().collect::<HashSet<_>>());
    assert_eq!(interleave(&plan).size_hint(), (expected.len(), Some(expected.len())));
    // Deterministic, and each entry's ESIs come out in order.
    assert_eq!(interleave(&plan).collect::<Vec<_>>(), got);
    for sbn in [0u8, 3, 9] {
        let esis: Vec<u32> = got.iter().filter(|p| p.0 == sbn).map(|p| p.1).collect();
        assert!(esis.windows(2).all(|w| w[0] < w[1]));
    }
    assert_eq!(interleave(&[]).next(), None);
}

#[test]
fn interleave_spreads_a_small_block_over_a_large_one() {
    let got: Vec<(u8, u32)> = interleave(&[(0, 0, 10), (1, 0, 1000)]).collect();
    assert_eq!(got.len(), 1010);
    let positions: Vec<usize> = got.iter().enumerate().filter(|(_, p)| p.0 == 0).map(|(i, _)| i).collect();
    assert_eq!(positions.len(), 10);
    // Ideal: one every 101, the first about 50 in.
    assert!((45..=56).contains(&positions[0]), "first at {}", positions[0]);
    for w in positions.windows(2) {
        let gap = w[1] - w[0];
        assert!((99..=103).contains(&gap), "gap {gap} in {positions:?}");
    }
    assert!(1010 - positions[9] >= 45, "last at {}", positions[9]);
}

#[test]
fn interleave_keeps_every_prefix_proportional() {
    let mut rng = Rng::new(seed("interleave_keeps_every_prefix_proportional"), 3);
    for _ in 0..50 {
        let plan: Vec<(u8, u32, u32)> = (0..1 + rng.next_u64() % 20).map(|b| (b as u8, 0, 1 + (rng.next_u64() % 300) as u32)).collect();
        let total: u64 = plan.iter().map(|p| u64::from(p.2)).sum();
        let mut emitted = vec![0u64; plan.len()];
        for (n, (sbn, _)) in interleave(&plan).enumerate() {
            emitted[usize::from(sbn)] += 1;
            let n = n as u64 + 1;
            for (b, &(_, _, count)) in plan.iter().enumerate() {
                // emitted_b / count_b tracks n / total within about one symbol per block.
                let ideal = n as f64 * f64::from(count) / total as f64;
                let off = (emitted[b] as f64 - ideal).abs();
                assert!(off <= 1.5, "plan {plan:?}: block {b} at {n}: {} vs {ideal:.2}", emitted[b]);
            }
        }
        assert_eq!(emitted.iter().sum::<u64>(), total);
    }
}
