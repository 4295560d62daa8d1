//! Source authentication at the reception machine (docs/protocol.md 7.5): a symbol its
//! signed SYMBOL LIST names is used only if it matches; a list costs one signature check and
//! its copies and replays a counter; symbols of a lost list are kept unverified and used only
//! when a block's verified symbols fall short, and dropped (the verified ones kept) if the
//! attempt fails its hash; a ROUND marker counts only if a signed list names it.

use std::time::Instant;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::fec::{self, BlockEncoder, Oti};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::reception::{
    LIST_CHECKS_FAILED_BURST_MAX, LIST_CHECKS_FAILED_PER_SEC_MAX, LIST_EVIDENCE_CHECKS_FAILED_BURST_MAX,
    LIST_EVIDENCE_CHECKS_FAILED_PER_SEC_MAX, MemoryStore, Reception, ReceptionConfig, ReceptionEvent, ReceptionStats,
    UNVERIFIED_ATTEMPTS_PER_BLOCK_MAX,
};
use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};
use satcast_protocol::wire::{self, SourceRefusal, WireError};

const NOW: u64 = 1_795_000_000;
const OBJECT_ID: u64 = 60;

struct World {
    seed: u64,
    root: RootKey,
    network_key: NetworkKey,
    signer: SigningKey,
    county: Reception,
    store: MemoryStore,
    now: Instant,
    /// Block 0's symbols, ESI 0 .. K + 8.
    symbols: Vec<Vec<u8>>,
    source_symbols: u32,
    /// The genuine signer's signature of another object's list, for forgeries.
    other_signature: [u8; 64],
}

/// A county that accepted a one-block object of 20 kB (K = 14) signed by the genuine key.
fn world(seed: u64) -> World {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = RootKey::generate(&mut rng);
    let network_key = NetworkKey::generate(&mut rng);
    let signer = SigningKey::generate(&mut rng, &root, 1, NOW - 100, NOW + 86_400);
    let mut payload = vec![0u8; 20_000];
    rng.fill_bytes(&mut payload);
    let oti = Oti::new_for_object(payload.len() as u64, 1436, 1 << 20).expect("oti");
    let manifest = Manifest {
        object_id: OBJECT_ID,
        kind: Kind::Software,
        name: "agent.bin".into(),
        version: 1,
        size_bytes: payload.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(&payload).as_bytes(),
        block_hashes: vec![fec::block_hash(&payload)],
        targets: vec!["41".into()],
        created_unix_secs: NOW - 10,
        expires_unix_secs: NOW + 86_400,
    };
    let encoder = BlockEncoder::new(&oti, 0, &payload).expect("encoder");
    let source_symbols = encoder.source_symbols();
    let symbols = (0..source_symbols + 8)
        .map(|esi| {
            let mut symbol = Vec::new();
            encoder.symbol_into(esi, &mut symbol).expect("symbol");
            symbol
        })
        .collect();
    let county = Reception::new(ReceptionConfig::new("410102".into(), root.public(), network_key.clone()));
    let other_signature = signer.sign_symbol_list(OBJECT_ID + 1, b"another list");
    let mut world = World {
        seed,
        root,
        network_key,
        signer,
        county,
        store: MemoryStore::default(),
        now: Instant::now(),
        symbols,
        source_symbols,
        other_signature,
    };
    let signed = world.signer.sign_manifest(&manifest).expect("sign").to_bytes();
    let mut buf = Vec::new();
    for fragment in wire::manifest_fragments(&signed, 1472) {
        wire::write_manifest_fragment(&mut buf, &world.network_key, OBJECT_ID, &fragment);
        world.air(&buf);
    }
    assert!(world.events().iter().any(|e| matches!(e, ReceptionEvent::Accepted { .. })));
    world
}

impl World {
    fn air(&mut self, datagram: &[u8]) {
        self.county.handle_datagram(self.now, NOW, datagram);
        satcast_protocol::storage::drain(&mut self.county, &mut self.store);
    }

    fn events(&mut self) -> Vec<ReceptionEvent> {
        std::iter::from_fn(|| self.county.poll_event()).collect()
    }

    fn stats(&self) -> ReceptionStats {
        self.county.stats()
    }

    /// The genuine list of block 0's ESIs `esis` (and `round`'s marker), by `signer`.
    fn list(&self, signer: &SigningKey, sequence: u64, round: Option<u32>, esis: std::ops::Range<u32>) -> Vec<u8> {
        let symbols: Vec<(u8, u32, &[u8])> = esis.map(|esi| (0, esi, self.symbols[esi as usize].as_slice())).collect();
        wire::symbol_list_datagram(&self.network_key, signer, OBJECT_ID, sequence, round, &symbols)
    }

