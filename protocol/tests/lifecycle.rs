//! Key lifecycle over the one-way link, at the reception machine: rotations a receiver
//! slept through, revocation aired on the carousel, expired keys, and a receiver clock
//! that is badly wrong.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use satcast_protocol::fec::Oti;
use satcast_protocol::feedback::{FeedbackMessage, Refusal, RefusalCode};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::reception::{
    MemoryStore, REJECTED_REMEMBER_FOR, Reception, ReceptionConfig, ReceptionEvent, ReceptionStore, StuckReason,
};
use satcast_protocol::trust::{Accepted, Heartbeat, NetworkKey, Revocation, RootKey, SigningKey};
use satcast_protocol::wire;

const NOW: u64 = 1_795_000_000;
const DAY: u64 = 86_400;

struct World {
    root: RootKey,
    network_key: NetworkKey,
    county: Reception,
    store: FlakyStore,
    now: Instant,
}

/// Memory storage whose begin fails as a full spool does while `full` is set.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    full: bool,
}

impl ReceptionStore for FlakyStore {
    fn begin_object(&mut self, manifest: &Manifest, signed_manifest: &[u8]) -> std::io::Result<()> {
        if self.full {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "needs 9.8 KiB, 1.0 KiB free under limits.spool_bytes_max"));
        }
        self.inner.begin_object(manifest, signed_manifest)
    }
    fn add_symbol(&mut self, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) -> std::io::Result<bool> {
        self.inner.add_symbol(object_id, sbn, esi, symbol)
    }
    fn symbol_count(&self, object_id: u64, sbn: u8) -> u32 {
        self.inner.symbol_count(object_id, sbn)
    }
    fn symbols(&mut self, object_id: u64, sbn: u8) -> std::io::Result<Vec<(u32, Vec<u8>)>> {
        self.inner.symbols(object_id, sbn)
    }
    fn clear_block(&mut self, object_id: u64, sbn: u8) -> std::io::Result<()> {
        self.inner.clear_block(object_id, sbn)
    }
    fn write_block(&mut self, object_id: u64, sbn: u8, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write_block(object_id, sbn, offset, data)
    }
    fn block_written(&self, object_id: u64, sbn: u8) -> bool {
        self.inner.block_written(object_id, sbn)
    }
    fn object_hash(&mut self, object_id: u64, len: u64) -> std::io::Result<[u8; 32]> {
        self.inner.object_hash(object_id, len)
    }
    fn discard(&mut self, object_id: u64) -> std::io::Result<()> {
        self.inner.discard(object_id)
    }
}

fn world(seed: u64) -> World {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = RootKey::generate(&mut rng);
    let network_key = NetworkKey::generate(&mut rng);
    let county = Reception::new(ReceptionConfig::new("410102".into(), root.public(), network_key.clone()));
    World { root, network_key, county, store: FlakyStore::default(), now: Instant::now() }
}

fn key(world: &World, serial: u64, not_before: u64, not_after: u64) -> SigningKey {
    SigningKey::generate(&mut ChaCha8Rng::seed_from_u64(serial), &world.root, serial, not_before, not_after)
}

fn manifest(object_id: u64, version: u64, created: u64) -> Manifest {
    let oti = Oti::new_for_object(10_000, 1436, 1 << 20).expect("oti");
    Manifest {
        object_id,
        kind: Kind::Software,
        name: "agent.bin".into(),
        version,
        size_bytes: 10_000,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: [1; 32],
        block_hashes: vec![[2; 32]],
        targets: vec!["41".into()],
        created_unix_secs: created,
        expires_unix_secs: created + 7 * DAY,
    }
}

impl World {
    /// The uplink's signed list naming `round`'s marker, handed to the county: a county acts
    /// on no marker the uplink did not sign.
    fn air_round_list(&mut self, signer: &SigningKey, object_id: u64, round: u32) {
        let sequence = 1_000_000 + u64::from(round);
        let list = wire::symbol_list_datagram(&self.network_key, signer, object_id, sequence, Some(round), &[]);
        self.county.handle_datagram(self.now, NOW, &list);
    }

    fn air_manifest(&mut self, signer: &SigningKey, manifest: &Manifest, wall: u64) -> Vec<ReceptionEvent> {
        let signed = signer.sign_manifest(manifest).expect("sign").to_bytes();
        let mut buf = Vec::new();
        for fragment in wire::manifest_fragments(&signed, 1472) {
            wire::write_manifest_fragment(&mut buf, &self.network_key, manifest.object_id, &fragment);
            self.county.handle_datagram(self.now, wall, &buf);
            satcast_protocol::storage::drain(&mut self.county, &mut self.store);
        }
        self.events()
    }