    /// Block 0's ESIs `esis` as the ranges of a list.
    fn ranges(&self, esis: std::ops::Range<u32>) -> Vec<wire::SymbolRange> {
        let mut ranges = Vec::new();
        for esi in esis {
            wire::add_to_ranges(&mut ranges, 0, esi, wire::symbol_hash(&self.symbols[esi as usize]));
        }
        ranges
    }

    /// The uplink's next signing key (serial 2), certified by the same root.
    fn rotated_signer(&self) -> SigningKey {
        SigningKey::generate(&mut ChaCha8Rng::seed_from_u64(self.seed ^ 2), &self.root, 2, NOW - 100, NOW + 86_400)
    }

    fn data(&self, esi: u32, symbol: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        wire::write_data(&mut buf, &self.network_key, OBJECT_ID, 0, esi, symbol);
        buf
    }

    fn genuine(&self, esi: u32) -> Vec<u8> {
        self.data(esi, &self.symbols[esi as usize])
    }

    fn forged(&self, esi: u32) -> Vec<u8> {
        let mut symbol = self.symbols[esi as usize].clone();
        symbol[0] ^= 1;
        self.data(esi, &symbol)
    }

    fn verified(&mut self) -> bool {
        self.events().iter().any(|e| matches!(e, ReceptionEvent::BlockVerified { .. }))
    }
}

fn dropped(events: &[ReceptionEvent], why: SourceRefusal) -> usize {
    events.iter().filter(|e| matches!(e, ReceptionEvent::Dropped { reason: WireError::Source(r) } if *r == why)).count()
}

#[test]
fn a_list_costs_one_signature_check_and_its_copies_and_replays_a_counter() {
    let mut w = world(1);
    let checked = w.stats().signatures_checked;
    let list = w.list(&w.signer, 100, None, 0..8);
    for _ in 0..1000 {
        w.air(&list);
    }
    let stats = w.stats();
    assert_eq!((stats.symbol_lists_accepted, stats.symbol_lists_replayed), (1, 999));
    assert_eq!(stats.signatures_checked - checked, 1, "one signature check for 1000 copies");
    // Later lists push sequence 100 out of the window: a replay of it is older than all.
    for sequence in 101..=164 {
        let list = w.list(&w.signer, sequence, None, 8..9);
        w.air(&list);
    }
    let before = w.stats();
    w.air(&list);
    assert_eq!(w.stats().symbol_lists_replayed, before.symbol_lists_replayed + 1);
    assert_eq!(w.stats().signatures_checked, before.signatures_checked, "an old list costs no signature check");
    assert!(w.events().iter().all(|e| !matches!(e, ReceptionEvent::Dropped { .. })), "copies and replays are no events");
}

#[test]
fn forged_lists_are_refused_and_lists_of_unknown_keys_cost_no_signature_check() {
    let mut w = world(2);
    // An insider edits a genuine list (its own hash, a new sequence): the signature fails.
    let mut forged = w.list(&w.signer, 200, None, 0..8);
    forged[14 + 15] ^= 1;
    forged[14 + 21 + 5] ^= 0xff;
    let at = forged.len() - 16;
    let tag = blake3::keyed_hash(&w.network_key.0, &forged[..at]);
    forged[at..].copy_from_slice(&tag.as_bytes()[..16]);
    let checked = w.stats().signatures_checked;
    w.air(&forged);
    assert_eq!(w.stats().symbol_lists_refused, 1);
    assert_eq!(w.stats().signatures_checked, checked + 1);
    assert_eq!(dropped(&w.events(), SourceRefusal::BadListSignature), 1);
    // A key certified by another root: its certificate costs one check and fails; the
    // list's signature is never checked, and its symbols would stay unverified.
    let rogue_root = RootKey::generate(&mut ChaCha8Rng::seed_from_u64(99));
    let rogue = SigningKey::generate(&mut ChaCha8Rng::seed_from_u64(98), &rogue_root, 7, NOW - 100, NOW + 86_400);
    let list = w.list(&rogue, 201, None, 0..8);
    w.air(&list);
    assert_eq!(w.stats().symbol_lists_unknown_signer, 1);
    assert_eq!(w.stats().signatures_checked, checked + 2);
    // Without a certificate, an unknown signer costs a counter and no check at all.
    let round_list = {
        let signed = wire::symbol_list_signed_part(7, 202, Some(0), None, &[]);
        let mut out = Vec::new();
        wire::write_symbol_list(&mut out, &w.network_key, OBJECT_ID, &signed, &rogue.sign_symbol_list(OBJECT_ID, &signed));
        out
    };
    w.air(&round_list);
    assert_eq!(w.stats().symbol_lists_unknown_signer, 2);
    assert_eq!(w.stats().signatures_checked, checked + 2);
    // The genuine list still takes its sequence: the forgery did not spend it.
    let genuine = w.list(&w.signer, 200, None, 0..8);
    w.air(&genuine);
    assert_eq!(w.stats().symbol_lists_accepted, 1);
}

#[test]
fn a_forged_symbol_is_dropped_and_the_genuine_one_after_it_is_used() {
    let mut w = world(3);
    let k = w.source_symbols;
    let list = w.list(&w.signer, 1, None, 0..k);
    w.air(&list);
    let forged = w.forged(0);
    w.air(&forged);
    assert_eq!(dropped(&w.events(), SourceRefusal::ForgedSymbol), 1);
    for esi in 0..k {
        let datagram = w.genuine(esi);
        w.air(&datagram);
    }
    assert!(w.verified(), "the block decodes from its K genuine symbols");
    let stats = w.stats();
    assert_eq!((stats.symbols_forged, stats.symbols_unverified, stats.unverified_decodes), (1, 0, 0));
}

#[test]
fn symbols_of_a_lost_list_decode_a_block_that_needs_them() {
    let mut w = world(4);
    let k = w.source_symbols;
    let half = k / 2;
    // The first list is lost: its symbols come unlisted; the second arrives.
    let list = w.list(&w.signer, 2, None, half..k);
    w.air(&list);
    for esi in 0..k {
        let datagram = w.genuine(esi);
        w.air(&datagram);
    }
    assert!(w.verified(), "the block decodes with the unverified symbols");
    let stats = w.stats();
    assert_eq!((stats.symbols_unverified, stats.unverified_decodes, stats.unverified_decodes_failed), (u64::from(half), 1, 0));
}

#[test]
fn a_list_arriving_after_its_symbols_vouches_for_them_or_drops_the_forged_ones() {
    let mut w = world(5);
    let k = w.source_symbols;
    let (forged, genuine) = (w.forged(0), w.genuine(1));
    w.air(&forged);
    w.air(&genuine);
    assert_eq!(w.stats().symbols_unverified, 2);
    let list = w.list(&w.signer, 3, None, 0..k);
    w.air(&list);
    assert_eq!(dropped(&w.events(), SourceRefusal::ForgedSymbol), 1);
    for esi in (0..k).filter(|esi| *esi != 1) {
        let datagram = w.genuine(esi);
        w.air(&datagram);
    }
    assert!(w.verified());
    assert_eq!(w.stats().unverified_decodes, 0, "the late list made ESI 1 verified");
}

#[test]
fn a_forged_unverified_symbol_costs_one_failed_attempt_and_the_verified_symbols_stay() {
    let mut w = world(6);
    let k = w.source_symbols;
    // Lists name ESIs 0..K-1; ESI K+3 is listed nowhere, and the insider forges it.
    let list = w.list(&w.signer, 4, None, 0..k - 1);
    w.air(&list);
    for esi in 0..k - 1 {
        let datagram = w.genuine(esi);
        w.air(&datagram);
    }
    let forged = w.forged(k + 3);
    w.air(&forged);
    let events = w.events();
    assert!(!events.iter().any(|e| matches!(e, ReceptionEvent::BlockVerified { .. } | ReceptionEvent::BlockPoisoned { .. })));
    assert_eq!(dropped(&events, SourceRefusal::UnverifiedBlock), 1);
    assert_eq!(w.stats().unverified_decodes_failed, 1);
    // More unlisted forgeries for the block are refused at once: no more attempts.
    for esi in k + 4..k + 8 {
        let forged = w.forged(esi);
        w.air(&forged);
    }
    assert_eq!(w.stats().unverified_decodes_failed, u64::from(UNVERIFIED_ATTEMPTS_PER_BLOCK_MAX));
    // The K-1 verified symbols were kept: one more listed symbol completes the block.
    let list = w.list(&w.signer, 5, None, k - 1..k + 1);
    w.air(&list);
    let datagram = w.genuine(k - 1);
    w.air(&datagram);
    assert!(w.verified(), "K verified symbols decode without a symbol more");
}