    fn air_heartbeat(&mut self, signer: &SigningKey, sequence: u64, uplink_ms: u64, wall: u64) -> Vec<ReceptionEvent> {
        let signed = signer.sign_heartbeat(Heartbeat { sequence, uplink_time_unix_ms: uplink_ms, ..Heartbeat::default() }).to_bytes();
        let mut buf = Vec::new();
        wire::write_heartbeat(&mut buf, &self.network_key, &signed);
        self.county.handle_datagram(self.now, wall, &buf);
        satcast_protocol::storage::drain(&mut self.county, &mut self.store);
        self.events()
    }

    /// Airs a revocation list signed by `root`, or by the pinned root if None.
    fn air_revocation(&mut self, root: Option<&RootKey>, sequence: u64, serials: Vec<u64>) -> Vec<ReceptionEvent> {
        let root = root.unwrap_or(&self.root);
        let signed =
            root.sign_revocation(Revocation { sequence, issued_unix_secs: NOW, revoked_serials: serials }).expect("sign").to_bytes();
        let mut buf = Vec::new();
        wire::write_revocation(&mut buf, &self.network_key, &signed);
        self.county.handle_datagram(self.now, NOW, &buf);
        satcast_protocol::storage::drain(&mut self.county, &mut self.store);
        self.events()
    }

    fn events(&mut self) -> Vec<ReceptionEvent> {
        std::iter::from_fn(|| self.county.poll_event()).collect()
    }

    /// The refusals queued for the uplink since the last call (and no old-style Rejected).
    fn told(&mut self) -> Vec<(u64, Refusal)> {
        std::iter::from_fn(|| self.county.poll_feedback())
            .filter_map(|f| match f.message {
                FeedbackMessage::Refused { object_id, refusal } => Some((object_id, refusal)),
                FeedbackMessage::Rejected { .. } => panic!("this build tells refusals typed"),
                _ => None,
            })
            .collect()
    }

    fn codes(&mut self) -> Vec<(u64, RefusalCode)> {
        self.told().into_iter().map(|(id, r)| (id, r.code)).collect()
    }
}

fn accepted(events: &[ReceptionEvent]) -> bool {
    events.iter().any(|e| matches!(e, ReceptionEvent::Accepted { .. }))
}

/// Refused and the uplink told, with this code.
fn refused_with(events: &[ReceptionEvent], code: RefusalCode) -> bool {
    events.iter().any(|e| matches!(e, ReceptionEvent::Refused { refusal, .. } if refusal.code == code))
}

#[test]
fn a_receiver_offline_through_three_rotations_catches_up_from_the_pinned_root() {
    let mut w = world(1);
    let first = key(&w, 1, NOW - 400 * DAY, NOW - 200 * DAY);
    let fourth = key(&w, 4, NOW - DAY, NOW + 300 * DAY);
    // It last heard serial 1, long expired; serials 2 and 3 came and went while it was off.
    assert!(refused_with(&w.air_manifest(&first, &manifest(1, 1, NOW - 300 * DAY), NOW), RefusalCode::KeyExpired));
    assert!(accepted(&w.air_manifest(&fourth, &manifest(2, 2, NOW), NOW)), "serial 4 chains to the root it pins");
    assert!(w.air_heartbeat(&fourth, 1, NOW * 1000, NOW).iter().any(|e| matches!(e, ReceptionEvent::Heartbeat { .. })));
}

#[test]
fn a_revoked_key_is_refused_and_what_it_signed_is_dropped() {
    let mut w = world(2);
    let compromised = key(&w, 2, NOW - DAY, NOW + 300 * DAY);
    let current = key(&w, 3, NOW - DAY, NOW + 300 * DAY);
    assert!(accepted(&w.air_manifest(&compromised, &manifest(10, 1, NOW), NOW)), "before the revocation it verifies");
    let events = w.air_revocation(None, 1, vec![2]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ReceptionEvent::RevocationsUpdated { sequence: 1, revoked_serials } if revoked_serials == &vec![2]))
    );
    assert!(refused_with(&events, RefusalCode::KeyRevoked), "the object it signed is dropped: {events:?}");
    assert!(w.county.progress().is_empty());
    assert!(refused_with(&w.air_manifest(&compromised, &manifest(11, 2, NOW), NOW), RefusalCode::KeyRevoked));
    assert!(
        w.air_heartbeat(&compromised, 1, NOW * 1000, NOW)
            .iter()
            .any(|e| matches!(e, ReceptionEvent::HeartbeatRejected { reason } if reason.contains("revoked")))
    );
    assert!(accepted(&w.air_manifest(&current, &manifest(12, 3, NOW), NOW)), "other keys still work");
    // An older list cannot un-revoke; a list from another root is refused.
    assert!(w.air_revocation(None, 1, vec![]).is_empty());
    let other_root = RootKey::generate(&mut ChaCha8Rng::seed_from_u64(99));
    let events = w.air_revocation(Some(&other_root), 9, vec![3]);
    assert!(events.iter().any(|e| matches!(e, ReceptionEvent::RevocationRejected { .. })), "{events:?}");
    assert!(accepted(&w.air_manifest(&current, &manifest(13, 4, NOW), NOW)), "a forged list revokes nothing");
}

#[test]
fn a_clock_set_back_to_1970_or_far_forward_accepts_nothing_and_says_why() {
    let mut w = world(3);
    let signer = key(&w, 1, NOW - DAY, NOW + 300 * DAY);
    // 1970: the key is not valid yet; the heartbeat is dated far in the county's future,
    // which is checked first (it costs no signature check), and the reason says so.
    let events = w.air_manifest(&signer, &manifest(20, 1, NOW), 0);
    assert!(refused_with(&events, RefusalCode::KeyNotYetValid), "{events:?}");
    let events = w.air_heartbeat(&signer, 1, NOW * 1000, 0);
    assert!(
        events.iter().any(|e| matches!(e, ReceptionEvent::HeartbeatRejected { reason } if reason.contains("in the future of now 0 s"))),
        "{events:?}"
    );
    // Far forward: the key and the manifest have expired.
    let events = w.air_manifest(&signer, &manifest(21, 1, NOW), NOW + 3650 * DAY);
    assert!(refused_with(&events, RefusalCode::KeyExpired), "{events:?}");
    // A manifest that expired in real time is still refused by a receiver whose clock says
    // it has not: it would have been created in the receiver's future.
    let old = manifest(22, 1, NOW);
    let events = w.air_manifest(&signer, &old, NOW - 2 * DAY + 10);
    assert!(!accepted(&events), "{events:?}");
}

#[test]
fn replayed_and_stale_heartbeats_are_refused_or_aged() {
    let mut w = world(4);
    let signer = key(&w, 1, NOW - DAY, NOW + 300 * DAY);
    assert!(w.air_heartbeat(&signer, 5, NOW * 1000, NOW).iter().any(|e| matches!(e, ReceptionEvent::Heartbeat { sequence: 5, .. })));
    // A replay of an older one: counted and dropped before its signature is checked, and no
    // event (a replay at 20k/s must not be 20k log lines).
    let replay = w.air_heartbeat(&signer, 4, NOW * 1000 - 5000, NOW);
    assert!(replay.is_empty(), "{replay:?}");
    assert_eq!(w.county.stats().heartbeats_replayed, 1);
    w.now += Duration::from_secs(120);
    assert_eq!(w.county.heartbeat_age(w.now), Some(Duration::from_secs(120)), "the age grows while nothing fresh arrives");
}

/// Two versions of one name arrive at once and the older finishes last: it must not be
/// delivered over the newer one.
#[test]
fn an_older_version_finishing_after_a_newer_one_is_refused() {
    use satcast_protocol::fec::{self, BlockEncoder};
    let mut w = world(5);
    let signer = key(&w, 1, NOW - DAY, NOW + 300 * DAY);
    let object = |object_id: u64, version: u64, fill: u8| {
        let payload = vec![fill; 5_000];
        let oti = Oti::new_for_object(payload.len() as u64, 1436, 1 << 20).expect("oti");
        let manifest = Manifest {
            size_bytes: payload.len() as u64,
            oti: oti.encode(),
            object_hash: *blake3::hash(&payload).as_bytes(),
            block_hashes: vec![fec::block_hash(&payload)],
            ..manifest(object_id, version, NOW)
        };
        (manifest, payload, oti)
    };
    let (old, old_payload, oti) = object(30, 1, 0x11);
    let (new, new_payload, _) = object(31, 2, 0x22);
    assert!(accepted(&w.air_manifest(&signer, &old, NOW)));
    assert!(accepted(&w.air_manifest(&signer, &new, NOW)));
    let air_symbols = |w: &mut World, manifest: &Manifest, payload: &[u8]| {
        let encoder = BlockEncoder::new(&oti, 0, payload).expect("encoder");
        let mut buf = Vec::new();
        let mut symbol = Vec::new();
        for esi in 0..encoder.source_symbols() + 2 {
            symbol.clear();
            encoder.symbol_into(esi, &mut symbol).expect("symbol");
            wire::write_data(&mut buf, &w.network_key, manifest.object_id, 0, esi, &symbol);
            w.county.handle_datagram(w.now, NOW, &buf);
            satcast_protocol::storage::drain(&mut w.county, &mut w.store);
        }
        w.events()
    };
    let events = air_symbols(&mut w, &new, &new_payload);
    let done = events.iter().find_map(|e| match e {
        ReceptionEvent::Complete { manifest } => Some(manifest.clone()),
        _ => None,
    });
    let done = done.expect("the newer version completes");
    w.county.mark_delivered(&done);
    let events = air_symbols(&mut w, &old, &old_payload);
    assert!(!events.iter().any(|e| matches!(e, ReceptionEvent::Complete { .. })), "the older version must not complete: {events:?}");
    assert!(
        events.iter().any(|e| matches!(e, ReceptionEvent::Refused { refusal, .. }
            if refusal.code == RefusalCode::Rollback && refusal.detail == "offered version 1, version 2 delivered")),
        "{events:?}"
    );
}