#[test]
fn a_round_marker_counts_only_when_a_signed_list_names_it() {
    let mut w = world(7);
    let quiet = w.county.poll_timeout();
    let mut marker = Vec::new();
    wire::write_round(&mut marker, &w.network_key, OBJECT_ID, 0);
    w.air(&marker);
    assert_eq!(dropped(&w.events(), SourceRefusal::UnlistedRound), 1);
    assert_eq!(w.county.poll_timeout(), quiet, "a forged marker asks for no report");
    // The list that names it comes late: the marker that waited is taken.
    let list = w.list(&w.signer, 6, Some(0), 0..0);
    w.air(&list);
    let due = w.county.poll_timeout().expect("a report is due");
    assert!(quiet.is_some_and(|q| due < q), "the signed marker asks for a report");
    w.county.handle_timeout(due);
    assert!(w.county.poll_feedback().is_some(), "the report goes");
}

#[test]
fn a_county_that_missed_a_new_keys_heartbeats_learns_it_from_a_list_that_carries_its_certificate() {
    let mut w = world(8);
    let k = w.source_symbols;
    // The uplink's key rotated: the manifest was signed by serial 1, the lists by serial 2,
    // whose heartbeats this county missed. A list without the certificate: its symbols wait
    // unverified; the next, with it, costs one certificate check and teaches the key.
    let rotated = w.rotated_signer();
    let signed = wire::symbol_list_signed_part(rotated.serial(), 10, None, None, &w.ranges(0..k / 2));
    let mut bare = Vec::new();
    wire::write_symbol_list(&mut bare, &w.network_key, OBJECT_ID, &signed, &rotated.sign_symbol_list(OBJECT_ID, &signed));
    w.air(&bare);
    assert_eq!(w.stats().symbol_lists_unknown_signer, 1);
    let checked = w.stats().signatures_checked;
    let list = w.list(&rotated, 11, None, k / 2..k);
    w.air(&list);
    assert_eq!(w.stats().signatures_checked, checked + 2, "the certificate and the list");
    assert_eq!(w.stats().symbol_lists_accepted, 1);
    // Known now: the next list without a certificate is checked at once.
    let signed = wire::symbol_list_signed_part(rotated.serial(), 12, None, None, &w.ranges(k..k + 1));
    let mut bare = Vec::new();
    wire::write_symbol_list(&mut bare, &w.network_key, OBJECT_ID, &signed, &rotated.sign_symbol_list(OBJECT_ID, &signed));
    w.air(&bare);
    assert_eq!(w.stats().symbol_lists_accepted, 2);
}

/// A forged list naming block 0's (ESI, hash) `named`, by the genuine signer's serial (the
/// insider learned it from a heartbeat), under a genuine signature of another list (each
/// check is then a full verification: random bytes are refused at once as non-canonical).
fn forged_list(w: &World, sequence: u64, named: &[(u32, [u8; 8])]) -> Vec<u8> {
    let mut ranges = Vec::new();
    for (esi, hash) in named {
        wire::add_to_ranges(&mut ranges, 0, *esi, *hash);
    }
    let signed = wire::symbol_list_signed_part(w.signer.serial(), sequence, None, None, &ranges);
    let mut out = Vec::new();
    wire::write_symbol_list(&mut out, &w.network_key, OBJECT_ID, &signed, &w.other_signature);
    out
}

/// The most signature checks forged lists may cost in `secs` whole seconds: the
/// budget of failed checks and the budget of failed checks on evidence, each a burst and
/// a rate.
fn failed_checks_bound(secs: u64) -> u64 {
    u64::from(LIST_CHECKS_FAILED_BURST_MAX + LIST_EVIDENCE_CHECKS_FAILED_BURST_MAX)
        + secs * u64::from(LIST_CHECKS_FAILED_PER_SEC_MAX + LIST_EVIDENCE_CHECKS_FAILED_PER_SEC_MAX)
}