/// A county stopped between committing version 2 to its cache and recording it in its
/// trust state (or whose trust-state write failed) restarts knowing only version 1. What
/// the cache holds is a rollback floor: version 1 aired again is refused, another object
/// claiming version 2 is refused, and version 2 itself is taken (to be delivered from the
/// cache), not answered with a bare Complete as a recorded delivery would be.
#[test]
fn a_version_committed_to_the_cache_but_never_recorded_is_not_rolled_back() {
    let mut w = world(7);
    let signer = key(&w, 1, NOW - DAY, NOW + 300 * DAY);
    let (v1, v2, forged_v2) = (manifest(40, 1, NOW), manifest(41, 2, NOW), manifest(42, 2, NOW));
    w.county.set_delivered(Kind::Software, "agent.bin", Accepted { version: 1, object_id: 40 });
    w.county.set_cached(Kind::Software, "agent.bin", Accepted { version: 1, object_id: 40 });
    w.county.set_cached(Kind::Software, "agent.bin", Accepted { version: 2, object_id: 41 });
    // Another name's older cached version floors nothing of this one.
    w.county.set_cached(Kind::Software, "other.bin", Accepted { version: 9, object_id: 43 });
    assert_eq!(w.county.unrecorded_versions(), 2, "agent.bin version 2 and other.bin version 9");

    let events = w.air_manifest(&signer, &v1, NOW);
    assert!(
        events.iter().any(|e| matches!(e, ReceptionEvent::Refused { refusal, .. }
            if refusal.code == RefusalCode::Rollback && refusal.detail == "offered version 1, version 2 delivered")),
        "version 1 must be refused as a rollback: {events:?}"
    );
    let events = w.air_manifest(&signer, &forged_v2, NOW);
    assert!(refused_with(&events, RefusalCode::Rollback), "a second object as version 2 is equivocation: {events:?}");
    let events = w.air_manifest(&signer, &v2, NOW);
    assert!(accepted(&events), "version 2 is taken again, to be delivered from the cache: {events:?}");
}

/// Between the newer version's completion and the driver's confirmation that it is
/// delivered (the file is already in place while the version is being recorded), an older
/// version's manifest is refused as a rollback, as it is afterwards: tests/broadcast.rs saw
/// it accepted in that window now and then.
#[test]
fn an_older_manifest_heard_while_the_newer_version_is_being_delivered_is_a_rollback() {
    use satcast_protocol::fec::{self, BlockEncoder};
    let mut w = world(6);
    let signer = key(&w, 1, NOW - DAY, NOW + 300 * DAY);
    let payload = vec![0x33; 5_000];
    let oti = Oti::new_for_object(payload.len() as u64, 1436, 1 << 20).expect("oti");
    let new = Manifest {
        size_bytes: payload.len() as u64,
        oti: oti.encode(),
        object_hash: *blake3::hash(&payload).as_bytes(),
        block_hashes: vec![fec::block_hash(&payload)],
        ..manifest(41, 2, NOW)
    };
    assert!(accepted(&w.air_manifest(&signer, &new, NOW)));
    let encoder = BlockEncoder::new(&oti, 0, &payload).expect("encoder");
    let (mut buf, mut symbol) = (Vec::new(), Vec::new());
    for esi in 0..encoder.source_symbols() + 2 {
        symbol.clear();
        encoder.symbol_into(esi, &mut symbol).expect("symbol");
        wire::write_data(&mut buf, &w.network_key, new.object_id, 0, esi, &symbol);
        w.county.handle_datagram(w.now, NOW, &buf);
        satcast_protocol::storage::drain(&mut w.county, &mut w.store);
    }
    let events = w.events();
    assert!(events.iter().any(|e| matches!(e, ReceptionEvent::Complete { .. })), "the newer version completes: {events:?}");
    // Not marked delivered yet: the delivery transaction is under way.
    let events = w.air_manifest(&signer, &manifest(40, 1, NOW), NOW);
    assert!(!accepted(&events), "{events:?}");
    assert!(refused_with(&events, RefusalCode::Rollback), "{events:?}");
}

/// Every refusal of a genuine manifest for this county is told to the uplink once per
/// (object, reason), and again only when the reason changes; forgeries and other
/// counties' manifests are told nothing, and repeats cost no signature check.
#[test]
fn a_refusal_is_told_once_per_object_and_reason_and_never_for_forgeries_or_other_counties() {
    let mut w = world(6);
    let revoked = key(&w, 2, NOW - DAY, NOW + 300 * DAY);
    let good = key(&w, 3, NOW - DAY, NOW + 300 * DAY);
    w.air_revocation(None, 1, vec![2]);
    w.air_manifest(&revoked, &manifest(40, 1, NOW), NOW);
    let told = w.told();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].0, 40);
    assert_eq!(told[0].1.to_string(), "signing key revoked (serial 2)");
    // Repeated on the carousel, re-signed (a new digest), and after the memory of refused
    // manifests lapses: nothing more.
    w.air_manifest(&revoked, &manifest(40, 1, NOW), NOW);
    w.air_manifest(&revoked, &manifest(40, 1, NOW + 1), NOW);
    w.now += REJECTED_REMEMBER_FOR + Duration::from_secs(1);
    w.air_manifest(&revoked, &manifest(40, 1, NOW), NOW);
    assert_eq!(w.codes(), vec![], "a repeat buys no feedback");
    // Another county's manifest by the same key, and a forgery claiming that serial.
    w.air_manifest(&revoked, &Manifest { targets: vec!["42".into()], ..manifest(41, 1, NOW) }, NOW);
    let other_root = RootKey::generate(&mut ChaCha8Rng::seed_from_u64(77));
    let forger = SigningKey::generate(&mut ChaCha8Rng::seed_from_u64(78), &other_root, 2, NOW - DAY, NOW + DAY);
    let events = w.air_manifest(&forger, &manifest(42, 1, NOW), NOW);
    assert!(events.iter().any(|e| matches!(e, ReceptionEvent::Rejected { object_id: 42, .. })), "{events:?}");
    let forger = SigningKey::generate(&mut ChaCha8Rng::seed_from_u64(79), &other_root, 3, NOW - DAY, NOW + DAY);
    w.air_manifest(&forger, &manifest(43, 1, NOW), NOW);
    assert_eq!(w.codes(), vec![], "none of this county's business, or not genuine");

    // A county clock years behind, then years ahead: the reason changes, so it is told again.
    w.air_manifest(&good, &manifest(44, 1, NOW), NOW - 3650 * DAY);
    w.now += REJECTED_REMEMBER_FOR + Duration::from_secs(1);
    w.air_manifest(&good, &manifest(44, 1, NOW), NOW + 3650 * DAY);
    assert_eq!(w.codes(), vec![(44, RefusalCode::KeyNotYetValid), (44, RefusalCode::KeyExpired)]);
    // Within its key's validity but outside the manifest's lifetime, both ways.
    w.air_manifest(&good, &manifest(45, 1, NOW + 2 * DAY), NOW);
    w.air_manifest(&good, &manifest(46, 1, NOW - 8 * DAY), NOW);
    let told = w.told();
    assert_eq!(
        told.iter().map(|(id, r)| (*id, r.code)).collect::<Vec<_>>(),
        vec![(45, RefusalCode::ManifestFromFuture), (46, RefusalCode::ManifestExpired)]
    );
    assert!(told[0].1.detail.contains("county clock 172800 s behind"), "{:?}", told[0].1);
    // Status lists what was refused, newest first.
    let stuck = w.county.stuck(w.now);
    assert_eq!(stuck.iter().map(|s| s.object_id).collect::<Vec<_>>(), vec![46, 45, 44, 40], "{stuck:?}");
    assert!(matches!(&stuck[3].reason, StuckReason::Refused(r) if r.code == RefusalCode::KeyRevoked));
}