#[test]
fn a_flood_of_forged_lists_costs_a_bounded_number_of_checks_and_the_genuine_list_is_still_used() {
    let seed = rand::random();
    println!("seed {seed}; replay: change `rand::random()` to {seed} in this test");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = world(seed);
    let k = w.source_symbols;
    let checked = w.stats().signatures_checked;
    // 20k forged lists a second for 3 s, fresh sequences, random hashes of the real ESIs;
    // the genuine list comes in the middle of the last second, then its symbols, as the
    // uplink airs them at 80 Mbit/s (7000 a second: three forged lists between two).
    let start = w.now;
    let mut sequence = 1_000;
    let mut next_symbol = None;
    for second in 0..3u32 {
        w.now = start + std::time::Duration::from_secs(u64::from(second));
        for i in 0..20_000u32 {
            sequence += 1;
            let named: Vec<_> = (0..k).map(|esi| (esi, rng.next_u64().to_be_bytes())).collect();
            let forged = forged_list(&w, sequence, &named);
            w.air(&forged);
            if second == 2 && i == 10_000 {
                let genuine = w.list(&w.signer, 100_000, None, 0..k);
                w.air(&genuine);
                next_symbol = Some(0);
            }
            if let Some(esi) = next_symbol.filter(|esi| i % 3 == 0 && *esi < k) {
                let datagram = w.genuine(esi);
                w.air(&datagram);
                next_symbol = Some(esi + 1);
            }
        }
    }
    let stats = w.stats();
    let spent = stats.signatures_checked - checked;
    println!("60000 forged lists cost {spent} signature checks; {stats:?}");
    assert!(spent <= failed_checks_bound(2) + 1, "{spent} checks, bound {} and the genuine list's", failed_checks_bound(2));
    assert!(w.verified(), "the block decodes");
    assert_eq!(stats.symbol_lists_accepted, 1, "the genuine list was checked when its first symbol came");
    assert_eq!((stats.symbols_unverified, stats.unverified_decodes), (0, 0), "every symbol was verified by its list");
}

#[test]
fn forged_copies_of_genuine_entries_cost_a_bounded_number_of_checks_and_the_object_completes() {
    let seed = rand::random();
    println!("seed {seed}; replay: change `rand::random()` to {seed} in this test");
    let mut w = world(seed);
    let k = w.source_symbols;
    let checked = w.stats().signatures_checked;
    // The insider names the genuine hashes (it can compute the symbols) under bad
    // signatures: fresh sequences before and after the genuine list, and the genuine
    // list's own sequence, at the same instant.
    let named: Vec<_> = (0..k).map(|esi| (esi, wire::symbol_hash(&w.symbols[esi as usize]))).collect();
    for sequence in 1_000..6_000 {
        let forged = forged_list(&w, sequence, &named);
        w.air(&forged);
    }
    let genuine = w.list(&w.signer, 50_000, None, 0..k);
    w.air(&genuine);
    for copy in 0..5_000 {
        let sequence = if copy % 2 == 0 { 50_000 } else { 60_000 + copy };
        let forged = forged_list(&w, sequence, &named);
        w.air(&forged);
    }
    for esi in 0..k {
        let datagram = w.genuine(esi);
        w.air(&datagram);
    }
    let stats = w.stats();
    let spent = stats.signatures_checked - checked;
    println!("10000 forged copies cost {spent} signature checks; {stats:?}");
    assert!(spent <= failed_checks_bound(0) + 1, "{spent} checks, bound {} and the genuine list's", failed_checks_bound(0));
    assert!(w.verified(), "the block decodes, from its listed symbols or as a lost list's");
}

#[test]
fn under_a_flood_a_held_list_is_checked_when_the_marker_or_a_symbol_it_names_arrives() {
    let mut w = world(10);
    let k = w.source_symbols;
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // Forged lists spend the budget of failed checks: later lists are held.
    let named: Vec<_> = (0..k).map(|esi| (esi, rng.next_u64().to_be_bytes())).collect();
    for sequence in 1_000..1_000 + u64::from(LIST_CHECKS_FAILED_BURST_MAX) + 10 {
        let forged = forged_list(&w, sequence, &named);
        w.air(&forged);
    }
    assert_eq!(w.stats().symbol_lists_held, 10);
    // The list naming round 0 is held; the marker is its evidence, and the report is due.
    let quiet = w.county.poll_timeout();
    let list = w.list(&w.signer, 5_000, Some(0), 0..0);
    w.air(&list);
    assert_eq!(w.stats().symbol_lists_accepted, 0, "held, not checked");
    let mut marker = Vec::new();
    wire::write_round(&mut marker, &w.network_key, OBJECT_ID, 0);
    w.air(&marker);
    assert_eq!(w.stats().symbol_lists_held_accepted, 1);
    let due = w.county.poll_timeout().expect("a report is due");
    assert!(quiet.is_some_and(|q| due < q), "the signed marker asks for a report");
    // A list arriving after its first symbol: that symbol is its evidence at once.
    let first = w.genuine(0);
    w.air(&first);
    let list = w.list(&w.signer, 5_001, None, 0..k);
    w.air(&list);
    assert_eq!(w.stats().symbol_lists_held_accepted, 2);
    for esi in 1..k {
        let datagram = w.genuine(esi);
        w.air(&datagram);
    }
    assert!(w.verified());
    assert_eq!(w.stats().unverified_decodes, 0, "every symbol was verified by its list");
}