/// Too many partial objects and a spool that cannot begin an object are passing: told
/// once, no progress report meanwhile, and the object is taken once the condition passes.
#[test]
fn passing_refusals_are_told_once_and_clear_when_the_county_takes_the_object() {
    let mut w = world(7);
    let mut config = ReceptionConfig::new("410102".into(), w.root.public(), w.network_key.clone());
    config.partial_objects_max = 1;
    w.county = Reception::new(config);
    let signer = key(&w, 1, NOW - DAY, NOW + 300 * DAY);
    assert!(accepted(&w.air_manifest(&signer, &manifest(50, 1, NOW), NOW)));
    let second = Manifest { name: "other.bin".into(), ..manifest(51, 1, NOW) };
    for _ in 0..5 {
        w.air_manifest(&signer, &second, NOW);
    }
    let told = w.told();
    assert_eq!(told.len(), 1, "once, however often the manifest repeats: {told:?}");
    assert_eq!(told[0].1.to_string(), "too many partial objects (1 already, limits.partial_objects_max)");
    let stuck = w.county.stuck(w.now);
    assert!(matches!(&stuck[0].reason, StuckReason::WaitingForSymbols { needed: 7 }), "{stuck:?}");
    assert!(matches!(&stuck[1].reason, StuckReason::Refused(r) if r.code == RefusalCode::TooManyPartial), "{stuck:?}");

    // The first object expires, a slot frees, and the spool is full: the second is
    // accepted, its begin fails every tick, and that is told once, as a new reason.
    w.store.full = true;
    w.county.handle_tick(NOW + 8 * DAY);
    satcast_protocol::storage::drain(&mut w.county, &mut w.store);
    assert!(accepted(&w.air_manifest(&signer, &second, NOW)));
    for _ in 0..3 {
        w.county.handle_tick(NOW);
        satcast_protocol::storage::drain(&mut w.county, &mut w.store);
    }
    let told = w.told();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].1.to_string(), "spool full (needs 9.8 KiB, 1.0 KiB free under limits.spool_bytes_max)");
    let stuck = w.county.stuck(w.now);
    assert!(
        matches!(&stuck[..], [s] if s.object_id == 51 && matches!(&s.reason, StuckReason::Refused(r) if r.code == RefusalCode::StorageFull))
    );
    // No progress report while storage cannot take it: it would hide the refusal.
    let mut round = Vec::new();
    w.air_round_list(&signer, 51, 1);
    wire::write_round(&mut round, &w.network_key, 51, 1);
    w.county.handle_datagram(w.now, NOW, &round);
    w.county.handle_timeout(w.now + Duration::from_secs(60));
    assert!(std::iter::from_fn(|| w.county.poll_feedback()).next().is_none());

    // Space frees: begun at the next tick, progress is reported again.
    w.store.full = false;
    w.county.handle_tick(NOW);
    satcast_protocol::storage::drain(&mut w.county, &mut w.store);
    assert!(matches!(&w.county.stuck(w.now)[0].reason, StuckReason::WaitingForSymbols { .. }));
    round.clear();
    w.air_round_list(&signer, 51, 2);
    wire::write_round(&mut round, &w.network_key, 51, 2);
    w.county.handle_datagram(w.now, NOW, &round);
    w.county.handle_timeout(w.now + Duration::from_secs(60));
    let feedback: Vec<_> = std::iter::from_fn(|| w.county.poll_feedback()).collect();
    assert!(feedback.iter().any(|f| matches!(f.message, FeedbackMessage::Progress { object_id: 51, .. })), "{feedback:?}");
}

impl World {
    /// Hands one datagram to the county, drains storage, and returns the events.
    fn air_raw(&mut self, datagram: &[u8], wall: u64) -> Vec<ReceptionEvent> {
        self.county.handle_datagram(self.now, wall, datagram);
        satcast_protocol::storage::drain(&mut self.county, &mut self.store);
        self.events()
    }

    /// The HEARTBEAT datagram of a heartbeat signed by `signer`.
    fn heartbeat_datagram(&self, signer: &SigningKey, sequence: u64, uplink_ms: u64) -> Vec<u8> {
        let signed = signer.sign_heartbeat(Heartbeat { sequence, uplink_time_unix_ms: uplink_ms, ..Heartbeat::default() }).to_bytes();
        let mut buf = Vec::new();
        wire::write_heartbeat(&mut buf, &self.network_key, &signed);
        buf
    }

    /// The REVOCATION datagram of a list signed by `root`.
    fn revocation_datagram(&self, root: &RootKey, sequence: u64, serials: Vec<u64>) -> Vec<u8> {
        let signed =
            root.sign_revocation(Revocation { sequence, issued_unix_secs: NOW, revoked_serials: serials }).expect("sign").to_bytes();
        let mut buf = Vec::new();
        wire::write_revocation(&mut buf, &self.network_key, &signed);
        buf
    }

    /// Airs a one-block object of `name` whole, confirms its delivery as the driver does,
    /// and drains the feedback that queued (its Complete).
    fn deliver(&mut self, signer: &SigningKey, object_id: u64, name: &str) {
        use satcast_protocol::fec::{self, BlockEncoder};
        let payload = vec![object_id as u8; 5_000];
        let oti = Oti::new_for_object(payload.len() as u64, 1436, 1 << 20).expect("oti");
        let manifest = Manifest {
            name: name.into(),
            size_bytes: payload.len() as u64,
            oti: oti.encode(),
            object_hash: *blake3::hash(&payload).as_bytes(),
            block_hashes: vec![fec::block_hash(&payload)],
            ..manifest(object_id, 1, NOW)
        };
        assert!(accepted(&self.air_manifest(signer, &manifest, NOW)));
        let encoder = BlockEncoder::new(&oti, 0, &payload).expect("encoder");
        let (mut buf, mut symbol) = (Vec::new(), Vec::new());
        for esi in 0..encoder.source_symbols() + 2 {
            symbol.clear();
            encoder.symbol_into(esi, &mut symbol).expect("symbol");
            wire::write_data(&mut buf, &self.network_key, object_id, 0, esi, &symbol);
            self.county.handle_datagram(self.now, NOW, &buf);
            satcast_protocol::storage::drain(&mut self.county, &mut self.store);
        }
        let done = self.events().into_iter().find_map(|e| match e {
            ReceptionEvent::Complete { manifest } => Some(manifest),
            _ => None,
        });
        self.county.mark_delivered(&done.expect("the object completes"));
        while self.county.poll_feedback().is_some() {}
    }

    /// A ROUND marker for `object_id` handed to the county; the Completes it queued (the
    /// daemon drains feedback into its outbox after every datagram, so this does too).
    fn round_marker(&mut self, object_id: u64, round: u32) -> usize {
        let mut buf = Vec::new();
        wire::write_round(&mut buf, &self.network_key, object_id, round);
        self.county.handle_datagram(self.now, NOW, &buf);
        std::iter::from_fn(|| self.county.poll_feedback()).filter(|f| matches!(f.message, FeedbackMessage::Complete { .. })).count()
    }
}

/// Replays of a genuine heartbeat (captured and re-sent by an outsider at 20k/s) cost a
/// counter: no signature check, no event (so no log line). A refused heartbeat repeated
/// byte for byte is refused once.
#[test]
fn a_replayed_heartbeat_costs_a_counter_not_a_signature_check_or_an_event() {
    let mut w = world(8);
    let signer = key(&w, 1, NOW - DAY, NOW + 300 * DAY);
    let genuine = w.heartbeat_datagram(&signer, 5, NOW * 1000);
    assert!(w.air_raw(&genuine, NOW).iter().any(|e| matches!(e, ReceptionEvent::Heartbeat { sequence: 5, .. })));
    let older = w.heartbeat_datagram(&signer, 4, NOW * 1000 - 5000);
    let checked = w.county.stats().signatures_checked;
    for _ in 0..1000 {
        assert!(w.air_raw(&genuine, NOW).is_empty(), "a replay is an event");
        assert!(w.air_raw(&older, NOW).is_empty(), "a replay is an event");
    }
    let stats = w.county.stats();
    assert_eq!(stats.signatures_checked, checked, "replays were verified");
    assert_eq!(stats.heartbeats_replayed, 2000);

    // A fresh-looking heartbeat with a broken signature (an insider's), repeated: checked
    // and refused once, then the same bytes cost a counter.
    let mut signed =
        signer.sign_heartbeat(Heartbeat { sequence: 6, uplink_time_unix_ms: NOW * 1000 + 5000, ..Heartbeat::default() }).to_bytes();
    let last = signed.len() - 1;
    signed[last] ^= 1;
    let mut forged = Vec::new();
    wire::write_heartbeat(&mut forged, &w.network_key, &signed);
    let first = w.air_raw(&forged, NOW);
    assert!(first.iter().any(|e| matches!(e, ReceptionEvent::HeartbeatRejected { .. })), "{first:?}");
    let checked = w.county.stats().signatures_checked;
    for _ in 0..100 {
        assert!(w.air_raw(&forged, NOW).is_empty(), "a repeated refused heartbeat is an event again");
    }
    assert_eq!(w.county.stats().signatures_checked, checked, "a repeated refused heartbeat was verified again");
    // The genuine next one is still taken.
    let next = w.heartbeat_datagram(&signer, 6, NOW * 1000 + 5000);
    assert!(w.air_raw(&next, NOW).iter().any(|e| matches!(e, ReceptionEvent::Heartbeat { sequence: 6, .. })));
}

/// Replays of a genuine revocation list cost a counter, before any signature check; so do
/// repeats of a refused list.
#[test]
fn a_replayed_revocation_list_costs_a_counter_not_a_signature_check() {
    let mut w = world(9);
    let list = w.revocation_datagram(&w.root, 2, vec![7]);
    assert!(w.air_raw(&list, NOW).iter().any(|e| matches!(e, ReceptionEvent::RevocationsUpdated { sequence: 2, .. })));
    let older = w.revocation_datagram(&w.root, 1, vec![]);
    let checked = w.county.stats().signatures_checked;
    for _ in 0..1000 {
        assert!(w.air_raw(&list, NOW).is_empty());
        assert!(w.air_raw(&older, NOW).is_empty());
    }
    let stats = w.county.stats();
    assert_eq!(stats.signatures_checked, checked, "replayed lists were verified");
    assert_eq!(stats.revocations_replayed, 2000);
    // A list from another root with a higher sequence: verified and refused once.
    let other_root = RootKey::generate(&mut ChaCha8Rng::seed_from_u64(98));
    let forged = w.revocation_datagram(&other_root, 9, vec![1]);
    assert!(w.air_raw(&forged, NOW).iter().any(|e| matches!(e, ReceptionEvent::RevocationRejected { .. })));
    let checked = w.county.stats().signatures_checked;
    for _ in 0..100 {
        assert!(w.air_raw(&forged, NOW).is_empty());
    }
    assert_eq!(w.county.stats().signatures_checked, checked, "a repeated refused list was verified again");
}