#[test]
fn copies_of_a_genuine_list_sent_after_it_are_never_checked_before_it() {
    let seed = rand::random();
    println!("seed {seed}; replay: change `rand::random()` to {seed} in this test");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = world(seed);
    let k = w.source_symbols;
    let checked = w.stats().signatures_checked;
    // Forged lists spend the budget of failed checks.
    for sequence in 1_000..1_000 + u64::from(LIST_CHECKS_FAILED_BURST_MAX) {
        let named: Vec<_> = (0..k).map(|esi| (esi, rng.next_u64().to_be_bytes())).collect();
        let forged = forged_list(&w, sequence, &named);
        w.air(&forged);
    }
    // The insider sees the genuine list on the air and races copies of its entries to the
    // county (its sequence and fresh ones, other signatures), among the symbols.
    let genuine = w.list(&w.signer, 50_000, None, 0..k);
    w.air(&genuine);
    let named: Vec<_> = (0..k).map(|esi| (esi, wire::symbol_hash(&w.symbols[esi as usize]))).collect();
    let mut copies = 0;
    for esi in 0..k {
        for _ in 0..3 {
            let sequence = if copies % 2 == 0 { 50_000 } else { 50_001 + copies };
            let copy = forged_list(&w, sequence, &named);
            w.air(&copy);
            copies += 1;
        }
        let datagram = w.genuine(esi);
        w.air(&datagram);
    }
    let stats = w.stats();
    let spent = stats.signatures_checked - checked;
    println!("{copies} copies raced after the genuine list; {spent} signature checks; {stats:?}");
    assert_eq!(spent, u64::from(LIST_CHECKS_FAILED_BURST_MAX) + 1, "the first budget and the genuine list, no copy");
    assert_eq!(stats.symbol_lists_held_accepted, 1, "the genuine list was checked on its first symbol");
    assert!(w.verified());
    assert_eq!((stats.symbols_unverified, stats.unverified_decodes), (0, 0), "every symbol was verified by its list");
}

#[test]
fn forged_lists_and_forged_symbols_together_do_not_keep_the_genuine_list_from_being_used() {
    let seed = rand::random();
    println!("seed {seed}; replay: change `rand::random()` to {seed} in this test");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = world(seed);
    let k = w.source_symbols;
    let checked = w.stats().signatures_checked;
    let flood = |w: &mut World, rng: &mut ChaCha8Rng, from: u64, count: u64| {
        for sequence in from..from + count {
            let named: Vec<_> = (0..k).map(|esi| (esi, rng.next_u64().to_be_bytes())).collect();
            let forged = forged_list(w, sequence, &named);
            w.air(&forged);
        }
    };
    flood(&mut w, &mut rng, 1_000, 1_000);
    let genuine = w.list(&w.signer, 50_000, None, 0..k);
    w.air(&genuine);
    // Forged symbols of every ESI the genuine list names, before the genuine ones: they
    // are no evidence for it (their hashes differ), and fail their block's one attempt.
    for esi in 0..k {
        flood(&mut w, &mut rng, 2_000 + u64::from(esi) * 3, 3);
        let forged = w.forged(esi);
        w.air(&forged);
    }
    assert_eq!(w.stats().unverified_decodes_failed, 1);
    for esi in 0..k {
        flood(&mut w, &mut rng, 3_000 + u64::from(esi) * 3, 3);
        let datagram = w.genuine(esi);
        w.air(&datagram);
    }
    let stats = w.stats();
    let spent = stats.signatures_checked - checked;
    println!("{spent} signature checks; {stats:?}");
    assert!(spent <= failed_checks_bound(0) + 1, "{spent} checks, bound {} and the genuine list's", failed_checks_bound(0));
    assert_eq!(stats.symbol_lists_held_accepted, 1, "the genuine list was checked on its first genuine symbol");
    assert!(w.verified(), "the block decodes from the genuine list's symbols");
}