/// A genuine heartbeat dated ten years ahead (signed by a compromised or misconfigured
/// uplink clock) is refused by the county's clock and does not lock out the genuine ones.
#[test]
fn a_heartbeat_from_the_future_is_refused_and_does_not_lock_out_the_genuine_ones() {
    use satcast_protocol::trust::CLOCK_SKEW_MAX_SECS;
    let mut w = world(10);
    let signer = key(&w, 1, NOW - DAY, NOW + 3700 * DAY);
    let future = w.heartbeat_datagram(&signer, 1_000_000, (NOW + 3650 * DAY) * 1000);
    let events = w.air_raw(&future, NOW);
    assert!(events.iter().any(|e| matches!(e, ReceptionEvent::HeartbeatRejected { reason } if reason.contains("future"))), "{events:?}");
    let just_beyond = w.heartbeat_datagram(&signer, 3, (NOW + CLOCK_SKEW_MAX_SECS + 1) * 1000);
    assert!(!w.air_raw(&just_beyond, NOW).iter().any(|e| matches!(e, ReceptionEvent::Heartbeat { .. })));
    let genuine = w.heartbeat_datagram(&signer, 2, NOW * 1000);
    let events = w.air_raw(&genuine, NOW);
    assert!(events.iter().any(|e| matches!(e, ReceptionEvent::Heartbeat { sequence: 2, .. })), "locked out: {events:?}");
    assert_eq!(w.county.heartbeat_age(w.now), Some(Duration::ZERO));
    // Within the skew bound a heartbeat is taken (the county's clock may lag the uplink's).
    let ahead = w.heartbeat_datagram(&signer, 3, (NOW + CLOCK_SKEW_MAX_SECS) * 1000);
    assert!(w.air_raw(&ahead, NOW).iter().any(|e| matches!(e, ReceptionEvent::Heartbeat { sequence: 3, .. })));
}

/// An insider forges ROUND markers for an object this county completed, round after round:
/// each (object, round) is answered with Complete at most once, no sooner than
/// reception::COMPLETE_REPEAT_INTERVAL_MIN after the last repeated Complete of that object, and
/// within a budget shared by all objects; the rest cost a counter.
#[test]
fn forged_round_markers_for_a_completed_object_buy_a_bounded_number_of_completes() {
    use satcast_protocol::reception::{COMPLETE_REPEAT_INTERVAL_MIN, COMPLETE_REPEATS_BURST_MAX};
    let mut w = world(11);
    let signer = key(&w, 1, NOW - DAY, NOW + 300 * DAY);
    w.deliver(&signer, 60, "a.bin");
    // The uplink asks at once (the delivery's Complete may have been lost): one answer,
    // however many markers and however their rounds go.
    let completes: usize = (1..=1000).map(|round| w.round_marker(60, round)).sum();
    assert_eq!(completes, 1, "a burst of markers buys one Complete");
    assert_eq!(w.county.stats().round_markers_repeated, 999);
    w.now += COMPLETE_REPEAT_INTERVAL_MIN;
    // Round 1 was answered; round 2 is, once the interval has passed.
    let completes: usize = (1..=1000).map(|round| w.round_marker(60, round)).sum();
    assert_eq!(completes, 1, "one Complete per interval");
    assert_eq!(w.county.stats().round_markers_repeated, 1998);
    assert_eq!(w.county.stats().completes_repeated, 2);
    // Later, the round answered is not answered again; another one is (the uplink still
    // asks: the Complete may have been lost on the WAN).
    w.now += COMPLETE_REPEAT_INTERVAL_MIN;
    assert_eq!(w.round_marker(60, 2), 0, "round 2 was answered already");
    assert_eq!(w.round_marker(60, 1001), 1, "a round later: say it again");
    assert_eq!(w.round_marker(60, 1001), 0, "a copy of that marker");

    // Many completed objects, each asked at once: the shared budget (full again after a
    // minute) bounds the answers.
    w.now += Duration::from_secs(60);
    let objects = COMPLETE_REPEATS_BURST_MAX as u64 + 4;
    for id in 0..objects {
        w.deliver(&signer, 100 + id, &format!("o{id}.bin"));
    }
    let completes: usize = (0..objects).map(|id| w.round_marker(100 + id, 1)).sum();
    assert_eq!(completes, COMPLETE_REPEATS_BURST_MAX as usize, "the budget shared by all objects");
}
